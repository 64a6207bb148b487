import {
  ApiException,
  AppsV1Api,
  CoordinationV1Api,
  CoreV1Api,
  DiscoveryV1Api,
  KubeConfig,
  PatchStrategy,
  setHeaderOptions,
  V1MicroTime,
  VersionApi,
  Watch,
  type V1DaemonSet,
  type V1Lease,
  type V1Pod,
} from '@kubernetes/client-node';
import { afterEach, describe, expect, test } from 'vitest';
import { IPVS_IPSET_MISSING, kubeadmProxyConfig, memoryRuntime, startTestApiServer, type TestApiServer, type TestApiServerOptions } from '../apiserver/server.ts';

// The test API server, driven through the real @kubernetes/client-node: what code written against it
// meets must be what it would meet on a real cluster (paths, codes, Status bodies, watch semantics).

const NODES = [
  { name: 'node1', internalIP: '10.0.0.1' },
  { name: 'node2', internalIP: '10.0.0.2' },
  { name: 'node3', internalIP: '10.0.0.3' },
];
const NS = 'kube-system';
const PODS = `/api/v1/namespaces/${NS}/pods`;
const KP = 'k8s-app=kube-proxy';

const servers: TestApiServer[] = [];
afterEach(async () => {
  await Promise.all(servers.splice(0).map((s) => s.close()));
});

async function start(opts: Partial<TestApiServerOptions> = {}) {
  const server = await startTestApiServer({ nodes: NODES, recreateDelayMs: 40, readyDelayMs: 40, terminationDelayMs: 60, scheduleDelayMs: 10, ...opts });
  servers.push(server);
  const kc = new KubeConfig();
  kc.loadFromFile(server.kubeconfigPath);
  return {
    server,
    kc,
    core: kc.makeApiClient(CoreV1Api),
    apps: kc.makeApiClient(AppsV1Api),
    coord: kc.makeApiClient(CoordinationV1Api),
  };
}

/** the ApiException a call ends in, with its Status body parsed */
async function apiError(p: Promise<unknown>): Promise<{ code: number; status: { reason?: string; message?: string; code?: number; details?: Record<string, unknown> } }> {
  try {
    await p;
  } catch (e) {
    if (e instanceof ApiException) return { code: e.code, status: JSON.parse(String(e.body)) };
    throw e;
  }
  throw new Error('the call succeeded; a failure was expected');
}

interface Seen {
  type: string;
  object: any;
}

/**
 * Watches `path` until `until` returns a value (Watch has no deadline of its own, so this one has).
 * Rejects when the server ends the watch first.
 */
function watchUntil<T>(kc: KubeConfig, path: string, query: Record<string, string | number | boolean | undefined>, until: (seen: Seen[]) => T | undefined, timeoutMs = 5000): Promise<{ value: T; seen: Seen[] }> {
  return new Promise((resolve, reject) => {
    const seen: Seen[] = [];
    let ctrl: AbortController | undefined;
    let settled = false;
    const finish = (fn: () => void) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      ctrl?.abort();
      fn();
    };
    const timer = setTimeout(
      () => finish(() => reject(new Error(`watch ${path}: not done within ${timeoutMs} ms; saw ${seen.map((s) => `${s.type} ${s.object?.metadata?.name}`).join(', ')}`))),
      timeoutMs,
    );
    new Watch(kc)
      .watch(
        path,
        query,
        (type, object) => {
          seen.push({ type, object });
          const v = until(seen);
          if (v !== undefined) finish(() => resolve({ value: v, seen }));
        },
        (err) => finish(() => reject(new Error(`watch ${path} ended first: ${err ?? 'closed by the server'}`))),
      )
      .then(
        (c) => {
          ctrl = c;
          if (settled) c.abort();
        },
        (e) => finish(() => reject(e)),
      );
  });
}

/** Events of one watch until the server ends it. */
function watchToEnd(kc: KubeConfig, path: string, query: Record<string, string | number | boolean | undefined>, timeoutMs = 5000): Promise<{ seen: Seen[]; err: unknown }> {
  return new Promise((resolve, reject) => {
    const seen: Seen[] = [];
    const timer = setTimeout(() => reject(new Error(`watch ${path} still open after ${timeoutMs} ms`)), timeoutMs);
    void new Watch(kc).watch(
      path,
      query,
      (type, object) => seen.push({ type, object }),
      (err) => {
        clearTimeout(timer);
        resolve({ seen, err });
      },
    );
  });
}

const isReady = (p: V1Pod) => (p.status?.conditions ?? []).some((c) => c.type === 'Ready' && c.status === 'True');
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function kubeProxyPod(core: CoreV1Api, node: string): Promise<V1Pod> {
  const list = await core.listNamespacedPod({ namespace: NS, labelSelector: KP, fieldSelector: `spec.nodeName=${node}` });
  expect(list.items).toHaveLength(1);
  return list.items[0]!;
}

