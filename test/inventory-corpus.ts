// A generated corpus of malformed and hostile inventories, for test/unit/inventory-hostile.test.ts (every
// case through the real loader) and test/lab/injection.test.ts (the accepted ones run against lab hosts).
//
// Each case is a small directory: the inventory file (YAML or INI), and where it matters group_vars/,
// host_vars/, a key and a known_hosts file. Every case is either refused with one exact message line
// (file, line where there is one, key, what was expected), or accepted with the hostile values kept
// byte for byte. Shell payloads each create their own marker file when a shell runs them, so a marker
// anywhere means a payload ran.
//
// Cases are built for a Target: the default one has placeholder addresses; the lab passes its own hosts,
// key and known_hosts, so the same inventories can be run for real.

import { execFileSync } from 'node:child_process';
import { closeSync, ftruncateSync, mkdirSync, openSync, symlinkSync, writeFileSync, writeSync } from 'node:fs';
import path from 'node:path';

export interface TargetHost {
  name: string;
  address: string;
  port: number;
}

export interface Target {
  hosts: TargetHost[];
  user: string;
  keyText: string;
  knownHostsText: string;
}

export const PLACEHOLDER_TARGET: Target = {
  hosts: [
    { name: 'node1', address: '10.0.0.1', port: 22 },
    { name: 'node2', address: '10.0.0.2', port: 22 },
  ],
  user: 'root',
  keyText: '-----BEGIN OPENSSH PRIVATE KEY-----\nnot a key: no connection is made with it\n-----END OPENSSH PRIVATE KEY-----\n',
  knownHostsText: '',
};

/** A file's content: text, bytes, or something that is not a plain small file. */
export type FileContent =
  | string
  | Uint8Array
  /** `head`, then zeros up to `bytes` (a sparse file: cheap however large) */
  | { sparse: number; head: string }
  | { fifo: true }
  | { symlink: string };

export type Kind =
  | 'type'
  | 'unknown-key'
  | 'duplicate'
  | 'alias-bomb'
  | 'size'
  | 'nesting'
  | 'address'
  | 'port'
  | 'range'
  | 'injection'
  | 'secret'
  | 'encoding'
  | 'ini'
  | 'vars-dir';

export interface Rejected {
  /** one line of the message: file, line, key and what was expected */
  reject: RegExp;
  /** how many problem lines the message has (default 1) */
  problems?: number;
  /** text that must appear nowhere in the message or the problems */
  secrets?: string[];
}

export interface Accepted {
  accept: true;
  hosts: string[];
  /** per host: variables that must arrive exactly as written */
  vars?: Record<string, Record<string, unknown>>;
  /** each must match one warning */
  warnings?: RegExp[];
  /** connects to the target's hosts as they are (the lab runs it) */
  runnable: boolean;
}

export interface HostileCase {
  name: string;
  kind: Kind;
  /** the file given to --inventory, relative to the case directory */
  inventory: string;
  files: Record<string, FileContent>;
  expect: Rejected | Accepted;
  /** markers of the payloads this case carries */
  markers: string[];
}

export const isRejected = (e: Rejected | Accepted): e is Rejected => 'reject' in e;

// ---------------------------------------------------------------------------------------------------------
// Payloads

export interface Payload {
  tag: string;
  text: string;
  /** the file a shell running the payload creates */
  marker: string;
  /** where it breaks out when pasted into a command line: as a bare word, or inside '...' or "..." */
  context: 'bare' | 'single' | 'double';
}

const payload = (tag: string, text: string, context: Payload['context']): Payload => ({
  tag,
  text: text.replaceAll('@M', `/tmp/pwned-${tag}`),
  marker: `/tmp/pwned-${tag}`,
  context,
});

export const PAYLOADS: readonly Payload[] = [
  payload('dollar', '$(touch @M)', 'bare'),
  payload('backtick', '`touch @M`', 'bare'),
  payload('semicolon', ';touch @M', 'bare'),
  payload('pipe', '|touch @M', 'bare'),
  payload('and', '&&touch @M', 'bare'),
  payload('squote', "';touch @M;'", 'single'),
  payload('dquote', '";touch @M;"', 'double'),
  payload('newline', '\ntouch @M\n', 'bare'),
  payload('ifs', '$(touch${IFS}@M)', 'bare'),
  payload('procsub', ' >(touch @M)', 'bare'),
];

// ---------------------------------------------------------------------------------------------------------
// Expected messages, as the user sees them

export const MSG = {
  hostName: 'expected a host name of letters, digits, "_", "-" and "." (not starting with "-" or "."), got ',
  groupName: 'expected a group name of letters, digits, "_" and "-" (not starting with "-"), got ',
  address: 'expected an IP address or DNS host name, got ',
  port: 'expected an integer port 1-65535, got ',
  user: 'expected a user name (letters, digits, "_", ".", "@", "-"), got ',
  scheduler: 'expected an IPVS scheduler (one of rr, wrr, lc, wlc, lblc, lblcr, dh, sh, sed, nq, fo, ovf, mh), got ',
  module: 'expected a kernel module name (lowercase letters, digits, "_"), got ',
  probe:
    'expected namespace/name, optionally :port, an HTTP /path and =accepted,codes (like kube-system/kube-dns:53 or default/web:80/healthz=200,204), got ',
  password:
    'passwords are never read from inventory files; remove this variable and use -K/--ask-become-pass or the environment variable KPM_BECOME_PASSWORD',
  passphrase:
    'private key passphrases are never read from inventory files; remove this variable, load the key into ssh-agent (ssh-add) and leave ansible_ssh_private_key_file unset so the agent is used',
  duration: 'expected a Go duration (like 900s, 15m0s or 0s), got ',
  bool: 'expected a boolean (true/false), got ',
} as const;

