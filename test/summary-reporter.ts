import { mkdirSync, writeFileSync } from 'node:fs';
import type { Reporter, TestModule } from 'vitest/node';

// Prints the plain `N passed, N failed, N skipped` line that CI reads, and keeps it in
// test-results/summary.txt so .ci/run can repeat it as its very last line.
export default class SummaryReporter implements Reporter {
  onTestRunEnd(testModules: ReadonlyArray<TestModule>, unhandledErrors: ReadonlyArray<unknown>): void {
    let passed = 0;
    let failed = 0;
    let skipped = 0;
    for (const mod of testModules) {
      for (const test of mod.children.allTests()) {
        const state = test.result().state;
        if (state === 'passed') passed++;
        else if (state === 'failed') failed++;
        else skipped++;
      }
      // A file that failed to load (syntax error, failed beforeAll) has no passing tests to show for it.
      if (mod.state() === 'failed' && ![...mod.children.allTests()].some((t) => t.result().state === 'failed')) failed++;
    }
    failed += unhandledErrors.length;
    const line = `${passed} passed, ${failed} failed, ${skipped} skipped`;
    mkdirSync('test-results', { recursive: true });
    writeFileSync('test-results/summary.txt', line + '\n');
    process.stdout.write(line + '\n');
  }
}
