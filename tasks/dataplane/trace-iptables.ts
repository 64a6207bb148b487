import { cidrContains, joinHostPort, normalizeEndpoint, normalizeIp, stripHostPrefix } from './addresses.ts';
import { chainHash, servicePortChainName, servicePortName } from './chain-names.ts';
import { chainIndex, type ChainIndex, type IptablesDump, type IptablesRule } from './iptables-save.ts';
import { commentServicePort, parseServiceComment } from './kube-comments.ts';
import { formatShare } from './shares.ts';
import type {
  DetachedChain,
  FrontendKind,
  MasqueradeMark,
  ServiceTrace,
  TraceAlternative,
  TraceBackend,
  TraceDrop,
  TraceFrontend,
} from './trace-types.ts';

// A Service through an iptables-mode node: find its frontends by the comments kube-proxy writes on the
// KUBE-SERVICES / KUBE-NODEPORTS rules (by the chains' hash names when there are no comments), then
// walk the nat chains the way a new connection from an ordinary client would go — not from a pod of
// the cluster, not from the node itself, from an allowed source range — down to the KUBE-SEP chains
// and their DNAT. Paths only pods or the node take are kept aside as alternatives.

export interface IptablesTraceOptions {
  /** a port name or number; overrides a port given in the service reference */
  port?: string | number;
  /** tcp, udp, sctp (any case) */
  protocol?: string;
  /** the node's addresses, to print NodePort frontends as "ip:nodePort" instead of "*:nodePort" */
  nodeAddresses?: readonly string[];
}

export interface ServiceRef {
  namespace: string;
  name: string;
  /** a port name, a port number, or undefined for all ports */
  port?: string | number;
}

/** "ns/name", "ns/name:port" (a name or a number). */
export function parseServiceRef(text: string): ServiceRef | undefined {
  const m = /^([a-z0-9][-a-z0-9.]*)\/([a-z0-9][-a-z0-9.]*)(?::(.*))?$/i.exec(text.trim());
  if (!m) return undefined;
  const ref: ServiceRef = { namespace: m[1]!, name: m[2]! };
  if (m[3] !== undefined && m[3] !== '') ref.port = /^\d+$/.test(m[3]) ? Number(m[3]) : m[3];
  return ref;
}

const ENTRY_CHAINS = ['KUBE-SERVICES', 'KUBE-NODEPORTS'];
const FILTER_ENTRY_CHAINS = ['KUBE-SERVICES', 'KUBE-EXTERNAL-SERVICES', 'KUBE-NODEPORTS', 'KUBE-PROXY-FIREWALL'];
const KIND_ORDER: Record<FrontendKind, number> = { ClusterIP: 0, ExternalIP: 1, LoadBalancer: 2, NodePort: 3 };
const EPS = 1e-12;
/** TraceDrop.reason of a jump to a chain the dump does not have */
export const NOT_IN_DUMP = 'chain not in the dump';

interface Entry {
  rule: IptablesRule;
  /** "ns/name" */
  service: string;
  kind: FrontendKind;
  portName: string;
  /** the frontend's destination, undefined for a NodePort */
  ip: string | undefined;
  port: number;
  protocol: string;
  verdict: 'nat' | 'no-endpoints' | 'no-local-endpoints';
}

/** How a trace finds the rules it starts from. */
interface ServiceIndex {
  chains: ChainIndex;
  /** "ns/name" → its frontend rules, text order */
  entriesOf(service: string): Entry[];
  /** the nat rules of an entry chain for one destination (port, protocol, and the address unless a NodePort) */
  rulesTo(entryChain: string, ip: string | undefined, port: number, protocol: string): IptablesRule[];
  /** nat entry rules jumping to the per-Service chains with this hash */
  jumpsToHash(hash: string): IptablesRule[];
  /** every Service with frontend rules */
  services(): string[];
}

// full indexes, kept for the dump once listIptablesServices built one
const indexes = new WeakMap<IptablesDump, ServiceIndex>();
// "ns/name" → KUBE-SVC/SVL/SEP chains whose comments name it, for excerpts
const commentChains = new WeakMap<IptablesDump, Map<string, Map<string, string>>>();
// what listIptablesServices needs from a trace beyond its JSON
const looseEndpoints = new WeakMap<ServiceTrace, Detached['endpoints']>();

function ruleProtocol(rule: IptablesRule): string | undefined {
  if (rule.protocol && !rule.protocol.negated) return rule.protocol.value.toLowerCase();
  for (const m of rule.matches) if (m === 'tcp' || m === 'udp' || m === 'sctp') return m;
  return undefined;
}

function ruleIp(rule: IptablesRule): string | undefined {
  return rule.destination && !rule.destination.negated ? normalizeIp(stripHostPrefix(rule.destination.value)) : undefined;
}

