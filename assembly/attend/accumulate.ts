// The values of a block for its active rows: acc += Σ e^(s − m) · v over the lanes each row sees, with the
// kernels of values.ts (float32: pairs of rows share their value loads), int8.ts (int8 values in integers)
// or int4.ts (int4 values in integers, a group of 32 columns at a time).

import { accOf, accStride, activeCount, activeRows, getI32, headDim, keyRowBytes, probsOf, rowFrom, rowTo, valueScaleBlock } from './call';
import { accumulateI8, accumulateI8x2, accumulateI8x4, quantizeWeights } from '../int8';
import { accumulateI4, loadGroupScales, quantizeWeightsI4 } from '../int4';
import { int4Groups } from '../descriptor';
import { accumulate1, accumulate2 } from '../values';
import { accumulate1Bf16, accumulate2Bf16, accumulate4Bf16 } from '../bf16';

/** accumulate1 over f32 values, or bf16.ts's twin over bfloat16 (u16) values. */
// @ts-ignore: decorator
@inline function one<K>(acc: usize, probs: usize, values: usize, rowBytes: usize, from: i32, to: i32, headDim: i32): void {
  if (sizeof<K>() == 2) accumulate1Bf16(acc, probs, values, rowBytes, from, to, headDim);
  else accumulate1(acc, probs, values, rowBytes, from, to, headDim);
}

/**
 * Adds Σ p · v over the lanes [lo, hi) of the block for every active row (`values`: lane lo's row): pairs
 * share value loads over their common keys. K: the values' element type, f32 or u16 (bfloat16).
 */
export function accumulateBlock<K>(values: usize, lo: i32, hi: i32): void {
  const rowBytes = <usize>headDim * sizeof<K>();
  const lanes = <usize>lo << 2; // the rows' weights from lane lo on
  let i = 0;
  // bfloat16: four rows share each widened value chunk where they share their keys (a decode step's group)
  if (sizeof<K>() == 2 && ASC_FEATURE_SIMD) {
    for (; i + 3 < activeCount; i += 4) {
      const r0 = getI32(activeRows, i), r1 = getI32(activeRows, i + 1), r2 = getI32(activeRows, i + 2), r3 = getI32(activeRows, i + 3);
      const f = max(getI32(rowFrom, r0), lo), t = min(getI32(rowTo, r0), hi);
      if (f >= t || !sameKeys(r1, f, t, lo, hi) || !sameKeys(r2, f, t, lo, hi) || !sameKeys(r3, f, t, lo, hi)) break;
      accumulate4Bf16(
        accOf(r0), probsOf(r0) + lanes, accOf(r1), probsOf(r1) + lanes, accOf(r2), probsOf(r2) + lanes,
        accOf(r3), probsOf(r3) + lanes, values, rowBytes, f - lo, t - lo, headDim,
      );
    }
  }
  for (; i + 1 < activeCount; i += 2) {
    const ra = getI32(activeRows, i), rb = getI32(activeRows, i + 1);
    const fa = max(getI32(rowFrom, ra), lo) - lo, ta = min(getI32(rowTo, ra), hi) - lo;
    const fb = max(getI32(rowFrom, rb), lo) - lo, tb = min(getI32(rowTo, rb), hi) - lo;
    const pa = probsOf(ra) + lanes, pb = probsOf(rb) + lanes;
    const from = max(fa, fb), to = min(ta, tb);
    if (from >= to) {
      if (fa < ta) one<K>(accOf(ra), pa, values, rowBytes, fa, ta, headDim);
      if (fb < tb) one<K>(accOf(rb), pb, values, rowBytes, fb, tb, headDim);
      continue;
    }
    // each row's keys stay in ascending order: its own head, the shared middle, its own tail
    if (fa < from) one<K>(accOf(ra), pa, values, rowBytes, fa, from, headDim);
    if (fb < from) one<K>(accOf(rb), pb, values, rowBytes, fb, from, headDim);
    if (sizeof<K>() == 2) accumulate2Bf16(accOf(ra), pa, accOf(rb), pb, values, rowBytes, from, to, headDim);
    else accumulate2(accOf(ra), pa, accOf(rb), pb, values, rowBytes, from, to, headDim);
    if (to < ta) one<K>(accOf(ra), pa, values, rowBytes, to, ta, headDim);
    if (to < tb) one<K>(accOf(rb), pb, values, rowBytes, to, tb, headDim);
  }
  if (i < activeCount) {
    const r = getI32(activeRows, i);
    const f = max(getI32(rowFrom, r), lo) - lo, t = min(getI32(rowTo, r), hi) - lo;
    if (f < t) one<K>(accOf(r), probsOf(r) + lanes, values, rowBytes, f, t, headDim);
  }
}

