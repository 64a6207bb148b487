// SIGINT / SIGTERM during a run: the first one asks the run to stop at the next safe point (the step
// each node is in finishes; no new node, no new recycle, no ConfigMap write starts); a second one
// stops at once. Work on nodes is one exec per step and files are renamed into place, so what the
// second signal cuts is never half a file.

export interface Interrupt {
  /** the signal that asked to stop, once one did */
  readonly signal: NodeJS.Signals | undefined;
  readonly requested: boolean;
  /** removes the handlers */
  dispose(): void;
}

export function watchInterrupts(say: (line: string) => void, hardExit: (code: number) => void = (c) => process.exit(c)): Interrupt {
  let signal: NodeJS.Signals | undefined;
  const handler = (s: NodeJS.Signals) => {
    if (signal) {
      say(`${s} again: stopping now; rerun the same command to finish`);
      hardExit(130);
      return;
    }
    signal = s;
    say(`${s}: finishing the step in progress on each node, then stopping (${s} again stops at once)`);
  };
  process.on('SIGINT', handler);
  process.on('SIGTERM', handler);
  return {
    get signal() {
      return signal;
    },
    get requested() {
      return signal !== undefined;
    },
    dispose() {
      process.off('SIGINT', handler);
      process.off('SIGTERM', handler);
    },
  };
}

/** For callers that run without signal handling (tests, library use). */
export const NO_INTERRUPT: Interrupt = { signal: undefined, requested: false, dispose() {} };
