// A node's facts, gathered in ONE SSH exec: factsScript() builds the bash text (a prelude assigning the
// inputs + facts.sh), the caller runs it on the node, and parseFacts() turns its stdout into Facts.
// parseFacts is pure: the same output (and expected contents) always gives the same Facts, and malformed
// or truncated output throws FactsParseError instead of giving half-true facts.

import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { shQuote } from '../remote/quote.ts';
import {
  familyOf,
  PACKAGE_MANAGER_ORDER,
  PACKAGE_MANAGERS,
  type OsFamilyName,
  type PackageManagerName,
} from './distros.ts';

export interface FileFact {
  path: string;
  exists: boolean;
  /** octal permission bits as `stat -c %a` prints them, e.g. "644", "755", "4755" */
  mode?: string;
  owner?: string;
  group?: string;
  /** hex sha256 of the content (also given for files too large to carry) */
  sha256?: string;
  /** the content decoded as UTF-8 (absent when the file is missing, unreadable, not a file or too large) */
  content?: string;
  tooLarge?: boolean;
  /** what the path is (symlinks followed) */
  type?: 'file' | 'directory' | 'other';
  size?: number;
  /** false when the file exists but the remote user may not read it (not running as root) */
  readable?: boolean;
  /** full paths of temporary files left next to it by a write that was cut off (connection lost, power) */
  strays?: string[];
}

export interface ModuleProbe {
  name: string;
  /** listed by lsmod (or /proc/modules) */
  loaded: boolean;
  /** built into the kernel: in modules.builtin, or in /sys/module without being a loaded module */
  builtin: boolean;
  /** `modprobe -n` succeeded, or builtin, or loaded */
  available: boolean;
  /** why it is not available (modprobe's message, trimmed); '' when available */
  message: string;
  /**
   * Neither loaded nor built in, and not asked about (a read-back, which only needs what is loaded):
   * `available` is then false without meaning "missing from this kernel".
   */
  unprobed?: boolean;
  /**
   * `modinfo -F filename` when it ran and succeeded: the module file, or "(builtin)". It is not asked
   * after a dry run that named the module file to insert: then the module is known not to be built in.
   */
  filename?: string;
}

export interface Facts {
  os: { id: string; idLike: string[]; versionId: string; prettyName: string };
  /** from distros.ts matching (ID, then ID_LIKE); null for an unsupported OS */
  family: OsFamilyName | null;
  kernel: string;
  arch: string;
  /** present on the node, in preference order of the family (only the family's own managers) */
  packageManagers: PackageManagerName[];
  /** requested package -> installed? */
  packages: Record<string, boolean>;
  /** requested module (normalised, '-' -> '_') -> probe */
  modules: Record<string, ModuleProbe>;
  /** every module lsmod lists (normalised) */
  loadedModules: string[];
  /** requested path -> fact */
  files: Record<string, FileFact>;
  systemd: boolean;
  user: string;
  /** `nft --version` where asked for and nft is installed ("nftables v1.0.6 (Lester Gooch #5)") */
  nftVersion?: string;
}

export class FactsParseError extends Error {
  override name = 'FactsParseError';
}

/**
 * What the caller expects managed files to hold, path -> candidate contents. A file that holds one of them
 * byte for byte comes back as a reference to it instead of its bytes; parseFacts needs the same map to
 * fill its content in. Any other content comes back in full, so a wrong guess costs bytes, not facts.
 */
export type ExpectedContents = Readonly<Record<string, readonly string[]>>;

/** Kernel module names use '-' and '_' interchangeably; the kernel itself reports '_'. */
export function normaliseModuleName(name: string): string {
  return name.replace(/-/g, '_');
}

// ---------------------------------------------------------------------------------------------------------
// Building the script
// ---------------------------------------------------------------------------------------------------------

let factsSh: string | undefined;
function factsShText(): string {
  factsSh ??= readFileSync(new URL('./facts.sh', import.meta.url), 'utf8');
  return factsSh;
}

