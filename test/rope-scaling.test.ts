// Scaled RoPE (API.md, KVCache options, `rope.scaling`, `rope.inverseFrequencies`, `rope.attentionFactor`):
// each scheme against the float64 reference's own reading of its definition, at positions past the
// original context, in every build; the identities (prefill == decode == chunked, fork == fresh,
// save/load continues) with scaled tables; and the errors that name the option path.
// test/fixtures.test.ts checks the same schemes against PyTorch's float64 computation of each family.

import { beforeEach, describe, expect, it } from 'vitest';
import { KVCache, init } from '../src/index.js';
import { referenceRopeAttentionFactor } from './support/reference.js';
import {
  expectForkAndLoadContinue,
  expectReferenceAndChunkings,
  expectSameBits,
  expectThrows,
  ones,
  parseSave,
  stream,
  tolFor,
  type Cfg,
  withEachBuild,
} from './support/util.js';

const LLAMA3 = { type: 'llama3', factor: 8, lowFreqFactor: 1, highFreqFactor: 4, originalMaxPositions: 64 } as const;
const YARN = { type: 'yarn', factor: 16, originalMaxPositions: 48 } as const;

// Small original contexts, so that a few hundred tokens reach far past them and the ramps of llama3 and
// yarn fall across the middle of the rotated pairs (with originalMaxPositions 64 and θ = 10000, llama3's
// smooth band covers pairs 7-10 of 32; yarn's ramp pairs 0-5 of 32, or 0-4 untruncated).
const SCHEMES: Array<{ name: string; cfg: Cfg }> = [
  {
    name: 'linear',
    cfg: { heads: 4, kvHeads: 2, headDim: 64, maxTokens: 400, rope: { scaling: { type: 'linear', factor: 8 } } },
  },
  {
    name: 'llama3',
    cfg: { heads: 4, kvHeads: 1, headDim: 64, maxTokens: 400, rope: { theta: 500000, scaling: LLAMA3 } },
  },
  { name: 'yarn', cfg: { heads: 4, kvHeads: 2, headDim: 64, maxTokens: 400, rope: { scaling: YARN } } },
  {
    name: 'yarn, truncate false, interleaved, partial, its own attention factor',
    cfg: {
      heads: 6,
      kvHeads: 3,
      headDim: 40,
      maxTokens: 400,
      rope: { dims: 24, interleaved: true, theta: 150000, scaling: { ...YARN, truncate: false, attentionFactor: 1.5 } },
    },
  },
  {
    name: 'explicit inverse frequencies and attention factor, partial',
    cfg: {
      heads: 2,
      headDim: 24,
      maxTokens: 400,
      rope: { dims: 8, inverseFrequencies: [1, 0.3, 0.01, 1e-4], attentionFactor: 1.2 },
    },
  },
  {
    name: 'llama3 with a window and sinks (ring past the original context)',
    cfg: { heads: 4, kvHeads: 2, headDim: 32, maxTokens: 40, window: 32, sinks: 2, rope: { scaling: LLAMA3 } },
  },
];

/**
 * The attention factor multiplies both q and k, so scores grow by its square: the tolerance is the one
 * for that effective scale (tolFor explains how score magnitude drives the f32 error).
 */
function tolerance(cfg: Cfg) {
  const factor = cfg.rope ? referenceRopeAttentionFactor(cfg.rope) : 1;
  return tolFor((cfg.scale ?? 1 / Math.sqrt(cfg.headDim)) * factor * factor, cfg.headDim);
}

withEachBuild(
  'scaled RoPE',
  (_build, make) => {
    for (const [i, { name, cfg }] of SCHEMES.entries()) {
      it(`${name}: matches the float64 reference up to position 380, and prefill == chunked == decode`, () => {
        const s = stream(cfg, 380, 900 + i);
        expectReferenceAndChunkings(make, cfg, s, [200, 1, 1, 100, ...ones(8), 70], 20, tolerance(cfg), name);
      }, 30_000);
    }

    it('fork == fresh and save/load continues, with a yarn table', () => {
      const cfg = SCHEMES[3].cfg;
      expectForkAndLoadContinue(make, cfg, stream(cfg, 120, 77), 100);
    });

    it('a plain rope and a scaling of factor 1 are the same bits (the table path adds nothing)', () => {
      const plain: Cfg = { heads: 4, kvHeads: 2, headDim: 64, maxTokens: 100, rope: { theta: 10000 } };
      const scaled: Cfg = { ...plain, rope: { theta: 10000, scaling: { type: 'linear', factor: 1 } } };
      const s = stream(plain, 100, 5);
      expectSameBits(make, scaled, plain, s, 'linear factor 1 == none');
    });
  },
  1,
);