function destinationKey(chain: string, ip: string | undefined, port: string | number | undefined, protocol: string | undefined): string {
  return `${chain}|${ip ?? '*'}|${port ?? ''}|${protocol ?? ''}`;
}

function entryOf(rule: IptablesRule): Entry | undefined {
  if (rule.comment === undefined) return undefined;
  const c = parseServiceComment(rule.comment);
  if (!c) return undefined;
  const port = Number(rule.dport?.value);
  const ip = ruleIp(rule);
  let kind: FrontendKind | undefined;
  let verdict: Entry['verdict'] = 'nat';
  switch (c.role) {
    case 'cluster-ip':
      kind = 'ClusterIP';
      break;
    case 'external-ip':
      kind = 'ExternalIP';
      break;
    case 'loadbalancer-ip':
      kind = 'LoadBalancer';
      break;
    case 'plain':
      if (rule.chain === 'KUBE-NODEPORTS') kind = 'NodePort';
      break;
    case 'no-endpoints':
    case 'no-local-endpoints':
      verdict = c.role;
      if (rule.chain === 'KUBE-NODEPORTS' || (rule.dstType?.value === 'LOCAL' && !rule.dstType.negated && !ip)) kind = 'NodePort';
      else if (rule.chain === 'KUBE-SERVICES' && ip) kind = 'ClusterIP';
      // KUBE-EXTERNAL-SERVICES does not say whether the address is an external or a load-balancer IP
      else if (ip) kind = 'ExternalIP';
      break;
  }
  if (!kind || !Number.isFinite(port)) return undefined;
  if (rule.dport?.negated) return undefined;
  return { rule, service: c.service, kind, portName: c.portName, ip: kind === 'NodePort' ? undefined : ip, port, protocol: ruleProtocol(rule) ?? 'tcp', verdict };
}

function entryRules(chains: ChainIndex, visit: (rule: IptablesRule, nat: boolean) => void): void {
  for (const chainName of ENTRY_CHAINS) for (const rule of chains.rules('nat', chainName)) visit(rule, true);
  for (const chainName of FILTER_ENTRY_CHAINS) {
    for (const rule of chains.rules('filter', chainName)) {
      // an excerpt's table-less rules were already read as nat rules
      if (rule.table !== '') visit(rule, false);
    }
  }
}

/** Everything indexed in one pass: for listing every Service, or many traces of one dump. */
function fullIndex(dump: IptablesDump): ServiceIndex {
  const cached = indexes.get(dump);
  if (cached) return cached;
  const chains = chainIndex(dump);
  const entries = new Map<string, Entry[]>();
  const byDestination = new Map<string, IptablesRule[]>();
  const byHash = new Map<string, IptablesRule[]>();
  const push = <K, V>(map: Map<K, V[]>, key: K, value: V) => {
    const list = map.get(key);
    if (list) list.push(value);
    else map.set(key, [value]);
  };
  entryRules(chains, (rule, nat) => {
    const entry = entryOf(rule);
    if (nat) {
      push(byDestination, destinationKey(rule.chain, ruleIp(rule), rule.dport?.value, ruleProtocol(rule)), rule);
      const target = rule.target ?? rule.goto;
      const hash = target === undefined ? undefined : chainHash(target);
      if (hash) push(byHash, hash, rule);
    }
    if (entry && (nat || entry.verdict !== 'nat')) push(entries, entry.service, entry);
  });
  const index: ServiceIndex = {
    chains,
    entriesOf: (service) => entries.get(service) ?? [],
    rulesTo: (chain, ip, port, protocol) => byDestination.get(destinationKey(chain, ip, port, protocol)) ?? [],
    jumpsToHash: (hash) => byHash.get(hash) ?? [],
    services: () => [...entries.keys()],
  };
  indexes.set(dump, index);
  return index;
}

/**
 * For one trace: the entry chains' texts are searched for the Service's name (its port, its chains'
 * hash) and only the rules that have it are read, instead of reading them all to index them.
 */
function scanIndex(dump: IptablesDump): ServiceIndex {
  const full = indexes.get(dump);
  if (full) return full;
  const chains = chainIndex(dump);
  const matching = (needle: string, nat: boolean | undefined) => {
    const out: { rule: IptablesRule; nat: boolean }[] = [];
    entryRules(chains, (rule, isNat) => {
      if ((nat === undefined || nat === isNat) && rule.raw.includes(needle)) out.push({ rule, nat: isNat });
    });
    return out;
  };
  return {
    chains,
    entriesOf: (service) =>
      matching(service, undefined).flatMap(({ rule, nat }) => {
        const e = entryOf(rule);
        return e && e.service === service && (nat || e.verdict !== 'nat') ? [e] : [];
      }),
    rulesTo: (chain, ip, port, protocol) => {
      const key = destinationKey(chain, ip, port, protocol);
      const find = (needle: string) =>
        matching(needle, true)
          .map((m) => m.rule)
          .filter((r) => r.chain === chain && destinationKey(r.chain, ruleIp(r), r.dport?.value, ruleProtocol(r)) === key);
      // the address is the sharper needle, when the dump spells it as we do; the port always works
      const byIp = ip === undefined ? [] : find(` ${ip}/`);
      return byIp.length > 0 ? byIp : find(`--dport ${port}`);
    },
    jumpsToHash: (hash) =>
      matching(hash, true)
        .map((m) => m.rule)
        .filter((r) => {
          const target = r.target ?? r.goto;
          return target !== undefined && chainHash(target) === hash;
        }),
    services: () => fullIndex(dump).services(),
  };
}

