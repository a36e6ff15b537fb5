// A tile: up to TILE_ROWS query rows that share one kv head (the `group` query heads of grouped-query
// attention, times as many consecutive tokens as fit), which walk the keys once, block by block, so each
// key and value row is loaded once for every row of the tile. Here: the tile's rows and the keys each one
// sees, the canonical blocks, the walk over them (each block scored, masked, folded into the rows' online
// softmax and values), the chunks it is cut into, and the rows' output.
//
// Bit-identical prefill, decode and chunked prefill: blocks are *canonical*, cut where an even page of the
// cache begins (slot a multiple of BLOCK = two pages, layout.ts), at the end of the sinks and where the ring
// wraps, and at the odd page after a block that began inside the pair (all functions of position alone),
// so a block is one page or a pair of pages from an even page's start, and each row processes exactly the
// blocks that hold keys it may see, with lanes counted from the block's start. A row's arithmetic
// therefore never depends on which other rows share its tile or how tokens were batched. Two pages a
// block instead of one halve the per-block work (bfloat16 caches too, widened as they load: bf16.ts); int8
// and int4 caches keep one-page blocks, because their kernels read each page's scales beside its rows and
// round a block's weights against one largest (docs/PERFORMANCE.md, "Kernel").

import {
  BLOCK, CHUNK, accStride, bfloat16, int4, keyScaleBlock, valueScaleBlock, alibiSlopes, activeCount, activeRows, addActiveRow, causal, clearActiveRows, foldAcc, foldMax,
  foldSeen, foldSum, getI32, group, headDim, heads, int8, keyEnd, keyRowBytes, keyTable, ring, rowFirst, rowFrom,
  rowLast, rowOut, rowPosition, rowQuery, rowSeen, rowSlope, rowSinkEnd, rowTo, setBlockScales, setI32, sinkLogits, sinks, valueTable,
  weightsMode, window, draftPosition, draftSees, treeBase, treePositions,
} from './call';
import { MASKED, expScalar } from '../math';
import { accumulateBlock, accumulateBlockI4, accumulateBlockI8 } from './accumulate';
import { PAGE_ROWS, PAGE_SHIFT } from '../descriptor';
import { quantizeQueryI4 } from '../int4';
import { quantizeQuery } from '../int8';
import { slotOf } from '../layout';
import { collectScores, maskDraftScores, maskScores, scoreBlock, scoreBlockI4, scoreBlockI8 } from './scores';
import { resetChunk, softmaxBlock } from './softmax';
import { startTouches, streaming, touchAhead, touchedEnd } from './stream';

/** The kv head whose query group the tile's rows are (setupRows): row r is query head tileGroup·group + r % group. */
let tileGroup: i32 = 0;

/** Sets up the rows of tokens [t0, t0 + count) × the group of kv head g. */
export function setupRows(q: usize, out: usize, outRowBytes: usize, t0: i32, count: i32, firstPosition: i32, g: i32): i32 {
  const rows = addRows(0, q, out, outRowBytes, t0, count, firstPosition, g);
  resetChunk(rows);
  return rows;
}

/**
 * Sets up rows from r0 on: tokens [t0, t0 + count) × the group of kv head g (no reset); returns the row
 * after the last. A batch's cascade (many.ts) puts several caches' rows in one tile this way.
 */
export function addRows(
  r0: i32, q: usize, out: usize, outRowBytes: usize, t0: i32, count: i32, firstPosition: i32, g: i32,
): i32 {
  const rowBytes = <usize>headDim << 2;
  tileGroup = g;
  let r = r0;
  for (let t = t0; t < t0 + count; t++) {
    for (let h = 0; h < group; h++) {
      const index = <usize>(t * heads + g * group + h);
      setI32(rowQuery, r, <i32>(q + index * rowBytes));
      if (int8) quantizeQuery(r, q + index * rowBytes, headDim);
      // int4: the keys were rotated before they were quantized (layout.ts), the query gets the same rotation
      if (int4) quantizeQueryI4(r, q + index * rowBytes, headDim);
      setI32(rowOut, r, <i32>(out + index * outRowBytes));
      // a draft of a tree is stored at firstPosition + t but stands at the position of its depth
      const stored = firstPosition + t;
      const position = treePositions != 0 ? draftPosition(stored - treeBase) : stored;
      setVisible(r, position, stored);
      setI32(rowPosition, r, position);
      if (alibiSlopes != 0) store<f32>(rowSlope + (<usize>r << 2), load<f32>(alibiSlopes + (<usize>(g * group + h) << 2)));
      r++;
    }
  }
  return r;
}

