// dtypes 'bfloat16' and 'int4': what they store (through save(), docs/FORMAT.md), their error against the
// float64 reference on unit-variance data, scalar == simd, attentionWeights and their bytes. Their
// identities (prefill == decode == chunked, fork == fresh, save/load continues, any thread count, windows,
// sinks, rope, softcap, sink logits, ALiBi) are checked by the tests that loop over dtypes (alibi, fork,
// fuzz, lifecycle, memory, persist, sink-logits, threads), and the model's held-out text in model.test.ts.

import { describe, expect, it } from 'vitest';
import { init } from '../src/index.js';
import { ReferenceCache } from './support/reference.js';
import {
  DTYPE_BUDGET,
  cachesDisposedAfterEach,
  cfgName,
  expectBitIdentical,
  feed,
  feedRef,
  fill,
  ones,
  parseSave,
  stream,
  withEachBuild,
  type Cfg,
} from './support/util.js';

/** f32 → bfloat16 bits by round to nearest even (NaN: quiet, sign kept), in plain integer arithmetic. */
function bf16Bits(x: number): number {
  const bits = new Uint32Array(new Float32Array([x]).buffer)[0];
  if (Number.isNaN(x)) return (bits >>> 16) | 0x40;
  return Math.floor((bits + 0x7fff + ((bits >>> 16) & 1)) / 0x10000) & 0xffff;
}

function errors(got: Float32Array, want: Float64Array): { max: number; mean: number } {
  let max = 0;
  let sum = 0;
  for (let i = 0; i < got.length; i++) {
    const e = Math.abs(got[i] - want[i]);
    max = Math.max(max, e);
    sum += e;
  }
  return { max, mean: sum / got.length };
}

const SHAPES: Cfg[] = [
  { heads: 8, kvHeads: 2, headDim: 64, maxTokens: 300 },
  { heads: 4, kvHeads: 4, headDim: 128, maxTokens: 300, rope: {} },
  { heads: 6, kvHeads: 3, headDim: 40, maxTokens: 300, window: 100, sinks: 4, softcap: 30 },
  { heads: 2, kvHeads: 1, headDim: 7, maxTokens: 300 },
];