describe('scaled RoPE options', () => {
  beforeEach(async () => {
    await init({ threads: 1 });
  });
  const base = { heads: 2, headDim: 16, maxTokens: 8 };
  const ropeWith = (rope: unknown) => () => new KVCache({ ...base, rope } as never).dispose();

  it('save() stores the scaling with its defaults filled in; load() rebuilds the same options', () => {
    const cache = new KVCache({ ...base, rope: { scaling: { type: 'yarn', factor: 4, originalMaxPositions: 32 } } });
    const bytes = cache.save();
    expect(parseSave(bytes).header.options.rope).toEqual({
      theta: 10000,
      dims: 16,
      interleaved: false,
      scaling: {
        type: 'yarn',
        factor: 4,
        originalMaxPositions: 32,
        betaFast: 32,
        betaSlow: 1,
        truncate: true,
        attentionFactor: 0.1 * Math.log(4) + 1,
      },
    });
    KVCache.load(bytes).dispose();
    cache.dispose();
    const explicit = new KVCache({ ...base, rope: { dims: 4, inverseFrequencies: new Float64Array([0.5, 0.25]) } });
    expect(KVCache.load(explicit.save()).save()).toEqual(explicit.save());
    explicit.dispose();
  });

  it('errors name the option path, what it takes and what came', () => {
    expectThrows(ropeWith({ scaling: { type: 'ntk', factor: 2 } }), RangeError, [
      /options\.rope\.scaling\.type/,
      /'linear', 'llama3' or 'yarn'/,
      /"ntk"/,
    ]);
    expectThrows(ropeWith({ scaling: { type: 'linear', factor: 0 } }), RangeError, [
      /options\.rope\.scaling\.factor/,
      /> 0/,
      /got 0/,
    ]);
    expectThrows(ropeWith({ scaling: { type: 'linear', factor: '2' } }), TypeError, [/options\.rope\.scaling\.factor/]);
    expectThrows(ropeWith({ scaling: { type: 'llama3', factor: 8, lowFreqFactor: 1, highFreqFactor: 4 } }), TypeError, [
      /options\.rope\.scaling\.originalMaxPositions/,
      /got undefined/,
    ]);
    expectThrows(ropeWith({ scaling: { ...LLAMA3, highFreqFactor: 1 } }), RangeError, [
      /options\.rope\.scaling\.highFreqFactor/,
      /lowFreqFactor/,
    ]);
    expectThrows(ropeWith({ scaling: { ...YARN, betaFast: 1 } }), RangeError, [/options\.rope\.scaling\.betaFast/]);
    expectThrows(ropeWith({ scaling: { ...YARN, truncate: 0 } }), TypeError, [/options\.rope\.scaling\.truncate/]);
    expectThrows(ropeWith({ scaling: { ...YARN, attentionFactor: -1 } }), RangeError, [
      /options\.rope\.scaling\.attentionFactor/,
    ]);
    expectThrows(ropeWith({ scaling: { type: 'linear', factor: 2, originalMaxPositions: 8 } }), TypeError, [
      /options\.rope\.scaling\.originalMaxPositions is not an option/,
    ]);
    expectThrows(ropeWith({ scaling: YARN, attentionFactor: 2 }), RangeError, [
      /options\.rope\.attentionFactor/,
      /options\.rope\.scaling\.attentionFactor/,
    ]);
    expectThrows(ropeWith({ inverseFrequencies: [1, 2, 3] }), RangeError, [
      /options\.rope\.inverseFrequencies/,
      /dims \/ 2 = 8/,
    ]);
    expectThrows(ropeWith({ dims: 4, inverseFrequencies: [1, Number.NaN] }), RangeError, [
      /options\.rope\.inverseFrequencies\[1\]/,
    ]);
    expectThrows(ropeWith({ theta: 5, dims: 4, inverseFrequencies: [1, 2] }), RangeError, [
      /options\.rope\.theta/,
      /inverseFrequencies/,
    ]);
  });
});
