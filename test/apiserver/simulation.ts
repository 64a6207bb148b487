import { randomBytes } from 'node:crypto';
import { fatalLog, klog, parseKubeProxyConfig, type NodeRuntime, type StartInfo } from './kubeproxy.ts';
import { KUBE_PROXY_REVISION_HASH, kubeProxyDaemonSet, kubeProxyPodTemplate, randomSuffix, type ClusterVersion } from './objects.ts';
import { errors } from './status.ts';
import { timestamp, type KObject, type Store, type StoreEvent } from './store.ts';

// The parts of a cluster that act on kube-proxy pods: the DaemonSet controller (a deleted pod is replaced
// on its node once it is gone, maxSurge 0; the status counts computed as the controller does) and the
// kubelet (graceful termination, start with the ConfigMap's current config.conf, Ready or CrashLoopBackOff).

export interface SimTimings {
  /** from a pod's removal to its replacement's creation */
  recreateDelayMs: number;
  /** from creation to binding (the scheduler) */
  scheduleDelayMs: number;
  /** from the runtime's answer to Running/Ready (or to the first CrashLoopBackOff) */
  readyDelayMs: number;
  /** from DELETE to the pod's removal; the container stops a third of the way in */
  terminationDelayMs: number;
  /** between restarts of a crash-looping container */
  crashLoopIntervalMs: number;
}

export interface ClusterEvent {
  /** ms since the server started */
  t: number;
  type: string;
  pod?: string;
  node?: string;
  detail?: string;
}

export type NeverReady = 'pending' | 'unready';

const NS = 'kube-system';
const APP = 'kube-proxy';
const CONTAINER = 'kube-proxy';

interface PodLog {
  lines: string[];
  started: boolean;
}

const isKubeProxy = (p: KObject) => p.metadata.namespace === NS && p.metadata.labels?.['k8s-app'] === APP;
const isReady = (p: KObject) => (p.status?.conditions ?? []).some((c: { type: string; status: string }) => c.type === 'Ready' && c.status === 'True');
const isTerminal = (p: KObject) => p.status?.phase === 'Succeeded' || p.status?.phase === 'Failed';

/** the node a DaemonSet pod is for: bound, or named by its node affinity before the scheduler binds it */
export function podTargetNode(p: KObject): string | undefined {
  if (p.spec?.nodeName) return p.spec.nodeName as string;
  const terms = p.spec?.affinity?.nodeAffinity?.requiredDuringSchedulingIgnoredDuringExecution?.nodeSelectorTerms ?? [];
  for (const t of terms) for (const f of t.matchFields ?? []) if (f.key === 'metadata.name' && f.operator === 'In') return f.values?.[0];
  return undefined;
}

const containerID = () => `containerd://${randomBytes(32).toString('hex')}`;
const IMAGE_ID = 'registry.k8s.io/kube-proxy@sha256:0a7d7a3ac7c2b4a6f3a5c0a2a8d7c1e9f0b1c2d3e4f5a6b7c8d9e0f1a2b3c4d5';

function conditions(at: string, ready: boolean, readyReason?: string) {
  const notReady = { reason: readyReason ?? 'ContainersNotReady', message: `containers with unready status: [${CONTAINER}]` };
  return [
    { type: 'PodReadyToStartContainers', status: 'True', lastProbeTime: null, lastTransitionTime: at },
    { type: 'Initialized', status: 'True', lastProbeTime: null, lastTransitionTime: at },
    { type: 'Ready', status: ready ? 'True' : 'False', lastProbeTime: null, lastTransitionTime: at, ...(ready ? {} : notReady) },
    { type: 'ContainersReady', status: ready ? 'True' : 'False', lastProbeTime: null, lastTransitionTime: at, ...(ready ? {} : notReady) },
    { type: 'PodScheduled', status: 'True', lastProbeTime: null, lastTransitionTime: at },
  ];
}

export class KubeProxySim {
  private readonly timers = new Set<NodeJS.Timeout>();
  private readonly logs = new Map<string, PodLog>();
  private readonly unavailable: { t: number; unavailable: number }[] = [];
  private dsUID = '';
  private statusSyncQueued = false;
  private closed = false;
  /** the cluster's starting state is not news: no events, no timeline points */
  private booting = true;
  /** nodes whose next kube-proxy pods never become Ready */
  readonly neverReady = new Map<string, NeverReady>();

