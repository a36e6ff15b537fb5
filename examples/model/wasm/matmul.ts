// The model runner's linear layer in WebAssembly SIMD: y[t][o] = Σ_i x[t][i]·W[o][i] (+ bias[o]), the
// same bits as math.mjs's `linear`. Each output is one float64 sum in index order of exact float32×float32
// products, then rounded to float32 once; the two lanes of an f64x2 are two outputs (rows 2p and 2p+1),
// each lane summing on its own, so no lane ever adds across i out of order; nothing is fused but in the
// relaxed-SIMD build's multiply-adds, where fusing changes no bit (madd).
//
// Memory (imported, so the JavaScript side can give it a maximum) is laid out by the JavaScript side
// (examples/model/matmul.mjs); all pointers are byte offsets:
//   w     rows in pairs: pair p holds, for each i, W[2p][i] then W[2p+1][i] (f32; an odd last row is
//         paired with zeros), so one 8-byte load widens to the f64x2 of two outputs' weights at i
//   x     [T][n] f32 inputs; xd: [T][n] f64 scratch, where they are widened once per call
//   y     [T][m] f32 outputs; bias: [m] f32, or 0 for none

/** y = x Wᵀ (+ bias) for T tokens of n inputs and m outputs. */
export function linear(x: usize, T: i32, w: usize, n: i32, m: i32, bias: usize, y: usize, xd: usize): void {
  widen(x, T * n, xd);
  product(xd, T, w, n, m, bias, y);
}

/**
 * A SwiGLU MLP of T tokens, the same bits as the calls it replaces (linear, linear, swiglu, linear):
 * y = down(silu(gate(x)) · up(x)) (+ the biases). x: [T][n] f32; wg, wu: hidden × n, wd: n × hidden, in
 * pairs of rows; g, u: [T][hidden] f32 scratch; xd: [T][max(n, hidden)] f64 scratch; y: [T][n] f32.
 * One call instead of four, with the gate and up values staying in this memory.
 */
export function mlp(
  x: usize,
  T: i32,
  wg: usize,
  wu: usize,
  wd: usize,
  n: i32,
  hidden: i32,
  bg: usize,
  bu: usize,
  bd: usize,
  y: usize,
  xd: usize,
  g: usize,
  u: usize,
): void {
  widen(x, T * n, xd);
  product(xd, T, wg, n, hidden, bg, g);
  product(xd, T, wu, n, hidden, bu, u);
  swiglu(g, u, T * hidden);
  widen(g, T * hidden, xd);
  product(xd, T, wd, hidden, n, bd, y);
}

/** xd[i] = x[i] as float64, for `count` numbers. */
function widen(x: usize, count: i32, xd: usize): void {
  for (let i: usize = 0; i < <usize>count; i++) store<f64>(xd + (i << 3), <f64>load<f32>(x + (i << 2)));
}

