import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { dumpKind, trace } from '../../tasks/commands/trace.ts';
import { kubeProxyNftChainName, parseKubeProxyChainName, parseNftables, readRule, type NftDump } from '../../tasks/dataplane/nftables.ts';
import { compareWithEndpoints, renderTraceTree, traceNftables, type ServiceTrace, type TraceFrontend } from '../../tasks/dataplane/trace.ts';
import { kubeProxyIptablesSave, kubeProxyIpvsadm, kubeProxyNftables, type GenEndpoint, type GenService } from '../dataplane-dumps.ts';

// kube-proxy's nftables mode: the parser on what the real nft prints (recorded on a lab host, see
// dataplane-fixtures/nftables/README.md) and on a dump in the shape real kube-proxy 1.31 nodes print,
// then traces of dumps generated for known Services, where the trace must find exactly the frontends,
// endpoints and shares they were made from; and text that is not what the parser expects.

const DIR = path.join(import.meta.dirname, 'dataplane-fixtures/nftables');
const fixture = (name: string) => readFileSync(path.join(DIR, name), 'utf8');

const ep = (n: number, port = 8080, local = false): GenEndpoint => ({ ip: `10.244.${n}.${10 + n}`, port, local });
/** The Services the lab fixtures were generated from (lab-list-tables.txt, lab-ruleset-a.txt, lab-ip-table-only.txt). */
const SAMPLE: GenService[] = [
  { namespace: 'shop', name: 'cart', clusterIP: '10.96.50.20', ports: [{ name: 'http', port: 80, protocol: 'TCP', nodePort: 30480, endpoints: [ep(1), ep(2), ep(3)] }] },
  { namespace: 'shop', name: 'idle', clusterIP: '10.96.50.21', ports: [{ name: '', port: 9000, protocol: 'TCP', nodePort: 30900, endpoints: [] }] },
  {
    namespace: 'shop',
    name: 'lb',
    clusterIP: '10.96.50.22',
    externalIPs: ['192.0.2.20'],
    loadBalancerIPs: ['192.0.2.10'],
    loadBalancerSourceRanges: ['203.0.113.0/24', '198.51.100.0/25'],
    externalTrafficPolicy: 'Local',
    affinitySeconds: 10800,
    ports: [
      { name: 'https', port: 443, protocol: 'TCP', nodePort: 31443, endpoints: [ep(1, 8443, true), ep(2, 8443)] },
      { name: 'dns', port: 53, protocol: 'UDP', endpoints: [ep(1, 5353, true)] },
    ],
  },
  { namespace: 'shop', name: 'far', clusterIP: '10.96.50.23', externalIPs: ['192.0.2.30'], externalTrafficPolicy: 'Local', ports: [{ name: 'http', port: 80, protocol: 'TCP', nodePort: 30023, endpoints: [ep(3, 80)] }] },
  { namespace: 'metrics', name: 'seven', clusterIP: '10.96.7.7', ports: [{ name: 'statsd', port: 8125, protocol: 'UDP', endpoints: [1, 2, 3, 4, 5, 6, 7].map((n) => ep(n, 8125)) }] },
  {
    namespace: 'shop',
    name: 'cart6',
    clusterIP: 'fd00:10:96::14',
    ports: [{ name: 'http', port: 80, protocol: 'TCP', nodePort: 30481, endpoints: [{ ip: 'fd00:10:244:1::b', port: 8080 }, { ip: 'fd00:10:244:2::c', port: 8080 }] }],
  },
];
const sample4 = kubeProxyNftables(SAMPLE, { family: 'ipv4', nodeAddresses: ['192.168.1.21'] });
const sample6 = kubeProxyNftables(SAMPLE, { family: 'ipv6' });
const generated = parseNftables(sample4 + sample6);
const listed = parseNftables(fixture('lab-list-tables.txt'));

/** Whitespace collapsed, the items of every `{ a, b }` list sorted: nft wraps lists and orders elements its own way. */
function normalizeNft(text: string): string {
  return text
    .replace(/\s+/g, ' ')
    .trim()
    .replace(/\{ ([^{}]*,[^{}]*) \}/g, (_, body: string) => `{ ${body.split(',').map((x) => x.trim()).sort().join(', ')} }`);
}

const shares = (f: TraceFrontend | undefined) => f?.backends.map((b) => [b.address, b.share]);
const frontend = (t: ServiceTrace, kind: string, protocol = 'TCP') => t.frontends.find((f) => f.kind === kind && f.protocol === protocol);

/** One Service port with `n` endpoints, as a generated table. */
function withEndpoints(n: number, family: 'ipv4' | 'ipv6' = 'ipv4'): { text: string; svc: GenService } {
  const v6 = family === 'ipv6';
  const eps = Array.from({ length: n }, (_, i) => ({ ip: v6 ? `fd00:10:244::${(i + 1).toString(16)}` : `10.244.${i}.5`, port: 8080 }));
  const svc: GenService = { namespace: 'team', name: `n${n}`, clusterIP: v6 ? 'fd00:10:96::99' : '10.96.0.99', ports: [{ name: 'web', port: 80, protocol: 'TCP', nodePort: 30099, endpoints: eps }] };
  return { text: kubeProxyNftables([svc], { family }), svc };
}

