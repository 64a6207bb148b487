import type { Host, ProxyMode } from '../inventory/types.ts';
import { schedulerProblem } from '../node/ipvs-requirements.ts';
import { MODES } from '../node/modes.ts';
import type { SessionPool } from '../remote/sessions.ts';
import { unifiedDiff } from '../run/diff.ts';
import { CLUSTER_ROW, stepRecorder, type StepResult, type StepStatus } from '../run/results.ts';
import { updateConfigMap, writeBackup } from './configmap-store.ts';
import { lastChange, podInfo } from './node-status.ts';
import { KubeClient, KubeError, loadKubeConfig, type KubeTarget, type RetryPolicy } from './kube.ts';
import { editConfigMapData, proxyWish, readProxyConfig, type ProxyWish } from './kube-proxy-config.ts';
import { kubeProxyNodes, parseServerVersion, preflight, type NodeMapping, type NodeReadiness } from './preflight.ts';
import { label, resolveProbes, type ProbeRecord } from './probes.ts';
import { recycleNode, type NodeRecycleResult, type RecycleSettings } from './recycle.ts';
import { acquireLock, lockHolder, type ClusterLock } from './lock.ts';
import { NO_INTERRUPT, type Interrupt } from '../run/interrupt.ts';
import { cleanupOldModes, type CleanupOutcome } from '../cleanup/old-mode.ts';
import type { CleanupCluster } from '../cleanup/old-mode-plan.ts';
import type { RemoteSession } from '../remote/ssh.ts';
import { serviceAddresses } from './node-status.ts';

// The cluster phase: preflight (also in a dry run) -> ConfigMap edit (backup first) -> serial recycle with
// proof per node -> on the first failure, restore the ConfigMap and switch the recycled nodes back.

export const CLUSTER = CLUSTER_ROW;

export interface ClusterPhaseOptions {
  targetMode: ProxyMode;
  dryRun: boolean;
  kube: KubeTarget;
  namespace: string;
  configMap: string;
  configKey: string;
  daemonSet: string;
  labelSelector: string;
  podTimeoutMs: number;
  canary?: string;
  rollback: boolean;
  backupDir: string;
  /** remove the other modes' leftovers from each node right after it is verified in the target mode */
  cleanupOldMode?: boolean;
  /** every host of the inventory (nodes are matched against all of them) */
  inventoryHosts: Host[];
  /** the hosts the run targets (after --limit) */
  targets: Host[];
  /** readiness of a host for the target mode (the node phase's verdict, or a read-only check) */
  readiness: (host: Host) => Promise<NodeReadiness>;
  sessions: SessionPool;
  emit: (r: StepResult) => void;
  out: (line: string) => void;
  /** SIGINT/SIGTERM: stop between nodes (default: none) */
  interrupt?: Interrupt;
  /** attempts, backoff and per-request timeout of API calls (default DEFAULT_RETRY) */
  apiRetry?: RetryPolicy;
}

export interface ClusterPhaseOutcome {
  ok: boolean;
  rolledBack: boolean;
  /** stopped early on SIGINT/SIGTERM (or a lost lock), between two nodes */
  interrupted?: boolean;
  steps: StepResult[];
  apiRequests: number;
  backup?: string;
}

/** The ConfigMap settings wanted, from the inventory: one cluster, one value each, or an error. */
export function clusterWish(targets: Host[], mode: ProxyMode): { wish: ProxyWish; error?: string } {
  const first = targets[0]!.settings;
  const differ = (key: string, f: (h: Host) => unknown) => {
    const values = new Set(targets.map((h) => JSON.stringify(f(h))));
    return values.size > 1 ? key : null;
  };
  const conflicting = [
    differ('kube_proxy_scheduler', (h) => h.settings.scheduler),
    differ('kube_proxy_strict_arp', (h) => h.settings.strictArp),
    differ('kube_proxy_exclude_cidrs', (h) => h.settings.excludeCidrs),
    differ('kube_proxy_tcp_timeout', (h) => h.settings.tcpTimeout),
    differ('kube_proxy_tcp_fin_timeout', (h) => h.settings.tcpFinTimeout),
    differ('kube_proxy_udp_timeout', (h) => h.settings.udpTimeout),
  ].filter(Boolean);
  // A mode whose configuration section the inventory fills (ipvs.*) gets it written too; going elsewhere
  // changes the mode only and leaves the other sections as they are.
  const wish: ProxyWish = MODES[mode].configSection === 'ipvs' ? { ...proxyWish(first), mode } : { mode };
  if (conflicting.length) {
    return { wish, error: `${conflicting.join(', ')} differ between hosts; kube-proxy has one ConfigMap for the whole cluster` };
  }
  if (mode === 'ipvs') {
    // the scheduler written to the ConfigMap must be one whose module the node phase loads
    const err = schedulerProblem(first);
    if (err) return { wish, error: err };
  }
  return { wish };
}