withEachBuild('bfloat16 and int4', (build, make) => {
  it('bfloat16 stores the top 16 bits of each float32, rounded to nearest even; NaN stays NaN', () => {
    const cfg: Cfg = { heads: 1, headDim: 16, maxTokens: 8, dtype: 'bfloat16' };
    const f32 = (bits: number) => new Float32Array(new Uint32Array([bits]).buffer)[0];
    // ties to even both ways, just above and below a tie, ±0, the largest finite value (rounds to Infinity),
    // the largest that stays finite, subnormals, ±Infinity, NaNs of both signs
    const k = Float32Array.from([
      f32(0x3f808000),
      f32(0x3f818000),
      f32(0x3f808001),
      f32(0x3f807fff),
      0,
      -0,
      3.4028234663852886e38,
      f32(0x7f7f7fff),
      f32(0x00018000),
      f32(0x80008000),
      Infinity,
      -Infinity,
      Number.NaN,
      f32(0xffc00001),
      1,
      -2.5,
    ]);
    const v = k.map((x) => -x);
    const cache = make(cfg);
    cache.append(0, k, v);
    const p = parseSave(cache.save());
    const stored = new Uint16Array(p.payload.slice().buffer);
    expect(Array.from(stored.subarray(0, 16))).toEqual(Array.from(k, bf16Bits));
    expect(Array.from(stored.subarray(16, 32))).toEqual(Array.from(v, bf16Bits));
    expect(bf16Bits(f32(0x3f808000))).toBe(0x3f80); // tie, even below
    expect(bf16Bits(f32(0x3f818000))).toBe(0x3f82); // tie, even above
    expect(bf16Bits(3.4028234663852886e38)).toBe(0x7f80); // Infinity
    expect(stored[12] & 0x7fc0).toBe(0x7fc0); // NaN: exponent all ones, quiet bit set
  });

  it('int4 stores 4-bit offsets from each group of 32 with its step and least value (bfloat16), within half a step', () => {
    const cfg: Cfg = { heads: 2, kvHeads: 1, headDim: 72, maxTokens: 8, dtype: 'int4' };
    const s = stream(cfg, 5, 11);
    const cache = make(cfg);
    cache.append(0, s.k, s.v);
    const p = parseSave(cache.save());
    // payload: K rows (5 × 36 bytes), V rows, then per row the 3 groups' (step, least) K, then V
    const rowBytes = 36;
    const rows = p.payload.subarray(0, 2 * 5 * rowBytes);
    const params = new Uint16Array(p.payload.slice(2 * 5 * rowBytes, 2 * 5 * rowBytes + 2 * 5 * 3 * 4).buffer);
    const fromBf16 = (b: number) => new Float32Array(new Uint32Array([b << 16]).buffer)[0];
    // the keys were rotated by the 32-point Walsh–Hadamard transform per whole group: undo it on the dequantized
    // row (H·H = 32·I) and compare with the input; the short last group (8 values) is stored unrotated
    const hadamard = (x: number[]) => {
      const y = x.slice();
      for (let h = 1; h < y.length; h <<= 1)
        for (let i = 0; i < y.length; i += 2 * h)
          for (let j = i; j < i + h; j++) [y[j], y[j + h]] = [y[j] + y[j + h], y[j] - y[j + h]];
      return y;
    };
    for (const [kind, input] of [
      [0, s.k],
      [1, s.v],
    ] as const) {
      for (let t = 0; t < 5; t++) {
        const row = t + 5 * kind;
        const x = Array.from(input.subarray(t * 72, t * 72 + 72));
        const stored = kind === 0 ? [...hadamard(x.slice(0, 32)), ...hadamard(x.slice(32, 64)), ...x.slice(64)] : x;
        for (let g = 0; g < 3; g++) {
          const step = fromBf16(params[2 * (row * 3 + g)]);
          const least = fromBf16(params[2 * (row * 3 + g) + 1]);
          const group = stored.slice(32 * g, 32 * g + 32);
          expect(least).toBeCloseTo(Math.min(...group), 1);
          for (let i = 0; i < group.length; i++) {
            const c = 32 * g + i;
            const nibble = (rows[row * rowBytes + (c >> 1)] >> ((c & 1) * 4)) & 15;
            // half a step, plus what the bfloat16 step and least value add (2^-8 relative each)
            expect(Math.abs(nibble * step + least - group[i])).toBeLessThanOrEqual(
              0.5 * step + 0.01 * (15 * step + Math.abs(least)),
            );
          }
        }
      }
    }
  });

  it('error against float64 on unit-variance data: bfloat16 max < 0.01; int4 max and mean within its budget', () => {
    const lines: string[] = [];
    for (const base of SHAPES) {
      for (const dtype of ['bfloat16', 'int4'] as const) {
        const cfg: Cfg = { ...base, dtype };
        const s = stream(cfg, 260, 3);
        const chunks = [200, ...ones(60)];
        const { max, mean } = errors(feed(make(cfg), cfg, s, chunks), feedRef(new ReferenceCache(cfg), cfg, s, chunks));
        lines.push(`  ${cfgName(cfg)}: max ${max.toExponential(2)}, mean ${mean.toExponential(2)}`);
        expect(max, `${cfgName(cfg)}: max`).toBeLessThan(DTYPE_BUDGET[dtype]);
        // bfloat16 rounds each K and V value by at most 2^-9 of itself (measured: max 6e-3–8e-3, mean 3e-4).
        // int4 (DTYPE_BUDGET argues its max; measured 0.11–0.28): a quarter step, 0.08, on average for a value
        // seen alone, shrinking as a query averages more keys' independent roundings (measured 0.009–0.016).
        // The kernel's own roundings add little to either: the query, rotated, to 8 bits per group moves a
        // score by about max|q|/254 times a sum of 32 keys' values with independent signs (≈ 0.01 of the
        // score's scale against int4's step of ≈ 0.3 on each key value), and the weights to 16 bits as int8's
        // (2^-16 of the largest). Measured the same before and after they were added (max 0.20–0.29, mean
        // 0.009–0.016 with the keys widened to f32 instead).
        expect(mean, `${cfgName(cfg)}: mean`).toBeLessThan(dtype === 'bfloat16' ? 5e-4 : INT4_MEAN);
      }
    }
    console.log(`[${build}] error vs float64 (200-token prefill + 60 decode steps):\n${lines.join('\n')}`);
  });

  it('bytes: bfloat16 half of float32, int4 (4 bits and 32 of step and least value per 32 values) under 0.16', () => {
    const cfg: Cfg = { layers: 4, heads: 8, kvHeads: 2, headDim: 64, maxTokens: 4096 };
    const sizes: Record<string, number> = {};
    for (const dtype of ['float32', 'bfloat16', 'int4'] as const) {
      const cache = make({ ...cfg, dtype });
      for (let l = 0; l < 4; l++) fill(cache, cfg, 4096, l);
      sizes[dtype] = cache.byteLength;
      cache.dispose();
    }
    const bf16 = sizes.bfloat16 / sizes.float32;
    const int4 = sizes.int4 / sizes.float32;
    console.log(`[${build}] byteLength over float32's: bfloat16 ${bf16.toFixed(4)}, int4 ${int4.toFixed(4)}`);
    expect(bf16).toBeGreaterThan(0.5);
    expect(bf16).toBeLessThan(0.51);
    expect(int4).toBeLessThan(0.16);
  });
});

/** int4's mean error budget on unit-variance data (the test argues it). */
const INT4_MEAN = 0.025;

describe('int8, bfloat16 and int4: the scalar and simd builds give the same bits', () => {
  // int8 and int4 sum exact integers (codes times int8 queries, int16 weights times codes), so the scalar
  // build's plain loops and the simd build's lanes, pairs of keys and pairs of rows reach the same integers,
  // and the float steps after them are the same operations in every build; bfloat16 widens exactly as it
  // loads and runs the float32 kernels' twins. (relaxed-simd differs only where its exp fuses.)
  const make = cachesDisposedAfterEach();
  it('GQA, odd head sizes, a window that wraps with sinks, rope, softcap: prefill then decode steps', async () => {
    for (const dtype of ['int8', 'bfloat16', 'int4'] as const) {
      for (const cfg of [
        { heads: 8, kvHeads: 2, headDim: 64, maxTokens: 200, dtype },
        { heads: 3, kvHeads: 1, headDim: 13, maxTokens: 100, dtype, softcap: 4 },
        { heads: 4, kvHeads: 4, headDim: 72, maxTokens: 90, dtype, rope: {} },
        { heads: 6, kvHeads: 2, headDim: 40, maxTokens: 70, window: 50, sinks: 3, dtype, rope: { interleaved: true } },
      ] as Cfg[]) {
        const n = cfg.window ? 150 : cfg.maxTokens - 5;
        const s = stream(cfg, n, 50);
        const outs: Float32Array[] = [];
        for (const build of ['scalar', 'simd'] as const) {
          await init({ build });
          outs.push(feed(make(cfg), cfg, s, [n - 40, ...ones(40)]));
        }
        expectBitIdentical(outs[1], outs[0], `${cfgName(cfg)}: simd vs scalar`);
      }
    }
  });
});
