import { existsSync, readFileSync, renameSync, unlinkSync, writeFileSync } from 'node:fs';
import { summarize } from './recap.ts';
import { CLUSTER_ROW, type HostResult } from './results.ts';

// --report FILE (JSON, for machines) and the retry file (for `--limit @file`), both written atomically.

export interface ReportMeta {
  command: string;
  inventory: string;
  dryRun: boolean;
  startedAt: string;
  durationMs: number;
  tags: string[];
}

export function buildReport(results: HostResult[], meta: ReportMeta): object {
  const hosts: Record<string, unknown> = {};
  for (const r of results) {
    hosts[r.host] = {
      status: r.status,
      ...(r.reason ? { reason: r.reason } : {}),
      steps: r.steps.map((s) => ({ name: s.name, status: s.status, message: s.message, ms: s.ms, ...(s.diff ? { diff: s.diff } : {}), ...(s.probes ? { probes: s.probes } : {}) })),
      sshExecs: r.sshExecs,
      sshRoundTrips: r.sshRoundTrips ?? r.sshExecs,
    };
  }
  return { hosts, summary: { ...summarize(results), ...meta } };
}

function writeAtomic(path: string, text: string): void {
  const tmp = `${path}.${process.pid}.tmp`;
  writeFileSync(tmp, text, { mode: 0o644 });
  renameSync(tmp, path);
}

export function writeReport(path: string, results: HostResult[], meta: ReportMeta): void {
  writeAtomic(path, JSON.stringify(buildReport(results, meta), null, 2) + '\n');
}

const RETRY_HEADER = '# kube-proxy-mode retry file: hosts that failed or were unreachable; use with --limit @';

/**
 * Write the failed and unreachable hosts, one per line (Ansible's .retry format). Returns the path when
 * written. When every host succeeded, a retry file this tool wrote earlier is removed so it cannot
 * mislead a later `--limit @file`.
 */
export function writeRetryFile(path: string, results: HostResult[]): string | null {
  // the cluster row is not a host: `--limit @file` could not select it (a cluster failure is rerun whole)
  const bad = results.filter((r) => r.host !== CLUSTER_ROW && (r.status === 'failed' || r.status === 'unreachable')).map((r) => r.host);
  if (bad.length === 0) {
    if (existsSync(path) && readFileSync(path, 'utf8').startsWith(RETRY_HEADER)) unlinkSync(path);
    return null;
  }
  writeAtomic(path, `${RETRY_HEADER}${path}\n${bad.join('\n')}\n`);
  return path;
}
