// The plain-JavaScript arithmetic of a decoder layer, on row-major Float32Arrays, token-major ([T][n]).
// Nothing here allocates: every function writes into an array it is given.
//
// Each output number is computed in the same order whatever the number of tokens T, so running tokens one
// at a time or several at once gives the same bits. Prompt-lookup decoding relies on it: verifying drafts
// in one call reproduces the logits plain greedy decoding would have seen.

const f32 = Math.fround;

/**
 * y = x Wᵀ (+ bias): a linear layer with PyTorch's weight layout, W [out][in].
 * Every output is summed in float32 in four lanes, lane j taking the products of inputs i ≡ j (mod 4) in
 * index order, each product and each sum rounded to float32 (Math.fround of a float64 product or sum of
 * float32 numbers is the float32 operation's result: the product is exact in float64, and a sum rounded
 * twice, to float64 and then to float32, rounds as once); then (l0 + l1) + (l2 + l3), then the bias. That is
 * wasm/matmul.ts's order, one f32x4 step per four inputs, so both give the same bits, and any T too: the
 * paths below differ only in how loads are shared (two tokens at a time against one row; a lone token, a
 * decode step, two rows at a time).
 * @param {Float32Array} x [T][inDim]
 * @param {number} T
 * @param {Float32Array} W [outDim][inDim]
 * @param {number} inDim
 * @param {number} outDim
 * @param {Float32Array | null} bias [outDim]
 * @param {Float32Array} y [T][outDim]
 */
export function linear(x, T, W, inDim, outDim, bias, y) {
  if (T === 1) {
    let j = 0;
    for (; j + 2 <= outDim; j += 2) row2Token1(x, W, j * inDim, inDim, j, bias, y);
    if (j < outDim) y[j] = withBias(dot(x, 0, W, j * inDim, inDim), bias, j);
    return;
  }
  // rows outermost, so a row's weights stay in cache over the tokens
  const pairs = T & ~1;
  for (let j = 0; j < outDim; j++) {
    const w0 = j * inDim;
    for (let t = 0; t < pairs; t += 2) row1Tokens2(x, t, W, w0, inDim, outDim, j, bias, y);
    if (pairs < T) y[pairs * outDim + j] = withBias(dot(x, pairs * inDim, W, w0, inDim), bias, j);
  }
}

/** A sum with output j's bias added, or the sum itself without one (as wasm/matmul.ts does). */
function withBias(/** @type {number} */ s, /** @type {Float32Array | null} */ bias, /** @type {number} */ j) {
  return bias === null ? s : f32(s + bias[j]);
}

/** One output: x[x0 …] · W[w0 …] in the four lanes, combined. */
function dot(
  /** @type {Float32Array} */ x,
  /** @type {number} */ x0,
  /** @type {Float32Array} */ W,
  /** @type {number} */ w0,
  /** @type {number} */ n,
) {
  let s0 = 0;
  let s1 = 0;
  let s2 = 0;
  let s3 = 0;
  let i = 0;
  for (; i + 4 <= n; i += 4) {
    s0 = f32(s0 + f32(W[w0 + i] * x[x0 + i]));
    s1 = f32(s1 + f32(W[w0 + i + 1] * x[x0 + i + 1]));
    s2 = f32(s2 + f32(W[w0 + i + 2] * x[x0 + i + 2]));
    s3 = f32(s3 + f32(W[w0 + i + 3] * x[x0 + i + 3]));
  }
  // the last inputs (fewer than four) to the first lanes
  if (i < n) s0 = f32(s0 + f32(W[w0 + i] * x[x0 + i]));
  if (i + 1 < n) s1 = f32(s1 + f32(W[w0 + i + 1] * x[x0 + i + 1]));
  if (i + 2 < n) s2 = f32(s2 + f32(W[w0 + i + 2] * x[x0 + i + 2]));
  return f32(f32(s0 + s1) + f32(s2 + s3));
}

