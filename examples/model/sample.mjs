// Choosing the next token from a row of logits: greedy (temperature 0) or sampled with a temperature and
// an optional top-k cut, from a seeded generator so a seed always gives the same text.

/**
 * mulberry32: a small, well-known seeded generator of floats in [0, 1) (the examples carry their own copy
 * so they run wherever they are copied; the tests' seeded Rng draws from this one).
 * @param {number} seed
 * @returns {() => number}
 */
export function seededRandom(seed) {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/**
 * The index of the largest logit (the first one on a tie, as torch.argmax).
 * @param {Float32Array} logits
 * @param {number} offset where the row starts
 * @param {number} vocab
 */
export function argmax(logits, offset, vocab) {
  let best = 0;
  let bestValue = logits[offset];
  for (let i = 1; i < vocab; i++) {
    if (logits[offset + i] > bestValue) {
      bestValue = logits[offset + i];
      best = i;
    }
  }
  return best;
}

/**
 * A picker for one generation: greedy when temperature is 0, otherwise a draw from
 * softmax(logits / temperature) over the topK largest logits (all of them when topK is 0).
 * Each call consumes exactly one random number when sampling, so the same seed gives the same tokens
 * however the calls are grouped (prompt-lookup decoding relies on it).
 */
export class TokenPicker {
  /**
   * @param {number} vocab
   * @param {{ temperature?: number, topK?: number, seed?: number }} options
   */
  constructor(vocab, { temperature = 0, topK = 0, seed = 0 } = {}) {
    if (!(Number.isFinite(temperature) && temperature >= 0)) {
      throw new RangeError(`generate: options.temperature must be a finite number >= 0, got ${temperature}`);
    }
    if (!(Number.isInteger(topK) && topK >= 0)) {
      throw new RangeError(`generate: options.topK must be an integer >= 0, got ${topK}`);
    }
    this.vocab = vocab;
    this.temperature = temperature;
    this.topK = topK === 0 ? vocab : Math.min(topK, vocab);
    this.random = seededRandom(seed);
    this.probs = new Float64Array(vocab);
    this.order = new Int32Array(vocab);
  }

  /**
   * @param {Float32Array} logits
   * @param {number} offset where the row starts
   * @returns {number} the chosen token id
   */
  pick(logits, offset) {
    const { vocab, temperature, topK, probs, order } = this;
    if (temperature === 0) return argmax(logits, offset, vocab);
    // the topK largest logits, by a partial selection sort (topK is small) or all of them
    for (let i = 0; i < vocab; i++) order[i] = i;
    if (topK < vocab) {
      for (let i = 0; i < topK; i++) {
        let best = i;
        for (let j = i + 1; j < vocab; j++) if (logits[offset + order[j]] > logits[offset + order[best]]) best = j;
        const swap = order[i];
        order[i] = order[best];
        order[best] = swap;
      }
    }
    let max = Number.NEGATIVE_INFINITY;
    for (let i = 0; i < topK; i++) max = Math.max(max, logits[offset + order[i]]);
    let sum = 0;
    for (let i = 0; i < topK; i++) {
      probs[i] = Math.exp((logits[offset + order[i]] - max) / temperature);
      sum += probs[i];
    }
    let u = this.random() * sum;
    for (let i = 0; i < topK - 1; i++) {
      u -= probs[i];
      if (u < 0) return order[i];
    }
    return order[topK - 1];
  }
}
