import { normalizeEndpoint, splitHostPort } from './addresses.ts';
import { formatShare } from './shares.ts';
import { NOT_IN_DUMP } from './trace-iptables.ts';
import { shortChainName } from './trace-nftables.ts';
import type { FrontendKind, ServiceTrace, TraceBackend, TraceFrontend } from './trace-types.ts';

// One Service through a node's dataplane (iptables, IPVS or nftables), checked against what the API says
// and printed for a terminal. The walks themselves are in trace-iptables.ts, trace-ipvs.ts and
// trace-nftables.ts.

export type * from './trace-types.ts';
export { listIptablesServices, NOT_IN_DUMP, parseServiceRef, traceIptables } from './trace-iptables.ts';
export type { IptablesServiceSummary, IptablesTraceOptions, ServiceRef } from './trace-iptables.ts';
export { traceIpvs } from './trace-ipvs.ts';
export type { IpvsTraceQuery } from './trace-ipvs.ts';
export { traceNftables } from './trace-nftables.ts';
export type { NftablesTraceOptions } from './trace-nftables.ts';

export interface ExpectedEndpoint {
  /** "ip:port" (IPv6 in brackets), or a bare IP to compare addresses only */
  address: string;
  /** the Service port it serves; when given, only frontends of that port (iptables, nftables) are compared */
  portName?: string;
}

export interface ExpectedFrontend {
  kind?: FrontendKind;
  /** "ip:port", "*:nodePort" */
  address: string;
  protocol?: string;
}

const frontendLabel = (f: TraceFrontend) => `${f.kind} ${f.address}/${f.protocol}${f.node !== undefined ? ` (${f.node})` : ''}`;

function sameAddress(expected: string, actual: string): boolean {
  if (expected === actual) return true;
  const e = splitHostPort(expected);
  return e.port === '' && splitHostPort(actual).host === e.host;
}

/**
 * The expected endpoints that belong behind a frontend: those of its port name; when the frontend has
 * none (an IPVS trace not told the name), those with the target port its backends use.
 */
function endpointsFor(f: TraceFrontend, want: readonly ExpectedEndpoint[]): ExpectedEndpoint[] {
  if (f.portName !== undefined) return want.filter((w) => w.portName === undefined || w.portName === f.portName);
  const named = new Set(want.map((w) => w.portName));
  if (named.size <= 1) return [...want];
  const ports = new Set(f.backends.filter((b) => b.address !== '?').map((b) => splitHostPort(b.address).port));
  const byPort = want.filter((w) => ports.has(splitHostPort(w.address).port));
  return byPort.length > 0 ? byPort : [...want];
}

/**
 * Checks a trace against the endpoints the EndpointSlices list (ready ones, as the caller fetched
 * them): endpoints missing from the dataplane, stale backends the dataplane still has, and frontends
 * it lacks. Answers a new trace with those warnings added; the input is not changed.
 */
export function compareWithEndpoints(
  trace: ServiceTrace,
  expected: readonly ExpectedEndpoint[],
  options: { frontends?: readonly ExpectedFrontend[] } = {},
): ServiceTrace {
  const warnings: string[] = [];
  const want = expected.map((e) => ({ address: normalizeEndpoint(e.address), portName: e.portName }));
  // one message per address, listing the frontends concerned
  const missing = new Map<string, string[]>();
  const stale = new Map<string, string[]>();
  const note = (map: Map<string, string[]>, key: string, label: string) => {
    const l = map.get(key);
    if (l) l.push(label);
    else map.set(key, [label]);
  };
  for (const f of trace.frontends) {
    const mine = endpointsFor(f, want);
    const known = f.backends.filter((b) => b.address !== '?');
    const unknown = f.backends.length - known.length;
    const label = frontendLabel(f);
    // a Local-policy path only has this node's endpoints: the others are missing on purpose
    if (f.policy !== 'Local') {
      for (const w of mine) {
        if (known.some((b) => sameAddress(w.address, normalizeEndpoint(b.address)))) continue;
        note(missing, w.address + (unknown > 0 ? ` (unless it is one of the ${unknown} backend(s) of unknown address)` : ''), label);
      }
    }
    for (const b of known) {
      const address = normalizeEndpoint(b.address);
      if (mine.some((w) => sameAddress(w.address, address))) continue;
      note(stale, address + (b.weight === 0 ? ' (weight 0: draining)' : ''), label);
    }
  }
  for (const [address, labels] of missing) warnings.push(`endpoint ${address} is in the EndpointSlices but not in the dataplane: ${labels.join(', ')}`);
  for (const [address, labels] of stale) warnings.push(`backend ${address} is in the dataplane but not in the EndpointSlices (stale): ${labels.join(', ')}`);
  for (const e of options.frontends ?? []) {
    const address = normalizeEndpoint(e.address);
    const found = trace.frontends.some((f) => {
      if (e.kind !== undefined && f.kind !== e.kind) return false;
      if (e.protocol !== undefined && f.protocol !== e.protocol.toUpperCase()) return false;
      if (e.address.startsWith('*:') || f.address.startsWith('*:')) return splitHostPort(f.address).port === splitHostPort(e.address).port;
      return normalizeEndpoint(f.address) === address;
    });
    if (!found) warnings.push(`frontend ${e.kind ?? ''}${e.kind ? ' ' : ''}${e.address}${e.protocol ? `/${e.protocol.toUpperCase()}` : ''} is absent from the dataplane`);
  }
  if (trace.frontends.length === 0 && expected.length > 0) {
    warnings.push(`no frontend of ${trace.service} in the dataplane, while the EndpointSlices list ${expected.length} endpoint(s)`);
  }
  return { ...trace, warnings: [...trace.warnings, ...warnings] };
}

