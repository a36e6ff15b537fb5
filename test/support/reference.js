// The one float64 reference of wasm-attention (tests, bench, demo and the runtime matrix), written to be
// obviously right rather than fast. Every rule here is a sentence of the API contract; nothing is shared
// with the kernel. Plain ESM with no Node built-ins and JSDoc types, so browsers, Deno, Bun and workerd
// import it unchanged and the TypeScript tests get its types.

/**
 * @typedef {object} ReferenceOptions
 * @property {number} heads
 * @property {number} [kvHeads] default heads
 * @property {number} headDim
 * @property {boolean} [causal] default true
 * @property {number} [scale] default 1 / sqrt(headDim)
 * @property {number} [window] default none
 * @property {number} [sinks] default 0
 * @property {number} [softcap] default none
 * @property {true | readonly number[] | Float32Array | Float64Array} [alibi] a slope per query head (true: referenceAlibiSlopes(heads))
 */

/**
 * @typedef {object} RopeScaling
 * @property {'linear' | 'llama3' | 'yarn'} type
 * @property {number} factor
 * @property {number} [lowFreqFactor] llama3
 * @property {number} [highFreqFactor] llama3
 * @property {number} [originalMaxPositions] llama3, yarn
 * @property {number} [betaFast] yarn, default 32
 * @property {number} [betaSlow] yarn, default 1
 * @property {boolean} [truncate] yarn, default true
 * @property {number} [attentionFactor] yarn, default 0.1 ln(factor) + 1
 */

/**
 * @typedef {object} RopeOptions
 * @property {number} [theta] default 10000
 * @property {number} [dims] default headDim
 * @property {boolean} [interleaved] default false (half-split, GPT-NeoX/Llama)
 * @property {RopeScaling} [scaling]
 * @property {ArrayLike<number>} [inverseFrequencies] dims / 2 of them, instead of theta and scaling
 * @property {number} [attentionFactor] multiplies cos and sin (not with yarn, which has its own)
 */

/**
 * @typedef {object} ReferenceCacheOptions
 * @property {number} [layers] default 1
 * @property {number} heads
 * @property {number} [kvHeads]
 * @property {number} headDim
 * @property {number} maxTokens
 * @property {number} [window]
 * @property {number} [sinks]
 * @property {number} [scale]
 * @property {number} [softcap]
 * @property {RopeOptions} [rope]
 * @property {ArrayLike<number>} [sinkLogits] a learned logit per query head in every softmax's denominator
 * @property {true | readonly number[] | Float32Array | Float64Array} [alibi] a slope per query head (true: referenceAlibiSlopes(heads))
 */

/**
 * May a query at position p see the key at position j?
 * - causal: j <= p
 * - window: j > p - window, unless j < sinks (sinks are an exception to the window only)
 * @param {number} j @param {number} p @param {boolean} causal @param {number | undefined} window @param {number} sinks
 * @returns {boolean}
 */
export function isVisible(j, p, causal, window, sinks) {
  if (causal && j > p) return false;
  if (window !== undefined && !(j > p - window) && !(j < sinks)) return false;
  return true;
}

/**
 * @typedef {object} CoreArgs
 * @property {number} T queries
 * @property {number} S keys
 * @property {number} heads
 * @property {number} kvHeads
 * @property {number} headDim
 * @property {ArrayLike<number>} positions position of each query
 * @property {ArrayLike<number>} [keyPositions] position of each key (default: key j at position j)
 * @property {boolean} causal
 * @property {number} scale
 * @property {number | undefined} window
 * @property {number} sinks
 * @property {number | undefined} softcap
 * @property {ArrayLike<number>} [sinkLogits] per query head: joins the softmax's denominator, adds no value
 * @property {ArrayLike<number>} [alibi] per query head: its score of key position j from query position p
 *   gains slope · (j − p), after the softcap
 * @property {ArrayLike<number>} [mask] [T][S]: 0 where query t may not see key j whatever the positions say
 *   (a tree of drafts: a draft sees only its ancestors among the drafts)
 */

