// Causal attention over the cache with an online softmax (Milakov & Gimelshein 2018; FlashAttention).
//
// For one query token and one kv head, the `group` query heads that share the kv head are processed
// together, so every key and value row is loaded once for the whole group. Keys are visited in blocks of
// BLOCK positions; per block and query row we compute the scores, raise the running maximum m, rescale the
// running sum l and the accumulator by e^(m_old − m_new) and add Σ e^(s − m) · v. No T×S score matrix
// exists: the scratch holds one block of scores per row.
//
// Block boundaries are multiples of BLOCK in *position* space (further cut where the sinks end and where
// the ring wraps), so the sequence of blocks a query visits depends on its position alone, never on how the
// tokens were batched into calls: prefill, decode steps and chunked prefill give bit-identical outputs.

import { MASKED, expScalar, softcapScalar, exp4, softcap4, madd, horizontalMax, horizontalSum } from './math';
import { slotOf } from './layout';
import { dot4F32, dot4I8, dotScalarF32, dotScalarI8 } from './score';

export const BLOCK: i32 = 64;

// ------------------------------------------------------------------------------------------ the call
// The geometry of the call in progress (module globals: one call runs at a time, and nothing allocates).

let group: i32 = 1;            // query heads per kv head
let headDim: i32 = 1;
let int8: bool = false;
let sinks: i32 = 0;
let ring: i32 = 1;
let keyEnd: i32 = 0;           // keys exist at positions < keyEnd
let causal: bool = true;
let window: i32 = 0;           // 0: no window
let scale: f32 = 1;
let softcap: f32 = 0;          // 0: none

let keyRowBytes: usize = 0;    // headDim · (4 for f32, 1 for int8)
let keyHead: usize = 0;        // this kv head's [slot][headDim] key block
let valueHead: usize = 0;
let keyScaleHead: usize = 0;   // int8: this kv head's [slot] scales
let valueScaleHead: usize = 0;
let queryRows: usize = 0;      // the group's first query row; rows are headDim floats apart

// scratch: acc [group][accStride], scores [group][BLOCK], running max [group], running sum [group]
let accBase: usize = 0;
let accStride: usize = 0;      // bytes
let scoreBase: usize = 0;
let maxBase: usize = 0;
let sumBase: usize = 0;
let outRows: usize = 0;        // attend: the group's output rows; weights: its [group][S] probability rows
let weightStride: usize = 0;   // weights: bytes between probability rows

const VISIT_ATTEND = 0;
const VISIT_SCORES = 1;        // weights, pass 1: raw scores into the output rows, track the maximum
const VISIT_EXP = 2;           // weights, pass 2: e^(s − m) in place, track the sum
let visit = VISIT_ATTEND;

/** Bytes of scratch one attend/weights call needs. */
export function scratchBytesFor(heads: i32, kvHeads: i32, dim: i32): usize {
  const rows = <usize>(heads / kvHeads);
  const stride = <usize>((dim + 3) & ~3);
  return rows * (stride + <usize>BLOCK + 2) << 2;
}

function setGeometry(
  heads: i32, kvHeads: i32, dim: i32, isInt8: i32, slotSinks: i32, slotRing: i32, end: i32,
  isCausal: i32, windowSize: i32, scoreScale: f32, cap: f32, scratch: usize,
): void {
  group = heads / kvHeads;
  headDim = dim;
  int8 = isInt8 != 0;
  sinks = slotSinks;
  ring = slotRing;
  keyEnd = end;
  causal = isCausal != 0;
  window = windowSize;
  scale = scoreScale;
  softcap = cap;
  keyRowBytes = <usize>dim << (int8 ? 0 : 2);
  accStride = <usize>((dim + 3) & ~3) << 2;
  accBase = scratch;
  scoreBase = accBase + <usize>group * accStride;
  maxBase = scoreBase + (<usize>(group * BLOCK) << 2);
  sumBase = maxBase + (<usize>group << 2);
}