describe('kube-proxy chain names', () => {
  it('hash the way kube-proxy does: the names real nodes and kube-proxy sources show', () => {
    expect(kubeProxyNftChainName('service', 'default', 'kubernetes', 'tcp', 'https')).toBe('service-2QRHZV4L-default/kubernetes/tcp/https');
    expect(kubeProxyNftChainName('service', 'kube-system', 'kube-dns', 'TCP', 'dns-tcp')).toBe('service-NWBZK7IH-kube-system/kube-dns/tcp/dns-tcp');
    expect(kubeProxyNftChainName('service', 'ns1', 'svc1', 'tcp', 'p80')).toBe('service-ULMVA6XW-ns1/svc1/tcp/p80');
    expect(kubeProxyNftChainName('endpoint', 'ns1', 'svc1', 'tcp', 'p80', '10.180.0.1:80')).toBe('endpoint-5OJB2KTY-ns1/svc1/tcp/p80__10.180.0.1/80');
  });

  it('are cut at 240 characters after the prefix, as kube-proxy cuts them', () => {
    const long = 'a'.repeat(63);
    const name = kubeProxyNftChainName('endpoint', long, long, 'sctp', long, '[fd00:1111:2222:3333:4444:5555:6666:7777]:65535');
    expect(name.length).toBe('endpoint-'.length + 240);
    expect(name.endsWith('...')).toBe(true);
    expect(parseKubeProxyChainName(name)).toMatchObject({ kind: 'endpoint', truncated: true });
    expect(parseKubeProxyChainName(name)!.endpoint).toBeUndefined();
  });

  it('say Service, port and endpoint: IPv6 colons as dots, an unnamed port empty', () => {
    expect(parseKubeProxyChainName('endpoint-5OJB2KTY-ns1/svc1/tcp/p80__10.180.0.1/80')).toEqual({
      kind: 'endpoint',
      hash: '5OJB2KTY',
      namespace: 'ns1',
      name: 'svc1',
      protocol: 'tcp',
      portName: 'p80',
      endpoint: '10.180.0.1:80',
      truncated: false,
    });
    expect(parseKubeProxyChainName('endpoint-AAAAAAAA-ns/a/udp/dns__fd00.10.244..b/53')?.endpoint).toBe('[fd00:10:244::b]:53');
    expect(parseKubeProxyChainName('external-P6J77WGM-riset/hello/tcp/')).toMatchObject({ kind: 'external', portName: '', namespace: 'riset' });
    expect(parseKubeProxyChainName('KUBE-SVC-JTMI3DYZIM6D5ZYY')).toBeUndefined();
    expect(parseKubeProxyChainName('services')).toBeUndefined();
  });
});

describe('parsing nft list output', () => {
  it('lab-list-tables: both tables, every set and chain, nothing left unread', () => {
    const d = listed;
    expect(d.unknown).toEqual([]);
    expect(d.problems).toEqual([]);
    expect(d.errors).toEqual([]);
    expect(d.tables.map((t) => [t.family, t.name, t.closed, t.comment])).toEqual([
      ['ip', 'kube-proxy', true, 'rules for kube-proxy'],
      ['ip6', 'kube-proxy', true, 'rules for kube-proxy'],
    ]);
    const ip = d.tables[0]!;
    expect(ip.sets.get('service-ips')!.elements).toHaveLength(10);
    expect(ip.sets.get('service-ips')!.elements.find((e) => e.key[0] === '10.96.7.7')).toMatchObject({
      key: ['10.96.7.7', 'udp', '8125'],
      value: 'goto service-QGUBJN3J-metrics/seven/udp/statsd',
    });
    expect(ip.sets.get('no-endpoint-services')!.elements.map((e) => [e.key.join(' . '), e.comment, e.value])).toEqual([
      ['10.96.50.21 . tcp . 9000', 'shop/idle', 'goto reject-chain'],
      ['192.0.2.30 . tcp . 80', 'shop/far:http', 'drop'],
    ]);
    // each element with the line it is on, the list wrapped as nft wraps it
    const lines = fixture('lab-list-tables.txt').split('\n');
    const lineOf = (needle: string, after: string) => lines.findIndex((l, i) => i > lines.findIndex((m) => m.includes(after)) && l.includes(needle)) + 1;
    expect(ip.sets.get('no-endpoint-services')!.elements.map((e) => e.line)).toEqual([
      lineOf('10.96.50.21 . tcp . 9000', 'map no-endpoint-services {'),
      lineOf('192.0.2.30 . tcp . 80 comment', 'map no-endpoint-services {'),
    ]);
    const serviceIPs = ip.sets.get('service-ips')!.elements;
    expect(serviceIPs.map((e) => e.line)).toEqual(serviceIPs.map((e) => lineOf(`${e.key.join(' . ')} :`, 'map service-ips {')));
    expect(new Set(serviceIPs.map((e) => e.line)).size).toBe(10);
    expect(ip.sets.get('cluster-ips')!.elements.map((e) => e.key[0])).toEqual(['10.96.7.7', '10.96.50.20', '10.96.50.21', '10.96.50.22', '10.96.50.23']);
    const affinity = [...ip.sets.values()].filter((s) => s.name.startsWith('affinity-'));
    expect(affinity).toHaveLength(3);
    expect(affinity.every((s) => s.timeoutSeconds === 10800 && s.flags?.join(',') === 'dynamic,timeout')).toBe(true);
    expect(ip.chains.get('nat-prerouting')!.base).toBe('type nat hook prerouting priority dstnat; policy accept;');
    expect(ip.chains.get('reject-chain')).toMatchObject({ comment: 'helper for @no-endpoint-services / @no-endpoint-nodeports', rules: [{ text: 'reject' }] });
    expect(ip.chains.get('cluster-ips-check')!.rules[0]).toMatchObject({ text: 'ip daddr @cluster-ips reject', comment: 'Reject traffic to invalid ports of ClusterIPs' });
  });

  it('the generator writes what nft lists back, but for whitespace and element order', () => {
    expect(normalizeNft(sample4 + sample6)).toBe(normalizeNft(fixture('lab-list-tables.txt')));
    // and not anything at all: a rule more is seen
    expect(normalizeNft(sample4.replace('masquerade fully-random', 'masquerade'))).not.toBe(normalizeNft(fixture('lab-list-tables.txt').split('table ip6')[0]!));
  });

  it('lab-ruleset-a: handles, a counter, iptables-nft tables next to kube-proxy\'s', () => {
    const d = parseNftables(fixture('lab-ruleset-a.txt'));
    expect(d.unknown).toEqual([]);
    expect(d.tables.map((t) => `${t.family} ${t.name}`)).toEqual(['ip kube-proxy', 'ip6 kube-proxy', 'ip nat', 'ip filter']);
    const input = d.tables[3]!.chains.get('INPUT')!;
    expect(input.rules).toEqual([{ chain: 'INPUT', line: expect.any(Number), text: 'ip saddr 10.9.9.9 drop', handle: 2, counters: { packets: 0, bytes: 0 } }]);
    const svc = d.tables[0]!.chains.get(kubeProxyNftChainName('service', 'shop', 'cart', 'tcp', 'http'))!;
    expect(svc.rules.map((r) => r.handle)).toEqual([expect.any(Number), expect.any(Number)]);
    expect(svc.rules[1]!.text).toMatch(/^numgen random mod 3 vmap \{ 0 : goto endpoint-\S+, 1 : goto endpoint-\S+, 2 : goto endpoint-\S+ \}$/);
  });

  it('lab-ip-table-only: the ip table, then nft\'s error about the ip6 one, read as an error', () => {
    const d = parseNftables(fixture('lab-ip-table-only.txt'));
    expect(d.unknown).toEqual([]);
    expect(d.tables.map((t) => t.family)).toEqual(['ip']);
    expect(d.errors).toEqual([{ line: expect.any(Number), message: 'No such file or directory', table: { family: 'ip6', name: 'kube-proxy' } }]);
  });

  it('reads the rule shapes kube-proxy writes', () => {
    expect(readRule('ip daddr 10.96.0.1 tcp dport 443 ip saddr != 10.244.0.0/16 jump mark-for-masquerade')).toEqual({
      matches: [
        { selector: 'ip daddr', op: '==', value: '10.96.0.1' },
        { selector: 'tcp dport', op: '==', value: '443' },
        { selector: 'ip saddr', op: '!=', value: '10.244.0.0/16' },
      ],
      verdict: { kind: 'jump', chain: 'mark-for-masquerade' },
      updates: [],
      other: [],
    });
    expect(readRule('numgen random mod 3 vmap { 0 : goto a, 1-2 : goto b }').numgen).toEqual({
      mod: 3,
      offset: 0,
      map: 'vmap',
      mappings: [
        { key: '0', value: 'goto a' },
        { key: '1-2', value: 'goto b' },
      ],
    });
    expect(readRule('meta l4proto tcp dnat to 10.244.1.5:8080').dnat).toEqual({ to: '10.244.1.5:8080' });
    expect(readRule('meta l4proto tcp dnat ip6 to [fd00::5]:8080').dnat).toEqual({ to: '[fd00::5]:8080' });
    expect(readRule('meta l4proto tcp dnat ip to numgen random mod 2 map { 0 : 10.0.0.1 . 80, 1 : 10.0.0.2 . 80 }').dnat?.numgen?.mappings).toEqual([
      { key: '0', value: '10.0.0.1 . 80' },
      { key: '1', value: '10.0.0.2 . 80' },
    ]);
    expect(readRule('update @affinity-X { ip saddr }').updates).toEqual(['affinity-X']);
    expect(readRule('ip saddr != { 198.51.100.0/25, 203.0.113.0/24 } drop').matches[0]).toEqual({
      selector: 'ip saddr',
      op: '!=',
      value: '{ 198.51.100.0/25, 203.0.113.0/24 }',
      set: ['198.51.100.0/25', '203.0.113.0/24'],
    });
    expect(readRule('fib saddr type local goto service-X').matches).toEqual([{ selector: 'fib saddr type', op: '==', value: 'local' }]);
    expect(readRule('meta mark & 0x00004000 == 0x00000000 return')).toMatchObject({
      matches: [{ selector: 'meta mark & 0x00004000', op: '==', value: '0x00000000' }],
      verdict: { kind: 'return' },
    });
    expect(readRule('ip daddr . meta l4proto . th dport vmap @service-ips').dispatch).toEqual({ selector: 'ip daddr . meta l4proto . th dport', ref: 'service-ips' });
    expect(readRule('reject with icmp type port-unreachable').verdict).toEqual({ kind: 'reject' });
  });
});

