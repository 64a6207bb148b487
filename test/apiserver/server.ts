import { randomBytes, randomUUID } from 'node:crypto';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { stringify } from 'yaml';
import { FAULT_MESSAGES, Faults } from './faults.ts';
import { memoryRuntime, type NodeRuntime } from './kubeproxy.ts';
import {
  DEFAULT_VERSION,
  kubeadmProxyConfig,
  kubeProxyConfigMap,
  kubernetesEndpoints,
  kubernetesEndpointSlice,
  kubernetesService,
  namespaceObject,
  nodeObject,
  randomSuffix,
  type ClusterVersion,
  type TestNode,
} from './objects.ts';
import { jsonPatch, mergePatch, PATCH_TYPES } from './patch.ts';
import { apiGroup, apiGroupList, apiResourceList, apiVersionOf, coreVersions, findResource, type ResourceType, type Verb } from './resources.ts';
import { matchFields, matchLabels, parseFieldSelector, parseLabelSelector } from './selectors.ts';
import { KubeProxySim, podTargetNode, type ClusterEvent, type NeverReady } from './simulation.ts';
import { ApiError, errors, failure, reasonFor, type Status } from './status.ts';
import { Store, timestamp, type KObject, type StoreEvent } from './store.ts';

// A Kubernetes API server for tests: plain HTTP on 127.0.0.1, the REST paths, verbs, status codes, Status
// bodies, resourceVersion and watch semantics of kube-apiserver for the resources a kube-proxy mode
// change touches, with a simulated DaemonSet controller and kubelet behind the kube-proxy pods.

export type { ClusterEvent, ClusterVersion, NeverReady, TestNode };
export type { KubeProxyConfig, MemoryRuntime, NodeRuntime, StartInfo, StartResult } from './kubeproxy.ts';
export { fatalLog, IPVS_IPSET_MISSING, klog, memoryRuntime, startupLog } from './kubeproxy.ts';
export { kubeadmProxyConfig } from './objects.ts';
export type { FaultMatch, FaultRule, WatchBreak } from './faults.ts';
export type { KObject, Store } from './store.ts';

export interface TestApiServerOptions {
  nodes: TestNode[];
  version?: ClusterVersion;
  /** kube-system/kube-proxy's config.conf (default: kubeadm's, with mode "") */
  configConf?: string;
  /** how kube-proxy starts on a node (default: memoryRuntime(), every mode works everywhere) */
  runtime?: NodeRuntime;
  /** from a kube-proxy pod's removal to its replacement (default 200) */
  recreateDelayMs?: number;
  /** from the start of kube-proxy to Ready or CrashLoopBackOff (default 100) */
  readyDelayMs?: number;
  /** from creation to binding of a replacement pod (default 20) */
  scheduleDelayMs?: number;
  /** from DELETE to the pod's removal (default 100) */
  terminationDelayMs?: number;
  /** between restarts of a crash-looping kube-proxy (default 1000) */
  crashLoopIntervalMs?: number;
  /** watch events kept per resource to resume watches from (default 100, as the watch cache) */
  watchHistory?: number;
  /** the first resourceVersion (default 9950, so tests cross a digit boundary: compare them as numbers or not at all) */
  startResourceVersion?: number;
}

export interface RecordedRequest {
  /** ms since the server started */
  t: number;
  method: string;
  path: string;
  query: Record<string, string>;
  /** the status answered (0 while a request is still open; -1 when the connection was dropped) */
  status: number;
  /** the request body, parsed when JSON */
  body?: unknown;
  contentType?: string;
  watch?: boolean;
  /** watch events sent */
  events?: number;
  /** the fault that answered it */
  fault?: string;
}

export interface TestApiServer {
  url: string;
  /** a kubeconfig for this server: context "test", insecure-skip-tls-verify, a bearer token */
  kubeconfigPath: string;
  token: string;
  requests: RecordedRequest[];
  events: ClusterEvent[];
  /** kube-proxy pods not Ready (or being deleted) over time, one point per change */
  unavailableTimeline(): { t: number; unavailable: number }[];
  store: Store;
  faults: Faults;
  runtime: NodeRuntime;
  /** the kube-proxy pod of `node` that is not being deleted, if any */
  kubeProxyPod(node: string): KObject | undefined;
  /** ms since the server started, on the clock of `t` */
  now(): number;
  close(): Promise<void>;
}

