// A decode loop in Node: a prompt prefill, then one token at a time through a small GQA attention stack.
//   node examples/node/decode.mjs [--steps 256]
import { init, KVCache } from 'wasm-attention';

const steps = Number(process.argv[process.argv.indexOf('--steps') + 1] || 256) || 256;
const { build } = await init();

const shape = { layers: 4, heads: 8, kvHeads: 2, headDim: 64 };
const cache = new KVCache({ ...shape, maxTokens: 64 + steps, rope: { theta: 10000 } });
const row = shape.heads * shape.headDim,
  kvRow = shape.kvHeads * shape.headDim;
const random = (n) => Float32Array.from({ length: n }, () => Math.random() * 2 - 1);

// prefill: 64 prompt tokens per layer (a real model would compute q/k/v with its linear layers)
const prompt = 64;
let t0 = performance.now();
for (let layer = 0; layer < shape.layers; layer++)
  cache.attend(layer, random(prompt * row), random(prompt * kvRow), random(prompt * kvRow));
const prefillMs = performance.now() - t0;

// decode: one token per step through every layer
const q = random(row),
  k = random(kvRow),
  v = random(kvRow),
  out = new Float32Array(row);
let finite = true;
t0 = performance.now();
for (let i = 0; i < steps; i++) {
  for (let layer = 0; layer < shape.layers; layer++) cache.attend(layer, q, k, v, out);
  finite &&= out.every(Number.isFinite);
}
const decodeMs = performance.now() - t0;
const tokensPerSecond = steps / (decodeMs / 1000);

console.log(
  `${build}: prefill ${prompt} tokens in ${prefillMs.toFixed(1)} ms, ` +
    `decode ${steps} tokens at ${tokensPerSecond.toFixed(0)} tokens/s (${shape.layers} layers, ${cache.length} tokens cached)`,
);
console.log(JSON.stringify({ ok: finite && cache.length === prompt + steps, build, tokensPerSecond }));
cache.dispose();
