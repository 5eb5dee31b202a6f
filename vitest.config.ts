import { defineConfig } from 'vitest/config';

// raw-socket and cap are NAN addons: they do not load in worker threads, so
// every test file runs in its own forked process. Files run one at a time
// because integration tests share the machine's namespaces and CPU.
export default defineConfig({
  test: {
    pool: 'forks',
    fileParallelism: false,
    include: ['test/**/*.test.ts'],
    testTimeout: 60_000,
    hookTimeout: 120_000,
  },
});
