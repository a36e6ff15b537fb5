// Causal attention over the cache with an online softmax (Milakov & Gimelshein 2018; FlashAttention).
//
// A *tile* is up to TILE_ROWS query rows that share one kv head: the `group` query heads of grouped-query
// attention, times as many consecutive tokens as fit. The tile walks the keys once, block by block; each
// key and value row is loaded once for every row of the tile (decode: the group; prefill: tokens × group).
// Per block and row: scores s = scale · q·k (softcapped), masked to the row's visible keys; the running
// maximum m rises to the block's, the running sum l and accumulator are rescaled by e^(m_old − m_new), and
// Σ e^(s − m) · v is added. No T×S score matrix exists: the scratch holds one block of scores per row.
//
// Bit-identical prefill, decode and chunked prefill: blocks are *canonical*, cut where a page of the cache
// begins (slot a multiple of BLOCK, layout.ts), at the end of the sinks and where the ring wraps (all
// functions of position alone), so a block never straddles a page, and each row processes
// exactly the blocks that hold keys it may see, with lanes counted from the block's start. A row's
// arithmetic therefore never depends on which other rows share its tile or how tokens were batched.

import { MASKED, expScalar, softcapScalar, exp4, softcap4, horizontalMax, horizontalSum } from './math';
import { scalesOf, slotOf, widenRows } from './layout';
import {
  HEADS, HEAD_DIM, INT8, KV_HEADS, PAGE_ROWS, PAGE_SHIFT, RING, SCALE, SCRATCH, SINKS, SOFTCAP, STREAM, WINDOW,
  address, field, fieldF32, pageTable, tableCapacity,
} from './descriptor';
import { dot2x4F32, dot4F32, dotScalarF32 } from './score';
import { accumulate1, accumulate2 } from './values';

/** A canonical block is at most one page of the cache. */
export const BLOCK: i32 = PAGE_ROWS;
/** Query rows per tile: enough to reuse each key many times, few enough that a tile's state stays in L1/L2. */
const TILE_ROWS: i32 = 16;

// ------------------------------------------------------------------------------------------ the call
// The geometry of the call in progress (module globals: one call runs at a time, and nothing allocates).

let heads: i32 = 1;
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
let weightsMode: bool = false; // attentionWeights: collect scores instead of accumulating values

let keyRowBytes: usize = 0;    // headDim · (4 for f32, 1 for int8)
let pages: usize = 0;          // the layer's page table (descriptor.ts)
let headTableBytes: usize = 0; // bytes of one (kv head, K|V) row of it
let keyTable: usize = 0;       // this kv head's key pages
let valueTable: usize = 0;
let keyScaleBlock: usize = 0;  // int8: the current block's key scales
let valueScaleBlock: usize = 0;

// Scratch, for tileRows rows (see scratchBytesFor):
//   acc [row][accStride] f32 · probs [row][BLOCK] f32 · factors [BLOCK] f32 ·
//   int8 caches: the block's keys and values widened to f32, [BLOCK][headDim] each · then per row:
//   running max, running sum (f32); query and output addresses; visible set (sinkEnd, first, last);
//   visible lanes of the current block (from, to); and the list of rows active in the block.
let tileRows: i32 = 1;
let accStride: usize = 0;      // bytes
let accBase: usize = 0;
let probBase: usize = 0;
let factorBase: usize = 0;
let wideKeys: usize = 0;
let wideValues: usize = 0;
let rowMax: usize = 0;
let rowSum: usize = 0;
let rowQuery: usize = 0;
let rowOut: usize = 0;         // attend: output row; weights: [keyCount] probability row
let rowSinkEnd: usize = 0;
let rowFirst: usize = 0;
let rowLast: usize = 0;
let rowFrom: usize = 0;
let rowTo: usize = 0;
let activeRows: usize = 0;
let activeCount: i32 = 0;

// @ts-ignore: decorator
@inline function tileTokensFor(rowsPerToken: i32): i32 {
  return max(1, TILE_ROWS / rowsPerToken);
}

