// Positions near the last one (API.md, "Memory and capacity": a layer holds at most 2^31 − 1 appended
// tokens, so its positions run to 2^31 − 2). Outputs there must match the float64 reference like anywhere
// else, with prefill == decode steps == chunked prefill bit for bit, in every build, at 1 and 2 threads.
//
// Reaching ~2^31 tokens for real takes hours, so a windowed cache's saved state is moved up by a whole
// number of rings (each slot keeps its rows; the loader checks the moved header like any other) to just
// below the last position, then the cache takes the last tokens. The caches have no rope, so the rows mean
// the same at the moved positions, and the reference is computed at the true positions: the keys a query
// sees are picked by the contract's own rule (isVisible) at positions near 2^31. Only a windowed cache can
// stand there: without a window a layer holds every position, which WebAssembly's 4 GiB cannot.
// The tolerance is the suite's usual one (tolFor): a position changes which keys a query sees, never the
// arithmetic over them.
//
// Also one-shot calls: a window or sinks beyond 2^31 − 1 (positions are 32-bit inside the kernel) must act
// as the unbounded window and sinks they are, not as whatever their low 32 bits say.

import { describe, expect, it } from 'vitest';
import { attention, attentionWeights, init, KVCache } from '../src/index.js';
import { activeInstance } from '../src/init.js';
import { MAX_POSITION } from '../src/options.js';
import { isVisible, referenceAttention, referenceWeights } from './support/reference.js';
import {
  Rng,
  cfgName,
  concat,
  expectBitIdentical,
  expectClose,
  forEachBuild,
  kWidth,
  kvHeadsOf,
  ones,
  qWidth,
  slice,
  stream,
  tolFor,
  withHeader,
  type Cfg,
  type Stream,
} from './support/util.js';

interface Case {
  cfg: Cfg & { window: number; maxTokens: number };
  /** tokens attended at the end, the last one at position MAX_POSITION − 1 */
  last: number;
  /** a chunked prefill of those tokens */
  chunks: number[];
  /** whether a decode step there goes across threads when there are two (a big enough call) */
  threaded: boolean;
}

const CASES: Case[] = [
  // the geometry: window 16 and 3 sinks, GQA, an odd head size
  {
    cfg: { heads: 4, kvHeads: 2, headDim: 7, maxTokens: 64, window: 16, sinks: 3 },
    last: 40,
    chunks: [1, 17, 2, 20],
    threaded: false,
  },
  // no sinks, the window the whole ring, a softcap; head size 64 (the simd builds' own score kernel)
  {
    cfg: { heads: 2, kvHeads: 1, headDim: 64, maxTokens: 300, window: 300, softcap: 30 },
    last: 70,
    chunks: [33, 1, 36],
    threaded: false,
  },
  // a window of more than one chunk of 1,024 positions, across the chunk that ends at 2^31 (a decode
  // step on two threads is cut into chunks and folded), multi-query with sinks
  {
    cfg: { heads: 8, kvHeads: 1, headDim: 64, maxTokens: 1500, window: 1400, sinks: 4 },
    last: 12,
    chunks: [5, 1, 6],
    threaded: true,
  },
];

/** Where the history stands: `held` tokens appended, then moved up by `shift` (a whole number of rings). */
function placement(c: Case) {
  const { maxTokens: ring, sinks = 0 } = c.cfg;
  // at least a full ring held before the move
  const shift = Math.floor((MAX_POSITION - c.last - (sinks + ring)) / ring) * ring;
  return { shift, held: MAX_POSITION - c.last - shift };
}

/** The saved state of the first `held` tokens of `s`, moved up by `shift` positions. */
function movedState(c: Case, s: Stream, held: number, shift: number): Uint8Array {
  const cache = new KVCache(c.cfg as never);
  const h = slice(c.cfg, s, 0, held);
  cache.append(0, h.k, h.v);
  const bytes = withHeader(cache.save(), (header) => {
    header.layers[0].to += shift;
    header.layers[0].held += shift;
  });
  cache.dispose();
  return bytes;
}

/**
 * The float64 output of the query of stream token `token` at position `position`, over the keys it sees:
 * the sinks are tokens 0 … sinks − 1 where they were; every later position p holds token p − shift.
 */
