import type { NeverReady } from './simulation.ts';

// Failures a real API server and cluster produce now and then, on demand: error answers (etcd timeouts,
// throttling), slow answers, dropped connections, watches the server ends, pods that never get Ready.

export interface FaultMatch {
  /** HTTP method, any case (default: any) */
  method?: string;
  /** the exact path (no query), or a pattern tested against it (default: any) */
  path?: string | RegExp;
}

export interface FaultRule extends FaultMatch {
  /** how many matching requests it applies to (default 1; Infinity for all) */
  times?: number;
  /** answer with this code and a Status (reason and message default to kube-apiserver's for the code) */
  status?: number;
  reason?: string;
  message?: string;
  /** with 429/503: Retry-After and details.retryAfterSeconds */
  retryAfterSeconds?: number;
  /** close the connection without an answer */
  reset?: boolean;
  /** wait this long first (alone: the request is then served normally) */
  delayMs?: number;
}

export interface WatchBreak extends FaultMatch {
  /** end the stream after this many events were sent */
  afterEvents?: number;
  /** end the stream this long after it started */
  afterMs?: number;
  /** destroy the connection instead of ending the response */
  reset?: boolean;
}

/** the usual message of kube-apiserver for an injected status */
export const FAULT_MESSAGES: Record<number, string> = {
  429: 'Too many requests, please try again later.',
  500: 'Internal error occurred: etcdserver: request timed out',
  503: 'the server is currently unable to handle the request',
  504: 'Timeout: request did not complete within requested timeout - context deadline exceeded',
};

function matches(m: FaultMatch, method: string, path: string): boolean {
  if (m.method && m.method.toUpperCase() !== method) return false;
  if (m.path === undefined) return true;
  return typeof m.path === 'string' ? m.path === path : m.path.test(path);
}

export class Faults {
  private rules: (FaultRule & { left: number })[] = [];
  private watchBreaks: (WatchBreak & { left: number })[] = [];

  constructor(
    private readonly neverReadyNodes: Map<string, NeverReady>,
    private readonly closeWatches: (reset: boolean) => number,
  ) {}

  /** Adds a rule; the first rule matching a request applies to it. */
  inject(rule: FaultRule): void {
    this.rules.push({ ...rule, left: rule.times ?? 1 });
  }

  /** The next `times` (default 1) matching requests answer `status`. */
  failNext(status: number, match: FaultMatch & Omit<FaultRule, 'status'> = {}): void {
    this.inject({ ...match, status });
  }

  /** The next `times` (default 1) matching requests wait `ms` before being served. */
  delay(ms: number, match: FaultMatch & { times?: number } = {}): void {
    this.inject({ ...match, delayMs: ms });
  }

  /** The next `times` (default 1) matching requests lose their connection. */
  resetNext(match: FaultMatch & { times?: number } = {}): void {
    this.inject({ ...match, reset: true });
  }

  /** The next watch matching ends (default: right after its first event or 50 ms, whichever first). */
  breakNextWatch(opts: WatchBreak = {}): void {
    const b = { ...opts, left: 1 };
    if (b.afterEvents === undefined && b.afterMs === undefined) {
      b.afterEvents = 1;
      b.afterMs = 50;
    }
    this.watchBreaks.push(b);
  }

  /** Ends every open watch now; answers how many there were. */
  breakWatches(opts: { reset?: boolean } = {}): number {
    return this.closeWatches(opts.reset === true);
  }

  /**
   * kube-proxy pods started on `node` from now on never get Ready: `pending` stays ContainerCreating (an
   * image that never arrives), `unready` runs with Ready false (a failing readiness probe).
   */
  neverReady(node: string, how: NeverReady = 'pending'): void {
    this.neverReadyNodes.set(node, how);
  }

  /** Undoes neverReady for pods started from now on. */
  readyAgain(node: string): void {
    this.neverReadyNodes.delete(node);
  }

  clear(): void {
    this.rules = [];
    this.watchBreaks = [];
    this.neverReadyNodes.clear();
  }

  /** the rule for this request, counted as used */
  take(method: string, path: string): FaultRule | undefined {
    const i = this.rules.findIndex((r) => r.left > 0 && matches(r, method, path));
    if (i < 0) return undefined;
    const r = this.rules[i]!;
    r.left--;
    if (r.left <= 0) this.rules.splice(i, 1);
    return r;
  }

  takeWatchBreak(path: string): WatchBreak | undefined {
    const i = this.watchBreaks.findIndex((r) => matches(r, 'GET', path));
    if (i < 0) return undefined;
    return this.watchBreaks.splice(i, 1)[0];
  }
}
