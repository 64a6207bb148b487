// What every step of every phase returns. Rendering (terminal, plain lines, JSON report, recap) reads
// these; steps never print.

export type StepStatus = 'ok' | 'changed' | 'failed' | 'skipped';
export type HostStatus = 'ok' | 'changed' | 'failed' | 'unreachable' | 'skipped';

export interface StepResult {
  host: string;
  name: string;
  status: StepStatus;
  message: string;
  /** unified diff of a file the step writes (or would write, in a dry run) */
  diff?: string;
  ms: number;
  /** Service probes through the node, before and after its switch */
  probes?: { service: string; via: string; address: string; before?: { ok: boolean; ms: number; detail: string }; after?: { ok: boolean; ms: number; detail: string } }[];
}

export interface HostResult {
  host: string;
  status: HostStatus;
  steps: StepResult[];
  /** SSH execs (channels) this host cost */
  sshExecs: number;
  /** scripts run on the host: each a round trip, several of them in one exec where a shell was kept */
  sshRoundTrips?: number;
  /** why the host failed or was unreachable, in one line */
  reason?: string;
}

export type RunEvent =
  | { type: 'host-start'; host: string }
  | { type: 'step'; result: StepResult }
  | { type: 'host-done'; result: HostResult };

export type EventSink = (event: RunEvent) => void;

/** A host's overall status: unreachable and failed dominate, then changed, then ok; all skipped = skipped. */
export function hostStatusOf(steps: StepResult[], unreachable = false): HostStatus {
  if (unreachable) return 'unreachable';
  if (steps.some((s) => s.status === 'failed')) return 'failed';
  if (steps.some((s) => s.status === 'changed')) return 'changed';
  if (steps.length > 0 && steps.every((s) => s.status === 'skipped')) return 'skipped';
  return 'ok';
}

/** The row that carries the cluster phase's own steps (as Ansible's localhost would). */
export const CLUSTER_ROW = 'cluster';

/**
 * Records steps in order: each gets the time since the previous one, is kept, and is emitted at once.
 * `extra` carries the optional parts (diff, probes).
 */
export function stepRecorder(emit: (r: StepResult) => void) {
  const steps: StepResult[] = [];
  let clock = Date.now();
  const record = (host: string, name: string, status: StepStatus, message: string, extra: Pick<StepResult, 'diff' | 'probes'> = {}): StepResult => {
    const now = Date.now();
    const r: StepResult = { host, name, status, message, ms: now - clock };
    if (extra.diff) r.diff = extra.diff;
    if (extra.probes) r.probes = extra.probes;
    clock = now;
    steps.push(r);
    emit(r);
    return r;
  };
  return { steps, record };
}
