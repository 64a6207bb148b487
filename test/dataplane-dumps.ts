import { joinHostPort, normalizeIp } from '../tasks/dataplane/addresses.ts';
import { servicePortChainName, servicePortEndpointChainName, servicePortName } from '../tasks/dataplane/chain-names.ts';
import { kubeProxyNftChainName, type KubeProxyChainKind } from '../tasks/dataplane/nftables.ts';
import { iptablesProbability } from '../tasks/dataplane/shares.ts';

// Dumps as kube-proxy leaves them on a node, for Services described here: `iptables-save` (or
// `ip6tables-save`) in the rule shapes of kube-proxy 1.20 (masquerade jumps in KUBE-SERVICES,
// KUBE-XLB for externalTrafficPolicy Local, KUBE-FW for every load-balancer IP) and 1.28 (masquerade
// in the KUBE-SVC chain, KUBE-EXT / KUBE-SVL, KUBE-FW only with loadBalancerSourceRanges, "-> ip:port"
// comments), and `ipvsadm -Ln` / `--stats` / `-Sn` for the same Services. Chain names are kube-proxy's
// own hashes, and the rules are written in the normalised order iptables-save prints them in.

export type Protocol = 'TCP' | 'UDP' | 'SCTP';

export interface GenEndpoint {
  ip: string;
  port: number;
  /** on the node the dump is from (externalTrafficPolicy Local keeps only these) */
  local?: boolean;
}

export interface GenPort {
  /** "" for an unnamed port */
  name: string;
  port: number;
  protocol: Protocol;
  nodePort?: number;
  endpoints: GenEndpoint[];
}

export interface GenService {
  namespace: string;
  name: string;
  clusterIP: string;
  ports: GenPort[];
  externalIPs?: string[];
  loadBalancerIPs?: string[];
  loadBalancerSourceRanges?: string[];
  externalTrafficPolicy?: 'Cluster' | 'Local';
  /** sessionAffinity ClientIP with this timeout */
  affinitySeconds?: number;
}

export interface IptablesGenOptions {
  style: '1.20' | '1.28';
  family: 'ipv4' | 'ipv6';
  /** the pod CIDR kube-proxy's local detector uses ("! -s <cidr>") */
  clusterCIDR: string;
  /** iptables-save -c */
  counters?: boolean;
  /** iptables-nft-save, with its legacy-tables warning */
  nft?: boolean;
  /** decimals kube-proxy formats probabilities with */
  probabilityDigits?: number;
}

const DATE = 'Mon Jan 15 09:30:00 2024';

class Table {
  private readonly chains = new Map<string, string[]>();
  constructor(
    readonly name: string,
    private readonly builtins: string[],
  ) {
    for (const b of builtins) this.chains.set(b, []);
  }
  chain(name: string): void {
    if (!this.chains.has(name)) this.chains.set(name, []);
  }
  rule(chain: string, text: string): void {
    this.chain(chain);
    this.chains.get(chain)!.push(`-A ${chain} ${text}`);
  }
  render(counters: boolean): string[] {
    const user = [...this.chains.keys()].filter((c) => !this.builtins.includes(c)).sort();
    const order = [...this.builtins, ...user];
    const out = [`*${this.name}`];
    for (const c of this.builtins) out.push(`:${c} ACCEPT [0:0]`);
    for (const c of user) out.push(`:${c} - [0:0]`);
    let n = 0;
    for (const c of order) for (const r of this.chains.get(c)!) out.push(counters ? `[${(n * 7) % 13}:${(n++ * 7 % 13) * 60}] ${r}` : r);
    out.push('COMMIT');
    return out;
  }
}

const hostCidr = (ip: string) => (ip.includes(':') ? `${ip}/128` : `${ip}/32`);
const comment = (text: string) => `-m comment --comment "${text}"`;

/** The endpoint chains and the share rules of one policy chain, as kube-proxy writes them. */
function balance(
  nat: Table,
  chain: string,
  spn: string,
  proto: string,
  eps: GenEndpoint[],
  o: IptablesGenOptions,
  affinity: number | undefined,
  mask: string,
  commentOf: (ep: string, i: number, affinityRule: boolean) => string,
): void {
  const sep = (ep: GenEndpoint) => servicePortEndpointChainName(spn, proto, joinHostPort(ep.ip, ep.port));
  if (affinity !== undefined) {
    eps.forEach((ep, i) => {
      const s = sep(ep);
      nat.rule(chain, `${comment(commentOf(joinHostPort(ep.ip, ep.port), i, true))} -m recent --rcheck --seconds ${affinity} --reap --name ${s} --mask ${mask} --rsource -j ${s}`);
    });
  }
  eps.forEach((ep, i) => {
    const stat = i < eps.length - 1 ? ` -m statistic --mode random --probability ${iptablesProbability(eps.length - i, o.probabilityDigits)}` : '';
    nat.rule(chain, `${comment(commentOf(joinHostPort(ep.ip, ep.port), i, false))}${stat} -j ${sep(ep)}`);
  });
}

