import type { V1Pod, V1Service } from '@kubernetes/client-node';
import type { DataplaneSummary, IptablesCounts } from '../dataplane/node-read.ts';
import { isKubeProxyIpset, isKubeProxyNftTable, parseNftTableLine, SERVICE_CHAIN_KINDS, virtualServerJudge, type ServiceAddresses } from '../cleanup/kube-proxy-objects.ts';

// `status`'s judgement, pure: what the API and each node said, in; per node drift, leftovers and
// problems, and one verdict for the cluster, out. Editing the ConfigMap restarts nothing, so the
// configured mode and the running one are compared node by node, with /proxyMode as the ground truth.

export interface PodInfo {
  name: string;
  /** when the running container started (a container restart re-reads the configuration) */
  startedAt?: string;
  ready: boolean;
  phase: string;
  restarts: number;
  /** CrashLoopBackOff and friends */
  waiting?: string;
}

export interface Prerequisites {
  /** packages IPVS mode needs that are not installed */
  packagesMissing: string[];
  /** modules neither loaded nor built in */
  modulesNotLoaded: string[];
  /** managed module files missing or different: the modules would not come back after a reboot */
  filesNotPersisted: string[];
  /** the node cannot be prepared at all (unsupported distribution, module missing from the kernel) */
  error?: string;
}

export interface NodeObservation {
  node: string;
  /** the inventory host it is; absent for a node the inventory does not have */
  host?: string;
  pod?: PodInfo;
  /** kube-proxy's "Using … Proxier" log line */
  proxierLine?: string;
  logError?: string;
  /** the node could not be read over SSH (why); absent when it was or when it is not in the inventory */
  unreachable?: string;
  /** /proxyMode's answer; null when nothing answered (why in modeError) */
  runningMode?: string | null;
  modeError?: string;
  prerequisites?: Prerequisites;
  dataplane?: DataplaneSummary;
}

export interface NodeStatus extends NodeObservation {
  /** why the node does not run what the ConfigMap says (restart pending) */
  drift: string[];
  /** the other modes' objects still on the node */
  leftovers: string[];
  /** everything else that makes the node not consistent */
  problems: string[];
}

export interface ClusterFacts {
  /** the ConfigMap's mode with kube-proxy's default applied ('' -> iptables) */
  mode: string;
  /** the last change of the ConfigMap (its newest managedFields time, else its creation) */
  changedAt?: string;
  /** every Service IP (ClusterIPs, external and load-balancer IPs) and node port, to tell them from foreign IPVS services */
  serviceIPs: Set<string>;
  nodePorts: Set<number>;
  /** ipvs.excludeCIDRs: kube-proxy's IPVS leaves virtual servers there alone, so they are nobody's leftover */
  excludeCIDRs?: string[];
}

export function podInfo(pod: V1Pod): PodInfo {
  const cs = pod.status?.containerStatuses?.[0];
  const started = cs?.state?.running?.startedAt ?? pod.status?.startTime;
  return {
    name: pod.metadata?.name ?? '?',
    ...(started ? { startedAt: new Date(started as unknown as string).toISOString() } : {}),
    ready: (pod.status?.conditions ?? []).some((c) => c.type === 'Ready' && c.status === 'True'),
    phase: pod.status?.phase ?? 'Unknown',
    restarts: cs?.restartCount ?? 0,
    ...(cs?.state?.waiting?.reason ? { waiting: cs.state.waiting.reason } : {}),
  };
}

/** The newest time the ConfigMap was written, as kube-apiserver records it in managedFields. */
export function lastChange(meta: { managedFields?: { time?: Date | string }[]; creationTimestamp?: Date | string } | undefined): string | undefined {
  const times = (meta?.managedFields ?? []).map((f) => f.time).filter((t): t is Date | string => t !== undefined);
  const all = times.length ? times : meta?.creationTimestamp ? [meta.creationTimestamp] : [];
  const ms = all.map((t) => new Date(t as string).getTime()).filter(Number.isFinite);
  return ms.length ? new Date(Math.max(...ms)).toISOString() : undefined;
}

/** ClusterIPs, external IPs, load-balancer IPs and node ports of every Service. */
export function serviceAddresses(services: V1Service[]): { ips: Set<string>; nodePorts: Set<number> } {
  const ips = new Set<string>();
  const nodePorts = new Set<number>();
  for (const s of services) {
    for (const ip of [...(s.spec?.clusterIPs ?? []), s.spec?.clusterIP, ...(s.spec?.externalIPs ?? []), ...(s.status?.loadBalancer?.ingress ?? []).map((i) => i.ip)]) {
      if (ip && ip !== 'None') ips.add(ip);
    }
    for (const p of s.spec?.ports ?? []) if (p.nodePort) nodePorts.add(p.nodePort);
  }
  return { ips, nodePorts };
}

function staleChains(c: IptablesCounts | string): string | undefined {
  if (typeof c === 'string') return undefined;
  const counts: Record<(typeof SERVICE_CHAIN_KINDS)[number], number> = { SVC: c.svc, SEP: c.sep, EXT: c.ext, SVL: c.svl, FW: c.fw, XLB: c.xlb };
  const parts = SERVICE_CHAIN_KINDS.filter((k) => counts[k] > 0);
  if (parts.length === 0) return undefined;
  return parts.map((k) => `${counts[k]} KUBE-${k}-*`).join(', ');
}

