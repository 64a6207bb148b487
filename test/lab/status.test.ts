import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { status } from '../../tasks/commands/status.ts';
import { trace } from '../../tasks/commands/trace.ts';
import type { ServiceTrace } from '../../tasks/dataplane/trace.ts';
import type { StatusReport } from '../../tasks/commands/status.ts';
import { updateConfigMap } from '../../tasks/cluster/configmap-store.ts';
import { KubeClient, loadKubeConfig } from '../../tasks/cluster/kube.ts';
import { startTestApiServer, type TestApiServer } from '../apiserver/server.ts';
import { labKubeProxyRuntime, labServiceObjects, startBackend, startSeededKubeProxies } from './kube-proxy-fixture.ts';
import { labSupported, startLab, type Lab } from './lab.ts';
import { runProvision, tempDir, writeLabInventory } from './helpers.ts';

// `status` on 3 lab hosts standing for a cluster's nodes (the fixture kube-proxy answers /proxyMode and
// programs real iptables rules in each host's namespace): before, during (one node recycled by hand,
// as the cluster phase does it) and after a switch, then back, with each mode's leftovers.

const support = labSupported();
let lab: Lab;
let api: TestApiServer;
let names: string[];
let inv: string;

const WEB = { name: 'web', namespace: 'default', clusterIP: '10.96.100.10', port: 80, portName: 'http' };

beforeAll(async () => {
  if (!support.ok) return;
  lab = await startLab({ hosts: 3, kmodShim: true, id: 'w' });
  names = lab.hosts.map((h) => h.name);
  const backend = lab.hosts[2]!;
  await startBackend(lab, backend.name, 8080, 'hello from web\n');
  api = await startTestApiServer({
    nodes: lab.hosts.map((h) => ({ name: h.name, internalIP: h.address })),
    runtime: labKubeProxyRuntime(lab, (n) => n, { services: [{ ...WEB, backends: [{ ip: backend.address, port: 8080 }] }] }),
    recreateDelayMs: 100,
  });
  const objects = labServiceObjects({ ...WEB, backends: [{ ip: backend.address, port: 8080 }] });
  api.store.create('services', objects.service as never);
  api.store.create('endpointslices', objects.slice as never);
  await startSeededKubeProxies(api, names);
  inv = writeLabInventory(lab, { vars: { kubeconfig: api.kubeconfigPath } });
});
afterAll(async () => {
  await api?.close();
  await lab?.down();
});

async function runStatus(json: boolean): Promise<{ code: number; out: string; err: string; report?: StatusReport }> {
  const out: string[] = [];
  const err: string[] = [];
  const code = await status({ inventory: inv, json, out: (l) => out.push(l), err: (l) => err.push(l) });
  const text = out.join('\n');
  return { code, out: text, err: err.join('\n'), ...(json ? { report: JSON.parse(text) as StatusReport } : {}) };
}
const node = (r: StatusReport, name: string) => r.nodes.find((n) => n.node === name)!;
const full = () => ({ tags: ['node', 'cluster'], cluster: { podTimeoutS: 60, backupDir: tempDir('kpm-bk-') } });

