import { CLUSTER_ROW, type HostResult } from './results.ts';

// The closing table, shaped like Ansible's PLAY RECAP so operators read it at a glance: step counts per
// host, then what that means for the host in words.

export interface RecapCounts {
  ok: number;
  changed: number;
  unreachable: number;
  failed: number;
  skipped: number;
}

export function countSteps(h: HostResult): RecapCounts {
  const c: RecapCounts = { ok: 0, changed: 0, unreachable: h.status === 'unreachable' ? 1 : 0, failed: 0, skipped: 0 };
  // An unreachable host's failed connection is counted once, as unreachable (Ansible's way).
  for (const s of h.steps) if (!(h.status === 'unreachable' && s.status === 'failed')) c[s.status]++;
  return c;
}

function verdict(h: HostResult, dryRun: boolean): string {
  switch (h.status) {
    case 'ok':
      return 'converged: nothing to change';
    case 'changed':
      return dryRun ? 'would change (dry run: nothing was changed)' : 'changed';
    case 'skipped':
      return 'skipped';
    case 'failed':
      return `FAILED: ${h.reason ?? ''}`.trimEnd();
    case 'unreachable':
      return `UNREACHABLE: ${h.reason ?? ''}`.trimEnd();
  }
}

export function summarize(results: HostResult[]): Record<'hosts' | 'ok' | 'changed' | 'failed' | 'unreachable' | 'skipped', number> {
  const s = { hosts: results.length, ok: 0, changed: 0, failed: 0, unreachable: 0, skipped: 0 };
  for (const r of results) s[r.status]++;
  return s;
}

export function formatRecap(results: HostResult[], opts: { dryRun: boolean; title?: string }): string {
  const title = opts.title ?? (opts.dryRun ? 'PLAY RECAP (dry run)' : 'PLAY RECAP');
  const width = Math.max(26, ...results.map((r) => r.host.length + 1));
  const lines = [`${title} ${'*'.repeat(Math.max(3, 79 - title.length))}`];
  for (const r of results) {
    const c = countSteps(r);
    // Ansible's own layout: `name : ok=N    changed=N    …`, each count left-aligned in 4 columns.
    const cell = (k: keyof RecapCounts) => `${k}=${String(c[k]).padEnd(4)}`;
    lines.push(
      `${r.host.padEnd(width)}: ${cell('ok')} ${cell('changed')} ${cell('unreachable')} ${cell('failed')} ${cell('skipped')} ${verdict(r, opts.dryRun)}`,
    );
  }
  const s = summarize(results);
  // The cluster phase's own steps sit on a `cluster` row (as Ansible's localhost): count it apart.
  const nodes = results.filter((r) => r.host !== CLUSTER_ROW).length;
  const rows = results.length > nodes ? `${nodes} host${nodes === 1 ? '' : 's'} + cluster` : `${s.hosts} host${s.hosts === 1 ? '' : 's'}`;
  lines.push(
    '',
    `${rows}: ${s.ok} converged, ${s.changed} ${opts.dryRun ? 'would change' : 'changed'}, ` +
      `${s.failed} failed, ${s.unreachable} unreachable, ${s.skipped} skipped`,
  );
  const probeLines = results.flatMap((r) =>
    r.steps.flatMap((st) =>
      (st.probes ?? []).map((p) => {
        const o = (x?: { ok: boolean; ms: number; detail: string }) => (x ? `${x.ok ? 'ok' : 'FAILED'} ${x.ms}ms` : '-');
        return `${r.host.padEnd(width)}: ${p.service} ${p.via} ${p.address}  before ${o(p.before)}  after ${o(p.after)}`;
      }),
    ),
  );
  if (probeLines.length) lines.push('', `SERVICE PROBES ${'*'.repeat(65)}`, ...probeLines);
  return lines.join('\n');
}
