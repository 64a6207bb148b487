// `--cleanup-old-mode`'s engine: plans from node reads (dumps made with test/dataplane-dumps.ts, plus
// foreign rules, VIPs and excludeCIDRs), the dry-run lines, the apply script's output parsed, and the
// REAL old-mode-apply.sh run by bash against PATH stubs of iptables-save / iptables-restore, for its
// per-table decisions (what changed since the plan stays) and its retry.

import { spawnSync } from 'node:child_process';
import { chmodSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, test } from 'vitest';
import { leftoversOf } from '../../tasks/cluster/node-status.ts';
import { isKubeProxyIpset, virtualServerJudge } from '../../tasks/cleanup/kube-proxy-objects.ts';
import { itemLabel, planCleanup, type CleanupCluster, type CleanupItem, type CleanupPlan } from '../../tasks/cleanup/old-mode-plan.ts';
import { parseNodeDataplane } from '../../tasks/cleanup/old-mode-read.ts';
import { cleanupOldModes } from '../../tasks/cleanup/old-mode.ts';
import { describePlan, describeResult } from '../../tasks/cleanup/old-mode-report.ts';
import { parseCleanupResult } from '../../tasks/cleanup/old-mode-result.ts';
import { cleanupApplyScript, READBACK_MARKER } from '../../tasks/cleanup/old-mode-script.ts';
import { servicePortChainName, servicePortName } from '../../tasks/dataplane/chain-names.ts';
import { parseDataplaneSummary } from '../../tasks/dataplane/node-read.ts';
import type { ProxyMode } from '../../tasks/inventory/types.ts';
import { shQuote } from '../../tasks/remote/quote.ts';
import { expectedFrontends, kubeProxyIpvsadm, kubeProxyIpvsModeIptablesSave, kubeProxyIptablesSave, type GenService } from '../dataplane-dumps.ts';

const CART: GenService = {
  namespace: 'shop',
  name: 'cart',
  clusterIP: '10.96.50.20',
  externalIPs: ['192.0.2.10'],
  loadBalancerIPs: ['203.0.113.7'],
  loadBalancerSourceRanges: ['198.51.100.0/24'],
  externalTrafficPolicy: 'Local',
  ports: [{ name: 'http', port: 80, protocol: 'TCP', nodePort: 30480, endpoints: [{ ip: '10.244.1.11', port: 8080, local: true }, { ip: '10.244.2.12', port: 8080 }] }],
};
const DNS: GenService = {
  namespace: 'kube-system',
  name: 'kube-dns',
  clusterIP: '10.96.0.10',
  ports: [
    { name: 'dns', port: 53, protocol: 'UDP', endpoints: [{ ip: '10.244.1.2', port: 53 }] },
    { name: 'dns-tcp', port: 53, protocol: 'TCP', endpoints: [{ ip: '10.244.1.2', port: 53 }] },
  ],
};
const IDLE: GenService = { namespace: 'shop', name: 'idle', clusterIP: '10.96.50.21', ports: [{ name: '', port: 9000, protocol: 'TCP', endpoints: [] }] };
const CART6: GenService = {
  namespace: 'shop',
  name: 'cart',
  clusterIP: 'fd00:10:96::14',
  loadBalancerIPs: ['2001:db8::7'],
  externalTrafficPolicy: 'Local',
  ports: [{ name: 'http', port: 80, protocol: 'TCP', nodePort: 30480, endpoints: [{ ip: 'fd00:10:244::b', port: 8080, local: true }] }],
};
const NODE = '192.168.1.11';

/** Service IPs as the API lists them (IPv6 spelled differently from ipvsadm, on purpose). */
const cluster: CleanupCluster = {
  serviceIPs: new Set(['10.96.50.20', '192.0.2.10', '203.0.113.7', '10.96.0.9', '10.96.0.10', '10.96.50.21', 'FD00:10:96:0::14', '2001:db8::7']),
  nodePorts: new Set([30480]),
  excludeCIDRs: ['203.0.113.0/24'],
};

// Rules, chains and objects that are not kube-proxy's: none of them may ever be in a plan.
const FOREIGN_NAT = ['-A PREROUTING -p tcp -m tcp --dport 2222 -j DNAT --to-destination 10.0.0.9:22'];
const FOREIGN_FILTER_CHAINS = [':MYCHAIN - [0:0]', ':KUBE-FIREWALL - [0:0]', ':KUBE-KUBELET-CANARY - [0:0]', ':KUBE-ROUTER-INPUT - [0:0]'];
const FOREIGN_FILTER = [
  '-A INPUT -j KUBE-FIREWALL',
  '-A INPUT -m set --match-set user-blocklist src -j DROP',
  '-A INPUT -j KUBE-ROUTER-INPUT',
  '-A FORWARD -j MYCHAIN',
  '-A KUBE-FIREWALL ! -s 127.0.0.0/8 -d 127.0.0.0/8 -m comment --comment "block incoming localnet connections" -m conntrack ! --ctstate RELATED,ESTABLISHED,DNAT -j DROP',
  '-A KUBE-ROUTER-INPUT -m set --match-set KUBE-SRC-Q2VJXMSTO5KOVBCY src -j ACCEPT',
  '-A MYCHAIN -s 192.168.50.0/24 -j ACCEPT',
];
const FOREIGN_WORDS = /MYCHAIN|2222|KUBE-FIREWALL|KUBE-MARK-DROP|KUBE-KUBELET-CANARY|KUBE-ROUTER|KUBE-SRC-|user-blocklist|user_fw|inet kube-proxy|192\.168\.1\.200|FWM|198\.18\.0\.5/;

/** A dump with foreign lines added to its tables, where iptables-save would print them. */
function withForeign(dump: string): string {
  const out: string[] = [];
  let table = '';
  for (const line of dump.split('\n')) {
    if (line.startsWith('*')) table = line.slice(1);
    if (line === 'COMMIT' && table === 'nat') out.push(...FOREIGN_NAT);
    if (line === 'COMMIT' && table === 'filter') out.push(...FOREIGN_FILTER);
    out.push(line);
    if (table === 'filter' && line.startsWith(':OUTPUT ')) out.push(...FOREIGN_FILTER_CHAINS);
  }
  return out.join('\n');
}

