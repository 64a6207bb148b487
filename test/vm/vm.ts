// TypeScript face of the VM tier: real Debian bookworm guests (stock kernel, real modules, real IPVS)
// under QEMU, for the tests in this directory.
//
//   const vms = await startVms([{ name: 'kpmvm1' }, { name: 'kpmvm2', ipvs: false }]);
//   await vms.exec('kpmvm1', 'lsmod');   writeVmInventory(vms)   await vms.reboot('kpmvm1');
//   await vms.down();
//
// Each guest: QEMU (KVM only where kvm_intel/kvm_amd is loaded, TCG otherwise), 1 vCPU, 512 MiB,
// a throw-away qcow2 overlay on the cached image (build-image.sh), user-mode networking with
// 127.0.0.1:<port> -> guest:22.  Its SSH host key is made here before it boots and handed to it in a
// second initramfs archive, so known_hosts is written up front and host keys are always verified.
// apt in the guest uses either the image's repository, served by this process over HTTP at
// 10.0.2.2 (QEMU's address for the host), or the Debian mirror this machine's apt uses.
//
// Teardown whatever happens: down() in afterAll; on exit and SIGINT/SIGTERM/SIGHUP the QEMUs are
// killed synchronously; a watchdog shell kills them if this process dies without running either
// (SIGKILL); and the next startVms() sweeps run directories whose owner is gone.
//
// KPM_VM_IMAGE=<dir> boots an image directory built earlier (or elsewhere) instead of building one.
//
// CLI (by hand):  tsx test/vm/vm.ts up [N]     boot N guests, print how to reach them, Ctrl-C stops them
//                 tsx test/vm/vm.ts sweep      stop guests left behind by a dead test run

import { execFileSync, spawn } from 'node:child_process';
import { createReadStream, existsSync, mkdirSync, readFileSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { createServer as createHttpServer, type Server } from 'node:http';
import { createServer as createNetServer, type AddressInfo } from 'node:net';
import { constants as osConstants } from 'node:os';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { cleanupOnExit } from '../cleanup-on-exit.ts';

export const VM_DIR = path.dirname(fileURLToPath(import.meta.url));
export const VM_CACHE = process.env.KPM_VM_CACHE ?? '/tmp/kpm-vm-cache';
/** one directory per running set of guests, named <owner pid>-<id> */
export const VM_RUN_ROOT = '/tmp/kpm-vm-run';
/** QEMU's user network gives every guest this address (each guest has its own network) */
export const GUEST_IP = '10.0.2.15';
/** and reaches the host's 127.0.0.1 through this one */
export const HOST_FROM_GUEST = '10.0.2.2';

export interface ExecResult {
  stdout: string;
  stderr: string;
  code: number;
}

export interface VmImage {
  dir: string;
  kver: string;
  kernelPackage: string;
  suite: string;
  mirror: string;
  securityMirror: string;
  /** root's private key for every guest */
  key: string;
  /** the flat apt repository holding ipvsadm, ipset, conntrack and what they add */
  repoDir: string;
  /** the .debs in it */
  repo: string[];
  /** how long build-image.sh ran, and whether it only found the cached image */
  buildSeconds: number;
  cached: boolean;
}

export interface VmSpec {
  /** guest hostname, inventory host name and node name */
  name: string;
  /** apt source in the guest: the image's repository through the host (default), or the real mirror */
  apt?: 'local' | 'mirror';
  /** false: a kernel without IPVS (its ipvs modules deleted at boot, module indexes to match) */
  ipvs?: boolean;
}

export interface Vm {
  name: string;
  spec: Required<VmSpec>;
  /** SSH on 127.0.0.1:port */
  port: number;
  pid: number;
  dir: string;
  console: string;
  /** seconds from QEMU start to the first SSH login, and QEMU's CPU seconds by then */
  bootSeconds: number;
  bootCpuSeconds: number;
}

export interface VmCluster {
  runDir: string;
  image: VmImage;
  accel: 'kvm' | 'tcg';
  vms: Vm[];
  key: string;
  knownHosts: string;
  /** the apt repository as guests reach it (http://10.0.2.2:PORT/) */
  repoUrl: string;
  /** `bash -s` as root in the guest over SSH (host key verified); never throws on a non-zero exit */
  exec(name: string, cmd: string, opts?: { timeoutMs?: number }): Promise<ExecResult>;
  /** exec that throws with the output when the command fails */
  run(name: string, cmd: string, opts?: { timeoutMs?: number }): Promise<string>;
  /** `systemctl reboot` in each guest, then wait until each answers SSH on a new boot */
  reboot(...names: string[]): Promise<void>;
  /** ssh argv (for `ssh ... cmd` by hand or in a test) */
  sshArgs(name: string): string[];
  down(): Promise<void>;
}

// ---------------------------------------------------------------------------------------------
// Processes

function run(file: string, args: string[], opts: { input?: string; timeoutMs?: number; env?: NodeJS.ProcessEnv; onStderr?: (s: string) => void } = {}): Promise<ExecResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(file, args, { env: opts.env ?? process.env, stdio: ['pipe', 'pipe', 'pipe'] });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    let timer: NodeJS.Timeout | undefined;
    let timedOut = false;
    if (opts.timeoutMs) {
      timer = setTimeout(() => {
        timedOut = true;
        child.kill('SIGKILL');
      }, opts.timeoutMs);
    }
    child.stdout.on('data', (b: Buffer) => out.push(b));
    child.stderr.on('data', (b: Buffer) => {
      err.push(b);
      opts.onStderr?.(b.toString('utf8'));
    });
    child.on('error', (e) => {
      if (timer) clearTimeout(timer);
      reject(e);
    });
    // Not 'close': an SSH control master forked by the first connection could hold the pipes open.
    // After 'exit', the output still in the pipes is read until both end, or for 2 s at most.
    let open = 2;
    let finish: (() => void) | undefined;
    const ended = () => {
      if (--open === 0) finish?.();
    };
    child.stdout.on('end', ended);
    child.stderr.on('end', ended);
    child.on('exit', (code, signal) => {
      if (timer) clearTimeout(timer);
      let done = false;
      finish = () => {
        if (done) return;
        done = true;
        const signo = signal ? ((osConstants.signals as Record<string, number>)[signal] ?? 0) : 0;
        const stderr = Buffer.concat(err).toString('utf8') + (timedOut ? `\n[timed out after ${opts.timeoutMs} ms]` : '');
        resolve({ stdout: Buffer.concat(out).toString('utf8'), stderr, code: code ?? 128 + signo });
      };
      if (open === 0) finish();
      else setTimeout(finish, 2000);
    });
    child.stdin.on('error', () => {
      /* the command may exit without reading its input */
    });
    child.stdin.end(opts.input ?? '');
  });
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const tail = (text: string, n = 20) => text.trimEnd().split('\n').slice(-n).join('\n');

