import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, expect, test } from 'vitest';
import { unifiedDiff } from '../../tasks/run/diff.ts';

// Checked against GNU diff -u on the same inputs (hunk headers and bodies; the file header lines differ).
const dir = mkdtempSync(join(tmpdir(), 'kpm-diff-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
function gnu(a: string, b: string): string {
  writeFileSync(join(dir, 'a'), a);
  writeFileSync(join(dir, 'b'), b);
  try {
    execFileSync('diff', ['-u', join(dir, 'a'), join(dir, 'b')], { encoding: 'utf8' });
    return '';
  } catch (e) {
    return ((e as { stdout: string }).stdout).split('\n').slice(2).join('\n');
  }
}
const body = (d: string) => d.split('\n').slice(2).join('\n');
const lines = (n: number, f = (i: number) => `line ${i}`) => Array.from({ length: n }, (_, i) => f(i + 1)).join('\n') + '\n';

const cases: [string, string, string][] = [
  ['one change', lines(12), lines(12, (i) => (i === 3 ? 'three' : `line ${i}`))],
  ['two hunks', lines(30), lines(30, (i) => (i === 2 || i === 25 ? `changed ${i}` : `line ${i}`))],
  ['merged hunks', lines(20), lines(20, (i) => (i === 5 || i === 10 ? `changed ${i}` : `line ${i}`))],
  ['append', lines(5), lines(8)],
  ['delete all but one', lines(6), 'line 3\n'],
  ['module list', 'modprobe -- ip_vs\nmodprobe -- ip_vs_rr\nmodprobe -- nf_conntrack_ipv4\n', 'modprobe -- ip_vs\nmodprobe -- ip_vs_rr\nmodprobe -- ip_vs_wrr\nmodprobe -- nf_conntrack\n'],
];

test.each(cases)('%s: same hunks as diff -u', (_name, a, b) => {
  expect(body(unifiedDiff('/etc/x', a, b))).toBe(gnu(a, b));
});

test('new file and equal content', () => {
  expect(unifiedDiff('/etc/x', null, 'a\nb\n')).toBe('--- /dev/null\n+++ /etc/x\n@@ -0,0 +1,2 @@\n+a\n+b\n');
  expect(unifiedDiff('/etc/x', 'same\n', 'same\n')).toBe('');
  expect(unifiedDiff('/etc/x', 'a', 'a\n')).toContain('newline at the end');
});
