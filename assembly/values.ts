// acc[row] += Σ_j p[row][j] · v[j]: the value half of attention, for one row or two rows sharing loads.
//
// The accumulator is walked in chunks of 16 floats held in registers across the whole run of keys (then
// chunks of 4, then single floats), so each value row is read once per chunk instead of once per element
// store. For every accumulator element the sequence of operations over j is the same whether a row runs
// alone or paired, which keeps prefill and decode bit-identical. Values are f32 (int8 caches
// accumulate in integers: int8.ts).

import { madd } from './math';

/** acc += Σ_{j in [from, to)} probs[j] · row j of `values` (f32 rows `rowBytes` apart). */
export function accumulate1(acc: usize, probs: usize, values: usize, rowBytes: usize, from: i32, to: i32, headDim: i32): void {
  let c = 0;
  if (ASC_FEATURE_SIMD) {
    const firstRow = values + <usize>from * rowBytes;
    const firstProb = probs + (<usize>from << 2);
    const lastProb = probs + (<usize>to << 2);
    // 32 floats: eight independent chains keep both FMA pipes busy where four wait on their latency.
    // V8 hoists a block's loads to its top, and 8 accumulators + the weight + 8 value chunks (17 v128)
    // spill. So the body is two blocks of 8 + 1 + 4 (13), split by branches: chunks 4–7 of row j, the
    // exit test, the weight and chunks 0–3 of row j + 1, then a test that never exits (v stays below the
    // last row's end) but keeps the block apart from the next iteration's when V8 unrolls the loop
    // (unrolled copies lose the back edge between them: --print-wasm-code showed 17 live and spills).
    if (from < to) {
      const rowsEnd = firstRow + <usize>(to - from) * rowBytes;
      for (; c + 32 <= headDim; c += 32) {
        const at = acc + (<usize>c << 2);
        let a0 = v128.load(at), a1 = v128.load(at, 16), a2 = v128.load(at, 32), a3 = v128.load(at, 48);
        let a4 = v128.load(at, 64), a5 = v128.load(at, 80), a6 = v128.load(at, 96), a7 = v128.load(at, 112);
        let v = firstRow + (<usize>c << 2);
        let p = firstProb;
        let w = v128.load32_splat(p);
        a0 = madd(w, v128.load(v), a0); a1 = madd(w, v128.load(v, 16), a1);
        a2 = madd(w, v128.load(v, 32), a2); a3 = madd(w, v128.load(v, 48), a3);
        for (;;) {
          a4 = madd(w, v128.load(v, 64), a4); a5 = madd(w, v128.load(v, 80), a5);
          a6 = madd(w, v128.load(v, 96), a6); a7 = madd(w, v128.load(v, 112), a7);
          p += 4;
          if (p >= lastProb) break;
          v += rowBytes;
          w = v128.load32_splat(p);
          a0 = madd(w, v128.load(v), a0); a1 = madd(w, v128.load(v, 16), a1);
          a2 = madd(w, v128.load(v, 32), a2); a3 = madd(w, v128.load(v, 48), a3);
          if (v >= rowsEnd) break; // never
        }
        v128.store(at, a0); v128.store(at, a1, 16); v128.store(at, a2, 32); v128.store(at, a3, 48);
        v128.store(at, a4, 64); v128.store(at, a5, 80); v128.store(at, a6, 96); v128.store(at, a7, 112);
      }
    }
    for (; c + 16 <= headDim; c += 16) {
      const at = acc + (<usize>c << 2);
      let a0 = v128.load(at), a1 = v128.load(at, 16), a2 = v128.load(at, 32), a3 = v128.load(at, 48);
      let v = firstRow + (<usize>c << 2);
      for (let p = firstProb; p < lastProb; p += 4) {
        const w = v128.load32_splat(p);
        a0 = madd(w, v128.load(v), a0);
        a1 = madd(w, v128.load(v, 16), a1);
        a2 = madd(w, v128.load(v, 32), a2);
        a3 = madd(w, v128.load(v, 48), a3);
        v += rowBytes;
      }
      v128.store(at, a0); v128.store(at, a1, 16); v128.store(at, a2, 32); v128.store(at, a3, 48);
    }
    for (; c + 4 <= headDim; c += 4) {
      const at = acc + (<usize>c << 2);
      let a = v128.load(at);
      let v = firstRow + (<usize>c << 2);
      for (let p = firstProb; p < lastProb; p += 4) {
        a = madd(v128.load32_splat(p), v128.load(v), a);
        v += rowBytes;
      }
      v128.store(at, a);
    }
  }
  scalarTail(acc, probs, values, rowBytes, from, to, c, headDim);
}

