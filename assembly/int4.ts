// int4 caches in integer arithmetic: q·k and Σ w·v over the 4-bit codes as they lie in the pages.
//
// A stored group (layout.ts) dequantizes to x_i = s·c_i + z, c_i in 0…15, with its step s and least value z
// (bfloat16 each). Keys were rotated by the 32-point Walsh–Hadamard transform H per whole group; queries get
// H/32 here, so q·k is unchanged in exact arithmetic.
//
// Scores. Each rotated query row is rounded once per call to int8, each group of 32 against its own largest,
// Q = round(q · 127 / max|q|) (per row, as int8 caches round theirs to int16: a row's numbers never depend
// on its tile), and per group its sum S = Σ Q and scale are kept. Over a group, Q·x = s · Σ Q·c + z · S,
// where C = Σ Q·c is an exact integer (|C| <= 32 · 127 · 15 < 2^17). The float part is the same
// operations, in the same order, in every build:
//   t = 0;  for each group: t = t + (f32(C) · s + S · z) · qScale;  dot = t
// The SIMD builds put a group's 32 query values in the order of its 16 bytes' nibbles (the even values,
// then the odd ones), so a byte's low nibbles meet the first 16 and its high nibbles the last 16 without a
// shuffle. The relaxed-simd build multiplies them with i16x8.relaxed_dot_i8x16_i7x16_s: its result is only
// implementation-defined when the second operand has its top bit set, and codes 0…15 never do; its i16
// pairs of products stay within ±2 · 127 · 15, so it is exact, the same integer as the simd build's
// dot_i16x8_s and the scalar loop. (Not i32x4.relaxed_dot_i8x16_i7x16_add_s: Node 20's baseline compiler
// returns wrong sums for it, its optimizing compiler right ones.) A group shorter than 32 (the row's last)
// is summed one value at a time in every build.
//
// Why 8-bit queries (docs/PERFORMANCE.md, "Cache dtypes"): on the tiny model's held-out text they flip 8
// of 9,216 top-1 tokens more than float32 queries do (97.01%: exactly the 97% bar), and they let one
// relaxed-simd instruction multiply 16 codes without widening them (int16 queries need four widenings and
// four dot_i16x8_s a group).
//
// Values. Per group, the weights w_j = p_j · s_j are rounded to int16 against the row's largest, as int8
// caches round theirs (int8.ts quantizeWeights, the same operations); pairs of value rows share one dot_i16x8_s (their bytes interleaved, each byte's low and high nibbles giving the
// even and odd columns), and the least values add Z = Σ_j p_j · z_j (four partial sums, in every build
// alike) to every column of the group:
//   acc[c] = acc[c] + (f32(Σ_j W_j · c_j[c]) · wScale + Z)
// Σ W·c is exact in i32 (|Σ| <= 64 · 32767 · 15 < 2^31), so again every build gets the same bits.
//
// Rounding costs: the query's 8 bits move a score by about max|q|/254 times a sum of 32 key values with
// independent signs per group; the weights' 16 bits move a block's sum by at most 2^-16 of its largest
// weight per key, as int8's do (test/dtypes.test.ts).

import { INT4_GROUP, PAGE_ROWS, int4Groups } from './descriptor';
import { pairCount, pairFirst, pairsFull, planPairs } from './int8';
import { ROUNDING_MAGIC } from './math';

/** Query rows are rounded to ±LEVELS (int8), a block's weights to ±WEIGHT_LEVELS (int16, as int8.ts's). */
const LEVELS: f32 = 127;
const WEIGHT_LEVELS: f32 = 32767;
const TINY: f32 = 5.421010862427522e-20;   // 2^-64
const BOOST: f32 = 18446744073709551616.0; // 2^64

// The working area (in the thread's scratch, attend/call.ts), for `rows` query rows:
//   queries [row][groups · 32] i8 · their group sums [row][groups] f32 · query scales [row] f32 ·
//   the block's steps and least values [groups][PAGE_ROWS] f32 each · one f32 row for a query's rotation ·
//   the block's weights [row][groups][PAGE_ROWS] i16 · their scales and least-value sums [row][groups] f32
//   each · the products of a row's weights [2][PAGE_ROWS] f32 (two groups)
let queries: usize = 0;
let querySums: usize = 0;
let steps: usize = 0;
let leasts: usize = 0;
let rotated: usize = 0;
let weights: usize = 0;
let weightScales: usize = 0;
let leastSums: usize = 0;
let products: usize = 0;
let groups: i32 = 0;     // groups of a row, the last possibly short
let fullGroups: i32 = 0; // groups of INT4_GROUP values

// @ts-ignore: decorator
@inline function align16(bytes: usize): usize {
  return (bytes + 15) & ~15;
}

