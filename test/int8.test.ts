// dtype 'int8': K and V stored as int8 with one symmetric scale per (token, kv head). Checks the stored
// quantization itself (through save(), docs/FORMAT.md), that the kernel computes exactly with what it
// stored, that it keeps the cache's bit-identity promises, measures its error against the float64
// reference on realistic inputs (acceptance: max abs < 0.05, mean abs < 0.01), and its byteLength.

import { describe, expect, it } from 'vitest';
import { KVCache, init } from '../src/index.js';
import { referenceCacheQuery, referenceRope } from './support/reference.js';
import {
  Rng,
  TOL,
  expectBitIdentical,
  expectClose,
  expectThrows,
  withEachBuild,
  cachesDisposedAfterEach,
  cfgName,
  feed,
  fill,
  kvHeadsOf,
  ones,
  parseSave,
  rechecksum,
  slice,
  stream,
  type Cfg,
  type Stream,
  type Tolerance,
} from './support/util.js';

interface Quantized {
  /** layer 0 only: [rows][kvHeads][headDim] dequantized K and V, one row a held position */
  k: Float32Array;
  v: Float32Array;
  kq: Int8Array;
  vq: Int8Array;
  kScale: Float32Array; // [kvHeads][rows]
  vScale: Float32Array;
  rows: number;
  /** the position each row holds, in payload order (docs/FORMAT.md: the sinks, then held … to − 1) */
  positions: number[];
}

/** Reads layer 0 of an int8 save into row-major arrays ([row][kvHeads][headDim], like the inputs). */
function quantized(bytes: Uint8Array, cfg: Cfg): Quantized {
  const p = parseSave(bytes);
  expect(p.header.options.dtype).toBe('int8');
  const { from, to, held } = p.header.layers[0];
  const sinkEnd = cfg.window !== undefined ? Math.min(cfg.sinks ?? 0, to) : 0;
  const positions = [
    ...range(Math.max(0, sinkEnd - from)).map((i) => from + i),
    ...range(to - held).map((i) => held + i),
  ];
  const rows = positions.length;
  const H = kvHeadsOf(cfg);
  const D = cfg.headDim;
  const pay = p.payload;
  const i8 = new Int8Array(pay.buffer, pay.byteOffset, 2 * H * rows * D);
  const f32 = new Float32Array(pay.slice(2 * H * rows * D, 2 * H * rows * D + 2 * H * rows * 4).buffer);
  const kq = new Int8Array(rows * H * D);
  const vq = new Int8Array(rows * H * D);
  for (let h = 0; h < H; h++) {
    for (let t = 0; t < rows; t++) {
      for (let d = 0; d < D; d++) {
        kq[(t * H + h) * D + d] = i8[(h * rows + t) * D + d];
        vq[(t * H + h) * D + d] = i8[((H + h) * rows + t) * D + d];
      }
    }
  }
  const kScale = f32.slice(0, H * rows);
  const vScale = f32.slice(H * rows, 2 * H * rows);
  const k = new Float32Array(rows * H * D);
  const v = new Float32Array(rows * H * D);
  for (let t = 0; t < rows; t++) {
    for (let h = 0; h < H; h++) {
      for (let d = 0; d < D; d++) {
        const i = (t * H + h) * D + d;
        k[i] = kq[i] * kScale[h * rows + t];
        v[i] = vq[i] * vScale[h * rows + t];
      }
    }
  }
  return { k, v, kq, vq, kScale, vScale, rows, positions };
}

function range(n: number): number[] {
  return Array.from({ length: n }, (_, i) => i);
}

/**
 * The dequantized K/V of positions 0 … length − 1, token-major, from the rows that hold them; positions a
 * ring has already overwritten are not saved and stay NaN, so a reference that reads one fails loudly.
 */
