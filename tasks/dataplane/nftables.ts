import { createHash } from 'node:crypto';
import { joinHostPort, normalizeIp } from './addresses.ts';

// `nft list table ip kube-proxy` / `ip6 kube-proxy` output, or `nft list ruleset` holding those tables,
// with or without -a (`# handle N`), counters, nft's own error messages in between (the node read lists
// both families with 2>&1, and a node may have only one), or cut short. Nothing here throws: a line that
// is not nft list syntax lands in `unknown` with the reason, and whatever was read before is kept.
//
// The shapes kube-proxy's nftables proxier (1.29+) writes, which the trace reads (trace-nftables.ts):
//   map service-ips        { 10.96.0.10 . tcp . 53 : goto service-NWBZK7IH-kube-system/kube-dns/tcp/dns-tcp, … }
//   map service-nodeports  { tcp . 30080 : goto external-… }
//   map no-endpoint-services / no-endpoint-nodeports, elements commented "ns/name:port": goto reject-chain or drop
//   map firewall-ips       { lbIP . tcp . 80 : goto firewall-… }
//   chain service-HASH-ns/name/proto/port { ip daddr … jump mark-for-masquerade; numgen random mod N vmap { 0 : goto endpoint-…, … } }
//   chain endpoint-HASH-ns/name/proto/port__ip/port { ip saddr ip jump mark-for-masquerade; meta l4proto tcp dnat to ip:port }

export interface UnknownLine {
  line: number;
  text: string;
  reason: string;
}

export interface NftRule {
  chain: string;
  /** 1-based line in the text (the first one, for a rule written over several) */
  line: number;
  /** the statements, without the counter, the comment and the handle */
  text: string;
  comment?: string;
  handle?: number;
  counters?: { packets: number; bytes: number };
}

export interface NftChain {
  name: string;
  line: number;
  rules: NftRule[];
  comment?: string;
  /** a base chain's `type nat hook prerouting priority dstnat; policy accept;` */
  base?: string;
  /** false when the text ends inside the chain */
  closed: boolean;
}

export interface NftElement {
  /** the parts of a concatenated key: ["10.96.0.10", "tcp", "53"] */
  key: string[];
  /** a map element's value: "goto service-…", "drop" */
  value?: string;
  comment?: string;
  line: number;
}

export interface NftSet {
  kind: 'set' | 'map';
  name: string;
  line: number;
  type?: string;
  flags?: string[];
  /** `timeout 3h`, in seconds */
  timeoutSeconds?: number;
  comment?: string;
  elements: NftElement[];
  closed: boolean;
}

export interface NftTable {
  family: string;
  name: string;
  line: number;
  comment?: string;
  chains: Map<string, NftChain>;
  sets: Map<string, NftSet>;
  closed: boolean;
}

export interface NftError {
  line: number;
  message: string;
  /** the table the failed command named (`list table ip6 kube-proxy`) */
  table?: { family: string; name: string };
}

export interface NftDump {
  tables: NftTable[];
  /** nft's own error messages, e.g. for a table the node does not have */
  errors: NftError[];
  /** what is wrong with the text as a whole: a table, chain or set not closed (cut short) */
  problems: string[];
  unknown: UnknownLine[];
  lines: number;
}

// ---------------------------------------------------------------------------------------------------------
// Lines

/** The line without its `# …` remark (outside quotes), and the handle that remark may give. */
function splitRemark(line: string): { text: string; handle?: number } {
  let quoted = false;
  for (let i = 0; i < line.length; i++) {
    const c = line[i];
    if (c === '"') quoted = !quoted;
    else if (c === '#' && !quoted) {
      const m = /handle (\d+)/.exec(line.slice(i));
      const out: { text: string; handle?: number } = { text: line.slice(0, i).trim() };
      if (m) out.handle = Number(m[1]);
      return out;
    }
  }
  return { text: line.trim() };
}

