import { spawnSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { labSupported, startLab, type Lab } from './lab.ts';
import { tempDir, writeLabInventory } from './helpers.ts';

// The command line as users run it: `npm run provision -- …` (tsx tasks/cli.ts provision …), non-TTY output.

const support = labSupported();
const ROOT = process.cwd();
let lab: Lab;
beforeAll(async () => {
  if (support.ok) lab = await startLab({ hosts: 2, kmodShim: true, id: 'c' });
});
afterAll(async () => {
  await lab?.down();
});

function cli(args: string[], env: Record<string, string> = {}) {
  const cwd = tempDir('kpm-cli-');
  const r = spawnSync(join(ROOT, 'node_modules/.bin/tsx'), [join(ROOT, 'tasks/cli.ts'), ...args], {
    cwd,
    encoding: 'utf8',
    env: { ...process.env, CI: 'true', ...env },
    timeout: 120_000,
  });
  return { code: r.status, out: r.stdout, err: r.stderr, cwd };
}

describe.skipIf(!support.ok)('provision command line', () => {
  test('npm_config_dry_run=true (npm swallowed --dry-run) is a dry run: nothing changes', async () => {
    const inv = writeLabInventory(lab);
    const before = await lab.snapshot(lab.hosts[0]!.name);
    const r = cli(['provision', '-i', inv, '--tags', 'node'], { npm_config_dry_run: 'true' });
    expect(r.code, r.err).toBe(0);
    expect(r.out).toContain('DRY RUN');
    expect(await lab.snapshot(lab.hosts[0]!.name)).toEqual(before);
    // one line per event, each prefixed with the host
    const stepLines = r.out.split('\n').filter((l) => / \| (facts|preflight|packages|ipvs\.modules|modules-load\.d|modules|verify) +\| /.test(l));
    expect(stepLines).toHaveLength(2 * 7);
    for (const l of stepLines) expect(l).toMatch(/^node00[12] \| /);
  });

  test('--tags node runs the node phase; a real run and the rerun; the IPVS deprecation is said', async () => {
    const inv = writeLabInventory(lab);
    const first = cli(['provision', '--inventory', inv, '--tags', 'node', '--limit', 'node001']);
    expect(first.code, first.err).toBe(0);
    expect(first.out).toContain('deprecated upstream since Kubernetes 1.35');
    expect(first.out).toMatch(/node001\s+: ok=\d+\s+changed=4/);
    expect(first.out).not.toMatch(/^node002/m);
    const again = cli(['provision', '--inventory', inv, '-l', 'node001', '-t', 'node']);
    expect(again.out).toMatch(/node001\s+: ok=7\s+changed=0 .*converged: nothing to change/);
  });

  test('usage errors and bad inventories stop before any host is contacted', () => {
    // the cluster phase without a kubeconfig: a clear refusal before anything is changed
    const cluster = cli(['provision', '-i', writeLabInventory(lab), '--tags', 'cluster'], { KUBECONFIG: '/nonexistent/kubeconfig', HOME: tempDir('kpm-home-') });
    expect(cluster.code).toBe(2);
    expect(cluster.out).toMatch(/cluster \| preflight +\| failed +\| kubeconfig \/nonexistent\/kubeconfig does not exist|kubeconfig .*config does not exist/);
    const unknownTag = cli(['provision', '-i', writeLabInventory(lab), '--tags', 'nodes']);
    expect(unknownTag.code).toBe(5);
    expect(unknownTag.err).toContain("unknown tag 'nodes'");
    const dir = tempDir('kpm-bad-');
    const bad = join(dir, 'bad.yaml');
    writeFileSync(bad, 'all:\n  hosts:\n    node1:\n      ansible_host: 10.77.0.11\n      ansible_port: 70000\n');
    const r = cli(['provision', '-i', bad]);
    expect(r.code).toBe(4);
    expect(r.err).toContain(`${bad}:5:`);
    expect(r.err).toContain('ansible_port');
    expect(r.err).not.toMatch(/\n\s+at /); // no stack trace
    const noFile = cli(['provision', '-i', join(dir, 'missing.yaml')]);
    expect(noFile.code).toBe(4);
    expect(noFile.err).toContain('missing.yaml');
  });
});
