// kube-proxy's configuration as kubeadm keeps it: the KubeProxyConfiguration document under the key
// `config.conf` of the ConfigMap kube-system/kube-proxy (EKS: key `config` of `kube-proxy-config`).
// Pure functions: reading it, and editing the few fields this tool owns.
//
// An edit changes the text of the edited values and nothing else. Operators keep comments in this
// ConfigMap, GitOps tools diff it, and kubeadm compares a hash of it on upgrade, so re-rendering the
// whole document is not acceptable: yaml's `String(doc)` would re-indent `- item` lists, turn CRLF into
// LF and normalise spacing. So the document is parsed with `yaml` (for validation and for the source
// range of every node) and each edit is a splice of the original text at those ranges. The result is
// parsed again and compared with the original, value for value, before it is returned.
//
// Values are read as kube-proxy reads them: sigs.k8s.io/yaml is YAML 1.1 (`yes`/`on` are booleans).

import net from 'node:net';
import { isDeepStrictEqual } from 'node:util';
import {
  isMap,
  isScalar,
  isSeq,
  LineCounter,
  parse,
  parseDocument,
  visit,
  type Document,
  type Pair,
  type Scalar,
  type YAMLMap,
} from 'yaml';
import { DURATION_EXAMPLES, IPVS_SCHEDULERS, isCidr, parseGoDuration } from '../inventory/schema.ts';
import type { NodeSettings } from '../inventory/types.ts';
import { normaliseModuleName } from '../node/facts.ts';

export const KUBE_PROXY_API_VERSION = 'kubeproxy.config.k8s.io/v1alpha1';
export const KUBE_PROXY_KIND = 'KubeProxyConfiguration';
/** kubeadm's data key; EKS's kube-proxy-config ConfigMap uses `config` */
export const DEFAULT_CONFIG_KEY = 'config.conf';
export const DEFAULT_METRICS_PORT = 10249;

/** The modes kube-proxy has known; `''` is kubeadm's "default", which is iptables on Linux. */
export type ProxyModeName = 'iptables' | 'ipvs' | 'nftables' | 'kernelspace' | 'userspace' | (string & {});

export interface IpvsSettings {
  /** as written; '' (or absent) means kube-proxy's default, rr */
  scheduler: string;
  strictARP: boolean;
  /** null and absent read as [] */
  excludeCIDRs: string[];
  /** Go durations as written; '' when the key is absent (kube-proxy then uses its default) */
  tcpTimeout: string;
  tcpFinTimeout: string;
  udpTimeout: string;
  syncPeriod: string;
  minSyncPeriod: string;
}

export interface ProxyConfig {
  apiVersion: string;
  kind: string;
  /** the mode kube-proxy runs in: modeRaw, with '' read as iptables */
  mode: ProxyModeName;
  /** as written; '' (or absent) means the platform default, iptables on Linux */
  modeRaw: string;
  /**
   * Where kube-proxy serves its metrics (and /proxyMode), with kube-proxy's defaults applied:
   * '' -> 127.0.0.1:10249 ([::1]:10249 when bindAddress is IPv6), a bare IP gets port 10249, IPv6 in
   * brackets. A wildcard (0.0.0.0:10249, [::]:10249) stays as written: it is reachable on the node's
   * loopback address.
   */
  metricsBindAddress: string;
  /** as written ('' when absent) */
  metricsBindAddressRaw: string;
  ipvs: IpvsSettings;
  /** featureGates as written (a mode may need one on older clusters); {} when absent */
  featureGates: Record<string, boolean>;
}

/** What the cluster phase wants the configuration to say. Fields left out are left as they are. */
export interface ProxyWish {
  /** iptables, ipvs or nftables; '' restores kubeadm's default (iptables) */
  mode: string;
  /** one of the IPVS schedulers, or '' for kube-proxy's default (rr) */
  scheduler?: string;
  strictARP?: boolean;
  excludeCIDRs?: string[];
  /** Go durations (`900s`, `15m0s`, `0s`); `0` is written as `0s` */
  tcpTimeout?: string;
  tcpFinTimeout?: string;
  udpTimeout?: string;
}

export interface ProxyEdit {
  /** the new text; the very same string when nothing changed */
  text: string;
  changed: boolean;
  /** one line per changed field: `mode: "" -> "ipvs"`, `ipvs.strictARP: false -> true` */
  changes: string[];
}

export interface ConfigMapEdit extends ProxyEdit {
  /** the ConfigMap's data with only the configuration key replaced; the same object when unchanged */
  data: Record<string, string>;
}

/**
 * A configuration this tool cannot read or will not write. `.message` names the data key and, when
 * known, the line (of the configuration text, 1-based) and the field: `config.conf:27: mode: ...`.
 */
export class ProxyConfigError extends Error {
  override name = 'ProxyConfigError';
  /** the ConfigMap data key ('' when not about one) */
  readonly key: string;
  /** 0 when not about a line */
  readonly line: number;
  readonly column: number;
  /** `mode`, `ipvs.tcpTimeout`, `ipvs.excludeCIDRs[1]`; '' when about the whole document */
  readonly field: string;
  readonly reason: string;

