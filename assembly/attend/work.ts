// The kernel's side of threads: a call cut into pieces that any thread may claim (job.ts holds the job's
// words; index.ts: plan, work, finish). planJob chooses the mode: tile mode (a piece is a (kv head, query
// tile, as ../attend.ts runs on one thread) or chunk mode (a piece is a (kv head, chunk) of a decode step,
// whose softmax state waits in the job's partials until finishJob folds them in position order). Either
// way a row's arithmetic is that of one thread, so the outputs are the same bits at any thread count.

import {
  accOf, accStride, beginCall, getI32, headDim, kvHeadCount, rowMax, rowSeen, rowSum, selectHead, foldSeen,
  setWeightsMode, tokensPerTile,
} from './call';
import { OUT, Q, STREAM, address, field } from '../descriptor';
import {
  CAUSAL, CHUNK_COUNT, CHUNK_FIRST, CHUNK_MODE, CHUNK_SINKS, DESCRIPTOR, FIRST_POSITION, KEY_END, LAYER, MODE,
  PARTIALS, PARTIAL_CAPACITY, PARTIAL_NEEDED, PIECES, ROWS, SCRATCH_BASE, SCRATCH_STRIDE, TILE_MODE, TOKENS,
  claim, jobWord, setJobWord,
} from '../job';
import { setStreaming } from './stream';
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
export function workPieces(job: usize, thread: i32): i32 {
  const descriptor = <usize>jobWord(job, DESCRIPTOR);
  const tokens = jobWord(job, TOKENS), firstPosition = jobWord(job, FIRST_POSITION);
  const pieces = jobWord(job, PIECES);
  const scratch = <usize>jobWord(job, SCRATCH_BASE) + <usize>thread * <usize>jobWord(job, SCRATCH_STRIDE);
  beginJob(job, descriptor, scratch);
  setWeightsMode(false);
  const q = address(descriptor, Q), out = address(descriptor, OUT);
  const tileTokens = tokensPerTile();
  const chunkMode = jobWord(job, MODE) == CHUNK_MODE;
  setStreaming(field(descriptor, STREAM) != 0 && tokens <= tileTokens);
  if (chunkMode) {
    setChunkSinks(jobWord(job, CHUNK_SINKS));
    setChunkFirst(jobWord(job, CHUNK_FIRST));
    setChunkCount(jobWord(job, CHUNK_COUNT));
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
      const kvHeads = kvHeadCount();
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
  beginJob(job, descriptor, <usize>jobWord(job, SCRATCH_BASE));
  const q = address(descriptor, Q), out = address(descriptor, OUT);
  const tokens = jobWord(job, TOKENS), firstPosition = jobWord(job, FIRST_POSITION);
  const count = jobWord(job, CHUNK_COUNT);
  const kvHeads = kvHeadCount();
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
