// A float64 reference for wasm-attention, written to be obviously right rather than fast.
// Every rule here is a sentence of docs/API.md; nothing is shared with the kernel.

export interface ReferenceOptions {
  heads: number;
  kvHeads?: number; // default heads
  headDim: number;
  causal?: boolean; // default true
  scale?: number; // default 1 / sqrt(headDim)
  window?: number; // default none
  sinks?: number; // default 0
  softcap?: number; // default none
}

export interface RopeOptions {
  theta?: number; // default 10000
  dims?: number; // default headDim
  interleaved?: boolean; // default false (half-split, GPT-NeoX/Llama)
}

export interface ReferenceCacheOptions {
  layers?: number; // default 1
  heads: number;
  kvHeads?: number;
  headDim: number;
  maxTokens: number;
  window?: number;
  sinks?: number;
  scale?: number;
  softcap?: number;
  rope?: RopeOptions;
}

/**
 * May a query at position p see the key at position j?
 * - causal: j <= p
 * - window: j > p - window, unless j < sinks (sinks are an exception to the window only)
 */
export function isVisible(
  j: number,
  p: number,
  causal: boolean,
  window: number | undefined,
  sinks: number,
): boolean {
  if (causal && j > p) return false;
  if (window !== undefined && !(j > p - window) && !(j < sinks)) return false;
  return true;
}

interface CoreArgs {
  T: number; // queries
  S: number; // keys
  heads: number;
  kvHeads: number;
  headDim: number;
  positions: number[]; // position of each query
  causal: boolean;
  scale: number;
  window: number | undefined;
  sinks: number;
  softcap: number | undefined;
}

