// Many caches in one call (KVCache.attendMany): a list of item records (job.ts), each one step of one
// cache. Planning appends every item's keys and values and rotates its queries; then every piece, an
// (item, kv head, query tile), runs as runTile runs it in a lone call on one thread. Pieces of all items are
// claimed from one counter, so the threads share the whole batch, and each output row is computed by the
// arithmetic of a lone call: the same bits as attend on each item alone, at any thread count. Across
// threads a batch follows the protocol of work.ts: pieces claimed and published per call epoch, each
// thread's output rows in its own results area (an item's at its record's result offset), the calling
// thread taking over late pieces, and finishItems copying each piece's rows from its publisher.

import {
  CHUNK, accOf, beginCall, foldSeen, getI32, group, headDim, heads, kvHeadCount, rowMax, rowSeen, rowSum, selectHead,
  setWeightsMode, tokensPerTile,
} from './call';
import { foldRow, planChunks, runTile } from './chunks';
import { resetChunk } from './softmax';
import { setStreaming, spanOf } from './stream';
import { addRows, chunkCount, chunkFirst, chunkSinks, walkRows, writeOut } from './tile';
import { HEADS, HEAD_DIM, OUT, Q, address, field } from '../descriptor';
import {
  ITEMS, ITEM_CASCADE, ITEM_COUNT, ITEM_DESCRIPTOR, ITEM_FIRST_PIECE, ITEM_FIRST_POSITION, ITEM_LAYER, ITEM_RESULT,
  ITEM_SHARED_END, ITEM_TILES, ITEM_TOKENS, ITEM_WORDS, PIECES, SCRATCH_BASE, SCRATCH_STRIDE, claimFree, jobWord,
  nextPiece, publish, publisher, takeOver,
} from '../job';
import { callClosed, resultsOf, stillOpen, stopsHere } from './work';

/** Address of item i's record. */
// @ts-ignore: decorator
@inline export function itemAt(items: usize, i: i32): usize {
  return items + (<usize>(i * ITEM_WORDS) << 2);
}

// @ts-ignore: decorator
@inline export function itemWord(item: usize, word: i32): i32 {
  return load<i32>(item + (<usize>word << 2));
}

/** Bytes of item `item`'s output rows (its staging out). */
function outBytesOf(item: usize): usize {
  const descriptor = <usize>itemWord(item, ITEM_DESCRIPTOR);
  return (<usize>itemWord(item, ITEM_TOKENS) * <usize>field(descriptor, HEADS) * <usize>field(descriptor, HEAD_DIM)) << 2;
}

/**
 * Lays the items' output rows one after another in a thread's results area (the records' result words);
 * returns the bytes one thread's results need. Reads the records only: plan calls it before it changes anything.
 */
export function placeResults(items: usize, count: i32): usize {
  let at: usize = 0;
  for (let i = 0; i < count; i++) {
    const item = itemAt(items, i);
    store<i32>(item + (<usize>ITEM_RESULT << 2), <i32>at);
    at += (outBytesOf(item) + 63) & ~<usize>63;
  }
  return at;
}

/**
 * Numbers the pieces of every item (the records' firstPiece and tiles) once its keys are appended and its
 * queries rotated; returns how many pieces there are in all.
 */
