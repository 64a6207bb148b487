import { hostname, userInfo } from 'node:os';
// kube-apiserver wants MicroTime with six fractional digits; a plain Date is sent with three and refused
import { V1MicroTime, type V1Lease } from '@kubernetes/client-node';
import { KubeError, type KubeClient } from './kube.ts';

// One run at a time per cluster: a coordination.k8s.io Lease held for the whole cluster phase, renewed
// while it runs and deleted at the end. A second run finds it held and refuses, naming the holder and
// when the lease expires (a run that died leaves a lease that simply expires).

export const LOCK_NAME = 'kube-proxy-mode';
export const LOCK_DURATION_S = 60;

export class LockHeldError extends Error {
  override name = 'LockHeldError';
}

export function lockIdentity(): string {
  let user = 'unknown';
  try {
    user = userInfo().username;
  } catch {
    /* no passwd entry: keep "unknown" */
  }
  return `${user}@${hostname()} pid ${process.pid}`;
}

const iso = (d: Date | string | undefined) => (d ? new Date(d as string).toISOString() : undefined);

/** Who holds the lease and until when; undefined when it is free or expired. */
export function activeHolder(lease: V1Lease | undefined, now = Date.now()): { identity: string; since?: string; expires: string } | undefined {
  const spec = lease?.spec;
  if (!spec?.holderIdentity) return undefined;
  const renewed = new Date((spec.renewTime ?? spec.acquireTime ?? 0) as unknown as string).getTime();
  const expires = renewed + (spec.leaseDurationSeconds ?? LOCK_DURATION_S) * 1000;
  if (!Number.isFinite(expires) || expires <= now) return undefined;
  const since = iso(spec.acquireTime as unknown as string);
  return { identity: spec.holderIdentity, ...(since ? { since } : {}), expires: new Date(expires).toISOString() };
}

export function heldMessage(namespace: string, h: { identity: string; since?: string; expires: string }): string {
  return (
    `another run holds the lock: Lease ${namespace}/${LOCK_NAME} is held by ${h.identity}` +
    `${h.since ? ` since ${h.since}` : ''}, until ${h.expires} unless renewed; ` +
    'wait for it to finish (or, if it died, for the lease to expire) and run again'
  );
}

export interface ClusterLock {
  /** set when a renewal found the lease taken by someone else: stop before the next change */
  readonly lost: string | undefined;
  release(): Promise<void>;
}

function leaseBody(namespace: string, identity: string, now: V1MicroTime, base?: V1Lease): V1Lease {
  return {
    apiVersion: 'coordination.k8s.io/v1',
    kind: 'Lease',
    metadata: { ...(base?.metadata ?? {}), name: LOCK_NAME, namespace },
    spec: {
      holderIdentity: identity,
      leaseDurationSeconds: LOCK_DURATION_S,
      acquireTime: now,
      renewTime: now,
      leaseTransitions: (base?.spec?.leaseTransitions ?? 0) + (base ? 1 : 0),
    },
  };
}

/** Take the lease or throw LockHeldError; renew it every third of its duration until release(). */
export async function acquireLock(kube: KubeClient, namespace: string, identity = lockIdentity()): Promise<ClusterLock> {
  const current = await kube.readLease(namespace, LOCK_NAME);
  const holder = activeHolder(current);
  if (holder && holder.identity !== identity) throw new LockHeldError(heldMessage(namespace, holder));
  let lease: V1Lease;
  try {
    lease = current
      ? await kube.replaceLease(leaseBody(namespace, identity, new V1MicroTime(), current))
      : await kube.createLease(leaseBody(namespace, identity, new V1MicroTime()));
  } catch (e) {
    // someone else created or renewed it between our read and our write
    if (e instanceof KubeError && (e.code === 409 || e.reason === 'AlreadyExists')) {
      const now = activeHolder(await kube.readLease(namespace, LOCK_NAME));
      throw new LockHeldError(now ? heldMessage(namespace, now) : `Lease ${namespace}/${LOCK_NAME} changed while it was being taken: run again`);
    }
    throw e;
  }
  let lost: string | undefined;
  const renew = async () => {
    if (lost) return;
    try {
      lease = await kube.replaceLease({ ...lease, spec: { ...lease.spec, renewTime: new V1MicroTime() } });
    } catch (e) {
      if (e instanceof KubeError && (e.code === 409 || e.code === 404)) {
        const other = activeHolder(await kube.readLease(namespace, LOCK_NAME).catch(() => undefined));
        lost = `the lock Lease ${namespace}/${LOCK_NAME} was ${other ? `taken by ${other.identity}` : 'removed'} while this run held it`;
      }
      // other errors: the next renewal tries again; the lease lasts three renewal periods
    }
  };
  const timer = setInterval(() => void renew(), (LOCK_DURATION_S * 1000) / 3);
  timer.unref();
  return {
    get lost() {
      return lost;
    },
    async release() {
      clearInterval(timer);
      if (lost) return;
      // deleted only while still ours: the precondition makes a late release harmless
      await kube.deleteLease(namespace, LOCK_NAME, lease.metadata?.resourceVersion).catch(() => undefined);
    },
  };
}

/** For a dry run: who holds the lock now (nothing is written). */
export async function lockHolder(kube: KubeClient, namespace: string): Promise<string | undefined> {
  const h = activeHolder(await kube.readLease(namespace, LOCK_NAME));
  return h ? heldMessage(namespace, h) : undefined;
}