interface WatchConn {
  close(reset: boolean): void;
}

const JSON_TYPE = 'application/json';

function sendJson(res: ServerResponse, code: number, body: unknown, headers: Record<string, string> = {}): void {
  const buf = Buffer.from(JSON.stringify(body));
  res.writeHead(code, { 'Content-Type': JSON_TYPE, 'Content-Length': String(buf.length), 'Cache-Control': 'no-cache, private', 'Audit-Id': randomUUID(), ...headers });
  res.end(buf);
}

function sendText(res: ServerResponse, code: number, text: string): void {
  const buf = Buffer.from(text);
  res.writeHead(code, { 'Content-Type': 'text/plain', 'Content-Length': String(buf.length), 'Cache-Control': 'no-cache, private', 'Audit-Id': randomUUID() });
  res.end(buf);
}

/** Who writes, as kube-apiserver names a field manager: ?fieldManager=, else the User-Agent up to its first '/'. */
function managerOf(req: IncomingMessage, q: Record<string, string>): string {
  return q.fieldManager || String(req.headers['user-agent'] ?? 'unknown').split('/')[0] || 'unknown';
}

function readBody(req: IncomingMessage): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => resolve(Buffer.concat(chunks)));
    req.on('error', reject);
  });
}

/** items of a list carry no kind/apiVersion, as kube-apiserver serves typed lists */
function listItem(o: KObject): Record<string, unknown> {
  const { kind: _k, apiVersion: _a, ...rest } = o;
  return rest;
}

const MICROTIME = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}(Z|[+-]\d{2}:\d{2})$/;

/** What kube-apiserver's decoding and validation refuse in a written object. */
function validate(rt: ResourceType, obj: KObject): void {
  const cannot = (why: string) => errors.badRequest(`${rt.kind} in version "${rt.version}" cannot be handled as a ${rt.kind}: ${why}`);
  if (rt.kind === 'ConfigMap') {
    for (const field of ['data', 'binaryData'] as const) {
      const d = obj[field];
      if (d === undefined || d === null) continue;
      if (typeof d !== 'object' || Array.isArray(d)) throw cannot(`json: cannot unmarshal ${Array.isArray(d) ? 'array' : typeof d} into Go struct field ConfigMap.${field} of type map[string]${field === 'data' ? 'string' : '[]uint8'}`);
      for (const [k, v] of Object.entries(d)) {
        if (typeof v !== 'string') throw cannot(`json: cannot unmarshal ${v === null ? 'null' : typeof v} into Go struct field ConfigMap.${field} of type string`);
        if (!/^[-._a-zA-Z0-9]+$/.test(k) || k.length > 253) {
          throw errors.invalid(rt.kind, rt, obj.metadata.name, `${field}[${k}]`, `Invalid value: "${k}": a valid config key must consist of alphanumeric characters, '-', '_' or '.'`);
        }
      }
    }
  }
  if (rt.kind === 'Lease') {
    const spec = obj.spec ?? {};
    for (const f of ['acquireTime', 'renewTime']) {
      const v = spec[f];
      if (v === undefined || v === null) continue;
      if (typeof v !== 'string') throw cannot(`json: cannot unmarshal ${typeof v} into Go struct field LeaseSpec.spec.${f} of type string`);
      if (!MICROTIME.test(v)) {
        // metav1.MicroTime parses with a fixed six-digit fraction: Date.toISOString()'s milliseconds are refused
        const rest = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}/.test(v) ? v.slice(19) : v;
        throw cannot(`parsing time "${v}" as "2006-01-02T15:04:05.000000Z07:00": cannot parse "${rest}" as ".000000"`);
      }
    }
    const d = spec.leaseDurationSeconds;
    if (d !== undefined && d !== null && (!Number.isInteger(d) || d <= 0)) {
      throw errors.invalid(rt.kind, rt, obj.metadata.name, 'spec.leaseDurationSeconds', `Invalid value: ${JSON.stringify(d)}: must be greater than 0`);
    }
  }
}

const NAME = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/;

