// acc[row] += Σ_j p[row][j] · v[j]: the value half of attention, for one row or two rows sharing loads.
//
// The accumulator is walked in chunks of 16 floats held in registers across the whole run of keys (then
// chunks of 4, then single floats), so each value row is read once per chunk instead of once per element
// store. For every accumulator element the sequence of operations over j is the same whether a row runs
// alone or paired, which keeps prefill and decode bit-identical.

import { madd } from './math';

/** Four int8 lanes at `p` as f32x4. */
// @ts-ignore: decorator
@inline function widen4(p: usize): v128 {
  return f32x4.convert_i32x4_s(i32x4.extend_low_i16x8_s(i16x8.extend_low_i8x16_s(v128.load32_zero(p))));
}

/**
 * acc += Σ_{j in [from, to)} probs[j] · row j of `values` (rows `rowBytes` apart; f32, or int8 whose
 * scales the caller has folded into probs).
 */
export function accumulate1(
  acc: usize, probs: usize, values: usize, rowBytes: usize, from: i32, to: i32, headDim: i32, int8: bool,
): void {
  let c = 0;
  if (ASC_FEATURE_SIMD) {
    for (; c + 16 <= headDim; c += 16) {
      const at = acc + (<usize>c << 2);
      let a0 = v128.load(at), a1 = v128.load(at, 16), a2 = v128.load(at, 32), a3 = v128.load(at, 48);
      let v = values + <usize>from * rowBytes + (int8 ? <usize>c : <usize>c << 2);
      for (let j = from; j < to; j++) {
        const p = v128.load32_splat(probs + (<usize>j << 2));
        if (int8) {
          const w = v128.load(v);
          const lo = i16x8.extend_low_i8x16_s(w), hi = i16x8.extend_high_i8x16_s(w);
          a0 = madd(p, f32x4.convert_i32x4_s(i32x4.extend_low_i16x8_s(lo)), a0);
          a1 = madd(p, f32x4.convert_i32x4_s(i32x4.extend_high_i16x8_s(lo)), a1);
          a2 = madd(p, f32x4.convert_i32x4_s(i32x4.extend_low_i16x8_s(hi)), a2);
          a3 = madd(p, f32x4.convert_i32x4_s(i32x4.extend_high_i16x8_s(hi)), a3);
        } else {
          a0 = madd(p, v128.load(v), a0);
          a1 = madd(p, v128.load(v, 16), a1);
          a2 = madd(p, v128.load(v, 32), a2);
          a3 = madd(p, v128.load(v, 48), a3);
        }
        v += rowBytes;
      }
      v128.store(at, a0); v128.store(at, a1, 16); v128.store(at, a2, 32); v128.store(at, a3, 48);
    }
    for (; c + 4 <= headDim; c += 4) {
      const at = acc + (<usize>c << 2);
      let a = v128.load(at);
      let v = values + <usize>from * rowBytes + (int8 ? <usize>c : <usize>c << 2);
      for (let j = from; j < to; j++) {
        const w = int8 ? widen4(v) : v128.load(v);
        a = madd(v128.load32_splat(probs + (<usize>j << 2)), w, a);
        v += rowBytes;
      }
      v128.store(at, a);
    }
  }
  scalarTail(acc, probs, values, rowBytes, from, to, c, headDim, int8);
}

/** accumulate1 for two rows (accumulators accA/accB, weights probsA/probsB) over the same keys. */
export function accumulate2(
  accA: usize, probsA: usize, accB: usize, probsB: usize, values: usize, rowBytes: usize,
  from: i32, to: i32, headDim: i32, int8: bool,
): void {
  let c = 0;
  if (ASC_FEATURE_SIMD) {
    for (; c + 16 <= headDim; c += 16) {
      const atA = accA + (<usize>c << 2), atB = accB + (<usize>c << 2);
      let a0 = v128.load(atA), a1 = v128.load(atA, 16), a2 = v128.load(atA, 32), a3 = v128.load(atA, 48);
      let b0 = v128.load(atB), b1 = v128.load(atB, 16), b2 = v128.load(atB, 32), b3 = v128.load(atB, 48);
      let v = values + <usize>from * rowBytes + (int8 ? <usize>c : <usize>c << 2);
      for (let j = from; j < to; j++) {
        const pa = v128.load32_splat(probsA + (<usize>j << 2));
        const pb = v128.load32_splat(probsB + (<usize>j << 2));
        let v0: v128, v1: v128, v2: v128, v3: v128;
        if (int8) {
          const w = v128.load(v);
          const lo = i16x8.extend_low_i8x16_s(w), hi = i16x8.extend_high_i8x16_s(w);
          v0 = f32x4.convert_i32x4_s(i32x4.extend_low_i16x8_s(lo));
          v1 = f32x4.convert_i32x4_s(i32x4.extend_high_i16x8_s(lo));
          v2 = f32x4.convert_i32x4_s(i32x4.extend_low_i16x8_s(hi));
          v3 = f32x4.convert_i32x4_s(i32x4.extend_high_i16x8_s(hi));
        } else {
          v0 = v128.load(v); v1 = v128.load(v, 16); v2 = v128.load(v, 32); v3 = v128.load(v, 48);
        }
        a0 = madd(pa, v0, a0); b0 = madd(pb, v0, b0);
        a1 = madd(pa, v1, a1); b1 = madd(pb, v1, b1);
        a2 = madd(pa, v2, a2); b2 = madd(pb, v2, b2);
        a3 = madd(pa, v3, a3); b3 = madd(pb, v3, b3);
        v += rowBytes;
      }
      v128.store(atA, a0); v128.store(atA, a1, 16); v128.store(atA, a2, 32); v128.store(atA, a3, 48);
      v128.store(atB, b0); v128.store(atB, b1, 16); v128.store(atB, b2, 32); v128.store(atB, b3, 48);
    }
    for (; c + 4 <= headDim; c += 4) {
      const atA = accA + (<usize>c << 2), atB = accB + (<usize>c << 2);
      let a = v128.load(atA), b = v128.load(atB);
      let v = values + <usize>from * rowBytes + (int8 ? <usize>c : <usize>c << 2);
      for (let j = from; j < to; j++) {
        const w = int8 ? widen4(v) : v128.load(v);
        a = madd(v128.load32_splat(probsA + (<usize>j << 2)), w, a);
        b = madd(v128.load32_splat(probsB + (<usize>j << 2)), w, b);
        v += rowBytes;
      }
      v128.store(atA, a);
      v128.store(atB, b);
    }
  }
  scalarTail(accA, probsA, values, rowBytes, from, to, c, headDim, int8);
  scalarTail(accB, probsB, values, rowBytes, from, to, c, headDim, int8);
}

/** Elements c … headDim − 1 (all of them in the scalar build). */
// @ts-ignore: decorator
@inline function scalarTail(
  acc: usize, probs: usize, values: usize, rowBytes: usize, from: i32, to: i32, c: i32, headDim: i32, int8: bool,
): void {
  for (; c < headDim; c++) {
    const at = acc + (<usize>c << 2);
    let a = load<f32>(at);
    let v = values + <usize>from * rowBytes + (int8 ? <usize>c : <usize>c << 2);
    for (let j = from; j < to; j++) {
      a += load<f32>(probs + (<usize>j << 2)) * (int8 ? <f32>load<i8>(v) : load<f32>(v));
      v += rowBytes;
    }
    store<f32>(at, a);
  }
}
