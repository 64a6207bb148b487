import { defineConfig } from 'vitest/config';

// The VM tier is selected by name only (see its entry below).
const vmTierAsked = process.argv.some((a, i, all) => a === '--project=vm' || (a === '--project' && all[i + 1] === 'vm'));

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
      // `vm` (real Debian guests under QEMU, minutes of CPU per boot) runs only when named:
      // `npm run test:vm`; plain `npm test` stays unit + lab.
      ...(vmTierAsked
        ? [
            {
              test: {
                name: 'vm',
                include: ['test/vm/**/*.test.ts'],
                fileParallelism: false,
                testTimeout: 900_000,
                hookTimeout: 1_200_000,
              },
            },
          ]
        : []),
    ],
  },
});
