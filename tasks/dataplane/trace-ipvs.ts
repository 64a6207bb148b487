import { joinHostPort, normalizeIp } from './addresses.ts';
import type { IpvsService, IpvsTable } from './ipvsadm.ts';
import { ipvsShares } from './shares.ts';
import type { FrontendKind, ServiceTrace, TraceBackend, TraceFrontend } from './trace-types.ts';

// A Service through an IPVS-mode node: kube-proxy makes one virtual service per frontend address
// (ClusterIP, each external and load-balancer IP, each node address for a NodePort) with the ready
// endpoints as real servers. IPVS itself knows nothing of Services, so the caller says which
// addresses belong to the Service (from the API, or typed in).

export interface IpvsTraceQuery {
  /** "ns/name", for the report */
  service: string;
  /** TCP (default), UDP, SCTP */
  protocol?: string;
  /** one address, or both of a dual-stack Service */
  clusterIP?: string | readonly string[];
  /** the Service port */
  port?: number;
  /** the Service port's name, copied to the frontends so that compareWithEndpoints pairs them with their endpoints */
  portName?: string;
  nodePort?: number;
  /** where to expect the NodePort; without them, every virtual service on nodePort counts */
  nodeAddresses?: readonly string[];
  externalIPs?: readonly string[];
  loadBalancerIPs?: readonly string[];
  /** only this ">>> …" section of a multi-node listing */
  node?: string;
}

const list = (v: string | readonly string[] | undefined): string[] => (v === undefined ? [] : typeof v === 'string' ? [v] : [...v]);

function frontend(kind: FrontendKind, svc: IpvsService, protocol: string, portName: string | undefined, warnings: string[]): TraceFrontend {
  const weights = svc.realServers.map((r) => r.weight);
  const shares = ipvsShares(svc.scheduler, weights);
  const backends = svc.realServers.map((r, i) => {
    const b: TraceBackend = { address: r.address, share: shares[i] ?? 0 };
    if (r.weight !== undefined) b.weight = r.weight;
    if (r.forwarding !== undefined) b.forwarding = r.forwarding;
    if (r.activeConn !== undefined) b.activeConn = r.activeConn;
    if (r.inactiveConn !== undefined) b.inactiveConn = r.inactiveConn;
    if (r.stats) b.stats = { ...r.stats };
    else if (r.rate) b.stats = { ...r.rate };
    return b;
  });
  const f: TraceFrontend = { kind, address: svc.address, protocol, backends, line: svc.line };
  if (portName !== undefined) f.portName = portName;
  if (svc.scheduler !== undefined) f.scheduler = svc.scheduler;
  if (svc.flags) f.flags = svc.flags;
  if (svc.persistent !== undefined) {
    f.persistent = svc.persistent;
    f.affinity = { timeoutSeconds: svc.persistent };
  }
  if (svc.section !== undefined) f.node = svc.section;
  const label = `${kind} ${svc.address}/${protocol}${svc.section !== undefined ? ` (${svc.section})` : ''}`;
  if (backends.length === 0) warnings.push(`${label}: the virtual service has no real servers (no ready endpoint)`);
  else if (backends.every((b) => b.share === 0)) warnings.push(`${label}: every real server has weight 0 (all draining)`);
  if (weights.length > 0 && weights.every((w) => w === undefined)) {
    warnings.push(`${label}: the listing has no weights (--stats/--rate); shares assume equal weights`);
  }
  for (const b of backends) {
    if (b.weight === 0 && backends.some((x) => x.share > 0)) warnings.push(`${label}: ${b.address} has weight 0 (draining: no new connections)`);
  }
  return f;
}

/** Traces one Service through an ipvsadm listing. Never throws. */
export function traceIpvs(table: IpvsTable, query: IpvsTraceQuery): ServiceTrace {
  const trace: ServiceTrace = { service: query.service, mode: 'ipvs', frontends: [], warnings: [] };
  const protocol = (query.protocol ?? 'TCP').toUpperCase();
  let services = table.services;
  if (query.node !== undefined) services = services.filter((s) => s.section === query.node);
  const byKey = new Map<string, IpvsService[]>();
  for (const s of services) {
    const l = byKey.get(s.key);
    if (l) l.push(s);
    else byKey.set(s.key, [s]);
  }
  const used = new Set<string>();
  const lookup = (kind: FrontendKind, ip: string, port: number | undefined) => {
    if (port === undefined) {
      trace.warnings.push(`${kind} ${ip}: no port given, not looked up`);
      return;
    }
    const address = joinHostPort(normalizeIp(ip), port);
    const key = `${protocol} ${address}`;
    used.add(key);
    const found = byKey.get(key);
    if (!found) {
      trace.warnings.push(`${kind} ${address}/${protocol} is not an IPVS virtual service in the listing`);
      return;
    }
    for (const svc of found) trace.frontends.push(frontend(kind, svc, protocol, query.portName, trace.warnings));
  };
  for (const ip of list(query.clusterIP)) lookup('ClusterIP', ip, query.port);
  for (const ip of list(query.externalIPs)) lookup('ExternalIP', ip, query.port);
  for (const ip of list(query.loadBalancerIPs)) lookup('LoadBalancer', ip, query.port);
  if (query.nodePort !== undefined) {
    if (query.nodeAddresses && query.nodeAddresses.length > 0) {
      for (const ip of query.nodeAddresses) lookup('NodePort', ip, query.nodePort);
    } else {
      // kube-proxy opens the node port on every local address (or those of nodePortAddresses)
      const found = services.filter((s) => s.protocol === protocol && s.port === query.nodePort && !used.has(s.key));
      for (const svc of found) trace.frontends.push(frontend('NodePort', svc, protocol, query.portName, trace.warnings));
      if (found.length === 0) trace.warnings.push(`NodePort *:${query.nodePort}/${protocol}: no IPVS virtual service on that port in the listing`);
    }
  }
  if (list(query.clusterIP).length === 0 && query.nodePort === undefined && list(query.externalIPs).length === 0 && list(query.loadBalancerIPs).length === 0) {
    trace.warnings.push(`no address given for ${query.service}: nothing to look up`);
  }
  if (table.sections.length > 1 && query.node === undefined && trace.frontends.some((f) => f.node !== undefined)) {
    trace.warnings.push(`the listing joins ${table.sections.length} nodes (${table.sections.join(', ')}): each frontend says which`);
  }
  return trace;
}
