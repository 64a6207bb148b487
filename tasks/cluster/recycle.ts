import type { V1Pod } from '@kubernetes/client-node';
import type { ProxyMode } from '../inventory/types.ts';
import type { RemoteSession } from '../remote/ssh.ts';
import type { StepStatus } from '../run/results.ts';
import { KubeError, type KubeClient } from './kube.ts';
import { ipvsHasVirtualServer, proofProblem, proxierLine, readNode, type NodeRead } from './node-checks.ts';
import type { NodeMapping } from './preflight.ts';
import { describeProbes, label, regressions, type ProbeOutcome, type ProbeRecord, type ProbeTarget } from './probes.ts';

// Recycling kube-proxy on one node, with proof: the pod is deleted only when the DaemonSet has no other
// pod unavailable, the replacement must become Ready on the same node, and the node itself must then
// answer /proxyMode with the target mode (plus the proxier log line, and for ipvs the kubernetes Service
// as a virtual server). One node at a time: the caller never runs two of these at once.

export interface RecycleSettings {
  kube: KubeClient;
  namespace: string;
  daemonSet: string;
  labelSelector: string;
  metricsBindAddress: string;
  podTimeoutMs: number;
  /** default/kubernetes, for the ipvs check */
  kubernetesService?: { ip: string; port: number };
  dryRun: boolean;
  /** the Services to probe through this node, before and after its switch */
  probes?: (m: NodeMapping) => Promise<ProbeTarget[]>;
  /**
   * Why a pod runs an older configuration than the ConfigMap's (undefined: it does not). Such a pod is
   * recycled even when its mode is already the target one: a changed scheduler or strictARP takes
   * effect only in a new pod.
   */
  olderConfig?: (pod: V1Pod) => string | undefined;
}