function checkPreconditions(rt: ResourceType, current: KObject, body: unknown): void {
  const pre = (body as { preconditions?: { uid?: string; resourceVersion?: string } } | undefined)?.preconditions;
  if (!pre) return;
  if (pre.uid && pre.uid !== current.metadata.uid) {
    throw errors.conflict(rt, current.metadata.name, `Precondition failed: UID in precondition: ${pre.uid}, UID in object meta: ${current.metadata.uid}`);
  }
  if (pre.resourceVersion && pre.resourceVersion !== current.metadata.resourceVersion) {
    throw errors.conflict(
      rt,
      current.metadata.name,
      `Precondition failed: ResourceVersion in precondition: ${pre.resourceVersion}, ResourceVersion in object meta: ${current.metadata.resourceVersion}`,
    );
  }
}

function dryRunOf(q: Record<string, string>): boolean {
  const v = q.dryRun;
  if (v === undefined) return false;
  if (v !== 'All') throw errors.badRequest(`Invalid dryRun value: ${v}; supported values: ["All"]`);
  return true;
}

export async function startTestApiServer(opts: TestApiServerOptions): Promise<TestApiServer> {
  if (opts.nodes.length === 0) throw new Error('startTestApiServer: at least one node');
  const t0 = performance.now();
  const now = () => Math.round((performance.now() - t0) * 1000) / 1000;
  const version = opts.version ?? DEFAULT_VERSION;
  const nodes = opts.nodes.map((n, i) => ({ ...n, controlPlane: n.controlPlane ?? (i === 0 && !opts.nodes.some((m) => m.controlPlane)) }));
  const controlPlaneIPs = nodes.filter((n) => n.controlPlane).map((n) => n.internalIP);
  const store = new Store(opts.startResourceVersion ?? 9950, opts.watchHistory ?? 100);
  const runtime = opts.runtime ?? memoryRuntime();
  const requests: RecordedRequest[] = [];
  const events: ClusterEvent[] = [];
  const token = randomBytes(24).toString('hex');
  const watches = new Set<WatchConn>();

  const sim = new KubeProxySim(
    store,
    new Map(nodes.map((n) => [n.name, n.internalIP])),
    version,
    runtime,
    {
      recreateDelayMs: opts.recreateDelayMs ?? 200,
      readyDelayMs: opts.readyDelayMs ?? 100,
      scheduleDelayMs: opts.scheduleDelayMs ?? 20,
      terminationDelayMs: opts.terminationDelayMs ?? 100,
      crashLoopIntervalMs: opts.crashLoopIntervalMs ?? 1000,
    },
    now,
    (e) => events.push({ t: now(), ...e }),
  );
  const closeWatches = (reset: boolean) => {
    const all = [...watches];
    for (const w of all) w.close(reset);
    return all.length;
  };
  const faults = new Faults(sim.neverReady, closeWatches);

  // The cluster as kubeadm leaves it, created a few days ago.
  const created = timestamp(new Date(Date.now() - 3 * 24 * 3600 * 1000));
  for (const ns of ['default', 'kube-node-lease', 'kube-public', 'kube-system']) store.create('namespaces', { ...namespaceObject(ns), metadata: { ...namespaceObject(ns).metadata, creationTimestamp: created } });
  nodes.forEach((n, i) => store.create('nodes', nodeObject(n, i, version, created)));
  store.create('configmaps', kubeProxyConfigMap(opts.configConf ?? kubeadmProxyConfig(), `https://${controlPlaneIPs[0] ?? nodes[0]!.internalIP}:6443`, created), 'kubeadm');
  store.create('services', kubernetesService(created));
  store.create('endpoints', kubernetesEndpoints(controlPlaneIPs, created));
  store.create('endpointslices', kubernetesEndpointSlice(controlPlaneIPs, created));
  await sim.bootstrap(created);

  function serveWatch(req: IncomingMessage, res: ServerResponse, rec: RecordedRequest, rt: ResourceType, ns: string | undefined, q: Record<string, string>): void {
    const labels = parseLabelSelector(q.labelSelector);
    const fields = parseFieldSelector(q.fieldSelector, rt.fieldLabels);
    const matches = (o: KObject) => (!ns || o.metadata.namespace === ns) && matchLabels(labels, o.metadata.labels) && matchFields(fields, o);
    const rvParam = q.resourceVersion ?? '';
    if (rvParam !== '' && !/^\d+$/.test(rvParam)) throw errors.badRequest(`invalid resource version: strconv.ParseUint: parsing "${rvParam}": invalid syntax`);
    const initial = q.sendInitialEvents === 'true' || rvParam === '' || rvParam === '0';
    const bookmarks = q.allowWatchBookmarks === 'true';
    const timeoutSeconds = q.timeoutSeconds !== undefined ? Number(q.timeoutSeconds) : undefined;

    res.writeHead(200, { 'Content-Type': JSON_TYPE, 'Cache-Control': 'no-cache, private', 'Audit-Id': randomUUID() });
    res.flushHeaders();
    rec.status = 200;
    rec.watch = true;
    rec.events = 0;

    let closed = false;
    const timers: NodeJS.Timeout[] = [];
    let unsubscribe = () => {};
    const conn: WatchConn = {
      close(reset) {
        if (closed) return;
        closed = true;
        unsubscribe();
        timers.forEach(clearTimeout);
        watches.delete(conn);
        if (reset) res.socket?.destroy();
        else res.end();
      },
    };
    watches.add(conn);
    // not req's 'close': it fires once the request body is read, while the watch goes on
    res.on('close', () => conn.close(false));

    const brk = faults.takeWatchBreak(rec.path);
    if (brk) {
      rec.fault = 'watch-break';
      if (brk.afterMs !== undefined) timers.push(setTimeout(() => conn.close(brk.reset === true), brk.afterMs));
    }
    const write = (type: string, object: unknown) => {
      if (closed) return;
      res.write(`${JSON.stringify({ type, object })}\n`);
      rec.events = (rec.events ?? 0) + 1;
      if (brk?.afterEvents !== undefined && rec.events >= brk.afterEvents) conn.close(brk.reset === true);
    };
    const bookmark = (annotations?: Record<string, string>) =>
      write('BOOKMARK', { kind: rt.kind, apiVersion: apiVersionOf(rt), metadata: { resourceVersion: store.resourceVersion, ...(annotations ? { annotations } : {}) } });
    /** a change as this watch's selectors see it: entering them is ADDED, leaving them DELETED */
    const deliver = (e: StoreEvent) => {
      const now = matches(e.object);
      const before = e.type === 'MODIFIED' ? matches(e.previous) : now;
      if (e.type === 'MODIFIED') {
        if (before && now) write('MODIFIED', e.object);
        else if (now) write('ADDED', e.object);
        else if (before) write('DELETED', e.object);
      } else if (now) write(e.type, e.object);
    };

    let backlog: StoreEvent[] = [];
    if (!initial) {
      const since = store.eventsSince(rt, Number(rvParam));
      if ('expired' in since) {
        write('ERROR', errors.expired(Number(rvParam), since.expired));
        conn.close(false);
        return;
      }
      backlog = since.events;
    }
    const key = rt.group ? `${rt.plural}.${rt.group}` : rt.plural;
    unsubscribe = store.subscribe((e) => {
      if (e.resource === key) deliver(e);
    });
    if (initial) {
      for (const o of store.list(rt, ns)) if (matches(o)) write('ADDED', o);
      if (q.sendInitialEvents === 'true' && bookmarks) bookmark({ 'k8s.io/initial-events-end': 'true' });
    } else for (const e of backlog) deliver(e);
    if (timeoutSeconds !== undefined && Number.isFinite(timeoutSeconds) && timeoutSeconds > 0) {
      timers.push(
        setTimeout(() => {
          if (bookmarks) bookmark();
          conn.close(false);
        }, timeoutSeconds * 1000),
      );
    }
  }

  function list(rt: ResourceType, ns: string | undefined, q: Record<string, string>) {
    const labels = parseLabelSelector(q.labelSelector);
    const fields = parseFieldSelector(q.fieldSelector, rt.fieldLabels);
    let items = store.list(rt, ns).filter((o) => matchLabels(labels, o.metadata.labels) && matchFields(fields, o));
    const rv = store.resourceVersion;
    let cont: string | undefined;
    let remaining: number | undefined;
    if (q.continue) {
      let after: string;
      try {
        after = JSON.parse(Buffer.from(q.continue, 'base64url').toString()).start;
      } catch {
        throw errors.badRequest('continue key is not valid: illegal base64 data at input byte 0');
      }
      items = items.filter((o) => `${o.metadata.namespace ?? ''}/${o.metadata.name}` > after);
    }
    const limit = q.limit !== undefined ? Number(q.limit) : 0;
    if (limit > 0 && items.length > limit) {
      const last = items[limit - 1]!;
      remaining = items.length - limit;
      items = items.slice(0, limit);
      cont = Buffer.from(JSON.stringify({ v: 'meta.k8s.io/v1', rv: Number(rv), start: `${last.metadata.namespace ?? ''}/${last.metadata.name}` })).toString('base64url');
    }
    return {
      kind: `${rt.kind}List`,
      apiVersion: apiVersionOf(rt),
      metadata: { resourceVersion: rv, ...(cont ? { continue: cont, remainingItemCount: remaining } : {}) },
      items: items.map(listItem),
    };
  }

  /** the body as the object written to `name` in `ns` */
  function incoming(rt: ResourceType, body: unknown, ns: string | undefined, name?: string): KObject {
    if (body === undefined || body === null || typeof body !== 'object' || Array.isArray(body)) {
      throw errors.badRequest(`${rt.kind} in version "${rt.version}" cannot be handled as a ${rt.kind}: json: cannot unmarshal ${Array.isArray(body) ? 'array' : body === undefined ? 'empty body' : typeof body} into Go value of type ${rt.group || 'core'}.${rt.kind}`);
    }
    const o = structuredClone(body) as KObject;
    if (o.apiVersion !== undefined && o.apiVersion !== apiVersionOf(rt)) throw errors.badRequest(`the API version in the data (${o.apiVersion}) does not match the expected API version (${apiVersionOf(rt)})`);
    if (o.kind !== undefined && o.kind !== rt.kind) throw errors.badRequest(`${rt.kind} in version "${rt.version}" cannot be handled as a ${rt.kind}: the object kind (${o.kind}) does not match the expected kind (${rt.kind})`);
    o.apiVersion = apiVersionOf(rt);
    o.kind = rt.kind;
    o.metadata = { ...(o.metadata ?? {}) } as KObject['metadata'];
    if (rt.namespaced) {
      if (o.metadata.namespace !== undefined && o.metadata.namespace !== '' && o.metadata.namespace !== ns) {
        throw errors.badRequest('the namespace of the provided object does not match the namespace sent on the request');
      }
      o.metadata.namespace = ns;
    }
    if (name !== undefined && o.metadata.name !== name) {
      throw errors.badRequest(`the name of the object (${o.metadata.name ?? ''}) does not match the name on the URL (${name})`);
    }
    return o;
  }

  /** PUT and PATCH end here: the written object, checked against the stored one's resourceVersion */
  function write(rt: ResourceType, o: KObject, dryRun: boolean, manager: string): KObject {
    validate(rt, o);
    if (dryRun) {
      const cur = store.get(rt, o.metadata.namespace, o.metadata.name);
      if (!cur) throw errors.notFound(rt, o.metadata.name);
      const want = o.metadata.resourceVersion;
      if (want && want !== cur.metadata.resourceVersion) throw errors.conflict(rt, o.metadata.name);
      return { ...o, metadata: { ...cur.metadata, ...o.metadata, resourceVersion: cur.metadata.resourceVersion } };
    }
    return store.update(rt, o, { keepStatus: rt.statusSubresource === true, manager });
  }

  async function route(req: IncomingMessage, res: ServerResponse, rec: RecordedRequest, body: unknown): Promise<void> {
    const method = req.method ?? 'GET';
    const q = { ...rec.query };
    const segs = rec.path.split('/').filter((s) => s !== '');
    const get = method === 'GET';

    if (rec.path === '/version') {
      if (!get) throw errors.methodNotAllowed();
      return sendJson(res, 200, {
        major: version.major,
        minor: version.minor,
        gitVersion: version.gitVersion,
        gitCommit: 'a78aa47129b8539636eb86a9d00e31b2720fe06b',
        gitTreeState: 'clean',
        buildDate: '2024-12-10T11:36:48Z',
        goVersion: 'go1.22.9',
        compiler: 'gc',
        platform: 'linux/amd64',
      });
    }
    if (['/healthz', '/livez', '/readyz'].includes(rec.path)) return sendText(res, 200, 'ok');
    if (segs[0] !== 'api' && segs[0] !== 'apis') throw errors.noRoute();

    let group = '';
    let ver: string | undefined;
    let rest: string[];
    if (segs[0] === 'api') {
      if (segs.length === 1) return sendJson(res, 200, coreVersions(`${req.socket.localAddress}:${req.socket.localPort}`));
      ver = segs[1];
      rest = segs.slice(2);
    } else {
      if (segs.length === 1) return sendJson(res, 200, apiGroupList());
      group = segs[1]!;
      if (segs.length === 2) {
        const g = apiGroup(group);
        if (!g) throw errors.noRoute();
        return sendJson(res, 200, g);
      }
      ver = segs[2];
      rest = segs.slice(3);
    }
    if (rest.length === 0) {
      const l = apiResourceList(group, ver ?? '');
      if (!l || !get) throw l ? errors.methodNotAllowed() : errors.noRoute();
      return sendJson(res, 200, l);
    }
    let watchPath = false;
    if (rest[0] === 'watch') {
      watchPath = true;
      rest = rest.slice(1);
    }
    let ns: string | undefined;
    let plural: string;
    let name: string | undefined;
    let sub: string | undefined;
    let extra: boolean;
    if (rest[0] === 'namespaces' && rest.length >= 3) {
      ns = rest[1];
      plural = rest[2]!;
      name = rest[3];
      sub = rest[4];
      extra = rest.length > 5;
    } else {
      plural = rest[0]!;
      name = rest[1];
      sub = rest[2];
      extra = rest.length > 3;
    }
    const rt = findResource(group, ver ?? '', plural);
    if (!rt || extra) throw errors.noRoute();
    if (ns !== undefined && !rt.namespaced) throw errors.noRoute();
    if (rt.namespaced && ns === undefined && name !== undefined) throw errors.noRoute();
    if (sub !== undefined && !(rt.plural === 'pods' && sub === 'log')) throw errors.noRoute();
    if (watchPath && name !== undefined) {
      q.fieldSelector = [q.fieldSelector, `metadata.name=${name}`].filter(Boolean).join(',');
      name = undefined;
    }

    let verb: Verb | 'log';
    const watching = watchPath || q.watch === 'true' || q.watch === '1';
    switch (method) {
      case 'GET':
        verb = name === undefined ? (watching ? 'watch' : 'list') : sub === 'log' ? 'log' : 'get';
        break;
      case 'POST':
        if (name !== undefined) throw errors.methodNotAllowed();
        verb = 'create';
        break;
      case 'PUT':
        if (name === undefined || sub) throw errors.methodNotAllowed();
        verb = 'update';
        break;
      case 'PATCH':
        if (name === undefined || sub) throw errors.methodNotAllowed();
        verb = 'patch';
        break;
      case 'DELETE':
        if (name === undefined || sub) throw errors.methodNotAllowed();
        verb = 'delete';
        break;
      default:
        throw errors.methodNotAllowed();
    }
    if (!rt.verbs.includes(verb === 'log' ? 'get' : verb)) throw errors.methodNotAllowed();

    switch (verb) {
      case 'list':
        return sendJson(res, 200, list(rt, ns, q));
      case 'watch':
        return serveWatch(req, res, rec, rt, ns, q);
      case 'get': {
        const o = store.get(rt, ns, name!);
        if (!o) throw errors.notFound(rt, name!);
        return sendJson(res, 200, o);
      }
      case 'log': {
        const pod = store.get(rt, ns, name!);
        if (!pod) throw errors.notFound(rt, name!);
        let lines = sim.podLog(pod, q.container, q.previous === 'true');
        if (q.tailLines !== undefined) {
          const n = Number(q.tailLines);
          if (!Number.isInteger(n) || n < 0) throw errors.unprocessable(`PodLogOptions "${name}" is invalid: tailLines: Invalid value: ${q.tailLines}: must be greater than or equal to 0`);
          lines = n === 0 ? [] : lines.slice(-n);
        }
        if (q.timestamps === 'true') {
          const at = pod.status?.containerStatuses?.[0]?.state?.running?.startedAt ?? pod.status?.startTime ?? timestamp();
          const stamp = String(at).replace(/Z$/, '.000000000Z');
          lines = lines.map((l) => `${stamp} ${l}`);
        }
        let text = lines.map((l) => `${l}\n`).join('');
        if (q.limitBytes !== undefined && Number(q.limitBytes) > 0) text = text.slice(0, Number(q.limitBytes));
        return sendText(res, 200, text);
      }
      case 'create': {
        const dryRun = dryRunOf(q);
        const o = incoming(rt, body, ns);
        if (!o.metadata.name) {
          if (!o.metadata.generateName) {
            throw errors.invalid(rt.kind, rt, '', 'metadata.name', 'Required value: name or generateName is required');
          }
          o.metadata.name = `${o.metadata.generateName}${randomSuffix()}`;
        }
        if (!NAME.test(o.metadata.name) || o.metadata.name.length > 253) {
          throw errors.invalid(
            rt.kind,
            rt,
            o.metadata.name,
            'metadata.name',
            `Invalid value: "${o.metadata.name}": a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')`,
          );
        }
        if (ns !== undefined && !store.get('namespaces', undefined, ns)) throw errors.notFound({ group: '', plural: 'namespaces' }, ns);
        validate(rt, o);
        delete o.metadata.resourceVersion;
        if (dryRun) {
          if (store.get(rt, ns, o.metadata.name)) throw errors.alreadyExists(rt, o.metadata.name);
          return sendJson(res, 201, { ...o, metadata: { ...o.metadata, uid: randomUUID(), creationTimestamp: timestamp() } });
        }
        const made = store.create(rt, o, managerOf(req, q));
        events.push({ t: now(), type: `${rt.singular}-created`, detail: `${ns ? `${ns}/` : ''}${made.metadata.name}` });
        return sendJson(res, 201, made);
      }
      case 'update': {
        const dryRun = dryRunOf(q);
        const o = incoming(rt, body, ns, name);
        const out = write(rt, o, dryRun, managerOf(req, q));
        if (!dryRun && rt.kind !== 'ConfigMap') events.push({ t: now(), type: `${rt.singular}-updated`, detail: `${ns ? `${ns}/` : ''}${name}` });
        return sendJson(res, 200, out);
      }
      case 'patch': {
        const dryRun = dryRunOf(q);
        const ctype = String(req.headers['content-type'] ?? '')
          .split(';')[0]!
          .trim()
          .toLowerCase();
        if (!(PATCH_TYPES as readonly string[]).includes(ctype)) throw errors.unsupportedMediaType([...PATCH_TYPES, 'application/apply-patch+yaml']);
        const cur = store.get(rt, ns, name!);
        if (!cur) throw errors.notFound(rt, name!);
        const patched = (ctype === 'application/json-patch+json' ? jsonPatch(cur, body) : mergePatch(cur, body)) as KObject;
        if (patched === null || typeof patched !== 'object' || Array.isArray(patched)) throw errors.badRequest('the patch did not produce an object');
        const o = incoming(rt, patched, ns, name);
        // a resourceVersion in the patch is a precondition: it must still be the stored one
        if (o.metadata.resourceVersion !== cur.metadata.resourceVersion) throw errors.conflict(rt, name!);
        const out = write(rt, o, dryRun, managerOf(req, q));
        if (!dryRun && rt.kind !== 'ConfigMap') events.push({ t: now(), type: `${rt.singular}-patched`, detail: `${ns ? `${ns}/` : ''}${name}` });
        return sendJson(res, 200, out);
      }
      case 'delete': {
        const dryRun = dryRunOf(q);
        const cur = store.get(rt, ns, name!);
        if (!cur) throw errors.notFound(rt, name!);
        checkPreconditions(rt, cur, body);
        const grace = q.gracePeriodSeconds ?? (body as { gracePeriodSeconds?: number } | undefined)?.gracePeriodSeconds;
        if (rt.plural === 'pods') {
          const out = sim.deletePod(ns!, name!, { ...(grace !== undefined ? { gracePeriodSeconds: Number(grace) } : {}), dryRun });
          return sendJson(res, 200, out);
        }
        if (!dryRun) {
          store.remove(rt, ns, name!);
          events.push({ t: now(), type: `${rt.singular}-deleted`, detail: `${ns ? `${ns}/` : ''}${name}` });
        }
        const ok: Omit<Status, 'code'> = { kind: 'Status', apiVersion: 'v1', metadata: {}, status: 'Success', details: { name: name!, ...(rt.group ? { group: rt.group } : {}), kind: rt.plural, uid: cur.metadata.uid! } };
        return sendJson(res, 200, ok);
      }
    }
  }

  async function handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const url = new URL(req.url ?? '/', 'http://127.0.0.1');
    const rec: RecordedRequest = { t: now(), method: req.method ?? 'GET', path: url.pathname, query: Object.fromEntries(url.searchParams), status: 0 };
    requests.push(rec);
    const reply = (code: number, body: unknown, headers?: Record<string, string>) => {
      rec.status = code;
      sendJson(res, code, body, headers);
    };
    try {
      const raw = await readBody(req);
      let body: unknown;
      if (raw.length > 0) {
        rec.contentType = req.headers['content-type'];
        try {
          body = JSON.parse(raw.toString('utf8'));
          rec.body = body;
        } catch {
          rec.body = raw.toString('utf8');
          if (['POST', 'PUT', 'PATCH'].includes(rec.method)) throw errors.badRequest(`json: invalid character in request body: ${raw.toString('utf8').slice(0, 40)}`);
        }
      }
      const auth = req.headers.authorization;
      const open = ['/version', '/healthz', '/livez', '/readyz'].includes(rec.path);
      if (auth !== undefined && auth !== `Bearer ${token}`) throw errors.unauthorized();
      if (auth === undefined && !open) throw new ApiError(failure(403, `forbidden: User "system:anonymous" cannot ${rec.method.toLowerCase()} path "${rec.path}"`, 'Forbidden', {}));

      const fault = faults.take(rec.method, rec.path);
      if (fault) {
        if (fault.delayMs) await new Promise((r) => setTimeout(r, fault.delayMs));
        if (fault.reset) {
          rec.status = -1;
          rec.fault = 'reset';
          req.socket.destroy();
          return;
        }
        if (fault.status !== undefined) {
          rec.fault = `status ${fault.status}`;
          const retry = fault.retryAfterSeconds ?? (fault.status === 429 ? 1 : undefined);
          const st = failure(fault.status, fault.message ?? FAULT_MESSAGES[fault.status] ?? reasonFor(fault.status), fault.reason ?? reasonFor(fault.status), retry !== undefined ? { retryAfterSeconds: retry } : {});
          throw new ApiError(st, retry !== undefined ? { 'Retry-After': String(retry) } : {});
        }
        rec.fault = `delay ${fault.delayMs}ms`;
      }
      await route(req, res, rec, body);
      if (rec.status === 0 && !rec.watch) rec.status = res.statusCode;
    } catch (e) {
      if (res.headersSent) {
        res.destroy();
        return;
      }
      if (e instanceof ApiError) reply(e.status.code, e.status, e.headers);
      else reply(500, failure(500, `Internal error occurred: ${(e as Error).message}`, 'InternalError'));
    }
  }

  const server = createServer((req, res) => {
    void handle(req, res);
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve());
  });
  const port = (server.address() as AddressInfo).port;
  const url = `http://127.0.0.1:${port}`;
  const dir = await mkdtemp(join(tmpdir(), 'kpm-apiserver-'));
  const kubeconfigPath = join(dir, 'kubeconfig');
  await writeFile(
    kubeconfigPath,
    stringify({
      apiVersion: 'v1',
      kind: 'Config',
      clusters: [{ name: 'test', cluster: { server: url, 'insecure-skip-tls-verify': true } }],
      users: [{ name: 'test', user: { token } }],
      contexts: [{ name: 'test', context: { cluster: 'test', user: 'test' } }],
      'current-context': 'test',
    }),
    { mode: 0o600 },
  );

  let closing: Promise<void> | undefined;
  return {
    url,
    kubeconfigPath,
    token,
    requests,
    events,
    unavailableTimeline: () => sim.timeline(),
    store,
    faults,
    runtime,
    now,
    kubeProxyPod(node) {
      return store.list('pods', 'kube-system').find((p) => p.metadata.labels?.['k8s-app'] === 'kube-proxy' && podTargetNode(p) === node && !p.metadata.deletionTimestamp);
    },
    close() {
      closing ??= (async () => {
        sim.close();
        closeWatches(false);
        await new Promise<void>((resolve) => {
          server.close(() => resolve());
          server.closeAllConnections();
        });
        await rm(dir, { recursive: true, force: true });
      })();
      return closing;
    },
  };
}