const PACKAGE_RE = /^[A-Za-z0-9_.+][A-Za-z0-9_.+-]*$/;
const MODULE_RE = /^[A-Za-z0-9_][A-Za-z0-9_-]*$/;
const PATH_RE = /^\/[A-Za-z0-9_.+/-]*$/;

function checked(kind: string, list: readonly string[], re: RegExp, hint: string): string[] {
  const seen = new Set<string>();
  for (const item of list) {
    if (typeof item !== 'string' || !re.test(item)) {
      throw new Error(`factsScript: invalid ${kind} ${JSON.stringify(item)}: ${hint}`);
    }
    seen.add(item);
  }
  return [...seen];
}

// Per content: the module files are well under 1 KiB; with two files and two candidates each, the prelude
// stays small next to the 128 KiB that one argument may hold.
const MAX_EXPECTED_BYTES = 8 * 1024;

function sha256(text: string): string {
  return createHash('sha256').update(text).digest('hex');
}

/**
 * The full bash text to run on the node: a prelude assigning KPM_PACKAGES, KPM_MODULES, KPM_FILES and
 * KPM_EXPECT (validated, quoted with shQuote), then facts.sh. Module names are normalised ('-' -> '_').
 * `input.expected`: see ExpectedContents; give parseFacts the same map.
 * `options.fakeRoot` is for tests only: facts.sh then reads /etc, /lib/modules, /sys/module, ... under it.
 */
export function factsScript(
  input: {
    packages: string[];
    modules: string[];
    files: string[];
    expected?: ExpectedContents;
    nftVersion?: boolean;
    /** false: modules neither loaded nor built in are not asked about (see ModuleProbe.unprobed) */
    probeModules?: boolean;
  },
  options: { fakeRoot?: string } = {},
): string {
  const packages = checked('package name', input.packages, PACKAGE_RE, 'letters, digits and _ . + - only, not starting with -');
  const modules = checked('module name', input.modules, MODULE_RE, 'letters, digits, _ and - only, not starting with -').map(
    normaliseModuleName,
  );
  const files = checked('path', input.files, PATH_RE, 'an absolute path of letters, digits and _ . + / - only');
  const expect: string[] = [];
  for (const [path, contents] of Object.entries(input.expected ?? {})) {
    if (!files.includes(path)) throw new Error(`factsScript: expected content for ${JSON.stringify(path)}, which is not among the files`);
    for (const text of new Set(contents)) {
      // bash strings cannot hold a NUL byte; and the script travels as one argument (128 KiB at most on
      // Linux): a large file is better sent back than expected
      if (text.includes('\0') || Buffer.byteLength(text) > MAX_EXPECTED_BYTES) continue;
      expect.push(shQuote(path), sha256(text), shQuote(text));
    }
  }
  const lines = [
    '# kube-proxy-mode: node facts (read-only)',
    `KPM_PACKAGES=${shQuote(packages.join(' '))}`,
    `KPM_MODULES=${shQuote([...new Set(modules)].join(' '))}`,
    `KPM_FILES=${shQuote(files.join(' '))}`,
    `KPM_EXPECT=(${expect.join(' ')})`,
    `KPM_ASK_NFT=${input.nftVersion ? 1 : 0}`,
    `KPM_PROBE=${input.probeModules === false ? 0 : 1}`,
  ];
  if (options.fakeRoot !== undefined) {
    if (!options.fakeRoot.startsWith('/')) throw new Error('factsScript: fakeRoot must be an absolute path');
    lines.push(`KPM_FACTS_ROOT=${shQuote(options.fakeRoot)}`);
  } else {
    lines.push('unset KPM_FACTS_ROOT');
  }
  return `${lines.join('\n')}\n${factsShText()}`;
}

// ---------------------------------------------------------------------------------------------------------
// Parsing
// ---------------------------------------------------------------------------------------------------------

interface Section {
  name: string;
  arg: string;
  body: string[];
  /** 1-based line number of the marker in the output */
  line: number;
}

