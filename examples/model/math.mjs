// The plain-JavaScript arithmetic of a decoder layer, on row-major Float32Arrays, token-major ([T][n]).
// Nothing here allocates: every function writes into an array it is given.
//
// Each output number is computed in the same order whatever the number of tokens T, so running tokens one
// at a time or several at once gives the same bits. Prompt-lookup decoding relies on it: verifying drafts
// in one call reproduces the logits plain greedy decoding would have seen.

/**
 * y = x Wᵀ (+ bias): a linear layer with PyTorch's weight layout, W [out][in].
 * Each output is a dot product of two contiguous rows; the loop keeps one weight row hot while it visits
 * every token, so a prefill reads W once and a decode step streams it once.
 * @param {Float32Array} x [T][inDim]
 * @param {number} T
 * @param {Float32Array} W [outDim][inDim]
 * @param {number} inDim
 * @param {number} outDim
 * @param {Float32Array | null} bias [outDim]
 * @param {Float32Array} y [T][outDim]
 */
export function linear(x, T, W, inDim, outDim, bias, y) {
  const tail = inDim & ~3;
  for (let j = 0; j < outDim; j++) {
    const w0 = j * inDim;
    const b = bias === null ? 0 : bias[j];
    for (let t = 0; t < T; t++) {
      const x0 = t * inDim;
      // four running sums: independent additions the CPU can overlap
      let s0 = 0;
      let s1 = 0;
      let s2 = 0;
      let s3 = 0;
      let i = 0;
      for (; i < tail; i += 4) {
        s0 += W[w0 + i] * x[x0 + i];
        s1 += W[w0 + i + 1] * x[x0 + i + 1];
        s2 += W[w0 + i + 2] * x[x0 + i + 2];
        s3 += W[w0 + i + 3] * x[x0 + i + 3];
      }
      for (; i < inDim; i++) s0 += W[w0 + i] * x[x0 + i];
      y[t * outDim + j] = s0 + s1 + (s2 + s3) + b;
    }
  }
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
 * gate = silu(gate) * up, elementwise over the first n numbers (SwiGLU).
 * @param {Float32Array} gate
 * @param {Float32Array} up
 * @param {number} n
 */
export function swiglu(gate, up, n) {
  for (let i = 0; i < n; i++) {
    const g = gate[i];
    gate[i] = (g / (1 + Math.exp(-g))) * up[i];
  }
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