/**
 * The one attention loop everything uses: output [T][heads][headDim] and weights [T][heads][S].
 * @param {ArrayLike<number>} q @param {ArrayLike<number>} k @param {ArrayLike<number>} v @param {CoreArgs} a
 * @returns {{ out: Float64Array<ArrayBuffer>, weights: Float64Array<ArrayBuffer> }}
 */
function core(q, k, v, a) {
  const { T, S, heads, kvHeads, headDim: D } = a;
  const group = heads / kvHeads;
  const out = new Float64Array(T * heads * D);
  const weights = new Float64Array(T * heads * S);
  const scores = new Float64Array(S);
  /** @param {number} j @param {number} p */
  let t = 0;
  /** @param {number} j @param {number} p */
  const visible = (j, p) =>
    a.mask?.[t * S + j] !== 0 && isVisible(a.keyPositions ? a.keyPositions[j] : j, p, a.causal, a.window, a.sinks);
  for (t = 0; t < T; t++) {
    const p = a.positions[t];
    for (let h = 0; h < heads; h++) {
      const kh = Math.floor(h / group);
      const qOff = (t * heads + h) * D;
      // scores of the visible keys
      let max = -Infinity;
      let anyVisible = false;
      for (let j = 0; j < S; j++) {
        if (!visible(j, p)) continue;
        anyVisible = true;
        const kOff = (j * kvHeads + kh) * D;
        let dot = 0;
        for (let d = 0; d < D; d++) dot += q[qOff + d] * k[kOff + d];
        let s = a.scale * dot;
        if (a.softcap !== undefined) s = a.softcap * Math.tanh(s / a.softcap);
        if (a.alibi) s += a.alibi[h] * ((a.keyPositions ? a.keyPositions[j] : j) - p);
        scores[j] = s;
        if (s > max) max = s;
      }
      if (!anyVisible) throw new Error(`reference: query t=${t} at position ${p} sees no key`);
      // softmax over the visible keys only, and the head's sink logit (probability mass with no value)
      const sink = a.sinkLogits ? a.sinkLogits[h] : -Infinity;
      if (sink > max) max = sink;
      let sum = Math.exp(sink - max);
      for (let j = 0; j < S; j++) {
        if (!visible(j, p)) continue;
        sum += Math.exp(scores[j] - max);
      }
      const wOff = (t * heads + h) * S;
      for (let j = 0; j < S; j++) {
        if (!visible(j, p)) continue; // stays exactly 0
        weights[wOff + j] = Math.exp(scores[j] - max) / sum;
      }
      // weights × v
      for (let j = 0; j < S; j++) {
        const w = weights[wOff + j];
        if (w === 0) continue;
        const vOff = (j * kvHeads + kh) * D;
        for (let d = 0; d < D; d++) out[qOff + d] += w * v[vOff + d];
      }
    }
  }
  return { out, weights };
}

/** @param {ArrayLike<number>} q @param {ArrayLike<number>} k @param {ReferenceOptions} opts @returns {CoreArgs} */
function oneShotArgs(q, k, opts) {
  const heads = opts.heads;
  const kvHeads = opts.kvHeads ?? heads;
  const D = opts.headDim;
  if (heads % kvHeads !== 0) throw new Error('reference: heads % kvHeads !== 0');
  const T = q.length / (heads * D);
  const S = k.length / (kvHeads * D);
  if (!Number.isInteger(T) || !Number.isInteger(S)) throw new Error('reference: bad tensor lengths');
  const positions = [];
  for (let t = 0; t < T; t++) positions.push(S - T + t); // causal alignment: bottom-right
  return {
    T,
    S,
    heads,
    kvHeads,
    headDim: D,
    positions,
    causal: opts.causal ?? true,
    scale: opts.scale ?? 1 / Math.sqrt(D),
    window: opts.window,
    sinks: opts.sinks ?? 0,
    softcap: opts.softcap,
    alibi: opts.alibi === true ? referenceAlibiSlopes(heads) : opts.alibi,
  };
}