function endpointChains(nat: Table, spn: string, proto: string, eps: GenEndpoint[], affinity: number | undefined, mask: string): void {
  for (const ep of eps) {
    const address = joinHostPort(ep.ip, ep.port);
    const s = servicePortEndpointChainName(spn, proto, address);
    nat.chain(s);
    nat.rule(s, `-s ${hostCidr(ep.ip)} ${comment(spn)} -j KUBE-MARK-MASQ`);
    const recent = affinity === undefined ? '' : ` -m recent --set --name ${s} --mask ${mask} --rsource`;
    nat.rule(s, `-p ${proto} ${comment(spn)}${recent} -m ${proto} -j DNAT --to-destination ${address}`);
  }
}

/** `iptables-save` (ip6tables-save for ipv6) of a node running kube-proxy in iptables mode. */
export function kubeProxyIptablesSave(services: readonly GenService[], o: IptablesGenOptions): string {
  const v6 = o.family === 'ipv6';
  const mask = v6 ? 'ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff' : '255.255.255.255';
  const reject = `REJECT --reject-with ${v6 ? 'icmp6-port-unreachable' : 'icmp-port-unreachable'}`;
  const nat = new Table('nat', ['PREROUTING', 'INPUT', 'OUTPUT', 'POSTROUTING']);
  const filter = new Table('filter', ['INPUT', 'FORWARD', 'OUTPUT']);
  nat.rule('PREROUTING', `${comment('kubernetes service portals')} -j KUBE-SERVICES`);
  nat.rule('OUTPUT', `${comment('kubernetes service portals')} -j KUBE-SERVICES`);
  nat.rule('POSTROUTING', `${comment('kubernetes postrouting rules')} -j KUBE-POSTROUTING`);
  nat.rule('KUBE-MARK-MASQ', '-j MARK --set-xmark 0x4000/0x4000');
  nat.rule('KUBE-POSTROUTING', '-m mark ! --mark 0x4000/0x4000 -j RETURN');
  nat.rule('KUBE-POSTROUTING', '-j MARK --set-xmark 0x4000/0x0');
  nat.rule('KUBE-POSTROUTING', `${comment('kubernetes service traffic requiring SNAT')} -j MASQUERADE --random-fully`);
  nat.chain('KUBE-NODEPORTS');
  if (o.style === '1.20') nat.rule('KUBE-MARK-DROP', '-j MARK --set-xmark 0x8000/0x8000');
  filter.rule('INPUT', `-m conntrack --ctstate NEW ${comment('kubernetes externally-visible service portals')} -j KUBE-EXTERNAL-SERVICES`);
  filter.rule('FORWARD', `-m conntrack --ctstate NEW ${comment('kubernetes service portals')} -j KUBE-SERVICES`);
  filter.rule('OUTPUT', `-m conntrack --ctstate NEW ${comment('kubernetes service portals')} -j KUBE-SERVICES`);
  filter.chain('KUBE-SERVICES');
  filter.chain('KUBE-EXTERNAL-SERVICES');
  if (o.style === '1.28') filter.chain('KUBE-PROXY-FIREWALL');

  for (const svc of services) {
    for (const p of svc.ports) {
      const spn = servicePortName(svc.namespace, svc.name, p.name);
      const proto = p.protocol.toLowerCase();
      const local = svc.externalTrafficPolicy === 'Local';
      const eps = p.endpoints;
      const localEps = eps.filter((e) => e.local);
      const has = eps.length > 0;
      const svcChain = servicePortChainName(spn, proto, 'KUBE-SVC-');
      const dport = (port: number) => `-m ${proto} --dport ${port}`;
      const to = (ip: string) => `-d ${hostCidr(ip)} -p ${proto}`;
      const lbIPs = svc.loadBalancerIPs ?? [];
      const extIPs = svc.externalIPs ?? [];
      const ranges = svc.loadBalancerSourceRanges ?? [];
      if (!has) {
        filter.rule('KUBE-SERVICES', `${to(svc.clusterIP)} ${comment(`${spn} has no endpoints`)} ${dport(p.port)} -j ${reject}`);
        for (const ip of [...extIPs, ...lbIPs]) filter.rule('KUBE-EXTERNAL-SERVICES', `${to(ip)} ${comment(`${spn} has no endpoints`)} ${dport(p.port)} -j ${reject}`);
        if (p.nodePort) filter.rule('KUBE-EXTERNAL-SERVICES', `-p ${proto} ${comment(`${spn} has no endpoints`)} -m addrtype --dst-type LOCAL ${dport(p.nodePort)} -j ${reject}`);
        continue;
      }
      if (o.style === '1.20') {
        const xlb = servicePortChainName(spn, proto, 'KUBE-XLB-');
        const fw = servicePortChainName(spn, proto, 'KUBE-FW-');
        const cip = `${comment(`${spn} cluster IP`)} ${dport(p.port)}`;
        nat.rule('KUBE-SERVICES', `! -s ${o.clusterCIDR} ${to(svc.clusterIP)} ${cip} -j KUBE-MARK-MASQ`);
        nat.rule('KUBE-SERVICES', `${to(svc.clusterIP)} ${cip} -j ${svcChain}`);
        for (const ip of extIPs) {
          const eip = `${comment(`${spn} external IP`)} ${dport(p.port)}`;
          if (!local) nat.rule('KUBE-SERVICES', `! -s ${o.clusterCIDR} ${to(ip)} ${eip} -j KUBE-MARK-MASQ`);
          nat.rule('KUBE-SERVICES', `${to(ip)} ${eip} -j ${local ? xlb : svcChain}`);
        }
        for (const ip of lbIPs) {
          nat.rule('KUBE-SERVICES', `${to(ip)} ${comment(`${spn} loadbalancer IP`)} ${dport(p.port)} -j ${fw}`);
        }
        if (lbIPs.length) {
          const c = comment(`${spn} loadbalancer IP`);
          if (!local) nat.rule(fw, `${c} -j KUBE-MARK-MASQ`);
          const chosen = local ? xlb : svcChain;
          if (ranges.length === 0) nat.rule(fw, `${c} -j ${chosen}`);
          for (const r of ranges) nat.rule(fw, `-s ${r} ${c} -j ${chosen}`);
          nat.rule(fw, `${c} -j KUBE-MARK-DROP`);
        }
        if (p.nodePort) {
          const np = `-p ${proto} ${comment(spn)} ${dport(p.nodePort)}`;
          if (!local) {
            nat.rule('KUBE-NODEPORTS', `${np} -j KUBE-MARK-MASQ`);
            nat.rule('KUBE-NODEPORTS', `${np} -j ${svcChain}`);
          } else {
            nat.rule('KUBE-NODEPORTS', `-s ${v6 ? '::1/128' : '127.0.0.0/8'} ${np} -j KUBE-MARK-MASQ`);
            nat.rule('KUBE-NODEPORTS', `${np} -j ${xlb}`);
          }
        }
        endpointChains(nat, spn, proto, eps, svc.affinitySeconds, mask);
        nat.chain(svcChain);
        balance(nat, svcChain, spn, proto, eps, o, svc.affinitySeconds, mask, () => spn);
        if (local && (p.nodePort || extIPs.length || lbIPs.length)) {
          nat.rule(xlb, `-s ${o.clusterCIDR} ${comment('Redirect pods trying to reach external loadbalancer VIP to clusterIP')} -j ${svcChain}`);
          nat.rule(xlb, `${comment(`masquerade LOCAL traffic for ${spn} LB IP`)} -m addrtype --src-type LOCAL -j KUBE-MARK-MASQ`);
          nat.rule(xlb, `${comment(`route LOCAL traffic for ${spn} LB IP to service chain`)} -m addrtype --src-type LOCAL -j ${svcChain}`);
          if (localEps.length === 0) nat.rule(xlb, `${comment(`${spn} has no local endpoints`)} -j KUBE-MARK-DROP`);
          else balance(nat, xlb, spn, proto, localEps, o, svc.affinitySeconds, mask, (_ep, i, affinityRule) => (affinityRule ? spn : `Balancing rule ${i} for ${spn}`));
        }
        continue;
      }
      // 1.28
      const ext = servicePortChainName(spn, proto, 'KUBE-EXT-');
      const svl = servicePortChainName(spn, proto, 'KUBE-SVL-');
      const fw = servicePortChainName(spn, proto, 'KUBE-FW-');
      const externally = extIPs.length > 0 || lbIPs.length > 0 || p.nodePort !== undefined;
      const hasExternal = !local || localEps.length > 0;
      const usesFw = lbIPs.length > 0 && ranges.length > 0;
      nat.rule('KUBE-SERVICES', `${to(svc.clusterIP)} ${comment(`${spn} cluster IP`)} ${dport(p.port)} -j ${svcChain}`);
      for (const ip of extIPs) nat.rule('KUBE-SERVICES', `${to(ip)} ${comment(`${spn} external IP`)} ${dport(p.port)} -j ${ext}`);
      for (const ip of lbIPs) {
        nat.rule('KUBE-SERVICES', `${to(ip)} ${comment(`${spn} loadbalancer IP`)} ${dport(p.port)} -j ${usesFw ? fw : ext}`);
        if (usesFw) filter.rule('KUBE-PROXY-FIREWALL', `${to(ip)} ${comment(`${spn} traffic not accepted by ${fw}`)} ${dport(p.port)} -j DROP`);
      }
      if (p.nodePort) nat.rule('KUBE-NODEPORTS', `-p ${proto} ${comment(spn)} ${dport(p.nodePort)} -j ${ext}`);
      if (!hasExternal) {
        const c = comment(`${spn} has no local endpoints`);
        for (const ip of [...extIPs, ...lbIPs]) filter.rule('KUBE-EXTERNAL-SERVICES', `${to(ip)} ${c} ${dport(p.port)} -j DROP`);
        if (p.nodePort) filter.rule('KUBE-EXTERNAL-SERVICES', `-p ${proto} ${c} -m addrtype --dst-type LOCAL ${dport(p.nodePort)} -j DROP`);
      }
      nat.chain(svcChain);
      nat.rule(svcChain, `! -s ${o.clusterCIDR} ${to(svc.clusterIP)} ${comment(`${spn} cluster IP`)} ${dport(p.port)} -j KUBE-MARK-MASQ`);
      if (externally) {
        nat.chain(ext);
        if (!local) {
          nat.rule(ext, `${comment(`masquerade traffic for ${spn} external destinations`)} -j KUBE-MARK-MASQ`);
        } else {
          nat.rule(ext, `-s ${o.clusterCIDR} ${comment(`pod traffic for ${spn} external destinations`)} -j ${svcChain}`);
          nat.rule(ext, `${comment(`masquerade LOCAL traffic for ${spn} external destinations`)} -m addrtype --src-type LOCAL -j KUBE-MARK-MASQ`);
          nat.rule(ext, `${comment(`route LOCAL traffic for ${spn} external destinations`)} -m addrtype --src-type LOCAL -j ${svcChain}`);
        }
        if (hasExternal) nat.rule(ext, `-j ${local ? svl : svcChain}`);
      }
      if (usesFw) {
        for (const r of ranges) nat.rule(fw, `-s ${r} ${comment(`${spn} loadbalancer IP`)} -j ${ext}`);
        nat.rule(fw, comment(`other traffic to ${spn} will be dropped by KUBE-PROXY-FIREWALL`));
      }
      const arrow = (ep: string) => `${spn} -> ${ep}`;
      balance(nat, svcChain, spn, proto, eps, o, svc.affinitySeconds, mask, arrow);
      if (local && externally && localEps.length > 0) {
        nat.chain(svl);
        balance(nat, svl, spn, proto, localEps, o, svc.affinitySeconds, mask, arrow);
      }
      endpointChains(nat, spn, proto, eps, svc.affinitySeconds, mask);
    }
  }
  nat.rule('KUBE-SERVICES', `${comment('kubernetes service nodeports; NOTE: this must be the last rule in this chain')} -m addrtype --dst-type LOCAL -j KUBE-NODEPORTS`);

  const tool = `${v6 ? 'ip6tables' : 'iptables'}${o.nft ? '-nft' : ''}-save`;
  const lines: string[] = [];
  for (const t of [filter, nat]) {
    lines.push(`# Generated by ${tool} v1.8.7 on ${DATE}`);
    for (const l of t.render(o.counters ?? false)) lines.push(l);
    lines.push(`# Completed on ${DATE}`);
  }
  if (o.nft) lines.push('# Warning: iptables-legacy tables present, use iptables-legacy-save to see them');
  return lines.join('\n') + '\n';
}