/** y = x Wᵀ (+ bias) from inputs already widened (xd: [T][n] f64). */
function product(xd: usize, T: i32, w: usize, n: i32, m: i32, bias: usize, y: usize): void {
  const pairs = (m + 1) >> 1;
  const pairBytes = <usize>n << 3; // a pair of weight rows: n f32 pairs
  const tokenBytes = <usize>n << 3; // a token's widened inputs: n f64
  // several tokens: four at a time, each pair of weight rows read once for all of them (pairs outermost,
  // so a pair's rows stay in cache over the token blocks); the rest by three or two, never one alone
  // (five ends in three and two), since a lone token reads every weight for two products only
  const rest = T & 3;
  const fours = T >= 5 && rest === 1 ? T - 5 : T - rest;
  const left = T - fours; // 0, 1 (T = 1), 2, 3 or 5
  const threes = left === 3 || left === 5 ? 3 : 0;
  let p = 0;
  for (; p + 2 <= pairs; p += 2) {
    const wp = w + <usize>p * pairBytes;
    for (let t = 0; t < fours; t += 4) {
      pairs2Tokens4(wp, pairBytes, xd + <usize>t * tokenBytes, tokenBytes, n, y, m, t, p << 1, bias);
    }
    if (threes) {
      pairs2Tokens3(wp, pairBytes, xd + <usize>fours * tokenBytes, tokenBytes, n, y, m, fours, p << 1, bias);
    }
  }
  // a last odd pair: token by token
  for (; p < pairs; p++) {
    const wp = w + <usize>p * pairBytes;
    for (let t = 0; t < fours + threes; t++) pairs1Token1(wp, xd + <usize>t * tokenBytes, n, y, m, t, p << 1, bias);
  }
  const twos = left - threes === 2 ? fours + threes : -1;
  if (twos >= 0) {
    const xt = xd + <usize>twos * tokenBytes;
    p = 0;
    for (; p + 4 <= pairs; p += 4) {
      pairs4Tokens2(w + <usize>p * pairBytes, pairBytes, xt, tokenBytes, n, y, m, twos, p << 1, bias);
    }
    for (; p < pairs; p++) {
      pairs1Token1(w + <usize>p * pairBytes, xt, n, y, m, twos, p << 1, bias);
      pairs1Token1(w + <usize>p * pairBytes, xt + tokenBytes, n, y, m, twos + 1, p << 1, bias);
    }
  }
  // a decode step: eight pairs of rows at a time
  if (T === 1) {
    p = 0;
    for (; p + 8 <= pairs; p += 8) pairs8Token1(w + <usize>p * pairBytes, pairBytes, xd, n, y, m, 0, p << 1, bias);
    for (; p < pairs; p++) pairs1Token1(w + <usize>p * pairBytes, xd, n, y, m, 0, p << 1, bias);
  }
}

/** Rounds the sums of outputs o and o+1 of token t (lane 0, lane 1) to float32, with the bias added. */
// @ts-ignore: decorator
@inline
function put(s: v128, y: usize, m: i32, t: i32, o: i32, bias: usize): void {
  const at = y + ((<usize>(t * m + o)) << 2);
  const b0: f64 = bias ? <f64>load<f32>(bias + (<usize>o << 2)) : 0.0;
  store<f32>(at, <f32>(f64x2.extract_lane(s, 0) + b0));
  if (o + 1 < m) {
    const b1: f64 = bias ? <f64>load<f32>(bias + (<usize>(o + 1) << 2)) : 0.0;
    store<f32>(at + 4, <f32>(f64x2.extract_lane(s, 1) + b1));
  }
}

/**
 * s + a·b in each lane. With relaxed SIMD (the matmul-relaxed.wasm build) a fused multiply-add where the
 * machine has one: the same bits as the separate multiply and add, since a product of two float32 numbers
 * is exact in float64 (48 significant bits, and no float32 product leaves float64's range), so fusing skips
 * no rounding; and one instruction for two (a verification pass is bound by them).
 */
// @ts-ignore: decorator
@inline
function madd(s: v128, a: v128, b: v128): v128 {
  if (ASC_FEATURE_RELAXED_SIMD) return f64x2.relaxed_madd(a, b, s);
  return f64x2.add(s, f64x2.mul(a, b));
}

/** The f64x2 of a pair's weights at input i. */
// @ts-ignore: decorator
@inline
function weights(pair: usize, i: usize): v128 {
  return f64x2.promote_low_f32x4(v128.load64_zero(pair + (i << 3)));
}

/** x[i] of one token, in both lanes (one load that splats: no shuffle on the arithmetic's ports). */
// @ts-ignore: decorator
@inline
function input(xt: usize, i: usize): v128 {
  return v128.load64_splat(xt + (i << 3));
}

