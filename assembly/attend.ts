// Causal attention over the cache with an online softmax (Milakov & Gimelshein 2018; FlashAttention).
//
// A *tile* is up to TILE_ROWS query rows that share one kv head: the `group` query heads of grouped-query
// attention, times as many consecutive tokens as fit. The tile walks the keys once, block by block; each
// key and value row is loaded once for every row of the tile (decode: the group; prefill: tokens × group).
// Per block and row: scores s = scale · q·k (softcapped), masked to the row's visible keys; the running
// maximum m rises to the block's, the running sum l and accumulator are rescaled by e^(m_old − m_new), and
// Σ e^(s − m) · v is added. No T×S score matrix exists: the scratch holds one block of scores per row.
//
// Bit-identical prefill, decode and chunked prefill: blocks are *canonical*, cut where an even page of the
// cache begins (slot a multiple of BLOCK = two pages, layout.ts), at the end of the sinks and where the ring
// wraps, and at the odd page after a block that began inside the pair (all functions of position alone),
// so a block is one page or a pair of pages from an even page's start, and each row processes exactly the
// blocks that hold keys it may see, with lanes counted from the block's start. A row's arithmetic
// therefore never depends on which other rows share its tile or how tokens were batched.
// Two pages a block instead of one halve the per-block work (the walk, the online softmax's bookkeeping,
// each kernel's setup): measured interleaved against one-page blocks, decode 1.01–1.05× and prefill
// 1.04–1.05× (relaxed-simd and simd, GPT-2 and Llama shapes). int8 caches keep one-page blocks: their
// kernels read each page's row scales beside its rows, and were not reworked for pairs.
//
// Chunks (flash-decoding), for threads: the keys are also cut every CHUNK positions (16 pages). A row walks
// each chunk that holds keys it sees from a fresh softmax state (max, sum, accumulator), and the chunks'
// states are folded in position order (foldRow). A tile may walk its chunks itself, folding as it goes
// (tile mode: prefill, and every call on one thread), or each chunk may be a piece of its own whose state
// waits in memory until every piece is done (chunk mode: a decode step on several threads). Both do the
// same arithmetic for a row, so outputs are the same bits at any thread count.

import { MASKED, expScalar, softcapScalar, exp4, softcap4, horizontalMax, horizontalSum } from './math';
import { scalesOf, slotOf } from './layout';
import { accumulateI8, accumulateI8x2, accumulateI8x4, int8ScratchBytes, quantizeQuery, quantizeWeights, scoresI8, scoresI8x2, setInt8Area } from './int8';
import {
  HEADS, HEAD_DIM, INT8, KV_HEADS, OUT, PAGE_ROWS, PAGE_SHIFT, Q, RING, SCALE, SCRATCH, SINKS, SOFTCAP, STREAM, WINDOW,
  address, field, fieldF32, pageTable, tableCapacity,
} from './descriptor';
import {
  CAUSAL, CHUNK_COUNT, CHUNK_FIRST, CHUNK_MODE, CHUNK_SINKS, DESCRIPTOR, FIRST_POSITION, KEY_END, LAYER, MODE,
  PARTIALS, PARTIAL_CAPACITY, PARTIAL_NEEDED, PIECES, ROWS, SCRATCH_BASE, SCRATCH_STRIDE, TILE_MODE, TOKENS,
  claim, jobWord, setJobWord,
} from './job';
import { dot2x4Dim64, dot2x4F32, dot4F32, dot8F32, dotScalarF32 } from './score';
import { accumulate1, accumulate2 } from './values';

/** A canonical block is at most two pages of the cache (float32 caches; int8 blocks stay within one page). */
export const BLOCK: i32 = 2 * PAGE_ROWS;
/** The most keys of an int8 block: the integer kernels' weights per row (int8.ts). */
const INT8_BLOCK: i32 = PAGE_ROWS;
/** Query rows per tile: enough to reuse each key many times, few enough that a tile's state stays in L1/L2. */
const TILE_ROWS: i32 = 16;
/** Positions per chunk: the unit of work a decode step is cut into for threads (a multiple of BLOCK). */
export const CHUNK: i32 = 16 * PAGE_ROWS;

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
//   int8 caches: the integer kernels' working area (int8.ts: queries and block weights as int16) · then per row:
//   running max, running sum (f32); query and output addresses; visible set (sinkEnd, first, last);
//   visible lanes of the current block (from, to); the list of rows active in the block; whether the row
//   saw a key in the current chunk; then the state folded over the chunks so far: accumulator
//   [row][accStride], max, sum, and whether any chunk was folded in yet.
let tileRows: i32 = 1;
let accStride: usize = 0;      // bytes
let accBase: usize = 0;
let probBase: usize = 0;
let factorBase: usize = 0;
let int8Area: usize = 0;
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
let rowSeen: usize = 0;
let foldAcc: usize = 0;
let foldMax: usize = 0;
let foldSum: usize = 0;
let foldSeen: usize = 0;