/** Deletes the kube-proxy pod of `node` and waits for a Ready replacement there. */
async function recycle(kc: KubeConfig, core: CoreV1Api, node: string): Promise<{ old: V1Pod; replacement: V1Pod; seen: Seen[] }> {
  const old = await kubeProxyPod(core, node);
  const list = await core.listNamespacedPod({ namespace: NS, labelSelector: KP, fieldSelector: `spec.nodeName=${node}` });
  const waiting = watchUntil(kc, PODS, { labelSelector: KP, fieldSelector: `spec.nodeName=${node}`, resourceVersion: list.metadata!.resourceVersion }, (seen) => {
    const last = seen[seen.length - 1]!;
    return last.type !== 'DELETED' && last.object.metadata.name !== old.metadata!.name && isReady(last.object) ? (last.object as V1Pod) : undefined;
  });
  const deleted = await core.deleteNamespacedPod({ namespace: NS, name: old.metadata!.name! });
  expect(deleted.metadata?.deletionTimestamp).toBeInstanceOf(Date);
  const { value: replacement, seen } = await waiting;
  return { old, replacement, seen };
}

describe('discovery and reads', () => {
  test('version and nodes, through the written kubeconfig', async () => {
    const { kc, core, server } = await start({ version: { major: '1', minor: '30', gitVersion: 'v1.30.8' } });
    expect(kc.getCurrentContext()).toBe('test');
    expect(kc.getCurrentCluster()).toMatchObject({ server: server.url, skipTLSVerify: true });
    const v = await kc.makeApiClient(VersionApi).getCode();
    expect(v).toMatchObject({ major: '1', minor: '30', gitVersion: 'v1.30.8' });

    const nodes = await core.listNode({});
    expect(nodes.items.map((n) => n.metadata!.name)).toEqual(['node1', 'node2', 'node3']);
    for (const n of nodes.items) {
      const ip = NODES.find((x) => x.name === n.metadata!.name)!.internalIP;
      expect(n.status!.addresses).toEqual([
        { type: 'InternalIP', address: ip },
        { type: 'Hostname', address: n.metadata!.name },
      ]);
      expect(n.status!.conditions!.find((c) => c.type === 'Ready')?.status).toBe('True');
    }
    const node1 = await core.readNode({ name: 'node1' });
    expect(node1.metadata!.labels).toHaveProperty('node-role.kubernetes.io/control-plane', '');
    expect(node1.status!.nodeInfo!.kubeletVersion).toBe('v1.30.8');
    // list items carry no kind, as kube-apiserver serves them
    expect(nodes.items[0]!.kind).toBeUndefined();
  });

  test('the default version is 1.31', async () => {
    const { kc } = await start();
    expect(await kc.makeApiClient(VersionApi).getCode()).toMatchObject({ major: '1', minor: '31', gitVersion: 'v1.31.4' });
  });

  test('unknown paths, methods, objects and credentials answer Status objects', async () => {
    const { server, core, apps } = await start();
    const auth = { Authorization: `Bearer ${server.token}` };

    const r404 = await fetch(`${server.url}/api/v1/namespaces/${NS}/widgets`, { headers: auth });
    expect(r404.status).toBe(404);
    expect(r404.headers.get('content-type')).toBe('application/json');
    expect(await r404.json()).toEqual({
      kind: 'Status',
      apiVersion: 'v1',
      metadata: {},
      status: 'Failure',
      message: 'the server could not find the requested resource',
      reason: 'NotFound',
      details: {},
      code: 404,
    });

    const r405 = await fetch(`${server.url}${PODS}`, { method: 'POST', headers: { ...auth, 'Content-Type': 'application/json' }, body: '{}' });
    expect(r405.status).toBe(405);
    expect(await r405.json()).toMatchObject({ reason: 'MethodNotAllowed', code: 405 });

    const r401 = await fetch(`${server.url}${PODS}`, { headers: { Authorization: 'Bearer wrong' } });
    expect(r401.status).toBe(401);
    expect(await r401.json()).toMatchObject({ reason: 'Unauthorized' });

    const missing = await apiError(core.readNamespacedConfigMap({ namespace: NS, name: 'nope' }));
    expect(missing.code).toBe(404);
    expect(missing.status).toMatchObject({ reason: 'NotFound', message: 'configmaps "nope" not found', details: { name: 'nope', kind: 'configmaps' } });

    const ds = await apiError(apps.readNamespacedDaemonSet({ namespace: NS, name: 'nope' }));
    expect(ds.status).toMatchObject({ message: 'daemonsets.apps "nope" not found', details: { name: 'nope', group: 'apps', kind: 'daemonsets' } });
  });

  test('the kubernetes Service and its EndpointSlice', async () => {
    const { kc, core } = await start({ nodes: [{ name: 'cp1', internalIP: '10.0.1.1', controlPlane: true }, ...NODES] });
    const svc = await core.readNamespacedService({ namespace: 'default', name: 'kubernetes' });
    expect(svc.spec).toMatchObject({ clusterIP: '10.96.0.1', type: 'ClusterIP', ports: [{ name: 'https', port: 443, targetPort: 6443 }] });
    const slices = await kc.makeApiClient(DiscoveryV1Api).listNamespacedEndpointSlice({ namespace: 'default', labelSelector: 'kubernetes.io/service-name=kubernetes' });
    expect(slices.items).toHaveLength(1);
    expect(slices.items[0]!.endpoints.map((e) => e.addresses)).toEqual([['10.0.1.1']]);
  });
});