/** Bytes of scratch one attend/weights call needs. */
export function scratchBytesFor(queryHeads: i32, kvHeads: i32, dim: i32): usize {
  const perToken = queryHeads / kvHeads;
  const rows = <usize>(tileTokensFor(perToken) * perToken);
  const stride = <usize>((dim + 3) & ~3) << 2;
  const wide = <usize>BLOCK * (<usize>dim << 2);
  return rows * (stride + (<usize>BLOCK << 2) + 4 * 10) + (<usize>BLOCK << 2) + 2 * wide + 64;
}

/** Reads the geometry and scoring of `layer` from the descriptor; `end` and `isCausal` are the call's. */
function setGeometry(descriptor: usize, layer: i32, end: i32, isCausal: i32): void {
  heads = field(descriptor, HEADS);
  group = heads / field(descriptor, KV_HEADS);
  headDim = field(descriptor, HEAD_DIM);
  const dim = headDim;
  int8 = field(descriptor, INT8) != 0;
  sinks = field(descriptor, SINKS);
  ring = field(descriptor, RING);
  keyEnd = end;
  causal = isCausal != 0;
  window = field(descriptor, WINDOW);
  scale = fieldF32(descriptor, SCALE);
  softcap = fieldF32(descriptor, SOFTCAP);
  pages = pageTable(descriptor, layer);
  headTableBytes = <usize>tableCapacity(descriptor, layer) << 2;
  keyRowBytes = <usize>dim << (int8 ? 0 : 2);
  tileRows = tileTokensFor(group) * group;
  const rows = <usize>tileRows;
  accStride = <usize>((dim + 3) & ~3) << 2;
  accBase = address(descriptor, SCRATCH);
  probBase = accBase + rows * accStride;
  factorBase = probBase + (rows * <usize>BLOCK << 2);
  wideKeys = factorBase + (<usize>BLOCK << 2);
  wideValues = wideKeys + <usize>BLOCK * (<usize>dim << 2);
  rowMax = wideValues + <usize>BLOCK * (<usize>dim << 2);
  rowSum = rowMax + (rows << 2);
  rowQuery = rowSum + (rows << 2);
  rowOut = rowQuery + (rows << 2);
  rowSinkEnd = rowOut + (rows << 2);
  rowFirst = rowSinkEnd + (rows << 2);
  rowLast = rowFirst + (rows << 2);
  rowFrom = rowLast + (rows << 2);
  rowTo = rowFrom + (rows << 2);
  activeRows = rowTo + (rows << 2);
}

function selectHead(g: i32): void {
  keyTable = pages + <usize>(2 * g) * headTableBytes;
  valueTable = keyTable + headTableBytes;
}

// @ts-ignore: decorator
@inline function getI32(base: usize, row: i32): i32 {
  return load<i32>(base + (<usize>row << 2));
}

// @ts-ignore: decorator
@inline function setI32(base: usize, row: i32, value: i32): void {
  store<i32>(base + (<usize>row << 2), value);
}

// @ts-ignore: decorator
@inline function accOf(row: i32): usize {
  return accBase + <usize>row * accStride;
}

// @ts-ignore: decorator
@inline function probsOf(row: i32): usize {
  return probBase + (<usize>(row * BLOCK) << 2);
}

// ------------------------------------------------------------------------------------- which keys

/** Records which keys the query at `position` sees: [0, sinkEnd) ∪ [first, last]. */
function setVisible(row: i32, position: i32): void {
  const last = causal ? min(position, keyEnd - 1) : keyEnd - 1;
  const first = window > 0 ? max(0, position - window + 1) : 0;
  // attention sinks: the first `sinks` keys stay visible below the window
  setI32(rowSinkEnd, row, min(min(sinks, first), last + 1));
  setI32(rowFirst, row, first);
  setI32(rowLast, row, last);
}

/**
 * The canonical block that holds `position` starts at the last cut at or before it: the start of its
 * page (a slot that is a multiple of BLOCK), the end of the sinks, or the ring's wrap.
 */
// @ts-ignore: decorator
@inline function blockStart(position: i32): i32 {
  if (position < sinks) return position - position % BLOCK; // slot = position
  const slot = sinks + (position - sinks) % ring;
  return position - (slot - max(slot - slot % BLOCK, sinks));
}

/** The first cut after `position`: the next page, the end of the sinks, or the ring's wrap. */
// @ts-ignore: decorator
@inline function blockEnd(position: i32): i32 {
  if (position < sinks) return min(position - position % BLOCK + BLOCK, sinks);
  const slot = sinks + (position - sinks) % ring;
  return position + (min(slot - slot % BLOCK + BLOCK, sinks + ring) - slot);
}

