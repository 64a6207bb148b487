// TypeScript face of the kpm test lab (test/lab/hostlab/): real sshd "worker nodes" in network
// namespaces on this machine, for the lab tests and `npm run demo`.
//
//   const lab = await startLab({ hosts: 3, kmodShim: true, id: 'x' });
//   ssh -F lab.sshConfig node001 ...      or   await lab.exec('node001', 'lsmod')
//   await lab.down();
//
// A lab is named by its id (1-6 of [a-z0-9]); every id gets its own state directory, bridge and
// /16, so labs with different ids run side by side:
//   state   /tmp/kpm-lab-<id>          bridge (and netns prefix)  kpml<id>
//   subnet  a single letter maps to 10.(77 + its place in the alphabet): a = 10.77, b = 10.78,
//           c = 10.79 ... z = 10.102; any other id to 10.(103 + fnv1a(id) % 97), i.e. 10.103 to
//           10.199.  If that /16 is already on one of the machine's interfaces (another lab),
//           the next free one in 10.103-10.199 is used.
//   cache   /tmp/kpm-lab-cache, shared by all labs (the rootfs, built once per machine).
// Only loopback, the lab bridge and the hosts' own namespaces carry lab traffic: hosts have no
// default route and apt inside them uses an offline repository.

import { execFileSync, spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import { lstat, readFile, readdir, readlink } from 'node:fs/promises';
import { constants as osConstants } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { cleanupOnExit } from '../cleanup-on-exit.ts';

export const HOSTLAB_DIR = path.join(path.dirname(fileURLToPath(import.meta.url)), 'hostlab');
export const LAB_CACHE = '/tmp/kpm-lab-cache';
/** Non-root login on every host whose sudo asks for LAB_SUDO_PASSWORD. */
export const LAB_SUDO_USER = 'kpm';
export const LAB_SUDO_PASSWORD = 'lab-sudo-secret';
/** Non-root login on every host with passwordless sudo. */
export const LAB_NOPASSWD_USER = 'kpmnopw';

export interface LabHost {
  name: string;
  address: string;
  port: number;
  user: string;
  key: string;
  /** machine-side PID of the host's PID 1; null while the host is stopped */
  pid: number | null;
}

export interface ExecResult {
  stdout: string;
  stderr: string;
  code: number;
}

export interface Lab {
  id: string;
  stateDir: string;
  /** updated in place by restart/reset/stop/start (pid) */
  hosts: LabHost[];
  key: string;
  knownHosts: string;
  sshConfig: string;
  ansibleInventory: string;
  /** Run `bash -c cmd` as root inside the host's namespaces (nsenter, no SSH); never throws on a non-zero exit. */
  exec(host: string, cmd: string): Promise<ExecResult>;
  /** "Reboot": processes, /run and shim-loaded modules go; the disk stays; modules-load.d is loaded again. */
  restart(...hosts: string[]): Promise<void>;
  /** Fresh disk, same name, address and SSH host key. */
  reset(...hosts: string[]): Promise<void>;
  /** Power off: SSH connections are refused until start(). */
  stop(...hosts: string[]): Promise<void>;
  start(...hosts: string[]): Promise<void>;
  /** Tear the lab down; safe to call more than once. */
  down(): Promise<void>;
  /**
   * A digest of the host's state that is equal iff nothing was changed: the overlay upper layer
   * (path, type, mode, owner, size and sha256 of every file; directories only where they differ
   * from the base image; whiteouts and opaque directories), `dpkg -l`, the kmod shim's registry
   * and its log.  Login bookkeeping (lastlog, wtmp, btmp, faillog, sudo's lecture marks) and apt's
   * planner log (written even by `apt-get -s`) are left out, so that connecting and reading do not
   * count as a change.
   */
  snapshot(host: string): Promise<string>;
  /** The text snapshot() digests, for diffing when two snapshots differ. */
  manifest(host: string): Promise<string>;
}

export interface StartLabOptions {
  hosts: number;
  /** Stack the kmod test fixture (stand-in modprobe/lsmod/rmmod); default false. */
  kmodShim?: boolean;
  /** Default 'a'. */
  id?: string;
}

// ---------------------------------------------------------------------------------------------
// Environment checks

export function labSupported(): { ok: boolean; reason?: string } {
  if (process.platform !== 'linux') return { ok: false, reason: `the lab needs Linux (this is ${process.platform})` };
  if (typeof process.getuid !== 'function' || process.getuid() !== 0) {
    return { ok: false, reason: 'the lab needs root (it creates network namespaces, a bridge and overlay mounts)' };
  }
  let filesystems = '';
  try {
    filesystems = readFileSync('/proc/filesystems', 'utf8');
  } catch {
    /* reported below */
  }
  if (!/\boverlay\b/.test(filesystems)) return { ok: false, reason: 'the kernel has no overlayfs' };
  const probe = `kpmlprobe${process.pid}`;
  try {
    if (hasCommand('ip')) {
      execFileSync('ip', ['netns', 'add', probe], { stdio: 'pipe' });
      execFileSync('ip', ['netns', 'del', probe], { stdio: 'pipe' });
    } else {
      if (!hasCommand('apt-get')) return { ok: false, reason: '`ip` (iproute2) is missing and there is no apt-get to install it' };
      execFileSync('unshare', ['--net', '--mount', 'true'], { stdio: 'pipe' });
    }
  } catch (e) {
    return { ok: false, reason: `cannot create a network namespace: ${firstLine(errText(e))}` };
  }
  return { ok: true };
}

function hasCommand(cmd: string): boolean {
  const dirs = (process.env.PATH ?? '/usr/sbin:/usr/bin:/sbin:/bin').split(':').concat(['/usr/sbin', '/sbin']);
  return dirs.some((d) => d !== '' && existsSync(path.join(d, cmd)));
}

// ---------------------------------------------------------------------------------------------
// Naming

const ID_RE = /^[a-z0-9]{1,6}$/;

function fnv1a(s: string): number {
  let h = 0x811c9dc5;
  for (const ch of Buffer.from(s)) {
    h ^= ch;
    h = Math.imul(h, 0x01000193) >>> 0;
  }
  return h;
}

/** Candidate /16 prefixes for a lab id, preferred first (see the mapping at the top of this file). */
export function labNetPrefixes(id: string): string[] {
  const out: number[] = [];
  if (/^[a-z]$/.test(id)) out.push(77 + id.charCodeAt(0) - 97);
  const start = fnv1a(id) % 97;
  for (let k = 0; k < 97; k++) out.push(103 + ((start + k) % 97));
  return [...new Set(out)].map((n) => `10.${n}`);
}

function prefixesInUse(): Set<string> {
  const used = new Set<string>();
  try {
    const out = execFileSync('ip', ['-4', '-o', 'addr', 'show'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] });
    for (const m of out.matchAll(/\binet (\d+)\.(\d+)\./g)) used.add(`${m[1]}.${m[2]}`);
  } catch {
    /* no `ip` yet: up.sh installs it and checks again */
  }
  return used;
}

