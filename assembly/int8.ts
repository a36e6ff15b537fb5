// int8 caches in integer arithmetic: q·k and Σ w·v over the int8 rows as they lie in the pages.
//
// Scores. Each query row is rounded once per call to int16 with its own scale, Q = round(q · 32767 / max|q|)
// (per row, so a row's numbers never depend on which rows share its tile: prefill, decode steps and
// chunked prefill stay the same bits). A key row K (int8, |K| <= 127; a loaded cache may hold −128) is
// widened to int16 as it is loaded and i32x4.dot_i16x8_s sums pairs of products in i32: every product
// and every partial sum is an integer, so Σ Q·K is exact in any order, and the i32 never overflows:
// |Σ Q·K| <= 512 · 32767 · 128 = 2,147,418,112 < 2^31 at the largest head size (options.ts: 512).
// The float part is then the same two roundings for every (row, key) in every build:
//   dot = f32(Σ Q·K) · qScale   (attend/scores.ts: score = dot · (scale · kScale), as for float32 keys).
// The query row is padded with zeros to a multiple of 8, so the last 8-wide load of a key row may read
// the next row's first bytes (or the page's scales after row 63): they meet zeros and add exactly 0.
//
// Values. The weights of a block, w_j = p_j · vScale_j (p_j = e^(s_j − m)), are rounded per row to int16
// against their largest, W_j = round(w_j · 32767 / max w); pairs of keys share one dot_i16x8_s (value
// rows j and j + 1 interleaved, column by column, against the pair (W_j, W_j+1)), and the block's sum
// per column, exact in i32 (|Σ W·V| <= 64 · 32767 · 128 < 2^31), is added to the accumulator once:
//   acc[c] = acc[c] + f32(Σ_j W_j · V_j[c]) · wScale.
//
// Because the integer sums are exact, the scalar build (one plain loop) and the SIMD builds (lanes,
// pairs, any grouping) get the same integers, and with the same float operations after them the same
// bits. Rounding costs: q to 16 bits moves a score by at most scale · 2^-16 · max|q| · Σ|k| (the rounding
// errors of a row's elements mostly cancel: measured about 1e-5 at unit variance); w to 16 bits moves a
// block's contribution by at most 2^-16 · max w · Σ_j |v_j|. Both are far inside int8's own error (a
// step of max|x| / 127 in every stored element); test/int8.test.ts argues the tolerances from them.

import { ROUNDING_MAGIC } from './math';

/** Query and weight rows are rounded to ±LEVELS (never −32768: dot_i16x8_s's one overflowing pair). */
const LEVELS: f32 = 32767;
const TINY: f32 = 5.421010862427522e-20;   // 2^-64
const BOOST: f32 = 18446744073709551616.0; // 2^64

// The working area (in the thread's scratch, attend/call.ts), for `rows` query rows:
//   queries [row][paddedDim] i16 · query scales [row] f32 · weights [row][INT8_BLOCK] i16 · weight scales [row] f32
let queries: usize = 0;
let queryScales: usize = 0;
let weights: usize = 0;
let weightScales: usize = 0;
let paddedDim: i32 = 0;     // headDim rounded up to a multiple of 8
let blockRows: i32 = 0;     // weights per row (attend/call.ts's INT8_BLOCK: an int8 block's most keys)

// @ts-ignore: decorator
@inline function padded(dim: i32): i32 {
  return (dim + 7) & ~7;
}

/** Bytes of the working area for `rows` query rows of `dim` and blocks of `block` keys. */
export function int8ScratchBytes(rows: usize, dim: i32, block: i32): usize {
  return rows * ((<usize>padded(dim) << 1) + 4 + (<usize>block << 1) + 4);
}

/** Places the working area at `at` (int8ScratchBytes bytes). */
export function setInt8Area(at: usize, rows: i32, dim: i32, block: i32): void {
  paddedDim = padded(dim);
  blockRows = block;
  queries = at;
  queryScales = queries + (<usize>rows * <usize>paddedDim << 1);
  weights = queryScales + (<usize>rows << 2);
  weightScales = weights + (<usize>rows * <usize>block << 1);
}

