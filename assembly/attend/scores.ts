// A block's scores for its active rows: dot products of each row's query with the block's keys (score.ts
// for float32, int8.ts for int8, int4.ts for int4), then scale, softcap, the ALiBi bias and the mask of the keys the row may
// not see, in one pass that also finds the block's maximum for the online softmax (softmax.ts).
//
// Lanes are counted from the block's start and scored in groups of four whose every lane runs the same
// operations, in the scalar build too (score.ts), so a (query, key) score never depends on the tile, the
// build's vector width or the block's neighbours.

import { MASKED, softcapScalar, softcap4, horizontalMax } from '../math';
import {
  activeCount, activeRows, alibiSlopes, draftPosition, draftSees, factorBase, getI32, headDim, int8, keyRowBytes, keyScaleBlock,
  probsOf, rowFrom, rowLast, rowMax, rowOut, rowPosition, rowQuery, rowSlope, rowTo, scale, softcap, treeBase,
} from './call';
import { scoresI8, scoresI8x2 } from '../int8';
import { loadGroupScales, scoresI4 } from '../int4';
import { dot2x4Dim64, dot2x4F32, dot4F32, dot8F32, dotScalarF32 } from '../score';
import { dot2x4Bf16, dot2x4Bf16Dim64, dot4Bf16, dot4x2Bf16Dim64, dot8Bf16, dotScalarBf16 } from '../bf16';

/** The row of lane j of a block's page (`keys`: lane lo's row), clamped to its last lane (`last`). */
// @ts-ignore: decorator
@inline function keyAt(keys: usize, j: i32, lo: i32, last: i32, rowBytes: usize): usize {
  return keys + <usize>(min(j, last) - lo) * rowBytes;
}

/**
 * probs[r][j] = q_r · k_j for every active row r and the lanes j in [lo, hi) of the groups of four that
 * cover its visible keys (lanes counted from the block's start; `keys`: lane lo's row). A block that spans
 * two pages is scored a page at a time (lo = 0, then PAGE_ROWS: a group never straddles the pages).
 * K: the keys' element type, f32 or u16 (bfloat16 keys, widened as they load by bf16.ts's twins of the
 * float32 kernels, lane for lane the same arithmetic).
 */
