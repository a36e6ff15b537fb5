// Streaming: touch-ahead for a decode step whose keys and values come from DRAM or a busy L3.
//
// A decode step reads every cached K/V row once, with enough arithmetic per row that the loop keeps few
// cache misses in flight. Touching each 64-byte line before computing on it issues those misses back to
// back (wasm has no prefetch instruction), and touching in long spans of K then V lets the hardware
// prefetchers follow. It pays only for K/V that does not stay cached, and how long a span pays depends on the
// machine's caches, so the caller decides both (the descriptor's `stream` word: 0, or the span in KiB, which
// the facade times on this machine), and only calls with one tile of queries per kv head use it
// (decode-like: nothing is reused across tiles). What was measured, and what was tried and not kept:
// docs/PERFORMANCE.md, "Kernel".

import {
  BLOCK,
  getI32,
  keyRowBytes,
  keyTable,
  ring,
  rowFirst,
  rowLast,
  rowSinkEnd,
  sinks,
  tokensPerTile,
  valueTable,
} from './call';
import { PAGE_ROWS, PAGE_SHIFT, STREAM, field } from '../descriptor';
import { slotOf } from '../layout';

export let streaming: bool = false;
let touchBytes: i32 = 0; // K and V touched ahead in one span
let touched: i32 = 0; // keeps the touching loads alive

let walkEnd: i32 = 0;       // the walk in progress (walkTile) ends here,
let walkSinkEnd: i32 = 0;   // its rows' sinks end here where a gap follows (never touched), else 0,
export let touchedEnd: i32 = 0; // and its keys and values below this position are touched

/**
 * The touch-ahead span in KiB for a call of `tokens` tokens, after beginCall: the descriptor's `stream` word
 * when the call has one tile of queries per kv head (decode-like), else 0.
 */
// @ts-ignore: decorator
@inline export function spanOf(descriptor: usize, tokens: i32): i32 {
  return tokens <= tokensPerTile() ? field(descriptor, STREAM) : 0;
}

/** The call's touch-ahead span in KiB, 0: it does not stream (spanOf gives the entry points' value). */
// @ts-ignore: decorator
@inline export function setStreaming(spanKiB: i32): void {
  streaming = spanKiB > 0;
  touchBytes = min(spanKiB, 1 << 20) << 10; // at most 1 GiB: no i32 overflow from any word
}

/** A streaming walk of the tile's rows to `end` begins: nothing touched yet. */
// @ts-ignore: decorator
@inline export function startTouches(rows: i32, end: i32): void {
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

/**
 * Touches the K rows, then the V rows, of the positions from `position` on, touchBytes of K and V (at least a
 * block), up to the end of the walk (or of its sinks, from inside them).
 */
export function touchAhead(position: i32): void {
  const span = max(BLOCK, (touchBytes / (2 * <i32>keyRowBytes)) & ~(PAGE_ROWS - 1));
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