describe('trace on generated tables', () => {
  it.each([1, 2, 3, 7])('%i endpoint(s): each gets exactly 1/n, from the ClusterIP and the NodePort, IPv4 and IPv6', (n) => {
    for (const family of ['ipv4', 'ipv6'] as const) {
      const { text, svc } = withEndpoints(n, family);
      const t = traceNftables(parseNftables(text), `team/n${n}`);
      expect(t.warnings).toEqual([]);
      expect(t.mode).toBe('nftables');
      expect(t.frontends.map((f) => [f.kind, f.address, f.protocol, f.portName])).toEqual([
        ['ClusterIP', family === 'ipv4' ? '10.96.0.99:80' : '[fd00:10:96::99]:80', 'TCP', 'web'],
        ['NodePort', '*:30099', 'TCP', 'web'],
      ]);
      const want = svc.ports[0]!.endpoints.map((e) => [family === 'ipv4' ? `${e.ip}:${e.port}` : `[${e.ip}]:${e.port}`, 1 / n]);
      for (const f of t.frontends) {
        expect(shares(f)).toEqual(want);
        expect(f.backends.every((b) => b.share === 1 / n)).toBe(true);
        expect(f.fallThrough).toBeUndefined();
      }
    }
  });

  it('the sample: ClusterIP and NodePort paths, masquerade conditions, the node address from nodeport-ips', () => {
    const t = traceNftables(generated, 'shop/cart');
    expect(t.warnings).toEqual([]);
    const svc = kubeProxyNftChainName('service', 'shop', 'cart', 'tcp', 'http');
    const ext = kubeProxyNftChainName('external', 'shop', 'cart', 'tcp', 'http');
    expect(t.frontends.map((f) => [f.kind, f.address, f.path, f.masquerade?.map((m) => m.condition), f.policy])).toEqual([
      ['ClusterIP', '10.96.50.20:80', ['@service-ips', svc], ['ip saddr != 10.244.0.0/16'], 'Cluster'],
      ['NodePort', '192.168.1.21:30480', ['@service-nodeports', ext, svc], ['always'], 'Cluster'],
    ]);
    expect(shares(t.frontends[0])).toEqual([
      ['10.244.1.11:8080', 1 / 3],
      ['10.244.2.12:8080', 1 / 3],
      ['10.244.3.13:8080', 1 / 3],
    ]);
    expect(t.frontends[0]!.backends[0]!.chain).toBe(kubeProxyNftChainName('endpoint', 'shop', 'cart', 'tcp', 'http', '10.244.1.11:8080'));
    // the node's own address wins over the set, and is checked against it
    expect(traceNftables(generated, 'shop/cart', { nodeAddresses: ['192.168.1.21'] }).frontends[1]!.address).toBe('192.168.1.21:30480');
    expect(traceNftables(generated, 'shop/cart', { nodeAddresses: ['192.168.1.99'] }).warnings).toEqual([
      'NodePort 192.168.1.99:30480/TCP: 192.168.1.99 is not in @nodeport-ips, where kube-proxy accepts node ports',
    ]);
    expect(renderTraceTree(t)).toBe(
      [
        'shop/cart (nftables)',
        `├─ ClusterIP 10.96.50.20:80/TCP (http)  @service-ips → ${svc.slice(0, 16)}  masquerade: ip saddr != 10.244.0.0/16`,
        `│  ├─ 33.3 %  ${t.frontends[0]!.backends[0]!.chain!.slice(0, 17)} → DNAT 10.244.1.11:8080`,
        `│  ├─ 33.3 %  ${t.frontends[0]!.backends[1]!.chain!.slice(0, 17)} → DNAT 10.244.2.12:8080`,
        `│  └─ 33.3 %  ${t.frontends[0]!.backends[2]!.chain!.slice(0, 17)} → DNAT 10.244.3.13:8080`,
        `└─ NodePort 192.168.1.21:30480/TCP (http)  @service-nodeports → ${ext.slice(0, 17)} → ${svc.slice(0, 16)}  masquerade: always`,
        `   ├─ 33.3 %  ${t.frontends[0]!.backends[0]!.chain!.slice(0, 17)} → DNAT 10.244.1.11:8080`,
        `   ├─ 33.3 %  ${t.frontends[0]!.backends[1]!.chain!.slice(0, 17)} → DNAT 10.244.2.12:8080`,
        `   └─ 33.3 %  ${t.frontends[0]!.backends[2]!.chain!.slice(0, 17)} → DNAT 10.244.3.13:8080`,
        '',
      ].join('\n'),
    );
  });

  it('what the real nft listed traces the same as what was loaded', () => {
    for (const s of ['shop/cart', 'shop/idle', 'shop/lb', 'shop/far', 'metrics/seven', 'shop/cart6']) {
      // nft prints anonymous sets sorted (the source ranges) and knows nothing of line numbers
      const strip = (t: ServiceTrace) =>
        JSON.parse(JSON.stringify(t, (k, v: unknown) => (k === 'line' ? undefined : k === 'sourceRanges' ? [...(v as string[])].sort() : v))) as ServiceTrace;
      const a = strip(traceNftables(generated, s));
      const b = strip(traceNftables(listed, s));
      // nft orders elements its own way: compare frontends by address
      const byAddress = (t: ServiceTrace) => [...t.frontends].sort((x, y) => `${x.kind}${x.address}`.localeCompare(`${y.kind}${y.address}`));
      expect(byAddress(b)).toEqual(byAddress(a));
      expect(new Set(b.warnings)).toEqual(new Set(a.warnings));
    }
  });

  it('7 endpoints of UDP: 1/7 each, from the real listing', () => {
    const t = traceNftables(listed, 'metrics/seven');
    expect(t.frontends).toHaveLength(1);
    expect(frontend(t, 'ClusterIP', 'UDP')!.backends.map((b) => b.share)).toEqual(Array(7).fill(1 / 7));
  });

  it('IPv6: the ip6 table, ip6 masquerade condition, bracketed DNAT addresses', () => {
    const t = traceNftables(listed, 'shop/cart6:http', { nodeAddresses: ['192.168.1.21', 'fd00:77::11'] });
    expect(t.warnings).toEqual([]);
    expect(t.frontends.map((f) => [f.kind, f.address, f.masquerade?.[0]?.condition])).toEqual([
      ['ClusterIP', '[fd00:10:96::14]:80', 'ip6 saddr != fd00:10:244::/64'],
      ['NodePort', '[fd00:77::11]:30481', 'always'],
    ]);
    expect(shares(t.frontends[0])).toEqual([
      ['[fd00:10:244:1::b]:8080', 0.5],
      ['[fd00:10:244:2::c]:8080', 0.5],
    ]);
  });

  it('a Service without endpoints: reject from no-endpoint-services and no-endpoint-nodeports, as iptables mode REJECTs', () => {
    const t = traceNftables(generated, 'shop/idle');
    expect(t.frontends.map((f) => [f.kind, f.address, f.portName, f.backends.length, f.drops])).toEqual([
      ['ClusterIP', '10.96.50.21:9000', '', 0, [{ chain: '@no-endpoint-services', target: 'reject', share: 1, reason: 'shop/idle', line: expect.any(Number) }]],
      ['NodePort', '192.168.1.21:30900', '', 0, [{ chain: '@no-endpoint-nodeports', target: 'reject', share: 1, reason: 'shop/idle', line: expect.any(Number) }]],
    ]);
    expect(t.warnings).toEqual([
      'ClusterIP 10.96.50.21:9000/TCP: no endpoint reached: reject in @no-endpoint-services ("shop/idle")',
      'NodePort 192.168.1.21:30900/TCP: no endpoint reached: reject in @no-endpoint-nodeports ("shop/idle")',
    ]);
    expect(renderTraceTree(t)).toContain('│  └─ 100.0 %  reject in @no-endpoint-services ("shop/idle")');
  });

  it('externalTrafficPolicy Local without a local endpoint: the external frontends are dropped, the ClusterIP is not', () => {
    const t = traceNftables(generated, 'shop/far');
    expect(t.frontends.map((f) => [f.kind, f.address, f.backends.length, f.drops?.map((d) => `${d.target} ${d.chain} ${d.share}`)])).toEqual([
      ['ClusterIP', '10.96.50.23:80', 1, undefined],
      ['ExternalIP', '192.0.2.30:80', 0, ['drop @no-endpoint-services 1']],
      ['NodePort', '192.168.1.21:30023', 0, ['drop @no-endpoint-nodeports 1']],
    ]);
    // pods and the node itself still reach the endpoint through the ClusterIP's chain
    expect(t.frontends[1]!.alternatives!.map((a) => [a.condition, a.backends.map((b) => b.address)])).toEqual([
      ['ip saddr 10.244.0.0/16', ['10.244.3.13:80']],
      ['fib saddr type local', ['10.244.3.13:80']],
    ]);
  });

  it('load balancer with source ranges, Local policy, session affinity', () => {
    const t = traceNftables(generated, 'shop/lb:https');
    expect(t.warnings).toEqual([]);
    expect(t.frontends.map((f) => [f.kind, f.address, f.policy, shares(f)])).toEqual([
      ['ClusterIP', '10.96.50.22:443', 'Cluster', [['10.244.1.11:8443', 0.5], ['10.244.2.12:8443', 0.5]]],
      ['ExternalIP', '192.0.2.20:443', 'Local', [['10.244.1.11:8443', 1]]],
      ['LoadBalancer', '192.0.2.10:443', 'Local', [['10.244.1.11:8443', 1]]],
      ['NodePort', '192.168.1.21:31443', 'Local', [['10.244.1.11:8443', 1]]],
    ]);
    const lb = frontend(t, 'LoadBalancer')!;
    expect(lb.sourceRanges).toEqual(['203.0.113.0/24', '198.51.100.0/25']);
    expect(lb.path![0]).toBe('@firewall-ips');
    expect(t.frontends.every((f) => f.affinity?.timeoutSeconds === 10800)).toBe(true);
    expect(frontend(t, 'ExternalIP')!.sourceRanges).toBeUndefined();
    // without firewall-ips, the API's word tells a load-balancer IP from an external one
    const other = kubeProxyNftables([{ ...SAMPLE[2]!, loadBalancerSourceRanges: [] }], { family: 'ipv4' });
    const kinds = (o: Parameters<typeof traceNftables>[2]) => traceNftables(parseNftables(other), 'shop/lb:https', o).frontends.map((f) => f.kind);
    expect(kinds({})).toEqual(['ClusterIP', 'ExternalIP', 'ExternalIP', 'NodePort']);
    expect(kinds({ loadBalancerIPs: ['192.0.2.10'] })).toEqual(['ClusterIP', 'ExternalIP', 'LoadBalancer', 'NodePort']);
  });

  it('picks ports by name, by number (the NodePort too) and by protocol', () => {
    expect(traceNftables(generated, 'shop/lb:dns').frontends.map((f) => `${f.kind} ${f.address}/${f.protocol}`)).toEqual([
      'ClusterIP 10.96.50.22:53/UDP',
      'ExternalIP 192.0.2.20:53/UDP',
      'LoadBalancer 192.0.2.10:53/UDP',
    ]);
    expect(traceNftables(generated, 'shop/lb:443').frontends).toHaveLength(4);
    expect(traceNftables(generated, 'shop/cart:30480').frontends.map((f) => f.kind)).toEqual(['ClusterIP', 'NodePort']);
    expect(traceNftables(generated, 'shop/lb', { protocol: 'udp' }).frontends.every((f) => f.protocol === 'UDP')).toBe(true);
    const none = traceNftables(generated, 'shop/cart:grpc');
    expect(none.frontends).toEqual([]);
    expect(none.warnings).toEqual(['shop/cart has no port grpc in the dump']);
    expect(traceNftables(generated, 'shop/nothing').warnings).toEqual([
      'no frontend of shop/nothing in the dump (no element of service-ips, service-nodeports or no-endpoint-services leads to its chains)',
    ]);
    expect(traceNftables(generated, 'not a ref').warnings).toEqual(['"not a ref" is not a Service reference (namespace/name[:port])']);
  });

  it('an endpoint chain missing from the dump: its address from the chain name, flagged', () => {
    const gone = kubeProxyNftChainName('endpoint', 'shop', 'cart', 'tcp', 'http', '10.244.2.12:8080');
    const text = sample4.replace(new RegExp(`\\tchain ${gone.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&')} \\{[^}]*\\}\\n\\n`), '');
    expect(text).not.toContain(`chain ${gone} {`);
    const t = traceNftables(parseNftables(text), 'shop/cart');
    const b = t.frontends[0]!.backends[1]!;
    expect(b).toEqual({ address: '10.244.2.12:8080', share: 1 / 3, chain: gone, resolved: false });
    expect(t.warnings).toEqual([
      `ClusterIP 10.96.50.20:80/TCP: ${gone} (33.3 %) is not in the dump: address 10.244.2.12:8080 taken from the chain's name`,
      `NodePort 192.168.1.21:30480/TCP: ${gone} (33.3 %) is not in the dump: address 10.244.2.12:8080 taken from the chain's name`,
    ]);
    expect(renderTraceTree(t)).toContain(`│  ├─ 33.3 %  ${gone.slice(0, 17)} → DNAT 10.244.2.12:8080   (chain not in the dump; address from its name)`);
  });

  it('compared with the EndpointSlices: a missing endpoint and a stale backend', () => {
    const t = traceNftables(generated, 'shop/cart');
    const c = compareWithEndpoints(t, [
      { address: '10.244.1.11:8080', portName: 'http' },
      { address: '10.244.2.12:8080', portName: 'http' },
      { address: '10.244.4.14:8080', portName: 'http' },
    ]);
    expect(c.warnings).toEqual([
      'endpoint 10.244.4.14:8080 is in the EndpointSlices but not in the dataplane: ClusterIP 10.96.50.20:80/TCP, NodePort 192.168.1.21:30480/TCP',
      'backend 10.244.3.13:8080 is in the dataplane but not in the EndpointSlices (stale): ClusterIP 10.96.50.20:80/TCP, NodePort 192.168.1.21:30480/TCP',
    ]);
    // Local-policy paths hold this node's endpoints only: the others are not missing
    const lb = compareWithEndpoints(traceNftables(generated, 'shop/lb:https'), [
      { address: '10.244.1.11:8443', portName: 'https' },
      { address: '10.244.2.12:8443', portName: 'https' },
    ]);
    expect(lb.warnings).toEqual([]);
  });
});

