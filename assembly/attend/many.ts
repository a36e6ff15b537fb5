// Many caches in one call (KVCache.attendMany): a list of item records (job.ts), each one step of one
// cache. Planning appends every item's keys and values and rotates its queries; then every piece, an
// (item, kv head, query tile), runs as runTile runs it in a lone call on one thread. Pieces of all items are
// claimed from one counter, so the threads share the whole batch, and each output row is computed by the
// arithmetic of a lone call: the same bits as attend on each item alone, at any thread count.

import {
  CHUNK, accOf, beginCall, foldSeen, getI32, group, headDim, kvHeadCount, rowMax, rowSeen, rowSum, selectHead,
  setWeightsMode, tokensPerTile,
} from './call';
import { foldRow, planChunks, runTile } from './chunks';
import { resetChunk } from './softmax';
import { setStreaming } from './stream';
import { addRows, chunkCount, chunkFirst, chunkSinks, walkRows, writeOut } from './tile';
import { OUT, Q, STREAM, address, field } from '../descriptor';
import {
  ITEMS, ITEM_CASCADE, ITEM_COUNT, ITEM_DESCRIPTOR, ITEM_FIRST_PIECE, ITEM_FIRST_POSITION, ITEM_LAYER,
  ITEM_SHARED_END, ITEM_TILES, ITEM_TOKENS, ITEM_WORDS, PIECES, SCRATCH_BASE, SCRATCH_STRIDE, claim, jobWord,
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
  while (itemWord(itemAt(items, i), ITEM_CASCADE) < 0) i--; // a cascade's pieces are its leader's
  return i;
}

/**
 * Runs piece `piece` (of item i) with the scratch at `scratch`, as a lone call's runTile. `begin`: the
 * item differs from the one this thread ran last in this call (its geometry is read again).
 */
export function runItemPiece(items: usize, i: i32, piece: i32, scratch: usize, begin: bool): void {
  const item = itemAt(items, i);
  const cascade = itemWord(item, ITEM_CASCADE);
  if (cascade > 0) {
    runCascade(items, i, cascade, piece - itemWord(item, ITEM_FIRST_PIECE), scratch);
    return;
  }
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
    current = itemWord(itemAt(items, i), ITEM_CASCADE) > 0 ? -1 : i; // a cascade leaves another item's call set up
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
    current = itemWord(itemAt(items, i), ITEM_CASCADE) > 0 ? -1 : i; // a cascade leaves another item's call set up
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
function runCascade(items: usize, i: i32, n: i32, g: i32, scratch: usize): void {
  const shared = itemWord(itemAt(items, i), ITEM_SHARED_END);
  let rows = 0;
  for (let j = 0; j < n; j++) {
    const item = beginMember(items, i, j, scratch);
    const d = <usize>itemWord(item, ITEM_DESCRIPTOR);
    rows = addRows(rows, address(d, Q), address(d, OUT), <usize>headDim << 2, 0, itemWord(item, ITEM_TOKENS),
      itemWord(item, ITEM_FIRST_POSITION), g);
  }
  setWeightsMode(false);
  setStreaming(false);
  resetChunk(rows);
  memory.fill(foldSeen, 0, <usize>rows << 2);
  planChunks(rows);
  for (let c = 0; c < chunkCount; c++) {
    const lo = (c < chunkSinks ? c : chunkFirst + c - chunkSinks) * CHUNK;
    const hi = lo > 0x7fffffff - CHUNK ? 0x7fffffff : lo + CHUNK;
    resetChunk(rows);
    if (lo < shared) {
      beginMember(items, i, 0, scratch);
      selectHead(g);
      walkRows(0, rows, lo, min(hi, shared));
    }
    if (hi > shared) {
      let r0 = 0;
      for (let j = 0; j < n; j++) {
        const item = beginMember(items, i, j, scratch);
        selectHead(g);
        const r1 = r0 + itemWord(item, ITEM_TOKENS) * group;
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