describe('the kube-proxy ConfigMap', () => {
  test('kubeadm-shaped, replaced with resourceVersion checks', async () => {
    const { core } = await start();
    const cm = await core.readNamespacedConfigMap({ namespace: NS, name: 'kube-proxy' });
    expect(Object.keys(cm.data!).sort()).toEqual(['config.conf', 'kubeconfig.conf']);
    expect(cm.data!['config.conf']).toContain('mode: ""');
    expect(cm.data!['config.conf']).toContain('kind: KubeProxyConfiguration');
    expect(cm.data!['kubeconfig.conf']).toContain('server: https://10.0.0.1:6443');

    const edited = { ...cm, data: { ...cm.data, 'config.conf': cm.data!['config.conf']!.replace('mode: ""', 'mode: "ipvs"') } };
    const written = await core.replaceNamespacedConfigMap({ namespace: NS, name: 'kube-proxy', body: edited });
    expect(Number(written.metadata!.resourceVersion)).toBeGreaterThan(Number(cm.metadata!.resourceVersion));
    expect(written.metadata!.uid).toBe(cm.metadata!.uid);

    // the object read before the write is now stale
    const stale = await apiError(core.replaceNamespacedConfigMap({ namespace: NS, name: 'kube-proxy', body: edited }));
    expect(stale.code).toBe(409);
    expect(stale.status).toMatchObject({
      reason: 'Conflict',
      code: 409,
      message: 'Operation cannot be fulfilled on configmaps "kube-proxy": the object has been modified; please apply your changes to the latest version and try again',
      details: { name: 'kube-proxy', kind: 'configmaps' },
    });

    // writing what is stored changes nothing, as in kube-apiserver
    const again = await core.replaceNamespacedConfigMap({ namespace: NS, name: 'kube-proxy', body: written });
    expect(again.metadata!.resourceVersion).toBe(written.metadata!.resourceVersion);

    // a name that is not the URL's
    const renamed = await apiError(core.replaceNamespacedConfigMap({ namespace: NS, name: 'kube-proxy', body: { ...written, metadata: { ...written.metadata, name: 'other' } } }));
    expect(renamed.code).toBe(400);
  });

  test('a concurrent edit (made in the store) makes the next PUT conflict', async () => {
    const { core, server } = await start();
    const cm = await core.readNamespacedConfigMap({ namespace: NS, name: 'kube-proxy' });
    server.store.mutate('configmaps', NS, 'kube-proxy', (o) => {
      o.metadata.annotations = { ...o.metadata.annotations, 'edited-by': 'someone-else' };
    });
    const e = await apiError(core.replaceNamespacedConfigMap({ namespace: NS, name: 'kube-proxy', body: cm }));
    expect(e.status.reason).toBe('Conflict');
    expect(server.events.some((ev) => ev.type === 'configmap-updated')).toBe(true);
  });

  test('merge, strategic and JSON patches', async () => {
    const { core } = await start();
    const merge = await core.patchNamespacedConfigMap(
      { namespace: NS, name: 'kube-proxy', body: { data: { extra: 'one' } } },
      setHeaderOptions('Content-Type', PatchStrategy.MergePatch),
    );
    expect(merge.data!.extra).toBe('one');
    expect(merge.data!['config.conf']).toContain('KubeProxyConfiguration');

    const strategic = await core.patchNamespacedConfigMap(
      { namespace: NS, name: 'kube-proxy', body: { data: { extra: null } } },
      setHeaderOptions('Content-Type', PatchStrategy.StrategicMergePatch),
    );
    expect(strategic.data).not.toHaveProperty('extra');

    // client-node's default patch type is JSON Patch
    const json = await core.patchNamespacedConfigMap({
      namespace: NS,
      name: 'kube-proxy',
      body: [
        { op: 'test', path: '/metadata/resourceVersion', value: strategic.metadata!.resourceVersion },
        { op: 'add', path: '/data/extra', value: 'two' },
      ],
    });
    expect(json.data!.extra).toBe('two');

    const failedTest = await apiError(
      core.patchNamespacedConfigMap({ namespace: NS, name: 'kube-proxy', body: [{ op: 'test', path: '/data/extra', value: 'one' }] }),
    );
    expect(failedTest.code).toBe(422);

    // an object sent as JSON Patch is refused as kube-apiserver refuses it
    const notAList = await apiError(core.patchNamespacedConfigMap({ namespace: NS, name: 'kube-proxy', body: { data: { x: 'y' } } }));
    expect(notAList.code).toBe(400);
    expect(notAList.status.message).toBe('json: cannot unmarshal object into Go value of type jsonpatch.Patch');

    // a resourceVersion in a merge patch is a precondition
    const stale = await apiError(
      core.patchNamespacedConfigMap(
        { namespace: NS, name: 'kube-proxy', body: { metadata: { resourceVersion: merge.metadata!.resourceVersion }, data: { extra: 'three' } } },
        setHeaderOptions('Content-Type', PatchStrategy.MergePatch),
      ),
    );
    expect(stale.code).toBe(409);

    const apply = await apiError(
      core.patchNamespacedConfigMap({ namespace: NS, name: 'kube-proxy', body: { data: {} } }, setHeaderOptions('Content-Type', PatchStrategy.ServerSideApply)),
    );
    expect(apply.code).toBe(415);

    const notString = await apiError(
      core.patchNamespacedConfigMap({ namespace: NS, name: 'kube-proxy', body: { data: { n: 1 } } }, setHeaderOptions('Content-Type', PatchStrategy.MergePatch)),
    );
    expect(notString.code).toBe(400);
  });
});

