import { basename, extname } from 'node:path';
import { InventoryError } from '../inventory/errors.ts';
import { loadInventory, selectTargets } from '../inventory/load.ts';
import type { Host } from '../inventory/types.ts';
import { runNodePhase } from '../node/phase.ts';
import { SessionPool } from '../remote/sessions.ts';
import { BecomeError, HostKeyError, type RemoteSession } from '../remote/ssh.ts';
import { executeHosts, wantsPlainOutput } from '../run/render.ts';
import { formatRecap } from '../run/recap.ts';
import { writeReport, writeRetryFile } from '../run/report.ts';
import { hostStatusOf, type EventSink, type HostResult, type StepResult } from '../run/results.ts';

// `provision`: the node phase (and, with later phases, the cluster phase) over every target host.

/** Ansible's exit codes, so wrappers written for ansible-playbook read ours the same way. */
export const EXIT = { ok: 0, error: 1, failed: 2, unreachable: 3, inventory: 4, usage: 5, interrupted: 99 } as const;

export const TAGS = ['node', 'cluster'] as const;
export type Tag = (typeof TAGS)[number];

export interface ProvisionOptions {
  inventory: string;
  dryRun: boolean;
  limit?: string;
  tags?: string[];
  forks?: number;
  becomePassword?: string;
  acceptNewHostKeys: boolean;
  knownHosts?: string;
  report?: string;
  retryFile?: string;
  showDiffs: boolean;
  plain?: boolean;
  out?: (line: string) => void;
  err?: (line: string) => void;
}

export class UsageError extends Error {}

export function resolveTags(tags: string[] | undefined): Tag[] {
  if (!tags || tags.length === 0) return [...TAGS];
  const list = tags.flatMap((t) => t.split(',')).map((t) => t.trim()).filter(Boolean);
  for (const t of list) {
    if (!(TAGS as readonly string[]).includes(t)) throw new UsageError(`--tags: unknown tag '${t}' (known tags: ${TAGS.join(', ')})`);
  }
  return [...new Set(list)] as Tag[];
}

/** Default retry file: <inventory name>.retry in the current directory, as Ansible names <playbook>.retry. */
export function defaultRetryFile(inventory: string): string {
  return `${basename(inventory, extname(inventory))}.retry`;
}

export async function provision(opts: ProvisionOptions): Promise<number> {
  const out = opts.out ?? ((l: string) => process.stdout.write(l + '\n'));
  const err = opts.err ?? ((l: string) => process.stderr.write(l + '\n'));
  const started = Date.now();
  let tags: Tag[];
  let targets: Host[];
  try {
    tags = resolveTags(opts.tags);
    const inv = await loadInventory(opts.inventory);
    for (const w of inv.warnings ?? []) err(`warning: ${w}`);
    targets = selectTargets(inv, opts.limit);
  } catch (e) {
    if (e instanceof InventoryError) {
      err(e.message);
      return EXIT.inventory;
    }
    if (e instanceof UsageError || (e as Error).name === 'LimitError') {
      err((e as Error).message);
      return EXIT.usage;
    }
    throw e;
  }
  if (opts.knownHosts) for (const h of targets) h.run.knownHostsFile = opts.knownHosts;
  const forks = opts.forks ?? targets[0]?.run.forks ?? 10;

  const phases = tags.filter((t) => t === 'node');
  if (tags.includes('cluster') && phases.length === 0) {
    err('--tags cluster: this version has no cluster phase yet (ConfigMap flip and kube-proxy recycle); nothing to run');
    return EXIT.usage;
  }

  const modes = new Set(targets.map((h) => h.settings.mode));
  out(
    `kube-proxy-mode provision: ${targets.length} host${targets.length === 1 ? '' : 's'} from ${opts.inventory}, ` +
      `forks ${forks}, phases: ${phases.join(', ')}${opts.dryRun ? ', DRY RUN (nothing will be changed)' : ''}`,
  );
  if (modes.has('ipvs')) {
    out(
      'note: kube-proxy\'s IPVS mode is deprecated upstream since Kubernetes 1.35 (removal planned); ' +
        'nftables mode is GA since 1.33 and is the long-term choice.',
    );
  }

  const sessions = new SessionPool({
    acceptNewHostKeys: opts.acceptNewHostKeys,
    ...(opts.becomePassword !== undefined ? { becomePassword: opts.becomePassword } : {}),
  });
  let results: HostResult[];
  try {
    const worker = (host: Host, emit: EventSink) => provisionHost(host, emit, { dryRun: opts.dryRun, sessions });
    results = await executeHosts(targets, worker, {
      forks,
      showDiffs: opts.dryRun || opts.showDiffs,
      plain: opts.plain ?? wantsPlainOutput(),
      out,
    });
  } finally {
    await sessions.closeAll();
  }

  out('');
  out(formatRecap(results, { dryRun: opts.dryRun }));
  const meta = {
    command: 'provision',
    inventory: opts.inventory,
    dryRun: opts.dryRun,
    startedAt: new Date(started).toISOString(),
    durationMs: Date.now() - started,
    tags,
  };
  if (opts.report) {
    writeReport(opts.report, results, meta);
    out(`report written to ${opts.report}`);
  }
  const retryPath = writeRetryFile(opts.retryFile ?? defaultRetryFile(opts.inventory), results);
  if (retryPath) out(`to retry the failed and unreachable hosts: --limit @${retryPath}`);
  return exitCodeFor(results);
}

