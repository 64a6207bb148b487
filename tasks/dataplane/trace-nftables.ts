import { cidrContains, joinHostPort, normalizeEndpoint, normalizeIp } from './addresses.ts';
import { parseServiceComment } from './kube-comments.ts';
import {
  dnatAddress,
  parseKubeProxyChainName,
  readRule,
  type NftDump,
  type NftMatch,
  type NftNumgen,
  type NftRuleParts,
  type NftTable,
} from './nftables.ts';
import { formatShare } from './shares.ts';
import { NOT_IN_DUMP, parseServiceRef, type ServiceRef } from './trace-iptables.ts';
import type { DetachedChain, FrontendKind, MasqueradeMark, ServiceTrace, TraceAlternative, TraceBackend, TraceDrop, TraceFrontend } from './trace-types.ts';

// A Service through an nftables-mode node. kube-proxy keeps one table per family (`ip kube-proxy`,
// `ip6 kube-proxy`) whose verdict maps send a destination to the Service port's chain: service-ips
// (ClusterIP, external and load-balancer IPs), service-nodeports; the Service's own chains are named
// after it (service-HASH-ns/name/proto/port …), so the chain a map element leads to says whose it is.
// The walk then follows what an ordinary client's new connection meets — not a pod of the cluster, not
// the node itself, inside loadBalancerSourceRanges — down to the endpoint chains' DNAT, with each
// endpoint's share from `numgen random mod N` (each index of the vmap is 1/N of the traffic).
// no-endpoint-services / no-endpoint-nodeports (checked in the filter hooks) give a Service without
// endpoints its reject, or a Local one without local endpoints its drop.

export interface NftablesTraceOptions {
  /** a port name or number; overrides a port given in the service reference */
  port?: string | number;
  /** tcp, udp, sctp (any case) */
  protocol?: string;
  /** the node's addresses, to print NodePort frontends as "ip:nodePort" instead of "*:nodePort" */
  nodeAddresses?: readonly string[];
  /**
   * the Service's load-balancer IPs: service-ips sends external and load-balancer IPs to the same
   * external chain, and only those with loadBalancerSourceRanges are also in firewall-ips
   */
  loadBalancerIPs?: readonly string[];
  /** only the tables of these families ("ip", "ip6"); default every kube-proxy table of the dump */
  families?: readonly string[];
}

const KIND_ORDER: Record<FrontendKind, number> = { ClusterIP: 0, ExternalIP: 1, LoadBalancer: 2, NodePort: 3 };
const EPS = 1e-12;
const MASQ_CHAIN = 'mark-for-masquerade';

interface Target {
  /** the frontend's destination address, undefined for a NodePort on an unknown node address */
  ip: string | undefined;
  port: number | undefined;
  protocol: string;
}

/** A frontend as the maps have it: one destination of one Service port. */
interface Draft {
  table: NftTable;
  kind: FrontendKind;
  portName: string;
  ip: string | undefined;
  port: number;
  protocol: string;
  line: number;
  /** the service-ips / service-nodeports verdict, when there is one */
  nat?: { map: string; verdict: string };
  /** the firewall-ips verdict (loadBalancerSourceRanges) */
  firewall?: string;
  /** the no-endpoint-services / no-endpoint-nodeports element */
  noEndpoints?: { map: string; verdict: string; comment?: string; line: number };
}

const verdictChain = (verdict: string): string | undefined => /^(?:goto|jump)\s+(\S+)$/.exec(verdict.trim())?.[1];
const isServiceChain = (chain: string) => /^(service|local|external|firewall)-[A-Z2-7]{8}-/.test(chain);

/** A per-Service chain by its prefix and hash alone ("endpoint-5OJB2KTY"), for a terminal: the rest repeats the Service. */
export const shortChainName = (chain: string): string => /^((?:service|local|external|firewall|endpoint)-[A-Z2-7]{8})-/.exec(chain)?.[1] ?? chain;

// ---------------------------------------------------------------------------------------------------------
// Matching a rule against the frontend and against an ordinary client