/**
 * The other modes' objects on a node that runs `mode`, judged as `--cleanup-old-mode` judges them
 * (tasks/cleanup/kube-proxy-objects.ts): what is reported here is what a cleanup removes.
 */
export function leftoversOf(mode: string, dp: DataplaneSummary, cluster: ServiceAddresses): string[] {
  const out: string[] = [];
  if (mode !== 'iptables') {
    for (const [fam, c] of [['IPv4', dp.iptables.v4], ['IPv6', dp.iptables.v6]] as const) {
      const s = staleChains(c);
      if (s) out.push(`iptables mode's ${fam} Service chains: ${s}`);
    }
  }
  if (mode !== 'ipvs') {
    if (dp.kubeIpvs0) out.push(`link kube-ipvs0 (${dp.kubeIpvs0.length} address${dp.kubeIpvs0.length === 1 ? '' : 'es'})`);
    const judge = virtualServerJudge(cluster);
    const ours = (dp.ipvs ?? []).filter((v) => judge(v) === 'service');
    if (ours.length) out.push(`${ours.length} IPVS virtual server${ours.length === 1 ? '' : 's'} for Services`);
    const ipsets = (dp.ipsets ?? []).filter(isKubeProxyIpset);
    if (ipsets.length) out.push(`${ipsets.length} KUBE-* ipset${ipsets.length === 1 ? '' : 's'}`);
  }
  const tables = (dp.nftTables ?? []).filter((line) => {
    const t = parseNftTableLine(line);
    return t !== undefined && isKubeProxyNftTable(t.family, t.name);
  });
  if (mode !== 'nftables' && tables.length) out.push(`nftables ${tables.map((t) => t.replace(/^table /, '')).join(', ')}`);
  return out;
}

/** Foreign IPVS virtual servers (keepalived, kube-vip …): reported, never counted as kube-proxy's. */
export function foreignVirtualServers(dp: DataplaneSummary, cluster: ServiceAddresses): string[] {
  const judge = virtualServerJudge(cluster);
  return (dp.ipvs ?? []).filter((v) => judge(v) === 'foreign').map((v) => `${v.protocol} ${v.address}`);
}

export function assessNode(o: NodeObservation, cluster: ClusterFacts): NodeStatus {
  const drift: string[] = [];
  const problems: string[] = [];
  const s: NodeStatus = { ...o, drift, leftovers: [], problems };
  if (!o.pod) {
    problems.push('no kube-proxy pod on this node');
  } else {
    if (!o.pod.ready) problems.push(`kube-proxy pod not ready (${o.pod.waiting ?? o.pod.phase}${o.pod.restarts ? `, ${o.pod.restarts} restarts` : ''})`);
    if (o.pod.startedAt && cluster.changedAt && Date.parse(o.pod.startedAt) < Date.parse(cluster.changedAt)) {
      drift.push(`started ${o.pod.startedAt}, before the ConfigMap's last change ${cluster.changedAt}: restart pending`);
    }
  }
  if (o.unreachable) problems.push(`not reachable over SSH: ${o.unreachable}`);
  if (o.runningMode && o.runningMode !== cluster.mode) drift.push(`runs ${o.runningMode}, the ConfigMap says ${cluster.mode}: restart pending`);
  if (o.host && !o.unreachable && o.pod?.ready && o.runningMode === null) problems.push(`/proxyMode did not answer: ${o.modeError ?? 'no answer'}`);
  const running = o.runningMode ?? undefined;
  if (o.dataplane && running) s.leftovers = leftoversOf(running, o.dataplane, cluster);
  const p = o.prerequisites;
  if (p && (cluster.mode === 'ipvs' || running === 'ipvs')) {
    if (p.error) problems.push(`not ready for ipvs: ${p.error}`);
    if (p.packagesMissing.length) problems.push(`packages missing: ${p.packagesMissing.join(', ')}`);
    if (p.modulesNotLoaded.length) problems.push(`modules not loaded: ${p.modulesNotLoaded.join(', ')}`);
    if (p.filesNotPersisted.length) problems.push(`modules not persisted: ${p.filesNotPersisted.join(', ')}`);
  }
  return s;
}

export type Verdict = 'consistent' | 'inconsistent' | 'unknown';

/**
 * consistent: every kube-proxy node runs the ConfigMap's mode, started after its last change, is ready
 * and (for ipvs) has its prerequisites; inconsistent: some node does not; unknown: nothing wrong was
 * seen, but some node could not be read (unreachable or not in the inventory).
 */
export function verdictOf(nodes: NodeStatus[]): Verdict {
  if (nodes.some((n) => n.drift.length > 0 || n.problems.some((p) => !p.startsWith('not reachable')))) return 'inconsistent';
  if (nodes.some((n) => n.unreachable || !n.host || n.runningMode === undefined)) return 'unknown';
  return 'consistent';
}
