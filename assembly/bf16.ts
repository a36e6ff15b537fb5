// The float32 kernels (score.ts, values.ts) over bfloat16 rows, widened as they load: a bfloat16 is the top
// half of a float32, so four halves zero-extended to i32 lanes and shifted left by 16 are four exact f32.
// Reading half the bytes is what makes a bfloat16 cache faster than float32's where attention is
// memory-bound. Each kernel performs, lane by lane and in the same order, the operations of its float32
// twin on the same f32 values, so a bfloat16 cache's scores and outputs are those of its rows widened
// first (and the scalar build's are the simd build's, as for float32).

import { madd, transposeSum } from './math';

// Where the engine has relaxed SIMD, the four halves are loaded into a register's low 8 bytes and moved
// into the high halves of its lanes by one byte shuffle (zero below: x64's pshufb, off the multiply-add
// ports); elsewhere zero-extended as they load and shifted left by 16. Both are exact: the same f32 lanes.
const SPREAD = memory.data<u8>([128, 128, 0, 1, 128, 128, 2, 3, 128, 128, 4, 5, 128, 128, 6, 7], 16);

/** The shuffle's indices (a kernel holds them in a register), or nothing where the shift is used. */
// @ts-ignore: decorator
@inline function spreadMask(): v128 {
  return ASC_FEATURE_RELAXED_SIMD ? v128.load(SPREAD) : i32x4.splat(0);
}

/** Four bfloat16 at `p` as f32 lanes (`m`: spreadMask()). */
// @ts-ignore: decorator
@inline function widen4(p: usize, m: v128): v128 {
  return ASC_FEATURE_RELAXED_SIMD ? i8x16.relaxed_swizzle(v128.load64_zero(p), m) : i32x4.shl(v128.load_ext<u16>(p), 16);
}

/** The bfloat16 at `p` as f32. */
// @ts-ignore: decorator
@inline function widen1(p: usize): f32 {
  return reinterpret<f32>(<u32>load<u16>(p) << 16);
}

// ----------------------------------------------------------------------------------------------- scores

/** laneTails (score.ts) over bfloat16 keys. */
// @ts-ignore: decorator
@inline function laneTailsBf16(q: usize, k0: usize, k1: usize, k2: usize, k3: usize, from: i32, headDim: i32): v128 {
  let t0: f32 = 0, t1: f32 = 0, t2: f32 = 0, t3: f32 = 0;
  for (let i = from; i < headDim; i++) {
    const x = load<f32>(q + (<usize>i << 2));
    const at = <usize>i << 1;
    t0 += x * widen1(k0 + at);
    t1 += x * widen1(k1 + at);
    t2 += x * widen1(k2 + at);
    t3 += x * widen1(k3 + at);
  }
  return f32x4.replace_lane(f32x4.replace_lane(f32x4.replace_lane(f32x4.splat(t0), 1, t1), 2, t2), 3, t3);
}

/** dot4F32 (score.ts) over bfloat16 keys. */
// @ts-ignore: decorator
@inline export function dot4Bf16(q: usize, k0: usize, k1: usize, k2: usize, k3: usize, headDim: i32): v128 {
  const m = spreadMask();
  let a0 = f32x4.splat(0);
  let a1 = a0, a2 = a0, a3 = a0;
  let pq = q, p0 = k0, p1 = k1, p2 = k2, p3 = k3;
  const body = headDim & ~3;
  let i = 0;
  for (; i < body; i += 4) {
    const x = v128.load(pq);
    a0 = madd(x, widen4(p0, m), a0); a1 = madd(x, widen4(p1, m), a1);
    a2 = madd(x, widen4(p2, m), a2); a3 = madd(x, widen4(p3, m), a3);
    pq += 16; p0 += 8; p1 += 8; p2 += 8; p3 += 8;
  }
  let s = transposeSum(a0, a1, a2, a3);
  if (i < headDim) s = f32x4.add(s, laneTailsBf16(q, k0, k1, k2, k3, i, headDim));
  return s;
}