const IPVS_SETS = ['KUBE-CLUSTER-IP', 'KUBE-LOAD-BALANCER', 'KUBE-LOAD-BALANCER-FW', 'KUBE-LOOP-BACK', 'KUBE-NODE-PORT-TCP', 'KUBE-HEALTH-CHECK-NODE-PORT', 'KUBE-IPVS-IPS'];
const FOREIGN_VS = ['TCP  192.168.1.200:443 rr', '  -> 192.168.1.11:6443             Masq    1      0          0', 'TCP  198.18.0.5:30480 rr', 'FWM  100 rr', '  -> 10.0.0.5:0                   Route   1      0          0'];

interface ReadSpec {
  ipt4?: string;
  ipt6?: string;
  /** ipvsadm -Ln; null: ip_vs not loaded; 'missing': ip_vs loaded, ipvsadm not installed */
  ipvs?: string | null | 'missing';
  kubeIpvs0?: string[] | null;
  /** KUBE-* ipsets (node-read.sh lists only those); null: not read */
  ipsets?: string[] | null;
  ipsetInstalled?: boolean;
  nft?: string[] | null;
  addresses?: string[];
}

const b64 = (text: string) => Buffer.from(text, 'utf8').toString('base64');

/** What node-read.sh (dump) and old-mode-read.sh print for a node, in their `@@kpm:` line formats. */
function readOutput(r: ReadSpec): string {
  const dp = (key: string, code: number, value: string) => `@@kpm:dp ${key} ${code} ${value}`;
  const cr = (key: string, code: number, value: string) => `@@kpm:cleanup-read ${key} ${code} ${value}`;
  const ipvs = r.ipvs === undefined || r.ipvs === null ? dp('ipvs', 200, 'ip_vs not loaded') : r.ipvs === 'missing' ? dp('ipvs', 127, '') : dp('ipvs', 0, b64(r.ipvs));
  return [
    r.ipt4 === undefined ? dp('ipt4', 127, '') : dp('ipt4', 0, b64(r.ipt4)),
    r.ipt6 === undefined ? dp('ipt6', 127, '') : dp('ipt6', 0, b64(r.ipt6)),
    ipvs,
    r.kubeIpvs0 ? dp('kube-ipvs0', 0, b64(r.kubeIpvs0.join('\n') + '\n')) : dp('kube-ipvs0', 1, ''),
    r.ipsets ? dp('ipset', 0, b64(r.ipsets.join('\n') + '\n')) : dp('ipset', 200, ''),
    ...(r.nft ? [dp('nft-tables', 0, b64(r.nft.join('\n') + '\n')), dp('nft', 1, b64('no table ip kube-proxy or ip6 kube-proxy on the node\n'))] : [dp('nft', 200, '')]),
    cr('ip-cmd', 0, ''),
    cr('addresses', 0, b64(['127.0.0.1', '::1', ...(r.addresses ?? [NODE])].join('\n') + '\n')),
    cr('ipset-cmd', r.ipsetInstalled === false ? 127 : 0, ''),
  ].join('\n');
}

const plan = (from: ProxyMode, to: ProxyMode, r: ReadSpec) => planCleanup(from, to, parseNodeDataplane(readOutput(r)), cluster);
const labels = (p: CleanupPlan) => p.items.map(itemLabel);

// One node of each old mode, as kube-proxy leaves it, with foreign objects beside.
const IPTABLES_NODE: ReadSpec = {
  ipt4: withForeign(kubeProxyIptablesSave([CART, DNS, IDLE], { style: '1.28', family: 'ipv4', clusterCIDR: '10.244.0.0/16' })),
  ipt6: kubeProxyIptablesSave([CART6], { style: '1.20', family: 'ipv6', clusterCIDR: 'fd00:10:244::/56' }),
  ipvs: null,
  kubeIpvs0: null,
  ipsets: [],
  nft: ['table inet user_fw', 'table ip filter', 'table ip nat'],
};
const ipvsList = kubeProxyIpvsadm([CART, DNS], { nodeAddresses: [NODE] }).trimEnd() + '\nUDP  [fd00:10:96::14]:80 rr\n' + FOREIGN_VS.join('\n') + '\n';
const IPVS_NODE: ReadSpec = {
  ipt4: withForeign(kubeProxyIpvsModeIptablesSave('ipv4')),
  ipt6: kubeProxyIpvsModeIptablesSave('ipv6'),
  ipvs: ipvsList,
  kubeIpvs0: ['10.96.50.20/32', '192.0.2.10/32', '203.0.113.7/32', '10.96.0.10/32'],
  ipsets: [...IPVS_SETS, ...IPVS_SETS.map((s) => s.replace(/^KUBE-/, 'KUBE-6-')), 'KUBE-SRC-Q2VJXMSTO5KOVBCY'],
  nft: ['table inet user_fw'],
};
/** iptables-save of a node with no rule at all */
const EMPTY_SAVE = '*nat\n:PREROUTING ACCEPT [0:0]\nCOMMIT\n';
const NFTABLES_NODE: ReadSpec = {
  ipt4: withForeign('*nat\n:PREROUTING ACCEPT [0:0]\nCOMMIT\n*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\nCOMMIT\n'),
  ipt6: EMPTY_SAVE,
  ipvs: null,
  kubeIpvs0: null,
  ipsets: [],
  nft: ['table ip kube-proxy', 'table ip6 kube-proxy', 'table inet kube-proxy', 'table inet user_fw', 'table ip nat', 'table ip filter'],
};

