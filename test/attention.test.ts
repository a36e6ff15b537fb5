// One-shot attention(q, k, v, options, out?) against the float64 reference (API.md, "One-shot attention").
// Every test runs once per build. Tolerances: see TOL / tolFor in util.ts (f32 inputs and accumulation,
// unit-variance inputs: 2e-5 absolute + 1e-4 relative, grown only with the score spread).

import fc from 'fast-check';
import { runInNewContext } from 'node:vm';
import { expect, it } from 'vitest';
import { attention, init, KVCache } from '../src/index.js';
import { isVisible, referenceAttention, type ReferenceOptions } from './support/reference.js';
import {
  HEAD_LAYOUTS,
  Rng,
  expectBitIdentical,
  expectClose,
  withEachBuild,
  layoutName,
  tolFor,
  type HeadLayout,
} from './support/util.js';

interface Case {
  name: string;
  T: number;
  S: number;
  opts: ReferenceOptions & { kvHeads: number };
  timeout?: number;
}

function optsName(o: ReferenceOptions): string {
  const parts: string[] = [];
  if (o.causal === false) parts.push('non-causal');
  if (o.window !== undefined) parts.push(`window ${o.window}`);
  if (o.sinks) parts.push(`sinks ${o.sinks}`);
  if (o.softcap !== undefined) parts.push(`softcap ${o.softcap}`);
  if (o.scale !== undefined) parts.push(`scale ${o.scale}`);
  return parts.length ? `, ${parts.join(', ')}` : '';
}

function mk(
  T: number,
  S: number,
  l: HeadLayout,
  headDim: number,
  extra: Partial<ReferenceOptions> = {},
  timeout?: number,
): Case {
  const opts = { heads: l.heads, kvHeads: l.kvHeads, headDim, ...extra };
  const kind = T === S ? `prefill T=S=${S}` : T === 1 ? `decode T=1 S=${S}` : `T=${T} S=${S}`;
  return { name: `${layoutName(l)} headDim ${headDim}, ${kind}${optsName(opts)}`, T, S, opts, timeout };
}

const MHA = { heads: 4, kvHeads: 4 };
const GQA = { heads: 8, kvHeads: 2 };
const GQA3 = { heads: 6, kvHeads: 2 };
const MQA = { heads: 4, kvHeads: 1 };
const ONE = { heads: 1, kvHeads: 1 };