export function numberPieces(items: usize, count: i32): i32 {
  let pieces = 0;
  for (let i = 0; i < count; i++) {
    const item = itemAt(items, i);
    const cascade = itemWord(item, ITEM_CASCADE);
    if (cascade != 0) {
      // a cascade: one piece per kv head, numbered at its leader (a member's firstPiece repeats it)
      store<i32>(item + (<usize>ITEM_FIRST_PIECE << 2), cascade > 0 ? pieces : itemWord(itemAt(items, i - 1), ITEM_FIRST_PIECE));
      store<i32>(item + (<usize>ITEM_TILES << 2), cascade > 0 ? 1 : 0);
      if (cascade > 0) {
        beginCall(<usize>itemWord(item, ITEM_DESCRIPTOR), itemWord(item, ITEM_LAYER), 0, 1, 0);
        pieces += kvHeadCount();
      }
      continue;
    }
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
  while (i > 0 && itemWord(itemAt(items, i), ITEM_CASCADE) < 0) i--; // a cascade's pieces are its leader's
  return i;
}

/** Where item `item`'s output rows go: its staging out, or (results ≠ 0) its place in a thread's results. */
// @ts-ignore: decorator
@inline function outOf(item: usize, results: usize): usize {
  return results != 0 ? results + <usize>itemWord(item, ITEM_RESULT) : address(<usize>itemWord(item, ITEM_DESCRIPTOR), OUT);
}

/**
 * Runs piece `piece` (of item i) with the scratch at `scratch`, as a lone call's runTile, its rows into
 * `results` (0: the items' staging outs). `begin`: the item differs from the one this thread ran last in
 * this call (its geometry is read again).
 */
export function runItemPiece(items: usize, i: i32, piece: i32, scratch: usize, results: usize, begin: bool): void {
  const item = itemAt(items, i);
  const cascade = itemWord(item, ITEM_CASCADE);
  const local = piece - itemWord(item, ITEM_FIRST_PIECE);
  if (callClosed()) return; // a late worker: the record may be a later call's (work.ts)
  if (cascade > 0) {
    runCascade(items, i, cascade, local, scratch, results);
    return;
  }
  const descriptor = <usize>itemWord(item, ITEM_DESCRIPTOR);
  const tokens = itemWord(item, ITEM_TOKENS), first = itemWord(item, ITEM_FIRST_POSITION);
  const tiles = itemWord(item, ITEM_TILES), out = outOf(item, results);
  if (callClosed()) return;
  if (begin) {
    beginCall(descriptor, itemWord(item, ITEM_LAYER), first + tokens, 1, scratch);
    setWeightsMode(false);
  }
  const tileTokens = tokensPerTile();
  const span = spanOf(descriptor, tokens);
  const q = address(descriptor, Q);
  if (callClosed()) return; // the descriptor read may be a freed one's
  setStreaming(span);
  const kvHeads = kvHeadCount();
  // the last tiles first, as work.ts hands them out (the bits do not depend on the order)
  const t0 = (tiles - 1 - local / kvHeads) * tileTokens, g = local % kvHeads;
  runTile(q, out, t0, min(tileTokens, tokens - t0), first, g);
}

/**
 * Claims and runs pieces of the batch job of call `epoch` as thread `thread`, each published as in
 * work.ts (workPieces, which hands a batch's call here); how many it published (−1: a test stopped this
 * worker for good). `adopt`: the calling thread takes over every piece not yet published instead.
 */
export function workItems(job: usize, thread: i32, adopt: bool, epoch: u32): i32 {
  const items = <usize>jobWord(job, ITEMS), count = jobWord(job, ITEM_COUNT);
  const pieces = jobWord(job, PIECES);
  const scratch = <usize>jobWord(job, SCRATCH_BASE) + <usize>thread * <usize>jobWord(job, SCRATCH_STRIDE);
  const results = resultsOf(job, thread);
  // the words read may be a later call's, half rewritten: then the call has closed, and this thread leaves
  if (thread != 0 && !stillOpen(job, epoch)) return 0;
  let done = 0, current = -1;
  let piece = adopt ? 0 : nextPiece(job);
  for (; piece < pieces; piece = adopt ? piece + 1 : nextPiece(job)) {
    if (adopt ? !takeOver(job, piece, epoch) : !claimFree(job, piece, epoch, thread)) continue;
    if (thread != 0 && stopsHere(job, thread)) return -1;
    if (callClosed()) return done; // late (a stall since the claim): the caller has run this piece itself
    const i = itemOfPiece(items, count, piece, max(current, 0));
    runItemPiece(items, i, piece, scratch, results, i != current);
    current = itemWord(itemAt(items, i), ITEM_CASCADE) > 0 ? -1 : i; // a cascade leaves another item's call set up
    if (publish(job, piece, epoch, thread)) done++;
  }
  return done;
}

/** Runs all `pieces` pieces of the items on the calling thread, with the scratch at `scratch`. */
export function runItems(items: usize, count: i32, pieces: i32, scratch: usize): void {
  let current = -1;
  for (let piece = 0; piece < pieces; piece++) {
    const i = itemOfPiece(items, count, piece, max(current, 0));
    runItemPiece(items, i, piece, scratch, 0, i != current);
    current = itemWord(itemAt(items, i), ITEM_CASCADE) > 0 ? -1 : i; // a cascade leaves another item's call set up
  }
}

/** Copies the rows of tokens [t0, t1) × the group of kv head g of `item` from `from` (a thread's results). */
function copyRows(item: usize, from: usize, t0: i32, t1: i32, g: i32): void {
  const out = address(<usize>itemWord(item, ITEM_DESCRIPTOR), OUT);
  const at0 = from + <usize>itemWord(item, ITEM_RESULT);
  const bytes = <usize>(group * headDim) << 2;
  for (let t = t0; t < t1; t++) {
    const at = (<usize>(t * heads + g * group) * <usize>headDim) << 2;
    memory.copy(out + at, at0 + at, bytes);
  }
}

/**
 * After every piece of a batch is published: copies each piece's output rows from its publisher's results
 * into its items' staging outs.
 */
export function finishItems(job: usize): void {
  const items = <usize>jobWord(job, ITEMS), count = jobWord(job, ITEM_COUNT);
  const pieces = jobWord(job, PIECES);
  const scratch = <usize>jobWord(job, SCRATCH_BASE);
  let current = -1;
  for (let piece = 0; piece < pieces; piece++) {
    const i = itemOfPiece(items, count, piece, max(current, 0));
    const item = itemAt(items, i);
    const from = resultsOf(job, publisher(job, piece));
    const cascade = itemWord(item, ITEM_CASCADE);
    // geometry only (heads, group, headDim; no scratch is written)
    beginCall(<usize>itemWord(item, ITEM_DESCRIPTOR), itemWord(item, ITEM_LAYER), 0, 1, scratch);
    current = i;
    const local = piece - itemWord(item, ITEM_FIRST_PIECE);
    const kvHeads = kvHeadCount();
    if (cascade > 0) {
      for (let j = 0; j < cascade; j++) {
        const member = itemAt(items, i + j);
        copyRows(member, from, 0, itemWord(member, ITEM_TOKENS), local);
      }
      continue;
    }
    const tileTokens = tokensPerTile();
    const tokens = itemWord(item, ITEM_TOKENS), tiles = itemWord(item, ITEM_TILES);
    const t0 = (tiles - 1 - local / kvHeads) * tileTokens, g = local % kvHeads;
    copyRows(item, from, t0, min(t0 + tileTokens, tokens), g);
  }
}

/** Sets up the call of member j of the cascade led by record i (its descriptor: its tables and its queries). */
function beginMember(items: usize, i: i32, j: i32, scratch: usize): usize {
  const item = itemAt(items, i + j);
  const first = itemWord(item, ITEM_FIRST_POSITION);
  beginCall(<usize>itemWord(item, ITEM_DESCRIPTOR), itemWord(item, ITEM_LAYER), first + itemWord(item, ITEM_TOKENS), 1, scratch);
  return item;
}

/**
 * Kv head g of the cascade of `n` items led by record i: one tile holds every member's rows. Chunk by
 * chunk, as runTile: the rows start fresh, walk the shared blocks (below sharedEnd) together, then each
 * member's rows walk the member's own pages; then every row folds the chunk. sharedEnd is a canonical block
 * boundary, so each row meets the blocks of a lone call in the same order, and a row's arithmetic never
 * depends on the other rows of its tile (tile.ts): the bits of runTile on the member alone.
 */
function runCascade(items: usize, i: i32, n: i32, g: i32, scratch: usize, results: usize): void {
  const shared = itemWord(itemAt(items, i), ITEM_SHARED_END);
  let rows = 0;
  for (let j = 0; j < n; j++) {
    const item = beginMember(items, i, j, scratch);
    const d = <usize>itemWord(item, ITEM_DESCRIPTOR);
    const q = address(d, Q), out = outOf(item, results);
    const tokens = itemWord(item, ITEM_TOKENS), first = itemWord(item, ITEM_FIRST_POSITION);
    if (callClosed()) return; // a late worker: what it read may be a later call's (work.ts)
    rows = addRows(rows, q, out, <usize>headDim << 2, 0, tokens, first, g);
  }
  setWeightsMode(false);
  setStreaming(0);
  resetChunk(rows);
  memory.fill(foldSeen, 0, <usize>rows << 2);
  planChunks(rows);
  for (let c = 0; c < chunkCount; c++) {
    const lo = (c < chunkSinks ? c : chunkFirst + c - chunkSinks) * CHUNK;
    const hi = lo > 0x7fffffff - CHUNK ? 0x7fffffff : lo + CHUNK;
    resetChunk(rows);
    if (lo < shared) {
      beginMember(items, i, 0, scratch);
      if (callClosed()) return;
      selectHead(g);
      walkRows(0, rows, lo, min(hi, shared));
    }
    if (hi > shared) {
      let r0 = 0;
      for (let j = 0; j < n; j++) {
        const item = beginMember(items, i, j, scratch);
        const r1 = r0 + itemWord(item, ITEM_TOKENS) * group;
        if (callClosed()) return;
        selectHead(g);
        walkRows(r0, r1, max(lo, shared), hi);
        r0 = r1;
      }
    }
    for (let r = 0; r < rows; r++) {
      foldRow(r, getI32(rowSeen, r), load<f32>(rowMax + (<usize>r << 2)), load<f32>(rowSum + (<usize>r << 2)), accOf(r));
    }
  }
  writeOut(rows);
}
