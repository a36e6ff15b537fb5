// ALiBi (API.md, KVCache options, `alibi`; BLOOM, MPT): query head h's score of the key at position j from
// the query at position i gains slope_h · (j − i), after the softcap. Against the float64 reference in every
// build, the identities (prefill == decode == chunked, fork == fresh, save/load continues; any thread count
// is threads.test.ts's), the standard slopes for a head count that is not a power of two, one-shot
// attention and attentionWeights, and the errors.
//
// Tolerance: the kernel forms j − i as an exact integer and adds slope · (j − i) in float32, one rounding for
// the product and one for the sum: a score error of about 2u·|bias| (u = 2^−24). The keys that carry weight
// have a bias of a few units at most (a key whose bias is −20 weighs e^−20 of its row), and with the
// negative slopes below (far keys favoured) the bias stays under 0.1 · 260 = 26, an error under 4e-6 in a
// score, so a relative weight error under 4e-6: the default tolerance (argued in util.ts) still holds.

import { beforeEach, describe, expect, it } from 'vitest';
import { KVCache, attention, attentionWeights, init } from '../src/index.js';
import { referenceAlibiSlopes, referenceAttention, referenceWeights } from './support/reference.js';
import {
  Rng,
  expectClose,
  expectForkAndLoadContinue,
  itMatchesReferenceAndChunkings,
  expectSameBits,
  expectThrows,
  feed,
  parseSave,
  stream,
  tolFor,
  type Cfg,
  withEachBuild,
} from './support/util.js';

/** The slopes of 12 heads, by hand: those of 8 heads (2^−1 … 2^−8), then the odd ones of 16 (2^−0.5, 2^−1.5, …). */
const TWELVE_HEADS = [
  2 ** -1,
  2 ** -2,
  2 ** -3,
  2 ** -4,
  2 ** -5,
  2 ** -6,
  2 ** -7,
  2 ** -8,
  2 ** -0.5,
  2 ** -1.5,
  2 ** -2.5,
  2 ** -3.5,
];

const SCENARIOS: Array<{ name: string; cfg: Cfg }> = [
  { name: 'standard slopes, grouped heads', cfg: { heads: 8, kvHeads: 2, headDim: 64, maxTokens: 300, alibi: true } },
  // BLOOM's layout: as many kv heads as query heads, a head count that is not a power of two
  { name: 'standard slopes of 12 heads', cfg: { heads: 12, headDim: 16, maxTokens: 300, alibi: true } },
  {
    name: 'window of 32 and 4 sinks (the ring wraps), given slopes',
    cfg: { heads: 4, kvHeads: 2, headDim: 32, maxTokens: 300, window: 32, sinks: 4, alibi: [0.5, 0.125, 0.03, 1] },
  },
  {
    name: 'softcap, odd head size, negative and zero slopes',
    cfg: { heads: 6, kvHeads: 3, headDim: 7, maxTokens: 300, softcap: 5, alibi: [-0.1, 0, 0.25, -0.02, 0.7, 0.06] },
  },
  { name: 'int8', cfg: { heads: 4, kvHeads: 2, headDim: 64, maxTokens: 300, dtype: 'int8', alibi: true } },
  { name: 'bfloat16', cfg: { heads: 4, kvHeads: 2, headDim: 64, maxTokens: 300, dtype: 'bfloat16', alibi: true } },
  { name: 'int4', cfg: { heads: 4, kvHeads: 2, headDim: 64, maxTokens: 300, dtype: 'int4', alibi: true } },
];

