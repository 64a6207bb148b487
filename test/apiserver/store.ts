import { randomUUID } from 'node:crypto';
import { isDeepStrictEqual } from 'node:util';
import { keyOf, RESOURCES, resolveResource, type ResourceType } from './resources.ts';
import { errors } from './status.ts';

// The objects and their history, as etcd and the watch cache keep them: one resourceVersion counter for
// every kind, bumped by each write; a bounded event history per resource for watches to resume from;
// a write that changes nothing is not a write (no new resourceVersion, no event), as in kube-apiserver.

export interface ObjectMeta {
  name: string;
  namespace?: string;
  uid?: string;
  resourceVersion?: string;
  creationTimestamp?: string;
  generation?: number;
  generateName?: string;
  labels?: Record<string, string>;
  annotations?: Record<string, string>;
  deletionTimestamp?: string;
  deletionGracePeriodSeconds?: number;
  ownerReferences?: Record<string, unknown>[];
  [k: string]: unknown;
}

export interface KObject {
  apiVersion: string;
  kind: string;
  metadata: ObjectMeta;
  [k: string]: any;
}

export type EventType = 'ADDED' | 'MODIFIED' | 'DELETED';

export interface StoreEvent {
  type: EventType;
  /** "pods", "daemonsets.apps" */
  resource: string;
  object: KObject;
  /** the object before a MODIFIED (the same as `object` for ADDED/DELETED) */
  previous: KObject;
  rv: number;
}

export type Listener = (e: StoreEvent) => void;

/** RFC 3339 with seconds, as metav1.Time serializes */
export const timestamp = (d = new Date()) => d.toISOString().replace(/\.\d{3}Z$/, 'Z');

const clone = <T>(o: T): T => structuredClone(o);
const keyFor = (namespace: string | undefined, name: string) => `${namespace ?? ''}/${name}`;

export class Store {
  private rv: number;
  private readonly objects = new Map<string, Map<string, KObject>>();
  private readonly history = new Map<string, StoreEvent[]>();
  /** per resource: every event with rv > windowStart is still in the history */
  private readonly windowStart = new Map<string, number>();
  private readonly listeners = new Set<Listener>();

  constructor(
    startResourceVersion: number,
    private readonly historyLimit: number,
  ) {
    this.rv = startResourceVersion;
  }

  /** the newest resourceVersion (what a list answers) */
  get resourceVersion(): string {
    return String(this.rv);
  }

  private table(rt: ResourceType): Map<string, KObject> {
    const k = keyOf(rt);
    let t = this.objects.get(k);
    if (!t) {
      t = new Map();
      this.objects.set(k, t);
    }
    return t;
  }

  subscribe(l: Listener): () => void {
    this.listeners.add(l);
    return () => this.listeners.delete(l);
  }

  private emit(rt: ResourceType, type: EventType, object: KObject, previous: KObject): void {
    const k = keyOf(rt);
    const e: StoreEvent = { type, resource: k, object: clone(object), previous: clone(previous), rv: this.rv };
    let h = this.history.get(k);
    if (!h) {
      h = [];
      this.history.set(k, h);
    }
    h.push(e);
    while (h.length > this.historyLimit) {
      const dropped = h.shift()!;
      this.windowStart.set(k, dropped.rv);
    }
    for (const l of [...this.listeners]) l(e);
  }

  get(resource: string | ResourceType, namespace: string | undefined, name: string): KObject | undefined {
    const rt = typeof resource === 'string' ? resolveResource(resource) : resource;
    const o = this.table(rt).get(keyFor(rt.namespaced ? namespace : undefined, name));
    return o ? clone(o) : undefined;
  }

