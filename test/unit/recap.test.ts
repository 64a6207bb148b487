import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, expect, test } from 'vitest';
import { exitCodeFor } from '../../tasks/commands/provision.ts';
import { formatRecap } from '../../tasks/run/recap.ts';
import { buildReport, writeRetryFile } from '../../tasks/run/report.ts';
import { hostStatusOf, type HostResult, type StepResult } from '../../tasks/run/results.ts';

const dir = mkdtempSync(join(tmpdir(), 'kpm-recap-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const step = (host: string, name: string, status: StepResult['status']): StepResult => ({ host, name, status, message: `${name} ${status}`, ms: 3 });
const host = (name: string, statuses: StepResult['status'][], over: Partial<HostResult> = {}): HostResult => {
  const steps = statuses.map((s, i) => step(name, `s${i}`, s));
  return { host: name, status: hostStatusOf(steps), steps, sshExecs: 2, ...over };
};

const results: HostResult[] = [
  host('node001', ['ok', 'changed', 'changed']),
  host('node002', ['ok', 'ok', 'ok'], { sshExecs: 1 }),
  host('node003', ['failed'], { status: 'unreachable', reason: 'cannot connect', sshExecs: 0 }),
  host('node004', ['ok', 'failed', 'skipped'], { reason: 's1: boom' }),
];

test('host status: failed and unreachable dominate, then changed; all skipped is skipped', () => {
  expect(results.map((r) => r.status)).toEqual(['changed', 'ok', 'unreachable', 'failed']);
  expect(hostStatusOf([step('h', 'a', 'skipped')])).toBe('skipped');
});

test('recap: Ansible layout, one line per host with its verdict, and a summary', () => {
  expect(formatRecap(results, { dryRun: false }).split('\n')).toEqual([
    'PLAY RECAP *********************************************************************',
    'node001                   : ok=1    changed=2    unreachable=0    failed=0    skipped=0    changed',
    'node002                   : ok=3    changed=0    unreachable=0    failed=0    skipped=0    converged: nothing to change',
    'node003                   : ok=0    changed=0    unreachable=1    failed=0    skipped=0    UNREACHABLE: cannot connect',
    'node004                   : ok=1    changed=0    unreachable=0    failed=1    skipped=1    FAILED: s1: boom',
    '',
    '4 hosts: 1 converged, 1 changed, 1 failed, 1 unreachable, 0 skipped',
  ]);
  expect(formatRecap(results.slice(0, 1), { dryRun: true })).toContain('would change (dry run: nothing was changed)');
});

test('exit codes follow ansible-playbook', () => {
  expect(exitCodeFor(results.slice(0, 2))).toBe(0);
  expect(exitCodeFor(results.slice(0, 3))).toBe(3);
  expect(exitCodeFor(results)).toBe(2);
});

test('report: the documented shape', () => {
  const r = buildReport(results, { command: 'provision', inventory: 'i.yaml', dryRun: false, startedAt: 't', durationMs: 5, tags: ['node'] }) as {
    hosts: Record<string, { status: string; steps: unknown[]; sshExecs: number }>;
    summary: Record<string, unknown>;
  };
  expect(r.hosts.node001).toEqual({
    status: 'changed',
    steps: [
      { name: 's0', status: 'ok', message: 's0 ok', ms: 3 },
      { name: 's1', status: 'changed', message: 's1 changed', ms: 3 },
      { name: 's2', status: 'changed', message: 's2 changed', ms: 3 },
    ],
    sshExecs: 2,
    // none counted apart: as many as the execs
    sshRoundTrips: 2,
  });
  expect(r.summary).toMatchObject({ hosts: 4, ok: 1, changed: 1, failed: 1, unreachable: 1, skipped: 0, dryRun: false });
});

test('retry file: failed and unreachable hosts, usable with --limit @file; removed when all succeed', () => {
  const f = join(dir, 'x.retry');
  expect(writeRetryFile(f, results)).toBe(f);
  const names = readFileSync(f, 'utf8').split('\n').filter((l) => l && !l.startsWith('#'));
  expect(names).toEqual(['node003', 'node004']);
  expect(writeRetryFile(f, results.slice(0, 2))).toBeNull();
  expect(existsSync(f)).toBe(false);
  // a file the tool did not write is never removed
  writeFileSync(f, 'node009\n');
  writeRetryFile(f, results.slice(0, 2));
  expect(readFileSync(f, 'utf8')).toBe('node009\n');
});

test('recap lists each Service probe per node with its latency before and after', () => {
  const r = host('node001', ['changed']);
  r.steps[0]!.probes = [{ service: 'default/kubernetes', via: 'ClusterIP', address: '10.96.0.1:443', before: { ok: true, ms: 4, detail: '' }, after: { ok: false, ms: 3001, detail: 'timed out' } }];
  expect(formatRecap([r], { dryRun: false }).split('\n').slice(-2)).toEqual([
    'SERVICE PROBES *****************************************************************',
    'node001                   : default/kubernetes ClusterIP 10.96.0.1:443  before ok 4ms  after FAILED 3001ms',
  ]);
});
