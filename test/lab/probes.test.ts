import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { startTestApiServer, type TestApiServer } from '../apiserver/server.ts';
import { labKubeProxyRuntime, startBackend } from './kube-proxy-fixture.ts';
import { labSupported, startLab, type Lab } from './lab.ts';
import { runProvision, stepOf, tempDir, writeLabInventory } from './helpers.ts';

// Service probes around each node's switch, on lab hosts whose Services carry real traffic: the
// fixture kube-proxy writes real iptables DNAT rules in the host's namespace (iptables mode), and in
// ipvs mode a labelled emulation of IPVS forwarding (this kernel has no IPVS). A fault knob makes one
// node's dataplane drop Service traffic while its kube-proxy looks healthy.

const support = labSupported();
let lab: Lab;
let api: TestApiServer;
let names: string[];
let dropOn: string | undefined;

const WEB = { name: 'web', namespace: 'default', clusterIP: '10.96.100.10', port: 80, portName: 'http' };

beforeAll(async () => {
  if (!support.ok) return;
  lab = await startLab({ hosts: 3, kmodShim: true, id: 'r' });
  names = lab.hosts.map((h) => h.name);
  const backend = lab.hosts[2]!;
  await startBackend(lab, backend.name, 8080, 'hello from web\n');
  api = await startTestApiServer({
    nodes: lab.hosts.map((h) => ({ name: h.name, internalIP: h.address })),
    runtime: labKubeProxyRuntime(lab, (n) => n, {
      services: [{ ...WEB, backends: [{ ip: backend.address, port: 8080 }] }],
      dataplaneFault: (node, mode) => (node === dropOn && mode === 'ipvs' ? 'drop' : undefined),
    }),
    recreateDelayMs: 100,
  });
  const svc = (name: string, ip: string) => ({
    apiVersion: 'v1',
    kind: 'Service',
    metadata: { name, namespace: 'default' },
    spec: { type: 'ClusterIP', clusterIP: ip, clusterIPs: [ip], ports: [{ name: 'http', port: 80, protocol: 'TCP', targetPort: 8080 }] },
  });
  api.store.create('services', svc('web', WEB.clusterIP) as never);
  // a Service whose dataplane never carried traffic on these nodes: failing before any switch
  api.store.create('services', svc('broken', '10.96.100.11') as never);
  // the nodes start in iptables mode: have the fixture kube-proxy on each program its Services now
  const raw = (api.store.get('configmaps', 'kube-system', 'kube-proxy') as unknown as { data: Record<string, string> }).data['config.conf']!;
  for (const n of names) {
    const r = await api.runtime.start(n, { mode: 'iptables', metricsBindAddress: '127.0.0.1:10249', raw } as never, undefined as never);
    if (!r.ready) throw new Error(`fixture kube-proxy did not start on ${n}: ${r.log.join('\n')}`);
  }
});
afterAll(async () => {
  await api?.close();
  await lab?.down();
});

const full = () => ({ tags: ['node', 'cluster'], cluster: { podTimeoutS: 60, backupDir: tempDir('kpm-bk-') } });
function inventory(probe: string[]) {
  return writeLabInventory(lab, { vars: { kubeconfig: api.kubeconfigPath, kube_proxy_probe_services: probe } });
}
const curl = async (host: string) => (await lab.exec(host, `curl -s --max-time 3 http://${WEB.clusterIP}/`)).stdout;

describe.skipIf(!support.ok)('Service probes around each switch, on lab hosts', () => {
  test('in iptables mode the Service answers through its ClusterIP on every node (real DNAT rules)', async () => {
    for (const n of names) expect(await curl(n)).toBe('hello from web\n');
    expect((await lab.exec(names[0]!, 'iptables-save -t nat')).stdout).toMatch(/-A KUBE-SEP-\w+ .*-j DNAT --to-destination [\d.]+:8080/);
  });

  test("a node whose dataplane drops the Service after its switch: the run stops and rolls back, naming the Service and the node", async () => {
    dropOn = names[1];
    try {
      const r = await runProvision(inventory(['default/web:80/']), full());
      expect(r.code, r.out).toBe(2);
      const first = stepOf(r, names[0]!, 'kube-proxy')!;
      expect(first.status).toBe('changed');
      expect(first.message).toMatch(/probes: .*default\/web ClusterIP 10.96.100.10:80\/: before ok \d+ms, after ok \d+ms/);
      const failed = stepOf(r, names[1]!, 'kube-proxy')!;
      expect(failed.status).toBe('failed');
      expect(failed.message).toMatch(new RegExp(`Service default/web no longer answers through ${names[1]} \\(default/web ClusterIP 10.96.100.10:80/: before ok in \\d+ms, after: `));
      expect(stepOf(r, 'cluster', 'rollback')!.status).toBe('changed');
      // back on iptables: the Service answers through both nodes again
      expect(await curl(names[0]!)).toBe('hello from web\n');
      expect(await curl(names[1]!)).toBe('hello from web\n');
      // the report carries each probe with its latency before and after
      const probes = r.report.hosts[names[1]!]!.steps.find((s) => s.name === 'kube-proxy') as unknown as { probes: { service: string; before: { ok: boolean; ms: number }; after: { ok: boolean } }[] };
      expect(probes.probes.find((p) => p.service === 'default/web')).toMatchObject({ before: { ok: true }, after: { ok: false } });
      expect(r.out).toContain('SERVICE PROBES');
    } finally {
      dropOn = undefined;
    }
  });

  test('a Service already failing before the switch is reported as such and does not stop the run', async () => {
    const r = await runProvision(inventory(['default/web:80/', 'default/broken:80']), full());
    expect(r.code, r.out).toBe(0);
    for (const n of names) {
      const s = stepOf(r, n, 'kube-proxy')!;
      expect(s.status).toBe('changed');
      expect(s.message).toMatch(/already failing before the switch \(not blamed on it\): .*default\/broken ClusterIP 10.96.100.11:80/);
      expect(s.message).toMatch(/default\/web ClusterIP 10.96.100.10:80\/: before ok \d+ms, after ok \d+ms/);
    }
  });
});
