// The inventory variables this tool knows: a table of names, types, defaults and checks.
// Every assignment in the file (host or group level) is checked against it where it is written,
// so each problem gets its own line; resolve.ts then merges the already-typed values.
//
// Rules for names not in the table:
//   kpm_*         the tool's own namespace: an unknown name is an error ("did you mean ...")
//   kube_proxy_*  accepted only if kubespray defines it (KUBESPRAY_KUBE_PROXY_VARIABLES), else an error
//   anything else (other ansible_* variables, kubespray's other settings, your own): kept, not checked
//
// Values this tool cannot read are refused for the variables in the table (it would otherwise act on
// a placeholder): Jinja templates (`{{ ... }}`, `{% ... %}`, which only Ansible evaluates) and
// Ansible Vault ciphertext (`!vault`). Other variables keep them as written (kubespray's group_vars
// are full of templates) or, for ciphertext, are dropped.

import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { nonAsciiNote, showValue, suggest } from './errors.ts';
import type { RawVar } from './raw.ts';

export interface Failure {
  message: string;
  /** for list values: which item is wrong */
  index?: number;
}
export type Parsed = { ok: true; value: unknown } | { ok: false; failures: Failure[] };

export interface ValueType {
  /**
   * Checks one value and converts it to its typed form. `ini` is set for values read from an INI
   * file, which are always strings (`22`, `True`, `['10.0.0.0/8']`, `None`).
   */
  parse(value: unknown, ini: boolean): Parsed;
}

export interface VarSpec {
  name: string;
  type: ValueType;
  /** older names Ansible still accepts for the same variable; they merge as this name */
  aliases?: readonly string[];
  /** the value used when no level of the inventory sets it (absent: no default, undefined) */
  default?: () => unknown;
  /** 'all': only in the `all` group's vars (it applies to the whole run); 'group': only in group vars */
  scope?: 'all' | 'group';
  doc: string;
}

// ---------------------------------------------------------------------------------------------
// Value types

const ok = (value: unknown): Parsed => ({ ok: true, value });
const fail = (message: string, index?: number): Parsed => ({
  ok: false,
  failures: [index === undefined ? { message } : { message, index }],
});
const expected = (what: string, got: unknown, index?: number): Parsed =>
  fail(`expected ${what}, got ${showValue(got)}`, index);

const TRUE_WORDS = new Set(['true', 'yes', 'on', '1', 'y', 't']);
const FALSE_WORDS = new Set(['false', 'no', 'off', '0', 'n', 'f']);

/** Ansible's boolean(): true/false, yes/no, on/off, 1/0 (any case). */
export const bool: ValueType = {
  parse(v) {
    if (typeof v === 'boolean') return ok(v);
    if (v === 1 || v === 0) return ok(v === 1);
    if (typeof v === 'string') {
      const s = v.trim().toLowerCase();
      if (TRUE_WORDS.has(s)) return ok(true);
      if (FALSE_WORDS.has(s)) return ok(false);
    }
    return expected('a boolean (true/false)', v);
  },
};

function toInteger(v: unknown): number | undefined {
  if (typeof v === 'number' && Number.isInteger(v)) return v;
  if (typeof v === 'string' && /^\s*[+-]?[0-9]+\s*$/.test(v)) return Number(v);
  return undefined;
}

function toNumber(v: unknown): number | undefined {
  if (typeof v === 'number' && Number.isFinite(v)) return v;
  if (typeof v === 'string' && /^\s*[+-]?([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][+-]?[0-9]+)?\s*$/.test(v)) return Number(v);
  return undefined;
}

export function integer(min: number, max: number, what = `an integer ${min}-${max}`): ValueType {
  return {
    parse(v) {
      const n = toInteger(v);
      if (n === undefined || n < min || n > max) return expected(what, v);
      return ok(n);
    },
  };
}

/** Any integer (Ansible's ansible_group_priority). */
export const anyInteger: ValueType = {
  parse(v) {
    const n = toInteger(v);
    return n === undefined || !Number.isSafeInteger(n) ? expected('an integer', v) : ok(n);
  },
};

export const port = integer(1, 65535, 'an integer port 1-65535');