/** `{` minus `}` outside quotes. */
function braceBalance(text: string): number {
  let n = 0;
  let quoted = false;
  for (const c of text) {
    if (c === '"') quoted = !quoted;
    else if (!quoted && c === '{') n++;
    else if (!quoted && c === '}') n--;
  }
  return n;
}

const unquote = (s: string) => (s.length >= 2 && s.startsWith('"') && s.endsWith('"') ? s.slice(1, -1) : s);

/** `3h`, `10800s`, `1d2h`, `500ms` → seconds; undefined when it is not a duration. */
export function parseDuration(text: string): number | undefined {
  const m = /^(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m(?!s))?(?:(\d+)s)?(?:(\d+)ms)?$/.exec(text.trim());
  if (!m || text.trim() === '') return undefined;
  const [d, h, min, s, ms] = m.slice(1).map((x) => (x === undefined ? 0 : Number(x)));
  return d! * 86400 + h! * 3600 + min! * 60 + s! + ms! / 1000;
}

/** Splits on a separator character outside quotes and braces. */
function splitTop(text: string, sep: string): { part: string; offset: number }[] {
  const out: { part: string; offset: number }[] = [];
  let depth = 0;
  let quoted = false;
  let start = 0;
  for (let i = 0; i < text.length; i++) {
    const c = text[i];
    if (c === '"') quoted = !quoted;
    else if (quoted) continue;
    else if (c === '{') depth++;
    else if (c === '}') depth--;
    else if (c === sep && depth === 0) {
      out.push({ part: text.slice(start, i), offset: start });
      start = i + 1;
    }
  }
  out.push({ part: text.slice(start), offset: start });
  return out;
}

/** One element of an `elements = { … }` list: `10.96.0.10 . tcp . 53 comment "ns/a:dns" : goto chain`. */
function parseElement(text: string, line: number): NftElement | undefined {
  let rest = text.trim();
  if (rest === '') return undefined;
  let value: string | undefined;
  // " : " separates key and value; a bare ':' can be part of an IPv6 key
  let quoted = false;
  for (let i = 0; i < rest.length; i++) {
    if (rest[i] === '"') quoted = !quoted;
    else if (!quoted && rest[i] === ':' && /\s/.test(rest[i - 1] ?? '') && /\s/.test(rest[i + 1] ?? '')) {
      value = rest.slice(i + 1).trim();
      rest = rest.slice(0, i).trim();
      break;
    }
  }
  const element: NftElement = { key: [], line };
  const comment = /\s*comment\s+("(?:[^"\\]|\\.)*")/.exec(rest);
  if (comment) {
    element.comment = unquote(comment[1]!);
    rest = (rest.slice(0, comment.index) + rest.slice(comment.index + comment[0].length)).trim();
  }
  // per-element options kube-proxy's affinity sets carry
  rest = rest.replace(/\s+(?:timeout|expires)\s+\S+/g, '').replace(/\s+counter packets \d+ bytes \d+/g, '').trim();
  if (rest === '') return undefined;
  element.key = rest.split(/\s+\.\s+/).map((k) => k.trim());
  if (value !== undefined) element.value = value;
  return element;
}

/** The elements of `{ a, b }` (the braces included), each with its line. */
function parseElements(text: string, firstLine: number): NftElement[] {
  const open = text.indexOf('{');
  const close = text.lastIndexOf('}');
  const body = text.slice(open + 1, close > open ? close : text.length);
  const out: NftElement[] = [];
  // a big cluster's service-ips holds tens of thousands of elements: count lines as the parts go by
  let line = firstLine + countNewlines(text, 0, open + 1);
  let counted = 0;
  for (const { part, offset } of splitTop(body, ',')) {
    const start = offset + (part.length - part.trimStart().length);
    line += countNewlines(body, counted, start);
    counted = start;
    const e = parseElement(part, line);
    if (e) out.push(e);
  }
  return out;
}