/**
 * One-shot attention: output [T][heads][headDim] in float64.
 * @param {ArrayLike<number>} q [T][heads][headDim]
 * @param {ArrayLike<number>} k [S][kvHeads][headDim]
 * @param {ArrayLike<number>} v [S][kvHeads][headDim]
 * @param {ReferenceOptions} opts
 * @returns {Float64Array<ArrayBuffer>}
 */
export function referenceAttention(q, k, v, opts) {
  return core(q, k, v, oneShotArgs(q, k, opts)).out;
}

/**
 * Softmax probabilities [T][heads][S], exactly 0 where masked.
 * @param {ArrayLike<number>} q @param {ArrayLike<number>} k @param {ArrayLike<number>} v @param {ReferenceOptions} opts
 * @returns {Float64Array<ArrayBuffer>}
 */
export function referenceWeights(q, k, v, opts) {
  return core(q, k, v, oneShotArgs(q, k, opts)).weights;
}

/**
 * Rotary position embedding of x: [tokens][nHeads][headDim], token i at positions[i].
 * Pair index i in [0, dims/2) rotates by angle positions·theta^(-2i/dims):
 * - half-split (GPT-NeoX/Llama, interleaved false): elements (i, i + dims/2)
 * - interleaved (GPT-J, interleaved true): elements (2i, 2i + 1)
 * Elements at index >= dims are copied unchanged.
 * @param {ArrayLike<number>} x @param {number} tokens @param {number} nHeads @param {number} headDim
 * @param {ArrayLike<number>} positions @param {RopeOptions} [opts]
 * @returns {Float64Array<ArrayBuffer>}
 */
export function referenceRope(x, tokens, nHeads, headDim, positions, opts = {}) {
  const dims = opts.dims ?? headDim;
  const frequencies = referenceRopeFrequencies(dims, opts);
  const factor = referenceRopeAttentionFactor(opts);
  const interleaved = opts.interleaved ?? false;
  if (dims % 2 !== 0 || dims > headDim) throw new Error('reference: rope dims must be even and <= headDim');
  const half = dims / 2;
  const y = Float64Array.from(x);
  for (let t = 0; t < tokens; t++) {
    const pos = positions[t];
    for (let h = 0; h < nHeads; h++) {
      const off = (t * nHeads + h) * headDim;
      for (let i = 0; i < half; i++) {
        const angle = pos * frequencies[i];
        const c = factor * Math.cos(angle);
        const s = factor * Math.sin(angle);
        const ia = interleaved ? off + 2 * i : off + i;
        const ib = interleaved ? off + 2 * i + 1 : off + i + half;
        const a = x[ia];
        const b = x[ib];
        y[ia] = a * c - b * s;
        y[ib] = a * s + b * c;
      }
    }
  }
  return y;
}

/**
 * The angle per position of each rotated pair i < dims/2: theta^(-2i/dims), scaled as `opts.scaling` says
 * (written from the definitions pair by pair, independently of the package's code):
 * - linear: divided by factor;
 * - llama3: wavelength 2π/f below originalMaxPositions/highFreqFactor kept, above
 *   originalMaxPositions/lowFreqFactor divided by factor, between blended by how many times the pair turns
 *   over the original context;
 * - yarn: a ramp over the pair index between the dimensions where a pair turns betaFast and betaSlow times
 *   over the original context (rounded outwards unless truncate is false): kept before, divided after.
 * @param {number} dims @param {RopeOptions} opts @returns {number[]}
 */
