// `node bench/options-cost.mjs`: what scaled RoPE and learned sink logits cost per step beside plain RoPE,
// interleaved in one process (rounds alternate the variants' order; medians over rounds, with the quartiles
// of the per-round ratios).
// A Llama-3.2-1B-shaped layer (32 query heads, 8 kv heads, head size 64): decode at L = 2048 cached tokens
// (attend one token, truncate back) and prefill of T = 512 tokens (attend, reset), one thread.
//
//   node bench/options-cost.mjs [--builds relaxed-simd,simd] [--rounds 15] [--batch-ms 60]

import { performance } from 'node:perf_hooks';
import { loadPackage, median, parseArgs, quantile } from '../test/support/scripts.mjs';
import { Rng } from '../test/support/rng.js';

const opts = parseArgs(process.argv.slice(2), { builds: 'relaxed-simd,simd', rounds: 15, batchMs: 60 });
const shape = { heads: 32, kvHeads: 8, headDim: 64 };
/** @type {Record<string, object>} */
const VARIANTS = {
  plain: { theta: 500000 },
  llama3: {
    theta: 500000,
    scaling: { type: 'llama3', factor: 32, lowFreqFactor: 1, highFreqFactor: 4, originalMaxPositions: 8192 },
  },
  yarn: { theta: 500000, scaling: { type: 'yarn', factor: 32, originalMaxPositions: 4096, truncate: false } },
  'plain + sinkLogits': { theta: 500000 },
};
/** Options beside `rope` per variant. @type {Record<string, object>} */
const EXTRA = { 'plain + sinkLogits': { sinkLogits: Array.from({ length: 32 }, (_, h) => (h % 5) - 2) } };
const pkg = await loadPackage();
const rng = new Rng(1);
const L = 2048;
const T = 512;
const past = { k: rng.randn(L * shape.kvHeads * shape.headDim), v: rng.randn(L * shape.kvHeads * shape.headDim) };
const one = {
  q: rng.randn(shape.heads * shape.headDim),
  k: rng.randn(shape.kvHeads * shape.headDim),
  v: rng.randn(shape.kvHeads * shape.headDim),
};
const prompt = {
  q: rng.randn(T * shape.heads * shape.headDim),
  k: rng.randn(T * shape.kvHeads * shape.headDim),
  v: rng.randn(T * shape.kvHeads * shape.headDim),
};

/** Calls `fn` for about batchMs; milliseconds per call. @param {() => void} fn */
function batch(fn) {
  const start = performance.now();
  let n = 0;
  do {
    fn();
    n++;
  } while (performance.now() - start < opts.batchMs);
  return (performance.now() - start) / n;
}

const names = Object.keys(VARIANTS);
const lines = [
  `| build | workload | plain ms | ${names
    .slice(1)
    .map((n) => `${n} ms (ratio, quartiles)`)
    .join(' | ')} |`,
  `| --- | --- | ---: | ${names
    .slice(1)
    .map(() => '---:')
    .join(' | ')} |`,
];
for (const build of opts.builds.split(',')) {
  await pkg.init({ build, threads: 1 });
  const work = {
    'decode L = 2048': names.map((name) => {
      const cache = new pkg.KVCache({ ...shape, maxTokens: L + 1, rope: VARIANTS[name], ...EXTRA[name] });
      cache.append(0, past.k, past.v);
      const out = new Float32Array(one.q.length);
      return () => {
        cache.attend(0, one.q, one.k, one.v, out);
        cache.truncate(L);
      };
    }),
    'prefill T = 512': names.map((name) => {
      const cache = new pkg.KVCache({ ...shape, maxTokens: T, rope: VARIANTS[name], ...EXTRA[name] });
      const out = new Float32Array(prompt.q.length);
      return () => {
        cache.attend(0, prompt.q, prompt.k, prompt.v, out);
        cache.reset();
      };
    }),
  };
  for (const [label, fns] of Object.entries(work)) {
    const times = fns.map(() => /** @type {number[]} */ ([]));
    for (let round = 0; round < opts.rounds; round++) {
      const order = fns.map((_, i) => i);
      if (round % 2) order.reverse();
      for (const i of order) times[i].push(batch(fns[i]));
    }
    const ratios = (/** @type {number} */ i) => times[i].map((t, r) => t / times[0][r]);
    const cell = (/** @type {number} */ i) =>
      `${median(times[i]).toFixed(3)} (${median(ratios(i)).toFixed(3)}×, ${quantile(ratios(i), 0.25).toFixed(3)}–${quantile(ratios(i), 0.75).toFixed(3)})`;
    lines.push(
      `| ${build} | ${label} | ${median(times[0]).toFixed(3)} | ${names
        .slice(1)
        .map((_, i) => cell(i + 1))
        .join(' | ')} |`,
    );
  }
}
console.log(lines.join('\n'));