export function scoreBlock<K>(keys: usize, lo: i32, hi: i32): void {
  const bf16 = sizeof<K>() == 2;
  const rowBytes = <usize>headDim * sizeof<K>();
  const last = hi - 1; // lanes past it read the page's last key (maskScores masks them)
  let i = 0;
  if (ASC_FEATURE_SIMD) {
    // bfloat16 keys of 64 values: rows four at a time (a decode step's query group), keys two at a time, so
    // each key is widened once for four rows; the lanes of a page's last group, if cut, as pairs do below
    if (bf16 && headDim == 64) {
      for (; i + 3 < activeCount; i += 4) {
        const r0 = getI32(activeRows, i), r1 = getI32(activeRows, i + 1);
        const r2 = getI32(activeRows, i + 2), r3 = getI32(activeRows, i + 3);
        let from = getI32(rowFrom, r0), to = getI32(rowTo, r0);
        for (let k = 1; k < 4; k++) {
          const r = getI32(activeRows, i + k);
          from = min(from, getI32(rowFrom, r));
          to = max(to, getI32(rowTo, r));
        }
        from = max(from, lo) & ~3;
        to = min(to, hi);
        const q0 = <usize>getI32(rowQuery, r0), q1 = <usize>getI32(rowQuery, r1);
        const q2 = <usize>getI32(rowQuery, r2), q3 = <usize>getI32(rowQuery, r3);
        const o0 = probsOf(r0), o1 = probsOf(r1), o2 = probsOf(r2), o3 = probsOf(r3);
        let j = from;
        for (; j < to && j + 4 <= hi; j += 4) {
          const at = <usize>j << 2, k = keys + <usize>(j - lo) * rowBytes;
          dot4x2Bf16Dim64(q0, q1, q2, q3, k, o0 + at, o1 + at, o2 + at, o3 + at);
          dot4x2Bf16Dim64(q0, q1, q2, q3, k + 2 * rowBytes, o0 + at + 8, o1 + at + 8, o2 + at + 8, o3 + at + 8);
        }
        for (; j < to; j += 4) {
          const k0 = keys + <usize>(j - lo) * rowBytes;
          const k1 = keyAt(keys, j + 1, lo, last, rowBytes), k2 = keyAt(keys, j + 2, lo, last, rowBytes);
          const k3 = keyAt(keys, j + 3, lo, last, rowBytes);
          dot2x4Bf16(q0, q1, k0, k1, k2, k3, headDim, o0 + (<usize>j << 2), o1 + (<usize>j << 2));
          dot2x4Bf16(q2, q3, k0, k1, k2, k3, headDim, o2 + (<usize>j << 2), o3 + (<usize>j << 2));
        }
      }
    }
    // rows two at a time, keys four at a time
    for (; i + 1 < activeCount; i += 2) {
      const ra = getI32(activeRows, i), rb = getI32(activeRows, i + 1);
      const qa = <usize>getI32(rowQuery, ra), qb = <usize>getI32(rowQuery, rb);
      const from = max(min(getI32(rowFrom, ra), getI32(rowFrom, rb)), lo) & ~3;
      const to = min(max(getI32(rowTo, ra), getI32(rowTo, rb)), hi);
      let j = from;
      if (headDim == 64) {
        for (; j < to && j + 4 <= hi; j += 4) {
          if (bf16) dot2x4Bf16Dim64(qa, qb, keys + <usize>(j - lo) * rowBytes, probsOf(ra) + (<usize>j << 2), probsOf(rb) + (<usize>j << 2));
          else dot2x4Dim64(qa, qb, keys + <usize>(j - lo) * rowBytes, probsOf(ra) + (<usize>j << 2), probsOf(rb) + (<usize>j << 2));
        }
      }
      for (; j < to; j += 4) {
        const k0 = keys + <usize>(j - lo) * rowBytes;
        const k1 = keyAt(keys, j + 1, lo, last, rowBytes), k2 = keyAt(keys, j + 2, lo, last, rowBytes);
        const k3 = keyAt(keys, j + 3, lo, last, rowBytes);
        if (bf16) dot2x4Bf16(qa, qb, k0, k1, k2, k3, headDim, probsOf(ra) + (<usize>j << 2), probsOf(rb) + (<usize>j << 2));
        else dot2x4F32(qa, qb, k0, k1, k2, k3, headDim, probsOf(ra) + (<usize>j << 2), probsOf(rb) + (<usize>j << 2));
      }
    }
    if (i < activeCount) {
      const r = getI32(activeRows, i);
      const q = <usize>getI32(rowQuery, r);
      let j = max(getI32(rowFrom, r), lo) & ~3;
      const to = min(getI32(rowTo, r), hi);
      // eight keys at a time while all eight exist, then four (clamped to the page's last key)
      for (; j + 8 <= hi && j < to; j += 8) {
        if (bf16) dot8Bf16(q, keys + <usize>(j - lo) * rowBytes, rowBytes, headDim, probsOf(r) + (<usize>j << 2));
        else dot8F32(q, keys + <usize>(j - lo) * rowBytes, rowBytes, headDim, probsOf(r) + (<usize>j << 2));
      }
      for (; j < to; j += 4) {
        const k0 = keys + <usize>(j - lo) * rowBytes;
        const k1 = keyAt(keys, j + 1, lo, last, rowBytes), k2 = keyAt(keys, j + 2, lo, last, rowBytes);
        const k3 = keyAt(keys, j + 3, lo, last, rowBytes);
        v128.store(probsOf(r) + (<usize>j << 2), bf16 ? dot4Bf16(q, k0, k1, k2, k3, headDim) : dot4F32(q, k0, k1, k2, k3, headDim));
      }
    }
  } else {
    for (; i < activeCount; i++) {
      const r = getI32(activeRows, i);
      const q = <usize>getI32(rowQuery, r);
      const to = min(getI32(rowTo, r), hi);
      for (let j = max(getI32(rowFrom, r), lo); j < to; j++) {
        const k = keys + <usize>(j - lo) * rowBytes;
        store<f32>(probsOf(r) + (<usize>j << 2), bf16 ? dotScalarBf16(q, k, headDim) : dotScalarF32(q, k, headDim));
      }
    }
  }
}

