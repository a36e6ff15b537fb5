// KVCache.append (an extension of API.md): store the keys and values of tokens without attending, for
// restoring a cache from K/V computed elsewhere. The cache must then stand exactly as after attend().

import { expect, it } from 'vitest';
import { KVCache } from '../src/index.js';
import { Rng, expectBitIdentical, expectThrows, withEachBuild, named } from './support/util.js';

withEachBuild('KVCache.append', () => {
  const shapes = [
    { heads: 4, kvHeads: 2, headDim: 8, maxTokens: 64 },
    { heads: 6, kvHeads: 3, headDim: 7, maxTokens: 12, window: 5, sinks: 2, rope: { dims: 6 } },
    { heads: 2, kvHeads: 1, headDim: 64, maxTokens: 80, dtype: 'int8' as const, rope: { interleaved: true } },
  ];

  for (const options of shapes) {
    it(`append then attend == attend all the way (${JSON.stringify(options)})`, () => {
      const rng = new Rng(41);
      const { heads, kvHeads, headDim } = options;
      const history = 40;
      const q = rng.randn(history * heads * headDim);
      const k = rng.randn(history * kvHeads * headDim);
      const v = rng.randn(history * kvHeads * headDim);
      const next = { q: rng.randn(heads * headDim), k: rng.randn(kvHeads * headDim), v: rng.randn(kvHeads * headDim) };

      const attended = new KVCache(options);
      attended.attend(0, q, k, v);
      const appended = new KVCache(options);
      appended.append(0, k, v);

      expect(appended.length).toBe(attended.length);
      expectBitIdentical(
        appended.attend(0, next.q, next.k, next.v),
        attended.attend(0, next.q, next.k, next.v),
        'next step',
      );
      attended.dispose();
      appended.dispose();
    });
  }

  it('refuses bad k/v and leaves the cache unchanged', () => {
    const cache = new KVCache({ heads: 4, kvHeads: 2, headDim: 8, maxTokens: 4 });
    cache.append(0, new Float32Array(3 * 16), new Float32Array(3 * 16));
    expectThrows(() => cache.append(0, new Float32Array(15), new Float32Array(15)), RangeError, [
      named('k'),
      /16/,
      /15/,
    ]);
    expectThrows(() => cache.append(0, new Float32Array(16), new Float32Array(32)), RangeError, [named('v')]);
    expectThrows(() => cache.append(0, [1, 2] as unknown as Float32Array, new Float32Array(16)), TypeError, [
      named('k'),
    ]);
    expectThrows(() => cache.append(1, new Float32Array(16), new Float32Array(16)), RangeError, [named('layer')]);
    expectThrows(() => cache.append(0, new Float32Array(32), new Float32Array(32)), RangeError, [
      named('k'),
      /maxTokens/,
    ]);
    expect(cache.length).toBe(3);
    cache.append(0, new Float32Array(16), new Float32Array(16));
    expect(cache.length).toBe(4);
  });
});
