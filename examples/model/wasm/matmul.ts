// The model runner's linear layer in WebAssembly SIMD: y[t][o] = Σ_i x[t][i]·W[o][i] (+ bias[o]), the
// same bits as math.mjs's `linear`. Each output is summed in float32 in four lanes, lane j taking the
// products of the inputs i ≡ j (mod 4) in index order, each product and each sum rounded to float32 and
// none fused; then the lanes are combined as (l0 + l1) + (l2 + l3), then the bias is added. An f32x4 of
// one row's four consecutive weights times the token's four inputs is exactly one step of the four lanes,
// so the order is the same whatever the number of tokens and however they are blocked.
//
// Memory (imported, so the JavaScript side can give it a maximum) is laid out by the JavaScript side
// (examples/model/matmul.mjs); all pointers are byte offsets:
//   w     rows in groups of four, interleaved by fours of inputs: group g holds, for each quad q of
//         inputs, W[4g][4q … 4q+3], W[4g+1][…], W[4g+2][…], W[4g+3][…] (64 bytes), so one pointer and
//         constant offsets reach a group's four rows; inputs are padded with zeros to n4 (n rounded up to
//         a multiple of 4), and a last group of fewer than four rows with rows of zeros
//   x     [T][n] f32 inputs; xp: [T][n4] f32 scratch, where they are copied with zero padding when n is
//         not a multiple of 4 (a padding product is 0·0 = +0, and a lane, starting at +0, is never −0, so
//         adding it changes no bit: the JavaScript side, which has no padding, gives the same sums)
//   y     [T][m] f32 outputs; bias: [m] f32 (read in fours: its block is padded to 16 bytes), or 0

/** y = x Wᵀ (+ bias) for T tokens of n inputs and m outputs. */
export function linear(x: usize, T: i32, w: usize, n: i32, m: i32, bias: usize, y: usize, xp: usize): void {
  product(padded(x, T, n, xp), T, w, n, m, bias, y);
}

/**
 * A SwiGLU MLP of T tokens, the same bits as the calls it replaces (linear, linear, swiglu, linear):
 * y = down(silu(gate(x)) · up(x)) (+ the biases). x: [T][n] f32; wg, wu: hidden × n, wd: n × hidden, as
 * `linear` lays them out; g, u: [T][hidden] f32 scratch; xp: [T][max(n, hidden) rounded up to a multiple
 * of 4] f32 scratch; y: [T][n] f32. One call instead of four, with the gate and up values staying here.
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
  xp: usize,
  g: usize,
  u: usize,
): void {
  const xq = padded(x, T, n, xp);
  product(xq, T, wg, n, hidden, bg, g);
  product(xq, T, wu, n, hidden, bu, u);
  swiglu(g, u, T * hidden);
  product(padded(g, T, hidden, xp), T, wd, hidden, n, bd, y);
}

/** x itself where n is a multiple of 4, else its rows copied to xp with zeros up to a multiple of 4. */
function padded(x: usize, T: i32, n: i32, xp: usize): usize {
  if ((n & 3) === 0) return x;
  const n4 = <usize>((n + 3) & ~3);
  for (let t: usize = 0; t < <usize>T; t++) {
    const from = x + t * (<usize>n << 2);
    const to = xp + t * (n4 << 2);
    for (let i: usize = 0; i < <usize>n; i++) store<f32>(to + (i << 2), load<f32>(from + (i << 2)));
    for (let i = <usize>n; i < n4; i++) store<f32>(to + (i << 2), 0);
  }
  return xp;
}