/** dot2x4F32 (score.ts) over bfloat16 keys. */
// @ts-ignore: decorator
@inline export function dot2x4Bf16(
  qa: usize, qb: usize, k0: usize, k1: usize, k2: usize, k3: usize, headDim: i32, outA: usize, outB: usize,
): void {
  const m = spreadMask();
  let a0 = f32x4.splat(0);
  let a1 = a0, a2 = a0, a3 = a0, b0 = a0, b1 = a0, b2 = a0, b3 = a0;
  let pa = qa, pb = qb, p0 = k0, p1 = k1, p2 = k2, p3 = k3;
  const body = headDim & ~3;
  let i = 0;
  for (; i < body; i += 4) {
    const x = v128.load(pa), y = v128.load(pb);
    let c = widen4(p0, m); a0 = madd(x, c, a0); b0 = madd(y, c, b0);
    c = widen4(p1, m); a1 = madd(x, c, a1); b1 = madd(y, c, b1);
    c = widen4(p2, m); a2 = madd(x, c, a2); b2 = madd(y, c, b2);
    c = widen4(p3, m); a3 = madd(x, c, a3); b3 = madd(y, c, b3);
    pa += 16; pb += 16; p0 += 8; p1 += 8; p2 += 8; p3 += 8;
  }
  let sa = transposeSum(a0, a1, a2, a3);
  let sb = transposeSum(b0, b1, b2, b3);
  if (i < headDim) {
    sa = f32x4.add(sa, laneTailsBf16(qa, k0, k1, k2, k3, i, headDim));
    sb = f32x4.add(sb, laneTailsBf16(qb, k0, k1, k2, k3, i, headDim));
  }
  v128.store(outA, sa);
  v128.store(outB, sb);
}

/**
 * dot2x4Dim64 (score.ts) over four consecutive bfloat16 keys of 64 values (k0, k0 + 128, …): one running key
 * pointer with immediate offsets.
 */
// @ts-ignore: decorator
@inline export function dot2x4Bf16Dim64(qa: usize, qb: usize, k0: usize, outA: usize, outB: usize): void {
  const m = spreadMask();
  let a0 = f32x4.splat(0);
  let a1 = a0, a2 = a0, a3 = a0, b0 = a0, b1 = a0, b2 = a0, b3 = a0;
  let pa = qa, pb = qb, pk = k0;
  const end = qa + 256;
  for (; pa < end; pa += 16) {
    const x = v128.load(pa), y = v128.load(pb);
    let c = widen4(pk, m); a0 = madd(x, c, a0); b0 = madd(y, c, b0);
    c = (ASC_FEATURE_RELAXED_SIMD ? i8x16.relaxed_swizzle(v128.load64_zero(pk, 128), m) : i32x4.shl(v128.load_ext<u16>(pk, 128), 16)); a1 = madd(x, c, a1); b1 = madd(y, c, b1);
    c = (ASC_FEATURE_RELAXED_SIMD ? i8x16.relaxed_swizzle(v128.load64_zero(pk, 256), m) : i32x4.shl(v128.load_ext<u16>(pk, 256), 16)); a2 = madd(x, c, a2); b2 = madd(y, c, b2);
    c = (ASC_FEATURE_RELAXED_SIMD ? i8x16.relaxed_swizzle(v128.load64_zero(pk, 384), m) : i32x4.shl(v128.load_ext<u16>(pk, 384), 16)); a3 = madd(x, c, a3); b3 = madd(y, c, b3);
    pb += 16; pk += 8;
  }
  v128.store(outA, transposeSum(a0, a1, a2, a3));
  v128.store(outB, transposeSum(b0, b1, b2, b3));
}

/**
 * Four query rows (q0…q3, 64 values) against two consecutive bfloat16 keys of 64 values (k0, k0 + 128):
 * each widened key chunk serves four rows (8 accumulators, 4 query chunks, the key and the shuffle's
 * indices fit the registers). Stores two lanes at each of out0…out3. Per lane exactly dot2x4F32's
 * operations: transposeSum's lane i sums only its argument i.
 */
// @ts-ignore: decorator
@inline export function dot4x2Bf16Dim64(q0: usize, q1: usize, q2: usize, q3: usize, k0: usize, out0: usize, out1: usize, out2: usize, out3: usize): void {
  const m = spreadMask();
  let a0 = f32x4.splat(0);
  let a1 = a0, b0 = a0, b1 = a0, c0 = a0, c1 = a0, d0 = a0, d1 = a0;
  let p0 = q0, pk = k0;
  const d10 = q1 - q0, d20 = q2 - q0, d30 = q3 - q0;
  const end = q0 + 256;
  for (; p0 < end; p0 += 16) {
    const w = v128.load(p0), x = v128.load(p0 + d10), y = v128.load(p0 + d20), z = v128.load(p0 + d30);
    let k = widen4(pk, m);
    a0 = madd(w, k, a0); b0 = madd(x, k, b0); c0 = madd(y, k, c0); d0 = madd(z, k, d0);
    k = (ASC_FEATURE_RELAXED_SIMD ? i8x16.relaxed_swizzle(v128.load64_zero(pk, 128), m) : i32x4.shl(v128.load_ext<u16>(pk, 128), 16));
    a1 = madd(w, k, a1); b1 = madd(x, k, b1); c1 = madd(y, k, c1); d1 = madd(z, k, d1);
    pk += 8;
  }
  const ab = transposeSum(a0, a1, b0, b1), cd = transposeSum(c0, c1, d0, d1);
  v128.store64_lane(out0, ab, 0);
  v128.store64_lane(out1, ab, 1);
  v128.store64_lane(out2, cd, 0);
  v128.store64_lane(out3, cd, 1);
}