function stateDirFor(id: string): string {
  return `/tmp/kpm-lab-${id}`;
}

function baseEnv(id: string, netPrefix?: string): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  // The lab's settings come from the id alone, whatever the caller's shell exported.
  for (const [k, v] of Object.entries(process.env)) if (!k.startsWith('LAB_')) env[k] = v;
  env.PATH = `${env.PATH ?? ''}:/usr/local/sbin:/usr/sbin:/sbin`;
  env.LAB_STATE = stateDirFor(id);
  env.LAB_CACHE = LAB_CACHE;
  env.LAB_BRIDGE = `kpml${id}`;
  env.LAB_NET = 'netns';
  env.LAB_APT = 'local';
  if (netPrefix) env.LAB_NET_PREFIX = netPrefix;
  return env;
}

// ---------------------------------------------------------------------------------------------
// Processes

interface RunOptions {
  env: NodeJS.ProcessEnv;
  input?: string;
}

function run(file: string, args: string[], opts: RunOptions): Promise<ExecResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(file, args, { env: opts.env, stdio: ['pipe', 'pipe', 'pipe'] });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    child.stdout.on('data', (b: Buffer) => out.push(b));
    child.stderr.on('data', (b: Buffer) => err.push(b));
    child.on('error', reject);
    child.on('close', (code, signal) => {
      const signo = signal ? ((osConstants.signals as Record<string, number>)[signal] ?? 0) : 0;
      resolve({
        stdout: Buffer.concat(out).toString('utf8'),
        stderr: Buffer.concat(err).toString('utf8'),
        code: code ?? 128 + signo,
      });
    });
    child.stdin.on('error', () => {
      /* the command may exit without reading its input */
    });
    child.stdin.end(opts.input ?? '');
  });
}

