import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { startTestApiServer, type TestApiServer } from '../apiserver/server.ts';
import { kubeProxyIptablesSave, type GenService } from '../dataplane-dumps.ts';
import { labKubeProxyRuntime } from './kube-proxy-fixture.ts';
import { labSupported, startLab, type Lab } from './lab.ts';
import { writeLabInventory } from './helpers.ts';
import { genServiceObjects, runTraceJson } from './trace-support.ts';

// `trace` through a lab host's real netfilter: kube-proxy-style nat and filter tables (1.28 shapes,
// kube-proxy's own chain hashes) are loaded with the real iptables-restore into the host's network
// namespace, and trace reads them back with the real iptables-save over SSH. The fixture kube-proxy
// only answers /proxyMode here; the rules are not its.

const support = labSupported();
let lab: Lab;
let api: TestApiServer;
let inv: string;
let node: string;

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

beforeAll(async () => {
  if (!support.ok) return;
  lab = await startLab({ hosts: 2, kmodShim: true, id: 'x' });
  node = lab.hosts[1]!.name;
  api = await startTestApiServer({ nodes: lab.hosts.map((h) => ({ name: h.name, internalIP: h.address })), runtime: labKubeProxyRuntime(lab) });
  const raw = (api.store.get('configmaps', 'kube-system', 'kube-proxy') as unknown as { data: Record<string, string> }).data['config.conf']!;
  const started = await api.runtime.start(node, { mode: 'iptables', metricsBindAddress: '127.0.0.1:10249', raw } as never, undefined as never);
  if (!started.ready) throw new Error(started.log.join('\n'));
  // kube-proxy's tables for these Services, replacing the fixture's, through the real iptables-restore
  const dump = kubeProxyIptablesSave([CART, EMPTY], { style: '1.28', family: 'ipv4', clusterCIDR: '10.244.0.0/16' });
  const load = await lab.exec(node, `iptables-restore <<'EOF'\n${dump}EOF`);
  if (load.code !== 0) throw new Error(`iptables-restore: ${load.stderr}`);
  api.store.create('namespaces', { apiVersion: 'v1', kind: 'Namespace', metadata: { name: 'shop' } } as never);
  for (const [svc, eps] of [
    [CART, CART.ports[0]!.endpoints.map((e) => e.ip)],
    [EMPTY, []],
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

describe.skipIf(!support.ok)('trace through real iptables-save over SSH', () => {
  test('the Service walked from KUBE-SERVICES and KUBE-NODEPORTS to each KUBE-SEP DNAT, 1/3 each, in line with the EndpointSlice', async () => {
    // the rules really are in the host's namespace (not a file the tool reads)
    const saved = await lab.exec(node, 'iptables-save -t nat');
    expect(saved.stdout).toMatch(/^-A KUBE-SERVICES -d 10\.96\.50\.20\/32 -p tcp -m comment --comment "shop\/cart:http cluster IP" -m tcp --dport 80 -j KUBE-SVC-/m);

    const r = await runTrace('shop/cart');
    expect(r.code, r.out + r.err).toBe(0);
    const t = r.trace!;
    expect(t.mode).toBe('iptables');
    expect(t.warnings).toEqual([]);
    const clusterIP = t.frontends.find((f) => f.kind === 'ClusterIP')!;
    expect(clusterIP).toMatchObject({ address: '10.96.50.20:80', protocol: 'TCP' });
    expect(clusterIP.backends.map((b) => [b.address, Number(b.share.toFixed(4))])).toEqual([
      ['10.244.1.11:8080', 0.3333],
      ['10.244.2.12:8080', 0.3333],
      ['10.244.3.13:8080', 0.3333],
    ]);
    expect(clusterIP.path?.[0]).toBe('KUBE-SERVICES');
    expect(clusterIP.masquerade?.map((m) => m.condition)).toContain('! -s 10.244.0.0/16');
    const nodePort = t.frontends.find((f) => f.kind === 'NodePort')!;
    expect(nodePort.address).toMatch(/:30480$/);
    expect(nodePort.backends).toHaveLength(3);

    const tree = await runTrace('shop/cart', { json: false });
    expect(tree.out).toMatch(/^shop\/cart \(iptables\)$/m);
    expect(tree.out).toMatch(/33\.3 %\s+KUBE-SEP-\w+ → DNAT 10\.244\.1\.11:8080/);
  });

  test('an endpoint the EndpointSlice no longer lists is flagged stale, a new one missing; exit 2', async () => {
    api.store.mutate('endpointslices', 'shop', 'cart-abcde', (s) => {
      (s as unknown as { endpoints: { addresses: string[] }[] }).endpoints[2] = { addresses: ['10.244.4.14'] };
    });
    try {
      const r = await runTrace('shop/cart:http');
      expect(r.code).toBe(2);
      expect(r.trace!.warnings).toEqual(
        expect.arrayContaining([
          expect.stringMatching(/endpoint 10\.244\.4\.14:8080 is in the EndpointSlices but not in the dataplane/),
          expect.stringMatching(/backend 10\.244\.3\.13:8080 is in the dataplane but not in the EndpointSlices \(stale\)/),
        ]),
      );
    } finally {
      api.store.mutate('endpointslices', 'shop', 'cart-abcde', (s) => {
        (s as unknown as { endpoints: { addresses: string[] }[] }).endpoints[2] = { addresses: ['10.244.3.13'] };
      });
    }
  });

  test('a Service without endpoints: REJECT in the filter table, no backend; unknown names and ports are clear errors', async () => {
    const idle = await runTrace('shop/idle');
    expect(idle.trace!.frontends[0]).toMatchObject({ kind: 'ClusterIP', address: '10.96.50.21:9000', backends: [] });
    expect(JSON.stringify(idle.trace)).toMatch(/REJECT/);

    const missing = await runTrace('shop/nothing');
    expect(missing.code).toBe(1);
    expect(missing.err).toMatch(/Service shop\/nothing: .*not found/i);
    const port = await runTrace('shop/cart:grpc');
    expect(port.code).toBe(5);
    expect(port.err).toMatch(/Service shop\/cart has no port grpc \(its ports: http=80\/TCP\)/);
    const badNode = await runTrace('shop/cart', { node: 'nope' });
    expect(badNode.code).toBe(5);
    expect(badNode.err).toMatch(/--node nope: no node of that name/);
  });
});
