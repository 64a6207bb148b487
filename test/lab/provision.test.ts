import { createHash } from 'node:crypto';
import { copyFileSync, existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { renderModuleTemplate, readTemplate } from '../../tasks/node/templates.ts';
import { LAB_NOPASSWD_USER, labSupported, startLab, type Lab } from './lab.ts';
import { mustExec, runProvision, stepOf, tempDir, writeLabInventory } from './helpers.ts';

// The node phase against real sshd hosts (network namespaces, own root filesystems, offline apt repo).
// Module loading on these hosts is the kmod test fixture: it logs every call to /var/log/kpm-lab-kmod.log.

const support = labSupported();
const MODULES = ['ip_vs', 'ip_vs_rr', 'ip_vs_wrr', 'ip_vs_sh', 'nf_conntrack'];
const KMOD_LOG = '/var/log/kpm-lab-kmod.log';

let lab: Lab;
let names: string[];

beforeAll(async () => {
  if (!support.ok) return;
  lab = await startLab({ hosts: 3, kmodShim: true, id: 'p' });
  names = lab.hosts.map((h) => h.name);
});
afterAll(async () => {
  await lab?.down();
});

const sh = (host: string, cmd: string) => mustExec(lab, host, cmd);

/** modprobe calls that load something (the facts' `modprobe -n` probes left out) */
async function loadCalls(host: string): Promise<string[]> {
  const log = (await lab.exec(host, `cat ${KMOD_LOG} 2>/dev/null`)).stdout;
  return log
    .split('\n')
    .filter((l) => / modprobe /.test(l) && !/ modprobe (-n|--dry-run|-q -n|-n -v|-v -n)/.test(l) && !/\s-n\b/.test(l))
    .map((l) => l.replace(/^\S+ pid=\d+ /, ''));
}

describe.skipIf(!support.ok)('node phase on lab hosts', () => {
  test('dry run on fresh hosts changes nothing, byte for byte, and shows the diffs', async () => {
    const inv = writeLabInventory(lab);
    const before = await Promise.all(names.map((n) => lab.snapshot(n)));
    const r = await runProvision(inv, { dryRun: true });
    const after = await Promise.all(names.map((n) => lab.snapshot(n)));
    expect(after).toEqual(before);
    expect(r.code).toBe(0);
    for (const n of names) {
      expect(r.report.hosts[n]!.status).toBe('changed');
      expect(stepOf(r, n, 'packages')!.message).toBe('would install ipvsadm ipset conntrack (apt)');
      expect(stepOf(r, n, 'modules')!.message).toBe(`would load ${MODULES.filter((m) => m !== 'nf_conntrack').join(', ')}`);
      expect(stepOf(r, n, 'verify')!.status).toBe('skipped');
      // the diff of each file is printed, line by line, prefixed with the host
      expect(r.out).toContain(`${n} |   +++ /etc/sysconfig/modules/ipvs.modules`);
      expect(r.out).toContain(`${n} |   +modprobe -- ip_vs_wrr`);
      expect(r.out).toContain(`${n} |   +++ /etc/modules-load.d/ipvs.conf`);
      expect(r.report.hosts[n]!.sshExecs).toBe(1);
      expect(r.report.hosts[n]!.sshRoundTrips).toBe(1);
    }
    expect(r.out).toMatch(/PLAY RECAP \(dry run\)/);
    expect(r.out).toContain('would change (dry run: nothing was changed)');
    // nf_conntrack is built into this kernel: not loaded by modprobe, not in lsmod, and that is fine
    expect(r.out).toContain('no nf_conntrack_ipv4 in this kernel');
  });

  test('first run installs, writes both files atomically with their modes, loads the modules; recap changed', async () => {
    const inv = writeLabInventory(lab);
    const r = await runProvision(inv);
    expect(r.code, r.out).toBe(0);
    const script = renderModuleTemplate(readTemplate('ipvs.modules'), MODULES);
    const conf = renderModuleTemplate(readTemplate('ipvs.conf'), MODULES);
    for (const n of names) {
      expect(r.report.hosts[n]!.status).toBe('changed');
      // facts, then apply + read-back: two scripts in one bash kept on the node, one exec
      expect(r.report.hosts[n]!.sshExecs).toBe(1);
      expect(r.report.hosts[n]!.sshRoundTrips).toBe(2);
      for (const s of ['packages', 'ipvs.modules', 'modules-load.d', 'modules']) expect(stepOf(r, n, s)!.status).toBe('changed');
      expect(stepOf(r, n, 'verify')!.status).toBe('ok');
      expect(await sh(n, "dpkg-query -W -f='${Package} ${db:Status-Status}\\n' ipvsadm ipset conntrack")).toBe(
        'conntrack installed\nipset installed\nipvsadm installed\n',
      );
      expect(await sh(n, 'stat -c "%a %U:%G" /etc/sysconfig/modules/ipvs.modules /etc/modules-load.d/ipvs.conf')).toBe(
        '755 root:root\n644 root:root\n',
      );
      const sums = await sh(n, 'sha256sum /etc/sysconfig/modules/ipvs.modules /etc/modules-load.d/ipvs.conf');
      expect(sums).toContain(createHash('sha256').update(script).digest('hex'));
      expect(sums).toContain(createHash('sha256').update(conf).digest('hex'));
      // no temporary file left next to them
      expect(await sh(n, 'ls -A /etc/sysconfig/modules /etc/modules-load.d')).toBe('/etc/modules-load.d:\nipvs.conf\n\n/etc/sysconfig/modules:\nipvs.modules\n');
      // the fixture log shows the module script's exact calls, in order
      expect(await loadCalls(n)).toEqual(MODULES.map((m) => `modprobe -- ${m}`));
      const lsmod = await sh(n, 'lsmod');
      for (const m of ['ip_vs', 'ip_vs_rr', 'ip_vs_wrr', 'ip_vs_sh']) expect(lsmod).toMatch(new RegExp(`^${m} `, 'm'));
    }
    expect(r.out).toMatch(/PLAY RECAP \*+/);
    expect(r.out).toMatch(new RegExp(`${names[0]}\\s+: ok=\\d+\\s+changed=4\\s+unreachable=0\\s+failed=0`));
  });

  test('second run changes nothing, says so per node, in one SSH exec per node', async () => {
    const inv = writeLabInventory(lab);
    const calls = await Promise.all(names.map(loadCalls));
    const r = await runProvision(inv);
    expect(r.code).toBe(0);
    for (const [i, n] of names.entries()) {
      expect(r.report.hosts[n]!.status).toBe('ok');
      expect(r.report.hosts[n]!.steps.filter((s) => s.status === 'changed')).toEqual([]);
      expect(r.report.hosts[n]!.sshExecs).toBe(1);
      expect(r.report.hosts[n]!.sshRoundTrips).toBe(1);
      expect(await loadCalls(n)).toEqual(calls[i]);
    }
    expect(r.report.summary.changed).toBe(0);
    expect(r.out.match(/converged: nothing to change/g)).toHaveLength(names.length);
  });

  test('after a simulated reboot the modules come back from modules-load.d, and a rerun still changes nothing', async () => {
    const n = names[1]!;
    await lab.restart(n);
    const lsmod = await sh(n, 'lsmod');
    for (const m of ['ip_vs', 'ip_vs_rr', 'ip_vs_wrr', 'ip_vs_sh']) expect(lsmod).toMatch(new RegExp(`^${m} `, 'm'));
    expect(await sh(n, `grep -c 'boot:/etc/modules-load.d/ipvs.conf' ${KMOD_LOG}`)).toBe('5\n');
    const r = await runProvision(writeLabInventory(lab, { hosts: [n] }));
    expect(r.report.hosts[n]!.status).toBe('ok');
  });

  test('a drifted node is repaired: edited file, wrong mode, unloaded module', async () => {
    const n = names[2]!;
    await sh(n, "echo '# local edit' >> /etc/modules-load.d/ipvs.conf; chmod 600 /etc/sysconfig/modules/ipvs.modules; modprobe -r ip_vs_sh");
    const dry = await runProvision(writeLabInventory(lab, { hosts: [n] }), { dryRun: true });
    expect(stepOf(dry, n, 'modules-load.d')!.diff).toContain('-# local edit');
    expect(stepOf(dry, n, 'ipvs.modules')!.message).toBe('would set mode 600 -> 755 on /etc/sysconfig/modules/ipvs.modules');
    expect(stepOf(dry, n, 'modules')!.message).toBe('would load ip_vs_sh');
    expect(stepOf(dry, n, 'packages')!.status).toBe('ok');
    const r = await runProvision(writeLabInventory(lab, { hosts: [n] }));
    expect(r.report.hosts[n]!.status).toBe('changed');
    expect(stepOf(r, n, 'verify')!.status).toBe('ok');
    expect(await sh(n, 'stat -c %a /etc/sysconfig/modules/ipvs.modules; grep -c "local edit" /etc/modules-load.d/ipvs.conf || true')).toBe('755\n0\n');
    expect(await sh(n, 'lsmod')).toMatch(/^ip_vs_sh /m);
  });

  test('one host stopped: reported unreachable, the others complete, exit code non-zero, retry file names it', async () => {
    const down = names[0]!;
    await lab.stop(down);
    try {
      const r = await runProvision(writeLabInventory(lab));
      expect(r.code).toBe(3);
      expect(r.report.hosts[down]!.status).toBe('unreachable');
      expect(r.report.hosts[down]!.reason).toMatch(/ECONNREFUSED|connect/);
      for (const n of names.slice(1)) expect(r.report.hosts[n]!.status).toBe('ok');
      expect(r.out).toMatch(new RegExp(`${down}\\s+: ok=0\\s+changed=0\\s+unreachable=1`));
      expect(readFileSync(r.retryFile, 'utf8').split('\n').filter((l) => l && !l.startsWith('#'))).toEqual([down]);
      expect(r.out).toContain(`--limit @${r.retryFile}`);
    } finally {
      await lab.start(down);
    }
    // the retry file drives the next run: only that host
    const inv = writeLabInventory(lab);
    const retry = join(tempDir('kpm-retry-'), 'x.retry');
    writeFileSync(retry, `${down}\n`);
    const again = await runProvision(inv, { limit: `@${retry}` });
    expect(Object.keys(again.report.hosts)).toEqual([down]);
    expect(again.report.hosts[down]!.status).toBe('ok');
  });

  test('unknown host key fails closed; --accept-new-host-keys trusts it and records it', async () => {
    const n = names[0]!;
    const kh = join(tempDir('kpm-kh-'), 'known_hosts');
    const inv = writeLabInventory(lab, { hosts: [n], knownHosts: kh });
    const refused = await runProvision(inv);
    expect(refused.code).toBe(2);
    expect(refused.report.hosts[n]!.status).toBe('failed');
    expect(refused.report.hosts[n]!.reason).toMatch(/host key of .* is not in .*known_hosts \(ssh-ed25519 SHA256:[A-Za-z0-9+/]{43}\)/);
    expect(existsSync(kh)).toBe(false);
    const accepted = await runProvision(inv, { acceptNewHostKeys: true });
    expect(accepted.report.hosts[n]!.status).toBe('ok');
    const labLine = readFileSync(lab.knownHosts, 'utf8').split('\n').find((l) => l.startsWith(lab.hosts[0]!.address + ' '))!;
    expect(readFileSync(kh, 'utf8')).toBe(labLine + '\n');
  });

  test('a changed host key is refused, with both fingerprints, even with --accept-new-host-keys', async () => {
    const n = names[0]!;
    const kh = join(tempDir('kpm-kh-'), 'known_hosts');
    copyFileSync(lab.knownHosts, kh);
    const other = lab.hosts[1]!;
    // pretend node 1's address used to present node 2's key
    const lines = readFileSync(kh, 'utf8').split('\n');
    const otherKey = lines.find((l) => l.startsWith(other.address + ' '))!.split(' ').slice(1).join(' ');
    writeFileSync(kh, lines.map((l) => (l.startsWith(lab.hosts[0]!.address + ' ') ? `${lab.hosts[0]!.address} ${otherKey}` : l)).join('\n'));
    const r = await runProvision(writeLabInventory(lab, { hosts: [n], knownHosts: kh }), { acceptNewHostKeys: true });
    expect(r.report.hosts[n]!.status).toBe('failed');
    expect(r.report.hosts[n]!.reason).toMatch(/HOST KEY CHANGED .* offers ssh-ed25519 SHA256:\S+, but .* expects SHA256:\S+/);
  });

  test('become through sudo with a password; a wrong or missing password fails the node and changes nothing', async () => {
    const n = names[2]!;
    await lab.reset(n);
    const inv = writeLabInventory(lab, { hosts: [n], vars: { ansible_user: 'kpm', ansible_become: true } });
    const before = await lab.snapshot(n);
    const missing = await runProvision(inv);
    expect(missing.report.hosts[n]!.status).toBe('failed');
    expect(missing.report.hosts[n]!.reason).toMatch(/sudo needs a password .* -K .* KPM_BECOME_PASSWORD/);
    const wrong = await runProvision(inv, { becomePassword: 'not-the-password' });
    expect(wrong.report.hosts[n]!.status).toBe('failed');
    expect(wrong.report.hosts[n]!.reason).toMatch(/sudo refused the become password/);
    expect(wrong.out + wrong.err + readFileSync(wrong.reportFile, 'utf8')).not.toContain('not-the-password');
    expect(await lab.snapshot(n)).toEqual(before);
    const ok = await runProvision(inv, { becomePassword: 'lab-sudo-secret' });
    expect(ok.report.hosts[n]!.status, ok.out).toBe('changed');
    expect(stepOf(ok, n, 'verify')!.status).toBe('ok');
    expect(ok.out + readFileSync(ok.reportFile, 'utf8')).not.toContain('lab-sudo-secret');
    // with a password on sudo's stdin, each script has its own exec (no kept shell reading that stdin)
    expect([ok.report.hosts[n]!.sshExecs, ok.report.hosts[n]!.sshRoundTrips]).toEqual([2, 2]);
    // a non-root login becomes root by default; with become turned off it cannot prepare the node, and says why
    const implicit = await runProvision(writeLabInventory(lab, { hosts: [n], vars: { ansible_user: 'kpm' } }), { becomePassword: 'lab-sudo-secret' });
    expect(implicit.report.hosts[n]!.status).toBe('ok');
    const plain = await runProvision(writeLabInventory(lab, { hosts: [n], vars: { ansible_user: 'kpm', ansible_become: false } }));
    expect(plain.report.hosts[n]!.reason).toMatch(/connected as kpm without root: .* set ansible_become: true/);
    // sudo without a password: both scripts in one bash kept through sudo -n
    await lab.reset(n);
    const nopw = await runProvision(writeLabInventory(lab, { hosts: [n], vars: { ansible_user: LAB_NOPASSWD_USER, ansible_become: true } }));
    expect(nopw.report.hosts[n]!.status, nopw.out).toBe('changed');
    expect(stepOf(nopw, n, 'verify')!.status).toBe('ok');
    expect([nopw.report.hosts[n]!.sshExecs, nopw.report.hosts[n]!.sshRoundTrips]).toEqual([1, 2]);
  });

  test('a kernel without ip_vs fails the node before anything is changed, naming the module and modprobe\'s message', async () => {
    const n = names[1]!;
    await lab.reset(n);
    // the fixture's catalog is what "this kernel has" on a lab host: take ip_vs and its schedulers out
    await sh(n, "sed -i '/^ip_vs/d' /usr/lib/kpm-lab-kmod/catalog");
    const before = await lab.snapshot(n);
    const r = await runProvision(writeLabInventory(lab, { hosts: [n] }));
    expect(r.code).toBe(2);
    expect(r.report.hosts[n]!.status).toBe('failed');
    expect(stepOf(r, n, 'preflight')!.message).toMatch(/has no ip_vs module: IPVS mode cannot run on this node: ip_vs \(modprobe: FATAL: Module ip_vs not found/);
    expect(stepOf(r, n, 'packages')!.status).toBe('skipped');
    expect(await lab.snapshot(n)).toEqual(before);
    await lab.reset(n);
  });
});