type Record_ = (host: string, name: string, status: StepStatus, message: string, diff?: string, probes?: ProbeRecord[]) => StepResult;

export async function runClusterPhase(o: ClusterPhaseOptions): Promise<ClusterPhaseOutcome> {
  const { steps, record: put } = stepRecorder(o.emit);
  const record = (host: string, name: string, status: StepStatus, message: string, diff?: string, probes?: ProbeRecord[]) =>
    put(host, name, status, message, {
      ...(diff ? { diff } : {}),
      ...(probes ? { probes: probes.map((p) => ({ service: p.target.service, via: p.target.via, address: label(p.target).split(' ').pop()!, ...(p.before ? { before: p.before } : {}), ...(p.after ? { after: p.after } : {}) })) } : {}),
    });
  let kube: KubeClient;
  try {
    kube = new KubeClient(loadKubeConfig(o.kube), o.apiRetry);
  } catch (e) {
    record(CLUSTER, 'preflight', 'failed', (e as Error).message);
    return { ok: false, rolledBack: false, steps, apiRequests: 0 };
  }
  const fail = (name: string, message: string): ClusterPhaseOutcome => {
    record(CLUSTER, name, 'failed', message);
    return { ok: false, rolledBack: false, steps, apiRequests: kube.requests };
  };

  // One run at a time per cluster (a dry run writes nothing, so it only says when one is running).
  let lock: ClusterLock | undefined;
  if (!o.dryRun) {
    try {
      lock = await acquireLock(kube, o.namespace);
    } catch (e) {
      return fail('lock', (e as Error).message);
    }
  } else {
    const held = await lockHolder(kube, o.namespace).catch(() => undefined);
    if (held) o.out(`warning: ${held} (a real run would stop here)`);
  }
  try {
    return await phaseSteps(o, kube, lock, steps, record, fail);
  } finally {
    await lock?.release();
  }
}