export interface IpvsGenOptions {
  /** where kube-proxy opens NodePorts */
  nodeAddresses: string[];
  scheduler?: string;
  /** older ipvsadm pads the last column */
  trailingSpaces?: boolean;
  format?: 'list' | 'stats' | 'save';
}

interface VirtualService {
  protocol: Protocol;
  address: string;
  endpoints: GenEndpoint[];
  persistent?: number;
}

function virtualServices(services: readonly GenService[], o: IpvsGenOptions): VirtualService[] {
  const out: VirtualService[] = [];
  for (const svc of services) {
    for (const p of svc.ports) {
      const all = p.endpoints;
      const external = svc.externalTrafficPolicy === 'Local' ? all.filter((e) => e.local) : all;
      const vs = (ip: string, port: number, endpoints: GenEndpoint[]) => {
        const v: VirtualService = { protocol: p.protocol, address: joinHostPort(ip, port), endpoints };
        if (svc.affinitySeconds !== undefined) v.persistent = svc.affinitySeconds;
        out.push(v);
      };
      vs(svc.clusterIP, p.port, all);
      for (const ip of svc.externalIPs ?? []) vs(ip, p.port, external);
      for (const ip of svc.loadBalancerIPs ?? []) vs(ip, p.port, external);
      if (p.nodePort) for (const ip of o.nodeAddresses) vs(ip, p.nodePort, external);
    }
  }
  return out;
}

