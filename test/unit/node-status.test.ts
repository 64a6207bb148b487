import { describe, expect, test } from 'vitest';
import { assessNode, foreignVirtualServers, lastChange, leftoversOf, verdictOf, type ClusterFacts, type NodeObservation } from '../../tasks/cluster/node-status.ts';
import { parseDataplaneSummary, parseDataplaneDump, type DataplaneSummary } from '../../tasks/dataplane/node-read.ts';
import { proxierFromLog } from '../../tasks/commands/status.ts';

// status's judgement from plain values: drift, leftovers, prerequisites, and the cluster's verdict.

const b64 = (s: string) => Buffer.from(s).toString('base64');
const cluster = (mode: string, changedAt?: string): ClusterFacts => ({
  mode,
  ...(changedAt ? { changedAt } : {}),
  serviceIPs: new Set(['10.96.0.1', '10.96.0.10', 'fd00::1']),
  nodePorts: new Set([30080]),
});
const emptyDp = (): DataplaneSummary => ({
  iptables: { v4: { chains: 4, svc: 0, sep: 0, ext: 0, svl: 0, fw: 0, xlb: 0, serviceRules: 0 }, v6: 'not installed' },
  ipvs: null,
  kubeIpvs0: null,
  ipsets: null,
  nftTables: null,
});
const obs = (over: Partial<NodeObservation> = {}): NodeObservation => ({
  node: 'n1',
  host: 'n1',
  pod: { name: 'kube-proxy-a', startedAt: '2026-11-26T10:00:05.000Z', ready: true, phase: 'Running', restarts: 0 },
  runningMode: 'ipvs',
  proxierLine: 'Using ipvs Proxier',
  prerequisites: { packagesMissing: [], modulesNotLoaded: [], filesNotPersisted: [] },
  dataplane: emptyDp(),
  ...over,
});

describe('node-read output', () => {
  test('summary: counts per family, IPVS virtual servers, kube-ipvs0, ipsets, nft tables; "not read" is kept apart from "none"', () => {
    const out = [
      'noise from a login script',
      '@@kpm:dp ipt4 0 chains=12 svc=3 sep=5 ext=1 svl=0 fw=0 xlb=0 service_rules=3',
      '@@kpm:dp ipt6 127 ',
      `@@kpm:dp ipvs 0 ${b64('TCP 10.96.0.1:443\nUDP [fd00::1]:53\nFWM 5\n')}`,
      `@@kpm:dp kube-ipvs0 0 ${b64('10.96.0.1/32\n')}`,
      `@@kpm:dp ipset 0 ${b64('KUBE-CLUSTER-IP\n')}`,
      '@@kpm:dp nft 200 ',
    ].join('\n');
    const s = parseDataplaneSummary(out);
    expect(s.iptables.v4).toEqual({ chains: 12, svc: 3, sep: 5, ext: 1, svl: 0, fw: 0, xlb: 0, serviceRules: 3 });
    expect(s.iptables.v6).toBe('not installed');
    expect(s.ipvs).toEqual([
      { protocol: 'TCP', address: '10.96.0.1:443' },
      { protocol: 'UDP', address: '[fd00::1]:53' },
      { protocol: 'FWM', address: '5' },
    ]);
    expect(s.kubeIpvs0).toEqual(['10.96.0.1/32']);
    expect(s.ipsets).toEqual(['KUBE-CLUSTER-IP']);
    expect(s.nftTables).toBeNull();
    // ip_vs not loaded: nothing of IPVS can be there, and ipvsadm was not run (it would load the module)
    expect(parseDataplaneSummary('@@kpm:dp ipvs 200 ip_vs not loaded').ipvs).toBeNull();
    expect(parseDataplaneSummary('@@kpm:dp ipvs 127 ').ipvsError).toMatch(/ipvsadm is not installed/);
  });

  test('dump: decoded texts; failures named with their last lines', () => {
    const d = parseDataplaneDump([`@@kpm:dp ipt4 0 ${b64('*nat\nCOMMIT\n')}`, `@@kpm:dp ipt6 1 ${b64('ip6tables-save: permission denied\n')}`, '@@kpm:dp ipvs 200 x', '@@kpm:dp nft 1 '].join('\n'));
    expect(d.iptables).toBe('*nat\nCOMMIT\n');
    expect(d.ip6tables).toBeUndefined();
    expect(d.ipvs).toBeUndefined();
    expect(d.errors).toEqual(['ip6tables-save failed (exit 1): ip6tables-save: permission denied']);
  });

  test('dump: why nft tables were not read, as a reason, beside the wording of nftError', () => {
    const nft = (...l: string[]) => {
      const d = parseDataplaneDump(l.join('\n'));
      return { nftTables: d.nftTables, nftTablesUnread: d.nftTablesUnread, nftError: d.nftError };
    };
    const denied = b64('Error: Could not process rule: Operation not permitted\nlist tables\n');
    expect(nft(`@@kpm:dp nft-tables 1 ${denied}`, `@@kpm:dp nft 1 ${denied}`)).toEqual({
      nftTables: undefined,
      nftTablesUnread: { reason: 'failed', code: 1, output: ['Error: Could not process rule: Operation not permitted', 'list tables'] },
      nftError: 'Error: Could not process rule: Operation not permitted | list tables',
    });
    expect(nft(`@@kpm:dp nft-tables 0 ${b64('table ip kube-proxy\n')}`, `@@kpm:dp nft 0 ${b64('table ip kube-proxy {\n}\n')}`)).toEqual({ nftTables: ['table ip kube-proxy'], nftTablesUnread: undefined, nftError: undefined });
    expect(nft('@@kpm:dp nft 127 ')).toEqual({ nftTables: undefined, nftTablesUnread: { reason: 'not-installed' }, nftError: 'nft is not installed' });
    expect(nft('@@kpm:dp nft 200 ')).toEqual({ nftTables: undefined, nftTablesUnread: { reason: 'not-in-kernel' }, nftError: 'nf_tables is not in the running kernel' });
    expect(nft(`@@kpm:dp nft 0 ${b64('table ip kube-proxy\n')}`)).toMatchObject({ nftTables: undefined, nftTablesUnread: { reason: 'missing-entry' } });
    expect(nft()).toEqual({ nftTables: undefined, nftTablesUnread: { reason: 'missing-entry' }, nftError: 'not read' });
  });
});

