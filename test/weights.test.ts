// attentionWeights(q, k, v, options) (API.md, "Looking inside"): the softmax probabilities [T][heads][S],
// rows summing to 1 over the visible keys, exactly 0 elsewhere, and agreeing with attention().

import fc from 'fast-check';
import { expect, it } from 'vitest';
import { attention, attentionWeights } from '../src/index.js';
import { isVisible, referenceWeights, type ReferenceOptions } from './support/reference.js';
import { HEAD_LAYOUTS, Rng, expectClose, withEachBuild, tolFor } from './support/util.js';

interface WCase {
  name: string;
  T: number;
  S: number;
  opts: ReferenceOptions & { kvHeads: number };
}

const CASES: WCase[] = [
  { name: 'MHA prefill', T: 17, S: 17, opts: { heads: 4, kvHeads: 4, headDim: 64 } },
  { name: 'GQA decode, long', T: 1, S: 1500, opts: { heads: 8, kvHeads: 2, headDim: 128 } },
  { name: 'MQA T<S, odd headDim', T: 6, S: 40, opts: { heads: 3, kvHeads: 1, headDim: 7 } },
  { name: 'headDim 1', T: 9, S: 9, opts: { heads: 2, kvHeads: 1, headDim: 1 } },
  { name: 'window 4 + sinks 2', T: 30, S: 30, opts: { heads: 4, kvHeads: 2, headDim: 80, window: 4, sinks: 2 } },
  { name: 'window 1', T: 12, S: 12, opts: { heads: 2, kvHeads: 2, headDim: 16, window: 1 } },
  { name: 'non-causal', T: 5, S: 21, opts: { heads: 2, kvHeads: 1, headDim: 33, causal: false } },
  {
    name: 'non-causal + window + sinks',
    T: 10,
    S: 20,
    opts: { heads: 6, kvHeads: 3, headDim: 8, causal: false, window: 3, sinks: 1 },
  },
  { name: 'softcap + scale', T: 8, S: 16, opts: { heads: 4, kvHeads: 4, headDim: 256, softcap: 20, scale: 0.5 } },
  { name: 'headDim 512', T: 20, S: 20, opts: { heads: 2, kvHeads: 2, headDim: 512 } },
];

function inputs(c: { T: number; S: number; opts: ReferenceOptions & { kvHeads: number } }, seed: number) {
  const rng = new Rng(seed);
  const { heads, kvHeads, headDim } = c.opts;
  return {
    q: rng.randn(c.T * heads * headDim),
    k: rng.randn(c.S * kvHeads * headDim),
    v: rng.randn(c.S * kvHeads * headDim),
  };
}

/** The same atol/rtol reasoning as for outputs: weights are in [0, 1] and their error is ~ the score error. */
function wtol(o: ReferenceOptions) {
  return tolFor(o.scale, o.headDim);
}

function checkContract(w: Float32Array, T: number, S: number, o: ReferenceOptions, label: string) {
  const H = o.heads;
  expect(w).toBeInstanceOf(Float32Array);
  expect(w.length, `${label}: length T*heads*S`).toBe(T * H * S);
  for (let t = 0; t < T; t++) {
    const p = S - T + t;
    for (let h = 0; h < H; h++) {
      let sum = 0;
      let visible = 0;
      for (let j = 0; j < S; j++) {
        const x = w[(t * H + h) * S + j];
        if (isVisible(j, p, o.causal ?? true, o.window, o.sinks ?? 0)) {
          visible++;
          if (!(x >= 0 && x <= 1)) throw new Error(`${label}: w[${t}][${h}][${j}] = ${x} is not a probability`);
        } else if (!Object.is(x, 0)) {
          throw new Error(`${label}: w[${t}][${h}][${j}] = ${x} but that key is masked (must be exactly +0)`);
        }
        sum += x;
      }
      // f32 probabilities, each rounded (<= 2^-24 relative) and the sum's own rounding: S·6e-8 is a
      // hard bound; 1e-5 covers S up to ~1500 with margin and is far from any real bug.
      if (Math.abs(sum - 1) > Math.max(1e-5, visible * 1.2e-7)) {
        throw new Error(`${label}: row (t=${t}, h=${h}) sums to ${sum}`);
      }
    }
  }
}

withEachBuild('attentionWeights', () => {
  for (const [i, c] of CASES.entries()) {
    it(`${c.name}: matches the reference, rows sum to 1, masked entries are exactly 0`, () => {
      const { q, k, v } = inputs(c, 1000 + i);
      const w = attentionWeights(q, k, v, c.opts);
      checkContract(w, c.T, c.S, c.opts, c.name);
      expectClose(w, referenceWeights(q, k, v, c.opts), wtol(c.opts), c.name, [c.T, c.opts.heads, c.S]);
    });

    it(`${c.name}: weights × v equals attention()`, () => {
      const { q, k, v } = inputs(c, 1000 + i);
      const w = attentionWeights(q, k, v, c.opts);
      const { heads: H, kvHeads: KV, headDim: D } = c.opts;
      const wv = new Float64Array(c.T * H * D);
      for (let t = 0; t < c.T; t++)
        for (let h = 0; h < H; h++) {
          const kh = Math.floor(h / (H / KV));
          for (let j = 0; j < c.S; j++) {
            const x = w[(t * H + h) * c.S + j];
            if (x === 0) continue;
            for (let d = 0; d < D; d++) wv[(t * H + h) * D + d] += x * v[(j * KV + kh) * D + d];
          }
        }
      // both sides carry f32 error against the truth: allow twice the output tolerance
      const tol = tolFor(c.opts.scale, D);
      expectClose(attention(q, k, v, c.opts), wv, { atol: 2 * tol.atol, rtol: 2 * tol.rtol }, c.name, [c.T, H, D]);
    });
  }

  it('randomized shapes and masks (fast-check)', () => {
    fc.assert(
      fc.property(
        fc.constantFrom(...HEAD_LAYOUTS),
        fc.integer({ min: 1, max: 24 }),
        fc.integer({ min: 1, max: 30 }),
        fc.double({ min: 0, max: 1, noNaN: true }),
        fc.boolean(),
        fc.option(fc.integer({ min: 1, max: 12 }), { nil: undefined }),
        fc.integer({ min: 0, max: 3 }),
        fc.integer({ min: 0, max: 2 ** 31 - 1 }),
        (l, D, S, tf, causal, window, sinks, seed) => {
          const T = Math.max(1, Math.round(tf * S));
          const opts: ReferenceOptions & { kvHeads: number } = {
            heads: l.heads,
            kvHeads: l.kvHeads,
            headDim: D,
            causal,
            sinks,
          };
          if (window !== undefined) opts.window = window;
          const { q, k, v } = inputs({ T, S, opts }, seed);
          const w = attentionWeights(q, k, v, opts);
          const label = JSON.stringify({ ...opts, T, S });
          checkContract(w, T, S, opts, label);
          expectClose(w, referenceWeights(q, k, v, opts), wtol(opts), label);
        },
      ),
      { numRuns: 40, seed: 11 },
    );
  });
});