/** `ipvsadm -Ln` (or --stats, or -Sn) of a node running kube-proxy in IPVS mode. */
export function kubeProxyIpvsadm(services: readonly GenService[], o: IpvsGenOptions): string {
  const sched = o.scheduler ?? 'rr';
  const format = o.format ?? 'list';
  const lines: string[] = [];
  const vss = virtualServices(services, o);
  if (format === 'save') {
    const flag: Record<Protocol, string> = { TCP: '-t', UDP: '-u', SCTP: '--sctp-service' };
    for (const v of vss) {
      lines.push(`-A ${flag[v.protocol]} ${v.address} -s ${sched}${v.persistent !== undefined ? ` -p ${v.persistent}` : ''}`);
      for (const e of v.endpoints) lines.push(`-a ${flag[v.protocol]} ${v.address} -r ${joinHostPort(e.ip, e.port)} -m -w 1`);
    }
    return lines.join('\n') + '\n';
  }
  lines.push('IP Virtual Server version 1.2.1 (size=4096)');
  if (format === 'stats') {
    lines.push(`${'Prot LocalAddress:Port'.padEnd(33)} ${['Conns', 'InPkts', 'OutPkts', 'InBytes', 'OutBytes'].map((c) => c.padStart(8)).join(' ')}`);
    lines.push('  -> RemoteAddress:Port');
  } else {
    lines.push('Prot LocalAddress:Port Scheduler Flags');
    lines.push('  -> RemoteAddress:Port           Forward Weight ActiveConn InActConn');
  }
  let n = 0;
  for (const v of vss) {
    const name = `${v.protocol}  ${v.address}`;
    if (format === 'stats') {
      const nums = [n * 3, n * 21, n * 14, n * 1500, n * 2100].map((x) => String(x).padStart(9)).join('');
      lines.push(name.padEnd(33) + nums);
    } else {
      lines.push(`${name} ${sched}${v.persistent !== undefined ? ` persistent ${v.persistent}` : ''}`);
    }
    for (const e of v.endpoints) {
      const rs = `  -> ${joinHostPort(e.ip, e.port).padEnd(28)}`;
      if (format === 'stats') lines.push(rs + [1, 6, 4, 300, 420].map((x) => String(x).padStart(9)).join(''));
      else {
        const inact = o.trailingSpaces ? '0'.padEnd(10) : '0';
        lines.push(`${rs} ${'Masq'.padEnd(7)} ${'1'.padEnd(6)} ${'0'.padEnd(10)} ${inact}`);
      }
    }
    n++;
  }
  return lines.join('\n') + '\n';
}

