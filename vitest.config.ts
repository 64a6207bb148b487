import { defineConfig } from 'vitest/config';

// Two tiers: `unit` (pure modules, recorded outputs; runs anywhere) and `lab` (real sshd test hosts in
// network namespaces; needs root on Linux). Lab files share one machine's 2 cores and bring up their own
// hosts, so they run one file at a time.
export default defineConfig({
  test: {
    reporters: ['default', './test/summary-reporter.ts'],
    projects: [
      {
        test: {
          name: 'unit',
          include: ['test/unit/**/*.test.ts'],
          testTimeout: 20_000,
        },
      },
      {
        test: {
          name: 'lab',
          include: ['test/lab/**/*.test.ts'],
          fileParallelism: false,
          testTimeout: 300_000,
          hookTimeout: 600_000,
        },
      },
    ],
  },
});
