// The plain-JavaScript arithmetic of a decoder layer, on row-major Float32Arrays, token-major ([T][n]).
// Nothing here allocates: every function writes into an array it is given.
//
// Each output number is computed in the same order whatever the number of tokens T, so running tokens one
// at a time or several at once gives the same bits. Prompt-lookup decoding relies on it: verifying drafts
// in one call reproduces the logits plain greedy decoding would have seen.

/**
 * y = x Wᵀ (+ bias): a linear layer with PyTorch's weight layout, W [out][in].
 * Four output rows at a time share each load of x, and each token revisits the same four weight rows
 * while they are in the L1 cache; every output is a dot product summed in two running sums (even and odd
 * indices), in the same order whether its row is in a block of four or in the tail.
 * @param {Float32Array} x [T][inDim]
 * @param {number} T
 * @param {Float32Array} W [outDim][inDim]
 * @param {number} inDim
 * @param {number} outDim
 * @param {Float32Array | null} bias [outDim]
 * @param {Float32Array} y [T][outDim]
 */
export function linear(x, T, W, inDim, outDim, bias, y) {
  const blocked = outDim & ~3;
  const even = inDim & ~1;
  for (let j = 0; j < blocked; j += 4) {
    const w0 = j * inDim;
    const w1 = w0 + inDim;
    const w2 = w1 + inDim;
    const w3 = w2 + inDim;
    for (let t = 0; t < T; t++) {
      const x0 = t * inDim;
      let a0 = 0;
      let b0 = 0;
      let a1 = 0;
      let b1 = 0;
      let a2 = 0;
      let b2 = 0;
      let a3 = 0;
      let b3 = 0;
      let i = 0;
      for (; i < even; i += 2) {
        const xa = x[x0 + i];
        const xb = x[x0 + i + 1];
        a0 += W[w0 + i] * xa;
        b0 += W[w0 + i + 1] * xb;
        a1 += W[w1 + i] * xa;
        b1 += W[w1 + i + 1] * xb;
        a2 += W[w2 + i] * xa;
        b2 += W[w2 + i + 1] * xb;
        a3 += W[w3 + i] * xa;
        b3 += W[w3 + i + 1] * xb;
      }
      if (i < inDim) {
        const xa = x[x0 + i];
        a0 += W[w0 + i] * xa;
        a1 += W[w1 + i] * xa;
        a2 += W[w2 + i] * xa;
        a3 += W[w3 + i] * xa;
      }
      const o = t * outDim + j;
      y[o] = a0 + b0 + (bias === null ? 0 : bias[j]);
      y[o + 1] = a1 + b1 + (bias === null ? 0 : bias[j + 1]);
      y[o + 2] = a2 + b2 + (bias === null ? 0 : bias[j + 2]);
      y[o + 3] = a3 + b3 + (bias === null ? 0 : bias[j + 3]);
    }
  }
  for (let j = blocked; j < outDim; j++) {
    const w0 = j * inDim;
    for (let t = 0; t < T; t++) {
      const x0 = t * inDim;
      let a0 = 0;
      let b0 = 0;
      let i = 0;
      for (; i < even; i += 2) {
        a0 += W[w0 + i] * x[x0 + i];
        b0 += W[w0 + i + 1] * x[x0 + i + 1];
      }
      if (i < inDim) a0 += W[w0 + i] * x[x0 + i];
      y[t * outDim + j] = a0 + b0 + (bias === null ? 0 : bias[j]);
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
