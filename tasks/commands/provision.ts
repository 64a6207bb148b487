import { basename, extname } from 'node:path';
import type { Host, Inventory, ProxyMode } from '../inventory/types.ts';
import type { NodeReadiness } from '../cluster/preflight.ts';
import { runNodePhase } from '../node/phase.ts';
import { planIsNoop } from '../node/plan.ts';
import { SessionPool } from '../remote/sessions.ts';
import { BecomeError, HostKeyError, type RemoteSession } from '../remote/ssh.ts';
import { executeHosts, formatDiff, formatStepLine, wantsPlainOutput } from '../run/render.ts';
import { formatRecap } from '../run/recap.ts';
import { writeReport, writeRetryFile } from '../run/report.ts';
import { hostStatusOf, type EventSink, type HostResult, type StepResult } from '../run/results.ts';
import type { Interrupt } from '../run/interrupt.ts';
import { EXIT_CODES } from './exit-codes.ts';
import { loadTargets } from './load-targets.ts';

// `provision`: the node phase over every target host (--forks at a time), then the cluster phase:
// ConfigMap and a serial kube-proxy recycle with proof per node.

export const EXIT = EXIT_CODES;

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
  /** --mode: the target mode for every host (default: each host's kube_proxy_mode) */
  mode?: ProxyMode;
  cluster?: ClusterFlags;
  out?: (line: string) => void;
  err?: (line: string) => void;
  /** stop at the next safe point on SIGINT/SIGTERM (the CLI sets it; default: no signal handling) */
  interrupt?: Interrupt;
}