describe('kube-proxy pods', () => {
  test('listed by label and field selectors, paged with limit/continue', async () => {
    const { core } = await start();
    const all = await core.listNamespacedPod({ namespace: NS, labelSelector: KP });
    expect(all.items).toHaveLength(3);
    expect(new Set(all.items.map((p) => p.spec!.nodeName))).toEqual(new Set(['node1', 'node2', 'node3']));
    for (const p of all.items) {
      expect(p.metadata!.name).toMatch(/^kube-proxy-[bcdfghjklmnpqrstvwxz2456789]{5}$/);
      expect(p.metadata!.ownerReferences).toEqual([expect.objectContaining({ kind: 'DaemonSet', name: 'kube-proxy', controller: true })]);
      expect(p.status!.phase).toBe('Running');
      expect(isReady(p)).toBe(true);
      expect(p.status!.containerStatuses![0]).toMatchObject({ name: 'kube-proxy', ready: true, restartCount: 0 });
      expect(p.status!.containerStatuses![0]!.state!.running).toBeDefined();
    }

    const onNode2 = await core.listNamespacedPod({ namespace: NS, labelSelector: KP, fieldSelector: 'spec.nodeName=node2' });
    expect(onNode2.items.map((p) => p.spec!.nodeName)).toEqual(['node2']);
    const byName = await core.listNamespacedPod({ namespace: NS, fieldSelector: `metadata.name=${onNode2.items[0]!.metadata!.name}` });
    expect(byName.items).toHaveLength(1);
    expect((await core.listNamespacedPod({ namespace: NS, labelSelector: 'k8s-app!=kube-proxy' })).items).toHaveLength(0);
    expect((await core.listNamespacedPod({ namespace: NS, labelSelector: `${KP},tier=none` })).items).toHaveLength(0);
    expect((await core.listNamespacedPod({ namespace: 'default', labelSelector: KP })).items).toHaveLength(0);

    const badField = await apiError(core.listNamespacedPod({ namespace: NS, fieldSelector: 'spec.host=node2' }));
    expect(badField.code).toBe(400);
    expect(badField.status).toMatchObject({ reason: 'BadRequest', message: 'field label not supported: spec.host' });

    const page1 = await core.listNamespacedPod({ namespace: NS, labelSelector: KP, limit: 2 });
    expect(page1.items).toHaveLength(2);
    expect(page1.metadata!.remainingItemCount).toBe(1);
    const page2 = await core.listNamespacedPod({ namespace: NS, labelSelector: KP, limit: 2, _continue: page1.metadata!._continue! });
    expect(page2.items).toHaveLength(1);
    expect(page2.metadata!._continue).toBeUndefined();
    expect([...page1.items, ...page2.items].map((p) => p.metadata!.name).sort()).toEqual(all.items.map((p) => p.metadata!.name).sort());
  });

  test('a deleted pod is replaced on its node, started with the current config.conf, and becomes Ready', async () => {
    const { kc, core, apps, server } = await start();
    const ds0 = await apps.readNamespacedDaemonSet({ namespace: NS, name: 'kube-proxy' });
    expect(ds0.spec!.updateStrategy).toMatchObject({ type: 'RollingUpdate', rollingUpdate: { maxUnavailable: 1 } });
    expect(ds0.status).toMatchObject({ desiredNumberScheduled: 3, currentNumberScheduled: 3, numberReady: 3, numberAvailable: 3, updatedNumberScheduled: 3 });
    // omitempty: a zero numberUnavailable is absent, as kube-apiserver serves it
    expect(ds0.status!.numberUnavailable).toBeUndefined();

    await core.patchNamespacedConfigMap(
      { namespace: NS, name: 'kube-proxy', body: { data: { 'config.conf': kubeadmProxyConfig({ mode: 'ipvs' }) } } },
      setHeaderOptions('Content-Type', PatchStrategy.MergePatch),
    );

    const dsStatuses: number[] = [];
    const dsWatch = watchUntil(kc, `/apis/apps/v1/namespaces/${NS}/daemonsets`, { resourceVersion: ds0.metadata!.resourceVersion }, (seen) => {
      const ds = seen[seen.length - 1]!.object as V1DaemonSet;
      dsStatuses.push(ds.status!.numberUnavailable ?? 0);
      return dsStatuses.includes(1) && dsStatuses[dsStatuses.length - 1] === 0 ? true : undefined;
    });

    const { old, replacement, seen } = await recycle(kc, core, 'node2');
    expect(replacement.metadata!.name).not.toBe(old.metadata!.name);
    expect(replacement.spec!.nodeName).toBe('node2');
    expect(replacement.status!.phase).toBe('Running');
    // on a watch filtered by node, the replacement enters when it is bound: ADDED, already with its node
    const firstOfNew = seen.find((s) => s.object.metadata.name === replacement.metadata!.name)!;
    expect(firstOfNew.type).toBe('ADDED');
    expect(firstOfNew.object.spec.nodeName).toBe('node2');
    // the old pod: marked for deletion, stopped, then gone
    const ofOld = seen.filter((s) => s.object.metadata.name === old.metadata!.name).map((s) => s.type);
    expect(ofOld[ofOld.length - 1]).toBe('DELETED');

    await dsWatch;
    expect(Math.max(...dsStatuses)).toBe(1);
    const ds1 = await apps.readNamespacedDaemonSet({ namespace: NS, name: 'kube-proxy' });
    expect(ds1.status).toMatchObject({ numberReady: 3, numberAvailable: 3 });

    const log = await core.readNamespacedPodLog({ namespace: NS, name: replacement.metadata!.name!, container: 'kube-proxy' });
    expect(log).toMatch(/^I\d{4} \d{2}:\d{2}:\d{2}\.\d{6} {7}1 server_linux\.go:\d+\] "Using ipvs Proxier"$/m);
    const untouched = await kubeProxyPod(core, 'node1');
    expect(await core.readNamespacedPodLog({ namespace: NS, name: untouched.metadata!.name! })).toContain('"Using iptables Proxier"');

    const gone = await apiError(core.readNamespacedPod({ namespace: NS, name: old.metadata!.name! }));
    expect(gone.code).toBe(404);
    expect(server.events.map((e) => e.type)).toEqual(expect.arrayContaining(['pod-deleting', 'pod-deleted', 'pod-created', 'pod-ready']));
  });

  test('a node that cannot run the mode crash-loops with kube-proxy\'s error in its log', async () => {
    const runtime = memoryRuntime({ crash: (node, config) => (node === 'node2' && config.mode === 'ipvs' ? IPVS_IPSET_MISSING : undefined) });
    const { kc, core, apps, server } = await start({ runtime, crashLoopIntervalMs: 80 });
    await core.patchNamespacedConfigMap(
      { namespace: NS, name: 'kube-proxy', body: { data: { 'config.conf': kubeadmProxyConfig({ mode: 'ipvs' }) } } },
      setHeaderOptions('Content-Type', PatchStrategy.MergePatch),
    );
    const old = await kubeProxyPod(core, 'node2');
    const list = await core.listNamespacedPod({ namespace: NS, labelSelector: KP });
    const waiting = watchUntil(kc, PODS, { labelSelector: KP, resourceVersion: list.metadata!.resourceVersion }, (seen) => {
      const p = seen[seen.length - 1]!.object as V1Pod;
      const cs = p.status?.containerStatuses?.[0];
      return p.spec?.nodeName === 'node2' && cs?.state?.waiting?.reason === 'CrashLoopBackOff' && cs.restartCount >= 2 ? p : undefined;
    });
    await core.deleteNamespacedPod({ namespace: NS, name: old.metadata!.name! });
    const { value: crashing } = await waiting;
    expect(crashing.status!.phase).toBe('Running');
    expect(isReady(crashing)).toBe(false);
    expect(crashing.status!.containerStatuses![0]!.lastState!.terminated).toMatchObject({ exitCode: 1, reason: 'Error' });

    const name = crashing.metadata!.name!;
    const log = await core.readNamespacedPodLog({ namespace: NS, name, container: 'kube-proxy', tailLines: 2 });
    expect(log.split('\n').filter(Boolean)).toHaveLength(2);
    expect(log).toMatch(/^E\d{4} [\d:.]+ +1 server\.go:\d+\] "Error running ProxyServer" err="can't use the IPVS proxier: error getting ipset version, error: executable file not found in \$PATH"$/m);
    const previous = await core.readNamespacedPodLog({ namespace: NS, name, previous: true });
    expect(previous).toContain('Error running ProxyServer');

    const ds = await apps.readNamespacedDaemonSet({ namespace: NS, name: 'kube-proxy' });
    expect(ds.status).toMatchObject({ desiredNumberScheduled: 3, currentNumberScheduled: 3, numberReady: 2, numberAvailable: 2, numberUnavailable: 1 });
    expect(runtime.starts).toContainEqual({ node: 'node2', mode: 'ipvs', ready: false });
    expect(server.events.find((e) => e.type === 'pod-crashloop')).toMatchObject({ node: 'node2', pod: name });

    // the other nodes run ipvs fine
    const { replacement } = await recycle(kc, core, 'node3');
    expect(await core.readNamespacedPodLog({ namespace: NS, name: replacement.metadata!.name! })).toContain('"Using ipvs Proxier"');
  });

  test('pod logs: tailLines, wrong container, a container that never started', async () => {
    const { kc, core, server } = await start({ configConf: kubeadmProxyConfig({ mode: 'ipvs' }) });
    const p = await kubeProxyPod(core, 'node1');
    const name = p.metadata!.name!;
    const full = await core.readNamespacedPodLog({ namespace: NS, name });
    expect(full).toContain('"Using ipvs Proxier"');
    expect(full).toContain('"Successfully retrieved node IP(s)" IPs=["10.0.0.1"]');
    expect(full.endsWith('\n')).toBe(true);
    const tail = await core.readNamespacedPodLog({ namespace: NS, name, tailLines: 1 });
    expect(tail).toBe(`${full.trimEnd().split('\n').pop()}\n`);

    const wrong = await apiError(core.readNamespacedPodLog({ namespace: NS, name, container: 'sidecar' }));
    expect(wrong.code).toBe(400);
    expect(wrong.status.message).toBe(`container sidecar is not valid for pod ${name}`);
    const noPrevious = await apiError(core.readNamespacedPodLog({ namespace: NS, name, previous: true }));
    expect(noPrevious.status.message).toBe(`previous terminated container "kube-proxy" in pod "${name}" not found`);

    server.faults.neverReady('node3');
    const old = await kubeProxyPod(core, 'node3');
    const list = await core.listNamespacedPod({ namespace: NS, labelSelector: KP });
    const waiting = watchUntil(kc, PODS, { labelSelector: KP, resourceVersion: list.metadata!.resourceVersion }, (seen) => {
      const o = seen[seen.length - 1]!.object as V1Pod;
      return o.metadata!.name !== old.metadata!.name && o.spec?.nodeName === 'node3' && o.status?.containerStatuses?.[0]?.state?.waiting?.reason === 'ContainerCreating' ? o : undefined;
    });
    await core.deleteNamespacedPod({ namespace: NS, name: old.metadata!.name! });
    const { value: stuck } = await waiting;
    await sleep(150);
    const still = await core.readNamespacedPod({ namespace: NS, name: stuck.metadata!.name! });
    expect(still.status!.phase).toBe('Pending');
    const notStarted = await apiError(core.readNamespacedPodLog({ namespace: NS, name: stuck.metadata!.name! }));
    expect(notStarted.status.message).toBe(`container "kube-proxy" in pod "${stuck.metadata!.name}" is waiting to start: ContainerCreating`);
  });
});