function storedByPosition(deq: Quantized, cfg: Cfg, length: number): { k: Float32Array; v: Float32Array } {
  const w = kvHeadsOf(cfg) * cfg.headDim;
  const k = new Float32Array(length * w).fill(NaN);
  const v = new Float32Array(length * w).fill(NaN);
  deq.positions.forEach((p, row) => {
    if (p >= length) return;
    k.set(deq.k.subarray(row * w, (row + 1) * w), p * w);
    v.set(deq.v.subarray(row * w, (row + 1) * w), p * w);
  });
  return { k, v };
}

interface ErrorStats {
  max: number;
  sum: number;
  count: number;
}
const stats = (): ErrorStats => ({ max: 0, sum: 0, count: 0 });
function add(st: ErrorStats, got: ArrayLike<number>, want: ArrayLike<number>): void {
  expect(got.length).toBe(want.length);
  for (let i = 0; i < got.length; i++) {
    const d = Math.abs(got[i] - want[i]);
    if (Number.isNaN(d)) throw new Error(`non-finite output ${got[i]} at ${i}`);
    st.max = Math.max(st.max, d);
    st.sum += d;
    st.count++;
  }
}

/**
 * How far the int8 kernel may be from the float64 reference fed the K/V it stored, for one step's queries
 * `q` ([heads][headDim], rotated): TOL (float32 arithmetic) plus what its integer arithmetic rounds
 * (assembly/int8.ts), each bounded for the worst case, every rounding error of the same sign:
 * - the query row rounded to int16 (|Δq_i| <= |q|∞ / 65534) moves a score by at most
 *   δ = scale · |q|∞ / 65534 · max_j ‖k_j‖₁ (softcap only shrinks it), so every softmax weight by a factor
 *   within e^(±2δ) and the output, a weighted mean of the v_j, by at most (e^(2δ) − 1) · 2|v|∞;
 * - a block's weights w_j = p_j · vScale_j rounded to int16 against the block's largest: each moves by at
 *   most max w / 65534 <= (the block's largest p) · vScale_max / 65534, which times |V_j| <= 127 and
 *   summed over the block's <= 64 keys is <= 64 / 65534 · (the block's largest p) · |v|∞; the blocks'
 *   largest p sum to at most the softmax denominator, so the output moves by at most 2^-10 · |v|∞.
 * Typical errors are far smaller (they cancel): the test also holds the mean error to TYPICAL_MEAN.
 */
function integerTolerance(cfg: Cfg, q: ArrayLike<number>, held: { k: Float32Array; v: Float32Array }): Tolerance {
  const D = cfg.headDim;
  const scale = cfg.scale ?? 1 / Math.sqrt(D);
  let k1 = 0; // max_j ‖k_j‖₁ over the held rows (NaN: a position the ring no longer holds)
  for (let at = 0; at + D <= held.k.length; at += D) {
    let norm = 0;
    for (let d = 0; d < D; d++) norm += Math.abs(held.k[at + d]);
    if (!Number.isNaN(norm)) k1 = Math.max(k1, norm);
  }
  let vMax = 0;
  for (const x of held.v) if (!Number.isNaN(x)) vMax = Math.max(vMax, Math.abs(x));
  let qMax = 0;
  for (let i = 0; i < q.length; i++) qMax = Math.max(qMax, Math.abs(q[i]));
  const delta = (scale * qMax * k1) / 65534;
  return { atol: TOL.atol + Math.expm1(2 * delta) * 2 * vMax + 2 ** -10 * vMax, rtol: TOL.rtol };
}

/**
 * The mean error the int8 kernel keeps to against the float64 reference over its own K/V. Measured 6e-6 to
 * 1e-5 at unit variance (the 16-bit roundings cancel); a leaked or dropped key, a wrong scale or a wrong
 * lane costs orders of magnitude more (the worst-case bound above alone could hide a small one).
 */
const TYPICAL_MEAN = 3e-5;