async function phaseSteps(
  o: ClusterPhaseOptions,
  kube: KubeClient,
  lock: ClusterLock | undefined,
  steps: StepResult[],
  record: Record_,
  fail: (name: string, message: string) => ClusterPhaseOutcome,
): Promise<ClusterPhaseOutcome> {
  const interrupt = o.interrupt ?? NO_INTERRUPT;
  // 1. preflight: read everything, decide before touching anything
  let original;
  let mappings: NodeMapping[];
  let kubernetesService: RecycleSettings['kubernetesService'];
  let metricsBindAddress: string;
  let currentMode: string;
  let excludeCIDRs: string[] = [];
  try {
    const version = parseServerVersion(await kube.version());
    original = await kube.readConfigMap(o.namespace, o.configMap);
    const text = original.data?.[o.configKey];
    if (text === undefined) return fail('preflight', `ConfigMap ${o.namespace}/${o.configMap} has no key ${o.configKey}: refusing to guess kube-proxy's configuration`);
    const conf = readProxyConfig(text, o.configKey);
    metricsBindAddress = conf.metricsBindAddress;
    excludeCIDRs = conf.ipvs.excludeCIDRs;
    currentMode = conf.mode;
    await kube.readDaemonSet(o.namespace, o.daemonSet);
    const nodes = await kube.listNodes();
    const { items: pods } = await kube.listPods(o.namespace, o.labelSelector);
    const svc = await kube.readService('default', 'kubernetes').catch(() => undefined);
    const ip = svc?.spec?.clusterIP;
    const port = svc?.spec?.ports?.find((p) => p.name === 'https')?.port ?? svc?.spec?.ports?.[0]?.port;
    if (ip && port) kubernetesService = { ip, port };

    // Readiness is asked only of the hosts that run kube-proxy (the node phase answered for the targets).
    const nodeMappings = kubeProxyNodes(nodes, pods, o.inventoryHosts);
    const readiness = new Map<string, NodeReadiness>();
    for (const m of nodeMappings) if (m.host) readiness.set(m.host.name, await o.readiness(m.host));
    const checked = preflight({
      version,
      targetMode: o.targetMode,
      nodes,
      pods,
      hosts: o.inventoryHosts,
      readiness,
      mappings: nodeMappings,
      featureGates: conf.featureGates,
      ...(o.canary ? { canary: o.canary } : {}),
    });
    for (const w of checked.warnings) o.out(`warning: ${w}`);
    if (checked.errors.length) return fail('preflight', checked.errors.join('; '));
    mappings = checked.nodes;
    record(
      CLUSTER,
      'preflight',
      'ok',
      `${version.gitVersion} at ${kube.server}; ConfigMap mode ${conf.modeRaw === '' ? '"" (iptables, the default)' : conf.mode}; ` +
        `${mappings.length} node${mappings.length === 1 ? '' : 's'} run kube-proxy, all in the inventory and ready for ${o.targetMode}`,
    );
  } catch (e) {
    return fail('preflight', e instanceof KubeError ? e.message : `${(e as Error).message}`);
  }

  if (interrupt.requested) return fail('interrupted', `${interrupt.signal}: stopped before any change to the cluster (the ConfigMap and every kube-proxy are as they were)`);

  // 2. the ConfigMap
  const wish = clusterWish(o.targets.length ? o.targets : o.inventoryHosts, o.targetMode);
  if (wish.error) return fail('configmap', wish.error);
  const edited = editConfigMapData(original.data ?? {}, wish.wish, o.configKey);
  const cmName = `${o.namespace}/${o.configMap}`;
  let backup: string | undefined;
  // Which pods run an older configuration (recycled even when their mode is right, see RecycleSettings):
  // after this run's write, every pod listed before it; otherwise those started before the last change.
  const lastChanged = lastChange(original.metadata);
  let olderConfig: RecycleSettings['olderConfig'] = (pod) => {
    const started = podInfo(pod).startedAt;
    return started && lastChanged && Date.parse(started) < Date.parse(lastChanged) ? `started ${started}, before the ConfigMap's last change ${lastChanged}` : undefined;
  };
  const changedNow: RecycleSettings['olderConfig'] = () => `started before this run ${o.dryRun ? 'would change' : 'changed'} the ConfigMap`;
  if (!edited.changed) {
    record(CLUSTER, 'configmap', 'ok', `${cmName} already says mode ${o.targetMode === 'iptables' && currentMode === 'iptables' ? currentMode : o.targetMode}: no write`);
  } else if (o.dryRun) {
    record(CLUSTER, 'configmap', 'changed', `would update ${cmName}: ${edited.changes.join(', ')}`, unifiedDiff(`${cmName} ${o.configKey}`, original.data![o.configKey]!, edited.data[o.configKey]!));
    olderConfig = changedNow;
  } else {
    try {
      backup = writeBackup(o.backupDir, original);
    } catch (e) {
      // no backup, no change: the cluster row fails like any other refusal (exit 2, recap, retry)
      return fail('configmap', (e as Error).message);
    }
    o.out(`ConfigMap ${cmName} saved to ${backup} before the change`);
    try {
      const w = await updateConfigMap(kube, { namespace: o.namespace, name: o.configMap }, (data) => {
        const e = editConfigMapData(data, wish.wish, o.configKey);
        return e.changed ? e.data : null;
      });
      if (w.written) olderConfig = changedNow;
      record(CLUSTER, 'configmap', w.written ? 'changed' : 'ok', `${w.written ? 'updated' : 'already up to date:'} ${cmName}: ${edited.changes.join(', ')}${w.conflicts ? ` (merged with ${w.conflicts} concurrent change${w.conflicts > 1 ? 's' : ''})` : ''}`, unifiedDiff(`${cmName} ${o.configKey}`, original.data![o.configKey]!, edited.data[o.configKey]!));
    } catch (e) {
      return { ...fail('configmap', (e as Error).message), backup };
    }
  }

  // 3. serial recycle
  const settings: RecycleSettings = {
    kube,
    namespace: o.namespace,
    daemonSet: o.daemonSet,
    labelSelector: o.labelSelector,
    metricsBindAddress,
    podTimeoutMs: o.podTimeoutMs,
    ...(kubernetesService ? { kubernetesService } : {}),
    dryRun: o.dryRun,
    olderConfig,
    probes: async (m) => {
      const r = await resolveProbes(kube, probeSpecs, m.internalIPs[0] ?? m.host?.connection.address);
      for (const p of r.problems) if (!probeProblems.has(p)) (probeProblems.add(p), o.out(`warning: probe: ${p}`));
      return r.targets;
    },
  };
  const probeSpecs = (o.targets[0] ?? o.inventoryHosts[0])?.settings.probeServices ?? [];
  const probeProblems = new Set<string>();
  const switched: NodeMapping[] = [];
  let cleanupCluster: CleanupCluster | undefined;
  let failure: { mapping: NodeMapping; result: NodeRecycleResult } | undefined;
  if (o.dryRun) o.out(`recycle order: ${mappings.map((m) => m.node).join(', ')}`);
  for (const [i, m] of mappings.entries()) {
    const stop = interrupt.requested ? `${interrupt.signal}` : lock?.lost;
    if (stop && !o.dryRun) {
      const done = mappings.slice(0, i).map((x) => x.node);
      const left = mappings.slice(i).map((x) => x.node);
      record(
        CLUSTER,
        'interrupted',
        'failed',
        `${stop}: stopped after ${done.length} of ${mappings.length} nodes, each verified; no node is left half-switched. ` +
          `The ConfigMap says ${o.targetMode}. Done: ${done.join(', ') || 'none'}; not yet: ${left.join(', ')}. ` +
          `To finish: run the same command again. To go back: the same command with --mode ${currentMode === 'ipvs' || currentMode === 'nftables' ? currentMode : 'iptables'}.`,
      );
      return { ok: false, rolledBack: false, interrupted: true, steps, apiRequests: kube.requests, ...(backup ? { backup } : {}) };
    }
    const host = m.host!;
    let r: NodeRecycleResult;
    try {
      r = await recycleNode(settings, m, await o.sessions.get(host), o.targetMode);
    } catch (e) {
      r = { node: m.node, status: 'failed', message: (e as Error).message, deleted: false };
    }
    record(host.name, 'kube-proxy', r.status, `${m.node}: ${r.message}${r.logTail ? `\nlast log lines:\n${r.logTail}` : ''}`, undefined, r.probes);
    if (r.deleted) switched.push(m);
    if (r.status === 'failed') {
      failure = { mapping: m, result: r };
      break;
    }
    if (o.cleanupOldMode) {
      // after the node is verified in its new mode, never before: until then the old mode's objects carry its traffic
      cleanupCluster ??= await cleanupContext(kube, excludeCIDRs);
      const c = await cleanupNode(await o.sessions.get(host), o.targetMode, cleanupCluster, o.dryRun);
      record(host.name, 'cleanup', c.status, `${m.node}: ${c.message}`);
    }
  }
  if (!failure) return { ok: true, rolledBack: false, steps, apiRequests: kube.requests, ...(backup ? { backup } : {}) };
  if (!o.rollback || o.dryRun) {
    record(CLUSTER, 'rollback', 'skipped', o.dryRun ? 'dry run' : `--no-rollback: the ConfigMap stays changed${backup ? ` (backup: ${backup})` : ''}; rerun with --mode ${currentMode} to go back`);
    return { ok: false, rolledBack: false, steps, apiRequests: kube.requests, ...(backup ? { backup } : {}) };
  }

  // 4. rollback: the ConfigMap first (so re-created pods read the old mode), then the switched nodes
  const back = (currentMode === 'ipvs' || currentMode === 'iptables' || currentMode === 'nftables' ? currentMode : 'iptables') as ProxyMode;
  try {
    const w = await updateConfigMap(kube, { namespace: o.namespace, name: o.configMap }, (data) =>
      data[o.configKey] === original.data![o.configKey] ? null : { ...data, [o.configKey]: original.data![o.configKey]! },
    );
    record(CLUSTER, 'rollback', w.written ? 'changed' : 'ok', `restored ${cmName} from ${backup}`);
    // the switched nodes' pods started under the configuration being undone
    settings.olderConfig = () => 'started under the configuration being rolled back';
  } catch (e) {
    record(CLUSTER, 'rollback', 'failed', `could not restore ${cmName}: ${(e as Error).message}; restore it from ${backup}`);
    return { ok: false, rolledBack: false, steps, apiRequests: kube.requests, ...(backup ? { backup } : {}) };
  }
  let allBack = true;
  for (const m of [...switched].reverse()) {
    const host = m.host!;
    try {
      const { items } = await kube.listPods(o.namespace, o.labelSelector, `spec.nodeName=${m.node}`);
      const pod = items.filter((p) => !p.metadata?.deletionTimestamp).sort((a, b) => String(b.metadata?.creationTimestamp).localeCompare(String(a.metadata?.creationTimestamp)))[0];
      const session = await o.sessions.get(host);
      const { probes: _none, ...noProbes } = settings; // going back is judged by the node checks alone
      // recycleNode verifies the node in the old mode itself (/proxyMode, the proxier line, the table)
      const r = await recycleNode({ ...noProbes, dryRun: false }, { ...m, ...(pod ? { pod } : {}) }, session, back);
      const ok = r.status !== 'failed';
      if (!ok) allBack = false;
      record(host.name, 'rollback', ok ? 'changed' : 'failed', `${m.node}: back on ${back}: ${r.message}`);
    } catch (e) {
      allBack = false;
      record(host.name, 'rollback', 'failed', `${m.node}: ${(e as Error).message}`);
    }
  }
  return { ok: false, rolledBack: allBack, steps, apiRequests: kube.requests, ...(backup ? { backup } : {}) };
}