const isDaddr = (s: string) => s === 'ip daddr' || s === 'ip6 daddr';
const isSaddr = (s: string) => s === 'ip saddr' || s === 'ip6 saddr';
const dportProtocol = (s: string) => /^(tcp|udp|sctp|th) dport$/.exec(s)?.[1];

function inValue(m: NftMatch, test: (v: string) => boolean | undefined): boolean | undefined {
  const values = m.set ?? [m.value];
  let unknown = false;
  for (const v of values) {
    const r = test(v);
    if (r === true) return true;
    if (r === undefined) unknown = true;
  }
  return unknown ? undefined : false;
}

function portIn(v: string, port: number): boolean | undefined {
  const range = /^(\d+)-(\d+)$/.exec(v);
  if (range) return port >= Number(range[1]) && port <= Number(range[2]);
  return /^\d+$/.test(v) ? Number(v) === port : undefined;
}

/** Whether the rule can match traffic to this frontend at all (address, port, protocol). */
function applies(parts: NftRuleParts, t: Target): boolean {
  for (const m of parts.matches) {
    const negated = m.op === '!=';
    if (m.op !== '==' && !negated) continue;
    let hit: boolean | undefined;
    if (isDaddr(m.selector)) {
      if (m.value.startsWith('@')) continue;
      // a rule for one VIP is not about a node port on an address we do not know
      if (t.ip === undefined) hit = false;
      else hit = inValue(m, (v) => cidrContains(v, t.ip!));
    } else if (dportProtocol(m.selector)) {
      const proto = dportProtocol(m.selector)!;
      if (proto !== 'th' && proto !== t.protocol) return false;
      if (t.port === undefined) continue;
      hit = inValue(m, (v) => portIn(v, t.port!));
    } else if (m.selector === 'meta l4proto') {
      hit = inValue(m, (v) => v === t.protocol);
    } else continue;
    if (hit !== undefined && hit === negated) return false;
  }
  return true;
}

/**
 * Whether an ordinary client's new connection meets the rule's source conditions: not from a pod
 * (`ip saddr <pod CIDR>`, `iifname <pod interface>`), not from the node (`fib saddr type local`), not
 * known to an affinity set yet.
 */
function ordinaryClientMatches(parts: NftRuleParts): boolean {
  for (const m of parts.matches) {
    const negated = m.op === '!=';
    if (isSaddr(m.selector)) {
      if (m.value.startsWith('@')) return negated;
      if (!negated) return false;
    } else if (m.selector.startsWith('fib saddr') || m.selector === 'iifname' || m.selector === 'iif' || m.selector === 'meta iifname') {
      if (!negated) return false;
    }
  }
  return true;
}

/** The rule's conditions other than the frontend's address, port and protocol, as nft writes them. */
function conditionText(parts: NftRuleParts): string {
  const out = parts.matches
    .filter((m) => !isDaddr(m.selector) && !dportProtocol(m.selector) && m.selector !== 'meta l4proto' && !(m.selector === 'ct state' && m.value === 'new'))
    .map((m) => `${m.selector} ${m.op === '==' ? '' : `${m.op} `}${m.value}`);
  return out.length === 0 ? 'always' : out.join(' ');
}

const setsMasquerade = (parts: NftRuleParts) =>
  (parts.verdict?.kind === 'jump' && parts.verdict.chain === MASQ_CHAIN) || parts.other.some((o) => /^meta mark set meta mark \| /.test(o));

// ---------------------------------------------------------------------------------------------------------
// The walk