  constructor(p: { key?: string; line?: number; column?: number; field?: string; reason: string }) {
    const key = p.key ?? '';
    const line = p.line ?? 0;
    const column = p.column ?? 0;
    const field = p.field ?? '';
    let where = key;
    if (key && line > 0) where += `:${line}${column > 0 ? `:${column}` : ''}`;
    super(`${where ? `${where}: ` : ''}${field ? `${field}: ` : ''}${p.reason}`);
    this.key = key;
    this.line = line;
    this.column = column;
    this.field = field;
    this.reason = p.reason;
  }
}

// ---------------------------------------------------------------------------------------------------------
// Reading

export const LINUX_PROXY_MODES = ['iptables', 'ipvs', 'nftables'] as const;
const IPVS_DURATION_FIELDS = ['tcpTimeout', 'tcpFinTimeout', 'udpTimeout', 'syncPeriod', 'minSyncPeriod'] as const;
type IpvsDurationField = (typeof IPVS_DURATION_FIELDS)[number];

/** How a found value is named in a message. */
function describe(v: unknown): string {
  if (v === null || v === undefined) return 'nothing';
  if (Array.isArray(v)) return 'a list';
  if (typeof v === 'object') return 'a map';
  if (typeof v === 'string') return JSON.stringify(v.length > 60 ? `${v.slice(0, 57)}...` : v);
  return `the ${typeof v} ${String(v)}`;
}

interface Located {
  key: string;
  text: string;
  doc: Document.Parsed;
  root: YAMLMap<unknown, unknown>;
  config: ProxyConfig;
}

function pairOf(map: YAMLMap<unknown, unknown>, name: string): Pair<unknown, unknown> | undefined {
  return map.items.find((p) => isScalar(p.key) && p.key.value === name);
}

