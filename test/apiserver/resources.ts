// The resources this server knows, with the verbs it implements for each. A verb kube-apiserver has but
// this server lacks answers 405, so a caller relying on it fails loudly instead of getting a half answer.

export type Verb = 'get' | 'list' | 'watch' | 'create' | 'update' | 'patch' | 'delete';

export interface ResourceType {
  group: string;
  version: string;
  plural: string;
  singular: string;
  kind: string;
  namespaced: boolean;
  verbs: Verb[];
  /** field selectors accepted besides metadata.name and metadata.namespace */
  fieldLabels: string[];
  shortNames?: string[];
  /** metadata.generation is kept (bumped on spec changes) */
  generation?: boolean;
  /** a write must not change `status` (it has a status subresource) */
  statusSubresource?: boolean;
}

const READ: Verb[] = ['get', 'list', 'watch'];
const ALL: Verb[] = ['get', 'list', 'watch', 'create', 'update', 'patch', 'delete'];

export const RESOURCES: ResourceType[] = [
  { group: '', version: 'v1', plural: 'namespaces', singular: 'namespace', kind: 'Namespace', namespaced: false, verbs: READ, fieldLabels: ['status.phase'], shortNames: ['ns'], statusSubresource: true },
  { group: '', version: 'v1', plural: 'nodes', singular: 'node', kind: 'Node', namespaced: false, verbs: READ, fieldLabels: ['spec.unschedulable'], shortNames: ['no'], statusSubresource: true },
  {
    group: '',
    version: 'v1',
    plural: 'pods',
    singular: 'pod',
    kind: 'Pod',
    namespaced: true,
    verbs: ['get', 'list', 'watch', 'delete'],
    fieldLabels: ['spec.nodeName', 'spec.restartPolicy', 'spec.schedulerName', 'spec.serviceAccountName', 'spec.hostNetwork', 'status.phase', 'status.podIP', 'status.nominatedNodeName'],
    shortNames: ['po'],
    statusSubresource: true,
  },
  { group: '', version: 'v1', plural: 'configmaps', singular: 'configmap', kind: 'ConfigMap', namespaced: true, verbs: ALL, fieldLabels: [], shortNames: ['cm'] },
  { group: '', version: 'v1', plural: 'services', singular: 'service', kind: 'Service', namespaced: true, verbs: READ, fieldLabels: ['spec.clusterIP', 'spec.type'], shortNames: ['svc'], statusSubresource: true },
  { group: '', version: 'v1', plural: 'endpoints', singular: 'endpoints', kind: 'Endpoints', namespaced: true, verbs: READ, fieldLabels: [], shortNames: ['ep'] },
  { group: 'apps', version: 'v1', plural: 'daemonsets', singular: 'daemonset', kind: 'DaemonSet', namespaced: true, verbs: READ, fieldLabels: [], shortNames: ['ds'], generation: true, statusSubresource: true },
  { group: 'discovery.k8s.io', version: 'v1', plural: 'endpointslices', singular: 'endpointslice', kind: 'EndpointSlice', namespaced: true, verbs: READ, fieldLabels: ['addressType'] },
  { group: 'coordination.k8s.io', version: 'v1', plural: 'leases', singular: 'lease', kind: 'Lease', namespaced: true, verbs: ALL, fieldLabels: [] },
];

export const apiVersionOf = (rt: ResourceType) => (rt.group ? `${rt.group}/${rt.version}` : rt.version);
/** "pods", "daemonsets.apps" */
export const keyOf = (rt: ResourceType) => (rt.group ? `${rt.plural}.${rt.group}` : rt.plural);

/** By "pods", "daemonsets", "daemonsets.apps", "leases.coordination.k8s.io" or the kind ("DaemonSet"). */
export function resolveResource(name: string): ResourceType {
  const rt = RESOURCES.find((r) => keyOf(r) === name || r.plural === name || r.kind === name);
  if (!rt) throw new Error(`unknown resource ${name} (known: ${RESOURCES.map(keyOf).join(', ')})`);
  return rt;
}

export function findResource(group: string, version: string, plural: string): ResourceType | undefined {
  return RESOURCES.find((r) => r.group === group && r.version === version && r.plural === plural);
}

// Discovery documents, so that generic clients (KubernetesObjectApi) can map kinds to paths.

export function coreVersions(serverAddress: string) {
  return { kind: 'APIVersions', versions: ['v1'], serverAddressByClientCIDRs: [{ clientCIDR: '0.0.0.0/0', serverAddress }] };
}

function groupVersions(group: string) {
  const versions = [...new Set(RESOURCES.filter((r) => r.group === group).map((r) => r.version))];
  const list = versions.map((v) => ({ groupVersion: `${group}/${v}`, version: v }));
  return { name: group, versions: list, preferredVersion: list[0]! };
}

export function apiGroupList() {
  const groups = [...new Set(RESOURCES.map((r) => r.group).filter((g) => g !== ''))];
  return { kind: 'APIGroupList', apiVersion: 'v1', groups: groups.map(groupVersions) };
}

export function apiGroup(group: string) {
  if (!RESOURCES.some((r) => r.group === group && group !== '')) return undefined;
  return { kind: 'APIGroup', apiVersion: 'v1', ...groupVersions(group) };
}

export function apiResourceList(group: string, version: string) {
  const rts = RESOURCES.filter((r) => r.group === group && r.version === version);
  if (rts.length === 0) return undefined;
  const resources: Record<string, unknown>[] = [];
  for (const r of rts) {
    resources.push({
      name: r.plural,
      singularName: r.singular,
      namespaced: r.namespaced,
      kind: r.kind,
      verbs: r.verbs,
      ...(r.shortNames ? { shortNames: r.shortNames } : {}),
    });
    if (r.plural === 'pods') resources.push({ name: 'pods/log', singularName: '', namespaced: true, kind: 'Pod', verbs: ['get'] });
  }
  return { kind: 'APIResourceList', apiVersion: 'v1', groupVersion: group ? `${group}/${version}` : version, resources };
}