// @ts-ignore: decorator
@inline function queryOf(r: i32): usize {
  return queries + (<usize>(r * paddedDim) << 1);
}

// @ts-ignore: decorator
@inline function weightsOf(r: i32): usize {
  return weights + (<usize>(r * blockRows) << 1);
}

/**
 * round(x · inverse) as an integer in [−LEVELS, LEVELS]; 0 for NaN (never converted: it would trap), so a
 * NaN or infinite input reaches the output through its scale instead (NaN, as float32 would give).
 */
// @ts-ignore: decorator
@inline function level(x: f32, inverse: f32): i32 {
  const y = min<f32>(LEVELS, max<f32>(-LEVELS, nearest<f32>(x * inverse)));
  return y == y ? <i32>y : 0;
}

/** Rounds query row r (headDim f32 at q) to int16 with its own scale, zero-padded to paddedDim. */
export function quantizeQuery(r: i32, q: usize, headDim: i32): void {
  let largest: f32 = 0;
  for (let i = 0; i < headDim; i++) largest = max<f32>(largest, abs<f32>(load<f32>(q + (<usize>i << 2))));
  // a row below 2^-64 is lifted by 2^64 first (exact), so LEVELS / largest stays finite
  const boost: f32 = largest < TINY ? BOOST : 1;
  const inverse: f32 = largest > 0 ? LEVELS / (largest * boost) : 0;
  const to = queryOf(r);
  for (let i = 0; i < headDim; i++) store<i16>(to + (<usize>i << 1), <i16>level(load<f32>(q + (<usize>i << 2)) * boost, inverse));
  for (let i = headDim; i < paddedDim; i++) store<i16>(to + (<usize>i << 1), 0);
  store<f32>(queryScales + (<usize>r << 2), largest * boost / LEVELS / boost);
}

// ---------------------------------------------------------------------------------------------- scores

/** Σ Q·K over the padded row, exact (scalar build, and lanes the SIMD loops leave). */
// @ts-ignore: decorator
@inline function dotI8(q: usize, k: usize, headDim: i32): i32 {
  let s: i32 = 0;
  for (let i = 0; i < headDim; i++) s += <i32>load<i16>(q + (<usize>i << 1)) * <i32>load<i8>(k + <usize>i);
  return s;
}

/**
 * Lane i of the result: the sum of the four lanes of argument i (exact: i32, so any order). Only the
 * shuffles x64 does in one instruction (unpack of 32- and 64-bit halves): math.ts's transposeSum pattern
 * costs three each there (pshufd, pshufd, pblendw: --print-wasm-code).
 */
// @ts-ignore: decorator
@inline export function transposeSumI32(a: v128, b: v128, c: v128, d: v128): v128 {
  const ab = i32x4.add(i32x4.shuffle(a, b, 0, 4, 1, 5), i32x4.shuffle(a, b, 2, 6, 3, 7));
  const cd = i32x4.add(i32x4.shuffle(c, d, 0, 4, 1, 5), i32x4.shuffle(c, d, 2, 6, 3, 7));
  return i32x4.add(i32x4.shuffle(ab, cd, 0, 1, 4, 5), i32x4.shuffle(ab, cd, 2, 3, 6, 7));
}