function selectHead(g: i32, slots: i32, keys: usize, values: usize, keyScales: usize, valueScales: usize): void {
  const headBytes = <usize>slots * keyRowBytes;
  keyHead = keys + <usize>g * headBytes;
  valueHead = values + <usize>g * headBytes;
  keyScaleHead = keyScales + (<usize>g * <usize>slots << 2);
  valueScaleHead = valueScales + (<usize>g * <usize>slots << 2);
}

// ------------------------------------------------------------------------------------- which keys

/** Visits, in order, the blocks of keys the query at `position` may see. */
function visitVisible(position: i32): void {
  const last = causal ? min(position, keyEnd - 1) : keyEnd - 1;
  const windowStart = window > 0 ? max(0, position - window + 1) : 0;
  // attention sinks: the first `sinks` keys stay visible below the window
  const sinkEnd = min(min(sinks, windowStart), last + 1);
  if (sinkEnd > 0) visitRange(0, sinkEnd);
  if (windowStart <= last) visitRange(windowStart, last + 1);
}

function visitRange(first: i32, end: i32): void {
  let position = first;
  while (position < end) {
    let blockEnd = min(end, (position / BLOCK + 1) * BLOCK);
    if (position < sinks) blockEnd = min(blockEnd, sinks);
    else blockEnd = min(blockEnd, position + ring - (position - sinks) % ring); // where the ring wraps
    visitBlock(position, slotOf(position, sinks, ring), blockEnd - position);
    position = blockEnd;
  }
}

function visitBlock(position: i32, slot: i32, n: i32): void {
  if (visit == VISIT_EXP) {
    exponentiateWeights(position, n);
    return;
  }
  scoreBlock(slot, n);
  if (visit == VISIT_SCORES) {
    collectScores(position, n);
    return;
  }
  for (let r = 0; r < group; r++) {
    softmaxBlock(r, n);
    accumulateValues(r, slot, n);
  }
}

// ---------------------------------------------------------------------------------------- scores

/** scores[r][j] = score of query row r against the key in slot `slot + j`, j < n; padding lanes MASKED. */
function scoreBlock(slot: i32, n: i32): void {
  const keys = keyHead + <usize>slot * keyRowBytes;
  const last = n - 1;
  const rowBytes = <usize>headDim << 2;
  if (ASC_FEATURE_SIMD) {
    for (let j = 0; j < n; j += 4) {
      // a partial last group repeats its last key; those lanes are masked below
      const j1 = min(j + 1, last), j2 = min(j + 2, last), j3 = min(j + 3, last);
      const k0 = keys + <usize>j * keyRowBytes;
      const k1 = keys + <usize>j1 * keyRowBytes;
      const k2 = keys + <usize>j2 * keyRowBytes;
      const k3 = keys + <usize>j3 * keyRowBytes;
      let factor = f32x4.splat(scale);
      if (int8) {
        const scales = keyScaleHead + (<usize>slot << 2);
        factor = f32x4.mul(factor, f32x4.replace_lane(f32x4.replace_lane(f32x4.replace_lane(
          f32x4.splat(load<f32>(scales + (<usize>j << 2))),
          1, load<f32>(scales + (<usize>j1 << 2))),
          2, load<f32>(scales + (<usize>j2 << 2))),
          3, load<f32>(scales + (<usize>j3 << 2))));
      }
      let q = queryRows;
      let scores = scoreBase + (<usize>j << 2);
      for (let r = 0; r < group; r++) {
        let s = int8 ? dot4I8(q, k0, k1, k2, k3, headDim) : dot4F32(q, k0, k1, k2, k3, headDim);
        s = f32x4.mul(s, factor);
        if (softcap > 0) s = softcap4(s, softcap);
        v128.store(scores, s);
        q += rowBytes;
        scores += <usize>BLOCK << 2;
      }
    }
    const padded = (n + 3) & ~3;
    for (let r = 0; r < group; r++) {
      const row = scoreBase + (<usize>(r * BLOCK) << 2);
      for (let j = n; j < padded; j++) store<f32>(row + (<usize>j << 2), MASKED);
    }
  } else {
    for (let j = 0; j < n; j++) {
      const k = keys + <usize>j * keyRowBytes;
      const factor = int8 ? scale * load<f32>(keyScaleHead + (<usize>(slot + j) << 2)) : scale;
      let q = queryRows;
      for (let r = 0; r < group; r++) {
        let s = (int8 ? dotScalarI8(q, k, headDim) : dotScalarF32(q, k, headDim)) * factor;
        if (softcap > 0) s = softcapScalar(s, softcap);
        store<f32>(scoreBase + (<usize>(r * BLOCK + j) << 2), s);
        q += rowBytes;
      }
    }
  }
}

