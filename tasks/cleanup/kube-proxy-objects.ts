import { cidrContains, normalizeIp, splitHostPort } from '../dataplane/addresses.ts';

// Which objects on a node are kube-proxy's, and of which mode, read off kube-proxy's own source
// (pkg/proxy/iptables/proxier.go, pkg/proxy/ipvs/proxier.go and ipset.go, pkg/proxy/nftables). `status`
// reports other modes' leftovers and `--cleanup-old-mode` removes them by these same rules, so what one
// calls a leftover the other removes, and nothing else.
//
// Chains kubelet owns (KUBE-FIREWALL, KUBE-MARK-DROP, KUBE-KUBELET-CANARY) and chains both iptables and
// ipvs modes write (nat KUBE-SERVICES, KUBE-POSTROUTING, KUBE-MARK-MASQ, filter KUBE-FORWARD,
// KUBE-PROXY-FIREWALL) are in none of the lists below: they are never an old mode's alone.

/** iptables mode's per-Service chains: KUBE-<kind>-<hash>, in the nat table. */
export const SERVICE_CHAIN_KINDS = ['SVC', 'SEP', 'EXT', 'SVL', 'FW', 'XLB'] as const;
export type ServiceChainKind = (typeof SERVICE_CHAIN_KINDS)[number];

const SERVICE_CHAIN = /^KUBE-(SVC|SEP|EXT|SVL|FW|XLB)-/;

/** The kind of an iptables-mode per-Service chain ("SVC" for KUBE-SVC-…), or undefined. */
export function serviceChainKind(chain: string): ServiceChainKind | undefined {
  return SERVICE_CHAIN.exec(chain)?.[1] as ServiceChainKind | undefined;
}

/**
 * Chains only iptables mode creates besides the per-Service ones (its iptablesJumpChains and the
 * canary its Monitor keeps): ipvs mode has KUBE-NODE-PORT instead of KUBE-NODEPORTS and no filter
 * KUBE-SERVICES / KUBE-EXTERNAL-SERVICES, and nftables mode uses no iptables chain at all.
 */
const IPTABLES_MODE_CHAINS: Record<string, readonly string[]> = {
  nat: ['KUBE-NODEPORTS', 'KUBE-PROXY-CANARY'],
  filter: ['KUBE-SERVICES', 'KUBE-EXTERNAL-SERVICES', 'KUBE-NODEPORTS', 'KUBE-PROXY-CANARY'],
  mangle: ['KUBE-PROXY-CANARY'],
};

/** Whether a chain of `table` exists only because kube-proxy ran in iptables mode. */
export function isIptablesModeChain(table: string, chain: string): boolean {
  return (table === 'nat' && serviceChainKind(chain) !== undefined) || (IPTABLES_MODE_CHAINS[table]?.includes(chain) ?? false);
}

/** ipvs mode's own chains (its iptablesChains minus the ones iptables mode writes too). */
const IPVS_MODE_CHAINS: Record<string, readonly string[]> = {
  nat: ['KUBE-NODE-PORT', 'KUBE-LOAD-BALANCER'],
  filter: ['KUBE-NODE-PORT', 'KUBE-SOURCE-RANGES-FIREWALL', 'KUBE-IPVS-FILTER', 'KUBE-IPVS-OUT-FILTER'],
};

export function isIpvsModeChain(table: string, chain: string): boolean {
  return IPVS_MODE_CHAINS[table]?.includes(chain) ?? false;
}

/**
 * Shared chains in which ipvs mode writes `-m set --match-set KUBE-…` rules (writeIptablesRules,
 * acceptIPVSTraffic): those rules are ipvs mode's; the rest of these chains is not.
 */
const IPVS_SET_RULE_CHAINS: Record<string, readonly string[]> = {
  nat: ['KUBE-SERVICES', 'KUBE-POSTROUTING'],
  filter: ['KUBE-PROXY-FIREWALL'],
};

export function holdsIpvsSetRules(table: string, chain: string): boolean {
  return IPVS_SET_RULE_CHAINS[table]?.includes(chain) ?? false;
}