function cases(): Case[] {
  const out: Case[] = [];
  const rng = new Rng(2024);
  // Every head size, through each layout and each query/key alignment.
  for (const D of [1, 3, 7, 64, 80, 128, 256]) {
    const big = D >= 128;
    const l = (i: number) => HEAD_LAYOUTS[(D + i) % HEAD_LAYOUTS.length];
    const P = big ? 37 : rng.int(20, 70);
    out.push(mk(P, P, l(0), D));
    out.push(mk(1, rng.int(40, 140), l(1), D));
    out.push(mk(5, rng.int(20, 60), l(2), D));
    out.push(mk(6, 29, l(3), D, { causal: false }));
  }
  // Tile edges: prefill lengths just around multiples of 4/8/16/32/64.
  for (const T of [2, 15, 17, 33, 65, 130]) out.push(mk(T, T, GQA, 64));
  out.push(mk(67, 67, MHA, 128));
  out.push(mk(31, 31, MQA, 80));
  // Other tails of the SIMD loops, and a group of 5.
  out.push(mk(9, 41, { heads: 4, kvHeads: 2 }, 130));
  out.push(mk(12, 12, { heads: 2, kvHeads: 1 }, 257));
  out.push(mk(1, 77, { heads: 3, kvHeads: 3 }, 384));
  out.push(mk(7, 19, { heads: 2, kvHeads: 2 }, 511, { window: 6, sinks: 1 }));
  out.push(mk(21, 21, { heads: 10, kvHeads: 2 }, 96));
  // 512, the largest head size, once.
  out.push(mk(70, 70, { heads: 2, kvHeads: 1 }, 512));
  // Long context.
  out.push(mk(1, 4096, GQA, 128, {}, 30_000));
  out.push(mk(7, 4096, MQA, 64, { window: 1024, sinks: 4 }, 30_000));
  out.push(mk(100, 3000, { heads: 2, kvHeads: 2 }, 80, { causal: false }, 30_000));
  out.push(mk(2048, 2048, { heads: 2, kvHeads: 1 }, 64, {}, 60_000));
  // Windows and sinks.
  out.push(mk(20, 20, MHA, 16, { window: 1 }));
  out.push(mk(20, 20, GQA3, 16, { window: 1, sinks: 3 }));
  out.push(mk(40, 40, GQA, 64, { window: 5, sinks: 2 }));
  out.push(mk(40, 40, MQA, 64, { window: 40 }));
  out.push(mk(12, 12, MHA, 8, { window: 100, sinks: 1 }));
  out.push(mk(8, 30, MHA, 64, { window: 5, sinks: 1 }));
  out.push(mk(1, 300, GQA, 128, { window: 17, sinks: 4 }));
  out.push(mk(9, 25, GQA3, 7, { causal: false, window: 4, sinks: 2 }));
  out.push(mk(9, 25, ONE, 3, { causal: false, window: 6 }));
  out.push(mk(30, 30, MHA, 64, { window: 3, sinks: 10 })); // sinks > window
  out.push(mk(10, 10, MQA, 64, { window: 2, sinks: 12 })); // sinks >= S: plain causal
  out.push(mk(70, 70, GQA, 64, { window: 17 }));
  // More queries than keys without causality: every query sees every key (positions S - T + t < 0
  // only matter through the window's lower bound j > p - window, which they then always pass).
  out.push(mk(12, 5, MHA, 8, { causal: false }));
  out.push(mk(12, 5, GQA3, 8, { causal: false, window: 3 }));
  // softcap and scale.
  out.push(mk(24, 24, MHA, 64, { softcap: 1 }));
  out.push(mk(16, 48, GQA, 128, { softcap: 30, scale: 1 }));
  out.push(mk(16, 48, MQA, 256, { softcap: 50, scale: 0.0625 }));
  // A cap far above every score must change (almost) nothing: softcap·tanh(s/softcap) ≈ s. A plain f32
  // cap·tanhf(s/cap) is accurate to a few ulps of s here; forms that lose tanh's relative accuracy near 0
  // (e.g. cap·(1 − e^−2|t|)/(1 + e^−2|t|)) err by ~cap·2^-23 in every score.
  out.push(mk(16, 40, GQA, 64, { softcap: 10000 }));
  out.push(mk(1, 300, MQA, 128, { softcap: 2000 }));
  out.push(mk(20, 20, MHA, 64, { scale: 0.3 }));
  out.push(mk(20, 40, GQA3, 64, { scale: 1 }));
  out.push(mk(1, 64, MHA, 3, { scale: 2.5, window: 9, sinks: 1, softcap: 4 }));
  return out;
}

const CASES = cases();

interface Prepared {
  q: Float32Array;
  k: Float32Array;
  v: Float32Array;
  want: Float64Array;
}
const prepared = new Map<string, Prepared>();
function prepare(c: Case): Prepared {
  let p = prepared.get(c.name);
  if (!p) {
    const { heads, kvHeads, headDim } = c.opts;
    let seed = 0;
    for (const ch of c.name) seed = (seed * 31 + ch.charCodeAt(0)) >>> 0;
    const rng = new Rng(seed);
    const q = rng.randn(c.T * heads * headDim);
    const k = rng.randn(c.S * kvHeads * headDim);
    const v = rng.randn(c.S * kvHeads * headDim);
    p = { q, k, v, want: referenceAttention(q, k, v, c.opts) };
    prepared.set(c.name, p);
  }
  return p;
}