export interface NodeRecycleResult {
  node: string;
  status: StepStatus;
  message: string;
  /** the old pod was deleted (so a rollback has to recycle this node again) */
  deleted: boolean;
  /** the last lines of the new pod's log, when it failed */
  logTail?: string;
  /** which check failed */
  failedCheck?: string;
  /** each probe with its outcome before and after the switch */
  probes?: ProbeRecord[];
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function isReady(p: V1Pod): boolean {
  return p.status?.conditions?.some((c) => c.type === 'Ready' && c.status === 'True') ?? false;
}

function crashReason(p: V1Pod): string | undefined {
  for (const cs of p.status?.containerStatuses ?? []) {
    const w = cs.state?.waiting?.reason;
    if (w && /CrashLoopBackOff|CreateContainerConfigError|ImagePullBackOff|ErrImagePull|RunContainerError/.test(w)) return w;
    if (cs.state?.terminated && (cs.restartCount ?? 0) > 0) return `terminated (${cs.state.terminated.reason ?? 'Error'}, exit ${cs.state.terminated.exitCode})`;
  }
  return undefined;
}

/**
 * Wait until every kube-proxy pod except this node's is Ready (and none is terminating), so deleting this
 * node's pod makes at most one unavailable. This node's own pod may be the unavailable one: that is the
 * case of a rollback of the node that just failed.
 */
export async function waitOthersReady(s: RecycleSettings, node: string, deadlineMs: number): Promise<void> {
  const end = Date.now() + deadlineMs;
  for (;;) {
    const { items } = await s.kube.listPods(s.namespace, s.labelSelector);
    const blocking = items.filter((p) => p.spec?.nodeName !== node && (p.metadata?.deletionTimestamp || !isReady(p)));
    if (blocking.length === 0) return;
    if (Date.now() >= end) {
      throw new KubeError(
        `kube-proxy is still unavailable on ${blocking.map((p) => p.spec?.nodeName ?? p.metadata?.name).join(', ')} after ${Math.round(deadlineMs / 1000)}s: not deleting another pod`,
      );
    }
    await sleep(1000);
  }
}

async function tailLog(s: RecycleSettings, pod: V1Pod, lines = 15): Promise<string> {
  const name = pod.metadata!.name!;
  const container = pod.spec?.containers?.[0]?.name;
  const get = (previous: boolean) =>
    s.kube.podLog(s.namespace, name, { ...(container ? { container } : {}), tailLines: lines, previous }).catch(() => '');
  // A crash-looping container's useful words are in the previous instance's log.
  const prev = (pod.status?.containerStatuses?.[0]?.restartCount ?? 0) > 0 ? await get(true) : '';
  return (prev || (await get(false))).trimEnd();
}

/**
 * Check a node that should run `mode`: /proxyMode on the node, the proxier line, and for ipvs the table.
 * Without `known`, the node is read once (waiting there for /proxyMode to answer `mode`), its probes
 * run in the same exec.
 */
export async function verifyNode(
  s: RecycleSettings,
  session: RemoteSession,
  mode: ProxyMode,
  pod: V1Pod | undefined,
  /** a read already made (with the ipvs table when mode is ipvs) */
  known?: NodeRead,
  probes: ProbeTarget[] = [],
): Promise<{ ok: boolean; check?: string; message: string; state: NodeRead }> {
  const state = known ?? (await readNode(session, s.metricsBindAddress, { ipvs: mode === 'ipvs', proof: mode, expect: mode, probes }));
  if (state.mode !== mode) {
    return { ok: false, check: '/proxyMode', message: `/proxyMode answers ${state.mode ?? `nothing (${state.error})`}, expected ${mode}`, state };
  }
  const found: string[] = [`/proxyMode: ${mode}`];
  if (pod) {
    const log = await s.kube.podLog(s.namespace, pod.metadata!.name!, { tailLines: 400 }).catch(() => '');
    const line = proxierLine(log, mode);
    if (!line) return { ok: false, check: 'proxier log line', message: `the log of ${pod.metadata!.name} has no "Using ${mode} Proxier" line`, state };
    found.push('log: Using ' + mode + ' Proxier');
  }
  if (mode === 'ipvs' && s.kubernetesService) {
    const { ip, port } = s.kubernetesService;
    if (state.ipvs === null || state.ipvs === undefined) return { ok: false, check: 'ipvsadm -Ln', message: 'ipvsadm -Ln failed on the node', state };
    if (!ipvsHasVirtualServer(state.ipvs, ip, port)) {
      return { ok: false, check: 'ipvsadm -Ln', message: `ipvsadm -Ln lists no virtual server ${ip}:${port} (Service default/kubernetes)`, state };
    }
    found.push(`ipvsadm: ${ip}:${port}`);
  }
  const proof = proofProblem(mode, state);
  if (proof) return { ok: false, check: proof.check, message: proof.message, state };
  if (mode === 'nftables') found.push('nft: table kube-proxy');
  if (mode === 'iptables') found.push('iptables: KUBE-SERVICES');
  return { ok: true, message: found.join(', '), state };
}

/**
 * Switch one node's kube-proxy to `mode` with proof, probing its Services before and after: a probe that
 * answered before and fails after fails the node (the caller then rolls back); one that already failed
 * before is reported, not blamed on the switch. Two SSH execs per node: the read before (mode, table,
 * probes) and the read after.
 */
export async function recycleNode(s: RecycleSettings, m: NodeMapping, session: RemoteSession, mode: ProxyMode): Promise<NodeRecycleResult> {
  const targets = s.probes ? await s.probes(m) : [];
  // with the ipvs table when ipvs is the target, so a node already there is verified from this read
  const before = await readNode(session, s.metricsBindAddress, { ipvs: mode === 'ipvs', proof: mode, probes: targets });
  const records: ProbeRecord[] = targets.map((target, i) => ({ target, before: before.probes[i]! }));
  const { after, ...r } = await switchNode(s, m, session, mode, before, targets);
  if (targets.length === 0) return r;
  const failingBefore = records.filter((x) => !x.before!.ok).map((x) => label(x.target));
  const note = failingBefore.length ? `; already failing before the switch (not blamed on it): ${failingBefore.join(', ')}` : '';
  if (s.dryRun || r.status === 'failed') {
    return { ...r, probes: records, message: `${r.message}; probes before: ${describeProbes(records)}${note}` };
  }
  // a node left as it was has no "after": its one read is the "before"
  if (!after) return { ...r, probes: records, message: `${r.message}; probes (node not switched): ${describeProbes(records)}${note}` };
  records.forEach((x, i) => (x.after = after[i]!));
  const broken = regressions(records);
  if (broken.length > 0) {
    return {
      ...r,
      status: 'failed',
      failedCheck: 'probe',
      probes: records,
      message:
        `${broken.map((x) => `Service ${x.target.service} no longer answers through ${m.node} (${label(x.target)}: before ok in ${x.before!.ms}ms, after: ${x.after!.detail})`).join('; ')}` +
        ` after: ${r.message}`,
    };
  }
  return { ...r, probes: records, message: `${r.message}; probes: ${describeProbes(records)}${note}` };
}

/** The switch itself; `after` holds the probes read with the verification (none when the pod was not replaced). */
async function switchNode(
  s: RecycleSettings,
  m: NodeMapping,
  session: RemoteSession,
  mode: ProxyMode,
  before: NodeRead,
  targets: ProbeTarget[],
): Promise<NodeRecycleResult & { after?: ProbeOutcome[] }> {
  const node = m.node;
  const stale = m.pod ? s.olderConfig?.(m.pod) : undefined;
  if (before.mode === mode && !stale) {
    const v = await verifyNode(s, session, mode, m.pod, before);
    return v.ok
      ? { node, status: 'ok', message: `already runs ${mode}: ${v.message}`, deleted: false }
      : { node, status: 'failed', message: v.message, deleted: false, ...(v.check ? { failedCheck: v.check } : {}) };
  }
  const pod = m.pod;
  if (!pod) return { node, status: 'failed', message: 'no kube-proxy pod on this node', deleted: false };
  const name = pod.metadata!.name!;
  const now =
    before.mode === mode
      ? `runs ${mode} but ${stale}`
      : before.mode
        ? `runs ${before.mode}`
        : `/proxyMode did not answer (${before.error})`;
  if (s.dryRun) return { node, status: 'changed', message: `would delete pod ${name} (${now}) and wait for its replacement in ${mode} mode`, deleted: false };

  await waitOthersReady(s, node, s.podTimeoutMs);
  const oldUid = pod.metadata!.uid;
  await s.kube.deletePod(s.namespace, name);
  let outcome: { pod: V1Pod; crash?: string };
  try {
    outcome = await s.kube.waitForPods(
      s.namespace,
      { labelSelector: s.labelSelector, fieldSelector: `spec.nodeName=${node}` },
      (pods) => {
        for (const p of pods) {
          if (p.metadata?.uid === oldUid || p.metadata?.deletionTimestamp) continue;
          const crash = crashReason(p);
          if (crash) return { pod: p, crash };
          if (isReady(p)) return { pod: p };
        }
        return undefined;
      },
      s.podTimeoutMs,
      `the new kube-proxy pod on ${node} to become Ready`,
    );
  } catch (e) {
    const { items } = await s.kube.listPods(s.namespace, s.labelSelector, `spec.nodeName=${node}`).catch(() => ({ items: [] as V1Pod[] }));
    const fresh = items.find((p) => p.metadata?.uid !== oldUid);
    const logTail = fresh ? await tailLog(s, fresh) : '';
    return { node, status: 'failed', message: (e as Error).message, deleted: true, failedCheck: 'pod Ready', ...(logTail ? { logTail } : {}) };
  }
  const newName = outcome.pod.metadata!.name!;
  if (outcome.crash) {
    const logTail = await tailLog(s, outcome.pod);
    return {
      node,
      status: 'failed',
      message: `new pod ${newName} is ${outcome.crash}${logTail ? `: ${logTail.split('\n').filter(Boolean).pop()}` : ''}`,
      deleted: true,
      failedCheck: 'pod Ready',
      ...(logTail ? { logTail } : {}),
    };
  }
  const v = await verifyNode(s, session, mode, outcome.pod, undefined, targets);
  if (!v.ok) {
    const logTail = await tailLog(s, outcome.pod);
    return { node, status: 'failed', message: `pod ${newName}: ${v.message}`, deleted: true, ...(v.check ? { failedCheck: v.check } : {}), ...(logTail ? { logTail } : {}) };
  }
  return { node, status: 'changed', message: `pod ${name} (${now}) replaced by ${newName}, verified: ${v.message}`, deleted: true, after: v.state.probes };
}
