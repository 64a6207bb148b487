import type { V1DaemonSet, V1Pod } from '@kubernetes/client-node';
import type { Host, Inventory, ProxyMode } from '../inventory/types.ts';
import { KubeClient, loadKubeConfig, type KubeTarget } from '../cluster/kube.ts';
import { readProxyConfig, type ProxyConfig } from '../cluster/kube-proxy-config.ts';
import { nodeCheckScript, parseNodeCheck } from '../cluster/node-checks.ts';
import {
  assessNode,
  foreignVirtualServers,
  lastChange,
  podInfo,
  serviceAddresses,
  verdictOf,
  type ClusterFacts,
  type NodeObservation,
  type NodeStatus,
  type Prerequisites,
  type Verdict,
} from '../cluster/node-status.ts';
import { kubeProxyNodes, parseServerVersion, type NodeMapping } from '../cluster/preflight.ts';
import { nodeReadScript, parseDataplaneSummary, type DataplaneSummary } from '../dataplane/node-read.ts';
import { factsScript, parseFacts } from '../node/facts.ts';
import { MANAGED_FILES, modulesToProbe } from '../node/ipvs-requirements.ts';
import { clusterGateProblems, MODES } from '../node/modes.ts';
import { packagesToProbe, planNode } from '../node/plan.ts';
import { SessionPool } from '../remote/sessions.ts';
import { mapPool } from '../run/pool.ts';
import { EXIT_CODES as EXIT } from './exit-codes.ts';
import { loadTargets, type ReadAccess } from './load-targets.ts';
import { formatTable } from '../run/table.ts';

// `status`: which mode runs where, really. The API says what is configured and which pods run; each node
// says (over SSH, one exec) what its kube-proxy answers on /proxyMode, whether IPVS's prerequisites are
// there, and what its dataplane holds of each mode. Read-only: nothing is written anywhere.

export interface StatusOptions extends ReadAccess {
  inventory: string;
  limit?: string;
  json: boolean;
  forks?: number;
  daemonSet?: string;
  labelSelector?: string;
}

/** Exit codes: the cluster is consistent (0), is not (2), or could not be fully read (3). */
export const STATUS_EXIT: Record<Verdict, number> = { consistent: EXIT.ok, inconsistent: EXIT.failed, unknown: EXIT.unreachable };

export interface StatusReport {
  cluster: {
    server: string;
    version: string;
    configMap: { name: string; mode: string; modeRaw: string; changedAt?: string; changedBy?: string };
    daemonSet: { name: string; desired: number; ready: number; unavailable: number; upToDate: number } | { name: string; error: string };
  };
  nodes: NodeStatus[];
  verdict: Verdict;
  warnings: string[];
}

/** The kubeconfig and context: flags, else the inventory's `kubeconfig` / `kube_context`, else kubectl's defaults. */
export function kubeTargetOf(flags: KubeTarget | undefined, host: Host | undefined): KubeTarget {
  const vars = (host?.vars ?? {}) as { kubeconfig?: string; kube_context?: string };
  const kubeconfig = flags?.kubeconfig ?? vars.kubeconfig;
  const context = flags?.context ?? vars.kube_context;
  return { ...(kubeconfig ? { kubeconfig } : {}), ...(context ? { context } : {}) };
}

export async function status(opts: StatusOptions): Promise<number> {
  const out = opts.out ?? ((l: string) => process.stdout.write(l + '\n'));
  const err = opts.err ?? ((l: string) => process.stderr.write(l + '\n'));
  const loaded = await loadTargets(opts.inventory, opts.limit, err, opts.knownHosts);
  if ('code' in loaded) return loaded.code;
  const { inv, targets } = loaded;
  const sessions = new SessionPool({ acceptNewHostKeys: false, ...(opts.becomePassword !== undefined ? { becomePassword: opts.becomePassword } : {}) });
  try {
    const report = await gatherStatus(opts, inv, targets, sessions);
    if (opts.json) out(JSON.stringify(report, null, 2));
    else for (const l of formatStatus(report)) out(l);
    return STATUS_EXIT[report.verdict];
  } catch (e) {
    err(`status: ${(e as Error).message}`);
    return EXIT.error;
  } finally {
    await sessions.closeAll();
  }
}