/** Bytes of the working area for `rows` query rows of `dim`. */
export function int4ScratchBytes(rows: usize, dim: i32): usize {
  const g = <usize>int4Groups(dim);
  return rows * (g << 5) + (rows * g << 3) + (g * <usize>PAGE_ROWS << 3) + (<usize>((dim + 3) & ~3) << 2) +
    rows * g * (<usize>PAGE_ROWS << 1) + 2 * align16(rows * g << 2) + (<usize>PAGE_ROWS << 3);
}

/** Places the working area at `at` (16-byte aligned; int4ScratchBytes bytes). */
export function setInt4Area(at: usize, rows: i32, dim: i32): void {
  groups = int4Groups(dim);
  fullGroups = dim / INT4_GROUP;
  const g = <usize>groups;
  queries = at;
  querySums = queries + (<usize>rows * g << 5);
  steps = querySums + (<usize>rows * g << 3);
  leasts = steps + (g * <usize>PAGE_ROWS << 2);
  rotated = leasts + (g * <usize>PAGE_ROWS << 2);
  weights = rotated + (<usize>((dim + 3) & ~3) << 2);
  weightScales = weights + (<usize>rows * g * <usize>PAGE_ROWS << 1);
  leastSums = weightScales + align16(<usize>rows * g << 2);
  products = leastSums + align16(<usize>rows * g << 2);
}

/** Row r's rounded weights of group g ([PAGE_ROWS] i16). */
// @ts-ignore: decorator
@inline function weightsOf(r: i32, g: i32): usize {
  return weights + (<usize>((r * groups + g) * PAGE_ROWS) << 1);
}

// @ts-ignore: decorator
@inline function weightScaleOf(r: i32, g: i32): f32 {
  return load<f32>(weightScales + (<usize>(r * groups + g) << 2));
}

// @ts-ignore: decorator
@inline function leastSumOf(r: i32, g: i32): f32 {
  return load<f32>(leastSums + (<usize>(r * groups + g) << 2));
}

// @ts-ignore: decorator
@inline function queryOf(r: i32): usize {
  return queries + (<usize>(r * groups) << 5);
}

// @ts-ignore: decorator
@inline function sumsOf(r: i32): usize {
  return querySums + (<usize>(r * groups) << 3);
}

/** The block's steps of group g, lane by lane. */
// @ts-ignore: decorator
@inline function stepsOf(g: i32): usize {
  return steps + (<usize>(g * PAGE_ROWS) << 2);
}

// @ts-ignore: decorator
@inline function leastsOf(g: i32): usize {
  return leasts + (<usize>(g * PAGE_ROWS) << 2);
}

/**
 * Rotates each whole group of INT4_GROUP values at `at` in place by the (unnormalized) 32-point
 * Walsh–Hadamard transform H, which spreads a group's outliers over all its values before they share one
 * step. Queries get the same H and a factor 1/32 (exact: HᵀH = 32·I), so q·k is unchanged in exact
 * arithmetic; a short last group is left as it is in both. Plain scalar code: every build rounds alike.
 */
export function hadamardGroups(at: usize, headDim: i32, factor: f32): void {
  for (let g = 0; g + INT4_GROUP <= headDim; g += INT4_GROUP) {
    const base = at + (<usize>g << 2);
    for (let h = 1; h < INT4_GROUP; h <<= 1) {
      for (let i = 0; i < INT4_GROUP; i += h << 1) {
        for (let j = i; j < i + h; j++) {
          const a = base + (<usize>j << 2), b = base + (<usize>(j + h) << 2);
          const x = load<f32>(a), y = load<f32>(b);
          store<f32>(a, x + y);
          store<f32>(b, x - y);
        }
      }
    }
    if (factor != 1) for (let i = 0; i < INT4_GROUP; i++) store<f32>(base + (<usize>i << 2), load<f32>(base + (<usize>i << 2)) * factor);
  }
}

/**
 * Rotates query row r (headDim f32 at q) as the keys were and rounds each group to int8 with its own scale
 * (a whole group's values in nibble order: even, then odd); keeps each group's sum of the rounded values
 * and its scale, the pair (S, scale) at sumsOf(r) + 8g.
 */
