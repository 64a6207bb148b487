import type { ProxyMode } from '../inventory/types.ts';
import { planCleanup, type CleanupCluster, type CleanupPlan } from './old-mode-plan.ts';
import { cleanupReadScript, parseNodeDataplane } from './old-mode-read.ts';
import { describePlan, describeResult } from './old-mode-report.ts';
import { parseCleanupResult, type CleanupResult, type ExecOutput } from './old-mode-result.ts';
import { cleanupApplyScript, READBACK_MARKER } from './old-mode-script.ts';

// `--cleanup-old-mode` for one node that has been verified running its new mode: read the node, plan,
// and (unless a dry run) remove the plan's objects and read the node again.

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
  return (await cleanupOldModes(shell, { ...o, from: [o.from] }))[0]!;
}

/**
 * The cleanup of several old modes on one read of the node: each apply ends with a read of the node
 * (its read-back), which is what the next mode is planned from. So a node costs one read exec, plus one
 * apply exec per old mode that has something to remove.
 */
export async function cleanupOldModes(
  shell: NodeShell,
  o: Omit<CleanupOptions, 'from'> & { from: readonly ProxyMode[] },
): Promise<CleanupOutcome[]> {
  const timeoutMs = o.timeoutMs ?? 120_000;
  const readNode = async (): Promise<string> => {
    const read = await shell.run(cleanupReadScript(), { timeoutMs });
    if (!READ_DONE.test(read.stdout)) {
      throw new Error(`reading the node for the cleanup failed (exit ${read.code ?? 'none'}): ${read.stderr.trim().split('\n').slice(-3).join(' | ') || 'no output'}`);
    }
    return read.stdout;
  };
  let read: string | undefined;
  const outcomes: CleanupOutcome[] = [];
  for (const from of o.from) {
    read ??= await readNode();
    const plan = planCleanup(from, o.to, parseNodeDataplane(read), o.cluster);
    if (plan.items.length === 0) {
      outcomes.push({ status: 'nothing to clean', plan, lines: describePlan(plan, o.dryRun ?? false) });
      continue;
    }
    if (o.dryRun) {
      outcomes.push({ status: 'planned', plan, lines: describePlan(plan, true) });
      continue;
    }
    const exec = await shell.run(cleanupApplyScript(plan), { timeoutMs });
    const result = parseCleanupResult(plan, exec, o.cluster);
    const clean = result.failed.length === 0 && result.remaining.length === 0 && result.problems.length === 0;
    outcomes.push({ status: clean ? 'cleaned' : 'failed', plan, result, lines: describeResult(plan, result) });
    // the node as it is now, for the next mode's plan; read it again where the read-back did not come
    const at = exec.stdout.indexOf(`${READBACK_MARKER}\n`);
    read = at >= 0 && READ_DONE.test(exec.stdout.slice(at)) ? exec.stdout.slice(at) : undefined;
  }
  return outcomes;
}

/** a read of the node (old-mode-read.sh) that got as far as its dataplane sections */
const READ_DONE = /^@@kpm:dp /m;