/**
 * The iptables rules kube-proxy 1.28-1.31 writes in ipvs mode (writeIptablesRules, iptablesJumpChain), with no
 * Service in them (those live in its ipsets): what an ipvs node's iptables-save shows, per family.
 */
export function kubeProxyIpvsModeIptablesSave(family: 'ipv4' | 'ipv6'): string {
  const v6 = family === 'ipv6';
  const s = (name: string) => (v6 ? name.replace(/^KUBE-/, 'KUBE-6-') : name);
  const lo = v6 ? '::1/128' : '127.0.0.0/8';
  const pods = v6 ? 'fd00:10:244::/56' : '10.244.0.0/16';
  const reject = v6 ? 'icmp6-port-unreachable' : 'icmp-port-unreachable';
  return `*nat
:PREROUTING ACCEPT [0:0]
:INPUT ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
:KUBE-LOAD-BALANCER - [0:0]
:KUBE-MARK-MASQ - [0:0]
:KUBE-NODE-PORT - [0:0]
:KUBE-POSTROUTING - [0:0]
:KUBE-SERVICES - [0:0]
-A PREROUTING -m comment --comment "kubernetes service portals" -j KUBE-SERVICES
-A OUTPUT -m comment --comment "kubernetes service portals" -j KUBE-SERVICES
-A POSTROUTING -m comment --comment "kubernetes postrouting rules" -j KUBE-POSTROUTING
-A KUBE-LOAD-BALANCER -j KUBE-MARK-MASQ
-A KUBE-MARK-MASQ -j MARK --or-mark 0x4000
-A KUBE-NODE-PORT -p tcp -m comment --comment "Kubernetes nodeport TCP port for masquerade purpose" -m set --match-set ${s('KUBE-NODE-PORT-TCP')} dst -j KUBE-MARK-MASQ
-A KUBE-POSTROUTING -m comment --comment "Kubernetes endpoints dst ip:port, source ip for solving hairpin purpose" -m set --match-set ${s('KUBE-LOOP-BACK')} dst,dst,src -j MASQUERADE
-A KUBE-POSTROUTING -m mark ! --mark 0x4000/0x4000 -j RETURN
-A KUBE-POSTROUTING -j MARK --xor-mark 0x4000
-A KUBE-POSTROUTING -m comment --comment "kubernetes service traffic requiring SNAT" -j MASQUERADE --random-fully
-A KUBE-SERVICES -s ${lo} -j RETURN
-A KUBE-SERVICES -m comment --comment "Kubernetes service lb portal" -m set --match-set ${s('KUBE-LOAD-BALANCER')} dst,dst -j KUBE-LOAD-BALANCER
-A KUBE-SERVICES ! -s ${pods} -m comment --comment "Kubernetes service cluster ip + port for masquerade purpose" -m set --match-set ${s('KUBE-CLUSTER-IP')} dst,dst -j KUBE-MARK-MASQ
-A KUBE-SERVICES -m comment --comment "Kubernetes service external ip + port for masquerade and filter purpose" -m set --match-set ${s('KUBE-EXTERNAL-IP')} dst,dst -j KUBE-MARK-MASQ
-A KUBE-SERVICES -m addrtype --dst-type LOCAL -j KUBE-NODE-PORT
-A KUBE-SERVICES -m set --match-set ${s('KUBE-CLUSTER-IP')} dst,dst -j ACCEPT
-A KUBE-SERVICES -m set --match-set ${s('KUBE-LOAD-BALANCER')} dst,dst -j ACCEPT
COMMIT
*filter
:INPUT ACCEPT [0:0]
:FORWARD ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:KUBE-FORWARD - [0:0]
:KUBE-IPVS-FILTER - [0:0]
:KUBE-IPVS-OUT-FILTER - [0:0]
:KUBE-NODE-PORT - [0:0]
:KUBE-PROXY-FIREWALL - [0:0]
:KUBE-SOURCE-RANGES-FIREWALL - [0:0]
-A INPUT -m comment --comment "kubernetes ipvs access filter" -j KUBE-IPVS-FILTER
-A INPUT -m comment --comment "kube-proxy firewall rules" -j KUBE-PROXY-FIREWALL
-A INPUT -m comment --comment "kubernetes health check rules" -j KUBE-NODE-PORT
-A FORWARD -m comment --comment "kube-proxy firewall rules" -j KUBE-PROXY-FIREWALL
-A FORWARD -m comment --comment "kubernetes forwarding rules" -j KUBE-FORWARD
-A OUTPUT -m comment --comment "kubernetes ipvs access filter" -j KUBE-IPVS-OUT-FILTER
-A KUBE-FORWARD -m comment --comment "kubernetes forwarding rules" -m mark --mark 0x4000/0x4000 -j ACCEPT
-A KUBE-FORWARD -m comment --comment "kubernetes forwarding conntrack rule" -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
-A KUBE-IPVS-FILTER -m set --match-set ${s('KUBE-LOAD-BALANCER')} dst,dst -j RETURN
-A KUBE-IPVS-FILTER -m set --match-set ${s('KUBE-CLUSTER-IP')} dst,dst -j RETURN
-A KUBE-IPVS-FILTER -m set --match-set ${s('KUBE-EXTERNAL-IP')} dst,dst -j RETURN
-A KUBE-IPVS-FILTER -m set --match-set ${s('KUBE-HEALTH-CHECK-NODE-PORT')} dst -j RETURN
-A KUBE-IPVS-FILTER -m conntrack --ctstate NEW -m set --match-set ${s('KUBE-IPVS-IPS')} dst -j REJECT --reject-with ${reject}
-A KUBE-NODE-PORT -m comment --comment "Kubernetes health check node port" -m set --match-set ${s('KUBE-HEALTH-CHECK-NODE-PORT')} dst -j ACCEPT
-A KUBE-PROXY-FIREWALL -m comment --comment "Kubernetes service load balancer ip + port for load balancer with sourceRange" -m set --match-set ${s('KUBE-LOAD-BALANCER-FW')} dst,dst -j KUBE-SOURCE-RANGES-FIREWALL
-A KUBE-SOURCE-RANGES-FIREWALL -j DROP
COMMIT
`;
}