const MODES_CLEANED: readonly ProxyMode[] = ['iptables', 'ipvs', 'nftables'];

/** The Service addresses that tell kube-proxy's IPVS virtual servers from anyone else's, and excludeCIDRs. */
async function cleanupContext(kube: KubeClient, excludeCIDRs: string[]): Promise<CleanupCluster> {
  const { ips, nodePorts } = serviceAddresses(await kube.listServices());
  return { serviceIPs: ips, nodePorts, excludeCIDRs };
}

/**
 * --cleanup-old-mode on one node: every other mode's leftovers (the mode it ran before, and any older
 * one's), in a dry run listed only. A failure is the node's, after its switch was verified: the node
 * keeps its new mode, the run goes on and ends failed.
 */
async function cleanupNode(session: RemoteSession, target: ProxyMode, cluster: CleanupCluster, dryRun: boolean): Promise<{ status: StepStatus; message: string }> {
  let outcomes: CleanupOutcome[];
  try {
    outcomes = await cleanupOldModes(session, { from: MODES_CLEANED.filter((m) => m !== target), to: target, cluster, dryRun });
  } catch (e) {
    return { status: 'failed', message: `cleanup of the old mode failed: ${(e as Error).message}` };
  }
  const worked = outcomes.filter((x) => x.status !== 'nothing to clean');
  const status: StepStatus = outcomes.some((x) => x.status === 'failed') ? 'failed' : worked.length ? 'changed' : 'ok';
  const shown = worked.length ? worked : outcomes.slice(0, 1);
  const message =
    worked.length === 0
      ? `nothing to clean: no objects of ${MODES_CLEANED.filter((m) => m !== target).join(' or ')} mode on the node`
      : shown.flatMap((x) => x.lines).join('\n');
  return { status, message };
}
