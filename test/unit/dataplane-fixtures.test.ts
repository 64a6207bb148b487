import { readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { chainIndex, parseIptablesSave, type IptablesDump } from '../../tasks/dataplane/iptables-save.ts';
import { parseIpvsadm } from '../../tasks/dataplane/ipvsadm.ts';
import { listIptablesServices, traceIptables, traceIpvs, type TraceFrontend } from '../../tasks/dataplane/trace.ts';

// Dumps in the formats real nodes print, one trait each: test/unit/dataplane-fixtures/formats (its README
// lists them). Every file parses; each test states facts of one file.

const DIR = path.join(import.meta.dirname, 'dataplane-fixtures/formats');
const text = (name: string) => readFileSync(path.join(DIR, name), 'utf8');
const ipt = (name: string) => parseIptablesSave(text(name));
const ipvs = (name: string) => parseIpvsadm(text(name));
const chains = (d: IptablesDump, prefix: string) => d.tables.flatMap((t) => t.chains).filter((c) => c.name.startsWith(prefix)).length;
const shares = (f: TraceFrontend | undefined) => f?.backends.map((b) => Number(b.share.toFixed(4)));

describe('every fixture', () => {
  const files = readdirSync(DIR).filter((f) => f.endsWith('.txt'));
  it('is there', () => expect(files.length).toBeGreaterThanOrEqual(24));
  it.each(files)('%s parses with no line left unread but the ones it is about', (f) => {
    const d = f.startsWith('ipvsadm') ? ipvs(f) : ipt(f);
    const expectedUnknown = f === 'ipt-stderr-then-nat-head.txt' || f === 'ipvsadm-grep-A3.txt' ? 1 : 0;
    expect(d.unknown).toHaveLength(expectedUnknown);
  });
});

describe('iptables-save fixtures', () => {
  it('ipt-legacy-1.4-all-tables: three tables, the hint chain, a NodePort through KUBE-EXT, REJECTs', () => {
    const d = ipt('ipt-legacy-1.4-all-tables.txt');
    expect(d).toMatchObject({ version: '1.4.21', variant: 'legacy', family: 'ipv4' });
    expect(d.tables.map((t) => t.name)).toEqual(['mangle', 'filter', 'nat']);
    expect(d.tables[0]!.chains.map((c) => c.name)).toContain('KUBE-IPTABLES-HINT');
    expect(chains(d, 'KUBE-SEP-')).toBe(2);
    const jenkins = traceIptables(d, 'ci/jenkins:http');
    expect(jenkins.frontends.map((f) => [f.kind, f.address, f.path])).toEqual([
      ['ClusterIP', '10.2.226.53:8080', ['KUBE-SERVICES', 'KUBE-SVC-CNP43SQ5BQHLL247']],
      ['NodePort', '*:32117', ['KUBE-NODEPORTS', 'KUBE-EXT-CNP43SQ5BQHLL247', 'KUBE-SVC-CNP43SQ5BQHLL247']],
    ]);
    expect(jenkins.frontends[1]!.masquerade).toEqual([{ chain: 'KUBE-EXT-CNP43SQ5BQHLL247', condition: 'always', line: expect.any(Number) }]);
    const dns = traceIptables(d, 'kube-system/kube-dns');
    expect(dns.frontends.map((f) => [f.portName, f.backends.length, f.drops?.[0]?.target])).toEqual([
      ['dns', 0, 'REJECT'],
      ['dns-tcp', 0, 'REJECT'],
      ['metrics', 0, 'REJECT'],
    ]);
    expect(dns.warnings).toHaveLength(3);
  });

  it('ipt-counters-c: counters on rules and chains, four tables', () => {
    const d = ipt('ipt-counters-c.txt');
    expect(d.tables.map((t) => t.name)).toEqual(['raw', 'mangle', 'nat', 'filter']);
    expect(d.ruleCount).toBe(27);
    expect(d.rules.every((r) => r.counters !== undefined)).toBe(true);
    expect(d.rules.find((r) => r.chain === 'KUBE-SERVICES' && r.target === 'KUBE-NODEPORTS')!.counters).toEqual({ packets: 412, bytes: 18530 });
    expect(d.tables[0]!.chains[0]).toMatchObject({ name: 'PREROUTING', counters: { packets: 6120448, bytes: 1893305312 } });
    expect(d.rules.find((r) => r.target === 'MASQUERADE')!.targetOptions).toEqual(['--random-fully']);
    const k = traceIptables(d, 'default/kubernetes');
    expect(k.frontends[0]!.backends).toEqual([{ address: '172.31.4.10:443', share: 1, chain: 'KUBE-SEP-C2GWRMHZ6RKZU2FJ' }]);
    expect(k.frontends[0]!.masquerade![0]!.condition).toBe('! -s 10.42.0.0/16');
  });

  it('ipt-stderr-then-nat-head: the stderr line is unknown, the cut table is a problem, the rest is read', () => {
    const d = ipt('ipt-stderr-then-nat-head.txt');
    expect(d.unknown).toEqual([{ line: 1, text: "iptables-save: invalid option -- 'L'", reason: 'not an iptables-save line' }]);
    expect(d.problems).toEqual(['table nat (line 3) is not closed by COMMIT: the dump may be cut short']);
    expect(d).toMatchObject({ version: '1.6.0', variant: 'legacy' });
    expect(chains(d, 'KUBE-SEP-')).toBe(2);
    expect(chains(d, 'KUBE-SVC-')).toBe(2);
    expect(d.ruleCount).toBe(6);
    expect(d.rules.find((r) => r.chain === 'POSTROUTING' && r.target === 'MASQUERADE')!.outInterface).toEqual({ value: 'docker0', negated: true });
  });

  it('ipt-blank-lines-old-comments: blank lines skipped, "ns/name:" is an unnamed port', () => {
    const d = ipt('ipt-blank-lines-old-comments.txt');
    expect(d.lines).toBe(21);
    expect(d.ruleCount).toBe(11);
    const t = traceIptables(d, 'edge/ingress');
    expect(t.frontends.map((f) => [f.kind, f.address, f.portName, f.backends.map((b) => b.address)])).toEqual([
      ['ClusterIP', '10.0.0.181:443', '', ['10.32.0.17:80']],
      ['NodePort', '*:30443', '', ['10.32.0.17:80']],
    ]);
    expect(t.frontends[1]!.masquerade!.map((m) => [m.chain, m.condition])).toEqual([['KUBE-NODEPORTS', 'always']]);
    // grafana's KUBE-SVC chain is not in the excerpt
    const g = traceIptables(d, 'ops/grafana');
    expect(g.frontends[0]!.drops).toEqual([{ chain: 'KUBE-NODEPORTS', target: 'KUBE-SVC-Q2NFUPFQ3ZAZ5LTQ', share: 1, reason: 'chain not in the dump', line: 13 }]);
    expect(g.warnings).toEqual(['NodePort *:30601/TCP: no endpoint reached: KUBE-SVC-Q2NFUPFQ3ZAZ5LTQ, which is not in the dump']);
  });

  it('ipt-nft-grep-warning: iptables-nft, its warning kept, "-> ip:port" comments', () => {
    const d = ipt('ipt-nft-grep-warning.txt');
    expect(d.variant).toBe('nft');
    expect(d.notices).toEqual(['# Warning: iptables-legacy tables present, use iptables-legacy-save to see them']);
    const t = traceIptables(d, 'blue/api');
    expect(t.frontends).toHaveLength(1);
    expect(t.frontends[0]).toMatchObject({ kind: 'ClusterIP', address: '10.105.12.40:80', backends: [{ address: '10.44.0.9:8000', share: 1 }] });
    expect(t.warnings).toEqual([]);
  });

  it('ipt-six-endpoints-5-decimals: six endpoints at one sixth each', () => {
    const d = ipt('ipt-six-endpoints-5-decimals.txt');
    const svc = chainIndex(d).rules('nat', 'KUBE-SVC-ITBI3OHKD3FRXPDK');
    expect(svc.map((r) => r.statistic?.probability)).toEqual([0.16667000018, 0.20000000019, 0.25, 0.33332999982, 0.5, undefined]);
    const t = traceIptables(d, 'shop/catalog:http');
    const f = t.frontends[0]!;
    expect(f.backends.map((b) => b.address)).toEqual(['10.244.1.20:8080', '10.244.2.20:8080', '10.244.3.20:8080', '10.244.4.20:8080', '10.244.5.20:8080', '10.244.6.20:8080']);
    for (const b of f.backends) expect(b.share).toBeCloseTo(1 / 6, 4);
    expect(f.backends.reduce((a, b) => a + b.share, 0)).toBeCloseTo(1, 12);
    expect(f.fallThrough).toBeUndefined();
    expect(f.masquerade).toEqual([{ chain: 'KUBE-SERVICES', condition: '! -s 10.244.0.0/16', line: 37 }]);
  });

  it('ipt-svc-chain-cut: three of six rules; the shares they give and half the traffic unaccounted for', () => {
    const d = ipt('ipt-svc-chain-cut.txt');
    const t = traceIptables(d, 'shop/catalog:http');
    expect(t.frontends).toEqual([]);
    const c = t.detached![0]!;
    expect(c.chain).toBe('KUBE-SVC-ITBI3OHKD3FRXPDK');
    expect(c.backends.map((b) => Number(b.share.toFixed(4)))).toEqual([0.1667, 0.1667, 0.1667]);
    expect(c.fallThrough).toBeCloseTo(0.5, 4);
    expect(c.backends.every((b) => b.resolved === false)).toBe(true);
  });

  it('ipt-session-affinity: ClientIP affinity with its timeout, balancing rules still split 50/50', () => {
    const d = ipt('ipt-session-affinity.txt');
    const t = traceIptables(d, 'auth/ldap');
    const f = t.frontends[0]!;
    expect(f.affinity).toEqual({ timeoutSeconds: 10800 });
    expect(shares(f)).toEqual([0.5, 0.5]);
    expect(d.rules.filter((r) => r.recent?.command === 'set').map((r) => r.recent!.mask)).toEqual(['255.255.255.255', '255.255.255.255']);
  });

  it('ipt-externalip-physdev: the external IP frontend, masqueraded, through the physdev rule', () => {
    const d = ipt('ipt-externalip-physdev.txt');
    const physdev = d.rules.find((r) => r.other?.includes('--physdev-is-in'))!;
    expect(physdev.other).toEqual(['!', '--physdev-is-in']);
    expect(physdev.srcType).toEqual({ value: 'LOCAL', negated: true });
    const t = traceIptables(d, 'lab/echo');
    expect(t.frontends.map((f) => [f.kind, f.address, f.masquerade!.map((m) => m.condition), shares(f)])).toEqual([
      ['ClusterIP', '10.101.7.33:8080', ['! -s 10.244.0.0/16'], [1]],
      ['ExternalIP', '192.0.2.44:8080', ['always'], [1]],
    ]);
  });

  it('ipt-no-comments: no Service named anywhere, yet traced by kube-proxy chain names', () => {
    const d = ipt('ipt-no-comments.txt');
    expect(d.rules.some((r) => r.comment !== undefined)).toBe(false);
    expect(listIptablesServices(d)).toEqual([]);
    const dns = traceIptables(d, 'kube-system/kube-dns:dns');
    expect(dns.frontends.map((f) => [f.kind, f.address, f.protocol, f.backends.map((b) => b.address), shares(f)])).toEqual([
      ['ClusterIP', '10.100.0.10:53', 'UDP', ['192.168.12.7:53', '192.168.40.3:53'], [0.5, 0.5]],
    ]);
    expect(dns.warnings[0]).toMatch(/found by kube-proxy's chain names/);
    const api = traceIptables(d, 'default/kubernetes:https');
    expect(api.frontends[0]).toMatchObject({ address: '10.100.0.1:443', affinity: { timeoutSeconds: 10800 }, backends: [{ address: '172.31.4.10:443', share: 1 }] });
    expect(d.rules.find((r) => r.target === 'SNAT')!.toSource).toBe('172.31.4.2');
  });

  it('ipt-xlb-no-local-endpoints: the NodePort drops what the cluster IP serves', () => {
    const t = traceIptables(ipt('ipt-xlb-no-local-endpoints.txt'), 'edge/ingress');
    const [cip, np] = t.frontends;
    expect(shares(cip)).toEqual([1]);
    expect(np).toMatchObject({ kind: 'NodePort', address: '*:31080', backends: [], policy: 'Local' });
    expect(np!.drops).toEqual([{ chain: 'KUBE-XLB-MHYK4Q34Y6K2V4RA', target: 'KUBE-MARK-DROP', share: 1, reason: 'edge/ingress has no local endpoints', line: 8 }]);
    expect(np!.masquerade!.map((m) => m.condition)).toEqual(['-s 127.0.0.0/8']);
    expect(t.warnings).toEqual(['NodePort *:31080/TCP: no endpoint reached: KUBE-MARK-DROP in KUBE-XLB-MHYK4Q34Y6K2V4RA ("edge/ingress has no local endpoints")']);
  });

  it('ipt-loadbalancer-kube-fw: allowed sources reach both endpoints through KUBE-FW', () => {
    const t = traceIptables(ipt('ipt-loadbalancer-kube-fw.txt'), 'web/front');
    const lb = t.frontends.find((f) => f.kind === 'LoadBalancer')!;
    expect(lb).toMatchObject({ address: '35.190.7.21:443', path: ['KUBE-SERVICES', 'KUBE-FW-R56BAKB3HMHZBPQ5', 'KUBE-SVC-R56BAKB3HMHZBPQ5'], sourceRanges: ['203.0.113.0/24'] });
    expect(shares(lb)).toEqual([0.5, 0.5]);
    expect(lb.masquerade!.map((m) => [m.chain, m.condition])).toEqual([['KUBE-FW-R56BAKB3HMHZBPQ5', 'always']]);
  });

  it('ipt-kube-ext-local: node-local endpoint for outside clients, all three for pods and the node', () => {
    const t = traceIptables(ipt('ipt-kube-ext-local.txt'), 'media/stream:rtmp');
    const [cip, np] = t.frontends;
    expect(shares(cip)).toEqual([0.3333, 0.3333, 0.3333]);
    expect(np).toMatchObject({ policy: 'Local', path: ['KUBE-NODEPORTS', 'KUBE-EXT-6K2JAHYPAH4PMU6H', 'KUBE-SVL-6K2JAHYPAH4PMU6H'] });
    expect(np!.backends).toEqual([{ address: '10.244.0.31:1935', share: 1, chain: 'KUBE-SEP-DCR5X6NTKQP22SFL' }]);
    expect(np!.alternatives!.map((a) => [a.condition, a.chain, a.backends.length])).toEqual([
      ['-s 10.244.0.0/16', 'KUBE-SVC-6K2JAHYPAH4PMU6H', 3],
      ['-m addrtype --src-type LOCAL', 'KUBE-SVC-6K2JAHYPAH4PMU6H', 3],
    ]);
  });

  it('ipt-ipvs-mode-nat: ipset matches read, no Service chains', () => {
    const d = ipt('ipt-ipvs-mode-nat.txt');
    expect(d.rules.flatMap((r) => r.matchSets ?? []).map((m) => `${m.name} ${m.flags}`)).toEqual(['KUBE-NODE-PORT-TCP dst', 'KUBE-LOOP-BACK dst,dst,src', 'KUBE-CLUSTER-IP dst,dst', 'KUBE-CLUSTER-IP dst,dst']);
    expect(chains(d, 'KUBE-SVC-')).toBe(0);
    expect(listIptablesServices(d)).toEqual([]);
    expect(traceIptables(d, 'default/kubernetes').warnings).toEqual(['no frontend of default/kubernetes in the dump (no KUBE-SERVICES or KUBE-NODEPORTS rule names it)']);
  });

  it('ip6tables-save-1.28: IPv6 addresses, bracketed DNAT, KUBE-SVL for the Local NodePort', () => {
    const d = ipt('ip6tables-save-1.28.txt');
    expect(d).toMatchObject({ generator: 'ip6tables-save', family: 'ipv6' });
    const t = traceIptables(d, 'web/shop');
    expect(t.frontends.map((f) => [f.kind, f.address, f.backends.map((b) => `${b.address} ${b.share}`)])).toEqual([
      ['ClusterIP', '[fd00:10:96::8a2f]:80', ['[fd00:10:244:1::5]:8080 0.5', '[fd00:10:244:2::7]:8080 0.5']],
      ['NodePort', '*:31380', ['[fd00:10:244:1::5]:8080 1']],
    ]);
    expect(t.frontends[0]!.masquerade![0]!.condition).toBe('! -s fd00:10:244::/56');
    expect(traceIptables(d, 'kube-system/kube-dns').frontends[0]!.drops![0]).toMatchObject({ target: 'REJECT', reason: 'kube-system/kube-dns:dns has no endpoints' });
  });
});

describe('ipvsadm fixtures', () => {
  it('ipvsadm-Ln-nodeports: a NodePort on every local address', () => {
    const t = ipvs('ipvsadm-Ln-nodeports.txt');
    const tr = traceIpvs(t, { service: 'web/hello', clusterIP: '10.99.21.4', port: 80, nodePort: 31080 });
    expect(tr.frontends.map((f) => [f.kind, f.address, f.backends.map((b) => b.share)])).toEqual([
      ['ClusterIP', '10.99.21.4:80', [0.5, 0.5]],
      ['NodePort', '172.17.0.1:31080', [0.5, 0.5]],
      ['NodePort', '192.168.49.2:31080', [0.5, 0.5]],
    ]);
    const dns = traceIpvs(t, { service: 'kube-system/kube-dns', clusterIP: '10.96.0.10', port: 53, protocol: 'udp' });
    expect(dns.frontends[0]!.backends).toEqual([{ address: '172.17.0.2:53', share: 1, weight: 1, forwarding: 'Masq', activeConn: 0, inactiveConn: 4 }]);
  });

  it('ipvsadm-Ln-persistent-trailing-spaces: persistence, padded columns, weights', () => {
    const t = ipvs('ipvsadm-Ln-persistent-trailing-spaces.txt');
    expect(t.services.map((s) => [s.key, s.persistent, s.realServers.length])).toEqual([
      ['TCP 10.254.0.1:443', 10800, 2],
      ['TCP 10.254.0.2:53', undefined, 1],
      ['TCP 10.254.88.3:80', undefined, 3],
    ]);
    const api = traceIpvs(t, { service: 'default/kubernetes', clusterIP: '10.254.0.1', port: 443 });
    expect(api.frontends[0]).toMatchObject({ persistent: 10800, affinity: { timeoutSeconds: 10800 } });
    const w = traceIpvs(t, { service: 'shop/web', clusterIP: '10.254.88.3', port: 80 });
    expect(w.frontends[0]!.backends.map((b) => [b.weight, b.share])).toEqual([[3, 0.75], [1, 0.25], [0, 0]]);
    expect(w.warnings).toEqual(['ClusterIP 10.254.88.3:80/TCP: 10.253.9.9:8080 has weight 0 (draining: no new connections)']);
  });

  it('ipvsadm-grep-ipv6: IPv6 in brackets, upper case and long forms made canonical', () => {
    const t = ipvs('ipvsadm-grep-ipv6.txt');
    expect(t.services.map((s) => s.address)).toEqual(['192.168.0.2:31201', '127.0.0.1:31201', '[::1]:31201', '[fd00:1::c0a8:2]:31201', '[fd00:1::201]:31201']);
    expect(t.services.filter((s) => s.family === 'ipv6')).toHaveLength(3);
    const tr = traceIpvs(t, { service: 's/t', nodePort: 31201 });
    expect(tr.frontends).toHaveLength(5);
    expect(tr.warnings).toHaveLength(5);
  });

  it('ipvsadm-Ln-stats: counters, abbreviated ones expanded, shares from equal weights', () => {
    const t = ipvs('ipvsadm-Ln-stats.txt');
    expect(t.format).toBe('stats');
    expect(t.services[1]!.stats).toEqual({ conns: 14209, inPkts: 111769, outPkts: 74613, inBytes: 7207174, outBytes: 8334358 });
    expect(t.services[1]!.realServers[1]!.stats).toEqual({ conns: 7105, inPkts: 55885, outPkts: 37307, inBytes: 145e6, outBytes: 2510e3 });
    const tr = traceIpvs(t, { service: 'a/b', clusterIP: '10.3.0.42', port: 80 });
    expect(tr.frontends[0]!.backends.map((b) => b.share)).toEqual([0.5, 0.5]);
    expect(tr.warnings).toEqual(['ClusterIP 10.3.0.42:80/TCP: the listing has no weights (--stats/--rate); shares assume equal weights']);
  });

  it('ipvsadm-Ln-rate: rate columns', () => {
    const t = ipvs('ipvsadm-Ln-rate.txt');
    expect(t.services[0]!.realServers[0]!.rate).toEqual({ cps: 2, inPps: 30, outPps: 25, inBps: 2400, outBps: 9800 });
  });

  it('ipvsadm-Sn: save format with persistence, a firewall-mark service, gatewaying and tunnelling', () => {
    const t = ipvs('ipvsadm-Sn.txt');
    expect(t.services.map((s) => [s.key, s.scheduler, s.persistent ?? null, s.realServers.length])).toEqual([
      ['TCP 10.20.0.1:443', 'rr', 10800, 3],
      ['UDP 10.20.0.10:53', 'rr', null, 1],
      ['FWM 100', 'sh', null, 2],
    ]);
    expect(t.services[2]!.flags).toEqual(['sh-fallback', 'sh-port']);
    expect(t.services[2]!.realServers.map((r) => [r.forwarding, r.weight])).toEqual([['Route', 2], ['Tunnel', 1]]);
  });

  it('ipvsadm-multinode-sections: one frontend per node, each saying which', () => {
    const t = ipvs('ipvsadm-multinode-sections.txt');
    expect(t.sections).toEqual(['10.0.0.11', '10.0.0.12']);
    const tr = traceIpvs(t, { service: 'default/kubernetes', clusterIP: '10.254.0.1', port: 443 });
    expect(tr.frontends.map((f) => [f.node, f.backends.map((b) => b.activeConn)])).toEqual([['10.0.0.11', [0, 0]], ['10.0.0.12', [3, 0]]]);
    expect(traceIpvs(t, { service: 'default/kubernetes', clusterIP: '10.254.0.1', port: 443, node: '10.0.0.12' }).frontends).toHaveLength(1);
  });

  it('ipvsadm-grep-A3: services cut by grep, the orphaned real server reported', () => {
    const t = ipvs('ipvsadm-grep-A3.txt');
    expect(t.services.map((s) => [s.key, s.realServers.length])).toEqual([['TCP 10.96.0.10:53', 2], ['TCP 10.96.0.10:9153', 0], ['UDP 10.96.0.10:53', 2]]);
    expect(t.unknown[0]!.line).toBe(10);
  });

  it('ipvsadm-Ln-fwm-flags-forwarding: FWM, flags, mask, ops, every forwarding method, IPv6 real servers', () => {
    const t = ipvs('ipvsadm-Ln-fwm-flags-forwarding.txt');
    expect(t.services.map((s) => s.key)).toEqual(['TCP 10.96.30.1:80', 'TCP 10.96.30.2:443', 'UDP 10.96.30.3:5353', 'FWM 100', 'FWM 200 IPv6', 'TCP [fd00:10:96::a]:53']);
    expect(t.services[0]!.realServers.map((r) => r.forwarding)).toEqual(['Route', 'Tunnel', 'Local']);
    expect(t.services[0]!.flags).toEqual(['flag-1', 'flag-2']);
    expect(t.services[1]).toMatchObject({ scheduler: 'wlc', persistent: 360, mask: '255.255.255.0' });
    expect(t.services[2]!.ops).toBe(true);
    const wlc = traceIpvs(t, { service: 'x/y', clusterIP: '10.96.30.2', port: 443 });
    expect(wlc.frontends[0]!.backends.map((b) => Number(b.share.toFixed(4)))).toEqual([0.6667, 0.3333, 0]);
    const v6 = traceIpvs(t, { service: 'kube-system/kube-dns', clusterIP: 'fd00:10:96:0::a', port: 53 });
    expect(v6.frontends[0]!.backends.map((b) => b.address)).toEqual(['[fd00:10:244::2]:53', '[fd00:10:244:1::3]:53']);
  });

  it('ipvsadm-Ln-empty-realservers: a virtual service with no real servers is a frontend without backends', () => {
    const t = ipvs('ipvsadm-Ln-empty-realservers.txt');
    const tr = traceIpvs(t, { service: 'a/b', nodePort: 30658, nodeAddresses: ['192.168.27.101'] });
    expect(tr.frontends).toMatchObject([{ kind: 'NodePort', address: '192.168.27.101:30658', backends: [] }]);
    expect(tr.warnings).toEqual(['NodePort 192.168.27.101:30658/TCP: the virtual service has no real servers (no ready endpoint)']);
  });
});