describe('watches', () => {
  test('from a resourceVersion: only later events; without one: the current objects first', async () => {
    const { kc, core } = await start();
    const list = await core.listNamespacedPod({ namespace: NS, labelSelector: KP });
    const cm = await core.readNamespacedConfigMap({ namespace: NS, name: 'kube-proxy' });
    const later = watchUntil(kc, `/api/v1/namespaces/${NS}/configmaps`, { resourceVersion: list.metadata!.resourceVersion }, (seen) => (seen.length >= 1 ? seen : undefined));
    await core.replaceNamespacedConfigMap({ namespace: NS, name: 'kube-proxy', body: { ...cm, data: { ...cm.data, extra: 'x' } } });
    const { value } = await later;
    expect(value.map((s) => s.type)).toEqual(['MODIFIED']);
    expect(value[0]!.object.kind).toBe('ConfigMap');

    const fresh = await watchUntil(kc, PODS, { labelSelector: KP }, (seen) => (seen.length === 3 ? seen : undefined));
    expect(fresh.value.map((s) => s.type)).toEqual(['ADDED', 'ADDED', 'ADDED']);
  });

  test('a resourceVersion older than the history gets a 410 Expired ERROR event, then the stream ends', async () => {
    const { kc, core, server } = await start({ watchHistory: 5 });
    const cm = await core.readNamespacedConfigMap({ namespace: NS, name: 'kube-proxy' });
    const rv = cm.metadata!.resourceVersion!;
    for (let i = 0; i < 8; i++) {
      server.store.mutate('configmaps', NS, 'kube-proxy', (o) => {
        o.data!.counter = String(i);
      });
    }
    const { seen, err } = await watchToEnd(kc, `/api/v1/namespaces/${NS}/configmaps`, { resourceVersion: rv });
    expect(err).toBeNull();
    expect(seen).toHaveLength(1);
    expect(seen[0]!.type).toBe('ERROR');
    expect(seen[0]!.object).toMatchObject({ kind: 'Status', status: 'Failure', reason: 'Expired', code: 410 });
    expect(seen[0]!.object.message).toMatch(/^too old resource version: \d+ \(\d+\)$/);

    // compaction does the same to any older resourceVersion
    const pods = await core.listNamespacedPod({ namespace: NS });
    const some = pods.items[0]!.metadata!;
    server.store.mutate('pods', NS, some.name!, (o) => {
      o.metadata.annotations = { touched: 'yes' };
    });
    server.store.compact();
    const compacted = await watchToEnd(kc, PODS, { resourceVersion: pods.metadata!.resourceVersion });
    expect(compacted.seen.map((s) => [s.type, s.object.code])).toEqual([['ERROR', 410]]);
  });

  test('timeoutSeconds ends the stream, after a BOOKMARK when asked for', async () => {
    const { kc, core } = await start();
    const list = await core.listNamespacedPod({ namespace: NS });
    const t = Date.now();
    const { seen, err } = await watchToEnd(kc, PODS, { resourceVersion: list.metadata!.resourceVersion, timeoutSeconds: 1, allowWatchBookmarks: true });
    expect(err).toBeNull();
    expect(Date.now() - t).toBeGreaterThanOrEqual(900);
    expect(seen.map((s) => s.type)).toEqual(['BOOKMARK']);
    expect(Number(seen[0]!.object.metadata.resourceVersion)).toBeGreaterThanOrEqual(Number(list.metadata!.resourceVersion));
  });
});

