// Decode steps over more than 8 MiB of K/V take the kernel's streaming path (each block's cache lines
// touched before use, assembly/attend.ts). It must compute exactly what the ordinary path does.

import { beforeAll, it } from 'vitest';
import { KVCache, init } from '../src/index.js';
import { referenceAttention } from './reference.js';
import { Rng, TOL, expectClose, forEachBuild } from './util.js';

forEachBuild('decode over more than 8 MiB of K/V', (build) => {
  beforeAll(async () => {
    await init({ build });
  });

  for (const window of [undefined, 2060]) {
    it(`matches the float64 reference (32/8 heads, headDim 64, 2,100 tokens${window ? `, window ${window}, 4 sinks` : ''})`, () => {
      const rng = new Rng(17);
      const shape = { heads: 32, kvHeads: 8, headDim: 64 };
      const options = { ...shape, maxTokens: 2100, ...(window ? { window, sinks: 4 } : {}) };
      const history = 2096; // 8 kv heads × 2,096 tokens × 64 floats × 4 bytes × K and V ≈ 8.2 MiB
      const k = rng.randn(2100 * 8 * 64), v = rng.randn(2100 * 8 * 64);
      const cache = new KVCache(options);
      cache.append(0, k.subarray(0, history * 512), v.subarray(0, history * 512));
      for (let t = history; t < 2100; t++) {
        const q = rng.randn(32 * 64);
        const out = cache.attend(0, q, k.subarray(t * 512, (t + 1) * 512), v.subarray(t * 512, (t + 1) * 512));
        const expected = referenceAttention(q, k.subarray(0, (t + 1) * 512), v.subarray(0, (t + 1) * 512),
          { ...shape, ...(window ? { window, sinks: 4 } : {}) });
        expectClose(out, expected, TOL, `decode at position ${t}`);
      }
      cache.dispose();
    });
  }
});
