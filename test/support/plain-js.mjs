// The honest plain-JavaScript baseline: what a competent JS developer would write for causal
// self-attention with a KV cache, without WebAssembly. Float32Array storage, head-major cache
// ([kvHead][slot][headDim], so a decode step streams one contiguous block per kv head), two-pass
// softmax over a reused score buffer, grouped-query attention, rotary embeddings (half-split by
// default, pairwise with `interleaved: true`). Not deliberately slow, not heroically optimized:
// simple loops, no unrolling, no workers.
//
// Semantics match wasm-attention's KVCache.attend / attention (see docs/API.md) for
// layers/heads/kvHeads/headDim/maxTokens/scale/rope; no window, sinks, softcap or int8.

/**
 * @typedef {{ theta?: number, dims?: number, interleaved?: boolean }} RopeOptions
 * @typedef {{ layers?: number, heads: number, kvHeads?: number, headDim: number, maxTokens: number,
 *             scale?: number, rope?: RopeOptions }} PlainJsCacheOptions
 */

/**
 * Rotates `x[off .. off+headDim)` in place by position `pos`.
 * @param {Float32Array} x
 * @param {number} off
 * @param {Float32Array} cos cos(pos * invFreq[i]) for i < half
 * @param {Float32Array} sin
 * @param {number} half dims / 2
 * @param {boolean} interleaved
 */
function rotate(x, off, cos, sin, half, interleaved) {
  if (interleaved) {
    for (let i = 0; i < half; i++) {
      const a = off + 2 * i;
      const x0 = x[a];
      const x1 = x[a + 1];
      x[a] = x0 * cos[i] - x1 * sin[i];
      x[a + 1] = x0 * sin[i] + x1 * cos[i];
    }
  } else {
    for (let i = 0; i < half; i++) {
      const x0 = x[off + i];
      const x1 = x[off + i + half];
      x[off + i] = x0 * cos[i] - x1 * sin[i];
      x[off + i + half] = x0 * sin[i] + x1 * cos[i];
    }
  }
}

/**
 * Causal attention of one query row against `n` keys of one kv head, written into `out[oo..oo+d)`.
 * Keys/values of that head are contiguous: row j at `base + j*d`.
 * @param {Float32Array} q
 * @param {number} qo
 * @param {Float32Array} K
 * @param {Float32Array} V
 * @param {number} base
 * @param {number} stride distance between consecutive key rows (d for head-major, kvHeads*d for token-major)
 * @param {number} n
 * @param {number} d
 * @param {number} scale
 * @param {Float32Array} scores scratch, at least n long
 * @param {Float32Array} out
 * @param {number} oo
 */
function attendRow(q, qo, K, V, base, stride, n, d, scale, scores, out, oo) {
  let max = -Infinity;
  for (let j = 0, ko = base; j < n; j++, ko += stride) {
    let dot = 0;
    for (let i = 0; i < d; i++) dot += q[qo + i] * K[ko + i];
    const s = dot * scale;
    scores[j] = s;
    if (s > max) max = s;
  }
  let sum = 0;
  for (let j = 0; j < n; j++) {
    const e = Math.exp(scores[j] - max);
    scores[j] = e;
    sum += e;
  }
  for (let i = 0; i < d; i++) out[oo + i] = 0;
  for (let j = 0, vo = base; j < n; j++, vo += stride) {
    const w = scores[j];
    for (let i = 0; i < d; i++) out[oo + i] += w * V[vo + i];
  }
  const inv = 1 / sum;
  for (let i = 0; i < d; i++) out[oo + i] *= inv;
}

export class PlainJsKVCache {
  /** @param {PlainJsCacheOptions} options */
  constructor(options) {
    const { layers = 1, heads, headDim, maxTokens } = options;
    const kvHeads = options.kvHeads ?? heads;
    if (!(heads > 0 && kvHeads > 0 && heads % kvHeads === 0)) {
      throw new RangeError(`PlainJsKVCache: heads (${heads}) must be a multiple of kvHeads (${kvHeads})`);
    }
    this.layers = layers;
    this.heads = heads;
    this.kvHeads = kvHeads;
    this.headDim = headDim;
    this.maxTokens = maxTokens;
    this.scale = options.scale ?? 1 / Math.sqrt(headDim);
    const size = kvHeads * maxTokens * headDim;
    /** @type {Float32Array[]} */ this.K = [];
    /** @type {Float32Array[]} */ this.V = [];
    for (let l = 0; l < layers; l++) {
      this.K.push(new Float32Array(size));
      this.V.push(new Float32Array(size));
    }
    this.lengths = new Int32Array(layers);
    this.scores = new Float32Array(maxTokens);
    this.qRow = new Float32Array(heads * headDim);
    this.rope = null;
    if (options.rope) {
      const theta = options.rope.theta ?? 10000;
      const dims = options.rope.dims ?? headDim;
      if (dims % 2 !== 0 || dims > headDim) throw new RangeError(`PlainJsKVCache: rope.dims ${dims}`);
      const half = dims / 2;
      const invFreq = new Float64Array(half);
      for (let i = 0; i < half; i++) invFreq[i] = theta ** ((-2 * i) / dims);
      this.rope = {
        half,
        interleaved: !!options.rope.interleaved,
        invFreq,
        cos: new Float32Array(half),
        sin: new Float32Array(half),
      };
    }
  }

