// Numeric primitives shared by every loop: multiply-add, horizontal reductions and exp.
//
// One source serves three builds. `ASC_FEATURE_SIMD` and `ASC_FEATURE_RELAXED_SIMD` are compile-time
// constants, so the branch not taken is never compiled (the scalar build contains no v128 at all).

/** Lanes that hold no key (past the end of a block) carry this score and get exactly zero weight. */
export const MASKED: f32 = -Infinity;

// ---------------------------------------------------------------------------------------------------
// exp. WebAssembly has no exp instruction, so both builds use the same Cephes-style polynomial:
//   e^x = 2^n · e^r,  n = nearest(x·log2 e),  r = x − n·ln2 (Cody–Waite split, exact n·LN2_HI),
//   e^r ≈ 1 + r + r²·P(r) with the degree-5 minimax P of Cephes' expf,
// relative error below 2^-22 (≈ 2.4e-7) for x in [EXP_MIN, 0]; test/exp.test.ts measures it.
// Callers only ever pass x <= 0 (a score minus the running maximum). Below EXP_MIN the true value is
// under 2^-126 and we return exactly 0, which is also what −∞ (a masked score) must give.
// ---------------------------------------------------------------------------------------------------
export const EXP_MIN: f32 = -87.33654;
const LOG2E: f32 = 1.44269504088896341;
/** 1.5 · 2^23: adding it to |v| < 2^22 rounds v (half to even) to an integer held in the low mantissa bits. */
export const ROUNDING_MAGIC: f32 = 12582912.0;
const LN2_HI: f32 = 0.693359375;
const LN2_LO: f32 = -2.12194440e-4;
const P0: f32 = 1.9875691500e-4;
const P1: f32 = 1.3981999507e-3;
const P2: f32 = 8.3334519073e-3;
const P3: f32 = 4.1665795894e-2;
const P4: f32 = 1.6666665459e-1;
const P5: f32 = 5.0000001201e-1;

// @ts-ignore: decorator
@inline export function expScalar(x: f32): f32 {
  if (x < EXP_MIN) return 0;
  const n = nearest<f32>(x * LOG2E);
  const r = x - n * LN2_HI - n * LN2_LO;
  // P(r) by Estrin's scheme: three independent pairs, then two steps in r², where Horner's rule chained five
  // multiply-adds that a softmax pass waits on (docs/PERFORMANCE.md, "Kernel")
  const r2 = r * r;
  const a = P0 * r + P1, b = P2 * r + P3, c = P4 * r + P5;
  const p = (a * r2 + b) * r2 + c;
  const y = p * r2 + r + 1;
  // 2^n for n in [-126, 0]: build the float's exponent field directly.
  return y * reinterpret<f32>((<i32>n + 127) << 23);
}

// softcap · tanh(s / softcap). tanh of |t| >= 0.625 is (1 − e^−2|t|) / (1 + e^−2|t|), so exp only sees
// x <= 0 and 1 − e does not cancel (e <= 0.29). Below 0.625 that difference would cancel and cost
// cap · 2^-23 of absolute error in every score, so there we use Cephes tanhf's odd polynomial
// t + t³·P(t²), accurate to a few ulp relative: a loose cap then changes the scores as little as it should.
const TANH_SMALL: f32 = 0.625;
const T0: f32 = -5.70498872745e-3;
const T1: f32 = 2.06390887954e-2;
const T2: f32 = -5.37397155531e-2;
const T3: f32 = 1.33314422036e-1;
const T4: f32 = -3.33332819422e-1;

// @ts-ignore: decorator
@inline export function softcapScalar(s: f32, cap: f32): f32 {
  const t = s / cap;
  const a = abs<f32>(t);
  if (a < TANH_SMALL) {
    const z = t * t;
    let p = T0;
    p = p * z + T1;
    p = p * z + T2;
    p = p * z + T3;
    p = p * z + T4;
    return cap * (p * z * t + t);
  }
  const e = expScalar(-2 * a);
  return copysign<f32>(cap * ((1 - e) / (1 + e)), t);
}

// ---------------------------------------------------------------------------------------------------
// SIMD versions (compiled only into the simd and relaxed-simd builds).
// ---------------------------------------------------------------------------------------------------

/** a·b + c: fused on the relaxed-simd build (where the engine has FMA), mul then add otherwise. */
// @ts-ignore: decorator
@inline export function madd(a: v128, b: v128, c: v128): v128 {
  if (ASC_FEATURE_RELAXED_SIMD) {
    return f32x4.relaxed_madd(a, b, c);
  } else {
    return f32x4.add(f32x4.mul(a, b), c);
  }
}

/**
 * Lane i of the result is (x0 + x1) + (x2 + x3) of argument i: four dot-product partials reduced at once.
 * Every shuffle takes the even or the odd lanes of its two arguments (0, 2, 4, 6 / 1, 3, 5, 7), which x64
 * does in one shufps: V8 built the interleaving shuffles this replaced (0, 4, 2, 6 …) from three
 * instructions each. The sums are the same: ab = (a0 + a1, a2 + a3, b0 + b1, b2 + b3), then its pairs.
 */
