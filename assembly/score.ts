// Dot products of query rows with four key rows at once (lane i of a result ↔ key i). Keys are f32
// (int8 caches score in integers: int8.ts).
//
// Every lane runs the identical sequence of operations, so the score of a (query, key) pair never
// depends on which group of four, or which lane, it was computed in. That is what makes a prefill, a run
// of decode steps and a chunked prefill agree bit for bit. The scalar build follows the same lane
// structure (four partial sums over the head, reduced as (x0 + x1) + (x2 + x3), then the tail), so it
// matches the simd build exactly; the relaxed-simd build differs only by its fused multiply-adds.

import { madd, transposeSum } from './math';

// --------------------------------------------------------------------------------------------- float32

// @ts-ignore: decorator
@inline export function dot4F32(q: usize, k0: usize, k1: usize, k2: usize, k3: usize, headDim: i32): v128 {
  let a0 = f32x4.splat(0);
  let a1 = a0, a2 = a0, a3 = a0;
  // running pointers with immediate offsets: one bump per 16 floats instead of an address per load
  let pq = q, p0 = k0, p1 = k1, p2 = k2, p3 = k3;
  const body = headDim & ~3;
  let i = 0;
  for (; i + 16 <= headDim; i += 16) {
    let x = v128.load(pq);
    a0 = madd(x, v128.load(p0), a0); a1 = madd(x, v128.load(p1), a1);
    a2 = madd(x, v128.load(p2), a2); a3 = madd(x, v128.load(p3), a3);
    x = v128.load(pq, 16);
    a0 = madd(x, v128.load(p0, 16), a0); a1 = madd(x, v128.load(p1, 16), a1);
    a2 = madd(x, v128.load(p2, 16), a2); a3 = madd(x, v128.load(p3, 16), a3);
    x = v128.load(pq, 32);
    a0 = madd(x, v128.load(p0, 32), a0); a1 = madd(x, v128.load(p1, 32), a1);
    a2 = madd(x, v128.load(p2, 32), a2); a3 = madd(x, v128.load(p3, 32), a3);
    x = v128.load(pq, 48);
    a0 = madd(x, v128.load(p0, 48), a0); a1 = madd(x, v128.load(p1, 48), a1);
    a2 = madd(x, v128.load(p2, 48), a2); a3 = madd(x, v128.load(p3, 48), a3);
    pq += 64; p0 += 64; p1 += 64; p2 += 64; p3 += 64;
  }
  for (; i < body; i += 4) {
    const x = v128.load(pq);
    a0 = madd(x, v128.load(p0), a0); a1 = madd(x, v128.load(p1), a1);
    a2 = madd(x, v128.load(p2), a2); a3 = madd(x, v128.load(p3), a3);
    pq += 16; p0 += 16; p1 += 16; p2 += 16; p3 += 16;
  }
  let s = transposeSum(a0, a1, a2, a3);
  if (i < headDim) s = f32x4.add(s, laneTails(q, k0, k1, k2, k3, i, headDim));
  return s;
}

// @ts-ignore: decorator
@inline export function dotScalarF32(q: usize, k: usize, headDim: i32): f32 {
  let a0: f32 = 0, a1: f32 = 0, a2: f32 = 0, a3: f32 = 0;
  const body = headDim & ~3;
  let i = 0;
  for (; i < body; i += 4) {
    const at = <usize>i << 2;
    a0 += load<f32>(q + at) * load<f32>(k + at);
    a1 += load<f32>(q + at, 4) * load<f32>(k + at, 4);
    a2 += load<f32>(q + at, 8) * load<f32>(k + at, 8);
    a3 += load<f32>(q + at, 12) * load<f32>(k + at, 12);
  }
  const s = (a0 + a1) + (a2 + a3);
  if (i == headDim) return s;
  let t: f32 = 0;
  for (; i < headDim; i++) t += load<f32>(q + (<usize>i << 2)) * load<f32>(k + (<usize>i << 2));
  return s + t;
}

// ------------------------------------------------------------------------------- two query rows at once
// Two query rows against the same four keys: each key chunk is loaded once for both rows (8 accumulators,
// 4 key registers and 2 query registers: 14 of the 16 registers engines give v128 on x64). Per lane the
// operations are exactly those of dot4F32, so pairing rows never changes a score.

/** The tail elements from `from` on (headDim not a multiple of 4), lane i ↔ key i, as a vector. */
// @ts-ignore: decorator
@inline function laneTails(q: usize, k0: usize, k1: usize, k2: usize, k3: usize, from: i32, headDim: i32): v128 {
  let t0: f32 = 0, t1: f32 = 0, t2: f32 = 0, t3: f32 = 0;
  for (let i = from; i < headDim; i++) {
    const at = <usize>i << 2;
    const x = load<f32>(q + at);
    t0 += x * load<f32>(k0 + at);
    t1 += x * load<f32>(k1 + at);
    t2 += x * load<f32>(k2 + at);
    t3 += x * load<f32>(k3 + at);
  }
  return f32x4.replace_lane(f32x4.replace_lane(f32x4.replace_lane(f32x4.splat(t0), 1, t1), 2, t2), 3, t3);
}