describe('trace on hand-made chains', () => {
  const table = (svcRules: string[], extra = '') => `table ip kube-proxy {
\tmap service-ips {
\t\ttype ipv4_addr . inet_proto . inet_service : verdict
\t\telements = { 10.96.0.5 . tcp . 80 : goto service-AAAAAAAA-x/y/tcp/p }
\t}
\tchain service-AAAAAAAA-x/y/tcp/p {
${svcRules.map((r) => `\t\t${r}`).join('\n')}
\t}
${['10.1.0.1', '10.1.0.2', '10.1.0.3']
  .map((ip, i) => `\tchain endpoint-${'BCD'[i]!.repeat(8)}-x/y/tcp/p__${ip}/80 {\n\t\tmeta l4proto tcp dnat to ${ip}:80\n\t}`)
  .join('\n')}
${extra}}
`;
  const A = 'goto endpoint-BBBBBBBB-x/y/tcp/p__10.1.0.1/80';
  const B = 'goto endpoint-CCCCCCCC-x/y/tcp/p__10.1.0.2/80';
  const C = 'goto endpoint-DDDDDDDD-x/y/tcp/p__10.1.0.3/80';
  const run = (rules: string[]) => traceNftables(parseNftables(table(rules)), 'x/y');

  it('an endpoint at several indexes gets each of them; a range counts every index in it', () => {
    expect(shares(run([`numgen random mod 3 vmap { 0 : ${A}, 1 : ${A}, 2 : ${B} }`]).frontends[0])).toEqual([
      ['10.1.0.1:80', 2 / 3],
      ['10.1.0.2:80', 1 / 3],
    ]);
    expect(shares(run([`numgen random mod 5 vmap { 0 : ${A}, 1-4 : ${B} }`]).frontends[0])).toEqual([
      ['10.1.0.1:80', 1 / 5],
      ['10.1.0.2:80', 4 / 5],
    ]);
  });

  it('an index the map lacks falls through, one it can never yield or lists twice is said', () => {
    const gap = run([`numgen random mod 4 vmap { 0 : ${A}, 1 : ${B}, 2 : ${C} }`]);
    expect(gap.frontends[0]!.fallThrough).toBe(0.25);
    expect(gap.warnings).toEqual(['ClusterIP 10.96.0.5:80/TCP: 25.0 % of the traffic passes every rule without DNAT (a chain cut short?)']);
    const odd = run([`numgen random mod 2 vmap { 0 : ${A}, 0 : ${C}, 1 : ${B}, 7 : ${C} }`]);
    expect(shares(odd.frontends[0])).toEqual([
      ['10.1.0.1:80', 0.5],
      ['10.1.0.2:80', 0.5],
    ]);
    expect(odd.warnings).toEqual([
      'ClusterIP 10.96.0.5:80/TCP: service-AAAAAAAA-x/y/tcp/p: numgen index 0 is listed twice: only its first entry counts',
      'ClusterIP 10.96.0.5:80/TCP: service-AAAAAAAA-x/y/tcp/p: numgen random mod 2 never yields 7',
    ]);
  });

  it('kube-proxy 1.36 without endpoint chains: DNAT through a numgen map, or straight for one endpoint', () => {
    const squashed = run(['meta l4proto tcp dnat ip to numgen random mod 3 map { 0 : 10.1.0.7 . 80, 1 : 10.1.0.8 . 80, 2 : 10.1.0.9 . 80 }']);
    expect(squashed.frontends[0]!.backends).toEqual(
      ['10.1.0.7:80', '10.1.0.8:80', '10.1.0.9:80'].map((address) => ({ address, share: 1 / 3, chain: 'service-AAAAAAAA-x/y/tcp/p' })),
    );
    expect(renderTraceTree(squashed)).toContain('33.3 %  DNAT 10.1.0.7:80 (in service-AAAAAAAA)');
    expect(shares(run(['meta l4proto tcp dnat to 10.1.0.7:80']).frontends[0])).toEqual([['10.1.0.7:80', 1]]);
  });

  it('a chain the table lacks, a loop, an endpoint chain without DNAT', () => {
    const missing = run(['goto service-ZZZZZZZZ-x/y/tcp/p']);
    expect(missing.frontends[0]!.drops).toEqual([{ chain: 'service-AAAAAAAA-x/y/tcp/p', target: 'service-ZZZZZZZZ-x/y/tcp/p', share: 1, reason: 'chain not in the dump', line: expect.any(Number) }]);
    const loop = run(['goto service-AAAAAAAA-x/y/tcp/p']);
    expect(loop.warnings).toContain('ClusterIP 10.96.0.5:80/TCP: service-AAAAAAAA-x/y/tcp/p leads back to service-AAAAAAAA-x/y/tcp/p: loop not followed');
    const noDnat = traceNftables(parseNftables(table([`numgen random mod 1 vmap { 0 : ${A} }`]).replace('meta l4proto tcp dnat to 10.1.0.1:80', 'counter')), 'x/y');
    expect(noDnat.frontends[0]!.backends).toEqual([{ address: '?', share: 1, chain: 'endpoint-BBBBBBBB-x/y/tcp/p__10.1.0.1/80' }]);
    expect(noDnat.warnings).toEqual(['ClusterIP 10.96.0.5:80/TCP: endpoint-BBBBBBBB-x/y/tcp/p__10.1.0.1/80 has no DNAT rule in the dump']);
  });

  it('an endpoint chain whose DNAT disagrees with its name is flagged', () => {
    const t = traceNftables(parseNftables(table([`numgen random mod 1 vmap { 0 : ${A} }`]).replace('dnat to 10.1.0.1:80', 'dnat to 10.1.0.9:80')), 'x/y');
    expect(t.frontends[0]!.backends[0]!.address).toBe('10.1.0.9:80');
    expect(t.warnings).toEqual(['ClusterIP 10.96.0.5:80/TCP: endpoint-BBBBBBBB-x/y/tcp/p__10.1.0.1/80 is named for 10.1.0.1:80 but DNATs to 10.1.0.9:80']);
  });
});