export function quantizeQueryI4(r: i32, q: usize, headDim: i32): void {
  memory.copy(rotated, q, <usize>headDim << 2);
  hadamardGroups(rotated, headDim, 1.0 / <f32>INT4_GROUP);
  const to = queryOf(r), sums = sumsOf(r);
  for (let g = 0; g < groups; g++) {
    const lo = g * INT4_GROUP, hi = min(headDim, lo + INT4_GROUP);
    let largest: f32 = 0;
    for (let i = lo; i < hi; i++) largest = max<f32>(largest, abs<f32>(load<f32>(rotated + (<usize>i << 2))));
    // a group below 2^-64 is lifted by 2^64 first (exact), so LEVELS / largest stays finite
    const boost: f32 = largest < TINY ? BOOST : 1;
    const inverse: f32 = largest > 0 ? LEVELS / (largest * boost) : 0;
    const whole = hi - lo == INT4_GROUP;
    let sum = 0;
    for (let i = lo; i < hi; i++) {
      const y = min<f32>(LEVELS, max<f32>(-LEVELS, nearest<f32>(load<f32>(rotated + (<usize>i << 2)) * boost * inverse)));
      // NaN is never converted (it would trap): it reaches the scores through the scale instead
      const level = y == y ? <i32>y : 0;
      const k = i - lo;
      store<i8>(to + (<usize>lo + <usize>(whole ? ((k & 1) << 4) + (k >> 1) : k)), <i8>level);
      sum += level;
    }
    store<f32>(sums + (<usize>g << 3), <f32>sum);
    store<f32>(sums + (<usize>g << 3), largest * boost / LEVELS / boost, 4);
  }
}

/**
 * Reads the steps and least values of the block's lanes [0, n) (their groups' words from `scales`, lane 0's)
 * into the block's tables as f32, and lanes up to the next multiple of four as lane n − 1's (lanes the
 * SIMD kernels compute and maskScores masks).
 */
export function loadGroupScales(scales: usize, n: i32): void {
  const stride = <usize>groups << 2;
  const end = (n + 3) & ~3;
  let j = 0;
  if (ASC_FEATURE_SIMD) {
    const high = i32x4.splat(0xffff0000);
    if (groups == 2) {
      // a head of 64 values: four keys' words in two loads, then group 0's and group 1's apart
      const s0 = stepsOf(0), z0 = leastsOf(0), s1 = stepsOf(1), z1 = leastsOf(1);
      for (; j + 4 <= n; j += 4) {
        const a = v128.load(scales + (<usize>j << 3)), b = v128.load(scales + (<usize>j << 3), 16);
        const w0 = i32x4.shuffle(a, b, 0, 2, 4, 6), w1 = i32x4.shuffle(a, b, 1, 3, 5, 7);
        const at = <usize>j << 2;
        v128.store(s0 + at, i32x4.shl(w0, 16));
        v128.store(z0 + at, v128.and(w0, high));
        v128.store(s1 + at, i32x4.shl(w1, 16));
        v128.store(z1 + at, v128.and(w1, high));
      }
    } else {
      for (let g = 0; g < groups; g++) {
        const s = stepsOf(g), z = leastsOf(g);
        let p = scales + (<usize>g << 2);
        for (let k = 0; k + 4 <= n; k += 4) {
          let w = v128.load32_zero(p);
          w = v128.load32_lane(p + stride, w, 1);
          w = v128.load32_lane(p + 2 * stride, w, 2);
          w = v128.load32_lane(p + 3 * stride, w, 3);
          v128.store(s + (<usize>k << 2), i32x4.shl(w, 16));
          v128.store(z + (<usize>k << 2), v128.and(w, high));
          p += stride << 2;
        }
      }
      j = n & ~3;
    }
  }
  for (let g = 0; g < groups; g++) {
    const s = stepsOf(g), z = leastsOf(g);
    for (let k = j; k < end; k++) {
      const word = load<u32>(scales + <usize>min(k, n - 1) * stride + (<usize>g << 2));
      store<u32>(s + (<usize>k << 2), word << 16);
      store<u32>(z + (<usize>k << 2), word & 0xffff0000);
    }
  }
}

// Constants loaded where used (as int8.ts's): written as splats of immediates, V8 rebuilt each one on every
// iteration of a loop (three instructions a mask, --print-wasm-code); a load folds into the instruction.
const NIBBLES = memory.data<u8>([15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15], 16);
const ROUNDING_CONSTANTS = memory.data<f32>([WEIGHT_LEVELS, -WEIGHT_LEVELS, ROUNDING_MAGIC], 16);

// ---------------------------------------------------------------------------------------------- scores

/** C of a short group (`count` values from q, natural order) with the key's codes from byte `k`. */
// @ts-ignore: decorator
@inline function shortSum(q: usize, k: usize, count: i32): i32 {
  let c = 0;
  for (let i = 0; i < count; i++) c += <i32>load<i8>(q + <usize>i) * ((<i32>load<u8>(k + (<usize>i >> 1)) >> ((i & 1) << 2)) & 15);
  return c;
}

/** C of a whole group: the query's 32 values at q (nibble order) with the key's 16 bytes at k. */
// @ts-ignore: decorator
@inline function wholeSum(q: usize, k: usize): i32 {
  let c = 0;
  for (let b = 0; b < 16; b++) {
    const byte = <i32>load<u8>(k + <usize>b);
    c += <i32>load<i8>(q + <usize>b) * (byte & 15) + <i32>load<i8>(q + <usize>b, 16) * (byte >> 4);
  }
  return c;
}