/** Σ Q·K for four keys (lane i ↔ key i) over `bytes` (a multiple of 16, at least 16) of the padded query row q. */
// @ts-ignore: decorator
@inline function dot4I8(q: usize, bytes: usize, k0: usize, k1: usize, k2: usize, k3: usize): v128 {
  let a0 = i32x4.splat(0);
  let a1 = a0, a2 = a0, a3 = a0;
  // Two chunks of 8 a step, with immediate offsets: one bump and one stack check per 16 elements (at 8
  // a step the loop's overhead cost as much as its arithmetic). The exit test between the chunks splits
  // the body in two blocks, so V8 cannot hoist both chunks' loads to the top (spills: --print-wasm-code).
  const end = q + bytes;
  let pq = q;
  for (;;) {
    let x = v128.load(pq);
    a0 = i32x4.add(a0, i32x4.dot_i16x8_s(x, v128.load8x8_s(k0)));
    a1 = i32x4.add(a1, i32x4.dot_i16x8_s(x, v128.load8x8_s(k1)));
    a2 = i32x4.add(a2, i32x4.dot_i16x8_s(x, v128.load8x8_s(k2)));
    a3 = i32x4.add(a3, i32x4.dot_i16x8_s(x, v128.load8x8_s(k3)));
    if (pq + 16 >= end) break;
    x = v128.load(pq, 16);
    a0 = i32x4.add(a0, i32x4.dot_i16x8_s(x, v128.load8x8_s(k0, 8)));
    a1 = i32x4.add(a1, i32x4.dot_i16x8_s(x, v128.load8x8_s(k1, 8)));
    a2 = i32x4.add(a2, i32x4.dot_i16x8_s(x, v128.load8x8_s(k2, 8)));
    a3 = i32x4.add(a3, i32x4.dot_i16x8_s(x, v128.load8x8_s(k3, 8)));
    pq += 32; k0 += 16; k1 += 16; k2 += 16; k3 += 16;
    if (pq >= end) break;
  }
  return transposeSumI32(a0, a1, a2, a3);
}

/**
 * out[j] = f32(Σ Q_r · K_j) · qScale_r for row r and the keys j in [from, to) (int8 rows `headDim` bytes
 * apart from `keys`; the block's last key is `last`). The SIMD builds fill whole groups of four from
 * from & ~3; in the last group, keys past `last` read as `last` (maskScores masks those lanes).
 */
export function scoresI8(r: i32, keys: usize, headDim: i32, from: i32, to: i32, last: i32, out: usize): void {
  const q = queryOf(r);
  const qScale = load<f32>(queryScales + (<usize>r << 2));
  const rowBytes = <usize>headDim;
  if (ASC_FEATURE_SIMD) {
    const s = f32x4.splat(qScale);
    const bytes = <usize>paddedDim << 1;
    let j = from & ~3;
    let k = keys + <usize>j * rowBytes;
    for (; j < to && j + 3 <= last; j += 4) {
      v128.store(out + (<usize>j << 2), f32x4.mul(f32x4.convert_i32x4_s(dot4I8(q, bytes, k, k + rowBytes, k + 2 * rowBytes, k + 3 * rowBytes)), s));
      k += rowBytes << 2;
    }
    if (j < to) {
      const k1 = keys + <usize>min(j + 1, last) * rowBytes;
      const k2 = keys + <usize>min(j + 2, last) * rowBytes;
      const k3 = keys + <usize>min(j + 3, last) * rowBytes;
      v128.store(out + (<usize>j << 2), f32x4.mul(f32x4.convert_i32x4_s(dot4I8(q, bytes, k, k1, k2, k3)), s));
    }
  } else {
    for (let j = from; j < to; j++) {
      store<f32>(out + (<usize>j << 2), <f32>dotI8(q, keys + <usize>j * rowBytes, headDim) * qScale);
    }
  }
}