/** The indexes of a numgen map each mapping covers, in [offset, offset + mod). */
function numgenCounts(ng: NftNumgen, warn: (w: string) => void): { value: string; count: number }[] {
  const taken = new Set<number>();
  const byValue = new Map<string, number>();
  const lo = ng.offset;
  const hi = ng.offset + ng.mod - 1;
  for (const m of ng.mappings) {
    const range = /^(\d+)(?:-(\d+))?$/.exec(m.key);
    if (!range) {
      warn(`numgen map key ${JSON.stringify(m.key)} is not an index`);
      continue;
    }
    const from = Number(range[1]);
    const to = range[2] === undefined ? from : Number(range[2]);
    let count = 0;
    for (let k = Math.max(from, lo); k <= Math.min(to, hi); k++) {
      if (taken.has(k)) {
        warn(`numgen index ${k} is listed twice: only its first entry counts`);
        continue;
      }
      taken.add(k);
      count++;
    }
    if (from < lo || to > hi) warn(`numgen random mod ${ng.mod}${ng.offset ? ` offset ${ng.offset}` : ''} never yields ${m.key}`);
    if (count > 0) byValue.set(m.value, (byValue.get(m.value) ?? 0) + count);
  }
  return [...byValue].map(([value, count]) => ({ value, count }));
}

class Walk {
  readonly backends: TraceBackend[] = [];
  private readonly byChain = new Map<string, TraceBackend>();
  readonly masquerade: MasqueradeMark[] = [];
  readonly drops: TraceDrop[] = [];
  readonly alternatives: TraceAlternative[] = [];
  readonly path: string[] = [];
  readonly sourceRanges: string[] = [];
  readonly warnings: string[] = [];
  readonly visited = new Set<string>();
  affinity: { timeoutSeconds?: number } | undefined;

  constructor(
    private readonly table: NftTable,
    private readonly target: Target,
    private readonly label: string,
    private readonly onMainPath: boolean,
  ) {}

  private step(chain: string): void {
    if (this.onMainPath && !this.path.includes(chain)) this.path.push(chain);
  }

  /** Follows a verdict (a map element's value, a vmap entry) with `share` of the traffic; answers the part that comes back. */
  verdict(from: string, verdict: string, share: number, stack: string[], line: number, reason?: string): number {
    const text = verdict.trim();
    const chain = verdictChain(text);
    if (chain !== undefined) {
      if (parseKubeProxyChainName(chain)?.kind === 'endpoint') {
        this.endpoint(chain, share);
        return 0;
      }
      if (!this.table.chains.has(chain)) {
        this.step(chain);
        this.drops.push({ chain: from, target: chain, share, reason: NOT_IN_DUMP, line });
        return 0;
      }
      if (stack.includes(chain) || stack.length > 24) {
        this.warnings.push(`${this.label}: ${from} leads back to ${chain}: loop not followed`);
        return 0;
      }
      // what comes back of a goto returns to our caller, of a jump to the next rule: both are "back" here
      return this.chain(chain, share, [...stack, chain]);
    }
    const word = /^(drop|reject|accept|return|continue)\b/.exec(text)?.[1];
    if (word === 'return' || word === 'continue') return share;
    if (word !== undefined) {
      const drop: TraceDrop = { chain: from, target: word, share, line };
      if (reason !== undefined) drop.reason = reason;
      this.drops.push(drop);
      return 0;
    }
    this.warnings.push(`${this.label}: ${from}: verdict ${JSON.stringify(text)} not followed`);
    return share;
  }