// --------------------------------------------------------------------------------- online softmax

/** Folds block scores of row r into its running max and sum; leaves e^(s − m) in the score row. */
function softmaxBlock(r: i32, n: i32): void {
  const row = scoreBase + (<usize>(r * BLOCK) << 2);
  const maxAt = maxBase + (<usize>r << 2);
  const sumAt = sumBase + (<usize>r << 2);
  let blockMax: f32 = MASKED;
  if (ASC_FEATURE_SIMD) {
    let m = f32x4.splat(MASKED);
    for (let j = 0; j < n; j += 4) m = f32x4.max(m, v128.load(row + (<usize>j << 2)));
    blockMax = horizontalMax(m);
  } else {
    for (let j = 0; j < n; j++) blockMax = max<f32>(blockMax, load<f32>(row + (<usize>j << 2)));
  }
  const previous = load<f32>(maxAt);
  const m = max<f32>(previous, blockMax);
  let sum = load<f32>(sumAt);
  if (m > previous && previous != MASKED) {
    const alpha = expScalar(previous - m);
    sum *= alpha;
    scaleRow(accBase + <usize>r * accStride, alpha);
  }
  store<f32>(maxAt, m);
  if (ASC_FEATURE_SIMD) {
    const mv = f32x4.splat(m);
    let total = f32x4.splat(0);
    for (let j = 0; j < n; j += 4) {
      const at = row + (<usize>j << 2);
      const p = exp4(f32x4.sub(v128.load(at), mv));
      v128.store(at, p);
      total = f32x4.add(total, p);
    }
    sum += horizontalSum(total);
  } else {
    // the same four-lane summation order as the simd build
    let s0: f32 = 0, s1: f32 = 0, s2: f32 = 0, s3: f32 = 0;
    for (let j = 0; j < n; j++) {
      const at = row + (<usize>j << 2);
      const p = expScalar(load<f32>(at) - m);
      store<f32>(at, p);
      const lane = j & 3;
      if (lane == 0) s0 += p; else if (lane == 1) s1 += p; else if (lane == 2) s2 += p; else s3 += p;
    }
    sum += (s0 + s1) + (s2 + s3);
  }
  store<f32>(sumAt, sum);
}

function scaleRow(row: usize, factor: f32): void {
  let c = 0;
  if (ASC_FEATURE_SIMD) {
    const f = f32x4.splat(factor);
    for (; c + 4 <= headDim; c += 4) {
      const at = row + (<usize>c << 2);
      v128.store(at, f32x4.mul(v128.load(at), f));
    }
  }
  for (; c < headDim; c++) {
    const at = row + (<usize>c << 2);
    store<f32>(at, load<f32>(at) * factor);
  }
}

// ---------------------------------------------------------------------------------------- values

