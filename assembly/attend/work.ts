// The kernel's side of threads: a call cut into pieces that any thread may claim (job.ts holds the job's
// words; index.ts: plan, work, finish). planJob chooses the mode: tile mode (a piece is a (kv head, query
// tile, as ../attend.ts runs on one thread) or chunk mode (a piece is a (kv head, chunk) of a decode step,
// whose softmax state waits in the job's partials until finishJob folds them in position order). Either
// way a row's arithmetic is that of one thread, so the outputs are the same bits at any thread count.
//
// A piece is claimed in its state (job.ts) and its results go to the claiming thread's own results area;
// publishing it is one compare-and-swap of its state, and finish reads each piece from its publisher. So
// the calling thread can take over a piece whose worker stopped answering, and a worker that comes back
// late writes only into its own area, where nobody reads that piece: the output is the same bits either way.

import {
  accOf, accStride, beginCall, getI32, group, headDim, heads, kvHeadCount, rowMax, rowSeen, rowSum, selectHead, foldSeen,
  setWeightsMode, tokensPerTile,
} from './call';
import { OUT, Q, address } from '../descriptor';
import {
  BATCH_MODE, CAUSAL, CHUNK_COUNT, CHUNK_FIRST, CHUNK_MODE, CHUNK_SINKS, DESCRIPTOR, EPOCH, FIRST_POSITION, KEY_END, LAYER,
  MODE, OPEN, PARTIAL_NEEDED, PIECES, RESULTS, RESULT_BYTES, ROWS, SCRATCH_BASE, SCRATCH_STRIDE, STOP_AND_EXIT,
  STOP_TEST, RESULT_NEEDED, TILE_MODE, TOKENS, claimFree, jobWord, nextPiece, publish, publisher, setJobWord, takeOver,
} from '../job';
import { setStreaming, spanOf } from './stream';
import { finishItems, workItems } from './many';
import { foldRow, planChunks, runTile } from './chunks';
import {
  chunkCount, chunkFirst, chunkSinks, setChunkCount, setChunkFirst, setChunkSinks, setupRows, walkChunk, writeOut,
} from './tile';

/** The setup of a job's call (beginCall) on a thread whose scratch is at `scratch`. */
// @ts-ignore: decorator
@inline function beginJob(job: usize, descriptor: usize, scratch: usize): void {
  beginCall(descriptor, jobWord(job, LAYER), jobWord(job, KEY_END), jobWord(job, CAUSAL), scratch);
}

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
  beginJob(job, descriptor, <usize>jobWord(job, SCRATCH_BASE));
  const tileTokens = tokensPerTile();
  const kvHeads = kvHeadCount();
  let mode = TILE_MODE, pieces = kvHeads * ((tokens + tileTokens - 1) / tileTokens);
  setJobWord(job, PARTIAL_NEEDED, 0);
  if (tokens <= tileTokens) {
    const rows = setupRows(address(descriptor, Q), address(descriptor, OUT), <usize>headDim << 2, 0, tokens, firstPosition, 0);
    planChunks(rows);
    const needed = <usize>kvHeads * <usize>chunkCount * <usize>rows * partialRowBytes();
    if (chunkCount > 1) {
      setJobWord(job, PARTIAL_NEEDED, <i32>min<usize>(needed, 0x7fffffff));
      if (needed <= <usize>jobWord(job, RESULT_BYTES)) {
        mode = CHUNK_MODE;
        pieces = kvHeads * chunkCount;
        setJobWord(job, CHUNK_SINKS, chunkSinks);
        setJobWord(job, CHUNK_FIRST, chunkFirst);
        setJobWord(job, CHUNK_COUNT, chunkCount);
        setJobWord(job, ROWS, rows);
      }
    }
  }
  if (mode == CHUNK_MODE) setJobWord(job, RESULT_NEEDED, <i32>jobWord(job, PARTIAL_NEEDED));
  setJobWord(job, MODE, mode);
  setJobWord(job, PIECES, pieces);
  return pieces;
}

/** Thread `thread`'s results area. */
// @ts-ignore: decorator
@inline export function resultsOf(job: usize, thread: i32): usize {
  return <usize>jobWord(job, RESULTS) + <usize>thread * <usize>jobWord(job, RESULT_BYTES);
}