describe('leases', () => {
  const lease = (holder: string, renewTime: Date): V1Lease => ({
    metadata: { name: 'kube-proxy-mode', namespace: NS },
    spec: { holderIdentity: holder, leaseDurationSeconds: 30, acquireTime: renewTime, renewTime },
  });

  test('create, conflict on create and on a stale update, delete', async () => {
    const { coord } = await start();
    const made = await coord.createNamespacedLease({ namespace: NS, body: lease('me', new V1MicroTime()) });
    expect(made.metadata!.uid).toBeDefined();
    expect(made.spec!.holderIdentity).toBe('me');

    const twice = await apiError(coord.createNamespacedLease({ namespace: NS, body: lease('you', new V1MicroTime()) }));
    expect(twice.code).toBe(409);
    expect(twice.status).toMatchObject({ reason: 'AlreadyExists', message: 'leases.coordination.k8s.io "kube-proxy-mode" already exists' });

    const renewed = await coord.replaceNamespacedLease({ namespace: NS, name: 'kube-proxy-mode', body: { ...made, spec: { ...made.spec, renewTime: new V1MicroTime() } } });
    const stale = await apiError(coord.replaceNamespacedLease({ namespace: NS, name: 'kube-proxy-mode', body: { ...made, spec: { ...made.spec, holderIdentity: 'you' } } }));
    expect(stale.code).toBe(409);
    expect(stale.status.reason).toBe('Conflict');
    expect(stale.status.message).toContain('leases.coordination.k8s.io "kube-proxy-mode"');

    const wrongPrecondition = await apiError(
      coord.deleteNamespacedLease({ namespace: NS, name: 'kube-proxy-mode', body: { preconditions: { resourceVersion: made.metadata!.resourceVersion } } }),
    );
    expect(wrongPrecondition.code).toBe(409);

    const deleted = await coord.deleteNamespacedLease({ namespace: NS, name: 'kube-proxy-mode', body: { preconditions: { resourceVersion: renewed.metadata!.resourceVersion } } });
    expect(deleted).toMatchObject({ kind: 'Status', status: 'Success', details: { name: 'kube-proxy-mode', group: 'coordination.k8s.io', kind: 'leases' } });
    expect((await apiError(coord.readNamespacedLease({ namespace: NS, name: 'kube-proxy-mode' }))).code).toBe(404);
  });

  test('a MicroTime with millisecond precision (a plain Date) is refused, as kube-apiserver does', async () => {
    const { coord } = await start();
    const e = await apiError(coord.createNamespacedLease({ namespace: NS, body: lease('me', new Date('2025-01-02T03:04:05.678Z')) }));
    expect(e.code).toBe(400);
    expect(e.status.message).toBe(
      'Lease in version "v1" cannot be handled as a Lease: parsing time "2025-01-02T03:04:05.678Z" as "2006-01-02T15:04:05.000000Z07:00": cannot parse ".678Z" as ".000000"',
    );
  });
});