describe('the kube-proxy 1.31 dump (kube-proxy-1.31-nft-a.txt)', () => {
  const d = parseNftables(fixture('kube-proxy-1.31-nft-a.txt'));

  it('parses whole: sets and chains interleaved, handles, wrapped elements', () => {
    expect(d.unknown).toEqual([]);
    expect(d.problems).toEqual([]);
    const t = d.tables[0]!;
    expect(t.sets.get('service-ips')!.elements).toHaveLength(5);
    expect(t.chains.size).toBe(30);
    expect(t.chains.get('services')!.rules.map((r) => r.handle)).toEqual([21, 22]);
  });

  it('an unnamed port with 4 endpoints and a NodePort on the nodeport-ips address', () => {
    const t = traceNftables(d, 'web/storefront');
    expect(t.warnings).toEqual([]);
    expect(t.frontends.map((f) => [f.kind, f.address, f.portName])).toEqual([
      ['ClusterIP', '10.43.118.9:8000', ''],
      ['NodePort', '192.168.56.21:30080', ''],
    ]);
    for (const f of t.frontends) expect(f.backends.map((b) => [b.address, b.share])).toEqual(['10.42.1.21', '10.42.1.22', '10.42.2.31', '10.42.3.41'].map((ip) => [`${ip}:8000`, 0.25]));
    expect(renderTraceTree(t)).toBe(
      [
        'web/storefront (nftables)',
        '├─ ClusterIP 10.43.118.9:8000/TCP  @service-ips → service-SXW7JYQD  masquerade: ip saddr != 10.42.0.0/16',
        '│  ├─ 25.0 %  endpoint-G44H2T6Z → DNAT 10.42.1.21:8000',
        '│  ├─ 25.0 %  endpoint-AGZ7I5OC → DNAT 10.42.1.22:8000',
        '│  ├─ 25.0 %  endpoint-ABAP4QIL → DNAT 10.42.2.31:8000',
        '│  └─ 25.0 %  endpoint-NDCV6KRV → DNAT 10.42.3.41:8000',
        '└─ NodePort 192.168.56.21:30080/TCP  @service-nodeports → external-SXW7JYQD → service-SXW7JYQD  masquerade: always',
        '   ├─ 25.0 %  endpoint-G44H2T6Z → DNAT 10.42.1.21:8000',
        '   ├─ 25.0 %  endpoint-AGZ7I5OC → DNAT 10.42.1.22:8000',
        '   ├─ 25.0 %  endpoint-ABAP4QIL → DNAT 10.42.2.31:8000',
        '   └─ 25.0 %  endpoint-NDCV6KRV → DNAT 10.42.3.41:8000',
        '',
      ].join('\n'),
    );
  });

  it('kube-dns\'s three ports, the API server, and a Service without endpoints', () => {
    const dns = traceNftables(d, 'kube-system/kube-dns');
    expect(dns.frontends.map((f) => [f.portName, f.protocol, f.address, f.backends.map((b) => b.address)])).toEqual([
      ['dns-tcp', 'TCP', '10.43.0.10:53', ['10.42.0.7:53']],
      ['dns', 'UDP', '10.43.0.10:53', ['10.42.0.7:53']],
      ['metrics', 'TCP', '10.43.0.10:9153', ['10.42.0.7:9153']],
    ]);
    expect(traceNftables(d, 'default/kubernetes').frontends[0]!.backends).toEqual([
      { address: '192.168.56.10:6443', share: 1, chain: 'endpoint-JZKVIKIO-default/kubernetes/tcp/https__192.168.56.10/6443' },
    ]);
    const otel = traceNftables(d, 'observability/otel-collector');
    expect(otel.frontends.map((f) => [f.kind, f.address, f.portName, f.drops?.[0]?.target])).toEqual([
      ['ClusterIP', '10.43.61.17:4317', 'otlp', 'reject'],
      ['ClusterIP', '10.43.61.17:4318', 'otlp-http', 'reject'],
    ]);
  });
});