/** dot8F32 (score.ts) over bfloat16 keys `stride` bytes apart, pipelined as it is. */
// @ts-ignore: decorator
@inline export function dot8Bf16(q: usize, k0: usize, stride: usize, headDim: i32, out: usize): void {
  const m = spreadMask();
  let a0 = f32x4.splat(0);
  let a1 = a0, a2 = a0, a3 = a0, a4 = a0, a5 = a0, a6 = a0, a7 = a0;
  const body = headDim & ~3;
  let i = 0;
  if (body > 0) {
    let pq = q, p0 = k0, p1 = k0 + stride, p2 = p1 + stride, p3 = p2 + stride;
    let p4 = p3 + stride, p5 = p4 + stride, p6 = p5 + stride, p7 = p6 + stride;
    let x = v128.load(pq);
    a0 = madd(x, widen4(p0, m), a0); a1 = madd(x, widen4(p1, m), a1);
    a2 = madd(x, widen4(p2, m), a2); a3 = madd(x, widen4(p3, m), a3);
    for (;;) {
      a4 = madd(x, widen4(p4, m), a4); a5 = madd(x, widen4(p5, m), a5);
      a6 = madd(x, widen4(p6, m), a6); a7 = madd(x, widen4(p7, m), a7);
      i += 4;
      if (i >= body) break;
      pq += 16; p0 += 8; p1 += 8; p2 += 8; p3 += 8; p4 += 8; p5 += 8; p6 += 8; p7 += 8;
      x = v128.load(pq);
      a0 = madd(x, widen4(p0, m), a0); a1 = madd(x, widen4(p1, m), a1);
      a2 = madd(x, widen4(p2, m), a2); a3 = madd(x, widen4(p3, m), a3);
    }
  }
  let lo = transposeSum(a0, a1, a2, a3);
  let hi = transposeSum(a4, a5, a6, a7);
  if (i < headDim) {
    lo = f32x4.add(lo, laneTailsBf16(q, k0, k0 + stride, k0 + 2 * stride, k0 + 3 * stride, i, headDim));
    const k4 = k0 + 4 * stride;
    hi = f32x4.add(hi, laneTailsBf16(q, k4, k4 + stride, k4 + 2 * stride, k4 + 3 * stride, i, headDim));
  }
  v128.store(out, lo);
  v128.store(out, hi, 16);
}

/** dotScalarF32 (score.ts) over a bfloat16 key. */
// @ts-ignore: decorator
@inline export function dotScalarBf16(q: usize, k: usize, headDim: i32): f32 {
  let a0: f32 = 0, a1: f32 = 0, a2: f32 = 0, a3: f32 = 0;
  const body = headDim & ~3;
  let i = 0;
  for (; i < body; i += 4) {
    const at = <usize>i << 2, kt = k + (<usize>i << 1);
    a0 += load<f32>(q + at) * widen1(kt);
    a1 += load<f32>(q + at, 4) * widen1(kt + 2);
    a2 += load<f32>(q + at, 8) * widen1(kt + 4);
    a3 += load<f32>(q + at, 12) * widen1(kt + 6);
  }
  const s = (a0 + a1) + (a2 + a3);
  if (i == headDim) return s;
  let t: f32 = 0;
  for (; i < headDim; i++) t += load<f32>(q + (<usize>i << 2)) * widen1(k + (<usize>i << 1));
  return s + t;
}

// ----------------------------------------------------------------------------------------------- values

