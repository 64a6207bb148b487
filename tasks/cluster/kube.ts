import { existsSync } from 'node:fs';
import { homedir } from 'node:os';
import { join } from 'node:path';
import {
  ApiException,
  AppsV1Api,
  CoordinationV1Api,
  CoreV1Api,
  DiscoveryV1Api,
  KubeConfig,
  VersionApi,
  Watch,
  type V1ConfigMap,
  type V1DaemonSet,
  type V1EndpointSlice,
  type V1Lease,
  type V1Node,
  type V1Pod,
  type V1Service,
  type VersionInfo,
} from '@kubernetes/client-node';

// The cluster, through @kubernetes/client-node (never kubectl: a node or laptop need not have it, or may
// have one too old). Transient API failures (5xx, 429, network) are retried a bounded number of times with
// backoff; every other failure is a KubeError naming the object and the API's reason.

export interface KubeTarget {
  /** --kubeconfig, else the inventory's `kubeconfig`, else KUBECONFIG, else ~/.kube/config */
  kubeconfig?: string;
  /** --context, else the inventory's `kube_context`, else the kubeconfig's current context */
  context?: string;
}

export class KubeError extends Error {
  constructor(
    message: string,
    readonly code?: number,
    readonly reason?: string,
  ) {
    super(message);
    this.name = 'KubeError';
  }
}

export interface RetryPolicy {
  attempts: number;
  baseDelayMs: number;
  /** per request */
  timeoutMs: number;
}

export const FIELD_MANAGER = 'kube-proxy-mode';

export const DEFAULT_RETRY: RetryPolicy = { attempts: 5, baseDelayMs: 500, timeoutMs: 30_000 };

export function kubeconfigPath(target: KubeTarget, env: NodeJS.ProcessEnv = process.env): string {
  if (target.kubeconfig) return target.kubeconfig;
  const fromEnv = (env.KUBECONFIG ?? '').split(':').filter((p) => p !== '');
  // the first file that exists, as kubectl merges them; none existing is an error that names the first
  if (fromEnv.length) return fromEnv.find((p) => existsSync(p)) ?? fromEnv[0]!;
  return join(homedir(), '.kube', 'config');
}

export function loadKubeConfig(target: KubeTarget): KubeConfig {
  const path = kubeconfigPath(target);
  if (!existsSync(path)) throw new KubeError(`kubeconfig ${path} does not exist (set --kubeconfig, the inventory variable kubeconfig, or KUBECONFIG)`);
  const kc = new KubeConfig();
  try {
    kc.loadFromFile(path);
  } catch (e) {
    throw new KubeError(`cannot read kubeconfig ${path}: ${(e as Error).message}`);
  }
  if (target.context) {
    if (!kc.getContexts().some((c) => c.name === target.context)) {
      throw new KubeError(`kubeconfig ${path} has no context "${target.context}" (it has: ${kc.getContexts().map((c) => c.name).join(', ') || 'none'})`);
    }
    kc.setCurrentContext(target.context);
  }
  if (!kc.getCurrentCluster()) throw new KubeError(`kubeconfig ${path}: the current context names no cluster`);
  return kc;
}

/** What the API said, in one line: `409 Conflict: Operation cannot be fulfilled …`. */
export function describeApiError(e: unknown): { code?: number; reason?: string; message: string } {
  if (e instanceof ApiException) {
    let reason: string | undefined;
    let message = '';
    try {
      const body = typeof e.body === 'string' ? JSON.parse(e.body) : e.body;
      reason = body?.reason;
      message = body?.message ?? '';
    } catch {
      message = String(e.body ?? '').slice(0, 300);
    }
    return { code: e.code, ...(reason ? { reason } : {}), message: `${e.code}${reason ? ` ${reason}` : ''}${message ? `: ${message}` : ''}` };
  }
  return { message: (e as Error).message ?? String(e) };
}

