// Test harnesses (lab hosts, VM guests) register here how to tear down what they started, so it goes
// away however the test process ends: normally, or killed by SIGINT, SIGTERM or SIGHUP.

const cleanups = new Set<() => void>();
let installed = false;

function runAll(): void {
  for (const c of [...cleanups]) c();
}

function onSignal(signal: NodeJS.Signals): void {
  runAll();
  // Die of the signal as we would have without this handler, unless someone else handles it.
  if (process.listenerCount(signal) <= 1) {
    process.removeListener(signal, onSignal);
    process.kill(process.pid, signal);
  }
}

/** Run `teardown` (synchronous) when the process exits or is killed by a signal; once per function. */
export function cleanupOnExit(teardown: () => void): void {
  cleanups.add(teardown);
  if (installed) return;
  installed = true;
  process.on('exit', runAll);
  for (const s of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) process.on(s, onSignal);
}