/** Row r's dot product with the int4 key at `k` (lane j of the block), as the scalar build computes it. */
function dotScalarI4(r: i32, k: usize, j: i32, headDim: i32): f32 {
  const q = queryOf(r), sums = sumsOf(r);
  let t: f32 = 0;
  for (let g = 0; g < groups; g++) {
    const c = g < fullGroups ? wholeSum(q + (<usize>g << 5), k + (<usize>g << 4)) : shortSum(q + (<usize>g << 5), k + (<usize>g << 4), headDim - g * INT4_GROUP);
    const at = <usize>(g * PAGE_ROWS + j) << 2;
    const sg = sums + (<usize>g << 3);
    t = t + (<f32>c * load<f32>(steps + at) + load<f32>(sg) * load<f32>(leasts + at)) * load<f32>(sg, 4);
  }
  return t;
}

/**
 * Σ Q·c of one whole group of a key as lanes that sum to it (q: the group's query, b: its 16 bytes): on the
 * relaxed-simd build eight i16 lanes (|·| <= 4 · 127 · 15 = 7,620, so four of them still add in i16), on the
 * simd build four i32 lanes.
 */
// @ts-ignore: decorator
@inline function groupLanes(qe: v128, qo: v128, q: usize, b: v128): v128 {
  // the high nibbles by a 16-bit shift and the mask: the bits a byte's shift would clear are masked anyway
  const mask = v128.load(NIBBLES);
  const lo = v128.and(b, mask), hi = v128.and(i16x8.shr_u(b, 4), mask);
  if (ASC_FEATURE_RELAXED_SIMD) {
    // pairs of products in i16 (|·| <= 2 · 127 · 15), both halves' added
    return i16x8.add(i16x8.relaxed_dot_i8x16_i7x16_s(qe, lo), i16x8.relaxed_dot_i8x16_i7x16_s(qo, hi));
  }
  const a = i32x4.add(i32x4.dot_i16x8_s(i16x8.extend_low_i8x16_u(lo), v128.load8x8_s(q)), i32x4.dot_i16x8_s(i16x8.extend_high_i8x16_u(lo), v128.load8x8_s(q, 8)));
  return i32x4.add(a, i32x4.add(i32x4.dot_i16x8_s(i16x8.extend_low_i8x16_u(hi), v128.load8x8_s(q, 16)), i32x4.dot_i16x8_s(i16x8.extend_high_i8x16_u(hi), v128.load8x8_s(q, 24))));
}

/**
 * Lane i of the result: the sum of argument i's lanes of groupLanes, in two steps (pairSums of a, b and of
 * c, d; then quadSums of the two), the unpacks of int8.ts transposeSumI32. The relaxed-simd build adds its
 * i16 lanes four at a time in i16 (<= 4 · 7,620 = 30,480: exact) and widens once, instead of widening each
 * key's lanes first.
 */
// @ts-ignore: decorator
@inline function pairSums(a: v128, b: v128): v128 {
  const x = i32x4.shuffle(a, b, 0, 4, 1, 5), y = i32x4.shuffle(a, b, 2, 6, 3, 7);
  return ASC_FEATURE_RELAXED_SIMD ? i16x8.add(x, y) : i32x4.add(x, y);
}

// @ts-ignore: decorator
@inline function quadSums(ab: v128, cd: v128): v128 {
  const x = i32x4.shuffle(ab, cd, 0, 1, 4, 5), y = i32x4.shuffle(ab, cd, 2, 3, 6, 7);
  return ASC_FEATURE_RELAXED_SIMD ? i32x4.extadd_pairwise_i16x8_s(i16x8.add(x, y)) : i32x4.add(x, y);
}

/** The short last group's C for four keys, as lanes (scalar sums: every build adds the same integers). */
// @ts-ignore: decorator
@inline function shortLanes(q: usize, k0: usize, k1: usize, k2: usize, k3: usize, at: usize, count: i32): v128 {
  return i32x4.replace_lane(i32x4.replace_lane(i32x4.replace_lane(i32x4.splat(shortSum(q, k0 + at, count)), 1, shortSum(q, k1 + at, count)), 2, shortSum(q, k2 + at, count)), 3, shortSum(q, k3 + at, count));
}

/** t + (f32(C) · s + S · z) · scale for the four lanes at j of group g (sums: the row's (S, scale) pairs). */
// @ts-ignore: decorator
@inline function addGroup(t: v128, c: v128, g: i32, j: i32, sums: usize): v128 {
  const at = <usize>(g * PAGE_ROWS + j) << 2, sg = sums + (<usize>g << 3);
  const x = f32x4.add(f32x4.mul(f32x4.convert_i32x4_s(c), v128.load(steps + at)), f32x4.mul(v128.load32_splat(sg), v128.load(leasts + at)));
  return f32x4.add(t, f32x4.mul(x, v128.load32_splat(sg, 4)));
}

