import { itemLabel, type CleanupPlan } from './old-mode-plan.ts';
import type { CleanupResult } from './old-mode-result.ts';

// The human lines of a cleanup: every object by its label, so a dry run's list and the real run's
// report can be laid side by side.

const objects = (n: number) => `${n} object${n === 1 ? '' : 's'}`;

function notes(plan: CleanupPlan): string[] {
  return [...plan.kept.map((k) => `  left alone: ${k.label} (${k.why})`), ...plan.problems.map((p) => `  not read: ${p}`)];
}

/** A plan as a dry run shows it (or, with nothing in it, as "nothing to clean"). */
export function describePlan(plan: CleanupPlan, dryRun: boolean): string[] {
  if (plan.items.length === 0) return [`nothing to clean: no objects of ${plan.from} mode on the node`, ...notes(plan)];
  return [
    `${dryRun ? 'dry run: would remove' : 'removing'} ${objects(plan.items.length)} of ${plan.from} mode (the node now runs ${plan.to}):`,
    ...plan.items.map((i) => `  ${itemLabel(i)}`),
    ...notes(plan),
  ];
}

/** What a cleanup did: removed, failed, skipped, and what the read after it still found. */
export function describeResult(plan: CleanupPlan, result: CleanupResult): string[] {
  const lines = [`removed ${objects(result.removed.length)} of ${plan.from} mode (the node now runs ${plan.to}):`, ...result.removed.map((l) => `  ${l}`)];
  for (const f of result.failed) lines.push(`  FAILED: ${f}`);
  for (const s of result.skipped) lines.push(`  skipped: ${s}`);
  for (const r of result.remaining) lines.push(`  still on the node: ${r}`);
  for (const k of plan.kept) lines.push(`  left alone: ${k.label} (${k.why})`);
  for (const p of result.problems) lines.push(`  not read after the cleanup: ${p}`);
  return lines;
}