export interface NftablesGenOptions {
  family: 'ipv4' | 'ipv6';
  /** kube-proxy's nodePortAddresses as the node's addresses (the nodeport-ips set); default every local address */
  nodeAddresses?: string[];
  /** the pod CIDR of kube-proxy's local detector; default 10.244.0.0/16 (fd00:10:244::/64) */
  clusterCIDR?: string;
}

/** A duration as nft prints it: 10800 → "3h", 90 → "1m30s". */
function nftDuration(seconds: number): string {
  const parts: [number, string][] = [
    [Math.floor(seconds / 86400), 'd'],
    [Math.floor((seconds % 86400) / 3600), 'h'],
    [Math.floor((seconds % 3600) / 60), 'm'],
    [seconds % 60, 's'],
  ];
  const text = parts.filter(([n]) => n > 0).map(([n, u]) => `${n}${u}`).join('');
  return text === '' ? '0s' : text;
}

/**
 * `nft list table ip kube-proxy` (ip6 for ipv6: only the Services of that family) of a node running
 * kube-proxy 1.31+ in nftables mode, in the layout nft prints: loaded with `nft -f` (after
 * `table ip kube-proxy` / `delete table ip kube-proxy` lines, to replace a table that is there), it
 * lists back the same, but for whitespace and the order of map and set elements.
 */
