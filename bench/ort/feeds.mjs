// The inputs of one onnxruntime run for the models of bench/ort/models.mjs (web and node; no Node APIs).

/**
 * The feeds of one run, from token-major q/k/v and head-major past K/V (`[kvHeads][P][headDim]`, the
 * layout ORT calls BNSH and the saved-cache payload uses).
 * @param {any} ort the onnxruntime module (web or node): its Tensor class
 * @param {'gqa' | 'mha'} op
 * @param {{ heads: number, kvHeads: number, headDim: number }} shape
 * @param {{ q: Float32Array, k: Float32Array, v: Float32Array, pastK?: Float32Array, pastV?: Float32Array, P?: number }} x
 */
export function feeds(ort, op, { heads, kvHeads, headDim }, x) {
  const S = x.q.length / (heads * headDim);
  const P = x.P ?? 0;
  /** @type {Record<string, any>} */
  const f = {
    query: new ort.Tensor('float32', x.q, [1, S, heads * headDim]),
    key: new ort.Tensor('float32', x.k, [1, S, kvHeads * headDim]),
    value: new ort.Tensor('float32', x.v, [1, S, kvHeads * headDim]),
  };
  if (P > 0) {
    f.past_key = new ort.Tensor('float32', /** @type {Float32Array} */ (x.pastK), [1, kvHeads, P, headDim]);
    f.past_value = new ort.Tensor('float32', /** @type {Float32Array} */ (x.pastV), [1, kvHeads, P, headDim]);
  }
  if (op === 'gqa') {
    f.seqlens_k = new ort.Tensor('int32', Int32Array.of(P + S - 1), [1]);
    f.total_sequence_length = new ort.Tensor('int32', Int32Array.of(P + S), []);
  }
  return f;
}
