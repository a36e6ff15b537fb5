// Self-tests of the float64 reference (no wasm involved): hand-checkable cases, the mask rules of
// API.md spelled out position by position, rope identities, and a plain f32 emulation that shows the
// tolerances used against the kernel are reachable by an honest f32 implementation.

import { describe, expect, it } from 'vitest';
import {
  ReferenceCache,
  isVisible,
  referenceAttention,
  referenceRope,
  referenceWeights,
  type ReferenceOptions,
} from './support/reference.js';
import { Rng, TOL, expectClose, maxAbsDiff, tolFor } from './support/util.js';

const F64 = { atol: 1e-12, rtol: 1e-10 };

describe('reference: mask rules (API.md, spelled out)', () => {
  it('causal: key j visible iff j <= p', () => {
    expect(isVisible(3, 3, true, undefined, 0)).toBe(true);
    expect(isVisible(4, 3, true, undefined, 0)).toBe(false);
    expect(isVisible(4, 3, false, undefined, 0)).toBe(true);
  });

  it('window counts the query itself: window=3 at p=5 sees 3,4,5', () => {
    const seen = [];
    for (let j = 0; j < 8; j++) if (isVisible(j, 5, true, 3, 0)) seen.push(j);
    expect(seen).toEqual([3, 4, 5]);
  });

  it('window=1 sees only itself; sinks stay visible', () => {
    const seen = [];
    for (let j = 0; j < 8; j++) if (isVisible(j, 6, true, 1, 2)) seen.push(j);
    expect(seen).toEqual([0, 1, 6]);
  });

  it('sinks do not break causality', () => {
    const seen = [];
    for (let j = 0; j < 8; j++) if (isVisible(j, 1, true, 1, 4)) seen.push(j);
    expect(seen).toEqual([0, 1]);
  });

  it('causal:false keeps the window lower bound and drops the upper bound', () => {
    const seen = [];
    for (let j = 0; j < 8; j++) if (isVisible(j, 4, false, 2, 1)) seen.push(j);
    expect(seen).toEqual([0, 3, 4, 5, 6, 7]);
  });

  it('T < S: query t sits at S - T + t', () => {
    const rng = new Rng(1);
    const opts: ReferenceOptions = { heads: 1, headDim: 2 };
    const q = rng.randn(2 * 2);
    const k = rng.randn(5 * 2);
    const v = rng.randn(5 * 2);
    const w = referenceWeights(q, k, v, opts); // [2][1][5]
    expect(Array.from(w.slice(0, 5)).map((x) => x > 0)).toEqual([true, true, true, true, false]);
    expect(Array.from(w.slice(5, 10)).map((x) => x > 0)).toEqual([true, true, true, true, true]);
  });
});