describe('what the server records', () => {
  test('every request, with its status and body', async () => {
    const { core, server } = await start();
    await core.readNamespacedConfigMap({ namespace: NS, name: 'kube-proxy' });
    await core.patchNamespacedConfigMap({ namespace: NS, name: 'kube-proxy', body: { data: { a: 'b' } } }, setHeaderOptions('Content-Type', PatchStrategy.MergePatch));
    await apiError(core.readNamespacedConfigMap({ namespace: NS, name: 'missing' }));
    await core.listNamespacedPod({ namespace: NS, labelSelector: KP, fieldSelector: 'spec.nodeName=node1' });
    const r = server.requests.map(({ method, path, status }) => `${method} ${path} ${status}`);
    expect(r).toEqual([
      `GET /api/v1/namespaces/${NS}/configmaps/kube-proxy 200`,
      `PATCH /api/v1/namespaces/${NS}/configmaps/kube-proxy 200`,
      `GET /api/v1/namespaces/${NS}/configmaps/missing 404`,
      `GET /api/v1/namespaces/${NS}/pods 200`,
    ]);
    expect(server.requests[1]).toMatchObject({ contentType: 'application/merge-patch+json', body: { data: { a: 'b' } } });
    expect(server.requests[3]!.query).toEqual({ labelSelector: KP, fieldSelector: 'spec.nodeName=node1' });
    expect(server.requests.every((q, i) => i === 0 || q.t >= server.requests[i - 1]!.t)).toBe(true);
  });

  test('the unavailable timeline: one at a time when recycled one at a time, two when two go at once', async () => {
    const { kc, core, server } = await start();
    expect(server.unavailableTimeline()).toEqual([{ t: expect.any(Number), unavailable: 0 }]);
    for (const node of ['node1', 'node2', 'node3']) await recycle(kc, core, node);
    const one = server.unavailableTimeline();
    expect(Math.max(...one.map((p) => p.unavailable))).toBe(1);
    expect(one.filter((p) => p.unavailable === 1)).toHaveLength(3);
    expect(one[one.length - 1]!.unavailable).toBe(0);

    const mark = server.now();
    await Promise.all([recycle(kc, core, 'node1'), recycle(kc, core, 'node3')]);
    const two = server.unavailableTimeline().filter((p) => p.t >= mark);
    expect(Math.max(...two.map((p) => p.unavailable))).toBe(2);
    expect(two[two.length - 1]!.unavailable).toBe(0);
  });
});