  constructor(
    private readonly store: Store,
    private readonly nodeIPs: Map<string, string>,
    private readonly version: ClusterVersion,
    private readonly runtime: NodeRuntime,
    private readonly timings: SimTimings,
    private readonly now: () => number,
    private readonly record: (e: Omit<ClusterEvent, 't'>) => void,
  ) {
    store.subscribe((e) => this.onEvent(e));
  }

  /** The DaemonSet and one Running kube-proxy pod per node, started with the current config.conf. */
  async bootstrap(created: string): Promise<void> {
    this.dsUID = this.store.create('daemonsets.apps', kubeProxyDaemonSet(this.version, created)).metadata.uid!;
    const pods = [...this.nodeIPs.keys()].map((node) => {
      const pod = this.newPod(node, created);
      pod.spec.nodeName = node;
      return this.store.create('pods', pod);
    });
    await Promise.all(pods.map((p) => this.kubelet(p, created, 0)));
    this.syncStatus();
    this.booting = false;
    this.sampleTimeline();
  }

  private note(e: Omit<ClusterEvent, 't'>): void {
    if (!this.booting) this.record(e);
  }

  close(): void {
    this.closed = true;
    for (const t of this.timers) clearTimeout(t);
    this.timers.clear();
  }

  timeline(): { t: number; unavailable: number }[] {
    return this.unavailable.map((p) => ({ ...p }));
  }

  /** the container log (`previous`: the run before the current one) or the error kubelet answers with */
  podLog(pod: KObject, container: string | undefined, previous: boolean): string[] {
    const name = pod.metadata.name;
    const names: string[] = (pod.spec?.containers ?? []).map((c: { name: string }) => c.name);
    if (container !== undefined && container !== '' && !names.includes(container)) throw errors.badRequest(`container ${container} is not valid for pod ${name}`);
    const c = container || names[0] || CONTAINER;
    if (!pod.spec?.nodeName) throw errors.badRequest(`pod ${name} does not have a host assigned`);
    const status = (pod.status?.containerStatuses ?? []).find((s: { name: string }) => s.name === c);
    const log = this.logs.get(pod.metadata.uid!);
    if (previous) {
      if (!log || !status || (status.restartCount ?? 0) < 1) throw errors.badRequest(`previous terminated container "${c}" in pod "${name}" not found`);
      return log.lines;
    }
    if (!log || !log.started) {
      const why = status?.state?.waiting?.reason ?? 'ContainerCreating';
      throw errors.badRequest(`container "${c}" in pod "${name}" is waiting to start: ${why}`);
    }
    return log.lines;
  }

  /** DELETE of a pod: graceful unless gracePeriodSeconds is 0 or the pod was never bound. */
  deletePod(namespace: string, name: string, opts: { gracePeriodSeconds?: number; dryRun?: boolean }): KObject {
    const pod = this.store.get('pods', namespace, name);
    if (!pod) throw errors.notFound({ group: '', plural: 'pods' }, name);
    if (pod.metadata.deletionTimestamp && opts.gracePeriodSeconds !== 0) return pod;
    const grace = opts.gracePeriodSeconds ?? pod.spec?.terminationGracePeriodSeconds ?? 30;
    const node = pod.spec?.nodeName as string | undefined;
    if (grace === 0 || !node) {
      if (opts.dryRun) return pod;
      const gone = this.store.remove('pods', namespace, name);
      this.note({ type: 'pod-deleted', pod: name, ...(node ? { node } : {}), detail: 'immediately' });
      if (node) void this.stopRuntime(node);
      return gone;
    }
    const mark = (o: KObject) => {
      o.metadata.deletionTimestamp = timestamp(new Date(Date.now() + grace * 1000));
      o.metadata.deletionGracePeriodSeconds = grace;
    };
    if (opts.dryRun) {
      mark(pod);
      return pod;
    }
    const uid = pod.metadata.uid!;
    const marked = this.store.mutate('pods', namespace, name, mark);
    this.note({ type: 'pod-deleting', pod: name, node, detail: `grace ${grace}s` });
    this.later(Math.round(this.timings.terminationDelayMs / 3), () => {
      if (!this.current(namespace, name, uid)) return;
      const at = timestamp();
      this.store.mutate('pods', namespace, name, (o) => {
        o.status.conditions = conditions(at, false, 'PodCompleted');
        o.status.containerStatuses = (o.status.containerStatuses ?? []).map((s: Record<string, any>) => ({
          ...s,
          ready: false,
          started: false,
          state: { terminated: { exitCode: 2, reason: 'Error', startedAt: s.state?.running?.startedAt ?? at, finishedAt: at, containerID: s.containerID } },
        }));
      });
      this.note({ type: 'pod-stopped', pod: name, node });
      void this.stopRuntime(node);
    });
    this.later(this.timings.terminationDelayMs, () => {
      if (!this.current(namespace, name, uid)) return;
      this.store.remove('pods', namespace, name);
      this.note({ type: 'pod-deleted', pod: name, node });
    });
    return marked;
  }