/**
 * Rows ra and rb against the keys from lane j on, four at a time up to `to` (keys past `last` read as
 * `last`), stored at outA and outB from lane j; Rows: u64 for two rows, u32 for ra alone (a type, so each
 * case is compiled apart and keeps its registers). One call walks the block: a call per four keys cost
 * its arguments and the reloading of the rows' addresses each time.
 */
function dots4I4<Rows>(ra: i32, rb: i32, keys: usize, rowBytes: usize, j: i32, to: i32, last: i32, headDim: i32, outA: usize, outB: usize): void {
  const two = sizeof<Rows>() == 8;
  const qa = queryOf(ra), qb = queryOf(rb), sa = sumsOf(ra), sb = sumsOf(rb);
  for (; j < to; j += 4) {
    const k0 = keys + <usize>j * rowBytes;
    const k1 = keys + <usize>min(j + 1, last) * rowBytes;
    const k2 = keys + <usize>min(j + 2, last) * rowBytes;
    const k3 = keys + <usize>min(j + 3, last) * rowBytes;
    let ta = f32x4.splat(0);
    let tb = ta;
    for (let g = 0; g < fullGroups; g++) {
      const qga = qa + (<usize>g << 5), qgb = qb + (<usize>g << 5), at = <usize>g << 4;
      const ea = v128.load(qga), oa = v128.load(qga, 16);
      const eb = v128.load(qgb), ob = v128.load(qgb, 16);
      // keys 0 and 1, then 2 and 3, summed in pairs (each key's nibbles split once for both rows)
      let b = v128.load(k0 + at);
      let c = v128.load(k1 + at);
      const a01 = pairSums(groupLanes(ea, oa, qga, b), groupLanes(ea, oa, qga, c));
      const b01 = two ? pairSums(groupLanes(eb, ob, qgb, b), groupLanes(eb, ob, qgb, c)) : a01;
      b = v128.load(k2 + at);
      c = v128.load(k3 + at);
      const a23 = pairSums(groupLanes(ea, oa, qga, b), groupLanes(ea, oa, qga, c));
      const b23 = two ? pairSums(groupLanes(eb, ob, qgb, b), groupLanes(eb, ob, qgb, c)) : a23;
      ta = addGroup(ta, quadSums(a01, a23), g, j, sa);
      if (two) tb = addGroup(tb, quadSums(b01, b23), g, j, sb);
    }
    if (fullGroups < groups) {
      const g = fullGroups, count = headDim - g * INT4_GROUP, at = <usize>g << 4;
      ta = addGroup(ta, shortLanes(qa + (<usize>g << 5), k0, k1, k2, k3, at, count), g, j, sa);
      if (two) tb = addGroup(tb, shortLanes(qb + (<usize>g << 5), k0, k1, k2, k3, at, count), g, j, sb);
    }
    v128.store(outA + (<usize>j << 2), ta);
    if (two) v128.store(outB + (<usize>j << 2), tb);
  }
}

/**
 * out[j] = q_r · k_j (before the call's scale) for rows ra and rb (Rows: u64; u32: ra alone) and the keys j in
 * [from, to) of the block (int4 rows `rowBytes` apart from `keys`, its last key `last`; the block's scales
 * in the tables of loadGroupScales). The SIMD builds fill whole groups of four from from & ~3, keys past
 * `last` read as `last` (maskScores masks those lanes).
 */
export function scoresI4<Rows>(
  ra: i32, rb: i32, keys: usize, rowBytes: usize, headDim: i32, from: i32, to: i32, last: i32, outA: usize, outB: usize,
): void {
  const two = sizeof<Rows>() == 8;
  if (!ASC_FEATURE_SIMD) {
    for (let j = from; j < to; j++) {
      const k = keys + <usize>j * rowBytes;
      store<f32>(outA + (<usize>j << 2), dotScalarI4(ra, k, j, headDim));
      if (two) store<f32>(outB + (<usize>j << 2), dotScalarI4(rb, k, j, headDim));
    }
    return;
  }
  dots4I4<Rows>(ra, rb, keys, rowBytes, from & ~3, to, last, headDim, outA, outB);
}

// ---------------------------------------------------------------------------------------------- values