describe('dumps of a node with one family\'s table, or cut short', () => {
  const only = parseNftables(fixture('lab-ip-table-only.txt'));

  it('nft\'s error about the missing ip6 table is no warning for an IPv4 Service, the reason for an IPv6 one', () => {
    expect(traceNftables(only, 'shop/cart').warnings).toEqual([]);
    expect(traceNftables(only, 'shop/cart6').warnings).toEqual([
      'no frontend of shop/cart6 in the dump (no element of service-ips, service-nodeports or no-endpoint-services leads to its chains)',
      'nft: No such file or directory (ip6 kube-proxy)',
    ]);
    expect(traceNftables(only, 'shop/cart6', { families: ['ip6'] }).warnings).toEqual(['no table ip6 kube-proxy in the dump', 'nft: No such file or directory (ip6 kube-proxy)']);
    expect(traceNftables(parseNftables('junk\n'), 'shop/cart').warnings).toEqual(['no table ip kube-proxy or ip6 kube-proxy in the dump']);
  });

  it('a table cut inside a chain: what was read is traced, the cut and the chains no map leads to are said', () => {
    const text = fixture('lab-list-tables.txt');
    const svc = kubeProxyNftChainName('service', 'shop', 'cart', 'tcp', 'http');
    // up to the service chain's masquerade rule: the numgen rule and the rest are lost
    const cut = text.slice(0, text.indexOf('jump mark-for-masquerade', text.indexOf(`chain ${svc} {`)) + 'jump mark-for-masquerade'.length);
    const d = parseNftables(cut);
    expect(d.problems).toEqual([
      `chain ${svc} (line ${d.tables[0]!.chains.get(svc)!.line}) is not closed: its rules may be cut short`,
      `table ip kube-proxy (line 1) is not closed: the text may be cut short`,
    ]);
    const t = traceNftables(d, 'shop/cart');
    expect(t.frontends[0]!.backends).toEqual([]);
    expect(t.frontends[0]!.fallThrough).toBe(1);
    expect(t.warnings).toContain('ClusterIP 10.96.50.20:80/TCP: no endpoint reached: it passes every rule without DNAT');
    expect(t.warnings.slice(-2)).toEqual(d.problems);
  });
});