/** Walks the tile's rows (already set up) over every block that holds a key one of them may see. */
function walkTile(rows: i32): void {
  let start = 0x7fffffff, end = 0;
  for (let r = 0; r < rows; r++) {
    start = min(start, getI32(rowSinkEnd, r) > 0 ? 0 : getI32(rowFirst, r));
    end = max(end, getI32(rowLast, r) + 1);
  }
  let position = blockStart(start);
  while (position < end) {
    const stop = min(blockEnd(position), end);
    // each row's visible keys in [position, stop): one interval (blocks never straddle the sinks' end)
    activeCount = 0;
    let resume = 0x7fffffff;
    for (let r = 0; r < rows; r++) {
      const sinkEnd = getI32(rowSinkEnd, r), first = getI32(rowFirst, r), last = getI32(rowLast, r);
      let from = stop, to = position;
      if (position < sinkEnd) { from = position; to = min(stop, sinkEnd); }
      const a = max(position, first), b = min(stop, last + 1);
      if (a < b) { from = min(from, a); to = max(to, b); }
      if (from < to) {
        setI32(rowFrom, r, from - position);
        setI32(rowTo, r, to - position);
        setI32(activeRows, activeCount++, r);
      } else if (first >= stop && first <= last) {
        resume = min(resume, first);
      }
    }
    if (activeCount > 0) {
      visitBlock(position, stop - position);
      position = stop;
    } else {
      // nothing visible here: jump to the block of the next row's window (the gap after the sinks)
      position = resume == 0x7fffffff ? end : max(stop, blockStart(resume));
    }
  }
}

// Streaming. A decode step reads every cached K/V row once, with enough arithmetic per row that the loop
// keeps few cache misses in flight: from DRAM or a busy L3 it runs far below the memory's bandwidth.
// Touching each 64-byte line of a block before computing on it issues those misses back to back (wasm has
// no prefetch instruction): measured 1.3–1.8× faster for one layer's K/V beyond ~8 MiB, ~20% faster for
// a 16-layer model's decode whose layers evict each other, ~10–20% slower for K/V that stays cached. The
// caller decides (the `stream` flag: it knows the cache's size); it applies only to calls with one tile
// of queries per kv head (decode-like: nothing is reused across tiles).
let streaming: bool = false;
let touched: i32 = 0; // keeps the touching loads alive

function touchLines(from: usize, bytes: usize): void {
  let x: i32 = 0;
  for (let at = from; at < from + bytes; at += 64) x |= load<i32>(at);
  touched ^= x;
}

function visitBlock(position: i32, n: i32): void {
  const slot = slotOf(position, sinks, ring);
  // the block lies inside one page (blockStart/blockEnd cut at pages)
  const entry = <usize>(slot >> PAGE_SHIFT) << 2;
  const row = slot & (PAGE_ROWS - 1);
  const keyPage = <usize>load<u32>(keyTable + entry);
  const valuePage = weightsMode ? keyPage : <usize>load<u32>(valueTable + entry);
  let keys = keyPage + <usize>row * keyRowBytes;
  let values = valuePage + <usize>row * keyRowBytes;
  if (streaming) {
    touchLines(keys, <usize>n * keyRowBytes);
    touchLines(values, <usize>n * keyRowBytes);
  }
  // int8: widen the block's rows to f32 once, for every row of the tile (the conversion is exact)
  if (int8) {
    keyScaleBlock = scalesOf(keyPage, headDim) + (<usize>row << 2);
    valueScaleBlock = scalesOf(valuePage, headDim) + (<usize>row << 2);
    widenRows(keys, n, headDim, wideKeys);
    keys = wideKeys;
    if (!weightsMode) widenRows(values, n, headDim, wideValues);
    values = wideValues;
  }
  scoreBlock(keys, slot, n);
  for (let i = 0; i < activeCount; i++) {
    const r = getI32(activeRows, i);
    const blockMax = maskScores(r);
    if (weightsMode) collectScores(r, position);
    else softmaxBlock(r, blockMax);
  }
  if (!weightsMode) accumulateBlock(values, slot);
}