const PAIRS: [ProxyMode, ProxyMode, ReadSpec][] = [
  ['iptables', 'ipvs', IPTABLES_NODE],
  ['iptables', 'nftables', IPTABLES_NODE],
  ['ipvs', 'iptables', IPVS_NODE],
  ['ipvs', 'nftables', IPVS_NODE],
  ['nftables', 'iptables', NFTABLES_NODE],
  ['nftables', 'ipvs', NFTABLES_NODE],
];

describe('plans', () => {
  const svc = (prefix: 'KUBE-SVC-' | 'KUBE-EXT-' | 'KUBE-FW-' | 'KUBE-SVL-' | 'KUBE-XLB-', proto = 'tcp', port = 'http') => servicePortChainName(servicePortName('shop', 'cart', port), proto, prefix);

  test('from iptables: the per-Service chains (all six kinds), iptables-only chains and every rule leading into them; to ipvs and to nftables alike', () => {
    const p = plan('iptables', 'ipvs', IPTABLES_NODE);
    const l = labels(p);
    const natChains = [...IPTABLES_NODE.ipt4!.matchAll(/^:(KUBE-(?:SVC|SEP|EXT|SVL|FW)-\w+) /gm)].map((m) => `iptables nat chain: ${m[1]}`);
    expect(natChains.length).toBeGreaterThan(8);
    expect(l).toEqual(expect.arrayContaining(natChains));
    expect(l).toEqual(
      expect.arrayContaining([
        `iptables nat chain: ${svc('KUBE-SVC-')}`,
        'iptables nat chain: KUBE-NODEPORTS',
        'iptables filter chain: KUBE-SERVICES',
        'iptables filter chain: KUBE-EXTERNAL-SERVICES',
        `iptables nat rule: -A KUBE-SERVICES -d 10.96.50.20/32 -p tcp -m comment --comment "shop/cart:http cluster IP" -m tcp --dport 80 -j ${svc('KUBE-SVC-')}`,
        `iptables nat rule: -A KUBE-SERVICES -d 203.0.113.7/32 -p tcp -m comment --comment "shop/cart:http loadbalancer IP" -m tcp --dport 80 -j ${svc('KUBE-FW-')}`,
        'iptables filter rule: -A OUTPUT -m conntrack --ctstate NEW -m comment --comment "kubernetes service portals" -j KUBE-SERVICES',
        `ip6tables nat chain: ${servicePortChainName('shop/cart:http', 'tcp', 'KUBE-XLB-')}`,
        `ip6tables nat chain: ${servicePortChainName('shop/cart:http', 'tcp', 'KUBE-FW-')}`,
        expect.stringMatching(/^ip6tables nat rule: -A KUBE-SERVICES -d 2001:db8::7\/128 .* -j KUBE-FW-/),
      ]),
    );
    // a rule inside a chain that goes is flushed with it, not listed on its own
    expect(l.some((x) => /rule: -A KUBE-(SVC|SEP|EXT|SVL|FW|XLB)-/.test(x))).toBe(false);
    // chains both modes (or kubelet) use stay, and so do their rules that lead nowhere old
    expect(l.join('\n')).not.toMatch(/chain: KUBE-(POSTROUTING|MARK-MASQ|MARK-DROP|PROXY-FIREWALL|FORWARD)$|nat chain: KUBE-SERVICES$|-j KUBE-MARK-MASQ$/m);
    expect(labels(plan('iptables', 'nftables', IPTABLES_NODE))).toEqual(l);
    expect(p.kept).toEqual([]);
    expect(p.problems).toEqual([]);
    // rules first, then the chains, per table: the order the node applies them in
    const firstChain = l.findIndex((x) => x.startsWith('iptables nat chain'));
    expect(l.slice(firstChain).every((x) => !x.startsWith('iptables nat rule'))).toBe(true);
  });

  test("a rule that is not kube-proxy's but jumps into a chain that goes goes with it (it could not stay)", () => {
    const chain = svc('KUBE-SVC-');
    const dnat = FOREIGN_NAT[0]!;
    const p = plan('iptables', 'ipvs', { ...IPTABLES_NODE, ipt4: IPTABLES_NODE.ipt4!.replace(dnat, `${dnat}\n-A PREROUTING -s 10.1.0.0/16 -j ${chain}`) });
    expect(labels(p)).toContain(`iptables nat rule: -A PREROUTING -s 10.1.0.0/16 -j ${chain}`);
    expect(labels(p).join('\n')).not.toMatch(/2222/);
  });

  test("from ipvs: the Services' virtual servers; a VIP, an FWM service, a NodePort's port on another address and excludeCIDRs stay", () => {
    const p = plan('ipvs', 'iptables', IPVS_NODE);
    const vs = labels(p).filter((l) => l.startsWith('IPVS'));
    const expected = [CART, DNS]
      .flatMap((s) => s.ports.flatMap((port) => expectedFrontends(s, port, NODE)))
      .filter((f) => f.address !== '203.0.113.7:80')
      .map((f) => `IPVS virtual server: ${f.protocol} ${f.address}`);
    expect(vs.sort()).toEqual([...expected, 'IPVS virtual server: UDP [fd00:10:96::14]:80'].sort());
    expect(p.kept).toEqual([
      { label: 'IPVS virtual server: TCP 203.0.113.7:80', why: 'under ipvs.excludeCIDRs' },
      { label: 'IPVS virtual server: TCP 192.168.1.200:443', why: expect.stringMatching(/not a Service address/) },
      { label: 'IPVS virtual server: TCP 198.18.0.5:30480', why: expect.stringMatching(/not a Service address/) },
      { label: 'IPVS virtual server: FWM 100', why: expect.stringMatching(/not a Service address/) },
    ]);
  });

  test('from ipvs: ipvs-only chains, the rules leading into them and the --match-set rules in shared chains go, then the ipsets and kube-ipvs0', () => {
    const l = labels(plan('ipvs', 'nftables', IPVS_NODE));
    for (const [fam, tool] of [['', 'iptables'], ['6-', 'ip6tables']] as const) {
      expect(l).toEqual(
        expect.arrayContaining([
          `${tool} nat chain: KUBE-NODE-PORT`,
          `${tool} nat chain: KUBE-LOAD-BALANCER`,
          `${tool} filter chain: KUBE-NODE-PORT`,
          `${tool} filter chain: KUBE-SOURCE-RANGES-FIREWALL`,
          `${tool} filter chain: KUBE-IPVS-FILTER`,
          `${tool} filter chain: KUBE-IPVS-OUT-FILTER`,
          `${tool} nat rule: -A KUBE-SERVICES -m addrtype --dst-type LOCAL -j KUBE-NODE-PORT`,
          `${tool} nat rule: -A KUBE-SERVICES -m set --match-set KUBE-${fam}CLUSTER-IP dst,dst -j ACCEPT`,
          expect.stringMatching(new RegExp(`^${tool} nat rule: -A KUBE-POSTROUTING .*--match-set KUBE-${fam}LOOP-BACK dst,dst,src -j MASQUERADE$`)),
          expect.stringMatching(new RegExp(`^${tool} filter rule: -A KUBE-PROXY-FIREWALL .*-j KUBE-SOURCE-RANGES-FIREWALL$`)),
          `${tool} filter rule: -A OUTPUT -m comment --comment "kubernetes ipvs access filter" -j KUBE-IPVS-OUT-FILTER`,
        ]),
      );
    }
    expect(l.join('\n')).not.toMatch(/-s (127\.0\.0\.0\/8|::1\/128) -j RETURN|KUBE-FORWARD|chain: KUBE-PROXY-FIREWALL|chain: KUBE-SERVICES|MASQUERADE --random-fully/);
    const ipsets = l.filter((x) => x.startsWith('ipset: '));
    expect(ipsets).toEqual([...IPVS_SETS, ...IPVS_SETS.map((s) => s.replace(/^KUBE-/, 'KUBE-6-'))].map((s) => `ipset: ${s}`));
    expect(l.at(-1)).toBe('link: kube-ipvs0');
    // virtual servers first, ipsets after every rule that matches them
    const kinds = l.map((x) => (x.startsWith('IPVS') ? 'vs' : x.includes(' rule: ') || x.includes(' chain: ') ? 'iptables' : x.split(':')[0]!));
    expect(kinds.filter((k, i) => k !== kinds[i - 1])).toEqual(['vs', 'iptables', 'ipset', 'link']);
  });

  test('an ipset a rule that stays still matches is left alone, with that rule named', () => {
    const ipt4 = IPVS_NODE.ipt4!.replace('-A FORWARD -j MYCHAIN', '-A FORWARD -j MYCHAIN\n-A FORWARD -m set --match-set KUBE-CLUSTER-IP dst,dst -j ACCEPT');
    const p = plan('ipvs', 'iptables', { ...IPVS_NODE, ipt4 });
    expect(labels(p)).not.toContain('ipset: KUBE-CLUSTER-IP');
    expect(labels(p)).toContain('ipset: KUBE-6-CLUSTER-IP');
    expect(p.kept).toContainEqual({ label: 'ipset: KUBE-CLUSTER-IP', why: 'still matched by iptables filter: -A FORWARD -m set --match-set KUBE-CLUSTER-IP dst,dst -j ACCEPT' });
  });

  test('from nftables: the ip and ip6 kube-proxy tables only', () => {
    for (const to of ['iptables', 'ipvs'] as const) {
      expect(labels(plan('nftables', to, NFTABLES_NODE))).toEqual(['nftables table: ip kube-proxy', 'nftables table: ip6 kube-proxy']);
    }
  });

  test('a foreign rule, chain, VIP, ipset or nft table is never in any plan; each pair removes only its old mode', () => {
    for (const [from, to, node] of PAIRS) {
      const l = labels(plan(from, to, node));
      expect(l.length, `${from} -> ${to}`).toBeGreaterThan(1);
      expect(l.join('\n'), `${from} -> ${to}`).not.toMatch(FOREIGN_WORDS);
    }
    // the other modes' objects on each node are not this plan's business
    expect(labels(plan('iptables', 'ipvs', IPVS_NODE))).toEqual([]);
    expect(labels(plan('ipvs', 'iptables', IPTABLES_NODE))).toEqual([]);
    expect(labels(plan('nftables', 'iptables', IPVS_NODE))).toEqual([]);
    expect(labels(plan('ipvs', 'iptables', NFTABLES_NODE))).toEqual([]);
  });

  test('nothing to clean: no item, and "nothing to clean" said', () => {
    const p = plan('iptables', 'ipvs', NFTABLES_NODE);
    expect(p.items).toEqual([]);
    expect(describePlan(p, true)).toEqual(['nothing to clean: no objects of iptables mode on the node']);
  });

  test("what could not be read is reported for the old mode's parts only, without failing", () => {
    const p = plan('ipvs', 'iptables', { ...IPVS_NODE, ipvs: 'missing', ipsetInstalled: false, ipsets: null });
    expect(p.problems).toEqual(['ipvsadm -Ln: not installed', 'ipset is not installed: KUBE-* ipsets not read']);
    expect(labels(p).some((l) => l.startsWith('IPVS') || l.startsWith('ipset'))).toBe(false);
    expect(labels(p)).toContain('link: kube-ipvs0');
    expect(plan('iptables', 'ipvs', { ...IPTABLES_NODE, ipvs: 'missing', ipsetInstalled: false }).problems).toEqual([]);
    expect(plan('iptables', 'ipvs', { ...IPTABLES_NODE, ipt6: undefined }).problems).toEqual(['ip6tables-save: not installed']);
    expect(describePlan(plan('nftables', 'iptables', { ...NFTABLES_NODE, nft: null }), true)).toEqual(['nothing to clean: no objects of nftables mode on the node']);
    expect(() => plan('ipvs', 'ipvs', IPVS_NODE)).toThrow(/both ipvs/);
  });

  test("nft tables not read: each reason is a problem of nftables mode's, but nf_tables not in the kernel (no table can exist)", () => {
    const read = (...nft: string[]) => {
      const d = parseNodeDataplane([...readOutput(IPTABLES_NODE).split('\n').filter((l) => !l.startsWith('@@kpm:dp nft')), ...nft].join('\n'));
      return { nftTables: d.nftTables, problems: d.problems.filter((p) => p.area === 'nft').map((p) => p.text) };
    };
    const failed = b64('\n  Error: Could not process rule: Operation not permitted\nlist tables\n^^^^^^^^^^^\n');
    expect(read(`@@kpm:dp nft-tables 1 ${failed}`, `@@kpm:dp nft 1 ${failed}`)).toEqual({
      nftTables: null,
      problems: ['nft list tables failed (exit 1): list tables | ^^^^^^^^^^^'],
    });
    expect(read(`@@kpm:dp nft-tables 0 ${b64('table inet user_fw\n\n')}`, `@@kpm:dp nft 1 ${b64('no table ip kube-proxy or ip6 kube-proxy on the node\n')}`)).toEqual({ nftTables: ['table inet user_fw'], problems: [] });
    expect(read('@@kpm:dp nft 127 ')).toEqual({ nftTables: null, problems: ['nft is not installed: nftables tables not read'] });
    expect(read('@@kpm:dp nft 200 ')).toEqual({ nftTables: null, problems: [] });
    // no `nft list tables` entry where nft could run (a summary read, or output cut short): not known
    for (const nft of [[], ['@@kpm:dp nft 0 '], [`@@kpm:dp nft 1 ${b64('nft: oops\n')}`]]) {
      expect(read(...nft)).toEqual({ nftTables: null, problems: ['nft tables: not read'] });
    }
    expect(plan('nftables', 'iptables', { ...NFTABLES_NODE, nft: null }).problems).toEqual([]);
  });
});