/** y = x Wᵀ (+ bias) from inputs already padded (x: [T][n4] f32). */
function product(x: usize, T: i32, w: usize, n: i32, m: i32, bias: usize, y: usize): void {
  const rowBytes = <usize>((n + 3) & ~3) << 2; // a token's inputs, and a row's weights
  const groupBytes = rowBytes << 2; // four rows
  const groups = (m + 3) >> 2;
  let g = 0;
  if (T === 1) {
    // a decode step: two groups at a time, eight sums in flight
    for (; g + 2 <= groups; g += 2) groups2Token1(w + <usize>g * groupBytes, groupBytes, x, rowBytes, y, m, g << 2, bias);
    if (g < groups) group1Tokens1(w + <usize>g * groupBytes, x, rowBytes, y, m, 0, g << 2, bias);
    return;
  }
  // several tokens: a group of rows outermost, so its weights stay in cache over the tokens, read once for
  // two tokens at a time (and for three where T is odd, never one alone)
  const three = T & 1 ? 3 : 0;
  for (; g < groups; g++) {
    const wg = w + <usize>g * groupBytes;
    if (three) group1Tokens3(wg, x, rowBytes, y, m, 0, g << 2, bias);
    for (let t = three; t < T; t += 2) group1Tokens2(wg, x + <usize>t * rowBytes, rowBytes, y, m, t, g << 2, bias);
  }
}

/**
 * Outputs o … o+3 of token t from their four lane sums a, b, c, d: (l0 + l1) + (l2 + l3) in each, the
 * bias added, stored as one f32x4 (only those below m, in a last group of fewer rows).
 */
// @ts-ignore: decorator
@inline
function put4(a: v128, b: v128, c: v128, d: v128, y: usize, m: i32, t: i32, o: i32, bias: usize): void {
  // [a0+a1, b0+b1, a2+a3, b2+b3] and the same of c, d; then the halves' sums
  const ab = f32x4.add(f32x4.shuffle(a, b, 0, 4, 2, 6), f32x4.shuffle(a, b, 1, 5, 3, 7));
  const cd = f32x4.add(f32x4.shuffle(c, d, 0, 4, 2, 6), f32x4.shuffle(c, d, 1, 5, 3, 7));
  let s = f32x4.add(f32x4.shuffle(ab, cd, 0, 1, 4, 5), f32x4.shuffle(ab, cd, 2, 3, 6, 7));
  if (bias) s = f32x4.add(s, v128.load(bias + (<usize>o << 2)));
  const at = y + (<usize>(t * m + o) << 2);
  if (o + 4 <= m) {
    v128.store(at, s);
    return;
  }
  store<f32>(at, f32x4.extract_lane(s, 0));
  if (o + 1 < m) store<f32>(at + 4, f32x4.extract_lane(s, 1));
  if (o + 2 < m) store<f32>(at + 8, f32x4.extract_lane(s, 2));
}

/** s + a·b in each lane, rounded twice: never fused (a fused multiply-add would skip the product's rounding). */
// @ts-ignore: decorator
@inline
function mad(s: v128, a: v128, b: v128): v128 {
  return f32x4.add(s, f32x4.mul(a, b));
}

function groups2Token1(w: usize, gb: usize, xt: usize, rb: usize, y: usize, m: i32, o: i32, bias: usize): void {
  let s0 = f32x4.splat(0);
  let s1 = f32x4.splat(0);
  let s2 = f32x4.splat(0);
  let s3 = f32x4.splat(0);
  let s4 = f32x4.splat(0);
  let s5 = f32x4.splat(0);
  let s6 = f32x4.splat(0);
  let s7 = f32x4.splat(0);
  const end = xt + rb;
  let v = w + gb;
  for (let u = w, xq = xt; xq < end; u += 64, v += 64, xq += 16) {
    const a = v128.load(xq);
    s0 = mad(s0, v128.load(u), a);
    s1 = mad(s1, v128.load(u, 16), a);
    s2 = mad(s2, v128.load(u, 32), a);
    s3 = mad(s3, v128.load(u, 48), a);
    s4 = mad(s4, v128.load(v), a);
    s5 = mad(s5, v128.load(v, 16), a);
    s6 = mad(s6, v128.load(v, 32), a);
    s7 = mad(s7, v128.load(v, 48), a);
  }
  put4(s0, s1, s2, s3, y, m, 0, o, bias);
  put4(s4, s5, s6, s7, y, m, 0, o + 4, bias);
}