withEachBuild('attention', (build) => {
  it('init({ build }) reports that build', async () => {
    expect((await init({ build })).build).toBe(build);
  });

  for (const c of CASES) {
    it(
      c.name,
      () => {
        const { q, k, v, want } = prepare(c);
        const got = attention(q, k, v, c.opts);
        expect(got).toBeInstanceOf(Float32Array);
        expectClose(got, want, tolFor(c.opts.scale, c.opts.headDim), c.name, [c.T, c.opts.heads, c.opts.headDim]);
      },
      c.timeout ?? 10_000,
    );
  }

  it('randomized shapes and options (fast-check)', () => {
    const arb = fc
      .record({
        layout: fc.constantFrom(...HEAD_LAYOUTS),
        headDim: fc.oneof(fc.integer({ min: 1, max: 40 }), fc.constantFrom(64, 80, 96, 128)),
        S: fc.integer({ min: 1, max: 48 }),
        tFrac: fc.double({ min: 0, max: 1, noNaN: true }),
        causal: fc.boolean(),
        window: fc.option(fc.integer({ min: 1, max: 50 }), { nil: undefined }),
        sinks: fc.option(fc.integer({ min: 0, max: 5 }), { nil: undefined }),
        softcap: fc.option(fc.constantFrom(0.5, 2, 20), { nil: undefined }),
        scale: fc.option(fc.constantFrom(0.05, 0.5), { nil: undefined }),
        seed: fc.integer({ min: 0, max: 2 ** 31 - 1 }),
      })
      .map((r) => ({ ...r, T: Math.max(1, Math.round(r.tFrac * r.S)) }));
    fc.assert(
      fc.property(arb, (r) => {
        const opts: ReferenceOptions = {
          heads: r.layout.heads,
          kvHeads: r.layout.kvHeads,
          headDim: r.headDim,
          causal: r.causal,
          window: r.window,
          sinks: r.sinks,
          softcap: r.softcap,
          scale: r.scale,
        };
        // drop undefined keys: "not given" must mean the default
        for (const key of Object.keys(opts) as (keyof ReferenceOptions)[])
          if (opts[key] === undefined) delete opts[key];
        const rng = new Rng(r.seed);
        const q = rng.randn(r.T * r.layout.heads * r.headDim);
        const k = rng.randn(r.S * r.layout.kvHeads * r.headDim);
        const v = rng.randn(r.S * r.layout.kvHeads * r.headDim);
        expectClose(
          attention(q, k, v, opts as never),
          referenceAttention(q, k, v, opts),
          tolFor(r.scale, r.headDim),
          JSON.stringify({ ...opts, T: r.T, S: r.S }),
        );
      }),
      { numRuns: 40, seed: 7 },
    );
  });

  it('kvHeads defaults to heads; causal defaults to true', () => {
    const rng = new Rng(1);
    const q = rng.randn(5 * 2 * 8);
    const k = rng.randn(5 * 2 * 8);
    const v = rng.randn(5 * 2 * 8);
    const want = referenceAttention(q, k, v, { heads: 2, kvHeads: 2, headDim: 8, causal: true });
    expectClose(attention(q, k, v, { heads: 2, headDim: 8 }), want, tolFor(undefined, 8), 'defaults');
  });

  it('T=S=1: the output is v (whatever q is)', () => {
    const rng = new Rng(2);
    const v = rng.randn(2 * 33);
    const out = attention(rng.randn(4 * 33), rng.randn(2 * 33), v, { heads: 4, kvHeads: 2, headDim: 33 });
    const want = new Float32Array(4 * 33);
    for (let h = 0; h < 4; h++) want.set(v.subarray((h >> 1) * 33, ((h >> 1) + 1) * 33), h * 33);
    expectClose(out, want, { atol: 1e-6, rtol: 1e-6 }, 'T=S=1');
  });

  it('`out` is filled completely and returned (the same object), with the same numbers as without it', () => {
    const rng = new Rng(3);
    const o = { heads: 4, kvHeads: 2, headDim: 24, window: 6, sinks: 1 };
    const q = rng.randn(9 * 4 * 24);
    const k = rng.randn(13 * 2 * 24);
    const v = rng.randn(13 * 2 * 24);
    const out = new Float32Array(9 * 4 * 24).fill(NaN);
    const ret = attention(q, k, v, o, out);
    expect(ret).toBe(out);
    expectBitIdentical(out, attention(q, k, v, o), 'out vs returned');
    expectClose(out, referenceAttention(q, k, v, o), tolFor(undefined, 24), 'out');
  });

  it('`out` may be a view into a larger buffer; nothing outside it is touched', () => {
    const rng = new Rng(4);
    const o = { heads: 2, kvHeads: 1, headDim: 16 };
    const q = rng.randn(3 * 2 * 16);
    const k = rng.randn(5 * 16);
    const v = rng.randn(5 * 16);
    const backing = new Float32Array(3 * 2 * 16 + 10).fill(-7);
    const view = backing.subarray(5, 5 + 3 * 2 * 16);
    expect(attention(q, k, v, o, view)).toBe(view);
    expectBitIdentical(view, attention(q, k, v, o), 'view');
    for (const i of [0, 1, 2, 3, 4, backing.length - 5, backing.length - 1]) expect(backing[i]).toBe(-7);
  });

  it('inputs may be subarray views at odd offsets', () => {
    const rng = new Rng(5);
    const o = { heads: 2, kvHeads: 2, headDim: 5 };
    const big = rng.randn(1 + 4 * 2 * 5 + 3 + 4 * 2 * 5 * 2);
    const q = big.subarray(1, 1 + 40);
    const k = big.subarray(44, 84);
    const v = big.subarray(84, 124);
    expectClose(attention(q, k, v, o), referenceAttention(q, k, v, o), tolFor(undefined, 5), 'views');
  });

  it('leaves q, k and v unchanged', () => {
    const rng = new Rng(6);
    const o = { heads: 4, kvHeads: 1, headDim: 64, softcap: 3 };
    const q = rng.randn(7 * 4 * 64);
    const k = rng.randn(9 * 64);
    const v = rng.randn(9 * 64);
    const [q0, k0, v0] = [q.slice(), k.slice(), v.slice()];
    attention(q, k, v, o);
    expectBitIdentical(q, q0, 'q');
    expectBitIdentical(k, k0, 'k');
    expectBitIdentical(v, v0, 'v');
  });

  it('a returned array belongs to the caller: later calls and memory growth do not change it', () => {
    const rng = new Rng(7);
    const o = { heads: 2, kvHeads: 2, headDim: 32 };
    const q = rng.randn(4 * 64);
    const k = rng.randn(4 * 64);
    const v = rng.randn(4 * 64);
    const first = attention(q, k, v, o);
    const copy = first.slice();
    attention(rng.randn(4 * 64), rng.randn(4 * 64), rng.randn(4 * 64), o);
    // something large enough to grow linear memory
    const big = new KVCache({ heads: 8, headDim: 128, maxTokens: 16384 }); // 64 MiB of K/V
    attention(rng.randn(4 * 64), rng.randn(1000 * 64), rng.randn(1000 * 64), o);
    big.dispose();
    expect(first.length).toBe(copy.length);
    expectBitIdentical(first, copy, 'first result');
  });

  it('causality: changing the last token never changes an earlier output (bit-identical)', () => {
    const rng = new Rng(8);
    for (const [o, T] of [
      [{ heads: 4, kvHeads: 2, headDim: 64 }, 70],
      [{ heads: 3, kvHeads: 1, headDim: 7, window: 5, sinks: 1 }, 23],
      [{ heads: 2, kvHeads: 2, headDim: 128, softcap: 5 }, 40],
    ] as const) {
      const { heads, kvHeads, headDim } = o;
      const q = rng.randn(T * heads * headDim);
      const k = rng.randn(T * kvHeads * headDim);
      const v = rng.randn(T * kvHeads * headDim);
      const a = attention(q, k, v, o);
      const q2 = q.slice();
      const k2 = k.slice();
      const v2 = v.slice();
      for (let i = (T - 1) * heads * headDim; i < q2.length; i++) q2[i] = rng.normal() * 3;
      for (let i = (T - 1) * kvHeads * headDim; i < k2.length; i++) {
        k2[i] = rng.normal() * 3;
        v2[i] = rng.normal() * 3;
      }
      const b = attention(q2, k2, v2, o);
      const earlier = (T - 1) * heads * headDim;
      expectBitIdentical(b.subarray(0, earlier), a.subarray(0, earlier), `rows before the last, ${JSON.stringify(o)}`);
      expect(Array.from(b.subarray(earlier)), 'the last row must change').not.toEqual(Array.from(a.subarray(earlier)));
    }
  });

  it('masked keys have no influence at all (bit-identical when they change)', () => {
    const rng = new Rng(9);
    const o = { heads: 4, kvHeads: 2, headDim: 64, window: 8, sinks: 2 };
    const S = 200;
    const T = 3;
    const q = rng.randn(T * 4 * 64);
    const k = rng.randn(S * 2 * 64);
    const v = rng.randn(S * 2 * 64);
    const a = attention(q, k, v, o);
    // the queries sit at 197..199 and see 0, 1 and (p-8, p]; keys 2..189 are invisible to all of them
    const k2 = k.slice();
    const v2 = v.slice();
    for (let i = 2 * 2 * 64; i < 190 * 2 * 64; i++) {
      k2[i] = rng.normal() * 10;
      v2[i] = rng.normal() * 10;
    }
    expectBitIdentical(attention(q, k2, v2, o), a, 'outside the window');
  });
  it('large scores (|score| in the hundreds) neither overflow nor lose the softmax', () => {
    const rng = new Rng(10);
    const o = { heads: 4, kvHeads: 2, headDim: 64, scale: 1 };
    const T = 20;
    const S = 50;
    const q = rng.randn(T * 4 * 64).map((x) => 4 * x);
    const k = rng.randn(S * 2 * 64).map((x) => 4 * x);
    const v = rng.randn(S * 2 * 64);
    const got = attention(q, k, v, o);
    expect(got.every(Number.isFinite), 'finite').toBe(true);
    // scores ~ N(0, 16·8 = 128): use the tolerance of that spread
    expectClose(got, referenceAttention(q, k, v, o), tolFor(16, 64), 'large scores', [T, 4, 64]);
  });

  it('q = 0: every visible key weighs the same (the output is the mean of the visible values)', () => {
    const rng = new Rng(11);
    const T = 9;
    const S = 30;
    const o = { heads: 2, kvHeads: 1, headDim: 5, window: 7, sinks: 2 };
    const v = rng.randn(S * 5);
    const got = attention(new Float32Array(T * 2 * 5), rng.randn(S * 5), v, o);
    for (let t = 0; t < T; t++) {
      const p = S - T + t;
      const vis = [];
      for (let j = 0; j < S; j++) if (isVisible(j, p, true, 7, 2)) vis.push(j);
      for (let h = 0; h < 2; h++)
        for (let d = 0; d < 5; d++) {
          let m = 0;
          for (const j of vis) m += v[j * 5 + d];
          expect(Math.abs(got[(t * 2 + h) * 5 + d] - m / vis.length)).toBeLessThan(2e-6);
        }
    }
  });

  it('`out` may be q itself (the queries are read before the output is written)', () => {
    const rng = new Rng(12);
    const o = { heads: 4, kvHeads: 2, headDim: 64, window: 5 };
    const q = rng.randn(33 * 4 * 64);
    const k = rng.randn(33 * 2 * 64);
    const v = rng.randn(33 * 2 * 64);
    const want = attention(q, k, v, o);
    const same = q.slice();
    expect(attention(same, k, v, o, same)).toBe(same);
    expectBitIdentical(same, want, 'out === q');
  });

  it('Float32Arrays from another realm (node:vm context) are accepted', () => {
    const rng = new Rng(13);
    const o = { heads: 2, kvHeads: 2, headDim: 8 };
    const mk = (src: Float32Array) => {
      const x = runInNewContext(`new Float32Array(${src.length})`) as Float32Array;
      x.set(src);
      return x;
    };
    const q = rng.randn(3 * 16);
    const k = rng.randn(4 * 16);
    const v = rng.randn(4 * 16);
    expectBitIdentical(attention(mk(q), mk(k), mk(v), o), attention(q, k, v, o), 'other realm');
  });

  for (const [name, o, T, S] of [
    ['big GQA prefill, 16h/4kv headDim 128, T=S=600', { heads: 16, kvHeads: 4, headDim: 128 }, 600, 600],
    [
      'big MQA decode batch, 32h/1kv headDim 128, T=16 S=8192',
      { heads: 32, kvHeads: 1, headDim: 128, window: 4096, sinks: 4 },
      16,
      8192,
    ],
    ['many heads, 64h/64kv headDim 64, T=S=256', { heads: 64, kvHeads: 64, headDim: 64 }, 256, 256],
  ] as const) {
    it(`${name} (last rows spot-checked: bottom-right alignment lets the reference take only them)`, () => {
      const rng = new Rng(T + S);
      const q = rng.randn(T * o.heads * o.headDim);
      const k = rng.randn(S * o.kvHeads * o.headDim);
      const v = rng.randn(S * o.kvHeads * o.headDim);
      const got = attention(q, k, v, o);
      expect(got.every(Number.isFinite)).toBe(true);
      const m = 3;
      const w = o.heads * o.headDim;
      expectClose(
        got.subarray((T - m) * w),
        referenceAttention(q.subarray((T - m) * w), k, v, o),
        tolFor(undefined, o.headDim),
        name,
      );
      // and the first row, which sees only the keys up to S - T
      expectClose(
        got.subarray(0, w),
        referenceAttention(
          q.subarray(0, w),
          k.subarray(0, (S - T + 1) * o.kvHeads * o.headDim),
          v.subarray(0, (S - T + 1) * o.kvHeads * o.headDim),
          o,
        ),
        tolFor(undefined, o.headDim),
        `${name}, row 0`,
      );
    }, 30_000);
  }
});
