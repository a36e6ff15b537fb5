// The plain-JavaScript arithmetic of a decoder layer, on row-major Float32Arrays, token-major ([T][n]).
// Nothing here allocates: every function writes into an array it is given.
//
// Each output number is computed in the same order whatever the number of tokens T, so running tokens one
// at a time or several at once gives the same bits. Prompt-lookup decoding relies on it: verifying drafts
// in one call reproduces the logits plain greedy decoding would have seen.

/**
 * y = x Wᵀ (+ bias): a linear layer with PyTorch's weight layout, W [out][in].
 * Every output is one dot product summed in index order, whichever path computes it, so any T gives the
 * same bits. The paths differ in how loads are shared: three weight rows against three tokens at a time
 * (each number loaded once for three products); tokens left over go by pairs, four rows at a time (T = 4,
 * 7, 10 … end in two pairs rather than a lone token), and a lone token (a decode step) takes eight rows.
 * A token of a multi-token call (a prefill, a prompt-lookup verification) thus costs about 0.7 of a token
 * decoded alone: the multiply and the add of each product remain, and no register blocking that V8
 * compiles well shares more loads (docs/PERFORMANCE.md).
 * @param {Float32Array} x [T][inDim]
 * @param {number} T
 * @param {Float32Array} W [outDim][inDim]
 * @param {number} inDim
 * @param {number} outDim
 * @param {Float32Array | null} bias [outDim]
 * @param {Float32Array} y [T][outDim]
 */
export function linear(x, T, W, inDim, outDim, bias, y) {
  // a lone token left after the triples would run at a decode step's cost: make it two pairs instead
  const triples = T >= 4 && T % 3 === 1 ? T - 4 : T - (T % 3);
  if (triples > 0) {
    let j = 0;
    for (; j + 3 <= outDim; j += 3) {
      for (let t = 0; t < triples; t += 3) rows3Tokens3(x, t, W, inDim, outDim, j, bias, y);
    }
    for (; j < outDim; j++) {
      for (let t = 0; t < triples; t++) y[t * outDim + j] = dot(x, t * inDim, W, j * inDim, inDim, bias, j);
    }
  }
  if (T - triples >= 2) {
    let j = 0;
    for (; j + 4 <= outDim; j += 4) {
      for (let t = triples; t < T; t += 2) rows4Tokens2(x, t, W, inDim, outDim, j, bias, y);
    }
    for (; j < outDim; j++) {
      for (let t = triples; t < T; t++) y[t * outDim + j] = dot(x, t * inDim, W, j * inDim, inDim, bias, j);
    }
  } else if (T - triples === 1) {
    const t = triples;
    let j = 0;
    for (; j + 8 <= outDim; j += 8) rows8(x, t, W, inDim, outDim, j, bias, y);
    for (; j < outDim; j++) y[t * outDim + j] = dot(x, t * inDim, W, j * inDim, inDim, bias, j);
  }
}

/** One output: x[x0 …] · W[w0 …] + bias[j], summed in index order. */
function dot(
  /** @type {Float32Array} */ x,
  /** @type {number} */ x0,
  /** @type {Float32Array} */ W,
  /** @type {number} */ w0,
  /** @type {number} */ n,
  /** @type {Float32Array | null} */ bias,
  /** @type {number} */ j,
) {
  let s = 0;
  for (let i = 0; i < n; i++) s += W[w0 + i] * x[x0 + i];
  return s + (bias === null ? 0 : bias[j]);
}

/** Outputs j … j+7 of token t. */
function rows8(
  /** @type {Float32Array} */ x,
  /** @type {number} */ t,
  /** @type {Float32Array} */ W,
  /** @type {number} */ n,
  /** @type {number} */ m,
  /** @type {number} */ j,
  /** @type {Float32Array | null} */ bias,
  /** @type {Float32Array} */ y,
) {
  const x0 = t * n;
  const w0 = j * n;
  const w1 = w0 + n;
  const w2 = w1 + n;
  const w3 = w2 + n;
  const w4 = w3 + n;
  const w5 = w4 + n;
  const w6 = w5 + n;
  const w7 = w6 + n;
  let s0 = 0;
  let s1 = 0;
  let s2 = 0;
  let s3 = 0;
  let s4 = 0;
  let s5 = 0;
  let s6 = 0;
  let s7 = 0;
  for (let i = 0; i < n; i++) {
    const a = x[x0 + i];
    s0 += W[w0 + i] * a;
    s1 += W[w1 + i] * a;
    s2 += W[w2 + i] * a;
    s3 += W[w3 + i] * a;
    s4 += W[w4 + i] * a;
    s5 += W[w5 + i] * a;
    s6 += W[w6 + i] * a;
    s7 += W[w7 + i] * a;
  }
  const o = t * m + j;
  y[o] = s0 + (bias === null ? 0 : bias[j]);
  y[o + 1] = s1 + (bias === null ? 0 : bias[j + 1]);
  y[o + 2] = s2 + (bias === null ? 0 : bias[j + 2]);
  y[o + 3] = s3 + (bias === null ? 0 : bias[j + 3]);
  y[o + 4] = s4 + (bias === null ? 0 : bias[j + 4]);
  y[o + 5] = s5 + (bias === null ? 0 : bias[j + 5]);
  y[o + 6] = s6 + (bias === null ? 0 : bias[j + 6]);
  y[o + 7] = s7 + (bias === null ? 0 : bias[j + 7]);
}