function parseConfig(text: string, key: string): Located {
  if (typeof text !== 'string') throw new ProxyConfigError({ key, reason: `expected the configuration text, got ${describe(text)}` });
  const lines = new LineCounter();
  const doc = parseDocument(text, { version: '1.1', lineCounter: lines, prettyErrors: false, uniqueKeys: true });
  const fail = (offset: number | undefined, field: string, reason: string): never => {
    const pos = offset === undefined ? undefined : lines.linePos(offset);
    throw new ProxyConfigError({ key, line: pos?.line ?? 0, field, reason });
  };

  const err = doc.errors[0];
  if (err) {
    const { line, col } = lines.linePos(err.pos[0]);
    const reason =
      err.code === 'MULTIPLE_DOCS'
        ? 'more than one YAML document (---); expected only the KubeProxyConfiguration'
        : err.message.replace(/\.$/, '');
    throw new ProxyConfigError({ key, line, column: col, reason: `malformed YAML: ${reason}` });
  }
  visit(doc, {
    Alias(_k, node) {
      fail(node.range?.[0], '', 'anchors and aliases (*name) are not supported here; write the value out');
    },
  });
  const root = doc.contents;
  if (root === null || (isScalar(root) && root.value === null)) {
    throw new ProxyConfigError({ key, reason: `empty; expected a ${KUBE_PROXY_KIND}` });
  }
  if (!isMap(root)) fail(root.range?.[0], '', `expected a ${KUBE_PROXY_KIND} map, got ${describe(root.toJSON())}`);
  const map = root as YAMLMap<unknown, unknown>;

  // A key's value as data, and where it is written (for the line in messages).
  const at = (m: YAMLMap<unknown, unknown>, name: string): { value: unknown; offset: number | undefined } => {
    const p = pairOf(m, name);
    if (!p) return { value: undefined, offset: undefined };
    const v = p.value;
    const offset = (v as { range?: [number, number, number] } | null)?.range?.[0] ?? (p.key as Scalar).range?.[0];
    return { value: isScalar(v) ? v.value : v === null ? null : (v as { toJSON(): unknown }).toJSON(), offset };
  };
  const str = (m: YAMLMap<unknown, unknown>, name: string, field: string, what = 'a string'): string => {
    const { value, offset } = at(m, name);
    if (value === null || value === undefined) return '';
    if (typeof value !== 'string') fail(offset, field, `expected ${what}, got ${describe(value)}`);
    return value as string;
  };

  const kind = at(map, 'kind');
  if (kind.value !== KUBE_PROXY_KIND) fail(kind.offset, 'kind', `expected ${KUBE_PROXY_KIND}, got ${describe(kind.value)}`);
  const apiVersion = at(map, 'apiVersion');
  if (apiVersion.value !== KUBE_PROXY_API_VERSION) {
    fail(apiVersion.offset, 'apiVersion', `expected ${KUBE_PROXY_API_VERSION}, got ${describe(apiVersion.value)}`);
  }

  const modeRaw = str(map, 'mode', 'mode', 'a string (iptables, ipvs, nftables, or "" for the default)');
  const bindAddress = str(map, 'bindAddress', 'bindAddress');
  const metricsRaw = str(map, 'metricsBindAddress', 'metricsBindAddress');
  const metrics = metricsBindAddress(metricsRaw, bindAddress);
  if (metrics === undefined) {
    fail(
      at(map, 'metricsBindAddress').offset,
      'metricsBindAddress',
      `expected an IP address with an optional port (like 127.0.0.1:10249, 0.0.0.0:10249 or [::]:10249), got ${describe(metricsRaw)}`,
    );
  }

  const ipvs: IpvsSettings = {
    scheduler: '',
    strictARP: false,
    excludeCIDRs: [],
    tcpTimeout: '',
    tcpFinTimeout: '',
    udpTimeout: '',
    syncPeriod: '',
    minSyncPeriod: '',
  };
  const ipvsPair = pairOf(map, 'ipvs');
  const ipvsNode = ipvsPair?.value;
  if (ipvsPair && ipvsNode !== null && !(isScalar(ipvsNode) && ipvsNode.value === null)) {
    if (!isMap(ipvsNode)) fail(at(map, 'ipvs').offset, 'ipvs', `expected a map, got ${describe(at(map, 'ipvs').value)}`);
    const im = ipvsNode as YAMLMap<unknown, unknown>;
    ipvs.scheduler = str(im, 'scheduler', 'ipvs.scheduler');
    const strict = at(im, 'strictARP');
    if (strict.value !== null && strict.value !== undefined && typeof strict.value !== 'boolean') {
      fail(strict.offset, 'ipvs.strictARP', `expected true or false, got ${describe(strict.value)}`);
    }
    ipvs.strictARP = strict.value === true;
    const cidrsPair = pairOf(im, 'excludeCIDRs');
    const cidrs = cidrsPair?.value;
    if (isSeq(cidrs)) {
      cidrs.items.forEach((item, i) => {
        const v = isScalar(item) ? item.value : (item as { toJSON?(): unknown } | null)?.toJSON?.();
        const offset = (item as { range?: [number, number, number] } | null)?.range?.[0];
        if (typeof v !== 'string' || !isCidr(v)) {
          fail(offset, `ipvs.excludeCIDRs[${i}]`, `expected an IPv4 or IPv6 CIDR (like 10.0.0.0/8 or fd00::/8), got ${describe(v)}`);
        }
        ipvs.excludeCIDRs.push(v as string);
      });
    } else if (cidrsPair && !(isScalar(cidrs) && cidrs.value === null) && cidrs !== null) {
      const found = at(im, 'excludeCIDRs');
      fail(found.offset, 'ipvs.excludeCIDRs', `expected a list of CIDRs, got ${describe(found.value)}`);
    }
    for (const f of IPVS_DURATION_FIELDS) {
      const v = str(im, f, `ipvs.${f}`, `a Go duration string (${DURATION_EXAMPLES})`);
      if (v !== '' && parseGoDuration(v) === undefined) {
        fail(at(im, f).offset, `ipvs.${f}`, `expected a Go duration (${DURATION_EXAMPLES}), got ${describe(v)}`);
      }
      ipvs[f] = v;
    }
  }

  const featureGates: Record<string, boolean> = {};
  const gatesPair = pairOf(map, 'featureGates');
  const gatesNode = gatesPair?.value;
  if (gatesPair && gatesNode !== null && !(isScalar(gatesNode) && gatesNode.value === null)) {
    if (!isMap(gatesNode)) fail(at(map, 'featureGates').offset, 'featureGates', `expected a map of gate names to true or false, got ${describe(at(map, 'featureGates').value)}`);
    for (const item of (gatesNode as YAMLMap<unknown, unknown>).items) {
      const name = isScalar(item.key) ? String(item.key.value) : String(item.key);
      const { value, offset } = at(gatesNode as YAMLMap<unknown, unknown>, name);
      if (typeof value !== 'boolean') fail(offset, `featureGates.${name}`, `expected true or false, got ${describe(value)}`);
      featureGates[name] = value as boolean;
    }
  }

  const config: ProxyConfig = {
    apiVersion: KUBE_PROXY_API_VERSION,
    kind: KUBE_PROXY_KIND,
    mode: modeRaw === '' ? 'iptables' : modeRaw,
    modeRaw,
    metricsBindAddress: metrics!,
    metricsBindAddressRaw: metricsRaw,
    ipvs,
    featureGates,
  };
  return { key, text, doc, root: map, config };
}

/**
 * metricsBindAddress with kube-proxy's defaulting (AppendPortIfNeeded, and the loopback address of
 * bindAddress's family when empty); undefined when it is not an IP address with an optional port.
 */
function metricsBindAddress(raw: string, bindAddress: string): string | undefined {
  const s = raw.trim();
  if (s === '') {
    return net.isIPv6(bindAddress.trim()) ? `[::1]:${DEFAULT_METRICS_PORT}` : `127.0.0.1:${DEFAULT_METRICS_PORT}`;
  }
  let host: string;
  let port = String(DEFAULT_METRICS_PORT);
  const bracketed = /^\[([^\]]+)\](?::([0-9]+))?$/.exec(s);
  const v4 = /^([0-9.]+)(?::([0-9]+))?$/.exec(s);
  if (bracketed) {
    host = bracketed[1]!;
    if (bracketed[2] !== undefined) port = bracketed[2];
    if (!net.isIPv6(host)) return undefined;
  } else if (net.isIPv6(s)) {
    host = s;
  } else if (v4) {
    host = v4[1]!;
    if (v4[2] !== undefined) port = v4[2];
    if (!net.isIPv4(host)) return undefined;
  } else {
    return undefined;
  }
  const n = Number(port);
  if (!(n >= 1 && n <= 65535)) return undefined;
  return net.isIPv6(host) ? `[${host}]:${n}` : `${host}:${n}`;
}

