import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, describe, expect, test } from 'vitest';
import { editConfigMapData } from '../../tasks/cluster/kube-proxy-config.ts';
import { KubeClient, loadKubeConfig } from '../../tasks/cluster/kube.ts';
import { acquireLock } from '../../tasks/cluster/lock.ts';
import { clusterWish, runClusterPhase, type ClusterPhaseOptions } from '../../tasks/cluster/phase.ts';
import { parseInventoryText } from '../../tasks/inventory/load.ts';
import type { Host } from '../../tasks/inventory/types.ts';
import type { StepResult } from '../../tasks/run/results.ts';
import { fakeNodeSessions, phaseOptions, type ProbeAnswer } from './cluster-phase-support.ts';
import { memoryRuntime, startTestApiServer, IPVS_IPSET_MISSING, type TestApiServer } from '../apiserver/server.ts';

// The cluster phase against the in-repo API server (real client-node, real REST, simulated DaemonSet
// controller and kubelet). The nodes' side (/proxyMode, ipvsadm -Ln) is answered from the simulated
// kube-proxy's state, as the node would answer over SSH; the lab tests do the same over real SSH.

let server: TestApiServer | undefined;
const backupDir = mkdtempSync(join(tmpdir(), 'kpm-cluster-'));
afterAll(() => rmSync(backupDir, { recursive: true, force: true }));
afterEach(async () => {
  await server?.close();
  server = undefined;
});

const NODES = [
  { name: 'node1', internalIP: '10.0.0.11' },
  { name: 'node2', internalIP: '10.0.0.12' },
  { name: 'node3', internalIP: '10.0.0.13' },
];

function inventory(extra = ''): Host[] {
  return parseInventoryText(
    `all:\n  vars:\n    ansible_user: root\n${extra}  hosts:\n${NODES.map((n) => `    ${n.name}: {ansible_host: ${n.internalIP}}\n`).join('')}`,
    'inv.yaml',
  ).hosts;
}

/** the SSH execs of the last run, per node */
let execsOf = new Map<string, number>();

async function setup(opts: { crash?: (node: string, mode: string) => string | undefined } = {}) {
  const runtime = memoryRuntime({ crash: (n, c) => opts.crash?.(n, c.mode) });
  server = await startTestApiServer({ nodes: NODES, runtime, recreateDelayMs: 30, readyDelayMs: 20 });
  const modeOf = (node: string) => {
    const last = [...runtime.starts].reverse().find((s) => s.node === node);
    if (!last) return 'iptables'; // the cluster started in kubeadm's default mode
    return last.ready ? last.mode : null;
  };
  return { runtime, modeOf };
}

async function run(over: Partial<ClusterPhaseOptions> & { modeOf: (n: string) => string | null; answers?: ProbeAnswer }) {
  const fake = fakeNodeSessions(over.modeOf, over.answers);
  execsOf = fake.execs;
  const steps: StepResult[] = [];
  const lines: string[] = [];
  const hosts = inventory();
  const outcome = await runClusterPhase({
    ...phaseOptions({ kubeconfig: server!.kubeconfigPath, hosts, backupDir, sessions: fake.sessions }),
    emit: (r) => steps.push(r),
    out: (l) => lines.push(l),
    ...over,
  });
  return { outcome, steps, lines };
}

// the run's lock (a Lease taken and deleted) is not a change to the cluster
const writes = () => server!.requests.filter((r) => ['PUT', 'PATCH', 'POST', 'DELETE'].includes(r.method) && !r.path.includes('/leases'));
const maxUnavailable = () => Math.max(0, ...server!.unavailableTimeline().map((p) => p.unavailable));
const configConf = () => (server!.store.get('configmaps', 'kube-system', 'kube-proxy') as unknown as { data: Record<string, string> }).data['config.conf']!;