export async function gatherStatus(opts: StatusOptions, inv: Inventory, targets: Host[], sessions: SessionPool): Promise<StatusReport> {
  const namespace = opts.namespace ?? 'kube-system';
  const cmName = opts.configMap ?? 'kube-proxy';
  const key = opts.configKey ?? 'config.conf';
  const dsName = opts.daemonSet ?? 'kube-proxy';
  const kube = new KubeClient(loadKubeConfig(kubeTargetOf(opts.kube, targets[0] ?? inv.hosts[0])));

  const [versionInfo, cm, ds, nodes, pods, services] = await Promise.all([
    kube.version(),
    kube.readConfigMap(namespace, cmName),
    kube.readDaemonSet(namespace, dsName).catch((e: Error) => e),
    kube.listNodes(),
    kube.listPods(namespace, opts.labelSelector ?? 'k8s-app=kube-proxy'),
    kube.listServices(),
  ]);
  const version = parseServerVersion(versionInfo);
  const text = cm.data?.[key];
  if (text === undefined) throw new Error(`ConfigMap ${namespace}/${cmName} has no key ${key} (it has: ${Object.keys(cm.data ?? {}).join(', ') || 'no data'})`);
  const conf = readProxyConfig(text, key);
  const changedAt = lastChange(cm.metadata);
  const changedBy = (cm.metadata?.managedFields ?? [])
    .filter((f) => f.time)
    .sort((a, b) => new Date(a.time as unknown as string).getTime() - new Date(b.time as unknown as string).getTime())
    .at(-1)?.manager;
  const addresses = serviceAddresses(services);
  const clusterFacts: ClusterFacts = { mode: conf.mode, ...(changedAt ? { changedAt } : {}), serviceIPs: addresses.ips, nodePorts: addresses.nodePorts, excludeCIDRs: conf.ipvs.excludeCIDRs };

  const targetNames = new Set(targets.map((h) => h.name));
  const mappings = kubeProxyNodes(nodes, pods.items, inv.hosts)
    // --limit narrows what is read over SSH; nodes outside the inventory are still listed (from the API)
    .filter((m) => !opts.limit || (m.host && targetNames.has(m.host.name)))
    .sort((a, b) => a.node.localeCompare(b.node));
  const forks = opts.forks ?? targets[0]?.run.forks ?? 10;
  const observations = await mapPool(mappings, forks, (m) => observeNode(m, conf, kube, namespace, sessions));
  const statuses = observations.map((o) => assessNode(o, clusterFacts));

  const warnings: string[] = [];
  // what the cluster's version says about the mode it is configured for (the deprecation of IPVS, a beta
  // nftables): the same judgement provision makes before a switch
  if (Object.hasOwn(MODES, conf.mode)) warnings.push(...clusterGateProblems(MODES[conf.mode as ProxyMode], version, conf.featureGates).warnings);
  for (const s of statuses) {
    const foreign = s.dataplane ? foreignVirtualServers(s.dataplane, clusterFacts) : [];
    if (foreign.length) warnings.push(`${s.node}: IPVS virtual servers that are not Services (left alone): ${foreign.join(', ')}`);
    if (s.dataplane?.ipvsError) warnings.push(`${s.node}: ${s.dataplane.ipvsError}`);
  }
  return {
    cluster: {
      server: kube.server,
      version: version.gitVersion,
      configMap: { name: `${namespace}/${cmName}`, mode: conf.mode, modeRaw: conf.modeRaw, ...(changedAt ? { changedAt } : {}), ...(changedBy ? { changedBy } : {}) },
      daemonSet: daemonSetSummary(`${namespace}/${dsName}`, ds),
    },
    nodes: statuses,
    verdict: verdictOf(statuses),
    warnings,
  };
}