  /** Walks chain `name` with `share` of the traffic; answers the part that comes back (falls off its end or returns). */
  chain(name: string, share: number, stack: string[]): number {
    this.visited.add(name);
    this.step(name);
    const rules = this.table.chains.get(name)?.rules ?? [];
    let remaining = 1;
    let returned = 0;
    for (const rule of rules) {
      if (remaining <= EPS) break;
      const parts = readRule(rule.text);
      if (!applies(parts, this.target)) continue;
      if (setsMasquerade(parts)) {
        this.masquerade.push({ chain: name, condition: conditionText(parts), line: rule.line });
        continue;
      }
      const jumpTo = parts.verdict?.chain;
      const affinitySet = parts.matches.find((m) => isSaddr(m.selector) && m.op === '==' && m.value.startsWith('@affinity-'));
      if (affinitySet) {
        // only clients seen before take these; a new client goes on to the balancing rule
        const seconds = this.table.sets.get(affinitySet.value.slice(1))?.timeoutSeconds;
        this.affinity = seconds === undefined ? (this.affinity ?? {}) : { timeoutSeconds: seconds };
        continue;
      }
      if (!ordinaryClientMatches(parts)) {
        if (jumpTo !== undefined && (isServiceChain(jumpTo) || jumpTo.startsWith('endpoint-'))) this.alternative(parts, jumpTo, stack);
        continue;
      }
      const come = share * remaining;
      if (parts.numgen && parts.numgen.map === 'vmap') {
        // each index takes 1/mod of what reaches the rule; an index the map lacks matches nothing
        const reaching = remaining;
        for (const { value, count } of numgenCounts(parts.numgen, (w) => this.warnings.push(`${this.label}: ${name}: ${w}`))) {
          const part = (reaching * count) / parts.numgen.mod;
          remaining -= part;
          const back = share > 0 ? this.verdict(name, value, share * part, stack, rule.line) / share : 0;
          // after a jump (or continue) the packet goes on with the next rule; after a goto it leaves this chain
          if (/^(jump|continue)\b/.test(value.trim())) remaining += back;
          else returned += back;
        }
        continue;
      }
      if (parts.dnat) {
        if (parts.dnat.numgen) {
          let covered = 0;
          for (const { value, count } of numgenCounts(parts.dnat.numgen, (w) => this.warnings.push(`${this.label}: ${name}: ${w}`))) {
            const part = (remaining * count) / parts.dnat.numgen.mod;
            covered += part;
            this.dnat(name, normalizeEndpoint(dnatAddress(value)), share * part);
          }
          remaining -= covered;
        } else {
          this.dnat(name, parts.dnat.to === undefined ? '?' : normalizeEndpoint(dnatAddress(parts.dnat.to)), come);
          remaining = 0;
        }
        continue;
      }
      if (parts.verdict) {
        const kind = parts.verdict.kind;
        if (kind === 'jump' || kind === 'goto') {
          const back = share > 0 ? this.verdict(name, `${kind} ${jumpTo}`, come, stack, rule.line, rule.comment) / share : 0;
          remaining = 0;
          if (kind === 'jump') remaining = back;
          else returned += back;
        } else if (kind === 'return') {
          returned += remaining;
          remaining = 0;
        } else if (kind === 'continue') {
          // the next rule
        } else {
          this.verdict(name, kind, come, stack, rule.line, rule.comment);
          remaining = 0;
        }
        continue;
      }
      if (parts.masquerade) {
        this.drops.push({ chain: name, target: 'masquerade', share: come, line: rule.line });
        remaining = 0;
      }
      // counter, log, update @set: the packet goes on
    }
    return share * (Math.max(0, remaining) + returned);
  }

  private alternative(parts: NftRuleParts, target: string, stack: string[]): void {
    const sub = new Walk(this.table, this.target, this.label, false);
    if (target.startsWith('endpoint-')) sub.endpoint(target, 1);
    else if (!stack.includes(target)) sub.chain(target, 1, [...stack, target]);
    this.alternatives.push({ condition: conditionText(parts), chain: target, backends: sub.backends });
    for (const c of sub.visited) this.visited.add(c);
  }

  endpoint(chain: string, share: number): void {
    const known = this.byChain.get(chain);
    if (known) {
      known.share += share;
      return;
    }
    this.visited.add(chain);
    const c = this.table.chains.get(chain);
    const named = parseKubeProxyChainName(chain)?.endpoint;
    let address: string | undefined;
    for (const r of c?.rules ?? []) {
      const parts = readRule(r.text);
      if (parts.dnat?.to !== undefined) address = normalizeEndpoint(dnatAddress(parts.dnat.to));
      if (parts.updates.some((s) => s.startsWith('affinity-'))) this.affinity ??= {};
    }
    const backend: TraceBackend = { address: address ?? '?', share, chain };
    if (!c) {
      backend.resolved = false;
      if (named !== undefined) backend.address = named;
      this.warnings.push(
        `${this.label}: ${chain} (${formatShare(share)}) is not in the dump: ` +
          (named === undefined ? 'its DNAT address is unknown' : `address ${named} taken from the chain's name`),
      );
    } else if (address === undefined) {
      this.warnings.push(`${this.label}: ${chain} has no DNAT rule in the dump`);
    } else if (named !== undefined && named !== address) {
      this.warnings.push(`${this.label}: ${chain} is named for ${named} but DNATs to ${address}`);
    }
    this.byChain.set(chain, backend);
    this.backends.push(backend);
  }