  private async stopRuntime(node: string): Promise<void> {
    try {
      await this.runtime.stop?.(node);
    } catch (e) {
      this.note({ type: 'runtime-error', node, detail: `stop: ${(e as Error).message}` });
    }
  }

  private later(ms: number, fn: () => void): void {
    if (this.closed) return;
    const t = setTimeout(() => {
      this.timers.delete(t);
      if (!this.closed) fn();
    }, ms);
    this.timers.add(t);
  }

  private sleep(ms: number): Promise<void> {
    return new Promise((resolve) => this.later(ms, resolve));
  }

  /** the pod, if it still exists as the same object */
  private current(namespace: string, name: string, uid: string): KObject | undefined {
    const p = this.store.get('pods', namespace, name);
    return p && p.metadata.uid === uid ? p : undefined;
  }

  private alive(namespace: string, name: string, uid: string): boolean {
    const p = this.current(namespace, name, uid);
    return p !== undefined && !p.metadata.deletionTimestamp;
  }

  private newPod(node: string, created?: string): KObject {
    const template = kubeProxyPodTemplate(this.version);
    return {
      apiVersion: 'v1',
      kind: 'Pod',
      metadata: {
        name: `${APP}-${randomSuffix()}`,
        generateName: `${APP}-`,
        namespace: NS,
        ...(created ? { creationTimestamp: created } : {}),
        labels: { 'controller-revision-hash': KUBE_PROXY_REVISION_HASH, 'k8s-app': APP, 'pod-template-generation': '1' },
        ownerReferences: [{ apiVersion: 'apps/v1', kind: 'DaemonSet', name: APP, uid: this.dsUID, controller: true, blockOwnerDeletion: true }],
      },
      spec: {
        ...template.spec,
        affinity: {
          nodeAffinity: {
            requiredDuringSchedulingIgnoredDuringExecution: {
              nodeSelectorTerms: [{ matchFields: [{ key: 'metadata.name', operator: 'In', values: [node] }] }],
            },
          },
        },
        enableServiceLinks: true,
        preemptionPolicy: 'PreemptLowerPriority',
        priority: 2000001000,
        tolerations: [
          ...template.spec.tolerations,
          { effect: 'NoExecute', key: 'node.kubernetes.io/not-ready', operator: 'Exists' },
          { effect: 'NoExecute', key: 'node.kubernetes.io/unreachable', operator: 'Exists' },
          { effect: 'NoSchedule', key: 'node.kubernetes.io/disk-pressure', operator: 'Exists' },
          { effect: 'NoSchedule', key: 'node.kubernetes.io/memory-pressure', operator: 'Exists' },
          { effect: 'NoSchedule', key: 'node.kubernetes.io/pid-pressure', operator: 'Exists' },
          { effect: 'NoSchedule', key: 'node.kubernetes.io/unschedulable', operator: 'Exists' },
          { effect: 'NoSchedule', key: 'node.kubernetes.io/network-unavailable', operator: 'Exists' },
        ],
      },
      status: { phase: 'Pending', qosClass: 'BestEffort' },
    };
  }

  /** The DaemonSet controller's part: a replacement once the node has no kube-proxy pod left. */
  private recreate(node: string): void {
    this.later(this.timings.recreateDelayMs, () => {
      if (!this.nodeIPs.has(node) || !this.store.get('nodes', undefined, node)) return;
      if (this.store.list('pods', NS).some((p) => isKubeProxy(p) && podTargetNode(p) === node)) return;
      const pod = this.store.create('pods', this.newPod(node));
      const { name, uid } = pod.metadata;
      this.note({ type: 'pod-created', pod: name, node });
      this.later(this.timings.scheduleDelayMs, () => {
        if (!this.alive(NS, name, uid!)) return;
        const at = timestamp();
        const bound = this.store.mutate('pods', NS, name, (o) => {
          o.spec.nodeName = node;
          o.status.conditions = [{ type: 'PodScheduled', status: 'True', lastProbeTime: null, lastTransitionTime: at }];
        });
        this.note({ type: 'pod-scheduled', pod: name, node });
        this.kubelet(bound, at, this.timings.readyDelayMs).catch((e: Error) => this.note({ type: 'kubelet-error', pod: name, node, detail: e.message }));
      });
    });
  }