/** Whether call `epoch` is still open (a worker checks before and after reading the call's words). */
// @ts-ignore: decorator
@inline export function stillOpen(job: usize, epoch: u32): bool {
  return jobWord(job, OPEN) == 1 && <u32>jobWord(job, EPOCH) == epoch;
}

// A worker late from a closed call must use nothing it read of it: the caller rewrites the job's words, the
// item records and the caches' descriptors once the call has closed. So a worker reads first, then checks
// that its call is still open (callClosed), and only then uses what it read: every address it writes to and
// every size it writes comes from values read before a check that passed, i.e. while the call was its own.
// Reads may still meet memory the caller has reused since (a page table, a page); they are only read, and
// a piece computed from them is never published.

/** The job and epoch a worker is in (job 0: the calling thread, whose call never closes under it). */
let lateJob: usize = 0;
let lateEpoch: u32 = 0;

/** Whether this thread is a worker whose call has closed: what it read since its last check may be garbage. */
// @ts-ignore: decorator
@inline export function callClosed(): bool {
  return lateJob != 0 && !stillOpen(lateJob, lateEpoch);
}

/**
 * Claims and runs pieces of the job until none are left, as thread `thread`; returns how many it published
 * (−1: a test stopped it for good). `adopt` (the calling thread, after waiting): takes over every piece not
 * yet published instead, whoever holds it.
 */
export function workPieces(job: usize, thread: i32, adopt: bool): i32 {
  const epoch = <u32>jobWord(job, EPOCH);
  lateJob = thread != 0 ? job : 0;
  lateEpoch = epoch;
  if (callClosed()) return 0;
  // the mode read between two checks of the epoch is the mode of that call (plan writes it before opening)
  const batch = jobWord(job, MODE) == BATCH_MODE;
  if (callClosed()) return 0;
  if (batch) return workItems(job, thread, adopt, epoch);
  const descriptor = <usize>jobWord(job, DESCRIPTOR);
  const tokens = jobWord(job, TOKENS), firstPosition = jobWord(job, FIRST_POSITION);
  const pieces = jobWord(job, PIECES);
  const scratch = <usize>jobWord(job, SCRATCH_BASE) + <usize>thread * <usize>jobWord(job, SCRATCH_STRIDE);
  const chunkMode = jobWord(job, MODE) == CHUNK_MODE;
  const sinks = jobWord(job, CHUNK_SINKS), first = jobWord(job, CHUNK_FIRST), count = jobWord(job, CHUNK_COUNT);
  const results = resultsOf(job, thread);
  // the words read may be a later call's, half rewritten: then the call has closed, and this thread leaves
  // (before it reads the descriptor they name)
  if (callClosed()) return 0;
  beginJob(job, descriptor, scratch);
  setWeightsMode(false);
  const q = address(descriptor, Q);
  const span = spanOf(descriptor, tokens);
  // the descriptor read may be a freed one's: the geometry that sizes this thread's writes is checked too
  if (callClosed()) return 0;
  setStreaming(span);
  if (chunkMode) {
    setChunkSinks(sinks);
    setChunkFirst(first);
    setChunkCount(count);
  }
  let done = 0;
  let piece = adopt ? 0 : nextPiece(job);
  for (; piece < pieces; piece = adopt ? piece + 1 : nextPiece(job)) {
    if (adopt ? !takeOver(job, piece, epoch) : !claimFree(job, piece, epoch, thread)) continue;
    if (thread != 0 && stopsHere(job, thread)) return -1;
    if (callClosed()) return done; // late (a stall since the claim): the caller has run this piece itself
    runPiece(piece, q, results, tokens, firstPosition, chunkMode);
    if (publish(job, piece, epoch, thread)) done++;
  }
  return done;
}

