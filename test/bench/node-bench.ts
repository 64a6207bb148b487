// `npm run bench -- [--hosts 10,50,200] [--forks N] [--reps N] [--variants tool,ansible,floor] [--json FILE]`
//
// The node phase against lab hosts (test/lab/hostlab, real sshd in network namespaces), three ways, on
// the same hosts at the same concurrency:
//   tool     this project's CLI, spawned as its own process (`node --import tsx tasks/cli.ts provision
//            --tags node`), so wall time and peak RSS (GNU time) are the tool's own; SSH exec round trips
//            come from its --report (per host `sshExecs`);
//   ansible  test/bench/ansible/ipvs.yml with Debian's ansible (test/bench/setup.sh installs it);
//   floor    one `ssh HOST bash -s` per host running test/bench/floor.sh: the least any tool can cost.
// For each host count: every variant's first run on fresh hosts (lab.reset before each, the tool's
// dry run on those fresh hosts just before its first run), then no-op reruns, then the tool's dry run on
// converged hosts; each --reps times, in an order rotated per repetition so that a busy spell of the
// machine does not land on one variant. All three leave byte-identical files, so any variant's
// converged hosts are a no-op for the other two. SSH connections per host are counted on the hosts
// themselves (sshd's "Accepted publickey" lines), the same way for all three.
// Prints medians, the ratios tool ÷ Ansible and tool ÷ floor, peak RSS, execs and connections per host.