/**
 * For each group g: rounds row r's block weights w_j = p_j · s_j (j in [from, to), every other weight 0)
 * to int16 against their largest and records the scale that turns them back, exactly as int8.ts
 * quantizeWeights rounds int8's (NaN: the weights 0 and the scale NaN). The largest is the row's own over
 * the lanes it sees, so a row's weights never depend on which keys exist beyond them (a chunk's last block
 * holds fewer). And sums Z = Σ_j p_j · z_j in four partial sums over the groups of four that cover
 * [from, to) (the lanes outside adding +0), then (z0 + z1) + (z2 + z3), in every build. The SIMD builds
 * take two groups a pass (one load of the probabilities for both).
 */
export function quantizeWeightsI4(r: i32, probs: usize, from: i32, to: i32): void {
  if (ASC_FEATURE_SIMD) {
    let g = 0;
    for (; g + 1 < groups; g += 2) weighGroups<u64>(r, probs, from, to, g);
    if (g < groups) weighGroups<u32>(r, probs, from, to, g);
    return;
  }
  const first = from & ~3, end = (to + 3) & ~3;
  for (let g = 0; g < groups; g++) {
    const s = stepsOf(g), z = leastsOf(g);
    let largest: f32 = 0;
    let nan = false;
    let z0: f32 = 0, z1: f32 = 0, z2: f32 = 0, z3: f32 = 0;
    for (let j = first; j < end; j++) {
      const at = <usize>j << 2;
      const inside = j >= from && j < to;
      const p = load<f32>(probs + at);
      const x: f32 = inside ? p * load<f32>(s + at) : 0;
      const y: f32 = inside ? p * load<f32>(z + at) : 0;
      store<f32>(products + at, x);
      largest = largest < x ? x : largest; // pmax: NaN is counted apart
      nan = nan || x != x;
      const k = j & 3;
      if (k == 0) z0 += y;
      else if (k == 1) z1 += y;
      else if (k == 2) z2 += y;
      else z3 += y;
    }
    roundWeights(r, g, products, largest, nan, (z0 + z1) + (z2 + z3), from, to);
  }
}

/** The SIMD builds' first pass of quantizeWeightsI4 for groups g and g + 1 (Two: u64; u32: g alone). */
function weighGroups<Two>(r: i32, probs: usize, from: i32, to: i32, g: i32): void {
  const two = sizeof<Two>() == 8;
  const first = from & ~3, end = (to + 3) & ~3;
  const s0 = stepsOf(g), z0 = leastsOf(g), s1 = stepsOf(g + 1), z1 = leastsOf(g + 1);
  const x1s = products + (<usize>PAGE_ROWS << 2);
  const zero = i32x4.splat(0);
  const lo = i32x4.splat(from), hi = i32x4.splat(to);
  let m0 = zero, u0 = zero, sum0 = zero, m1 = zero, u1 = zero, sum1 = zero;
  for (let j = first; j < end; j += 4) {
    const at = <usize>j << 2;
    const p = v128.load(probs + at);
    let x0 = f32x4.mul(p, v128.load(s0 + at)), y0 = f32x4.mul(p, v128.load(z0 + at));
    let x1 = x0, y1 = y0;
    if (two) {
      x1 = f32x4.mul(p, v128.load(s1 + at));
      y1 = f32x4.mul(p, v128.load(z1 + at));
    }
    if (j < from || j + 4 > to) {
      const lane = i32x4.add(i32x4.splat(j), i32x4(0, 1, 2, 3));
      const inside = v128.and(i32x4.ge_s(lane, lo), i32x4.lt_s(lane, hi));
      x0 = v128.and(x0, inside);
      y0 = v128.and(y0, inside);
      x1 = v128.and(x1, inside);
      y1 = v128.and(y1, inside);
    }
    v128.store(products + at, x0);
    m0 = f32x4.pmax(m0, x0);
    u0 = v128.or(u0, f32x4.ne(x0, x0));
    sum0 = f32x4.add(sum0, y0);
    if (two) {
      v128.store(x1s + at, x1);
      m1 = f32x4.pmax(m1, x1);
      u1 = v128.or(u1, f32x4.ne(x1, x1));
      sum1 = f32x4.add(sum1, y1);
    }
  }
  roundWeights(r, g, products, largestOf(m0), v128.any_true(u0), laneSum(sum0), from, to);
  if (two) roundWeights(r, g + 1, x1s, largestOf(m1), v128.any_true(u1), laneSum(sum1), from, to);
}

// @ts-ignore: decorator
@inline function largestOf(m: v128): f32 {
  return max<f32>(max<f32>(f32x4.extract_lane(m, 0), f32x4.extract_lane(m, 1)), max<f32>(f32x4.extract_lane(m, 2), f32x4.extract_lane(m, 3)));
}

// @ts-ignore: decorator
@inline function laneSum(v: v128): f32 {
  return (f32x4.extract_lane(v, 0) + f32x4.extract_lane(v, 1)) + (f32x4.extract_lane(v, 2) + f32x4.extract_lane(v, 3));
}