/**
 * Records which keys the query at `position`, stored at `stored`, sees: [0, sinkEnd) ∪ [first, last]. A
 * draft's keys among the drafts are further cut by its bits (walkTile, maskScores); `first` then also
 * reaches down to the lowest draft it sees, which may lie below its window when it is a sink by position.
 */
function setVisible(row: i32, position: i32, stored: i32): void {
  const last = causal ? min(stored, keyEnd - 1) : keyEnd - 1;
  let first = window > 0 ? max(0, position - window + 1) : 0;
  // attention sinks: the first `sinks` keys stay visible below the window
  const sinkEnd = min(min(sinks, first), last + 1);
  setI32(rowSinkEnd, row, sinkEnd);
  if (treePositions != 0) {
    const self = stored - treeBase;
    for (let j = max(0, sinkEnd - treeBase); j <= self && treeBase + j < first; j++) {
      if (draftSees(self, j)) {
        first = treeBase + j;
        break;
      }
    }
  }
  setI32(rowFirst, row, first);
  setI32(rowLast, row, last);
}

/**
 * The slot where the canonical block holding `slot` starts. Cuts: the start of every even page (a slot that
 * is a multiple of BLOCK), the end of the sinks and the ring's wrap; and a page's start wherever the block
 * before it began inside the page pair (the ring's first block, which begins at the end of the sinks). So a
 * block spans two pages only from the start of an even page. int8 and int4 caches cut at every page.
 */
// @ts-ignore: decorator
@inline function blockStartSlot(slot: i32): i32 {
  const page = slot - slot % PAGE_ROWS;
  if (int8 || int4) return slot < sinks ? page : max(page, sinks); // one page a block
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
  const span = !int8 && !int4 && slot % BLOCK == 0 ? BLOCK : PAGE_ROWS;
  const limit = slot - slot % PAGE_ROWS + span;
  const rows = (position < sinks ? min(limit, sinks) : min(limit, sinks + ring)) - slot;
  // saturate rather than wrap past the last i32 position (callers take min(blockEnd, end) anyway)
  return position > 0x7fffffff - rows ? 0x7fffffff : position + rows;
}

/**
 * Walks the tile's rows (already set up) over every block in positions [lo, hi) that holds a key one of
 * them may see (a block that begins before lo is cut there: chunks cut blocks too).
 */
export function walkTile(rows: i32, lo: i32, hi: i32): void {
  walkRows(0, rows, lo, hi);
}