describe('text that is not what the parser expects', () => {
  function exercise(text: string, services = ['shop/cart', 'shop/lb', 'shop/idle', 'shop/cart6', 'x/y', 'web/storefront']): NftDump {
    const d = parseNftables(text);
    for (const t of d.tables) for (const c of t.chains.values()) for (const r of c.rules) JSON.stringify(readRule(r.text));
    for (const s of services) {
      const t = traceNftables(d, s, { nodeAddresses: ['192.168.1.21'] });
      renderTraceTree(compareWithEndpoints(t, [{ address: '10.244.1.11:8080' }, { address: 'garbage' }]));
      JSON.stringify(t);
    }
    return d;
  }

  it('every cut of a real listing, at every line and inside lines', () => {
    const text = fixture('lab-ruleset-a.txt');
    const lines = text.split('\n');
    for (let i = 0; i <= lines.length; i++) exercise(lines.slice(0, i).join('\n'), ['shop/lb', 'shop/cart6']);
    for (let i = 0; i < text.length; i += 97) {
      const d = exercise(text.slice(0, i), ['shop/cart', 'shop/lb']);
      if (i > 0 && i < text.length - 200) expect(d.problems.length).toBeGreaterThan(0);
    }
  });

  it('random damage to a real listing never throws', () => {
    let s = 0x5eed;
    const rnd = () => ((s = (Math.imul(s ^ (s >>> 15), 0x2c1b3c6d) + 0x9e3779b9) >>> 0) / 4294967296);
    const base = fixture('lab-list-tables.txt');
    const junk = ['{', '}', '"', ',', ':', ' . ', '@', '#', '\\', 'numgen random mod 0 vmap {', 'goto', 'dnat to', '\u0000', '\t', 'é', 'mod -1', '1-', '99999999999999999999'];
    for (let round = 0; round < 300; round++) {
      const chars = base.split('');
      for (let k = 0; k < 12; k++) {
        const at = Math.floor(rnd() * chars.length);
        if (rnd() < 0.5) chars.splice(at, Math.floor(rnd() * 40));
        else chars.splice(at, 0, junk[Math.floor(rnd() * junk.length)]!);
      }
      exercise(chars.join(''));
    }
  });

  it('garbage, other formats, stray braces: read as unknown lines, never a throw', () => {
    const iptables = kubeProxyIptablesSave([SAMPLE[0]!], { style: '1.28', family: 'ipv4', clusterCIDR: '10.244.0.0/16' });
    for (const text of ['', '}', '{{{{', '"', 'table', 'table ip kube-proxy {', 'table ip kube-proxy {\n\tchain x {\n\t\tnumgen random mod 3 vmap { 0 : goto', '\u0000\u0001\u0002', 'x'.repeat(100_000), iptables, JSON.stringify(SAMPLE)]) {
      expect(() => exercise(text)).not.toThrow();
    }
    const d = parseNftables('hello\n}\ntable ip kube-proxy {\n\tmystery thing\n\tchain c {\n\t\t}}\n\t}\n}\ntable ip filter\n');
    expect(d.unknown.map((u) => [u.line, u.reason])).toEqual([
      [1, 'not nft list output'],
      [2, 'a closing brace outside any table'],
      [4, 'not a set, map or chain of table ip kube-proxy'],
      [6, 'unbalanced braces in chain c'],
      [9, 'a table name without its contents (nft list tables)'],
    ]);
  });
});