/** KUBE-SVC/KUBE-SVL/KUBE-SEP chains by the Service their comments name; read only when a trace needs it. */
function chainsByService(dump: IptablesDump): Map<string, Map<string, string>> {
  const cached = commentChains.get(dump);
  if (cached) return cached;
  const map = new Map<string, Map<string, string>>();
  for (const table of dump.tables) {
    if (table.name !== 'nat' && table.name !== '') continue;
    for (const chain of table.chains) {
      const c0 = chain.name;
      if (!c0.startsWith('KUBE-SVC-') && !c0.startsWith('KUBE-SVL-') && !c0.startsWith('KUBE-SEP-')) continue;
      for (const rule of chain.rules) {
        const c = rule.comment === undefined ? undefined : commentServicePort(rule.comment);
        if (!c) continue;
        let m = map.get(c.service);
        if (!m) map.set(c.service, (m = new Map()));
        if (!m.has(c0)) m.set(c0, c.portName);
        break;
      }
    }
  }
  commentChains.set(dump, map);
  return map;
}

interface Target {
  ip: string | undefined;
  port: number | undefined;
  protocol: string;
}

function portMatches(spec: string, port: number): boolean {
  const colon = spec.indexOf(':');
  if (colon < 0) return Number(spec) === port;
  const lo = colon === 0 ? 0 : Number(spec.slice(0, colon));
  const hi = colon === spec.length - 1 ? 65535 : Number(spec.slice(colon + 1));
  return port >= lo && port <= hi;
}

/** Whether the rule can match traffic to this frontend at all (address, port, protocol). */
function applies(rule: IptablesRule, t: Target): boolean {
  const proto = rule.protocol;
  if (proto && proto.value !== 'all' && (proto.value.toLowerCase() === t.protocol) === proto.negated) return false;
  if (rule.dport && t.port !== undefined && portMatches(rule.dport.value, t.port) === rule.dport.negated) return false;
  if (rule.dports && t.port !== undefined && rule.dports.values.some((v) => portMatches(v, t.port!)) === rule.dports.negated) return false;
  const d = rule.destination;
  if (d) {
    // a rule for one VIP is not about a node port on an address we do not know
    if (t.ip === undefined) return d.negated;
    const inside = cidrContains(d.value, t.ip);
    if (inside !== undefined && inside === d.negated) return false;
  }
  return true;
}

const SKIP_MODULES = new Set(['comment', 'tcp', 'udp', 'sctp', 'statistic', 'recent']);

/** The rule's conditions other than the frontend's address, port and protocol, as iptables words. */
function conditionText(rule: IptablesRule): string {
  const t = rule.tokens;
  const out: string[] = [];
  let skipModule = false;
  for (let i = 2; i < t.length; i++) {
    const tok = t[i]!;
    if (tok === '-j' || tok === '-g' || tok === '--jump' || tok === '--goto') break;
    const negated = tok === '!';
    const opt = negated ? t[i + 1] : tok;
    if (opt === undefined) break;
    if (opt === '-m' || opt === '--match') {
      const m = t[i + (negated ? 2 : 1)] ?? '';
      skipModule = SKIP_MODULES.has(m);
      if (!skipModule) out.push('-m', m);
      i += negated ? 2 : 1;
      continue;
    }
    if (opt === '-d' || opt === '--destination' || opt === '-p' || opt === '--protocol' || opt === '--dport' || opt === '--comment') {
      i += negated ? 2 : 1;
      continue;
    }
    if (skipModule && opt.startsWith('-')) {
      // an option of a skipped module, and its value if it has one
      i += negated ? 1 : 0;
      if (t[i + 1] !== undefined && !t[i + 1]!.startsWith('-') && t[i + 1] !== '!') i++;
      continue;
    }
    out.push(/\s/.test(tok) || tok === '' ? JSON.stringify(tok) : tok);
  }
  return out.length === 0 ? 'always' : out.join(' ');
}

/**
 * Whether an ordinary client's new connection meets the rule's source conditions. In a KUBE-FW chain
 * the client is taken to be inside loadBalancerSourceRanges (else nothing reaches any endpoint).
 */