function hasKvm(): boolean {
  // /dev/kvm alone is not enough: kvm_pvm provides it and hangs stock kernels.
  try {
    statSync('/dev/kvm');
  } catch {
    return false;
  }
  return existsSync('/sys/module/kvm_intel') || existsSync('/sys/module/kvm_amd');
}

export function vmSupported(): { ok: boolean; reason?: string } {
  if (process.platform !== 'linux') return { ok: false, reason: `the VM tier needs Linux (this is ${process.platform})` };
  if (typeof process.getuid !== 'function' || process.getuid() !== 0) return { ok: false, reason: 'the VM tier needs root (debootstrap and chroot build the image)' };
  return { ok: true };
}

// ---------------------------------------------------------------------------------------------
// The image

function readManifest(dir: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const line of readFileSync(path.join(dir, 'manifest'), 'utf8').split('\n')) {
    const i = line.indexOf('=');
    if (i > 0) out[line.slice(0, i)] = line.slice(i + 1);
  }
  return out;
}

let imagePromise: Promise<VmImage> | undefined;

/** Build the image, or find it in the cache (a few seconds). One build per process. */
export function buildImage(log: (line: string) => void = (l) => process.stderr.write(l)): Promise<VmImage> {
  imagePromise ??= (async () => {
    const t0 = Date.now();
    let dir = process.env.KPM_VM_IMAGE ?? '';
    let stderr = 'cached image';
    if (dir === '') {
      const r = await run('bash', [path.join(VM_DIR, 'build-image.sh')], { onStderr: log, env: { ...process.env, KPM_VM_CACHE: VM_CACHE } });
      if (r.code !== 0) throw new Error(`build-image.sh failed (exit ${r.code}):\n${tail(r.stderr, 30)}`);
      dir = r.stdout.trim().split('\n').pop()!;
      stderr = r.stderr;
    } else if (!existsSync(path.join(dir, '.complete'))) {
      throw new Error(`KPM_VM_IMAGE=${dir} is not a finished image directory (no .complete)`);
    }
    const m = readManifest(dir);
    return {
      dir,
      kver: m.KVER!,
      kernelPackage: m.KERNEL_PACKAGE!,
      suite: m.SUITE!,
      mirror: m.MIRROR!,
      securityMirror: m.SECURITY_MIRROR!,
      key: path.join(dir, 'id_ed25519'),
      repoDir: path.join(dir, 'repo'),
      repo: (m.REPO ?? '').split(' ').filter((x) => x !== ''),
      buildSeconds: (Date.now() - t0) / 1000,
      cached: /cached image/.test(stderr),
    };
  })();
  imagePromise.catch(() => {
    imagePromise = undefined;
  });
  return imagePromise;
}