describe('trace --dump of nft output', () => {
  const dir = mkdtempSync(path.join(tmpdir(), 'kpm-nft-'));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));
  const file = (name: string, text: string) => {
    const p = path.join(dir, name);
    writeFileSync(p, text);
    return p;
  };
  async function run(service: string, dump: string, json = true) {
    const out: string[] = [];
    const err: string[] = [];
    const code = await trace({ service, dump, json, out: (l) => out.push(l), err: (l) => err.push(l) });
    return { code, out: out.join('\n'), err: err.join('\n') };
  }

  it('dumpKind tells nft list output from iptables-save and ipvsadm', () => {
    expect(dumpKind(fixture('lab-list-tables.txt'))).toBe('nftables');
    expect(dumpKind(fixture('lab-ruleset-a.txt'))).toBe('nftables');
    expect(dumpKind(fixture('kube-proxy-1.31-nft-a.txt'))).toBe('nftables');
    expect(dumpKind(kubeProxyIptablesSave([SAMPLE[0]!], { style: '1.28', family: 'ipv4', clusterCIDR: '10.244.0.0/16' }))).toBe('iptables');
    expect(dumpKind(kubeProxyIpvsadm([SAMPLE[0]!], { nodeAddresses: ['192.168.1.21'] }))).toBe('ipvs');
    expect(dumpKind('hello\n')).toBeUndefined();
  });

  it('traces a saved listing with the Service reference alone, as an iptables-save dump', async () => {
    const saved = file('nft.txt', fixture('lab-list-tables.txt'));
    const ok = await run('shop/cart:http', saved);
    expect(ok.code, ok.err).toBe(0);
    const t = JSON.parse(ok.out) as ServiceTrace;
    expect(t.mode).toBe('nftables');
    expect(t.frontends.map((f) => [f.kind, f.address, f.backends.length])).toEqual([
      ['ClusterIP', '10.96.50.20:80', 3],
      ['NodePort', '192.168.1.21:30480', 3],
    ]);
    const tree = await run('shop/cart', saved, false);
    expect(tree.out).toMatch(/^shop\/cart \(nftables\)$/m);
    expect((await run('shop/idle', saved)).code).toBe(2);
    expect((await run('shop/nothing', saved)).code).toBe(3);
  });

  it('a file of neither kind is a usage error naming the file and the three kinds', async () => {
    const bad = await run('shop/cart', file('bad.txt', 'hello\n'));
    expect(bad.code).toBe(5);
    expect(bad.err).toBe(`trace: --dump ${path.join(dir, 'bad.txt')}: neither iptables-save, ipvsadm -Ln nor nft list output (no table, chain, rule or virtual service line)`);
  });
});