// @ts-ignore: decorator
@inline function tileTokensFor(rowsPerToken: i32): i32 {
  return max(1, TILE_ROWS / rowsPerToken);
}

/** Bytes of scratch one attend/weights call needs. */
export function scratchBytesFor(queryHeads: i32, kvHeads: i32, dim: i32): usize {
  const perToken = queryHeads / kvHeads;
  const rows = <usize>(tileTokensFor(perToken) * perToken);
  const stride = <usize>((dim + 3) & ~3) << 2;
  return rows * (2 * stride + (<usize>BLOCK << 2) + 4 * 14) + (<usize>BLOCK << 2) + int8ScratchBytes(rows, dim, INT8_BLOCK) + 64;
}

/**
 * Reads the geometry and scoring of `layer` from the descriptor; `end` and `isCausal` are the call's;
 * `scratch`: this thread's scratch (scratchBytesFor bytes).
 */
function setGeometry(descriptor: usize, layer: i32, end: i32, isCausal: i32, scratch: usize): void {
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
  accBase = scratch;
  probBase = accBase + rows * accStride;
  factorBase = probBase + (rows * <usize>BLOCK << 2);
  int8Area = factorBase + (<usize>BLOCK << 2);
  setInt8Area(int8Area, tileRows, dim, INT8_BLOCK);
  rowMax = int8Area + int8ScratchBytes(rows, dim, INT8_BLOCK);
  rowSum = rowMax + (rows << 2);
  rowQuery = rowSum + (rows << 2);
  rowOut = rowQuery + (rows << 2);
  rowSinkEnd = rowOut + (rows << 2);
  rowFirst = rowSinkEnd + (rows << 2);
  rowLast = rowFirst + (rows << 2);
  rowFrom = rowLast + (rows << 2);
  rowTo = rowFrom + (rows << 2);
  activeRows = rowTo + (rows << 2);
  rowSeen = activeRows + (rows << 2);
  foldMax = rowSeen + (rows << 2);
  foldSum = foldMax + (rows << 2);
  foldSeen = foldSum + (rows << 2);
  foldAcc = foldSeen + (rows << 2);
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
 * The slot where the canonical block holding `slot` starts. Cuts: the start of every even page (a slot that
 * is a multiple of BLOCK), the end of the sinks and the ring's wrap; and a page's start wherever the block
 * before it began inside the page pair (the ring's first block, which begins at the end of the sinks). So a
 * block spans two pages only from the start of an even page. int8 caches cut at every page.
 */
// @ts-ignore: decorator
@inline function blockStartSlot(slot: i32): i32 {
  const page = slot - slot % PAGE_ROWS;
  if (int8) return slot < sinks ? page : max(page, sinks); // int8: one page a block
  const pair = slot - slot % BLOCK;
  if (slot < sinks) return pair;
  return max(max(pair, sinks), sinks > pair ? page : pair);
}

/** The canonical block that holds `position` starts at blockStartSlot of its slot (a function of position alone). */
// @ts-ignore: decorator
@inline function blockStart(position: i32): i32 {
  const slot = slotOf(position, sinks, ring);
  return position - (slot - blockStartSlot(slot));
}

/**
 * The end of the block walked from `position` (a block's start, or a chunk's cut inside one): two pages from
 * the start of an even page, else the end of its page; never past the end of the sinks or the ring's wrap.
 */
// @ts-ignore: decorator
@inline function blockEnd(position: i32): i32 {
  const slot = slotOf(position, sinks, ring);
  const span = !int8 && slot % BLOCK == 0 ? BLOCK : PAGE_ROWS;
  const limit = slot - slot % PAGE_ROWS + span;
  const rows = (position < sinks ? min(limit, sinks) : min(limit, sinks + ring)) - slot;
  // saturate rather than wrap past the last i32 position (callers take min(blockEnd, end) anyway)
  return position > 0x7fffffff - rows ? 0x7fffffff : position + rows;
}

/**
 * Walks the tile's rows (already set up) over every block in positions [lo, hi) that holds a key one of
 * them may see (a block that begins before lo is cut there: chunks cut blocks too).
 */
function walkTile(rows: i32, lo: i32, hi: i32): void {
  let start = 0x7fffffff, end = 0;
  for (let r = 0; r < rows; r++) {
    start = min(start, getI32(rowSinkEnd, r) > 0 ? 0 : getI32(rowFirst, r));
    end = max(end, getI32(rowLast, r) + 1);
  }
  end = min(end, hi);
  if (start >= end) return;
  if (streaming) {
    // touches stop at the end of the sinks only where a gap follows them (a window that begins past them)
    walkEnd = end;
    let sinkEnd = 0, first = 0x7fffffff;
    for (let r = 0; r < rows; r++) {
      sinkEnd = max(sinkEnd, getI32(rowSinkEnd, r));
      if (getI32(rowFirst, r) <= getI32(rowLast, r)) first = min(first, getI32(rowFirst, r));
    }
    walkSinkEnd = sinkEnd < first ? sinkEnd : 0;
    touchedEnd = 0;
  }
  let position = max(blockStart(start), lo);
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
        setI32(rowSeen, r, 1);
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
// of queries per kv head (decode-like: nothing is reused across tiles). Measured slower, interleaved, and
// so not used: touching the next block before computing this one (0.83–1.01×), spreading the next block's
// touches through the score loop (0.64–0.89×), one load a 128-byte pair of lines (0.71–0.80× beyond L3)
// and four lines an iteration (no gain). A missing load holds the reorder buffer until it returns, so
// touches that wait behind compute keep fewer misses in flight than touches issued back to back. Also
// slower (issue #12, interleaved): touching the value block after scoring for K/V in the L3 (0.92–0.96×),
// touching the four 4 KiB pages of a 16 KiB page round-robin (no gain at 34–48 MB), and touching lines 2–3
// of each value row in accumulate1's first half (0.91–0.96× at 12.6 MB).
// The touches run ahead in spans of TOUCH_BYTES of K and V (the K rows of the span, then its V rows), not a
// block at a time: long runs of lines touched back to back, for the hardware prefetchers to follow. Measured
// interleaved against touching each block (two pages) before computing it, one thread, L = 8,192: GPT-2
// 1.12–1.17×, Llama 1.06×; spans of 128 KiB 0.96×, 256 KiB – 2 MiB alike. With spans the touches would also
// pay for a Llama-shaped layer of 14.7–16.8 MB (1.08–1.15×) but still not for GPT-2's of 12.6–18.9 MB
// (0.75–0.92×), so STREAM_BYTES stays at 20 MiB.
let streaming: bool = false;
let touched: i32 = 0; // keeps the touching loads alive

let walkEnd: i32 = 0;     // the walk in progress (walkTile) ends here,
let walkSinkEnd: i32 = 0; // its rows' sinks end here where a gap follows (never touched), else 0,
let touchedEnd: i32 = 0;  // and its keys and values below this position are touched
const TOUCH_BYTES: i32 = 512 << 10;

/**
 * Touches the K rows, then the V rows, of the positions from `position` on, TOUCH_BYTES of K and V (at least a
 * block), up to the end of the walk (or of its sinks, from inside them).
 */
function touchAhead(position: i32): void {
  const span = max(BLOCK, (TOUCH_BYTES / (2 * <i32>keyRowBytes)) & ~(PAGE_ROWS - 1));
  let stop = walkEnd - position <= span ? walkEnd : position + span; // no i32 overflow near the last position
  if (position < walkSinkEnd) stop = min(stop, walkSinkEnd);
  for (let kind = 0; kind < 2; kind++) {
    const table = kind == 0 ? keyTable : valueTable;
    for (let p = position; p < stop; ) {
      const slot = slotOf(p, sinks, ring);
      const row = slot & (PAGE_ROWS - 1);
      let rows = min(PAGE_ROWS - row, stop - p);
      rows = p < sinks ? min(rows, sinks - p) : min(rows, sinks + ring - slot);
      const page = <usize>load<u32>(table + (<usize>(slot >> PAGE_SHIFT) << 2));
      touchLines(page + <usize>row * keyRowBytes, <usize>rows * keyRowBytes);
      p += rows;
    }
  }
  touchedEnd = stop;
}

function touchLines(from: usize, bytes: usize): void {
  let x: i32 = 0;
  for (let at = from; at < from + bytes; at += 64) x |= load<i32>(at);
  touched ^= x;
}

function visitBlock(position: i32, n: i32): void {
  const slot = slotOf(position, sinks, ring);
  const entry = <usize>(slot >> PAGE_SHIFT) << 2;
  const row = slot & (PAGE_ROWS - 1);
  // lanes [0, split) lie in the page of `slot`, lanes [split, n) at the start of the next one (a block spans
  // two pages only from the start of an even page: split = PAGE_ROWS there)
  const split = min(n, PAGE_ROWS - row);
  const keyPage = <usize>load<u32>(keyTable + entry);
  const valuePage = weightsMode ? keyPage : <usize>load<u32>(valueTable + entry);
  const keys = keyPage + <usize>row * keyRowBytes;
  const values = valuePage + <usize>row * keyRowBytes;
  let nextKeys: usize = 0, nextValues: usize = 0;
  if (split < n) {
    nextKeys = <usize>load<u32>(keyTable + entry + 4);
    nextValues = weightsMode ? nextKeys : <usize>load<u32>(valueTable + entry + 4);
  }
  if (streaming && !weightsMode && position + n > touchedEnd) touchAhead(max(position, touchedEnd));
  // int8: the rows stay int8 (int8.ts computes on them in integers); their scales lie after the page's rows
  if (int8) {
    keyScaleBlock = scalesOf(keyPage, headDim) + (<usize>row << 2);
    valueScaleBlock = scalesOf(valuePage, headDim) + (<usize>row << 2);
    scoreBlockI8(keys, n);
  } else {
    scoreBlock(keys, 0, split);
    if (split < n) scoreBlock(nextKeys, split, n);
  }
  for (let i = 0; i < activeCount; i++) {
    const r = getI32(activeRows, i);
    const blockMax = maskScores(r);
    if (weightsMode) collectScores(r, position);
    else softmaxBlock(r, blockMax);
  }
  if (weightsMode) return;
  if (int8) {
    accumulateBlockI8(values, n);
  } else {
    accumulateBlock(values, 0, split);
    if (split < n) accumulateBlock(nextValues, split, n);
  }
}

// ---------------------------------------------------------------------------------------- scores

/**
 * probs[r][j] = q_r · k_j for every active row r and the lanes j in [lo, hi) of the groups of four that
 * cover its visible keys (lanes counted from the block's start; `keys`: lane lo's row). A block that spans
 * two pages is scored a page at a time (lo = 0, then PAGE_ROWS: a group never straddles the pages).
 */
function scoreBlock(keys: usize, lo: i32, hi: i32): void {
  const rowBytes = <usize>headDim << 2;
  const last = hi - 1; // lanes past it read the page's last key (maskScores masks them)
  let i = 0;
  if (ASC_FEATURE_SIMD) {
    // rows two at a time, keys four at a time
    for (; i + 1 < activeCount; i += 2) {
      const ra = getI32(activeRows, i), rb = getI32(activeRows, i + 1);
      const qa = <usize>getI32(rowQuery, ra), qb = <usize>getI32(rowQuery, rb);
      const from = max(min(getI32(rowFrom, ra), getI32(rowFrom, rb)), lo) & ~3;
      const to = min(max(getI32(rowTo, ra), getI32(rowTo, rb)), hi);
      let j = from;
      if (headDim == 64) {
        for (; j < to && j + 4 <= hi; j += 4) {
          dot2x4Dim64(qa, qb, keys + <usize>(j - lo) * rowBytes, probsOf(ra) + (<usize>j << 2), probsOf(rb) + (<usize>j << 2));
        }
      }
      for (; j < to; j += 4) {
        const k0 = keys + <usize>(j - lo) * rowBytes;
        const k1 = keys + <usize>(min(j + 1, last) - lo) * rowBytes;
        const k2 = keys + <usize>(min(j + 2, last) - lo) * rowBytes;
        const k3 = keys + <usize>(min(j + 3, last) - lo) * rowBytes;
        dot2x4F32(qa, qb, k0, k1, k2, k3, headDim, probsOf(ra) + (<usize>j << 2), probsOf(rb) + (<usize>j << 2));
      }
    }
    if (i < activeCount) {
      const r = getI32(activeRows, i);
      const q = <usize>getI32(rowQuery, r);
      let j = max(getI32(rowFrom, r), lo) & ~3;
      const to = min(getI32(rowTo, r), hi);
      // eight keys at a time while all eight exist, then four (clamped to the page's last key)
      for (; j + 8 <= hi && j < to; j += 8) {
        dot8F32(q, keys + <usize>(j - lo) * rowBytes, rowBytes, headDim, probsOf(r) + (<usize>j << 2));
      }
      for (; j < to; j += 4) {
        const k0 = keys + <usize>(j - lo) * rowBytes;
        const k1 = keys + <usize>(min(j + 1, last) - lo) * rowBytes;
        const k2 = keys + <usize>(min(j + 2, last) - lo) * rowBytes;
        const k3 = keys + <usize>(min(j + 3, last) - lo) * rowBytes;
        v128.store(probsOf(r) + (<usize>j << 2), dot4F32(q, k0, k1, k2, k3, headDim));
      }
    }
  } else {
    for (; i < activeCount; i++) {
      const r = getI32(activeRows, i);
      const q = <usize>getI32(rowQuery, r);
      const to = min(getI32(rowTo, r), hi);
      for (let j = max(getI32(rowFrom, r), lo); j < to; j++) {
        store<f32>(probsOf(r) + (<usize>j << 2), dotScalarF32(q, keys + <usize>(j - lo) * rowBytes, headDim));
      }
    }
  }
}

/** scoreBlock's dot products over int8 keys (int8.ts), rows two at a time. */
function scoreBlockI8(keys: usize, n: i32): void {
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

/**
 * Turns row r's dot products into scores over its groups of four, lanes it may not see becoming MASKED,
 * and returns the largest score (the block maximum the online softmax needs: one pass, not two).
 */
function maskScores(r: i32): f32 {
  const row = probsOf(r);
  const from = getI32(rowFrom, r), to = getI32(rowTo, r);
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
  return s;
}

/** Scores the groups j in [from, to) of `row` in place; returns m raised to their maximum. */
function scoreGroups(row: usize, from: i32, to: i32, m: v128): v128 {
  // without a softcap, each case its own loop: one multiply and one max a group (the softcap's code in the
  // same loop, exp and all, made V8 spill the running max in int8's: 5–8% of an int8 decode step)
  const last = row + (<usize>to << 2);
  if (softcap == 0 && !int8) {
    const s = f32x4.splat(scale);
    for (let at = row + (<usize>from << 2); at < last; at += 16) {
      const x = f32x4.mul(v128.load(at), s);
      v128.store(at, x);
      m = f32x4.pmax(m, x);
    }
    return m;
  }
  if (softcap == 0) {
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

// --------------------------------------------------------------------------------- online softmax
// The exp pass costs 11–15% of a decode step (perf, GPT-2 / Llama shapes), ~15 cycles a group of four for
// its ~26 vector operations; fewer instructions did not make it faster. Measured, interleaved, and not kept
// (issue #12): two rows' exps in one loop (0.95×: V8 hoists both groups' constant loads and spills), the
// constants loaded once before the loop (38 instructions a group instead of 47, 1.00×), and a softmax fused
// into scoring that exps each group right after its dot products with the row's previous max and redoes
// the block when its max rises (the same bits; 0.87–0.92×: more operations a group, and redone blocks).

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

/**
 * Adds Σ p · v over the lanes [lo, hi) of the block for every active row (`values`: lane lo's row): pairs
 * share value loads over their common keys.
 */
function accumulateBlock(values: usize, lo: i32, hi: i32): void {
  const rowBytes = <usize>headDim << 2;
  const lanes = <usize>lo << 2; // the rows' weights from lane lo on
  let i = 0;
  for (; i + 1 < activeCount; i += 2) {
    const ra = getI32(activeRows, i), rb = getI32(activeRows, i + 1);
    const fa = max(getI32(rowFrom, ra), lo) - lo, ta = min(getI32(rowTo, ra), hi) - lo;
    const fb = max(getI32(rowFrom, rb), lo) - lo, tb = min(getI32(rowTo, rb), hi) - lo;
    const pa = probsOf(ra) + lanes, pb = probsOf(rb) + lanes;
    const from = max(fa, fb), to = min(ta, tb);
    if (from >= to) {
      if (fa < ta) accumulate1(accOf(ra), pa, values, rowBytes, fa, ta, headDim);
      if (fb < tb) accumulate1(accOf(rb), pb, values, rowBytes, fb, tb, headDim);
      continue;
    }
    // each row's keys stay in ascending order: its own head, the shared middle, its own tail
    if (fa < from) accumulate1(accOf(ra), pa, values, rowBytes, fa, from, headDim);
    if (fb < from) accumulate1(accOf(rb), pb, values, rowBytes, fb, from, headDim);
    accumulate2(accOf(ra), pa, accOf(rb), pb, values, rowBytes, from, to, headDim);
    if (to < ta) accumulate1(accOf(ra), pa, values, rowBytes, to, ta, headDim);
    if (to < tb) accumulate1(accOf(rb), pb, values, rowBytes, to, tb, headDim);
  }
  if (i < activeCount) {
    const r = getI32(activeRows, i);
    const f = max(getI32(rowFrom, r), lo) - lo, t = min(getI32(rowTo, r), hi) - lo;
    if (f < t) accumulate1(accOf(r), probsOf(r) + lanes, values, rowBytes, f, t, headDim);
  }
}

/** accumulateBlock over int8 values (int8.ts): each row's weights (scaled by the value rows' scales) as int16, rows two at a time. */
function accumulateBlockI8(values: usize, n: i32): void {
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

// ------------------------------------------------------------------------------------ entry points

/** Sets up the rows of tokens [t0, t0 + count) × the group of kv head g. */
function setupRows(q: usize, out: usize, outRowBytes: usize, t0: i32, count: i32, firstPosition: i32, g: i32): i32 {
  const rowBytes = <usize>headDim << 2;
  let r = 0;
  for (let t = t0; t < t0 + count; t++) {
    for (let h = 0; h < group; h++) {
      const index = <usize>(t * heads + g * group + h);
      setI32(rowQuery, r, <i32>(q + index * rowBytes));
      if (int8) quantizeQuery(r, q + index * rowBytes, headDim);
      setI32(rowOut, r, <i32>(out + index * outRowBytes));
      setVisible(r, firstPosition + t);
      r++;
    }
  }
  resetChunk(r);
  return r;
}

/** Fresh softmax state for a chunk: rows saw nothing, max −∞, sum 0, accumulator 0. */
function resetChunk(rows: i32): void {
  for (let r = 0; r < rows; r++) {
    setI32(rowSeen, r, 0);
    store<f32>(rowMax + (<usize>r << 2), MASKED);
    store<f32>(rowSum + (<usize>r << 2), 0);
  }
  memory.fill(accBase, 0, <usize>rows * accStride);
}

/**
 * Folds one chunk's state of row r (seen, max m, sum l, accumulator acc) into the row's state over the
 * chunks before it, in position order: the first chunk it saw is copied; each later one is merged as
 * M = max(m₀, m), l₀ ← l₀·e^(m₀−M) + l·e^(m−M), acc₀ ← acc₀·e^(m₀−M) + acc·e^(m−M).
 */
function foldRow(r: i32, seen: i32, m: f32, l: f32, acc: usize): void {
  if (seen == 0) return;
  const into = foldAcc + <usize>r * accStride;
  const maxAt = foldMax + (<usize>r << 2), sumAt = foldSum + (<usize>r << 2);
  if (getI32(foldSeen, r) == 0) {
    setI32(foldSeen, r, 1);
    store<f32>(maxAt, m);
    store<f32>(sumAt, l);
    memory.copy(into, acc, <usize>headDim << 2);
    return;
  }
  const m0 = load<f32>(maxAt);
  const top = max<f32>(m0, m);
  const a = expScalar(m0 - top), b = expScalar(m - top);
  store<f32>(maxAt, top);
  store<f32>(sumAt, load<f32>(sumAt) * a + l * b);
  let c = 0;
  if (ASC_FEATURE_SIMD) {
    const av = f32x4.splat(a), bv = f32x4.splat(b);
    for (; c + 4 <= headDim; c += 4) {
      const at = into + (<usize>c << 2);
      v128.store(at, f32x4.add(f32x4.mul(v128.load(at), av), f32x4.mul(v128.load(acc + (<usize>c << 2)), bv)));
    }
  }
  for (; c < headDim; c++) {
    const at = into + (<usize>c << 2);
    store<f32>(at, load<f32>(at) * a + load<f32>(acc + (<usize>c << 2)) * b);
  }
}

/** out = folded accumulator / folded sum, for every row of the tile (0/0 for a row that saw no key). */
function writeOut(rows: i32): void {
  for (let r = 0; r < rows; r++) {
    const acc = foldAcc + <usize>r * accStride;
    const outRow = <usize>getI32(rowOut, r);
    if (getI32(foldSeen, r) == 0) {
      memory.fill(acc, 0, <usize>headDim << 2);
      store<f32>(foldSum + (<usize>r << 2), 0);
    }
    const sum = load<f32>(foldSum + (<usize>r << 2));
    for (let c = 0; c < headDim; c++) store<f32>(outRow + (<usize>c << 2), load<f32>(acc + (<usize>c << 2)) / sum);
  }
}

// The chunks a tile's rows see: those of the sinks, then those from the lowest window key to the highest
// (the gap between is skipped). Functions of the rows' positions alone.
let chunkSinks: i32 = 0;
let chunkFirst: i32 = 0;
let chunkCount: i32 = 0;

function planChunks(rows: i32): void {
  let sinkEnd = 0, first = 0x7fffffff, last = -1;
  for (let r = 0; r < rows; r++) {
    sinkEnd = max(sinkEnd, getI32(rowSinkEnd, r));
    const f = getI32(rowFirst, r), l = getI32(rowLast, r);
    if (f <= l) {
      first = min(first, f);
      last = max(last, l);
    }
  }
  chunkSinks = (sinkEnd + CHUNK - 1) / CHUNK;
  chunkFirst = max(first / CHUNK, chunkSinks);
  chunkCount = chunkSinks + (last < 0 ? 0 : max(0, last / CHUNK - chunkFirst + 1));
}

// @ts-ignore: decorator
@inline function chunkAt(i: i32): i32 {
  return i < chunkSinks ? i : chunkFirst + i - chunkSinks;
}

/** Walks chunk i (of planChunks) for the tile's rows from a fresh state. */
function walkChunk(rows: i32, i: i32): void {
  const lo = chunkAt(i) * CHUNK;
  resetChunk(rows);
  walkTile(rows, lo, lo + CHUNK);
}

/** Tile mode: tokens [t0, t0 + count) of kv head g's group, over all their chunks, folded as they come. */
function runTile(q: usize, out: usize, t0: i32, count: i32, firstPosition: i32, g: i32): void {
  selectHead(g);
  const rows = setupRows(q, out, <usize>headDim << 2, t0, count, firstPosition, g);
  memory.fill(foldSeen, 0, <usize>rows << 2);
  planChunks(rows);
  for (let i = 0; i < chunkCount; i++) {
    walkChunk(rows, i);
    for (let r = 0; r < rows; r++) {
      foldRow(r, getI32(rowSeen, r), load<f32>(rowMax + (<usize>r << 2)), load<f32>(rowSum + (<usize>r << 2)), accOf(r));
    }
  }
  writeOut(rows);
}

/**
 * Attention of `tokens` queries (at positions firstPosition …) over the keys of one layer, on the calling
 * thread alone (tile mode). See index.ts for the meaning of each argument.
 */
export function attendQueries(
  descriptor: usize, layer: i32, q: usize, tokens: i32, firstPosition: i32, end: i32, isCausal: i32, out: usize,
): void {
  setGeometry(descriptor, layer, end, isCausal, address(descriptor, SCRATCH));
  weightsMode = false;
  const tileTokens = tileRows / group;
  const kvHeads = heads / group;
  streaming = field(descriptor, STREAM) != 0 && tokens <= tileTokens;
  for (let t0 = 0; t0 < tokens; t0 += tileTokens) {
    const count = min(tileTokens, tokens - t0);
    for (let g = 0; g < kvHeads; g++) runTile(q, out, t0, count, firstPosition, g);
  }
}

// ------------------------------------------------------------------------------------------ threads

/** Bytes of one row's state in chunk mode's partials: seen, max, sum, a pad word, then the accumulator. */
// @ts-ignore: decorator
@inline function partialRowBytes(): usize {
  return 16 + accStride;
}

/**
 * Plans the job of an attend call (the queries already rotated) for any number of threads: chunk mode
 * when the call is one tile per kv head and its chunk states fit in the job's partials, tile mode
 * otherwise. Returns the number of pieces.
 */
export function planJob(job: usize): i32 {
  const descriptor = <usize>jobWord(job, DESCRIPTOR);
  const tokens = jobWord(job, TOKENS), firstPosition = jobWord(job, FIRST_POSITION);
  setGeometry(descriptor, jobWord(job, LAYER), jobWord(job, KEY_END), jobWord(job, CAUSAL), <usize>jobWord(job, SCRATCH_BASE));
  const tileTokens = tileRows / group;
  const kvHeads = heads / group;
  let mode = TILE_MODE, pieces = kvHeads * ((tokens + tileTokens - 1) / tileTokens);
  setJobWord(job, PARTIAL_NEEDED, 0);
  if (tokens <= tileTokens) {
    const rows = setupRows(address(descriptor, Q), address(descriptor, OUT), <usize>headDim << 2, 0, tokens, firstPosition, 0);
    planChunks(rows);
    const needed = <usize>kvHeads * <usize>chunkCount * <usize>rows * partialRowBytes();
    if (chunkCount > 1) {
      setJobWord(job, PARTIAL_NEEDED, <i32>min<usize>(needed, 0x7fffffff));
      if (needed <= <usize>jobWord(job, PARTIAL_CAPACITY)) {
        mode = CHUNK_MODE;
        pieces = kvHeads * chunkCount;
        setJobWord(job, CHUNK_SINKS, chunkSinks);
        setJobWord(job, CHUNK_FIRST, chunkFirst);
        setJobWord(job, CHUNK_COUNT, chunkCount);
        setJobWord(job, ROWS, rows);
      }
    }
  }
  setJobWord(job, MODE, mode);
  setJobWord(job, PIECES, pieces);
  return pieces;
}

/** Claims and runs pieces of the job until none are left, as thread `thread`; returns how many it ran. */
export function work(job: usize, thread: i32): i32 {
  const descriptor = <usize>jobWord(job, DESCRIPTOR);
  const tokens = jobWord(job, TOKENS), firstPosition = jobWord(job, FIRST_POSITION);
  const pieces = jobWord(job, PIECES);
  const scratch = <usize>jobWord(job, SCRATCH_BASE) + <usize>thread * <usize>jobWord(job, SCRATCH_STRIDE);
  setGeometry(descriptor, jobWord(job, LAYER), jobWord(job, KEY_END), jobWord(job, CAUSAL), scratch);
  weightsMode = false;
  const q = address(descriptor, Q), out = address(descriptor, OUT);
  const tileTokens = tileRows / group;
  const chunkMode = jobWord(job, MODE) == CHUNK_MODE;
  streaming = field(descriptor, STREAM) != 0 && tokens <= tileTokens;
  if (chunkMode) {
    chunkSinks = jobWord(job, CHUNK_SINKS);
    chunkFirst = jobWord(job, CHUNK_FIRST);
    chunkCount = jobWord(job, CHUNK_COUNT);
  }
  let done = 0;
  for (let piece = claim(job); piece < pieces; piece = claim(job)) {
    if (chunkMode) {
      const g = piece / chunkCount, i = piece % chunkCount;
      selectHead(g);
      const rows = setupRows(q, out, <usize>headDim << 2, 0, tokens, firstPosition, g);
      walkChunk(rows, i);
      let at = <usize>jobWord(job, PARTIALS) + <usize>piece * <usize>rows * partialRowBytes();
      for (let r = 0; r < rows; r++) {
        store<i32>(at, getI32(rowSeen, r));
        store<f32>(at, load<f32>(rowMax + (<usize>r << 2)), 4);
        store<f32>(at, load<f32>(rowSum + (<usize>r << 2)), 8);
        memory.copy(at + 16, accOf(r), <usize>headDim << 2);
        at += partialRowBytes();
      }
    } else {
      // the last tiles first: causal tiles grow with their position, so the big ones are handed out early
      // and the small ones fill in at the end (the bits do not depend on who runs which tile)
      const kvHeads = heads / group;
      const tiles = (tokens + tileTokens - 1) / tileTokens;
      const t0 = (tiles - 1 - piece / kvHeads) * tileTokens, g = piece % kvHeads;
      runTile(q, out, t0, min(tileTokens, tokens - t0), firstPosition, g);
    }
    done++;
  }
  return done;
}

/** After every piece is done: chunk mode folds each row's chunk states in position order into out. */
export function finishJob(job: usize): void {
  if (jobWord(job, MODE) != CHUNK_MODE) return;
  const descriptor = <usize>jobWord(job, DESCRIPTOR);
  setGeometry(descriptor, jobWord(job, LAYER), jobWord(job, KEY_END), jobWord(job, CAUSAL), <usize>jobWord(job, SCRATCH_BASE));
  const q = address(descriptor, Q), out = address(descriptor, OUT);
  const tokens = jobWord(job, TOKENS), firstPosition = jobWord(job, FIRST_POSITION);
  const count = jobWord(job, CHUNK_COUNT);
  const kvHeads = heads / group;
  const partials = <usize>jobWord(job, PARTIALS);
  for (let g = 0; g < kvHeads; g++) {
    const rows = setupRows(q, out, <usize>headDim << 2, 0, tokens, firstPosition, g);
    memory.fill(foldSeen, 0, <usize>rows << 2);
    for (let i = 0; i < count; i++) {
      let at = partials + <usize>(g * count + i) * <usize>rows * partialRowBytes();
      for (let r = 0; r < rows; r++) {
        foldRow(r, load<i32>(at), load<f32>(at, 4), load<f32>(at, 8), at + 16);
        at += partialRowBytes();
      }
    }
    writeOut(rows);
  }
}

/** The softmax probabilities [tokens][heads][keyCount] of the same computation (masked keys exactly 0). */
export function attentionWeights(
  descriptor: usize, layer: i32, q: usize, tokens: i32, firstPosition: i32, end: i32, isCausal: i32,
  out: usize, keyCount: i32,
): void {
  setGeometry(descriptor, layer, end, isCausal, address(descriptor, SCRATCH));
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
      walkTile(rows, 0, 0x7fffffff);
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
