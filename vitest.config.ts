import { fileURLToPath } from 'node:url';
import { defineConfig } from 'vitest/config';

// Node 20 validates relaxed SIMD only behind a flag; with it the suite checks all three builds there too.
// (Node 22+ has relaxed SIMD on by default, where the flag is accepted and changes nothing.)
const relaxedSimdFlag = Number(process.versions.node.split('.')[0]) < 22 ? ['--experimental-wasm-relaxed-simd'] : [];

export default defineConfig({
  // the facade's '#wasm-source' (package.json `imports`) points at dist/; tests run the sources instead
  resolve: { alias: { '#wasm-source': fileURLToPath(new URL('./src/wasm-source.ts', import.meta.url)) } },
  test: {
    include: ['test/**/*.test.ts'],
    pool: 'forks',
    execArgv: relaxedSimdFlag,
    testTimeout: 120_000,
  },
});