export function referenceRopeFrequencies(dims, opts) {
  if (opts.inverseFrequencies) return Array.from(opts.inverseFrequencies);
  const theta = opts.theta ?? 10000;
  const sc = opts.scaling;
  const out = [];
  for (let i = 0; i < dims / 2; i++) {
    const f = 1 / theta ** ((2 * i) / dims);
    if (!sc) out.push(f);
    else if (sc.type === 'linear') out.push(f / sc.factor);
    else if (sc.type === 'llama3') {
      const L = /** @type {number} */ (sc.originalMaxPositions);
      const lo = /** @type {number} */ (sc.lowFreqFactor);
      const hi = /** @type {number} */ (sc.highFreqFactor);
      const turns = (L * f) / (2 * Math.PI); // = L / wavelength
      if (turns > hi) out.push(f);
      else if (turns < lo) out.push(f / sc.factor);
      else {
        const w = (turns - lo) / (hi - lo);
        out.push(w * f + (1 - w) * (f / sc.factor));
      }
    } else if (sc.type === 'yarn') {
      const L = /** @type {number} */ (sc.originalMaxPositions);
      const dimWhere = (/** @type {number} */ turns) =>
        (dims * Math.log(L / (2 * Math.PI * turns))) / (2 * Math.log(theta));
      const truncate = sc.truncate ?? true;
      let a = dimWhere(sc.betaFast ?? 32);
      let b = dimWhere(sc.betaSlow ?? 1);
      if (truncate) {
        a = Math.floor(a);
        b = Math.ceil(b);
      }
      a = Math.max(0, a);
      b = Math.min(dims - 1, b);
      if (b === a) b += 0.001;
      const t = i <= a ? 0 : i >= b ? 1 : (i - a) / (b - a);
      out.push((1 - t) * f + t * (f / sc.factor));
    } else throw new Error(`reference: unknown rope scaling ${sc.type}`);
  }
  return out;
}

/** @param {RopeOptions} opts @returns {number} what multiplies cos and sin */
export function referenceRopeAttentionFactor(opts) {
  const sc = opts.scaling;
  if (sc && sc.type === 'yarn') return sc.attentionFactor ?? (sc.factor > 1 ? 1 + 0.1 * Math.log(sc.factor) : 1);
  return opts.attentionFactor ?? 1;
}

/** @param {ReferenceCacheOptions} o */
function cacheArgs(o) {
  return {
    heads: o.heads,
    kvHeads: o.kvHeads ?? o.heads,
    headDim: o.headDim,
    causal: true,
    scale: o.scale ?? 1 / Math.sqrt(o.headDim),
    window: o.window,
    sinks: o.sinks ?? 0,
    softcap: o.softcap,
    sinkLogits: o.sinkLogits,
    alibi: o.alibi === true ? referenceAlibiSlopes(o.heads) : o.alibi,
  };
}

/**
 * ALiBi's slopes for n heads as Press et al. define them: for a power of two, the geometric sequence that
 * starts at 2^(−8/n) with that ratio; otherwise those of the closest power of two below n, followed by
 * every other slope (the first, third, …) of twice that power, as many as heads remain.
 * @param {number} n @returns {number[]}
 */
export function referenceAlibiSlopes(n) {
  const geometric = (/** @type {number} */ m) => {
    const start = 2 ** (-8 / m);
    return Array.from({ length: m }, (_, i) => start * start ** i);
  };
  if (Number.isInteger(Math.log2(n))) return geometric(n);
  const closest = 2 ** Math.floor(Math.log2(n));
  const extra = geometric(2 * closest).filter((_, i) => i % 2 === 0);
  return [...geometric(closest), ...extra.slice(0, n - closest)];
}

/**
 * The float64 output [heads][headDim] of the query at position p of a cache (KVCache.attend semantics)
 * fed q/k/v from position 0 (token-major, at least p + 1 tokens each): rope at absolute positions, then
 * only the keys a window and sinks leave visible. Linear in p (ReferenceCache is quadratic in the
 * history), for checking late queries of a long stream.
 * @param {ReferenceCacheOptions} o @param {ArrayLike<number>} q @param {ArrayLike<number>} k
 * @param {ArrayLike<number>} v @param {number} p
 * @returns {Float64Array<ArrayBuffer>}
 */
