// Deterministic inputs and a float64 reference of causal attention (API.md), shared by the runtime tests.

/** Deterministic inputs in [-1, 1). */
export function random(seed, n) {
  const a = new Float32Array(n);
  let s = seed >>> 0;
  for (let i = 0; i < n; i++) {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = Math.imul(s ^ (s >>> 15), 1 | s);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    a[i] = ((t ^ (t >>> 14)) >>> 0) / 2 ** 31 - 1;
  }
  return a;
}

/** Float64 causal attention as API.md defines it: returns { out, weights } ([T][heads][headDim], [T][heads][S]). */
export function reference(q, k, v, { heads, kvHeads = heads, headDim, window = 0, sinks = 0, causal = true }) {
  const T = q.length / (heads * headDim), S = k.length / (kvHeads * headDim);
  const scale = 1 / Math.sqrt(headDim), group = heads / kvHeads;
  const out = new Float64Array(T * heads * headDim), weights = new Float64Array(T * heads * S);
  for (let t = 0; t < T; t++) {
    const p = S - T + t;
    for (let h = 0; h < heads; h++) {
      const kh = Math.floor(h / group), qo = (t * heads + h) * headDim;
      const scores = new Float64Array(S).fill(-Infinity);
      let max = -Infinity;
      for (let j = 0; j < S; j++) {
        if (causal && j > p) continue;
        if (window > 0 && !(j > p - window || j < sinks)) continue;
        let dot = 0;
        for (let d = 0; d < headDim; d++) dot += q[qo + d] * k[(j * kvHeads + kh) * headDim + d];
        scores[j] = dot * scale;
        max = Math.max(max, scores[j]);
      }
      let sum = 0;
      for (let j = 0; j < S; j++) sum += scores[j] === -Infinity ? 0 : Math.exp(scores[j] - max);
      for (let j = 0; j < S; j++) {
        const w = scores[j] === -Infinity ? 0 : Math.exp(scores[j] - max) / sum;
        weights[(t * heads + h) * S + j] = w;
        for (let d = 0; d < headDim; d++) out[qo + d] += w * v[(j * kvHeads + kh) * headDim + d];
      }
    }
  }
  return { out, weights };
}