function countNewlines(text: string, from: number, to: number): number {
  let n = 0;
  for (let i = from; i < to && i < text.length; i++) if (text.charCodeAt(i) === 10) n++;
  return n;
}

/** A rule's statements, counter, trailing comment. */
function ruleOf(chain: string, text: string, line: number, handle: number | undefined): NftRule {
  const rule: NftRule = { chain, line, text };
  let rest = text;
  const counter = /(?:^|\s)counter packets (\d+) bytes (\d+)(?=\s|$)/.exec(rest);
  if (counter) {
    rule.counters = { packets: Number(counter[1]), bytes: Number(counter[2]) };
    rest = rest.slice(0, counter.index) + rest.slice(counter.index + counter[0].length);
  }
  const comment = /\s+comment\s+("(?:[^"\\]|\\.)*")\s*$/.exec(rest);
  if (comment) {
    rule.comment = unquote(comment[1]!);
    rest = rest.slice(0, comment.index);
  }
  rule.text = rest.replace(/\s+/g, ' ').trim();
  if (handle !== undefined) rule.handle = handle;
  return rule;
}

// ---------------------------------------------------------------------------------------------------------
// The text

type Frame =
  | { kind: 'table'; table: NftTable }
  | { kind: 'chain'; table: NftTable; chain: NftChain }
  | { kind: 'set'; table: NftTable; set: NftSet }
  | { kind: 'skip'; what: string; line: number; depth: number };

/** Text written over several lines: an elements list, a rule with an anonymous set broken up by hand. */
interface Pending {
  what: 'elements' | 'rule';
  text: string;
  line: number;
  balance: number;
  handle?: number;
}

