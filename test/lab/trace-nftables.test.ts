import { readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { trace } from '../../tasks/commands/trace.ts';
import { kubeProxyNftChainName } from '../../tasks/dataplane/nftables.ts';
import type { ServiceTrace } from '../../tasks/dataplane/trace.ts';
import { startTestApiServer, type TestApiServer } from '../apiserver/server.ts';
import { kubeProxyNftables, type GenService } from '../dataplane-dumps.ts';
import { labKubeProxyRuntime, labServiceObjects, startBackend, type LabService } from './kube-proxy-fixture.ts';
import { labSupported, startLab, type Lab } from './lab.ts';
import { mustExec, tempDir, writeLabInventory } from './helpers.ts';
import { genServiceObjects, runTraceJson } from './trace-support.ts';

// `trace` through a lab host's real nf_tables: the kube-proxy test fixture, started in nftables mode,
// programs its Service into real `ip kube-proxy` / `ip6 kube-proxy` tables (and that table carries
// traffic); then kube-proxy 1.31-shaped tables for more Services, written by test/dataplane-dumps.ts,
// are loaded with the real `nft -f`, and trace reads them back over SSH with the real `nft list` —
// live, and from a file saved from that listing (--dump).

const support = labSupported();
let lab: Lab;
let api: TestApiServer;
let inv: string;
let node: string;
let nodeIP: string;
let extraIP: string;
let raw: string;

const CART: GenService = {
  namespace: 'shop',
  name: 'cart',
  clusterIP: '10.96.50.20',
  ports: [
    {
      name: 'http',
      port: 80,
      protocol: 'TCP',
      nodePort: 30480,
      endpoints: [
        { ip: '10.244.1.11', port: 8080 },
        { ip: '10.244.2.12', port: 8080 },
        { ip: '10.244.3.13', port: 8080 },
      ],
    },
  ],
};
const EMPTY: GenService = { namespace: 'shop', name: 'idle', clusterIP: '10.96.50.21', ports: [{ name: '', port: 9000, protocol: 'TCP', endpoints: [] }] };
const CART6: GenService = {
  namespace: 'shop',
  name: 'cart6',
  clusterIP: 'fd00:10:96::20',
  ports: [{ name: 'http', port: 80, protocol: 'TCP', endpoints: [{ ip: 'fd00:10:244:1::b', port: 8080 }, { ip: 'fd00:10:244:2::c', port: 8080 }] }],
};
/** The fixture's own Service: two addresses of the host itself, where a test backend answers. */
let ECHO: LabService;

/** Whitespace collapsed and the items of every `{ a, b }` list sorted: nft wraps lists and orders elements its own way. */
function normalizeNft(text: string): string {
  return text
    .replace(/\s+/g, ' ')
    .trim()
    .replace(/\{ ([^{}]*,[^{}]*) \}/g, (_, body: string) => `{ ${body.split(',').map((x) => x.trim()).sort().join(', ')} }`);
}

const startMode = (mode: string) => api.runtime.start(node, { mode, metricsBindAddress: '127.0.0.1:10249', raw } as never, undefined as never);
/** iptables' nat table without iptables-save's dated comment lines and the chains' counters */
const natRules = async () =>
  (await mustExec(lab, node, 'iptables-save -t nat'))
    .split('\n')
    .filter((l) => !l.startsWith('#'))
    .map((l) => l.replace(/ \[\d+:\d+\]$/, ''))
    .join('\n');

beforeAll(async () => {
  if (!support.ok) return;
  lab = await startLab({ hosts: 1, kmodShim: false, id: 'n' });
  node = lab.hosts[0]!.name;
  nodeIP = lab.hosts[0]!.address;
  extraIP = `${nodeIP.split('.').slice(0, 2).join('.')}.0.200`;
  ECHO = {
    namespace: 'shop',
    name: 'echo',
    portName: 'http',
    clusterIP: '10.96.60.30',
    port: 80,
    nodePort: 30808,
    backends: [
      { ip: nodeIP, port: 18080 },
      { ip: extraIP, port: 18080 },
    ],
  };
  await mustExec(lab, node, `ip addr add ${extraIP}/32 dev eth0`);
  await startBackend(lab, node, 18080, 'echo backend\n');
  api = await startTestApiServer({ nodes: [{ name: node, internalIP: nodeIP }], runtime: labKubeProxyRuntime(lab, undefined, { services: [ECHO] }) });
  raw = (api.store.get('configmaps', 'kube-system', 'kube-proxy') as unknown as { data: Record<string, string> }).data['config.conf']!;
  api.store.create('namespaces', { apiVersion: 'v1', kind: 'Namespace', metadata: { name: 'shop' } } as never);
  const echo = labServiceObjects(ECHO);
  api.store.create('services', echo.service as never);
  api.store.create('endpointslices', echo.slice as never);
  for (const [svc, eps] of [
    [CART, CART.ports[0]!.endpoints.map((e) => e.ip)],
    [EMPTY, []],
    [CART6, CART6.ports[0]!.endpoints.map((e) => e.ip)],
  ] as const) {
    const o = genServiceObjects(svc, [...eps]);
    api.store.create('services', o.service as never);
    api.store.create('endpointslices', o.slice as never);
  }
  inv = writeLabInventory(lab, { vars: { kubeconfig: api.kubeconfigPath } });
});
afterAll(async () => {
  await api?.close();
  await lab?.down();
});

const runTrace = (service: string, extra: Parameters<typeof runTraceJson>[3] = {}) => runTraceJson(inv, node, service, extra);

describe.skipIf(!support.ok)('the kube-proxy fixture in nftables mode', () => {
  test('programs its Service into real kube-proxy tables, cleans iptables and IPVS state as kube-proxy does on entering nftables, and carries traffic', async () => {
    const iptables = await startMode('iptables');
    expect(iptables.ready, iptables.log.join('\n')).toBe(true);
    const natBefore = await natRules();
    expect(natBefore).toMatch(/^-A KUBE-SERVICES -d 10\.96\.60\.30\/32 .* -j KUBE-SVC-/m);
    // what ipvs mode would have left: its table and kube-ipvs0
    const ipvsTable = '-A -t 10.96.0.1:443 -s rr\n';
    await mustExec(lab, node, `mkdir -p /run/kpm-lab-ipvs && printf %s '${ipvsTable}' >/run/kpm-lab-ipvs/table && (ip link add kube-ipvs0 type dummy 2>/dev/null || ip link add kube-ipvs0 type ifb)`);

    const started = await startMode('nftables');
    expect(started.ready, started.log.join('\n')).toBe(true);
    expect(await mustExec(lab, node, 'curl -sS --max-time 3 http://127.0.0.1:10249/proxyMode')).toBe('nftables');
    const tables = (await mustExec(lab, node, 'nft list tables')).split('\n').filter((l) => l.includes('kube-proxy'));
    expect(tables).toEqual(['table ip kube-proxy', 'table ip6 kube-proxy']);
    const listed = await mustExec(lab, node, 'nft list table ip kube-proxy');
    const svc = kubeProxyNftChainName('service', 'shop', 'echo', 'tcp', 'http');
    const eps = ECHO.backends.map((b) => kubeProxyNftChainName('endpoint', 'shop', 'echo', 'tcp', 'http', `${b.ip}:${b.port}`));
    expect(listed).toContain(`10.96.60.30 . tcp . 80 : goto ${svc}`);
    expect(listed).toContain(`numgen random mod 2 vmap { 0 : goto ${eps[0]}, 1 : goto ${eps[1]} }`);
    expect(listed).toContain(`elements = { ${nodeIP} }`);
    // kube-proxy >= 1.29 entering nftables mode removes the iptables and ipvs modes' state (platformCleanup)
    expect(natBefore).toMatch(/^:KUBE-SERVICES /m);
    expect(await natRules()).not.toMatch(/KUBE-/);
    expect((await mustExec(lab, node, 'cat /run/kpm-lab-ipvs/table')).trim()).not.toContain('10.96.0.1');
    expect((await lab.exec(node, 'ip link show kube-ipvs0')).code).not.toBe(0);

    // a second start replaces the tables whole, nothing doubled
    expect((await startMode('nftables')).ready).toBe(true);
    expect(await mustExec(lab, node, 'nft list table ip kube-proxy')).toBe(listed);

    // the table is a working dataplane (iptables mode's rules for the same Service are gone): the
    // ClusterIP and the NodePort reach the backend
    for (let i = 0; i < 4; i++) {
      expect(await mustExec(lab, node, 'curl -sS --max-time 3 http://10.96.60.30/')).toBe('echo backend\n');
      expect(await mustExec(lab, node, `curl -sS --max-time 3 http://${nodeIP}:30808/`)).toBe('echo backend\n');
    }

    const r = await runTrace('shop/echo');
    expect(r.code, r.out + r.err).toBe(0);
    expect(r.trace!.mode).toBe('nftables');
    expect(r.trace!.warnings).toEqual([]);
    expect(r.trace!.frontends.map((f) => [f.kind, f.address, f.backends.map((b) => [b.address, b.share])])).toEqual([
      ['ClusterIP', '10.96.60.30:80', [[`${nodeIP}:18080`, 0.5], [`${extraIP}:18080`, 0.5]]],
      ['NodePort', `${nodeIP}:30808`, [[`${nodeIP}:18080`, 0.5], [`${extraIP}:18080`, 0.5]]],
    ]);
  });
});

describe.skipIf(!support.ok)('trace through the real nft list over SSH', () => {
  let loaded: string;

  beforeAll(async () => {
    // kube-proxy's tables for these Services, replacing the fixture's in one transaction, through the real nft -f
    const ip = kubeProxyNftables([CART, EMPTY], { family: 'ipv4', nodeAddresses: [nodeIP] });
    const ip6 = kubeProxyNftables([CART6], { family: 'ipv6' });
    loaded = ip + ip6;
    const file = ['table ip kube-proxy', 'delete table ip kube-proxy', ip, 'table ip6 kube-proxy', 'delete table ip6 kube-proxy', ip6].join('\n');
    const load = await lab.exec(node, `nft -f - <<'EOF'\n${file}EOF`);
    if (load.code !== 0) throw new Error(`nft -f: ${load.stderr}`);
  });

  test('nft lists back what was loaded, but for whitespace and element order', async () => {
    const listed = await mustExec(lab, node, 'nft list table ip kube-proxy; nft list table ip6 kube-proxy');
    expect(normalizeNft(listed)).toBe(normalizeNft(loaded));
  });

  test('the Service walked from service-ips and service-nodeports to each endpoint chain\'s DNAT, 1/3 each, in line with the EndpointSlice', async () => {
    const r = await runTrace('shop/cart');
    expect(r.code, r.out + r.err).toBe(0);
    const t = r.trace!;
    expect(t.mode).toBe('nftables');
    expect(t.warnings).toEqual([]);
    expect(t.frontends.map((f) => [f.kind, f.address, f.protocol, f.backends.map((b) => [b.address, b.share])])).toEqual(
      (['ClusterIP', 'NodePort'] as const).map((kind) => [
        kind,
        kind === 'ClusterIP' ? '10.96.50.20:80' : `${nodeIP}:30480`,
        'TCP',
        [
          ['10.244.1.11:8080', 1 / 3],
          ['10.244.2.12:8080', 1 / 3],
          ['10.244.3.13:8080', 1 / 3],
        ],
      ]),
    );
    expect(t.frontends[0]!.path).toEqual(['@service-ips', kubeProxyNftChainName('service', 'shop', 'cart', 'tcp', 'http')]);
    expect(t.frontends[0]!.masquerade?.map((m) => m.condition)).toEqual(['ip saddr != 10.244.0.0/16']);

    const tree = await runTrace('shop/cart', { json: false });
    expect(tree.out).toMatch(/^shop\/cart \(nftables\)$/m);
    expect(tree.out).toContain(`33.3 %  ${kubeProxyNftChainName('endpoint', 'shop', 'cart', 'tcp', 'http', '10.244.1.11:8080').slice(0, 17)} → DNAT 10.244.1.11:8080`);
  });

  test('an IPv6 Service through the ip6 table', async () => {
    const r = await runTrace('shop/cart6');
    expect(r.code, r.out + r.err).toBe(0);
    expect(r.trace!.frontends.map((f) => [f.kind, f.address, f.backends.map((b) => [b.address, b.share])])).toEqual([
      [
        'ClusterIP',
        '[fd00:10:96::20]:80',
        [
          ['[fd00:10:244:1::b]:8080', 0.5],
          ['[fd00:10:244:2::c]:8080', 0.5],
        ],
      ],
    ]);
  });

  test('an endpoint the EndpointSlice no longer lists is flagged stale, a new one missing; exit 2', async () => {
    api.store.mutate('endpointslices', 'shop', 'cart-abcde', (s) => {
      (s as unknown as { endpoints: { addresses: string[] }[] }).endpoints[2] = { addresses: ['10.244.4.14'] };
    });
    try {
      const r = await runTrace('shop/cart:http');
      expect(r.code).toBe(2);
      expect(r.trace!.warnings).toEqual([
        `endpoint 10.244.4.14:8080 is in the EndpointSlices but not in the dataplane: ClusterIP 10.96.50.20:80/TCP, NodePort ${nodeIP}:30480/TCP`,
        `backend 10.244.3.13:8080 is in the dataplane but not in the EndpointSlices (stale): ClusterIP 10.96.50.20:80/TCP, NodePort ${nodeIP}:30480/TCP`,
      ]);
    } finally {
      api.store.mutate('endpointslices', 'shop', 'cart-abcde', (s) => {
        (s as unknown as { endpoints: { addresses: string[] }[] }).endpoints[2] = { addresses: ['10.244.3.13'] };
      });
    }
  });

  test('a Service without endpoints: reject from no-endpoint-services, no backend; unknown names and ports are clear errors', async () => {
    const idle = await runTrace('shop/idle');
    expect(idle.code).toBe(2);
    expect(idle.trace!.frontends).toEqual([
      {
        kind: 'ClusterIP',
        address: '10.96.50.21:9000',
        protocol: 'TCP',
        backends: [],
        portName: '',
        line: expect.any(Number),
        drops: [{ chain: '@no-endpoint-services', target: 'reject', share: 1, reason: 'shop/idle', line: expect.any(Number) }],
      },
    ]);
    const missing = await runTrace('shop/nothing');
    expect(missing.code).toBe(1);
    expect(missing.err).toMatch(/Service shop\/nothing: .*not found/i);
    const port = await runTrace('shop/cart:grpc');
    expect(port.code).toBe(5);
    expect(port.err).toMatch(/Service shop\/cart has no port grpc \(its ports: http=80\/TCP\)/);
  });

  test('--dump of a file saved from the real nft list traces as the live read does', async () => {
    const file = path.join(tempDir('kpm-nft-dump-'), 'nft-list.txt');
    writeFileSync(file, await mustExec(lab, node, 'nft list table ip kube-proxy'));
    const out: string[] = [];
    const err: string[] = [];
    const code = await trace({ service: 'shop/cart', dump: file, json: true, out: (l) => out.push(l), err: (l) => err.push(l) });
    expect(code, err.join('\n')).toBe(0);
    const offline = JSON.parse(out.join('\n')) as ServiceTrace;
    const live = (await runTrace('shop/cart')).trace!;
    expect(offline.frontends).toEqual(live.frontends);
    expect(readFileSync(file, 'utf8')).toMatch(/^table ip kube-proxy \{$/m);
  });
});