  private dnat(chain: string, address: string, share: number): void {
    const key = `${chain}|${address}`;
    const known = this.byChain.get(key);
    if (known) known.share += share;
    else {
      const backend: TraceBackend = { address, share, chain };
      this.byChain.set(key, backend);
      this.backends.push(backend);
    }
  }

  /**
   * The firewall chain of a load-balancer IP with loadBalancerSourceRanges (filter-prerouting, before
   * any NAT): `ip saddr != { ranges } drop`. The client is taken to be inside the ranges; answers
   * the share that passes.
   */
  firewall(chain: string, line: number): number {
    this.step('@firewall-ips');
    this.visited.add(chain);
    const rules = this.table.chains.get(chain)?.rules;
    this.step(chain);
    if (!rules) {
      this.drops.push({ chain: '@firewall-ips', target: chain, share: 1, reason: NOT_IN_DUMP, line });
      return 0;
    }
    let remaining = 1;
    for (const rule of rules) {
      const parts = readRule(rule.text);
      if (!applies(parts, this.target)) continue;
      const except = parts.matches.find((m) => isSaddr(m.selector) && m.op === '!=');
      if (except && (parts.verdict?.kind === 'drop' || parts.verdict?.kind === 'reject')) {
        this.sourceRanges.push(...(except.set ?? [except.value]));
        continue;
      }
      if (!ordinaryClientMatches(parts) || !parts.verdict) continue;
      if (parts.verdict.kind === 'drop' || parts.verdict.kind === 'reject') {
        this.drops.push({ chain, target: parts.verdict.kind, share: remaining, line: rule.line, ...(rule.comment ? { reason: rule.comment } : {}) });
        remaining = 0;
      } else if (parts.verdict.kind === 'accept' || parts.verdict.kind === 'return') break;
    }
    return remaining;
  }
}

// ---------------------------------------------------------------------------------------------------------
// The frontends

function frontendAddress(kind: FrontendKind, ip: string | undefined, port: number): string {
  return kind === 'NodePort' || ip === undefined ? `*:${port}` : joinHostPort(ip, port);
}