export function parseNftables(text: string): NftDump {
  const dump: NftDump = { tables: [], errors: [], problems: [], unknown: [], lines: 0 };
  const lines = text.split('\n');
  dump.lines = lines.length;
  const stack: Frame[] = [];
  let pending: Pending | undefined;
  // nft's error message is three lines: "Error: …", the command, a line of carets under the culprit
  let errorTail = 0;

  const finishPending = () => {
    const p = pending!;
    pending = undefined;
    const top = stack[stack.length - 1];
    if (p.what === 'elements' && top?.kind === 'set') top.set.elements.push(...parseElements(p.text, p.line));
    else if (p.what === 'rule' && top?.kind === 'chain') top.chain.rules.push(ruleOf(top.chain.name, p.text, p.line, p.handle));
  };

  for (let i = 0; i < lines.length; i++) {
    const n = i + 1;
    const raw = lines[i]!.replace(/\r$/, '');
    if (pending) {
      const { text: body } = splitRemark(raw);
      pending.text += '\n' + body;
      pending.balance += braceBalance(body);
      if (pending.balance <= 0) finishPending();
      continue;
    }
    const { text: line, handle } = splitRemark(raw);
    const top = stack[stack.length - 1];

    if (/^\s*(?:\S+:\d+:[\d-]+:\s*)?Error: /.test(raw)) {
      dump.errors.push({ line: n, message: raw.replace(/^.*?Error: /, '').trim() });
      errorTail = 2;
      continue;
    }
    if (errorTail > 0) {
      errorTail--;
      if (/^[\s^~]+$/.test(raw) && raw.trim() !== '') {
        errorTail = 0;
        continue;
      }
      const cmd = /^\s*(?:list|delete|flush|add)\s+(?:table|chain|set|map)\s+(ip6?|inet|arp|bridge|netdev)\s+(\S+)/.exec(raw);
      if (cmd) {
        dump.errors[dump.errors.length - 1]!.table = { family: cmd[1]!, name: cmd[2]! };
        continue;
      }
    }
    if (line === '') continue;

    if (top?.kind === 'skip') {
      top.depth += braceBalance(line);
      if (top.depth <= 0) stack.pop();
      continue;
    }

    if (!top) {
      const t = /^table\s+(?:(ip6?|inet|arp|bridge|netdev)\s+)?(\S+)\s*\{$/.exec(line);
      if (t) {
        const table: NftTable = { family: t[1] ?? 'ip', name: t[2]!, line: n, chains: new Map(), sets: new Map(), closed: false };
        dump.tables.push(table);
        stack.push({ kind: 'table', table });
      } else if (line.startsWith('#') || raw.trimStart().startsWith('#')) {
        // `# Warning: table ip nat is managed by iptables-nft, do not touch!`
      } else if (/^table\s+\S+(\s+\S+)?$/.test(line)) {
        dump.unknown.push({ line: n, text: raw, reason: 'a table name without its contents (nft list tables)' });
      } else {
        dump.unknown.push({ line: n, text: raw, reason: line === '}' ? 'a closing brace outside any table' : 'not nft list output' });
      }
      continue;
    }

    if (top.kind === 'table') {
      const table = top.table;
      if (line === '}') {
        table.closed = true;
        stack.pop();
        continue;
      }
      const block = /^(set|map|chain)\s+(\S+)\s*\{$/.exec(line);
      if (block) {
        const name = block[2]!;
        if (block[1] === 'chain') {
          const chain: NftChain = { name, line: n, rules: [], closed: false };
          table.chains.set(name, chain);
          stack.push({ kind: 'chain', table, chain });
        } else {
          const set: NftSet = { kind: block[1] as 'set' | 'map', name, line: n, elements: [], closed: false };
          table.sets.set(name, set);
          stack.push({ kind: 'set', table, set });
        }
        continue;
      }
      const comment = /^comment\s+(".*")$/.exec(line);
      if (comment) table.comment = unquote(comment[1]!);
      else if (/^flags\s/.test(line)) continue;
      else if (line.endsWith('{')) stack.push({ kind: 'skip', what: line, line: n, depth: braceBalance(line) });
      else dump.unknown.push({ line: n, text: raw, reason: `not a set, map or chain of table ${table.family} ${table.name}` });
      continue;
    }

    if (top.kind === 'set') {
      const set = top.set;
      if (line === '}') {
        set.closed = true;
        stack.pop();
        continue;
      }
      const m = /^(\S+)\s*(.*)$/.exec(line)!;
      const word = m[1]!;
      const arg = m[2]!;
      if (word === 'type' || word === 'typeof') set.type = arg;
      else if (word === 'flags') set.flags = arg.split(/\s*,\s*/).filter(Boolean);
      else if (word === 'timeout') {
        const s = parseDuration(arg);
        if (s !== undefined) set.timeoutSeconds = s;
      } else if (word === 'comment') set.comment = unquote(arg);
      else if (word === 'elements' && arg.startsWith('=')) {
        const body = line.slice(line.indexOf('=') + 1);
        pending = { what: 'elements', text: body, line: n, balance: braceBalance(body) };
        if (pending.balance <= 0) finishPending();
      } else if (!['size', 'policy', 'gc-interval', 'auto-merge', 'counter'].includes(word)) {
        dump.unknown.push({ line: n, text: raw, reason: `not a property of ${set.kind} ${set.name}` });
      }
      continue;
    }

    // chain
    const chain = top.chain;
    if (line === '}') {
      chain.closed = true;
      stack.pop();
      continue;
    }
    if (/^type\s+\S+\s+hook\s/.test(line)) {
      chain.base = line;
      continue;
    }
    if (/^comment\s+"[^"]*"$/.test(line) && chain.rules.length === 0) {
      chain.comment = unquote(line.slice(7).trim());
      continue;
    }
    if (/^(policy|devices)\s/.test(line)) continue;
    const balance = braceBalance(line);
    if (balance > 0) {
      pending = { what: 'rule', text: line, line: n, balance };
      if (handle !== undefined) pending.handle = handle;
      continue;
    }
    if (balance < 0) {
      dump.unknown.push({ line: n, text: raw, reason: `unbalanced braces in chain ${chain.name}` });
      continue;
    }
    chain.rules.push(ruleOf(chain.name, line, n, handle));
  }

  if (pending) {
    dump.problems.push(`line ${pending.line}: ${pending.what === 'elements' ? 'the elements list' : 'the rule'} is not closed: the text may be cut short`);
    finishPending();
  }
  for (const f of [...stack].reverse()) {
    if (f.kind === 'table') dump.problems.push(`table ${f.table.family} ${f.table.name} (line ${f.table.line}) is not closed: the text may be cut short`);
    else if (f.kind === 'chain') dump.problems.push(`chain ${f.chain.name} (line ${f.chain.line}) is not closed: its rules may be cut short`);
    else if (f.kind === 'set') dump.problems.push(`${f.set.kind} ${f.set.name} (line ${f.set.line}) is not closed: its elements may be cut short`);
    else dump.problems.push(`${f.what} (line ${f.line}) is not closed`);
  }
  return dump;
}

// ---------------------------------------------------------------------------------------------------------
// Rules, as kube-proxy writes them

export interface NftMatch {
  /** "ip saddr", "tcp dport", "meta l4proto", "fib saddr type", "iifname" */
  selector: string;
  /** "==" when the text has no operator */
  op: string;
  /** the value as written: an address, a CIDR, "@set", "{ a, b }" */
  value: string;
  /** the members of an anonymous set value */
  set?: string[];
}

export interface NftMapping {
  /** "0", "1-2" */
  key: string;
  /** "goto endpoint-…", "drop", "10.244.1.5 . 8080" */
  value: string;
}

export interface NftVerdict {
  kind: 'jump' | 'goto' | 'drop' | 'accept' | 'return' | 'reject' | 'continue' | 'queue';
  chain?: string;
}

/** `numgen random mod N [offset M] vmap|map { … }` */
export interface NftNumgen {
  mod: number;
  offset: number;
  map: 'vmap' | 'map';
  mappings: NftMapping[];
}

export interface NftRuleParts {
  matches: NftMatch[];
  /** `selector vmap @map` or `selector vmap { … }` (the services chain's dispatch) */
  dispatch?: { selector: string; ref?: string; mappings?: NftMapping[] };
  numgen?: NftNumgen;
  verdict?: NftVerdict;
  /** `dnat [ip|ip6] to ADDR`, or to a numgen map (kube-proxy 1.36 without per-endpoint chains) */
  dnat?: { to?: string; numgen?: NftNumgen };
  masquerade?: boolean;
  /** sets a `update @set { ip saddr }` writes to */
  updates: string[];
  /** statements not read (log, counter, mark set, …), as text */
  other: string[];
}

/** Words of a rule: quoted strings whole, `{` `}` `,` on their own. */
export function ruleTokens(text: string): string[] {
  const out: string[] = [];
  let cur = '';
  let quoted = false;
  const flush = () => {
    if (cur !== '') out.push(cur);
    cur = '';
  };
  for (const c of text) {
    if (quoted) {
      cur += c;
      if (c === '"') quoted = false;
    } else if (c === '"') {
      cur += c;
      quoted = true;
    } else if (c === ' ' || c === '\t' || c === '\n') flush();
    else if (c === '{' || c === '}' || c === ',') {
      flush();
      out.push(c);
    } else cur += c;
  }
  flush();
  return out;
}

const PAYLOADS = new Set(['ip', 'ip6', 'tcp', 'udp', 'sctp', 'th', 'udplite', 'dccp', 'icmp', 'icmpv6', 'ether', 'arp', 'vlan', 'meta', 'ct', 'rt', 'socket', 'osf']);
const META_KEYS = new Set(['iifname', 'oifname', 'iif', 'oif', 'iiftype', 'oiftype', 'mark', 'l4proto', 'nfproto', 'skuid', 'skgid', 'cgroup', 'pkttype']);
const OPERATORS = new Set(['==', '!=', '<', '>', '<=', '>=', 'eq', 'ne', 'lt', 'gt', 'le', 'ge']);
const VERDICTS = new Set(['jump', 'goto', 'drop', 'accept', 'return', 'reject', 'continue', 'queue']);

/** The words between `{` at `start` and its `}`, and the index after the `}`. */
function braced(tokens: string[], start: number): { items: string[][]; end: number } {
  const items: string[][] = [[]];
  let depth = 0;
  let i = start;
  for (; i < tokens.length; i++) {
    const t = tokens[i]!;
    if (t === '{') {
      depth++;
      if (depth === 1) continue;
    } else if (t === '}') {
      depth--;
      if (depth === 0) return { items: items.filter((x) => x.length > 0), end: i + 1 };
    } else if (t === ',' && depth === 1) {
      items.push([]);
      continue;
    }
    items[items.length - 1]!.push(t);
  }
  return { items: items.filter((x) => x.length > 0), end: i };
}

function mappingsOf(items: string[][]): NftMapping[] {
  return items.map((words) => {
    const colon = words.indexOf(':');
    return colon < 0 ? { key: words.join(' '), value: '' } : { key: words.slice(0, colon).join(' '), value: words.slice(colon + 1).join(' ') };
  });
}

/** `numgen random mod N [offset M] (v)map { … }` starting at tokens[i]; undefined when it is not that. */
function numgenAt(tokens: string[], i: number): { numgen: NftNumgen; end: number } | undefined {
  if (tokens[i] !== 'numgen' || tokens[i + 2] !== 'mod') return undefined;
  const mod = Number(tokens[i + 3]);
  let j = i + 4;
  let offset = 0;
  if (tokens[j] === 'offset') {
    offset = Number(tokens[j + 1]);
    j += 2;
  }
  const map = tokens[j];
  if ((map !== 'vmap' && map !== 'map') || tokens[j + 1] !== '{' || !Number.isInteger(mod) || mod <= 0) return undefined;
  const { items, end } = braced(tokens, j + 1);
  return { numgen: { mod, offset: Number.isFinite(offset) ? offset : 0, map, mappings: mappingsOf(items) }, end };
}

/** A selector starting at tokens[i] (with `.` concatenations); its words and the index after it. */
function selectorAt(tokens: string[], i: number): { selector: string; end: number } | undefined {
  const one = (k: number): number | undefined => {
    const t = tokens[k];
    if (t === undefined) return undefined;
    if (t === 'fib') {
      let j = k + 1;
      while (j < tokens.length && tokens[j] !== 'type' && tokens[j] !== 'oif' && tokens[j] !== 'oifname') j++;
      return j < tokens.length ? j + 1 : undefined;
    }
    if (PAYLOADS.has(t)) return tokens[k + 1] === undefined ? undefined : k + 2;
    if (META_KEYS.has(t)) return k + 1;
    return undefined;
  };
  let end = one(i);
  if (end === undefined) return undefined;
  while (tokens[end] === '.') {
    const next = one(end + 1);
    if (next === undefined) break;
    end = next;
  }
  return { selector: tokens.slice(i, end).join(' '), end };
}

/** What a rule does, in the terms the trace needs; the words it cannot read are kept in `other`. */
export function readRule(text: string): NftRuleParts {
  const tokens = ruleTokens(text);
  const parts: NftRuleParts = { matches: [], updates: [], other: [] };
  let i = 0;
  while (i < tokens.length) {
    const t = tokens[i]!;
    if (VERDICTS.has(t)) {
      const verdict: NftVerdict = { kind: t as NftVerdict['kind'] };
      if ((t === 'jump' || t === 'goto') && tokens[i + 1] !== undefined) {
        verdict.chain = tokens[i + 1]!;
        i += 2;
      } else {
        i++;
        // `reject with icmp type port-unreachable`, `queue num 1`
        while (i < tokens.length && !VERDICTS.has(tokens[i]!) && tokens[i] !== 'comment') i++;
      }
      parts.verdict = verdict;
      continue;
    }
    const ng = numgenAt(tokens, i);
    if (ng) {
      parts.numgen = ng.numgen;
      i = ng.end;
      continue;
    }
    if (t === 'dnat') {
      let j = i + 1;
      while (j < tokens.length && tokens[j] !== 'to') j++;
      const dn = numgenAt(tokens, j + 1);
      if (dn) {
        parts.dnat = { numgen: dn.numgen };
        i = dn.end;
      } else {
        parts.dnat = tokens[j + 1] === undefined ? {} : { to: tokens[j + 1]! };
        i = j + 2;
      }
      continue;
    }
    if (t === 'masquerade') {
      parts.masquerade = true;
      i++;
      while (i < tokens.length && /^(fully-random|random|persistent|,)$/.test(tokens[i]!)) i++;
      continue;
    }
    if ((t === 'update' || t === 'add') && tokens[i + 1]?.startsWith('@')) {
      parts.updates.push(tokens[i + 1]!.slice(1));
      const { end } = tokens[i + 2] === '{' ? braced(tokens, i + 2) : { end: i + 2 };
      i = end;
      continue;
    }
    const sel = selectorAt(tokens, i);
    if (sel) {
      let j = sel.end;
      if (tokens[j] === 'set') {
        // `meta mark set meta mark | 0x4000`: a statement, to the end of the rule
        parts.other.push(tokens.slice(i).join(' '));
        break;
      }
      if (tokens[j] === 'vmap') {
        const d: NonNullable<NftRuleParts['dispatch']> = { selector: sel.selector };
        if (tokens[j + 1] === '{') {
          const { items, end } = braced(tokens, j + 1);
          d.mappings = mappingsOf(items);
          j = end;
        } else {
          d.ref = (tokens[j + 1] ?? '').replace(/^@/, '');
          j += 2;
        }
        parts.dispatch = d;
        i = j;
        continue;
      }
      let op = '==';
      // `meta mark & 0x4000 == 0x0`: the mask goes with the selector
      let selector = sel.selector;
      while (tokens[j] === '&' || tokens[j] === '|' || tokens[j] === '^') {
        selector += ` ${tokens[j]} ${tokens[j + 1] ?? ''}`;
        j += 2;
      }
      if (tokens[j] !== undefined && OPERATORS.has(tokens[j]!)) {
        op = { eq: '==', ne: '!=', lt: '<', gt: '>', le: '<=', ge: '>=' }[tokens[j]!] ?? tokens[j]!;
        j++;
      }
      const match: NftMatch = { selector, op, value: '' };
      if (tokens[j] === '{') {
        const { items, end } = braced(tokens, j);
        match.set = items.map((x) => x.join(' '));
        match.value = `{ ${match.set.join(', ')} }`;
        j = end;
      } else if (tokens[j] !== undefined) {
        match.value = tokens[j]!;
        j++;
      }
      parts.matches.push(match);
      i = j;
      continue;
    }
    // counter, log, limit, notrack …: their words up to the next thing known
    const start = i;
    i++;
    while (i < tokens.length && !VERDICTS.has(tokens[i]!) && tokens[i] !== 'dnat' && tokens[i] !== 'numgen' && !selectorAt(tokens, i)) i++;
    parts.other.push(tokens.slice(start, i).join(' '));
  }
  return parts;
}

/** A DNAT target as "ip:port" (IPv6 in brackets): from `10.0.0.1:80`, `[fd00::1]:80`, or a map's `10.0.0.1 . 80`. */
export function dnatAddress(text: string): string {
  const concat = text.split(/\s+\.\s+/);
  if (concat.length === 2) return joinHostPort(normalizeIp(concat[0]!), concat[1]!);
  const v6 = /^\[([^\]]+)\](?::(\d+))?$/.exec(text);
  if (v6) return v6[2] ? joinHostPort(normalizeIp(v6[1]!), v6[2]) : normalizeIp(v6[1]!);
  return text;
}