describe('dry run and report lines', () => {
  test('a dry run lists every object by its label, then what stays and why', () => {
    const p = plan('ipvs', 'iptables', {
      ipvs: 'IP Virtual Server version 1.2.1 (size=4096)\nTCP  10.96.50.20:80 rr\nTCP  203.0.113.7:80 rr\n',
      ipt4: '*nat\n:PREROUTING ACCEPT [0:0]\n:KUBE-NODE-PORT - [0:0]\n-A PREROUTING -m addrtype --dst-type LOCAL -j KUBE-NODE-PORT\nCOMMIT\n',
      ipt6: EMPTY_SAVE,
      kubeIpvs0: ['10.96.50.20/32'],
      ipsets: ['KUBE-CLUSTER-IP'],
    });
    expect(describePlan(p, true)).toEqual([
      'dry run: would remove 5 objects of ipvs mode (the node now runs iptables):',
      '  IPVS virtual server: TCP 10.96.50.20:80',
      '  iptables nat rule: -A PREROUTING -m addrtype --dst-type LOCAL -j KUBE-NODE-PORT',
      '  iptables nat chain: KUBE-NODE-PORT',
      '  ipset: KUBE-CLUSTER-IP',
      '  link: kube-ipvs0',
      '  left alone: IPVS virtual server: TCP 203.0.113.7:80 (under ipvs.excludeCIDRs)',
    ]);
  });
});