const FORMAT_VERSION = '1';
const MARKER_PREFIX = '@@kpm:';
const MARKER = /^@@kpm:([a-z][a-z0-9.-]*)(?: (.*))?$/;
const KEY = /^[a-z][a-z0-9.-]*$/;

function preview(s: string): string {
  const t = s.length > 60 ? `${s.slice(0, 60)}...` : s;
  return JSON.stringify(t);
}

function splitSections(output: string): Section[] {
  if (typeof output !== 'string') throw new FactsParseError('facts output must be a string');
  // Tolerate CRLF (a pty on the way) and anything a login shell printed before the script started.
  const lines = output.split('\n').map((l) => (l.endsWith('\r') ? l.slice(0, -1) : l));
  let i = lines.findIndex((l) => l.startsWith(`${MARKER_PREFIX}begin`));
  if (i < 0) {
    const first = lines.find((l) => l.trim() !== '') ?? '';
    throw new FactsParseError(
      output.trim() === ''
        ? 'empty facts output: the script printed nothing (did bash start?)'
        : `no "@@kpm:begin" marker: this is not the output of facts.sh (first line: ${preview(first)})`,
    );
  }
  const begin = MARKER.exec(lines[i] ?? '');
  if (!begin || begin[1] !== 'begin') throw new FactsParseError(`malformed begin marker at line ${i + 1}: ${preview(lines[i] ?? '')}`);
  if (begin[2] !== FORMAT_VERSION) {
    throw new FactsParseError(`facts format version ${JSON.stringify(begin[2] ?? '')} is not supported (expected ${FORMAT_VERSION})`);
  }
  const sections: Section[] = [];
  let current: Section | undefined;
  for (i++; i < lines.length; i++) {
    const line = lines[i] ?? '';
    if (line.startsWith(MARKER_PREFIX)) {
      const m = MARKER.exec(line);
      if (!m) throw new FactsParseError(`malformed marker at line ${i + 1}: ${preview(line)}`);
      const name = m[1] ?? '';
      if (name === 'end') return sections;
      if (name === 'begin') throw new FactsParseError(`second begin marker at line ${i + 1}: two outputs mixed together?`);
      current = { name, arg: m[2] ?? '', body: [], line: i + 1 };
      sections.push(current);
      continue;
    }
    if (!current) {
      if (line === '') continue;
      throw new FactsParseError(`unexpected text before the first section at line ${i + 1}: ${preview(line)}`);
    }
    current.body.push(line);
  }
  const last = sections.at(-1);
  throw new FactsParseError(
    `truncated facts output: no "@@kpm:end" marker (${lines.length} lines; last section: ${
      last ? `@@kpm:${last.name}${last.arg ? ` ${last.arg}` : ''} at line ${last.line}` : 'none'
    })`,
  );
}

function keyValues(section: Section): Map<string, string> {
  const map = new Map<string, string>();
  section.body.forEach((line, n) => {
    if (line === '') return;
    const eq = line.indexOf('=');
    const key = eq > 0 ? line.slice(0, eq) : '';
    if (!KEY.test(key)) {
      throw new FactsParseError(
        `malformed line ${section.line + n + 1} in section "${section.name}": expected key=value, got ${preview(line)}`,
      );
    }
    map.set(key, line.slice(eq + 1));
  });
  return map;
}

/** Decode `txt:...` / `b64:...` / `hex:...` (empty value: empty). */
export function decodePayload(value: string, what: string): Buffer {
  if (value === '') return Buffer.alloc(0);
  const colon = value.indexOf(':');
  const tag = colon < 0 ? '' : value.slice(0, colon);
  const data = value.slice(colon + 1);
  if (tag === 'b64') {
    if (data.length % 4 !== 0 || !/^[A-Za-z0-9+/]*={0,2}$/.test(data)) {
      throw new FactsParseError(`${what}: invalid base64 (cut short?)`);
    }
    return Buffer.from(data, 'base64');
  }
  if (tag === 'txt') {
    // printable ASCII and tabs; '%' only as one of the three escapes facts.sh writes
    if (!/^(?:[\t\x20-\x24\x26-\x7e]|%25|%0A|%0D)*$/.test(data)) throw new FactsParseError(`${what}: invalid text (cut short?)`);
    return Buffer.from(data.replace(/%(25|0A|0D)/g, (_, h: string) => String.fromCharCode(parseInt(h, 16))), 'latin1');
  }
  if (tag === 'hex') {
    if (!/^(?:[0-9a-f]{2})*$/.test(data)) throw new FactsParseError(`${what}: invalid hex (cut short?)`);
    return Buffer.from(data, 'hex');
  }
  throw new FactsParseError(`${what}: unknown encoding ${preview(value)}`);
}