/** Stores dot4F32(qa, …) at outA and dot4F32(qb, …) at outB. */
// @ts-ignore: decorator
@inline export function dot2x4F32(
  qa: usize, qb: usize, k0: usize, k1: usize, k2: usize, k3: usize, headDim: i32, outA: usize, outB: usize,
): void {
  let a0 = f32x4.splat(0);
  let a1 = a0, a2 = a0, a3 = a0, b0 = a0, b1 = a0, b2 = a0, b3 = a0;
  let pa = qa, pb = qb, p0 = k0, p1 = k1, p2 = k2, p3 = k3;
  const body = headDim & ~3;
  let i = 0;
  // four floats a step (TurboFan unrolls it); longer bodies make V8 spill accumulators (--print-wasm-code)
  for (; i < body; i += 4) {
    const x = v128.load(pa), y = v128.load(pb);
    let c = v128.load(p0); a0 = madd(x, c, a0); b0 = madd(y, c, b0);
    c = v128.load(p1); a1 = madd(x, c, a1); b1 = madd(y, c, b1);
    c = v128.load(p2); a2 = madd(x, c, a2); b2 = madd(y, c, b2);
    c = v128.load(p3); a3 = madd(x, c, a3); b3 = madd(y, c, b3);
    pa += 16; pb += 16; p0 += 16; p1 += 16; p2 += 16; p3 += 16;
  }
  let sa = transposeSum(a0, a1, a2, a3);
  let sb = transposeSum(b0, b1, b2, b3);
  if (i < headDim) {
    sa = f32x4.add(sa, laneTails(qa, k0, k1, k2, k3, i, headDim));
    sb = f32x4.add(sb, laneTails(qb, k0, k1, k2, k3, i, headDim));
  }
  v128.store(outA, sa);
  v128.store(outB, sb);
}

/**
 * dot2x4F32 of four consecutive keys of 64 floats (k0, k0 + 256, …), the commonest head size: the key loads
 * share one running pointer with immediate offsets, so a step bumps three pointers where dot2x4F32 bumps six
 * (V8 spends an instruction on each), a few percent of a decode step (docs/PERFORMANCE.md). Per lane exactly
 * dot2x4F32's operations.
 */
// @ts-ignore: decorator
@inline export function dot2x4Dim64(qa: usize, qb: usize, k0: usize, outA: usize, outB: usize): void {
  let a0 = f32x4.splat(0);
  let a1 = a0, a2 = a0, a3 = a0, b0 = a0, b1 = a0, b2 = a0, b3 = a0;
  let pa = qa, pb = qb, pk = k0;
  const end = qa + 256;
  for (; pa < end; pa += 16) {
    const x = v128.load(pa), y = v128.load(pb);
    let c = v128.load(pk); a0 = madd(x, c, a0); b0 = madd(y, c, b0);
    c = v128.load(pk, 256); a1 = madd(x, c, a1); b1 = madd(y, c, b1);
    c = v128.load(pk, 512); a2 = madd(x, c, a2); b2 = madd(y, c, b2);
    c = v128.load(pk, 768); a3 = madd(x, c, a3); b3 = madd(y, c, b3);
    pb += 16; pk += 16;
  }
  v128.store(outA, transposeSum(a0, a1, a2, a3));
  v128.store(outB, transposeSum(b0, b1, b2, b3));
}

// ------------------------------------------------------------------------------------ one row, eight keys
// A query row alone (decode without grouped heads) against eight keys: eight independent accumulator
// chains keep both FMA pipes busy where dot4F32's four wait on each other's latency. Per lane the
// operations are exactly those of dot4F32.
//
// Register budget: V8 hoists a basic block's loads to its top, and eight accumulators, the query chunk and
// eight key chunks (17 v128) exceed the 15 xmm registers it allocates: it spilled an accumulator through
// the stack every iteration (--print-wasm-code). So the body is software-pipelined around the loop's exit
// test, which splits it into two blocks of 8 accumulators + query + 4 key loads (13 live) each: keys 4–7
// of step i, the test, then the query and keys 0–3 of step i + 4.

/** Stores dot4F32(q, k0 … k3) at out and dot4F32(q, k4 … k7) at out + 16; keys `stride` bytes apart from k0. */
// @ts-ignore: decorator
@inline export function dot8F32(q: usize, k0: usize, stride: usize, headDim: i32, out: usize): void {
  let a0 = f32x4.splat(0);
  let a1 = a0, a2 = a0, a3 = a0, a4 = a0, a5 = a0, a6 = a0, a7 = a0;
  const body = headDim & ~3;
  let i = 0;
  if (body > 0) {
    let pq = q, p0 = k0, p1 = k0 + stride, p2 = p1 + stride, p3 = p2 + stride;
    let p4 = p3 + stride, p5 = p4 + stride, p6 = p5 + stride, p7 = p6 + stride;
    let x = v128.load(pq);
    a0 = madd(x, v128.load(p0), a0); a1 = madd(x, v128.load(p1), a1);
    a2 = madd(x, v128.load(p2), a2); a3 = madd(x, v128.load(p3), a3);
    for (;;) {
      a4 = madd(x, v128.load(p4), a4); a5 = madd(x, v128.load(p5), a5);
      a6 = madd(x, v128.load(p6), a6); a7 = madd(x, v128.load(p7), a7);
      i += 4;
      if (i >= body) break;
      pq += 16; p0 += 16; p1 += 16; p2 += 16; p3 += 16; p4 += 16; p5 += 16; p6 += 16; p7 += 16;
      x = v128.load(pq);
      a0 = madd(x, v128.load(p0), a0); a1 = madd(x, v128.load(p1), a1);
      a2 = madd(x, v128.load(p2), a2); a3 = madd(x, v128.load(p3), a3);
    }
  }
  let lo = transposeSum(a0, a1, a2, a3);
  let hi = transposeSum(a4, a5, a6, a7);
  if (i < headDim) {
    lo = f32x4.add(lo, laneTails(q, k0, k0 + stride, k0 + 2 * stride, k0 + 3 * stride, i, headDim));
    const k4 = k0 + 4 * stride;
    hi = f32x4.add(hi, laneTails(q, k4, k4 + stride, k4 + 2 * stride, k4 + 3 * stride, i, headDim));
  }
  v128.store(out, lo);
  v128.store(out, hi, 16);
}