/** dot4I8 for the query rows at qa and qa + distance, scaled by sa and sb, stored at outA and outB. */
// @ts-ignore: decorator
@inline function dot2x4I8(
  qa: usize, distance: usize, bytes: usize, p0: usize, p1: usize, p2: usize, p3: usize,
  sa: v128, sb: v128, outA: usize, outB: usize,
): void {
  let a0 = i32x4.splat(0);
  let a1 = a0, a2 = a0, a3 = a0, b0 = a0, b1 = a0, b2 = a0, b3 = a0;
  // 8 accumulators, 2 query chunks and a key chunk (11 live v128); two chunks a step, as dot4I8
  const end = qa + bytes;
  let pa = qa;
  for (;;) {
    let x = v128.load(pa), y = v128.load(pa + distance);
    let k = v128.load8x8_s(p0);
    a0 = i32x4.add(a0, i32x4.dot_i16x8_s(x, k)); b0 = i32x4.add(b0, i32x4.dot_i16x8_s(y, k));
    k = v128.load8x8_s(p1);
    a1 = i32x4.add(a1, i32x4.dot_i16x8_s(x, k)); b1 = i32x4.add(b1, i32x4.dot_i16x8_s(y, k));
    k = v128.load8x8_s(p2);
    a2 = i32x4.add(a2, i32x4.dot_i16x8_s(x, k)); b2 = i32x4.add(b2, i32x4.dot_i16x8_s(y, k));
    k = v128.load8x8_s(p3);
    a3 = i32x4.add(a3, i32x4.dot_i16x8_s(x, k)); b3 = i32x4.add(b3, i32x4.dot_i16x8_s(y, k));
    if (pa + 16 >= end) break;
    x = v128.load(pa, 16);
    y = v128.load(pa + distance, 16);
    k = v128.load8x8_s(p0, 8);
    a0 = i32x4.add(a0, i32x4.dot_i16x8_s(x, k)); b0 = i32x4.add(b0, i32x4.dot_i16x8_s(y, k));
    k = v128.load8x8_s(p1, 8);
    a1 = i32x4.add(a1, i32x4.dot_i16x8_s(x, k)); b1 = i32x4.add(b1, i32x4.dot_i16x8_s(y, k));
    k = v128.load8x8_s(p2, 8);
    a2 = i32x4.add(a2, i32x4.dot_i16x8_s(x, k)); b2 = i32x4.add(b2, i32x4.dot_i16x8_s(y, k));
    k = v128.load8x8_s(p3, 8);
    a3 = i32x4.add(a3, i32x4.dot_i16x8_s(x, k)); b3 = i32x4.add(b3, i32x4.dot_i16x8_s(y, k));
    pa += 32; p0 += 16; p1 += 16; p2 += 16; p3 += 16;
    if (pa >= end) break;
  }
  v128.store(outA, f32x4.mul(f32x4.convert_i32x4_s(transposeSumI32(a0, a1, a2, a3)), sa));
  v128.store(outB, f32x4.mul(f32x4.convert_i32x4_s(transposeSumI32(b0, b1, b2, b3)), sb));
}

/** scoresI8 for rows ra and rb over keys [from, to) (each row's own lanes masked later), key loads shared. */
export function scoresI8x2(
  ra: i32, rb: i32, keys: usize, headDim: i32, from: i32, to: i32, last: i32, outA: usize, outB: usize,
): void {
  if (!ASC_FEATURE_SIMD) {
    scoresI8(ra, keys, headDim, from, to, last, outA);
    scoresI8(rb, keys, headDim, from, to, last, outB);
    return;
  }
  const qa = queryOf(ra), distance = queryOf(rb) - qa;
  const sa = f32x4.splat(load<f32>(queryScales + (<usize>ra << 2)));
  const sb = f32x4.splat(load<f32>(queryScales + (<usize>rb << 2)));
  const rowBytes = <usize>headDim;
  const bytes = <usize>paddedDim << 1;
  let j = from & ~3;
  let k = keys + <usize>j * rowBytes;
  // the groups whose four keys all lie in the block, then the last one, clamped (as scoresI8)
  for (; j < to && j + 3 <= last; j += 4) {
    const at = <usize>j << 2;
    dot2x4I8(qa, distance, bytes, k, k + rowBytes, k + 2 * rowBytes, k + 3 * rowBytes, sa, sb, outA + at, outB + at);
    k += rowBytes << 2;
  }
  if (j < to) {
    const k1 = keys + <usize>min(j + 1, last) * rowBytes;
    const k2 = keys + <usize>min(j + 2, last) * rowBytes;
    const k3 = keys + <usize>min(j + 3, last) * rowBytes;
    dot2x4I8(qa, distance, bytes, k, k1, k2, k3, sa, sb, outA + (<usize>j << 2), outB + (<usize>j << 2));
  }
}