/**
 * Row r's weights of group g from its products w_j (at `x`, lanes [from & ~3, (to + 3) & ~3), 0 outside
 * [from, to)), their largest, whether one is NaN, and Z: the int16 weights, their scale and Z recorded.
 */
function roundWeights(r: i32, g: i32, x: usize, largest: f32, nan: bool, least: f32, from: i32, to: i32): void {
  const first = from & ~3, end = (to + 3) & ~3;
  const w = weightsOf(r, g);
  const at = <usize>(r * groups + g) << 2;
  store<f32>(leastSums + at, least);
  // the pair kernels read the weights of the lanes around [from, to) too: those are 0
  if (ASC_FEATURE_SIMD) {
    for (let j = 0; j < first; j += 4) store<u64>(w + (<usize>j << 1), 0);
    for (let j = end; j < PAGE_ROWS; j += 4) store<u64>(w + (<usize>j << 1), 0);
  } else {
    memory.fill(w, 0, <usize>PAGE_ROWS << 1);
  }
  if (nan) {
    if (ASC_FEATURE_SIMD) for (let j = first; j < end; j += 4) store<u64>(w + (<usize>j << 1), 0);
    store<f32>(weightScales + at, NaN);
    return;
  }
  const boost: f32 = largest < TINY ? BOOST : 1;
  const inverse: f32 = largest > 0 ? WEIGHT_LEVELS / (largest * boost) : 0;
  if (ASC_FEATURE_SIMD) {
    const sv = f32x4.splat(inverse), lift = f32x4.splat(boost);
    const top = v128.load32_splat(ROUNDING_CONSTANTS), bottom = v128.load32_splat(ROUNDING_CONSTANTS, 4);
    const magic = v128.load32_splat(ROUNDING_CONSTANTS, 8);
    // x · 1 is x: the lift is multiplied in only when it is not 1 (the same bits either way)
    if (boost == 1) {
      for (let j = first; j < end; j += 4) {
        const t = f32x4.pmin(f32x4.pmax(f32x4.mul(v128.load(x + (<usize>j << 2)), sv), bottom), top);
        const n = i32x4.sub(f32x4.add(t, magic), magic); // round(t), as an integer
        v128.store64_lane(w + (<usize>j << 1), i16x8.narrow_i32x4_s(n, n), 0);
      }
    } else {
      for (let j = first; j < end; j += 4) {
        const t = f32x4.pmin(f32x4.pmax(f32x4.mul(f32x4.mul(v128.load(x + (<usize>j << 2)), lift), sv), bottom), top);
        const n = i32x4.sub(f32x4.add(t, magic), magic);
        v128.store64_lane(w + (<usize>j << 1), i16x8.narrow_i32x4_s(n, n), 0);
      }
    }
  } else {
    for (let j = from; j < to; j++) {
      const y = min<f32>(WEIGHT_LEVELS, max<f32>(-WEIGHT_LEVELS, nearest<f32>(load<f32>(x + (<usize>j << 2)) * boost * inverse)));
      store<i16>(w + (<usize>j << 1), <i16>(y == y ? <i32>y : 0));
    }
  }
  // a block with no weight (all underflowed) adds +0 in every build
  store<f32>(weightScales + at, largest > 0 ? largest * boost / WEIGHT_LEVELS / boost : 0);
}

/** acc[c] = acc[c] + (f32(sums) · scale + least) for the four columns at `at`. */
// @ts-ignore: decorator
@inline function addColumns(at: usize, sums: v128, scale: v128, least: v128): void {
  v128.store(at, f32x4.add(v128.load(at), f32x4.add(f32x4.mul(f32x4.convert_i32x4_s(sums), scale), least)));
}

/** The columns [lo, hi) of a group one at a time (scalar build; the short group everywhere). */
function columnsI4(acc: usize, w: usize, scale: f32, least: f32, values: usize, rowBytes: usize, from: i32, to: i32, lo: i32, hi: i32): void {
  for (let c = lo; c < hi; c++) {
    const byte = <usize>c >> 1, shift = (c & 1) << 2;
    let s = 0;
    for (let j = from; j < to; j++) s += <i32>load<i16>(w + (<usize>j << 1)) * ((<i32>load<u8>(values + <usize>j * rowBytes + byte) >> shift) & 15);
    const at = acc + (<usize>c << 2);
    store<f32>(at, load<f32>(at) + (<f32>s * scale + least));
  }
}

/**
 * acc += Σ_j w_j · v_j over group g's columns for rows ra and rb (Rows: u64; u32: ra alone), keys [from, to) of
 * the block (int4 value rows `rowBytes` apart from `values`, its last `last`), with each row's weights and
 * least-value sums of quantizeWeightsI4 (its weights 0 outside its own keys).
 */