function ordinaryClientMatches(rule: IptablesRule, firewall: boolean): boolean {
  if (rule.source && !rule.source.negated && !firewall) return false;
  if (rule.srcType && !rule.srcType.negated && rule.srcType.value === 'LOCAL') return false;
  return true;
}

function probability(rule: IptablesRule): number {
  const s = rule.statistic;
  if (!s) return 1;
  let p = 1;
  if (s.mode === 'random' && s.probability !== undefined && Number.isFinite(s.probability)) p = s.probability;
  else if (s.mode === 'nth' && s.every !== undefined && s.every > 0) p = 1 / s.every;
  p = Math.min(1, Math.max(0, p));
  return s.negated ? 1 - p : p;
}

const isPolicyChain = (c: string) => /^KUBE-(SVC|SVL|EXT|FW|XLB)-/.test(c);
const isDropTarget = (c: string) => c === 'KUBE-MARK-DROP' || c === 'DROP' || c === 'REJECT';

class Walk {
  readonly backends: TraceBackend[] = [];
  private readonly bySep = new Map<string, TraceBackend>();
  readonly masquerade: MasqueradeMark[] = [];
  readonly drops: TraceDrop[] = [];
  readonly alternatives: TraceAlternative[] = [];
  readonly path: string[] = [];
  readonly sourceRanges: string[] = [];
  readonly warnings: string[] = [];
  readonly visited = new Set<string>();
  affinity: { timeoutSeconds?: number } | undefined;

  constructor(
    private readonly index: ServiceIndex,
    private readonly target: Target,
    private readonly label: string,
    private readonly onMainPath: boolean,
  ) {}

  /** Walks `rules` (those of `chain`) with `share` of the traffic; answers the part that comes back. */
  chain(chain: string, rules: readonly IptablesRule[], share: number, stack: string[]): number {
    this.visited.add(chain);
    if (this.onMainPath && !this.path.includes(chain)) this.path.push(chain);
    const firewall = chain.startsWith('KUBE-FW-');
    let remaining = 1;
    let returned = 0;
    for (const rule of rules) {
      if (remaining <= EPS) break;
      if (!applies(rule, this.target)) continue;
      const target = rule.target ?? rule.goto;
      if (target === undefined) continue;
      if (target === 'KUBE-MARK-MASQ') {
        this.masquerade.push({ chain, condition: conditionText(rule), line: rule.line });
        continue;
      }
      if (rule.recent && (rule.recent.command === 'rcheck' || rule.recent.command === 'update')) {
        // only clients seen before take these; a new client goes on to the balancing rules
        this.affinity = rule.recent.seconds === undefined ? {} : { timeoutSeconds: rule.recent.seconds };
        continue;
      }
      if (!ordinaryClientMatches(rule, firewall)) {
        if (isPolicyChain(target) || target.startsWith('KUBE-SEP-')) this.alternative(rule, target, stack);
        continue;
      }
      if (firewall && rule.source && !rule.source.negated) this.sourceRanges.push(rule.source.value);
      const part = remaining * probability(rule);
      if (part <= 0) continue;
      remaining -= part;
      const come = share * part;
      if (target.startsWith('KUBE-SEP-')) {
        this.endpoint(target, come, rule);
      } else if (target === 'DNAT') {
        this.dnat(chain, rule, come);
      } else if (isDropTarget(target) || target === 'ACCEPT') {
        const drop: TraceDrop = { chain, target, share: come, line: rule.line };
        if (rule.comment !== undefined) drop.reason = rule.comment;
        this.drops.push(drop);
      } else if (target === 'RETURN') {
        returned += part;
      } else if (this.index.chains.has('nat', target)) {
        if (stack.includes(target) || stack.length > 24) {
          this.warnings.push(`${this.label}: ${chain} jumps back to ${target}: loop not followed`);
          continue;
        }
        const back = this.chain(target, this.index.chains.rules('nat', target), come, [...stack, target]);
        if (rule.goto !== undefined) returned += part * back;
        else remaining += part * back;
      } else if (isPolicyChain(target) || target.startsWith('KUBE-')) {
        if (this.onMainPath && !this.path.includes(target)) this.path.push(target);
        this.drops.push({ chain, target, share: come, reason: NOT_IN_DUMP, line: rule.line });
      } else if (target === 'MASQUERADE' || target === 'SNAT' || target === 'REDIRECT') {
        this.drops.push({ chain, target, share: come, line: rule.line });
      } else {
        // MARK, LOG, CONNMARK…: the packet goes on
        remaining += part;
      }
    }
    return Math.max(0, remaining) + returned;
  }