/** Runs `piece` into `results` (a thread's results area). */
function runPiece(piece: i32, q: usize, results: usize, tokens: i32, firstPosition: i32, chunkMode: bool): void {
  if (chunkMode) {
    const g = piece / chunkCount, i = piece % chunkCount;
    selectHead(g);
    const rows = setupRows(q, results, <usize>headDim << 2, 0, tokens, firstPosition, g);
    walkChunk(rows, i);
    let at = results + <usize>piece * <usize>rows * partialRowBytes();
    for (let r = 0; r < rows; r++) {
      store<i32>(at, getI32(rowSeen, r));
      store<f32>(at, load<f32>(rowMax + (<usize>r << 2)), 4);
      store<f32>(at, load<f32>(rowSum + (<usize>r << 2)), 8);
      memory.copy(at + 16, accOf(r), <usize>headDim << 2);
      at += partialRowBytes();
    }
  } else {
    const tileTokens = tokensPerTile();
    const g = tileHead(piece), t0 = tileStart(tokens, piece, tileTokens);
    runTile(q, results, t0, min(tileTokens, tokens - t0), firstPosition, g);
  }
}

// Tile mode's pieces: the last tiles first (causal tiles grow with their position, so the big ones are
// handed out early and the small ones fill in at the end; the bits do not depend on who runs which tile).
// @ts-ignore: decorator
@inline function tileHead(piece: i32): i32 {
  return piece % kvHeadCount();
}

// @ts-ignore: decorator
@inline function tileStart(tokens: i32, piece: i32, tileTokens: i32): i32 {
  const tiles = (tokens + tileTokens - 1) / tileTokens;
  return (tiles - 1 - piece / kvHeadCount()) * tileTokens;
}

/**
 * Tests only: whether this worker stops at the piece it has just claimed (the stop word holds its
 * number): it then waits there until the word is cleared, as a worker descheduled for that long would;
 * with STOP_AND_EXIT it stops for good and its script ends the worker, as one killed mid-call.
 */
export function stopsHere(job: usize, thread: i32): bool {
  if (!ASC_FEATURE_THREADS) return false;
  const at = job + (<usize>STOP_TEST << 2);
  const word = atomic.load<i32>(at);
  if (word == thread + STOP_AND_EXIT) {
    atomic.store<i32>(at, -word);
    atomic.notify(at);
    return true;
  }
  if (word != thread) return false;
  atomic.store<i32>(at, -thread);
  atomic.notify(at);
  while (atomic.load<i32>(at) == -thread) atomic.wait<i32>(at, -thread, -1);
  return false;
}

/**
 * After every piece is published: reads each piece's results from its publisher's area. Chunk mode folds
 * each row's chunk states in position order into out; tile mode copies each tile's output rows.
 */
export function finishJob(job: usize): void {
  if (jobWord(job, MODE) == BATCH_MODE) {
    finishItems(job);
    return;
  }
  const descriptor = <usize>jobWord(job, DESCRIPTOR);
  beginJob(job, descriptor, <usize>jobWord(job, SCRATCH_BASE));
  const q = address(descriptor, Q), out = address(descriptor, OUT);
  const tokens = jobWord(job, TOKENS), firstPosition = jobWord(job, FIRST_POSITION);
  const kvHeads = kvHeadCount();
  if (jobWord(job, MODE) != CHUNK_MODE) {
    const tileTokens = tokensPerTile();
    const bytes = <usize>(group * headDim) << 2;
    for (let piece = 0, pieces = jobWord(job, PIECES); piece < pieces; piece++) {
      const from = resultsOf(job, publisher(job, piece));
      const g = tileHead(piece), t0 = tileStart(tokens, piece, tileTokens);
      for (let t = t0, end = min(t0 + tileTokens, tokens); t < end; t++) {
        const at = (<usize>(t * heads + g * group) * <usize>headDim) << 2;
        memory.copy(out + at, from + at, bytes);
      }
    }
    return;
  }
  const count = jobWord(job, CHUNK_COUNT);
  for (let g = 0; g < kvHeads; g++) {
    const rows = setupRows(q, out, <usize>headDim << 2, 0, tokens, firstPosition, g);
    memory.fill(foldSeen, 0, <usize>rows << 2);
    for (let i = 0; i < count; i++) {
      const piece = g * count + i;
      let at = resultsOf(job, publisher(job, piece)) + <usize>piece * <usize>rows * partialRowBytes();
      for (let r = 0; r < rows; r++) {
        foldRow(r, load<i32>(at), load<f32>(at, 4), load<f32>(at, 8), at + 16);
        at += partialRowBytes();
      }
    }
    writeOut(rows);
  }
}
