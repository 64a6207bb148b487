import type { V1Node, V1Pod } from '@kubernetes/client-node';
import type { Host, ProxyMode } from '../inventory/types.ts';
import { clusterGateProblems, MODES } from '../node/modes.ts';

// Preflight of the cluster phase: pure checks over what the API returned and what the node phase found.
// Its one hard rule: the ConfigMap never flips while a node that runs kube-proxy is unknown to the
// inventory or not ready for the target mode (since 1.26 kube-proxy exits instead of falling back).

export interface ServerVersion {
  major: number;
  minor: number;
  gitVersion: string;
}

/** "1", "31+" (EKS, GKE) -> 1, 31 */
export function parseServerVersion(v: { major?: string; minor?: string; gitVersion?: string }): ServerVersion {
  const major = Number.parseInt(v.major ?? '', 10);
  const minor = Number.parseInt(v.minor ?? '', 10);
  if (Number.isFinite(major) && Number.isFinite(minor)) return { major, minor, gitVersion: v.gitVersion ?? `v${major}.${minor}` };
  const m = /^v?(\d+)\.(\d+)/.exec(v.gitVersion ?? '');
  if (m) return { major: Number(m[1]), minor: Number(m[2]), gitVersion: v.gitVersion! };
  return { major: 0, minor: 0, gitVersion: v.gitVersion ?? 'unknown' };
}

export { IPVS_DEPRECATION } from '../node/modes.ts';

export interface NodeReadiness {
  /** the node phase (or a read-only check) found the host ready for the target mode */
  ready: boolean;
  /** why not, in one line */
  reason?: string;
}

export interface NodeMapping {
  node: string;
  internalIPs: string[];
  /** the kube-proxy pod on the node (the newest, when the DaemonSet is mid-rollout) */
  pod?: V1Pod;
  host?: Host;
}

export interface PreflightResult {
  errors: string[];
  warnings: string[];
  version: ServerVersion;
  /** nodes that run a kube-proxy pod, in recycle order */
  nodes: NodeMapping[];
}

export interface PreflightInput {
  version: ServerVersion;
  targetMode: ProxyMode;
  nodes: V1Node[];
  pods: V1Pod[];
  /** every host of the inventory (not only the --limit ones): a node is matched by name or InternalIP */
  hosts: Host[];
  /** readiness of each inventory host for the target mode, by host name */
  readiness: Map<string, NodeReadiness>;
  /** --canary NODE: recycled first */
  canary?: string;
  /** kubeProxyNodes(nodes, pods, hosts), when the caller already has it */
  mappings?: NodeMapping[];
  /** the kube-proxy configuration's featureGates (a mode may need one on older clusters) */
  featureGates?: Readonly<Record<string, boolean>>;
}

function internalIPs(node: V1Node): string[] {
  return (node.status?.addresses ?? []).filter((a) => a.type === 'InternalIP').map((a) => a.address);
}

/**
 * The nodes that run a kube-proxy pod (the newest, when the DaemonSet is mid-rollout; terminating pods
 * do not count), each with the inventory host it is, by node name or InternalIP; `host` is absent for a
 * node the inventory does not have.
 */
export function kubeProxyNodes(nodes: V1Node[], pods: V1Pod[], hosts: Host[]): NodeMapping[] {
  const byName = new Map(hosts.map((h) => [h.name, h]));
  const byAddress = new Map(hosts.map((h) => [h.connection.address, h]));
  const nodeInfo = new Map(nodes.map((n) => [n.metadata!.name!, n]));
  const podsByNode = new Map<string, V1Pod>();
  const created = (x?: V1Pod) => Date.parse(String(x?.metadata?.creationTimestamp ?? 0)) || 0;
  for (const p of pods) {
    const node = p.spec?.nodeName;
    if (!node || p.metadata?.deletionTimestamp) continue;
    const prev = podsByNode.get(node);
    if (!prev || created(p) > created(prev)) podsByNode.set(node, p);
  }
  return [...podsByNode].map(([node, pod]) => {
    const ips = nodeInfo.has(node) ? internalIPs(nodeInfo.get(node)!) : [];
    const host = byName.get(node) ?? ips.map((ip) => byAddress.get(ip)).find((h) => h !== undefined);
    return { node, internalIPs: ips, pod, ...(host ? { host } : {}) };
  });
}

export function preflight(input: PreflightInput): PreflightResult {
  const errors: string[] = [];
  const warnings: string[] = [];
  const v = input.version;
  const gate = clusterGateProblems(MODES[input.targetMode], v, input.featureGates ?? {});
  errors.push(...gate.errors);
  warnings.push(...gate.warnings);

  const mappings = [...(input.mappings ?? kubeProxyNodes(input.nodes, input.pods, input.hosts))];
  const missing: string[] = [];
  const unready: string[] = [];
  for (const { node, internalIPs: ips, host } of mappings) {
    if (!host) {
      missing.push(`${node}${ips.length ? ` (${ips.join(', ')})` : ''}`);
      continue;
    }
    const r = input.readiness.get(host.name);
    if (!r?.ready) unready.push(`${node} (host ${host.name}): ${r?.reason ?? 'not checked'}`);
  }
  if (missing.length) {
    errors.push(
      `${missing.length} node${missing.length > 1 ? 's run' : ' runs'} kube-proxy but ${missing.length > 1 ? 'are' : 'is'} not in the inventory ` +
        `(matched by node name or InternalIP): ${missing.join(', ')}; add ${missing.length > 1 ? 'them' : 'it'} so ${missing.length > 1 ? 'they are' : 'it is'} prepared first`,
    );
  }
  if (unready.length) {
    errors.push(`not ready for ${input.targetMode} mode, so the ConfigMap is left as it is: ${unready.join('; ')}`);
  }
  if (mappings.length === 0) errors.push('no kube-proxy pod found (label k8s-app=kube-proxy): is kube-proxy a DaemonSet on this cluster?');

  // Recycle order: inventory order, the canary first.
  const order = new Map(input.hosts.map((h, i) => [h.name, i]));
  mappings.sort((a, b) => (order.get(a.host?.name ?? '') ?? 1e9) - (order.get(b.host?.name ?? '') ?? 1e9) || a.node.localeCompare(b.node));
  if (input.canary) {
    const i = mappings.findIndex((m) => m.node === input.canary || m.host?.name === input.canary);
    if (i < 0) errors.push(`--canary ${input.canary}: no such node runs kube-proxy`);
    else mappings.unshift(...mappings.splice(i, 1));
  }
  return { errors, warnings, version: v, nodes: mappings };
}