function transient(e: unknown): boolean {
  if (e instanceof ApiException) return e.code >= 500 || e.code === 429;
  const msg = (e as Error)?.message ?? '';
  const code = (e as NodeJS.ErrnoException)?.code ?? (e as { cause?: NodeJS.ErrnoException })?.cause?.code ?? '';
  return /ECONNREFUSED|ECONNRESET|ETIMEDOUT|EPIPE|EAI_AGAIN|socket hang up|timed out|fetch failed|network/i.test(`${code} ${msg}`);
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

export class KubeClient {
  readonly core: CoreV1Api;
  readonly apps: AppsV1Api;
  readonly discovery: DiscoveryV1Api;
  readonly coordination: CoordinationV1Api;
  private readonly versionApi: VersionApi;
  /** API requests sent (the report's figure for the cluster phase) */
  requests = 0;

  constructor(
    readonly kc: KubeConfig,
    readonly retry: RetryPolicy = DEFAULT_RETRY,
  ) {
    this.core = kc.makeApiClient(CoreV1Api);
    this.apps = kc.makeApiClient(AppsV1Api);
    this.discovery = kc.makeApiClient(DiscoveryV1Api);
    this.coordination = kc.makeApiClient(CoordinationV1Api);
    this.versionApi = kc.makeApiClient(VersionApi);
  }

  get server(): string {
    return this.kc.getCurrentCluster()?.server ?? '?';
  }

  /** Run one API call with the retry policy; `what` names the object for error messages. */
  async call<T>(what: string, fn: () => Promise<T>): Promise<T> {
    let last: unknown;
    for (let attempt = 1; attempt <= this.retry.attempts; attempt++) {
      this.requests++;
      let timer: NodeJS.Timeout | undefined;
      try {
        return await Promise.race([
          fn(),
          new Promise<never>((_, reject) => {
            timer = setTimeout(() => reject(new Error(`request timed out after ${this.retry.timeoutMs / 1000}s`)), this.retry.timeoutMs);
          }),
        ]);
      } catch (e) {
        last = e;
        if (!transient(e) || attempt === this.retry.attempts) break;
        await sleep(Math.min(this.retry.baseDelayMs * 2 ** (attempt - 1), 8000));
      } finally {
        clearTimeout(timer);
      }
    }
    const d = describeApiError(last);
    throw new KubeError(`${what}: ${d.message}`, d.code, d.reason);
  }

  version(): Promise<VersionInfo> {
    return this.call('GET /version', () => this.versionApi.getCode());
  }

  readConfigMap(namespace: string, name: string): Promise<V1ConfigMap> {
    return this.call(`ConfigMap ${namespace}/${name}`, () => this.core.readNamespacedConfigMap({ namespace, name }));
  }

  /** PUT with the object's resourceVersion: a concurrent change answers 409 (never retried here). */
  replaceConfigMap(cm: V1ConfigMap): Promise<V1ConfigMap> {
    const namespace = cm.metadata!.namespace!;
    const name = cm.metadata!.name!;
    // the field manager names this tool in managedFields, where `status` and operators see who changed it last
    return this.call(`ConfigMap ${namespace}/${name}`, () => this.core.replaceNamespacedConfigMap({ namespace, name, body: cm, fieldManager: FIELD_MANAGER }));
  }

  /** undefined when there is none */
  async readLease(namespace: string, name: string): Promise<V1Lease | undefined> {
    try {
      return await this.call(`Lease ${namespace}/${name}`, () => this.coordination.readNamespacedLease({ namespace, name }));
    } catch (e) {
      if (e instanceof KubeError && e.code === 404) return undefined;
      throw e;
    }
  }

  createLease(lease: V1Lease): Promise<V1Lease> {
    const namespace = lease.metadata!.namespace!;
    return this.call(`Lease ${namespace}/${lease.metadata!.name}`, () => this.coordination.createNamespacedLease({ namespace, body: lease, fieldManager: FIELD_MANAGER }));
  }

  /** PUT with the lease's resourceVersion: 409 when someone else wrote it since. */
  replaceLease(lease: V1Lease): Promise<V1Lease> {
    const namespace = lease.metadata!.namespace!;
    const name = lease.metadata!.name!;
    return this.call(`Lease ${namespace}/${name}`, () => this.coordination.replaceNamespacedLease({ namespace, name, body: lease, fieldManager: FIELD_MANAGER }));
  }

  deleteLease(namespace: string, name: string, resourceVersion?: string): Promise<unknown> {
    return this.call(`Lease ${namespace}/${name}`, () =>
      this.coordination.deleteNamespacedLease({ namespace, name, ...(resourceVersion ? { body: { preconditions: { resourceVersion } } } : {}) }),
    );
  }

  readDaemonSet(namespace: string, name: string): Promise<V1DaemonSet> {
    return this.call(`DaemonSet ${namespace}/${name}`, () => this.apps.readNamespacedDaemonSet({ namespace, name }));
  }

  readService(namespace: string, name: string): Promise<V1Service> {
    return this.call(`Service ${namespace}/${name}`, () => this.core.readNamespacedService({ namespace, name }));
  }

  async listServices(): Promise<V1Service[]> {
    return (await this.call('list services', () => this.core.listServiceForAllNamespaces({}))).items;
  }

  async listEndpointSlices(namespace: string, service: string): Promise<V1EndpointSlice[]> {
    const labelSelector = `kubernetes.io/service-name=${service}`;
    return (await this.call(`EndpointSlices of Service ${namespace}/${service}`, () => this.discovery.listNamespacedEndpointSlice({ namespace, labelSelector }))).items;
  }

  async listNodes(): Promise<V1Node[]> {
    return (await this.call('list nodes', () => this.core.listNode({}))).items;
  }

  async listPods(namespace: string, labelSelector: string, fieldSelector?: string): Promise<{ items: V1Pod[]; resourceVersion: string }> {
    const list = await this.call(`list pods in ${namespace} (${labelSelector}${fieldSelector ? `, ${fieldSelector}` : ''})`, () =>
      this.core.listNamespacedPod({ namespace, labelSelector, ...(fieldSelector ? { fieldSelector } : {}) }),
    );
    return { items: list.items, resourceVersion: list.metadata?.resourceVersion ?? '' };
  }

  deletePod(namespace: string, name: string): Promise<V1Pod> {
    return this.call(`delete pod ${namespace}/${name}`, () => this.core.deleteNamespacedPod({ namespace, name }));
  }

  async podLog(namespace: string, name: string, opts: { container?: string; tailLines?: number; previous?: boolean; limitBytes?: number } = {}): Promise<string> {
    return this.call(`log of pod ${namespace}/${name}`, () =>
      this.core.readNamespacedPodLog({
        namespace,
        name,
        ...(opts.container ? { container: opts.container } : {}),
        ...(opts.tailLines ? { tailLines: opts.tailLines } : {}),
        ...(opts.previous ? { previous: true } : {}),
        ...(opts.limitBytes ? { limitBytes: opts.limitBytes } : {}),
      }),
    );
  }

  /**
   * Wait until `done(pods)` returns a value for the pods matching the selectors, by list + watch. A broken
   * watch or a 410 (resourceVersion too old) re-lists; the deadline bounds it all (Watch has none).
   */
  async waitForPods<T>(
    namespace: string,
    selectors: { labelSelector: string; fieldSelector?: string },
    done: (pods: V1Pod[]) => T | undefined,
    deadlineMs: number,
    what: string,
  ): Promise<T> {
    const end = Date.now() + deadlineMs;
    const path = `/api/v1/namespaces/${namespace}/pods`;
    for (;;) {
      const { items, resourceVersion } = await this.listPods(namespace, selectors.labelSelector, selectors.fieldSelector);
      const pods = new Map(items.map((p) => [p.metadata!.uid ?? p.metadata!.name!, p]));
      const first = done([...pods.values()]);
      if (first !== undefined) return first;
      if (Date.now() >= end) throw new KubeError(`timed out after ${Math.round(deadlineMs / 1000)}s waiting for ${what}`);
      const outcome = await new Promise<{ value?: T; relist?: boolean; timeout?: boolean }>((resolve) => {
        let settled = false;
        let controller: AbortController | undefined;
        const finish = (r: { value?: T; relist?: boolean; timeout?: boolean }) => {
          if (settled) return;
          settled = true;
          clearTimeout(timer);
          controller?.abort();
          resolve(r);
        };
        const timer = setTimeout(() => finish({ timeout: true }), Math.max(0, end - Date.now()));
        this.requests++;
        new Watch(this.kc)
          .watch(
            path,
            {
              labelSelector: selectors.labelSelector,
              ...(selectors.fieldSelector ? { fieldSelector: selectors.fieldSelector } : {}),
              resourceVersion,
              allowWatchBookmarks: true,
            },
            (type, obj: V1Pod & { code?: number }) => {
              if (type === 'ERROR') return finish({ relist: true }); // 410 Expired and friends: start over
              if (type === 'BOOKMARK') return;
              const key = obj.metadata?.uid ?? obj.metadata?.name ?? '';
              if (type === 'DELETED') pods.delete(key);
              else pods.set(key, obj);
              const v = done([...pods.values()]);
              if (v !== undefined) finish({ value: v });
            },
            () => finish({ relist: true }),
          )
          .then((c) => {
            controller = c;
            if (settled) c.abort();
          })
          .catch(() => finish({ relist: true }));
      });
      if (outcome.value !== undefined) return outcome.value;
      if (outcome.timeout) throw new KubeError(`timed out after ${Math.round(deadlineMs / 1000)}s waiting for ${what}`);
      await sleep(200);
    }
  }
}
