import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { execFile } from 'node:child_process';
import { existsSync, readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { LAB_SUDO_PASSWORD, LAB_SUDO_USER, labSupported, startLab, type Lab } from './lab.ts';
import { tempDir, writeLabInventory } from './helpers.ts';

// The sudo password, end to end, through the real command line: it comes only from KPM_BECOME_PASSWORD or
// the -K prompt, and appears nowhere else. While each run goes on, the process list is sampled on this
// machine and inside every host; afterwards stdout, stderr, the --report and retry files, every file the
// hosts wrote (their whole overlay upper layer, /var/log included, and /run), sshd's log and the
// environment of every process on the hosts are searched for it. The right password and a wrong one are
// both tried. A control first plants a secret in each place searched and sees it found.

const support = labSupported();
const ROOT = process.cwd();
const RIGHT = LAB_SUDO_PASSWORD;
const WRONG = `Wr0ng-${randomBytes(6).toString('hex')}`;
const SECRETS = [RIGHT, WRONG];
const run = promisify(execFile);

let lab: Lab;
let inventory: string;
/** everything a run showed or left: searched for the passwords at the end, and after each run */
const seen: { what: string; text: string }[] = [];

beforeAll(async () => {
  if (!support.ok) return;
  delete process.env['KPM_BECOME_PASSWORD'];
  lab = await startLab({ hosts: 2, kmodShim: true, id: 'e' });
  inventory = writeLabInventory(lab, { vars: { ansible_user: LAB_SUDO_USER, ansible_become: true } });
});
afterAll(async () => {
  await lab?.down();
});

interface CliRun {
  code: number | null;
  out: string;
  err: string;
  report?: string;
  retry?: string;
  psLocal: string[];
  psHosts: string[];
  environHosts: string[];
}

/** The process list of this machine and (unless told not to) of every host, sampled until `done` settles. */
async function sampleWhile(done: Promise<unknown>, sampleHosts = true): Promise<{ local: string[]; hosts: string[]; environ: string[] }> {
  let finished = false;
  void done.finally(() => (finished = true));
  const local: string[] = [];
  const hosts: string[] = [];
  const environ: string[] = [];
  const localLoop = (async () => {
    do {
      local.push((await run('ps', ['-eo', 'args'], { maxBuffer: 16 << 20 })).stdout);
      await new Promise((r) => setTimeout(r, 50));
    } while (!finished);
  })();
  const hostLoop = (async () => {
    if (!sampleHosts) return;
    do {
      for (const h of lab.hosts) {
        const r = await lab.exec(h.name, 'ps -eo args; echo @@environ; for f in /proc/[0-9]*/environ; do tr "\\0" "\\n" <"$f"; done 2>/dev/null');
        const [ps = '', env = ''] = r.stdout.split('@@environ\n');
        hosts.push(ps);
        environ.push(env);
      }
    } while (!finished);
  })();
  await Promise.all([localLoop, hostLoop]);
  return { local, hosts, environ };
}

/** `tsx tasks/cli.ts ARGS` as a user runs it, with the process lists sampled while it runs. */
async function cli(args: string[], env: Record<string, string>, opts: { pty?: { answer: string }; sampleHosts?: boolean } = {}): Promise<CliRun> {
  const cwd = tempDir('kpm-secret-run-');
  const report = join(cwd, 'report.json');
  const retry = join(cwd, 'hosts.retry');
  const argv = [join(ROOT, 'node_modules/.bin/tsx'), join(ROOT, 'tasks/cli.ts'), 'provision', ...args, '--report', report, '--retry-file', retry];
  // -K needs a terminal: `script` gives the command one, and the answer is typed once the prompt shows
  const child = opts.pty
    ? spawn('script', ['-q', '-e', '-f', '-c', argv.map((a) => `'${a}'`).join(' '), '/dev/null'], { cwd, env: { ...process.env, CI: 'true', ...env } })
    : spawn(argv[0]!, argv.slice(1), { cwd, env: { ...process.env, CI: 'true', ...env } });
  let out = '';
  let err = '';
  let answered = false;
  child.stdout.on('data', (b: Buffer) => {
    out += b.toString();
    if (opts.pty && !answered && out.includes('BECOME password:')) {
      answered = true;
      child.stdin.write(`${opts.pty.answer}\n`);
    }
  });
  child.stderr.on('data', (b: Buffer) => (err += b.toString()));
  const exited = new Promise<number | null>((resolve) => child.on('close', (code) => resolve(code)));
  const [code, ps] = await Promise.all([exited, sampleWhile(exited, opts.sampleHosts ?? true)]);
  const r: CliRun = {
    code,
    out,
    err,
    ...(existsSync(report) ? { report: readFileSync(report, 'utf8') } : {}),
    ...(existsSync(retry) ? { retry: readFileSync(retry, 'utf8') } : {}),
    psLocal: ps.local,
    psHosts: ps.hosts,
    environHosts: ps.environ,
  };
  const label = `provision ${args.join(' ')}`;
  seen.push({ what: `${label}: stdout`, text: out }, { what: `${label}: stderr`, text: err });
  if (r.report) seen.push({ what: `${label}: --report`, text: r.report });
  if (r.retry) seen.push({ what: `${label}: retry file`, text: r.retry });
  seen.push({ what: `${label}: ps on this machine`, text: ps.local.join('\n') });
  seen.push({ what: `${label}: ps on the hosts`, text: ps.hosts.join('\n') });
  seen.push({ what: `${label}: environment of the hosts' processes`, text: ps.environ.join('\n') });
  return r;
}

/** Every file the hosts wrote (their overlay upper layer), their /run, and sshd's log. */
async function hostTraces(): Promise<{ what: string; text: string }[]> {
  const found: { what: string; text: string }[] = [];
  for (const h of lab.hosts) {
    const upper = join(lab.stateDir, 'hosts', h.name, 'upper');
    const walk = (dir: string): void => {
      for (const name of readdirSync(dir)) {
        const p = join(dir, name);
        const st = statSync(p, { throwIfNoEntry: false });
        if (!st) continue;
        if (st.isDirectory()) walk(p);
        else if (st.isFile() && st.size < 32 << 20) found.push({ what: `${h.name}: ${p.slice(upper.length)}`, text: readFileSync(p, 'latin1') });
      }
    };
    walk(upper);
    const r = await lab.exec(h.name, 'find /run /var/log -type f -size -32M -exec cat {} + 2>/dev/null');
    found.push({ what: `${h.name}: /run and /var/log`, text: r.stdout });
    const console = join(lab.stateDir, 'hosts', h.name, 'console.log');
    if (existsSync(console)) found.push({ what: `${h.name}: sshd log`, text: readFileSync(console, 'latin1') });
  }
  return found;
}

const leaks = (items: { what: string; text: string }[], secrets: string[]) =>
  items.flatMap(({ what, text }) => secrets.filter((s) => text.includes(s)).map((s) => `${what} holds ${s === RIGHT ? 'the password' : s}`));

const logins = () => lab.hosts.map((h) => (readFileSync(join(lab.stateDir, 'hosts', h.name, 'console.log'), 'latin1').match(/Accepted publickey/g) ?? []).length);

describe.skipIf(!support.ok)('the sudo password', () => {
  test('control: a secret in a process list, a host file, a host process environment or the outputs is found', async () => {
    const planted = `Planted-${randomBytes(6).toString('hex')}`;
    const h = lab.hosts[0]!.name;
    // argv on this machine and on a host, and a host process's environment, while sampling
    const local = spawn('bash', ['-c', 'sleep 5', planted]);
    const remote = lab.exec(h, `bash -c 'sleep 5' ${planted} & env PLANTED=${planted.slice(0, 4)}x${planted.slice(4)} sleep 5; wait`);
    const samples = await sampleWhile(Promise.all([remote, new Promise((r) => local.on('close', r))]));
    expect(samples.local.join('\n')).toContain(planted);
    expect(samples.hosts.join('\n')).toContain(planted);
    expect(samples.environ.join('\n')).toContain(`PLANTED=${planted.slice(0, 4)}x${planted.slice(4)}`);
    // a file a host wrote
    await lab.exec(h, `echo ${planted} >/var/log/kpm-control.log`);
    expect(leaks(await hostTraces(), [planted])).toEqual(expect.arrayContaining([expect.stringContaining('/var/log/kpm-control.log holds')]));
    await lab.exec(h, 'rm -f /var/log/kpm-control.log');
    expect(leaks(await hostTraces(), [planted])).toEqual([]);
    // the outputs of a run
    expect(leaks([{ what: 'stdout', text: `x${planted}y` }], [planted])).toEqual([`stdout holds ${planted}`]);
  });

  test('right password from KPM_BECOME_PASSWORD, with -D: the nodes are prepared through sudo, and it is nowhere', async () => {
    const before = logins();
    const r = await cli(['-i', inventory, '--tags', 'node', '-D'], { KPM_BECOME_PASSWORD: RIGHT });
    expect(r.code, r.out + r.err).toBe(0);
    const report = JSON.parse(r.report!) as { hosts: Record<string, { status: string; steps: { name: string; status: string; diff?: string }[] }> };
    for (const h of lab.hosts) {
      expect(report.hosts[h.name]!.status).toBe('changed');
      expect(report.hosts[h.name]!.steps.find((s) => s.name === 'verify')!.status).toBe('ok');
    }
    expect(r.out).toContain('+++ /etc/modules-load.d/ipvs.conf'); // -D shows the diffs
    logins().forEach((n, i) => expect(n).toBeGreaterThan(before[i]!));
    // sudo really asked: the login is kpm, and the files are root's
    for (const h of lab.hosts) {
      expect((await lab.exec(h.name, 'stat -c "%U:%G %a" /etc/modules-load.d/ipvs.conf')).stdout).toBe('root:root 644\n');
    }
    // the samples saw the run: the command here, and its scripts running through sudo on the hosts
    expect(r.psLocal.join('\n')).toContain('tasks/cli.ts provision');
    expect(r.psHosts.join('\n')).toMatch(/bash --noprofile --norc -c/);
    expect(leaks(seen, SECRETS)).toEqual([]);
  });

  test('dry run with -D and the password: nothing changes, the password is nowhere', async () => {
    const before = await Promise.all(lab.hosts.map((h) => lab.snapshot(h.name)));
    await lab.exec(lab.hosts[1]!.name, "echo '# local edit' >>/etc/modules-load.d/ipvs.conf");
    const edited = await lab.snapshot(lab.hosts[1]!.name);
    const r = await cli(['-i', inventory, '--tags', 'node', '-C', '-D'], { KPM_BECOME_PASSWORD: RIGHT });
    expect(r.code, r.out + r.err).toBe(0);
    expect(r.out).toContain('-# local edit');
    expect(await lab.snapshot(lab.hosts[0]!.name)).toBe(before[0]);
    expect(await lab.snapshot(lab.hosts[1]!.name)).toBe(edited);
    expect(leaks(seen, SECRETS)).toEqual([]);
  });

  test('a wrong password: every node fails with sudo\'s refusal, the retry file lists them, and neither password is anywhere', async () => {
    const before = await Promise.all(lab.hosts.map((h) => lab.snapshot(h.name)));
    const r = await cli(['-i', inventory, '--tags', 'node', '-D'], { KPM_BECOME_PASSWORD: WRONG });
    expect(r.code, r.out + r.err).toBe(2);
    const report = JSON.parse(r.report!) as { hosts: Record<string, { status: string; reason?: string }> };
    for (const h of lab.hosts) {
      expect(report.hosts[h.name]!.status).toBe('failed');
      expect(report.hosts[h.name]!.reason).toMatch(/sudo refused the become password \(to become root\)/);
    }
    expect(r.retry!.split('\n').filter((l) => l && !l.startsWith('#'))).toEqual(lab.hosts.map((h) => h.name));
    expect(await Promise.all(lab.hosts.map((h) => lab.snapshot(h.name)))).toEqual(before);
    expect(leaks(seen, SECRETS)).toEqual([]);
  });

  test('-K: the password typed at the prompt is not echoed, and works', async () => {
    await lab.exec(lab.hosts[1]!.name, "sed -i '/# local edit/d' /etc/modules-load.d/ipvs.conf");
    const r = await cli(['-i', inventory, '--tags', 'node', '-K', '-D'], {}, { pty: { answer: RIGHT } });
    expect(r.out).toContain('BECOME password:');
    expect(r.code, r.out + r.err).toBe(0);
    const report = JSON.parse(r.report!) as { hosts: Record<string, { status: string }> };
    for (const h of lab.hosts) expect(['ok', 'changed']).toContain(report.hosts[h.name]!.status);
    expect(leaks(seen, SECRETS)).toEqual([]);
  });

  test('a KPM_BECOME_PASSWORD with a line break: refused before any host is contacted (exit 5), without echoing it', async () => {
    const before = logins();
    const r = await cli(['-i', inventory, '--tags', 'node'], { KPM_BECOME_PASSWORD: `${RIGHT}\nsecond-line-secret` }, { sampleHosts: false });
    expect(r.code).toBe(5);
    expect(r.err).toContain('KPM_BECOME_PASSWORD contains a line break or NUL: sudo reads a password only up to the first line break');
    expect(r.out + r.err).not.toContain(RIGHT);
    expect(r.out + r.err).not.toContain('second-line-secret');
    expect(logins()).toEqual(before);
  });

  test('-K without a terminal: refused before any host is contacted, naming KPM_BECOME_PASSWORD', async () => {
    const before = logins();
    const r = await cli(['-i', inventory, '--tags', 'node', '-K'], {}, { sampleHosts: false });
    expect(r.code).not.toBe(0);
    expect(r.err).toContain('--ask-become-pass needs a terminal; without one, set KPM_BECOME_PASSWORD instead');
    expect(r.err).not.toMatch(/\n\s+at /);
    expect(logins()).toEqual(before);
  });

  test.each(['ansible_become_password', 'ansible_password', 'ansible_ssh_pass', 'ansible_become_pass'])(
    'an inventory carrying %s is refused (exit 4, file:line:key), without the value, before any host is contacted',
    async (variable) => {
      const dir = tempDir('kpm-secret-inv-');
      const file = join(dir, 'hosts.yaml');
      const lines = readFileSync(inventory, 'utf8').split('\n');
      // JSON is YAML: the variable goes into all.vars, on a line of its own
      const at = lines.findIndex((l) => l.includes('"ansible_user"'));
      lines.splice(at + 1, 0, `      ${JSON.stringify(variable)}: ${JSON.stringify(RIGHT)},`);
      writeFileSync(file, lines.join('\n'));
      const before = logins();
      // refused before any host is contacted: only this machine's process list can show anything
      const r = await cli(['-i', file, '--tags', 'node'], { KPM_BECOME_PASSWORD: RIGHT }, { sampleHosts: false });
      expect(r.code).toBe(4);
      expect(r.err).toContain(
        `${file}:${at + 2}: all.vars.${variable}: passwords are never read from inventory files; remove this variable and use -K/--ask-become-pass or the environment variable KPM_BECOME_PASSWORD`,
      );
      expect(logins()).toEqual(before);
      expect(leaks(seen, SECRETS)).toEqual([]);
    },
  );

  test('afterwards: no file a host wrote, no host log, no output and no process list holds either password', async () => {
    expect(seen.length).toBeGreaterThan(20);
    expect(leaks(seen, SECRETS)).toEqual([]);
    expect(leaks(await hostTraces(), SECRETS)).toEqual([]);
  });
});
