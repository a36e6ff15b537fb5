// Attention weights: the softmax probabilities of attend's computation, for inspection. The same walk and
// scores as attend (tile.ts, scores.ts), with the scores collected into each row's [keyCount] output
// (collectScores) and normalized once the walk is done, instead of folded into values.

import {
  beginCall, getI32, kvHeadCount, rowFirst, rowLast, rowMax, rowOut, rowSinkEnd, selectHead, setWeightsMode,
  tokensPerTile,
} from './call';
import { SCRATCH, address } from '../descriptor';
import { expScalar } from '../math';
import { setStreaming } from './stream';
import { setupRows, walkTile } from './tile';

/** The softmax probabilities [tokens][heads][keyCount] of the same computation (masked keys exactly 0). */
export function attentionWeights(
  descriptor: usize, layer: i32, q: usize, tokens: i32, firstPosition: i32, end: i32, isCausal: i32,
  out: usize, keyCount: i32,
): void {
  beginCall(descriptor, layer, end, isCausal, address(descriptor, SCRATCH));
  setWeightsMode(true);
  setStreaming(0);
  const tileTokens = tokensPerTile();
  const kvHeads = kvHeadCount();
  const weightRowBytes = <usize>keyCount << 2;
  for (let t0 = 0; t0 < tokens; t0 += tileTokens) {
    const count = min(tileTokens, tokens - t0);
    for (let g = 0; g < kvHeads; g++) {
      selectHead(g);
      const rows = setupRows(q, out, weightRowBytes, t0, count, firstPosition, g);
      for (let r = 0; r < rows; r++) memory.fill(<usize>getI32(rowOut, r), 0, weightRowBytes);
      walkTile(rows, 0, 0x7fffffff);
      for (let r = 0; r < rows; r++) normalizeWeights(r, keyCount);
    }
  }
}

/** Pass 2: e^(s − max) over the visible keys, divided by their sum; the rest stays 0. */
function normalizeWeights(r: i32, keyCount: i32): void {
  const row = <usize>getI32(rowOut, r);
  const m = load<f32>(rowMax + (<usize>r << 2));
  const sinkEnd = getI32(rowSinkEnd, r), first = getI32(rowFirst, r), last = getI32(rowLast, r);
  let sum: f32 = 0;
  for (let j = 0; j < keyCount; j++) {
    if (j < sinkEnd || (j >= first && j <= last)) {
      const at = row + (<usize>j << 2);
      const p = expScalar(load<f32>(at) - m);
      store<f32>(at, p);
      sum += p;
    }
  }
  for (let j = 0; j < keyCount; j++) {
    const at = row + (<usize>j << 2);
    store<f32>(at, load<f32>(at) / sum);
  }
}