describe('reference: small cases by hand', () => {
  it('one key: the output is that value', () => {
    const rng = new Rng(2);
    const v = rng.randn(3);
    const out = referenceAttention(rng.randn(3), rng.randn(3), v, { heads: 1, headDim: 3 });
    expectClose(out, v, F64, 'out');
  });

  it('q = 0: uniform weights, the output is the mean of the visible values', () => {
    const rng = new Rng(3);
    const S = 7;
    const D = 2;
    const k = rng.randn(S * D);
    const v = rng.randn(S * D);
    const q = new Float32Array(S * D);
    const opts: ReferenceOptions = { heads: 1, headDim: D, window: 3, sinks: 1 };
    const out = referenceAttention(q, k, v, opts);
    for (let p = 0; p < S; p++) {
      const vis = [];
      for (let j = 0; j < S; j++) if (isVisible(j, p, true, 3, 1)) vis.push(j);
      for (let d = 0; d < D; d++) {
        let m = 0;
        for (const j of vis) m += v[j * D + d];
        m /= vis.length;
        expect(out[p * D + d]).toBeCloseTo(m, 12);
      }
    }
  });

  it('two keys: softmax of scale·dot, with and without softcap', () => {
    const q = [1, 2];
    const k = [1, 0, 0, 1];
    const v = [10, 0, 0, 10];
    const scale = 0.7;
    const s0 = scale * 1;
    const s1 = scale * 2;
    const w1 = Math.exp(s1) / (Math.exp(s0) + Math.exp(s1));
    const out = referenceAttention(q, k, v, { heads: 1, headDim: 2, scale, causal: false });
    expect(out[0]).toBeCloseTo(10 * (1 - w1), 12);
    expect(out[1]).toBeCloseTo(10 * w1, 12);
    const cap = 1.1;
    const c0 = cap * Math.tanh(s0 / cap);
    const c1 = cap * Math.tanh(s1 / cap);
    const wc = Math.exp(c1) / (Math.exp(c0) + Math.exp(c1));
    const outc = referenceAttention(q, k, v, { heads: 1, headDim: 2, scale, causal: false, softcap: cap });
    expect(outc[1]).toBeCloseTo(10 * wc, 12);
  });

  it('default scale is 1/sqrt(headDim)', () => {
    const rng = new Rng(4);
    const q = rng.randn(4 * 5);
    const k = rng.randn(4 * 5);
    const v = rng.randn(4 * 5);
    expectClose(
      referenceAttention(q, k, v, { heads: 1, headDim: 5 }),
      referenceAttention(q, k, v, { heads: 1, headDim: 5, scale: 1 / Math.sqrt(5) }),
      F64,
      'default scale',
    );
  });

  it('GQA: query head h reads kv head floor(h / (heads / kvHeads)) (same as MHA with repeated kv heads)', () => {
    const rng = new Rng(5);
    const [T, S, D] = [3, 4, 3];
    const q = rng.randn(T * 6 * D);
    const k = rng.randn(S * 2 * D);
    const v = rng.randn(S * 2 * D);
    // repeat kv heads: [kv0, kv0, kv0, kv1, kv1, kv1]
    const rep = (x: Float32Array) => {
      const y = new Float32Array(S * 6 * D);
      for (let j = 0; j < S; j++)
        for (let h = 0; h < 6; h++)
          for (let d = 0; d < D; d++) y[(j * 6 + h) * D + d] = x[(j * 2 + Math.floor(h / 3)) * D + d];
      return y;
    };
    expectClose(
      referenceAttention(q, k, v, { heads: 6, kvHeads: 2, headDim: D }),
      referenceAttention(q, rep(k), rep(v), { heads: 6, headDim: D }),
      F64,
      'GQA',
    );
  });

  it('weights: rows sum to 1, zeros where masked, weights × v = output', () => {
    const rng = new Rng(6);
    const [T, S, D, H] = [5, 9, 4, 2];
    const q = rng.randn(T * H * D);
    const k = rng.randn(S * D);
    const v = rng.randn(S * D);
    const opts: ReferenceOptions = { heads: H, kvHeads: 1, headDim: D, window: 3, sinks: 1 };
    const w = referenceWeights(q, k, v, opts);
    const out = referenceAttention(q, k, v, opts);
    for (let t = 0; t < T; t++)
      for (let h = 0; h < H; h++) {
        let sum = 0;
        for (let j = 0; j < S; j++) {
          const x = w[(t * H + h) * S + j];
          if (!isVisible(j, S - T + t, true, 3, 1)) expect(x).toBe(0);
          sum += x;
        }
        expect(sum).toBeCloseTo(1, 12);
        for (let d = 0; d < D; d++) {
          let o = 0;
          for (let j = 0; j < S; j++) o += w[(t * H + h) * S + j] * v[j * D + d];
          expect(out[(t * H + h) * D + d]).toBeCloseTo(o, 12);
        }
      }
  });
});