withEachBuild('int8', (build, make) => {
  describe('what is stored', () => {
    it('one symmetric scale per (token, kv head): every value within half a step of the input, nothing clipped, no step wasted', () => {
      const cfg: Cfg = { heads: 4, kvHeads: 2, headDim: 64, maxTokens: 40, dtype: 'int8' };
      const s = stream(cfg, 36, 1);
      const W = 2 * 64;
      // token 3: kv head 1 all zeros; token 4: one kv head of large and one of tiny values; token 5: one outlier
      s.k.fill(0, 3 * W + 64, 4 * W);
      s.v.fill(0, 3 * W + 64, 4 * W);
      for (let i = 0; i < 64; i++) {
        s.k[4 * W + i] *= 1000;
        s.v[4 * W + i] *= 1000;
        s.k[4 * W + 64 + i] *= 1e-3;
        s.v[4 * W + 64 + i] *= 1e-3;
      }
      s.k[5 * W + 7] = 40;
      s.v[5 * W + 70] = -40;
      const cache = make(cfg);
      const out = feed(cache, cfg, s, [20, 1, 15]);
      expect(out.every(Number.isFinite), 'outputs finite (zero rows, large and tiny rows)').toBe(true);
      const q = quantized(cache.save(), cfg);
      expect(q.rows).toBe(36);
      for (const [name, x, xq, scale] of [
        ['K', s.k, q.kq, q.kScale],
        ['V', s.v, q.vq, q.vScale],
      ] as const) {
        for (let t = 0; t < 36; t++) {
          for (let h = 0; h < 2; h++) {
            const sc = scale[h * 36 + t];
            let absmax = 0;
            let qmax = 0;
            for (let d = 0; d < 64; d++) {
              const i = (t * 2 + h) * 64 + d;
              absmax = Math.max(absmax, Math.abs(x[i]));
              qmax = Math.max(qmax, Math.abs(xq[i]));
              const err = Math.abs(x[i] - xq[i] * sc);
              if (!(err <= (sc / 2) * (1 + 1e-5) + 1e-37)) {
                throw new Error(
                  `${name} token ${t} kv head ${h} dim ${d}: ${x[i]} stored as ${xq[i]} × ${sc} (error ${err}, half a step ${sc / 2})`,
                );
              }
            }
            expect(qmax, `${name} token ${t} kv head ${h}: symmetric range`).toBeLessThanOrEqual(127);
            if (absmax === 0) {
              expect(qmax, `${name} token ${t} kv head ${h}: a zero row stays zero`).toBe(0);
              continue;
            }
            expect(sc, `${name} token ${t} kv head ${h}: scale`).toBeGreaterThan(0);
            expect(sc * 127, `${name} token ${t} kv head ${h}: nothing clipped`).toBeGreaterThanOrEqual(
              absmax * (1 - 1e-6),
            );
            expect(
              qmax,
              `${name} token ${t} kv head ${h}: the largest value uses the full range`,
            ).toBeGreaterThanOrEqual(126);
          }
        }
      }
    });

    it('the kernel computes with exactly the stored values: equals the float64 reference fed the dequantized K/V', () => {
      // The saved bytes hold what the kernel reads (K after rope, in ring slots). Each decode step is
      // compared with the reference fed exactly those values, right after the step (a later token may
      // overwrite a slot the step read). With rope, the reference rotates only q: the stored K already is.
      for (const cfg of [
        { heads: 8, kvHeads: 2, headDim: 128, maxTokens: 80, dtype: 'int8' },
        { heads: 6, kvHeads: 3, headDim: 7, maxTokens: 40, dtype: 'int8', softcap: 5 },
        { heads: 4, kvHeads: 2, headDim: 64, maxTokens: 50, dtype: 'int8', rope: {} },
        // windows that mask keys, sinks, and rings that wrapped several times
        { heads: 2, kvHeads: 1, headDim: 32, maxTokens: 30, window: 9, sinks: 2, dtype: 'int8' },
        {
          heads: 4,
          kvHeads: 1,
          headDim: 64,
          maxTokens: 24,
          window: 20,
          sinks: 3,
          dtype: 'int8',
          rope: { interleaved: true },
        },
        {
          heads: 6,
          kvHeads: 2,
          headDim: 16,
          maxTokens: 7,
          window: 7,
          sinks: 1,
          dtype: 'int8',
          rope: { dims: 8 },
          softcap: 3,
        },
      ] as Cfg[]) {
        const typical = stats();
        const n = cfg.window === undefined ? cfg.maxTokens - 10 : 4 * cfg.maxTokens + 5;
        const steps = 4;
        const s = stream(cfg, n, 2);
        const cache = make(cfg);
        feed(cache, cfg, slice(cfg, s, 0, n - steps));
        const qRoped = cfg.rope ? referenceRope(s.q, n, cfg.heads, cfg.headDim, range(n), cfg.rope) : s.q;
        const asStored = { ...cfg, rope: undefined };
        for (let p = n - steps; p < n; p++) {
          const got = feed(cache, cfg, slice(cfg, s, p, p + 1));
          const held = storedByPosition(quantized(cache.save(), cfg), cfg, p + 1);
          const want = referenceCacheQuery(asStored, qRoped, held.k, held.v, p);
          expectClose(
            got,
            want,
            integerTolerance(
              cfg,
              qRoped.subarray(p * cfg.heads * cfg.headDim, (p + 1) * cfg.heads * cfg.headDim),
              held,
            ),
            `${cfgName(cfg)}: int8 kernel vs float64 over its own dequantized K/V, position ${p}`,
          );
          add(typical, got, want);
        }
        const mean = typical.sum / typical.count;
        console.log(
          `[int8 ${build}] ${cfgName(cfg)}: vs float64 over its own K/V, max ${typical.max.toExponential(2)}, mean ${mean.toExponential(2)}`,
        );
        expect(mean, `${cfgName(cfg)}: mean error over its own K/V`).toBeLessThan(TYPICAL_MEAN);
      }
    });
  });

  describe('the integer arithmetic at its edges', () => {
    /** Feeds `s` as a prefill then decode steps; each step against the reference over the stored K/V. */
    function checkSteps(cfg: Cfg, s: Stream, steps: number, label: string): void {
      const cache = make(cfg);
      feed(cache, cfg, slice(cfg, s, 0, s.n - steps));
      const w = cfg.heads * cfg.headDim;
      for (let p = s.n - steps; p < s.n; p++) {
        const got = feed(cache, cfg, slice(cfg, s, p, p + 1));
        const held = storedByPosition(quantized(cache.save(), cfg), cfg, p + 1);
        const q = s.q.subarray(p * w, (p + 1) * w);
        expectClose(
          got,
          referenceCacheQuery(cfg, s.q, held.k, held.v, p),
          integerTolerance(cfg, q, held),
          `${label} (${cfgName(cfg)}), position ${p}`,
        );
      }
    }

    it('head sizes that are not a multiple of 8 or 16, zero query rows, all-zero key and value rows', () => {
      for (const headDim of [1, 5, 13, 24, 40, 72, 100]) {
        const cfg: Cfg = { heads: 6, kvHeads: 2, headDim, maxTokens: 150, dtype: 'int8' };
        const s = stream(cfg, 140, 30 + headDim);
        const qw = cfg.heads * headDim;
        const kw = 2 * headDim;
        // query head 1 is zero at every position (scores 0: the mean of the visible values)
        for (let t = 0; t < s.n; t++) s.q.fill(0, t * qw + headDim, t * qw + 2 * headDim);
        // every 7th token's keys of kv head 0 and every 5th token's values of kv head 1 are zero (scale 0)
        for (let t = 0; t < s.n; t += 7) s.k.fill(0, t * kw, t * kw + headDim);
        for (let t = 0; t < s.n; t += 5) s.v.fill(0, t * kw + headDim, (t + 1) * kw);
        checkSteps(cfg, s, 3, 'odd head size, zero rows');
      }
    });

    it('a NaN key or value reaches exactly the queries that see it: earlier rows of its block stay the same bits', () => {
      const cfg: Cfg = { heads: 4, kvHeads: 2, headDim: 24, maxTokens: 64, dtype: 'int8' };
      const s = stream(cfg, 40, 60);
      const w = cfg.heads * cfg.headDim;
      const clean = feed(make(cfg), cfg, s);
      for (const tensor of ['k', 'v'] as const) {
        const bad = { ...s, [tensor]: s[tensor].slice() };
        bad[tensor][30 * 2 * 24 + 5] = Number.NaN; // token 30, kv head 0 (query heads 0 and 1)
        const got = feed(make(cfg), cfg, bad);
        expectBitIdentical(got.subarray(0, 30 * w), clean.subarray(0, 30 * w), `${tensor}: positions before the NaN`);
        for (let p = 30; p < 40; p++) {
          const row = got.subarray(p * w, (p + 1) * w);
          expect(row.subarray(0, 48).every(Number.isNaN), `${tensor}, position ${p}: heads 0 and 1 see the NaN`).toBe(
            true,
          );
          expect(row.subarray(48).every(Number.isFinite), `${tensor}, position ${p}: heads 2 and 3 do not`).toBe(true);
        }
      }
    });

    it('a loaded cache may hold −128 (save() never writes it): q·k and Σ w·v stay exact with it', () => {
      const cfg: Cfg = { heads: 4, kvHeads: 2, headDim: 40, maxTokens: 80, dtype: 'int8' };
      const s = stream(cfg, 70, 70);
      const cache = make(cfg);
      feed(cache, cfg, slice(cfg, s, 0, 66));
      const bytes = cache.save();
      const { payload, header } = parseSave(bytes);
      const rows = header.layers[0].to;
      // every 3rd element of kv head 0's keys and of kv head 1's values becomes −128 (0x80); not in the last
      // row, which the header's `reaches` checksums (a piece whose last rows differ from it is refused)
      for (let t = 0; t < rows - 1; t++) {
        for (let d = 0; d < 40; d += 3) {
          payload[t * 40 + d] = 0x80;
          payload[(3 * rows + t) * 40 + d] = 0x80;
        }
      }
      const loaded = KVCache.load(rechecksum(bytes));
      try {
        const q = quantized(loaded.save(), cfg);
        expect([q.kq[0], q.vq[40]], 'the −128 loaded (token 0: kv head 0 key, kv head 1 value)').toEqual([-128, -128]);
        const w = cfg.heads * cfg.headDim;
        for (let p = 66; p < 70; p++) {
          const got = feed(loaded, cfg, slice(cfg, s, p, p + 1));
          const held = storedByPosition(quantized(loaded.save(), cfg), cfg, p + 1);
          expectClose(
            got,
            referenceCacheQuery(cfg, s.q, held.k, held.v, p),
            integerTolerance(cfg, s.q.subarray(p * w, (p + 1) * w), held),
            `−128 in the cache, position ${p}`,
          );
        }
      } finally {
        loaded.dispose();
      }
    });

    it('a loaded piece whose int8 row scale is negative is refused, naming the layer (save() writes max|x| / 127)', () => {
      const cfg: Cfg = { heads: 4, kvHeads: 2, headDim: 5, maxTokens: 80, layers: 2, dtype: 'int8' };
      const cache = make(cfg);
      const s = stream(cfg, 20, 71);
      for (let l = 0; l < 2; l++) cache.attend(l, s.q, s.k, s.v);
      const good = cache.save();
      KVCache.load(good).dispose();
      const { payload, header } = parseSave(good);
      const rows = header.layers[0].to;
      // layer 1's V scales start after layer 0's payload, then layer 1's K and V rows and K scales
      const layerBytes = 2 * 2 * rows * (5 + 4);
      const vScale = layerBytes + 2 * 2 * rows * 5 + 2 * rows * 4 + 4 * 7;
      for (const bad of [-0.5, Number.NEGATIVE_INFINITY]) {
        const bytes = good.slice();
        const at = parseSave(bytes).payload;
        new DataView(at.buffer, at.byteOffset).setFloat32(vScale, bad, true);
        expectThrows(() => KVCache.load(rechecksum(bytes)), Error, [
          /layer 1 holds an int8 row scale of/,
          new RegExp(`${bad}`),
        ]);
      }
      cache.dispose();
      expect(payload.length).toBeGreaterThan(vScale);
    });

    it('q·k at the largest head size near the i32 limit: 512 · 32767 · 127 summed exactly', () => {
      // q = ±1 (every element rounds to ±32767), k_j = a_j · sign(q) (every element stored as ±127 of the
      // same sign): Σ Q·K = 512 · 32767 · 127 = 2,130,706,432 for every key, 0.8% below 2^31; a_j spreads
      // the scores over a few units so the softmax depends on every one. Values at ±127 too.
      const cfg: Cfg = { heads: 2, kvHeads: 1, headDim: 512, maxTokens: 140, dtype: 'int8' };
      const s = stream(cfg, 130, 40);
      const rng = new Rng(41);
      const sign = Float32Array.from({ length: 512 }, () => (rng.next() < 0.5 ? -1 : 1));
      for (let t = 0; t < s.n; t++) {
        const a = 0.3 * rng.next();
        for (let d = 0; d < 512; d++) {
          s.q[t * 1024 + d] = sign[d];
          s.q[t * 1024 + 512 + d] = -sign[d];
          s.k[t * 512 + d] = a * sign[d];
          s.v[t * 512 + d] = (d % 3 === 0 ? -1 : 1) * (1 + t / 100);
        }
      }
      checkSteps(cfg, s, 3, 'near the i32 limit');
    });
  });

  describe('keeps the cache promises', () => {
    for (const cfg of [
      { layers: 2, heads: 8, kvHeads: 2, headDim: 64, maxTokens: 64, dtype: 'int8', rope: {} },
      {
        heads: 4,
        kvHeads: 1,
        headDim: 128,
        maxTokens: 20,
        window: 12,
        sinks: 4,
        dtype: 'int8',
        rope: { interleaved: true },
      },
      { heads: 3, kvHeads: 3, headDim: 7, maxTokens: 6, window: 5, sinks: 3, dtype: 'int8', rope: { dims: 4 } },
    ] as Cfg[]) {
      it(`prefill == decode steps == chunked prefill, bit for bit (${cfgName(cfg)})`, () => {
        const n = cfg.window ? 90 : cfg.maxTokens;
        const s = stream(cfg, n, 3);
        const whole = feed(make(cfg), cfg, s, [n]);
        expectBitIdentical(feed(make(cfg), cfg, s, ones(n)), whole, 'decode steps vs prefill');
        expectBitIdentical(feed(make(cfg), cfg, s, [7, 1, 30, n - 38]), whole, 'chunks vs prefill');
      });
    }
  });

  describe('error against the float64 reference on realistic inputs (unit-variance q/k/v)', () => {
    // The heavy, long contexts run on one build; the others run the same shapes at shorter contexts
    // (the quantization error does not depend on the build).
    const long = build === 'relaxed-simd';
    const shapes: { cfg: Cfg; n: number }[] = [
      { cfg: { heads: 2, kvHeads: 1, headDim: 32, maxTokens: 0 }, n: long ? 4096 : 512 },
      { cfg: { heads: 4, kvHeads: 1, headDim: 64, maxTokens: 0 }, n: long ? 4096 : 512 },
      { cfg: { heads: 8, kvHeads: 8, headDim: 64, maxTokens: 0 }, n: long ? 1024 : 256 },
      { cfg: { heads: 6, kvHeads: 2, headDim: 80, maxTokens: 0 }, n: long ? 1024 : 256 },
      { cfg: { heads: 8, kvHeads: 2, headDim: 128, maxTokens: 0 }, n: long ? 2048 : 512 },
      { cfg: { heads: 4, kvHeads: 2, headDim: 128, maxTokens: 0, rope: { theta: 500000 } }, n: long ? 2048 : 256 },
      {
        cfg: { heads: 4, kvHeads: 2, headDim: 128, maxTokens: 0, window: 256, sinks: 4, rope: {} },
        n: long ? 2048 : 512,
      },
      { cfg: { heads: 4, kvHeads: 2, headDim: 256, maxTokens: 0 }, n: long ? 1024 : 256 },
    ];
    it(`max abs error < 0.05 and mean abs error < 0.01 for head sizes 32 … 256, MHA/GQA/MQA, contexts up to ${long ? 4096 : 512}`, () => {
      const byDim = new Map<number, ErrorStats>();
      const lines: string[] = [];
      for (const [i, { cfg: base, n }] of shapes.entries()) {
        const steps = 8;
        const cfg: Cfg = { ...base, maxTokens: base.window ? base.window + 64 : n + steps, dtype: 'int8' };
        const s: Stream = stream(cfg, n + steps, 700 + i);
        const cache = make(cfg);
        const prefill = feed(cache, cfg, slice(cfg, s, 0, n));
        const decode = feed(cache, cfg, slice(cfg, s, n, n + steps), ones(steps));
        // rows compared: the first few, evenly spread ones, the last ones of the prefill, every decode step
        const rng = new Rng(i);
        const rows = new Set<number>([0, 1, 2, 3, n - 2, n - 1]);
        while (rows.size < 30) rows.add(rng.int(0, n - 1));
        const st = stats();
        const w = cfg.heads * cfg.headDim;
        for (const p of rows) add(st, prefill.subarray(p * w, (p + 1) * w), referenceCacheQuery(cfg, s.q, s.k, s.v, p));
        for (let t = 0; t < steps; t++)
          add(st, decode.subarray(t * w, (t + 1) * w), referenceCacheQuery(cfg, s.q, s.k, s.v, n + t));
        const mean = st.sum / st.count;
        lines.push(
          `  ${cfgName({ ...base, maxTokens: cfg.maxTokens }).padEnd(62)} context ${String(n + steps).padStart(4)}: max ${st.max.toFixed(5)}  mean ${mean.toFixed(6)}`,
        );
        const d = byDim.get(cfg.headDim) ?? stats();
        d.max = Math.max(d.max, st.max);
        d.sum += st.sum;
        d.count += st.count;
        byDim.set(cfg.headDim, d);
        expect(st.max, `${cfgName(cfg)}: max abs error`).toBeLessThan(0.05);
        expect(mean, `${cfgName(cfg)}: mean abs error`).toBeLessThan(0.01);
        cache.dispose();
      }
      const summary = [...byDim.entries()].map(
        ([d, st]) => `headDim ${d}: max ${st.max.toFixed(4)}, mean ${(st.sum / st.count).toFixed(5)}`,
      );
      console.log(
        `[int8 ${build}] error vs float64 (outputs of 30 prefill rows + 8 decode steps per shape):\n${lines.join('\n')}\n  per head size: ${summary.join('; ')}`,
      );
    }, 60_000);
  });

  describe('byteLength', () => {
    it('int8 holds about a quarter of float32 (plus one f32 scale per row), the rest of what it holds equal', () => {
      const lines: string[] = [];
      for (const base of [
        { layers: 2, heads: 32, kvHeads: 8, headDim: 128, maxTokens: 4096 },
        { layers: 4, heads: 8, headDim: 64, maxTokens: 2048 },
        { layers: 1, heads: 8, kvHeads: 2, headDim: 64, maxTokens: 1024, window: 512, sinks: 4 },
      ] as Cfg[]) {
        const f = make({ ...base, dtype: 'float32' });
        const q = make({ ...base, dtype: 'int8' });
        const slots = base.window ? base.maxTokens + (base.sinks ?? 0) : base.maxTokens;
        // full: every slot of every layer written (memory follows the tokens; a new cache holds none)
        for (const c of [f, q]) for (let l = 0; l < (base.layers ?? 1); l++) fill(c, base, slots, l);
        const pages = Math.ceil(slots / 64); // a page holds 64 positions
        const rows = (base.layers ?? 1) * 2 * kvHeadsOf(base) * pages * 64; // K and V rows of every layer
        const kvF32 = rows * base.headDim * 4;
        const kvI8 = rows * (base.headDim + 4);
        expect(f.byteLength).toBeGreaterThanOrEqual(kvF32);
        expect(q.byteLength).toBeGreaterThanOrEqual(kvI8);
        // what is not K/V (working memory) is the same for both dtypes, up to 64-byte block alignment
        expect(Math.abs(f.byteLength - kvF32 - (q.byteLength - kvI8))).toBeLessThanOrEqual(64 * 4 * (base.layers ?? 1));
        const ratio = q.byteLength / f.byteLength;
        // a big cache is about a quarter (headDim + 4 bytes per int8 row against 4 × headDim)
        if (kvF32 > 32 * 2 ** 20) expect(ratio, `${cfgName(base)}: int8 / float32`).toBeLessThan(0.27);
        expect(ratio).toBeGreaterThan(0.25);
        lines.push(
          `  ${cfgName(base)}: float32 ${f.byteLength} bytes (${(f.byteLength / 2 ** 20).toFixed(2)} MiB), ` +
            `int8 ${q.byteLength} bytes (${(q.byteLength / 2 ** 20).toFixed(2)} MiB), ratio ${ratio.toFixed(4)} ` +
            `(K/V alone: ${kvF32} vs ${kvI8} bytes, ratio ${(kvI8 / kvF32).toFixed(4)})`,
        );
      }
      if (build === 'relaxed-simd' || build === 'scalar')
        console.log(`[int8 ${build}] byteLength:\n${lines.join('\n')}`);
    });
  });
});