/** accumulate1 for two rows (accumulators accA/accB, weights probsA/probsB) over the same keys. */
export function accumulate2(
  accA: usize, probsA: usize, accB: usize, probsB: usize, values: usize, rowBytes: usize,
  from: i32, to: i32, headDim: i32,
): void {
  let c = 0;
  if (ASC_FEATURE_SIMD) {
    const firstRow = values + <usize>from * rowBytes;
    const firstA = probsA + (<usize>from << 2);
    const lastA = probsA + (<usize>to << 2);
    const distance = probsB - probsA; // probsB[j] sits this far from probsA[j]
    for (; c + 16 <= headDim; c += 16) {
      const atA = accA + (<usize>c << 2), atB = accB + (<usize>c << 2);
      let a0 = v128.load(atA), a1 = v128.load(atA, 16), a2 = v128.load(atA, 32), a3 = v128.load(atA, 48);
      let b0 = v128.load(atB), b1 = v128.load(atB, 16), b2 = v128.load(atB, 32), b3 = v128.load(atB, 48);
      let v = firstRow + (<usize>c << 2);
      for (let p = firstA; p < lastA; p += 4) {
        const wa = v128.load32_splat(p), wb = v128.load32_splat(p + distance);
        let u = v128.load(v);
        a0 = madd(wa, u, a0); b0 = madd(wb, u, b0);
        u = v128.load(v, 16);
        a1 = madd(wa, u, a1); b1 = madd(wb, u, b1);
        u = v128.load(v, 32);
        a2 = madd(wa, u, a2); b2 = madd(wb, u, b2);
        u = v128.load(v, 48);
        a3 = madd(wa, u, a3); b3 = madd(wb, u, b3);
        v += rowBytes;
      }
      v128.store(atA, a0); v128.store(atA, a1, 16); v128.store(atA, a2, 32); v128.store(atA, a3, 48);
      v128.store(atB, b0); v128.store(atB, b1, 16); v128.store(atB, b2, 32); v128.store(atB, b3, 48);
    }
    for (; c + 4 <= headDim; c += 4) {
      const atA = accA + (<usize>c << 2), atB = accB + (<usize>c << 2);
      let a = v128.load(atA), b = v128.load(atB);
      let v = firstRow + (<usize>c << 2);
      for (let p = firstA; p < lastA; p += 4) {
        const u = v128.load(v);
        a = madd(v128.load32_splat(p), u, a);
        b = madd(v128.load32_splat(p + distance), u, b);
        v += rowBytes;
      }
      v128.store(atA, a);
      v128.store(atB, b);
    }
  }
  scalarTail(accA, probsA, values, rowBytes, from, to, c, headDim);
  scalarTail(accB, probsB, values, rowBytes, from, to, c, headDim);
}

/** Elements c … headDim − 1 (all of them in the scalar build). */
// @ts-ignore: decorator
@inline function scalarTail(acc: usize, probs: usize, values: usize, rowBytes: usize, from: i32, to: i32, c: i32, headDim: i32): void {
  for (; c < headDim; c++) {
    const at = acc + (<usize>c << 2);
    let a = load<f32>(at);
    let v = values + <usize>from * rowBytes + (<usize>c << 2);
    for (let j = from; j < to; j++) {
      a += load<f32>(probs + (<usize>j << 2)) * load<f32>(v);
      v += rowBytes;
    }
    store<f32>(at, a);
  }
}