/** The maps' elements that belong to the Service, as frontends. */
function drafts(table: NftTable, service: string, lbIPs: Set<string>): Draft[] {
  const out = new Map<string, Draft>();
  const clusterIPs = new Set((table.sets.get('cluster-ips')?.elements ?? []).map((e) => normalizeIp(e.key[0] ?? '')));
  const firewall = new Map<string, string>();
  for (const e of table.sets.get('firewall-ips')?.elements ?? []) {
    if (e.key.length === 3 && e.value) firewall.set(`${normalizeIp(e.key[0]!)}|${e.key[1]}|${e.key[2]}`, e.value);
  }
  const externalKind = (ip: string, proto: string, port: string): FrontendKind =>
    lbIPs.has(ip) || firewall.has(`${ip}|${proto}|${port}`) ? 'LoadBalancer' : 'ExternalIP';
  const draft = (kind: FrontendKind, portName: string, ip: string | undefined, port: number, protocol: string, line: number): Draft => {
    const key = `${kind}|${ip ?? '*'}|${port}|${protocol}|${portName}`;
    let d = out.get(key);
    if (!d) out.set(key, (d = { table, kind, portName, ip, port, protocol, line }));
    return d;
  };

  for (const map of ['service-ips', 'service-nodeports']) {
    for (const e of table.sets.get(map)?.elements ?? []) {
      const chain = e.value === undefined ? undefined : verdictChain(e.value);
      const name = chain === undefined ? undefined : parseKubeProxyChainName(chain);
      if (!name || `${name.namespace}/${name.name}` !== service) continue;
      const nodePort = map === 'service-nodeports';
      const [ipText, proto, portText] = nodePort ? [undefined, e.key[0], e.key[1]] : e.key;
      const port = Number(portText);
      if (!proto || !Number.isInteger(port)) continue;
      const ip = ipText === undefined ? undefined : normalizeIp(ipText);
      const kind: FrontendKind = nodePort ? 'NodePort' : name.kind === 'external' ? externalKind(ip!, proto, portText!) : 'ClusterIP';
      const d = draft(kind, name.portName, ip, port, proto, e.line);
      d.nat = { map, verdict: e.value! };
      if (kind === 'LoadBalancer') {
        const fw = firewall.get(`${ip}|${proto}|${portText}`);
        if (fw !== undefined) d.firewall = fw;
      }
    }
  }
  for (const map of ['no-endpoint-services', 'no-endpoint-nodeports']) {
    for (const e of table.sets.get(map)?.elements ?? []) {
      const c = e.comment === undefined ? undefined : parseServiceComment(e.comment);
      if (!c || c.service !== service || e.value === undefined) continue;
      const nodePort = map === 'no-endpoint-nodeports';
      const [ipText, proto, portText] = nodePort ? [undefined, e.key[0], e.key[1]] : e.key;
      const port = Number(portText);
      if (!proto || !Number.isInteger(port)) continue;
      const ip = ipText === undefined ? undefined : normalizeIp(ipText);
      let kind: FrontendKind = 'NodePort';
      if (!nodePort) {
        // cluster-ips (1.30+) names the ClusterIPs, a nat element of the same port the external ones;
        // without either (1.29, a Service with no endpoints at all) a reject is the ClusterIP's
        const natKind = [...out.values()].find((d) => d.nat && d.ip === ip && d.port === port && d.protocol === proto && d.portName === c.portName)?.kind;
        kind = clusterIPs.has(ip!) ? 'ClusterIP' : (natKind ?? (clusterIPs.size > 0 || e.value.trim() === 'drop' ? externalKind(ip!, proto, portText!) : 'ClusterIP'));
      }
      const d = draft(kind, c.portName, ip, port, proto, e.line);
      d.noEndpoints = { map, verdict: e.value, line: e.line, ...(e.comment !== undefined ? { comment: e.comment } : {}) };
    }
  }
  return [...out.values()];
}

function selectPort(list: Draft[], port: string | number | undefined): Draft[] {
  if (port === undefined) return list;
  if (typeof port === 'string') return list.filter((d) => d.portName === port);
  const names = new Set(list.filter((d) => d.kind !== 'NodePort' && d.port === port).map((d) => d.portName));
  if (names.size === 0) for (const d of list) if (d.kind === 'NodePort' && d.port === port) names.add(d.portName);
  return list.filter((d) => names.has(d.portName));
}