export function referenceCacheQuery(o, q, k, v, p) {
  const a = cacheArgs(o);
  const kw = a.kvHeads * a.headDim;
  const qw = a.heads * a.headDim;
  const qAtP = Array.prototype.slice.call(q, p * qw, (p + 1) * qw);
  const keyPositions = [];
  for (let j = 0; j <= p; j++) if (isVisible(j, p, true, a.window, a.sinks)) keyPositions.push(j);
  const kv = new Float64Array(keyPositions.length * kw);
  const vv = new Float64Array(keyPositions.length * kw);
  keyPositions.forEach((j, i) => {
    for (let x = 0; x < kw; x++) {
      kv[i * kw + x] = k[j * kw + x];
      vv[i * kw + x] = v[j * kw + x];
    }
  });
  const qr = o.rope ? referenceRope(qAtP, 1, a.heads, a.headDim, [p], o.rope) : qAtP;
  const kr = o.rope ? referenceRope(kv, keyPositions.length, a.kvHeads, a.headDim, keyPositions, o.rope) : kv;
  return core(qr, kr, vv, { ...a, T: 1, S: keyPositions.length, positions: [p], keyPositions }).out;
}

/**
 * KVCache.attend semantics in float64. Keeps each layer's full history (rope applied to k at its
 * absolute position when appended); a window and sinks are masks on absolute positions, so the ring
 * buffer of the real cache must be invisible.
 */
export class ReferenceCache {
  /** @param {ReferenceCacheOptions} o */
  constructor(o) {
    this.layers = o.layers ?? 1;
    this.heads = o.heads;
    this.kvHeads = o.kvHeads ?? o.heads;
    this.headDim = o.headDim;
    this.maxTokens = o.maxTokens;
    this.window = o.window;
    this.sinks = o.sinks ?? 0;
    this.scale = o.scale ?? 1 / Math.sqrt(o.headDim);
    this.softcap = o.softcap;
    this.rope = o.rope;
    this.sinkLogits = o.sinkLogits;
    this.alibi = o.alibi;
    /** @private @type {number[][]} per layer, [len][kvHeads][headDim] flattened, roped */
    this.k = [];
    /** @private @type {number[][]} */
    this.v = [];
    /** @private @type {number[]} */
    this.lens = [];
    /** @private @type {Array<{ k: number[], v: number[] }> | undefined} per layer, the pending drafts (roped k) */
    this.drafts = undefined;
    for (let l = 0; l < this.layers; l++) {
      this.k.push([]);
      this.v.push([]);
      this.lens.push(0);
    }
  }

  /** @returns {number} */
  get length() {
    return this.lens[0];
  }

  /** @param {number} layer @returns {number} */
  lengthOf(layer) {
    return this.lens[layer];
  }

  /**
   * Append T tokens of k/v at positions len … len+T-1 and attend causally with the T queries.
   * @param {number} layer @param {ArrayLike<number>} q @param {ArrayLike<number>} k @param {ArrayLike<number>} v
   * @returns {Float64Array<ArrayBuffer>}
   */
  attend(layer, q, k, v) {
    const D = this.headDim;
    const T = q.length / (this.heads * D);
    if (!Number.isInteger(T) || k.length !== T * this.kvHeads * D || v.length !== k.length) {
      throw new Error('reference: bad tensor lengths');
    }
    const L = this.lens[layer];
    if (this.window === undefined && L + T > this.maxTokens) {
      throw new RangeError('reference: past maxTokens');
    }
    const positions = [];
    for (let t = 0; t < T; t++) positions.push(L + t);
    let qr = q;
    let kr = k;
    if (this.rope) {
      qr = referenceRope(q, T, this.heads, D, positions, this.rope);
      kr = referenceRope(k, T, this.kvHeads, D, positions, this.rope);
    }
    for (let i = 0; i < kr.length; i++) this.k[layer].push(kr[i]);
    for (let i = 0; i < v.length; i++) this.v[layer].push(v[i]);
    this.lens[layer] = L + T;
    return core(qr, this.k[layer], this.v[layer], { ...cacheArgs(this), T, S: L + T, positions }).out;
  }