function daemonSetSummary(name: string, ds: V1DaemonSet | Error): StatusReport['cluster']['daemonSet'] {
  if (ds instanceof Error) return { name, error: ds.message };
  const s = ds.status;
  return {
    name,
    desired: s?.desiredNumberScheduled ?? 0,
    ready: s?.numberReady ?? 0,
    unavailable: s?.numberUnavailable ?? 0,
    upToDate: s?.updatedNumberScheduled ?? 0,
  };
}

/** kube-proxy's own words for the mode it chose (every version's form). */
export function proxierFromLog(log: string): string | undefined {
  const m = /Using (\w+) [Pp]roxier/.exec(log);
  return m ? `Using ${m[1]} Proxier` : undefined;
}

/** The node script of `status`: facts (prerequisites), /proxyMode and the dataplane summary, one exec. */
export function statusScript(host: Host, metricsBindAddress: string): string {
  const ipvs = { ...host.settings, mode: 'ipvs' as const };
  const facts = factsScript({ packages: packagesToProbe(), modules: modulesToProbe(ipvs), files: MANAGED_FILES.map((f) => f.path) });
  return [facts, nodeCheckScript(metricsBindAddress), nodeReadScript('summary')].map((part) => `(\n${part}\n)`).join('\n');
}

function prerequisitesOf(host: Host, stdout: string): Prerequisites {
  try {
    const facts = parseFacts(stdout);
    const plan = planNode({ ...host, settings: { ...host.settings, mode: 'ipvs' } }, facts);
    if (plan.error) return { packagesMissing: [], modulesNotLoaded: [], filesNotPersisted: [], error: plan.error };
    return {
      packagesMissing: plan.install,
      modulesNotLoaded: plan.load,
      filesNotPersisted: plan.files.filter((f) => f.action !== 'none').map((f) => f.file.path),
    };
  } catch (e) {
    return { packagesMissing: [], modulesNotLoaded: [], filesNotPersisted: [], error: `facts: ${(e as Error).message}` };
  }
}

async function observeNode(m: NodeMapping, conf: ProxyConfig, kube: KubeClient, namespace: string, sessions: SessionPool): Promise<NodeObservation> {
  const o: NodeObservation = { node: m.node, ...(m.host ? { host: m.host.name } : {}), ...(m.pod ? { pod: podInfo(m.pod) } : {}) };
  const log = m.pod ? readProxierLine(kube, namespace, m.pod) : Promise.resolve({});
  if (m.host) {
    try {
      const session = await sessions.get(m.host);
      const res = await session.run(statusScript(m.host, conf.metricsBindAddress), { timeoutMs: 60_000 });
      const state = parseNodeCheck(res.stdout);
      o.runningMode = state.mode;
      if (state.error) o.modeError = state.error;
      o.prerequisites = prerequisitesOf(m.host, res.stdout);
      o.dataplane = parseDataplaneSummary(res.stdout) satisfies DataplaneSummary;
    } catch (e) {
      o.unreachable = (e as Error).message.split('\n')[0]!;
    }
  }
  Object.assign(o, await log);
  return o;
}

async function readProxierLine(kube: KubeClient, namespace: string, pod: V1Pod): Promise<{ proxierLine?: string; logError?: string }> {
  try {
    // The proxier line is among the first lines kube-proxy writes: the head of the log is enough.
    const log = await kube.podLog(namespace, pod.metadata!.name!, { limitBytes: 256 * 1024 });
    const line = proxierFromLog(log);
    return line ? { proxierLine: line } : { logError: 'no proxier line in the log' };
  } catch (e) {
    return { logError: (e as Error).message };
  }
}

// ---------------------------------------------------------------------------------------------------------
// Rendering