// ---------------------------------------------------------------------------------------------- values

// Splatted by one load each where used: written as f32x4.splat(constant), V8 rebuilt each one on every
// iteration of the loop (math.ts's SIMD_CONSTANTS does the same for exp).
const ROUNDING_CONSTANTS = memory.data<f32>([LEVELS, -LEVELS, ROUNDING_MAGIC], 16);

/**
 * Rounds row r's block weights w_j = probs[j] · scales[j] (j in [from, to); every other weight 0) to int16
 * against their largest, and records the scale that turns them back (NaN when a weight is NaN: the
 * weights are then all 0 and the NaN reaches the output through the scale, as float32 would give). The
 * SIMD builds work on the groups of four that cover [from, to), the lanes outside it masked to 0 (a lane
 * past the block may read a scale that is not one); each weight is rounded exactly as level() rounds it.
 */
export function quantizeWeights(r: i32, probs: usize, scales: usize, from: i32, to: i32): void {
  const w = weightsOf(r);
  let largest: f32 = 0;
  let nan = false;
  if (ASC_FEATURE_SIMD) {
    const zero = i32x4.splat(0);
    for (let at = w; at < w + (<usize>blockRows << 1); at += 16) v128.store(at, zero);
    const lo = i32x4.splat(from), hi = i32x4.splat(to);
    let m = zero, unordered = zero;
    for (let j = from & ~3; j < to; j += 4) {
      const at = probs + (<usize>j << 2);
      let x = f32x4.mul(v128.load(at), v128.load(scales + (<usize>j << 2)));
      if (j < from || j + 4 > to) {
        const lane = i32x4.add(i32x4.splat(j), i32x4(0, 1, 2, 3));
        x = v128.and(x, v128.and(i32x4.ge_s(lane, lo), i32x4.lt_s(lane, hi)));
      }
      v128.store(at, x);
      m = f32x4.pmax(m, x);
      unordered = v128.or(unordered, f32x4.ne(x, x));
    }
    largest = max<f32>(max<f32>(f32x4.extract_lane(m, 0), f32x4.extract_lane(m, 1)), max<f32>(f32x4.extract_lane(m, 2), f32x4.extract_lane(m, 3)));
    nan = v128.any_true(unordered);
  } else {
    memory.fill(w, 0, <usize>blockRows << 1);
    for (let j = from; j < to; j++) {
      const at = probs + (<usize>j << 2);
      const x = load<f32>(at) * load<f32>(scales + (<usize>j << 2));
      store<f32>(at, x);
      largest = largest < x ? x : largest; // pmax: NaN is counted apart
      nan = nan || x != x;
    }
  }
  if (nan) {
    // the weights stay the zeros written above
    store<f32>(weightScales + (<usize>r << 2), NaN);
    return;
  }
  const boost: f32 = largest < TINY ? BOOST : 1;
  const inverse: f32 = largest > 0 ? LEVELS / (largest * boost) : 0;
  if (ASC_FEATURE_SIMD) {
    const s = f32x4.splat(inverse), lift = f32x4.splat(boost);
    const top = v128.load32_splat(ROUNDING_CONSTANTS), bottom = v128.load32_splat(ROUNDING_CONSTANTS, 4);
    const magic = v128.load32_splat(ROUNDING_CONSTANTS, 8);
    for (let j = from & ~3; j < to; j += 4) {
      const t = f32x4.pmin(f32x4.pmax(f32x4.mul(f32x4.mul(v128.load(probs + (<usize>j << 2)), lift), s), bottom), top);
      const n = i32x4.sub(f32x4.add(t, magic), magic); // round(t), as an integer
      v128.store64_lane(w + (<usize>j << 1), i16x8.narrow_i32x4_s(n, n), 0);
    }
  } else {
    for (let j = from; j < to; j++) store<i16>(w + (<usize>j << 1), <i16>level(load<f32>(probs + (<usize>j << 2)) * boost, inverse));
  }
  // a block with no weight (all underflowed) adds +0 in every build
  store<f32>(weightScales + (<usize>r << 2), largest > 0 ? largest * boost / LEVELS / boost : 0);
}