export function kubeProxyNftables(services: readonly GenService[], o: NftablesGenOptions): string {
  const v6 = o.family === 'ipv6';
  const ipX = v6 ? 'ip6' : 'ip';
  const addrType = v6 ? 'ipv6_addr' : 'ipv4_addr';
  const cidr = o.clusterCIDR ?? (v6 ? 'fd00:10:244::/64' : '10.244.0.0/16');
  const noLocalhost = v6 ? 'ip6 daddr != ::1' : 'ip daddr != 127.0.0.0/8';
  const mine = services.filter((s) => s.clusterIP.includes(':') === v6);
  const nodeIPs = (o.nodeAddresses ?? []).filter((a) => a.includes(':') === v6).map(normalizeIp);
  const mark = '0x00004000';

  interface Container {
    kind: 'set' | 'map';
    name: string;
    lines: string[];
    elements: string[];
  }
  const containers: Container[] = [];
  const container = (kind: 'set' | 'map', name: string, ...lines: string[]) => {
    const c: Container = { kind, name, lines, elements: [] };
    containers.push(c);
    return c;
  };
  const clusterIPs = container('set', 'cluster-ips', `type ${addrType}`, 'comment "Active ClusterIPs"');
  const nodePortIPs = nodeIPs.length ? container('set', 'nodeport-ips', `type ${addrType}`, 'comment "IPs that accept NodePort traffic"') : undefined;
  if (nodePortIPs) nodePortIPs.elements.push(...nodeIPs);
  const noEndpointServices = container('map', 'no-endpoint-services', `type ${addrType} . inet_proto . inet_service : verdict`, 'comment "vmap to drop or reject packets to services with no endpoints"');
  const noEndpointNodePorts = container('map', 'no-endpoint-nodeports', 'type inet_proto . inet_service : verdict', 'comment "vmap to drop or reject packets to service nodeports with no endpoints"');
  const firewallIPs = container('map', 'firewall-ips', `type ${addrType} . inet_proto . inet_service : verdict`, 'comment "destinations that are subject to LoadBalancerSourceRanges"');
  const serviceIPs = container('map', 'service-ips', `type ${addrType} . inet_proto . inet_service : verdict`, 'comment "ClusterIP, ExternalIP and LoadBalancer IP traffic"');
  const serviceNodePorts = container('map', 'service-nodeports', 'type inet_proto . inet_service : verdict', 'comment "NodePort traffic"');

  const chains: { name: string; lines: string[] }[] = [];
  const chain = (name: string, ...lines: string[]) => chains.push({ name, lines });
  const nodePortMatch = nodePortIPs ? `${ipX} daddr @nodeport-ips` : `fib daddr type local ${noLocalhost}`;
  chain('filter-prerouting', 'type filter hook prerouting priority dstnat - 10; policy accept;', 'ct state new jump firewall-check');
  chain('filter-input', 'type filter hook input priority -110; policy accept;', 'ct state new jump nodeport-endpoints-check', 'ct state new jump service-endpoints-check');
  chain('filter-forward', 'type filter hook forward priority -110; policy accept;', 'ct state new jump service-endpoints-check', 'ct state new jump cluster-ips-check');
  chain('filter-output', 'type filter hook output priority -110; policy accept;', 'ct state new jump service-endpoints-check', 'ct state new jump firewall-check');
  chain('filter-output-post-dnat', 'type filter hook output priority -90; policy accept;', 'ct state new jump cluster-ips-check');
  chain('nat-output', 'type nat hook output priority -100; policy accept;', 'jump services');
  chain('nat-postrouting', 'type nat hook postrouting priority srcnat; policy accept;', 'jump masquerading');
  chain('nat-prerouting', 'type nat hook prerouting priority dstnat; policy accept;', 'jump services');
  chain('nodeport-endpoints-check', `${nodePortIPs ? `${ipX} daddr @nodeport-ips` : noLocalhost} meta l4proto . th dport vmap @no-endpoint-nodeports`);
  chain('service-endpoints-check', `${ipX} daddr . meta l4proto . th dport vmap @no-endpoint-services`);
  chain('firewall-check', `${ipX} daddr . meta l4proto . th dport vmap @firewall-ips`);
  chain('services', `${ipX} daddr . meta l4proto . th dport vmap @service-ips`, `${nodePortMatch} meta l4proto . th dport vmap @service-nodeports`);
  chain('masquerading', `meta mark & ${mark} == 0x00000000 return`, `meta mark set meta mark ^ ${mark}`, 'masquerade fully-random');
  chain('cluster-ips-check', `${ipX} daddr @cluster-ips reject comment "Reject traffic to invalid ports of ClusterIPs"`);
  chain('mark-for-masquerade', `meta mark set meta mark | ${mark}`);
  chain('reject-chain', 'comment "helper for @no-endpoint-services / @no-endpoint-nodeports"', 'reject');

  for (const svc of mine) {
    const clusterIP = normalizeIp(svc.clusterIP);
    clusterIPs.elements.push(clusterIP);
    for (const p of svc.ports) {
      const proto = p.protocol.toLowerCase();
      const spn = servicePortName(svc.namespace, svc.name, p.name);
      const name = (kind: KubeProxyChainKind, ep?: GenEndpoint) =>
        kubeProxyNftChainName(kind, svc.namespace, svc.name, proto, p.name, ep ? joinHostPort(normalizeIp(ep.ip), ep.port) : undefined);
      const local = svc.externalTrafficPolicy === 'Local';
      const eps = p.endpoints;
      const localEps = eps.filter((e) => e.local);
      const hasEndpoints = eps.length > 0;
      const externally = p.nodePort !== undefined || (svc.externalIPs ?? []).length > 0 || (svc.loadBalancerIPs ?? []).length > 0;
      const hasExternal = hasEndpoints && (!local || localEps.length > 0);
      const usesLocal = local && externally && localEps.length > 0;
      const key = (ip: string, port: number) => `${normalizeIp(ip)} . ${proto} . ${port}`;
      const externalVerdict = hasEndpoints ? 'drop' : 'goto reject-chain';
      if (hasEndpoints) serviceIPs.elements.push(`${key(clusterIP, p.port)} : goto ${name('service')}`);
      else noEndpointServices.elements.push(`${key(clusterIP, p.port)} comment "${spn}" : goto reject-chain`);
      for (const ip of [...(svc.externalIPs ?? []), ...(svc.loadBalancerIPs ?? [])]) {
        if (hasEndpoints) serviceIPs.elements.push(`${key(ip, p.port)} : goto ${name('external')}`);
        if (!hasExternal) noEndpointServices.elements.push(`${key(ip, p.port)} comment "${spn}" : ${externalVerdict}`);
      }
      const ranges = svc.loadBalancerSourceRanges ?? [];
      const usesFirewall = (svc.loadBalancerIPs ?? []).length > 0 && ranges.length > 0;
      if (usesFirewall) for (const ip of svc.loadBalancerIPs!) firewallIPs.elements.push(`${key(ip, p.port)} : goto ${name('firewall')}`);
      if (p.nodePort !== undefined) {
        if (hasEndpoints) serviceNodePorts.elements.push(`${proto} . ${p.nodePort} : goto ${name('external')}`);
        if (!hasExternal) noEndpointNodePorts.elements.push(`${proto} . ${p.nodePort} comment "${spn}" : ${externalVerdict}`);
      }
      if (!hasEndpoints) continue;

      const affinity = svc.affinitySeconds;
      if (affinity !== undefined) {
        for (const ep of eps) container('set', name('affinity', ep), `type ${addrType}`, 'size 65535', 'flags dynamic,timeout', `timeout ${nftDuration(affinity)}`);
      }
      const balance = (list: GenEndpoint[]) => {
        const lines = affinity === undefined ? [] : list.map((ep) => `${ipX} saddr @${name('affinity', ep)} goto ${name('endpoint', ep)}`);
        lines.push(`numgen random mod ${list.length} vmap { ${list.map((ep, i) => `${i} : goto ${name('endpoint', ep)}`).join(', ')} }`);
        return lines;
      };
      for (const ep of eps) {
        const ip = normalizeIp(ep.ip);
        const lines = [`${ipX} saddr ${ip} jump mark-for-masquerade`];
        if (affinity !== undefined) lines.push(`update @${name('affinity', ep)} { ${ipX} saddr }`);
        lines.push(`meta l4proto ${proto} dnat to ${joinHostPort(ip, ep.port)}`);
        chain(name('endpoint', ep), ...lines);
      }
      chain(name('service'), `${ipX} daddr ${clusterIP} ${proto} dport ${p.port} ${ipX} saddr != ${cidr} jump mark-for-masquerade`, ...balance(eps));
      if (usesLocal) chain(name('local'), ...balance(localEps));
      if (externally) {
        const ext: string[] = [];
        if (!local) ext.push('jump mark-for-masquerade');
        else {
          ext.push(`${ipX} saddr ${cidr} goto ${name('service')} comment "short-circuit pod traffic"`);
          ext.push('fib saddr type local jump mark-for-masquerade comment "masquerade local traffic"');
          ext.push(`fib saddr type local goto ${name('service')} comment "short-circuit local traffic"`);
        }
        if (hasExternal) ext.push(`goto ${name(local ? 'local' : 'service')}`);
        chain(name('external'), ...ext);
      }
      if (usesFirewall) chain(name('firewall'), `${ipX} saddr != { ${ranges.join(', ')} } drop`);
    }
  }

  const blocks: string[] = [];
  for (const c of containers) {
    const lines = [`\t${c.kind} ${c.name} {`, ...c.lines.map((l) => `\t\t${l}`)];
    if (c.elements.length) lines.push(`\t\telements = { ${c.elements.join(',\n\t\t\t     ')} }`);
    lines.push('\t}');
    blocks.push(lines.join('\n'));
  }
  for (const c of chains) blocks.push([`\tchain ${c.name} {`, ...c.lines.map((l) => `\t\t${l}`), '\t}'].join('\n'));
  return `table ${ipX} kube-proxy {\n\tcomment "rules for kube-proxy"\n${blocks.join('\n\n')}\n}\n`;
}