describe('int8: weights that underflow the rounding', () => {
  const make = cachesDisposedAfterEach();
  it('weights below 1e-34 (a block 85 below a sink key, or tiny values): no overflow in the rounding, the same bits everywhere', async () => {
    // Rounding a block's weights to int16 divides 32767 by their largest; below ~9.6e-35 that was +Infinity:
    // lanes outside a row's keys became NaN → −32768 in the simd builds (scalar ≠ simd, prefill ≠ decode, a
    // future key leaking) and every weight ±32767. The kernel now lifts such blocks by 2^64 first (exact).
    const D = 8;
    const T = 70;
    const a = Math.sqrt(85 * Math.sqrt(D)); // key 0 scores 85 above every other key, for every query
    const q = new Float32Array(T * D);
    const k = new Float32Array(T * D);
    const v = new Float32Array(T * D);
    for (let t = 0; t < T; t++) {
      q[t * D] = a;
      k[t * D + 1 + (t % 7)] = 1;
      for (let c = 0; c < D; c++) v[t * D + c] = 1 + ((t * 7 + c * 3) % 5) / 10;
    }
    k[0] = a;
    v[0] = 0.001; // rounds to int8 0: the other keys' values are what column 0 shows
    const cfg: Cfg = { heads: 1, kvHeads: 1, headDim: D, maxTokens: 128, dtype: 'int8' };
    const s: Stream = { n: T, q, k, v };
    const outs: Float32Array[] = [];
    for (const build of ['scalar', 'simd'] as const) {
      await init({ build });
      outs.push(feed(make(cfg), cfg, s), feed(make(cfg), cfg, s, ones(T)));
    }
    expectBitIdentical(outs[1], outs[0], 'scalar: decode steps vs prefill');
    expectBitIdentical(outs[2], outs[0], 'simd prefill vs scalar');
    expectBitIdentical(outs[3], outs[0], 'simd decode steps vs scalar');
    // values of 1e-34 (row scales ~1e-36): int8 within its unit-variance budget (max 0.05) scaled by 1e-34
    // of float32 (before: every weight rounded to ±32767, the output 4× off)
    const r = stream(cfg, 40, 77);
    const tiny = { ...r, v: r.v.map((x) => x * 1e-34) };
    const f32Cfg: Cfg = { ...cfg, dtype: 'float32' };
    const want = feed(make(f32Cfg), f32Cfg, tiny);
    const got = feed(make(cfg), cfg, tiny);
    let worst = 0;
    for (let i = 0; i < want.length; i++) worst = Math.max(worst, Math.abs(got[i] - want[i]));
    expect(worst, 'values of 1e-34: int8 vs float32').toBeLessThan(0.05e-34);
  });
});