/** scoreBlock's dot products over int8 keys (int8.ts), rows two at a time. */
export function scoreBlockI8(keys: usize, n: i32): void {
  // float32 keys all share `scale`, which maskScores applies directly
  for (let j = 0; j < n; j++) {
    store<f32>(factorBase + (<usize>j << 2), scale * load<f32>(keyScaleBlock + (<usize>j << 2)));
  }
  let i = 0;
  for (; i + 1 < activeCount; i += 2) {
    const ra = getI32(activeRows, i), rb = getI32(activeRows, i + 1);
    const from = min(getI32(rowFrom, ra), getI32(rowFrom, rb)), to = max(getI32(rowTo, ra), getI32(rowTo, rb));
    scoresI8x2(ra, rb, keys, headDim, from, to, n - 1, probsOf(ra), probsOf(rb));
  }
  if (i < activeCount) {
    const r = getI32(activeRows, i);
    scoresI8(r, keys, headDim, getI32(rowFrom, r), getI32(rowTo, r), n - 1, probsOf(r));
  }
}

/** scoreBlock's dot products over int4 keys (int4.ts), rows two at a time. `scales`: lane 0's group scales. */
export function scoreBlockI4(keys: usize, scales: usize, n: i32): void {
  loadGroupScales(scales, n);
  let i = 0;
  for (; i + 1 < activeCount; i += 2) {
    const ra = getI32(activeRows, i), rb = getI32(activeRows, i + 1);
    const from = min(getI32(rowFrom, ra), getI32(rowFrom, rb)), to = max(getI32(rowTo, ra), getI32(rowTo, rb));
    scoresI4<u64>(ra, rb, keys, keyRowBytes, headDim, from, to, n - 1, probsOf(ra), probsOf(rb));
  }
  if (i < activeCount) {
    const r = getI32(activeRows, i);
    scoresI4<u32>(r, r, keys, keyRowBytes, headDim, getI32(rowFrom, r), getI32(rowTo, r), n - 1, probsOf(r), probsOf(r));
  }
}

// ALiBi for the row in progress (maskScores sets them): lane j's key lies alibiOffset + j positions from the
// row's query (an exact integer, ≤ 0 in causal attention), and its score gains alibiSlope times that. The
// bias is added after the softcap, as a model adds its masks and position biases to the capped logits.
let alibiSlope: f32 = 0;
let alibiOffset: i32 = 0;

/**
 * Turns row r's dot products into scores over its groups of four, lanes it may not see becoming MASKED,
 * and returns the largest score (the block maximum the online softmax needs: one pass, not two).
 * `position`: the position of the block's lane 0.
 */
