// The job block of a call shared by threads: one call's numbers and the counters its threads meet on,
// i32 words in linear memory (shared memory in the threads builds). The facade writes the
// control words with Atomics; the kernel's plan() writes the call's words. The facade's offsets
// (generated blocks in src/abi.ts and src/attention-worker.ts) come from the consts below.
//
//   word  field
//   0     open         1 while threads may join the call in progress
//   1     next         the next piece to try (atomic add; a piece is then claimed in its state, see below)
//   2     finished     pieces published (each publish adds one; a worker late from an older call may add
//                      too, so the caller checks the states, never this count alone)
//   3     reserved     (was: threads inside the call)
//   4     generation   bumped per call: idle threads wait on it
//   5     sleepers     threads asleep on generation (the caller notifies only when there are any)
//   6     reserved     (which workers may join a call: the pool's own status words, src/attention-worker.ts)
//   7     reserved
//   8     descriptor   the cache's descriptor (descriptor.ts)
//   9     layer
//   10    tokens
//   11    firstPosition
//   12    keyEnd
//   13    causal
//   14    mode         0: tile mode (a piece is (kv head, query tile)); 1: chunk mode (a piece is (kv head, chunk))
//   15    pieces
//   16    scratch      thread i's scratch is scratch + i · scratchStride
//   17    scratchStride
//   18    results      each thread's results: thread i's at results + i · resultBytes; a piece's results
//                      (chunk mode: its rows' states; tile mode: its output rows, laid out as the staging
//                      out) go there, and finish reads them from the thread that published the piece
//   19    resultBytes  bytes of one thread's results
//   20    partialNeeded    bytes chunk mode would have needed (plan sets it; 0 in tile mode)
//   21    chunkSinks   chunks of the sinks (chunk i < chunkSinks is chunk i)
//   22    chunkFirst   chunk i ≥ chunkSinks is chunk chunkFirst + i − chunkSinks
//   23    chunkCount
//   24    rows         query rows per kv head in chunk mode
//   25    epoch        the call's number (increases per call; the facade writes it before opening)
//   26    states       per piece an i64: high word the epoch of the call that last claimed it, low word
//                      CLAIMED or DONE | the thread. A piece is free for call e while its epoch is below e,
//                      so a thread late from an older call can neither claim nor publish a piece of call e
//   27    stateCapacity  pieces the states hold (the facade grows them before the call)
//   28    stopTest     tests only: a worker that claims a piece while this is its thread number stops
//                      there (the word then holds minus its number) until the word is cleared; its number
//                      + STOP_AND_EXIT: it stops for good (its script then ends the worker)
//   29    resultNeeded bytes one thread's results need for the call (plan sets it; when they exceed
//                      resultBytes in tile mode, plan does nothing and returns −1: the facade makes room)
//   30    items        batch mode: the address of the item records (below)
//   31    itemCount    batch mode: how many
// JOB_BYTES bytes in all.
//
// Batch mode (KVCache.attendMany): one step of each of several caches in one call. Item records lie one
// after another, ITEM_WORDS i32 each:
//   word  field
//   0     descriptor   the item's cache (its staging words name the item's own q, k, v and out)
//   1     layer
//   2     tokens
//   3     firstPosition
//   4     firstPiece   plan writes it: the item's pieces are firstPiece … firstPiece + kvHeads · tiles − 1
//   5     tiles        plan writes it: query tiles per kv head
//   6     cascade      0: the item runs alone; n ≥ 2: it leads a cascade of itself and the n − 1 records after
//                      it (marked −1): caches of one settings whose page tables name the same pages for
//                      positions below sharedEnd (forks of one prefix), whose rows fit one tile
//   7     sharedEnd    a cascade's leader: where the shared pages end (a canonical block boundary)
//   8     result       plan writes it: where the item's output rows lie in a thread's results area (bytes
//                      from its start), laid out as the item's staging out
// A piece is (item, kv head, query tile), run exactly as a lone call runs it on one thread (runTile); a
// cascade's piece is (cascade, kv head): one tile of every member's rows walks the shared blocks once, then
// each member's rows walk its own pages, chunk by chunk in position order (attend/many.ts). Pieces are
// claimed, published and taken over as in the other modes (epochs, per-thread results): finish copies each
// piece's rows from its publisher's results into the items' staging outs.

export const OPEN: i32 = 0;
export const NEXT: i32 = 1;
// the facade's and the workers' words (the kernel never reads them)
export const FINISHED: i32 = 2;
export const GENERATION: i32 = 4;
export const SLEEPERS: i32 = 5;
export const DESCRIPTOR: i32 = 8;
export const LAYER: i32 = 9;
export const TOKENS: i32 = 10;
export const FIRST_POSITION: i32 = 11;
export const KEY_END: i32 = 12;
export const CAUSAL: i32 = 13;
export const MODE: i32 = 14;
export const PIECES: i32 = 15;
export const SCRATCH_BASE: i32 = 16;
export const SCRATCH_STRIDE: i32 = 17;
export const RESULTS: i32 = 18;
export const RESULT_BYTES: i32 = 19;
export const PARTIAL_NEEDED: i32 = 20;
export const CHUNK_SINKS: i32 = 21;
export const CHUNK_FIRST: i32 = 22;
export const CHUNK_COUNT: i32 = 23;
export const ROWS: i32 = 24;
export const EPOCH: i32 = 25;
export const STATES: i32 = 26;
export const STATE_CAPACITY: i32 = 27;
export const STOP_TEST: i32 = 28;
export const RESULT_NEEDED: i32 = 29;
export const STOP_AND_EXIT: i32 = 256;
export const ITEMS: i32 = 30;
export const ITEM_COUNT: i32 = 31;
export const JOB_BYTES: i32 = 128;