function tail(text: string, lines = 30): string {
  return text.trimEnd().split('\n').slice(-lines).join('\n');
}

function firstLine(text: string): string {
  return text.trim().split('\n')[0] ?? '';
}

function errText(e: unknown): string {
  const x = e as { stderr?: Buffer | string; message?: string };
  const s = x.stderr ? x.stderr.toString() : '';
  return s.trim() !== '' ? s : (x.message ?? String(e));
}

const script = (name: string): string => path.join(HOSTLAB_DIR, name);

// ---------------------------------------------------------------------------------------------
// Teardown whatever happens to the test process

const liveLabs = new Map<string, NodeJS.ProcessEnv>();

function downSync(env: NodeJS.ProcessEnv): void {
  try {
    execFileSync(script('down.sh'), [], { env, stdio: 'ignore', timeout: 180_000 });
  } catch {
    /* nothing more can be done while exiting; the next startLab with this id cleans up */
  }
}

function teardownAllSync(): void {
  for (const [id, env] of [...liveLabs]) {
    liveLabs.delete(id);
    downSync(env);
  }
}

// ---------------------------------------------------------------------------------------------
// The lab

interface InventoryJson {
  state_dir: string;
  ssh_key: string;
  known_hosts: string;
  ssh_config: string;
  ansible_inventory: string;
  hosts: LabHost[];
}

function readInventory(stateDir: string): InventoryJson {
  return JSON.parse(readFileSync(path.join(stateDir, 'inventory.json'), 'utf8')) as InventoryJson;
}

async function bridgeExists(name: string, env: NodeJS.ProcessEnv): Promise<boolean> {
  try {
    return (await run('ip', ['link', 'show', name], { env })).code === 0;
  } catch {
    return false;
  }
}