/** accumulate1 (values.ts) over bfloat16 value rows `rowBytes` apart, with the same chunks and pipelining. */
export function accumulate1Bf16(acc: usize, probs: usize, values: usize, rowBytes: usize, from: i32, to: i32, headDim: i32): void {
  let c = 0;
  if (ASC_FEATURE_SIMD) {
    const m = spreadMask();
    const firstRow = values + <usize>from * rowBytes;
    const firstProb = probs + (<usize>from << 2);
    const lastProb = probs + (<usize>to << 2);
    if (from < to) {
      const rowsEnd = firstRow + <usize>(to - from) * rowBytes;
      for (; c + 32 <= headDim; c += 32) {
        const at = acc + (<usize>c << 2);
        let a0 = v128.load(at), a1 = v128.load(at, 16), a2 = v128.load(at, 32), a3 = v128.load(at, 48);
        let a4 = v128.load(at, 64), a5 = v128.load(at, 80), a6 = v128.load(at, 96), a7 = v128.load(at, 112);
        let v = firstRow + (<usize>c << 1);
        let p = firstProb;
        let w = v128.load32_splat(p);
        a0 = madd(w, widen4(v, m), a0);
        a1 = madd(w, (ASC_FEATURE_RELAXED_SIMD ? i8x16.relaxed_swizzle(v128.load64_zero(v, 8), m) : i32x4.shl(v128.load_ext<u16>(v, 8), 16)), a1);
        a2 = madd(w, (ASC_FEATURE_RELAXED_SIMD ? i8x16.relaxed_swizzle(v128.load64_zero(v, 16), m) : i32x4.shl(v128.load_ext<u16>(v, 16), 16)), a2);
        a3 = madd(w, (ASC_FEATURE_RELAXED_SIMD ? i8x16.relaxed_swizzle(v128.load64_zero(v, 24), m) : i32x4.shl(v128.load_ext<u16>(v, 24), 16)), a3);
        for (;;) {
          a4 = madd(w, (ASC_FEATURE_RELAXED_SIMD ? i8x16.relaxed_swizzle(v128.load64_zero(v, 32), m) : i32x4.shl(v128.load_ext<u16>(v, 32), 16)), a4);
          a5 = madd(w, (ASC_FEATURE_RELAXED_SIMD ? i8x16.relaxed_swizzle(v128.load64_zero(v, 40), m) : i32x4.shl(v128.load_ext<u16>(v, 40), 16)), a5);
          a6 = madd(w, (ASC_FEATURE_RELAXED_SIMD ? i8x16.relaxed_swizzle(v128.load64_zero(v, 48), m) : i32x4.shl(v128.load_ext<u16>(v, 48), 16)), a6);
          a7 = madd(w, (ASC_FEATURE_RELAXED_SIMD ? i8x16.relaxed_swizzle(v128.load64_zero(v, 56), m) : i32x4.shl(v128.load_ext<u16>(v, 56), 16)), a7);
          p += 4;
          if (p >= lastProb) break;
          v += rowBytes;
          w = v128.load32_splat(p);
          a0 = madd(w, widen4(v, m), a0);
          a1 = madd(w, (ASC_FEATURE_RELAXED_SIMD ? i8x16.relaxed_swizzle(v128.load64_zero(v, 8), m) : i32x4.shl(v128.load_ext<u16>(v, 8), 16)), a1);
          a2 = madd(w, (ASC_FEATURE_RELAXED_SIMD ? i8x16.relaxed_swizzle(v128.load64_zero(v, 16), m) : i32x4.shl(v128.load_ext<u16>(v, 16), 16)), a2);
          a3 = madd(w, (ASC_FEATURE_RELAXED_SIMD ? i8x16.relaxed_swizzle(v128.load64_zero(v, 24), m) : i32x4.shl(v128.load_ext<u16>(v, 24), 16)), a3);
          if (v >= rowsEnd) break; // never (keeps the two halves apart when V8 unrolls: values.ts)
        }
        v128.store(at, a0); v128.store(at, a1, 16); v128.store(at, a2, 32); v128.store(at, a3, 48);
        v128.store(at, a4, 64); v128.store(at, a5, 80); v128.store(at, a6, 96); v128.store(at, a7, 112);
      }
    }
    for (; c + 16 <= headDim; c += 16) {
      const at = acc + (<usize>c << 2);
      let a0 = v128.load(at), a1 = v128.load(at, 16), a2 = v128.load(at, 32), a3 = v128.load(at, 48);
      let v = firstRow + (<usize>c << 1);
      for (let p = firstProb; p < lastProb; p += 4) {
        const w = v128.load32_splat(p);
        a0 = madd(w, widen4(v, m), a0);
        a1 = madd(w, (ASC_FEATURE_RELAXED_SIMD ? i8x16.relaxed_swizzle(v128.load64_zero(v, 8), m) : i32x4.shl(v128.load_ext<u16>(v, 8), 16)), a1);
        a2 = madd(w, (ASC_FEATURE_RELAXED_SIMD ? i8x16.relaxed_swizzle(v128.load64_zero(v, 16), m) : i32x4.shl(v128.load_ext<u16>(v, 16), 16)), a2);
        a3 = madd(w, (ASC_FEATURE_RELAXED_SIMD ? i8x16.relaxed_swizzle(v128.load64_zero(v, 24), m) : i32x4.shl(v128.load_ext<u16>(v, 24), 16)), a3);
        v += rowBytes;
      }
      v128.store(at, a0); v128.store(at, a1, 16); v128.store(at, a2, 32); v128.store(at, a3, 48);
    }
    for (; c + 4 <= headDim; c += 4) {
      const at = acc + (<usize>c << 2);
      let a = v128.load(at);
      let v = firstRow + (<usize>c << 1);
      for (let p = firstProb; p < lastProb; p += 4) {
        a = madd(v128.load32_splat(p), widen4(v, m), a);
        v += rowBytes;
      }
      v128.store(at, a);
    }
  }
  scalarTailBf16(acc, probs, values, rowBytes, from, to, c, headDim);
}