describe('the node script and its output', () => {
  const empty = EMPTY_SAVE;
  const small = plan('ipvs', 'iptables', {
    ipt4: empty,
    ipt6: empty,
    ipvs: 'IP Virtual Server version 1.2.1 (size=4096)\nTCP  10.96.50.20:80 rr\nSCTP  10.96.0.9:9999 rr\nUDP  [fd00:10:96::14]:80 rr\n',
    kubeIpvs0: [],
    ipsets: ['KUBE-LOOP-BACK'],
  });

  test('the plan travels as base64 fields, one object a line, the label byte for byte', () => {
    const script = cleanupApplyScript(small);
    const value = /^KPM_CLEANUP=(\S+)$/m.exec(script)![1]!;
    const lines = Buffer.from(value, 'base64').toString('utf8').trimEnd().split('\n').map((l) => l.split(' '));
    const dec = (s: string | undefined) => Buffer.from(s ?? '', 'base64').toString('utf8');
    expect(lines.map((w) => [w[0], ...w.slice(1).map(dec)])).toEqual([
      ['vs', 'IPVS virtual server: TCP 10.96.50.20:80', '-t', '10.96.50.20:80'],
      ['vs', 'IPVS virtual server: SCTP 10.96.0.9:9999', '--sctp-service', '10.96.0.9:9999'],
      ['vs', 'IPVS virtual server: UDP [fd00:10:96::14]:80', '-u', '[fd00:10:96::14]:80'],
      ['ipset', 'ipset: KUBE-LOOP-BACK', 'KUBE-LOOP-BACK'],
      ['link', 'link: kube-ipvs0', 'kube-ipvs0'],
    ]);
    expect(script.indexOf(READBACK_MARKER)).toBeGreaterThan(script.indexOf('kpm_virtual_servers\n'));
  });

  const status = (s: string, label: string, detail = '') => `@@kpm:cleanup ${s} ${b64(label)} ${b64(detail)}`;

  test('output parsed: removed, failed, skipped; what the read-back still finds is left; an object never answered for failed', () => {
    const out = [
      status('removed', 'IPVS virtual server: TCP 10.96.50.20:80'),
      status('failed', 'IPVS virtual server: SCTP 10.96.0.9:9999', 'ipvsadm -D --sctp-service 10.96.0.9:9999: Memory allocation problem'),
      status('skipped', 'IPVS virtual server: UDP [fd00:10:96::14]:80', 'not on the node any more'),
      status('removed', 'ipset: KUBE-LOOP-BACK'),
      READBACK_MARKER,
      readOutput({ ipt4: empty, ipt6: empty, ipvs: 'IP Virtual Server version 1.2.1 (size=4096)\nSCTP  10.96.0.9:9999 rr\n', ipsets: [], kubeIpvs0: [] }),
    ].join('\n');
    const r = parseCleanupResult(small, { stdout: out, stderr: 'Killed', code: 137 }, cluster);
    expect(r).toEqual({
      removed: ['IPVS virtual server: TCP 10.96.50.20:80', 'ipset: KUBE-LOOP-BACK'],
      failed: ['IPVS virtual server: SCTP 10.96.0.9:9999: ipvsadm -D --sctp-service 10.96.0.9:9999: Memory allocation problem', 'link: kube-ipvs0: no answer from the node (exit 137: Killed)'],
      skipped: ['IPVS virtual server: UDP [fd00:10:96::14]:80: not on the node any more'],
      remaining: ['IPVS virtual server: SCTP 10.96.0.9:9999', 'link: kube-ipvs0'],
      problems: [],
    });
    expect(describeResult(small, r)).toEqual([
      'removed 2 objects of ipvs mode (the node now runs iptables):',
      '  IPVS virtual server: TCP 10.96.50.20:80',
      '  ipset: KUBE-LOOP-BACK',
      '  FAILED: IPVS virtual server: SCTP 10.96.0.9:9999: ipvsadm -D --sctp-service 10.96.0.9:9999: Memory allocation problem',
      '  FAILED: link: kube-ipvs0: no answer from the node (exit 137: Killed)',
      '  skipped: IPVS virtual server: UDP [fd00:10:96::14]:80: not on the node any more',
      '  still on the node: IPVS virtual server: SCTP 10.96.0.9:9999',
      '  still on the node: link: kube-ipvs0',
    ]);
    const cut = parseCleanupResult(small, { stdout: status('removed', 'IPVS virtual server: TCP 10.96.50.20:80'), stderr: '', code: null }, cluster);
    expect(cut.failed).toHaveLength(4);
    expect(cut.problems).toEqual([expect.stringMatching(/^the node sent no read-back after the cleanup: what is left is not known/)]);
  });
});

