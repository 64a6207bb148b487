import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { readTemplate, renderModuleTemplate } from '../../tasks/node/templates.ts';
import { labSupported, startLab, type Lab } from './lab.ts';
import { mustExec, runProvision, stepOf, writeLabInventory } from './helpers.ts';

// Faults in the node phase on real sshd hosts, each judged by the state it leaves: a host that loses
// power in the middle of a package install or of a file write (the lab host is stopped at that very
// moment), a broken package repository and a dpkg lock held by another run. The other nodes finish,
// nothing is left half-written, the failed node says why, and a rerun converges.

const support = labSupported();
const MODULES = ['ip_vs', 'ip_vs_rr', 'ip_vs_wrr', 'ip_vs_sh', 'nf_conntrack'];
const SCRIPT = '/etc/sysconfig/modules/ipvs.modules';
const CONF = '/etc/modules-load.d/ipvs.conf';
const PACKAGES = ['ipvsadm', 'ipset', 'conntrack'];

let lab: Lab;
let names: string[];

beforeAll(async () => {
  if (!support.ok) return;
  lab = await startLab({ hosts: 3, kmodShim: true, id: 'f' });
  names = lab.hosts.map((h) => h.name);
});
afterAll(async () => {
  await lab?.down();
});

const sh = (host: string, cmd: string) => mustExec(lab, host, cmd);

async function waitFor(what: string, check: () => Promise<boolean>, timeoutMs = 90_000): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

const installed = async (host: string) =>
  (await lab.exec(host, `for p in ${PACKAGES.join(' ')}; do dpkg-query -W -f='\${Status}\\n' "$p" 2>/dev/null | grep -q '^install ok installed$' && echo "$p"; done; true`)).stdout
    .split('\n')
    .filter(Boolean);
const exists = async (host: string, path: string) => (await lab.exec(host, `test -e ${path}`)).code === 0;
const strays = async (host: string) =>
  (await lab.exec(host, 'ls -A /etc/sysconfig/modules /etc/modules-load.d 2>/dev/null | grep -F .kpm- || true')).stdout.split('\n').filter(Boolean);

