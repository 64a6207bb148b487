import { itemLabel, planCleanup, type CleanupCluster, type CleanupPlan } from './old-mode-plan.ts';
import { parseNodeDataplane } from './old-mode-read.ts';
import { READBACK_MARKER } from './old-mode-script.ts';

// What the node said it did with each object of the plan, and what the read after it still finds of
// the old mode: the plan made again from that read, so "left" means what a second cleanup would remove.

export interface CleanupResult {
  /** the objects removed, as labelled in the plan */
  removed: string[];
  /** "label: why" of each object that could not be removed */
  failed: string[];
  /** "label: why" of each object left alone because it was gone or had changed since the plan */
  skipped: string[];
  /** the old mode's objects on the node after the cleanup */
  remaining: string[];
  /** parts of the node the read-back could not see */
  problems: string[];
}

export interface ExecOutput {
  stdout: string;
  stderr: string;
  code: number | null;
}

/** The status lines of old-mode-apply.sh, in order. */
export function parseStatusLines(stdout: string): { status: string; label: string; detail: string }[] {
  const out: { status: string; label: string; detail: string }[] = [];
  for (const line of stdout.split('\n')) {
    const m = /^@@kpm:cleanup (removed|skipped|failed) (\S*) ?(\S*)$/.exec(line);
    if (!m) continue;
    const text = (v: string | undefined) => Buffer.from(v ?? '', 'base64').toString('utf8');
    out.push({ status: m[1]!, label: text(m[2]), detail: text(m[3]) });
  }
  return out;
}

export function parseCleanupResult(plan: CleanupPlan, exec: ExecOutput, cluster: CleanupCluster): CleanupResult {
  const at = exec.stdout.indexOf(`${READBACK_MARKER}\n`);
  const report = at < 0 ? exec.stdout : exec.stdout.slice(0, at);
  const result: CleanupResult = { removed: [], failed: [], skipped: [], remaining: [], problems: [] };
  const answered = new Map<string, number>();
  for (const s of parseStatusLines(report)) {
    answered.set(s.label, (answered.get(s.label) ?? 0) + 1);
    if (s.status === 'removed') result.removed.push(s.label);
    else if (s.status === 'failed') result.failed.push(`${s.label}: ${s.detail}`);
    else result.skipped.push(`${s.label}: ${s.detail}`);
  }
  // an object the node never answered for: the script stopped before it (killed, timed out, crashed)
  const why = `no answer from the node (exit ${exec.code ?? 'none'}${exec.stderr.trim() ? `: ${exec.stderr.trim().split('\n').slice(-2).join(' | ')}` : ''})`;
  for (const item of plan.items) {
    const label = itemLabel(item);
    const n = answered.get(label) ?? 0;
    if (n > 0) answered.set(label, n - 1);
    else result.failed.push(`${label}: ${why}`);
  }
  if (at < 0) {
    result.problems.push(`the node sent no read-back after the cleanup: what is left is not known (${why})`);
  } else {
    const after = planCleanup(plan.from, plan.to, parseNodeDataplane(exec.stdout.slice(at)), cluster);
    result.remaining = after.items.map(itemLabel);
    result.problems = after.problems;
  }
  return result;
}