/** Output j of tokens t and t+1, as `dot` sums each. */
function row1Tokens2(
  /** @type {Float32Array} */ x,
  /** @type {number} */ t,
  /** @type {Float32Array} */ W,
  /** @type {number} */ w0,
  /** @type {number} */ n,
  /** @type {number} */ m,
  /** @type {number} */ j,
  /** @type {Float32Array | null} */ bias,
  /** @type {Float32Array} */ y,
) {
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
  let i = 0;
  for (; i + 4 <= n; i += 4) {
    const u0 = W[w0 + i];
    const u1 = W[w0 + i + 1];
    const u2 = W[w0 + i + 2];
    const u3 = W[w0 + i + 3];
    a0 = f32(a0 + f32(u0 * x[xa + i]));
    a1 = f32(a1 + f32(u1 * x[xa + i + 1]));
    a2 = f32(a2 + f32(u2 * x[xa + i + 2]));
    a3 = f32(a3 + f32(u3 * x[xa + i + 3]));
    b0 = f32(b0 + f32(u0 * x[xb + i]));
    b1 = f32(b1 + f32(u1 * x[xb + i + 1]));
    b2 = f32(b2 + f32(u2 * x[xb + i + 2]));
    b3 = f32(b3 + f32(u3 * x[xb + i + 3]));
  }
  if (i < n) {
    a0 = f32(a0 + f32(W[w0 + i] * x[xa + i]));
    b0 = f32(b0 + f32(W[w0 + i] * x[xb + i]));
  }
  if (i + 1 < n) {
    a1 = f32(a1 + f32(W[w0 + i + 1] * x[xa + i + 1]));
    b1 = f32(b1 + f32(W[w0 + i + 1] * x[xb + i + 1]));
  }
  if (i + 2 < n) {
    a2 = f32(a2 + f32(W[w0 + i + 2] * x[xa + i + 2]));
    b2 = f32(b2 + f32(W[w0 + i + 2] * x[xb + i + 2]));
  }
  const sa = f32(f32(a0 + a1) + f32(a2 + a3));
  const sb = f32(f32(b0 + b1) + f32(b2 + b3));
  y[t * m + j] = withBias(sa, bias, j);
  y[(t + 1) * m + j] = withBias(sb, bias, j);
}

/** Outputs j and j+1 of a lone token (a decode step), as `dot` sums each. */
function row2Token1(
  /** @type {Float32Array} */ x,
  /** @type {Float32Array} */ W,
  /** @type {number} */ w0,
  /** @type {number} */ n,
  /** @type {number} */ j,
  /** @type {Float32Array | null} */ bias,
  /** @type {Float32Array} */ y,
) {
  const w1 = w0 + n;
  let a0 = 0;
  let a1 = 0;
  let a2 = 0;
  let a3 = 0;
  let b0 = 0;
  let b1 = 0;
  let b2 = 0;
  let b3 = 0;
  let i = 0;
  for (; i + 4 <= n; i += 4) {
    const p0 = x[i];
    const p1 = x[i + 1];
    const p2 = x[i + 2];
    const p3 = x[i + 3];
    a0 = f32(a0 + f32(W[w0 + i] * p0));
    a1 = f32(a1 + f32(W[w0 + i + 1] * p1));
    a2 = f32(a2 + f32(W[w0 + i + 2] * p2));
    a3 = f32(a3 + f32(W[w0 + i + 3] * p3));
    b0 = f32(b0 + f32(W[w1 + i] * p0));
    b1 = f32(b1 + f32(W[w1 + i + 1] * p1));
    b2 = f32(b2 + f32(W[w1 + i + 2] * p2));
    b3 = f32(b3 + f32(W[w1 + i + 3] * p3));
  }
  if (i < n) {
    a0 = f32(a0 + f32(W[w0 + i] * x[i]));
    b0 = f32(b0 + f32(W[w1 + i] * x[i]));
  }
  if (i + 1 < n) {
    a1 = f32(a1 + f32(W[w0 + i + 1] * x[i + 1]));
    b1 = f32(b1 + f32(W[w1 + i + 1] * x[i + 1]));
  }
  if (i + 2 < n) {
    a2 = f32(a2 + f32(W[w0 + i + 2] * x[i + 2]));
    b2 = f32(b2 + f32(W[w1 + i + 2] * x[i + 2]));
  }
  const sa = f32(f32(a0 + a1) + f32(a2 + a3));
  const sb = f32(f32(b0 + b1) + f32(b2 + b3));
  y[j] = withBias(sa, bias, j);
  y[j + 1] = withBias(sb, bias, j + 1);
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
