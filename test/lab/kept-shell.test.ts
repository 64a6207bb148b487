import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { loadInventory } from '../../tasks/inventory/load.ts';
import { CommandTimeoutError, RemoteSession } from '../../tasks/remote/ssh.ts';
import { writeLabInventory } from './helpers.ts';
import { labSupported, startLab, type Lab } from './lab.ts';

// The bash kept on a node for several scripts in one exec (RemoteSession.shell), over real SSH to a lab
// host: each script's output, error output and exit code come back exactly as its own exec would give
// them, whatever the output holds.

const support = labSupported();
let lab: Lab;
let session: RemoteSession;

beforeAll(async () => {
  if (!support.ok) return;
  lab = await startLab({ hosts: 1, id: 'ks' });
  const inv = await loadInventory(writeLabInventory(lab));
  session = await RemoteSession.open(inv.hosts[0]!, { acceptNewHostKeys: false });
});
afterAll(async () => {
  session?.close();
  await lab?.down();
});

describe.skipIf(!support.ok)('a bash kept on the node', () => {
  test('runs several scripts in one exec, each with its own output, error output and exit code', async () => {
    const execs = session.execs;
    const trips = session.roundTrips;
    const shell = session.shell();
    // output that ends without a line break, looks like the framing, or spans many reads (multi-byte
    // characters across chunk boundaries)
    const big = 'ü✓'.repeat(40_000);
    const scripts: [string, { stdout: string; stderr: string; code: number }][] = [
      [`printf 'one\\ntwo'; printf 'warn' >&2`, { stdout: 'one\ntwo', stderr: 'warn', code: 0 }],
      [`echo '@@kpm:ran 0123 0'; echo '@@kpm:run 5'; echo; exit 7`, { stdout: '@@kpm:ran 0123 0\n@@kpm:run 5\n\n', stderr: '', code: 7 }],
      // the script's stdin is empty, not the frames that follow; a variable set here is gone next time
      [`cat; read -r x; echo "[$x]"; kpm_left=1; printf '%s' '${big}'`, { stdout: `[]\n${big}`, stderr: '', code: 0 }],
      [`echo "[\${kpm_left-}]"; trap 'echo bye' EXIT; set -u; false`, { stdout: '[]\nbye\n', stderr: '', code: 1 }],
    ];
    for (const [script, want] of scripts) {
      const r = await shell.run(script);
      expect({ stdout: r.stdout, stderr: r.stderr, code: r.code }, script.slice(0, 60)).toEqual(want);
    }
    expect(session.execs - execs).toBe(1);
    expect(session.roundTrips - trips).toBe(scripts.length);
    shell.close();
    await expect(shell.run('true')).rejects.toThrow(/closed/);
  });

  test('ends with its stdin: no bash is left on the node', async () => {
    const shell = session.shell();
    expect((await shell.run('echo $$')).code).toBe(0);
    shell.close();
    let left = '';
    for (let i = 0; i < 50; i++) {
      left = (await session.run(`pgrep -f 'kpm[_]re=' || true`)).stdout.trim();
      if (left === '') break;
      await new Promise((r) => setTimeout(r, 100));
    }
    expect(left).toBe('');
  });

  test('a script over its time limit: the run fails with a timeout, and the shell runs nothing more', async () => {
    const shell = session.shell();
    expect((await shell.run('echo ok')).stdout).toBe('ok\n');
    await expect(shell.run('sleep 20', { timeoutMs: 1000 })).rejects.toBeInstanceOf(CommandTimeoutError);
    await expect(shell.run('echo again')).rejects.toBeInstanceOf(CommandTimeoutError);
    // the connection itself is still usable
    expect((await session.run('echo still')).stdout).toBe('still\n');
  });
});