// ---------------------------------------------------------------------------------------------
// Teardown whatever happens

function cmdlineOf(pid: number): string {
  try {
    return readFileSync(`/proc/${pid}/cmdline`, 'utf8').replace(/\0/g, ' ');
  } catch {
    return '';
  }
}

/** Is `pid` still the QEMU started in `vmDir`? (a recycled PID is never signalled) */
function isOurQemu(pid: number, vmDir: string): boolean {
  const cmd = cmdlineOf(pid);
  return cmd.startsWith('qemu-system') && cmd.includes(`${vmDir}/`);
}

function qemuPids(runDir: string): { pid: number; dir: string }[] {
  const out: { pid: number; dir: string }[] = [];
  let entries: string[] = [];
  try {
    entries = readdirSync(runDir);
  } catch {
    return out;
  }
  for (const e of entries) {
    const dir = path.join(runDir, e);
    const pf = path.join(dir, 'qemu.pid');
    if (!e.startsWith('vm-') || !existsSync(pf)) continue;
    const pid = Number(readFileSync(pf, 'utf8').trim());
    if (Number.isInteger(pid) && pid > 0) out.push({ pid, dir });
  }
  return out;
}

function killRunSync(runDir: string): void {
  const victims = qemuPids(runDir).filter((q) => isOurQemu(q.pid, q.dir));
  for (const q of victims) {
    try {
      process.kill(q.pid, 'SIGKILL');
    } catch {
      /* already gone */
    }
  }
  // SSH control masters of this run
  try {
    for (const e of readdirSync(runDir)) {
      if (!e.startsWith('cm-')) continue;
      try {
        execFileSync('ssh', ['-o', `ControlPath=${path.join(runDir, e)}`, '-O', 'exit', 'kpm-vm'], { stdio: 'ignore', timeout: 3000 });
      } catch {
        /* master already gone */
      }
    }
  } catch {
    /* no run directory */
  }
  const deadline = Date.now() + 5000;
  while (victims.some((q) => isOurQemu(q.pid, q.dir)) && Date.now() < deadline) execFileSync('sleep', ['0.1']);
  rmSync(runDir, { recursive: true, force: true });
}

function ownerAlive(runDir: string): boolean {
  try {
    const [pidText, start] = readFileSync(path.join(runDir, 'owner'), 'utf8').trim().split(' ');
    const pid = Number(pidText);
    if (!Number.isInteger(pid) || pid <= 0) return false;
    // the same process, not a recycled PID: its start time is recorded with it
    return startTimeOf(pid) === start;
  } catch {
    return false;
  }
}

function startTimeOf(pid: number): string {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2).split(' ')[19] ?? '';
  } catch {
    return '';
  }
}

/** Stop the guests of every run directory whose owning process is gone. Returns how many directories went. */
export function sweepStale(): number {
  let n = 0;
  let entries: string[] = [];
  try {
    entries = readdirSync(VM_RUN_ROOT);
  } catch {
    return 0;
  }
  for (const e of entries) {
    const dir = path.join(VM_RUN_ROOT, e);
    if (ownerAlive(dir)) continue;
    killRunSync(dir);
    n++;
  }
  return n;
}

const liveRuns = new Set<string>();

function teardownAllSync(): void {
  for (const d of [...liveRuns]) {
    liveRuns.delete(d);
    killRunSync(d);
  }
}

