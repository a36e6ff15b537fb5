import { defineConfig } from 'vitest/config';

// Node 20 validates relaxed SIMD only behind a flag; with it the suite checks all three builds there too.
// (Node 22+ has relaxed SIMD on by default, where the flag is accepted and changes nothing.)
const relaxedSimdFlag = Number(process.versions.node.split('.')[0]) < 22 ? ['--experimental-wasm-relaxed-simd'] : [];

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    pool: 'forks',
    execArgv: relaxedSimdFlag,
    testTimeout: 120_000,
  },
});