export function maskScores(r: i32, position: i32): f32 {
  const row = probsOf(r);
  const from = getI32(rowFrom, r), to = getI32(rowTo, r);
  if (alibiSlopes != 0) {
    alibiSlope = load<f32>(rowSlope + (<usize>r << 2));
    alibiOffset = position - getI32(rowPosition, r);
  }
  if (ASC_FEATURE_SIMD) {
    // groups of four whose lanes are all visible need no mask (a decode step's every group but the last):
    // the masked groups are the first if it starts before `from` and the last if it ends after `to`
    const first = from & ~3, end = (to + 3) & ~3;
    const fullFrom = first < from ? first + 4 : first, fullTo = to & ~3;
    let m = f32x4.splat(MASKED);
    if (fullTo < fullFrom) {
      m = maskedGroup(row, first, from, to, m); // one group, cut at both ends
    } else {
      if (first < fullFrom) m = maskedGroup(row, first, from, to, m);
      m = scoreGroups(row, fullFrom, fullTo, m);
      if (fullTo < end) m = maskedGroup(row, fullTo, from, to, m);
    }
    return horizontalMax(m);
  } else {
    let m: f32 = MASKED;
    for (let j = from & ~3; j < ((to + 3) & ~3); j++) {
      const at = row + (<usize>j << 2);
      let s: f32 = MASKED;
      if (j >= from && j < to) {
        s = load<f32>(at) * (int8 ? load<f32>(factorBase + (<usize>j << 2)) : scale);
        if (softcap > 0) s = softcapScalar(s, softcap);
        if (alibiSlopes != 0) s += alibiSlope * <f32>(alibiOffset + j);
      }
      store<f32>(at, s);
      m = max<f32>(m, s);
    }
    return m;
  }
}

/** Scores of the group of four lanes at j (no mask). */
// @ts-ignore: decorator
@inline function scoreGroup(at: usize, j: i32): v128 {
  let s = f32x4.mul(v128.load(at), int8 ? v128.load(factorBase + (<usize>j << 2)) : f32x4.splat(scale));
  if (softcap > 0) s = softcap4(s, softcap);
  if (alibiSlopes != 0) {
    // the scalar build's arithmetic lane by lane: the distance converted exactly, one multiply, one add
    const distance = i32x4.add(i32x4.splat(alibiOffset + j), i32x4(0, 1, 2, 3));
    s = f32x4.add(s, f32x4.mul(f32x4.splat(alibiSlope), f32x4.convert_i32x4_s(distance)));
  }
  return s;
}

/** Scores the groups j in [from, to) of `row` in place; returns m raised to their maximum. */
function scoreGroups(row: usize, from: i32, to: i32, m: v128): v128 {
  // without a softcap or ALiBi, each case its own loop: one multiply and one max a group (with the softcap's code in
  // the same loop, V8 spilled the running max in int8's: docs/PERFORMANCE.md)
  const last = row + (<usize>to << 2);
  if (softcap == 0 && alibiSlopes == 0 && !int8) {
    const s = f32x4.splat(scale);
    for (let at = row + (<usize>from << 2); at < last; at += 16) {
      const x = f32x4.mul(v128.load(at), s);
      v128.store(at, x);
      m = f32x4.pmax(m, x);
    }
    return m;
  }
  if (softcap == 0 && alibiSlopes == 0) {
    // int8: each key's own score scale
    let factor = factorBase + (<usize>from << 2);
    for (let at = row + (<usize>from << 2); at < last; at += 16) {
      const x = f32x4.mul(v128.load(at), v128.load(factor));
      v128.store(at, x);
      m = f32x4.pmax(m, x);
      factor += 16;
    }
    return m;
  }
  for (let j = from; j < to; j += 4) {
    const at = row + (<usize>j << 2);
    const x = scoreGroup(at, j);
    v128.store(at, x);
    m = f32x4.pmax(m, x);
  }
  return m;
}

/** Scores the group of four lanes at j, lanes outside [from, to) becoming MASKED; returns m raised to them. */
function maskedGroup(row: usize, j: i32, from: i32, to: i32, m: v128): v128 {
  const at = row + (<usize>j << 2);
  const lane = i32x4.add(i32x4.splat(j), i32x4(0, 1, 2, 3));
  const visible = v128.and(i32x4.ge_s(lane, i32x4.splat(from)), i32x4.lt_s(lane, i32x4.splat(to)));
  const s = v128.bitselect(scoreGroup(at, j), f32x4.splat(MASKED), visible);
  v128.store(at, s);
  return f32x4.pmax(m, s);
}

