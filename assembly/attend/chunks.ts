// Chunks (flash-decoding), for threads: the keys are also cut every CHUNK positions (16 pages). A row walks
// each chunk that holds keys it sees from a fresh softmax state, and the chunks' states are folded in
// position order (foldRow). A tile may walk its chunks itself, folding as it goes (tile mode: runTile,
// prefill and every call on one thread), or each chunk may be a piece of its own whose state waits in the
// job's partials until every piece is done (chunk mode: a decode step on several threads, work.ts). Both do
// the same arithmetic for a row, so outputs are the same bits at any thread count.

import {
  CHUNK, accOf, accStride, foldAcc, foldMax, foldSeen, foldSum, getI32, headDim, rowFirst, rowLast, rowMax, rowSeen,
  rowSinkEnd, rowSum, selectHead, setI32,
} from './call';
import { expScalar } from '../math';
import {
  chunkCount, chunkFirst, chunkSinks, setChunkCount, setChunkFirst, setChunkSinks, setupRows, walkChunk, writeOut,
} from './tile';

/** Plans the chunks the tile's rows see (tile.ts): a function of the rows' positions alone. */
export function planChunks(rows: i32): void {
  let sinkEnd = 0, first = 0x7fffffff, last = -1;
  for (let r = 0; r < rows; r++) {
    sinkEnd = max(sinkEnd, getI32(rowSinkEnd, r));
    const f = getI32(rowFirst, r), l = getI32(rowLast, r);
    if (f <= l) {
      first = min(first, f);
      last = max(last, l);
    }
  }
  setChunkSinks(<i32>((<u32>sinkEnd + CHUNK - 1) / CHUNK)); // unsigned: no i32 overflow near 2^31
  setChunkFirst(max(first / CHUNK, chunkSinks));
  setChunkCount(chunkSinks + (last < 0 ? 0 : max(0, last / CHUNK - chunkFirst + 1)));
}

/** Tile mode: tokens [t0, t0 + count) of kv head g's group, over all their chunks, folded as they come. */
export function runTile(q: usize, out: usize, t0: i32, count: i32, firstPosition: i32, g: i32): void {
  selectHead(g);
  const rows = setupRows(q, out, <usize>headDim << 2, t0, count, firstPosition, g);
  memory.fill(foldSeen, 0, <usize>rows << 2);
  planChunks(rows);
  for (let i = 0; i < chunkCount; i++) {
    walkChunk(rows, i);
    for (let r = 0; r < rows; r++) {
      foldRow(r, getI32(rowSeen, r), load<f32>(rowMax + (<usize>r << 2)), load<f32>(rowSum + (<usize>r << 2)), accOf(r));
    }
  }
  writeOut(rows);
}

/**
 * Folds one chunk's state of row r (seen, max m, sum l, accumulator acc) into the row's state over the
 * chunks before it, in position order: the first chunk it saw is copied; each later one is merged as
 * M = max(m₀, m), l₀ ← l₀·e^(m₀−M) + l·e^(m−M), acc₀ ← acc₀·e^(m₀−M) + acc·e^(m−M).
 */
export function foldRow(r: i32, seen: i32, m: f32, l: f32, acc: usize): void {
  if (seen == 0) return;
  const into = foldAcc + <usize>r * accStride;
  const maxAt = foldMax + (<usize>r << 2), sumAt = foldSum + (<usize>r << 2);
  if (getI32(foldSeen, r) == 0) {
    setI32(foldSeen, r, 1);
    store<f32>(maxAt, m);
    store<f32>(sumAt, l);
    memory.copy(into, acc, <usize>headDim << 2);
    return;
  }
  const m0 = load<f32>(maxAt);
  const top = max<f32>(m0, m);
  const a = expScalar(m0 - top), b = expScalar(m - top);
  store<f32>(maxAt, top);
  store<f32>(sumAt, load<f32>(sumAt) * a + l * b);
  let c = 0;
  if (ASC_FEATURE_SIMD) {
    const av = f32x4.splat(a), bv = f32x4.splat(b);
    for (; c + 4 <= headDim; c += 4) {
      const at = into + (<usize>c << 2);
      v128.store(at, f32x4.add(f32x4.mul(v128.load(at), av), f32x4.mul(v128.load(acc + (<usize>c << 2)), bv)));
    }
  }
  for (; c < headDim; c++) {
    const at = into + (<usize>c << 2);
    store<f32>(at, load<f32>(at) * a + load<f32>(acc + (<usize>c << 2)) * b);
  }
}