/** The addresses of the frontends kube-proxy makes for a Service port, as traces print them. */
export function expectedFrontends(svc: GenService, port: GenPort, nodeAddress = '*'): { kind: string; address: string; protocol: Protocol }[] {
  const out = [{ kind: 'ClusterIP', address: joinHostPort(svc.clusterIP, port.port), protocol: port.protocol }];
  for (const ip of svc.externalIPs ?? []) out.push({ kind: 'ExternalIP', address: joinHostPort(ip, port.port), protocol: port.protocol });
  for (const ip of svc.loadBalancerIPs ?? []) out.push({ kind: 'LoadBalancer', address: joinHostPort(ip, port.port), protocol: port.protocol });
  if (port.nodePort) out.push({ kind: 'NodePort', address: nodeAddress === '*' ? `*:${port.nodePort}` : joinHostPort(nodeAddress, port.nodePort), protocol: port.protocol });
  return out;
}

/**
 * `count` Services with `endpoints` endpoints each (one port, TCP 80 → 8080), a NodePort on every
 * fourth. Deterministic: the same arguments give the same Services.
 */
export function manyServices(count: number, endpoints = 3, family: 'ipv4' | 'ipv6' = 'ipv4'): GenService[] {
  const out: GenService[] = [];
  const v4 = (base: number, i: number) => `${base}.${(i >> 16) & 255}.${(i >> 8) & 255}.${i & 255}`;
  for (let i = 0; i < count; i++) {
    const clusterIP = family === 'ipv4' ? v4(10, 0x600000 + i) : `fd00:10:96::${(i + 1).toString(16)}`;
    const eps: GenEndpoint[] = [];
    for (let e = 0; e < endpoints; e++) {
      const k = i * endpoints + e;
      eps.push({ ip: family === 'ipv4' ? v4(10, 0xf40000 + k) : `fd00:10:244::${(k + 1).toString(16)}`, port: 8080, local: e === 0 });
    }
    const port: GenPort = { name: 'http', port: 80, protocol: 'TCP', endpoints: eps };
    if (i % 4 === 0) port.nodePort = 30000 + i / 4;
    out.push({ namespace: `team-${i % 50}`, name: `app-${i}`, clusterIP, ports: [port] });
  }
  return out;
}
