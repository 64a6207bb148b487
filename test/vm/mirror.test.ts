import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { runProvision, stepOf } from '../lab/helpers.ts';
import { DEFAULT_MODULES, installed, keepRun, lsmod, writeVmInventory } from './support.ts';
import { startVms, type VmCluster } from './vm.ts';

// The one test that needs the network: a fresh guest whose apt uses the Debian mirror this machine's
// apt uses, through QEMU's user network. Everything else in this tier installs from the repository the
// test run serves, so a flaky network costs this test only.

const GUEST = 'kpmvm-mirror';
const PACKAGES = ['ipvsadm', 'ipset', 'conntrack'];
let vms: VmCluster;

beforeAll(async () => {
  vms = await startVms([{ name: GUEST, apt: 'mirror' }]);
});
afterAll(async () => {
  await vms?.down();
});

describe('the real Debian mirror', () => {
  test("the tool installs ipvsadm, ipset and conntrack from the machine's Debian mirror through QEMU's user network", async () => {
    // unreachable mirror: fail at once with the reason, rather than wait out apt's timeouts
    const url = `${vms.image.mirror}/dists/${vms.image.suite}/InRelease`;
    const reach = await vms.exec(GUEST, `curl -sS -o /dev/null -w '%{http_code}' --max-time 30 ${url}`, { timeoutMs: 60_000 });
    if (reach.code !== 0 || reach.stdout.trim() !== '200') {
      throw new Error(
        `the Debian mirror is not reachable from the guest through QEMU's user network: GET ${url} gave ` +
          `curl exit ${reach.code}, HTTP ${reach.stdout.trim() || '-'} ${reach.stderr.trim()} (this test needs the network)`,
      );
    }
    expect(await vms.run(GUEST, 'cat /etc/apt/sources.list.d/*.list')).toContain(`deb ${vms.image.mirror} ${vms.image.suite} main`);
    expect(await installed(vms, GUEST, PACKAGES)).toEqual([]);

    const r = keepRun('mirror', await runProvision(writeVmInventory(vms)));
    expect(r.code, r.out).toBe(0);
    expect(stepOf(r, GUEST, 'packages')!.status).toBe('changed');
    expect(await installed(vms, GUEST, PACKAGES)).toEqual(PACKAGES);
    // the lists apt read are the mirror's; the test run's repository was never a source here
    const lists = await vms.run(GUEST, 'ls /var/lib/apt/lists/');
    expect(lists).toContain(`${new URL(vms.image.mirror).host}_`);
    expect(lists).not.toContain('10.0.2.2');
    const mods = await lsmod(vms, GUEST);
    for (const m of DEFAULT_MODULES) expect(mods.has(m)).toBe(true);
    expect(await vms.run(GUEST, 'ipvsadm -Ln')).toMatch(/^IP Virtual Server version/);
  });
});