describe.skipIf(!support.ok)('status on lab hosts', () => {
  test('before: every node runs iptables as the ConfigMap ("" = default) says; IPVS prerequisites missing; no leftovers', async () => {
    // someone else's `inet kube-proxy` table (kube-proxy makes only ip and ip6 ones) is not kube-proxy's
    expect((await lab.exec(names[0]!, 'nft add table inet kube-proxy')).code).toBe(0);
    const r = await runStatus(true);
    expect(r.code, r.out + r.err).toBe(0);
    const s = r.report!;
    expect(s.verdict).toBe('consistent');
    expect(s.cluster.configMap).toMatchObject({ mode: 'iptables', modeRaw: '' });
    expect(s.cluster.daemonSet).toMatchObject({ desired: 3, ready: 3, unavailable: 0 });
    for (const n of names) {
      const st = node(s, n);
      expect(st).toMatchObject({ host: n, runningMode: 'iptables', proxierLine: 'Using iptables Proxier', drift: [], leftovers: [], problems: [] });
      expect(st.prerequisites!.packagesMissing).toEqual(expect.arrayContaining(['ipvsadm', 'ipset']));
      expect(st.prerequisites!.modulesNotLoaded).toContain('ip_vs');
      // the fixture's real iptables rules: one Service chain pair (web) per node
      expect(st.dataplane!.iptables.v4).toMatchObject({ svc: 1, sep: 1, serviceRules: 1 });
      expect(st.dataplane!.ipvs).toBeNull();
      expect(st.dataplane!.kubeIpvs0).toBeNull();
      expect(st.dataplane!.nftTables).toEqual([]);
    }
    const text = await runStatus(false);
    expect(text.out).not.toContain('nft kube-proxy');
    expect((await lab.exec(names[0]!, 'nft delete table inet kube-proxy')).code).toBe(0);
    expect(text.out).toContain('mode: iptables (default)');
    expect(text.out).toMatch(/consistent: every kube-proxy runs iptables/);
  });

  test('during: ConfigMap flipped and one node recycled; the other two show drift (restart pending), exit 2', async () => {
    const prep = await runProvision(inv, { tags: ['node'] });
    expect(prep.code, prep.out).toBe(0);
    const kube = new KubeClient(loadKubeConfig({ kubeconfig: api.kubeconfigPath }));
    await new Promise((r) => setTimeout(r, 1100)); // the ConfigMap's change is stamped in seconds, after the pods' start
    await updateConfigMap(kube, { namespace: 'kube-system', name: 'kube-proxy' }, (data) => ({ ...data, 'config.conf': data['config.conf']!.replace(/^mode: ""$/m, 'mode: "ipvs"') }));
    const { items } = await kube.listPods('kube-system', 'k8s-app=kube-proxy', `spec.nodeName=${names[0]}`);
    await kube.deletePod('kube-system', items[0]!.metadata!.name!);
    await kube.waitForPods(
      'kube-system',
      { labelSelector: 'k8s-app=kube-proxy', fieldSelector: `spec.nodeName=${names[0]}` },
      (pods) => (pods.some((p) => p.metadata!.name !== items[0]!.metadata!.name && p.status?.conditions?.some((c) => c.type === 'Ready' && c.status === 'True')) ? true : undefined),
      60_000,
      'the new pod',
    );

    const r = await runStatus(true);
    expect(r.code, r.out).toBe(2);
    const s = r.report!;
    expect(s.verdict).toBe('inconsistent');
    expect(s.cluster.configMap.mode).toBe('ipvs');
    const first = node(s, names[0]!);
    expect(first).toMatchObject({ runningMode: 'ipvs', proxierLine: 'Using ipvs Proxier', drift: [], problems: [] });
    expect(first.prerequisites).toMatchObject({ packagesMissing: [], modulesNotLoaded: [], filesNotPersisted: [] });
    // kube-proxy left iptables mode's Service chains behind
    expect(first.leftovers).toEqual([expect.stringMatching(/iptables mode's IPv4 Service chains: 1 KUBE-SVC-\*, 1 KUBE-SEP-\*/)]);
    expect(first.dataplane!.ipvs).toEqual(expect.arrayContaining([{ protocol: 'TCP', address: '10.96.0.1:443' }, { protocol: 'TCP', address: `${WEB.clusterIP}:80` }]));
    for (const n of names.slice(1)) {
      const st = node(s, n);
      expect(st.runningMode).toBe('iptables');
      expect(st.drift).toEqual([expect.stringMatching(/before the ConfigMap's last change .*restart pending/), 'runs iptables, the ConfigMap says ipvs: restart pending']);
    }
    const text = await runStatus(false);
    expect(text.out).toMatch(new RegExp(`${names[1]}: drift: runs iptables, the ConfigMap says ipvs: restart pending`));
    expect(text.out).toMatch(/RESTART PENDING/);
    expect(text.out).toContain('NOT consistent');
  });

  test('after the provision run: all ipvs, consistent, leftovers reported on every node; an unreachable node is shown, the others still report', async () => {
    const run = await runProvision(inv, full());
    expect(run.code, run.out).toBe(0);
    const r = await runStatus(true);
    expect(r.code, r.out).toBe(0);
    for (const n of names) {
      const st = node(r.report!, n);
      expect(st).toMatchObject({ runningMode: 'ipvs', drift: [], problems: [] });
      expect(st.leftovers.join('\n')).toMatch(/KUBE-SVC-\*/);
    }
    const text = await runStatus(false);
    expect(text.out).toMatch(/leftover of another mode: iptables mode's IPv4 Service chains/);

    // trace reads the node's IPVS table now (the lab's labelled IPVS fixture table; real IPVS is the VM tier's)
    const out: string[] = [];
    const code = await trace({ service: 'default/web', inventory: inv, node: names[0]!, json: true, out: (l) => out.push(l), err: (l) => out.push(l) });
    expect(code, out.join('\n')).toBe(0);
    const t = JSON.parse(out.join('\n')) as ServiceTrace;
    expect(t.mode).toBe('ipvs');
    expect(t.frontends).toEqual([expect.objectContaining({ kind: 'ClusterIP', address: `${WEB.clusterIP}:80`, backends: [expect.objectContaining({ address: `${lab.hosts[2]!.address}:8080`, share: 1 })] })]);
    expect(text.out).toMatch(/warning: server is .*IPVS mode is deprecated|consistent: every kube-proxy runs ipvs/);

    await lab.stop(names[1]!);
    try {
      const down = await runStatus(true);
      expect(down.code, down.out).toBe(3);
      expect(down.report!.verdict).toBe('unknown');
      expect(node(down.report!, names[1]!).unreachable).toBeTruthy();
      expect(node(down.report!, names[0]!).runningMode).toBe('ipvs');
      expect(node(down.report!, names[2]!).runningMode).toBe('ipvs');
    } finally {
      await lab.start(names[1]!);
    }
  });

  test('back to iptables: IPVS leftovers (kube-ipvs0, the Services\' virtual servers, KUBE-* ipsets) are reported', async () => {
    const r0 = await runProvision(inv, { ...full(), mode: 'iptables' });
    expect(r0.code, r0.out).toBe(0);
    const r = await runStatus(true);
    expect(r.code, r.out).toBe(0);
    for (const n of names) {
      const st = node(r.report!, n);
      expect(st.runningMode).toBe('iptables');
      expect(st.leftovers.join('\n')).toMatch(/2 KUBE-\* ipsets/);
    }
    // the node powered off above lost its links and IPVS table (a reboot does that); the others kept them
    for (const n of [names[0]!, names[2]!]) {
      const l = node(r.report!, n).leftovers.join('\n');
      expect(l).toMatch(/link kube-ipvs0 \(2 addresses\)/);
      expect(l).toMatch(/2 IPVS virtual servers for Services/);
    }
    expect(node(r.report!, names[1]!).leftovers.join('\n')).not.toMatch(/kube-ipvs0/);
  });
});
