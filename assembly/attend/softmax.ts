// The online softmax (Milakov & Gimelshein 2018; FlashAttention) of a block's scores.
//
// Per block and row: the running maximum m rises to the block's, the running sum l and the accumulator are
// rescaled by e^(m_old − m_new), and e^(s − m) replaces each score (the values then add Σ e^(s − m) · v).
// A chunk's rows start from a fresh state (resetChunk); the chunks' states are then folded in position
// order (chunks.ts). The exp pass is 11–15% of a decode step; the variants tried to make it
// cheaper are in docs/PERFORMANCE.md, "Kernel".

import { MASKED, expScalar, exp4, horizontalSum } from '../math';
import { accBase, accOf, accStride, getI32, headDim, probsOf, rowFrom, rowMax, rowSeen, rowSum, rowTo, setI32 } from './call';

/** Folds row r's block scores (largest: blockMax) into its running max and sum; leaves e^(s − m) in its row. */
export function softmaxBlock(r: i32, blockMax: f32): void {
  const row = probsOf(r);
  const first = getI32(rowFrom, r) & ~3, end = (getI32(rowTo, r) + 3) & ~3;
  const maxAt = rowMax + (<usize>r << 2);
  const sumAt = rowSum + (<usize>r << 2);
  const previous = load<f32>(maxAt);
  const m = max<f32>(previous, blockMax);
  let sum = load<f32>(sumAt);
  if (m > previous && previous != MASKED) {
    const alpha = expScalar(previous - m);
    sum *= alpha;
    scaleRow(accOf(r), alpha);
  }
  store<f32>(maxAt, m);
  if (ASC_FEATURE_SIMD) {
    const mv = f32x4.splat(m);
    let total = f32x4.splat(0);
    for (let j = first; j < end; j += 4) {
      const at = row + (<usize>j << 2);
      const p = exp4(f32x4.sub(v128.load(at), mv));
      v128.store(at, p);
      total = f32x4.add(total, p);
    }
    sum += horizontalSum(total);
  } else {
    // the same four-lane summation order as the simd build
    let s0: f32 = 0, s1: f32 = 0, s2: f32 = 0, s3: f32 = 0;
    for (let j = first; j < end; j += 4) {
      const at = row + (<usize>j << 2);
      const p0 = expScalar(load<f32>(at) - m), p1 = expScalar(load<f32>(at, 4) - m);
      const p2 = expScalar(load<f32>(at, 8) - m), p3 = expScalar(load<f32>(at, 12) - m);
      store<f32>(at, p0); store<f32>(at, p1, 4); store<f32>(at, p2, 8); store<f32>(at, p3, 12);
      s0 += p0; s1 += p1; s2 += p2; s3 += p3;
    }
    sum += (s0 + s1) + (s2 + s3);
  }
  store<f32>(sumAt, sum);
}

function scaleRow(row: usize, factor: f32): void {
  let c = 0;
  if (ASC_FEATURE_SIMD) {
    const f = f32x4.splat(factor);
    for (; c + 4 <= headDim; c += 4) {
      const at = row + (<usize>c << 2);
      v128.store(at, f32x4.mul(v128.load(at), f));
    }
  }
  for (; c < headDim; c++) {
    const at = row + (<usize>c << 2);
    store<f32>(at, load<f32>(at) * factor);
  }
}

/** Fresh softmax state for a chunk: rows saw nothing, max −∞, sum 0, accumulator 0. */
export function resetChunk(rows: i32): void {
  for (let r = 0; r < rows; r++) {
    setI32(rowSeen, r, 0);
    store<f32>(rowMax + (<usize>r << 2), MASKED);
    store<f32>(rowSum + (<usize>r << 2), 0);
  }
  memory.fill(accBase, 0, <usize>rows * accStride);
}