/** A detached shell that outlives a SIGKILLed owner just long enough to kill its QEMUs. */
function startWatchdog(runDir: string): void {
  const script = `
owner=$1 start=$2 run=$3
alive() { [ -r /proc/$owner/stat ] && [ "$(sed 's/.*) //' /proc/$owner/stat | cut -d' ' -f20)" = "$start" ]; }
while alive && [ -d "$run" ]; do sleep 2; done
[ -d "$run" ] || exit 0
for pf in "$run"/vm-*/qemu.pid; do
  [ -f "$pf" ] || continue
  pid=$(cat "$pf"); d=\${pf%/qemu.pid}
  case "$(tr '\\0' ' ' </proc/$pid/cmdline 2>/dev/null)" in qemu-system*"$d/"*) kill -KILL "$pid" ;; esac
done
rm -rf "$run"`;
  const child = spawn('setsid', ['bash', '-c', script, 'kpm-vm-watchdog', String(process.pid), startTimeOf(process.pid), runDir], {
    detached: true,
    stdio: 'ignore',
  });
  child.unref();
}

// ---------------------------------------------------------------------------------------------
// The apt repository, served to the guests

function serveRepo(dir: string): Promise<{ server: Server; port: number }> {
  const server = createHttpServer((req, res) => {
    const name = decodeURIComponent((req.url ?? '/').split('?')[0]!).replace(/^\/+(\.\/)?/, '');
    const file = path.join(dir, name);
    if (name === '' || name.includes('/') || name.startsWith('.') || !existsSync(file)) {
      res.writeHead(404, { 'Content-Type': 'text/plain' });
      res.end('not found\n');
      return;
    }
    const size = statSync(file).size;
    res.writeHead(200, { 'Content-Type': 'application/octet-stream', 'Content-Length': String(size), 'Last-Modified': statSync(file).mtime.toUTCString() });
    if (req.method === 'HEAD') res.end();
    else createReadStream(file).pipe(res);
  });
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve({ server, port: (server.address() as AddressInfo).port }));
  });
}

// ---------------------------------------------------------------------------------------------
// Booting

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createNetServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const port = (s.address() as AddressInfo).port;
      s.close(() => resolve(port));
    });
  });
}

function cpuSeconds(pid: number): number {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return (Number(f[11]) + Number(f[12])) / 100;
  } catch {
    return 0;
  }
}

function aptSource(spec: Required<VmSpec>, image: VmImage, repoUrl: string): string {
  if (spec.apt === 'mirror') {
    return [
      `# the Debian mirror this machine's apt uses, through QEMU's user network`,
      `deb ${image.mirror} ${image.suite} main`,
      `deb ${image.mirror} ${image.suite}-updates main`,
      `deb ${image.securityMirror} ${image.suite}-security main`,
      '',
    ].join('\n');
  }
  return `# kpm VM tier: ipvsadm, ipset, conntrack and what they add, served by the test run\ndeb [trusted=yes] ${repoUrl} ./\n`;
}

/** The second initramfs archive: files the initramfs copies onto the guest's disk at every boot. */
function perVmArchive(vmDir: string, spec: Required<VmSpec>, image: VmImage, repoUrl: string): void {
  const stage = path.join(vmDir, 'seed');
  const root = path.join(stage, 'kpm-vm', 'root');
  for (const d of ['etc/ssh', 'etc/apt/sources.list.d']) mkdirSync(path.join(root, d), { recursive: true });
  writeFileSync(path.join(root, 'etc/hostname'), `${spec.name}\n`);
  writeFileSync(path.join(root, 'etc/hosts'), `127.0.0.1 localhost\n127.0.1.1 ${spec.name}\n::1 localhost ip6-localhost ip6-loopback\n`);
  writeFileSync(path.join(root, 'etc/apt/sources.list.d/kpm-vm.list'), aptSource(spec, image, repoUrl));
  execFileSync('cp', [path.join(vmDir, 'ssh_host_ed25519_key'), path.join(vmDir, 'ssh_host_ed25519_key.pub'), path.join(root, 'etc/ssh/')]);
  const cpio = execFileSync('bash', ['-c', 'cd "$1" && find . | cpio -o -H newc -R 0:0 --quiet | gzip -1', 'pack', stage], { maxBuffer: 64 << 20 });
  writeFileSync(path.join(vmDir, 'initrd.img'), Buffer.concat([readFileSync(path.join(image.dir, 'initrd.img')), cpio]));
  rmSync(stage, { recursive: true, force: true });
}

