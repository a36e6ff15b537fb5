// Rotary position embedding for the configs the cache's `rope` option cannot express yet: Llama 3.1's
// frequency scaling (`rope_scaling: { rope_type: 'llama3', … }`). The runner then rotates q and k here and
// hands them to a cache made without `rope`.

/**
 * Llama 3.1's scaled inverse frequencies of a head of `dims` rotated numbers: frequencies whose wavelength
 * is short next to the original context keep their value, long ones are divided by `factor`, and those in
 * between blend the two smoothly (Meta's definition, as transformers implements it).
 * @param {number} theta
 * @param {number} dims
 * @param {{ factor: number, low_freq_factor: number, high_freq_factor: number, original_max_position_embeddings: number }} scaling
 * @returns {Float64Array} dims / 2 inverse frequencies
 */
export function llama3InverseFrequencies(theta, dims, scaling) {
  const {
    factor,
    low_freq_factor: lowFreqFactor,
    high_freq_factor: highFreqFactor,
    original_max_position_embeddings: originalContext,
  } = scaling;
  const lowFreqWavelength = originalContext / lowFreqFactor;
  const highFreqWavelength = originalContext / highFreqFactor;
  const invFreq = new Float64Array(dims / 2);
  for (let i = 0; i < dims / 2; i++) {
    const base = theta ** ((-2 * i) / dims);
    const wavelength = (2 * Math.PI) / base;
    if (wavelength < highFreqWavelength) invFreq[i] = base;
    else if (wavelength > lowFreqWavelength) invFreq[i] = base / factor;
    else {
      const smooth = (originalContext / wavelength - lowFreqFactor) / (highFreqFactor - lowFreqFactor);
      invFreq[i] = (1 - smooth) * (base / factor) + smooth * base;
    }
  }
  return invFreq;
}

/**
 * Rotates the heads of T token rows in place by their positions, half-split (GPT-NeoX, Llama as
 * transformers stores it): number i of a head pairs with number i + dims/2.
 */
export class Rotary {
  /**
   * @param {Float64Array} invFreq dims / 2 inverse frequencies
   * @param {number} headDim
   */
  constructor(invFreq, headDim) {
    this.invFreq = invFreq;
    this.half = invFreq.length;
    this.headDim = headDim;
    this.cos = new Float64Array(this.half);
    this.sin = new Float64Array(this.half);
  }

  /**
   * @param {Float32Array} x [T][heads][headDim]
   * @param {number} heads
   * @param {number} position of the first row
   * @param {number} T rows
   */
  rotate(x, heads, position, T) {
    const { half, headDim, cos, sin, invFreq } = this;
    for (let t = 0; t < T; t++) {
      for (let i = 0; i < half; i++) {
        const angle = (position + t) * invFreq[i];
        cos[i] = Math.cos(angle);
        sin[i] = Math.sin(angle);
      }
      for (let h = 0; h < heads; h++) {
        const base = (t * heads + h) * headDim;
        for (let i = 0; i < half; i++) {
          const a = x[base + i];
          const b = x[base + half + i];
          x[base + i] = a * cos[i] - b * sin[i];
          x[base + half + i] = b * cos[i] + a * sin[i];
        }
      }
    }
  }
}