export interface ClusterFlags {
  kubeconfig?: string;
  context?: string;
  namespace?: string;
  configMap?: string;
  configKey?: string;
  daemonSet?: string;
  labelSelector?: string;
  podTimeoutS?: number;
  canary?: string;
  rollback?: boolean;
  backupDir?: string;
  /** --cleanup-old-mode: remove the other modes' leftovers from each node once it is verified */
  cleanupOldMode?: boolean;
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
  try {
    tags = resolveTags(opts.tags);
  } catch (e) {
    err((e as Error).message);
    return EXIT.usage;
  }
  const loaded = await loadTargets(opts.inventory, opts.limit, err, opts.knownHosts);
  if ('code' in loaded) return loaded.code;
  const { inv, targets } = loaded;
  if (opts.mode) for (const h of inv.hosts) h.settings.mode = opts.mode;
  const forks = opts.forks ?? targets[0]?.run.forks ?? 10;
  const phases = TAGS.filter((t) => tags.includes(t));
  const modes = new Set(targets.map((h) => h.settings.mode));
  if (phases.includes('cluster') && modes.size > 1) {
    err(`kube_proxy_mode differs between the target hosts (${[...modes].join(', ')}): kube-proxy has one mode per cluster; set it once (or use --mode)`);
    return EXIT.usage;
  }
  out(
    `kube-proxy-mode provision: ${targets.length} host${targets.length === 1 ? '' : 's'} from ${opts.inventory}, ` +
      `target mode ${[...modes].join(', ')}, forks ${forks}, phases: ${phases.join(', ')}${opts.dryRun ? ', DRY RUN (nothing will be changed)' : ''}`,
  );
  if (modes.has('nftables')) {
    out(
      'note: kube-proxy (>= 1.29) starting in nftables mode removes the iptables and ipvs modes\' state itself and flushes the ' +
        'whole IPVS table, foreign virtual servers (keepalived, kube-vip) included: their owners must restore them.',
    );
  }
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
  let results: HostResult[] = [];
  const plain = opts.plain ?? wantsPlainOutput();
  try {
    if (phases.includes('node')) {
      const worker = (host: Host, emit: EventSink) => provisionHost(host, emit, { dryRun: opts.dryRun, sessions, ...(opts.interrupt ? { interrupt: opts.interrupt } : {}) });
      results = await executeHosts(targets, worker, { forks, showDiffs: opts.dryRun || opts.showDiffs, plain, out });
    }
    if (phases.includes('cluster') && opts.interrupt?.requested) {
      out(`${opts.interrupt.signal}: the cluster phase was not started (nothing in the cluster was changed)`);
    } else if (phases.includes('cluster')) {
      results = await clusterPhase(opts, inv, targets, results, sessions, out);
    }
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
  if (opts.interrupt?.requested) {
    out(`interrupted by ${opts.interrupt.signal}: every step that started finished; run the same command again to finish`);
    return EXIT.interrupted;
  }
  return exitCodeFor(results);
}

/** Run the cluster phase after the node phase and fold its steps into the per-host results. */
async function clusterPhase(
  opts: ProvisionOptions,
  inv: Inventory,
  targets: Host[],
  nodeResults: HostResult[],
  sessions: SessionPool,
  out: (l: string) => void,
): Promise<HostResult[]> {
  const c = opts.cluster ?? {};
  const byHost = new Map(nodeResults.map((r) => [r.host, r]));
  const first = targets[0]!;
  const vars = first.vars as { kubeconfig?: string; kube_context?: string };
  const showDiffs = opts.dryRun || opts.showDiffs;
  out('');
  // Loaded only when the cluster phase runs: the Kubernetes client is most of the tool's start-up time
  // and memory, which a node-only run (--tags node) need not pay.
  const { CLUSTER, runClusterPhase } = await import('../cluster/phase.ts');
  const outcome = await runClusterPhase({
    targetMode: first.settings.mode,
    dryRun: opts.dryRun,
    kube: {
      ...((c.kubeconfig ?? vars.kubeconfig) ? { kubeconfig: c.kubeconfig ?? vars.kubeconfig } : {}),
      ...((c.context ?? vars.kube_context) ? { context: c.context ?? vars.kube_context } : {}),
    },
    namespace: c.namespace ?? 'kube-system',
    configMap: c.configMap ?? 'kube-proxy',
    configKey: c.configKey ?? 'config.conf',
    daemonSet: c.daemonSet ?? 'kube-proxy',
    labelSelector: c.labelSelector ?? 'k8s-app=kube-proxy',
    podTimeoutMs: (c.podTimeoutS ?? 180) * 1000,
    ...(c.canary ? { canary: c.canary } : {}),
    rollback: c.rollback ?? true,
    backupDir: c.backupDir ?? '.',
    cleanupOldMode: c.cleanupOldMode ?? false,
    inventoryHosts: inv.hosts,
    targets,
    readiness: (host) => nodeReadiness(host, byHost.get(host.name), sessions),
    sessions,
    ...(opts.interrupt ? { interrupt: opts.interrupt } : {}),
    emit: (r) => {
      out(formatStepLine(r));
      if (showDiffs) for (const l of formatDiff(r)) out(l);
    },
    out,
  });
  // Fold: cluster-wide steps under a `cluster` row, node steps into their host's row.
  const results = new Map(nodeResults.map((r) => [r.host, { ...r, steps: [...r.steps] }]));
  for (const step of outcome.steps) {
    let r = results.get(step.host);
    if (!r) {
      r = { host: step.host, status: 'ok', steps: [], sshExecs: 0 };
      results.set(step.host, r);
    }
    r.steps.push(step);
  }
  for (const r of results.values()) {
    r.status = r.status === 'unreachable' ? 'unreachable' : hostStatusOf(r.steps);
    const failed = r.steps.find((s) => s.status === 'failed');
    if (failed && !r.reason) r.reason = `${failed.name}: ${failed.message.split('\n')[0]}`;
    const h = inv.hosts.find((x) => x.name === r.host);
    if (h) {
      const n = await sessions.counts(h);
      r.sshExecs = n.execs;
      r.sshRoundTrips = n.roundTrips;
    }
  }
  const cluster = results.get(CLUSTER);
  const ordered = [...nodeResults.map((r) => results.get(r.host)!), ...[...results.values()].filter((r) => r.host !== CLUSTER && !byHost.has(r.host))];
  return cluster ? [cluster, ...ordered] : ordered;
}

/**
 * Is a host ready for the target mode? The node phase's verdict when it ran on the host (in a dry run:
 * it would be, unless it failed); otherwise a read-only check with the same facts and plan.
 */
async function nodeReadiness(host: Host, result: HostResult | undefined, sessions: SessionPool): Promise<NodeReadiness> {
  if (result) {
    // In a dry run a `changed` node is one the real run would prepare first: ready by then.
    if (result.status === 'ok' || result.status === 'changed') return { ready: true };
    return { ready: false, reason: `the node phase ${result.status === 'unreachable' ? 'could not reach it' : 'failed'}: ${result.reason ?? result.status}` };
  }
  try {
    const session = await sessions.get(host);
    const { plan } = await runNodePhase(host, session, { dryRun: true, emit: () => {} });
    if (!plan) return { ready: false, reason: 'facts could not be read' };
    if (plan.error) return { ready: false, reason: plan.error };
    if (planIsNoop(plan)) return { ready: true };
    const missing = [...plan.install.map((p) => `package ${p}`), ...plan.load.map((m) => `module ${m}`), ...plan.files.filter((f) => f.action !== 'none').map((f) => f.file.path)];
    return { ready: false, reason: `not prepared (outside this run's node phase): ${missing.join(', ')}` };
  } catch (e) {
    return { ready: false, reason: (e as Error).message };
  }
}

export function exitCodeFor(results: HostResult[]): number {
  if (results.some((r) => r.status === 'failed')) return EXIT.failed;
  if (results.some((r) => r.status === 'unreachable')) return EXIT.unreachable;
  return EXIT.ok;
}

export interface HostRunOptions {
  dryRun: boolean;
  sessions: SessionPool;
  interrupt?: Interrupt;
}

/** One host's node phase: connect (or reuse the connection), run it. Never throws: every outcome is a HostResult. */
export async function provisionHost(host: Host, emit: EventSink, opts: HostRunOptions): Promise<HostResult> {
  emit({ type: 'host-start', host: host.name });
  const t0 = Date.now();
  const done = (r: HostResult) => {
    emit({ type: 'host-done', result: r });
    return r;
  };
  if (opts.interrupt?.requested) {
    const step: StepResult = { host: host.name, name: 'node', status: 'skipped', message: `${opts.interrupt.signal}: not started`, ms: 0 };
    emit({ type: 'step', result: step });
    return done({ host: host.name, status: 'skipped', steps: [step], sshExecs: 0, reason: step.message });
  }
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
    const { steps } = await runNodePhase(host, session, { dryRun: opts.dryRun, emit: (r) => emit({ type: 'step', result: r }), ...(opts.interrupt ? { interrupt: opts.interrupt } : {}) });
    const failed = steps.find((s) => s.status === 'failed');
    return done({
      host: host.name,
      status: hostStatusOf(steps),
      steps,
      sshExecs: session.execs,
      sshRoundTrips: session.roundTrips,
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
      sshRoundTrips: session.roundTrips,
      reason: error.message,
    });
  }
}