withEachBuild(
  'alibi',
  (_build, make) => {
    itMatchesReferenceAndChunkings(make, SCENARIOS, 70);

    it('the bias changes the output (a cache without it differs); zero slopes change no bit', () => {
      const plain: Cfg = { heads: 4, kvHeads: 2, headDim: 32, maxTokens: 100 };
      const s = stream(plain, 100, 5);
      expectSameBits(make, { ...plain, alibi: [0, 0, 0, 0] }, plain, s, 'slopes of 0 == no alibi');
      const biased: Cfg = { ...plain, alibi: true };
      const none = feed(make(plain), plain, s);
      const out = feed(make(biased), biased, s);
      let moved = 0;
      for (let x = 0; x < out.length; x++) moved = Math.max(moved, Math.abs(out[x] - none[x]));
      expect(moved).toBeGreaterThan(0.1);
    });

    it('alibi: true for 12 heads == the slopes computed by hand, bit for bit', () => {
      const byRule: Cfg = { heads: 12, kvHeads: 4, headDim: 16, maxTokens: 80, alibi: true };
      const s = stream(byRule, 80, 9);
      expectSameBits(make, byRule, { ...byRule, alibi: TWELVE_HEADS }, s, 'standard == by hand');
    });

    it('fork == fresh; save/load continues', () => {
      const cfg: Cfg = { heads: 4, kvHeads: 2, headDim: 32, maxTokens: 100, alibi: [0.5, 0.25, -0.1, 0.0625] };
      expectForkAndLoadContinue(make, cfg, stream(cfg, 100, 3), 80);
    });

    it('one-shot attention and attentionWeights (queries at S − T + t, keys at 0 … S − 1) match the reference', () => {
      const rng = new Rng(11);
      for (const opts of [
        { heads: 6, kvHeads: 2, headDim: 16, alibi: true as const },
        { heads: 4, headDim: 8, causal: false, window: 9, alibi: [0.3, -0.2, 0.05, 1] },
      ]) {
        const T = 20;
        const S = 50;
        const q = rng.randn(T * opts.heads * opts.headDim);
        const k = rng.randn(S * (opts.kvHeads ?? opts.heads) * opts.headDim);
        const v = rng.randn(k.length);
        expectClose(attention(q, k, v, opts), referenceAttention(q, k, v, opts), tolFor(undefined, 16), 'attention');
        // weights are probabilities: the same score error, relative to each weight
        const tol = { atol: 1e-6, rtol: 1e-4 };
        expectClose(attentionWeights(q, k, v, opts), referenceWeights(q, k, v, opts), tol, 'weights');
      }
    });
  },
  1,
);

describe('alibi option', () => {
  beforeEach(async () => {
    await init({ threads: 1 });
  });
  const base = { heads: 2, headDim: 8, maxTokens: 8 };

  it('the standard slopes: 2^(−8(h+1)/n) for a power of two; 12 heads by the rule for the rest', () => {
    expectClose(referenceAlibiSlopes(12), TWELVE_HEADS, { atol: 0, rtol: 1e-14 }, 'the reference, 12 heads');
    const slopesOf = (heads: number) => {
      const cache = new KVCache({ heads, headDim: 8, maxTokens: 8, alibi: true });
      const options = parseSave(cache.save()).header.options as { alibi: number[] };
      cache.dispose();
      return options.alibi;
    };
    expect(slopesOf(12)).toEqual(TWELVE_HEADS);
    expect(slopesOf(8)).toEqual([1, 2, 3, 4, 5, 6, 7, 8].map((h) => 2 ** -h));
    expect(slopesOf(4)).toEqual([2 ** -2, 2 ** -4, 2 ** -6, 2 ** -8]);
    expect(slopesOf(1)).toEqual([2 ** -8]);
    // the reference multiplies its way along the geometric sequence (a few float64 roundings); the kernel
    // holds the slopes in float32, 2^−24 apart, so 1e-14 tells the rules apart and no rounding matters
    for (const heads of [3, 5, 6, 12, 20, 112]) {
      expectClose(slopesOf(heads), referenceAlibiSlopes(heads), { atol: 0, rtol: 1e-14 }, `${heads} heads`);
    }
  });

  it('save() stores the slopes; load() rebuilds them', () => {
    const cache = new KVCache({ ...base, alibi: new Float32Array([0.25, -3]) });
    const bytes = cache.save();
    expect((parseSave(bytes).header.options as { alibi: number[] }).alibi).toEqual([0.25, -3]);
    KVCache.load(bytes).dispose();
    cache.dispose();
  });

  it('with rope on the same cache: a RangeError saying so', () => {
    expectThrows(() => new KVCache({ ...base, rope: { theta: 10000 }, alibi: true }), RangeError, [
      /options\.alibi/,
      /options\.rope/,
      /ALiBi/,
    ]);
  });

  it('errors name options.alibi, what it takes and what came', () => {
    const make = (alibi: unknown) => () => new KVCache({ ...base, alibi } as never).dispose();
    expectThrows(make(false), TypeError, [/options\.alibi/, /true or an array of 2 slopes/, /got false/]);
    expectThrows(make(0.5), TypeError, [/options\.alibi/]);
    expectThrows(make([1]), RangeError, [/options\.alibi/, /one slope per query head \(2\)/, /length 1/]);
    expectThrows(make([1, Number.NaN]), RangeError, [/options\.alibi\[1\]/, /finite/]);
    expectThrows(make([1, Number.POSITIVE_INFINITY]), RangeError, [/options\.alibi\[1\]/]);
    expectThrows(make([1, '2']), TypeError, [/options\.alibi\[1\]/]);
    const x = new Float32Array(16);
    expectThrows(() => attention(x, x, x, { heads: 2, headDim: 8, alibi: [1] }), RangeError, [/options\.alibi/]);
  });
});