/** accumulate2 (values.ts) over bfloat16 value rows: two rows' weights share each value load. */
export function accumulate2Bf16(
  accA: usize, probsA: usize, accB: usize, probsB: usize, values: usize, rowBytes: usize,
  from: i32, to: i32, headDim: i32,
): void {
  let c = 0;
  if (ASC_FEATURE_SIMD) {
    const m = spreadMask();
    const firstRow = values + <usize>from * rowBytes;
    const firstA = probsA + (<usize>from << 2);
    const lastA = probsA + (<usize>to << 2);
    const distance = probsB - probsA;
    for (; c + 16 <= headDim; c += 16) {
      const atA = accA + (<usize>c << 2), atB = accB + (<usize>c << 2);
      let a0 = v128.load(atA), a1 = v128.load(atA, 16), a2 = v128.load(atA, 32), a3 = v128.load(atA, 48);
      let b0 = v128.load(atB), b1 = v128.load(atB, 16), b2 = v128.load(atB, 32), b3 = v128.load(atB, 48);
      let v = firstRow + (<usize>c << 1);
      for (let p = firstA; p < lastA; p += 4) {
        const wa = v128.load32_splat(p), wb = v128.load32_splat(p + distance);
        let u = widen4(v, m);
        a0 = madd(wa, u, a0); b0 = madd(wb, u, b0);
        u = (ASC_FEATURE_RELAXED_SIMD ? i8x16.relaxed_swizzle(v128.load64_zero(v, 8), m) : i32x4.shl(v128.load_ext<u16>(v, 8), 16));
        a1 = madd(wa, u, a1); b1 = madd(wb, u, b1);
        u = (ASC_FEATURE_RELAXED_SIMD ? i8x16.relaxed_swizzle(v128.load64_zero(v, 16), m) : i32x4.shl(v128.load_ext<u16>(v, 16), 16));
        a2 = madd(wa, u, a2); b2 = madd(wb, u, b2);
        u = (ASC_FEATURE_RELAXED_SIMD ? i8x16.relaxed_swizzle(v128.load64_zero(v, 24), m) : i32x4.shl(v128.load_ext<u16>(v, 24), 16));
        a3 = madd(wa, u, a3); b3 = madd(wb, u, b3);
        v += rowBytes;
      }
      v128.store(atA, a0); v128.store(atA, a1, 16); v128.store(atA, a2, 32); v128.store(atA, a3, 48);
      v128.store(atB, b0); v128.store(atB, b1, 16); v128.store(atB, b2, 32); v128.store(atB, b3, 48);
    }
    for (; c + 4 <= headDim; c += 4) {
      const atA = accA + (<usize>c << 2), atB = accB + (<usize>c << 2);
      let a = v128.load(atA), b = v128.load(atB);
      let v = firstRow + (<usize>c << 1);
      for (let p = firstA; p < lastA; p += 4) {
        const u = widen4(v, m);
        a = madd(v128.load32_splat(p), u, a);
        b = madd(v128.load32_splat(p + distance), u, b);
        v += rowBytes;
      }
      v128.store(atA, a);
      v128.store(atB, b);
    }
  }
  scalarTailBf16(accA, probsA, values, rowBytes, from, to, c, headDim);
  scalarTailBf16(accB, probsB, values, rowBytes, from, to, c, headDim);
}