describe('cluster phase against the test API server', () => {
  test('full flow: ConfigMap flipped, 3 pods recycled in order, each verified; at most one unavailable; one DELETE per node', async () => {
    const { modeOf } = await setup();
    const { outcome, steps } = await run({ modeOf });
    expect(outcome.ok, JSON.stringify(steps, null, 1)).toBe(true);
    expect(configConf()).toMatch(/^mode: "ipvs"$/m);
    const deletes = writes().filter((r) => r.method === 'DELETE');
    expect(deletes).toHaveLength(3);
    expect(steps.filter((s) => s.name === 'kube-proxy').map((s) => [s.host, s.status])).toEqual([
      ['node1', 'changed'],
      ['node2', 'changed'],
      ['node3', 'changed'],
    ]);
    expect(steps.find((s) => s.host === 'node2' && s.name === 'kube-proxy')!.message).toMatch(/verified: \/proxyMode: ipvs, log: Using ipvs Proxier, ipvsadm: 10.96.0.1:443/);
    expect(maxUnavailable()).toBe(1);
    expect(outcome.backup).toMatch(/kube-proxy-configmap-backup-.*\.yaml$/);
    // two SSH execs per switched node: the read before (mode, probes) and the verification after (mode, table, probes)
    expect(Object.fromEntries(execsOf)).toEqual({ node1: 2, node2: 2, node3: 2 });

    // rerun: no ConfigMap write, no DELETE, every node ok, from one read each
    const before = writes().length;
    const again = await run({ modeOf });
    expect(again.outcome.ok).toBe(true);
    expect(Object.fromEntries(execsOf)).toEqual({ node1: 1, node2: 1, node3: 1 });
    expect(writes().length).toBe(before);
    expect(again.steps.filter((s) => s.name === 'kube-proxy').every((s) => s.status === 'ok')).toBe(true);

    // --mode iptables brings every node back, verified
    const back = await run({ modeOf, targetMode: 'iptables' });
    expect(back.outcome.ok).toBe(true);
    expect(configConf()).toMatch(/^mode: "iptables"$/m);
    expect(['node1', 'node2', 'node3'].map(modeOf)).toEqual(['iptables', 'iptables', 'iptables']);
  });

  test('a changed setting (scheduler) recycles nodes already in ipvs: the new configuration only takes effect in new pods', async () => {
    const { modeOf, runtime } = await setup();
    expect((await run({ modeOf })).outcome.ok).toBe(true);
    const starts = runtime.starts.length;
    const hosts = inventory('    kube_proxy_scheduler: wrr\n');
    const { outcome, steps } = await run({ modeOf, inventoryHosts: hosts, targets: hosts });
    expect(outcome.ok, JSON.stringify(steps, null, 1)).toBe(true);
    expect(configConf()).toMatch(/^\s+scheduler: "?wrr"?$/m);
    const kp = steps.filter((s) => s.name === 'kube-proxy');
    expect(kp.map((s) => s.status)).toEqual(['changed', 'changed', 'changed']);
    expect(kp[0]!.message).toMatch(/\(runs ipvs but started before this run changed the ConfigMap\) replaced by/);
    expect(runtime.starts.length).toBe(starts + 3);
    expect(maxUnavailable()).toBe(1);

    // a rerun finds every pod started after that change: nothing to do
    const again = await run({ modeOf, inventoryHosts: hosts, targets: hosts });
    expect(again.steps.filter((s) => s.name === 'kube-proxy').map((s) => s.status)).toEqual(['ok', 'ok', 'ok']);
    expect(runtime.starts.length).toBe(starts + 3);
  });

  test('a rerun after a run that stopped right after its ConfigMap write recycles the pods started before that write', async () => {
    const { modeOf, runtime } = await setup();
    // the run "stops" after the write: what a SIGKILL between the write and the first recycle leaves
    server!.store.mutate('configmaps', 'kube-system', 'kube-proxy', (cm) => {
      const data = (cm as unknown as { data: Record<string, string> }).data;
      Object.assign(data, editConfigMapData(data, clusterWish(inventory(), 'ipvs').wish, 'config.conf').data);
      cm.metadata.managedFields = [{ manager: 'kube-proxy-mode', operation: 'Update', apiVersion: 'v1', time: new Date().toISOString().replace(/\.\d{3}Z$/, 'Z'), fieldsType: 'FieldsV1', fieldsV1: {} }];
    });
    const { outcome, steps } = await run({ modeOf });
    expect(outcome.ok, JSON.stringify(steps, null, 1)).toBe(true);
    expect(steps.find((s) => s.name === 'configmap')!.message).toMatch(/already says mode ipvs: no write/);
    expect(steps.filter((s) => s.name === 'kube-proxy').map((s) => s.status)).toEqual(['changed', 'changed', 'changed']);
    expect(runtime.starts.filter((s) => s.mode === 'ipvs')).toHaveLength(3);
  });

  test('dry run: no write reaches the API; the diff and the recycle order are shown', async () => {
    const { modeOf } = await setup();
    const { outcome, steps, lines } = await run({ modeOf, dryRun: true });
    expect(outcome.ok).toBe(true);
    expect(writes()).toEqual([]);
    const cm = steps.find((s) => s.name === 'configmap')!;
    expect(cm.status).toBe('changed');
    expect(cm.diff).toContain('-mode: ""\n+mode: "ipvs"');
    expect(lines).toContain('recycle order: node1, node2, node3');
    expect(steps.filter((s) => s.name === 'kube-proxy').map((s) => s.message)).toEqual(
      NODES.map((n) => expect.stringMatching(new RegExp(`^${n.name}: would delete pod kube-proxy-\\w+ \\(runs iptables\\)`))),
    );
    // the probes it would run, with the "before" ones run (they change nothing)
    expect(steps.find((s) => s.host === 'node1' && s.name === 'kube-proxy')!.message).toMatch(/probes before: default\/kubernetes ClusterIP 10.96.0.1:443: before ok 3ms, after -/);
  });

  test('gate: a node not ready, or running kube-proxy without being in the inventory, stops the run before the ConfigMap changes', async () => {
    const { modeOf } = await setup();
    const r = await run({ modeOf, readiness: async (h) => (h.name === 'node2' ? { ready: false, reason: 'package ipset missing' } : { ready: true }) });
    expect(r.outcome.ok).toBe(false);
    expect(r.steps[0]).toMatchObject({ host: 'cluster', name: 'preflight', status: 'failed' });
    expect(r.steps[0]!.message).toContain('node2 (host node2): package ipset missing');
    const partial = inventory().filter((h) => h.name !== 'node3');
    const r2 = await run({ modeOf, inventoryHosts: partial, targets: partial });
    expect(r2.steps[0]!.message).toMatch(/node3 \(10.0.0.13\); add it/);
    expect(writes()).toEqual([]);
  });

  test('failure mid-way: node2 crash-loops -> stop, ConfigMap restored, node1 back on iptables (verified), node3 untouched', async () => {
    const { modeOf } = await setup({ crash: (n, mode) => (n === 'node2' && mode === 'ipvs' ? IPVS_IPSET_MISSING : undefined) });
    const original = configConf();
    const { outcome, steps } = await run({ modeOf });
    expect(outcome.ok).toBe(false);
    expect(outcome.rolledBack).toBe(true);
    const failed = steps.find((s) => s.status === 'failed')!;
    expect(failed.host).toBe('node2');
    expect(failed.message).toMatch(/CrashLoopBackOff/);
    expect(failed.message).toContain("can't use the IPVS proxier: error getting ipset version");
    expect(configConf()).toBe(original);
    expect(modeOf('node1')).toBe('iptables');
    expect(modeOf('node2')).toBe('iptables');
    expect(steps.filter((s) => s.name === 'rollback').map((s) => [s.host, s.status])).toEqual([
      ['cluster', 'changed'],
      ['node2', 'changed'],
      ['node1', 'changed'],
    ]);
    expect(writes().filter((r) => r.method === 'DELETE' && r.path.includes('pods')).length).toBe(4); // node1, node2, then back: node2, node1
    expect(maxUnavailable()).toBe(1);
  });

  test('--no-rollback: the run stops at the failed node and leaves the ConfigMap and the switched node as they are', async () => {
    const { modeOf } = await setup({ crash: (n, mode) => (n === 'node2' && mode === 'ipvs' ? IPVS_IPSET_MISSING : undefined) });
    const { outcome, steps } = await run({ modeOf, rollback: false });
    expect(outcome.ok).toBe(false);
    expect(outcome.rolledBack).toBe(false);
    expect(configConf()).toMatch(/^mode: "ipvs"$/m);
    expect(modeOf('node1')).toBe('ipvs');
    const rb = steps.find((s) => s.name === 'rollback')!;
    expect(rb).toMatchObject({ host: 'cluster', status: 'skipped' });
    expect(rb.message).toMatch(/--no-rollback: the ConfigMap stays changed \(backup: .*\); rerun with --mode iptables to go back/);
    expect(steps.some((s) => s.host === 'node3')).toBe(false);
  });

  test('probes: default/kubernetes is probed before and after each switch, with latencies, in the step and the report', async () => {
    const { modeOf } = await setup();
    const { outcome, steps } = await run({ modeOf });
    expect(outcome.ok).toBe(true);
    const s1 = steps.find((s) => s.host === 'node1' && s.name === 'kube-proxy')!;
    expect(s1.probes).toEqual([
      { service: 'default/kubernetes', via: 'ClusterIP', address: '10.96.0.1:443', before: { ok: true, ms: 3, detail: 'TLS ok, HTTP 403' }, after: { ok: true, ms: 3, detail: 'TLS ok, HTTP 403' } },
    ]);
    expect(s1.message).toMatch(/probes: default\/kubernetes ClusterIP 10.96.0.1:443: before ok 3ms, after ok 3ms/);
  });

  test('a Service that answered before and not after the switch fails the node and rolls back, naming the Service and the node', async () => {
    const { modeOf } = await setup();
    // node2's dataplane drops Service traffic once it runs ipvs
    const { outcome, steps } = await run({ modeOf, answers: (node, mode) => !(node === 'node2' && mode === 'ipvs') });
    expect(outcome.ok).toBe(false);
    expect(outcome.rolledBack).toBe(true);
    const failed = steps.find((s) => s.status === 'failed')!;
    expect(failed.host).toBe('node2');
    expect(failed.message).toMatch(/Service default\/kubernetes no longer answers through node2 \(default\/kubernetes ClusterIP 10.96.0.1:443: before ok in 3ms, after: curl: \(28\) Connection timed out\)/);
    expect(modeOf('node1')).toBe('iptables');
    expect(modeOf('node2')).toBe('iptables');
    expect(configConf()).toMatch(/^mode: ""$/m);
  });

  test('a Service already failing before the switch is reported, not blamed, and does not stop the run', async () => {
    const { modeOf } = await setup();
    const { outcome, steps } = await run({ modeOf, answers: (node) => node !== 'node3' });
    expect(outcome.ok).toBe(true);
    const s3 = steps.find((s) => s.host === 'node3' && s.name === 'kube-proxy')!;
    expect(s3.status).toBe('changed');
    expect(s3.message).toMatch(/already failing before the switch \(not blamed on it\): default\/kubernetes ClusterIP 10.96.0.1:443/);
  });

  test('a second run while the first holds the Lease refuses, naming the holder and the expiry; nothing is written', async () => {
    const { modeOf } = await setup();
    const kube = new KubeClient(loadKubeConfig({ kubeconfig: server!.kubeconfigPath }));
    const first = await acquireLock(kube, 'kube-system', 'alice@laptop pid 42');
    const before = writes().length;
    const { outcome, steps } = await run({ modeOf });
    expect(outcome.ok).toBe(false);
    const lock = steps.find((s) => s.name === 'lock')!;
    expect(lock.status).toBe('failed');
    expect(lock.message).toMatch(/another run holds the lock: Lease kube-system\/kube-proxy-mode is held by alice@laptop pid 42 since \S+, until \S+ unless renewed/);
    expect(writes().length).toBe(before); // no ConfigMap write, no DELETE
    expect(configConf()).toMatch(/^mode: ""$/m);
    // a dry run only warns
    const dry = await run({ modeOf, dryRun: true });
    expect(dry.lines.join('\n')).toMatch(/warning: another run holds the lock.*\(a real run would stop here\)/);
    await first.release();
    expect(server!.store.get('leases', 'kube-system', 'kube-proxy-mode')).toBeUndefined();
    const after = await run({ modeOf });
    expect(after.outcome.ok, JSON.stringify(after.steps, null, 1)).toBe(true);
    // the run took the lease and gave it back
    expect(server!.requests.filter((r) => r.path.includes('/leases')).map((r) => r.method)).toEqual(expect.arrayContaining(['POST', 'DELETE']));
    expect(server!.store.get('leases', 'kube-system', 'kube-proxy-mode')).toBeUndefined();
  });

  test('an expired Lease (a run that died) is taken over', async () => {
    const { modeOf } = await setup();
    const old = new Date(Date.now() - 10 * 60_000).toISOString();
    server!.store.create('leases', { apiVersion: 'coordination.k8s.io/v1', kind: 'Lease', metadata: { name: 'kube-proxy-mode', namespace: 'kube-system' }, spec: { holderIdentity: 'bob@ci pid 7', leaseDurationSeconds: 60, acquireTime: old, renewTime: old } } as never);
    const { outcome, steps } = await run({ modeOf });
    expect(outcome.ok, JSON.stringify(steps, null, 1)).toBe(true);
  });

  test('SIGTERM while the ConfigMap write is in flight: the write completes or not at all, no pod is touched, and a rerun finishes the job', async () => {
    const { modeOf, runtime } = await setup();
    const original = configConf();
    const CM_PATH = '/api/v1/namespaces/kube-system/configmaps/kube-proxy';
    // the write takes 400 ms on the server; the signal arrives as soon as the request is there
    server!.faults.delay(400, { method: 'PUT', path: CM_PATH, times: 1 });
    let signal: NodeJS.Signals | undefined;
    const watcher = setInterval(() => {
      if (server!.requests.some((q) => q.method === 'PUT' && q.path === CM_PATH)) signal = 'SIGTERM';
    }, 5);
    const interrupt = { get signal() { return signal; }, get requested() { return signal !== undefined; }, dispose() {} };
    let r;
    try {
      r = await run({ modeOf, interrupt });
    } finally {
      clearInterval(watcher);
    }
    expect(signal).toBe('SIGTERM');
    expect(r.outcome).toMatchObject({ ok: false, interrupted: true });
    // never a third state: the original, or the new one written whole
    const now = configConf();
    expect([original, original.replace('mode: ""', 'mode: "ipvs"').replace('scheduler: ""', 'scheduler: "rr"')]).toContain(now);
    expect(now).toMatch(/^mode: "ipvs"$/m);
    // no kube-proxy was recycled, the lock is released, and the message says where things stand
    expect(writes().filter((w) => w.method === 'DELETE')).toEqual([]);
    expect(runtime.starts.filter((x) => x.mode === 'ipvs')).toEqual([]);
    expect(server!.store.get('leases', 'kube-system', 'kube-proxy-mode')).toBeUndefined();
    const stop = r.steps.find((s) => s.name === 'interrupted')!;
    expect(stop.message, JSON.stringify(r.steps, null, 1)).toMatch(/SIGTERM: stopped after 0 of 3 nodes.*The ConfigMap says ipvs\. Done: none; not yet: node1, node2, node3\. To finish: run the same command again\. To go back: the same command with --mode iptables/);

    const again = await run({ modeOf });
    expect(again.outcome.ok).toBe(true);
    expect(again.steps.filter((s) => s.name === 'kube-proxy').map((s) => s.status)).toEqual(['changed', 'changed', 'changed']);
  });

  test('SIGINT between two nodes: the recycle in progress finishes, no further node is touched, the ConfigMap is the new one, and a rerun finishes the job', async () => {
    const { modeOf, runtime } = await setup();
    let signal: NodeJS.Signals | undefined;
    const steps2: StepResult[] = [];
    const interrupt = { get signal() { return signal; }, get requested() { return signal !== undefined; }, dispose() {} };
    const { outcome } = await run({
      modeOf,
      interrupt,
      emit: (r) => {
        // the signal arrives while node1's step is being reported, i.e. right after its recycle
        if (r.name === 'kube-proxy' && r.host === 'node1') signal = 'SIGINT';
        steps2.push(r);
      },
    });
    expect(outcome).toMatchObject({ ok: false, interrupted: true, rolledBack: false });
    const stop = steps2.find((s) => s.name === 'interrupted')!;
    expect(stop.message).toMatch(/SIGINT: stopped after 1 of 3 nodes, each verified.*The ConfigMap says ipvs\. Done: node1; not yet: node2, node3\. To finish: run the same command again\. To go back: the same command with --mode iptables/);
    expect(configConf()).toMatch(/^mode: "ipvs"$/m);
    expect(runtime.starts.filter((x) => x.mode === 'ipvs').map((x) => x.node)).toEqual(['node1']);
    expect(maxUnavailable()).toBe(1);
    expect(server!.store.get('leases', 'kube-system', 'kube-proxy-mode')).toBeUndefined();

    const again = await run({ modeOf });
    expect(again.outcome.ok).toBe(true);
    expect(again.steps.filter((s) => s.name === 'kube-proxy').map((s) => [s.host, s.status])).toEqual([
      ['node1', 'ok'],
      ['node2', 'changed'],
      ['node3', 'changed'],
    ]);
  });

  test('SIGINT before the ConfigMap write: nothing in the cluster changes', async () => {
    const { modeOf } = await setup();
    const interrupt = { signal: 'SIGTERM' as NodeJS.Signals, requested: true, dispose() {} };
    const { outcome, steps } = await run({ modeOf, interrupt });
    expect(outcome.ok).toBe(false);
    expect(steps.find((s) => s.name === 'interrupted')!.message).toMatch(/SIGTERM: stopped before any change to the cluster/);
    expect(writes()).toEqual([]);
  });

  describe('API server faults', () => {
    const CM = '/api/v1/namespaces/kube-system/configmaps/kube-proxy';
    const fast = { attempts: 4, baseDelayMs: 50, timeoutMs: 400 };

    test('5xx answers are retried with backoff and the run goes on', async () => {
      const { modeOf } = await setup();
      server!.faults.failNext(500, { method: 'GET', path: CM, times: 2 });
      server!.faults.failNext(503, { method: 'PUT', path: CM, times: 1 });
      const { outcome, steps } = await run({ modeOf, apiRetry: fast });
      expect(outcome.ok, JSON.stringify(steps, null, 1)).toBe(true);
      expect(server!.requests.filter((r) => r.fault).map((r) => r.fault)).toEqual(['status 500', 'status 500', 'status 503']);
      expect(configConf()).toMatch(/^mode: "ipvs"$/m);
    });

    test('an API that keeps failing: bounded retries, then a clean stop naming the object; nothing changed', async () => {
      const { modeOf } = await setup();
      server!.faults.failNext(500, { method: 'PUT', path: CM, times: Infinity });
      const { outcome, steps } = await run({ modeOf, apiRetry: fast });
      expect(outcome.ok).toBe(false);
      expect(steps.find((s) => s.name === 'configmap')).toMatchObject({ status: 'failed', message: expect.stringMatching(/^ConfigMap kube-system\/kube-proxy: 500/) });
      expect(server!.requests.filter((r) => r.method === 'PUT' && r.path === CM)).toHaveLength(4);
      expect(configConf()).toMatch(/^mode: ""$/m);
      expect(writes().filter((r) => r.method === 'DELETE')).toEqual([]);
    });

    test('requests that hang: each times out, bounded, then a clean stop before any change', async () => {
      const { modeOf } = await setup();
      server!.faults.delay(3000, { method: 'GET', path: '/apis/apps/v1/namespaces/kube-system/daemonsets/kube-proxy', times: Infinity });
      const { outcome, steps } = await run({ modeOf, apiRetry: fast });
      expect(outcome.ok).toBe(false);
      expect(steps.find((s) => s.name === 'preflight')).toMatchObject({ status: 'failed', message: 'DaemonSet kube-system/kube-proxy: request timed out after 0.4s' });
      expect(writes()).toEqual([]);
    });

    test('a 409 storm: the ConfigMap is re-read and the edit re-applied a bounded number of times, then nothing is written', async () => {
      const { modeOf } = await setup();
      server!.faults.failNext(409, { method: 'PUT', path: CM, times: Infinity, reason: 'Conflict', message: 'Operation cannot be fulfilled on configmaps "kube-proxy": the object has been modified; please apply your changes to the latest version and try again' });
      const { outcome, steps } = await run({ modeOf, apiRetry: fast });
      expect(outcome.ok).toBe(false);
      expect(steps.find((s) => s.name === 'configmap')!.message).toMatch(/kept changing under us \(6 conflicts in a row\); nothing was written/);
      expect(configConf()).toMatch(/^mode: ""$/m);
      expect(writes().filter((r) => r.method === 'DELETE')).toEqual([]);
    });

    test('watches that break: the wait re-lists and the run completes', async () => {
      const { modeOf } = await setup();
      for (let i = 0; i < 6; i++) server!.faults.breakNextWatch({ path: '/api/v1/namespaces/kube-system/pods' });
      const { outcome, steps } = await run({ modeOf, apiRetry: fast });
      expect(outcome.ok, JSON.stringify(steps, null, 1)).toBe(true);
      const lists = server!.requests.filter((r) => r.method === 'GET' && r.path === '/api/v1/namespaces/kube-system/pods' && !r.watch);
      expect(lists.length).toBeGreaterThan(6); // one list per broken watch, at least
    });

    test('a pod that never becomes Ready: the deadline fails the node, the ConfigMap is restored, the switched nodes go back', async () => {
      const { modeOf } = await setup();
      server!.faults.neverReady('node2');
      const steps: StepResult[] = [];
      const { outcome } = await run({
        modeOf,
        podTimeoutMs: 2000,
        emit: (r) => {
          steps.push(r);
          // so that going back can work: the node's pods start again
          if (r.host === 'node2' && r.name === 'kube-proxy') server!.faults.readyAgain('node2');
        },
      });
      expect(outcome).toMatchObject({ ok: false, rolledBack: true });
      expect(steps.find((s) => s.host === 'node2' && s.name === 'kube-proxy')!.message).toMatch(/timed out after 2s waiting for the new kube-proxy pod on node2 to become Ready/);
      expect(configConf()).toMatch(/^mode: ""$/m);
      expect(steps.filter((s) => s.name === 'rollback' && s.host !== 'cluster').map((s) => [s.host, s.status])).toEqual([
        ['node2', 'changed'],
        ['node1', 'changed'],
      ]);
      expect(maxUnavailable()).toBe(1);
    });
  });

  test('409: a concurrent ConfigMap change during the run is merged, not overwritten', async () => {
    const { modeOf } = await setup();
    // Someone else edits the ConfigMap between our read and our write: our PUT is held back a moment,
    // and the edit lands as soon as our second read (the one the write is based on) has been answered.
    const CM = '/api/v1/namespaces/kube-system/configmaps/kube-proxy';
    server!.faults.delay(400, { method: 'PUT', path: CM });
    let edited = false;
    const poll = setInterval(() => {
      if (edited || server!.requests.filter((r) => r.method === 'GET' && r.path === CM).length < 2) return;
      edited = true;
      server!.store.mutate('configmaps', 'kube-system', 'kube-proxy', (cm) => {
        const data = (cm as unknown as { data: Record<string, string> }).data;
        data['config.conf'] = data['config.conf']!.replace(/^(\s*)(syncPeriod: .*)$/m, '$1$2 # edited by someone else');
      });
    }, 5);
    const { outcome, steps } = await run({ modeOf });
    expect(outcome.ok, JSON.stringify(steps, null, 1)).toBe(true);
    expect(steps.find((s) => s.name === 'configmap')!.message).toMatch(/merged with 1 concurrent change/);
    clearInterval(poll);
    expect(edited).toBe(true);
    expect(configConf()).toContain('# edited by someone else');
    expect(configConf()).toMatch(/^mode: "ipvs"$/m);
  });
});