  /** Objects sorted by namespace and name, as etcd's key order gives them. */
  list(resource: string | ResourceType, namespace?: string): KObject[] {
    const rt = typeof resource === 'string' ? resolveResource(resource) : resource;
    return [...this.table(rt).entries()]
      .filter(([, o]) => !namespace || !rt.namespaced || o.metadata.namespace === namespace)
      .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))
      .map(([, o]) => clone(o));
  }

  /** Adds an object; fills uid, creationTimestamp, resourceVersion (and generation where kept). */
  create(resource: string | ResourceType, obj: KObject, manager?: string): KObject {
    const rt = typeof resource === 'string' ? resolveResource(resource) : resource;
    const t = this.table(rt);
    const o = clone(obj);
    if (!rt.namespaced) delete o.metadata.namespace;
    const key = keyFor(o.metadata.namespace, o.metadata.name);
    if (t.has(key)) throw errors.alreadyExists(rt, o.metadata.name);
    this.rv++;
    o.metadata.uid = randomUUID();
    o.metadata.resourceVersion = String(this.rv);
    o.metadata.creationTimestamp ??= timestamp();
    if (rt.generation) o.metadata.generation = 1;
    else delete o.metadata.generation;
    if (manager) o.metadata.managedFields = stampManager(undefined, manager, o.apiVersion ?? 'v1', o.metadata.creationTimestamp);
    else delete o.metadata.managedFields;
    delete o.metadata.deletionTimestamp;
    delete o.metadata.deletionGracePeriodSeconds;
    t.set(key, o);
    this.emit(rt, 'ADDED', o, o);
    return clone(o);
  }

  /**
   * Replaces an object. A non-empty `metadata.resourceVersion` in `obj` must equal the stored one (else
   * 409 Conflict); identity fields are kept from the stored object.
   */
  update(resource: string | ResourceType, obj: KObject, opts: { keepStatus?: boolean; manager?: string } = {}): KObject {
    const rt = typeof resource === 'string' ? resolveResource(resource) : resource;
    const t = this.table(rt);
    const namespace = rt.namespaced ? obj.metadata.namespace : undefined;
    const key = keyFor(namespace, obj.metadata.name);
    const old = t.get(key);
    if (!old) throw errors.notFound(rt, obj.metadata.name);
    const wanted = obj.metadata.resourceVersion;
    if (wanted !== undefined && wanted !== '' && wanted !== old.metadata.resourceVersion) throw errors.conflict(rt, obj.metadata.name);
    const o = clone(obj);
    o.metadata = {
      ...o.metadata,
      name: old.metadata.name,
      uid: old.metadata.uid,
      creationTimestamp: old.metadata.creationTimestamp,
      resourceVersion: old.metadata.resourceVersion,
    };
    if (rt.namespaced) o.metadata.namespace = old.metadata.namespace;
    else delete o.metadata.namespace;
    for (const k of ['deletionTimestamp', 'deletionGracePeriodSeconds', 'generation'] as const) {
      if (old.metadata[k] === undefined) delete o.metadata[k];
      else o.metadata[k] = old.metadata[k] as never;
    }
    if (opts.keepStatus) {
      if (old.status === undefined) delete o.status;
      else o.status = clone(old.status);
    }
    o.apiVersion = old.apiVersion;
    o.kind = old.kind;
    // The client cannot set managedFields by hand here; the server keeps them, as kube-apiserver does.
    if (old.metadata.managedFields === undefined) delete o.metadata.managedFields;
    else o.metadata.managedFields = clone(old.metadata.managedFields);
    return this.commitModified(rt, t, key, o, old, opts.manager);
  }

  /** Store a changed object: a no-op write keeps its resourceVersion and sends no event, as kube-apiserver does. */
  private commitModified(rt: ResourceType, t: Map<string, KObject>, key: string, o: KObject, old: KObject, manager?: string): KObject {
    if (isDeepStrictEqual(o, old)) return clone(old);
    // Like kube-apiserver: a real change stamps the writer's managedFields entry with the time of the change.
    if (manager) o.metadata.managedFields = stampManager(o.metadata.managedFields, manager, o.apiVersion ?? 'v1');
    if (rt.generation && !isDeepStrictEqual(o.spec, old.spec)) o.metadata.generation = (old.metadata.generation ?? 0) + 1;
    this.rv++;
    o.metadata.resourceVersion = String(this.rv);
    t.set(key, o);
    this.emit(rt, 'MODIFIED', o, old);
    return clone(o);
  }

  /**
   * Read-modify-write on the server side (the controllers here, or a test injecting a concurrent change):
   * everything `fn` does to the object is kept, including status and deletion fields.
   */
  mutate(resource: string | ResourceType, namespace: string | undefined, name: string, fn: (o: KObject) => void): KObject {
    const rt = typeof resource === 'string' ? resolveResource(resource) : resource;
    const t = this.table(rt);
    const key = keyFor(rt.namespaced ? namespace : undefined, name);
    const old = t.get(key);
    if (!old) throw errors.notFound(rt, name);
    const o = clone(old);
    fn(o);
    o.metadata.name = old.metadata.name;
    o.metadata.uid = old.metadata.uid;
    o.metadata.resourceVersion = old.metadata.resourceVersion;
    return this.commitModified(rt, t, key, o, old);
  }

  /** Removes an object; the DELETED event carries the deletion's resourceVersion, as etcd's does. */
  remove(resource: string | ResourceType, namespace: string | undefined, name: string): KObject {
    const rt = typeof resource === 'string' ? resolveResource(resource) : resource;
    const t = this.table(rt);
    const key = keyFor(rt.namespaced ? namespace : undefined, name);
    const old = t.get(key);
    if (!old) throw errors.notFound(rt, name);
    t.delete(key);
    this.rv++;
    const gone = clone(old);
    gone.metadata.resourceVersion = String(this.rv);
    this.emit(rt, 'DELETED', gone, old);
    return clone(gone);
  }

  /**
   * Events of `resource` newer than `rv`, or `expired` with the oldest resourceVersion still known when
   * the history no longer reaches back that far (a watch answers 410 then).
   */
  eventsSince(resource: string | ResourceType, rv: number): { events: StoreEvent[] } | { expired: number } {
    const rt = typeof resource === 'string' ? resolveResource(resource) : resource;
    const k = keyOf(rt);
    const start = this.windowStart.get(k);
    if (start !== undefined && rv < start) return { expired: start + 1 };
    return { events: (this.history.get(k) ?? []).filter((e) => e.rv > rv) };
  }

  /** Forgets all history (as an etcd compaction does): a watch from any older resourceVersion gets 410. */
  compact(): void {
    for (const rt of RESOURCES) this.windowStart.set(keyOf(rt), this.rv);
    this.history.clear();
  }
}

export interface ManagedFieldsEntry {
  manager: string;
  operation: 'Update';
  apiVersion: string;
  time: string;
  fieldsType: 'FieldsV1';
  fieldsV1: Record<string, unknown>;
}

/** The manager's entry, (re)stamped now; the other managers' entries stay as they were. */
function stampManager(entries: unknown, manager: string, apiVersion: string, time = timestamp()): ManagedFieldsEntry[] {
  const list = Array.isArray(entries) ? (entries as ManagedFieldsEntry[]).filter((e) => e.manager !== manager) : [];
  return [...list, { manager, operation: 'Update', apiVersion, time, fieldsType: 'FieldsV1', fieldsV1: {} }];
}