/**
 * accumulate1Bf16 for four rows over the same keys (accumulators acc0…acc3, weights p0…p3): each widened
 * value chunk serves four rows, eight floats at a time (8 accumulators, 4 weights and 2 value chunks fit
 * the registers). Per element the operations of accumulate1, in the same order.
 */
export function accumulate4Bf16(
  acc0: usize, p0: usize, acc1: usize, p1: usize, acc2: usize, p2: usize, acc3: usize, p3: usize,
  values: usize, rowBytes: usize, from: i32, to: i32, headDim: i32,
): void {
  let c = 0;
  if (ASC_FEATURE_SIMD) {
    const m = spreadMask();
    const firstRow = values + <usize>from * rowBytes;
    const first = p0 + (<usize>from << 2), last = p0 + (<usize>to << 2);
    const d1 = p1 - p0, d2 = p2 - p0, d3 = p3 - p0;
    for (; c + 8 <= headDim; c += 8) {
      const o = <usize>c << 2;
      let a0 = v128.load(acc0 + o), a1 = v128.load(acc0 + o, 16), b0 = v128.load(acc1 + o), b1 = v128.load(acc1 + o, 16);
      let e0 = v128.load(acc2 + o), e1 = v128.load(acc2 + o, 16), f0 = v128.load(acc3 + o), f1 = v128.load(acc3 + o, 16);
      let v = firstRow + (<usize>c << 1);
      for (let p = first; p < last; p += 4) {
        const u = widen4(v, m), x = (ASC_FEATURE_RELAXED_SIMD ? i8x16.relaxed_swizzle(v128.load64_zero(v, 8), m) : i32x4.shl(v128.load_ext<u16>(v, 8), 16));
        let w = v128.load32_splat(p); a0 = madd(w, u, a0); a1 = madd(w, x, a1);
        w = v128.load32_splat(p + d1); b0 = madd(w, u, b0); b1 = madd(w, x, b1);
        w = v128.load32_splat(p + d2); e0 = madd(w, u, e0); e1 = madd(w, x, e1);
        w = v128.load32_splat(p + d3); f0 = madd(w, u, f0); f1 = madd(w, x, f1);
        v += rowBytes;
      }
      v128.store(acc0 + o, a0); v128.store(acc0 + o, a1, 16); v128.store(acc1 + o, b0); v128.store(acc1 + o, b1, 16);
      v128.store(acc2 + o, e0); v128.store(acc2 + o, e1, 16); v128.store(acc3 + o, f0); v128.store(acc3 + o, f1, 16);
    }
    for (; c + 4 <= headDim; c += 4) {
      const o = <usize>c << 2;
      let a = v128.load(acc0 + o), b = v128.load(acc1 + o), e = v128.load(acc2 + o), f = v128.load(acc3 + o);
      let v = firstRow + (<usize>c << 1);
      for (let p = first; p < last; p += 4) {
        const u = widen4(v, m);
        a = madd(v128.load32_splat(p), u, a);
        b = madd(v128.load32_splat(p + d1), u, b);
        e = madd(v128.load32_splat(p + d2), u, e);
        f = madd(v128.load32_splat(p + d3), u, f);
        v += rowBytes;
      }
      v128.store(acc0 + o, a); v128.store(acc1 + o, b); v128.store(acc2 + o, e); v128.store(acc3 + o, f);
    }
  }
  scalarTailBf16(acc0, p0, values, rowBytes, from, to, c, headDim);
  scalarTailBf16(acc1, p1, values, rowBytes, from, to, c, headDim);
  scalarTailBf16(acc2, p2, values, rowBytes, from, to, c, headDim);
  scalarTailBf16(acc3, p3, values, rowBytes, from, to, c, headDim);
}

/** Elements c … headDim − 1 (all of them in the scalar build). */
// @ts-ignore: decorator
@inline function scalarTailBf16(acc: usize, probs: usize, values: usize, rowBytes: usize, from: i32, to: i32, c: i32, headDim: i32): void {
  for (; c < headDim; c++) {
    const at = acc + (<usize>c << 2);
    let a = load<f32>(at);
    let v = values + <usize>from * rowBytes + (<usize>c << 1);
    for (let j = from; j < to; j++) {
      a += load<f32>(probs + (<usize>j << 2)) * widen1(v);
      v += rowBytes;
    }
    store<f32>(at, a);
  }
}
