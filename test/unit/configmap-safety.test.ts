import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { V1ConfigMap } from '@kubernetes/client-node';
import { afterAll, afterEach, describe, expect, test } from 'vitest';
import { writeBackup } from '../../tasks/cluster/configmap-store.ts';
import { runClusterPhase } from '../../tasks/cluster/phase.ts';
import { provision } from '../../tasks/commands/provision.ts';
import { parseInventoryText } from '../../tasks/inventory/load.ts';
import type { Host } from '../../tasks/inventory/types.ts';
import type { StepResult } from '../../tasks/run/results.ts';
import { fakeNodeSessions, phaseOptions } from './cluster-phase-support.ts';
import { kubeadmProxyConfig, memoryRuntime, startTestApiServer, type TestApiServer } from '../apiserver/server.ts';

// kube-proxy's ConfigMap as the tool finds it, when it is not what it should be: the run refuses before
// anything in the cluster is written, and writes no backup. And when it does change the ConfigMap, the
// backup of the original is the user's alone (0600) and is never written through something already there.

const NODES = [
  { name: 'node1', internalIP: '10.0.0.11' },
  { name: 'node2', internalIP: '10.0.0.12' },
];
const dirs: string[] = [];
const tempDir = (p: string) => {
  const d = mkdtempSync(join(tmpdir(), p));
  dirs.push(d);
  return d;
};
afterAll(() => {
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

let server: TestApiServer | undefined;
afterEach(async () => {
  await server?.close();
  server = undefined;
});

const CM = ['configmaps', 'kube-system', 'kube-proxy'] as const;
// The run's own Lease (its lock, taken and given back) is bookkeeping, not a change to the cluster.
const writes = () => server!.requests.filter((r) => ['PUT', 'PATCH', 'POST', 'DELETE'].includes(r.method) && !r.path.includes('/leases'));
const configMap = () => JSON.stringify(server!.store.get(...CM) ?? null);

function inventoryFile(): string {
  const dir = tempDir('kpm-cm-inv-');
  const file = join(dir, 'hosts.yaml');
  writeFileSync(file, `all:\n  vars:\n    ansible_user: root\n  hosts:\n${NODES.map((n) => `    ${n.name}: {ansible_host: ${n.internalIP}}\n`).join('')}`);
  return file;
}

const HEAD = 'apiVersion: kubeproxy.config.k8s.io/v1alpha1\nkind: KubeProxyConfiguration\n';

const BROKEN: Array<{ name: string; configConf?: string; change?: (s: TestApiServer) => void; message: RegExp }> = [
  { name: 'malformed YAML', configConf: `${HEAD}mode: [ipvs\nipvs:\n  scheduler: rr\n`, message: /config\.conf:\d+(:\d+)?: malformed YAML/ },
  { name: 'a KubeletConfiguration', configConf: 'apiVersion: kubelet.config.k8s.io/v1beta1\nkind: KubeletConfiguration\n', message: /config\.conf:2: kind: expected KubeProxyConfiguration, got "KubeletConfiguration"/ },
  { name: 'a list', configConf: '- mode: ipvs\n', message: /config\.conf:1: expected a KubeProxyConfiguration map, got a list/ },
  { name: 'empty', configConf: '', message: /config\.conf: empty; expected a KubeProxyConfiguration/ },
  { name: 'a wrong type', configConf: `${HEAD}mode: ""\nipvs:\n  strictARP: "maybe"\n`, message: /config\.conf:5: ipvs\.strictARP: expected true or false/ },
  {
    name: 'no config.conf key',
    change: (s) => s.store.mutate(...CM, (o) => void delete (o as unknown as { data: Record<string, string> }).data['config.conf']),
    message: /ConfigMap kube-system\/kube-proxy has no key config\.conf: refusing to guess kube-proxy's configuration/,
  },
  {
    name: 'no data at all',
    change: (s) => s.store.mutate(...CM, (o) => void delete (o as unknown as { data?: unknown }).data),
    message: /ConfigMap kube-system\/kube-proxy has no key config\.conf/,
  },
  { name: 'no ConfigMap', change: (s) => void s.store.remove(...CM), message: /kube-proxy.*not found|not found.*kube-proxy/i },
];

describe('a broken kube-proxy ConfigMap: a clear refusal, nothing written', () => {
  for (const dryRun of [false, true]) {
    test.each(BROKEN.map((b) => [b.name, b] as const))(`%s${dryRun ? ' (dry run)' : ''}`, async (_name, b) => {
      server = await startTestApiServer({ nodes: NODES, ...(b.configConf !== undefined ? { configConf: b.configConf } : {}) });
      b.change?.(server);
      const before = configMap();
      const backupDir = tempDir('kpm-cm-bk-');
      const runDir = tempDir('kpm-cm-run-');
      const report = join(runDir, 'report.json');
      const out: string[] = [];
      const err: string[] = [];
      const code = await provision({
        inventory: inventoryFile(),
        dryRun,
        tags: ['cluster'],
        acceptNewHostKeys: false,
        showDiffs: false,
        plain: true,
        report,
        retryFile: join(runDir, 'hosts.retry'),
        cluster: { kubeconfig: server.kubeconfigPath, backupDir, podTimeoutS: 10 },
        out: (l) => out.push(l),
        err: (l) => err.push(l),
      });
      expect(code, out.join('\n')).toBe(2);
      const rep = JSON.parse(readFileSync(report, 'utf8')) as { hosts: Record<string, { status: string; steps: StepResult[] }> };
      const preflight = rep.hosts['cluster']!.steps.find((s) => s.name === 'preflight')!;
      expect(preflight.status).toBe('failed');
      expect(preflight.message).toMatch(b.message);
      expect(out.join('\n')).toMatch(/cluster\s+\|\s+preflight\s+\|\s+failed/);
      expect(out.join('\n') + err.join('\n')).not.toMatch(/\n\s+at /);
      // nothing written: no request that changes anything, the ConfigMap as it was, no backup
      expect(writes()).toEqual([]);
      expect(configMap()).toBe(before);
      expect(readdirSync(backupDir)).toEqual([]);
      // and no node was touched: no pod deleted
      expect(server.requests.some((r) => r.method === 'DELETE' && r.path.includes('/pods'))).toBe(false);
    });
  }
});

describe('the ConfigMap backup', () => {
  const cm: V1ConfigMap = { metadata: { name: 'kube-proxy', namespace: 'kube-system', resourceVersion: '42' }, data: { 'config.conf': `${HEAD}mode: ""\n` } };

  test('is written 0600 whatever the umask', () => {
    const dir = tempDir('kpm-bk-');
    let old: number | undefined;
    try {
      old = process.umask(0);
    } catch {
      /* a worker thread cannot change the umask: the default one is tested */
    }
    try {
      const p = writeBackup(dir, cm, new Date('2025-01-02T03:04:05.678Z'));
      expect(statSync(p).mode & 0o777).toBe(0o600);
      expect(readFileSync(p, 'utf8')).toContain('config.conf');
    } finally {
      if (old !== undefined) process.umask(old);
    }
  });

  test('is never written through a file or a link already at its name', () => {
    const dir = tempDir('kpm-bk-');
    const when = new Date('2025-01-02T03:04:05.678Z');
    const name = join(dir, 'kube-proxy-configmap-backup-2025-01-02T03-04-05-678Z.yaml');
    const elsewhere = join(dir, 'world-readable');
    writeFileSync(elsewhere, 'untouched\n', { mode: 0o644 });
    symlinkSync(elsewhere, name);
    expect(() => writeBackup(dir, cm, when)).toThrow(/cannot write the ConfigMap backup .*kube-proxy-configmap-backup-2025-01-02T03-04-05-678Z\.yaml \(something is already there\); the ConfigMap was not changed/);
    expect(readFileSync(elsewhere, 'utf8')).toBe('untouched\n');
    rmSync(name);
    writeFileSync(name, 'old\n', { mode: 0o644 });
    expect(() => writeBackup(dir, cm, when)).toThrow(/something is already there/);
    expect(readFileSync(name, 'utf8')).toBe('old\n');
  });

  test('that cannot be written: the configmap step fails naming the file, nothing is written, the lock is released', async () => {
    server = await startTestApiServer({ nodes: NODES, configConf: kubeadmProxyConfig() });
    const before = configMap();
    // a backup directory that is a file: nothing can be created in it
    const backupDir = join(tempDir('kpm-cm-run-'), 'not-a-directory');
    writeFileSync(backupDir, '');
    const hosts: Host[] = parseInventoryText(readFileSync(inventoryFile(), 'utf8'), 'hosts.yaml').hosts;
    const outcome = await runClusterPhase(phaseOptions({ kubeconfig: server.kubeconfigPath, hosts, backupDir, sessions: fakeNodeSessions(() => 'iptables').sessions }));
    // a failed step on the cluster row, as any refusal (provision then exits 2), not an exception
    expect(outcome.ok).toBe(false);
    const step = outcome.steps.find((x) => x.name === 'configmap');
    expect(step?.status, JSON.stringify(outcome.steps)).toBe('failed');
    expect(step!.message).toMatch(/cannot write the ConfigMap backup .*not-a-directory.*the ConfigMap was not changed/);
    expect(writes()).toEqual([]);
    expect(configMap()).toBe(before);
    expect(server.store.get('leases', 'kube-system', 'kube-proxy-mode')).toBeUndefined();
  });

  test('taken by a real change of the ConfigMap is 0600, and holds the original', async () => {
    const runtime = memoryRuntime();
    server = await startTestApiServer({ nodes: NODES, runtime, configConf: kubeadmProxyConfig(), recreateDelayMs: 30, readyDelayMs: 20 });
    const original = (server.store.get(...CM) as unknown as { data: Record<string, string> }).data['config.conf']!;
    const modeOf = (node: string) => {
      const last = [...runtime.starts].reverse().find((s) => s.node === node);
      return last ? (last.ready ? last.mode : null) : 'iptables';
    };
    const hosts: Host[] = parseInventoryText(readFileSync(inventoryFile(), 'utf8'), 'hosts.yaml').hosts;
    const backupDir = tempDir('kpm-bk-');
    const outcome = await runClusterPhase(phaseOptions({ kubeconfig: server.kubeconfigPath, hosts, backupDir, sessions: fakeNodeSessions(modeOf).sessions }));
    expect(outcome.ok, JSON.stringify(outcome.steps, null, 1)).toBe(true);
    expect(outcome.backup).toBeDefined();
    expect(existsSync(outcome.backup!)).toBe(true);
    expect(statSync(outcome.backup!).mode & 0o777).toBe(0o600);
    expect(readdirSync(backupDir)).toHaveLength(1);
    // the original config.conf, as it was read, before the change
    expect(readFileSync(outcome.backup!, 'utf8')).toContain('mode: ""');
    expect(original).toContain('mode: ""');
  });
});