export async function startLab(opts: StartLabOptions): Promise<Lab> {
  const id = opts.id ?? 'a';
  if (!ID_RE.test(id)) throw new Error(`lab id must be 1-6 characters of [a-z0-9], got ${JSON.stringify(id)}`);
  if (!Number.isInteger(opts.hosts) || opts.hosts < 1 || opts.hosts > 1000) {
    throw new Error(`hosts must be an integer from 1 to 1000, got ${opts.hosts}`);
  }
  const supported = labSupported();
  if (!supported.ok) throw new Error(`the kpm test lab cannot run here: ${supported.reason}`);
  if (liveLabs.has(id)) throw new Error(`lab ${id} is already running in this process`);

  const stateDir = stateDirFor(id);
  const bridge = `kpml${id}`;
  // A lab left behind by a killed test run: its lab.env tells down.sh what to remove.
  const staleEnv = baseEnv(id);
  if (existsSync(stateDir) || (await bridgeExists(bridge, staleEnv))) {
    const r = await run(script('down.sh'), [], { env: staleEnv });
    if (r.code !== 0) throw new Error(`could not remove the stale lab ${id} in ${stateDir}:\n${tail(r.stderr)}`);
    if (await bridgeExists(bridge, staleEnv)) await run('ip', ['link', 'del', bridge], { env: staleEnv });
  }

  const used = prefixesInUse();
  const netPrefix = labNetPrefixes(id).find((p) => !used.has(p));
  if (!netPrefix) throw new Error('no free 10.x.0.0/16 for the lab');
  const env = baseEnv(id, netPrefix);

  cleanupOnExit(teardownAllSync);
  liveLabs.set(id, env);
  const args = [String(opts.hosts), ...(opts.kmodShim ? ['--kmod-shim'] : [])];
  let up: ExecResult;
  try {
    up = await run(script('up.sh'), args, { env });
  } catch (e) {
    liveLabs.delete(id);
    downSync(env);
    throw new Error(`could not run up.sh: ${errText(e)}`);
  }
  if (up.code !== 0) {
    liveLabs.delete(id);
    await run(script('down.sh'), [], { env });
    throw new Error(`up.sh ${args.join(' ')} failed (exit ${up.code}) for lab ${id}:\n${tail(up.stderr)}`);
  }

  const inv = readInventory(stateDir);
  const hosts: LabHost[] = inv.hosts.map((h) => ({ ...h }));
  const lowerDirs = readFileSync(path.join(stateDir, 'lab.env'), 'utf8')
    .match(/^LAB_LOWER=(.*)$/m)?.[1]
    ?.split(':')
    .filter((d) => d !== '') ?? [];
  let downPromise: Promise<void> | null = null;

  const hostNames = new Set(hosts.map((h) => h.name));
  const checkHosts = (names: string[]): void => {
    for (const n of names) if (!hostNames.has(n)) throw new Error(`lab ${id} has no host ${JSON.stringify(n)}`);
  };
  const checkUp = (): void => {
    if (downPromise) throw new Error(`lab ${id} has been torn down`);
  };

  const refresh = (): void => {
    const fresh = readInventory(stateDir);
    for (const h of hosts) h.pid = fresh.hosts.find((f) => f.name === h.name)?.pid ?? null;
  };

  let queue: Promise<unknown> = Promise.resolve();
  const hostctl = (verb: string) => async (...names: string[]): Promise<void> => {
    checkUp();
    if (names.length === 0) throw new Error(`${verb}: name at least one host`);
    checkHosts(names);
    const job = queue.then(async () => {
      const r = await run(script('hostctl.sh'), [verb, ...names], { env });
      refresh();
      if (r.code !== 0) throw new Error(`hostctl.sh ${verb} ${names.join(' ')} failed (exit ${r.code}):\n${tail(r.stderr)}`);
    });
    queue = job.catch(() => undefined);
    return job;
  };

  const exec = async (host: string, cmd: string): Promise<ExecResult> => {
    checkUp();
    checkHosts([host]);
    const r = await run(
      script('hostctl.sh'),
      ['exec', host, 'env', '-i', 'PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin', 'HOME=/root',
        'LANG=C.UTF-8', 'TERM=dumb', 'bash', '-c', cmd],
      { env },
    );
    if (r.code !== 0 && /^\[kpm-lab [\d:]+\] ERROR: /m.test(r.stderr) && r.stdout === '') {
      const m = /^\[kpm-lab [\d:]+\] ERROR: (.*)$/m.exec(r.stderr);
      if (m && /is not running|no lab is up/.test(m[1] ?? '')) throw new Error(`exec on ${host}: ${m[1]}`);
    }
    return r;
  };

  const manifest = async (host: string): Promise<string> => {
    checkUp();
    checkHosts([host]);
    const upper = path.join(stateDir, 'hosts', host, 'upper');
    const tree = await upperManifest(upper, lowerDirs, env);
    const r = await exec(
      host,
      'dpkg -l; echo "== kmod shim registry"; cat /run/kpm-lab-kmod/loaded 2>/dev/null; ' +
        'echo "== kmod shim log"; cat /var/log/kpm-lab-kmod.log 2>/dev/null; true',
    );
    if (r.code !== 0) throw new Error(`snapshot of ${host}: reading its state failed (exit ${r.code}): ${tail(r.stderr, 5)}`);
    return `== upper layer\n${tree}== dpkg -l\n${r.stdout}`;
  };

  const lab: Lab = {
    id,
    stateDir,
    hosts,
    key: inv.ssh_key,
    knownHosts: inv.known_hosts,
    sshConfig: inv.ssh_config,
    ansibleInventory: inv.ansible_inventory,
    exec,
    restart: hostctl('restart'),
    reset: hostctl('reset'),
    stop: hostctl('stop'),
    start: hostctl('start'),
    down(): Promise<void> {
      downPromise ??= (async () => {
        await queue;
        liveLabs.delete(id);
        const r = await run(script('down.sh'), [], { env });
        if (r.code !== 0) throw new Error(`down.sh failed for lab ${id} (exit ${r.code}):\n${tail(r.stderr)}`);
      })();
      return downPromise;
    },
    manifest,
    async snapshot(host: string): Promise<string> {
      return createHash('sha256').update(await manifest(host)).digest('hex');
    },
  };
  return lab;
}