function pairs8Token1(w: usize, pb: usize, xt: usize, n: i32, y: usize, m: i32, t: i32, o: i32, bias: usize): void {
  let s0 = f64x2.splat(0);
  let s1 = f64x2.splat(0);
  let s2 = f64x2.splat(0);
  let s3 = f64x2.splat(0);
  let s4 = f64x2.splat(0);
  let s5 = f64x2.splat(0);
  let s6 = f64x2.splat(0);
  let s7 = f64x2.splat(0);
  const w1 = w + pb;
  const w2 = w1 + pb;
  const w3 = w2 + pb;
  const w4 = w3 + pb;
  const w5 = w4 + pb;
  const w6 = w5 + pb;
  const w7 = w6 + pb;
  for (let i: usize = 0; i < <usize>n; i++) {
    const a = input(xt, i);
    s0 = madd(s0, weights(w, i), a);
    s1 = madd(s1, weights(w1, i), a);
    s2 = madd(s2, weights(w2, i), a);
    s3 = madd(s3, weights(w3, i), a);
    s4 = madd(s4, weights(w4, i), a);
    s5 = madd(s5, weights(w5, i), a);
    s6 = madd(s6, weights(w6, i), a);
    s7 = madd(s7, weights(w7, i), a);
  }
  put(s0, y, m, t, o, bias);
  put(s1, y, m, t, o + 2, bias);
  put(s2, y, m, t, o + 4, bias);
  put(s3, y, m, t, o + 6, bias);
  put(s4, y, m, t, o + 8, bias);
  put(s5, y, m, t, o + 10, bias);
  put(s6, y, m, t, o + 12, bias);
  put(s7, y, m, t, o + 14, bias);
}

function pairs1Token1(w: usize, xt: usize, n: i32, y: usize, m: i32, t: i32, o: i32, bias: usize): void {
  let s = f64x2.splat(0);
  for (let i: usize = 0; i < <usize>n; i++) s = madd(s, weights(w, i), input(xt, i));
  put(s, y, m, t, o, bias);
}

function pairs2Tokens4(
  w: usize,
  pb: usize,
  xt: usize,
  tb: usize,
  n: i32,
  y: usize,
  m: i32,
  t: i32,
  o: i32,
  bias: usize,
): void {
  let a0 = f64x2.splat(0);
  let a1 = f64x2.splat(0);
  let b0 = f64x2.splat(0);
  let b1 = f64x2.splat(0);
  let c0 = f64x2.splat(0);
  let c1 = f64x2.splat(0);
  let d0 = f64x2.splat(0);
  let d1 = f64x2.splat(0);
  const w1 = w + pb;
  const xb = xt + tb;
  const xc = xb + tb;
  const xe = xc + tb;
  for (let i: usize = 0; i < <usize>n; i++) {
    const u0 = weights(w, i);
    const u1 = weights(w1, i);
    const p = input(xt, i);
    a0 = madd(a0, u0, p);
    a1 = madd(a1, u1, p);
    const q = input(xb, i);
    b0 = madd(b0, u0, q);
    b1 = madd(b1, u1, q);
    const r = input(xc, i);
    c0 = madd(c0, u0, r);
    c1 = madd(c1, u1, r);
    const s = input(xe, i);
    d0 = madd(d0, u0, s);
    d1 = madd(d1, u1, s);
  }
  put(a0, y, m, t, o, bias);
  put(a1, y, m, t, o + 2, bias);
  put(b0, y, m, t + 1, o, bias);
  put(b1, y, m, t + 1, o + 2, bias);
  put(c0, y, m, t + 2, o, bias);
  put(c1, y, m, t + 2, o + 2, bias);
  put(d0, y, m, t + 3, o, bias);
  put(d1, y, m, t + 3, o + 2, bias);
}

function pairs2Tokens3(
  w: usize,
  pb: usize,
  xt: usize,
  tb: usize,
  n: i32,
  y: usize,
  m: i32,
  t: i32,
  o: i32,
  bias: usize,
): void {
  let a0 = f64x2.splat(0);
  let a1 = f64x2.splat(0);
  let b0 = f64x2.splat(0);
  let b1 = f64x2.splat(0);
  let c0 = f64x2.splat(0);
  let c1 = f64x2.splat(0);
  const w1 = w + pb;
  const xb = xt + tb;
  const xc = xb + tb;
  for (let i: usize = 0; i < <usize>n; i++) {
    const u0 = weights(w, i);
    const u1 = weights(w1, i);
    const p = input(xt, i);
    a0 = madd(a0, u0, p);
    a1 = madd(a1, u1, p);
    const q = input(xb, i);
    b0 = madd(b0, u0, q);
    b1 = madd(b1, u1, q);
    const r = input(xc, i);
    c0 = madd(c0, u0, r);
    c1 = madd(c1, u1, r);
  }
  put(a0, y, m, t, o, bias);
  put(a1, y, m, t, o + 2, bias);
  put(b0, y, m, t + 1, o, bias);
  put(b1, y, m, t + 1, o + 2, bias);
  put(c0, y, m, t + 2, o, bias);
  put(c1, y, m, t + 2, o + 2, bias);
}