import { spawn } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { cpus, loadavg, tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { CONNTRACK_MODULE, DEFAULT_IPVS_MODULES } from '../../tasks/node/ipvs-requirements.ts';
import { readTemplate, renderModuleTemplate } from '../../tasks/node/templates.ts';
import { shQuote } from '../../tasks/remote/quote.ts';
import { labSupported, startLab, type Lab, type LabHost } from '../lab/lab.ts';
import { writeAnsibleInventory } from './ansible/inventory.ts';

const BENCH_DIR = path.dirname(fileURLToPath(import.meta.url));
const ROOT = path.resolve(BENCH_DIR, '../..');
const ANSIBLE_DIR = path.join(BENCH_DIR, 'ansible');

const VARIANTS = ['tool', 'ansible', 'floor'] as const;
type Variant = (typeof VARIANTS)[number];
const KINDS = ['first', 'noop', 'dry-fresh', 'dry-converged'] as const;
type Kind = (typeof KINDS)[number];

const PACKAGES = ['ipvsadm', 'ipset', 'conntrack'];
// what the tool puts on a node of this lab (its kernel has no nf_conntrack_ipv4)
const MODULES = [...DEFAULT_IPVS_MODULES, CONNTRACK_MODULE];
const FILES = [
  { path: '/etc/sysconfig/modules/ipvs.modules', mode: '755', content: renderModuleTemplate(readTemplate('ipvs.modules'), MODULES) },
  { path: '/etc/modules-load.d/ipvs.conf', mode: '644', content: renderModuleTemplate(readTemplate('ipvs.conf'), MODULES) },
];

interface Options {
  hosts: number[];
  forks: number;
  reps: number;
  variants: Variant[];
  /** Ansible only up to this many hosts (it needs ~2 s per host on 2 cores) */
  ansibleMaxHosts: number;
  /** repetitions for Ansible (default --reps): its runs take ten times the others' */
  ansibleReps?: number;
  labId: string;
  json?: string;
  /** wait up to this many seconds for a quiet machine before each measurement */
  quietS: number;
  /** which runs to measure (default all); without `first`, the hosts are converged once by the floor, unmeasured */
  kinds: Kind[];
}

interface Sample {
  hosts: number;
  variant: Variant;
  kind: Kind;
  rep: number;
  wallS: number;
  /** the tool's peak RSS */
  rssMiB?: number;
  /** per host, from the tool's report */
  execs?: { min: number; max: number; mean: number };
  /** per host, from the tool's report: scripts sent (several may share one exec) */
  trips?: { min: number; max: number; mean: number };
  /** per host, counted by sshd on the hosts */
  conns: { min: number; max: number; mean: number };
  changedHosts: number;
  problems: string[];
  /** the whole machine's busy CPU over the run, % of all cores */
  machineCpu: number;
  /** the same in CPU seconds: the run's whole cost on this machine, the hosts' side included */
  machineCpuS: number;
  /** the tool process's own CPU seconds (user + system) */
  toolCpuS?: number;
  load1: number;
}

function usage(msg?: string): never {
  if (msg) process.stderr.write(`node-bench: ${msg}\n`);
  process.stderr.write(
    'usage: npm run bench -- [--hosts 10,50,200] [--forks N] [--reps N] [--variants tool,ansible,floor]\n' +
      '                        [--kinds first,noop,dry-fresh,dry-converged] [--ansible-max-hosts N] [--ansible-reps N]\n' +
      '                        [--lab-id ID]\n' +
      '                        [--quiet-wait S] [--json FILE]\n',
  );
  process.exit(msg ? 5 : 0);
}

function parseArgs(argv: string[]): Options {
  const o: Options = { hosts: [10, 50], forks: 10, reps: 3, variants: [...VARIANTS], ansibleMaxHosts: 1000, labId: 'b', quietS: 0, kinds: [...KINDS] };
  const int = (v: string | undefined, name: string, min = 1, max = 1000): number => {
    const n = Number(v);
    if (!Number.isInteger(n) || n < min || n > max) usage(`${name} must be a whole number from ${min} to ${max}`);
    return n;
  };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    const v = () => argv[++i] ?? usage(`${a} needs a value`);
    if (a === '--hosts') o.hosts = [...new Set(v().split(',').map((x) => int(x, '--hosts')))].sort((x, y) => x - y);
    else if (a === '--forks' || a === '-f') o.forks = int(v(), '--forks');
    else if (a === '--reps') o.reps = int(v(), '--reps', 1, 20);
    else if (a === '--variants') {
      const list = v().split(',');
      for (const x of list) if (!(VARIANTS as readonly string[]).includes(x)) usage(`unknown variant ${x}`);
      o.variants = VARIANTS.filter((x) => list.includes(x));
    } else if (a === '--kinds') {
      const list = v().split(',');
      for (const x of list) if (!(KINDS as readonly string[]).includes(x)) usage(`unknown kind ${x} (${KINDS.join(', ')})`);
      o.kinds = KINDS.filter((x) => list.includes(x));
    } else if (a === '--ansible-max-hosts') o.ansibleMaxHosts = int(v(), a, 0);
    else if (a === '--ansible-reps') o.ansibleReps = int(v(), a, 1, 20);
    else if (a === '--lab-id') o.labId = v();
    else if (a === '--quiet-wait') o.quietS = int(v(), a, 0, 3600);
    else if (a === '--json') o.json = v();
    else if (a === '-h' || a === '--help') usage();
    else usage(`unknown argument ${a}`);
  }
  return o;
}

// ---------------------------------------------------------------------------------------------
// Machine

function cpuBusy(): number {
  const f = readFileSync('/proc/stat', 'utf8').split('\n')[0]!.trim().split(/\s+/).slice(1).map(Number);
  // user nice system idle iowait irq softirq steal
  return f[0]! + f[1]! + f[2]! + f[5]! + f[6]! + f[7]!;
}