export function exitCodeFor(results: HostResult[]): number {
  if (results.some((r) => r.status === 'failed')) return EXIT.failed;
  if (results.some((r) => r.status === 'unreachable')) return EXIT.unreachable;
  return EXIT.ok;
}

export interface HostRunOptions {
  dryRun: boolean;
  sessions: SessionPool;
}

/** One host's node phase: connect (or reuse the connection), run it. Never throws: every outcome is a HostResult. */
export async function provisionHost(host: Host, emit: EventSink, opts: HostRunOptions): Promise<HostResult> {
  emit({ type: 'host-start', host: host.name });
  const t0 = Date.now();
  const done = (r: HostResult) => {
    emit({ type: 'host-done', result: r });
    return r;
  };
  let session: RemoteSession;
  try {
    session = await opts.sessions.get(host);
  } catch (e) {
    const error = e as Error;
    const step: StepResult = {
      host: host.name,
      name: 'connect',
      status: 'failed',
      message: error.message,
      ms: Date.now() - t0,
    };
    emit({ type: 'step', result: step });
    // A refused host key is a verdict on the host, not a network accident: the node fails closed.
    const unreachable = !(error instanceof HostKeyError);
    return done({
      host: host.name,
      status: unreachable ? 'unreachable' : 'failed',
      steps: [step],
      sshExecs: 0,
      reason: error.message,
    });
  }
  try {
    const { steps } = await runNodePhase(host, session, { dryRun: opts.dryRun, emit: (r) => emit({ type: 'step', result: r }) });
    const failed = steps.find((s) => s.status === 'failed');
    return done({
      host: host.name,
      status: hostStatusOf(steps),
      steps,
      sshExecs: session.execs,
      ...(failed ? { reason: `${failed.name}: ${failed.message.split('\n')[0]}` } : {}),
    });
  } catch (e) {
    const error = e as Error;
    const step: StepResult = { host: host.name, name: 'node', status: 'failed', message: error.message, ms: Date.now() - t0 };
    emit({ type: 'step', result: step });
    const lost = !(error instanceof BecomeError) && /connection|socket|ECONNRESET|Not connected|No response/i.test(error.message);
    return done({
      host: host.name,
      status: lost ? 'unreachable' : 'failed',
      steps: [step],
      sshExecs: session.execs,
      reason: error.message,
    });
  }
}
