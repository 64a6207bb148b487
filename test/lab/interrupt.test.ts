import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { startTestApiServer, type TestApiServer } from '../apiserver/server.ts';
import { labKubeProxyRuntime } from './kube-proxy-fixture.ts';
import { labSupported, startLab, type Lab } from './lab.ts';
import { runProvision, tempDir, writeLabInventory } from './helpers.ts';

// SIGINT and SIGTERM sent to the real CLI process in the middle of a run: during the node phase and
// during the serial recycle. Each asserts the end state: nothing half-written on a host, the ConfigMap
// either the original or the new one, at most one kube-proxy unavailable, the lock given back, what
// was done and how to go on printed, and a rerun that finishes the job.

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '../..');
const TEMPLATES = join(ROOT, 'templates');
const support = labSupported();
let lab: Lab;
let api: TestApiServer;
let inv: string;
let names: string[];

beforeAll(async () => {
  if (!support.ok) return;
  lab = await startLab({ hosts: 3, kmodShim: true, id: 'y' });
  names = lab.hosts.map((h) => h.name);
  api = await startTestApiServer({
    nodes: lab.hosts.map((h) => ({ name: h.name, internalIP: h.address })),
    runtime: labKubeProxyRuntime(lab),
    recreateDelayMs: 300,
  });
  inv = writeLabInventory(lab, { vars: { kubeconfig: api.kubeconfigPath } });
});
afterAll(async () => {
  await api?.close();
  await lab?.down();
});

const configConf = () => (api.store.get('configmaps', 'kube-system', 'kube-proxy') as unknown as { data: Record<string, string> }).data['config.conf']!;
const maxUnavailable = () => Math.max(0, ...api.unavailableTimeline().map((p) => p.unavailable));

/** Run the CLI; send `signal` once a stdout line matches `when`. */
function runUntil(args: string[], when: RegExp, signal: NodeJS.Signals): Promise<{ code: number | null; out: string; err: string; sent: boolean }> {
  return new Promise((resolve) => {
    const child = spawn(join(ROOT, 'node_modules/.bin/tsx'), [join(ROOT, 'tasks/cli.ts'), ...args], {
      cwd: tempDir('kpm-int-'),
      env: { ...process.env, CI: 'true', NO_COLOR: '1' },
    });
    let out = '';
    let err = '';
    let sent = false;
    child.stdout.on('data', (d: Buffer) => {
      out += d.toString();
      if (!sent && when.test(out)) {
        sent = true;
        // tsx runs the tool in a child of its own and forwards the signal, as a shell's Ctrl-C reaches the process group
        child.kill(signal);
      }
    });
    child.stderr.on('data', (d: Buffer) => (err += d.toString()));
    child.on('close', (code) => resolve({ code, out, err, sent }));
  });
}