/** attentionWeights (weights.ts), pass 1: copy row r's visible scores of the block to their positions; raise its maximum. */
export function collectScores(r: i32, position: i32): void {
  const scores = probsOf(r);
  const row = <usize>getI32(rowOut, r) + (<usize>position << 2);
  const maxAt = rowMax + (<usize>r << 2);
  let m = load<f32>(maxAt);
  for (let j = getI32(rowFrom, r); j < getI32(rowTo, r); j++) {
    const s = load<f32>(scores + (<usize>j << 2));
    store<f32>(row + (<usize>j << 2), s);
    m = max<f32>(m, s);
  }
  store<f32>(maxAt, m);
}


/**
 * maskScores for a block that holds drafts of a tree (descriptor.ts): the same arithmetic lane by lane and
 * group by group, but a draft lane is visible only if the row's bits say so, and its ALiBi distance is
 * taken from the draft's position (its depth's), not from where it is stored. For a chain of drafts both
 * are what a plain call computes, so a chain is the same bits as chunked attend.
 */
export function maskDraftScores(r: i32, position: i32): f32 {
  const row = probsOf(r);
  const from = getI32(rowFrom, r), to = getI32(rowTo, r);
  const self = getI32(rowLast, r) - treeBase;
  const queryPosition = getI32(rowPosition, r);
  const slope: f32 = alibiSlopes != 0 ? load<f32>(rowSlope + (<usize>r << 2)) : 0;
  const end = (to + 3) & ~3;
  if (ASC_FEATURE_SIMD) {
    let m = f32x4.splat(MASKED);
    for (let j = from & ~3; j < end; j += 4) {
      const at = row + (<usize>j << 2);
      let s = f32x4.mul(v128.load(at), int8 ? v128.load(factorBase + (<usize>j << 2)) : f32x4.splat(scale));
      if (softcap > 0) s = softcap4(s, softcap);
      if (alibiSlopes != 0) {
        let distance = f32x4.splat(0);
        distance = f32x4.replace_lane(distance, 0, <f32>(keyPosition(position + j) - queryPosition));
        distance = f32x4.replace_lane(distance, 1, <f32>(keyPosition(position + j + 1) - queryPosition));
        distance = f32x4.replace_lane(distance, 2, <f32>(keyPosition(position + j + 2) - queryPosition));
        distance = f32x4.replace_lane(distance, 3, <f32>(keyPosition(position + j + 3) - queryPosition));
        s = f32x4.add(s, f32x4.mul(f32x4.splat(slope), distance));
      }
      v128.store(at, s);
      for (let lane = 0; lane < 4; lane++) {
        if (!laneVisible(self, position, j + lane, from, to)) store<f32>(at + (<usize>lane << 2), MASKED);
      }
      m = f32x4.pmax(m, v128.load(at));
    }
    return horizontalMax(m);
  } else {
    let m: f32 = MASKED;
    for (let j = from & ~3; j < end; j++) {
      const at = row + (<usize>j << 2);
      let s: f32 = MASKED;
      if (laneVisible(self, position, j, from, to)) {
        s = load<f32>(at) * (int8 ? load<f32>(factorBase + (<usize>j << 2)) : scale);
        if (softcap > 0) s = softcapScalar(s, softcap);
        if (alibiSlopes != 0) s += slope * <f32>(keyPosition(position + j) - queryPosition);
      }
      store<f32>(at, s);
      m = max<f32>(m, s);
    }
    return m;
  }
}

/** The position of the key stored at `stored` (a draft's is its depth's). */
// @ts-ignore: decorator
@inline function keyPosition(stored: i32): i32 {
  return stored < treeBase ? stored : draftPosition(stored - treeBase);
}

/** Whether lane j of the block at `position` is visible to draft `self` whose lanes [from, to) walkTile chose. */
// @ts-ignore: decorator
@inline function laneVisible(self: i32, position: i32, j: i32, from: i32, to: i32): bool {
  if (j < from || j >= to) return false;
  const stored = position + j;
  return stored < treeBase || draftSees(self, stored - treeBase);
}