let runCounter = 0;

export interface StartVmsOptions {
  /** seconds to wait for every guest's SSH (default 600) */
  bootTimeoutS?: number;
  /** progress lines (default: stderr) */
  log?: (line: string) => void;
}

export async function startVms(specs: VmSpec[], opts: StartVmsOptions = {}): Promise<VmCluster> {
  const log = opts.log ?? ((l: string) => process.stderr.write(`[kpm-vm] ${l}\n`));
  const supported = vmSupported();
  if (!supported.ok) throw new Error(`the VM tier cannot run here: ${supported.reason}`);
  if (specs.length < 1 || specs.length > 3) throw new Error(`1 to 3 guests at a time on this 2-core machine, got ${specs.length}`);
  const names = new Set<string>();
  for (const s of specs) {
    if (!/^[a-z][a-z0-9-]{0,30}$/.test(s.name) || names.has(s.name)) throw new Error(`bad or repeated guest name ${JSON.stringify(s.name)}`);
    names.add(s.name);
  }
  const swept = sweepStale();
  if (swept > 0) log(`stopped the guests of ${swept} run(s) whose test process is gone`);

  const image = await buildImage((l) => process.stderr.write(l));
  log(`image ${path.basename(image.dir)} (${image.cached ? 'cached' : 'built'} in ${image.buildSeconds.toFixed(1)}s)`);

  const runDir = path.join(VM_RUN_ROOT, `${process.pid}-${++runCounter}`);
  rmSync(runDir, { recursive: true, force: true });
  mkdirSync(runDir, { recursive: true });
  writeFileSync(path.join(runDir, 'owner'), `${process.pid} ${startTimeOf(process.pid)}\n`);
  cleanupOnExit(teardownAllSync);
  liveRuns.add(runDir);
  startWatchdog(runDir);

  let repo: { server: Server; port: number } | undefined;
  const vms: Vm[] = [];
  const accel: 'kvm' | 'tcg' = hasKvm() ? 'kvm' : 'tcg';
  const knownHosts = path.join(runDir, 'known_hosts');
  let closed = false;

  const teardown = async (): Promise<void> => {
    liveRuns.delete(runDir);
    for (const v of vms) if (isOurQemu(v.pid, v.dir)) log(`stopping ${v.name} (QEMU used ${cpuSeconds(v.pid).toFixed(1)} CPU-s in all)`);
    await new Promise<void>((r) => (repo ? repo.server.close(() => r()) : r()));
    repo?.server.closeAllConnections();
    for (const v of vms) {
      if (!isOurQemu(v.pid, v.dir)) continue;
      try {
        process.kill(v.pid, 'SIGTERM');
      } catch {
        /* gone */
      }
    }
    const deadline = Date.now() + 10_000;
    while (vms.some((v) => isOurQemu(v.pid, v.dir)) && Date.now() < deadline) await sleep(100);
    killRunSync(runDir);
  };

  try {
    repo = await serveRepo(image.repoDir);
    const repoUrl = `http://${HOST_FROM_GUEST}:${repo.port}/`;
    const known: string[] = [];
    const started = Date.now();
    for (const [i, s] of specs.entries()) {
      const spec: Required<VmSpec> = { apt: 'local', ipvs: true, ...s };
      const dir = path.join(runDir, `vm-${i + 1}`);
      mkdirSync(dir);
      execFileSync('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-C', `root@${spec.name}`, '-f', path.join(dir, 'ssh_host_ed25519_key')]);
      perVmArchive(dir, spec, image, repoUrl);
      execFileSync('qemu-img', ['create', '-q', '-f', 'qcow2', '-F', 'raw', '-b', path.join(image.dir, 'rootfs.raw'), path.join(dir, 'disk.qcow2')]);
      const uuid = execFileSync('cat', ['/proc/sys/kernel/random/uuid'], { encoding: 'utf8' }).trim();
      const append = ['console=ttyS0', 'quiet', `systemd.machine_id=${uuid.replace(/-/g, '')}`, ...(spec.ipvs ? [] : ['kpm.noipvs'])].join(' ');
      const accelArgs = accel === 'kvm' ? ['-accel', 'kvm', '-cpu', 'host'] : ['-accel', 'tcg,tb-size=128', '-cpu', 'max'];
      let port = 0;
      let lastErr = '';
      for (let attempt = 0; attempt < 5 && port === 0; attempt++) {
        const p = await freePort();
        const r = await run('qemu-system-x86_64', [
          ...accelArgs, '-smp', '1', '-m', '512',
          '-name', `kpm-vm-${spec.name},process=kpm-vm-${spec.name}`, '-uuid', uuid,
          '-nodefaults', '-no-user-config', '-display', 'none',
          '-serial', `file:${dir}/console.log`,
          '-kernel', path.join(image.dir, 'vmlinuz'), '-initrd', path.join(dir, 'initrd.img'), '-append', append,
          '-drive', `file=${dir}/disk.qcow2,if=virtio,format=qcow2,discard=unmap`,
          '-netdev', `user,id=n0,hostname=${spec.name},hostfwd=tcp:127.0.0.1:${p}-:22`,
          '-device', `virtio-net-pci,netdev=n0,mac=52:54:00:6b:70:${(0x10 + i).toString(16)}`,
          '-device', 'virtio-rng-pci',
          '-pidfile', `${dir}/qemu.pid`, '-daemonize',
        ], { timeoutMs: 60_000 });
        if (r.code === 0) port = p;
        else lastErr = r.stderr.trim();
      }
      if (port === 0) throw new Error(`QEMU did not start for ${spec.name}: ${lastErr}`);
      const pid = Number(readFileSync(path.join(dir, 'qemu.pid'), 'utf8').trim());
      const pub = readFileSync(path.join(dir, 'ssh_host_ed25519_key.pub'), 'utf8').trim().split(' ').slice(0, 2).join(' ');
      known.push(`[127.0.0.1]:${port} ${pub}`);
      vms.push({ name: spec.name, spec, port, pid, dir, console: path.join(dir, 'console.log'), bootSeconds: 0, bootCpuSeconds: 0 });
      log(`started ${spec.name} (pid ${pid}, ssh 127.0.0.1:${port}, ${accel}${spec.ipvs ? '' : ', kernel without IPVS'}, apt ${spec.apt})`);
    }
    writeFileSync(knownHosts, known.join('\n') + '\n');

    const cluster = makeCluster(runDir, image, accel, vms, knownHosts, repoUrl, async () => {
      if (closed) return;
      closed = true;
      await teardown();
    });

    // every guest answers SSH (with its own host key)
    const deadline = Date.now() + (opts.bootTimeoutS ?? 600) * 1000;
    await Promise.all(
      vms.map(async (v) => {
        for (;;) {
          if (!isOurQemu(v.pid, v.dir)) throw new Error(`${v.name}: QEMU exited during boot; console:\n${consoleTail(v)}`);
          const r = await cluster.exec(v.name, 'true', { timeoutMs: 30_000 });
          if (r.code === 0) break;
          if (/Host key verification failed|REMOTE HOST IDENTIFICATION HAS CHANGED/.test(r.stderr)) {
            throw new Error(`${v.name}: its SSH host key is not the one made for it: ${tail(r.stderr, 3)}`);
          }
          if (Date.now() > deadline) throw new Error(`${v.name}: no SSH after ${opts.bootTimeoutS ?? 600}s; last error: ${tail(r.stderr, 2)}; console:\n${consoleTail(v)}`);
          await sleep(1000);
        }
        v.bootSeconds = (Date.now() - started) / 1000;
        v.bootCpuSeconds = cpuSeconds(v.pid);
        log(`${v.name} SSH-ready after ${v.bootSeconds.toFixed(1)}s (QEMU used ${v.bootCpuSeconds.toFixed(1)} CPU-s)`);
      }),
    );
    return cluster;
  } catch (e) {
    for (const v of vms) process.stderr.write(`--- console of ${v.name} (last lines)\n${consoleTail(v)}\n`);
    closed = true;
    await teardown();
    throw e;
  }
}