function buildFrontend(d: Draft, address: string, nodeIp: string | undefined, warnings: string[], visited: Set<string>): TraceFrontend {
  const protocol = d.protocol.toUpperCase();
  const label = `${d.kind} ${address}/${protocol}`;
  const frontend: TraceFrontend = { kind: d.kind, address, protocol, backends: [], portName: d.portName, line: d.line };
  if (d.nat) {
    const walk = new Walk(d.table, { ip: d.kind === 'NodePort' ? nodeIp : d.ip, port: d.port, protocol: d.protocol }, label, true);
    const passed = d.firewall === undefined ? 1 : walk.firewall(verdictChain(d.firewall) ?? d.firewall, d.line);
    const entry = `@${d.nat.map}`;
    walk.path.push(entry);
    const back = passed > EPS ? walk.verdict(entry, d.nat.verdict, passed, [], d.line) : 0;
    frontend.backends = walk.backends;
    frontend.path = walk.path;
    frontend.masquerade = walk.masquerade;
    frontend.policy = walk.path.some((c) => c.startsWith('local-')) ? 'Local' : 'Cluster';
    if (walk.affinity) frontend.affinity = walk.affinity;
    if (walk.drops.length) frontend.drops = walk.drops;
    if (walk.alternatives.length) frontend.alternatives = walk.alternatives;
    if (walk.sourceRanges.length) frontend.sourceRanges = walk.sourceRanges;
    if (back > EPS) frontend.fallThrough = back;
    warnings.push(...walk.warnings);
    for (const c of walk.visited) visited.add(c);
  }
  if (d.noEndpoints) {
    const e = d.noEndpoints;
    const chain = verdictChain(e.verdict);
    // kube-proxy's reject-chain holds a bare `reject`
    const target = chain === 'reject-chain' ? 'reject' : (chain ?? e.verdict.trim());
    const drop: TraceDrop = { chain: `@${e.map}`, target, share: d.nat ? (frontend.fallThrough ?? 0) : 1, line: e.line };
    if (e.comment !== undefined) drop.reason = e.comment;
    (frontend.drops ??= []).push(drop);
    if (d.nat && frontend.fallThrough !== undefined) delete frontend.fallThrough;
  }
  const dropped = (frontend.drops ?? []).filter((x) => x.share > EPS || !d.nat);
  const describe = (x: TraceDrop) =>
    x.reason === NOT_IN_DUMP ? `${x.target}, which is not in the dump` : `${x.target} in ${x.chain}${x.reason ? ` ("${x.reason}")` : ''}`;
  if (frontend.backends.length === 0) {
    const why = dropped.length ? dropped.map(describe).join(', ') : 'it passes every rule without DNAT';
    warnings.push(`${label}: no endpoint reached: ${why}`);
  } else {
    if (frontend.fallThrough !== undefined) {
      warnings.push(`${label}: ${formatShare(frontend.fallThrough)} of the traffic passes every rule without DNAT (a chain cut short?)`);
    }
    for (const x of dropped) warnings.push(`${label}: ${formatShare(x.share)} of the traffic goes to ${describe(x)}`);
  }
  return frontend;
}

/** Per-Service chains of the Service that no frontend reached: what an excerpt or a cut dump leaves. */
function detachedChains(table: NftTable, service: string, portName: string | undefined, reached: Set<string>, warnings: string[]): DetachedChain[] {
  const out: DetachedChain[] = [];
  const endpoints: string[] = [];
  for (const chain of table.chains.keys()) {
    const name = parseKubeProxyChainName(chain);
    if (!name || `${name.namespace}/${name.name}` !== service || reached.has(chain)) continue;
    if (portName !== undefined && name.portName !== portName) continue;
    if (name.kind === 'endpoint') {
      endpoints.push(chain);
      continue;
    }
    if (name.kind === 'firewall') continue;
    const walk = new Walk(table, { ip: undefined, port: undefined, protocol: name.protocol }, chain, false);
    const back = walk.chain(chain, 1, [chain]);
    for (const c of walk.visited) reached.add(c);
    warnings.push(...walk.warnings);
    const d: DetachedChain = { chain, portName: name.portName, backends: walk.backends };
    if (back > EPS) d.fallThrough = back;
    out.push(d);
  }
  for (const d of out) {
    warnings.push(`${d.chain} is in the dump but no element of service-ips or service-nodeports leads to it (an excerpt?)`);
  }
  for (const chain of endpoints) {
    if (reached.has(chain)) continue;
    warnings.push(`${chain} is in the dump but no rule leads to it (an excerpt?)`);
  }
  return out;
}