  private alternative(rule: IptablesRule, target: string, stack: string[]): void {
    const sub = new Walk(this.index, this.target, this.label, false);
    if (target.startsWith('KUBE-SEP-')) sub.endpoint(target, 1, rule);
    else if (!stack.includes(target)) sub.chain(target, this.index.chains.rules('nat', target), 1, [...stack, target]);
    this.alternatives.push({ condition: conditionText(rule), chain: target, backends: sub.backends });
    for (const c of sub.visited) this.visited.add(c);
  }

  endpoint(sep: string, share: number, via: IptablesRule): void {
    const known = this.bySep.get(sep);
    if (known) {
      known.share += share;
      return;
    }
    this.visited.add(sep);
    const chains = this.index.chains;
    let address: string | undefined;
    for (const r of chains.rules('nat', sep)) {
      if (r.target === 'DNAT' && r.toDestination !== undefined) address = normalizeEndpoint(r.toDestination);
      if (r.recent?.command === 'set') this.affinity ??= {};
    }
    const backend: TraceBackend = { address: address ?? '?', share, chain: sep };
    if (!chains.has('nat', sep)) {
      backend.resolved = false;
      const fromComment = via.comment === undefined ? undefined : parseServiceComment(via.comment);
      if (fromComment?.endpoint) backend.address = normalizeEndpoint(fromComment.endpoint);
      this.warnings.push(
        `${this.label}: ${sep} (${formatShare(share)}) is not in the dump: ` +
          (backend.address === '?' ? 'its DNAT address is unknown' : `address ${backend.address} taken from the rule's comment`),
      );
    } else if (address === undefined) {
      this.warnings.push(`${this.label}: ${sep} has no DNAT rule in the dump`);
    }
    this.bySep.set(sep, backend);
    this.backends.push(backend);
  }

  private dnat(chain: string, rule: IptablesRule, share: number): void {
    const address = rule.toDestination === undefined ? '?' : normalizeEndpoint(rule.toDestination);
    const key = `${chain}|${address}`;
    const known = this.bySep.get(key);
    if (known) known.share += share;
    else {
      const backend: TraceBackend = { address, share, chain };
      this.bySep.set(key, backend);
      this.backends.push(backend);
    }
  }
}

function frontendAddress(kind: FrontendKind, ip: string | undefined, port: number): string {
  return kind === 'NodePort' || ip === undefined ? `*:${port}` : joinHostPort(ip, port);
}

interface FrontendDraft {
  kind: FrontendKind;
  portName: string;
  ip: string | undefined;
  port: number;
  protocol: string;
  entryChain: string;
  line: number;
  nat: boolean;
  noEndpoints?: Entry;
  noLocalEndpoints?: Entry;
}

function draftsFromEntries(entries: readonly Entry[]): FrontendDraft[] {
  const drafts = new Map<string, FrontendDraft>();
  for (const e of entries) {
    const key = `${e.kind}|${e.ip ?? '*'}|${e.port}|${e.protocol}|${e.portName}`;
    let d = drafts.get(key);
    if (!d) {
      d = {
        kind: e.kind,
        portName: e.portName,
        ip: e.ip,
        port: e.port,
        protocol: e.protocol,
        entryChain: e.kind === 'NodePort' ? 'KUBE-NODEPORTS' : 'KUBE-SERVICES',
        line: e.rule.line,
        nat: false,
      };
      drafts.set(key, d);
    }
    if (e.verdict === 'nat') d.nat = true;
    else if (e.verdict === 'no-endpoints') d.noEndpoints ??= e;
    else d.noLocalEndpoints ??= e;
  }
  for (const d of drafts.values()) {
    // KUBE-EXTERNAL-SERVICES does not say external or load-balancer IP; another port of the Service may
    if (d.kind === 'ExternalIP' && !d.nat && [...drafts.values()].some((o) => o.kind === 'LoadBalancer' && o.ip === d.ip)) d.kind = 'LoadBalancer';
  }
  // a "no local endpoints" drop in KUBE-EXTERNAL-SERVICES belongs to the nat frontend of that address
  for (const [key, d] of drafts) {
    if (d.nat || d.noEndpoints || !d.noLocalEndpoints || d.kind === 'ClusterIP') continue;
    for (const other of drafts.values()) {
      if (other !== d && other.nat && other.kind !== 'ClusterIP' && other.ip === d.ip && other.port === d.port && other.protocol === d.protocol) {
        other.noLocalEndpoints = d.noLocalEndpoints;
        drafts.delete(key);
        break;
      }
    }
  }
  return [...drafts.values()];
}

