// A whole decoder-only transformer around KVCache: embeddings, per layer RMSNorm → q/k/v projections →
// cache.attend (RoPE, grouped-query attention, the cache) → output projection → residual → RMSNorm → SwiGLU
// MLP → residual, then the tied unembedding and greedy decoding. Projections are plain JS matmuls; the
// weights are random (a real model loads trained ones), so the tokens it writes mean nothing, but the
// wiring is the one a real model uses.
//
// It checks itself: generating with one cache, a prefill then one token per step, must give exactly (bit for
// bit) the logits of recomputing every step from scratch over the whole sequence with a fresh cache.
//
//   node examples/node/model.mjs [--steps 32]
import { init, KVCache } from 'wasm-attention';

const config = { vocab: 96, dim: 128, layers: 2, heads: 8, kvHeads: 2, headDim: 16, hidden: 256, ropeTheta: 10000 };
const steps = Number(process.argv[process.argv.indexOf('--steps') + 1] || 32) || 32;

// ---- weights: seeded random numbers scaled by 1/sqrt(fan-in), as an initializer would
let seed = 42;
function uniform() {
  // a linear congruential generator: numbers in [-1, 1)
  seed = (Math.imul(seed, 1664525) + 1013904223) >>> 0;
  return (seed / 2 ** 32) * 2 - 1;
}
const matrix = (rows, cols) => Float32Array.from({ length: rows * cols }, () => uniform() * Math.sqrt(3 / rows));
const { vocab, dim, heads, kvHeads, headDim, hidden } = config;
const embedding = matrix(vocab, dim); // [vocab][dim], also the output projection (tied)
const layers = Array.from({ length: config.layers }, () => ({
  wq: matrix(dim, heads * headDim),
  wk: matrix(dim, kvHeads * headDim),
  wv: matrix(dim, kvHeads * headDim),
  wo: matrix(heads * headDim, dim),
  wGate: matrix(dim, hidden),
  wUp: matrix(dim, hidden),
  wDown: matrix(hidden, dim),
}));

// ---- the plain-JS parts: x is [T][dim], token-major, as the attention tensors are
/** [T][n] × [n][m] → [T][m] */
function matmul(x, w, n, m) {
  const T = x.length / n,
    y = new Float32Array(T * m);
  for (let t = 0; t < T; t++) {
    for (let i = 0; i < n; i++) {
      const a = x[t * n + i];
      for (let j = 0; j < m; j++) y[t * m + j] += a * w[i * m + j];
    }
  }
  return y;
}

function rmsNorm(x) {
  const y = new Float32Array(x.length);
  for (let t = 0; t < x.length / dim; t++) {
    let sum = 0;
    for (let i = 0; i < dim; i++) sum += x[t * dim + i] ** 2;
    const r = 1 / Math.sqrt(sum / dim + 1e-6);
    for (let i = 0; i < dim; i++) y[t * dim + i] = x[t * dim + i] * r;
  }
  return y;
}

const addInto = (x, y) => {
  for (let i = 0; i < x.length; i++) x[i] += y[i];
};
const silu = (z) => z / (1 + Math.exp(-z));

/** Token ids → their embeddings, [T][dim]. */
function embed(tokens) {
  const x = new Float32Array(tokens.length * dim);
  tokens.forEach((token, t) => {
    x.set(embedding.subarray(token * dim, (token + 1) * dim), t * dim);
  });
  return x;
}

/** A final state [dim] → logits [vocab]: the embedding matrix times it (tied weights). */
const unembed = (h) => matmul(embedding, h, dim, 1);

/** Runs `tokens` (the next T of the sequence) through every layer, appending them to `cache`; returns the last token's logits. */
function forward(tokens, cache) {
  const x = embed(tokens); // [T][dim]
  layers.forEach((w, layer) => {
    const h = rmsNorm(x);
    const q = matmul(h, w.wq, dim, heads * headDim); // [T][heads][headDim]
    const k = matmul(h, w.wk, dim, kvHeads * headDim); // [T][kvHeads][headDim]
    const v = matmul(h, w.wv, dim, kvHeads * headDim);
    const attended = cache.attend(layer, q, k, v); // rotates q/k, appends k/v, attends over all so far
    addInto(x, matmul(attended, w.wo, heads * headDim, dim));
    const h2 = rmsNorm(x);
    const gate = matmul(h2, w.wGate, dim, hidden);
    const up = matmul(h2, w.wUp, dim, hidden);
    for (let i = 0; i < gate.length; i++) gate[i] = silu(gate[i]) * up[i];
    addInto(x, matmul(gate, w.wDown, hidden, dim));
  });
  return unembed(rmsNorm(x.subarray(x.length - dim))); // [vocab]
}

const argmax = (xs) => xs.reduce((best, x, i) => (x > xs[best] ? i : best), 0);
const newCache = () =>
  new KVCache({ layers: config.layers, heads, kvHeads, headDim, maxTokens: 256, rope: { theta: config.ropeTheta } });

// ---- generation: prefill the prompt in one call, then one token per step over the cache
const { build } = await init();
const prompt = [1, 17, 42, 5, 9, 33, 71, 2];
const cache = newCache();
let t0 = performance.now();
let logits = forward(prompt, cache);
const generated = [],
  everyLogits = [logits];
for (let i = 0; i < steps; i++) {
  const next = argmax(logits);
  generated.push(next);
  logits = forward([next], cache);
  everyLogits.push(logits);
}
const cachedMs = performance.now() - t0;

// ---- the check: the same steps recomputed from scratch (no cache kept between steps) give the same bits
t0 = performance.now();
let identical = true;
const sequence = [...prompt, ...generated];
for (let i = 0; i <= steps; i++) {
  const fresh = newCache();
  const again = forward(sequence.slice(0, prompt.length + i), fresh);
  identical &&= again.every((x, j) => Object.is(x, everyLogits[i][j]));
  fresh.dispose();
}
const recomputeMs = performance.now() - t0;

console.log(
  `${build}: ${config.layers} layers, ${heads}/${kvHeads} heads, prompt ${prompt.length} tokens, ${steps} generated: ${generated.join(' ')}`,
);
console.log(
  `with the cache ${cachedMs.toFixed(1)} ms, recomputing every step ${recomputeMs.toFixed(1)} ms; ` +
    `logits ${identical ? 'bit-identical' : 'DIFFER'}`,
);
console.log(JSON.stringify({ ok: identical && cache.length === prompt.length + steps, build, generated }));
cache.dispose();