/** acc[r] += Σ_j p[r][j] · v[slot + j], each accumulator chunk held in registers across the block. */
function accumulateValues(r: i32, slot: i32, n: i32): void {
  const acc = accBase + <usize>r * accStride;
  const probs = scoreBase + (<usize>(r * BLOCK) << 2);
  const values = valueHead + <usize>slot * keyRowBytes;
  if (int8) {
    // fold each row's dequantization scale into its weight
    const scales = valueScaleHead + (<usize>slot << 2);
    for (let j = 0; j < n; j++) {
      const at = probs + (<usize>j << 2);
      store<f32>(at, load<f32>(at) * load<f32>(scales + (<usize>j << 2)));
    }
  }
  let c = 0;
  if (ASC_FEATURE_SIMD) {
    for (; c + 16 <= headDim; c += 16) {
      const at = acc + (<usize>c << 2);
      let a0 = v128.load(at), a1 = v128.load(at, 16), a2 = v128.load(at, 32), a3 = v128.load(at, 48);
      if (int8) {
        let v = values + <usize>c;
        for (let j = 0; j < n; j++) {
          const p = v128.load32_splat(probs + (<usize>j << 2));
          const w = v128.load(v);
          const lo = i16x8.extend_low_i8x16_s(w), hi = i16x8.extend_high_i8x16_s(w);
          a0 = madd(p, f32x4.convert_i32x4_s(i32x4.extend_low_i16x8_s(lo)), a0);
          a1 = madd(p, f32x4.convert_i32x4_s(i32x4.extend_high_i16x8_s(lo)), a1);
          a2 = madd(p, f32x4.convert_i32x4_s(i32x4.extend_low_i16x8_s(hi)), a2);
          a3 = madd(p, f32x4.convert_i32x4_s(i32x4.extend_high_i16x8_s(hi)), a3);
          v += keyRowBytes;
        }
      } else {
        let v = values + (<usize>c << 2);
        for (let j = 0; j < n; j++) {
          const p = v128.load32_splat(probs + (<usize>j << 2));
          a0 = madd(p, v128.load(v), a0);
          a1 = madd(p, v128.load(v, 16), a1);
          a2 = madd(p, v128.load(v, 32), a2);
          a3 = madd(p, v128.load(v, 48), a3);
          v += keyRowBytes;
        }
      }
      v128.store(at, a0); v128.store(at, a1, 16); v128.store(at, a2, 32); v128.store(at, a3, 48);
    }
    for (; c + 4 <= headDim; c += 4) {
      const at = acc + (<usize>c << 2);
      let a = v128.load(at);
      if (int8) {
        let v = values + <usize>c;
        for (let j = 0; j < n; j++) {
          const w = f32x4.convert_i32x4_s(i32x4.extend_low_i16x8_s(i16x8.extend_low_i8x16_s(v128.load32_zero(v))));
          a = madd(v128.load32_splat(probs + (<usize>j << 2)), w, a);
          v += keyRowBytes;
        }
      } else {
        let v = values + (<usize>c << 2);
        for (let j = 0; j < n; j++) {
          a = madd(v128.load32_splat(probs + (<usize>j << 2)), v128.load(v), a);
          v += keyRowBytes;
        }
      }
      v128.store(at, a);
    }
  }
  for (; c < headDim; c++) {
    const at = acc + (<usize>c << 2);
    let a = load<f32>(at);
    for (let j = 0; j < n; j++) {
      const p = load<f32>(probs + (<usize>j << 2));
      const x = int8 ? <f32>load<i8>(values + <usize>j * keyRowBytes + <usize>c)
                     : load<f32>(values + <usize>j * keyRowBytes + (<usize>c << 2));
      a += p * x;
    }
    store<f32>(at, a);
  }
}

// ------------------------------------------------------------------------------------ entry points

/**
 * Attention of `tokens` queries (at positions firstPosition …) over the keys of one layer.
 * See index.ts for the meaning of each argument.
 */
export function attendQueries(
  q: usize, tokens: i32, firstPosition: i32, heads: i32, kvHeads: i32, dim: i32,
  keys: usize, values: usize, keyScales: usize, valueScales: usize, isInt8: i32,
  slots: i32, slotSinks: i32, slotRing: i32, end: i32, isCausal: i32, windowSize: i32,
  scoreScale: f32, cap: f32, out: usize, scratch: usize,
): void {
  setGeometry(heads, kvHeads, dim, isInt8, slotSinks, slotRing, end, isCausal, windowSize, scoreScale, cap, scratch);
  visit = VISIT_ATTEND;
  const rowBytes = <usize>dim << 2;
  for (let t = 0; t < tokens; t++) {
    const position = firstPosition + t;
    for (let g = 0; g < kvHeads; g++) {
      selectHead(g, slots, keys, values, keyScales, valueScales);
      const firstRow = <usize>(t * heads + g * group);
      queryRows = q + firstRow * rowBytes;
      outRows = out + firstRow * rowBytes;
      memory.fill(accBase, 0, <usize>group * accStride);
      for (let r = 0; r < group; r++) {
        store<f32>(maxBase + (<usize>r << 2), MASKED);
        store<f32>(sumBase + (<usize>r << 2), 0);
      }
      visitVisible(position);
      for (let r = 0; r < group; r++) {
        const acc = accBase + <usize>r * accStride;
        const outRow = outRows + <usize>r * rowBytes;
        const sum = load<f32>(sumBase + (<usize>r << 2));
        for (let c = 0; c < dim; c++) store<f32>(outRow + (<usize>c << 2), load<f32>(acc + (<usize>c << 2)) / sum);
      }
    }
  }
}

