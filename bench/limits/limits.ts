// The machine's own limits, measured in WebAssembly by the benchmark (bench/limits/limits.mjs):
//   streamSum    streaming read bandwidth: an f32x4 sum over a buffer with 8 independent accumulators;
//   peakMulAdd   peak f32x4 multiply-add throughput: CHAINS independent chains of acc = acc * a + b
//                (an f32x4.mul then an f32x4.add, 8 flops per chain step);
//   peakMadd     the same with f32x4.relaxed_madd (one fused instruction, 8 flops), relaxed build only.
// Compiled twice by asc (--enable simd, and --enable simd,relaxed-simd with RELAXED defined through the
// feature flag). Buffers live in linear memory the caller grows; nothing here allocates.


/** Sum of `bytes` bytes of f32 at `ptr` (bytes a multiple of 128), `reps` times over. */
export function streamSum(ptr: usize, bytes: usize, reps: i32): f32 {
  let total = f32x4.splat(0);
  for (let r = 0; r < reps; r++) {
    let a0 = f32x4.splat(0), a1 = f32x4.splat(0), a2 = f32x4.splat(0), a3 = f32x4.splat(0);
    let a4 = f32x4.splat(0), a5 = f32x4.splat(0), a6 = f32x4.splat(0), a7 = f32x4.splat(0);
    const end = ptr + bytes;
    for (let p = ptr; p < end; p += 128) {
      a0 = f32x4.add(a0, v128.load(p, 0));
      a1 = f32x4.add(a1, v128.load(p, 16));
      a2 = f32x4.add(a2, v128.load(p, 32));
      a3 = f32x4.add(a3, v128.load(p, 48));
      a4 = f32x4.add(a4, v128.load(p, 64));
      a5 = f32x4.add(a5, v128.load(p, 80));
      a6 = f32x4.add(a6, v128.load(p, 96));
      a7 = f32x4.add(a7, v128.load(p, 112));
    }
    total = f32x4.add(total, f32x4.add(f32x4.add(f32x4.add(a0, a1), f32x4.add(a2, a3)), f32x4.add(f32x4.add(a4, a5), f32x4.add(a6, a7))));
  }
  return f32x4.extract_lane(total, 0) + f32x4.extract_lane(total, 1) + f32x4.extract_lane(total, 2) + f32x4.extract_lane(total, 3);
}

/** `iters` steps of 12 independent chains acc = acc * a + b: 12 · 8 flops per step. */
export function peakMulAdd(iters: i32, x: f32): f32 {
  const a = f32x4.splat(x);
  const b = f32x4.splat(1e-7);
  let c0 = f32x4.splat(0.1), c1 = f32x4.splat(0.2), c2 = f32x4.splat(0.3), c3 = f32x4.splat(0.4);
  let c4 = f32x4.splat(0.5), c5 = f32x4.splat(0.6), c6 = f32x4.splat(0.7), c7 = f32x4.splat(0.8);
  let c8 = f32x4.splat(0.9), c9 = f32x4.splat(1.0), c10 = f32x4.splat(1.1), c11 = f32x4.splat(1.2);
  for (let i = 0; i < iters; i++) {
    c0 = f32x4.add(f32x4.mul(c0, a), b); c1 = f32x4.add(f32x4.mul(c1, a), b);
    c2 = f32x4.add(f32x4.mul(c2, a), b); c3 = f32x4.add(f32x4.mul(c3, a), b);
    c4 = f32x4.add(f32x4.mul(c4, a), b); c5 = f32x4.add(f32x4.mul(c5, a), b);
    c6 = f32x4.add(f32x4.mul(c6, a), b); c7 = f32x4.add(f32x4.mul(c7, a), b);
    c8 = f32x4.add(f32x4.mul(c8, a), b); c9 = f32x4.add(f32x4.mul(c9, a), b);
    c10 = f32x4.add(f32x4.mul(c10, a), b); c11 = f32x4.add(f32x4.mul(c11, a), b);
  }
  const s = f32x4.add(f32x4.add(f32x4.add(f32x4.add(c0, c1), f32x4.add(c2, c3)), f32x4.add(f32x4.add(c4, c5), f32x4.add(c6, c7))),
    f32x4.add(f32x4.add(c8, c9), f32x4.add(c10, c11)));
  return f32x4.extract_lane(s, 0) + f32x4.extract_lane(s, 3);
}

/** The same as peakMulAdd with 12 relaxed_madd chains (one fused op, 8 flops each); 0 without relaxed SIMD. */
export function peakMadd(iters: i32, x: f32): f32 {
  if (!ASC_FEATURE_RELAXED_SIMD) return 0;
  const a = f32x4.splat(x);
  const b = f32x4.splat(1e-7);
  let c0 = f32x4.splat(0.1), c1 = f32x4.splat(0.2), c2 = f32x4.splat(0.3), c3 = f32x4.splat(0.4);
  let c4 = f32x4.splat(0.5), c5 = f32x4.splat(0.6), c6 = f32x4.splat(0.7), c7 = f32x4.splat(0.8);
  let c8 = f32x4.splat(0.9), c9 = f32x4.splat(1.0), c10 = f32x4.splat(1.1), c11 = f32x4.splat(1.2);
  for (let i = 0; i < iters; i++) {
    c0 = f32x4.relaxed_madd(c0, a, b); c1 = f32x4.relaxed_madd(c1, a, b);
    c2 = f32x4.relaxed_madd(c2, a, b); c3 = f32x4.relaxed_madd(c3, a, b);
    c4 = f32x4.relaxed_madd(c4, a, b); c5 = f32x4.relaxed_madd(c5, a, b);
    c6 = f32x4.relaxed_madd(c6, a, b); c7 = f32x4.relaxed_madd(c7, a, b);
    c8 = f32x4.relaxed_madd(c8, a, b); c9 = f32x4.relaxed_madd(c9, a, b);
    c10 = f32x4.relaxed_madd(c10, a, b); c11 = f32x4.relaxed_madd(c11, a, b);
  }
  const s = f32x4.add(f32x4.add(f32x4.add(f32x4.add(c0, c1), f32x4.add(c2, c3)), f32x4.add(f32x4.add(c4, c5), f32x4.add(c6, c7))),
    f32x4.add(f32x4.add(c8, c9), f32x4.add(c10, c11)));
  return f32x4.extract_lane(s, 0) + f32x4.extract_lane(s, 3);
}