describe('reference: rope', () => {
  it('position 0 is the identity', () => {
    const x = new Rng(7).randn(2 * 3 * 8);
    expectClose(referenceRope(x, 2, 3, 8, [0, 0]), x, F64, 'rope@0');
  });

  it('headDim 2, position 1: a rotation by 1 radian', () => {
    const y = referenceRope([1, 0], 1, 1, 2, [1]);
    expect(y[0]).toBeCloseTo(Math.cos(1), 14);
    expect(y[1]).toBeCloseTo(Math.sin(1), 14);
  });

  it('half-split pairs (i, i + dims/2) with inv_freq theta^(-2i/dims)', () => {
    // headDim 4: pair 0 = (0, 2) at freq 1, pair 1 = (1, 3) at freq theta^(-1/2)
    const theta = 100;
    const y = referenceRope([1, 0, 0, 1], 1, 1, 4, [3], { theta });
    expect(y[0]).toBeCloseTo(Math.cos(3), 14);
    expect(y[2]).toBeCloseTo(Math.sin(3), 14);
    const a = 3 * theta ** -0.5;
    expect(y[1]).toBeCloseTo(-Math.sin(a), 14);
    expect(y[3]).toBeCloseTo(Math.cos(a), 14);
  });

  it('interleaved pairs (2i, 2i+1): a permutation of the half-split layout', () => {
    const rng = new Rng(8);
    const D = 8;
    const x = rng.randn(D);
    // interleaved index 2i <-> half-split i, 2i+1 <-> i + D/2
    const perm = (a: ArrayLike<number>) => {
      const b = new Float64Array(D);
      for (let i = 0; i < D / 2; i++) {
        b[i] = a[2 * i];
        b[i + D / 2] = a[2 * i + 1];
      }
      return b;
    };
    expectClose(
      perm(referenceRope(x, 1, 1, D, [17], { interleaved: true })),
      referenceRope(perm(x), 1, 1, D, [17], { interleaved: false }),
      F64,
      'perm',
    );
  });

  it('preserves norms; only the first dims rotate', () => {
    const rng = new Rng(9);
    const D = 7;
    const x = rng.randn(D);
    const y = referenceRope(x, 1, 1, D, [5], { dims: 4 });
    const n = (a: ArrayLike<number>, lo: number, hi: number) => {
      let s = 0;
      for (let i = lo; i < hi; i++) s += a[i] * a[i];
      return s;
    };
    expect(n(y, 0, 4)).toBeCloseTo(n(x, 0, 4), 12);
    expect(Array.from(y.slice(4))).toEqual(Array.from(x.slice(4)));
  });

  it('relative: dot(rope(q, m), rope(k, n)) depends only on m - n', () => {
    const rng = new Rng(10);
    const D = 16;
    const q = rng.randn(D);
    const k = rng.randn(D);
    const dot = (m: number, n: number, interleaved: boolean) => {
      const a = referenceRope(q, 1, 1, D, [m], { interleaved });
      const b = referenceRope(k, 1, 1, D, [n], { interleaved });
      let s = 0;
      for (let i = 0; i < D; i++) s += a[i] * b[i];
      return s;
    };
    for (const il of [false, true]) expect(dot(10, 7, il)).toBeCloseTo(dot(103, 100, il), 10);
  });
});

describe('reference: ReferenceCache', () => {
  it('a prefill equals one-shot attention on roped q and k', () => {
    const rng = new Rng(11);
    const [T, H, KV, D] = [9, 4, 2, 6];
    const q = rng.randn(T * H * D);
    const k = rng.randn(T * KV * D);
    const v = rng.randn(T * KV * D);
    const rope = { dims: 4, theta: 500 };
    const c = new ReferenceCache({ heads: H, kvHeads: KV, headDim: D, maxTokens: 16, rope, window: 3, sinks: 1 });
    const pos = Array.from({ length: T }, (_, i) => i);
    expectClose(
      c.attend(0, q, k, v),
      referenceAttention(referenceRope(q, T, H, D, pos, rope), referenceRope(k, T, KV, D, pos, rope), v, {
        heads: H,
        kvHeads: KV,
        headDim: D,
        window: 3,
        sinks: 1,
      }),
      F64,
      'prefill',
    );
    expect(c.length).toBe(T);
  });

  it('decode steps equal a prefill; layers advance independently; past maxTokens throws', () => {
    const rng = new Rng(12);
    const T = 6;
    const D = 5;
    const q = rng.randn(T * 2 * D);
    const k = rng.randn(T * D);
    const v = rng.randn(T * D);
    const a = new ReferenceCache({ layers: 2, heads: 2, kvHeads: 1, headDim: D, maxTokens: 6, rope: { dims: 4 } });
    const pre = a.attend(1, q, k, v);
    const steps = [];
    for (let t = 0; t < T; t++) {
      steps.push(
        ...a.attend(0, q.slice(t * 2 * D, (t + 1) * 2 * D), k.slice(t * D, (t + 1) * D), v.slice(t * D, (t + 1) * D)),
      );
    }
    expectClose(steps, pre, F64, 'decode vs prefill');
    expect(a.lengthOf(0)).toBe(6);
    expect(() => a.attend(0, q.slice(0, 2 * D), k.slice(0, D), v.slice(0, D))).toThrow(RangeError);
  });
});