/** The one attention loop everything uses: returns output [T][heads][headDim] and weights [T][heads][S]. */
function core(
  q: ArrayLike<number>,
  k: ArrayLike<number>,
  v: ArrayLike<number>,
  a: CoreArgs,
): { out: Float64Array; weights: Float64Array } {
  const { T, S, heads, kvHeads, headDim: D } = a;
  const group = heads / kvHeads;
  const out = new Float64Array(T * heads * D);
  const weights = new Float64Array(T * heads * S);
  const scores = new Float64Array(S);
  for (let t = 0; t < T; t++) {
    const p = a.positions[t];
    for (let h = 0; h < heads; h++) {
      const kh = Math.floor(h / group);
      const qOff = (t * heads + h) * D;
      // scores of the visible keys
      let max = -Infinity;
      let anyVisible = false;
      for (let j = 0; j < S; j++) {
        if (!isVisible(j, p, a.causal, a.window, a.sinks)) continue;
        anyVisible = true;
        const kOff = (j * kvHeads + kh) * D;
        let dot = 0;
        for (let d = 0; d < D; d++) dot += q[qOff + d] * k[kOff + d];
        let s = a.scale * dot;
        if (a.softcap !== undefined) s = a.softcap * Math.tanh(s / a.softcap);
        scores[j] = s;
        if (s > max) max = s;
      }
      if (!anyVisible) throw new Error(`reference: query t=${t} at position ${p} sees no key`);
      // softmax over the visible keys only
      let sum = 0;
      for (let j = 0; j < S; j++) {
        if (!isVisible(j, p, a.causal, a.window, a.sinks)) continue;
        sum += Math.exp(scores[j] - max);
      }
      const wOff = (t * heads + h) * S;
      for (let j = 0; j < S; j++) {
        if (!isVisible(j, p, a.causal, a.window, a.sinks)) continue; // stays exactly 0
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

function oneShotArgs(q: ArrayLike<number>, k: ArrayLike<number>, opts: ReferenceOptions): CoreArgs {
  const heads = opts.heads;
  const kvHeads = opts.kvHeads ?? heads;
  const D = opts.headDim;
  if (heads % kvHeads !== 0) throw new Error('reference: heads % kvHeads !== 0');
  const T = q.length / (heads * D);
  const S = k.length / (kvHeads * D);
  if (!Number.isInteger(T) || !Number.isInteger(S)) throw new Error('reference: bad tensor lengths');
  const positions: number[] = [];
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
  };
}

/** One-shot attention: output [T][heads][headDim] in float64. */
export function referenceAttention(
  q: ArrayLike<number>,
  k: ArrayLike<number>,
  v: ArrayLike<number>,
  opts: ReferenceOptions,
): Float64Array {
  return core(q, k, v, oneShotArgs(q, k, opts)).out;
}

/** Softmax probabilities [T][heads][S], exactly 0 where masked. */
export function referenceWeights(
  q: ArrayLike<number>,
  k: ArrayLike<number>,
  v: ArrayLike<number>,
  opts: ReferenceOptions,
): Float64Array {
  return core(q, k, v, oneShotArgs(q, k, opts)).weights;
}

/**
 * Rotary position embedding of x: [tokens][nHeads][headDim], token i at positions[i].
 * Pair index i in [0, dims/2) rotates by angle positions·theta^(-2i/dims):
 * - half-split (GPT-NeoX/Llama, interleaved false): elements (i, i + dims/2)
 * - interleaved (GPT-J, interleaved true): elements (2i, 2i + 1)
 * Elements at index >= dims are copied unchanged.
 */
export function referenceRope(
  x: ArrayLike<number>,
  tokens: number,
  nHeads: number,
  headDim: number,
  positions: ArrayLike<number>,
  opts: RopeOptions = {},
): Float64Array {
  const theta = opts.theta ?? 10000;
  const dims = opts.dims ?? headDim;
  const interleaved = opts.interleaved ?? false;
  if (dims % 2 !== 0 || dims > headDim) throw new Error('reference: rope dims must be even and <= headDim');
  const half = dims / 2;
  const y = Float64Array.from(x as ArrayLike<number>);
  for (let t = 0; t < tokens; t++) {
    const pos = positions[t];
    for (let h = 0; h < nHeads; h++) {
      const off = (t * nHeads + h) * headDim;
      for (let i = 0; i < half; i++) {
        const angle = pos * Math.pow(theta, (-2 * i) / dims);
        const c = Math.cos(angle);
        const s = Math.sin(angle);
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
 * KVCache.attend semantics in float64. Keeps each layer's full history (rope applied to k at its
 * absolute position when appended); a window and sinks are masks on absolute positions, so the ring
 * buffer of the real cache must be invisible.
 */
export class ReferenceCache {
  readonly layers: number;
  readonly heads: number;
  readonly kvHeads: number;
  readonly headDim: number;
  readonly maxTokens: number;
  readonly window: number | undefined;
  readonly sinks: number;
  readonly scale: number;
  readonly softcap: number | undefined;
  readonly rope: RopeOptions | undefined;
  private k: number[][]; // per layer, [len][kvHeads][headDim] flattened, roped
  private v: number[][];
  private lens: number[];

  constructor(o: ReferenceCacheOptions) {
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
    this.k = [];
    this.v = [];
    this.lens = [];
    for (let l = 0; l < this.layers; l++) {
      this.k.push([]);
      this.v.push([]);
      this.lens.push(0);
    }
  }

  get length(): number {
    return this.lens[0];
  }

  lengthOf(layer: number): number {
    return this.lens[layer];
  }

  /** Append T tokens of k/v at positions len … len+T-1 and attend causally with the T queries. */
  attend(layer: number, q: ArrayLike<number>, k: ArrayLike<number>, v: ArrayLike<number>): Float64Array {
    const D = this.headDim;
    const T = q.length / (this.heads * D);
    if (!Number.isInteger(T) || k.length !== T * this.kvHeads * D || v.length !== k.length) {
      throw new Error('reference: bad tensor lengths');
    }
    const L = this.lens[layer];
    if (this.window === undefined && L + T > this.maxTokens) {
      throw new RangeError('reference: past maxTokens');
    }
    const positions: number[] = [];
    for (let t = 0; t < T; t++) positions.push(L + t);
    let qr: ArrayLike<number> = q;
    let kr: ArrayLike<number> = k;
    if (this.rope) {
      qr = referenceRope(q, T, this.heads, D, positions, this.rope);
      kr = referenceRope(k, T, this.kvHeads, D, positions, this.rope);
    }
    for (let i = 0; i < kr.length; i++) this.k[layer].push(kr[i]);
    for (let i = 0; i < v.length; i++) this.v[layer].push(v[i]);
    this.lens[layer] = L + T;
    return core(qr, this.k[layer], this.v[layer], {
      T,
      S: L + T,
      heads: this.heads,
      kvHeads: this.kvHeads,
      headDim: D,
      positions,
      causal: true,
      scale: this.scale,
      window: this.window,
      sinks: this.sinks,
      softcap: this.softcap,
    }).out;
  }

  /** Every layer keeps its first n tokens (layers already shorter keep all of theirs). */
  truncate(n: number): void {
    const w = this.kvHeads * this.headDim;
    for (let l = 0; l < this.layers; l++) {
      if (this.lens[l] > n) {
        this.lens[l] = n;
        this.k[l].length = n * w;
        this.v[l].length = n * w;
      }
    }
  }

  reset(): void {
    this.truncate(0);
  }
}