// ---------------------------------------------------------------------------------------- scores

/**
 * probs[r][j] = q_r · k_j for every active row r and the lanes j of the groups of four that cover its
 * visible keys (lanes counted from the block's start); for int8, factors[j] = the score scale of key j (scale × its key scale).
 */
function scoreBlock(keys: usize, slot: i32, n: i32): void {
  const rowBytes = <usize>headDim << 2; // f32 rows (int8 blocks arrive widened)
  if (int8) {
    // float32 keys all share `scale`, which maskScores applies directly
    for (let j = 0; j < n; j++) {
      store<f32>(factorBase + (<usize>j << 2), scale * load<f32>(keyScaleBlock + (<usize>j << 2)));
    }
  }
  const last = n - 1;
  let i = 0;
  if (ASC_FEATURE_SIMD) {
    // rows two at a time, keys four at a time
    for (; i + 1 < activeCount; i += 2) {
      const ra = getI32(activeRows, i), rb = getI32(activeRows, i + 1);
      const qa = <usize>getI32(rowQuery, ra), qb = <usize>getI32(rowQuery, rb);
      const from = min(getI32(rowFrom, ra), getI32(rowFrom, rb)) & ~3;
      const to = max(getI32(rowTo, ra), getI32(rowTo, rb));
      for (let j = from; j < to; j += 4) {
        const k0 = keys + <usize>j * rowBytes;
        const k1 = keys + <usize>min(j + 1, last) * rowBytes;
        const k2 = keys + <usize>min(j + 2, last) * rowBytes;
        const k3 = keys + <usize>min(j + 3, last) * rowBytes;
        dot2x4F32(qa, qb, k0, k1, k2, k3, headDim, probsOf(ra) + (<usize>j << 2), probsOf(rb) + (<usize>j << 2));
      }
    }
    if (i < activeCount) {
      const r = getI32(activeRows, i);
      const q = <usize>getI32(rowQuery, r);
      for (let j = getI32(rowFrom, r) & ~3; j < getI32(rowTo, r); j += 4) {
        const k0 = keys + <usize>j * rowBytes;
        const k1 = keys + <usize>min(j + 1, last) * rowBytes;
        const k2 = keys + <usize>min(j + 2, last) * rowBytes;
        const k3 = keys + <usize>min(j + 3, last) * rowBytes;
        v128.store(probsOf(r) + (<usize>j << 2), dot4F32(q, k0, k1, k2, k3, headDim));
      }
    }
  } else {
    for (; i < activeCount; i++) {
      const r = getI32(activeRows, i);
      const q = <usize>getI32(rowQuery, r);
      for (let j = getI32(rowFrom, r); j < getI32(rowTo, r); j++) {
        store<f32>(probsOf(r) + (<usize>j << 2), dotScalarF32(q, keys + <usize>j * rowBytes, headDim));
      }
    }
  }
}

/**
 * Turns row r's dot products into scores over its groups of four, lanes it may not see becoming MASKED,
 * and returns the largest score (the block maximum the online softmax needs: one pass, not two).
 */
function maskScores(r: i32): f32 {
  const row = probsOf(r);
  const from = getI32(rowFrom, r), to = getI32(rowTo, r);
  if (ASC_FEATURE_SIMD) {
    const lo = i32x4.splat(from), hi = i32x4.splat(to);
    let m = f32x4.splat(MASKED);
    for (let j = from & ~3; j < to; j += 4) {
      const at = row + (<usize>j << 2);
      let s = f32x4.mul(v128.load(at), int8 ? v128.load(factorBase + (<usize>j << 2)) : f32x4.splat(scale));
      if (softcap > 0) s = softcap4(s, softcap);
      const lane = i32x4.add(i32x4.splat(j), i32x4(0, 1, 2, 3));
      const visible = v128.and(i32x4.ge_s(lane, lo), i32x4.lt_s(lane, hi));
      s = v128.bitselect(s, f32x4.splat(MASKED), visible);
      v128.store(at, s);
      m = f32x4.pmax(m, s);
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
      }
      store<f32>(at, s);
      m = max<f32>(m, s);
    }
    return m;
  }
}

// --------------------------------------------------------------------------------- online softmax

