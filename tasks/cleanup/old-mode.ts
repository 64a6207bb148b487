import type { ProxyMode } from '../inventory/types.ts';
import { planCleanup, type CleanupCluster, type CleanupPlan } from './old-mode-plan.ts';
import { cleanupReadScript, parseNodeDataplane } from './old-mode-read.ts';
import { describePlan, describeResult } from './old-mode-report.ts';
import { parseCleanupResult, type CleanupResult, type ExecOutput } from './old-mode-result.ts';
import { cleanupApplyScript } from './old-mode-script.ts';

// `--cleanup-old-mode` for one node that has been verified running its new mode: read the node, plan,
// and (unless a dry run) remove the plan's objects and read the node again, in two execs.

/** How a script reaches the node: a RemoteSession (run as root, through sudo where the inventory says so). */
export interface NodeShell {
  run(script: string, opts?: { timeoutMs?: number }): Promise<ExecOutput>;
}

export interface CleanupOptions {
  from: ProxyMode;
  to: ProxyMode;
  cluster: CleanupCluster;
  /** list what would go, change nothing */
  dryRun?: boolean;
  /** per exec; default 120 s (a big node's iptables-save is megabytes, twice) */
  timeoutMs?: number;
}

export type CleanupStatus =
  /** nothing of the old mode was found (plan.problems says what could not be looked at) */
  | 'nothing to clean'
  /** a dry run: plan.items would go */
  | 'planned'
  /** everything planned went and the read-back finds nothing of the old mode */
  | 'cleaned'
  /** something could not be removed, or is still there */
  | 'failed';

export interface CleanupOutcome {
  status: CleanupStatus;
  plan: CleanupPlan;
  result?: CleanupResult;
  /** for the run's output, one object a line */
  lines: string[];
}

export async function cleanupOldMode(shell: NodeShell, o: CleanupOptions): Promise<CleanupOutcome> {
  const timeoutMs = o.timeoutMs ?? 120_000;
  const read = await shell.run(cleanupReadScript(), { timeoutMs });
  if (!/^@@kpm:dp /m.test(read.stdout)) {
    throw new Error(`reading the node for the cleanup failed (exit ${read.code ?? 'none'}): ${read.stderr.trim().split('\n').slice(-3).join(' | ') || 'no output'}`);
  }
  const plan = planCleanup(o.from, o.to, parseNodeDataplane(read.stdout), o.cluster);
  if (plan.items.length === 0) return { status: 'nothing to clean', plan, lines: describePlan(plan, o.dryRun ?? false) };
  if (o.dryRun) return { status: 'planned', plan, lines: describePlan(plan, true) };
  const exec = await shell.run(cleanupApplyScript(plan), { timeoutMs });
  const result = parseCleanupResult(plan, exec, o.cluster);
  const clean = result.failed.length === 0 && result.remaining.length === 0 && result.problems.length === 0;
  return { status: clean ? 'cleaned' : 'failed', plan, result, lines: describeResult(plan, result) };
}