// ---------------------------------------------------------------------------------------------------------
// kube-proxy's chain names

export type KubeProxyChainKind = 'service' | 'local' | 'external' | 'firewall' | 'endpoint' | 'affinity';

export interface KubeProxyChainName {
  kind: KubeProxyChainKind;
  /** 8 characters of base32 */
  hash: string;
  namespace: string;
  name: string;
  /** tcp, udp, sctp */
  protocol: string;
  /** "" for an unnamed port */
  portName: string;
  /** endpoint and affinity names: "ip:port" (IPv6 in brackets) */
  endpoint?: string;
  /** kube-proxy cut the name at 240 characters and ended it with "..." */
  truncated: boolean;
}

const CHAIN_NAME = /^(service|local|external|firewall|endpoint|affinity)-([A-Z2-7]{8})-([^/]+)\/([^/]+)\/([a-z]+)\/([^/_]*)(?:__(.*))?$/;

/**
 * What a per-Service chain (or affinity set) name says: kube-proxy names them
 * PREFIX-HASH-namespace/name/protocol/portName[__endpointIP/endpointPort], the IPv6 colons as dots.
 */
export function parseKubeProxyChainName(chain: string): KubeProxyChainName | undefined {
  const truncated = chain.endsWith('...');
  const m = CHAIN_NAME.exec(truncated ? chain.slice(0, -3) : chain);
  if (!m) return undefined;
  const out: KubeProxyChainName = {
    kind: m[1] as KubeProxyChainKind,
    hash: m[2]!,
    namespace: m[3]!,
    name: m[4]!,
    protocol: m[5]!,
    portName: m[6]!,
    truncated,
  };
  const ep = m[7];
  if (ep !== undefined && !truncated) {
    const slash = ep.lastIndexOf('/');
    const ipText = slash < 0 ? ep : ep.slice(0, slash);
    const port = slash < 0 ? '' : ep.slice(slash + 1);
    const ip = /^\d+\.\d+\.\d+\.\d+$/.test(ipText) ? ipText : normalizeIp(ipText.replace(/\./g, ':'));
    if (ip !== '' && /^\d+$/.test(port)) out.endpoint = joinHostPort(ip, port);
  }
  return out;
}