describe.skipIf(!support.ok)('SIGINT / SIGTERM in the middle of a run (real CLI process)', () => {
  test('during the node phase: each host is either untouched or fully prepared, never half; the cluster phase does not start; a rerun finishes', async () => {
    const backupDir = tempDir('kpm-bk-');
    const r = await runUntil(['provision', '-i', inv, '--backup-dir', backupDir, '--pod-timeout', '60'], /\| facts +\| ok/, 'SIGINT');
    expect(r.sent, r.out).toBe(true);
    expect(r.code, r.out + r.err).toBe(99);
    expect(r.err).toMatch(/SIGINT: finishing the step in progress on each node, then stopping/);
    expect(r.out).toMatch(/SIGINT: the cluster phase was not started \(nothing in the cluster was changed\)/);
    expect(r.out).toMatch(/interrupted by SIGINT: every step that started finished; run the same command again to finish/);
    expect(configConf()).toMatch(/^mode: ""$/m);
    expect(api.requests.filter((q) => q.method !== 'GET')).toEqual([]);
    const files = {
      '/etc/sysconfig/modules/ipvs.modules': readFileSync(join(TEMPLATES, 'ipvs.modules'), 'utf8'),
      '/etc/modules-load.d/ipvs.conf': readFileSync(join(TEMPLATES, 'ipvs.conf'), 'utf8'),
    };
    for (const h of names) {
      const left = await lab.exec(h, 'find /etc/sysconfig/modules /etc/modules-load.d -name ".*.kpm-*" 2>/dev/null; ls /tmp/kpm-apply.* 2>/dev/null; true');
      expect(left.stdout.trim(), `temporary files left on ${h}`).toBe('');
      for (const path of Object.keys(files)) {
        const c = await lab.exec(h, `cat ${path} 2>/dev/null`);
        // absent, or whole: the template rendered has the modules list; a cut file would lack its tail
        if (c.code === 0) expect(c.stdout, `${path} on ${h}`).toMatch(/nf_conntrack\n$/);
      }
    }
    const again = await runProvision(inv, { tags: ['node', 'cluster'], cluster: { backupDir, podTimeoutS: 60 } });
    expect(again.code, again.out).toBe(0);
    expect(configConf()).toMatch(/^mode: "ipvs"$/m);
  });

  test('during the recycle: the node in progress finishes, no other is touched, the ConfigMap is the new one, the lock is released; a rerun finishes', async () => {
    const prepared = await runProvision(inv, { tags: ['node'] });
    expect(prepared.code, prepared.out).toBe(0);
    // in iptables mode first, so there is a switch to interrupt
    const back = await runProvision(inv, { tags: ['cluster'], mode: 'iptables', cluster: { backupDir: tempDir('kpm-bk-'), podTimeoutS: 60 } });
    expect(back.code, back.out).toBe(0);
    const starts = api.requests.length;
    const r = await runUntil(['provision', '-i', inv, '-t', 'cluster', '--backup-dir', tempDir('kpm-bk-'), '--pod-timeout', '60'], new RegExp(`${names[0]} \\| kube-proxy +\\| changed`), 'SIGTERM');
    expect(r.sent, r.out).toBe(true);
    expect(r.code, r.out + r.err).toBe(99);
    // the signal reaches the tool while node001's line is read here: the node in progress then (node001,
    // or node002 if the tool had already moved on) finishes, and nothing after it starts
    const m = /cluster \| interrupted +\| failed +\| SIGTERM: stopped after ([12]) of 3 nodes, each verified; no node is left half-switched\. The ConfigMap says ipvs\. Done: ([^;]+); not yet: ([^.]+)\. To finish: run the same command again\. To go back: the same command with --mode iptables/.exec(r.out);
    expect(m, r.out).not.toBeNull();
    const done = Number(m![1]);
    expect(m![2]).toBe(names.slice(0, done).join(', '));
    expect(m![3]).toBe(names.slice(done).join(', '));
    expect(configConf()).toMatch(/^mode: "ipvs"$/m);
    const deletes = api.requests.slice(starts).filter((q) => q.method === 'DELETE' && q.path.includes('/pods/'));
    expect(deletes).toHaveLength(done);
    expect(maxUnavailable()).toBeLessThanOrEqual(1);
    expect(api.store.get('leases', 'kube-system', 'kube-proxy-mode')).toBeUndefined();
    const modes = await Promise.all(names.map(async (n) => (await lab.exec(n, 'curl -s --max-time 3 127.0.0.1:10249/proxyMode')).stdout.trim()));
    expect(modes).toEqual(names.map((_, i) => (i < done ? 'ipvs' : 'iptables')));
    expect(r.out).not.toMatch(/--limit @/); // the retry file names hosts; here no host failed

    const again = await runProvision(inv, { tags: ['cluster'], cluster: { backupDir: tempDir('kpm-bk-'), podTimeoutS: 60 } });
    expect(again.code, again.out).toBe(0);
    const after = await Promise.all(names.map(async (n) => (await lab.exec(n, 'curl -s --max-time 3 127.0.0.1:10249/proxyMode')).stdout.trim()));
    expect(after).toEqual(['ipvs', 'ipvs', 'ipvs']);
  });
});