/** Folds row r's block scores (largest: blockMax) into its running max and sum; leaves e^(s − m) in its row. */
function softmaxBlock(r: i32, blockMax: f32): void {
  const row = probsOf(r);
  const first = getI32(rowFrom, r) & ~3, end = (getI32(rowTo, r) + 3) & ~3;
  const maxAt = rowMax + (<usize>r << 2);
  const sumAt = rowSum + (<usize>r << 2);
  const previous = load<f32>(maxAt);
  const m = max<f32>(previous, blockMax);
  let sum = load<f32>(sumAt);
  if (m > previous && previous != MASKED) {
    const alpha = expScalar(previous - m);
    sum *= alpha;
    scaleRow(accOf(r), alpha);
  }
  store<f32>(maxAt, m);
  if (ASC_FEATURE_SIMD) {
    const mv = f32x4.splat(m);
    let total = f32x4.splat(0);
    for (let j = first; j < end; j += 4) {
      const at = row + (<usize>j << 2);
      const p = exp4(f32x4.sub(v128.load(at), mv));
      v128.store(at, p);
      total = f32x4.add(total, p);
    }
    sum += horizontalSum(total);
  } else {
    // the same four-lane summation order as the simd build
    let s0: f32 = 0, s1: f32 = 0, s2: f32 = 0, s3: f32 = 0;
    for (let j = first; j < end; j += 4) {
      const at = row + (<usize>j << 2);
      const p0 = expScalar(load<f32>(at) - m), p1 = expScalar(load<f32>(at, 4) - m);
      const p2 = expScalar(load<f32>(at, 8) - m), p3 = expScalar(load<f32>(at, 12) - m);
      store<f32>(at, p0); store<f32>(at, p1, 4); store<f32>(at, p2, 8); store<f32>(at, p3, 12);
      s0 += p0; s1 += p1; s2 += p2; s3 += p3;
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

/** Adds Σ p · v over the block for every active row: pairs share value loads over their common keys. */
function accumulateBlock(values: usize, slot: i32): void {
  const rowBytes = <usize>headDim << 2; // f32 rows (int8 blocks arrive widened)
  if (int8) {
    // fold each value row's dequantization scale into its weight
    const scales = valueScaleBlock;
    for (let i = 0; i < activeCount; i++) {
      const r = getI32(activeRows, i);
      const row = probsOf(r);
      for (let j = getI32(rowFrom, r); j < getI32(rowTo, r); j++) {
        const at = row + (<usize>j << 2);
        store<f32>(at, load<f32>(at) * load<f32>(scales + (<usize>j << 2)));
      }
    }
  }
  let i = 0;
  for (; i + 1 < activeCount; i += 2) {
    const ra = getI32(activeRows, i), rb = getI32(activeRows, i + 1);
    const fa = getI32(rowFrom, ra), ta = getI32(rowTo, ra), fb = getI32(rowFrom, rb), tb = getI32(rowTo, rb);
    const from = max(fa, fb), to = min(ta, tb);
    if (from >= to) {
      accumulate1(accOf(ra), probsOf(ra), values, rowBytes, fa, ta, headDim);
      accumulate1(accOf(rb), probsOf(rb), values, rowBytes, fb, tb, headDim);
      continue;
    }
    // each row's keys stay in ascending order: its own head, the shared middle, its own tail
    if (fa < from) accumulate1(accOf(ra), probsOf(ra), values, rowBytes, fa, from, headDim);
    if (fb < from) accumulate1(accOf(rb), probsOf(rb), values, rowBytes, fb, from, headDim);
    accumulate2(accOf(ra), probsOf(ra), accOf(rb), probsOf(rb), values, rowBytes, from, to, headDim);
    if (to < ta) accumulate1(accOf(ra), probsOf(ra), values, rowBytes, to, ta, headDim);
    if (to < tb) accumulate1(accOf(rb), probsOf(rb), values, rowBytes, to, tb, headDim);
  }
  if (i < activeCount) {
    const r = getI32(activeRows, i);
    accumulate1(accOf(r), probsOf(r), values, rowBytes, getI32(rowFrom, r), getI32(rowTo, r), headDim);
  }
}

// ------------------------------------------------------------------------------------ entry points

/** Sets up the rows of tokens [t0, t0 + count) × the group of kv head g. */
function setupRows(q: usize, out: usize, outRowBytes: usize, t0: i32, count: i32, firstPosition: i32, g: i32): i32 {
  const rowBytes = <usize>headDim << 2;
  let r = 0;
  for (let t = t0; t < t0 + count; t++) {
    for (let h = 0; h < group; h++) {
      const index = <usize>(t * heads + g * group + h);
      setI32(rowQuery, r, <i32>(q + index * rowBytes));
      setI32(rowOut, r, <i32>(out + index * outRowBytes));
      setVisible(r, firstPosition + t);
      store<f32>(rowMax + (<usize>r << 2), MASKED);
      store<f32>(rowSum + (<usize>r << 2), 0);
      r++;
    }
  }
  memory.fill(accBase, 0, <usize>r * accStride);
  return r;
}

/**
 * Attention of `tokens` queries (at positions firstPosition …) over the keys of one layer.
 * See index.ts for the meaning of each argument.
 */
export function attendQueries(
  descriptor: usize, layer: i32, q: usize, tokens: i32, firstPosition: i32, end: i32, isCausal: i32, out: usize,
): void {
  setGeometry(descriptor, layer, end, isCausal);
  weightsMode = false;
  const tileTokens = tileRows / group;
  const rowBytes = <usize>headDim << 2;
  const kvHeads = heads / group;
  streaming = field(descriptor, STREAM) != 0 && tokens <= tileTokens;
  for (let t0 = 0; t0 < tokens; t0 += tileTokens) {
    const count = min(tileTokens, tokens - t0);
    for (let g = 0; g < kvHeads; g++) {
      selectHead(g);
      const rows = setupRows(q, out, rowBytes, t0, count, firstPosition, g);
      walkTile(rows);
      for (let r = 0; r < rows; r++) {
        const acc = accOf(r);
        const outRow = <usize>getI32(rowOut, r);
        const sum = load<f32>(rowSum + (<usize>r << 2));
        for (let c = 0; c < headDim; c++) store<f32>(outRow + (<usize>c << 2), load<f32>(acc + (<usize>c << 2)) / sum);
      }
    }
  }
}

/** The softmax probabilities [tokens][heads][keyCount] of the same computation (masked keys exactly 0). */
export function attentionWeights(
  descriptor: usize, layer: i32, q: usize, tokens: i32, firstPosition: i32, end: i32, isCausal: i32,
  out: usize, keyCount: i32,
): void {
  setGeometry(descriptor, layer, end, isCausal);
  weightsMode = true;
  streaming = false;
  const tileTokens = tileRows / group;
  const kvHeads = heads / group;
  const weightRowBytes = <usize>keyCount << 2;
  for (let t0 = 0; t0 < tokens; t0 += tileTokens) {
    const count = min(tileTokens, tokens - t0);
    for (let g = 0; g < kvHeads; g++) {
      selectHead(g);
      const rows = setupRows(q, out, weightRowBytes, t0, count, firstPosition, g);
      for (let r = 0; r < rows; r++) memory.fill(<usize>getI32(rowOut, r), 0, weightRowBytes);
      walkTile(rows);
      for (let r = 0; r < rows; r++) normalizeWeights(r, keyCount);
    }
  }
}

/** Weights, pass 1: copy row r's visible scores of the block to their positions; raise its maximum. */
function collectScores(r: i32, position: i32): void {
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

/** Weights, pass 2: e^(s − max) over the visible keys, divided by their sum; the rest stays 0. */
function normalizeWeights(r: i32, keyCount: i32): void {
  const row = <usize>getI32(rowOut, r);
  const m = load<f32>(rowMax + (<usize>r << 2));
  const sinkEnd = getI32(rowSinkEnd, r), first = getI32(rowFirst, r), last = getI32(rowLast, r);
  let sum: f32 = 0;
  for (let j = 0; j < keyCount; j++) {
    if (j < sinkEnd || (j >= first && j <= last)) {
      const at = row + (<usize>j << 2);
      const p = expScalar(load<f32>(at) - m);
      store<f32>(at, p);
      sum += p;
    }
  }
  for (let j = 0; j < keyCount; j++) {
    const at = row + (<usize>j << 2);
    store<f32>(at, load<f32>(at) / sum);
  }
}