export const seconds: ValueType = {
  parse(v) {
    const n = toNumber(v);
    if (n === undefined || !(n > 0)) return expected('a number of seconds greater than 0', v);
    return ok(n);
  },
};

export function oneOf(values: readonly string[], what = `one of ${values.join(', ')}`): ValueType {
  return {
    parse(v) {
      return typeof v === 'string' && values.includes(v) ? ok(v) : expected(what, v);
    },
  };
}

export function isIpAddress(s: string): boolean {
  if (net.isIPv4(s)) return true;
  const pct = s.indexOf('%');
  if (pct >= 0 && !/^[A-Za-z0-9_.-]+$/.test(s.slice(pct + 1))) return false; // zone id: plain names only
  return net.isIPv6(s);
}

export function isDnsName(s: string): boolean {
  if (s.length === 0 || s.length > 253) return false;
  const labels = (s.endsWith('.') ? s.slice(0, -1) : s).split('.');
  // Only digits and dots is an (invalid) IPv4 address, not a name.
  if (/^[0-9.]+$/.test(s)) return false;
  return labels.every((l) => /^[A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?$/.test(l));
}

/** ansible_host: an IPv4/IPv6 literal or a DNS host name; nothing that a shell could interpret. */
export const address: ValueType = {
  parse(v) {
    if (v === null || v === undefined || v === '') {
      return fail('expected an IP address or DNS host name, got nothing (the host would have no address)');
    }
    const s = typeof v === 'number' ? String(v) : v;
    if (typeof s === 'string' && (isIpAddress(s) || isDnsName(s))) return ok(s);
    return fail(`expected an IP address or DNS host name, got ${showValue(v)}${typeof v === 'string' ? nonAsciiNote(v) : ''}`);
  },
};

const USER_RE = /^[A-Za-z0-9_][A-Za-z0-9_.@-]{0,63}$/;
export const userName: ValueType = {
  parse(v) {
    return typeof v === 'string' && USER_RE.test(v) ? ok(v) : expected('a user name (letters, digits, "_", ".", "@", "-")', v);
  },
};

// Control characters: in a path or a context name they can only be a mistake or an attempt to rewrite
// the terminal the name is later printed on.
const CONTROL_CHAR = /[\u0000-\u001f\u007f]/;

/** A local file path, as written: `~` / `~/...` and relative paths are resolved by expandPath(). */
export const filePath: ValueType = {
  parse(v) {
    if (typeof v !== 'string' || v.length === 0) return expected('a file path', v);
    if (CONTROL_CHAR.test(v)) return expected('a file path without control characters', v);
    if (/^~[^/]/.test(v)) return expected('a file path (only "~" and "~/..." are expanded, not "~user")', v);
    return ok(v);
  },
};

/** `~` -> home directory; a relative path -> against baseDir (the inventory file's directory). */
export function expandPath(p: string, baseDir: string): string {
  if (p === '~') return os.homedir();
  if (p.startsWith('~/')) return path.join(os.homedir(), p.slice(2));
  return path.resolve(baseDir, p);
}

export const nonEmptyString: ValueType = {
  parse(v) {
    if (typeof v !== 'string' || v.length === 0) return expected('a non-empty string', v);
    return CONTROL_CHAR.test(v) ? expected('a string without control characters', v) : ok(v);
  },
};

export function isCidr(s: string): boolean {
  const m = /^([^/]+)\/([0-9]{1,3})$/.exec(s);
  if (!m) return false;
  const ip = m[1]!;
  const bits = Number(m[2]);
  if (net.isIPv4(ip)) return bits <= 32;
  if (net.isIPv6(ip) && !ip.includes('%')) return bits <= 128;
  return false;
}

/**
 * A list given as a string: INI has no lists, so Ansible users write Python literals
 * (`['10.0.0.0/8', '192.168.0.0/16']`), and kube-proxy's own flag is comma-separated (`a,b`).
 */
export function parseListString(s: string): string[] | undefined {
  let t = s.trim();
  if (t.startsWith('[') || t.endsWith(']')) {
    if (!(t.startsWith('[') && t.endsWith(']'))) return undefined;
    t = t.slice(1, -1).trim();
  }
  if (t === '') return [];
  const items: string[] = [];
  let cur = '';
  let q: string | null = null;
  for (const c of t) {
    if (q) {
      if (c === q) q = null;
      else cur += c;
    } else if (c === '"' || c === "'") {
      q = c;
    } else if (c === ',') {
      items.push(cur.trim());
      cur = '';
    } else {
      cur += c;
    }
  }
  if (q) return undefined;
  items.push(cur.trim());
  // A trailing comma (Python allows it) leaves one empty item at the end.
  if (items.length > 1 && items[items.length - 1] === '') items.pop();
  return items;
}

function listOf(
  what: string,
  item: (s: unknown) => boolean,
  itemWhat: string,
  opts: { nullIsDefault: unknown },
): ValueType {
  return {
    parse(v, ini) {
      if (v === null || v === undefined) return ok(opts.nullIsDefault);
      let list: unknown[] | undefined;
      if (Array.isArray(v)) list = v;
      else if (typeof v === 'string') {
        if (ini && /^\s*(None|null|~)?\s*$/.test(v) && opts.nullIsDefault === null) return ok(null);
        list = parseListString(v);
      }
      if (!list) return expected(what, v);
      const failures: Failure[] = [];
      list.forEach((x, i) => {
        if (!item(x)) failures.push({ message: `expected ${itemWhat}, got ${showValue(x)}`, index: i });
      });
      return failures.length ? { ok: false, failures } : ok(list.map(String));
    },
  };
}

/** One number and unit of a Go duration; `time.ParseDuration` accepts both micro signs. */
const DURATION_PART = String.raw`(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:ns|us|\u00b5s|\u03bcs|ms|s|m|h)`;
const DURATION_RE = new RegExp(`^(?:${DURATION_PART})+$`);
const NS_PER_UNIT: Record<string, number> = { ns: 1, us: 1e3, '\u00b5s': 1e3, '\u03bcs': 1e3, ms: 1e6, s: 1e9, m: 60e9, h: 3600e9 };
/** time.Duration is an int64 of nanoseconds: Go refuses anything from 2^63 ns (about 292 years) on. */
const DURATION_LIMIT_NS = 2 ** 63;

/**
 * A non-negative Go duration (`time.ParseDuration`: `900s`, `15m0s`, `1h30m`, `1.5s`, `0`) in
 * nanoseconds, or undefined when `s` is not one. kube-proxy's duration fields are read by Go, and a
 * sign makes no sense for a timeout, so `-1s` is refused here as kube-proxy's validation refuses it.
 */
export function parseGoDuration(s: string): number | undefined {
  if (s === '0') return 0;
  if (!DURATION_RE.test(s)) return undefined;
  let ns = 0;
  for (const m of s.matchAll(/([0-9.]+)([a-z\u00b5\u03bc]+)/g)) ns += Number(m[1]) * NS_PER_UNIT[m[2]!]!;
  return ns < DURATION_LIMIT_NS ? ns : undefined;
}

export const DURATION_EXAMPLES = 'like 900s, 15m0s or 0s';

/**
 * kube-proxy's IPVS timeouts (kubespray's kube_proxy_tcp_timeout and friends): a Go duration string.
 * Unset (nothing, or INI's None) leaves the value in kube-proxy's ConfigMap as it is. A bare number is
 * refused, even 900: kube-proxy itself rejects one, and seconds are only a guess.
 */
export const goDuration: ValueType = {
  parse(v, ini) {
    if (v === null || v === undefined) return ok(null);
    if (ini && typeof v === 'string' && /^\s*(None|null|~)\s*$/.test(v)) return ok(null);
    if (v === 0) return ok('0');
    if (typeof v === 'string' && parseGoDuration(v) !== undefined) return ok(v);
    const bareNumber = typeof v === 'number' || (typeof v === 'string' && /^\s*[0-9]+(\.[0-9]*)?\s*$/.test(v));
    return expected(`a Go duration${bareNumber ? ' with a unit' : ''} (${DURATION_EXAMPLES})`, v);
  },
};

export const cidrList = listOf(
  'a list of CIDRs (like [10.0.0.0/8])',
  (x) => typeof x === 'string' && isCidr(x),
  'an IPv4 or IPv6 CIDR (like 10.0.0.0/8 or fd00::/8)',
  { nullIsDefault: [] },
);

export const moduleList = listOf(
  'a list of kernel module names (or nothing, for the default list)',
  (x) => typeof x === 'string' && /^[a-z0-9_]+$/.test(x),
  'a kernel module name (lowercase letters, digits, "_")',
  { nullIsDefault: null },
);

/**
 * Services the cluster phase probes from each node before and after its switch: `namespace/name`,
 * optionally `:port`, optionally an HTTP `/path`, optionally `=codes` (accepted status codes).
 */
export const PROBE_SERVICE = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?\/[a-z0-9]([-a-z0-9]*[a-z0-9])?(:\d{1,5})?(\/[A-Za-z0-9._~\/-]*)?(=\d{3}(,\d{3})*)?$/;
export const probeServiceList = listOf(
  'a list of Services to probe (like [default/web:80/healthz=200])',
  (x) => typeof x === 'string' && PROBE_SERVICE.test(x),
  'namespace/name, optionally :port, an HTTP /path and =accepted,codes (like kube-system/kube-dns:53 or default/web:80/healthz=200,204)',
  { nullIsDefault: [] },
);

export const sshConnection: ValueType = {
  parse(v) {
    if (v === null || v === undefined || v === 'ssh' || v === 'smart' || v === 'paramiko') return ok(v ?? null);
    return expected('ssh, smart or paramiko (this tool only connects over SSH)', v);
  },
};

export const PASSWORD_MESSAGE =
  'passwords are never read from inventory files; remove this variable and use -K/--ask-become-pass ' +
  'or the environment variable KPM_BECOME_PASSWORD';

/** Always rejected; the message never contains the value. */
export const rejectedPassword: ValueType = {
  parse() {
    return fail(PASSWORD_MESSAGE);
  },
};

export const PASSPHRASE_MESSAGE =
  'private key passphrases are never read from inventory files; remove this variable, load the key into ' +
  'ssh-agent (ssh-add) and leave ansible_ssh_private_key_file unset so the agent is used';

/** Always rejected, like passwords; the message never contains the value. */
export const rejectedPassphrase: ValueType = {
  parse() {
    return fail(PASSPHRASE_MESSAGE);
  },
};

/** ansible_become_method: the remote side runs `sudo`, so any other method would be silently ignored. */
export const becomeMethod: ValueType = {
  parse(v) {
    if (v === null || v === undefined || v === 'sudo') return ok(v ?? null);
    return expected('sudo (this tool becomes root only through sudo)', v);
  },
};

/** Accepted as is (kubespray's own kube_proxy_* settings: kept in vars, not used by this tool). */
export const anything: ValueType = { parse: (v) => ok(v) };

// ---------------------------------------------------------------------------------------------
// The table

export const IPVS_SCHEDULERS = ['rr', 'wrr', 'lc', 'wlc', 'lblc', 'lblcr', 'dh', 'sh', 'sed', 'nq', 'fo', 'ovf', 'mh'] as const;
export const PROXY_MODES = ['ipvs', 'iptables', 'nftables'] as const;

export function localUser(): string {
  try {
    return os.userInfo().username;
  } catch {
    return process.env['USER'] || process.env['LOGNAME'] || 'root';
  }
}

export const PASSWORD_VARIABLES = [
  'ansible_password',
  'ansible_ssh_pass',
  'ansible_ssh_password',
  'ansible_become_password',
  'ansible_become_pass',
  'ansible_sudo_pass',
  'ansible_sudo_password',
  'ansible_su_pass',
  'ansible_su_password',
] as const;

export const PASSPHRASE_VARIABLES = ['ansible_ssh_private_key_passphrase', 'ansible_private_key_passphrase'] as const;

export const VARIABLES: readonly VarSpec[] = [
  // Connection (Ansible's names)
  { name: 'ansible_host', aliases: ['ansible_ssh_host'], type: address, doc: 'address to connect to; default: the inventory host name' },
  { name: 'ansible_port', aliases: ['ansible_ssh_port'], type: port, default: () => 22, doc: 'SSH port' },
  { name: 'ansible_user', aliases: ['ansible_ssh_user'], type: userName, default: localUser, doc: 'SSH login user; default: the local user' },
  { name: 'ansible_ssh_private_key_file', type: filePath, doc: 'SSH private key (~ expanded; relative to the inventory file)' },
  { name: 'ansible_become', type: bool, default: () => false, doc: 'run privileged commands through sudo' },
  { name: 'ansible_become_user', type: userName, default: () => 'root', doc: 'user to become' },
  { name: 'ansible_become_method', type: becomeMethod, doc: 'must be sudo (or unset): the only method this tool uses' },
  { name: 'ansible_connection', type: sshConnection, doc: 'must be ssh (or smart/paramiko, treated as ssh)' },
  { name: 'ansible_group_priority', type: anyInteger, scope: 'group', default: () => 1, doc: 'order among sibling groups (Ansible)' },
  ...PASSWORD_VARIABLES.map((name): VarSpec => ({ name, type: rejectedPassword, doc: 'rejected: passwords are never read from inventory files' })),
  ...PASSPHRASE_VARIABLES.map(
    (name): VarSpec => ({ name, type: rejectedPassphrase, doc: 'rejected: key passphrases are never read from inventory files' }),
  ),

  // kube-proxy (kubespray's names)
  { name: 'kube_proxy_mode', type: oneOf(PROXY_MODES), default: () => 'ipvs', doc: 'kube-proxy mode' },
  {
    name: 'kube_proxy_scheduler',
    type: oneOf(IPVS_SCHEDULERS, `an IPVS scheduler (one of ${IPVS_SCHEDULERS.join(', ')})`),
    default: () => 'rr',
    doc: 'IPVS scheduler',
  },
  { name: 'kube_proxy_strict_arp', type: bool, default: () => false, doc: 'strictARP (needed by MetalLB / kube-vip ARP mode)' },
  { name: 'kube_proxy_exclude_cidrs', type: cidrList, default: () => [], doc: 'CIDRs the IPVS proxier leaves alone' },
  { name: 'kube_proxy_ipvs_modules', type: moduleList, default: () => null, doc: 'IPVS kernel modules to load; default: the tool\'s list' },
  { name: 'kube_proxy_tcp_timeout', type: goDuration, doc: 'IPVS idle TCP session timeout (ipvs.tcpTimeout); unset: keep the ConfigMap\'s' },
  { name: 'kube_proxy_tcp_fin_timeout', type: goDuration, doc: 'IPVS TCP timeout after a FIN (ipvs.tcpFinTimeout); unset: keep the ConfigMap\'s' },
  { name: 'kube_proxy_probe_services', type: probeServiceList, default: () => [], doc: 'Services probed from each node before and after its switch' },
  { name: 'kube_proxy_udp_timeout', type: goDuration, doc: 'IPVS UDP timeout (ipvs.udpTimeout); unset: keep the ConfigMap\'s' },

  // The tool's own settings
  { name: 'kpm_forks', type: integer(1, 1000), scope: 'all', default: () => 10, doc: 'hosts worked on at once (all.vars only)' },
  { name: 'kpm_connect_timeout', type: seconds, default: () => 10, doc: 'SSH connect timeout, seconds' },
  { name: 'kpm_connect_retries', type: integer(0, 10), default: () => 2, doc: 'SSH connect retries' },
  { name: 'kpm_command_timeout', type: seconds, default: () => 300, doc: 'timeout of one remote command, seconds' },
  {
    name: 'kpm_package_lock_timeout',
    type: integer(0, 3600),
    default: () => 120,
    doc: 'seconds apt (and zypper) wait for another package manager run to release its lock',
  },
  {
    name: 'kpm_known_hosts_file',
    type: filePath,
    default: () => path.join(os.homedir(), '.ssh', 'known_hosts'),
    doc: 'known_hosts file (~ expanded; relative to the inventory file)',
  },

  // Read by a later phase
  { name: 'kubeconfig', type: filePath, doc: 'kubeconfig used to talk to the cluster' },
  { name: 'kube_context', type: nonEmptyString, doc: 'kubeconfig context' },
];

/**
 * kubespray's other kube_proxy_* variables (roles/kubespray-defaults/defaults/main/kube-proxy.yml,
 * roles/kubernetes/control-plane/defaults/main/kube-proxy.yml, main.yml, download.yml): accepted and
 * kept in `vars` so a kubespray inventory loads unchanged; this tool does not act on them.
 */
export const KUBESPRAY_KUBE_PROXY_VARIABLES: readonly string[] = [
  'kube_proxy_bind_address',
  'kube_proxy_bind_address_default',
  'kube_proxy_client_accept_content_types',
  'kube_proxy_client_burst',
  'kube_proxy_client_content_type',
  'kube_proxy_client_kubeconfig',
  'kube_proxy_client_qps',
  'kube_proxy_config_sync_period',
  'kube_proxy_conntrack_max',
  'kube_proxy_conntrack_max_per_core',
  'kube_proxy_conntrack_min',
  'kube_proxy_conntrack_tcp_close_wait_timeout',
  'kube_proxy_conntrack_tcp_established_timeout',
  'kube_proxy_deployed',
  'kube_proxy_enable_profiling',
  'kube_proxy_feature_gates',
  'kube_proxy_healthz_bind_address',
  'kube_proxy_image_repo',
  'kube_proxy_image_tag',
  'kube_proxy_masquerade_all',
  'kube_proxy_masquerade_bit',
  'kube_proxy_metrics_bind_address',
  'kube_proxy_min_sync_period',
  'kube_proxy_nodeport_addresses',
  'kube_proxy_nodeport_addresses_cidr',
  'kube_proxy_oom_score_adj',
  'kube_proxy_port_range',
  'kube_proxy_remove',
  'kube_proxy_sync_period',
  'kube_proxy_udp_idle_timeout',
];

const SPEC_BY_NAME = new Map<string, VarSpec>();
for (const spec of VARIABLES) {
  SPEC_BY_NAME.set(spec.name, spec);
  for (const a of spec.aliases ?? []) SPEC_BY_NAME.set(a, spec);
}
const KUBESPRAY_SET = new Set(KUBESPRAY_KUBE_PROXY_VARIABLES);
const KPM_NAMES = VARIABLES.filter((s) => s.name.startsWith('kpm_')).map((s) => s.name);
const KUBE_PROXY_NAMES = [...VARIABLES.filter((s) => s.name.startsWith('kube_proxy_')).map((s) => s.name), ...KUBESPRAY_KUBE_PROXY_VARIABLES];

export function specOf(name: string): VarSpec | undefined {
  return SPEC_BY_NAME.get(name);
}

/** The value a variable takes when no level of the inventory sets it. */
export function defaultOf(name: string): unknown {
  return SPEC_BY_NAME.get(name)?.default?.();
}

// ---------------------------------------------------------------------------------------------
// Checking one assignment

/** Where an assignment is written: a host or a group, in the inventory file or in a vars file. */
export type VarSite =
  | { kind: 'host'; varsFile?: boolean }
  | { kind: 'group'; group: string; varsFile?: boolean };

export interface VarProblem {
  line: number;
  key: string;
  message: string;
}

/**
 * ok: the canonical name and typed value; false: problems; 'ignored': not merged at all, with a
 * warning saying why (a vaulted or templated password, a priority Ansible would not honour there).
 */
export type CheckedVar =
  | { ok: true; name: string; value: unknown }
  | { ok: false; problems: VarProblem[] }
  | { ok: 'ignored'; warning?: VarProblem };

export const TEMPLATE_MESSAGE = 'templated values are not evaluated: write the value itself';

/** A Jinja expression or statement, as Ansible would template it. */
export function isTemplated(v: unknown): boolean {
  return typeof v === 'string' && (v.includes('{{') || v.includes('{%'));
}

/** The value is nothing but `{{ ... }}` expressions: a reference to a secret kept elsewhere, not one. */
function onlyTemplate(v: unknown): boolean {
  return typeof v === 'string' && !v.includes('{%') && v.includes('{{') && v.replace(/\{\{[\s\S]*?\}\}/g, '').trim() === '';
}

const isSecretVariable = (name: string): boolean =>
  (PASSWORD_VARIABLES as readonly string[]).includes(name) || (PASSPHRASE_VARIABLES as readonly string[]).includes(name);

/**
 * Checks one assignment where it is written. On success returns the canonical name (aliases
 * folded: ansible_ssh_port -> ansible_port) and the typed value (INI "22" -> 22).
 */
export function checkVar(v: RawVar, site: VarSite, ini: boolean): CheckedVar {
  const problem = (message: string, index?: number): VarProblem => ({
    line: index !== undefined ? (v.itemLines?.[index] ?? v.line) : v.line,
    key: index !== undefined ? `${v.key}[${index}]` : v.key,
    message,
  });
  const failWith = (message: string, index?: number): CheckedVar => ({ ok: false, problems: [problem(message, index)] });

  const spec = SPEC_BY_NAME.get(v.name);
  if (spec) {
    if (spec.scope === 'all' && !(site.kind === 'group' && site.group === 'all')) {
      return failWith(
        site.varsFile
          ? `${spec.name} applies to the whole run: set it in group_vars/all or in the vars of group all`
          : `${spec.name} applies to the whole run: set it in the vars of group all (all.vars / [all:vars])`,
      );
    }
    if (spec.scope === 'group' && site.kind !== 'group') {
      return failWith(
        site.varsFile
          ? `${spec.name} only applies to groups: set it in a group's vars in the inventory file`
          : `${spec.name} only applies to groups: set it in a group's vars`,
      );
    }
    // Ansible sorts groups while it reads the inventory file, before any vars file is loaded, so a
    // priority set in group_vars orders nothing (ansible/ansible#41512); honouring it would diverge.
    if (spec.name === 'ansible_group_priority' && site.varsFile) {
      return {
        ok: 'ignored',
        warning: problem(`ignored: Ansible reads ${spec.name} only from the inventory file, not from group_vars; set it there`),
      };
    }
    const unsafe = v.unsafe === true;
    if (isSecretVariable(spec.name)) {
      // A vaulted password, or one taken from elsewhere by a template, is not a password written in
      // the file: Ansible users keep them this way, so it is skipped rather than refused.
      const what = v.vault ? 'vault-encrypted' : !unsafe && onlyTemplate(v.value) ? 'a template' : undefined;
      if (what) {
        const instead = spec.name.includes('passphrase')
          ? 'key passphrases are never read from inventory files (load the key into ssh-agent)'
          : 'passwords come only from -K/--ask-become-pass or KPM_BECOME_PASSWORD';
        return { ok: 'ignored', warning: problem(`ignored: its value is ${what}, and ${instead}`) };
      }
    } else {
      if (v.vault) return failWith(`vault-encrypted values are not supported for ${spec.name}; write the value itself`);
      if (!unsafe && isTemplated(v.value)) return failWith(`${TEMPLATE_MESSAGE}, not ${showValue(v.value)}`);
      if (!unsafe && Array.isArray(v.value)) {
        const i = v.value.findIndex(isTemplated);
        if (i >= 0) return failWith(`${TEMPLATE_MESSAGE}, not ${showValue(v.value[i])}`, i);
      }
    }
    const parsed = spec.type.parse(v.value, ini);
    if (!parsed.ok) return { ok: false, problems: parsed.failures.map((f) => problem(f.message, f.index)) };
    return { ok: true, name: spec.name, value: parsed.value };
  }

  if (v.name.startsWith('kpm_')) {
    const s = suggest(v.name, KPM_NAMES);
    const hint = s ? `did you mean ${s}?` : `expected one of ${KPM_NAMES.join(', ')}`;
    return failWith(`unknown tool variable; ${hint}`);
  }
  if (v.name.startsWith('kube_proxy_') && !KUBESPRAY_SET.has(v.name)) {
    const s = suggest(v.name, KUBE_PROXY_NAMES);
    const hint = s ? `did you mean ${s}?` : 'expected a kube_proxy_* variable this tool or kubespray defines';
    return failWith(`unknown kube-proxy variable (neither this tool's nor kubespray's); ${hint}`);
  }
  // Ciphertext is of no use to anyone reading `vars`; other variables are kept as written.
  if (v.vault) return { ok: 'ignored' };
  return { ok: true, name: v.name, value: v.value };
}