function consoleTail(v: Vm): string {
  try {
    return tail(readFileSync(v.console, 'utf8').replace(/\r/g, ''), 15);
  } catch {
    return '(no console output)';
  }
}

function makeCluster(runDir: string, image: VmImage, accel: 'kvm' | 'tcg', vms: Vm[], knownHosts: string, repoUrl: string, down: () => Promise<void>): VmCluster {
  const byName = (name: string): Vm => {
    const v = vms.find((x) => x.name === name);
    if (!v) throw new Error(`no guest named ${JSON.stringify(name)}`);
    return v;
  };
  const sshArgs = (name: string): string[] => {
    const v = byName(name);
    return [
      '-o', 'BatchMode=yes',
      '-o', 'StrictHostKeyChecking=yes',
      '-o', `UserKnownHostsFile=${knownHosts}`,
      '-o', 'GlobalKnownHostsFile=/dev/null',
      '-o', 'IdentitiesOnly=yes', '-i', image.key,
      '-o', 'ConnectTimeout=20',
      '-o', 'ServerAliveInterval=5', '-o', 'ServerAliveCountMax=6',
      '-o', 'ControlMaster=auto', '-o', `ControlPath=${runDir}/cm-${v.port}`, '-o', 'ControlPersist=60',
      '-o', 'LogLevel=ERROR',
      '-p', String(v.port), 'root@127.0.0.1',
    ];
  };
  const exec = async (name: string, cmd: string, o: { timeoutMs?: number } = {}): Promise<ExecResult> =>
    run('ssh', [...sshArgs(name), 'bash -s'], { input: `export LC_ALL=C PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\n${cmd}\n`, timeoutMs: o.timeoutMs ?? 300_000 });
  const runOk = async (name: string, cmd: string, o: { timeoutMs?: number } = {}): Promise<string> => {
    const r = await exec(name, cmd, o);
    if (r.code !== 0) throw new Error(`${name}: \`${cmd.split('\n')[0]}\` failed (exit ${r.code}):\n${tail(r.stdout + r.stderr, 15)}`);
    return r.stdout;
  };
  const bootId = async (name: string) => (await exec(name, 'cat /proc/sys/kernel/random/boot_id', { timeoutMs: 30_000 })).stdout.trim();

  return {
    runDir,
    image,
    accel,
    vms,
    key: image.key,
    knownHosts,
    repoUrl,
    exec,
    run: runOk,
    sshArgs,
    async reboot(...names: string[]): Promise<void> {
      await Promise.all(
        names.map(async (name) => {
          const v = byName(name);
          const before = await bootId(name);
          if (before === '') throw new Error(`${name}: cannot read its boot id before the reboot`);
          // the connection drops under it: the exit code says nothing
          await exec(name, 'systemctl reboot', { timeoutMs: 30_000 });
          try {
            execFileSync('ssh', ['-o', `ControlPath=${runDir}/cm-${v.port}`, '-O', 'exit', 'kpm-vm'], { stdio: 'ignore', timeout: 3000 });
          } catch {
            /* the master died with the connection */
          }
          const deadline = Date.now() + 600_000;
          for (;;) {
            if (!isOurQemu(v.pid, v.dir)) throw new Error(`${name}: QEMU exited during the reboot; console:\n${consoleTail(v)}`);
            const now = await bootId(name).catch(() => '');
            if (now !== '' && now !== before) return;
            if (Date.now() > deadline) throw new Error(`${name}: not back on a new boot 600s after \`systemctl reboot\`; console:\n${consoleTail(v)}`);
            await sleep(2000);
          }
        }),
      );
    },
    down,
  };
}

// ---------------------------------------------------------------------------------------------
// CLI

async function main(argv: string[]): Promise<number> {
  const [cmd, nArg] = argv;
  if (cmd === 'sweep') {
    process.stdout.write(`${sweepStale()} run(s) swept\n`);
    return 0;
  }
  if (cmd === 'up') {
    const n = Number(nArg ?? '1');
    const vms = await startVms(Array.from({ length: n }, (_, i) => ({ name: `kpmvm${i + 1}` })));
    for (const v of vms.vms) process.stdout.write(`${v.name}: ssh ${vms.sshArgs(v.name).join(' ')}\n`);
    process.stdout.write('Ctrl-C stops them\n');
    await new Promise<void>((resolve) => process.once('SIGINT', () => resolve()));
    await vms.down();
    return 0;
  }
  process.stderr.write('usage: tsx test/vm/vm.ts up [N] | sweep\n');
  return 2;
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  main(process.argv.slice(2)).then(
    (code) => process.exit(code),
    (e: unknown) => {
      process.stderr.write(`${(e as Error).message}\n`);
      process.exit(1);
    },
  );
}