  /**
   * KVCache.attendTree semantics: T draft tokens, draft i the child of draft parents[i] (−1: of the last
   * token). Draft i stands at position len + depth − 1 (RoPE there, its window from there) and sees the
   * history and, through an explicit mask, its ancestors and itself. The drafts wait (per layer) for accept.
   * @param {number} layer @param {ArrayLike<number>} q @param {ArrayLike<number>} k @param {ArrayLike<number>} v
   * @param {ArrayLike<number>} parents
   * @returns {Float64Array<ArrayBuffer>}
   */
  attendTree(layer, q, k, v, parents) {
    const D = this.headDim;
    const T = parents.length;
    const L = this.lens[layer];
    /** @type {number[]} */
    const depths = [];
    for (let i = 0; i < T; i++) depths.push(parents[i] < 0 ? 1 : depths[parents[i]] + 1);
    const positions = depths.map((d) => L + d - 1);
    let qr = q;
    let kr = k;
    if (this.rope) {
      qr = referenceRope(q, T, this.heads, D, positions, this.rope);
      kr = referenceRope(k, T, this.kvHeads, D, positions, this.rope);
    }
    const S = L + T;
    const mask = new Uint8Array(T * S);
    for (let i = 0; i < T; i++) {
      mask.fill(1, i * S, i * S + L);
      for (let j = i; j >= 0; j = parents[j]) mask[i * S + L + j] = 1;
    }
    const keyPositions = [...Array.from({ length: L }, (_, j) => j), ...positions];
    const keys = [...this.k[layer], ...Array.from(kr)];
    const values = [...this.v[layer], ...Array.from(v)];
    if (!this.drafts) this.drafts = [];
    this.drafts[layer] = { k: Array.from(kr), v: Array.from(v) };
    return core(qr, keys, values, { ...cacheArgs(this), T, S, positions, keyPositions, mask }).out;
  }

  /**
   * KVCache.accept semantics: the drafts of `path` (indices, a chain from a root) become the next tokens of
   * every layer, as they were rotated; the other drafts are forgotten.
   * @param {ArrayLike<number>} path
   */
  accept(path) {
    const w = this.kvHeads * this.headDim;
    for (let l = 0; l < this.layers; l++) {
      const drafts = this.drafts?.[l];
      if (!drafts) throw new Error(`reference: layer ${l} holds no drafts`);
      for (const d of Array.from(path)) {
        this.k[l].push(...drafts.k.slice(d * w, (d + 1) * w));
        this.v[l].push(...drafts.v.slice(d * w, (d + 1) * w));
        this.lens[l]++;
      }
    }
    this.drafts = undefined;
  }

  /**
   * Every layer keeps its first n tokens (layers already shorter keep all of theirs).
   * @param {number} n
   */
  truncate(n) {
    const w = this.kvHeads * this.headDim;
    for (let l = 0; l < this.layers; l++) {
      if (this.lens[l] > n) {
        this.lens[l] = n;
        this.k[l].length = n * w;
        this.v[l].length = n * w;
      }
    }
  }

  reset() {
    this.truncate(0);
  }
}

/**
 * Largest |a - b| over two equally long arrays; NaN anywhere makes it NaN.
 * @param {ArrayLike<number>} a @param {ArrayLike<number>} b @returns {number}
 */
export function maxAbsDiff(a, b) {
  if (a.length !== b.length) throw new RangeError(`maxAbsDiff: length ${a.length} vs ${b.length}`);
  let m = 0;
  for (let i = 0; i < a.length; i++) {
    const d = Math.abs(a[i] - b[i]);
    if (Number.isNaN(d)) return Number.NaN;
    if (d > m) m = d;
  }
  return m;
}
