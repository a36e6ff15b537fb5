// Causal attention over the cache with an online softmax (Milakov & Gimelshein 2018; FlashAttention).
//
// Queries are taken a *tile* at a time: up to TILE_ROWS rows that share one kv head. A tile walks the keys
// once, block by block; per block and row: scores s = scale · q·k (softcapped), masked to the row's visible
// keys; the running maximum m rises to the block's, the running sum l and the accumulator are rescaled by
// e^(m_old − m_new), and Σ e^(s − m) · v is added. No T×S score matrix exists: the scratch holds one block
// of scores per row.
//
// Two rules keep every way of computing a row the same bits. Blocks are *canonical*: cut at functions of
// position alone, with lanes counted from the block's start (attend/tile.ts), so prefill, decode steps
// and chunked prefill see the same blocks. And one lane structure serves the scalar and SIMD builds
// (score.ts, values.ts, int8.ts), so a score or a sum never depends on the build's vector width. Chunks
// (attend/chunks.ts) then cut the keys for threads without changing a row's arithmetic.
//
// The kernel by job, in attend/:
//   call.ts        the call's geometry and scratch layout, set up by every entry point (beginCall)
//   tile.ts        a tile's rows, the keys each sees, the canonical blocks and the walk over them
//   stream.ts      touch-ahead for decode steps whose K/V comes from memory
//   scores.ts      a block's scores: dot products, scale, softcap, mask
//   softmax.ts     the online softmax of a block's scores
//   accumulate.ts  Σ e^(s − m) · v over a block
//   chunks.ts      the chunks a tile's rows see, their fold, and a tile over all of them (runTile)
//   work.ts        a call cut into pieces for threads: plan, work, finish
//   weights.ts     the attention weights of the same computation
// This file: attend on the calling thread alone.

import { beginCall, kvHeadCount, setWeightsMode, tokensPerTile } from './attend/call';
import { runTile } from './attend/chunks';
import { setStreaming, spanOf } from './attend/stream';
import { SCRATCH, address } from './descriptor';

/**
 * Attention of `tokens` queries (at positions firstPosition …) over the keys of one layer, on the calling
 * thread alone (tile mode). See index.ts for the meaning of each argument.
 */
export function attendQueries(
  descriptor: usize, layer: i32, q: usize, tokens: i32, firstPosition: i32, end: i32, isCausal: i32, out: usize,
): void {
  beginCall(descriptor, layer, end, isCausal, address(descriptor, SCRATCH));
  setWeightsMode(false);
  const tileTokens = tokensPerTile();
  const kvHeads = kvHeadCount();
  setStreaming(spanOf(descriptor, tokens));
  for (let t0 = 0; t0 < tokens; t0 += tileTokens) {
    const count = min(tileTokens, tokens - t0);
    for (let g = 0; g < kvHeads; g++) runTile(q, out, t0, count, firstPosition, g);
  }
}
