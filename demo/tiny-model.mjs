#!/usr/bin/env node
// The first section of `npm start`: real text from a real (tiny) model. Loads examples/model/tiny, a byte-level
// Llama 3 model trained in this repo, with the runner of examples/model (plain-JS matmuls around this
// package's KVCache), checks its logits against PyTorch's reference, and streams a greedy continuation,
// then the same with prompt-lookup decoding.
//
// It runs in its own process (demo/generate.mjs spawns it) so that the timing section's plain-JS baseline
// never shares a process with a grown WebAssembly memory (see bench/FINDINGS.md).
//
//   node demo/tiny-model.mjs [--tokens N] [--threads auto|N]     (TINY_MODEL_DIR: another model folder)
import { existsSync, readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { loadModel } from '../examples/model/index.mjs';

const { values } = parseArgs({
  options: { tokens: { type: 'string', default: '180' }, threads: { type: 'string', default: 'auto' } },
});
const dir = process.env.TINY_MODEL_DIR ?? fileURLToPath(new URL('../examples/model/tiny', import.meta.url));
const out = console.log;
if (!existsSync(`${dir}/config.json`)) {
  console.error(`tiny-model: no model at ${dir}`);
  process.exit(2);
}
const maxNewTokens = Number(values.tokens);
const threads = values.threads === 'auto' ? 'auto' : Number(values.threads);
const reference = JSON.parse(readFileSync(`${dir}/reference.json`, 'utf8'));
const training = existsSync(`${dir}/training.json`) ? JSON.parse(readFileSync(`${dir}/training.json`, 'utf8')) : null;

let t0 = performance.now();
const model = await loadModel(dir, { threads });
const loadMs = performance.now() - t0;
const c = model.config;
out(`wasm-attention: text from a tiny Llama 3 model (examples/model/tiny)`);
out(
  `  model    ${(model.parameters / 1e6).toFixed(2)} M parameters: ${c.num_hidden_layers} layers, ${c.num_attention_heads}/${c.num_key_value_heads} heads ` +
    `of ${c.head_dim}, byte-level vocabulary, RoPE llama3-scaled` +
    (training ? `; trained here (${training.validation_bits_per_byte.toFixed(2)} bits per byte on held-out text)` : ''),
);
out(
  `  runner   examples/model: matmuls in ${model.info.matmul === 'wasm' ? 'WebAssembly SIMD' : 'plain JS'}, attention in wasm-attention's KVCache (${model.info.build}, ${model.info.threads} thread${model.info.threads > 1 ? 's' : ''}); loaded in ${loadMs.toFixed(0)} ms`,
);

// the check: teacher-forced logits of a held-out text against PyTorch's float64 ones
const TOLERANCE = 1e-4; // argued in test/model.test.ts
const ids = reference.logits.ids;
const pytorch = new Float64Array(readFileSync(`${dir}/${reference.logits.float64.file}`).buffer.slice(0));
const logits = model.logits(ids);
let error = 0;
for (let i = 0; i < logits.length; i++) error = Math.max(error, Math.abs(logits[i] - pytorch[i]));
const ok = error <= TOLERANCE;
out(
  `  check    logits of ${ids.length} held-out tokens vs PyTorch (float64): max abs difference ${error.toExponential(2)}, limit ${TOLERANCE}: ${ok ? 'OK' : 'FAIL'}`,
);
out('');

// greedy generation, streamed
const prompt = new TextDecoder().decode(
  new Uint8Array(reference.greedy.prompt_ids.filter((/** @type {number} */ id) => id < 256)),
);
const promptIds = reference.greedy.prompt_ids;
const decoder = new TextDecoder();
process.stdout.write(`  ${prompt}`);
const stopTokens = [c.eos_token_id];
t0 = performance.now();
const greedy = await model.generate(promptIds, {
  maxNewTokens,
  stopTokens,
  onToken: (id) => {
    if (id < 256) process.stdout.write(decoder.decode(Uint8Array.of(id), { stream: true }).replaceAll('\n', '\n  '));
  },
});
const greedyMs = performance.now() - t0;
process.stdout.write(`${decoder.decode()}\n\n`);
out(
  `  greedy   ${greedy.length} tokens in ${greedyMs.toFixed(0)} ms: ${((greedy.length / greedyMs) * 1000).toFixed(0)} tokens/s (prompt ${promptIds.length} tokens included)`,
);

// the same continuation with prompt-lookup decoding
const stats = { forwards: 0, drafted: 0, accepted: 0 };
t0 = performance.now();
const looked = await model.generate(promptIds, { maxNewTokens, stopTokens, lookup: true, stats });
const lookupMs = performance.now() - t0;
const same = looked.join() === greedy.join();
out(
  `  lookup   ${looked.length} tokens in ${lookupMs.toFixed(0)} ms: ${((looked.length / lookupMs) * 1000).toFixed(0)} tokens/s with prompt-lookup decoding ` +
    `(${stats.forwards} forward passes, ${stats.accepted} of ${stats.drafted} drafted tokens accepted); ${same ? 'the same tokens' : 'DIFFERENT TOKENS'}`,
);
out('');
if (!ok || !same) process.exitCode = 1;