/** walkTile for rows r0 … r1 − 1 of the tile only (the others keep their state). */
export function walkRows(r0: i32, r1: i32, lo: i32, hi: i32): void {
  const rows = r1;
  let start = 0x7fffffff, end = 0;
  for (let r = r0; r < rows; r++) {
    start = min(start, getI32(rowSinkEnd, r) > 0 ? 0 : getI32(rowFirst, r));
    end = max(end, getI32(rowLast, r) + 1);
  }
  end = min(end, hi);
  if (start >= end) return;
  if (streaming) startTouches(rows, end);
  let position = max(blockStart(start), lo);
  while (position < end) {
    const stop = min(blockEnd(position), end);
    // each row's visible keys in [position, stop): one interval (blocks never straddle the sinks' end)
    clearActiveRows();
    let resume = 0x7fffffff;
    for (let r = r0; r < rows; r++) {
      const sinkEnd = getI32(rowSinkEnd, r), first = getI32(rowFirst, r), last = getI32(rowLast, r);
      let from = stop, to = position;
      if (stop <= treeBase) {
        if (position < sinkEnd) { from = position; to = min(stop, sinkEnd); }
        const a = max(position, first), b = min(stop, last + 1);
        if (a < b) { from = min(from, a); to = max(to, b); }
      } else {
        // a block that holds drafts of a tree: the keys below treeBase as above, the drafts by the row's bits
        const keysEnd = min(stop, treeBase);
        if (position < sinkEnd && position < keysEnd) { from = position; to = min(keysEnd, sinkEnd); }
        const a = max(position, first), b = min(keysEnd, last + 1);
        if (a < b) { from = min(from, a); to = max(to, b); }
        const self = last - treeBase;
        for (let p = max(position, treeBase); p < min(stop, last + 1); p++) {
          if (draftSees(self, p - treeBase)) { from = min(from, p); to = max(to, p + 1); }
        }
      }
      if (from < to) {
        setI32(rowFrom, r, from - position);
        setI32(rowTo, r, to - position);
        addActiveRow(r);
        setI32(rowSeen, r, 1);
      } else if (first >= stop && first <= last) {
        resume = min(resume, first);
      } else if (stop > treeBase && last >= stop) {
        resume = min(resume, stop); // a draft's keys need not be one interval: it may see more past this block
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
  // int8 and int4: the rows stay as they are (int8.ts, int4.ts compute on them in integers); their scales lie
  // after the page's rows
  if (int8) {
    setBlockScales(keyPage, valuePage, row);
    scoreBlockI8(keys, n);
  } else if (int4) {
    setBlockScales(keyPage, valuePage, row);
    scoreBlockI4(keys, keyScaleBlock, n);
  } else if (bfloat16) {
    // bfloat16: widened as they load, inside the dot products (bf16.ts)
    scoreBlock<u16>(keys, 0, split);
    if (split < n) scoreBlock<u16>(nextKeys, split, n);
  } else {
    scoreBlock<f32>(keys, 0, split);
    if (split < n) scoreBlock<f32>(nextKeys, split, n);
  }
  // a block that holds drafts of a tree: their visibility and positions are the rows' bits' (scores.ts)
  const drafts = n > treeBase - position;
  for (let i = 0; i < activeCount; i++) {
    const r = getI32(activeRows, i);
    const blockMax = drafts ? maskDraftScores(r, position) : maskScores(r, position);
    if (weightsMode) collectScores(r, position);
    else softmaxBlock(r, blockMax);
  }
  if (weightsMode) return;
  if (int8) {
    accumulateBlockI8(values, n);
  } else if (int4) {
    accumulateBlockI4(values, valueScaleBlock, n);
  } else if (bfloat16) {
    accumulateBlock<u16>(values, 0, split);
    if (split < n) accumulateBlock<u16>(nextValues, split, n);
  } else {
    accumulateBlock<f32>(values, 0, split);
    if (split < n) accumulateBlock<f32>(nextValues, split, n);
  }
}

// The chunks a tile's rows see: those of the sinks, then those from the lowest window key to the highest
// (the gap between is skipped). Planned by planChunks (chunks.ts), or read from the job (work.ts).
export let chunkSinks: i32 = 0;
export let chunkFirst: i32 = 0;
export let chunkCount: i32 = 0;

// The chunks the tile's rows walk: chunk i < chunkSinks is chunk i, chunk i ≥ chunkSinks is chunk
// chunkFirst + i − chunkSinks, chunkCount in all (one setter each: they are set one after another).
// @ts-ignore: decorator
@inline export function setChunkSinks(count: i32): void {
  chunkSinks = count;
}

// @ts-ignore: decorator
@inline export function setChunkFirst(chunk: i32): void {
  chunkFirst = chunk;
}

// @ts-ignore: decorator
@inline export function setChunkCount(count: i32): void {
  chunkCount = count;
}

// @ts-ignore: decorator
@inline function chunkAt(i: i32): i32 {
  return i < chunkSinks ? i : chunkFirst + i - chunkSinks;
}

/** Walks chunk i (of the chunks set above) for the tile's rows from a fresh state. */
export function walkChunk(rows: i32, i: i32): void {
  const lo = chunkAt(i) * CHUNK;
  resetChunk(rows);
  // the chunk that ends at 2^31 ends at the last i32 instead (positions stop below it): lo + CHUNK would wrap
  walkTile(rows, lo, lo > 0x7fffffff - CHUNK ? 0x7fffffff : lo + CHUNK);
}

/**
 * out = folded accumulator / folded sum, for every row of the tile (0/0 for a row that saw no key). A
 * learned sink logit s joins the sum here, once per row after every chunk, as one more term of the online
 * softmax with no value: s <= m adds e^(s − m) to the sum; s > m rescales sum and accumulator by e^(m − s)
 * and adds 1. Every path (tile, chunks, any thread count) folds it at this one place, in this one order.
 */
export function writeOut(rows: i32): void {
  for (let r = 0; r < rows; r++) {
    const acc = foldAcc + <usize>r * accStride;
    const outRow = <usize>getI32(rowOut, r);
    if (getI32(foldSeen, r) == 0) {
      memory.fill(acc, 0, <usize>headDim << 2);
      store<f32>(foldSum + (<usize>r << 2), 0);
      store<f32>(foldMax + (<usize>r << 2), MASKED);
    }
    let sum = load<f32>(foldSum + (<usize>r << 2));
    let kept: f32 = 1; // what the sink's fold leaves of the accumulator
    if (sinkLogits != 0) {
      const m = load<f32>(foldMax + (<usize>r << 2));
      const s = load<f32>(sinkLogits + (<usize>(tileGroup * group + r % group) << 2));
      if (s <= m) sum += expScalar(s - m);
      else {
        kept = expScalar(m - s);
        sum = sum * kept + 1;
      }
    }
    for (let c = 0; c < headDim; c++) {
      store<f32>(outRow + (<usize>c << 2), (load<f32>(acc + (<usize>c << 2)) * kept) / sum);
    }

  }
}