  /** The kubelet's part, from a bound pod to Running/Ready or CrashLoopBackOff. */
  private async kubelet(pod: KObject, startedAt: string, readyDelayMs: number): Promise<void> {
    const { name, uid } = pod.metadata;
    const node = pod.spec.nodeName as string;
    const ip = this.nodeIPs.get(node) ?? '';
    const info: StartInfo = { pod: name, internalIP: ip, version: this.version.gitVersion };
    const cid = containerID();
    const image = `registry.k8s.io/kube-proxy:${this.version.gitVersion}`;
    const base = (o: KObject) => {
      o.status.hostIP = ip;
      o.status.hostIPs = [{ ip }];
      o.status.podIP = ip;
      o.status.podIPs = [{ ip }];
      o.status.startTime ??= startedAt;
    };
    this.store.mutate('pods', NS, name, (o) => {
      base(o);
      o.status.phase = 'Pending';
      o.status.conditions = conditions(startedAt, false).map((c) => (c.type === 'PodReadyToStartContainers' ? { ...c, status: 'False' } : c));
      o.status.containerStatuses = [
        { name: CONTAINER, image, imageID: '', ready: false, restartCount: 0, started: false, state: { waiting: { reason: 'ContainerCreating' } }, lastState: {} },
      ];
    });
    this.logs.set(uid!, { lines: [], started: false });

    const stuck = this.neverReady.get(node);
    if (stuck === 'pending') {
      this.note({ type: 'pod-stuck', pod: name, node, detail: 'ContainerCreating' });
      return;
    }
    const cm = this.store.get('configmaps', NS, APP);
    const parsed = parseKubeProxyConfig(String(cm?.data?.['config.conf'] ?? ''));
    let ready: boolean;
    let lines: string[];
    let mode = 'unknown';
    if ('error' in parsed) {
      ready = false;
      // kube-proxy refuses such a config.conf before it picks a proxier
      lines = [klog('E', 'run.go:72', 'command failed', { err: parsed.error })];
    } else {
      mode = parsed.config.mode;
      this.note({ type: 'pod-starting', pod: name, node, detail: `mode ${mode}` });
      try {
        ({ ready, log: lines } = await this.runtime.start(node, parsed.config, info));
      } catch (e) {
        ready = false;
        lines = fatalLog(mode, (e as Error).message, info);
        this.note({ type: 'runtime-error', pod: name, node, detail: `start: ${(e as Error).message}` });
      }
    }
    if (readyDelayMs > 0) await this.sleep(readyDelayMs);
    if (!this.alive(NS, name, uid!)) return;
    this.logs.set(uid!, { lines, started: true });
    const at = timestamp();
    if (ready) {
      const unready = stuck === 'unready';
      this.store.mutate('pods', NS, name, (o) => {
        base(o);
        o.status.phase = 'Running';
        o.status.conditions = conditions(at, !unready);
        o.status.containerStatuses = [
          { name: CONTAINER, image, imageID: IMAGE_ID, containerID: cid, ready: !unready, restartCount: 0, started: true, state: { running: { startedAt: at } }, lastState: {} },
        ];
      });
      this.note({ type: unready ? 'pod-unready' : 'pod-ready', pod: name, node, detail: `mode ${mode}` });
      return;
    }
    const fatal = lines.find((l) => l.startsWith('E')) ?? lines[lines.length - 1] ?? '';
    this.note({ type: 'pod-crashloop', pod: name, node, detail: fatal });
    let restarts = 0;
    let backoff = 10;
    const crash = () => {
      if (!this.alive(NS, name, uid!)) return;
      restarts++;
      const finished = timestamp();
      this.store.mutate('pods', NS, name, (o) => {
        base(o);
        o.status.phase = 'Running';
        o.status.conditions = conditions(at, false);
        o.status.containerStatuses = [
          {
            name: CONTAINER,
            image,
            imageID: IMAGE_ID,
            containerID: containerID(),
            ready: false,
            started: false,
            restartCount: restarts,
            state: { waiting: { reason: 'CrashLoopBackOff', message: `back-off ${backoff}s restarting failed container=${CONTAINER} pod=${name}_${NS}(${uid})` } },
            lastState: { terminated: { exitCode: 1, reason: 'Error', startedAt: finished, finishedAt: finished, containerID: cid } },
          },
        ];
      });
      backoff = Math.min(backoff * 2, 300);
      this.later(this.timings.crashLoopIntervalMs, crash);
    };
    crash();
  }