/** Reads kube-proxy's configuration text (a ConfigMap's `config.conf`). Throws ProxyConfigError. */
export function readProxyConfig(text: string, key: string = DEFAULT_CONFIG_KEY): ProxyConfig {
  return parseConfig(text, key).config;
}

function configText(data: Record<string, string> | null | undefined, key: string): string {
  if (data === null || data === undefined || typeof data !== 'object' || Object.keys(data).length === 0) {
    throw new ProxyConfigError({ key, reason: 'missing: the ConfigMap has no data' });
  }
  const text = data[key];
  if (text === undefined) {
    const keys = Object.keys(data);
    const holder = keys.find((k) => typeof data[k] === 'string' && /^kind:\s*KubeProxyConfiguration\s*$/m.test(data[k]!));
    const hint = holder ? `; ${JSON.stringify(holder)} holds a ${KUBE_PROXY_KIND}: pass that key` : '';
    throw new ProxyConfigError({ key, reason: `missing from the ConfigMap's data (it has: ${keys.join(', ')})${hint}` });
  }
  if (typeof text !== 'string') throw new ProxyConfigError({ key, reason: `expected text, got ${describe(text)}` });
  return text;
}

/** Reads the configuration from a ConfigMap's data (kubeadm: key `config.conf`; EKS: `config`). */
export function readConfigMapData(data: Record<string, string> | null | undefined, key: string = DEFAULT_CONFIG_KEY): ProxyConfig {
  return readProxyConfig(configText(data, key), key);
}

// ---------------------------------------------------------------------------------------------------------
// IPVS scheduler modules

/** The kernel module an IPVS scheduler lives in: rr -> ip_vs_rr ('' is kube-proxy's default, rr). */
export function schedulerModule(scheduler: string): string {
  const name = scheduler === '' ? 'rr' : scheduler;
  if (!/^[a-z][a-z0-9]*$/.test(name)) {
    throw new ProxyConfigError({ field: 'ipvs.scheduler', reason: `not an IPVS scheduler name: ${describe(scheduler)}` });
  }
  return `ip_vs_${name}`;
}

/**
 * Whether a node can run IPVS with this scheduler: `ip_vs` and the scheduler's module must be among
 * the node's modules (loaded or built in; '-' and '_' are the same to the kernel). kube-proxy exits
 * at start-up when they are missing (since 1.26), so the cluster phase refuses to write the ConfigMap
 * then. Returns why not, or undefined when the node has them.
 */
export function checkSchedulerModules(scheduler: string, moduleList: Iterable<string>): string | undefined {
  const have = new Set([...moduleList].map(normaliseModuleName));
  const missing = ['ip_vs', schedulerModule(scheduler)].filter((m) => !have.has(m));
  if (missing.length === 0) return undefined;
  const which = scheduler === '' ? '"" (the default, rr)' : JSON.stringify(scheduler);
  const modules = missing.length === 1 ? `kernel module ${missing[0]}` : `kernel modules ${missing.join(' and ')}`;
  const is = missing.length === 1 ? 'is' : 'are';
  return `IPVS scheduler ${which} needs ${modules}, which ${is} neither loaded nor built into this node's kernel; run the node phase (--tags node) for it first`;
}

// ---------------------------------------------------------------------------------------------------------
// Editing

/** The wish for a host's inventory settings (the timeouts only when the inventory sets them). */
export function proxyWish(settings: NodeSettings): ProxyWish {
  const wish: ProxyWish = {
    mode: settings.mode,
    scheduler: settings.scheduler,
    strictARP: settings.strictArp,
    excludeCIDRs: [...settings.excludeCidrs],
  };
  if (settings.tcpTimeout !== undefined) wish.tcpTimeout = settings.tcpTimeout;
  if (settings.tcpFinTimeout !== undefined) wish.tcpFinTimeout = settings.tcpFinTimeout;
  if (settings.udpTimeout !== undefined) wish.udpTimeout = settings.udpTimeout;
  return wish;
}

type FieldValue = string | boolean | string[];

interface FieldWish {
  /** the key in its map */
  name: string;
  /** in messages: `mode`, `ipvs.scheduler` */
  field: string;
  value: FieldValue;
  /** what the value is when the key is absent or null (kube-proxy's default) */
  absent: FieldValue;
  same: (a: FieldValue, b: FieldValue) => boolean;
}

const sameValue = (a: FieldValue, b: FieldValue): boolean => isDeepStrictEqual(a, b);
const sameDuration = (a: FieldValue, b: FieldValue): boolean =>
  typeof a === 'string' && typeof b === 'string' && parseGoDuration(a || '0') === parseGoDuration(b || '0');