describe('several old modes on one node: one read, each next plan from the apply before it', () => {
  // iptables mode's chains and nftables mode's tables on one node that now runs ipvs
  const before: ReadSpec = { ...IPTABLES_NODE, nft: ['table ip kube-proxy', 'table ip6 kube-proxy', 'table inet user_fw'] };
  // by the time of the read-back, something else has removed the ip6 table: the next plan must know
  const afterIptables: ReadSpec = { ...before, ipt4: withForeign(EMPTY_SAVE), ipt6: EMPTY_SAVE, nft: ['table ip kube-proxy', 'table inet user_fw'] };
  const afterAll_: ReadSpec = { ...afterIptables, nft: ['table inet user_fw'] };
  const answer = (s: string, label: string) => `@@kpm:cleanup ${s} ${b64(label)} ${b64('')}`;

  /** A node that answers the read with `reads` in turn and each apply with every planned object removed. */
  function scriptedNode(reads: ReadSpec[], readbacks: (ReadSpec | null)[]) {
    const calls: ('read' | 'apply')[] = [];
    const plans: string[][] = [];
    const shell = {
      run: async (script: string) => {
        if (!/^KPM_CLEANUP=/m.test(script)) {
          calls.push('read');
          return { stdout: readOutput(reads.shift()!), stderr: '', code: 0 };
        }
        calls.push('apply');
        const items = Buffer.from(/^KPM_CLEANUP=(\S+)$/m.exec(script)![1]!, 'base64').toString('utf8').trimEnd().split('\n');
        const labels = items.map((l) => Buffer.from(l.split(' ')[l.startsWith('rule') || l.startsWith('chain') ? 3 : 1]!, 'base64').toString('utf8'));
        plans.push(labels);
        const rb = readbacks.shift();
        const stdout = [...labels.map((l) => answer('removed', l)), ...(rb ? [READBACK_MARKER, readOutput(rb)] : [])].join('\n');
        return { stdout, stderr: '', code: rb ? 0 : 1 };
      },
    };
    return { shell, calls, plans };
  }

  test('iptables and nftables leftovers: one read exec and one apply per old mode; nftables planned from the read-back', async () => {
    const node = scriptedNode([before], [afterIptables, afterAll_]);
    const out = await cleanupOldModes(node.shell, { from: ['iptables', 'nftables'], to: 'ipvs', cluster });
    expect(node.calls).toEqual(['read', 'apply', 'apply']);
    expect(out.map((o) => o.status)).toEqual(['cleaned', 'cleaned']);
    expect(node.plans[1]).toEqual(['nftables table: ip kube-proxy']);
    expect(node.plans[0]!.some((l) => /KUBE-SVC-/.test(l))).toBe(true);
  });

  test('the second mode is planned from a fresh read where the first apply sent no read-back', async () => {
    const node = scriptedNode([before, afterIptables], [null, afterAll_]);
    const out = await cleanupOldModes(node.shell, { from: ['iptables', 'nftables'], to: 'ipvs', cluster });
    expect(node.calls).toEqual(['read', 'apply', 'read', 'apply']);
    expect(out[0]!.status).toBe('failed');
    expect(out[1]!.status).toBe('cleaned');
  });

  test('nothing of either mode: the one read, no apply; a dry run plans both from it', async () => {
    const clean = scriptedNode([afterAll_], []);
    expect((await cleanupOldModes(clean.shell, { from: ['iptables', 'nftables'], to: 'ipvs', cluster })).map((o) => o.status)).toEqual(['nothing to clean', 'nothing to clean']);
    expect(clean.calls).toEqual(['read']);
    const dry = scriptedNode([before], []);
    expect((await cleanupOldModes(dry.shell, { from: ['iptables', 'nftables'], to: 'ipvs', cluster, dryRun: true })).map((o) => o.status)).toEqual(['planned', 'planned']);
    expect(dry.calls).toEqual(['read']);
  });
});