export function accumulateI4<Rows>(
  ra: i32, accA: usize, rb: i32, accB: usize, values: usize, rowBytes: usize,
  g: i32, headDim: i32, from: i32, to: i32, last: i32,
): void {
  const two = sizeof<Rows>() == 8;
  const lo = g * INT4_GROUP, hi = min(headDim, lo + INT4_GROUP);
  if (!ASC_FEATURE_SIMD || hi - lo < INT4_GROUP) {
    columnsI4(accA, weightsOf(ra, g), weightScaleOf(ra, g), leastSumOf(ra, g), values, rowBytes, from, to, lo, hi);
    if (two) columnsI4(accB, weightsOf(rb, g), weightScaleOf(rb, g), leastSumOf(rb, g), values, rowBytes, from, to, lo, hi);
    return;
  }
  planPairs(from, to, last);
  const first = pairFirst, pairs = pairCount, full = pairsFull, lastStep = full < pairs ? <usize>0 : rowBytes;
  const wa = weightsOf(ra, g), distance = weightsOf(rb, g) - wa;
  const sa = f32x4.splat(weightScaleOf(ra, g)), sb = f32x4.splat(weightScaleOf(rb, g));
  const la = f32x4.splat(leastSumOf(ra, g)), lb = f32x4.splat(leastSumOf(rb, g));
  // a half group (8 bytes, 16 columns) a pass: 4 accumulators a row, the pair's bytes interleaved and split
  // into low and high nibbles, and the rows' weights (at most 14 live v128 for two rows)
  for (let half = 0; half < 2; half++) {
    let e0 = i32x4.splat(0);
    let e1 = e0, o0 = e0, o1 = e0, f0 = e0, f1 = e0, p0 = e0, p1 = e0;
    let v = values + <usize>first * rowBytes + (<usize>g << 4) + (<usize>half << 3);
    let p = wa + (<usize>first << 1);
    for (let i = 0; i < pairs; i++) {
      const step = i < full ? rowBytes : lastStep;
      // the pair's bytes widened to i16 and interleaved (lanes: byte k of row j, of row j + 1); a byte's
      // low nibble is an even column, its high one the odd column after it
      const x = v128.load8x8_u(v), y = v128.load8x8_u(v + step);
      const lo = i16x8.shuffle(x, y, 0, 8, 1, 9, 2, 10, 3, 11), hi = i16x8.shuffle(x, y, 4, 12, 5, 13, 6, 14, 7, 15);
      const nibble = v128.load(NIBBLES); // 15 in each byte: the high byte of a lane is 0 already
      const el = v128.and(lo, nibble), eh = v128.and(hi, nibble);
      const ol = i16x8.shr_u(lo, 4), oh = i16x8.shr_u(hi, 4);
      let w = v128.load32_splat(p);
      e0 = i32x4.add(e0, i32x4.dot_i16x8_s(el, w)); e1 = i32x4.add(e1, i32x4.dot_i16x8_s(eh, w));
      o0 = i32x4.add(o0, i32x4.dot_i16x8_s(ol, w)); o1 = i32x4.add(o1, i32x4.dot_i16x8_s(oh, w));
      if (two) {
        w = v128.load32_splat(p + distance);
        f0 = i32x4.add(f0, i32x4.dot_i16x8_s(el, w)); f1 = i32x4.add(f1, i32x4.dot_i16x8_s(eh, w));
        p0 = i32x4.add(p0, i32x4.dot_i16x8_s(ol, w)); p1 = i32x4.add(p1, i32x4.dot_i16x8_s(oh, w));
      }
      v += rowBytes << 1;
      p += 4;
    }
    // e: columns 0, 2, 4, 6 and 8 … 14 of the half; o: 1, 3, 5, 7 and 9 … 15: interleaved back into order
    const at = accA + (<usize>(lo + (half << 4)) << 2);
    addColumns(at, i32x4.shuffle(e0, o0, 0, 4, 1, 5), sa, la);
    addColumns(at + 16, i32x4.shuffle(e0, o0, 2, 6, 3, 7), sa, la);
    addColumns(at + 32, i32x4.shuffle(e1, o1, 0, 4, 1, 5), sa, la);
    addColumns(at + 48, i32x4.shuffle(e1, o1, 2, 6, 3, 7), sa, la);
    if (two) {
      const bt = accB + (<usize>(lo + (half << 4)) << 2);
      addColumns(bt, i32x4.shuffle(f0, p0, 0, 4, 1, 5), sb, lb);
      addColumns(bt + 16, i32x4.shuffle(f0, p0, 2, 6, 3, 7), sb, lb);
      addColumns(bt + 32, i32x4.shuffle(f1, p1, 0, 4, 1, 5), sb, lb);
      addColumns(bt + 48, i32x4.shuffle(f1, p1, 2, 6, 3, 7), sb, lb);
    }
  }
}