// Mirrors of how messages show names and values: JSON quoted, cut at 60 characters, with control and
// invisible characters escaped. Kept here rather than imported, so a change in the wording shows.
const UNPRINTABLE = /[\u0000-\u0008\u000a-\u001f\u007f-\u009f\u061c\u200b-\u200f\u2028-\u202e\u2060-\u2064\u2066-\u206f\ufeff\ufff9-\ufffb]/g;
const printable = (s: string): string => s.replace(UNPRINTABLE, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`);
/** a value or name as messages quote it */
export const shown = (s: string): string => printable(JSON.stringify(s.length > 60 ? `${s.slice(0, 57)}...` : s));
/** what a refusal adds for a name or address beyond ASCII */
const nonAscii = (s: string): string => {
  const i = [...s].findIndex((c) => c.codePointAt(0)! > 0x7e);
  return i < 0 ? '' : ` (character ${i + 1} is U+${[...s][i]!.codePointAt(0)!.toString(16).toUpperCase().padStart(4, '0')}, not ASCII)`;
};
/** a name as it appears in a key path */
export const keyPart = (s: string): string => shown(s).slice(1, -1);

const escapeRe = (s: string): string => s.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&');

/** One exact line of a message: `file:line: key: message` (no line for 0, no key for ''). */
export function line(file: string, lineNo: number, key: string, message: string): RegExp {
  const where = lineNo > 0 ? `${file}:${lineNo}: ` : `${file}: `;
  return new RegExp(`^${escapeRe(where + (key ? `${key}: ` : '') + message)}$`, 'm');
}

/** 1-based number of the first line of `text` that contains `needle`. */
export function lineOf(text: string, needle: string): number {
  const i = text.split(/\r\n|\n|\r/).findIndex((l) => l.includes(needle));
  if (i < 0) throw new Error(`corpus: ${JSON.stringify(needle)} is not in the text`);
  return i + 1;
}

// ---------------------------------------------------------------------------------------------------------
// Writers

/** A YAML double-quoted scalar: JSON's string syntax is YAML's. */
const yq = (s: string): string => JSON.stringify(s);

/** One shell-like token for an INI host line (Python's shlex): single quotes, `'` written as '"'"'. */
const shlexQuote = (s: string): string => `'${s.replaceAll("'", `'"'"'`)}'`;

const KEY_FILE = 'keys/id_ed25519';
const KNOWN_HOSTS = 'known_hosts';

interface YamlOptions {
  /** `name: value` lines of all.vars (value as YAML text); replaces a default of the same name */
  allVars?: [string, string][];
  /** per host index: `name: value` lines (value as YAML text); ansible_host and ansible_port replace the target's */
  hostVars?: Record<number, [string, string][]>;
  /** host names in place of the target's, by index */
  names?: Record<number, string>;
  /** written as YAML keys as given (already quoted) */
  rawNames?: Record<number, string>;
  /** the hosts' group under all.children (default: directly under all.hosts) */
  group?: string;
}

function connectionVars(t: Target): Map<string, string> {
  return new Map([
    ['ansible_user', t.user],
    ['ansible_ssh_private_key_file', KEY_FILE],
    ['kpm_known_hosts_file', KNOWN_HOSTS],
    ['kpm_connect_timeout', '5'],
    ['kpm_connect_retries', '0'],
  ]);
}

export function yamlInventory(t: Target, o: YamlOptions = {}): string {
  const vars = connectionVars(t);
  for (const [k, v] of o.allVars ?? []) vars.set(k, v);
  const out = ['all:', '  vars:'];
  for (const [k, v] of vars) out.push(`    ${k}: ${v}`);
  const indent = o.group ? '        ' : '    ';
  if (o.group) out.push('  children:', `    ${o.group}:`, '      hosts:');
  else out.push('  hosts:');
  t.hosts.forEach((h, i) => {
    const name = o.rawNames?.[i] ?? yamlKey(o.names?.[i] ?? h.name);
    const own = new Map<string, string>([['ansible_host', h.address], ['ansible_port', String(h.port)]]);
    for (const [k, v] of o.hostVars?.[i] ?? []) own.set(k, v);
    out.push(`${indent}${name}:`);
    for (const [k, v] of own) out.push(`${indent}  ${k}: ${v}`);
  });
  return out.join('\n') + '\n';
}

const yamlKey = (name: string): string => (/^[A-Za-z0-9_.-]+$/.test(name) ? name : yq(name));

interface IniOptions {
  /** `name=value` lines of [all:vars] (value as written); replaces a default of the same name */
  allVars?: [string, string][];
  /** per host index: `name=value` tokens, as written */
  hostVars?: Record<number, string[]>;
  /** host patterns as written on the line, by index */
  names?: Record<number, string>;
  group?: string;
  eol?: string;
  bom?: boolean;
}

export function iniInventory(t: Target, o: IniOptions = {}): string {
  const vars = connectionVars(t);
  for (const [k, v] of o.allVars ?? []) vars.set(k, v);
  const group = o.group ?? 'k8s_cluster';
  const out = [`[${group}]`];
  t.hosts.forEach((h, i) => {
    out.push([o.names?.[i] ?? h.name, `ansible_host=${h.address}`, `ansible_port=${h.port}`, ...(o.hostVars?.[i] ?? [])].join(' '));
  });
  out.push('', '[all:vars]');
  for (const [k, v] of vars) out.push(`${k}=${v}`);
  const eol = o.eol ?? '\n';
  return (o.bom ? '\uFEFF' : '') + out.join(eol) + eol;
}

/** The files every case has next to its inventory: the key and known_hosts it names. */
function baseFiles(t: Target): Record<string, FileContent> {
  return { [KEY_FILE]: t.keyText, [KNOWN_HOSTS]: t.knownHostsText };
}

/** Writes a case under `dir`; returns the inventory file's path. */
export function writeCase(dir: string, c: HostileCase): string {
  for (const [rel, content] of Object.entries(c.files)) {
    const p = path.join(dir, rel);
    mkdirSync(path.dirname(p), { recursive: true });
    if (typeof content === 'string' || content instanceof Uint8Array) {
      writeFileSync(p, content);
    } else if ('sparse' in content) {
      const fd = openSync(p, 'w');
      try {
        writeSync(fd, content.head);
        ftruncateSync(fd, content.sparse);
      } finally {
        closeSync(fd);
      }
    } else if ('fifo' in content) {
      execFileSync('mkfifo', [p]);
    } else {
      symlinkSync(content.symlink, p);
    }
  }
  return path.join(dir, c.inventory);
}

// ---------------------------------------------------------------------------------------------------------
// The corpus

export function hostileCorpus(t: Target = PLACEHOLDER_TARGET): HostileCase[] {
  const cases: HostileCase[] = [];
  const names = t.hosts.map((h) => h.name);
  const h0 = names[0]!;
  const Y = 'hosts.yaml';
  const I = 'inventory.ini';

  const add = (c: Omit<HostileCase, 'markers' | 'files'> & { files: Record<string, FileContent>; markers?: string[] }): void => {
    if (cases.some((x) => x.name === c.name)) throw new Error(`corpus: two cases named ${c.name}`);
    cases.push({ markers: [], ...c, files: { ...baseFiles(t), ...c.files } });
  };
  type Extra = Partial<Rejected> & { markers?: string[] };
  /** a case refused at line `at` (a number, or the first line holding that text) */
  const reject = (file: string, name: string, kind: Kind, text: string, at: string | number, key: string, message: string, extra: Extra = {}): void => {
    const { markers, ...rest } = extra;
    const lineNo = typeof at === 'number' ? at : lineOf(text, at);
    add({ name, kind, inventory: file, files: { [file]: text }, expect: { reject: line(file, lineNo, key, message), ...rest }, ...(markers ? { markers } : {}) });
  };
  const yamlReject = (name: string, kind: Kind, text: string, at: string | number, key: string, message: string, extra: Extra = {}): void =>
    reject(Y, name, kind, text, at, key, message, extra);
  const iniReject = (name: string, kind: Kind, text: string, at: string | number, key: string, message: string, extra: Extra = {}): void =>
    reject(I, name, kind, text, at, key, message, extra);
  const hostKey = (v: string) => `all.hosts.${keyPart(h0)}.${v}`;
  const iniHostKey = (v: string) => `[k8s_cluster] ${h0} ${v}`;

  // --- wrong types, for every variable the tool reads (YAML: typed values; INI: text) -----------------------
  const wrongTypes: [string, string, string][] = [
    ['ansible_host', '{a: 1}', `${MSG.address}a map`],
    ['ansible_port', '[22]', `${MSG.port}a list`],
    ['ansible_user', '{name: root}', `${MSG.user}a map`],
    ['ansible_ssh_private_key_file', '[keys/id]', 'expected a file path, got a list'],
    ['ansible_become', 'sometimes', `${MSG.bool}"sometimes"`],
    ['ansible_become_user', '[root]', `${MSG.user}a list`],
    ['ansible_become_method', 'su', 'expected sudo (this tool becomes root only through sudo), got "su"'],
    ['ansible_connection', 'local', 'expected ssh, smart or paramiko (this tool only connects over SSH), got "local"'],
    ['kube_proxy_mode', '[ipvs]', 'expected one of ipvs, iptables, nftables, got a list'],
    ['kube_proxy_scheduler', '{rr: 1}', `${MSG.scheduler}a map`],
    ['kube_proxy_strict_arp', '"2"', `${MSG.bool}"2"`],
    ['kube_proxy_exclude_cidrs', '{a: 1}', 'expected a list of CIDRs (like [10.0.0.0/8]), got a map'],
    ['kube_proxy_ipvs_modules', '42', 'expected a list of kernel module names (or nothing, for the default list), got "42"'],
    ['kube_proxy_tcp_timeout', 'true', `${MSG.duration}"true"`],
    ['kube_proxy_tcp_fin_timeout', '{}', `${MSG.duration}a map`],
    ['kube_proxy_udp_timeout', '[30s]', `${MSG.duration}a list`],
    ['kube_proxy_probe_services', '42', 'expected a list of Services to probe (like [default/web:80/healthz=200]), got "42"'],
    ['kpm_connect_timeout', '{}', 'expected a number of seconds greater than 0, got a map'],
    ['kpm_connect_retries', 'true', 'expected an integer 0-10, got "true"'],
    ['kpm_command_timeout', '5 minutes', 'expected a number of seconds greater than 0, got "5 minutes"'],
    ['kpm_known_hosts_file', '{}', 'expected a file path, got a map'],
    ['kubeconfig', '[]', 'expected a file path, got a list'],
    ['kube_context', '""', 'expected a non-empty string, got ""'],
    ['ansible_ssh_host', '[10.0.0.1]', `${MSG.address}a list`],
    ['ansible_ssh_port', 'abc', `${MSG.port}"abc"`],
    ['ansible_ssh_user', '{}', `${MSG.user}a map`],
  ];
  for (const [v, value, message] of wrongTypes) {
    const text = yamlInventory(t, { hostVars: { 0: [[v, value]] } });
    yamlReject(`type-yaml-${v}`, 'type', text, `      ${v}: ${value}`, hostKey(v), message);
  }
  // kpm_forks applies to the run (all.vars only); ansible_group_priority to groups only
  {
    const text = yamlInventory(t, { allVars: [['kpm_forks', '[10]']] });
    yamlReject('type-yaml-kpm_forks', 'type', text, 'kpm_forks:', 'all.vars.kpm_forks', 'expected an integer 1-1000, got a list');
    const text2 = yamlInventory(t, { allVars: [['ansible_group_priority', 'high']] });
    yamlReject('type-yaml-ansible_group_priority', 'type', text2, 'ansible_group_priority:', 'all.vars.ansible_group_priority', 'expected an integer, got "high"');
  }
  const iniWrong: [string, string, string][] = [
    ['ansible_port', 'abc', `${MSG.port}"abc"`],
    ['ansible_become', 'maybe', `${MSG.bool}"maybe"`],
    ['kube_proxy_strict_arp', 'perhaps', `${MSG.bool}"perhaps"`],
    ['kpm_connect_retries', '11', 'expected an integer 0-10, got "11"'],
    ['kube_proxy_ipvs_modules', "['ip_vs'", 'expected a list of kernel module names (or nothing, for the default list), got "[\'ip_vs\'"'],
    ['kube_proxy_exclude_cidrs', "['10.0.0.0/33']", 'expected an IPv4 or IPv6 CIDR (like 10.0.0.0/8 or fd00::/8), got "10.0.0.0/33"'],
    ['kube_proxy_mode', 'userspace', 'expected one of ipvs, iptables, nftables, got "userspace"'],
    ['kube_proxy_tcp_timeout', '900', 'expected a Go duration with a unit (like 900s, 15m0s or 0s), got "900"'],
    ['kpm_command_timeout', '-5', 'expected a number of seconds greater than 0, got "-5"'],
  ];
  for (const [v, value, message] of iniWrong) {
    const text = iniInventory(t, { allVars: [[v, value]] });
    const key = v === 'kube_proxy_exclude_cidrs' ? `[all:vars] ${v}[0]` : `[all:vars] ${v}`;
    iniReject(`type-ini-${v}`, 'type', text, `${v}=${value}`, key, message);
  }
  {
    const text = iniInventory(t, { allVars: [['kpm_forks', 'many']] });
    iniReject('type-ini-kpm_forks', 'type', text, 'kpm_forks=', '[all:vars] kpm_forks', 'expected an integer 1-1000, got "many"');
  }

  // --- unknown keys ---------------------------------------------------------------------------------------
  {
    const text = yamlInventory(t, { allVars: [['kpm_conect_timeout', '5']] });
    yamlReject('unknown-kpm-variable', 'unknown-key', text, 'kpm_conect_timeout', 'all.vars.kpm_conect_timeout', 'unknown tool variable; did you mean kpm_connect_timeout?');
    const text2 = yamlInventory(t, { allVars: [['kube_proxy_shceduler', 'rr']] });
    yamlReject('unknown-kube-proxy-variable', 'unknown-key', text2, 'kube_proxy_shceduler', 'all.vars.kube_proxy_shceduler', "unknown kube-proxy variable (neither this tool's nor kubespray's); did you mean kube_proxy_scheduler?");
    const text3 = yamlInventory(t).replace('  hosts:\n', '  hostz:\n');
    yamlReject('unknown-group-key', 'unknown-key', text3, 'hostz:', 'all.hostz', 'unknown key in a group; expected hosts, children or vars (did you mean hosts?)');
    const text4 = yamlInventory(t, { group: 'k8s_cluster' }).replace('  children:\n', '  childern:\n');
    yamlReject('unknown-children-key', 'unknown-key', text4, 'childern:', 'all.childern', 'unknown key in a group; expected hosts, children or vars (did you mean children?)');
    const text5 = `hosts:\n  ${h0}:\n`;
    yamlReject('unknown-top-level-hosts', 'unknown-key', text5, 'hosts:', 'hosts', 'expected group names at the top level, got "hosts" (did you forget "all:" above it?)');
    const text6 = iniInventory(t).replace('[k8s_cluster]', '[k8s_cluster:hosts]');
    iniReject('unknown-ini-section-type', 'unknown-key', text6, '[k8s_cluster:hosts]', '[k8s_cluster:hosts]', 'unknown section type; expected [group], [group:vars] or [group:children]');
  }

  // --- duplicates: a key twice in one map or one line is refused (Ansible keeps the last one with a
  // warning, which silently drops the first); a host in several groups is one host, as in Ansible ------------
  {
    const text = yamlInventory(t) + `    ${names[0]}:\n      ansible_host: ${t.hosts[0]!.address}\n`;
    const dupLine = text.split('\n').lastIndexOf(`    ${names[0]}:`) + 1;
    add({
      name: 'duplicate-host-yaml',
      kind: 'duplicate',
      inventory: Y,
      files: { [Y]: text },
      expect: { reject: line(Y, dupLine, `all.hosts.${h0}`, `host "${h0}" is declared twice in this group's hosts (first on line ${lineOf(text, `    ${h0}:`)})`) },
    });
    const text2 = yamlInventory(t, { hostVars: { 0: [['kube_proxy_scheduler', 'rr']] } }).replace('      kube_proxy_scheduler: rr\n', '      kube_proxy_scheduler: rr\n      kube_proxy_scheduler: wrr\n');
    add({
      name: 'duplicate-variable-yaml',
      kind: 'duplicate',
      inventory: Y,
      files: { [Y]: text2 },
      expect: { reject: line(Y, lineOf(text2, 'kube_proxy_scheduler: wrr'), hostKey('kube_proxy_scheduler'), `duplicate key "kube_proxy_scheduler" (first on line ${lineOf(text2, 'kube_proxy_scheduler: rr')})`) },
    });
    const text3 = iniInventory(t).replace('\n\n[all:vars]', `\n${h0}\n\n[all:vars]`);
    iniReject('duplicate-host-ini', 'duplicate', text3, t.hosts.length + 2, `[k8s_cluster] ${h0}`, `host "${h0}" is declared twice in this group (first on line 2)`);
    const text4 = iniInventory(t, { hostVars: { 0: ['ansible_port=22'] } });
    iniReject('duplicate-variable-ini-line', 'duplicate', text4, `${h0} `, iniHostKey('ansible_port'), 'duplicate key "ansible_port" on this line');
    const text5 = iniInventory(t, { allVars: [['kube_proxy_scheduler', 'rr']] }) + 'kube_proxy_scheduler=wrr\n';
    iniReject('duplicate-variable-ini-section', 'duplicate', text5, 'kube_proxy_scheduler=wrr', '[all:vars] kube_proxy_scheduler', `duplicate key "kube_proxy_scheduler" in this section (first on line ${lineOf(text5, 'kube_proxy_scheduler=rr')})`);
    // accepted: one host listed in two groups merges
    const text6 = yamlInventory(t, { group: 'kube_node' }).replace('  children:\n', `  children:\n    kube_control_plane:\n      hosts:\n        ${h0}:\n          kube_proxy_strict_arp: true\n`);
    add({ name: 'same-host-two-groups-yaml', kind: 'duplicate', inventory: Y, files: { [Y]: text6 }, expect: { accept: true, hosts: names, vars: { [h0]: { kube_proxy_strict_arp: true } }, runnable: true } });
    const text7 = iniInventory(t) + `\n[kube_control_plane]\n${h0} kube_proxy_strict_arp=true\n`;
    add({ name: 'same-host-two-groups-ini', kind: 'duplicate', inventory: I, files: { [I]: text7 }, expect: { accept: true, hosts: names, vars: { [h0]: { kube_proxy_strict_arp: true } }, runnable: true } });
  }

  // --- YAML alias bombs and alias mistakes -------------------------------------------------------------
  {
    const laughs = ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]'];
    for (let i = 1; i < 9; i++) {
      const prev = String.fromCharCode(96 + i);
      const cur = String.fromCharCode(97 + i);
      laughs.push(`${cur}: &${cur} [${Array(9).fill(`*${prev}`).join(',')}]`);
    }
    const bomb = yamlInventory(t).replace('  vars:\n', `  vars:\n    laughs:\n${laughs.map((l) => `      ${l}`).join('\n')}\n`);
    yamlReject('alias-bomb-billion-laughs', 'alias-bomb', bomb, 'b: &b', '', 'YAML aliases expand too much (more than 50 alias expansions); refusing a document that looks like an alias bomb');
    const merges = ['    m0: &m0 {k0: 1, k1: 2, k2: 3, k3: 4}'];
    for (let i = 1; i < 8; i++) merges.push(`    m${i}: &m${i} {<<: [${Array(6).fill(`*m${i - 1}`).join(', ')}], x${i}: 1}`);
    const mergeBomb = yamlInventory(t).replace('  vars:\n', `  vars:\n${merges.join('\n')}\n`);
    yamlReject('alias-bomb-merge-keys', 'alias-bomb', mergeBomb, 'm1: &m1', '', 'YAML aliases expand too much (more than 50 alias expansions); refusing a document that looks like an alias bomb');
    const big = `    big: &big [${Array.from({ length: 2000 }, (_, i) => `v${i}`).join(', ')}]`;
    const wide = yamlInventory(t).replace('  vars:\n', `  vars:\n${big}\n    copies: [${Array(60).fill('*big').join(', ')}]\n`);
    yamlReject('alias-bomb-wide-anchor', 'alias-bomb', wide, 'copies:', '', 'YAML aliases expand too much (more than 50 alias expansions); refusing a document that looks like an alias bomb');
    const many = yamlInventory(t).replace('  vars:\n', `  vars:\n    one: &one 1\n    many: [${Array(1001).fill('*one').join(', ')}]\n`);
    yamlReject('alias-many-alias-nodes', 'alias-bomb', many, 'many:', '', 'too many YAML aliases (more than 1000)');
    const recursive = yamlInventory(t).replace('  vars:\n', '  vars:\n    loop: &loop\n      again: *loop\n');
    yamlReject('alias-recursive', 'alias-bomb', recursive, 'again: *loop', '', 'YAML error: alias *loop is used inside its own anchor (a recursive document)');
    const unknown = yamlInventory(t, { hostVars: { 0: [['kube_proxy_scheduler', '*sched']] } });
    yamlReject('alias-unknown', 'alias-bomb', unknown, '*sched', '', 'YAML error: unknown alias *sched (the anchor must be defined before it is used)');
    add({
      name: 'alias-bomb-in-group-vars',
      kind: 'alias-bomb',
      inventory: Y,
      files: { [Y]: yamlInventory(t), 'group_vars/all.yml': `${laughs.join('\n')}\n` },
      expect: { reject: line('group_vars/all.yml', 2, '', 'YAML aliases expand too much (more than 50 alias expansions); refusing a document that looks like an alias bomb') },
    });
    // anchors used sensibly are fine
    const sensible = yamlInventory(t, { hostVars: { 0: [['kube_proxy_exclude_cidrs', '&cidrs [10.0.0.0/8]']], 1: [['kube_proxy_exclude_cidrs', '*cidrs']] } });
    add({ name: 'alias-sensible', kind: 'alias-bomb', inventory: Y, files: { [Y]: sensible }, expect: { accept: true, hosts: names, vars: { [h0]: { kube_proxy_exclude_cidrs: ['10.0.0.0/8'] } }, runnable: true } });
  }

  // --- size --------------------------------------------------------------------------------------------
  {
    add({
      name: 'size-50-mib-inventory',
      kind: 'size',
      inventory: Y,
      files: { [Y]: { sparse: 50 * 1024 * 1024, head: yamlInventory(t) } },
      expect: { reject: line(Y, 0, '', 'expected an inventory file of at most 10 MiB; this one is larger (is it the right file?)') },
    });
    add({
      name: 'size-vars-file-over-10-mib',
      kind: 'size',
      inventory: Y,
      files: { [Y]: yamlInventory(t), 'group_vars/all.yml': { sparse: 10 * 1024 * 1024 + 1, head: 'x: 1\n' } },
      expect: { reject: line('group_vars/all.yml', 0, '', 'expected a vars file of at most 10 MiB; this one is larger') },
    });
    const ranges = `[k8s_cluster]\n${Array.from({ length: 11 }, (_, i) => `r${i}n[1:10000]`).join('\n')}\n`;
    iniReject('size-too-many-hosts', 'size', ranges, 'r1n[', '[k8s_cluster] r1n[1:10000]', 'expected at most 10,000 hosts in one inventory (Kubernetes supports 5,000 nodes in a cluster); the inventory has more by here (is it the right file?)');
    const entries = Array.from({ length: 11 }, (_, i) => `[g${i}]\nn[1:10000]`).join('\n') + '\n';
    iniReject('size-too-many-host-entries', 'size', entries, lineOf(entries, '[g10]') + 1, '[g10] n[1:10000]', 'expected at most 100,000 host names in all, counting a host once for every group that lists it (ranges expanded); the inventory has more by here (is it the right file?)');
    const groups = `[k8s_cluster]\n${h0} ansible_host=${t.hosts[0]!.address}\n` + Array.from({ length: 1001 }, (_, i) => `[g${i}]`).join('\n') + '\n';
    // k8s_cluster and g0 ... g998 are the 1,000 allowed
    iniReject('size-too-many-groups', 'size', groups, '[g999]', '[g999]', 'expected at most 1,000 groups besides all and ungrouped; the inventory has more by here (is it the right file?)');
    const hv = `[k8s_cluster]\nn[1:10000]\n[all:vars]\n${Array.from({ length: 600 }, (_, i) => `v${i}=x`).join('\n')}\n`;
    add({
      name: 'size-variables-times-hosts',
      kind: 'size',
      inventory: I,
      files: { [I]: hv },
      expect: {
        reject: line(I, 0, '', "expected at most 5,000,000 variable assignments over all hosts (a host counts each variable of each of its groups); this inventory's 10,000 hosts get 6,020,000 (is it the right file?)"),
      },
    });
    const manyVars = iniInventory(t, { allVars: Array.from({ length: 150_000 }, (_, i): [string, string] => [`v${i}`, `x${i}`]) });
    add({ name: 'size-150k-variables-in-one-group', kind: 'size', inventory: I, files: { [I]: manyVars }, expect: { accept: true, hosts: names, vars: { [h0]: { v0: 'x0', v149999: 'x149999' } }, runnable: false } });
    const long = 'L'.repeat(5 * 1024 * 1024);
    const longText = yamlInventory(t, { allVars: [['my_long_value', long]] });
    add({ name: 'size-5-mib-value', kind: 'size', inventory: Y, files: { [Y]: longText }, expect: { accept: true, hosts: names, vars: { [h0]: { my_long_value: long } }, runnable: true } });
    const longName = 'n'.repeat(300);
    yamlReject('size-300-character-host-name', 'size', yamlInventory(t, { names: { 0: longName } }), longName, `all.hosts.${keyPart(longName)}`, `${MSG.hostName}${shown(longName)}`);
    const problems = iniInventory(t, { allVars: Array.from({ length: 300 }, (_, i): [string, string] => [`kpm_bad${i}`, '1']) });
    iniReject('size-300-problems-listed-100', 'size', problems, 'kpm_bad0=', '[all:vars] kpm_bad0', 'unknown tool variable; expected one of kpm_forks, kpm_connect_timeout, kpm_connect_retries, kpm_command_timeout, kpm_package_lock_timeout, kpm_known_hosts_file', { problems: 100 });
  }

  // --- nesting -----------------------------------------------------------------------------------------
  {
    const deep = (n: number) => yamlInventory(t, { allVars: [['deep', `${'['.repeat(n)}${']'.repeat(n)}`]] });
    yamlReject('nesting-150-levels', 'nesting', deep(150), 'deep:', '', 'YAML nested too deeply: lists and maps inside each other more than 100 levels');
    yamlReject('nesting-20000-levels', 'nesting', deep(20_000), 'deep:', '', 'YAML nested too deeply: lists and maps inside each other more than 100 levels');
    const maps = yamlInventory(t, { allVars: [['deep', `${'{a: '.repeat(5000)}1${'}'.repeat(5000)}`]] });
    yamlReject('nesting-5000-flow-maps', 'nesting', maps, 'deep:', '', 'YAML nested too deeply: lists and maps inside each other more than 100 levels');
    add({ name: 'nesting-90-levels-kept', kind: 'nesting', inventory: Y, files: { [Y]: deep(90) }, expect: { accept: true, hosts: names, runnable: true } });
    // a chain of 1,000 groups, each the child of the one before: deep, but within the bounds
    let chain = '';
    for (let i = 0; i < 999; i++) chain += `[c${i}:children]\nc${i + 1}\n`;
    chain += `[c999]\n${t.hosts.map((h) => `${h.name} ansible_host=${h.address} ansible_port=${h.port}`).join('\n')}\n`;
    chain += `[all:vars]\n${[...connectionVars(t)].map(([k, v]) => `${k}=${v}`).join('\n')}\n[c0:vars]\nkube_proxy_scheduler=wrr\n[c999:vars]\nkube_proxy_strict_arp=true\n`;
    for (let i = 0; i < 999; i++) chain += `[c${i}]\n`;
    add({ name: 'nesting-1000-group-chain', kind: 'nesting', inventory: I, files: { [I]: chain }, expect: { accept: true, hosts: names, vars: { [h0]: { kube_proxy_scheduler: 'wrr', kube_proxy_strict_arp: true } }, runnable: true } });
    const cycle = `[a:children]\nb\n[b:children]\na\n[a]\n${h0} ansible_host=${t.hosts[0]!.address}\n[b]\n`;
    iniReject('nesting-group-cycle', 'nesting', cycle, 4, '[b:children] a', 'group "a" contains itself: a -> b -> a');
  }

  // --- addresses -----------------------------------------------------------------------------------------
  const badAddresses = ['256.1.1.1', '10.1', '010.0.0.1', 'fe80:::1', '[::1]', ':::', '10.0.0.1 ', 'fe80::1%eth0;id', 'n\u043ede1.example.com', '-oProxyCommand=id', 'a..b', 'host_name_$x'];
  badAddresses.forEach((a, i) => {
    const text = yamlInventory(t, { hostVars: { 0: [['ansible_host', yq(a)]] } }).replace(`      ansible_host: ${t.hosts[0]!.address}\n`, '');
    yamlReject(`address-${i}-${a.replace(/[^A-Za-z0-9]+/g, '_').slice(0, 20) || 'x'}`, 'address', text, `ansible_host: ${yq(a)}`, hostKey('ansible_host'), `${MSG.address}${shown(a)}${nonAscii(a)}`);
  });
  {
    const text = `[k8s_cluster]\n10.0.0.300\n`;
    iniReject('address-host-name-not-an-address', 'address', text, '10.0.0.300', '[k8s_cluster] 10.0.0.300', 'host name "10.0.0.300" is not an IP address or DNS host name to connect to; set ansible_host');
    const text2 = iniInventory(t, { hostVars: { 0: ['ansible_host='] } }).replace(`ansible_host=${t.hosts[0]!.address} `, '');
    iniReject('address-empty', 'address', text2, 2, iniHostKey('ansible_host'), 'expected an IP address or DNS host name, got nothing (the host would have no address)');
  }

  // --- ports -------------------------------------------------------------------------------------------
  for (const [p, shownAs] of [['0', '"0"'], ['65536', '"65536"'], ['-1', '"-1"'], ['22.5', '"22.5"'], ['"22abc"', '"22abc"'], ['0x16g', '"0x16g"']] as const) {
    const text = yamlInventory(t).replace(`      ansible_port: ${t.hosts[0]!.port}\n`, `      ansible_port: ${p}\n`);
    yamlReject(`port-yaml-${p.replace(/\W/g, '')}`, 'port', text, `ansible_port: ${p}`, hostKey('ansible_port'), `${MSG.port}${shownAs}`);
  }
  for (const p of ['0', '65536', '22abc', '99999']) {
    const text = `[k8s_cluster]\n${h0}:${p} ansible_host=${t.hosts[0]!.address}\n`;
    iniReject(`port-ini-pattern-${p}`, 'port', text, `${h0}:${p}`, `[k8s_cluster] ${h0}:${p} (port)`, `${MSG.port}"${p}"`);
  }

  // --- host ranges -------------------------------------------------------------------------------------
  const ranges: [string, string][] = [
    ['node[1:999999]', 'host range [1:999999] expands to more than 10000 hosts'],
    ['node[0:9][0:9][0:9][0:9][0:9]', 'host pattern "node[0:9][0:9][0:9][0:9][0:9]" expands to more than 10000 hosts'],
    ['node[1:99999999999999999999]', 'host range [1:99999999999999999999] expands to more than 10000 hosts'],
    ['node[5:1]', 'expected a host range whose start is not after its end, got [5:1]'],
    ['node[1:9:0]', 'expected a positive integer step in host range [1:9:0], got "0"'],
    ['node[a:9]', 'expected a numeric (like [01:50]) or letter (like [a:f]) host range, got [a:9]'],
    ['node[1:2', 'unbalanced "[" "]" in host range "node[1:2"'],
    ['node[]', 'expected a host range like [01:50] or [1:10:2], got "[]"'],
  ];
  ranges.forEach(([pattern, message], i) => {
    const text = `[k8s_cluster]\n${pattern}\n`;
    iniReject(`range-${i}`, 'range', text, pattern, `[k8s_cluster] ${keyPart(pattern)}`, message);
  });

  // --- injection: in host names and group names (refused: names are plain), in values that reach nodes
  // (refused: each has a strict type), and in variables the tool keeps but never uses (kept, byte for byte) ----
  for (const p of PAYLOADS) {
    const name = `${h0}${p.text}`;
    // an alias name with metacharacters, pointing at a real address
    yamlReject(`inject-${p.tag}-host-name-yaml`, 'injection', yamlInventory(t, { names: { 0: name } }), yq(name), `all.hosts.${keyPart(name)}`, `${MSG.hostName}${shown(name)}`, { markers: [p.marker] });
    if (!p.text.includes('\n')) {
      const text = iniInventory(t, { names: { 0: shlexQuote(name) } });
      iniReject(`inject-${p.tag}-host-name-ini`, 'injection', text, shlexQuote(name), `[k8s_cluster] ${keyPart(name)}`, `${MSG.hostName}${shown(name)}`, { markers: [p.marker] });
    }
    const group = `k8s${p.text}`;
    yamlReject(`inject-${p.tag}-group-name`, 'injection', yamlInventory(t).replace('  hosts:\n', `  children:\n    ${yq(group)}:\n      hosts: {}\n  hosts:\n`), yq(group), `all.children.${keyPart(group)}`, `${MSG.groupName}${shown(group)}`, { markers: [p.marker] });
    const sched = `rr${p.text}`;
    yamlReject(`inject-${p.tag}-scheduler`, 'injection', yamlInventory(t, { allVars: [['kube_proxy_scheduler', yq(sched)]] }), 'kube_proxy_scheduler:', 'all.vars.kube_proxy_scheduler', `${MSG.scheduler}${shown(sched)}`, { markers: [p.marker] });
    const mod = `ip_vs_rr${p.text}`;
    yamlReject(`inject-${p.tag}-module`, 'injection', yamlInventory(t, { allVars: [['kube_proxy_ipvs_modules', `[ip_vs, ${yq(mod)}]`]] }), 'kube_proxy_ipvs_modules:', 'all.vars.kube_proxy_ipvs_modules[1]', `${MSG.module}${shown(mod)}`, { markers: [p.marker] });
    const become = `root${p.text}`;
    yamlReject(`inject-${p.tag}-become-user`, 'injection', yamlInventory(t, { allVars: [['ansible_become_user', yq(become)]] }), 'ansible_become_user:', 'all.vars.ansible_become_user', `${MSG.user}${shown(become)}`, { markers: [p.marker] });
    const probe = `default/web:80/${p.text}`;
    yamlReject(`inject-${p.tag}-probe-service`, 'injection', yamlInventory(t, { allVars: [['kube_proxy_probe_services', `[${yq(probe)}]`]] }), 'kube_proxy_probe_services:', 'all.vars.kube_proxy_probe_services[0]', `${MSG.probe}${shown(probe)}`, { markers: [p.marker] });

    // kept as written: kubespray's own variables and the user's, never sent anywhere
    const kept = { ip: `${t.hosts[0]!.address}${p.text}`, etcd_member_name: p.text, my_note: `x${p.text}`, kube_proxy_nodeport_addresses: p.text };
    const yaml = yamlInventory(t, {
      allVars: [['my_note', yq(kept.my_note)], ['kube_proxy_nodeport_addresses', yq(kept.kube_proxy_nodeport_addresses)], ['my_unsafe', `!unsafe ${yq(p.text)}`]],
      hostVars: { 0: [['ip', yq(kept.ip)], ['etcd_member_name', yq(kept.etcd_member_name)]] },
    });
    add({ name: `inject-${p.tag}-kept-yaml`, kind: 'injection', inventory: Y, files: { [Y]: yaml }, markers: [p.marker], expect: { accept: true, hosts: names, vars: { [h0]: { ...kept, my_unsafe: p.text } }, runnable: true } });
    if (!p.text.includes('\n')) {
      // A value that is one whole Python string literal ('...') loses its quotes, as Ansible's
      // literal_eval takes them off: each value here starts with a plain character.
      const ini = iniInventory(t, {
        allVars: [['my_note', kept.my_note], ['kube_proxy_nodeport_addresses', `x${p.text}`]],
        hostVars: { 0: [`ip=${shlexQuote(kept.ip)}`, `etcd_member_name=${shlexQuote(`x${p.text}`)}`] },
      });
      add({
        name: `inject-${p.tag}-kept-ini`,
        kind: 'injection',
        inventory: I,
        files: { [I]: ini },
        markers: [p.marker],
        expect: { accept: true, hosts: names, vars: { [h0]: { ip: kept.ip, etcd_member_name: `x${p.text}`, my_note: kept.my_note, kube_proxy_nodeport_addresses: `x${p.text}` } }, runnable: true },
      });
      // file paths: the key and known_hosts in directories named after the payload; read locally, never
      // put on a command line
      const dir = `odd/x${p.text}`;
      const yamlPaths = yamlInventory(t, { allVars: [['ansible_ssh_private_key_file', yq(`${dir}/id`)], ['kpm_known_hosts_file', yq(`${dir}/known_hosts`)], ['kube_context', yq(`ctx${p.text}`)]] });
      add({
        name: `inject-${p.tag}-paths`,
        kind: 'injection',
        inventory: Y,
        files: { [Y]: yamlPaths, [`${dir}/id`]: t.keyText, [`${dir}/known_hosts`]: t.knownHostsText },
        markers: [p.marker],
        expect: { accept: true, hosts: names, vars: { [h0]: { kube_context: `ctx${p.text}` } }, runnable: true },
      });
    } else {
      yamlReject(`inject-${p.tag}-path`, 'injection', yamlInventory(t, { allVars: [['kpm_known_hosts_file', yq(`kh${p.text}`)]] }), 'kpm_known_hosts_file:', 'all.vars.kpm_known_hosts_file', `expected a file path without control characters, got ${shown(`kh${p.text}`)}`, { markers: [p.marker] });
    }
  }
  {
    // option injection: a leading "-" where ssh or sudo would read an option
    yamlReject('inject-option-host-name', 'injection', yamlInventory(t, { names: { 0: '-oProxyCommand=touch /tmp/pwned-option' } }), '-oProxyCommand', `all.hosts.${keyPart('-oProxyCommand=touch /tmp/pwned-option')}`, `${MSG.hostName}${shown('-oProxyCommand=touch /tmp/pwned-option')}`, { markers: ['/tmp/pwned-option'] });
    yamlReject('inject-option-user', 'injection', yamlInventory(t, { allVars: [['ansible_user', '-oProxyCommand=touch']] }), 'ansible_user:', 'all.vars.ansible_user', `${MSG.user}"-oProxyCommand=touch"`);
    yamlReject('inject-option-become-user', 'injection', yamlInventory(t, { allVars: [['ansible_become_user', '"-u"']] }), 'ansible_become_user:', 'all.vars.ansible_become_user', `${MSG.user}"-u"`);
    yamlReject('inject-option-module', 'injection', yamlInventory(t, { allVars: [['kube_proxy_ipvs_modules', '[ip_vs, --help]']] }), 'kube_proxy_ipvs_modules:', 'all.vars.kube_proxy_ipvs_modules[1]', `${MSG.module}"--help"`);
    const text = iniInventory(t, { names: { 0: '--help' } });
    iniReject('inject-option-host-name-ini', 'injection', text, '--help', '[k8s_cluster] --help', `${MSG.hostName}"--help"`);
    // a run as another user through sudo, hostile values all around it: accepted, and all of it quoted
    const become = yamlInventory(t, {
      allVars: [['ansible_user', 'kpmnopw'], ['ansible_become', 'true'], ['ansible_become_user', 'root'], ['my_note', yq(PAYLOADS.map((x) => x.text).join(' '))]],
    });
    add({ name: 'inject-all-payloads-through-sudo', kind: 'injection', inventory: Y, files: { [Y]: become }, markers: PAYLOADS.map((x) => x.marker), expect: { accept: true, hosts: names, vars: { [h0]: { my_note: PAYLOADS.map((x) => x.text).join(' ') } }, runnable: true } });
    // NUL, RTL override, zero-width and escape characters
    yamlReject('inject-nul-escaped-in-host-name', 'injection', yamlInventory(t, { rawNames: { 0: '"node\\0x"' } }), '"node\\0x"', `all.hosts.${keyPart('node\0x')}`, `${MSG.hostName}${shown('node\0x')}`);
    yamlReject('inject-rtl-override-host-name', 'injection', yamlInventory(t, { names: { 0: 'node\u202e1gpj.exe' } }), 'node\u202e', `all.hosts.${keyPart('node\u202e1gpj.exe')}`, `${MSG.hostName}${shown('node\u202e1gpj.exe')} (character 5 is U+202E, not ASCII)`);
    yamlReject('inject-zero-width-host-name', 'injection', yamlInventory(t, { names: { 0: 'node\u200b1' } }), 'node\u200b1', `all.hosts.${keyPart('node\u200b1')}`, `${MSG.hostName}${shown('node\u200b1')} (character 5 is U+200B, not ASCII)`);
    yamlReject('inject-escape-in-kube-context', 'injection', yamlInventory(t, { allVars: [['kube_context', yq('\u001b[2J\u001b]0;owned\u0007')]] }), 'kube_context:', 'all.vars.kube_context', `expected a string without control characters, got ${shown('\u001b[2J\u001b]0;owned\u0007')}`);
    const rtlKept = yamlInventory(t, { allVars: [['my_label', yq('abc\u202edef')]] });
    add({ name: 'inject-rtl-override-kept', kind: 'injection', inventory: Y, files: { [Y]: rtlKept }, expect: { accept: true, hosts: names, vars: { [h0]: { my_label: 'abc\u202edef' } }, runnable: true } });
  }

  // --- secrets: refused wherever they are, never echoed --------------------------------------------------
  const PASSWORDS = ['ansible_password', 'ansible_ssh_pass', 'ansible_ssh_password', 'ansible_become_password', 'ansible_become_pass', 'ansible_sudo_pass', 'ansible_sudo_password', 'ansible_su_pass', 'ansible_su_password'];
  PASSWORDS.forEach((v, i) => {
    const secret = `S3cret-${i}-${v.length}!$(touch /tmp/pwned-secret)`;
    const text = yamlInventory(t, { hostVars: { 0: [[v, yq(secret)]] } });
    yamlReject(`secret-yaml-${v}`, 'secret', text, `${v}:`, hostKey(v), MSG.password, { secrets: [secret, `S3cret-${i}`] });
  });
  for (const v of ['ansible_ssh_private_key_passphrase', 'ansible_private_key_passphrase']) {
    const secret = `Passphrase-for-${v}`;
    yamlReject(`secret-yaml-${v}`, 'secret', yamlInventory(t, { allVars: [[v, secret]] }), `${v}:`, `all.vars.${v}`, MSG.passphrase, { secrets: [secret] });
  }
  {
    const s1 = 'IniHostLineSecret';
    iniReject('secret-ini-host-line', 'secret', iniInventory(t, { hostVars: { 0: [`ansible_become_pass=${s1}`] } }), s1, iniHostKey('ansible_become_pass'), MSG.password, { secrets: [s1] });
    const s2 = 'IniGroupVarsSecret';
    iniReject('secret-ini-all-vars', 'secret', iniInventory(t, { allVars: [['ansible_password', s2]] }), s2, '[all:vars] ansible_password', MSG.password, { secrets: [s2] });
    const s3 = 'IniBrokenLineSecret';
    iniReject('secret-ini-broken-line', 'secret', iniInventory(t, { hostVars: { 0: [`ansible_ssh_pass=${s3}`, 'oops'] } }), s3, `[k8s_cluster] ${h0}`, 'expected key=value host variables after the host name, got something else (not shown: this line sets a password-like variable)', { secrets: [s3] });
    const s4 = 'IniUnterminatedSecret';
    iniReject('secret-ini-unterminated-quote', 'secret', iniInventory(t, { hostVars: { 0: [`ansible_ssh_pass="${s4}`] } }), s4, `[k8s_cluster] ${h0}`, 'unterminated double quote', { secrets: [s4] });
    const s5 = 'IniNoEqualsSecret';
    iniReject('secret-ini-no-equals', 'secret', iniInventory(t) + `ansible_password ${s5}\n`, s5, '[all:vars]', 'expected key=value, got something else (not shown: it mentions a password-like name)', { secrets: [s5] });
    const s6 = '*StarFirstSecret';
    yamlReject('secret-yaml-unquoted-star', 'secret', yamlInventory(t, { hostVars: { 0: [['ansible_become_password', s6]] } }), s6, '', 'YAML error: unknown alias (its name is not shown: this line mentions a password-like word; quote a value that starts with *)', { secrets: [s6.slice(1)] });
    const s7 = 'NoSpaceAfterColonSecret';
    const text7 = yamlInventory(t).replace(`      ansible_host: ${t.hosts[0]!.address}\n      ansible_port: ${t.hosts[0]!.port}\n`, '').replace(`    ${h0}:\n`, `    ${h0}:\n      ansible_password:${s7}\n`);
    yamlReject('secret-yaml-no-space-after-colon', 'secret', text7, `    ${h0}:`, `all.hosts.${h0}`, `expected a map of host variables (or nothing), got a value that mentions a password-like word (not shown); to set the address write "${h0}: {ansible_host: ...}"`, { secrets: [s7] });
    const s8 = 'BlockHeaderSecret';
    yamlReject('secret-yaml-block-scalar-header', 'secret', yamlInventory(t, { hostVars: { 0: [['ansible_password', `|${s8}`]] } }), s8, '', 'YAML syntax error (details not shown: this line mentions a password-like word)', { secrets: [s8] });
    const s9 = 'OmapSecret';
    yamlReject('secret-yaml-omap', 'secret', yamlInventory(t, { hostVars: { 0: [['ansible_password', `!!omap [${s9}: 1, ${s9}: 2]`]] } }), s9, '', 'YAML syntax error (details not shown: this line mentions a password-like word)', { secrets: [s9] });
    const s10 = 'GroupVarsFileSecret';
    add({ name: 'secret-group-vars-file', kind: 'secret', inventory: Y, files: { [Y]: yamlInventory(t), 'group_vars/all/vault.yml': `ansible_become_password: ${s10}\n` }, expect: { reject: line('group_vars/all/vault.yml', 1, 'ansible_become_password', MSG.password), secrets: [s10] } });
    const s11 = 'HostVarsFileSecret';
    add({ name: 'secret-host-vars-file', kind: 'secret', inventory: Y, files: { [Y]: yamlInventory(t), [`host_vars/${h0}.yml`]: `ansible_ssh_pass: ${s11}\n` }, expect: { reject: line(`host_vars/${h0}.yml`, 1, 'ansible_ssh_pass', MSG.password), secrets: [s11] } });
    const s12 = 'TopLevelSecret';
    yamlReject('secret-yaml-top-level', 'secret', `ansible_password: ${s12}\n`, s12, 'ansible_password', 'expected a group: a map with hosts, children and/or vars (or nothing), got a value (not shown)', { secrets: [s12] });
    // kept out of the file and referenced instead: ignored, with a warning that shows no value
    const vaulted = yamlInventory(t, { allVars: [['ansible_become_password', '"{{ vault_become_password }}"']] });
    add({ name: 'secret-templated-reference-ignored', kind: 'secret', inventory: Y, files: { [Y]: vaulted }, expect: { accept: true, hosts: names, warnings: [/all\.vars\.ansible_become_password: ignored: its value is a template, and passwords come only from -K\/--ask-become-pass or KPM_BECOME_PASSWORD$/], runnable: true } });
  }

  // --- encodings and line endings ------------------------------------------------------------------------
  {
    add({ name: 'encoding-bom-yaml', kind: 'encoding', inventory: Y, files: { [Y]: `\uFEFF${yamlInventory(t)}` }, expect: { accept: true, hosts: names, runnable: true } });
    add({ name: 'encoding-bom-ini', kind: 'encoding', inventory: I, files: { [I]: iniInventory(t, { bom: true }) }, expect: { accept: true, hosts: names, runnable: true } });
    add({ name: 'encoding-crlf-yaml', kind: 'encoding', inventory: Y, files: { [Y]: yamlInventory(t, { allVars: [['kube_proxy_scheduler', 'wrr']] }).replaceAll('\n', '\r\n') }, expect: { accept: true, hosts: names, vars: { [h0]: { kube_proxy_scheduler: 'wrr' } }, runnable: true } });
    add({ name: 'encoding-crlf-ini', kind: 'encoding', inventory: I, files: { [I]: iniInventory(t, { eol: '\r\n', allVars: [['kube_proxy_scheduler', 'wrr']] }) }, expect: { accept: true, hosts: names, vars: { [h0]: { kube_proxy_scheduler: 'wrr' } }, runnable: true } });
    add({ name: 'encoding-cr-only-ini', kind: 'encoding', inventory: I, files: { [I]: iniInventory(t, { eol: '\r', allVars: [['kube_proxy_scheduler', 'wrr']] }) }, expect: { accept: true, hosts: names, vars: { [h0]: { kube_proxy_scheduler: 'wrr' } }, runnable: true } });
    const garbage = Uint8Array.from({ length: 4096 }, (_, i) => (i * 7919 + 13) % 256);
    add({ name: 'encoding-binary-garbage', kind: 'encoding', inventory: Y, files: { [Y]: garbage }, expect: { reject: line(Y, 1, '', 'expected UTF-8 text; byte 2 of the file (0xfc) is not UTF-8: is it a binary file, or in another encoding?') } });
    const latin1 = Buffer.concat([Buffer.from(`[k8s_cluster]\n${h0} ansible_host=${t.hosts[0]!.address}\n[all:vars]\nmy_city=M`), Buffer.from([0xfc]), Buffer.from('nchen\n')]);
    add({ name: 'encoding-latin1', kind: 'encoding', inventory: I, files: { [I]: latin1 }, expect: { reject: line(I, 4, '', `expected UTF-8 text; byte ${latin1.indexOf(0xfc) + 1} of the file (0xfc) is not UTF-8: is it a binary file, or in another encoding?`) } });
    const utf16 = Buffer.concat([Buffer.from([0xff, 0xfe]), Buffer.from(iniInventory(t), 'utf16le')]);
    add({ name: 'encoding-utf16', kind: 'encoding', inventory: I, files: { [I]: utf16 }, expect: { reject: line(I, 1, '', 'expected UTF-8 text; byte 1 of the file (0xff) is not UTF-8: is it a binary file, or in another encoding?') } });
    const nul = yamlInventory(t, { allVars: [['my_note', 'a\u0000b']] });
    add({ name: 'encoding-raw-nul', kind: 'encoding', inventory: Y, files: { [Y]: nul }, expect: { reject: line(Y, lineOf(nul, 'my_note'), '', `expected text; byte ${Buffer.from(nul.slice(0, nul.indexOf('\0'))).length + 1} of the file is a NUL byte: is it a binary file?`) } });
    const tabs = yamlInventory(t).replace(`      ansible_port: ${t.hosts[0]!.port}`, `\tansible_port: ${t.hosts[0]!.port}`);
    yamlReject('encoding-tab-indentation', 'encoding', tabs, '\tansible_port', '', 'YAML syntax error: Tabs are not allowed as indentation', { problems: 3 });
    const multi = `${yamlInventory(t)}---\nall:\n  hosts: {other: }\n`;
    yamlReject('encoding-two-documents', 'encoding', multi, '---', '', 'expected one YAML document; a second one starts here (an inventory is a single document)');
    add({ name: 'encoding-empty-file', kind: 'encoding', inventory: Y, files: { [Y]: '' }, expect: { reject: line(Y, 1, '', 'expected at least one host; this inventory declares none') } });
  }

  // --- INI oddities -------------------------------------------------------------------------------------
  {
    const base = iniInventory(t);
    add({ name: 'ini-vars-before-group', kind: 'ini', inventory: I, files: { [I]: `[k8s_cluster:vars]\nkube_proxy_scheduler=wrr\n${base}` }, expect: { accept: true, hosts: names, vars: { [h0]: { kube_proxy_scheduler: 'wrr' } }, runnable: true } });
    iniReject('ini-vars-never-declared', 'ini', `${base}[etcd:vars]\nx=1\n`, '[etcd:vars]', '[etcd:vars]', 'group "etcd" is never declared; add a [etcd] or [etcd:children] section');
    iniReject('ini-vars-upper-case', 'ini', `${base}[k8s_cluster:VARS]\nx=1\n`, ':VARS]', '[k8s_cluster:VARS]', 'unknown section type; expected [group], [group:vars] or [group:children]');
    iniReject('ini-vars-spaces-in-header', 'ini', `${base}[ k8s_cluster : vars ]\nx=1\n`, '[ k8s_cluster', '[k8s_cluster : vars]', 'unknown section type; expected [group], [group:vars] or [group:children]');
    iniReject('ini-vars-empty-group-name', 'ini', `${base}[:vars]\nx=1\n`, '[:vars]', '[:vars]', `${MSG.groupName}""`);
    iniReject('ini-vars-three-parts', 'ini', `${base}[k8s_cluster:vars:extra]\nx=1\n`, ':extra]', '[k8s_cluster:vars:extra]', 'unknown section type; expected [group], [group:vars] or [group:children]');
    const afterBase = base.split('\n').length;
    iniReject('ini-all-child-of-group', 'ini', `${base}[k8s_cluster:children]\nall\n`, afterBase + 1, '[k8s_cluster:children] all', 'group all contains every group; it cannot be the child of another group');
    iniReject('ini-host-line-in-vars', 'ini', `${base}${h0} ansible_host=${t.hosts[0]!.address}\n`, afterBase, '[all:vars]', `expected key=value, got ${shown(`${h0} ansible_host=${t.hosts[0]!.address}`)}`);
    iniReject('ini-backslash-continuation', 'ini', iniInventory(t, { hostVars: { 0: ['\\'] } }), ' \\', `[k8s_cluster] ${h0}`, 'a backslash at the end of the line escapes nothing');
    iniReject('ini-unclosed-header', 'ini', `[k8s_cluster\n${h0}\n`, '[k8s_cluster', '', 'expected a section header like [group], [group:vars] or [group:children], got "[k8s_cluster"');
    iniReject('ini-header-trailing-text', 'ini', `[k8s_cluster] nodes\n${h0}\n`, '[k8s_cluster]', '', 'expected a section header like [group], [group:vars] or [group:children], got "[k8s_cluster] nodes"');
    const hostLine = `${h0} ansible_host=${t.hosts[0]!.address}`;
    iniReject('ini-children-with-host-line', 'ini', `${base}[kube_node:children]\n${hostLine}\n[kube_node]\n`, afterBase + 1, `[kube_node:children] ${keyPart(hostLine)}`, `expected one group name per line, got ${shown(hostLine)}`);
    iniReject('ini-key-value-first', 'ini', `[k8s_cluster]\nansible_host=${t.hosts[0]!.address} ${h0}\n`, 'ansible_host=', '[k8s_cluster]', 'expected a host name first, then key=value host variables');
    add({
      name: 'ini-spaces-and-comments-in-vars',
      kind: 'ini',
      inventory: I,
      files: { [I]: `${base}kube_proxy_scheduler = wrr   # the weighted one\n; a comment\n# another\nmy_list=['a', 'b']\n` },
      expect: { accept: true, hosts: names, vars: { [h0]: { kube_proxy_scheduler: 'wrr', my_list: "['a', 'b']" } }, runnable: true },
    });
    add({ name: 'ini-ungrouped-hosts', kind: 'ini', inventory: I, files: { [I]: base.replace('[k8s_cluster]\n', '') }, expect: { accept: true, hosts: names, runnable: true } });
  }

  // --- group_vars/ and host_vars/ that are not what they seem -------------------------------------------
  {
    const inv = yamlInventory(t);
    add({ name: 'vars-dir-fifo', kind: 'vars-dir', inventory: Y, files: { [Y]: inv, 'group_vars/all.yml': { fifo: true } }, expect: { reject: line('group_vars/all.yml', 0, '', 'expected a vars file; this is not a regular file') } });
    add({ name: 'vars-dir-link-to-dev-zero', kind: 'vars-dir', inventory: Y, files: { [Y]: inv, 'group_vars/all.yml': { symlink: '/dev/zero' } }, expect: { reject: line('group_vars/all.yml', 0, '', 'expected a vars file; this is not a regular file') } });
    add({ name: 'vars-dir-fifo-in-directory', kind: 'vars-dir', inventory: Y, files: { [Y]: inv, 'group_vars/all/a.yml': 'kube_proxy_scheduler: wrr\n', 'group_vars/all/b.yml': { fifo: true } }, expect: { accept: true, hosts: names, vars: { [h0]: { kube_proxy_scheduler: 'wrr' } }, runnable: true } });
    add({ name: 'vars-dir-binary-file', kind: 'vars-dir', inventory: Y, files: { [Y]: inv, [`host_vars/${h0}`]: Uint8Array.from([0x6b, 0x3a, 0x20, 0x00, 0xff]) }, expect: { reject: line(`host_vars/${h0}`, 1, '', 'expected text; byte 4 of the file is a NUL byte: is it a binary file?') } });
    add({ name: 'vars-dir-list-not-map', kind: 'vars-dir', inventory: Y, files: { [Y]: inv, 'group_vars/all.yml': '- kube_proxy_scheduler: wrr\n' }, expect: { reject: line('group_vars/all.yml', 1, '', 'expected a map of variables (name: value) at the top level, got a list') } });
    add({ name: 'vars-dir-wrong-type', kind: 'vars-dir', inventory: Y, files: { [Y]: inv, 'group_vars/all/k8s.yml': '# kubespray style\nkube_proxy_mode: [ipvs]\n' }, expect: { reject: line('group_vars/all/k8s.yml', 2, 'kube_proxy_mode', 'expected one of ipvs, iptables, nftables, got a list') } });
    const evil = 'x\u001b[2J\u001b]0;owned\u0007.yml';
    add({ name: 'vars-dir-escape-in-file-name', kind: 'vars-dir', inventory: Y, files: { [Y]: inv, [`group_vars/${evil}`]: 'a: 1\n' }, expect: { accept: true, hosts: names, warnings: [/group_vars\/x\\u001b\[2J\\u001b\]0;owned\\u0007\.yml: not read: the inventory has no group "x\\u001b/], runnable: true } });
    add({ name: 'vars-dir-escape-in-vars-file-problem', kind: 'vars-dir', inventory: Y, files: { [Y]: inv, [`group_vars/all/${evil}`]: 'kube_proxy_mode: 5\n' }, expect: { reject: line(`group_vars/all/${printable(evil)}`, 1, 'kube_proxy_mode', 'expected one of ipvs, iptables, nftables, got "5"') } });
  }

  return cases;
}