/** Whether row r's lanes within [lo, hi) are exactly [f, t). */
// @ts-ignore: decorator
@inline function sameKeys(r: i32, f: i32, t: i32, lo: i32, hi: i32): bool {
  return max(getI32(rowFrom, r), lo) == f && min(getI32(rowTo, r), hi) == t;
}

/** accumulateBlock over int8 values (int8.ts): each row's weights (scaled by the value rows' scales) as int16, rows two at a time. */
export function accumulateBlockI8(values: usize, n: i32): void {
  for (let i = 0; i < activeCount; i++) {
    const r = getI32(activeRows, i);
    quantizeWeights(r, probsOf(r), valueScaleBlock, getI32(rowFrom, r), getI32(rowTo, r));
  }
  let i = 0;
  // four rows at once where they are consecutive (a tile's rows are: activeRows lists them in order)
  for (; i + 3 < activeCount && getI32(activeRows, i + 3) == getI32(activeRows, i) + 3; i += 4) {
    const r = getI32(activeRows, i);
    let from = getI32(rowFrom, r), to = getI32(rowTo, r);
    for (let k = 1; k < 4; k++) {
      from = min(from, getI32(rowFrom, r + k));
      to = max(to, getI32(rowTo, r + k));
    }
    accumulateI8x4(r, accOf(r), accStride, values, headDim, from, to, n - 1);
  }
  for (; i + 1 < activeCount; i += 2) {
    const ra = getI32(activeRows, i), rb = getI32(activeRows, i + 1);
    const from = min(getI32(rowFrom, ra), getI32(rowFrom, rb)), to = max(getI32(rowTo, ra), getI32(rowTo, rb));
    accumulateI8x2(ra, accOf(ra), rb, accOf(rb), values, headDim, from, to, n - 1);
  }
  if (i < activeCount) {
    const r = getI32(activeRows, i);
    accumulateI8(r, accOf(r), values, headDim, getI32(rowFrom, r), getI32(rowTo, r), n - 1);
  }
}

/**
 * accumulateBlock over int4 values (int4.ts): each row's weights times each group's steps rounded to int16,
 * then a group of columns at a time, rows two at a time. `scales`: lane 0's group scales.
 */
export function accumulateBlockI4(values: usize, scales: usize, n: i32): void {
  loadGroupScales(scales, n);
  for (let i = 0; i < activeCount; i++) {
    const r = getI32(activeRows, i);
    quantizeWeightsI4(r, probsOf(r), getI32(rowFrom, r), getI32(rowTo, r));
  }
  const groups = int4Groups(headDim);
  for (let g = 0; g < groups; g++) {
    let i = 0;
    for (; i + 1 < activeCount; i += 2) {
      const ra = getI32(activeRows, i), rb = getI32(activeRows, i + 1);
      const from = min(getI32(rowFrom, ra), getI32(rowFrom, rb)), to = max(getI32(rowTo, ra), getI32(rowTo, rb));
      accumulateI4<u64>(ra, accOf(ra), rb, accOf(rb), values, keyRowBytes, g, headDim, from, to, n - 1);
    }
    if (i < activeCount) {
      const r = getI32(activeRows, i);
      accumulateI4<u32>(r, accOf(r), r, accOf(r), values, keyRowBytes, g, headDim, getI32(rowFrom, r), getI32(rowTo, r), n - 1);
    }
  }
}