function dataplaneText(dp: DataplaneSummary | undefined): string {
  if (!dp) return '-';
  const parts: string[] = [];
  if (dp.ipvs !== null) parts.push(`ipvs ${dp.ipvs.length} VS`);
  const v4 = dp.iptables.v4;
  if (typeof v4 !== 'string') parts.push(`iptables ${v4.serviceRules} svc/${v4.chains} chains`);
  const v6 = dp.iptables.v6;
  if (typeof v6 !== 'string' && v6.chains > 0) parts.push(`ip6tables ${v6.serviceRules} svc/${v6.chains} chains`);
  if (dp.nftTables?.length) parts.push('nft kube-proxy');
  return parts.join(', ') || 'none';
}

function prereqText(p: Prerequisites | undefined): string {
  if (!p) return '-';
  if (p.error) return 'cannot';
  const missing = [p.packagesMissing.length && 'packages', p.modulesNotLoaded.length && 'modules', p.filesNotPersisted.length && 'persist'].filter(Boolean);
  return missing.length ? `missing ${missing.join('+')}` : 'ok';
}

export function formatStatus(r: StatusReport): string[] {
  const lines: string[] = [];
  const c = r.cluster;
  const modeShown = c.configMap.modeRaw === '' ? 'iptables (default)' : c.configMap.mode;
  lines.push(`Cluster    ${c.server}  ${c.version}`);
  lines.push(`ConfigMap  ${c.configMap.name}  mode: ${modeShown}${c.configMap.changedAt ? `  last changed ${c.configMap.changedAt}${c.configMap.changedBy ? ` by ${c.configMap.changedBy}` : ''}` : ''}`);
  const ds = c.daemonSet;
  lines.push('error' in ds ? `DaemonSet  ${ds.name}  ${ds.error}` : `DaemonSet  ${ds.name}  desired ${ds.desired}  ready ${ds.ready}  unavailable ${ds.unavailable}  up-to-date ${ds.upToDate}`);
  lines.push('');
  const rows = r.nodes.map((n) => [
    n.node,
    n.host ?? '(not in inventory)',
    n.pod?.name ?? '-',
    n.pod?.startedAt?.replace(/\.\d{3}Z$/, 'Z') ?? '-',
    n.unreachable ? 'UNREACHABLE' : n.runningMode ?? (n.host ? '?' : '-'),
    n.proxierLine ?? (n.logError ? '?' : '-'),
    n.drift.length ? 'RESTART PENDING' : n.problems.length ? 'PROBLEM' : 'in sync',
    prereqText(n.prerequisites),
    dataplaneText(n.dataplane),
    n.leftovers.length ? `${n.leftovers.length}` : '-',
  ]);
  lines.push(...formatTable(['NODE', 'HOST', 'POD', 'STARTED', 'RUNNING', 'LOG', 'STATE', 'IPVS PREREQS', 'DATAPLANE', 'LEFTOVERS'], rows));
  const details = r.nodes.filter((n) => n.drift.length || n.problems.length || n.leftovers.length || n.logError);
  if (details.length) lines.push('');
  for (const n of details) {
    for (const d of n.drift) lines.push(`${n.node}: drift: ${d}`);
    for (const p of n.problems) lines.push(`${n.node}: ${p}`);
    for (const l of n.leftovers) lines.push(`${n.node}: leftover of another mode: ${l}`);
    if (n.logError && n.pod) lines.push(`${n.node}: log: ${n.logError}`);
  }
  for (const w of r.warnings) lines.push(`warning: ${w}`);
  lines.push('');
  lines.push(
    r.verdict === 'consistent'
      ? `consistent: every kube-proxy runs ${c.configMap.mode}, as the ConfigMap says`
      : r.verdict === 'inconsistent'
        ? 'NOT consistent: see the lines above'
        : 'unknown: some nodes could not be read (see above); nothing inconsistent was seen on the others',
  );
  return lines;
}