const BASE32 = 'ABCDEFGHIJKLMNOPQRSTUVWXYZ234567';
/** knftables.NameLengthMax less the longest prefix kube-proxy puts in front */
const CHAIN_BASE_MAX = 256 - 16;

/**
 * kube-proxy's nftables chain name for a Service port (`endpoint` undefined) or one of its endpoints
 * ("ip:port", IPv6 in brackets): the name prefixed with 8 base32 characters of its sha256.
 */
export function kubeProxyNftChainName(prefix: KubeProxyChainKind, namespace: string, name: string, protocol: string, portName: string, endpoint?: string): string {
  let base = `${namespace}/${name}/${protocol.toLowerCase()}/${portName}`;
  if (endpoint !== undefined) {
    const m = /^\[?([^\]]*?)\]?:(\d+)$/.exec(endpoint);
    base += `__${(m?.[1] ?? endpoint).replace(/:/g, '.')}/${m?.[2] ?? ''}`;
  }
  const digest = createHash('sha256').update(base).digest();
  let bits = 0;
  let value = 0;
  let hash = '';
  for (const byte of digest) {
    value = ((value << 8) | byte) & 0xffff;
    bits += 8;
    while (bits >= 5 && hash.length < 8) {
      hash += BASE32[(value >>> (bits - 5)) & 31];
      bits -= 5;
    }
    if (hash.length >= 8) break;
  }
  let full = `${hash}-${base}`;
  if (full.length > CHAIN_BASE_MAX) full = full.slice(0, CHAIN_BASE_MAX - 3) + '...';
  return `${prefix}-${full}`;
}