/** Outputs j … j+3 of tokens t and t+1. */
function rows4Tokens2(
  /** @type {Float32Array} */ x,
  /** @type {number} */ t,
  /** @type {Float32Array} */ W,
  /** @type {number} */ n,
  /** @type {number} */ m,
  /** @type {number} */ j,
  /** @type {Float32Array | null} */ bias,
  /** @type {Float32Array} */ y,
) {
  const w0 = j * n;
  const w1 = w0 + n;
  const w2 = w1 + n;
  const w3 = w2 + n;
  const xa = t * n;
  const xb = xa + n;
  let a0 = 0;
  let a1 = 0;
  let a2 = 0;
  let a3 = 0;
  let b0 = 0;
  let b1 = 0;
  let b2 = 0;
  let b3 = 0;
  for (let i = 0; i < n; i++) {
    const u0 = W[w0 + i];
    const u1 = W[w1 + i];
    const u2 = W[w2 + i];
    const u3 = W[w3 + i];
    const p = x[xa + i];
    const q = x[xb + i];
    a0 += u0 * p;
    a1 += u1 * p;
    a2 += u2 * p;
    a3 += u3 * p;
    b0 += u0 * q;
    b1 += u1 * q;
    b2 += u2 * q;
    b3 += u3 * q;
  }
  const d0 = bias === null ? 0 : bias[j];
  const d1 = bias === null ? 0 : bias[j + 1];
  const d2 = bias === null ? 0 : bias[j + 2];
  const d3 = bias === null ? 0 : bias[j + 3];
  const ya = t * m + j;
  const yb = ya + m;
  y[ya] = a0 + d0;
  y[ya + 1] = a1 + d1;
  y[ya + 2] = a2 + d2;
  y[ya + 3] = a3 + d3;
  y[yb] = b0 + d0;
  y[yb + 1] = b1 + d1;
  y[yb + 2] = b2 + d2;
  y[yb + 3] = b3 + d3;
}

/** Outputs j … j+2 of tokens t … t+2. */
function rows3Tokens3(
  /** @type {Float32Array} */ x,
  /** @type {number} */ t,
  /** @type {Float32Array} */ W,
  /** @type {number} */ n,
  /** @type {number} */ m,
  /** @type {number} */ j,
  /** @type {Float32Array | null} */ bias,
  /** @type {Float32Array} */ y,
) {
  const w0 = j * n;
  const w1 = w0 + n;
  const w2 = w1 + n;
  const xa = t * n;
  const xb = xa + n;
  const xc = xb + n;
  let a0 = 0;
  let a1 = 0;
  let a2 = 0;
  let b0 = 0;
  let b1 = 0;
  let b2 = 0;
  let c0 = 0;
  let c1 = 0;
  let c2 = 0;
  for (let i = 0; i < n; i++) {
    const u0 = W[w0 + i];
    const u1 = W[w1 + i];
    const u2 = W[w2 + i];
    const p = x[xa + i];
    const q = x[xb + i];
    const r = x[xc + i];
    a0 += u0 * p;
    a1 += u1 * p;
    a2 += u2 * p;
    b0 += u0 * q;
    b1 += u1 * q;
    b2 += u2 * q;
    c0 += u0 * r;
    c1 += u1 * r;
    c2 += u2 * r;
  }
  const d0 = bias === null ? 0 : bias[j];
  const d1 = bias === null ? 0 : bias[j + 1];
  const d2 = bias === null ? 0 : bias[j + 2];
  const ya = t * m + j;
  const yb = ya + m;
  const yc = yb + m;
  y[ya] = a0 + d0;
  y[ya + 1] = a1 + d1;
  y[ya + 2] = a2 + d2;
  y[yb] = b0 + d0;
  y[yb + 1] = b1 + d1;
  y[yb + 2] = b2 + d2;
  y[yc] = c0 + d0;
  y[yc + 1] = c1 + d1;
  y[yc + 2] = c2 + d2;
}

/**
 * y = x / rms(x) * weight, per token (RMSNorm; the sum of squares in float64).
 * @param {Float32Array} x [T][dim]
 * @param {number} T
 * @param {number} dim
 * @param {Float32Array} weight [dim]
 * @param {number} eps
 * @param {Float32Array} y [T][dim]
 */
export function rmsNorm(x, T, dim, weight, eps, y) {
  for (let t = 0; t < T; t++) {
    const o = t * dim;
    let sum = 0;
    for (let i = 0; i < dim; i++) sum += x[o + i] * x[o + i];
    // as transformers: normalize in float32, then scale by the weight
    const r = 1 / Math.sqrt(sum / dim + eps);
    for (let i = 0; i < dim; i++) y[o + i] = weight[i] * Math.fround(x[o + i] * r);
  }
}