describe.skipIf(!support.ok)('node-phase faults on lab hosts', () => {
  test('power lost in the middle of a package install and in the middle of a file write: the others finish, nothing half-written, a rerun converges', async () => {
    const [installing, writing, healthy] = names as [string, string, string];
    // hold each host at the moment to cut: apt runs its pre-invoke hook before dpkg unpacks anything;
    // kpm_put flushes the complete temporary file (sync) before renaming it over the target
    await sh(installing, `echo 'DPkg::Pre-Invoke {"sleep 120";};' > /etc/apt/apt.conf.d/99kpm-test-slow`);
    await sh(writing, `printf '#!/bin/sh\\nsleep 120\\n' > /usr/local/bin/sync && chmod 755 /usr/local/bin/sync`);
    const inv = writeLabInventory(lab, { vars: { kpm_command_timeout: 200 } });

    const run = runProvision(inv);
    let midInstall = false;
    let midWrite = false;
    await Promise.all([
      waitFor('apt to reach its pre-invoke hook', async () => (midInstall = (await lab.exec(installing, 'pgrep -x sleep')).code === 0)).then(() => lab.stop(installing)),
      waitFor('the first file to be flushed under its temporary name', async () => (midWrite = (await lab.exec(writing, 'pgrep -x sleep')).code === 0)).then(() => lab.stop(writing)),
    ]);
    expect([midInstall, midWrite]).toEqual([true, true]);
    const r = await run;
    expect(r.code, r.out).not.toBe(0);
    // the healthy node finished regardless
    expect(r.report.hosts[healthy]!.status, r.out).toBe('changed');
    expect(stepOf(r, healthy, 'verify')!.status).toBe('ok');
    // each cut node says what happened and where
    for (const [host, step] of [
      [installing, 'packages'],
      [writing, 'ipvs.modules'],
    ] as const) {
      const h = r.report.hosts[host]!;
      expect(['failed', 'unreachable'], `${host}: ${JSON.stringify(h)}`).toContain(h.status);
      const failed = h.steps.find((s) => s.status === 'failed');
      expect(failed?.name, JSON.stringify(h.steps)).toBe(step);
      expect(failed!.message).toBe('the connection to the node was lost (the node may be partly changed; a rerun converges it)');
      expect(h.steps.filter((s) => s.name === 'verify' || s.name === 'modules').map((s) => s.status)).toEqual(['skipped', 'skipped']);
    }
    // what the node reported before the cut stands: the write host had its packages installed
    expect(stepOf(r, writing, 'packages')).toMatchObject({ status: 'changed', message: 'installed ipvsadm ipset conntrack' });

    await lab.start(installing, writing);
    // the install host: apt was stopped before dpkg ran, so no package and no file
    expect(await installed(installing)).toEqual([]);
    expect(await exists(installing, SCRIPT)).toBe(false);
    expect(await exists(installing, CONF)).toBe(false);
    // the write host: the packages are in, the target file was never half-written (it does not exist
    // yet) and only the complete temporary file is left, under a name nothing at boot reads
    expect(await installed(writing)).toEqual(PACKAGES);
    expect(await exists(writing, SCRIPT)).toBe(false);
    const left = await strays(writing);
    expect(left).toHaveLength(1);
    expect(left[0]).toMatch(/^\.ipvs\.modules\.kpm-[A-Za-z0-9]{6}$/);
    expect(await sh(writing, `cat /etc/sysconfig/modules/${left[0]}`)).toBe(renderModuleTemplate(readTemplate('ipvs.modules'), MODULES));

    await sh(installing, 'rm /etc/apt/apt.conf.d/99kpm-test-slow');
    await sh(writing, 'rm /usr/local/bin/sync');
    const again = await runProvision(inv);
    expect(again.code, again.out).toBe(0);
    expect(again.report.hosts[installing]!.status).toBe('changed');
    expect(again.report.hosts[writing]!.status).toBe('changed');
    expect(again.report.hosts[healthy]!.status).toBe('ok');
    expect(stepOf(again, writing, 'ipvs.modules')!.message).toMatch(
      new RegExp(`created ${SCRIPT}; removed the temporary file /etc/sysconfig/modules/${left[0]!.replace(/\./g, '\\.')} of a write that was cut off`),
    );
    for (const n of names) {
      expect(stepOf(again, n, 'verify')!.status, n).toBe('ok');
      expect(await strays(n)).toEqual([]);
      expect(await installed(n)).toEqual(PACKAGES);
    }
    const third = await runProvision(inv);
    expect(third.report.summary.changed, third.out).toBe(0);
  });

  test('a broken package repository: the node fails with apt\'s own last lines, nothing else is done on it; fixed, a rerun converges', async () => {
    const broken = names[0]!;
    await lab.reset(broken);
    await sh(broken, 'mv /opt/kpm-lab-repo /opt/kpm-lab-repo.off');
    const inv = writeLabInventory(lab, { hosts: [broken] });
    const r = await runProvision(inv);
    expect(r.code, r.out).toBe(2);
    const step = stepOf(r, broken, 'packages')!;
    expect(step.status).toBe('failed');
    expect(step.message).toMatch(/^apt could not install ipvsadm ipset conntrack: /);
    // apt's words, from the node: the repository that failed
    expect(step.message).toMatch(/kpm-lab-repo/);
    expect(step.message).toMatch(/^E: /m);
    for (const s of ['ipvs.modules', 'modules-load.d', 'modules', 'verify']) expect(stepOf(r, broken, s)!.status, s).toBe('skipped');
    expect(await exists(broken, SCRIPT)).toBe(false);
    expect(await exists(broken, CONF)).toBe(false);
    expect(await installed(broken)).toEqual([]);

    await sh(broken, 'mv /opt/kpm-lab-repo.off /opt/kpm-lab-repo');
    const again = await runProvision(inv);
    expect(again.code, again.out).toBe(0);
    expect(again.report.hosts[broken]!.status).toBe('changed');
  });

  test('dpkg\'s lock held by another run: apt waits kpm_package_lock_timeout, then the node fails naming the lock and its holder; released, a rerun converges', async () => {
    const locked = names[1]!;
    await lab.reset(locked);
    // an fcntl lock on dpkg's frontend lock, as a running apt or unattended-upgrades holds it
    await sh(
      locked,
      `setsid -f python3 -c 'import fcntl, os, time; f = open("/var/lib/dpkg/lock-frontend", "w"); fcntl.lockf(f, fcntl.LOCK_EX); open("/run/kpm-test-locked", "w").write(str(os.getpid())); time.sleep(600)' </dev/null >/dev/null 2>&1`,
    );
    await waitFor('the lock to be taken', () => exists(locked, '/run/kpm-test-locked'), 20_000);
    const inv = writeLabInventory(lab, { hosts: [locked], vars: { kpm_package_lock_timeout: 2 } });
    const t0 = Date.now();
    const r = await runProvision(inv);
    const took = Date.now() - t0;
    expect(r.code, r.out).toBe(2);
    const step = stepOf(r, locked, 'packages')!;
    expect(step.status).toBe('failed');
    // apt's own words, which vary with the moment it gives up: "Could not get lock …lock-frontend. It is held by
    // process N (python3)" or "Unable to acquire the dpkg frontend lock (…lock-frontend), is another process using it?"
    expect(step.message).toMatch(/E: (Could not get lock \/var\/lib\/dpkg\/lock-frontend\. It is held by process \d+ \(python3\)|Unable to acquire the dpkg frontend lock \(\/var\/lib\/dpkg\/lock-frontend\))/);
    // it waited (the install, and once more after refreshing the lists), and for the inventory's 2 s, not
    // apt's 120 s default (which would take 240 s): a check of the setting, not of speed
    expect(took).toBeGreaterThan(4_000);
    expect(took).toBeLessThan(200_000);
    expect(await installed(locked)).toEqual([]);
    expect(await exists(locked, SCRIPT)).toBe(false);

    await sh(locked, 'kill "$(cat /run/kpm-test-locked)" && rm /run/kpm-test-locked');
    const again = await runProvision(inv);
    expect(again.code, again.out).toBe(0);
    expect(again.report.hosts[locked]!.status).toBe('changed');
  });
});