function backendLine(trace: ServiceTrace, b: TraceBackend): string {
  const share = formatShare(b.share);
  if (trace.mode === 'iptables' && b.chain !== undefined) {
    const target = b.chain.startsWith('KUBE-SEP-') ? `${b.chain} → DNAT ${b.address}` : `DNAT ${b.address} (in ${b.chain})`;
    const why = b.resolved === false ? (b.address === '?' ? '   (chain not in the dump)' : '   (chain not in the dump; address from its comment)') : '';
    return `${share}  ${target}${why}`;
  }
  if (trace.mode === 'nftables' && b.chain !== undefined) {
    const chain = shortChainName(b.chain);
    const target = b.chain.startsWith('endpoint-') ? `${chain} → DNAT ${b.address}` : `DNAT ${b.address} (in ${chain})`;
    const why = b.resolved === false ? (b.address === '?' ? '   (chain not in the dump)' : '   (chain not in the dump; address from its name)') : '';
    return `${share}  ${target}${why}`;
  }
  const cols = [b.address];
  if (b.forwarding !== undefined) cols.push(b.forwarding);
  if (b.weight !== undefined) cols.push(`weight ${b.weight}`);
  if (b.activeConn !== undefined) cols.push(`active ${b.activeConn}`);
  if (b.inactiveConn !== undefined) cols.push(`inactive ${b.inactiveConn}`);
  if (b.stats) for (const [k, v] of Object.entries(b.stats)) cols.push(`${k} ${v}`);
  return `${share}  ${cols.join('  ')}`;
}

function frontendHead(trace: ServiceTrace, f: TraceFrontend): string {
  let head = frontendLabel(f);
  if (f.portName) head += ` (${f.portName})`;
  if (trace.mode === 'iptables' || trace.mode === 'nftables') {
    if (f.path && f.path.length) head += `  ${f.path.map(shortChainName).join(' → ')}`;
    if (f.masquerade && f.masquerade.length) head += `  masquerade: ${[...new Set(f.masquerade.map((m) => m.condition))].join('; ')}`;
  } else {
    if (f.scheduler !== undefined) head += `  ${f.scheduler}`;
    if (f.flags?.length) head += ` (${f.flags.join(',')})`;
    if (f.persistent !== undefined) head += ` persistent ${f.persistent}`;
  }
  return head;
}

function frontendNotes(f: TraceFrontend): string[] {
  const notes: string[] = [];
  if (f.affinity) notes.push(`session affinity (ClientIP)${f.affinity.timeoutSeconds !== undefined ? `, ${f.affinity.timeoutSeconds} s` : ''}`);
  if (f.policy === 'Local') notes.push('node-local endpoints only (traffic policy Local)');
  if (f.sourceRanges?.length) notes.push(`only from ${f.sourceRanges.join(', ')}`);
  for (const d of f.drops ?? []) {
    notes.push(
      d.reason === NOT_IN_DUMP
        ? `${formatShare(d.share)}  → ${shortChainName(d.target)}   (chain not in the dump)`
        : `${formatShare(d.share)}  ${d.target} in ${shortChainName(d.chain)}${d.reason ? ` ("${d.reason}")` : ''}`,
    );
  }
  if (f.fallThrough !== undefined) notes.push(`${formatShare(f.fallThrough)}  passes every rule without DNAT`);
  for (const a of f.alternatives ?? []) {
    const n = a.backends.length;
    notes.push(`if ${a.condition}: → ${shortChainName(a.chain)} (${n === 0 ? 'no endpoint' : `${n} endpoint${n === 1 ? '' : 's'}`})`);
  }
  if (f.backends.length === 0 && !(f.drops ?? []).length) notes.push('no endpoint');
  return notes;
}

/** The trace as a tree for a terminal (no colours), warnings after it. */
export function renderTraceTree(trace: ServiceTrace): string {
  const out = [`${trace.service} (${trace.mode})`];
  const items: { head: string; children: string[] }[] = [];
  for (const f of trace.frontends) {
    items.push({ head: frontendHead(trace, f), children: [...f.backends.map((b) => backendLine(trace, b)), ...frontendNotes(f)] });
  }
  for (const d of trace.detached ?? []) {
    const children = d.backends.map((b) => backendLine(trace, b));
    if (d.fallThrough !== undefined) children.push(`${formatShare(d.fallThrough)}  passes every rule (the rest of the chain is not in the dump?)`);
    items.push({ head: `(no frontend in the dump) ${d.chain}${d.portName ? ` (${d.portName})` : ''}`, children });
  }
  if (items.length === 0) items.push({ head: '(nothing found)', children: [] });
  items.forEach((item, i) => {
    const last = i === items.length - 1;
    out.push(`${last ? '└─' : '├─'} ${item.head}`);
    item.children.forEach((c, j) => {
      out.push(`${last ? '   ' : '│  '}${j === item.children.length - 1 ? '└─' : '├─'} ${c}`);
    });
  });
  if (trace.warnings.length) {
    out.push('warnings:');
    for (const w of trace.warnings) out.push(`  ! ${w}`);
  }
  return out.join('\n') + '\n';
}