/** acc[c] = acc[c] + f32(sums) · scale for the four columns at c (the one float step, in every build). */
// @ts-ignore: decorator
@inline function addColumns(acc: usize, c: i32, sums: v128, scale: v128): void {
  const at = acc + (<usize>c << 2);
  v128.store(at, f32x4.add(v128.load(at), f32x4.mul(f32x4.convert_i32x4_s(sums), scale)));
}

/** Columns [c, headDim) one at a time: Σ_j W_j · V_j[c] exact in i32, then the same float step. */
// @ts-ignore: decorator
@inline function columnTail(acc: usize, w: usize, scale: f32, values: usize, headDim: i32, from: i32, to: i32, c: i32): void {
  const rowBytes = <usize>headDim;
  for (; c < headDim; c++) {
    let s: i32 = 0;
    for (let j = from; j < to; j++) s += <i32>load<i16>(w + (<usize>j << 1)) * <i32>load<i8>(values + <usize>j * rowBytes + <usize>c);
    const at = acc + (<usize>c << 2);
    store<f32>(at, load<f32>(at) + <f32>s * scale);
  }
}

/** Value rows j and j + 1 (8 columns each, at v0 and v1) interleaved column by column: (lo, hi) = columns 0–3, 4–7. */
// @ts-ignore: decorator
@inline function pairLo(x: v128, y: v128): v128 {
  return i16x8.shuffle(x, y, 0, 8, 1, 9, 2, 10, 3, 11);
}
// @ts-ignore: decorator
@inline function pairHi(x: v128, y: v128): v128 {
  return i16x8.shuffle(x, y, 4, 12, 5, 13, 6, 14, 7, 15);
}

// The pairs of keys (j, j + 1) a value kernel walks over keys [from, to): from pairFirst = from & ~1 (the
// weights outside [from, to) are 0), pairCount of them, the first pairsFull with both rows in the block;
// a last pair whose second row lies past the block (`last`) reads its first row twice (the weight is 0).
export let pairFirst: i32 = 0;
export let pairCount: i32 = 0;
export let pairsFull: i32 = 0;

export function planPairs(from: i32, to: i32, last: i32): void {
  pairFirst = from & ~1;
  pairCount = ((to + 1) & ~1) - pairFirst >> 1;
  pairsFull = pairFirst + 2 * pairCount - 1 > last ? pairCount - 1 : pairCount;
}

/**
 * acc += Σ_j w_j · v_j for row r over keys [from, to) of the block (int8 value rows `headDim` bytes apart
 * from `values`, the block's last row `last`), with the weights of quantizeWeights; the SIMD builds
 * take the keys in pairs (planPairs).
 */
