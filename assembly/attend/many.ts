// Many caches in one call (KVCache.attendMany): a list of item records (job.ts), each one step of one
// cache. Planning appends every item's keys and values and rotates its queries; then every piece, an
// (item, kv head, query tile), runs as runTile runs it in a lone call on one thread. Pieces of all items are
// claimed from one counter, so the threads share the whole batch, and each output row is computed by the
// arithmetic of a lone call: the same bits as attend on each item alone, at any thread count.

import { beginCall, kvHeadCount, setWeightsMode, tokensPerTile } from './call';
import { runTile } from './chunks';
import { setStreaming } from './stream';
import { OUT, Q, STREAM, address, field } from '../descriptor';
import {
  ITEMS, ITEM_COUNT, ITEM_DESCRIPTOR, ITEM_FIRST_PIECE, ITEM_FIRST_POSITION, ITEM_LAYER, ITEM_TILES, ITEM_TOKENS,
  ITEM_WORDS, PIECES, SCRATCH_BASE, SCRATCH_STRIDE, claim, jobWord,
} from '../job';

/** Address of item i's record. */
// @ts-ignore: decorator
@inline export function itemAt(items: usize, i: i32): usize {
  return items + (<usize>(i * ITEM_WORDS) << 2);
}

// @ts-ignore: decorator
@inline export function itemWord(item: usize, word: i32): i32 {
  return load<i32>(item + (<usize>word << 2));
}

/**
 * Numbers the pieces of every item (the records' firstPiece and tiles) once its keys are appended and its
 * queries rotated; returns how many pieces there are in all.
 */
export function numberPieces(items: usize, count: i32): i32 {
  let pieces = 0;
  for (let i = 0; i < count; i++) {
    const item = itemAt(items, i);
    const tokens = itemWord(item, ITEM_TOKENS), first = itemWord(item, ITEM_FIRST_POSITION);
    // geometry only: no scratch is touched
    beginCall(<usize>itemWord(item, ITEM_DESCRIPTOR), itemWord(item, ITEM_LAYER), first + tokens, 1, 0);
    const tileTokens = tokensPerTile();
    const tiles = (tokens + tileTokens - 1) / tileTokens;
    store<i32>(item + (<usize>ITEM_FIRST_PIECE << 2), pieces);
    store<i32>(item + (<usize>ITEM_TILES << 2), tiles);
    pieces += kvHeadCount() * tiles;
  }
  return pieces;
}

/** Item index holding `piece`, searching forward from `from` (claims only grow on a thread). */
export function itemOfPiece(items: usize, count: i32, piece: i32, from: i32): i32 {
  let i = from;
  while (i + 1 < count && itemWord(itemAt(items, i + 1), ITEM_FIRST_PIECE) <= piece) i++;
  while (i > 0 && itemWord(itemAt(items, i), ITEM_FIRST_PIECE) > piece) i--;
  return i;
}

/**
 * Runs piece `piece` (of item i) with the scratch at `scratch`, as a lone call's runTile. `begin`: the
 * item differs from the one this thread ran last in this call (its geometry is read again).
 */
export function runItemPiece(items: usize, i: i32, piece: i32, scratch: usize, begin: bool): void {
  const item = itemAt(items, i);
  const descriptor = <usize>itemWord(item, ITEM_DESCRIPTOR);
  const tokens = itemWord(item, ITEM_TOKENS), first = itemWord(item, ITEM_FIRST_POSITION);
  if (begin) {
    beginCall(descriptor, itemWord(item, ITEM_LAYER), first + tokens, 1, scratch);
    setWeightsMode(false);
  }
  const tileTokens = tokensPerTile();
  setStreaming(field(descriptor, STREAM) != 0 && tokens <= tileTokens);
  const kvHeads = kvHeadCount();
  const local = piece - itemWord(item, ITEM_FIRST_PIECE);
  const tiles = itemWord(item, ITEM_TILES);
  // the last tiles first, as work.ts hands them out (the bits do not depend on the order)
  const t0 = (tiles - 1 - local / kvHeads) * tileTokens, g = local % kvHeads;
  runTile(address(descriptor, Q), address(descriptor, OUT), t0, min(tileTokens, tokens - t0), first, g);
}

/** Claims and runs pieces of the batch job until none are left, as thread `thread`; how many it ran. */
export function workItems(job: usize, thread: i32): i32 {
  const items = <usize>jobWord(job, ITEMS), count = jobWord(job, ITEM_COUNT);
  const pieces = jobWord(job, PIECES);
  const scratch = <usize>jobWord(job, SCRATCH_BASE) + <usize>thread * <usize>jobWord(job, SCRATCH_STRIDE);
  let done = 0, current = -1;
  for (let piece = claim(job); piece < pieces; piece = claim(job)) {
    const i = itemOfPiece(items, count, piece, max(current, 0));
    runItemPiece(items, i, piece, scratch, i != current);
    current = i;
    done++;
  }
  return done;
}

/** Runs all `pieces` pieces of the items on the calling thread, with the scratch at `scratch`. */
export function runItems(items: usize, count: i32, pieces: i32, scratch: usize): void {
  let current = -1;
  for (let piece = 0; piece < pieces; piece++) {
    const i = itemOfPiece(items, count, piece, max(current, 0));
    runItemPiece(items, i, piece, scratch, i != current);
    current = i;
  }
}