function pairs4Tokens2(
  w: usize,
  pb: usize,
  xt: usize,
  tb: usize,
  n: i32,
  y: usize,
  m: i32,
  t: i32,
  o: i32,
  bias: usize,
): void {
  let a0 = f64x2.splat(0);
  let a1 = f64x2.splat(0);
  let a2 = f64x2.splat(0);
  let a3 = f64x2.splat(0);
  let b0 = f64x2.splat(0);
  let b1 = f64x2.splat(0);
  let b2 = f64x2.splat(0);
  let b3 = f64x2.splat(0);
  const w1 = w + pb;
  const w2 = w1 + pb;
  const w3 = w2 + pb;
  const xb = xt + tb;
  for (let i: usize = 0; i < <usize>n; i++) {
    const p = input(xt, i);
    const q = input(xb, i);
    const u0 = weights(w, i);
    a0 = madd(a0, u0, p);
    b0 = madd(b0, u0, q);
    const u1 = weights(w1, i);
    a1 = madd(a1, u1, p);
    b1 = madd(b1, u1, q);
    const u2 = weights(w2, i);
    a2 = madd(a2, u2, p);
    b2 = madd(b2, u2, q);
    const u3 = weights(w3, i);
    a3 = madd(a3, u3, p);
    b3 = madd(b3, u3, q);
  }
  put(a0, y, m, t, o, bias);
  put(a1, y, m, t, o + 2, bias);
  put(a2, y, m, t, o + 4, bias);
  put(a3, y, m, t, o + 6, bias);
  put(b0, y, m, t + 1, o, bias);
  put(b1, y, m, t + 1, o + 2, bias);
  put(b2, y, m, t + 1, o + 4, bias);
  put(b3, y, m, t + 1, o + 6, bias);
}

// SwiGLU: g[i] = silu(g[i]) · u[i] = g / (1 + e^−g) · u in float64, rounded to float32 once; the exp is
// math.mjs's `exp`, operation for operation (a range reduction by ln 2, a degree-12 polynomial, a scaling
// by two exact powers of two), so JavaScript gives the same bits. Only basic operations, each rounded as
// IEEE 754 says, and nothing fused: every engine computes the same numbers.
const EXP_LO: f64 = -746; // e^z is 0 in float64 below about -745.13, and the sigmoid's 1 + e^z is 1 far earlier
const EXP_HI: f64 = 710; // and +Infinity above about 709.78
const LOG2E: f64 = 1.4426950408889634;
const LN2_HI: f64 = 0.6931471803691238; // ln 2's first 32 bits: k · LN2_HI is exact for |k| < 2^21
const LN2_LO: f64 = 1.9082149292705877e-10;
const ROUND: f64 = 6755399441055744; // 1.5 · 2^52: adding it rounds to an integer, kept in the low bits
const C2: f64 = 0.5;
const C3: f64 = 0.16666666666666666;
const C4: f64 = 0.041666666666666664;
const C5: f64 = 0.008333333333333333;
const C6: f64 = 0.001388888888888889;
const C7: f64 = 0.0001984126984126984;
const C8: f64 = 0.0000248015873015873;
const C9: f64 = 0.0000027557319223985893;
const C10: f64 = 2.755731922398589e-7;
const C11: f64 = 2.505210838544172e-8;
const C12: f64 = 2.08767569878681e-9;

/** e^x of n float64 numbers at x, in place, two at a time and an odd last one alone: for tests. */
export function exp(x: usize, n: i32): void {
  let i: usize = 0;
  for (; i + 2 <= <usize>n; i += 2) v128.store(x + (i << 3), exp2Lanes(v128.load(x + (i << 3))));
  if (i < <usize>n) store<f64>(x + (i << 3), expScalar(load<f64>(x + (i << 3))));
}

