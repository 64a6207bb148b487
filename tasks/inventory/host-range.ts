import { hostNameProblem } from './raw.ts';

// Ansible host ranges and `host:port` host patterns, as used in inventory host names:
//   node[01:50]        -> node01 ... node50 (a zero-padded start keeps the width)
//   node[1:10:2]       -> node1 node3 ... node9 (optional stride)
//   rack[a:c]-node[1:2] -> racka-node1 racka-node2 ... (letters; several ranges multiply)
//   node1:2222         -> node1, with ansible_port 2222

export type RangeResult = { ok: true; names: string[] } | { ok: false; message: string };

/** Upper bound on the hosts one pattern may expand to (a typo like node[1:1000000] is an error). */
export const MAX_RANGE_HOSTS = 10_000;

export function expandHostRange(pattern: string): RangeResult {
  const open = pattern.indexOf('[');
  const close = pattern.indexOf(']');
  if (open < 0 && close < 0) return { ok: true, names: [pattern] };
  if (open < 0 || close < open) return { ok: false, message: `unbalanced "[" "]" in host range ${JSON.stringify(pattern)}` };

  const head = pattern.slice(0, open);
  const inner = pattern.slice(open + 1, close);
  const tail = pattern.slice(close + 1);
  const parts = inner.split(':');
  if (parts.length < 2 || parts.length > 3) {
    return { ok: false, message: `expected a host range like [01:50] or [1:10:2], got ${JSON.stringify(`[${inner}]`)}` };
  }
  const [beg = '', end = '', stepText] = parts;
  let step = 1;
  if (stepText !== undefined) {
    if (!/^[0-9]+$/.test(stepText) || Number(stepText) < 1) {
      return { ok: false, message: `expected a positive integer step in host range [${inner}], got ${JSON.stringify(stepText)}` };
    }
    step = Number(stepText);
  }

  let items: string[];
  if (/^[0-9]*$/.test(beg) && /^[0-9]+$/.test(end)) {
    const b = beg === '' ? 0 : Number(beg);
    const e = Number(end);
    const padded = beg.length > 1 && beg.startsWith('0');
    if (padded && beg.length !== end.length) {
      return { ok: false, message: `expected a zero-padded host range with equal widths (like [01:50]), got [${inner}]` };
    }
    if (b > e) return { ok: false, message: `expected a host range whose start is not after its end, got [${inner}]` };
    if ((e - b) / step + 1 > MAX_RANGE_HOSTS) {
      return { ok: false, message: `host range [${inner}] expands to more than ${MAX_RANGE_HOSTS} hosts` };
    }
    items = [];
    for (let i = b; i <= e; i += step) items.push(padded ? String(i).padStart(beg.length, '0') : String(i));
  } else if (/^[a-zA-Z]$/.test(beg) && /^[a-zA-Z]$/.test(end)) {
    const b = beg.charCodeAt(0);
    const e = end.charCodeAt(0);
    if (b > e) return { ok: false, message: `expected a host range whose start is not after its end, got [${inner}]` };
    items = [];
    for (let c = b; c <= e; c += step) items.push(String.fromCharCode(c));
  } else {
    return { ok: false, message: `expected a numeric (like [01:50]) or letter (like [a:f]) host range, got [${inner}]` };
  }

  // The tail may hold further ranges; expand it once and combine.
  const rest = expandHostRange(tail);
  if (!rest.ok) return rest;
  if (items.length * rest.names.length > MAX_RANGE_HOSTS) {
    return { ok: false, message: `host pattern ${JSON.stringify(pattern)} expands to more than ${MAX_RANGE_HOSTS} hosts` };
  }
  const names: string[] = [];
  for (const item of items) for (const t of rest.names) names.push(head + item + t);
  return { ok: true, names };
}

/**
 * Splits Ansible's `host:port` form. A colon inside a range (`node[1:3]`) is not a port separator.
 * Returns no port when there is none; `badPort` (the text) when the suffix is not a number, for the schema to reject.
 */
export function splitHostPort(pattern: string): { host: string; port?: number; badPort?: string } {
  let depth = 0;
  let colon = -1;
  let colons = 0;
  for (let i = 0; i < pattern.length; i++) {
    const c = pattern[i];
    if (c === '[') depth++;
    else if (c === ']') depth--;
    else if (c === ':' && depth === 0) {
      colon = i;
      colons++;
    }
  }
  if (colons !== 1) return { host: pattern }; // none, or an IPv6-looking name (rejected later by the name rules)
  const host = pattern.slice(0, colon);
  const portText = pattern.slice(colon + 1);
  if (!/^[0-9]{1,5}$/.test(portText)) return { host, badPort: portText };
  return { host, port: Number(portText) };
}

/**
 * One host entry as written in an inventory (`node[01:03]`, `node1:2222`): the host names it
 * declares, each checked against the host name rules, and the port if one was given.
 */
export function parseHostPattern(
  pattern: string,
): { ok: true; names: string[]; port?: number | string } | { ok: false; message: string } {
  const { host, port, badPort } = splitHostPort(pattern);
  const expanded = expandHostRange(host);
  if (!expanded.ok) return expanded;
  for (const name of expanded.names) {
    const problem = hostNameProblem(name);
    if (problem) return { ok: false, message: problem };
  }
  const p = port ?? badPort;
  return p === undefined ? { ok: true, names: expanded.names } : { ok: true, names: expanded.names, port: p };
}
