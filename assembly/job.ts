// The job block of a call shared by threads: one call's numbers and the counters its threads meet on,
// i32 words in linear memory (shared memory in the threads builds). The facade writes the
// control words with Atomics; the kernel's plan() writes the call's words. The facade's offsets
// (generated blocks in src/abi.ts and src/attention-worker.ts) come from the consts below.
//
//   word  field
//   0     open         1 while threads may join the call in progress
//   1     next         the next piece to claim (atomic add)
//   2     finished     pieces done (the facade adds each thread's count)
//   3     entered      threads inside the call (the caller waits for 0 before the next call)
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
//   18    partials     chunk mode: each piece's per-row state (partialBytes); given by the facade
//   19    partialCapacity  bytes at partials
//   20    partialNeeded    bytes chunk mode would have needed (plan sets it; 0 in tile mode)
//   21    chunkSinks   chunks of the sinks (chunk i < chunkSinks is chunk i)
//   22    chunkFirst   chunk i ≥ chunkSinks is chunk chunkFirst + i − chunkSinks
//   23    chunkCount
//   24    rows         query rows per kv head in chunk mode
//   25    items        batch mode: the address of the item records (below)
//   26    itemCount    batch mode: how many
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
// A piece is (item, kv head, query tile), run exactly as a lone call runs it on one thread (runTile); a
// cascade's piece is (cascade, kv head): one tile of every member's rows walks the shared blocks once, then
// each member's rows walk its own pages, chunk by chunk in position order (attend/many.ts).

export const OPEN: i32 = 0;
export const NEXT: i32 = 1;
// the facade's and the workers' words (the kernel never reads them)
export const FINISHED: i32 = 2;
export const ENTERED: i32 = 3;
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
export const PARTIALS: i32 = 18;
export const PARTIAL_CAPACITY: i32 = 19;
export const PARTIAL_NEEDED: i32 = 20;
export const CHUNK_SINKS: i32 = 21;
export const CHUNK_FIRST: i32 = 22;
export const CHUNK_COUNT: i32 = 23;
export const ROWS: i32 = 24;
export const ITEMS: i32 = 25;
export const ITEM_COUNT: i32 = 26;
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
export const ITEM_WORDS: i32 = 8;

// @ts-ignore: decorator
@inline export function jobWord(job: usize, word: i32): i32 {
  return load<i32>(job + (<usize>word << 2));
}

// @ts-ignore: decorator
@inline export function setJobWord(job: usize, word: i32, value: i32): void {
  store<i32>(job + (<usize>word << 2), value);
}

/** Claims the next piece of the job (atomically in the threads builds, where other threads claim too). */
// @ts-ignore: decorator
@inline export function claim(job: usize): i32 {
  const at = job + (<usize>NEXT << 2);
  if (ASC_FEATURE_THREADS) return atomic.add<i32>(at, 1);
  const piece = load<i32>(at);
  store<i32>(at, piece + 1);
  return piece;
}
