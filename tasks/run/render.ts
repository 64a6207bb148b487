import { mapPool } from './pool.ts';
import type { EventSink, HostResult, StepResult } from './results.ts';

// Two ways to show a run, over the same worker: a listr2 task tree in a terminal, and one line per event
// (prefixed with the host) when stdout is not a terminal or CI is set, so logs stay greppable per node.

export type HostWorker<H> = (host: H, emit: EventSink) => Promise<HostResult>;

export interface RenderOptions {
  forks: number;
  /** print file diffs with the step lines */
  showDiffs: boolean;
  /** true: plain lines; false: listr2 tree */
  plain: boolean;
  out?: (line: string) => void;
}

export function wantsPlainOutput(): boolean {
  return !process.stdout.isTTY || !!process.env.CI;
}

export function formatStepLine(r: StepResult): string {
  const ms = r.ms >= 1000 ? `${(r.ms / 1000).toFixed(1)}s` : `${r.ms}ms`;
  return `${r.host} | ${r.name.padEnd(14)} | ${r.status.padEnd(7)} | ${r.message.replace(/\n/g, ' / ')} (${ms})`;
}

export function formatDiff(r: StepResult): string[] {
  if (!r.diff) return [];
  return r.diff.replace(/\n$/, '').split('\n').map((l) => `${r.host} |   ${l}`);
}

export async function executeHosts<H extends { name: string }>(
  hosts: readonly H[],
  worker: HostWorker<H>,
  opts: RenderOptions,
): Promise<HostResult[]> {
  const out = opts.out ?? ((l: string) => process.stdout.write(l + '\n'));
  if (opts.plain) {
    return mapPool(hosts, opts.forks, (h) =>
      worker(h, (ev) => {
        if (ev.type === 'step') {
          out(formatStepLine(ev.result));
          if (opts.showDiffs) for (const l of formatDiff(ev.result)) out(l);
        } else if (ev.type === 'host-done' && (ev.result.status === 'unreachable' || ev.result.reason)) {
          out(`${ev.result.host} | ${'host'.padEnd(14)} | ${ev.result.status.padEnd(7)} | ${ev.result.reason ?? ''}`);
        }
      }),
    );
  }

  // Only a terminal gets the task tree: plain runs (CI, pipes, the benchmarks) skip loading it.
  const { Listr } = await import('listr2');
  const results = new Array<HostResult>(hosts.length);
  const diffs: string[] = [];
  const list = new Listr(
    hosts.map((h, i) => ({
      title: h.name,
      task: async (_ctx: unknown, task: { title: string; output: string }) => {
        const r = await worker(h, (ev) => {
          if (ev.type === 'step') {
            task.output = `${ev.result.name}: ${ev.result.status} ${ev.result.message.split('\n')[0]}`;
            if (opts.showDiffs) diffs.push(...formatDiff(ev.result));
          }
        });
        results[i] = r;
        const changed = r.steps.filter((s) => s.status === 'changed').map((s) => s.name);
        task.title = `${h.name}: ${r.status}${changed.length ? ` (${changed.join(', ')})` : ''}`;
        if (r.status === 'failed' || r.status === 'unreachable') throw new Error(`${h.name}: ${r.status}: ${r.reason ?? ''}`);
      },
    })),
    {
      concurrent: opts.forks,
      exitOnError: false,
      registerSignalListeners: false,
      rendererOptions: { collapseErrors: false },
    },
  );
  await list.run();
  for (const l of diffs) out(l);
  return results;
}