/** Checks a wish and orders it as the document is ordered (kubeadm sorts keys): mode, then ipvs.* */
function wishFields(want: ProxyWish, key: string): { mode: FieldWish; ipvs: FieldWish[] } {
  const refuse = (field: string, value: unknown, expectedWhat: string): never => {
    throw new ProxyConfigError({ key, field, reason: `cannot set ${describe(value)}: expected ${expectedWhat}` });
  };
  if (typeof want !== 'object' || want === null) throw new ProxyConfigError({ key, reason: `expected a wish, got ${describe(want)}` });
  if (want.mode !== '' && !(LINUX_PROXY_MODES as readonly string[]).includes(want.mode)) {
    refuse('mode', want.mode, `${LINUX_PROXY_MODES.join(', ')} or "" (the default, iptables)`);
  }
  const mode: FieldWish = { name: 'mode', field: 'mode', value: want.mode, absent: '', same: sameValue };

  const ipvs: FieldWish[] = [];
  if (want.excludeCIDRs !== undefined) {
    if (!Array.isArray(want.excludeCIDRs)) refuse('ipvs.excludeCIDRs', want.excludeCIDRs, 'a list of CIDRs');
    want.excludeCIDRs.forEach((c, i) => {
      if (typeof c !== 'string' || !isCidr(c)) refuse(`ipvs.excludeCIDRs[${i}]`, c, 'an IPv4 or IPv6 CIDR (like 10.0.0.0/8 or fd00::/8)');
    });
    ipvs.push({ name: 'excludeCIDRs', field: 'ipvs.excludeCIDRs', value: [...want.excludeCIDRs], absent: [], same: sameValue });
  }
  if (want.scheduler !== undefined) {
    if (want.scheduler !== '' && !(IPVS_SCHEDULERS as readonly string[]).includes(want.scheduler)) {
      refuse('ipvs.scheduler', want.scheduler, `an IPVS scheduler (${IPVS_SCHEDULERS.join(', ')}) or "" (the default, rr)`);
    }
    ipvs.push({ name: 'scheduler', field: 'ipvs.scheduler', value: want.scheduler, absent: '', same: sameValue });
  }
  if (want.strictARP !== undefined) {
    if (typeof want.strictARP !== 'boolean') refuse('ipvs.strictARP', want.strictARP, 'true or false');
    ipvs.push({ name: 'strictARP', field: 'ipvs.strictARP', value: want.strictARP, absent: false, same: sameValue });
  }
  for (const name of ['tcpFinTimeout', 'tcpTimeout', 'udpTimeout'] as const satisfies readonly IpvsDurationField[]) {
    const v = want[name];
    if (v === undefined) continue;
    if (typeof v !== 'string' || parseGoDuration(v) === undefined) refuse(`ipvs.${name}`, v, `a Go duration (${DURATION_EXAMPLES})`);
    ipvs.push({ name, field: `ipvs.${name}`, value: v === '0' ? '0s' : v, absent: '0s', same: sameDuration });
  }
  return { mode, ipvs };
}

/** How a value appears in a change line: strings quoted, lists in brackets, an absent key as such. */
function show(v: unknown): string {
  if (v === undefined) return '(absent)';
  if (Array.isArray(v)) return `[${v.map((x) => JSON.stringify(x)).join(', ')}]`;
  return JSON.stringify(v);
}

