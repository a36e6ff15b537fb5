// A float64 reference for the benchmarks' correctness checks: as plain as possible, no tricks,
// every intermediate in double precision. Slow on purpose; only used on small samples.
//
// Semantics follow docs/API.md:
//   q [T][heads][headDim], k/v [S][kvHeads][headDim], output [T][heads][headDim];
//   query head h reads kv head floor(h / (heads / kvHeads));
//   causal: query t sits at position S - T + t and sees key j iff j <= S - T + t.

/**
 * Rotary embedding in float64. Returns a new Float64Array.
 * @param {ArrayLike<number>} x [T][nHeads][headDim]
 * @param {number} nHeads
 * @param {number} headDim
 * @param {number} pos0 absolute position of token 0
 * @param {{theta?: number, dims?: number, interleaved?: boolean}} rope
 */
export function ropeRef(x, nHeads, headDim, pos0, rope) {
  const theta = rope.theta ?? 10000;
  const dims = rope.dims ?? headDim;
  const interleaved = rope.interleaved ?? false;
  const half = dims / 2;
  const T = x.length / (nHeads * headDim);
  const y = Float64Array.from(x);
  for (let t = 0; t < T; t++) {
    const pos = pos0 + t;
    for (let h = 0; h < nHeads; h++) {
      const o = (t * nHeads + h) * headDim;
      for (let i = 0; i < half; i++) {
        const angle = pos * Math.pow(theta, (-2 * i) / dims);
        const c = Math.cos(angle);
        const s = Math.sin(angle);
        const a = interleaved ? o + 2 * i : o + i;
        const b = interleaved ? o + 2 * i + 1 : o + i + half;
        const x0 = x[a];
        const x1 = x[b];
        y[a] = x0 * c - x1 * s;
        y[b] = x0 * s + x1 * c;
      }
    }
  }
  return y;
}

/**
 * Attention in float64. Returns a Float64Array [T][heads][headDim].
 * @param {ArrayLike<number>} q
 * @param {ArrayLike<number>} k
 * @param {ArrayLike<number>} v
 * @param {{heads: number, kvHeads?: number, headDim: number, causal?: boolean, scale?: number}} o
 */
export function attentionRef(q, k, v, o) {
  const heads = o.heads;
  const kvHeads = o.kvHeads ?? heads;
  const d = o.headDim;
  const causal = o.causal ?? true;
  const scale = o.scale ?? 1 / Math.sqrt(d);
  const T = q.length / (heads * d);
  const S = k.length / (kvHeads * d);
  const group = heads / kvHeads;
  const out = new Float64Array(T * heads * d);
  const scores = new Float64Array(S);
  for (let t = 0; t < T; t++) {
    const visible = causal ? S - T + t + 1 : S;
    for (let h = 0; h < heads; h++) {
      const g = Math.floor(h / group);
      const qo = (t * heads + h) * d;
      let max = -Infinity;
      for (let j = 0; j < visible; j++) {
        let dot = 0;
        const ko = (j * kvHeads + g) * d;
        for (let i = 0; i < d; i++) dot += q[qo + i] * k[ko + i];
        scores[j] = dot * scale;
        if (scores[j] > max) max = scores[j];
      }
      let sum = 0;
      for (let j = 0; j < visible; j++) {
        scores[j] = Math.exp(scores[j] - max);
        sum += scores[j];
      }
      for (let j = 0; j < visible; j++) {
        const w = scores[j] / sum;
        const vo = (j * kvHeads + g) * d;
        for (let i = 0; i < d; i++) out[qo + i] += w * v[vo + i];
      }
    }
  }
  return out;
}

/**
 * Max absolute difference between two equally long arrays.
 * @param {ArrayLike<number>} a
 * @param {ArrayLike<number>} b
 */
export function maxAbsDiff(a, b) {
  if (a.length !== b.length) throw new RangeError(`length ${a.length} vs ${b.length}`);
  let m = 0;
  for (let i = 0; i < a.length; i++) {
    const e = Math.abs(a[i] - b[i]);
    if (Number.isNaN(e)) return NaN;
    if (e > m) m = e;
  }
  return m;
}