export const TILE_MODE: i32 = 0;
export const CHUNK_MODE: i32 = 1;
export const BATCH_MODE: i32 = 2;

export const ITEM_DESCRIPTOR: i32 = 0;
export const ITEM_LAYER: i32 = 1;
export const ITEM_TOKENS: i32 = 2;
export const ITEM_FIRST_POSITION: i32 = 3;
export const ITEM_FIRST_PIECE: i32 = 4;
export const ITEM_TILES: i32 = 5;
export const ITEM_CASCADE: i32 = 6;
export const ITEM_SHARED_END: i32 = 7;
export const ITEM_RESULT: i32 = 8;
export const ITEM_WORDS: i32 = 9;

// @ts-ignore: decorator
@inline export function jobWord(job: usize, word: i32): i32 {
  // atomic in the threads builds: a worker reads the words of a call it then validates (work.ts)
  if (ASC_FEATURE_THREADS) return atomic.load<i32>(job + (<usize>word << 2));
  return load<i32>(job + (<usize>word << 2));
}

// @ts-ignore: decorator
@inline export function setJobWord(job: usize, word: i32, value: i32): void {
  store<i32>(job + (<usize>word << 2), value);
}

/** The next piece to try (atomically in the threads builds, where other threads try too). */
// @ts-ignore: decorator
@inline export function nextPiece(job: usize): i32 {
  const at = job + (<usize>NEXT << 2);
  if (ASC_FEATURE_THREADS) return atomic.add<i32>(at, 1);
  const piece = load<i32>(at);
  store<i32>(at, piece + 1);
  return piece;
}

// A piece's state (the states word): the epoch of the call that last claimed it, then one of these | thread.
const CLAIMED: i64 = 0x100;
const DONE: i64 = 0x200;
const THREAD_BITS: i64 = 0xff;

// @ts-ignore: decorator
@inline function stateAt(job: usize, piece: i32): usize {
  return <usize>jobWord(job, STATES) + (<usize>piece << 3);
}

// @ts-ignore: decorator
@inline function loadState(at: usize): i64 {
  if (ASC_FEATURE_THREADS) return atomic.load<i64>(at);
  return load<i64>(at);
}

/** Replaces the state `expected` at `at` by `to`; false when another thread changed it first. */
// @ts-ignore: decorator
@inline function swapState(at: usize, expected: i64, to: i64): bool {
  if (ASC_FEATURE_THREADS) return atomic.cmpxchg<i64>(at, expected, to) == expected;
  if (load<i64>(at) != expected) return false;
  store<i64>(at, to);
  return true;
}

/** Claims `piece` for `thread` in call `epoch` if no thread has claimed it in this (or a later) call. */
export function claimFree(job: usize, piece: i32, epoch: u32, thread: i32): bool {
  const at = stateAt(job, piece);
  const state = loadState(at);
  if (<u32>(state >>> 32) >= epoch) return false;
  return swapState(at, state, (<i64>epoch << 32) | CLAIMED | thread);
}

/**
 * The calling thread (0) takes `piece` of call `epoch` over, free or claimed by another thread that has not
 * published it; false when it is published already.
 */
export function takeOver(job: usize, piece: i32, epoch: u32): bool {
  const at = stateAt(job, piece);
  let state: i64;
  do {
    state = loadState(at);
    if (<u32>(state >>> 32) == epoch && (state & DONE) != 0) return false;
  } while (!swapState(at, state, (<i64>epoch << 32) | CLAIMED));
  return true;
}

/**
 * Publishes `piece` of call `epoch` as `thread`'s, if `thread` still holds it (not taken over, not a later
 * call's); counts it in finished and wakes the caller at the last one. False: its results are never read.
 */
export function publish(job: usize, piece: i32, epoch: u32, thread: i32): bool {
  const claimed = (<i64>epoch << 32) | CLAIMED | thread;
  if (!swapState(stateAt(job, piece), claimed, (<i64>epoch << 32) | DONE | thread)) return false;
  if (ASC_FEATURE_THREADS) {
    const at = job + (<usize>FINISHED << 2);
    if (atomic.add<i32>(at, 1) + 1 == jobWord(job, PIECES)) atomic.notify(at, 1);
  }
  return true;
}

/** The thread whose results of `piece` were published (read once every piece is). */
// @ts-ignore: decorator
@inline export function publisher(job: usize, piece: i32): i32 {
  return <i32>(loadState(stateAt(job, piece)) & THREAD_BITS);
}