/** The softmax probabilities [tokens][heads][keyCount] of the same computation (masked keys exactly 0). */
export function attentionWeights(
  q: usize, tokens: i32, firstPosition: i32, heads: i32, kvHeads: i32, dim: i32,
  keys: usize, keyScales: usize, isInt8: i32,
  slots: i32, slotSinks: i32, slotRing: i32, end: i32, isCausal: i32, windowSize: i32,
  scoreScale: f32, cap: f32, out: usize, keyCount: i32, scratch: usize,
): void {
  setGeometry(heads, kvHeads, dim, isInt8, slotSinks, slotRing, end, isCausal, windowSize, scoreScale, cap, scratch);
  const rowBytes = <usize>dim << 2;
  weightStride = <usize>keyCount << 2;
  for (let t = 0; t < tokens; t++) {
    const position = firstPosition + t;
    for (let g = 0; g < kvHeads; g++) {
      selectHead(g, slots, keys, keys, keyScales, keyScales);
      const firstRow = <usize>(t * heads + g * group);
      queryRows = q + firstRow * rowBytes;
      outRows = out + firstRow * weightStride;
      memory.fill(outRows, 0, <usize>group * weightStride);
      for (let r = 0; r < group; r++) {
        store<f32>(maxBase + (<usize>r << 2), MASKED);
        store<f32>(sumBase + (<usize>r << 2), 0);
      }
      visit = VISIT_SCORES;
      visitVisible(position);
      visit = VISIT_EXP;
      visitVisible(position);
      for (let r = 0; r < group; r++) {
        const row = outRows + <usize>r * weightStride;
        const sum = load<f32>(sumBase + (<usize>r << 2));
        for (let j = 0; j < keyCount; j++) store<f32>(row + (<usize>j << 2), load<f32>(row + (<usize>j << 2)) / sum);
      }
    }
  }
}

/** Weights pass 1: copy a block's scores to the keys' positions in the output rows; raise each row's max. */
function collectScores(position: i32, n: i32): void {
  for (let r = 0; r < group; r++) {
    const scores = scoreBase + (<usize>(r * BLOCK) << 2);
    const row = outRows + <usize>r * weightStride + (<usize>position << 2);
    const maxAt = maxBase + (<usize>r << 2);
    let m = load<f32>(maxAt);
    for (let j = 0; j < n; j++) {
      const s = load<f32>(scores + (<usize>j << 2));
      store<f32>(row + (<usize>j << 2), s);
      m = max<f32>(m, s);
    }
    store<f32>(maxAt, m);
  }
}

/** Weights pass 2: e^(s − max) over a block of visible keys; add to each row's sum. */
function exponentiateWeights(position: i32, n: i32): void {
  for (let r = 0; r < group; r++) {
    const row = outRows + <usize>r * weightStride + (<usize>position << 2);
    const m = load<f32>(maxBase + (<usize>r << 2));
    let sum = load<f32>(sumBase + (<usize>r << 2));
    for (let j = 0; j < n; j++) {
      const at = row + (<usize>j << 2);
      const p = expScalar(load<f32>(at) - m);
      store<f32>(at, p);
      sum += p;
    }
    store<f32>(sumBase + (<usize>r << 2), sum);
  }
}