/** Parse an os-release file (KEY=value, values optionally quoted, shell-like escapes in double quotes). */
export function parseOsRelease(text: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const raw of text.split('\n')) {
    const line = raw.trim();
    if (line === '' || line.startsWith('#')) continue;
    const m = /^([A-Za-z_][A-Za-z0-9_]*)=(.*)$/.exec(line);
    if (!m) continue;
    let v = m[2] ?? '';
    if (v.length >= 2 && v.startsWith('"') && v.endsWith('"')) {
      v = v.slice(1, -1).replace(/\\([\\"$`])/g, '$1');
    } else if (v.length >= 2 && v.startsWith("'") && v.endsWith("'")) {
      v = v.slice(1, -1);
    }
    out[m[1] ?? ''] = v;
  }
  return out;
}

function moduleFileName(pathLine: string): string {
  const base = pathLine.trim().split('/').pop() ?? '';
  return normaliseModuleName(base.replace(/\.ko(\..*)?$/, ''));
}

/** lsmod output or /proc/modules: the first word of each line, header skipped. */
function loadedFrom(lines: string[]): string[] {
  const seen = new Set<string>();
  for (const line of lines) {
    const words = line.trim().split(/\s+/);
    const name = words[0] ?? '';
    if (name === 'Module' && words[1] === 'Size') continue;
    if (!/^[A-Za-z0-9_-]+$/.test(name)) continue;
    seen.add(normaliseModuleName(name));
  }
  return [...seen];
}

// `install <command>` in modprobe.d that is a no-op: the CIS-style way to forbid a module. modprobe -n
// then "succeeds" while a real modprobe would never load the module.
const DISABLED_BY_INSTALL = /^install\s+(?:\S*\/)?(?:true|false)(?:\s|$)/m;

function probeModule(
  name: string,
  section: Section,
  loadedSet: ReadonlySet<string>,
  builtinList: ReadonlySet<string>,
): ModuleProbe {
  const kv = keyValues(section);
  const text = (key: string): string => decodePayload(kv.get(key) ?? '', `module ${name}: ${key}`).toString('utf8').trim();
  const loaded = loadedSet.has(name);
  const sysfs = kv.get('sysfs') === '1';
  const initstate = kv.get('initstate');
  const modinfoRc = kv.get('modinfo.rc');
  const modinfo = modinfoRc !== undefined && /^[0-9]+$/.test(modinfoRc) ? text('modinfo') : '';
  const filename = modinfoRc === '0' && modinfo !== '' ? modinfo : undefined;
  const builtin =
    !loaded && (builtinList.has(name) || filename === '(builtin)' || (sysfs && initstate === undefined));

  const rc = kv.get('modprobe.rc');
  if (rc === undefined) throw new FactsParseError(`module ${name}: no modprobe.rc line`);
  const noOutput = rc === 'none' || rc === 'skipped' || rc === 'unprobed';
  const modprobe = noOutput ? '' : text('modprobe');
  if (!noOutput && !/^[0-9]+$/.test(rc)) throw new FactsParseError(`module ${name}: bad modprobe.rc ${preview(rc)}`);
  if (rc === 'skipped' && !loaded && !builtin) {
    throw new FactsParseError(`module ${name}: modprobe was skipped, but the module is neither loaded nor built in`);
  }
  if (rc === 'unprobed') {
    if (loaded || builtin) throw new FactsParseError(`module ${name}: reported unprobed, but it is loaded or built in`);
    return { name, loaded, builtin, available: false, unprobed: true, message: '' };
  }
  let dryRun: { ok: boolean; message: string };
  if (rc === 'skipped') dryRun = { ok: true, message: '' };
  else if (rc === 'none') dryRun = { ok: false, message: 'modprobe is not installed on the node (package kmod)' };
  else if (rc !== '0') dryRun = { ok: false, message: modprobe || `modprobe -n ${name} exited with status ${rc}` };
  else if (DISABLED_BY_INSTALL.test(modprobe)) {
    const cmd = DISABLED_BY_INSTALL.exec(modprobe)?.[0].trim() ?? 'install';
    dryRun = { ok: false, message: `${name} is disabled in modprobe.d ("${cmd}"): modprobe would not load it` };
  } else dryRun = { ok: true, message: '' };

  const available = loaded || builtin || dryRun.ok;
  const probe: ModuleProbe = { name, loaded, builtin, available, message: available ? '' : dryRun.message };
  if (filename !== undefined) probe.filename = filename;
  return probe;
}

function fileFact(path: string, section: Section, expected: readonly string[]): FileFact {
  const kv = keyValues(section);
  const exists = kv.get('exists');
  if (exists !== '0' && exists !== '1') throw new FactsParseError(`file ${path}: missing or bad "exists" line`);
  const fact: FileFact = { path, exists: exists === '1' };
  const strays = kv.get('strays');
  if (strays) {
    const base = path.slice(path.lastIndexOf('/') + 1);
    const dir = path.slice(0, path.lastIndexOf('/'));
    for (const name of strays.split(' ')) {
      // only kpm_put's own names are ever deleted
      if (!name.startsWith(`.${base}.kpm-`) || !/^\.[A-Za-z0-9_.+-]+\.kpm-[A-Za-z0-9]{6}$/.test(name)) {
        throw new FactsParseError(`file ${path}: bad temporary file name ${preview(name)}`);
      }
      (fact.strays ??= []).push(`${dir}/${name}`);
    }
  }
  if (!fact.exists) return fact;
  const type = kv.get('type');
  if (type === 'file' || type === 'directory' || type === 'other') fact.type = type;
  const mode = kv.get('mode');
  if (mode !== undefined) {
    if (!/^[0-7]{1,4}$/.test(mode)) throw new FactsParseError(`file ${path}: bad mode ${preview(mode)}`);
    fact.mode = mode;
  }
  const owner = kv.get('owner');
  if (owner) fact.owner = owner;
  const group = kv.get('group');
  if (group) fact.group = group;
  const size = kv.get('size');
  if (size !== undefined && /^[0-9]+$/.test(size)) fact.size = Number(size);
  const readable = kv.get('readable');
  if (readable === '0' || readable === '1') fact.readable = readable === '1';
  const sha = kv.get('sha256');
  if (sha !== undefined) {
    if (!/^[0-9a-f]{64}$/.test(sha)) throw new FactsParseError(`file ${path}: bad sha256 ${preview(sha)}`);
    fact.sha256 = sha;
  }
  const content = kv.get('content');
  if (content === 'too-large') fact.tooLarge = true;
  else if (content === 'same') {
    // the node found one of the expected contents: the one with the sha256 it reports
    const text = fact.sha256 === undefined ? undefined : expected.find((t) => sha256(t) === fact.sha256);
    if (text === undefined) {
      throw new FactsParseError(`file ${path}: the node reports an expected content, but none given to parseFacts has its sha256`);
    }
    if (fact.size !== undefined && Buffer.byteLength(text) !== fact.size) {
      throw new FactsParseError(`file ${path}: the expected content has ${Buffer.byteLength(text)} bytes, stat said ${fact.size}`);
    }
    fact.content = text;
  } else if (content !== undefined) {
    const bytes = decodePayload(content, `file ${path}: content`);
    if (fact.size !== undefined && bytes.length !== fact.size) {
      throw new FactsParseError(`file ${path}: content has ${bytes.length} bytes, stat said ${fact.size} (cut short or changed?)`);
    }
    if (fact.sha256 !== undefined && createHash('sha256').update(bytes).digest('hex') !== fact.sha256) {
      throw new FactsParseError(`file ${path}: content does not match its sha256`);
    }
    fact.content = bytes.toString('utf8');
  }
  return fact;
}

/**
 * Parse the stdout of facts.sh. Pure. Throws FactsParseError on malformed or truncated output.
 * `expected`: the map given to factsScript, to fill in the files the node reported as holding one of them.
 */
export function parseFacts(output: string, expected: ExpectedContents = {}): Facts {
  const sections = splitSections(output);
  const single = (name: string): Section => {
    const found = sections.filter((s) => s.name === name);
    if (found.length === 0) throw new FactsParseError(`facts output has no "@@kpm:${name}" section`);
    if (found.length > 1) throw new FactsParseError(`facts output has ${found.length} "@@kpm:${name}" sections`);
    return found[0] as Section;
  };

  const system = keyValues(single('system'));
  const osSection = keyValues(single('os-release'));
  const osText = decodePayload(osSection.get('content') ?? '', 'os-release').toString('utf8');
  const osr = parseOsRelease(osText);
  const os = {
    id: (osr.ID ?? '').toLowerCase(),
    idLike: (osr.ID_LIKE ?? '').toLowerCase().split(/\s+/).filter(Boolean),
    versionId: osr.VERSION_ID ?? '',
    prettyName: osr.PRETTY_NAME ?? osr.NAME ?? '',
  };
  const family = familyOf(os);

  const present = new Set<PackageManagerName>();
  for (const line of single('package-managers').body) {
    const cmd = line.trim();
    const pm = PACKAGE_MANAGER_ORDER.find((n) => PACKAGE_MANAGERS[n].command === cmd);
    if (pm) present.add(pm);
  }
  const packageManagers = (family ? family.packageManagers : PACKAGE_MANAGER_ORDER).filter((n) => present.has(n));

  const queries = new Map<string, Section>();
  for (const s of sections.filter((x) => x.name === 'packages')) queries.set(s.arg, s);
  const tool = family?.packageQuery ?? (queries.has('dpkg') ? 'dpkg' : queries.has('rpm') ? 'rpm' : undefined);
  const packages: Record<string, boolean> = {};
  const query = tool === undefined ? undefined : queries.get(tool);
  if (query) for (const [pkg, status] of keyValues(query)) packages[pkg] = status === 'installed';

  const lsmod = single('lsmod');
  const loadedModules = loadedFrom(lsmod.body);
  const loadedSet = new Set(loadedModules);
  const builtinList = new Set(single('modules.builtin').body.filter((l) => l.trim() !== '').map(moduleFileName));

  const modules: Record<string, ModuleProbe> = {};
  for (const s of sections.filter((x) => x.name === 'module')) {
    const name = normaliseModuleName(s.arg);
    if (!MODULE_RE.test(name)) throw new FactsParseError(`bad module name ${preview(s.arg)} at line ${s.line}`);
    modules[name] = probeModule(name, s, loadedSet, builtinList);
  }

  const files: Record<string, FileFact> = {};
  for (const s of sections.filter((x) => x.name === 'file')) {
    if (!s.arg.startsWith('/')) throw new FactsParseError(`bad file path ${preview(s.arg)} at line ${s.line}`);
    files[s.arg] = fileFact(s.arg, s, expected[s.arg] ?? []);
  }

  const kernel = system.get('kernel') ?? '';
  const user = system.get('user') ?? '';
  return {
    os,
    family: family?.name ?? null,
    kernel,
    arch: system.get('arch') ?? '',
    packageManagers,
    packages,
    modules,
    loadedModules,
    files,
    systemd: system.get('systemd') === '1',
    user,
    ...(system.get('nft') ? { nftVersion: system.get('nft')! } : {}),
  };
}
