import { readFileSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { startTestApiServer, type TestApiServer } from '../apiserver/server.ts';
import { labKubeProxyRuntime } from './kube-proxy-fixture.ts';
import { labSupported, startLab, type Lab } from './lab.ts';
import { runProvision, stepOf, tempDir, writeLabInventory } from './helpers.ts';

// The whole flow on 3 lab hosts: node phase over SSH, then the cluster phase against the in-repo API
// server, whose simulated kubelet starts the lab's fixture kube-proxy on the host standing for the node
// (it fails as kube-proxy >= 1.26 does when the host lacks what the mode needs).

const support = labSupported();
let lab: Lab;
let api: TestApiServer;
let names: string[];

beforeAll(async () => {
  if (!support.ok) return;
  lab = await startLab({ hosts: 3, kmodShim: true, id: 'q' });
  names = lab.hosts.map((h) => h.name);
  api = await startTestApiServer({
    nodes: lab.hosts.map((h) => ({ name: h.name, internalIP: h.address })),
    runtime: labKubeProxyRuntime(lab),
    recreateDelayMs: 100,
  });
});
afterAll(async () => {
  await api?.close();
  await lab?.down();
});

// the run's lock (a Lease taken and deleted) is not a change to the cluster
const writes = () => api.requests.filter((r) => ['PUT', 'PATCH', 'POST', 'DELETE'].includes(r.method) && !r.path.includes('/leases'));
const configConf = () => (api.store.get('configmaps', 'kube-system', 'kube-proxy') as unknown as { data: Record<string, string> }).data['config.conf']!;
const maxUnavailable = () => Math.max(0, ...api.unavailableTimeline().map((p) => p.unavailable));

function inventory(vars: Record<string, unknown> = {}) {
  return writeLabInventory(lab, { vars: { kubeconfig: api.kubeconfigPath, ...vars } });
}
// backups go to a temporary directory, never the working tree
const full = { tags: ['node', 'cluster'], cluster: { podTimeoutS: 60, backupDir: tempDir('kpm-bk-') } };

async function proxyMode(host: string): Promise<string> {
  return (await lab.exec(host, 'curl -s --max-time 3 127.0.0.1:10249/proxyMode')).stdout.trim();
}

describe.skipIf(!support.ok)('provision, node and cluster phases, on lab hosts', () => {
  test('gate: a node that runs kube-proxy but is not prepared stops the run before the ConfigMap changes', async () => {
    // --limit narrows the node phase to two hosts; the third still runs kube-proxy and is not ready
    const r = await runProvision(inventory(), { ...full, limit: `${names[0]},${names[1]}`, cluster: { ...full.cluster, backupDir: tempDir('kpm-bk-') } });
    expect(r.code).toBe(2);
    const pre = stepOf(r, 'cluster', 'preflight')!;
    expect(pre.status).toBe('failed');
    expect(pre.message).toMatch(new RegExp(`not ready for ipvs mode, so the ConfigMap is left as it is: ${names[2]} \\(host ${names[2]}\\): not prepared .*package ipvsadm`));
    expect(writes()).toEqual([]);
    expect(configConf()).toMatch(/^mode: ""$/m);
  });

  test('dry run: no write reaches the API; the ConfigMap diff and the recycle order are printed', async () => {
    const r = await runProvision(inventory(), { ...full, dryRun: true });
    expect(r.code, r.out).toBe(0);
    expect(writes()).toEqual([]);
    expect(r.out).toContain('cluster |   +mode: "ipvs"');
    expect(r.out).toContain(`recycle order: ${names.join(', ')}`);
  });

  test('full flow: node phase, ConfigMap flipped, 3 pods recycled in order, each verified on the node; at most one unavailable', async () => {
    const backupDir = tempDir('kpm-bk-');
    const r = await runProvision(inventory(), { ...full, cluster: { ...full.cluster, backupDir } });
    expect(r.code, r.out).toBe(0);
    expect(configConf()).toMatch(/^mode: "ipvs"$/m);
    const recycled = r.out.split('\n').filter((l) => / \| kube-proxy +\| changed /.test(l)).map((l) => l.split(' ')[0]);
    expect(recycled).toEqual(names);
    for (const n of names) {
      expect(stepOf(r, n, 'kube-proxy')!.message).toMatch(/verified: \/proxyMode: ipvs, log: Using ipvs Proxier, ipvsadm: 10.96.0.1:443/);
      expect(await proxyMode(n)).toBe('ipvs');
    }
    const deletes = writes().filter((w) => w.method === 'DELETE');
    expect(deletes.map((d) => d.path.split('/').pop()!.replace(/-\w+$/, ''))).toEqual(['kube-proxy', 'kube-proxy', 'kube-proxy']);
    expect(new Set(api.events.filter((e) => e.type === 'pod-deleted').map((e) => e.node))).toEqual(new Set(names));
    expect(maxUnavailable()).toBe(1);
    // the backup holds the ConfigMap as it was
    const backup = r.out.match(/saved to (\S+) before the change/)![1]!;
    expect(readFileSync(backup, 'utf8')).toMatch(/mode: (""|\\"\\")/);
    // the recap and the report cover both phases
    expect(r.report.hosts.cluster!.steps.map((s) => s.name)).toEqual(['preflight', 'configmap']);
    expect(r.out).toMatch(/^cluster +: ok=1 +changed=1/m);
  });

  test('rerun: no ConfigMap write, no DELETE, every node ok', async () => {
    const before = writes().length;
    const r = await runProvision(inventory(), full);
    expect(r.code, r.out).toBe(0);
    expect(writes().length).toBe(before);
    for (const n of names) expect(stepOf(r, n, 'kube-proxy')!.status).toBe('ok');
    expect(r.report.summary.changed).toBe(0);
  });

  test('failure mid-way: the second node\'s new pod crash-loops -> stop, ConfigMap restored, first node back on iptables', async () => {
    // back to iptables first, verified on every node
    const back = await runProvision(inventory(), { ...full, mode: 'iptables' });
    expect(back.code, back.out).toBe(0);
    for (const n of names) expect(await proxyMode(n)).toBe('iptables');
    const original = configConf();
    // node 2 breaks in a way its package database does not show: its ipset binary is gone
    await lab.exec(names[1]!, 'mv /usr/sbin/ipset /usr/sbin/ipset.gone');
    try {
      const r = await runProvision(inventory(), { ...full, tags: ['cluster'] });
      expect(r.code).toBe(2);
      const failed = stepOf(r, names[1]!, 'kube-proxy')!;
      expect(failed.status).toBe('failed');
      expect(failed.message).toMatch(/CrashLoopBackOff/);
      expect(failed.message).toContain("can't use the IPVS proxier");
      expect(stepOf(r, names[2]!, 'kube-proxy')).toBeUndefined(); // never touched
      expect(configConf()).toBe(original);
      expect(stepOf(r, 'cluster', 'rollback')!.status).toBe('changed');
      expect(stepOf(r, names[0]!, 'rollback')!.message).toMatch(/back on iptables/);
      expect(await proxyMode(names[0]!)).toBe('iptables');
      expect(await proxyMode(names[1]!)).toBe('iptables');
      expect(r.report.hosts[names[1]!]!.reason).toMatch(/kube-proxy: .*CrashLoopBackOff/);
      expect(maxUnavailable()).toBe(1);
    } finally {
      await lab.exec(names[1]!, 'mv /usr/sbin/ipset.gone /usr/sbin/ipset');
    }
  });
});