describe('assessNode', () => {
  test('in sync: runs the ConfigMap mode, started after its last change', () => {
    const s = assessNode(obs(), cluster('ipvs', '2026-11-26T10:00:00.000Z'));
    expect(s).toMatchObject({ drift: [], problems: [], leftovers: [] });
    expect(verdictOf([s])).toBe('consistent');
  });

  test('drift: a pod started before the last change, and a mode other than the ConfigMap\'s, are restart pending', () => {
    const s = assessNode(obs({ runningMode: 'iptables', proxierLine: 'Using iptables Proxier' }), cluster('ipvs', '2026-11-26T10:00:06.000Z'));
    expect(s.drift).toEqual([
      "started 2026-11-26T10:00:05.000Z, before the ConfigMap's last change 2026-11-26T10:00:06.000Z: restart pending",
      'runs iptables, the ConfigMap says ipvs: restart pending',
    ]);
    expect(verdictOf([s])).toBe('inconsistent');
    // the same second is not "before": the API's times are whole seconds
    expect(assessNode(obs(), cluster('ipvs', '2026-11-26T10:00:05.000Z')).drift).toEqual([]);
  });

  test('prerequisites count only where ipvs is configured or running', () => {
    const prerequisites = { packagesMissing: ['ipset'], modulesNotLoaded: ['ip_vs_sh'], filesNotPersisted: ['/etc/modules-load.d/ipvs.conf'] };
    expect(assessNode(obs({ runningMode: 'iptables', prerequisites }), cluster('iptables')).problems).toEqual([]);
    expect(assessNode(obs({ prerequisites }), cluster('ipvs')).problems).toEqual([
      'packages missing: ipset',
      'modules not loaded: ip_vs_sh',
      'modules not persisted: /etc/modules-load.d/ipvs.conf',
    ]);
  });

  test('unreachable and unknown nodes make the verdict unknown, unless something is wrong elsewhere', () => {
    const down = assessNode(obs({ unreachable: 'connection refused', runningMode: undefined, dataplane: undefined, prerequisites: undefined }), cluster('ipvs'));
    const outside = assessNode(obs({ node: 'n9', host: undefined, runningMode: undefined, dataplane: undefined, prerequisites: undefined }), cluster('ipvs'));
    const fine = assessNode(obs(), cluster('ipvs'));
    expect(down.problems).toEqual(['not reachable over SSH: connection refused']);
    expect(verdictOf([fine, down])).toBe('unknown');
    expect(verdictOf([fine, outside])).toBe('unknown');
    const crashing = assessNode(obs({ pod: { name: 'kube-proxy-b', ready: false, phase: 'Running', restarts: 4, waiting: 'CrashLoopBackOff' }, runningMode: null, modeError: 'refused' }), cluster('ipvs'));
    expect(crashing.problems).toEqual(['kube-proxy pod not ready (CrashLoopBackOff, 4 restarts)']);
    expect(verdictOf([crashing, down])).toBe('inconsistent');
  });
});