/** Frontends of a dump without comments: entry rules that jump to the chains named after the port. */
function draftsFromHashes(index: ServiceIndex, ref: ServiceRef, protocol: string | undefined): FrontendDraft[] {
  if (typeof ref.port === 'number') return [];
  const portNames = ref.port === undefined ? [''] : [ref.port];
  const drafts: FrontendDraft[] = [];
  for (const portName of portNames) {
    for (const proto of protocol ? [protocol] : ['tcp', 'udp', 'sctp']) {
      const hash = chainHash(servicePortChainName(servicePortName(ref.namespace, ref.name, portName), proto))!;
      for (const rule of index.jumpsToHash(hash)) {
        const target = rule.target ?? rule.goto ?? '';
        const port = Number(rule.dport?.value);
        if (!Number.isFinite(port)) continue;
        const ip = ruleIp(rule);
        const kind: FrontendKind =
          rule.chain === 'KUBE-NODEPORTS' ? 'NodePort' : target.startsWith('KUBE-FW-') ? 'LoadBalancer' : target.startsWith('KUBE-EXT-') ? 'ExternalIP' : 'ClusterIP';
        if (drafts.some((d) => d.kind === kind && d.ip === ip && d.port === port && d.protocol === proto)) continue;
        drafts.push({ kind, portName, ip: kind === 'NodePort' ? undefined : ip, port, protocol: ruleProtocol(rule) ?? proto, entryChain: rule.chain, line: rule.line, nat: true });
      }
    }
  }
  return drafts;
}

function selectPort(drafts: FrontendDraft[], port: string | number | undefined): FrontendDraft[] {
  if (port === undefined) return drafts;
  if (typeof port === 'string') return drafts.filter((d) => d.portName === port);
  const names = new Set(drafts.filter((d) => d.kind !== 'NodePort' && d.port === port).map((d) => d.portName));
  if (names.size === 0) for (const d of drafts) if (d.kind === 'NodePort' && d.port === port) names.add(d.portName);
  return drafts.filter((d) => names.has(d.portName));
}

function buildFrontend(index: ServiceIndex, d: FrontendDraft, address: string, nodeIp: string | undefined, warnings: string[]): { frontend: TraceFrontend; visited: Set<string> } {
  const protocol = d.protocol.toUpperCase();
  const label = `${d.kind} ${address}/${protocol}`;
  const frontend: TraceFrontend = { kind: d.kind, address, protocol, backends: [], portName: d.portName, line: d.line };
  const visited = new Set<string>();
  if (d.nat) {
    const target: Target = { ip: d.kind === 'NodePort' ? nodeIp : d.ip, port: d.port, protocol: d.protocol };
    const walk = new Walk(index, target, label, true);
    const rules = index.rulesTo(d.entryChain, d.kind === 'NodePort' ? undefined : d.ip, d.port, d.protocol);
    const back = walk.chain(d.entryChain, rules, 1, [d.entryChain]);
    frontend.backends = walk.backends;
    frontend.path = walk.path;
    frontend.masquerade = walk.masquerade;
    frontend.policy = walk.path.some((c) => c.startsWith('KUBE-SVL-') || c.startsWith('KUBE-XLB-')) ? 'Local' : 'Cluster';
    if (walk.affinity) frontend.affinity = walk.affinity;
    if (walk.drops.length) frontend.drops = walk.drops;
    if (walk.alternatives.length) frontend.alternatives = walk.alternatives;
    if (walk.sourceRanges.length) frontend.sourceRanges = walk.sourceRanges;
    if (back > EPS) frontend.fallThrough = back;
    warnings.push(...walk.warnings);
    for (const c of walk.visited) visited.add(c);
  }
  for (const e of [d.noEndpoints, d.noLocalEndpoints]) {
    if (!e) continue;
    const drop: TraceDrop = { chain: e.rule.chain, target: e.rule.target ?? e.rule.goto ?? '?', share: d.nat ? (frontend.fallThrough ?? 0) : 1, line: e.rule.line };
    if (e.rule.comment !== undefined) drop.reason = e.rule.comment;
    (frontend.drops ??= []).push(drop);
    if (d.nat && frontend.fallThrough !== undefined) delete frontend.fallThrough;
  }
  const dropped = (frontend.drops ?? []).filter((x) => x.share > EPS || !d.nat);
  const ambiguous = d.kind === 'ExternalIP' && !d.nat && d.entryChain === 'KUBE-SERVICES' && d.noEndpoints?.rule.chain === 'KUBE-EXTERNAL-SERVICES' ? ' (an external or load-balancer IP)' : '';
  const describe = (x: TraceDrop) =>
    x.reason === NOT_IN_DUMP ? `${x.target}, which is not in the dump` : `${x.target} in ${x.chain}${x.reason ? ` ("${x.reason}")` : ''}`;
  if (frontend.backends.length === 0) {
    const why = dropped.length ? dropped.map(describe).join(', ') : 'it passes every rule without DNAT';
    warnings.push(`${label}${ambiguous}: no endpoint reached: ${why}`);
  } else {
    if (frontend.fallThrough !== undefined) {
      warnings.push(`${label}: ${formatShare(frontend.fallThrough)} of the traffic passes every rule without DNAT (a chain cut short?)`);
    }
    for (const x of dropped) warnings.push(`${label}: ${formatShare(x.share)} of the traffic goes to ${describe(x)}`);
  }
  return { frontend, visited };
}