/** Whether `s` can be written as a plain scalar and read back as this string by YAML 1.1 and 1.2. */
function plainSafe(s: string, inFlow: boolean): boolean {
  if (s === '' || s !== s.trim() || /[\r\n\t#]/.test(s) || /^[-?:,[\]{}&*!|>'"%@`]/.test(s)) return false;
  if (s.includes(': ') || s.endsWith(':')) return false;
  // In a flow collection Go's YAML 1.1 parser is stricter about ':' than YAML 1.2.
  if (inFlow && /[,[\]{}:]/.test(s)) return false;
  try {
    return parse(s, { version: '1.1' }) === s && parse(s, { version: '1.2' }) === s;
  } catch {
    return false;
  }
}

function renderScalar(value: string | boolean, style: Scalar['type'], inFlow: boolean): string {
  if (typeof value === 'boolean') return String(value);
  if (style === 'QUOTE_SINGLE') return `'${value.replace(/'/g, "''")}'`;
  if (style === 'QUOTE_DOUBLE') return JSON.stringify(value);
  return plainSafe(value, inFlow) ? value : JSON.stringify(value);
}

const renderFlowList = (items: string[]): string => `[${items.map((i) => (plainSafe(i, true) ? i : JSON.stringify(i))).join(', ')}]`;
const renderItem = (i: string): string => (plainSafe(i, false) ? i : JSON.stringify(i));

interface Splice {
  start: number;
  end: number;
  text: string;
  /** orders edits at the same offset: higher first (the end of a nested map before its parent's next key) */
  depth: number;
}

/** A key to add to a map, as it is written in a block map (at `indent`) and in a flow map. */
interface Entry {
  name: string;
  block: (indent: string) => string;
  flow: () => string;
}

/** The text edits for one wish, worked out on the parsed document; nothing is applied here. */
class Planner {
  readonly splices: Splice[] = [];
  /** the changed fields' new values, for the check of the result */
  readonly written: Array<{ path: string[]; value: unknown }> = [];
  readonly changes: string[] = [];
  private readonly text: string;
  private readonly eol: string;

  constructor(private readonly located: Located) {
    this.text = located.text;
    this.eol = this.text.includes('\r\n') ? '\r\n' : '\n';
  }

  private lineStart(offset: number): number {
    return this.text.lastIndexOf('\n', offset - 1) + 1;
  }

  private column(offset: number): number {
    return offset - this.lineStart(offset);
  }

  /** The indentation one level deeper than `column`, as the document indents (kubeadm: 2 spaces). */
  private childIndent(column: number): string {
    let step = 2;
    for (const p of this.located.root.items) {
      if (isMap(p.value) && !p.value.flow && p.value.items[0] && isScalar(p.key)) {
        const inner = this.column((p.value.items[0].key as Scalar).range![0]);
        const outer = this.column(p.key.range![0]);
        if (inner > outer) step = inner - outer;
        break;
      }
    }
    return ' '.repeat(column + step);
  }

  /** Offset just after the ':' that ends this pair's key. */
  private afterColon(pair: Pair<unknown, unknown>, field: string): number {
    const keyEnd = (pair.key as Scalar).range![1];
    const colon = this.text.indexOf(':', keyEnd);
    if (colon < 0 || this.text.slice(keyEnd, colon).trim() !== '') {
      throw new ProxyConfigError({ key: this.located.key, field, reason: 'cannot edit a key written in this form (explicit "? key")' });
    }
    return colon + 1;
  }

  /** `key: value` (or `key:` and `- item` lines, goyaml's style) for a block map at `indent`. */
  private blockEntry(name: string, value: FieldValue, indent: string): string {
    if (Array.isArray(value)) {
      if (value.length === 0) return `${indent}${name}: null`;
      return `${indent}${name}:${value.map((i) => `${this.eol}${indent}- ${renderItem(i)}`).join('')}`;
    }
    return `${indent}${name}: ${renderScalar(value, 'PLAIN', false)}`;
  }

  private flowEntry(name: string, value: FieldValue): string {
    return `${name}: ${Array.isArray(value) ? (value.length ? renderFlowList(value) : 'null') : renderScalar(value, 'PLAIN', true)}`;
  }

  /** The end of the line holding `offset`, before its line break. */
  private lineEnd(offset: number): number {
    const nl = this.text.indexOf('\n', offset);
    if (nl < 0) return this.text.length;
    return nl > 0 && this.text[nl - 1] === '\r' ? nl - 1 : nl;
  }

  /** A text edit. Replacements sort before insertions at the same offset, deeper insertions first. */
  private push(start: number, end: number, text: string, depth = Number.MAX_SAFE_INTEGER): void {
    this.splices.push({ start, end, text, depth });
  }

  /**
   * Replaces a pair's scalar value (null, or nothing) with the lines of a block collection. A comment
   * after the value stays on the key's line: `ipvs: null # unused` becomes `ipvs: # unused` and the lines.
   */
  private toBlock(pair: Pair<unknown, unknown>, field: string, lines: string): void {
    const start = this.afterColon(pair, field);
    const end = (pair.value as Scalar | null)?.range?.[1] ?? start;
    const lineEnd = this.lineEnd(end);
    if (lineEnd === end) {
      this.push(start, end, lines);
    } else {
      this.push(start, end, '');
      this.push(lineEnd, lineEnd, lines);
    }
  }

  /** Sets existing pair `pair` (whose value differs) to `value`; returns the value as it now reads. */
  private replace(pair: Pair<unknown, unknown>, value: FieldValue, inFlow: boolean, field: string): unknown {
    const node = pair.value;
    if (Array.isArray(value)) {
      const empty = value.length === 0;
      if (isSeq(node) && node.flow) {
        this.push(node.range![0], node.range![1], empty ? '[]' : renderFlowList(value));
        return [...value];
      }
      if (isSeq(node)) {
        const first = node.range![0];
        const end = (node.items[node.items.length - 1] as { range?: [number, number, number] }).range![1];
        if (empty) {
          // kubeadm's way of saying "none"
          this.push(this.afterColon(pair, field), end, ' null');
          return null;
        }
        const indent = ' '.repeat(this.column(first));
        this.push(first, end, value.map((i) => `- ${renderItem(i)}`).join(`${this.eol}${indent}`));
        return [...value];
      }
      // null or nothing, which already reads as an empty list: only a non-empty list gets here
      if (inFlow) {
        const at = (node as Scalar | null)?.range ?? [this.afterColon(pair, field), this.afterColon(pair, field)];
        this.push(at[0], at[1], `${at[0] === at[1] ? ' ' : ''}${renderFlowList(value)}`);
      } else {
        const indent = ' '.repeat(this.column((pair.key as Scalar).range![0]));
        this.toBlock(pair, field, value.map((i) => `${this.eol}${indent}- ${renderItem(i)}`).join(''));
      }
      return [...value];
    }
    const scalar = node as Scalar | null;
    if (!scalar || !scalar.range || scalar.range[0] === scalar.range[1]) {
      // `key:` with nothing after it
      const at = scalar?.range?.[0] ?? this.afterColon(pair, field);
      this.push(at, at, ` ${renderScalar(value, 'PLAIN', inFlow)}`);
      return value;
    }
    const [start, end] = scalar.range;
    if (scalar.type === 'BLOCK_LITERAL' || scalar.type === 'BLOCK_FOLDED') {
      // A block scalar's range ends after its last line break, which the next key still needs.
      const keep = /\r?\n$/.exec(this.text.slice(start, end))?.[0] ?? '';
      this.push(start, end, `${JSON.stringify(value)}${keep}`);
      return value;
    }
    this.push(start, end, renderScalar(value, scalar.type, inFlow));
    return value;
  }

  /** Adds keys missing from `map` (a block or flow map), each where kubeadm's sorted order puts it. */
  private insert(map: YAMLMap<unknown, unknown>, entries: Entry[]): void {
    const sorted = [...entries].sort((a, b) => (a.name < b.name ? -1 : 1));
    if (map.flow) {
      const lastPair = map.items[map.items.length - 1];
      const lastEnd = (lastPair?.value as { range?: number[] } | null)?.range?.[1] ?? (lastPair?.key as Scalar | undefined)?.range?.[1];
      const at = lastEnd ?? map.range![0] + 1;
      const text = sorted.map((e) => e.flow()).join(', ');
      this.push(at, at, lastEnd !== undefined ? `, ${text}` : text, 0);
      return;
    }
    const keys = map.items.map((p) => (isScalar(p.key) ? String(p.key.value) : ''));
    const isSorted = keys.every((k, i) => i === 0 || keys[i - 1]! <= k);
    const indent = ' '.repeat(this.column((map.items[0]!.key as Scalar).range![0]));
    const groups = new Map<number, string[]>();
    const add = (at: number, line: string): void => {
      groups.set(at, [...(groups.get(at) ?? []), line]);
    };
    for (const e of sorted) {
      const before = isSorted ? map.items.findIndex((_p, i) => keys[i]! > e.name) : -1;
      if (before >= 0) {
        // Above the next key, and above the comment lines that introduce it.
        let at = this.lineStart((map.items[before]!.key as Scalar).range![0]);
        while (at > 0) {
          const prev = this.lineStart(at - 1);
          if (!this.text.slice(prev, at).trimStart().startsWith('#')) break;
          at = prev;
        }
        add(at, `${e.block(indent)}${this.eol}`);
      } else {
        // After the last key's line (its value may span lines; the text may end without a newline).
        const last = map.items[map.items.length - 1]!;
        let end = (last.value as { range?: number[] } | null)?.range?.[1] ?? (last.key as Scalar).range![1];
        while (end > 0 && (this.text[end - 1] === '\n' || this.text[end - 1] === '\r')) end--;
        let nl = this.text.indexOf('\n', end);
        // Comment lines indented deeper than this map's keys still belong to the last value.
        while (nl >= 0) {
          const next = this.text.slice(nl + 1, this.lineEnd(nl + 1));
          const body = next.trimStart();
          if (!body.startsWith('#') || next.length - body.length <= indent.length) break;
          nl = this.text.indexOf('\n', nl + 1);
        }
        if (nl >= 0) add(nl + 1, `${e.block(indent)}${this.eol}`);
        else add(this.text.length, `${this.eol}${e.block(indent)}`);
      }
    }
    for (const [at, lines] of groups) this.push(at, at, lines.join(''), indent.length);
  }

  private entry(name: string, value: FieldValue): Entry {
    return { name, block: (indent) => this.blockEntry(name, value, indent), flow: () => this.flowEntry(name, value) };
  }

  /** A whole `ipvs` map holding `entries`, for a configuration without one. */
  private ipvsEntry(entries: Array<{ name: string; value: FieldValue }>): Entry {
    return {
      name: 'ipvs',
      block: (indent) => `${indent}ipvs:${this.ipvsBlock(entries, this.childIndent(indent.length))}`,
      flow: () => `ipvs: ${this.ipvsFlow(entries)}`,
    };
  }

  private ipvsBlock(entries: Array<{ name: string; value: FieldValue }>, indent: string): string {
    return entries.map((e) => `${this.eol}${this.blockEntry(e.name, e.value, indent)}`).join('');
  }

  private ipvsFlow(entries: Array<{ name: string; value: FieldValue }>): string {
    return `{${entries.map((e) => this.flowEntry(e.name, e.value)).join(', ')}}`;
  }

  /** Notes a change: `shown` is the wish as the change line shows it, `written` the value as it now reads. */
  private record(path: string[], field: string, before: unknown, present: boolean, shown: FieldValue, written: unknown): void {
    this.changes.push(`${field}: ${show(present ? before : undefined)} -> ${show(shown)}`);
    this.written.push({ path, value: written });
  }

  /** The current value of `name` in `map`: the JS value, and whether the key is there. */
  private current(map: YAMLMap<unknown, unknown> | undefined, name: string): { pair?: Pair<unknown, unknown>; value: unknown } {
    const pair = map ? pairOf(map, name) : undefined;
    if (!pair) return { value: undefined };
    const v = pair.value;
    return { pair, value: v === null ? null : isScalar(v) ? v.value : (v as { toJSON(): unknown }).toJSON() };
  }

  plan(want: ProxyWish): void {
    const { mode, ipvs } = wishFields(want, this.located.key);
    const root = this.located.root;

    const m = this.current(root, 'mode');
    if (!mode.same(m.value === null || m.value === undefined ? mode.absent : (m.value as FieldValue), mode.value)) {
      let written: unknown = mode.value;
      if (m.pair) written = this.replace(m.pair, mode.value, root.flow === true, mode.field);
      else this.insert(root, [this.entry('mode', mode.value)]);
      this.record(['mode'], mode.field, m.value, m.pair !== undefined, mode.value, written);
    }

    const ipvsPair = pairOf(root, 'ipvs');
    const ipvsMap = ipvsPair && isMap(ipvsPair.value) ? (ipvsPair.value as YAMLMap<unknown, unknown>) : undefined;
    const missing: Array<{ name: string; value: FieldValue }> = [];
    for (const f of ipvs) {
      const c = this.current(ipvsMap, f.name);
      const now = c.value === null || c.value === undefined ? f.absent : (c.value as FieldValue);
      if (f.same(now, f.value)) continue;
      let written: unknown = f.value;
      if (c.pair) written = this.replace(c.pair, f.value, ipvsMap!.flow === true, f.field);
      else missing.push({ name: f.name, value: f.value });
      this.record(['ipvs', f.name], f.field, c.value, c.pair !== undefined, f.value, written);
    }
    if (missing.length === 0) return;
    if (ipvsMap && ipvsMap.items.length > 0) {
      this.insert(ipvsMap, missing.map((e) => this.entry(e.name, e.value)));
      return;
    }
    // No ipvs map to add to (absent, `ipvs:`, `ipvs: null`, `ipvs: {}`): write one, as kubeadm lays it out.
    const entries = [...missing].sort((a, b) => (a.name < b.name ? -1 : 1));
    if (!ipvsPair) {
      this.insert(root, [this.ipvsEntry(entries)]);
      return;
    }
    if (root.flow) {
      const start = this.afterColon(ipvsPair, 'ipvs');
      const end = (ipvsPair.value as Scalar | null)?.range?.[1] ?? start;
      this.push(start, end, ` ${this.ipvsFlow(entries)}`);
      return;
    }
    this.toBlock(ipvsPair, 'ipvs', this.ipvsBlock(entries, this.childIndent(this.column((ipvsPair.key as Scalar).range![0]))));
  }
}

function applySplices(text: string, splices: Splice[]): string {
  const ordered = [...splices].sort((a, b) => a.start - b.start || b.depth - a.depth || a.end - b.end);
  let out = '';
  let pos = 0;
  for (const s of ordered) {
    if (s.start < pos) throw new Error(`kube-proxy-config: overlapping edits at offset ${s.start}`);
    out += text.slice(pos, s.start) + s.text;
    pos = s.end;
  }
  return out + text.slice(pos);
}

/** `obj` with `value` at `path` (maps created on the way), for comparing documents value for value. */
function setPath(obj: Record<string, unknown>, path: string[], value: unknown): void {
  let o = obj;
  for (const k of path.slice(0, -1)) {
    if (typeof o[k] !== 'object' || o[k] === null || Array.isArray(o[k])) o[k] = {};
    o = o[k] as Record<string, unknown>;
  }
  o[path[path.length - 1]!] = value;
}

/**
 * Sets kube-proxy's mode and the IPVS fields the wish gives, keeping every other byte of `text`:
 * comments, key order, quoting (`mode: ""` becomes `mode: "ipvs"`, an unquoted `mode: iptables`
 * becomes `mode: ipvs`), indentation and line endings. A value that already says what is wished is
 * not touched (durations compare by length of time: `900s` is `15m0s`); when nothing differs the very
 * same text comes back with `changed: false`. Throws ProxyConfigError for a configuration it cannot
 * read and for a wish it will not write.
 */
export function editProxyConfig(text: string, want: ProxyWish, key: string = DEFAULT_CONFIG_KEY): ProxyEdit {
  const located = parseConfig(text, key);
  const planner = new Planner(located);
  planner.plan(want);
  if (planner.splices.length === 0) return { text, changed: false, changes: [] };

  const out = applySplices(text, planner.splices);
  // The result must read back as the original with exactly the written values changed.
  const after = parseConfig(out, key);
  const expected = located.doc.toJS() as Record<string, unknown>;
  for (const w of planner.written) setPath(expected, w.path, w.value);
  if (!isDeepStrictEqual(after.doc.toJS(), expected)) {
    throw new Error(`kube-proxy-config: the edited ${key} does not read back as intended (changes: ${planner.changes.join('; ')})`);
  }
  return { text: out, changed: true, changes: planner.changes };
}

/**
 * editProxyConfig on a ConfigMap's data: only `data[key]` may change; every other key
 * (`kubeconfig.conf`) is passed through as the same string.
 */
export function editConfigMapData(
  data: Record<string, string> | null | undefined,
  want: ProxyWish,
  key: string = DEFAULT_CONFIG_KEY,
): ConfigMapEdit {
  const text = configText(data, key);
  const edit = editProxyConfig(text, want, key);
  const source = data as Record<string, string>;
  if (!edit.changed) return { ...edit, data: source };
  const next: Record<string, string> = {};
  for (const [k, v] of Object.entries(source)) next[k] = k === key ? edit.text : v;
  return { ...edit, data: next };
}