// ---------------------------------------------------------------------------------------------------------
// old-mode-apply.sh itself, against stubs: iptables-save prints the table as it is at each call,
// iptables-restore keeps what it was fed and answers as told. Every other command the script could
// change a node with is a stub that refuses, so nothing of the machine running the test is touched.
// ---------------------------------------------------------------------------------------------------------

const temps: string[] = [];
afterAll(() => {
  for (const d of temps) rmSync(d, { recursive: true, force: true });
});

const BASH = spawnSync('/bin/sh', ['-c', 'command -v bash'], { encoding: 'utf8' }).stdout.trim();

interface StubRun {
  stdout: string;
  /** what each iptables-restore call was fed, in order */
  restores: string[];
}

/**
 * Runs the apply part of the cleanup script with `saves` as the nat table at each iptables-save call
 * (the last one repeats) and `codes` as the exit of each iptables-restore call (0 after the list).
 */
function runApply(p: CleanupPlan, saves: string[], codes: number[]): StubRun {
  const dir = mkdtempSync(join(tmpdir(), 'kpm-cleanup-test-'));
  temps.push(dir);
  const bin = join(dir, 'bin');
  mkdirSync(bin);
  saves.forEach((s, i) => writeFileSync(join(dir, `save.${i}`), s));
  codes.forEach((c, i) => writeFileSync(join(dir, `code.${i}`), String(c)));
  const counter = (name: string) => `n=$(cat ${shQuote(join(dir, name))} 2>/dev/null || echo 0); echo $((n + 1)) >${shQuote(join(dir, name))}`;
  const stubs: Record<string, string> = {
    'iptables-save': `${counter('saves')}\nf=${shQuote(dir)}/save.$n; [ -f "$f" ] || f=${shQuote(dir)}/save.${saves.length - 1}\ncat "$f"`,
    'iptables-restore': `${counter('restores')}\ncat >${shQuote(dir)}/restore.$n\nc=$(cat ${shQuote(dir)}/code.$n 2>/dev/null || echo 0)\n[ "$c" = 0 ] || echo "iptables-restore: line 2 failed" >&2\nexit "$c"`,
  };
  for (const refuse of ['ip6tables-save', 'ip6tables-restore', 'ipvsadm', 'ipset', 'ip', 'nft', 'iptables', 'ip6tables', 'modprobe']) stubs[refuse] ??= 'echo "stub: refused" >&2; exit 97';
  for (const [name, body] of Object.entries(stubs)) {
    writeFileSync(join(bin, name), `#!${BASH}\n${body}\n`);
    chmodSync(join(bin, name), 0o755);
  }
  const script = cleanupApplyScript(p);
  const applyOnly = script.slice(0, script.indexOf(`printf '%s\\n' ${shQuote(READBACK_MARKER)}`));
  const r = spawnSync(BASH, ['--noprofile', '--norc', '-c', applyOnly], { encoding: 'utf8', env: { PATH: `${bin}:/usr/bin:/bin`, LC_ALL: 'C', TMPDIR: dir } });
  if (r.status !== 0) throw new Error(`apply script exited ${r.status}: ${r.stderr}`);
  const restores = readdirSync(dir)
    .filter((f) => /^restore\.\d+$/.test(f))
    .sort((a, b) => Number(a.split('.')[1]) - Number(b.split('.')[1]))
    .map((f) => readFileSync(join(dir, f), 'utf8'));
  return { stdout: r.stdout, restores };
}

describe('old-mode-apply.sh, per table, against stubs', () => {
  const SVC = servicePortChainName('shop/cart:http', 'tcp');
  const jump = `-A KUBE-SERVICES -d 10.96.50.20/32 -p tcp -m comment --comment "shop/cart:http cluster IP -j KUBE-SEP-QUOTED" -m tcp --dport 80 -j ${SVC}`;
  /** nat with `copies` copies of the Service's jump (kube-proxy wrote it twice) and `extra` rules */
  const nat = (extra: string[] = [], copies = 2) =>
    [
      '*nat',
      ':PREROUTING ACCEPT [0:0]',
      ':KUBE-SERVICES - [0:0]',
      `:${SVC} - [0:0]`,
      ':KUBE-SEP-AAAAAAAAAAAAAAAA - [0:0]',
      ':KUBE-MARK-MASQ - [0:0]',
      '-A PREROUTING -m comment --comment "kubernetes service portals" -j KUBE-SERVICES',
      '-A PREROUTING -p tcp -m tcp --dport 2222 -j DNAT --to-destination 10.0.0.9:22',
      ...extra,
      ...new Array<string>(copies).fill(jump),
      `-A ${SVC} -m comment --comment "shop/cart:http -> 10.244.1.11:8080" -j KUBE-SEP-AAAAAAAAAAAAAAAA`,
      '-A KUBE-SEP-AAAAAAAAAAAAAAAA -p tcp -m tcp -j DNAT --to-destination 10.244.1.11:8080',
      'COMMIT',
      '',
    ].join('\n');
  const p = plan('iptables', 'ipvs', { ipt4: nat() });
  const verdicts = (out: string) =>
    out
      .split('\n')
      .filter((l) => l.startsWith('@@kpm:cleanup '))
      .map((l) => {
        const [, s, label, detail] = l.split(' ');
        const text = (v: string | undefined) => Buffer.from(v ?? '', 'base64').toString('utf8');
        return `${s} ${text(label)}${detail ? ` (${text(detail)})` : ''}`;
      });

  test('one transaction: -D each planned rule (both copies), then -F and -X each chain; every object reported removed', () => {
    expect(labels(p)).toEqual([`iptables nat rule: ${jump}`, `iptables nat rule: ${jump}`, `iptables nat chain: ${SVC}`, 'iptables nat chain: KUBE-SEP-AAAAAAAAAAAAAAAA']);
    const r = runApply(p, [nat()], []);
    expect(r.restores).toEqual([['*nat', `-D${jump.slice(2)}`, `-D${jump.slice(2)}`, `-F ${SVC}`, '-F KUBE-SEP-AAAAAAAAAAAAAAAA', `-X ${SVC}`, '-X KUBE-SEP-AAAAAAAAAAAAAAAA', 'COMMIT', ''].join('\n')]);
    expect(verdicts(r.stdout)).toEqual(labels(p).map((l) => `removed ${l}`));
  });

  test('changed since the plan: a rule gone is skipped, a chain something new leads into stays with what it leads to', () => {
    const newRule = `-A PREROUTING -d 10.96.50.99/32 -j ${SVC}`;
    const r = runApply(p, [nat([newRule], 1)], []);
    expect(r.restores).toEqual([]);
    expect(verdicts(r.stdout)).toEqual([
      `skipped iptables nat rule: ${jump} (leads into ${SVC}, which stays: a rule the plan does not name leads into it now)`,
      `skipped iptables nat rule: ${jump} (not on the node any more as planned)`,
      `skipped iptables nat chain: ${SVC} (a rule the plan does not name leads into it now)`,
      'skipped iptables nat chain: KUBE-SEP-AAAAAAAAAAAAAAAA (a rule the plan does not name leads into it now)',
    ]);
  });

  test('a failed transaction: the table is read again and the transaction made anew, once', () => {
    const r = runApply(p, [nat(), nat([], 1)], [1]);
    expect(r.restores).toHaveLength(2);
    expect(r.restores[1]).toBe(['*nat', `-D${jump.slice(2)}`, `-F ${SVC}`, '-F KUBE-SEP-AAAAAAAAAAAAAAAA', `-X ${SVC}`, '-X KUBE-SEP-AAAAAAAAAAAAAAAA', 'COMMIT', ''].join('\n'));
    expect(verdicts(r.stdout)).toEqual([`removed iptables nat rule: ${jump}`, `skipped iptables nat rule: ${jump} (not on the node any more as planned)`, `removed iptables nat chain: ${SVC}`, 'removed iptables nat chain: KUBE-SEP-AAAAAAAAAAAAAAAA']);
  });

  test('failing twice: every object of the table is reported failed with iptables-restore\'s words', () => {
    const r = runApply(p, [nat()], [1, 1]);
    expect(r.restores).toHaveLength(2);
    const why = 'iptables-restore --noflush failed on the first try and again after reading the table anew: iptables-restore: line 2 failed';
    expect(verdicts(r.stdout)).toEqual(labels(p).map((l) => `failed ${l} (${why})`));
  });
});