/** Traces one Service (all its ports, or one) through an iptables-mode dump. Never throws. */
export function traceIptables(dump: IptablesDump, service: string | ServiceRef, options: IptablesTraceOptions = {}): ServiceTrace {
  return traceService(dump, service, true, options);
}

/** A dump cut down (an excerpt, a table without COMMIT) may hold chains no frontend rule leads to. */
function isPartial(dump: IptablesDump): boolean {
  return dump.tables.length === 0 || dump.tables.some((t) => t.name === '' || !t.committed);
}

function traceService(dump: IptablesDump, service: string | ServiceRef, lookForDetached: boolean, options: IptablesTraceOptions = {}): ServiceTrace {
  const ref = typeof service === 'string' ? parseServiceRef(service) : service;
  const name = typeof service === 'string' ? service.replace(/:.*$/, '') : `${service.namespace}/${service.name}`;
  const trace: ServiceTrace = { service: name, mode: 'iptables', frontends: [], warnings: [] };
  if (!ref) {
    trace.warnings.push(`"${String(service)}" is not a Service reference (namespace/name[:port])`);
    return trace;
  }
  trace.service = `${ref.namespace}/${ref.name}`;
  const port = options.port ?? ref.port;
  const protocol = options.protocol?.toLowerCase();
  const index = scanIndex(dump);
  let drafts = draftsFromEntries(index.entriesOf(trace.service));
  let byHash = false;
  if (drafts.length === 0) {
    drafts = draftsFromHashes(index, { ...ref, port }, protocol);
    byHash = drafts.length > 0;
  }
  const all = drafts;
  drafts = selectPort(drafts, port);
  if (protocol) drafts = drafts.filter((d) => d.protocol === protocol);
  drafts.sort((a, b) => KIND_ORDER[a.kind] - KIND_ORDER[b.kind] || a.line - b.line);
  if (byHash) trace.warnings.push(`no kube-proxy comment names ${trace.service}: its frontends were found by kube-proxy's chain names`);

  const reached = new Set<string>();
  const nodeIps = (options.nodeAddresses ?? []).map(normalizeIp);
  for (const d of drafts) {
    const targets = d.kind === 'NodePort' && nodeIps.length > 0 ? nodeIps : [undefined];
    for (const nodeIp of targets) {
      const address = d.kind === 'NodePort' && nodeIp !== undefined ? joinHostPort(nodeIp, d.port) : frontendAddress(d.kind, d.ip, d.port);
      const { frontend, visited } = buildFrontend(index, d, address, nodeIp, trace.warnings);
      trace.frontends.push(frontend);
      for (const c of visited) reached.add(c);
    }
  }

  // a complete dump has no chains left over (kube-proxy deletes them): the comment scan is for excerpts
  const scan = trace.frontends.length === 0 || isPartial(dump);
  const detached: Detached = lookForDetached ? detachedChains(dump, index, ref, port, protocol, reached, scan) : { chains: [], endpoints: [], warnings: [] };
  if (detached.chains.length) {
    trace.detached = detached.chains;
    for (const c of detached.chains) {
      trace.warnings.push(`${c.chain} (${servicePortName(ref.namespace, ref.name, c.portName ?? '')}) is in the dump but no frontend rule leads to it (an excerpt?)`);
    }
  }
  trace.warnings.push(...detached.warnings);
  for (const e of detached.endpoints) {
    trace.warnings.push(`${e.chain} (${servicePortName(ref.namespace, ref.name, e.portName)} → ${e.address}) is in the dump but no rule leads to it (an excerpt?)`);
  }
  looseEndpoints.set(trace, detached.endpoints);
  if (trace.frontends.length === 0) {
    if (all.length > 0) trace.warnings.push(`${trace.service} has no port ${port ?? ''}${protocol ? `/${protocol.toUpperCase()}` : ''} in the dump`);
    else trace.warnings.push(`no frontend of ${trace.service} in the dump (no KUBE-SERVICES or KUBE-NODEPORTS rule names it)`);
  }
  for (const problem of dump.problems) trace.warnings.push(problem);
  return trace;
}

interface Detached {
  chains: DetachedChain[];
  /** KUBE-SEP chains of the Service nothing in the dump leads to, with their DNAT address */
  endpoints: { chain: string; portName: string; address: string }[];
  warnings: string[];
}