/**
 * @typedef {{ wGate: Float32Array, bGate: Float32Array | null, wUp: Float32Array, bUp: Float32Array | null,
 *   wDown: Float32Array, bDown: Float32Array | null }} MlpWeights a layer's SwiGLU MLP: gate and up
 *   [hidden][dim], down [dim][hidden]
 * @typedef {(x: Float32Array, T: number, w: MlpWeights, dim: number, hidden: number, y: Float32Array,
 *   scratch: { gate: Float32Array, up: Float32Array }) => void} Mlp y = down(silu(gate(x)) · up(x)) for T
 *   tokens (x, y: [T][dim]); scratch: at least T · hidden numbers each, overwritten
 */

/**
 * The MLP computed by three calls of `linear` and `swiglu`.
 * @param {typeof linear} linearOf the linear layer to use
 * @returns {Mlp}
 */
export function mlpOf(linearOf) {
  return (x, T, w, dim, hidden, y, { gate, up }) => {
    linearOf(x, T, w.wGate, dim, hidden, w.bGate, gate);
    linearOf(x, T, w.wUp, dim, hidden, w.bUp, up);
    swiglu(gate, up, T * hidden);
    linearOf(gate, T, w.wDown, hidden, dim, w.bDown, y);
  };
}

/**
 * gate = silu(gate) * up, elementwise over the first n numbers (SwiGLU), in float64 and rounded to float32
 * once; with this module's `exp`, so wasm/matmul.ts's SwiGLU gives the same bits.
 * @param {Float32Array} gate
 * @param {Float32Array} up
 * @param {number} n
 */
export function swiglu(gate, up, n) {
  for (let i = 0; i < n; i++) {
    const g = gate[i];
    gate[i] = (g / (1 + exp(-g))) * up[i];
  }
}

// e^z of our own, for SwiGLU: Math.exp may differ between engines (the language leaves its accuracy to
// them), and the WebAssembly SwiGLU (wasm/matmul.ts) has no exp to call. Basic operations only, each
// rounded as IEEE 754 says and none fused, in the order wasm/matmul.ts has them: z = k ln 2 + r with
// |r| <= ln 2 / 2 (k · LN2_HI exact), e^r by its Taylor polynomial to degree 12 (the next term is below
// 2^-52 of it), times 2^k as two exact powers of two (each a normal number, whatever k). Relative error
// against Math.exp measured in test/model.test.ts.
const EXP_LO = -746; // e^z is 0 in float64 below about -745.13
const EXP_HI = 710; // and +Infinity above about 709.78
const LOG2E = Math.LOG2E; // 1.4426950408889634, as wasm/matmul.ts writes it
const LN2_HI = 0.6931471803691238; // ln 2's first 32 bits: k · LN2_HI is exact for |k| < 2^21
const LN2_LO = 1.9082149292705877e-10;
const ROUND = 6755399441055744; // 1.5 · 2^52: adding it rounds to an integer
const C2 = 0.5;
const C3 = 0.16666666666666666;
const C4 = 0.041666666666666664;
const C5 = 0.008333333333333333;
const C6 = 0.001388888888888889;
const C7 = 0.0001984126984126984;
const C8 = 0.0000248015873015873;
const C9 = 0.0000027557319223985893;
const C10 = 2.755731922398589e-7;
const C11 = 2.505210838544172e-8;
const C12 = 2.08767569878681e-9;
/** 2^j for j from -600 to 600 at index j + 600, exact (doubling and halving): exp's scaling. */
const POW2 = (() => {
  const table = new Float64Array(1201);
  table[600] = 1;
  for (let j = 1; j <= 600; j++) {
    table[600 + j] = table[599 + j] * 2;
    table[600 - j] = table[601 - j] / 2;
  }
  return table;
})();

/**
 * e^z in float64 (0 below about -745, +Infinity above about 709.8, NaN for NaN).
 * @param {number} z
 */
export function exp(z) {
  const c = Math.max(Math.min(z, EXP_HI), EXP_LO);
  const t = c * LOG2E + ROUND;
  const kf = t - ROUND; // the integer nearest c · log2 e (ties to even)
  const r = c - kf * LN2_HI - kf * LN2_LO;
  let p = C12;
  p = p * r + C11;
  p = p * r + C10;
  p = p * r + C9;
  p = p * r + C8;
  p = p * r + C7;
  p = p * r + C6;
  p = p * r + C5;
  p = p * r + C4;
  p = p * r + C3;
  p = p * r + C2;
  p = p * r + 1;
  p = p * r + 1;
  const k = kf | 0; // NaN: 0, and p is NaN
  const k1 = k >> 1;
  return p * POW2[k1 + 600] * POW2[k - k1 + 600];
}

/**
 * x += y over the first n numbers (a residual connection).
 * @param {Float32Array} x
 * @param {Float32Array} y
 * @param {number} n
 */
export function addInto(x, y, n) {
  for (let i = 0; i < n; i++) x[i] += y[i];
}
