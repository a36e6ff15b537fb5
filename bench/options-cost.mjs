// `node bench/options-cost.mjs`: what scaled RoPE, learned sink logits, per-layer windows (perLayer) and
// ALiBi cost per step beside the same cache without them, interleaved in one process (rounds alternate the variants' order; medians over rounds, with the quartiles
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
const L = 2048;
const T = 512;
const W = 512;
/** A window's ring in a perLayer cache (window + 255 slots); the cache-wide window is given the same. */
const RING = W + 255;
const plainRope = { theta: 500000 };
/**
 * Each variant: its options (beside the shape and maxTokens), the layer it runs on, and the variant its
 * ratio is taken against: the same cache without the option. `maxTokens` overrides the workload's.
 * @type {Record<string, { options: object, layer?: number, base: string, maxTokens?: number }>}
 */
const VARIANTS = {
  plain: { options: { rope: plainRope }, base: 'plain' },
  llama3: {
    options: {
      rope: {
        theta: 500000,
        scaling: { type: 'llama3', factor: 32, lowFreqFactor: 1, highFreqFactor: 4, originalMaxPositions: 8192 },
      },
    },
    base: 'plain',
  },
  yarn: {
    options: {
      rope: { theta: 500000, scaling: { type: 'yarn', factor: 32, originalMaxPositions: 4096, truncate: false } },
    },
    base: 'plain',
  },
  'plain + sinkLogits': {
    options: { rope: plainRope, sinkLogits: Array.from({ length: 32 }, (_, h) => (h % 5) - 2) },
    base: 'plain',
  },
  // perLayer: a global layer beside a windowed one, against a one-layer cache; a windowed layer against a
  // cache-wide window of the same ring (the same kernel work: what remains is the facade's layer lookup)
  'perLayer, its global layer': {
    options: { rope: plainRope, layers: 2, perLayer: [{ window: W }, null] },
    layer: 1,
    base: 'plain',
  },
  [`window ${W}`]: { options: { rope: plainRope, window: W }, maxTokens: RING, base: `window ${W}` },
  [`perLayer, its window ${W}`]: {
    options: { rope: plainRope, layers: 2, perLayer: [{ window: W }, null] },
    maxTokens: L + 1, // its window's ring: window + 255 slots, as the cache-wide one's
    layer: 0,
    base: `window ${W}`,
  },
  // ALiBi replaces RoPE: against the same cache without either
  'no rope': { options: {}, base: 'no rope' },
  alibi: { options: { alibi: true }, base: 'no rope' },
};
const pkg = await loadPackage();
const rng = new Rng(1);
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
  '| build | workload | variant | ms | against | ratio (quartiles of per-round ratios) |',
  '| --- | --- | --- | ---: | --- | ---: |',
];
for (const build of opts.builds.split(',')) {
  await pkg.init({ build, threads: 1 });
  /** @param {string} name @param {number} maxTokens */
  const cacheOf = (name, maxTokens) =>
    new pkg.KVCache({ ...shape, maxTokens: VARIANTS[name].maxTokens ?? maxTokens, ...VARIANTS[name].options });
  const work = {
    'decode L = 2048': names.map((name) => {
      const cache = cacheOf(name, L + 1);
      const layer = VARIANTS[name].layer ?? 0;
      cache.append(layer, past.k, past.v);
      const out = new Float32Array(one.q.length);
      return () => {
        cache.attend(layer, one.q, one.k, one.v, out);
        cache.truncate(L);
      };
    }),
    'prefill T = 512': names.map((name) => {
      const cache = cacheOf(name, T);
      const layer = VARIANTS[name].layer ?? 0;
      const out = new Float32Array(prompt.q.length);
      return () => {
        cache.attend(layer, prompt.q, prompt.k, prompt.v, out);
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
    names.forEach((name, i) => {
      const base = names.indexOf(VARIANTS[name].base);
      const ratios = times[i].map((t, r) => t / times[base][r]);
      const ratio =
        base === i
          ? '—'
          : `${median(ratios).toFixed(3)}× (${quantile(ratios, 0.25).toFixed(3)}–${quantile(ratios, 0.75).toFixed(3)})`;
      lines.push(
        `| ${build} | ${label} | ${name} | ${median(times[i]).toFixed(3)} | ${VARIANTS[name].base} | ${ratio} |`,
      );
    });
  }
}
console.log(lines.join('\n'));
