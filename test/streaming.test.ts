// Decode steps over a cache of more than 20 MiB of K/V (STREAM_BYTES in src/cache-memory.ts: many layers together,
// or one big layer) take the kernel's streaming path (cache lines touched ahead of use, assembly/attend/stream.ts). It must
// compute exactly what the ordinary path does.

import { expect, it } from 'vitest';
import { KVCache } from '../src/index.js';
import { STREAM_BYTES } from '../src/cache-memory.js';
import { referenceAttention, referenceCacheQuery } from './support/reference.js';
import { Rng, TOL, expectClose, withEachBuild } from './support/util.js';

withEachBuild(`decode over more than ${STREAM_BYTES / 2 ** 20} MiB of K/V`, () => {
  for (const window of [undefined, 2060]) {
    it(`matches the float64 reference (32/8 heads, headDim 64, 2,100 tokens${window ? `, window ${window}, 4 sinks` : ''})`, () => {
      const rng = new Rng(17);
      const shape = { heads: 32, kvHeads: 8, headDim: 64 };
      // 3 layers × 8 kv heads × 2,096 tokens × 64 floats × 4 bytes × K and V ≈ 24.6 MiB; layer 0 is attended
      const options = { ...shape, layers: 3, maxTokens: 2100, ...(window ? { window, sinks: 4 } : {}) };
      const history = 2096;
      const k = rng.randn(2100 * 8 * 64),
        v = rng.randn(2100 * 8 * 64);
      const cache = new KVCache(options);
      for (let layer = 0; layer < 3; layer++)
        cache.append(layer, k.subarray(0, history * 512), v.subarray(0, history * 512));
      expect(cache.byteLength).toBeGreaterThan(STREAM_BYTES);
      for (let t = history; t < 2100; t++) {
        const q = rng.randn(32 * 64);
        const out = cache.attend(0, q, k.subarray(t * 512, (t + 1) * 512), v.subarray(t * 512, (t + 1) * 512));
        const expected = referenceAttention(q, k.subarray(0, (t + 1) * 512), v.subarray(0, (t + 1) * 512), {
          ...shape,
          ...(window ? { window, sinks: 4 } : {}),
        });
        expectClose(out, expected, TOL, `decode at position ${t}`);
      }
      cache.dispose();
    });
  }

  it('and over a wrapped ring: window 2,060 with 4 sinks in 2,100 slots, 2,400 tokens, rope (every key rotated)', () => {
    // Past 2,104 tokens the ring overwrites its oldest rows: the streaming path must read each slot as
    // the position it now holds (a stale or shifted row, or a key outside the window, moves the output).
    const rng = new Rng(29);
    const options = {
      heads: 32,
      kvHeads: 8,
      headDim: 64,
      layers: 3,
      maxTokens: 2100,
      window: 2060,
      sinks: 4,
      rope: { theta: 500000 },
    };
    const total = 2400;
    const history = 2392;
    const q = rng.randn(total * 32 * 64),
      k = rng.randn(total * 512),
      v = rng.randn(total * 512);
    const cache = new KVCache(options);
    for (let layer = 0; layer < 3; layer++) {
      cache.append(layer, k.subarray(0, 1000 * 512), v.subarray(0, 1000 * 512));
      cache.append(layer, k.subarray(1000 * 512, history * 512), v.subarray(1000 * 512, history * 512));
    }
    expect(cache.byteLength).toBeGreaterThan(STREAM_BYTES);
    for (let t = history; t < total; t++) {
      const out = cache.attend(
        0,
        q.subarray(t * 2048, (t + 1) * 2048),
        k.subarray(t * 512, (t + 1) * 512),
        v.subarray(t * 512, (t + 1) * 512),
      );
      expectClose(out, referenceCacheQuery(options, q, k, v, t), TOL, `decode at position ${t}`);
    }
    cache.dispose();
  });

  it('and so does a many-layer cache whose layers are small but together exceed the threshold', () => {
    const rng = new Rng(23);
    const shape = { heads: 8, kvHeads: 4, headDim: 64 };
    const options = { ...shape, layers: 12, maxTokens: 1100 }; // 12 × 4 × 1,090 × 64 × 4 × 2 bytes ≈ 20.4 MiB
    const cache = new KVCache(options);
    const history = 1090,
      row = 4 * 64;
    const k = rng.randn(1100 * row),
      v = rng.randn(1100 * row);
    for (let layer = 0; layer < 12; layer++)
      cache.append(layer, k.subarray(0, history * row), v.subarray(0, history * row));
    expect(cache.byteLength).toBeGreaterThan(STREAM_BYTES);
    for (let t = history; t < history + 4; t++) {
      for (let layer = 0; layer < 12; layer++) {
        const q = rng.randn(8 * 64);
        const out = cache.attend(layer, q, k.subarray(t * row, (t + 1) * row), v.subarray(t * row, (t + 1) * row));
        expectClose(
          out,
          referenceAttention(q, k.subarray(0, (t + 1) * row), v.subarray(0, (t + 1) * row), shape),
          TOL,
          `layer ${layer} at position ${t}`,
        );
      }
    }
    cache.dispose();
  });
});