export function accumulateI8(r: i32, acc: usize, values: usize, headDim: i32, from: i32, to: i32, last: i32): void {
  const w = weightsOf(r);
  const scale = load<f32>(weightScales + (<usize>r << 2));
  let c = 0;
  if (ASC_FEATURE_SIMD) {
    const rowBytes = <usize>headDim;
    planPairs(from, to, last);
    const first = pairFirst, pairs = pairCount, full = pairsFull, lastStep = full < pairs ? <usize>0 : rowBytes;
    const sv = f32x4.splat(scale);
    // 16 columns: 4 accumulators, the pair's weights, 4 loads and their interleavings (11 live v128)
    for (; c + 16 <= headDim; c += 16) {
      let a0 = i32x4.splat(0);
      let a1 = a0, a2 = a0, a3 = a0;
      let v = values + <usize>first * rowBytes + <usize>c;
      let p = w + (<usize>first << 1);
      for (let i = 0; i < pairs; i++) {
        const step = i < full ? rowBytes : lastStep;
        const pair = v128.load32_splat(p);
        let x = v128.load8x8_s(v), y = v128.load8x8_s(v + step);
        a0 = i32x4.add(a0, i32x4.dot_i16x8_s(pairLo(x, y), pair));
        a1 = i32x4.add(a1, i32x4.dot_i16x8_s(pairHi(x, y), pair));
        x = v128.load8x8_s(v, 8);
        y = v128.load8x8_s(v + step, 8);
        a2 = i32x4.add(a2, i32x4.dot_i16x8_s(pairLo(x, y), pair));
        a3 = i32x4.add(a3, i32x4.dot_i16x8_s(pairHi(x, y), pair));
        v += rowBytes << 1;
        p += 4;
      }
      addColumns(acc, c, a0, sv);
      addColumns(acc, c + 4, a1, sv);
      addColumns(acc, c + 8, a2, sv);
      addColumns(acc, c + 12, a3, sv);
    }
    for (; c + 8 <= headDim; c += 8) {
      let a0 = i32x4.splat(0);
      let a1 = a0;
      let v = values + <usize>first * rowBytes + <usize>c;
      let p = w + (<usize>first << 1);
      for (let i = 0; i < pairs; i++) {
        const step = i < full ? rowBytes : lastStep;
        const pair = v128.load32_splat(p);
        const x = v128.load8x8_s(v), y = v128.load8x8_s(v + step);
        a0 = i32x4.add(a0, i32x4.dot_i16x8_s(pairLo(x, y), pair));
        a1 = i32x4.add(a1, i32x4.dot_i16x8_s(pairHi(x, y), pair));
        v += rowBytes << 1;
        p += 4;
      }
      addColumns(acc, c, a0, sv);
      addColumns(acc, c + 4, a1, sv);
    }
  }
  columnTail(acc, w, scale, values, headDim, from, to, c);
}

/** accumulateI8 for rows ra and rb over keys [from, to) (each row's weights 0 outside its own keys), loads shared. */
export function accumulateI8x2(
  ra: i32, accA: usize, rb: i32, accB: usize, values: usize, headDim: i32, from: i32, to: i32, last: i32,
): void {
  const wa = weightsOf(ra), wb = weightsOf(rb);
  const scaleA = load<f32>(weightScales + (<usize>ra << 2)), scaleB = load<f32>(weightScales + (<usize>rb << 2));
  let c = 0;
  if (ASC_FEATURE_SIMD) {
    const rowBytes = <usize>headDim;
    planPairs(from, to, last);
    const first = pairFirst, pairs = pairCount, full = pairsFull, lastStep = full < pairs ? <usize>0 : rowBytes;
    const sa = f32x4.splat(scaleA), sb = f32x4.splat(scaleB);
    const distance = wb - wa;
    // 8 columns: 4 accumulators, two pairs of weights, 2 loads and their interleavings (10 live v128)
    for (; c + 8 <= headDim; c += 8) {
      let a0 = i32x4.splat(0);
      let a1 = a0, b0 = a0, b1 = a0;
      let v = values + <usize>first * rowBytes + <usize>c;
      let p = wa + (<usize>first << 1);
      for (let i = 0; i < pairs; i++) {
        const step = i < full ? rowBytes : lastStep;
        const x = v128.load8x8_s(v), y = v128.load8x8_s(v + step);
        const lo = pairLo(x, y), hi = pairHi(x, y);
        const pa = v128.load32_splat(p), pb = v128.load32_splat(p + distance);
        a0 = i32x4.add(a0, i32x4.dot_i16x8_s(lo, pa)); a1 = i32x4.add(a1, i32x4.dot_i16x8_s(hi, pa));
        b0 = i32x4.add(b0, i32x4.dot_i16x8_s(lo, pb)); b1 = i32x4.add(b1, i32x4.dot_i16x8_s(hi, pb));
        v += rowBytes << 1;
        p += 4;
      }
      addColumns(accA, c, a0, sa);
      addColumns(accA, c + 4, a1, sa);
      addColumns(accB, c, b0, sb);
      addColumns(accB, c + 4, b1, sb);
    }
  }
  columnTail(accA, wa, scaleA, values, headDim, from, to, c);
  columnTail(accB, wb, scaleB, values, headDim, from, to, c);
}