// @ts-ignore: decorator
@inline export function transposeSum(a: v128, b: v128, c: v128, d: v128): v128 {
  const ab = f32x4.add(i32x4.shuffle(a, b, 0, 2, 4, 6), i32x4.shuffle(a, b, 1, 3, 5, 7));
  const cd = f32x4.add(i32x4.shuffle(c, d, 0, 2, 4, 6), i32x4.shuffle(c, d, 1, 3, 5, 7));
  return f32x4.add(i32x4.shuffle(ab, cd, 0, 2, 4, 6), i32x4.shuffle(ab, cd, 1, 3, 5, 7));
}

// @ts-ignore: decorator
@inline export function horizontalSum(v: v128): f32 {
  return (f32x4.extract_lane(v, 0) + f32x4.extract_lane(v, 1)) + (f32x4.extract_lane(v, 2) + f32x4.extract_lane(v, 3));
}

// @ts-ignore: decorator
@inline export function horizontalMax(v: v128): f32 {
  return max<f32>(max<f32>(f32x4.extract_lane(v, 0), f32x4.extract_lane(v, 1)), max<f32>(f32x4.extract_lane(v, 2), f32x4.extract_lane(v, 3)));
}

// The SIMD constants live in a table in static memory, splatted by one load each where they are used.
// Written as f32x4.splat(constant), every use became three instructions (V8 builds a v128 constant from
// an immediate, in the loop, on every iteration: --print-wasm-code); a splatting load is one, and a
// table binaryen cannot fold back into constants.
const SIMD_CONSTANTS = memory.data<f32>([
  EXP_MIN, LOG2E, ROUNDING_MAGIC, LN2_HI, LN2_LO, P0, P1, P2, P3, P4, P5, 1,
  T0, T1, T2, T3, T4, TANH_SMALL, -2, -0.0,
], 16);
// @ts-ignore: decorator
@inline function constant4(offset: usize): v128 {
  return v128.load32_splat(SIMD_CONSTANTS + offset);
}
const K_EXP_MIN: usize = 0, K_LOG2E: usize = 4, K_MAGIC: usize = 8, K_LN2_HI: usize = 12, K_LN2_LO: usize = 16;
const K_P0: usize = 20, K_P1: usize = 24, K_P2: usize = 28, K_P3: usize = 32, K_P4: usize = 36, K_P5: usize = 40;
const K_ONE: usize = 44, K_T0: usize = 48, K_T1: usize = 52, K_T2: usize = 56, K_T3: usize = 60, K_T4: usize = 64;
const K_TANH_SMALL: usize = 68, K_MINUS_TWO: usize = 72, K_SIGN: usize = 76;

/**
 * The same polynomial as expScalar, four lanes at once (NaN propagates; below EXP_MIN, −∞ included, gives 0).
 * Rounding uses the 1.5·2^23 "magic number": adding it leaves round(x·log2 e) in the low mantissa bits, and
 * shifting those bits into the exponent field builds 2^n, cheaper than nearest + trunc_sat + shift. The
 * result is identical to expScalar's (both round half to even). pmax maps to one instruction where max, with
 * wasm's NaN and signed-zero rules, takes several.
 */
// @ts-ignore: decorator
@inline export function exp4(x: v128): v128 {
  const underflow = f32x4.lt(x, constant4(K_EXP_MIN));
  const xc = f32x4.pmax(x, constant4(K_EXP_MIN));
  const magic = constant4(K_MAGIC);
  const shifted = f32x4.add(f32x4.mul(xc, constant4(K_LOG2E)), magic);
  const n = f32x4.sub(shifted, magic);
  const r = f32x4.sub(f32x4.sub(xc, f32x4.mul(n, constant4(K_LN2_HI))), f32x4.mul(n, constant4(K_LN2_LO)));
  const r2 = f32x4.mul(r, r);
  const a = madd(constant4(K_P0), r, constant4(K_P1));
  const b = madd(constant4(K_P2), r, constant4(K_P3));
  const c = madd(constant4(K_P4), r, constant4(K_P5));
  const p = madd(madd(a, r2, b), r2, c);
  const one = constant4(K_ONE);
  const y = f32x4.add(madd(p, r2, r), one);
  // low bits of `shifted` hold n (two's complement); << 23 moves them into the exponent, + bits(1.0f) = 127 << 23 biases it
  const pow2n = i32x4.add(i32x4.shl(shifted, 23), one);
  return v128.andnot(f32x4.mul(y, pow2n), underflow);
}

// @ts-ignore: decorator
@inline export function softcap4(s: v128, cap: f32): v128 {
  const t = f32x4.div(s, f32x4.splat(cap));
  const a = f32x4.abs(t);
  const one = constant4(K_ONE);
  // large |t|: (1 − e) / (1 + e) with the sign of t
  const e = exp4(f32x4.mul(a, constant4(K_MINUS_TWO)));
  const large = v128.or(f32x4.div(f32x4.sub(one, e), f32x4.add(one, e)), v128.and(t, constant4(K_SIGN)));
  // small |t|: t + t³·P(t²)
  const z = f32x4.mul(t, t);
  let p = constant4(K_T0);
  p = madd(p, z, constant4(K_T1));
  p = madd(p, z, constant4(K_T2));
  p = madd(p, z, constant4(K_T3));
  p = madd(p, z, constant4(K_T4));
  const small = madd(f32x4.mul(p, z), t, t);
  return f32x4.mul(f32x4.splat(cap), v128.bitselect(small, large, f32x4.lt(a, constant4(K_TANH_SMALL))));
}