/**
 * Every ipset name ipvs mode has used (ipset.go's ipsetInfo over the releases). IPv6 sets are the same
 * names with KUBE-6- for KUBE-, cut to ipset's 31 characters, as newIPSet / NewIPSet make them.
 * Other KUBE-* sets (kube-router's KUBE-SRC-…, KUBE-DST-…) are not kube-proxy's.
 */
const IPVS_IPSETS = [
  'KUBE-LOOP-BACK',
  'KUBE-CLUSTER-IP',
  'KUBE-EXTERNAL-IP',
  'KUBE-EXTERNAL-IP-LOCAL',
  'KUBE-LOAD-BALANCER',
  'KUBE-LOAD-BALANCER-FW',
  'KUBE-LOAD-BALANCER-LOCAL',
  'KUBE-LOAD-BALANCER-MASQ',
  'KUBE-LOAD-BALANCER-SOURCE-IP',
  'KUBE-LOAD-BALANCER-SOURCE-CIDR',
  'KUBE-NODE-PORT-TCP',
  'KUBE-NODE-PORT-LOCAL-TCP',
  'KUBE-NODE-PORT-UDP',
  'KUBE-NODE-PORT-LOCAL-UDP',
  'KUBE-NODE-PORT-SCTP',
  'KUBE-NODE-PORT-LOCAL-SCTP',
  'KUBE-NODE-PORT-SCTP-HASH',
  'KUBE-NODE-PORT-LOCAL-SCTP-HASH',
  'KUBE-HEALTH-CHECK-NODE-PORT',
  'KUBE-IPVS-IPS',
  'KUBE-CLUSTER-CIDR',
  'KUBE-MASQ-ALL',
  'KUBE-SERVICE-ACCESS',
];
const KUBE_PROXY_IPSETS = new Set(IPVS_IPSETS.flatMap((n) => [n, n.replace(/^KUBE-/, 'KUBE-6-').slice(0, 31)]));

export function isKubeProxyIpset(name: string): boolean {
  return KUBE_PROXY_IPSETS.has(name);
}

/** nftables mode's tables: `ip kube-proxy` and `ip6 kube-proxy` (never inet). */
export function isKubeProxyNftTable(family: string, name: string): boolean {
  return name === 'kube-proxy' && (family === 'ip' || family === 'ip6');
}

/** "table ip kube-proxy" (as `nft list tables` prints it) → its family and name. */
export function parseNftTableLine(line: string): { family: string; name: string } | undefined {
  const m = /^table (\S+) (\S+)$/.exec(line.trim());
  return m ? { family: m[1]!, name: m[2]! } : undefined;
}

/** What tells a Service's IPVS virtual server from anyone else's. */
export interface ServiceAddresses {
  /** ClusterIPs, external IPs, load-balancer IPs */
  serviceIPs: ReadonlySet<string>;
  nodePorts: ReadonlySet<number>;
  /** KubeProxyConfiguration ipvs.excludeCIDRs: kube-proxy leaves virtual servers there alone, and so does the cleanup */
  excludeCIDRs?: readonly string[];
}

export type VirtualServerOwner = 'service' | 'excluded' | 'foreign';

/**
 * A judge of IPVS virtual servers: a Service's (its IP is a Service IP, or its port a NodePort on one of
 * the node's addresses), one under ipvs.excludeCIDRs, or someone else's (keepalived, kube-vip, any FWM
 * service: kube-proxy never makes those). Without the node's addresses (status reads none), any address
 * with a NodePort's port counts.
 */
export function virtualServerJudge(cluster: ServiceAddresses, nodeAddresses?: readonly string[] | null): (vs: { protocol: string; address: string }) => VirtualServerOwner {
  const ips = new Set([...cluster.serviceIPs].map(normalizeIp));
  const local = nodeAddresses ? new Set(nodeAddresses.map(normalizeIp)) : undefined;
  const exclude = cluster.excludeCIDRs ?? [];
  return (vs) => {
    if (vs.protocol === 'FWM') return 'foreign';
    const { host, port } = splitHostPort(vs.address);
    const ip = normalizeIp(host);
    const nodePort = cluster.nodePorts.has(Number(port)) && (local === undefined || local.has(ip));
    if (!ips.has(ip) && !nodePort) return 'foreign';
    return exclude.some((cidr) => cidrContains(cidr, ip) === true) ? 'excluded' : 'service';
  };
}