/** accumulateI8 for rows r … r + 3 (accumulators accStride bytes apart from acc) over keys [from, to), loads shared. */
export function accumulateI8x4(
  r: i32, acc: usize, accStride: usize, values: usize, headDim: i32, from: i32, to: i32, last: i32,
): void {
  const w = weightsOf(r);
  const wStride = <usize>blockRows << 1;
  let c = 0;
  if (ASC_FEATURE_SIMD) {
    const rowBytes = <usize>headDim;
    planPairs(from, to, last);
    const first = pairFirst, pairs = pairCount, full = pairsFull, lastStep = full < pairs ? <usize>0 : rowBytes;
    const s0 = v128.load32_splat(weightScales + (<usize>r << 2)), s1 = v128.load32_splat(weightScales + (<usize>r << 2), 4);
    const s2 = v128.load32_splat(weightScales + (<usize>r << 2), 8), s3 = v128.load32_splat(weightScales + (<usize>r << 2), 12);
    // 8 columns: 8 accumulators, the pair interleaved (2), its weights for each row (4): 14 live v128
    for (; c + 8 <= headDim; c += 8) {
      let a0 = i32x4.splat(0);
      let a1 = a0, b0 = a0, b1 = a0, c0 = a0, c1 = a0, d0 = a0, d1 = a0;
      let v = values + <usize>first * rowBytes + <usize>c;
      let p = w + (<usize>first << 1);
      for (let i = 0; i < pairs; i++) {
        const step = i < full ? rowBytes : lastStep;
        const x = v128.load8x8_s(v), y = v128.load8x8_s(v + step);
        const lo = pairLo(x, y), hi = pairHi(x, y);
        let pw = v128.load32_splat(p);
        a0 = i32x4.add(a0, i32x4.dot_i16x8_s(lo, pw)); a1 = i32x4.add(a1, i32x4.dot_i16x8_s(hi, pw));
        pw = v128.load32_splat(p + wStride);
        b0 = i32x4.add(b0, i32x4.dot_i16x8_s(lo, pw)); b1 = i32x4.add(b1, i32x4.dot_i16x8_s(hi, pw));
        // never taken, but a block boundary: V8 would hoist all four weight loads to the top (16 live: spills)
        if (i >= pairs) break;
        pw = v128.load32_splat(p + 2 * wStride);
        c0 = i32x4.add(c0, i32x4.dot_i16x8_s(lo, pw)); c1 = i32x4.add(c1, i32x4.dot_i16x8_s(hi, pw));
        pw = v128.load32_splat(p + 3 * wStride);
        d0 = i32x4.add(d0, i32x4.dot_i16x8_s(lo, pw)); d1 = i32x4.add(d1, i32x4.dot_i16x8_s(hi, pw));
        v += rowBytes << 1;
        p += 4;
      }
      addColumns(acc, c, a0, s0);
      addColumns(acc, c + 4, a1, s0);
      addColumns(acc + accStride, c, b0, s1);
      addColumns(acc + accStride, c + 4, b1, s1);
      addColumns(acc + 2 * accStride, c, c0, s2);
      addColumns(acc + 2 * accStride, c + 4, c1, s2);
      addColumns(acc + 3 * accStride, c, d0, s3);
      addColumns(acc + 3 * accStride, c + 4, d1, s3);
    }
  }
  for (let k = 0; k < 4; k++) {
    columnTail(acc + <usize>k * accStride, w + <usize>k * wStride, load<f32>(weightScales + (<usize>(r + k) << 2)), values, headDim, from, to, c);
  }
}