/** jiffies the cores spent idle while I/O was pending: a run that waits on disks shows here, not as busy */
function cpuIowait(): number {
  return Number(readFileSync('/proc/stat', 'utf8').split('\n')[0]!.trim().split(/\s+/)[5]);
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Wait (up to `maxS`) until the machine is under 10 % busy over 2 s; true when it was. */
async function waitQuiet(maxS: number): Promise<boolean> {
  const end = Date.now() + maxS * 1000;
  for (;;) {
    const a = cpuBusy();
    await sleep(2000);
    if (((cpuBusy() - a) / (2 * 100 * cpus().length)) * 100 < 10) return true;
    if (Date.now() >= end) return false;
    await sleep(3000);
  }
}

interface Proc {
  code: number;
  stdout: string;
  stderr: string;
  ms: number;
}

function run(cmd: string, args: string[], opts: { cwd?: string; env?: NodeJS.ProcessEnv; input?: string } = {}): Promise<Proc> {
  return new Promise((resolve, reject) => {
    const t0 = performance.now();
    const child = spawn(cmd, args, { cwd: opts.cwd ?? ROOT, env: opts.env ?? process.env, stdio: ['pipe', 'pipe', 'pipe'] });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    child.stdout.on('data', (b: Buffer) => out.push(b));
    child.stderr.on('data', (b: Buffer) => err.push(b));
    child.on('error', reject);
    child.on('close', (code) =>
      resolve({ code: code ?? 128, stdout: Buffer.concat(out).toString(), stderr: Buffer.concat(err).toString(), ms: performance.now() - t0 }),
    );
    child.stdin.on('error', () => {});
    child.stdin.end(opts.input ?? '');
  });
}

async function pool<T, R>(items: readonly T[], limit: number, fn: (item: T) => Promise<R>): Promise<R[]> {
  const results = new Array<R>(items.length);
  let next = 0;
  const worker = async () => {
    while (next < items.length) {
      const i = next++;
      results[i] = await fn(items[i]!);
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
  return results;
}

function stats(xs: number[]): { min: number; max: number; mean: number } {
  if (xs.length === 0) return { min: 0, max: 0, mean: 0 };
  return { min: Math.min(...xs), max: Math.max(...xs), mean: xs.reduce((a, b) => a + b, 0) / xs.length };
}

function median(xs: number[]): number | undefined {
  if (xs.length === 0) return undefined;
  const s = [...xs].sort((a, b) => a - b);
  const m = Math.floor(s.length / 2);
  return s.length % 2 ? s[m] : (s[m - 1]! + s[m]!) / 2;
}

// ---------------------------------------------------------------------------------------------
// The hosts

/** sshd's "Accepted publickey" lines per host so far: a connection each, whoever made it. */
function connectionCounts(lab: Lab, hosts: readonly LabHost[]): Map<string, number> {
  const m = new Map<string, number>();
  for (const h of hosts) {
    let n = 0;
    try {
      const log = readFileSync(path.join(lab.stateDir, 'hosts', h.name, 'console.log'), 'utf8');
      for (let i = log.indexOf('Accepted publickey'); i >= 0; i = log.indexOf('Accepted publickey', i + 1)) n++;
    } catch {
      /* a host without a log has had no connection */
    }
    m.set(h.name, n);
  }
  return m;
}

/** The files on one host are what the tool renders: the variants leave identical nodes. */
async function checkFiles(lab: Lab, host: string): Promise<string[]> {
  const problems: string[] = [];
  for (const f of FILES) {
    const r = await lab.exec(host, `stat -c '%a %U %G' ${shQuote(f.path)} && cat ${shQuote(f.path)}`);
    const [attrs, ...rest] = r.stdout.split('\n');
    if (r.code !== 0) problems.push(`${host}: ${f.path} missing`);
    else if (attrs !== `${f.mode} root root`) problems.push(`${host}: ${f.path} is ${attrs}`);
    else if (rest.join('\n') !== f.content) problems.push(`${host}: ${f.path} differs from the tool's template`);
  }
  return problems;
}

// ---------------------------------------------------------------------------------------------
// The three variants

interface Ctx {
  lab: Lab;
  hosts: LabHost[];
  forks: number;
  work: string;
  toolInventory: string;
  ansibleInventory: string;
  floorScript: string;
  seq: number;
}

interface RunOutcome {
  wallS: number;
  rssMiB?: number;
  cpuS?: number;
  execs?: number[];
  trips?: number[];
  changedHosts: number;
  problems: string[];
}

async function runTool(c: Ctx, kind: Kind): Promise<RunOutcome> {
  const id = `${c.hosts.length}-tool-${kind}-${++c.seq}`;
  const report = path.join(c.work, `${id}.report.json`);
  const timeFile = path.join(c.work, `${id}.time`);
  const args = ['--import', 'tsx', 'tasks/cli.ts', 'provision', '-i', c.toolInventory, '--tags', 'node', '--forks', String(c.forks),
    '--report', report, '--retry-file', path.join(c.work, `${id}.retry`), ...(kind.startsWith('dry') ? ['--dry-run'] : [])];
  const env: NodeJS.ProcessEnv = { ...process.env, CI: '1' };
  delete env.NODE_OPTIONS;
  const p = await run('/usr/bin/time', ['-f', '%e %M %U %S', '-o', timeFile, process.execPath, ...args], { env });
  writeFileSync(path.join(c.work, `${id}.log`), p.stdout + p.stderr);
  const problems: string[] = [];
  const [, rssKb, userS, sysS] = readFileSync(timeFile, 'utf8').trim().split('\n').pop()!.split(' ').map(Number);
  let rep: { hosts: Record<string, { status: string; sshExecs: number; sshRoundTrips?: number; steps: { name: string; status: string }[] }>; summary: Record<string, number> };
  try {
    rep = JSON.parse(readFileSync(report, 'utf8'));
  } catch {
    return { wallS: p.ms / 1000, changedHosts: 0, problems: [`no report (exit ${p.code}): ${p.stderr.trim().split('\n').pop()}`] };
  }
  const s = rep.summary;
  if (p.code !== 0) problems.push(`exit ${p.code}`);
  if (s.failed || s.unreachable) problems.push(`${s.failed} failed, ${s.unreachable} unreachable`);
  if (s.hosts !== c.hosts.length) problems.push(`${s.hosts} hosts in the report`);
  if (kind === 'first' && s.changed !== c.hosts.length) problems.push(`changed ${s.changed} of ${c.hosts.length}`);
  if (kind === 'first' && Object.values(rep.hosts).some((h) => h.steps.find((x) => x.name === 'verify')?.status !== 'ok')) problems.push('verify not ok everywhere');
  if ((kind === 'noop' || kind === 'dry-converged') && s.ok !== c.hosts.length) problems.push(`ok ${s.ok} of ${c.hosts.length}: not a no-op`);
  return {
    wallS: p.ms / 1000,
    ...(rssKb ? { rssMiB: rssKb / 1024 } : {}),
    ...(userS !== undefined && sysS !== undefined ? { cpuS: userS + sysS } : {}),
    execs: Object.values(rep.hosts).map((h) => h.sshExecs),
    trips: Object.values(rep.hosts).map((h) => h.sshRoundTrips ?? h.sshExecs),
    changedHosts: s.changed ?? 0,
    problems,
  };
}

async function runAnsible(c: Ctx, kind: Kind): Promise<RunOutcome> {
  const id = `${c.hosts.length}-ansible-${kind}-${++c.seq}`;
  // a fresh home and control-socket directory: no run reuses another's connections (short: socket paths)
  const home = mkdtempSync(path.join(tmpdir(), 'kpmba-'));
  const env: NodeJS.ProcessEnv = {
    ...process.env,
    ANSIBLE_CONFIG: path.join(ANSIBLE_DIR, 'ansible.cfg'),
    ANSIBLE_HOME: path.join(home, 'home'),
    ANSIBLE_LOCAL_TEMP: path.join(home, 'tmp'),
    ANSIBLE_SSH_CONTROL_PATH_DIR: path.join(home, 'cp'),
    ANSIBLE_NOCOLOR: '1',
    ANSIBLE_FORCE_COLOR: '0',
  };
  const p = await run('ansible-playbook', ['-i', c.ansibleInventory, '-f', String(c.forks), 'ipvs.yml'], { cwd: ANSIBLE_DIR, env });
  writeFileSync(path.join(c.work, `${id}.log`), p.stdout + p.stderr);
  // ControlPersist masters outlive the playbook: end them with their directory
  await run('bash', ['-c', 'for s in "$1"/*; do [ -S "$s" ] && ssh -o ControlPath="$s" -O exit x >/dev/null 2>&1; done; true', '_', path.join(home, 'cp')]);
  rmSync(home, { recursive: true, force: true });
  const problems: string[] = [];
  let changedHosts = 0;
  let seen = 0;
  for (const m of p.stdout.matchAll(/^(\S+)\s+: ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)/gm)) {
    seen++;
    if (Number(m[3]) > 0) changedHosts++;
    if (Number(m[4]) || Number(m[5])) problems.push(`${m[1]} unreachable=${m[4]} failed=${m[5]}`);
  }
  if (p.code !== 0) problems.push(`exit ${p.code}`);
  if (seen !== c.hosts.length) problems.push(`${seen} hosts in the recap`);
  if (kind === 'first' && changedHosts !== c.hosts.length) problems.push(`changed ${changedHosts} of ${c.hosts.length}`);
  if (kind === 'noop' && changedHosts !== 0) problems.push(`changed ${changedHosts}: not a no-op`);
  return { wallS: p.ms / 1000, changedHosts, problems: problems.slice(0, 5) };
}

async function runFloor(c: Ctx, kind: Kind): Promise<RunOutcome> {
  const id = `${c.hosts.length}-floor-${kind}-${++c.seq}`;
  const t0 = performance.now();
  const results = await pool(c.hosts, c.forks, (h) =>
    run('ssh', ['-F', c.lab.sshConfig, '-o', 'BatchMode=yes', h.name, 'bash -s'], { input: c.floorScript }).then((p) => ({ h: h.name, p })),
  );
  const wallS = (performance.now() - t0) / 1000;
  writeFileSync(path.join(c.work, `${id}.log`), results.map((r) => `${r.h} ${r.p.code} ${r.p.stdout.trim()} ${r.p.stderr.trim()}`).join('\n') + '\n');
  const problems: string[] = [];
  let changedHosts = 0;
  for (const { h, p } of results) {
    const m = /changed=(\d+) failed=(\d+)/.exec(p.stdout);
    if (p.code !== 0 || !m || m[2] !== '0') problems.push(`${h}: exit ${p.code} ${p.stdout.trim()} ${p.stderr.trim().split('\n').pop() ?? ''}`);
    if (m && Number(m[1]) > 0) changedHosts++;
  }
  if (kind === 'first' && changedHosts !== c.hosts.length) problems.push(`changed ${changedHosts} of ${c.hosts.length}`);
  if (kind === 'noop' && changedHosts !== 0) problems.push(`changed ${changedHosts}: not a no-op`);
  return { wallS, changedHosts, problems: problems.slice(0, 5) };
}

const RUNNERS: Record<Variant, (c: Ctx, k: Kind) => Promise<RunOutcome>> = { tool: runTool, ansible: runAnsible, floor: runFloor };

async function measure(c: Ctx, o: Options, variant: Variant, kind: Kind, rep: number): Promise<Sample> {
  const quiet = o.quietS > 0 ? await waitQuiet(o.quietS) : undefined;
  const before = connectionCounts(c.lab, c.hosts);
  const load1 = loadavg()[0]!;
  const busy0 = cpuBusy();
  const iowait0 = cpuIowait();
  const t0 = Date.now();
  const r = await RUNNERS[variant](c, kind);
  const busy = cpuBusy() - busy0;
  const iowait = cpuIowait() - iowait0;
  const wallMs = Math.max(1, Date.now() - t0);
  const after = connectionCounts(c.lab, c.hosts);
  const conns = c.hosts.map((h) => after.get(h.name)! - before.get(h.name)!);
  if (kind === 'first' && r.problems.length === 0) r.problems.push(...(await checkFiles(c.lab, c.hosts[0]!.name)));
  const sample: Sample = {
    hosts: c.hosts.length,
    variant,
    kind,
    rep,
    wallS: r.wallS,
    ...(r.rssMiB !== undefined ? { rssMiB: r.rssMiB } : {}),
    ...(r.execs ? { execs: stats(r.execs) } : {}),
    ...(r.trips ? { trips: stats(r.trips) } : {}),
    conns: stats(conns),
    changedHosts: r.changedHosts,
    problems: r.problems,
    machineCpu: Math.round(((busy * 10) / (wallMs * cpus().length)) * 100),
    machineCpuS: busy / 100,
    ...(r.cpuS !== undefined ? { toolCpuS: r.cpuS } : {}),
    load1,
  };
  const extra = [
    sample.rssMiB !== undefined ? `rss ${sample.rssMiB.toFixed(0)} MiB` : '',
    sample.execs ? `execs/host ${fmtRange(sample.execs)}${sample.trips ? ` (round trips ${fmtRange(sample.trips)})` : ''}` : '',
    `conns/host ${fmtRange(sample.conns)}`,
    sample.toolCpuS !== undefined ? `tool cpu ${sample.toolCpuS.toFixed(1)} s` : '',
    `machine ${sample.machineCpu}% busy (${sample.machineCpuS.toFixed(0)} cpu-s, iowait ${(iowait / 100).toFixed(0)} s), load ${load1.toFixed(1)}${quiet === false ? ' (BUSY)' : ''}`,
  ].filter(Boolean);
  log(`${String(c.hosts.length).padStart(4)} hosts  ${variant.padEnd(7)} ${kind.padEnd(13)} rep ${rep}: ${sample.wallS.toFixed(2)} s  ${extra.join(', ')}` +
    (sample.problems.length ? `  PROBLEM: ${sample.problems.join('; ')}` : ''));
  return sample;
}

function fmtRange(s: { min: number; max: number }): string {
  return s.min === s.max ? String(s.min) : `${s.min}-${s.max}`;
}

function log(line: string): void {
  process.stdout.write(line + '\n');
}

// ---------------------------------------------------------------------------------------------
// One host count

function floorScript(): string {
  const prelude = [
    `FLOOR_PACKAGES=${shQuote(PACKAGES.join(' '))}`,
    `FLOOR_MODULES=${shQuote(MODULES.join(' '))}`,
    `FLOOR_SCRIPT=${shQuote(FILES[0]!.content)}`,
    `FLOOR_CONF=${shQuote(FILES[1]!.content)}`,
  ].join('\n');
  return `${prelude}\n${readFileSync(path.join(BENCH_DIR, 'floor.sh'), 'utf8')}`;
}

function writeToolInventory(file: string, lab: Lab, hosts: readonly LabHost[]): void {
  const inv = {
    all: {
      vars: {
        ansible_user: 'root',
        ansible_ssh_private_key_file: lab.key,
        kpm_known_hosts_file: lab.knownHosts,
        kpm_connect_timeout: 30,
      },
      hosts: Object.fromEntries(hosts.map((h) => [h.name, { ansible_host: h.address, ansible_port: h.port }])),
    },
  };
  writeFileSync(file, JSON.stringify(inv, null, 1));
}

/** Hosts that a run may have changed since they were last fresh: only these need a reset. */
const dirty = new Set<string>();

async function benchHostCount(lab: Lab, n: number, o: Options, work: string): Promise<Sample[]> {
  const hosts = lab.hosts.slice(0, n);
  const dir = path.join(work, String(n));
  mkdirSync(dir, { recursive: true });
  const c: Ctx = {
    lab,
    hosts,
    forks: o.forks,
    work: dir,
    toolInventory: path.join(dir, 'inventory.yaml'),
    ansibleInventory: writeAnsibleInventory(path.join(dir, 'ansible-inventory.yaml'), { hosts, privateKey: lab.key, knownHosts: lab.knownHosts }),
    floorScript: floorScript(),
    seq: 0,
  };
  writeToolInventory(c.toolInventory, lab, hosts);
  const variants = o.variants.filter((v) => v !== 'ansible' || n <= o.ansibleMaxHosts);
  const samples: Sample[] = [];
  const names = hosts.map((h) => h.name);
  const rotate = (rep: number) =>
    variants.map((_, i) => variants[(i + rep) % variants.length]!).filter((v) => v !== 'ansible' || rep <= (o.ansibleReps ?? o.reps));

  const want = (k: Kind) => o.kinds.includes(k);
  const reset = async () => {
    const stale = names.filter((h) => dirty.has(h));
    if (stale.length === 0) return;
    const t0 = Date.now();
    await lab.reset(...stale);
    for (const h of stale) dirty.delete(h);
    log(`${String(n).padStart(4)} hosts  ${stale.length} reset to fresh in ${((Date.now() - t0) / 1000).toFixed(1)} s`);
  };
  const changed = () => names.forEach((h) => dirty.add(h));
  if (want('first')) {
    for (let rep = 1; rep <= o.reps; rep++) {
      for (const v of rotate(rep)) {
        await reset();
        if (v === 'tool' && want('dry-fresh')) samples.push(await measure(c, o, 'tool', 'dry-fresh', rep));
        changed();
        samples.push(await measure(c, o, v, 'first', rep));
      }
    }
  } else if (want('dry-fresh') && variants.includes('tool')) {
    await reset();
    for (let rep = 1; rep <= o.reps; rep++) samples.push(await measure(c, o, 'tool', 'dry-fresh', rep));
  }
  if (want('noop') || want('dry-converged')) {
    if (!want('first')) {
      changed();
      const r = await runFloor(c, 'first');
      if (r.problems.length) throw new Error(`could not converge the hosts: ${r.problems.join('; ')}`);
    }
    if (want('noop')) for (let rep = 1; rep <= o.reps; rep++) for (const v of rotate(rep)) samples.push(await measure(c, o, v, 'noop', rep));
    if (want('dry-converged') && variants.includes('tool')) for (let rep = 1; rep <= o.reps; rep++) samples.push(await measure(c, o, 'tool', 'dry-converged', rep));
  }
  return samples;
}

// ---------------------------------------------------------------------------------------------
// The table

function summarize(samples: Sample[], o: Options): string {
  const out: string[] = [];
  const counts = [...new Set(samples.map((s) => s.hosts))];
  const med = (n: number, v: Variant, k: Kind) => median(samples.filter((s) => s.hosts === n && s.variant === v && s.kind === k && s.problems.length === 0).map((s) => s.wallS));
  const f = (x: number | undefined) => (x === undefined ? '-' : x.toFixed(2));
  const r = (a: number | undefined, b: number | undefined) => (a === undefined || b === undefined ? '-' : `${(a / b).toFixed(2)}`);
  const x = (a: number | undefined, b: number | undefined) => (a === undefined || b === undefined ? '-' : `${(b / a).toFixed(1)}x`);
  out.push(
    `node phase, forks ${o.forks}, medians of ${o.reps} run${o.reps > 1 ? 's' : ''}${o.ansibleReps && o.ansibleReps !== o.reps ? ` (Ansible: ${o.ansibleReps})` : ''} (seconds); ` +
      `${new Date().toISOString().slice(0, 10)}, ${cpus().length} cores`,
  );
  out.push('');
  out.push('| hosts | variant | first run | no-op rerun | dry run (fresh) | dry run (converged) |');
  out.push('|---:|---|---:|---:|---:|---:|');
  for (const n of counts) {
    for (const v of VARIANTS) {
      if (!samples.some((s) => s.hosts === n && s.variant === v)) continue;
      out.push(`| ${n} | ${v} | ${f(med(n, v, 'first'))} | ${f(med(n, v, 'noop'))} | ${f(med(n, v, 'dry-fresh'))} | ${f(med(n, v, 'dry-converged'))} |`);
    }
  }
  out.push('');
  out.push('| hosts | first: tool ÷ Ansible | no-op: tool ÷ Ansible | first: tool ÷ floor | no-op: tool ÷ floor | dry (fresh) ÷ floor no-op | tool peak RSS | SSH execs (round trips)/host first, no-op, dry | connections/host tool, Ansible, floor |');
  out.push('|---:|---:|---:|---:|---:|---:|---:|---|---|');
  for (const n of counts) {
    const t = (k: Kind) => med(n, 'tool', k);
    const tool = samples.filter((s) => s.hosts === n && s.variant === 'tool');
    const rss = Math.max(0, ...tool.map((s) => s.rssMiB ?? 0));
    const ex = (k: Kind) => {
      const xs = tool.filter((s) => s.kind === k && s.execs);
      const range = (pick: (s: Sample) => { min: number; max: number }) => fmtRange({ min: Math.min(...xs.map((s) => pick(s).min)), max: Math.max(...xs.map((s) => pick(s).max)) });
      return xs.length ? `${range((s) => s.execs!)} (${range((s) => s.trips ?? s.execs!)})` : '-';
    };
    const cn = (v: Variant) => {
      const xs = samples.filter((s) => s.hosts === n && s.variant === v);
      return xs.length ? fmtRange({ min: Math.min(...xs.map((s) => s.conns.min)), max: Math.max(...xs.map((s) => s.conns.max)) }) : '-';
    };
    out.push(
      `| ${n} | ${r(t('first'), med(n, 'ansible', 'first'))} (${x(t('first'), med(n, 'ansible', 'first'))} faster) | ${r(t('noop'), med(n, 'ansible', 'noop'))} (${x(t('noop'), med(n, 'ansible', 'noop'))} faster) ` +
        `| ${r(t('first'), med(n, 'floor', 'first'))} | ${r(t('noop'), med(n, 'floor', 'noop'))} | ${r(t('dry-fresh'), med(n, 'floor', 'noop'))} ` +
        `| ${rss ? `${rss.toFixed(0)} MiB` : '-'} | ${ex('first')}, ${ex('noop')}, ${ex('dry-fresh')} | ${cn('tool')}, ${cn('ansible')}, ${cn('floor')} |`,
    );
  }
  const bad = samples.filter((s) => s.problems.length);
  if (bad.length) {
    out.push('');
    out.push(`${bad.length} run(s) had problems and are left out of the medians:`);
    for (const s of bad) out.push(`  ${s.hosts} hosts ${s.variant} ${s.kind} rep ${s.rep}: ${s.problems.join('; ')}`);
  }
  const busy = samples.map((s) => s.machineCpu);
  out.push('');
  out.push(`machine: ${cpus().length} cores, ${Math.min(...busy)}-${Math.max(...busy)}% busy during the runs (everything on it, the hosts included); load average at the starts ${Math.min(...samples.map((s) => s.load1)).toFixed(1)}-${Math.max(...samples.map((s) => s.load1)).toFixed(1)}`);
  return out.join('\n');
}

// ---------------------------------------------------------------------------------------------

async function main(): Promise<void> {
  const o = parseArgs(process.argv.slice(2));
  const support = labSupported();
  if (!support.ok) {
    process.stderr.write(`node-bench: ${support.reason}\n`);
    process.exit(1);
  }
  if (o.variants.includes('ansible') && !existsSync('/usr/bin/ansible-playbook')) {
    process.stderr.write('node-bench: ansible-playbook is missing: run test/bench/setup.sh (or --variants tool,floor)\n');
    process.exit(1);
  }
  if (!existsSync('/usr/bin/time')) {
    process.stderr.write('node-bench: /usr/bin/time (GNU time, for peak RSS) is missing: run test/bench/setup.sh\n');
    process.exit(1);
  }
  const max = Math.max(...o.hosts);
  const work = mkdtempSync(path.join(tmpdir(), 'kpm-bench-'));
  log(`node-bench: hosts ${o.hosts.join(', ')}, forks ${o.forks}, ${o.reps} repetitions, variants ${o.variants.join(', ')}; logs and reports in ${work}`);
  const t0 = Date.now();
  const lab = await startLab({ hosts: max, kmodShim: true, id: o.labId });
  log(`lab ${o.labId}: ${max} hosts up in ${((Date.now() - t0) / 1000).toFixed(1)} s`);
  const samples: Sample[] = [];
  try {
    for (const n of o.hosts) samples.push(...(await benchHostCount(lab, n, o, work)));
  } finally {
    await lab.down();
  }
  const table = summarize(samples, o);
  log('');
  log(table);
  if (o.json) writeFileSync(o.json, JSON.stringify({ options: o, samples }, null, 1) + '\n');
}

await main();