function detachedChains(
  dump: IptablesDump,
  index: ServiceIndex,
  ref: ServiceRef,
  port: string | number | undefined,
  protocol: string | undefined,
  reached: Set<string>,
  scanComments: boolean,
): Detached {
  const candidates = new Map<string, string>();
  const service = `${ref.namespace}/${ref.name}`;
  if (scanComments) for (const [chain, portName] of chainsByService(dump).get(service) ?? []) candidates.set(chain, portName);
  if (typeof port !== 'number') {
    for (const portName of port === undefined ? [''] : [port]) {
      for (const proto of protocol ? [protocol] : ['tcp', 'udp', 'sctp']) {
        const chain = servicePortChainName(servicePortName(ref.namespace, ref.name, portName), proto);
        if (index.chains.has('nat', chain)) candidates.set(chain, portName);
      }
    }
  }
  const out: Detached = { chains: [], endpoints: [], warnings: [] };
  for (const [chain, portName] of candidates) {
    if (reached.has(chain)) continue;
    if (typeof port === 'string' && portName !== port) continue;
    if (chain.startsWith('KUBE-SEP-')) {
      let address = '?';
      for (const r of index.chains.rules('nat', chain)) if (r.target === 'DNAT' && r.toDestination !== undefined) address = normalizeEndpoint(r.toDestination);
      out.endpoints.push({ chain, portName, address });
      continue;
    }
    const walk = new Walk(index, { ip: undefined, port: undefined, protocol: protocol ?? '' }, chain, false);
    // no frontend, so no address or port to check rules against
    const rules = index.chains.rules('nat', chain).filter((r) => !r.destination && !r.dport);
    const back = walk.chain(chain, rules, 1, [chain]);
    for (const c of walk.visited) reached.add(c);
    out.warnings.push(...walk.warnings);
    const d: DetachedChain = { chain, portName, backends: walk.backends };
    if (back > EPS) d.fallThrough = back;
    out.chains.push(d);
  }
  // endpoints reached through a detached KUBE-SVC chain are not loose
  out.endpoints = out.endpoints.filter((e) => !reached.has(e.chain));
  return out;
}

export interface IptablesServiceSummary {
  /** "ns/name" */
  service: string;
  portName: string;
  /** TCP, UDP, SCTP; "" when only detached chains were found */
  protocol: string;
  frontends: { kind: FrontendKind; address: string }[];
  /** backend addresses, in chain order */
  endpoints: string[];
  /** the Service's rules say it has no endpoints (REJECT), or none is reached */
  noEndpoints: boolean;
  /** per-Service chains on the way (KUBE-SVC, KUBE-EXT, …) */
  chains: string[];
}

/** Every Service port the dump has rules for, sorted by name. Never throws. */
export function listIptablesServices(dump: IptablesDump): IptablesServiceSummary[] {
  const services = new Set<string>(fullIndex(dump).services());
  const partial = isPartial(dump);
  if (partial) for (const s of chainsByService(dump).keys()) services.add(s);
  const out: IptablesServiceSummary[] = [];
  for (const service of [...services].sort()) {
    const trace = traceService(dump, service, partial);
    const byPort = new Map<string, IptablesServiceSummary>();
    for (const f of trace.frontends) {
      const key = `${f.portName ?? ''}|${f.protocol}`;
      let s = byPort.get(key);
      if (!s) {
        s = { service, portName: f.portName ?? '', protocol: f.protocol, frontends: [], endpoints: [], noEndpoints: true, chains: [] };
        byPort.set(key, s);
      }
      s.frontends.push({ kind: f.kind, address: f.address });
      for (const b of f.backends) if (!s.endpoints.includes(b.address)) s.endpoints.push(b.address);
      for (const c of f.path ?? []) if (isPolicyChain(c) && !s.chains.includes(c)) s.chains.push(c);
      if (f.backends.length > 0) s.noEndpoints = false;
    }
    const detachedPort = (portName: string): IptablesServiceSummary => {
      for (const s of byPort.values()) if (s.portName === portName) return s;
      const s: IptablesServiceSummary = { service, portName, protocol: '', frontends: [], endpoints: [], noEndpoints: true, chains: [] };
      byPort.set(`${portName}|`, s);
      return s;
    };
    for (const d of trace.detached ?? []) {
      const s = detachedPort(d.portName ?? '');
      s.chains.push(d.chain);
      for (const b of d.backends) if (!s.endpoints.includes(b.address)) s.endpoints.push(b.address);
      if (d.backends.length > 0) s.noEndpoints = false;
    }
    for (const e of looseEndpoints.get(trace) ?? []) {
      const s = detachedPort(e.portName);
      if (!s.endpoints.includes(e.address)) s.endpoints.push(e.address);
      s.noEndpoints = false;
    }
    out.push(...[...byPort.values()].sort((a, b) => a.portName.localeCompare(b.portName) || a.protocol.localeCompare(b.protocol)));
  }
  return out;
}
