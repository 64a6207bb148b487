import type { Host } from '../inventory/types.ts';
import { RemoteSession, type SessionOptions } from './ssh.ts';

// One connection per host for the whole run: the node phase opens it, the cluster phase's checks on the
// same node reuse it, and everything is closed once at the end.
export class SessionPool {
  private readonly sessions = new Map<string, Promise<RemoteSession>>();

  constructor(private readonly options: SessionOptions) {}

  get(host: Host): Promise<RemoteSession> {
    let s = this.sessions.get(host.name);
    if (!s) {
      s = RemoteSession.open(host, this.options);
      // a failed connection is not cached: a later phase may try again
      s.catch(() => this.sessions.delete(host.name));
      this.sessions.set(host.name, s);
    }
    return s;
  }

  /** SSH execs and script round trips the host's session has cost so far (0 when it never connected) */
  async counts(host: Host): Promise<{ execs: number; roundTrips: number }> {
    const s = this.sessions.get(host.name);
    const session = s ? await s.catch(() => null) : null;
    return { execs: session?.execs ?? 0, roundTrips: session?.roundTrips ?? 0 };
  }

  async closeAll(): Promise<void> {
    const all = [...this.sessions.values()];
    this.sessions.clear();
    for (const s of await Promise.allSettled(all)) if (s.status === 'fulfilled') s.value.close();
  }
}
