// Learned sink logits (API.md, KVCache options, `sinkLogits`; gpt-oss): one logit per query head joins
// every softmax's denominator and contributes no value. Against the float64 reference in every build, the
// identities (prefill == decode == chunked, fork == fresh, save/load continues; any thread count is
// threads.test.ts's), what a
// sink means at its limits, and the errors.

import { beforeEach, describe, expect, it } from 'vitest';
import { KVCache, init } from '../src/index.js';
import {
  expectForkAndLoadContinue,
  itMatchesReferenceAndChunkings,
  expectSameBits,
  expectThrows,
  parseSave,
  stream,
  type Cfg,
  withEachBuild,
} from './support/util.js';

const gptOssLike = (heads: number) => Array.from({ length: heads }, (_, h) => ((h * 7) % 11) / 2 - 2); // −2 … 3

const SCENARIOS: Array<{ name: string; cfg: Cfg }> = [
  { name: 'grouped heads', cfg: { heads: 8, kvHeads: 2, headDim: 64, maxTokens: 300, sinkLogits: gptOssLike(8) } },
  {
    name: 'window of 32 with yarn rope (gpt-oss-shaped layer)',
    cfg: {
      heads: 8,
      kvHeads: 1,
      headDim: 64,
      maxTokens: 300,
      window: 32,
      rope: { theta: 150000, scaling: { type: 'yarn', factor: 32, originalMaxPositions: 64, truncate: false } },
      sinkLogits: gptOssLike(8),
    },
  },
  // a sink far above every score takes nearly all the mass: outputs shrink towards 0 without NaN
  { name: 'dominant sinks', cfg: { heads: 4, headDim: 16, maxTokens: 300, sinkLogits: [40, 60, 80, 100] } },
  {
    name: 'softcap, odd head size',
    cfg: { heads: 6, kvHeads: 3, headDim: 7, maxTokens: 300, softcap: 5, sinkLogits: gptOssLike(6) },
  },
  {
    name: 'int8',
    cfg: { heads: 4, kvHeads: 2, headDim: 64, maxTokens: 300, dtype: 'int8', sinkLogits: gptOssLike(4) },
  },
  {
    name: 'bfloat16',
    cfg: { heads: 4, kvHeads: 2, headDim: 64, maxTokens: 300, dtype: 'bfloat16', sinkLogits: gptOssLike(4) },
  },
  {
    name: 'int4',
    cfg: { heads: 4, kvHeads: 2, headDim: 64, maxTokens: 300, dtype: 'int4', sinkLogits: gptOssLike(4) },
  },
];

withEachBuild(
  'sink logits',
  (_build, make) => {
    itMatchesReferenceAndChunkings(make, SCENARIOS, 40);

    it('a sink far below every score changes no bit; fork == fresh; save/load continues', () => {
      const plain: Cfg = { heads: 4, kvHeads: 2, headDim: 32, maxTokens: 100 };
      const low: Cfg = { ...plain, sinkLogits: [-1e4, -1e4, -1e4, -1e4] };
      const s = stream(plain, 100, 3);
      expectSameBits(make, low, plain, s, 'sinks at −10⁴ == none');
      const cfg: Cfg = { ...plain, sinkLogits: [0.5, -1, 2, 0] };
      expectForkAndLoadContinue(make, cfg, s, 80);
    });
  },
  1,
);

describe('sinkLogits option', () => {
  beforeEach(async () => {
    await init({ threads: 1 });
  });
  const base = { heads: 2, headDim: 8, maxTokens: 8 };

  it('save() stores the logits; load() rebuilds them', () => {
    const cache = new KVCache({ ...base, sinkLogits: new Float32Array([0.25, -3]) });
    const bytes = cache.save();
    expect(parseSave(bytes).header.options.sinkLogits).toEqual([0.25, -3]);
    KVCache.load(bytes).dispose();
    cache.dispose();
  });

  it('errors name options.sinkLogits, what it takes and what came', () => {
    const make = (sinkLogits: unknown) => () => new KVCache({ ...base, sinkLogits } as never).dispose();
    expectThrows(make(0.5), TypeError, [/options\.sinkLogits/, /2 sink logits/]);
    expectThrows(make([1]), RangeError, [/options\.sinkLogits/, /one logit per query head \(2\)/, /length 1/]);
    expectThrows(make([1, Number.NaN]), RangeError, [/options\.sinkLogits\[1\]/, /finite/]);
    expectThrows(make([1, Number.NEGATIVE_INFINITY]), RangeError, [/options\.sinkLogits\[1\]/]);
    expectThrows(make([1, '2']), TypeError, [/options\.sinkLogits\[1\]/]);
  });
});
