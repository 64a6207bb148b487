// Self-test of the kpm test lab: what the tool's lab tests rely on must actually hold.
// Runs with `npx vitest run --project lab test/lab/harness.test.ts` (root on Linux).

import { execFile } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { LAB_NOPASSWD_USER, LAB_SUDO_PASSWORD, LAB_SUDO_USER, labSupported, startLab, type Lab } from './lab.ts';

const support = labSupported();
if (!support.ok) console.warn(`kpm test lab self-test skipped: ${support.reason}`);

interface Result {
  stdout: string;
  stderr: string;
  code: number;
}

describe.skipIf(!support.ok)(`kpm test lab harness${support.ok ? '' : ` (skipped: ${support.reason})`}`, () => {
  let lab: Lab;

  function ssh(host: string, cmd: string, opts: { user?: string; input?: string; timeout?: number } = {}): Promise<Result> {
    const args = ['-F', lab.sshConfig, '-o', 'ConnectTimeout=5'];
    if (opts.user) args.push('-l', opts.user);
    args.push(host, cmd);
    return new Promise((resolve) => {
      const child = execFile('ssh', args, { timeout: opts.timeout ?? 120_000, encoding: 'utf8' }, (err, stdout, stderr) => {
        const code = err ? (typeof err.code === 'number' ? err.code : 255) : 0;
        resolve({ stdout, stderr, code });
      });
      child.stdin?.end(opts.input ?? '');
    });
  }

  const pid = (name: string): number | null => lab.hosts.find((h) => h.name === name)?.pid ?? null;

  beforeAll(async () => {
    lab = await startLab({ hosts: 3, kmodShim: true, id: 'harn' });
  });

  afterAll(async () => {
    await lab?.down();
  });

  it('describes 3 hosts, with inventories on disk', () => {
    expect(lab.hosts.map((h) => h.name)).toEqual(['node001', 'node002', 'node003']);
    expect(new Set(lab.hosts.map((h) => h.address)).size).toBe(3);
    for (const h of lab.hosts) {
      expect(h.port).toBe(22);
      expect(h.user).toBe('root');
      expect(h.key).toBe(lab.key);
      expect(h.pid).toBeGreaterThan(1);
    }
    expect(lab.stateDir).toBe('/tmp/kpm-lab-harn');
    const ansible = readFileSync(lab.ansibleInventory, 'utf8');
    expect(ansible).toMatch(/^all:\n {2}vars:\n {4}ansible_user: root\n/m);
    expect(ansible).toContain(`ansible_ssh_private_key_file: ${lab.key}`);
    for (const h of lab.hosts) expect(ansible).toContain(`    ${h.name}: {ansible_host: ${h.address}, ansible_port: 22}`);
    expect(readFileSync(lab.knownHosts, 'utf8').trim().split('\n')).toHaveLength(3);
  });

  it('gives each host its own hostname, over SSH with pinned host keys and through exec', async () => {
    const names = await Promise.all(lab.hosts.map((h) => ssh(h.name, 'hostname')));
    expect(names.map((r) => r.code)).toEqual([0, 0, 0]);
    expect(names.map((r) => r.stdout.trim())).toEqual(['node001', 'node002', 'node003']);
    const viaExec = await lab.exec('node002', 'hostname; exit 7');
    expect(viaExec).toMatchObject({ stdout: 'node002\n', code: 7 });
  });

  it('keeps each host on its own disk', async () => {
    expect((await ssh('node001', 'echo "written on $(hostname)" >/etc/isolation-test')).code).toBe(0);
    expect((await ssh('node001', 'cat /etc/isolation-test')).stdout).toBe('written on node001\n');
    expect((await ssh('node002', 'test -e /etc/isolation-test')).code).toBe(1);
    expect(existsSync('/etc/isolation-test')).toBe(false);
  });

  it('installs ipvsadm offline on one host without it showing on another', async () => {
    expect((await ssh('node002', 'command -v ipvsadm')).code).not.toBe(0);
    const install = await ssh('node002', 'DEBIAN_FRONTEND=noninteractive apt-get install -y ipvsadm');
    expect(install.code, install.stderr).toBe(0);
    expect((await ssh('node002', 'dpkg -s ipvsadm')).stdout).toContain('Status: install ok installed');
    expect((await ssh('node003', 'command -v ipvsadm || dpkg -s ipvsadm')).code).not.toBe(0);
  });

  it('loads catalog modules through the kmod shim and fails unknown ones as kmod does', async () => {
    expect((await ssh('node001', 'modprobe --version')).stdout).toContain('test fixture; not kmod');
    expect((await ssh('node001', 'modprobe ip_vs_rr')).code).toBe(0);
    const lsmod = (await ssh('node001', 'lsmod')).stdout;
    expect(lsmod).toMatch(/^ip_vs_rr\s+\d+\s+0$/m);
    expect(lsmod).toMatch(/^ip_vs\s+\d+\s+1 ip_vs_rr$/m);
    expect((await ssh('node003', 'lsmod')).stdout).not.toContain('ip_vs');
    const bad = await ssh('node001', 'modprobe nf_conntrack_ipv4');
    expect(bad.code).toBe(1);
    expect(bad.stderr).toMatch(/^modprobe: FATAL: Module nf_conntrack_ipv4 not found in directory \/lib\/modules\/\S+$/m);
    expect((await ssh('node001', 'cat /var/log/kpm-lab-kmod.log')).stdout).toMatch(/modprobe ip_vs_rr\n/);
  });

  it('loads modules-load.d entries on restart, and nothing else', async () => {
    const before = pid('node001');
    expect((await ssh('node001', 'mkdir -p /etc/modules-load.d && echo ip_vs_sh >/etc/modules-load.d/ipvs.conf')).code).toBe(0);
    await lab.restart('node001');
    expect(pid('node001')).not.toBe(before);
    expect(pid('node001')).toBeGreaterThan(1);
    const lsmod = (await ssh('node001', 'lsmod')).stdout;
    expect(lsmod).toMatch(/^ip_vs_sh\s/m);
    expect(lsmod).not.toMatch(/^ip_vs_rr\s/m);
    expect((await ssh('node001', 'cat /etc/isolation-test')).code).toBe(0);
  });

  it('wipes the disk on reset and keeps the host key', async () => {
    await lab.reset('node001');
    const r = await ssh('node001', 'test -e /etc/isolation-test || test -e /etc/modules-load.d/ipvs.conf; echo $?');
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout.trim()).toBe('1');
  });

  it('refuses SSH while a host is stopped, and answers again after start', async () => {
    await lab.stop('node003');
    expect(pid('node003')).toBeNull();
    const refused = await ssh('node003', 'true');
    expect(refused.code).toBe(255);
    expect(refused.stderr).toMatch(/Connection refused/);
    await expect(lab.exec('node003', 'true')).rejects.toThrow(/node003 is not running/);
    await lab.start('node003');
    expect(pid('node003')).toBeGreaterThan(1);
    expect((await ssh('node003', 'hostname')).stdout).toBe('node003\n');
  });

  it(`lets ${LAB_SUDO_USER} use sudo with its password only, and ${LAB_NOPASSWD_USER} without one`, async () => {
    const who = await ssh('node002', 'id -un', { user: LAB_SUDO_USER });
    expect(who.stdout.trim()).toBe(LAB_SUDO_USER);
    const withPw = await ssh('node002', "sudo -S -p '' id -u", { user: LAB_SUDO_USER, input: `${LAB_SUDO_PASSWORD}\n` });
    expect(withPw.code, withPw.stderr).toBe(0);
    expect(withPw.stdout.trim()).toBe('0');
    const noPw = await ssh('node002', 'sudo -n id -u', { user: LAB_SUDO_USER });
    expect(noPw.code).toBe(1);
    expect(noPw.stderr).toContain('a password is required');
    const wrongPw = await ssh('node002', "sudo -S -p '' id -u", { user: LAB_SUDO_USER, input: 'wrong\n' });
    expect(wrongPw.code).not.toBe(0);
    expect(wrongPw.stdout).toBe('');
    const nopasswd = await ssh('node002', 'sudo -n id -u', { user: LAB_NOPASSWD_USER });
    expect(nopasswd.stdout.trim()).toBe('0');
  });

  it('snapshot() is stable under reads and logins, and sees every kind of change', async () => {
    const m1 = await lab.manifest('node003');
    const s1 = await lab.snapshot('node003');
    expect(s1).toMatch(/^[0-9a-f]{64}$/);
    expect(await lab.snapshot('node003')).toBe(s1);

    // What a dry run may do: log in (as root and as the sudo user), read, ask apt and the shim.
    await ssh('node003', 'lsmod; modprobe -n ip_vs; apt-cache policy ipvsadm; apt-get -s install ipvsadm; dpkg -l; cat /etc/hostname');
    await ssh('node003', "sudo -S -p '' lsmod", { user: LAB_SUDO_USER, input: `${LAB_SUDO_PASSWORD}\n` });
    await ssh('node003', 'ls /tmp', { user: LAB_NOPASSWD_USER });
    expect(await lab.manifest('node003')).toBe(m1);
    expect(await lab.snapshot('node003')).toBe(s1);

    await ssh('node003', 'echo x >/root/marker');
    const s2 = await lab.snapshot('node003');
    expect(s2).not.toBe(s1);
    await ssh('node003', 'echo y >/root/marker');
    const s3 = await lab.snapshot('node003');
    expect(s3).not.toBe(s2);
    await ssh('node003', 'rm /root/marker');
    expect(await lab.snapshot('node003')).toBe(s1);

    await ssh('node003', 'chmod 0600 /etc/debian_version');
    const s4 = await lab.snapshot('node003');
    expect(s4).not.toBe(s1);
    await ssh('node003', 'rm -f /etc/motd');
    const s5 = await lab.snapshot('node003');
    expect(s5).not.toBe(s4);
    await ssh('node003', 'modprobe ip_vs');
    const s6 = await lab.snapshot('node003');
    expect(s6).not.toBe(s5);
    await ssh('node003', 'DEBIAN_FRONTEND=noninteractive apt-get install -y ipset');
    expect(await lab.snapshot('node003')).not.toBe(s6);
  });

  it('down() leaves no process, netns, bridge, mount or state behind, and may be called twice', async () => {
    const pids = lab.hosts.map((h) => h.pid).filter((p): p is number => p !== null);
    expect(pids).toHaveLength(3);
    await lab.down();
    await lab.down();
    for (const p of pids) expect(existsSync(`/proc/${p}`)).toBe(false);
    const netns = await new Promise<string>((resolve) => execFile('ip', ['netns', 'list'], (_e, out) => resolve(out)));
    expect(netns.split('\n').filter((l) => l.startsWith('kpmlharn-'))).toEqual([]);
    const bridge = await new Promise<number>((resolve) =>
      execFile('ip', ['link', 'show', 'kpmlharn'], (e) => resolve(e ? Number(e.code ?? 1) : 0)),
    );
    expect(bridge).not.toBe(0);
    expect(readFileSync('/proc/self/mountinfo', 'utf8')).not.toContain(lab.stateDir);
    expect(existsSync(lab.stateDir)).toBe(false);
    await expect(lab.exec('node001', 'true')).rejects.toThrow(/torn down/);
  });
});