  get length() {
    return this.lengths[0];
  }

  /** @param {number} layer */
  lengthOf(layer) {
    return this.lengths[layer];
  }

  /** @param {number} n */
  truncate(n) {
    for (let l = 0; l < this.layers; l++) if (this.lengths[l] > n) this.lengths[l] = n;
  }

  reset() {
    this.truncate(0);
  }

  /** cos/sin tables of the rope for position `pos`. @param {number} pos */
  _ropeAt(pos) {
    const r = /** @type {NonNullable<typeof this.rope>} */ (this.rope);
    for (let i = 0; i < r.half; i++) {
      const a = pos * r.invFreq[i];
      r.cos[i] = Math.cos(a);
      r.sin[i] = Math.sin(a);
    }
    return r;
  }

  /**
   * Stores T tokens of k/v (rotating k) without attending: for setting up benchmarks.
   * @param {number} layer
   * @param {Float32Array} k [T][kvHeads][headDim]
   * @param {Float32Array} v
   */
  append(layer, k, v) {
    const { kvHeads, headDim: d, maxTokens } = this;
    const T = k.length / (kvHeads * d);
    if (!Number.isInteger(T) || v.length !== k.length) throw new RangeError('PlainJsKVCache: bad k/v sizes');
    const pos0 = this.lengths[layer];
    if (pos0 + T > maxTokens) {
      throw new RangeError(`PlainJsKVCache: ${pos0} + ${T} tokens exceed maxTokens ${maxTokens}`);
    }
    const K = this.K[layer];
    const V = this.V[layer];
    for (let t = 0; t < T; t++) {
      const r = this.rope ? this._ropeAt(pos0 + t) : null;
      for (let g = 0; g < kvHeads; g++) {
        const src = (t * kvHeads + g) * d;
        const dst = (g * maxTokens + pos0 + t) * d;
        K.set(k.subarray(src, src + d), dst);
        V.set(v.subarray(src, src + d), dst);
        if (r) rotate(K, dst, r.cos, r.sin, r.half, r.interleaved);
      }
    }
    this.lengths[layer] = pos0 + T;
  }

  /**
   * Appends the T tokens of k/v to `layer` and returns the causal attention of the T queries over
   * everything the layer holds.
   * @param {number} layer
   * @param {Float32Array} q [T][heads][headDim]
   * @param {Float32Array} k [T][kvHeads][headDim]
   * @param {Float32Array} v [T][kvHeads][headDim]
   * @param {Float32Array} [out] [T][heads][headDim]
   */
  attend(layer, q, k, v, out) {
    const { heads, kvHeads, headDim: d, maxTokens, scale } = this;
    const T = q.length / (heads * d);
    if (!Number.isInteger(T) || k.length !== T * kvHeads * d || v.length !== k.length) {
      throw new RangeError('PlainJsKVCache.attend: q/k/v sizes disagree');
    }
    out ??= new Float32Array(q.length);
    const pos0 = this.lengths[layer];
    this.append(layer, k, v);
    const K = this.K[layer];
    const V = this.V[layer];
    const group = heads / kvHeads;
    const qRow = this.qRow;
    for (let t = 0; t < T; t++) {
      const pos = pos0 + t;
      // the rotated queries of this token
      qRow.set(q.subarray(t * heads * d, (t + 1) * heads * d));
      if (this.rope) {
        const r = this._ropeAt(pos);
        for (let h = 0; h < heads; h++) rotate(qRow, h * d, r.cos, r.sin, r.half, r.interleaved);
      }
      for (let h = 0; h < heads; h++) {
        const g = (h / group) | 0;
        attendRow(qRow, h * d, K, V, g * maxTokens * d, d, pos + 1, d, scale, this.scores, out, (t * heads + h) * d);
      }
    }
    return out;
  }
}

/**
 * One-shot attention (no cache, no rope): q holds T tokens, k/v hold S tokens; with `causal` (the
 * default) query t sits at position S - T + t.
 * @param {Float32Array} q [T][heads][headDim]
 * @param {Float32Array} k [S][kvHeads][headDim]
 * @param {Float32Array} v [S][kvHeads][headDim]
 * @param {{heads: number, kvHeads?: number, headDim: number, causal?: boolean, scale?: number}} o
 * @param {Float32Array} [out]
 */
export function plainAttention(q, k, v, o, out) {
  const heads = o.heads;
  const kvHeads = o.kvHeads ?? heads;
  const d = o.headDim;
  const causal = o.causal ?? true;
  const scale = o.scale ?? 1 / Math.sqrt(d);
  const T = q.length / (heads * d);
  const S = k.length / (kvHeads * d);
  if (!Number.isInteger(T) || !Number.isInteger(S) || v.length !== k.length || heads % kvHeads !== 0) {
    throw new RangeError('plainAttention: q/k/v sizes disagree');
  }
  out ??= new Float32Array(q.length);
  const group = heads / kvHeads;
  const scores = new Float32Array(S);
  const stride = kvHeads * d; // token-major k/v
  for (let t = 0; t < T; t++) {
    const n = causal ? S - T + t + 1 : S;
    for (let h = 0; h < heads; h++) {
      const g = (h / group) | 0;
      const qo = (t * heads + h) * d;
      attendRow(q, qo, k, v, g * d, stride, n, d, scale, scores, out, qo);
    }
  }
  return out;
}