// ---------------------------------------------------------------------------------------------
// An honest plain-f32 implementation (every intermediate rounded to f32, sequential sums, online
// softmax) must pass the tolerances the kernel is held to; otherwise the tolerances would be unfair.

const f = Math.fround;

function f32Attention(q: Float32Array, k: Float32Array, v: Float32Array, o: ReferenceOptions): Float32Array {
  const H = o.heads;
  const KV = o.kvHeads ?? H;
  const D = o.headDim;
  const T = q.length / (H * D);
  const S = k.length / (KV * D);
  const scale = f(o.scale ?? 1 / Math.sqrt(D));
  const out = new Float32Array(T * H * D);
  const acc = new Float32Array(D);
  for (let t = 0; t < T; t++) {
    const p = S - T + t;
    for (let h = 0; h < H; h++) {
      const kh = Math.floor(h / (H / KV));
      let m = -Infinity;
      let l = 0;
      acc.fill(0);
      for (let j = 0; j < S; j++) {
        if (!isVisible(j, p, o.causal ?? true, o.window, o.sinks ?? 0)) continue;
        let dot = 0;
        for (let d = 0; d < D; d++) dot = f(dot + f(q[(t * H + h) * D + d] * k[(j * KV + kh) * D + d]));
        let s = f(dot * scale);
        if (o.softcap !== undefined) s = f(o.softcap * f(Math.tanh(f(s / o.softcap))));
        const mNew = Math.max(m, s);
        const corr = f(Math.exp(f(m - mNew)));
        const pj = f(Math.exp(f(s - mNew)));
        l = f(f(l * corr) + pj);
        for (let d = 0; d < D; d++) acc[d] = f(f(acc[d] * corr) + f(pj * v[(j * KV + kh) * D + d]));
        m = mNew;
      }
      for (let d = 0; d < D; d++) out[(t * H + h) * D + d] = f(acc[d] / l);
    }
  }
  return out;
}

describe('reference: the kernel tolerances are reachable in plain f32', () => {
  const cases: {
    name: string;
    T: number;
    S: number;
    H: number;
    KV: number;
    D: number;
    o?: Partial<ReferenceOptions>;
  }[] = [
    { name: 'headDim 512 prefill', T: 48, S: 48, H: 2, KV: 1, D: 512 },
    { name: 'S=4096 decode, headDim 128', T: 2, S: 4096, H: 4, KV: 2, D: 128 },
    { name: 'S=2048, headDim 64, window+sinks', T: 8, S: 2048, H: 4, KV: 1, D: 64, o: { window: 700, sinks: 4 } },
    { name: 'scale 1, headDim 256 (peaky softmax)', T: 16, S: 64, H: 2, KV: 2, D: 256, o: { scale: 1 } },
    { name: 'softcap 5 with scale 1', T: 16, S: 64, H: 2, KV: 1, D: 64, o: { scale: 1, softcap: 5 } },
    { name: 'softcap 10000 (a cap far above every score)', T: 16, S: 40, H: 8, KV: 2, D: 64, o: { softcap: 10000 } },
  ];
  for (const c of cases) {
    it(c.name, () => {
      const rng = new Rng(100 + c.D + c.S);
      const q = rng.randn(c.T * c.H * c.D);
      const k = rng.randn(c.S * c.KV * c.D);
      const v = rng.randn(c.S * c.KV * c.D);
      const opts: ReferenceOptions = { heads: c.H, kvHeads: c.KV, headDim: c.D, ...c.o };
      const got = f32Attention(q, k, v, opts);
      const want = referenceAttention(q, k, v, opts);
      const tol = tolFor(opts.scale, c.D);
      expectClose(got, want, tol, c.name);
      // measured here: 2e-7 … 9e-6 max |diff|, i.e. >= 2× (usually >= 20×) headroom
      expect(maxAbsDiff(got, want)).toBeLessThan(tol.atol / 2);
    }, 30_000);
  }

  it('a dropped key is caught', () => {
    const rng = new Rng(200);
    const q = rng.randn(4 * 64);
    const k = rng.randn(300 * 64);
    const v = rng.randn(300 * 64);
    const opts = { heads: 1, headDim: 64 };
    const want = referenceAttention(q, k, v, opts);
    const wrong = referenceAttention(q, k, v, { ...opts, window: 299 }); // loses key 0 for the last rows
    expect(() => expectClose(wrong, want, TOL, 'dropped')).toThrow(/outside/);
  });
});