/** Traces one Service (all its ports, or one) through kube-proxy's nftables tables. Never throws. */
export function traceNftables(dump: NftDump, service: string | ServiceRef, options: NftablesTraceOptions = {}): ServiceTrace {
  const ref = typeof service === 'string' ? parseServiceRef(service) : service;
  const trace: ServiceTrace = { service: typeof service === 'string' ? service.replace(/:.*$/, '') : `${service.namespace}/${service.name}`, mode: 'nftables', frontends: [], warnings: [] };
  if (!ref) {
    trace.warnings.push(`"${String(service)}" is not a Service reference (namespace/name[:port])`);
    return trace;
  }
  trace.service = `${ref.namespace}/${ref.name}`;
  const port = options.port ?? ref.port;
  const protocol = options.protocol?.toLowerCase();
  const lbIPs = new Set((options.loadBalancerIPs ?? []).map(normalizeIp));
  const families = options.families;
  const tables = dump.tables.filter((t) => t.name === 'kube-proxy' && (families === undefined || families.includes(t.family)));
  const missing = (families ?? []).filter((f) => !tables.some((t) => t.family === f));
  for (const f of missing) trace.warnings.push(`no table ${f} kube-proxy in the dump`);
  if (families === undefined && tables.length === 0) trace.warnings.push('no table ip kube-proxy or ip6 kube-proxy in the dump');

  const all: Draft[] = [];
  for (const t of tables) all.push(...drafts(t, trace.service, lbIPs));
  let chosen = selectPort(all, port);
  if (protocol) chosen = chosen.filter((d) => d.protocol === protocol);
  chosen.sort((a, b) => KIND_ORDER[a.kind] - KIND_ORDER[b.kind] || (a.table === b.table ? 0 : a.table.family === 'ip' ? -1 : 1) || a.line - b.line);

  const nodeIps = (options.nodeAddresses ?? []).map(normalizeIp);
  const reached = new Set<string>();
  for (const d of chosen) {
    let targets: (string | undefined)[] = [undefined];
    if (d.kind === 'NodePort') {
      const family = d.table.family === 'ip6';
      const accepting = d.table.sets.get('nodeport-ips')?.elements.map((e) => normalizeIp(e.key[0] ?? ''));
      const mine = nodeIps.filter((ip) => ip.includes(':') === family);
      if (mine.length > 0) {
        targets = mine;
        for (const ip of mine) {
          if (accepting && !accepting.includes(ip)) trace.warnings.push(`NodePort ${joinHostPort(ip, d.port)}/${d.protocol.toUpperCase()}: ${ip} is not in @nodeport-ips, where kube-proxy accepts node ports`);
        }
      } else if (nodeIps.length === 0 && accepting && accepting.length > 0) targets = accepting;
    }
    for (const nodeIp of targets) {
      const address = d.kind === 'NodePort' && nodeIp !== undefined ? joinHostPort(nodeIp, d.port) : frontendAddress(d.kind, d.ip, d.port);
      trace.frontends.push(buildFrontend(d, address, nodeIp, trace.warnings, reached));
    }
  }

  // a complete table has no chains left over (kube-proxy deletes them): the search is for cut or partial text
  const partial = trace.frontends.length === 0 || tables.some((t) => !t.closed) || dump.problems.length > 0;
  if (partial) {
    const detached: DetachedChain[] = [];
    for (const t of tables) detached.push(...detachedChains(t, trace.service, typeof port === 'string' ? port : undefined, reached, trace.warnings));
    if (detached.length) trace.detached = detached;
  }
  if (trace.frontends.length === 0) {
    if (all.length > 0) trace.warnings.push(`${trace.service} has no port ${port ?? ''}${protocol ? `/${protocol.toUpperCase()}` : ''} in the dump`);
    else if (tables.length > 0) trace.warnings.push(`no frontend of ${trace.service} in the dump (no element of service-ips, service-nodeports or no-endpoint-services leads to its chains)`);
  }
  // nft's errors say why a table is missing; with the Service found they are about a table it does not need
  const relevant = dump.errors.filter((e) => trace.frontends.length === 0 || (e.table !== undefined && missing.includes(e.table.family) && e.table.name === 'kube-proxy'));
  for (const e of relevant) trace.warnings.push(`nft: ${e.message}${e.table ? ` (${e.table.family} ${e.table.name})` : ''}`);
  for (const p of dump.problems) trace.warnings.push(p);
  return trace;
}