function expected(c: Case, s: Stream, shift: number, token: number, position: number): Float64Array {
  const { heads, headDim, window, sinks = 0, softcap, scale } = c.cfg;
  const kw = kWidth(c.cfg);
  const seen: number[] = [];
  for (let p = 0; p < sinks; p++) if (isVisible(p, position, true, window, sinks)) seen.push(p);
  for (let p = Math.max(sinks, position - window + 1); p <= position; p++) {
    if (isVisible(p, position, true, window, sinks)) seen.push(p - shift);
  }
  expect(seen.length, 'the window is full').toBe(sinks + window);
  const k = concat(seen.map((i) => s.k.subarray(i * kw, (i + 1) * kw)));
  const v = concat(seen.map((i) => s.v.subarray(i * kw, (i + 1) * kw)));
  const q = s.q.subarray(token * qWidth(c.cfg), (token + 1) * qWidth(c.cfg));
  // every key listed is visible to this one query
  return referenceAttention(q, k, v, { heads, kvHeads: kvHeadsOf(c.cfg), headDim, causal: false, softcap, scale });
}

/** The last tokens of `s` attended in parts of the given sizes by a cache loaded from `bytes`; the outputs. */
function attendLast(bytes: Uint8Array, c: Case, s: Stream, held: number, parts: number[]): Float32Array {
  const cache = KVCache.load(bytes);
  const outs: Float32Array[] = [];
  let at = held;
  for (const n of parts) {
    const p = slice(c.cfg, s, at, at + n);
    outs.push(cache.attend(0, p.q, p.k, p.v));
    at += n;
  }
  expect(cache.lengthOf(0), 'the layer ends at the last position').toBe(MAX_POSITION);
  cache.dispose();
  return concat(outs);
}

forEachBuild('positions just below 2^31', (build) => {
  for (const c of CASES) {
    const name = `${cfgName(c.cfg)}: positions ${MAX_POSITION - c.last} … ${MAX_POSITION - 1}`;
    it(`${name} match float64; prefill == decode == chunked; 1 thread == 2`, async () => {
      const { held, shift } = placement(c);
      const s = stream(c.cfg, held + c.last, 11);
      const tol = tolFor(c.cfg.scale, c.cfg.headDim);
      const row = qWidth(c.cfg);
      let first: Float32Array | undefined;
      for (const threads of [1, 2]) {
        await init({ build, threads });
        const bytes = movedState(c, s, held, shift);
        const pool = activeInstance().pool;
        const before = pool?.threadedCalls ?? 0;
        const prefill = attendLast(bytes, c, s, held, [c.last]);
        const decoded = attendLast(bytes, c, s, held, ones(c.last));
        const chunked = attendLast(bytes, c, s, held, c.chunks);
        if (threads > 1 && c.threaded) {
          expect(pool?.threadedCalls ?? 0, 'decode steps went across threads').toBeGreaterThan(before + c.last);
        }
        const at = `${threads} thread${threads > 1 ? 's' : ''}`;
        for (let t = 0; t < c.last; t++) {
          const position = MAX_POSITION - c.last + t;
          expectClose(
            prefill.subarray(t * row, (t + 1) * row),
            expected(c, s, shift, held + t, position),
            tol,
            `${at}: the query at position ${position}`,
          );
        }
        expectBitIdentical(decoded, prefill, `${at}: decode steps == prefill`);
        expectBitIdentical(chunked, prefill, `${at}: chunked prefill == prefill`);
        if (first) expectBitIdentical(prefill, first, `${at} == 1 thread`);
        first = prefill;
      }
    }, 60_000);
  }
});

describe('one-shot calls: a window or sinks beyond 2^31 − 1 bounds nothing', () => {
  const o = { heads: 2, kvHeads: 1, headDim: 8 };
  const rng = new Rng(5);
  const T = 12;
  const S = 30;
  const q = rng.randn(T * 2 * 8);
  const k = rng.randn(S * 8);
  const v = rng.randn(S * 8);
  // each as large as any position and more: the same as no window (every key in it) and as all-sinks
  for (const extra of [
    { window: 2 ** 32 + 5 },
    { window: 2 ** 31 },
    { window: 5, sinks: 2 ** 32 + 1 },
    { window: 5, sinks: 2 ** 32 - 1 },
    { window: 5, sinks: 2 ** 31 },
  ]) {
    it(`${JSON.stringify(extra)}: attention() and attentionWeights() match float64`, async () => {
      await init({ threads: 1 });
      const opts = { ...o, ...extra };
      expectClose(attention(q, k, v, opts), referenceAttention(q, k, v, opts), tolFor(undefined, 8), 'attention');
      expectClose(attentionWeights(q, k, v, opts), referenceWeights(q, k, v, opts), tolFor(undefined, 8), 'weights');
    });
  }
});
