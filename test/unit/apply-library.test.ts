import { spawnSync } from 'node:child_process';
import { chmodSync, existsSync, lstatSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { parseApplyOutput } from '../../tasks/node/apply.ts';

// The apply library (tasks/node/apply.sh) run by bash on this machine: its reports, its log tail and its
// atomic writes, with the external tools it may call replaced by logging wrappers, so that what it does
// without starting a process is asserted too.

const LIBRARY = readFileSync(new URL('../../tasks/node/apply.sh', import.meta.url), 'utf8');
const dirs: string[] = [];
afterAll(() => {
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

function sandbox(): { dir: string; bin: string; log: string } {
  const dir = mkdtempSync(join(tmpdir(), 'kpm-apply-lib-'));
  dirs.push(dir);
  const bin = join(dir, 'bin');
  mkdirSync(bin);
  const log = join(dir, 'calls.log');
  writeFileSync(log, '');
  // wrappers: log the call, then run the real tool
  for (const tool of ['chmod', 'chown', 'mktemp', 'mv', 'sync', 'rm', 'base64', 'tail', 'mkdir']) {
    const real = spawnSync('/bin/sh', ['-c', `command -v ${tool}`], { encoding: 'utf8' }).stdout.trim();
    writeFileSync(join(bin, tool), `#!/bin/sh\nprintf '%s\\n' "${tool} $*" >>${JSON.stringify(log)}\nexec ${real} "$@"\n`);
    chmodSync(join(bin, tool), 0o755);
  }
  return { dir, bin, log };
}

function run(body: string, s = sandbox()): { stdout: string; stderr: string; code: number | null; calls: string[]; dir: string } {
  const r = spawnSync('bash', ['--noprofile', '--norc', '-c', `${LIBRARY}\n${body}`], {
    encoding: 'utf8',
    env: { PATH: `${s.bin}:/usr/bin:/bin:/usr/sbin:/sbin`, HOME: '/nonexistent', TMPDIR: s.dir },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const calls = readFileSync(s.log, 'utf8').split('\n').filter(Boolean);
  return { stdout: r.stdout, stderr: r.stderr, code: r.status, calls, dir: s.dir };
}

const asRoot = process.getuid?.() === 0;

describe('kpm_report', () => {
  it('sends printable ASCII as txt: without a process, anything else as b64:, and both decode back', () => {
    const texts = ['installed ipvsadm ipset', '', '100% sure\nsecond\tline\r\n%0A literal', 'modprobe: FEHLER: Modul ✗ nicht gefunden'];
    const r = run(texts.map((t, i) => `kpm_report step${i} changed ${shellQuote(t)}`).join('\n'));
    expect(r.code).toBe(0);
    expect(r.stdout.split('\n')[0]).toBe('@@kpm:step step0 changed txt:installed ipvsadm ipset');
    expect(r.stdout).toContain('@@kpm:step step2 changed txt:100%25 sure%0Asecond\tline%0D%0A%250A literal\n');
    expect(r.stdout).toMatch(/@@kpm:step step3 changed b64:[A-Za-z0-9+/=]+\n/);
    expect(parseApplyOutput(r.stdout).steps.map((s) => s.message)).toEqual(texts);
    // only the non-ASCII message started a process
    expect(r.calls.filter((c) => c.startsWith('base64'))).toHaveLength(1);
  });
});

describe('kpm_tail', () => {
  it('keeps the last 15 lines of the step log in KPM_TAIL, without tail', () => {
    const r = run(`for i in $(seq 1 40); do echo "line $i"; done >"$KPM_LOG"\nkpm_tail\nprintf '%s' "$KPM_TAIL"\n: >"$KPM_LOG"; kpm_tail; printf '|%s|' "$KPM_TAIL"`);
    expect(r.stdout).toBe(Array.from({ length: 15 }, (_, i) => `line ${i + 26}`).join('\n') + '||');
    expect(r.calls.filter((c) => c.startsWith('tail'))).toEqual([]);
  });
});

describe('kpm_put', () => {
  it('writes the exact content with the mode, leaves no temporary file, and creates the directory', () => {
    const s = sandbox();
    const target = join(s.dir, 'etc/sysconfig/modules/ipvs.modules');
    const content = '#!/bin/bash\nmodprobe -- ip_vs\n\n';
    const owner = asRoot ? 'root:root' : `${process.getuid!()}:${process.getgid!()}`;
    const r = run(`kpm_put ${shellQuote(target)} 0755 ${owner} ${shellQuote(content)} && kpm_put ${shellQuote(target + '.conf')} 644 ${owner} 'x' && echo ok`, s);
    expect(r.stderr).toBe('');
    expect(r.stdout).toBe('ok\n');
    expect(readFileSync(target, 'utf8')).toBe(content);
    expect(statSync(target).mode & 0o7777).toBe(0o755);
    expect(statSync(target + '.conf').mode & 0o7777).toBe(0o644);
    expect(readdirSync(join(s.dir, 'etc/sysconfig/modules')).sort()).toEqual(['ipvs.modules', 'ipvs.modules.conf']);
    // flushed before the rename, every time; chmod only where the umask did not already give the mode
    expect(r.calls.filter((c) => c.startsWith('sync'))).toHaveLength(2);
    expect(r.calls.filter((c) => c.startsWith('chmod'))).toHaveLength(1);
    expect(r.calls.filter((c) => c.startsWith('mktemp'))).toHaveLength(1); // the step log's, not the files'
  });

  it.runIf(asRoot)('as root: no chown for root:root in a plain directory, chown for another owner or a setgid directory', () => {
    const s = sandbox();
    const plain = join(s.dir, 'plain');
    const sgid = join(s.dir, 'sgid');
    mkdirSync(plain);
    mkdirSync(sgid);
    chmodSync(sgid, 0o2755);
    const r = run(
      [`kpm_put ${plain}/a 644 root:root a`, `kpm_put ${plain}/b 644 nobody:root b`, `kpm_put ${sgid}/c 644 root:root c`, 'echo ok'].join(' && \\\n'),
      s,
    );
    expect(r.stdout).toBe('ok\n');
    const chowns = r.calls.filter((c) => c.startsWith('chown'));
    expect(chowns.map((c) => c.split(' ')[2])).toEqual(['nobody:root', 'root:root']);
    expect(chowns[1]).toContain(`${sgid}/.c.kpm-`);
    expect(statSync(join(plain, 'a')).uid).toBe(0);
    expect(statSync(join(plain, 'b')).uid).not.toBe(0);
  });

  it('passes over a taken name, never writing through a symlink planted there', () => {
    const s = sandbox();
    const d = join(s.dir, 'd');
    mkdirSync(d);
    // a symlink to a non-regular file is what noclobber alone would open: a device node of the test's
    // own (as root) stands for /dev/null or a disk; otherwise a regular file
    const victim = join(s.dir, 'victim');
    if (asRoot) expect(spawnSync('mknod', ['-m', '600', victim, 'c', '1', '3']).status).toBe(0);
    else writeFileSync(victim, 'keep', { mode: 0o600 });
    // RANDOM seeded: the first name kpm_put will try, found by the same draw
    const name = run(`RANDOM=7; t=''; for ((i = 0; i < 6; i++)); do t+=\${KPM_ALNUM:RANDOM % 62:1}; done; printf '%s' "$t"`).stdout;
    expect(name).toMatch(/^[A-Za-z0-9]{6}$/);
    symlinkSync(victim, join(d, `.f.kpm-${name}`));
    const r = run(`RANDOM=7; kpm_put ${d}/f 644 ${asRoot ? 'root:root' : `${process.getuid!()}:${process.getgid!()}`} new && echo ok`, s);
    expect(r.stdout).toBe('ok\n');
    expect(lstatSync(victim).mode & 0o7777).toBe(0o600);
    expect(lstatSync(join(d, 'f')).isFile()).toBe(true);
    expect(readFileSync(join(d, 'f'), 'utf8')).toBe('new');
    expect(readdirSync(d).sort()).toEqual(['.f.kpm-' + name, 'f']);
  });

  it('fails, leaving nothing behind, where the directory cannot be written', () => {
    const s = sandbox();
    const r = run(`kpm_put /proc/kpm-no-such-dir/f 644 root:root x; echo "rc=$?"`, s);
    expect(r.stdout).toBe('rc=1\n');
    expect(existsSync('/proc/kpm-no-such-dir')).toBe(false);
  });
});

function shellQuote(s: string): string {
  return `'${s.replace(/'/g, `'\\''`)}'`;
}