// ---------------------------------------------------------------------------------------------
// Snapshot of an overlay upper layer

/**
 * Written by merely logging in, using sudo or asking apt for a plan (`apt-get -s` rewrites its
 * planner log), on a real host as much as here: not a change made by the tool under test.
 */
const VOLATILE = new Set(['var/log/lastlog', 'var/log/wtmp', 'var/log/btmp', 'var/log/faillog', 'var/log/apt/eipp.log.xz']);
const VOLATILE_PREFIXES = ['var/lib/sudo/lectured/', 'run/'];

function isVolatile(rel: string): boolean {
  return VOLATILE.has(rel) || VOLATILE_PREFIXES.some((p) => rel.startsWith(p));
}

/** overlayfs' own xattrs that change what the merged view shows (opaque dirs, renamed dirs). */
async function overlayXattrs(upper: string, env: NodeJS.ProcessEnv): Promise<Map<string, string>> {
  const r = await run('getfattr', ['-R', '-P', '-h', '--absolute-names', '-d', '-m', '^trusted\\.overlay\\.(opaque|redirect)$', upper], { env });
  if (r.code !== 0 && r.stdout === '') throw new Error(`getfattr on ${upper} failed: ${tail(r.stderr, 5)}`);
  const out = new Map<string, string>();
  let file = '';
  for (const line of r.stdout.split('\n')) {
    if (line.startsWith('# file: ')) file = path.relative(upper, line.slice(8));
    else if (line.startsWith('trusted.overlay.') && file !== '') out.set(file, `${out.get(file) ?? ''} ${line}`.trim());
  }
  return out;
}

async function lowerDirMatches(lowerDirs: string[], rel: string, mode: number, uid: number, gid: number): Promise<boolean> {
  for (const lower of lowerDirs) {
    try {
      const st = await lstat(path.join(lower, rel));
      return st.isDirectory() && st.mode === mode && st.uid === uid && st.gid === gid;
    } catch {
      /* not in this layer: look further down */
    }
  }
  return false;
}

async function upperManifest(upper: string, lowerDirs: string[], env: NodeJS.ProcessEnv): Promise<string> {
  const xattrs = await overlayXattrs(upper, env);
  const lines: string[] = [];
  const walk = async (rel: string): Promise<void> => {
    const names = (await readdir(rel === '' ? upper : path.join(upper, rel))).sort();
    for (const name of names) {
      const r = rel === '' ? name : `${rel}/${name}`;
      if (isVolatile(r)) continue;
      const full = path.join(upper, r);
      const st = await lstat(full);
      const own = `${(st.mode & 0o7777).toString(8)} ${st.uid}:${st.gid}`;
      const xa = xattrs.get(r);
      if (st.isDirectory()) {
        // A directory that only exists because something below it was copied up is no change.
        if (xa || !(await lowerDirMatches(lowerDirs, r, st.mode, st.uid, st.gid))) {
          lines.push(`${r}\tdir ${own}${xa ? ` ${xa}` : ''}`);
        }
        await walk(r);
      } else if (st.isFile()) {
        const sum = createHash('sha256').update(await readFile(full)).digest('hex');
        lines.push(`${r}\tfile ${own} ${st.size} ${sum}`);
      } else if (st.isSymbolicLink()) {
        lines.push(`${r}\tlink ${st.uid}:${st.gid} -> ${await readlink(full)}`);
      } else if (st.isCharacterDevice() && st.rdev === 0) {
        lines.push(`${r}\twhiteout`);
      } else {
        const kind = st.isCharacterDevice() ? 'chr' : st.isBlockDevice() ? 'blk' : st.isFIFO() ? 'fifo' : 'socket';
        lines.push(`${r}\t${kind} ${own} ${st.rdev}`);
      }
    }
  };
  await walk('');
  return lines.map((l) => `${l}\n`).join('');
}