/** gate = silu(gate) · up over n float32 numbers, two at a time. */
function swiglu(g: usize, u: usize, n: i32): void {
  let i: usize = 0;
  const pairs = <usize>(n & ~1);
  for (; i < pairs; i += 2) {
    const at = i << 2;
    const x = f64x2.promote_low_f32x4(v128.load64_zero(g + at));
    const up = f64x2.promote_low_f32x4(v128.load64_zero(u + at));
    const e = exp2Lanes(f64x2.neg(x));
    const s = f64x2.mul(f64x2.div(x, f64x2.add(f64x2.splat(1), e)), up);
    v128.store64_lane(g + at, f32x4.demote_f64x2_zero(s), 0);
  }
  for (; i < <usize>n; i++) {
    const at = i << 2;
    const x = <f64>load<f32>(g + at);
    store<f32>(g + at, <f32>((x / (1 + expScalar(-x))) * <f64>load<f32>(u + at)));
  }
}

/** e^z in each lane (math.mjs's `exp`). */
// @ts-ignore: decorator
@inline
function exp2Lanes(z: v128): v128 {
  const c = f64x2.max(f64x2.min(z, f64x2.splat(EXP_HI)), f64x2.splat(EXP_LO));
  const t = f64x2.add(f64x2.mul(c, f64x2.splat(LOG2E)), f64x2.splat(ROUND));
  const kf = f64x2.sub(t, f64x2.splat(ROUND));
  const r = f64x2.sub(f64x2.sub(c, f64x2.mul(kf, f64x2.splat(LN2_HI))), f64x2.mul(kf, f64x2.splat(LN2_LO)));
  let p = f64x2.splat(C12);
  p = f64x2.add(f64x2.mul(p, r), f64x2.splat(C11));
  p = f64x2.add(f64x2.mul(p, r), f64x2.splat(C10));
  p = f64x2.add(f64x2.mul(p, r), f64x2.splat(C9));
  p = f64x2.add(f64x2.mul(p, r), f64x2.splat(C8));
  p = f64x2.add(f64x2.mul(p, r), f64x2.splat(C7));
  p = f64x2.add(f64x2.mul(p, r), f64x2.splat(C6));
  p = f64x2.add(f64x2.mul(p, r), f64x2.splat(C5));
  p = f64x2.add(f64x2.mul(p, r), f64x2.splat(C4));
  p = f64x2.add(f64x2.mul(p, r), f64x2.splat(C3));
  p = f64x2.add(f64x2.mul(p, r), f64x2.splat(C2));
  p = f64x2.add(f64x2.mul(p, r), f64x2.splat(1));
  p = f64x2.add(f64x2.mul(p, r), f64x2.splat(1));
  // k sits in t's low bits (t − ROUND is exact): 2^k as 2^k1 · 2^k2, each a normal number
  const k = i64x2.sub(t, f64x2.splat(ROUND));
  const k1 = i64x2.shr_s(k, 1);
  const k2 = i64x2.sub(k, k1);
  const bias = i64x2.splat(1023);
  return f64x2.mul(f64x2.mul(p, i64x2.shl(i64x2.add(k1, bias), 52)), i64x2.shl(i64x2.add(k2, bias), 52));
}

/** The same, one number. */
function expScalar(z: f64): f64 {
  const c = max(min(z, EXP_HI), EXP_LO);
  const t = c * LOG2E + ROUND;
  const kf = t - ROUND;
  const r = c - kf * LN2_HI - kf * LN2_LO;
  let p = C12;
  p = p * r + C11;
  p = p * r + C10;
  p = p * r + C9;
  p = p * r + C8;
  p = p * r + C7;
  p = p * r + C6;
  p = p * r + C5;
  p = p * r + C4;
  p = p * r + C3;
  p = p * r + C2;
  p = p * r + 1;
  p = p * r + 1;
  const k = reinterpret<i64>(t) - reinterpret<i64>(ROUND);
  const k1 = k >> 1;
  const k2 = k - k1;
  return p * reinterpret<f64>((k1 + 1023) << 52) * reinterpret<f64>((k2 + 1023) << 52);
}