  private onEvent(e: StoreEvent): void {
    if (e.resource === 'configmaps' && e.object.metadata.namespace === NS && e.object.metadata.name === APP && e.type === 'MODIFIED') {
      const parsed = parseKubeProxyConfig(String(e.object.data?.['config.conf'] ?? ''));
      this.note({ type: 'configmap-updated', detail: `resourceVersion ${e.object.metadata.resourceVersion}, ${'error' in parsed ? parsed.error : `mode ${parsed.config.mode}`}` });
    }
    if (e.resource !== 'pods' && e.resource !== 'nodes') return;
    if (e.resource === 'pods' && !isKubeProxy(e.object)) return;
    this.sampleTimeline();
    this.queueStatusSync();
    if (e.resource === 'pods' && e.type === 'DELETED') {
      this.logs.delete(e.object.metadata.uid!);
      const node = podTargetNode(e.object);
      if (node) this.recreate(node);
    }
  }

  /** nodes without a Ready kube-proxy pod that is not being deleted */
  private sampleTimeline(): void {
    if (this.booting) return;
    const pods = this.store.list('pods', NS).filter(isKubeProxy);
    const nodes = this.store.list('nodes').map((n) => n.metadata.name);
    const available = new Set(pods.filter((p) => isReady(p) && !p.metadata.deletionTimestamp).map((p) => p.spec?.nodeName as string));
    const unavailable = nodes.filter((n) => !available.has(n)).length;
    const last = this.unavailable[this.unavailable.length - 1];
    if (!last || last.unavailable !== unavailable) this.unavailable.push({ t: this.now(), unavailable });
  }

  private queueStatusSync(): void {
    if (this.statusSyncQueued || this.closed) return;
    this.statusSyncQueued = true;
    setImmediate(() => {
      this.statusSyncQueued = false;
      if (!this.closed) this.syncStatus();
    });
  }

  /** DaemonSet status as the controller's updateDaemonSetStatus computes it (omitempty fields left out at 0). */
  private syncStatus(): void {
    const ds = this.store.get('daemonsets.apps', NS, APP);
    if (!ds) return;
    const selector: Record<string, string> = ds.spec?.template?.spec?.nodeSelector ?? {};
    const pods = this.store.list('pods', NS).filter((p) => isKubeProxy(p) && !(p.metadata.deletionTimestamp && isTerminal(p)));
    let desired = 0;
    let current = 0;
    let misscheduled = 0;
    let ready = 0;
    let available = 0;
    let updated = 0;
    for (const node of this.store.list('nodes')) {
      const labels = node.metadata.labels ?? {};
      const wanted = Object.entries(selector).every(([k, v]) => labels[k] === v);
      const onNode = pods
        .filter((p) => p.spec?.nodeName === node.metadata.name)
        .sort((a, b) =>
          a.metadata.creationTimestamp === b.metadata.creationTimestamp
            ? a.metadata.name.localeCompare(b.metadata.name)
            : String(a.metadata.creationTimestamp).localeCompare(String(b.metadata.creationTimestamp)),
        );
      if (!wanted) {
        if (onNode.length > 0) misscheduled++;
        continue;
      }
      desired++;
      const oldest = onNode[0];
      if (!oldest) continue;
      current++;
      if (isReady(oldest)) {
        ready++;
        available++;
      }
      if (oldest.metadata.labels?.['controller-revision-hash'] === KUBE_PROXY_REVISION_HASH) updated++;
    }
    const unavailable = desired - available;
    const status = {
      currentNumberScheduled: current,
      desiredNumberScheduled: desired,
      numberMisscheduled: misscheduled,
      numberReady: ready,
      ...(available ? { numberAvailable: available } : {}),
      ...(unavailable ? { numberUnavailable: unavailable } : {}),
      observedGeneration: ds.metadata.generation ?? 1,
      ...(updated ? { updatedNumberScheduled: updated } : {}),
    };
    this.store.mutate('daemonsets.apps', NS, APP, (o) => {
      o.status = status;
    });
  }
}
