import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { labSupported, startLab, type Lab } from './lab.ts';
import { runProvision, writeLabInventory } from './helpers.ts';

// The concurrency test: 50 hosts, 10 at a time, all converge; a rerun changes nothing anywhere.

const support = labSupported();
let lab: Lab;

beforeAll(async () => {
  if (support.ok) lab = await startLab({ hosts: 50, kmodShim: true, id: 's' });
});
afterAll(async () => {
  await lab?.down();
});

describe.skipIf(!support.ok)('50 lab hosts with --forks 10', () => {
  test('all converge, then a rerun changes nothing', async () => {
    const inv = writeLabInventory(lab, { vars: { kpm_connect_timeout: 20 } });
    const first = await runProvision(inv, { forks: 10 });
    expect(first.code, first.out.split('\n').filter((l) => /failed|unreachable/.test(l)).slice(0, 5).join('\n')).toBe(0);
    expect(first.report.summary).toMatchObject({ hosts: 50, changed: 50, failed: 0, unreachable: 0 });
    for (const h of Object.values(first.report.hosts)) {
      expect(h.steps.find((s) => s.name === 'verify')!.status).toBe('ok');
      expect([h.sshExecs, h.sshRoundTrips]).toEqual([1, 2]);
    }
    const again = await runProvision(inv, { forks: 10 });
    expect(again.code).toBe(0);
    expect(again.report.summary).toMatchObject({ hosts: 50, ok: 50, changed: 0 });
    expect(Object.values(again.report.hosts).every((h) => h.sshExecs === 1 && h.sshRoundTrips === 1)).toBe(true);
  });
});
