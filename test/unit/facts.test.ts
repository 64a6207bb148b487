// facts.sh and parseFacts, tested together: each fixture under test/fixtures/facts/ becomes a fake root
// plus PATH stubs, the REAL facts.sh runs against it (KPM_FACTS_ROOT), and its output is parsed.

import { spawnSync, type SpawnSyncReturns } from 'node:child_process';
import { createHash } from 'node:crypto';
import {
  chmodSync,
  cpSync,
  existsSync,
  lstatSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  symlinkSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir, userInfo } from 'node:os';
import { dirname, join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import {
  type Facts,
  FactsParseError,
  factsScript,
  type ModuleProbe,
  parseFacts,
  parseOsRelease,
} from '../../tasks/node/facts.ts';
import { shQuote } from '../../tasks/remote/quote.ts';

const FIXTURES = new URL('../fixtures/facts/', import.meta.url).pathname;
const PACKAGES = ['ipvsadm', 'ipset', 'conntrack', 'conntrack-tools'];
const MODULES = ['ip_vs', 'ip_vs_rr', 'ip_vs_wrr', 'ip_vs_sh', 'nf_conntrack', 'nf_conntrack_ipv4'];
const MODULES_CONF = '/etc/modules-load.d/ipvs.conf';
const MODULES_SCRIPT = '/etc/sysconfig/modules/ipvs.modules';
const MANAGED = [MODULES_SCRIPT, MODULES_CONF];
const ONE_MIB = 1024 * 1024;

// Host tools: bash itself, and the coreutils facts.sh uses (linked into the stub PATH so that nothing
// else of the host, e.g. its real apt-get or dpkg-query, is visible to the script under test).
const HOST_TOOLS = ['bash', 'base64', 'od', 'tr', 'stat', 'sha256sum'] as const;
const hostTool: Record<string, string> = {};
{
  const r = spawnSync('/bin/sh', ['-c', `for t in ${HOST_TOOLS.join(' ')}; do command -v "$t"; done`], { encoding: 'utf8' });
  const found = r.stdout.trim().split('\n');
  for (const t of HOST_TOOLS) {
    const p = found.find((f) => f.endsWith(`/${t}`));
    if (!p) throw new Error(`test needs ${t} on the host`);
    hostTool[t] = p;
  }
}
const BASH = hostTool.bash as string;

const tmpDirs: string[] = [];
afterAll(() => {
  for (const d of tmpDirs) rmSync(d, { recursive: true, force: true });
});
function tempDir(prefix: string): string {
  const d = mkdtempSync(join(tmpdir(), prefix));
  tmpDirs.push(d);
  return d;
}

// ---------------------------------------------------------------------------------------------------------
// Fixture -> fake root + stubs
// ---------------------------------------------------------------------------------------------------------

interface NodeSpec {
  description: string;
  arch: string;
  user: string;
  systemd: boolean;
  osRelease: 'symlink' | 'etc' | 'usr-lib';
  kmod: boolean;
  packageManagers: string[];
  packageQuery: 'dpkg' | 'rpm' | null;
  sysModuleBuiltin: string[];
  modulesDir?: string;
  noModulesBuiltin?: boolean;
  files: Record<string, string>;
  extraFiles?: string[];
  generatedFiles?: Record<string, number>;
}

interface FakeNode {
  name: string;
  spec: NodeSpec;
  kernel: string;
  root: string;
  bin: string;
  log: string;
  files: string[];
}

function fixture(name: string, file: string): string | undefined {
  const p = join(FIXTURES, name, file);
  return existsSync(p) ? readFileSync(p, 'utf8') : undefined;
}

/** `== NAME rc=N` blocks (comments `#` before the first block). Output keeps its trailing newline. */
function records(text: string): Map<string, { rc: number; out: string }> {
  const blocks: { name: string; rc: number; lines: string[] }[] = [];
  const lines = text.split('\n');
  if (lines.at(-1) === '') lines.pop();
  for (const line of lines) {
    const m = /^== (\S+) rc=(\d+)$/.exec(line);
    const current = blocks.at(-1);
    if (m) blocks.push({ name: m[1] as string, rc: Number(m[2]), lines: [] });
    else if (current) current.lines.push(line);
    else if (!line.startsWith('#')) throw new Error(`record file: text before the first block: ${line}`);
  }
  return new Map(blocks.map((b) => [b.name, { rc: b.rc, out: b.lines.length ? `${b.lines.join('\n')}\n` : '' }]));
}

function stub(path: string, log: string, body: string): void {
  mkdirSync(dirname(path), { recursive: true });
  const name = path.split('/').pop() as string;
  writeFileSync(path, `#!${BASH}\nprintf '%s\\n' ${shQuote(name)}" $*" >> ${shQuote(log)}\n${body}\n`);
  chmodSync(path, 0o755);
}

/** A replaying stub: `case NAME in ...` with the recorded output (stdout if rc 0, else stderr). */
function replayCases(recs: Map<string, { rc: number; out: string }>, tool: string): string {
  const cases = [...recs].map(
    ([mod, r]) => `  ${shQuote(mod)}) printf '%s' ${shQuote(r.out)}${r.rc === 0 ? '' : ' >&2'}; exit ${r.rc};;`,
  );
  return `case $name in\n${cases.join('\n')}\n  *) echo "${tool} stub: no record for $name" >&2; exit 98;;\nesac`;
}

function buildNode(name: string, opts: { base64?: boolean } = {}): FakeNode {
  const spec = JSON.parse(fixture(name, 'node.json') ?? 'null') as NodeSpec;
  const kernel = (fixture(name, 'uname-r') ?? '').trim();
  const dir = tempDir(`kpm-facts-${name}-`);
  const root = join(dir, 'root');
  const bin = join(dir, 'bin');
  const log = join(dir, 'calls.log');
  mkdirSync(root);
  mkdirSync(bin);
  writeFileSync(log, '');

  // os-release
  const osr = fixture(name, 'os-release') ?? '';
  mkdirSync(join(root, 'etc'), { recursive: true });
  if (spec.osRelease === 'etc') writeFileSync(join(root, 'etc/os-release'), osr);
  else {
    mkdirSync(join(root, 'usr/lib'), { recursive: true });
    writeFileSync(join(root, 'usr/lib/os-release'), osr);
    if (spec.osRelease === 'symlink') symlinkSync('../usr/lib/os-release', join(root, 'etc/os-release'));
  }

  // kernel modules: modules.builtin, /sys/module, /proc/modules
  const builtin = fixture(name, 'modules.builtin');
  if (builtin !== undefined && !spec.noModulesBuiltin) {
    const d = join(root, spec.modulesDir ?? '/lib/modules', kernel);
    mkdirSync(d, { recursive: true });
    writeFileSync(join(d, 'modules.builtin'), builtin);
  }
  const lsmod = fixture(name, 'lsmod');
  const procModules = fixture(name, 'proc-modules');
  const loaded = (lsmod ?? procModules ?? '')
    .split('\n')
    .map((l) => l.split(/\s+/)[0] ?? '')
    .filter((n) => n !== '' && n !== 'Module');
  for (const m of loaded) {
    mkdirSync(join(root, 'sys/module', m), { recursive: true });
    writeFileSync(join(root, 'sys/module', m, 'initstate'), 'live\n');
  }
  for (const m of spec.sysModuleBuiltin) mkdirSync(join(root, 'sys/module', m, 'parameters'), { recursive: true });
  if (procModules !== undefined) {
    mkdirSync(join(root, 'proc'), { recursive: true });
    writeFileSync(join(root, 'proc/modules'), procModules);
  }
  if (spec.systemd) mkdirSync(join(root, 'run/systemd/system'), { recursive: true });

  // managed files
  if (existsSync(join(FIXTURES, name, 'root'))) cpSync(join(FIXTURES, name, 'root'), root, { recursive: true });
  for (const [p, mode] of Object.entries(spec.files)) chmodSync(join(root, p), parseInt(mode, 8));
  for (const [p, size] of Object.entries(spec.generatedFiles ?? {})) {
    mkdirSync(dirname(join(root, p)), { recursive: true });
    writeFileSync(join(root, p), Buffer.alloc(size, 'a'));
    chmodSync(join(root, p), 0o644);
  }

  // host coreutils
  for (const t of HOST_TOOLS) {
    if (t === 'bash') continue;
    if (t === 'base64' && opts.base64 === false) continue;
    symlinkSync(hostTool[t] as string, join(bin, t));
  }

  // stubs: uname, id, package managers, package query, kmod tools (in the fake root's /usr/sbin, found
  // through the sbin directories facts.sh appends to PATH)
  stub(
    join(bin, 'uname'),
    log,
    `out=()\nfor a in "$@"; do case $a in -r) out+=(${shQuote(kernel)});; -m) out+=(${shQuote(spec.arch)});; ` +
      `*) echo "uname stub: unexpected $a" >&2; exit 99;; esac; done\nprintf '%s\\n' "\${out[*]}"`,
  );
  stub(join(bin, 'id'), log, `[[ $1 == -un ]] || exit 99\nprintf '%s\\n' ${shQuote(spec.user)}`);
  for (const pm of spec.packageManagers) stub(join(bin, pm), log, 'echo "package manager stub: must not run" >&2; exit 97');

  const pkgLines = (fixture(name, 'packages') ?? '').split('\n').filter(Boolean);
  if (spec.packageQuery === 'dpkg') {
    const known = pkgLines.map((l) => {
      const [p, ...status] = l.split(' ');
      return `[${shQuote(p ?? '')}]=${shQuote(status.join(' '))}`;
    });
    stub(
      join(bin, 'dpkg-query'),
      log,
      `fmt='\${Package}\\t\${Status}\\n'; pk=()
while (($#)); do case $1 in -W|--show) ;; -f|--showformat) fmt=$2; shift;; -f=*|--showformat=*) fmt=\${1#*=};; -*) exit 99;; *) pk+=("$1");; esac; shift; done
declare -A st=(${known.join(' ')})
rc=0
for p in "\${pk[@]}"; do
  if [[ -n \${st[$p]+x} ]]; then
    s=\${st[$p]}; o=$fmt; o=\${o//'\${Package}'/$p}; o=\${o//'\${Status}'/$s}; o=\${o//'\${db:Status-Status}'/\${s##* }}
    o=\${o//'\\n'/$'\\n'}; o=\${o//'\\t'/$'\\t'}; printf '%s' "$o"
  else printf 'dpkg-query: no packages found matching %s\\n' "$p" >&2; rc=1; fi
done
exit $rc`,
    );
  } else if (spec.packageQuery === 'rpm') {
    stub(
      join(bin, 'rpm'),
      log,
      `fmt='%{NAME}\\n'; pk=()
while (($#)); do case $1 in -q) ;; --qf|--queryformat) fmt=$2; shift;; --qf=*|--queryformat=*) fmt=\${1#*=};; -*) exit 99;; *) pk+=("$1");; esac; shift; done
declare -A inst=(${pkgLines.map((p) => `[${shQuote(p)}]=1`).join(' ')})
rc=0
for p in "\${pk[@]}"; do
  if [[ -n \${inst[$p]+x} ]]; then o=\${fmt//'%{NAME}'/$p}; o=\${o//'\\n'/$'\\n'}; printf '%s' "$o"
  else printf 'package %s is not installed\\n' "$p"; rc=$((rc+1)); fi
done
exit $rc`,
    );
  }

  if (spec.kmod) {
    const sbin = join(root, 'usr/sbin');
    stub(join(sbin, 'lsmod'), log, `printf '%s' ${shQuote(lsmod ?? '')}`);
    stub(
      join(sbin, 'modprobe'),
      log,
      // -a: every name in turn, going on past a failure, exit 1 if any failed (as kmod's modprobe -a)
      `dry=0; all=0; names=()
for a in "$@"; do case $a in -n|--dry-run|--show) dry=1;; -a|--all) all=1;; -v|--verbose|-q|--quiet|--) ;; -*) echo "modprobe stub: unexpected option $a" >&2; exit 99;; *) names+=("$a");; esac; done
((dry)) || { echo "modprobe stub: refusing to run without -n" >&2; exit 97; }
((all || \${#names[@]} == 1)) || { echo "modprobe stub: several names without -a" >&2; exit 96; }
rc=0
for name in "\${names[@]}"; do (
${replayCases(records(fixture(name, 'modprobe-n') ?? ''), 'modprobe')}
) || rc=1; done
exit $rc`,
    );
    stub(
      join(sbin, 'modinfo'),
      log,
      `[[ $1 == -F && $2 == filename && $# == 3 ]] || { echo "modinfo stub: unexpected $*" >&2; exit 99; }
name=$3
${replayCases(records(fixture(name, 'modinfo') ?? ''), 'modinfo')}`,
    );
  }

  const files = [...MANAGED, ...(spec.extraFiles ?? [])];
  return { name, spec, kernel, root, bin, log, files };
}

function runOn(node: FakeNode, how: 'argv' | 'stdin' = 'argv'): SpawnSyncReturns<string> {
  const script = factsScript({ packages: PACKAGES, modules: MODULES, files: node.files }, { fakeRoot: node.root });
  const env = { PATH: node.bin, HOME: '/nonexistent' };
  const maxBuffer = 64 * ONE_MIB;
  return how === 'argv'
    ? spawnSync(BASH, ['-c', script], { env, encoding: 'utf8', maxBuffer })
    : spawnSync(BASH, ['-s'], { env, encoding: 'utf8', maxBuffer, input: script });
}

/** Every path under dir with its type, mode, size, mtime and content hash. */
function snapshot(dir: string): Record<string, string> {
  const out: Record<string, string> = {};
  const walk = (d: string): void => {
    for (const entry of readdirSync(d)) {
      const p = join(d, entry);
      const st = lstatSync(p);
      let desc = `${st.mode.toString(8)} ${st.size} ${st.mtimeMs}`;
      if (st.isFile()) desc += ` ${createHash('sha256').update(readFileSync(p)).digest('hex')}`;
      out[p.slice(dir.length)] = desc;
      if (st.isDirectory()) walk(p);
    }
  };
  walk(dir);
  return out;
}

type ModState = 'loaded' | 'builtin' | 'loadable' | 'missing';
const stateOf = (p: ModuleProbe): ModState =>
  p.loaded ? 'loaded' : p.builtin ? 'builtin' : p.available ? 'loadable' : 'missing';

interface Expected {
  family: Facts['family'];
  id: string;
  versionId: string;
  arch: string;
  packageManagers: string[];
  packages: Record<string, boolean>;
  modules: Record<string, ModState>;
  /** path -> expected mode, or null when absent */
  files: Record<string, string | null>;
  systemd: boolean;
}

const dpkgPkgs = (ipvsadm: boolean, ipset: boolean, conntrack: boolean): Record<string, boolean> => ({
  ipvsadm,
  ipset,
  conntrack,
  'conntrack-tools': false,
});
const rpmPkgs = (ipvsadm: boolean, ipset: boolean, conntrackTools: boolean): Record<string, boolean> => ({
  ipvsadm,
  ipset,
  conntrack: false,
  'conntrack-tools': conntrackTools,
});

const EXPECTED: Record<string, Expected> = {
  'debian-12': {
    family: 'debian',
    id: 'debian',
    versionId: '12',
    arch: 'x86_64',
    packageManagers: ['apt'],
    packages: dpkgPkgs(false, false, true),
    modules: { ip_vs: 'loadable', ip_vs_rr: 'loadable', ip_vs_wrr: 'loadable', ip_vs_sh: 'loadable', nf_conntrack: 'loaded', nf_conntrack_ipv4: 'missing' },
    files: { [MODULES_SCRIPT]: null, [MODULES_CONF]: null },
    systemd: true,
  },
  'ubuntu-22.04': {
    family: 'debian',
    id: 'ubuntu',
    versionId: '22.04',
    arch: 'x86_64',
    packageManagers: ['apt'],
    packages: dpkgPkgs(true, true, true),
    modules: { ip_vs: 'loaded', ip_vs_rr: 'loaded', ip_vs_wrr: 'loaded', ip_vs_sh: 'loaded', nf_conntrack: 'loaded', nf_conntrack_ipv4: 'missing' },
    files: { [MODULES_SCRIPT]: '755', [MODULES_CONF]: '644' },
    systemd: true,
  },
  'ubuntu-24.04': {
    family: 'debian',
    id: 'ubuntu',
    versionId: '24.04',
    arch: 'x86_64',
    packageManagers: ['apt'],
    packages: dpkgPkgs(false, true, true),
    modules: { ip_vs: 'loaded', ip_vs_rr: 'loaded', ip_vs_wrr: 'loadable', ip_vs_sh: 'loadable', nf_conntrack: 'loaded', nf_conntrack_ipv4: 'missing' },
    files: { [MODULES_SCRIPT]: null, [MODULES_CONF]: '600' },
    systemd: true,
  },
  'centos-7': {
    family: 'redhat',
    id: 'centos',
    versionId: '7',
    arch: 'x86_64',
    packageManagers: ['yum'],
    packages: rpmPkgs(true, true, true),
    modules: { ip_vs: 'loaded', ip_vs_rr: 'loaded', ip_vs_wrr: 'loaded', ip_vs_sh: 'loaded', nf_conntrack: 'loaded', nf_conntrack_ipv4: 'loaded' },
    files: { [MODULES_SCRIPT]: '755', [MODULES_CONF]: null },
    systemd: true,
  },
  'rocky-9': {
    family: 'redhat',
    id: 'rocky',
    versionId: '9.3',
    arch: 'aarch64',
    packageManagers: ['dnf', 'yum'],
    packages: rpmPkgs(false, false, true),
    modules: { ip_vs: 'loadable', ip_vs_rr: 'loadable', ip_vs_wrr: 'loadable', ip_vs_sh: 'loadable', nf_conntrack: 'loaded', nf_conntrack_ipv4: 'missing' },
    files: { [MODULES_SCRIPT]: null, [MODULES_CONF]: '644' },
    systemd: true,
  },
  'opensuse-leap-15.5': {
    family: 'suse',
    id: 'opensuse-leap',
    versionId: '15.5',
    arch: 'x86_64',
    packageManagers: ['zypper'],
    packages: rpmPkgs(false, true, true),
    modules: { ip_vs: 'loadable', ip_vs_rr: 'loadable', ip_vs_wrr: 'loadable', ip_vs_sh: 'missing', nf_conntrack: 'loaded', nf_conntrack_ipv4: 'missing' },
    files: { [MODULES_SCRIPT]: null, [MODULES_CONF]: '644' },
    systemd: true,
  },
  'alpine-3.19': {
    family: null,
    id: 'alpine',
    versionId: '3.19.1',
    arch: 'x86_64',
    packageManagers: [],
    packages: {},
    modules: { ip_vs: 'missing', ip_vs_rr: 'missing', ip_vs_wrr: 'missing', ip_vs_sh: 'missing', nf_conntrack: 'loaded', nf_conntrack_ipv4: 'missing' },
    files: { [MODULES_SCRIPT]: null, [MODULES_CONF]: null },
    systemd: false,
  },
  'custom-builtin': {
    family: 'debian',
    id: 'debian',
    versionId: '12',
    arch: 'x86_64',
    packageManagers: ['apt'],
    packages: dpkgPkgs(true, true, true),
    modules: { ip_vs: 'builtin', ip_vs_rr: 'builtin', ip_vs_wrr: 'builtin', ip_vs_sh: 'loadable', nf_conntrack: 'builtin', nf_conntrack_ipv4: 'missing' },
    files: { [MODULES_SCRIPT]: null, [MODULES_CONF]: '644', '/etc/modules-load.d': '755', '/var/lib/kpm/edge.bin': '644', '/var/lib/kpm/big.bin': '644' },
    systemd: true,
  },
  'container-no-kmod': {
    family: 'debian',
    id: 'debian',
    versionId: '12',
    arch: 'x86_64',
    packageManagers: ['apt'],
    packages: dpkgPkgs(false, false, false),
    modules: { ip_vs: 'missing', ip_vs_rr: 'missing', ip_vs_wrr: 'missing', ip_vs_sh: 'missing', nf_conntrack: 'builtin', nf_conntrack_ipv4: 'missing' },
    files: { [MODULES_SCRIPT]: null, [MODULES_CONF]: null },
    systemd: false,
  },
};

interface Run {
  node: FakeNode;
  result: SpawnSyncReturns<string>;
  before: Record<string, string>;
  after: Record<string, string>;
}
const runs = new Map<string, Run>();
function run(name: string): Run {
  let r = runs.get(name);
  if (!r) {
    const node = buildNode(name);
    const before = snapshot(node.root);
    const result = runOn(node);
    r = { node, result, before, after: snapshot(node.root) };
    runs.set(name, r);
  }
  return r;
}
function factsOf(name: string): Facts {
  const { result } = run(name);
  expect(result.stderr).toBe('');
  expect(result.status).toBe(0);
  return parseFacts(result.stdout);
}

// ---------------------------------------------------------------------------------------------------------

describe('facts.sh + parseFacts on recorded nodes', () => {
  it('has an expectation for every fixture directory', () => {
    const dirs = readdirSync(FIXTURES, { withFileTypes: true }).filter((d) => d.isDirectory()).map((d) => d.name);
    expect(dirs.sort()).toEqual(Object.keys(EXPECTED).sort());
  });

  describe.each(Object.entries(EXPECTED))('%s', (name, want) => {
    it('runs cleanly and changes nothing in the fake root', () => {
      const { result, before, after, node } = run(name);
      expect(result.stderr).toBe('');
      expect(result.status).toBe(0);
      expect(after).toEqual(before);
      // modprobe only ever ran as a dry run; no package manager ran at all
      const calls = readFileSync(node.log, 'utf8').split('\n').filter(Boolean);
      for (const c of calls.filter((l) => l.startsWith('modprobe '))) expect(c).toMatch(/ -n /);
      expect(calls.filter((c) => /^(apt-get|dnf|yum|zypper) /.test(c))).toEqual([]);
    });

    it('identifies the OS, family, kernel and package managers', () => {
      const f = factsOf(name);
      const { node } = run(name);
      expect(f.os.id).toBe(want.id);
      expect(f.os.versionId).toBe(want.versionId);
      expect(f.os.prettyName).not.toBe('');
      expect(f.family).toBe(want.family);
      expect(f.kernel).toBe(node.kernel);
      expect(f.arch).toBe(want.arch);
      expect(f.packageManagers).toEqual(want.packageManagers);
      expect(f.systemd).toBe(want.systemd);
      expect(f.user).toBe('root');
    });

    it('reports installed packages', () => {
      expect(factsOf(name).packages).toEqual(want.packages);
    });

    it('probes the modules: loaded / built in / loadable / missing', () => {
      const f = factsOf(name);
      const states = Object.fromEntries(Object.entries(f.modules).map(([m, p]) => [m, stateOf(p)]));
      expect(states).toEqual(want.modules);
      for (const p of Object.values(f.modules)) {
        expect(p.available).toBe(p.loaded || p.builtin || stateOf(p) === 'loadable');
        expect(p.loaded && p.builtin).toBe(false);
        if (p.available) expect(p.message).toBe('');
        else expect(p.message).not.toBe('');
        expect(p.message).toBe(p.message.trim());
      }
      const { node } = run(name);
      const listed = (fixture(name, 'lsmod') ?? fixture(name, 'proc-modules') ?? '').split('\n').filter((l) => l && !l.startsWith('Module '));
      expect(f.loadedModules).toHaveLength(listed.length);
      expect(f.loadedModules).not.toContain('Module');
      if (node.spec.kmod) {
        expect(f.modules.nf_conntrack_ipv4?.message ?? '').toMatch(want.modules.nf_conntrack_ipv4 === 'missing' ? /not found/ : /^$/);
      } else {
        for (const p of Object.values(f.modules)) if (!p.available) expect(p.message).toMatch(/modprobe is not installed/);
      }
    });

    it('reports the managed files: presence, mode, owner, content and sha256', () => {
      const f = factsOf(name);
      const { node } = run(name);
      const me = userInfo().username;
      expect(Object.keys(f.files).sort()).toEqual(Object.keys(want.files).sort());
      for (const [path, mode] of Object.entries(want.files)) {
        const fact = f.files[path];
        expect(fact?.path).toBe(path);
        if (mode === null) {
          expect(fact).toEqual({ path, exists: false });
          continue;
        }
        expect(fact?.exists).toBe(true);
        expect(fact?.mode).toBe(mode);
        expect(fact?.owner).toBe(me);
        const onDisk = join(node.root, path);
        if (lstatSync(onDisk).isDirectory()) {
          expect(fact?.type).toBe('directory');
          expect(fact?.content).toBeUndefined();
          continue;
        }
        const bytes = readFileSync(onDisk);
        expect(fact?.type).toBe('file');
        expect(fact?.size).toBe(bytes.length);
        expect(fact?.sha256).toBe(createHash('sha256').update(bytes).digest('hex'));
        if (bytes.length > ONE_MIB) {
          expect(fact?.tooLarge).toBe(true);
          expect(fact?.content).toBeUndefined();
        } else {
          expect(fact?.tooLarge).toBeUndefined();
          expect(fact?.content).toBe(bytes.toString('utf8'));
        }
      }
    });
  });

  it('round-trips content with marker-like lines and non-ASCII text (ubuntu-22.04)', () => {
    const f = factsOf('ubuntu-22.04');
    const content = f.files[MODULES_SCRIPT]?.content ?? '';
    expect(content).toContain('\n@@kpm:end\n@@kpm:file /etc/shadow\n');
    expect(content).toContain('Zoë (ça marche ✓, 日本語もOK)');
    expect(Object.keys(f.files)).toEqual(MANAGED);
  });

  it('keeps CRLF and empty files exactly (opensuse-leap-15.5, rocky-9)', () => {
    expect(factsOf('opensuse-leap-15.5').files[MODULES_CONF]?.content).toBe('ip_vs\r\nip_vs_rr\r\nip_vs_wrr\r\n');
    const empty = factsOf('rocky-9').files[MODULES_CONF];
    expect(empty?.content).toBe('');
    expect(empty?.sha256).toBe('e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855');
  });

  it('nf_conntrack_ipv4 is available only on the 3.10 kernel (decided by probing, not by version)', () => {
    const avail = Object.keys(EXPECTED).filter((n) => factsOf(n).modules.nf_conntrack_ipv4?.available);
    expect(avail).toEqual(['centos-7']);
    expect(factsOf('centos-7').kernel).toMatch(/^3\.10\./);
  });

  it('flags a module disabled by an `install ... /bin/true` line although modprobe -n succeeds', () => {
    const sh = factsOf('opensuse-leap-15.5').modules.ip_vs_sh;
    expect(sh?.available).toBe(false);
    expect(sh?.message).toMatch(/disabled in modprobe\.d/);
    expect(sh?.message).toContain('install /bin/true');
  });

  it('tells built-in modules apart: modules.builtin, /sys/module without initstate, modinfo (builtin)', () => {
    const f = factsOf('custom-builtin');
    // listed in modules.builtin: known to be there, so neither modprobe nor modinfo is asked about it
    expect(f.modules.ip_vs).toMatchObject({ builtin: true, loaded: false, available: true });
    expect(f.modules.ip_vs?.filename).toBeUndefined();
    // loadable: `modprobe -n -v` named its .ko, so modinfo had nothing to add and was not asked
    expect(f.modules.ip_vs_sh).toMatchObject({ builtin: false, loaded: false, available: true });
    expect(f.modules.ip_vs_sh?.filename).toBeUndefined();
    // only the requested names' lines are carried, near misses (ip_vs_ftp, nf_conntrack_ftp) are not
    const out = run('custom-builtin').result.stdout;
    const section = out.slice(out.indexOf('@@kpm:modules.builtin'), out.indexOf('@@kpm:module '));
    expect(section.split('\n').filter(Boolean)).toEqual([
      '@@kpm:modules.builtin /usr/lib/modules/6.6.30-k8s-node/modules.builtin',
      'kernel/net/netfilter/nf_conntrack.ko',
      'kernel/net/netfilter/ipvs/ip_vs.ko',
      'kernel/net/netfilter/ipvs/ip_vs_rr.ko',
      'kernel/net/netfilter/ipvs/ip_vs_wrr.ko',
    ]);
    // container: no lsmod, no /proc/modules, no modules.builtin; /sys/module alone shows nf_conntrack built in
    const c = factsOf('container-no-kmod');
    expect(c.loadedModules).toEqual([]);
    expect(c.modules.nf_conntrack).toEqual({ name: 'nf_conntrack', loaded: false, builtin: true, available: true, message: '' });
  });

  it('reads /proc/modules when lsmod is missing (alpine-3.19)', () => {
    const out = run('alpine-3.19').result.stdout;
    expect(out).toContain('@@kpm:lsmod /proc/modules\n');
    expect(factsOf('alpine-3.19').loadedModules).toContain('nf_conntrack');
  });

  it('gives the same output when the script is fed on stdin (bash -s)', () => {
    const node = run('ubuntu-24.04').node;
    const viaStdin = runOn(node, 'stdin');
    expect(viaStdin.status).toBe(0);
    expect(viaStdin.stdout).toBe(run('ubuntu-24.04').result.stdout);
  });

  it('falls back to od-based hex where base64 is missing, with identical facts', () => {
    for (const name of ['ubuntu-22.04', 'custom-builtin']) {
      const node = buildNode(name, { base64: false });
      const r = runOn(node);
      expect(r.stderr).toBe('');
      expect(r.status).toBe(0);
      expect(r.stdout).toContain('content=hex:');
      expect(r.stdout).not.toContain('b64:');
      expect(parseFacts(r.stdout)).toEqual(factsOf(name));
    }
  });
});

// ---------------------------------------------------------------------------------------------------------

describe('parseFacts robustness', () => {
  const good = (): string => run('ubuntu-22.04').result.stdout;

  it('throws FactsParseError on output truncated anywhere', () => {
    const out = good();
    const endAt = out.indexOf('@@kpm:end');
    const cuts = new Set<number>();
    for (let i = 0; i < endAt; i++) if (out[i] === '\n') cuts.add(i + 1); // every line boundary
    for (let i = 1; i < endAt; i += 97) cuts.add(i); // and mid-line
    cuts.add(endAt + 5); // inside the end marker itself
    for (const cut of cuts) {
      expect(() => parseFacts(out.slice(0, cut)), `cut at ${cut}`).toThrow(FactsParseError);
    }
    expect(() => parseFacts(out.slice(0, endAt))).toThrow(/truncated facts output: no "@@kpm:end" marker/);
    expect(() => parseFacts('')).toThrow(/empty facts output/);
  });

  it('tolerates login-shell noise before the begin marker, CRLF line ends and text after the end', () => {
    const out = good();
    const base = parseFacts(out);
    expect(parseFacts(`Welcome to Ubuntu 22.04.4 LTS\n\nLast login: yesterday\n${out}`)).toEqual(base);
    expect(parseFacts(out.replace(/\n/g, '\r\n'))).toEqual(base);
    expect(parseFacts(`${out}logout\n`)).toEqual(base);
  });

  it('rejects output that is not from facts.sh, another format version or mixed outputs', () => {
    expect(() => parseFacts('bash: line 1: syntax error\n')).toThrow(/no "@@kpm:begin" marker/);
    expect(() => parseFacts(good().replace('@@kpm:begin 1', '@@kpm:begin 2'))).toThrow(/version "2" is not supported/);
    const out = good();
    expect(() => parseFacts(out.replace('@@kpm:end\n', out))).toThrow(/second begin marker/);
    expect(() => parseFacts(out.replace('@@kpm:system\n', '@@kpm:system\n@@kpm:system\n'))).toThrow(FactsParseError);
  });

  it('rejects corrupted payloads and malformed lines', () => {
    const out = good();
    const fileAt = out.indexOf('@@kpm:file ');
    const b64 = /content=b64:([A-Za-z0-9+/]{8})/.exec(out.slice(fileAt))?.[1] ?? '';
    expect(b64).toHaveLength(8);
    expect(() => parseFacts(out.replace(`content=b64:${b64}`, `content=b64:${b64.slice(0, 5)}`))).toThrow(/invalid base64/);
    // same length, different bytes: caught by the size / sha256 check
    const swapped = b64.split('').reverse().join('');
    expect(() => parseFacts(out.replace(`content=b64:${b64}`, `content=b64:${swapped}`))).toThrow(/sha256|bytes/);
    expect(() => parseFacts(out.replace('@@kpm:package-managers\n', '@@kpm:package-managers\n@@ not a marker\n@@kpm:Bad!\n'))).toThrow(
      /malformed marker/,
    );
    expect(() => parseFacts(out.replace('arch=x86_64\n', 'arch=x86_64\njunk line\n'))).toThrow(/expected key=value/);
    expect(() => parseFacts(out.replace(/\n@@kpm:lsmod[^]*?(?=\n@@kpm:modules\.builtin)/, ''))).toThrow(/no "@@kpm:lsmod" section/);
    expect(() => parseFacts(out.replace('exists=1', 'exists=maybe'))).toThrow(/bad "exists"/);
  });
});

describe('temporary files of a write that was cut off', () => {
  it('lists the ones kpm_put leaves next to a managed file (.NAME.kpm-XXXXXX), and nothing else', () => {
    const node = buildNode('ubuntu-22.04');
    const dir = join(node.root, dirname(MODULES_CONF));
    mkdirSync(dir, { recursive: true });
    writeFileSync(join(dir, '.ipvs.conf.kpm-Ab12Cd'), 'ip_vs\n');
    writeFileSync(join(dir, '.ipvs.conf.kpm-short'), ''); // not mktemp's six characters
    writeFileSync(join(dir, '.other.conf.kpm-Ab12Cd'), ''); // another file's
    const r = runOn(node);
    expect(r.stderr).toBe('');
    const f = parseFacts(r.stdout);
    expect(f.files[MODULES_CONF]!.strays).toEqual([`${MODULES_CONF.replace('ipvs.conf', '.ipvs.conf.kpm-Ab12Cd')}`]);
    expect(f.files[MODULES_SCRIPT]!.strays).toBeUndefined();
    // only names of that shape are ever taken (they are deleted by the next run)
    expect(() => parseFacts(r.stdout.replace('strays=.ipvs.conf.kpm-Ab12Cd', 'strays=../../etc/passwd'))).toThrow(/bad temporary file name/);
    expect(() => parseFacts(r.stdout.replace('strays=.ipvs.conf.kpm-Ab12Cd', 'strays=.other.conf.kpm-Ab12Cd'))).toThrow(/bad temporary file name/);
  });
});

// ---------------------------------------------------------------------------------------------------------

/** The recorded calls of one tool, arguments only. */
function callsOf(node: FakeNode, tool: string): string[] {
  return readFileSync(node.log, 'utf8')
    .split('\n')
    .filter((l) => l.startsWith(`${tool} `))
    .map((l) => l.slice(tool.length + 1));
}

function put(root: string, path: string, content: string | Buffer): void {
  mkdirSync(dirname(join(root, path)), { recursive: true });
  writeFileSync(join(root, path), content);
}

describe('modinfo: asked only where it can show a module built in', () => {
  it('is skipped after a dry run that names the module file, and after a failed one where modules.builtin was read', () => {
    const { node } = run('debian-12');
    // one dry run for the five not loaded; only nf_conntrack_ipv4, which it did not find, is asked alone
    expect(callsOf(node, 'modprobe')).toEqual(['-n -v -a -- ip_vs ip_vs_rr ip_vs_wrr ip_vs_sh nf_conntrack_ipv4', '-n -v nf_conntrack_ipv4']);
    // nf_conntrack_ipv4: modprobe -n fails and modules.builtin does not list it; modinfo could only agree
    expect(callsOf(node, 'modinfo')).toEqual([]);
    const f = factsOf('debian-12');
    for (const m of ['ip_vs', 'ip_vs_rr', 'ip_vs_wrr', 'ip_vs_sh']) {
      expect(f.modules[m]).toEqual({ name: m, loaded: false, builtin: false, available: true, message: '' });
    }
    expect(f.modules.nf_conntrack_ipv4?.message).toMatch(/not found in directory/);
  });

  it('is asked when the dry run names an install command instead of a module file (opensuse-leap-15.5)', () => {
    expect(callsOf(run('opensuse-leap-15.5').node, 'modinfo')).toEqual(['-F filename ip_vs_sh']);
  });

  it('finds a built-in module that only modinfo knows: dry run silent, or failed', () => {
    // custom-builtin without modules.builtin: ip_vs_rr and ip_vs_wrr are neither listed nor in /sys/module
    const silent = buildNode('custom-builtin');
    rmSync(join(silent.root, 'usr/lib/modules', silent.kernel, 'modules.builtin'));
    const failing = buildNode('custom-builtin');
    rmSync(join(failing.root, 'usr/lib/modules', failing.kernel, 'modules.builtin'));
    stub(join(failing.root, 'usr/sbin/modprobe'), failing.log, `echo "modprobe: FATAL: could not load modules.dep" >&2; exit 1`);
    for (const node of [silent, failing]) {
      const r = runOn(node);
      expect(r.stderr).toBe('');
      const f = parseFacts(r.stdout);
      for (const m of ['ip_vs_rr', 'ip_vs_wrr']) {
        expect(f.modules[m]).toMatchObject({ builtin: true, available: true, filename: '(builtin)' });
      }
      expect(callsOf(node, 'modinfo')).toContain('-F filename ip_vs_rr');
    }
    // the silent dry run of the loadable ip_vs_sh named its file: no modinfo for it
    expect(callsOf(silent, 'modinfo')).not.toContain('-F filename ip_vs_sh');
    expect(callsOf(failing, 'modinfo')).toContain('-F filename ip_vs_sh');
  });
});

describe('modprobe: one dry run for every module to ask about, then alone for the ones it did not find', () => {
  it('asks each module alone when the batch shows an install command (opensuse-leap-15.5): its effect cannot be told apart', () => {
    const calls = callsOf(run('opensuse-leap-15.5').node, 'modprobe');
    expect(calls[0]).toMatch(/^-n -v -a -- /);
    expect(calls.slice(1).every((c) => /^-n -v [a-z_0-9]+$/.test(c))).toBe(true);
    expect(calls.length).toBeGreaterThan(2);
  });

  it('takes a module as found only from an insmod line naming its own file (an alias of another file is asked alone)', () => {
    const node = buildNode('debian-12');
    const dir = `/lib/modules/${node.kernel}/kernel/net/netfilter`;
    // nf_conntrack_ipv4 resolves to nf_conntrack.ko (an alias); ip_vs_sh is not found, and the batch goes on
    // past it, as kmod's -a does
    stub(
      join(node.root, 'usr/sbin/modprobe'),
      node.log,
      `names=(); for a in "$@"; do case $a in -*) ;; *) names+=("$a");; esac; done
rc=0
for n in "\${names[@]}"; do case $n in
  ip_vs) echo "insmod ${dir}/ipvs/ip_vs.ko ";;
  ip_vs_rr|ip_vs_wrr) echo "insmod ${dir}/ipvs/ip_vs.ko "; echo "insmod ${dir}/ipvs/$n.ko.xz ";;
  nf_conntrack_ipv4) echo "insmod ${dir}/nf_conntrack.ko ";;
  *) echo "modprobe: FATAL: Module $n not found in directory /lib/modules/${node.kernel}" >&2; rc=1;;
esac; done
exit $rc`,
    );
    const r = runOn(node);
    expect(r.stderr).toBe('');
    expect(callsOf(node, 'modprobe')).toEqual(['-n -v -a -- ip_vs ip_vs_rr ip_vs_wrr ip_vs_sh nf_conntrack_ipv4', '-n -v ip_vs_sh', '-n -v nf_conntrack_ipv4']);
    const f = parseFacts(r.stdout);
    for (const m of ['ip_vs', 'ip_vs_rr', 'ip_vs_wrr', 'nf_conntrack_ipv4']) expect(f.modules[m], m).toMatchObject({ available: true, message: '' });
    expect(f.modules.ip_vs_sh).toMatchObject({ available: false, message: `modprobe: FATAL: Module ip_vs_sh not found in directory /lib/modules/${node.kernel}` });
    // the batch's line for a found module is what its section carries
    expect(r.stdout).toContain(`@@kpm:module ip_vs_rr\nsysfs=0\nmodprobe.rc=0\nmodprobe=txt:insmod ${dir}/ipvs/ip_vs_rr.ko.xz %0A\nmodinfo.rc=skipped\n`);
  });
});

describe('the read-back (probeModules: false): what is loaded, no modprobe or modinfo', () => {
  it('reports the modules that are neither loaded nor built in as unprobed, and asks no module tool but lsmod', () => {
    const node = buildNode('debian-12');
    const script = factsScript({ packages: PACKAGES, modules: MODULES, files: node.files, probeModules: false }, { fakeRoot: node.root });
    const r = spawnSync(BASH, ['-c', script], { env: { PATH: node.bin, HOME: '/nonexistent' }, encoding: 'utf8' });
    expect(r.stderr).toBe('');
    expect(callsOf(node, 'modprobe')).toEqual([]);
    expect(callsOf(node, 'modinfo')).toEqual([]);
    const f = parseFacts(r.stdout);
    const probed = factsOf('debian-12');
    for (const m of MODULES) {
      const p = probed.modules[m]!;
      if (p.loaded || p.builtin) expect(f.modules[m]).toEqual(p);
      else expect(f.modules[m]).toEqual({ name: m, loaded: false, builtin: false, available: false, unprobed: true, message: '' });
    }
    expect(Object.values(f.modules).some((m) => m.unprobed)).toBe(true);
  });

  it('refuses "unprobed" for a module that is loaded or built in', () => {
    const out = runOn(buildNode('debian-12')).stdout.replace(
      /(@@kpm:module nf_conntrack\nsysfs=1\n(?:initstate=\S+\n)?)modprobe\.rc=skipped/,
      '$1modprobe.rc=unprobed',
    );
    expect(out).toContain('modprobe.rc=unprobed');
    expect(() => parseFacts(out)).toThrow(/nf_conntrack: reported unprobed, but it is loaded or built in/);
  });
});

describe('command output and os-release as text (txt:), without an encoder', () => {
  it('carries %, CR, tabs and line breaks exactly; non-ASCII output through base64', () => {
    const node = buildNode('debian-12');
    const ascii = 'modprobe: ERROR: 100%25 \\t sure\r\nsecond\tline %0A\n';
    const utf8 = 'modprobe: FEHLER: Modul nicht gefunden ✗\n';
    stub(
      join(node.root, 'usr/sbin/modprobe'),
      node.log,
      `case $3 in ip_vs) printf '%s' ${shQuote(ascii)} >&2;; *) printf '%s' ${shQuote(utf8)} >&2;; esac; exit 1`,
    );
    const r = runOn(node);
    expect(r.stderr).toBe('');
    expect(r.stdout).toMatch(/\nmodprobe=txt:modprobe: ERROR: 100%2525 \\t sure%0D%0Asecond\tline %250A%0A\n/);
    expect(r.stdout).toMatch(/\n@@kpm:os-release\npath=\/etc\/os-release\ncontent=txt:PRETTY_NAME=/);
    const f = parseFacts(r.stdout);
    expect(f.modules.ip_vs?.message).toBe(ascii.trim());
    expect(f.modules.ip_vs_rr?.message).toBe(utf8.trim());
    expect(f.os.id).toBe('debian');
    for (const bad of ['%zz', 'a%', '%0a', '%2']) {
      expect(() => parseFacts(r.stdout.replace('modprobe=txt:modprobe', `modprobe=txt:${bad}`)), bad).toThrow(/invalid text/);
    }
    expect(() => parseFacts(r.stdout.replace('modprobe=txt:modprobe', 'modprobe=txt:\x01'))).toThrow(/invalid text/);
  });
});

describe('managed files the caller expects', () => {
  const expectedFor = (node: FakeNode, extra: Record<string, string[]> = {}): Record<string, string[]> => {
    const out: Record<string, string[]> = {};
    for (const path of MANAGED) {
      const p = join(node.root, path);
      out[path] = [...(existsSync(p) ? [readFileSync(p, 'utf8')] : []), ...(extra[path] ?? [])];
    }
    return out;
  };
  const runExpecting = (node: FakeNode, expected: Record<string, string[]>): { out: string; facts: Facts } => {
    const script = factsScript({ packages: PACKAGES, modules: MODULES, files: node.files, expected }, { fakeRoot: node.root });
    const r = spawnSync(BASH, ['-c', script], { env: { PATH: node.bin, HOME: '/nonexistent' }, encoding: 'utf8' });
    expect(r.stderr).toBe('');
    expect(r.status).toBe(0);
    return { out: r.stdout, facts: parseFacts(r.stdout, expected) };
  };
  const fileSection = (out: string, path: string): string => {
    const at = out.indexOf(`@@kpm:file ${path}\n`);
    return out.slice(at, out.indexOf('\n@@kpm:', at + 1));
  };

  it('a file holding an expected content is confirmed, not sent, and parseFacts fills it in (same Facts)', () => {
    for (const name of ['ubuntu-22.04', 'opensuse-leap-15.5', 'rocky-9', 'centos-7']) {
      const node = buildNode(name);
      const expected = expectedFor(node, { [MODULES_CONF]: ['ip_vs\n'], [MODULES_SCRIPT]: ['#!/bin/bash\n'] });
      const { out, facts } = runExpecting(node, expected);
      for (const path of MANAGED) {
        if (!existsSync(join(node.root, path))) continue;
        const section = fileSection(out, path);
        expect(section, `${name} ${path}`).toContain('\ncontent=same');
        expect(section).not.toMatch(/content=(b64|hex|txt):/);
      }
      // non-ASCII text, marker-like lines, CRLF and an empty file all come back exactly
      expect(facts).toEqual(factsOf(name));
    }
  });

  it('a file that differs, by one byte or a trailing newline, is sent in full', () => {
    const node = buildNode('ubuntu-22.04');
    const script = readFileSync(join(node.root, MODULES_SCRIPT), 'utf8');
    const conf = readFileSync(join(node.root, MODULES_CONF), 'utf8');
    const oneByte = `${script.slice(0, 10)}${script[10] === 'x' ? 'y' : 'x'}${script.slice(11)}`;
    expect(Buffer.byteLength(oneByte)).toBe(Buffer.byteLength(script));
    const expected = { [MODULES_SCRIPT]: [oneByte], [MODULES_CONF]: [`${conf}\n`, conf.replace(/\n$/, '')] };
    const { out, facts } = runExpecting(node, expected);
    for (const path of MANAGED) expect(fileSection(out, path)).toMatch(/\ncontent=b64:/);
    expect(facts).toEqual(factsOf('ubuntu-22.04'));
  });

  it('a file with a NUL byte is sent in full, whatever is expected of it', () => {
    const node = buildNode('debian-12');
    put(node.root, MODULES_CONF, Buffer.from('ip_vs\n\0ip_vs_rr\n'));
    const { out, facts } = runExpecting(node, { [MODULES_CONF]: ['ip_vs\n', 'ip_vs\n ip_vs_rr\n'] });
    expect(fileSection(out, MODULES_CONF)).toMatch(/\ncontent=b64:/);
    expect(facts.files[MODULES_CONF]?.content).toBe('ip_vs\n\0ip_vs_rr\n');
  });

  it('parseFacts refuses a confirmation it cannot resolve', () => {
    const node = buildNode('ubuntu-24.04');
    const expected = expectedFor(node);
    const { out } = runExpecting(node, expected);
    expect(out).toContain('content=same');
    expect(() => parseFacts(out)).toThrow(/none given to parseFacts has its sha256/);
    expect(() => parseFacts(out, { [MODULES_CONF]: ['something else\n'] })).toThrow(/none given to parseFacts has its sha256/);
    expect(() => parseFacts(out.replace(/\nsize=\d+\n(readable=1\nsha256=)/, '\nsize=9999\n$1'), expected)).toThrow(/stat said 9999/);
  });

  it('factsScript: only for probed files; no NUL and nothing large in the prelude', () => {
    const input = { packages: PACKAGES, modules: MODULES, files: [MODULES_CONF] };
    expect(() => factsScript({ ...input, expected: { [MODULES_SCRIPT]: ['x'] } })).toThrow(/not among the files/);
    const big = 'm'.repeat(64 * 1024);
    const script = factsScript({ ...input, expected: { [MODULES_CONF]: ['a\0b', big, 'ip_vs\n'] } });
    expect(script).not.toContain(big);
    expect(script).not.toContain('a\0b');
    expect(script).toContain(createHash('sha256').update('ip_vs\n').digest('hex'));
  });

  it('facts.sh refuses malformed expectations (defence in depth)', () => {
    const sh = readFileSync(new URL('../../tasks/node/facts.sh', import.meta.url), 'utf8');
    for (const bad of [`KPM_EXPECT=(${MODULES_CONF} nothex x)`, `KPM_EXPECT=(${MODULES_CONF} x)`, `KPM_EXPECT=('rel/path' ${'0'.repeat(64)} x)`]) {
      const r = spawnSync(BASH, ['-c', `KPM_FILES=${MODULES_CONF}\n${bad}\n${sh}`], { encoding: 'utf8' });
      expect(r.status, bad).toBe(2);
      expect(r.stdout).toBe('');
    }
  });
});

describe('kernel, arch and user from /proc and /etc/passwd', () => {
  const euid = process.geteuid?.() ?? 0;
  function nodeWithProc(personality: string | null, passwd: string | null): FakeNode {
    const node = buildNode('debian-12');
    if (personality !== null) put(node.root, '/proc/self/personality', `${personality}\n`);
    put(node.root, '/proc/sys/kernel/osrelease', '6.9.9-from-proc\n');
    put(node.root, '/proc/sys/kernel/arch', 'arch-from-proc\n');
    if (passwd !== null) put(node.root, '/etc/passwd', passwd);
    return node;
  }
  const facts = (node: FakeNode): Facts => {
    const r = runOn(node);
    expect(r.stderr).toBe('');
    return parseFacts(r.stdout);
  };

  it('reads them without uname or id when the personality is the plain one', () => {
    const node = nodeWithProc('00000000', `daemon:x:1:1::/:/bin/false\npw-user:x:${euid}:0::/root:/bin/bash\nsecond:x:${euid}:0::/:/bin/sh\n`);
    const f = facts(node);
    expect([f.kernel, f.arch, f.user]).toEqual(['6.9.9-from-proc', 'arch-from-proc', 'pw-user']);
    expect(callsOf(node, 'uname')).toEqual([]);
    expect(callsOf(node, 'id')).toEqual([]);
  });

  it('asks uname under another personality (linux32, uname26) or without one, and id without a passwd entry', () => {
    for (const personality of ['00000008', '00020000', null]) {
      const node = nodeWithProc(personality, `daemon:x:1:1::/:/bin/false\n`);
      const f = facts(node);
      expect([f.kernel, f.arch, f.user]).toEqual([node.kernel, 'x86_64', 'root']);
      expect(callsOf(node, 'uname')).toEqual(['-r -m']);
      expect(callsOf(node, 'id')).toEqual(['-un']);
    }
  });

  it('leaves NIS compat entries to id', () => {
    const node = nodeWithProc('00000000', `+::::::\npw-user:x:${euid}:0::/root:/bin/bash\n`);
    expect(facts(node).user).toBe('root');
    expect(callsOf(node, 'id')).toEqual(['-un']);
  });
});

describe('parseOsRelease', () => {
  it('handles quoting, escapes, comments and blank lines', () => {
    expect(
      parseOsRelease('# comment\n\nID=debian\nNAME="Debian \\"GNU\\"/Linux \\$x"\nVERSION_ID=\'12\'\nID_LIKE="rhel  centos"\nbroken line\n'),
    ).toEqual({ ID: 'debian', NAME: 'Debian "GNU"/Linux $x', VERSION_ID: '12', ID_LIKE: 'rhel  centos' });
  });
});

// ---------------------------------------------------------------------------------------------------------

describe('factsScript', () => {
  const input = { packages: ['ipvsadm', 'conntrack-tools'], modules: ['ip_vs', 'ip-vs-rr', 'ip_vs_rr'], files: [MODULES_CONF] };

  it('prepends a prelude assigning the validated, quoted inputs (module names normalised, deduplicated)', () => {
    const script = factsScript(input);
    const r = spawnSync(
      BASH,
      ['-c', `${script.slice(0, script.indexOf('# shellcheck'))}\nprintf '%s|' "$KPM_PACKAGES" "$KPM_MODULES" "$KPM_FILES" "\${KPM_FACTS_ROOT-unset}"`],
      { encoding: 'utf8', env: { KPM_FACTS_ROOT: '/should/be/unset' } },
    );
    expect(r.stdout).toBe(`ipvsadm conntrack-tools|ip_vs ip_vs_rr|${MODULES_CONF}|unset|`);
    expect(script).toContain(readFileSync(new URL('../../tasks/node/facts.sh', import.meta.url), 'utf8'));
    expect(spawnSync(BASH, ['-n', '-c', script]).status).toBe(0);
  });

  it.each([
    [{ ...input, packages: ['-y'] }, /invalid package name/],
    [{ ...input, packages: ['a b'] }, /invalid package name/],
    [{ ...input, packages: ['$(reboot)'] }, /invalid package name/],
    [{ ...input, modules: ['ip_vs;reboot'] }, /invalid module name/],
    [{ ...input, modules: ['../ip_vs'] }, /invalid module name/],
    [{ ...input, files: ['etc/modules-load.d/ipvs.conf'] }, /invalid path/],
    [{ ...input, files: ['/etc/x y'] }, /invalid path/],
    [{ ...input, files: ["/etc/it's"] }, /invalid path/],
  ])('rejects invalid input %#', (bad, message) => {
    expect(() => factsScript(bad)).toThrow(message);
  });

  it('facts.sh itself refuses invalid inputs (defence in depth) with exit 2 and no output', () => {
    const sh = readFileSync(new URL('../../tasks/node/facts.sh', import.meta.url), 'utf8');
    const r = spawnSync(BASH, ['-c', `KPM_PACKAGES='ipset -y'\n${sh}`], { encoding: 'utf8' });
    expect(r.status).toBe(2);
    expect(r.stdout).toBe('');
    expect(r.stderr).toContain('invalid name: -y');
  });
});

// ---------------------------------------------------------------------------------------------------------

describe('facts.sh on this machine, for real', () => {
  const dir = tempDir('kpm-facts-real-');
  const managed = join(dir, 'ipvs.modules');
  const secret = join(dir, 'secret.conf');
  const text = 'modprobe -- ip_vs\n@@kpm:end\n# Grüße ✓\n';
  writeFileSync(managed, text);
  chmodSync(managed, 0o750);
  writeFileSync(secret, 'top secret\n');
  chmodSync(secret, 0o600);
  chmodSync(dir, 0o755);
  const files = [managed, secret, join(dir, 'absent.conf'), '/etc/os-release'];
  const script = factsScript({ packages: PACKAGES, modules: MODULES, files });

  const watched = (): Record<string, unknown> => ({
    tmp: snapshot(dir),
    modulesLoad: existsSync('/etc/modules-load.d') ? readdirSync('/etc/modules-load.d').sort() : null,
    sysconfigModules: existsSync('/etc/sysconfig/modules') ? readdirSync('/etc/sysconfig/modules').sort() : null,
    sysModule: existsSync('/sys/module') ? readdirSync('/sys/module').sort() : null,
    procModules: existsSync('/proc/modules') ? readFileSync('/proc/modules', 'utf8').split('\n').map((l) => l.split(' ')[0]).sort() : null,
  });

  it('exits 0, prints nothing on stderr, parses, and changes nothing', () => {
    const before = watched();
    const t0 = Date.now();
    const r = spawnSync(BASH, ['-c', script], { encoding: 'utf8' });
    const elapsed = Date.now() - t0;
    expect(r.stderr).toBe('');
    expect(r.status).toBe(0);
    expect(watched()).toEqual(before);
    expect(elapsed).toBeLessThan(15_000);

    const f = parseFacts(r.stdout);
    const osr = parseOsRelease(readFileSync('/etc/os-release', 'utf8'));
    expect(f.os.id).toBe(osr.ID);
    expect(f.kernel).toBe(spawnSync('uname', ['-r'], { encoding: 'utf8' }).stdout.trim());
    expect(f.arch).toBe(spawnSync('uname', ['-m'], { encoding: 'utf8' }).stdout.trim());
    expect(f.user).toBe(userInfo().username);
    expect(f.systemd).toBe(existsSync('/run/systemd/system'));
    expect(Object.keys(f.modules)).toEqual(MODULES);
    for (const p of Object.values(f.modules)) expect(p.available).toBe(p.loaded || p.builtin || p.message === '');

    expect(f.files[managed]).toMatchObject({ exists: true, type: 'file', mode: '750', content: text, readable: true });
    expect(f.files[join(dir, 'absent.conf')]).toEqual({ path: join(dir, 'absent.conf'), exists: false });
    expect(f.files['/etc/os-release']?.content).toBe(readFileSync('/etc/os-release', 'utf8'));

    // This Debian 12 sandbox: no module support (no /proc/modules), no kmod, no IPVS; nf_conntrack built in.
    if (!existsSync('/proc/modules') && spawnSync('/bin/sh', ['-c', 'command -v modprobe']).status !== 0) {
      expect(f.family).toBe('debian');
      expect(f.loadedModules).toEqual([]);
      expect(f.modules.ip_vs).toMatchObject({ loaded: false, builtin: false, available: false });
      expect(f.modules.nf_conntrack?.builtin).toBe(existsSync('/sys/module/nf_conntrack'));
    }
  });

  it.runIf(process.getuid?.() === 0 && spawnSync('/bin/sh', ['-c', 'command -v setpriv']).status === 0)(
    'works unprivileged: unreadable files are reported, not fatal',
    () => {
      const r = spawnSync('setpriv', ['--reuid=65534', '--regid=65534', '--clear-groups', BASH, '-c', script], {
        encoding: 'utf8',
        cwd: '/',
        // node's stdin pipe is a socket, and bash started on a socket at shell level 1 (the test run with
        // SHLVL unset or 0, as from a background job) reads ~/.bashrc as under sshd: with root's HOME
        // inherited, "Permission denied" on stderr that has nothing to do with facts.sh
        stdio: ['ignore', 'pipe', 'pipe'],
        env: { PATH: process.env.PATH ?? '/usr/bin:/bin', HOME: '/nonexistent' },
      });
      expect(r.stderr).toBe('');
      expect(r.status).toBe(0);
      const f = parseFacts(r.stdout);
      expect(f.user).not.toBe('root');
      expect(f.files[secret]).toEqual({
        path: secret,
        exists: true,
        type: 'file',
        mode: '600',
        owner: 'root',
        group: 'root',
        size: 11,
        readable: false,
      });
      // 750 root:root: the file itself is not readable for nobody either
      expect(f.files[managed]?.readable).toBe(false);
      expect(f.files['/etc/os-release']?.readable).toBe(true);
    },
  );
});
