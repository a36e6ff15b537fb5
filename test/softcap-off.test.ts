// softcap: 0 or null means "no softcap" (onnxruntime's attention ops and Hugging Face configs spell it so),
// an extension of API.md, where softcap is simply left out.

import { expect, it } from 'vitest';
import { KVCache, attention } from '../src/index.js';
import { Rng, expectBitIdentical, withEachBuild } from './support/util.js';

withEachBuild('softcap 0 or null', () => {
  it('is the same as no softcap, one-shot and in a cache', () => {
    const rng = new Rng(5);
    const shape = { heads: 4, kvHeads: 2, headDim: 16 };
    const q = rng.randn(6 * 64),
      k = rng.randn(6 * 32),
      v = rng.randn(6 * 32);
    const none = attention(q, k, v, shape);
    expectBitIdentical(attention(q, k, v, { ...shape, softcap: 0 }), none, 'softcap 0');
    expectBitIdentical(attention(q, k, v, { ...shape, softcap: null as unknown as number }), none, 'softcap null');
    const plain = new KVCache({ ...shape, maxTokens: 8 });
    const zero = new KVCache({ ...shape, maxTokens: 8, softcap: 0 });
    const nil = new KVCache({ ...shape, maxTokens: 8, softcap: null as unknown as number });
    const want = plain.attend(0, q, k, v);
    expectBitIdentical(zero.attend(0, q, k, v), want, 'cache with softcap 0');
    expectBitIdentical(nil.attend(0, q, k, v), want, 'cache with softcap null');
    // and it really is "none": a softcap of 1 squeezes these scores and moves the output
    const capped = new KVCache({ ...shape, maxTokens: 8, softcap: 1 });
    expect(Array.from(capped.attend(0, q, k, v))).not.toEqual(Array.from(want));
    for (const cache of [plain, zero, nil, capped]) cache.dispose();
  });
});