function group1Tokens1(w: usize, xt: usize, rb: usize, y: usize, m: i32, t: i32, o: i32, bias: usize): void {
  let s0 = f32x4.splat(0);
  let s1 = f32x4.splat(0);
  let s2 = f32x4.splat(0);
  let s3 = f32x4.splat(0);
  const end = xt + rb;
  for (let u = w, xq = xt; xq < end; u += 64, xq += 16) {
    const a = v128.load(xq);
    s0 = mad(s0, v128.load(u), a);
    s1 = mad(s1, v128.load(u, 16), a);
    s2 = mad(s2, v128.load(u, 32), a);
    s3 = mad(s3, v128.load(u, 48), a);
  }
  put4(s0, s1, s2, s3, y, m, t, o, bias);
}

function group1Tokens2(w: usize, xt: usize, rb: usize, y: usize, m: i32, t: i32, o: i32, bias: usize): void {
  let a0 = f32x4.splat(0);
  let a1 = f32x4.splat(0);
  let a2 = f32x4.splat(0);
  let a3 = f32x4.splat(0);
  let b0 = f32x4.splat(0);
  let b1 = f32x4.splat(0);
  let b2 = f32x4.splat(0);
  let b3 = f32x4.splat(0);
  const end = xt + rb;
  for (let u = w, xq = xt; xq < end; u += 64, xq += 16) {
    const p = v128.load(xq);
    const q = v128.load(xq + rb);
    const u0 = v128.load(u);
    a0 = mad(a0, u0, p);
    b0 = mad(b0, u0, q);
    const u1 = v128.load(u, 16);
    a1 = mad(a1, u1, p);
    b1 = mad(b1, u1, q);
    const u2 = v128.load(u, 32);
    a2 = mad(a2, u2, p);
    b2 = mad(b2, u2, q);
    const u3 = v128.load(u, 48);
    a3 = mad(a3, u3, p);
    b3 = mad(b3, u3, q);
  }
  put4(a0, a1, a2, a3, y, m, t, o, bias);
  put4(b0, b1, b2, b3, y, m, t + 1, o, bias);
}

function group1Tokens3(w: usize, xt: usize, rb: usize, y: usize, m: i32, t: i32, o: i32, bias: usize): void {
  let a0 = f32x4.splat(0);
  let a1 = f32x4.splat(0);
  let a2 = f32x4.splat(0);
  let a3 = f32x4.splat(0);
  let b0 = f32x4.splat(0);
  let b1 = f32x4.splat(0);
  let b2 = f32x4.splat(0);
  let b3 = f32x4.splat(0);
  let c0 = f32x4.splat(0);
  let c1 = f32x4.splat(0);
  let c2 = f32x4.splat(0);
  let c3 = f32x4.splat(0);
  const end = xt + rb;
  for (let u = w, xq = xt; xq < end; u += 64, xq += 16) {
    const p = v128.load(xq);
    const q = v128.load(xq + rb);
    const r = v128.load(xq + (rb << 1));
    const u0 = v128.load(u);
    a0 = mad(a0, u0, p);
    b0 = mad(b0, u0, q);
    c0 = mad(c0, u0, r);
    const u1 = v128.load(u, 16);
    a1 = mad(a1, u1, p);
    b1 = mad(b1, u1, q);
    c1 = mad(c1, u1, r);
    const u2 = v128.load(u, 32);
    a2 = mad(a2, u2, p);
    b2 = mad(b2, u2, q);
    c2 = mad(c2, u2, r);
    const u3 = v128.load(u, 48);
    a3 = mad(a3, u3, p);
    b3 = mad(b3, u3, q);
    c3 = mad(c3, u3, r);
  }
  put4(a0, a1, a2, a3, y, m, t, o, bias);
  put4(b0, b1, b2, b3, y, m, t + 1, o, bias);
  put4(c0, c1, c2, c3, y, m, t + 2, o, bias);
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