describe('leftovers', () => {
  test("an IPVS node with iptables mode's Service chains; an iptables node with kube-ipvs0, Service virtual servers and ipsets", () => {
    const dp = emptyDp();
    dp.iptables.v4 = { chains: 20, svc: 3, sep: 6, ext: 0, svl: 1, fw: 0, xlb: 0, serviceRules: 0 };
    expect(leftoversOf('ipvs', dp, cluster('ipvs'))).toEqual(["iptables mode's IPv4 Service chains: 3 KUBE-SVC-*, 6 KUBE-SEP-*, 1 KUBE-SVL-*"]);
    expect(leftoversOf('iptables', dp, cluster('iptables'))).toEqual([]);

    const ipvsLeft = emptyDp();
    ipvsLeft.kubeIpvs0 = ['10.96.0.1/32', '10.96.0.10/32'];
    ipvsLeft.ipvs = [
      { protocol: 'TCP', address: '10.96.0.1:443' },
      { protocol: 'TCP', address: '192.168.1.5:30080' },
      { protocol: 'TCP', address: '192.168.1.200:443' }, // keepalived's VIP: not a Service
      { protocol: 'FWM', address: '7' },
    ];
    ipvsLeft.ipsets = ['KUBE-CLUSTER-IP', 'KUBE-LOOP-BACK'];
    expect(leftoversOf('iptables', ipvsLeft, cluster('iptables'))).toEqual(['link kube-ipvs0 (2 addresses)', '2 IPVS virtual servers for Services', '2 KUBE-* ipsets']);
    expect(leftoversOf('ipvs', ipvsLeft, cluster('ipvs'))).toEqual([]);
    expect(foreignVirtualServers(ipvsLeft, cluster('iptables'))).toEqual(['TCP 192.168.1.200:443', 'FWM 7']);
  });
});

describe('times and logs', () => {
  test("the ConfigMap's last change is its newest managedFields time, else its creation", () => {
    expect(
      lastChange({
        creationTimestamp: '2026-11-01T00:00:00Z',
        managedFields: [{ time: '2026-11-20T10:00:00Z' }, { time: new Date('2026-11-26T09:00:00Z') }, {}],
      }),
    ).toBe('2026-11-26T09:00:00.000Z');
    expect(lastChange({ creationTimestamp: '2026-11-01T00:00:00Z' })).toBe('2026-11-01T00:00:00.000Z');
    expect(lastChange(undefined)).toBeUndefined();
  });

  test("the proxier line in every version's form", () => {
    expect(proxierFromLog('I1126 10:00:00.1 1 server_others.go:139] "Unknown proxy mode, assuming iptables proxy" proxyMode=""\nI1126 10:00:00.2 1 server_others.go:206] "Using iptables Proxier"')).toBe('Using iptables Proxier');
    expect(proxierFromLog('I0101 server_others.go:190] Using ipvs Proxier.')).toBe('Using ipvs Proxier');
    expect(proxierFromLog('I1126 server.go:519] "Using nftables Proxier"')).toBe('Using nftables Proxier');
    expect(proxierFromLog('E1126 "Can\'t use the IPVS proxier" err="..."')).toBeUndefined();
  });
});