describe("status's leftover judgement shares the cleanup's definition", () => {
  test('excludeCIDRs, IPv6 spellings, NodePorts on node addresses; kube-router\'s KUBE-* ipsets and an inet table are nobody\'s leftover', () => {
    const judge = virtualServerJudge(cluster, [NODE]);
    expect(judge({ protocol: 'UDP', address: '[fd00:10:96::14]:80' })).toBe('service');
    expect(judge({ protocol: 'TCP', address: '203.0.113.7:80' })).toBe('excluded');
    expect(judge({ protocol: 'TCP', address: `${NODE}:30480` })).toBe('service');
    expect(judge({ protocol: 'TCP', address: '198.18.0.5:30480' })).toBe('foreign');
    expect(virtualServerJudge(cluster)({ protocol: 'TCP', address: '198.18.0.5:30480' })).toBe('service');
    expect(judge({ protocol: 'FWM', address: '100' })).toBe('foreign');
    expect(isKubeProxyIpset('KUBE-6-NODE-PORT-LOCAL-SCTP-HAS')).toBe(true);
    expect(isKubeProxyIpset('KUBE-SRC-Q2VJXMSTO5KOVBCY')).toBe(false);

    const summary = parseDataplaneSummary(
      [
        `@@kpm:dp ipvs 0 ${b64('TCP 203.0.113.7:80\nTCP 10.96.50.20:80\n')}`,
        `@@kpm:dp ipset 0 ${b64('KUBE-SRC-Q2VJXMSTO5KOVBCY\nKUBE-CLUSTER-IP\n')}`,
        `@@kpm:dp nft 0 ${b64('table inet kube-proxy\ntable ip kube-proxy\n')}`,
      ].join('\n'),
    );
    expect(leftoversOf('iptables', summary, cluster)).toEqual(['1 IPVS virtual server for Services', '1 KUBE-* ipset', 'nftables ip kube-proxy']);
  });

  test('what a cleanup leaves on purpose is no leftover for status, except a NodePort-port VIP off the node (status reads no node addresses)', () => {
    const p = plan('ipvs', 'iptables', IPVS_NODE);
    const planned = (kind: CleanupItem['kind']) => p.items.filter((i) => i.kind === kind);
    const summary = (vs: string[], ipsets: string[]) =>
      parseDataplaneSummary([`@@kpm:dp ipvs 0 ${b64(vs.join('\n') + '\n')}`, `@@kpm:dp ipset 0 ${b64(ipsets.join('\n') + '\n')}`, '@@kpm:dp kube-ipvs0 1 '].join('\n'));
    const keptVs = p.kept.filter((k) => k.label.startsWith('IPVS ')).map((k) => k.label.replace('IPVS virtual server: ', ''));
    const keptSets = IPVS_NODE.ipsets!.filter((s) => !planned('ipset').some((i) => i.kind === 'ipset' && i.name === s));
    expect(keptSets).toEqual(['KUBE-SRC-Q2VJXMSTO5KOVBCY']);
    expect(leftoversOf('iptables', summary(keptVs.filter((v) => !v.includes('198.18.0.5')), keptSets), cluster)).toEqual([]);
    expect(leftoversOf('iptables', summary(keptVs, keptSets), cluster)).toEqual(['1 IPVS virtual server for Services']);
    const removedVs = planned('virtual-server').map((i) => (i.kind === 'virtual-server' ? `${i.protocol} ${i.address}` : ''));
    expect(leftoversOf('iptables', summary(removedVs, IPVS_NODE.ipsets!), cluster)).toEqual([`${removedVs.length} IPVS virtual servers for Services`, '14 KUBE-* ipsets']);
  });
});