describe('faults', () => {
  test('an injected 500 once, then success; 429 with Retry-After; a dropped connection; a delay', async () => {
    const { core, server } = await start();
    const path = `/api/v1/namespaces/${NS}/configmaps/kube-proxy`;
    server.faults.failNext(500, { method: 'GET', path });
    const e = await apiError(core.readNamespacedConfigMap({ namespace: NS, name: 'kube-proxy' }));
    expect(e.code).toBe(500);
    expect(e.status).toMatchObject({ reason: 'InternalError', message: 'Internal error occurred: etcdserver: request timed out' });
    expect((await core.readNamespacedConfigMap({ namespace: NS, name: 'kube-proxy' })).metadata!.name).toBe('kube-proxy');

    server.faults.failNext(429, { path });
    const r = await fetch(`${server.url}${path}`, { headers: { Authorization: `Bearer ${server.token}` } });
    expect(r.status).toBe(429);
    expect(r.headers.get('retry-after')).toBe('1');
    expect(await r.json()).toMatchObject({ reason: 'TooManyRequests', details: { retryAfterSeconds: 1 } });

    server.faults.resetNext({ path });
    const dropped = await core.readNamespacedConfigMap({ namespace: NS, name: 'kube-proxy' }).then(
      () => undefined,
      (err: unknown) => err,
    );
    expect(dropped).toBeInstanceOf(Error);
    expect(dropped).not.toBeInstanceOf(ApiException);

    server.faults.delay(300, { path });
    const t = Date.now();
    await core.readNamespacedConfigMap({ namespace: NS, name: 'kube-proxy' });
    expect(Date.now() - t).toBeGreaterThanOrEqual(280);
    expect(server.requests.filter((q) => q.fault).map((q) => q.fault)).toEqual(['status 500', 'status 429', 'reset', 'delay 300ms']);
  });

  test('watches broken by the server end the client\'s watch', async () => {
    const { kc, core, server } = await start();
    const list = await core.listNamespacedPod({ namespace: NS });
    server.faults.breakNextWatch({ path: PODS });
    const broken = await watchToEnd(kc, PODS, { labelSelector: KP });
    expect(broken.err).toBeNull();
    expect(broken.seen).toHaveLength(1);

    // an open watch, ended from the server side while it waits for events
    const open = watchToEnd(kc, PODS, { resourceVersion: list.metadata!.resourceVersion });
    for (let i = 0; i < 50 && !server.requests.some((q) => q.watch && q.status === 200 && q.query.resourceVersion); i++) await sleep(10);
    expect(server.faults.breakWatches()).toBe(1);
    expect((await open).seen).toEqual([]);

    const reset = watchToEnd(kc, PODS, { resourceVersion: list.metadata!.resourceVersion });
    await sleep(100);
    server.faults.breakWatches({ reset: true });
    expect((await reset).err).toBeInstanceOf(Error);
  });

  test('a node whose pods never get Ready keeps the DaemonSet one unavailable', async () => {
    const { kc, core, apps, server } = await start();
    server.faults.neverReady('node2', 'unready');
    const old = await kubeProxyPod(core, 'node2');
    const list = await core.listNamespacedPod({ namespace: NS, labelSelector: KP });
    const waiting = watchUntil(kc, PODS, { labelSelector: KP, resourceVersion: list.metadata!.resourceVersion }, (seen) => {
      const o = seen[seen.length - 1]!.object as V1Pod;
      return o.metadata!.name !== old.metadata!.name && o.status?.phase === 'Running' ? o : undefined;
    });
    await core.deleteNamespacedPod({ namespace: NS, name: old.metadata!.name! });
    const { value: running } = await waiting;
    expect(isReady(running)).toBe(false);
    await sleep(50);
    const ds = await apps.readNamespacedDaemonSet({ namespace: NS, name: 'kube-proxy' });
    expect(ds.status).toMatchObject({ numberReady: 2, numberUnavailable: 1 });
    expect(server.unavailableTimeline().at(-1)!.unavailable).toBe(1);
  });
});
