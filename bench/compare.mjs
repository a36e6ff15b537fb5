// This package against another build of it (say, the commit before a layout change), interleaved in one
// process so both see the same machine: decode and prefill of the bench's Llama-3.2-1B layer.
// Usage: node bench/compare.mjs --baseline <path to the other checkout's dist/index.js> [--build simd]
//        [--rounds 15] [--decode 2048,8192] [--prefill 512] [--dtypes float32,int8]
// Each round times a batch of calls of each package (alternating which goes first) and keeps the batch's
// median; the table gives the median over rounds and the ratio this / baseline.

import { pathToFileURL } from 'node:url';
import { resolve } from 'node:path';
import { loadPackage, median, parseArgs } from './common.mjs';
import { SHAPES, filledCache, workloadData } from './suite.mjs';

const opts = parseArgs(process.argv.slice(2), {
  baseline: '', build: 'auto', rounds: 15, decode: '2048,8192', prefill: '512', dtypes: 'float32,int8', shape: 'llama',
});
if (opts.help || !opts.baseline) {
  console.log('node bench/compare.mjs --baseline <dist/index.js of another checkout> [--build auto] [--rounds 15] ' +
    '[--decode 2048,8192] [--prefill 512] [--dtypes float32,int8] [--shape llama|gpt2]');
  process.exit(opts.help ? 0 : 1);
}
const list = (/** @type {string} */ s) => s.split(',').filter(Boolean).map(Number);
const packages = {
  baseline: await import(pathToFileURL(resolve(opts.baseline)).href),
  this: await loadPackage(),
};
for (const pkg of Object.values(packages)) await pkg.init({ build: opts.build });
const shape = SHAPES[/** @type {keyof typeof SHAPES} */ (opts.shape)];

/** A batch of calls: the median time of one call, in ms. */
function batch(/** @type {() => void} */ call, /** @type {() => void} */ between, /** @type {number} */ count) {
  const times = [];
  for (let i = 0; i < count; i++) {
    between();
    const t0 = performance.now();
    call();
    times.push(performance.now() - t0);
  }
  return median(times);
}

/** Per package: a setup returning { call, between, count, dispose }. */
function compare(/** @type {string} */ label, /** @type {(pkg: any) => any} */ setup) {
  const runs = Object.fromEntries(Object.entries(packages).map(([name, pkg]) => [name, setup(pkg)]));
  const times = Object.fromEntries(Object.keys(runs).map((name) => [name, /** @type {number[]} */ ([])]));
  for (const r of Object.values(runs)) batch(r.call, r.between, r.count); // warm-up
  for (let round = 0; round < opts.rounds; round++) {
    const names = round % 2 ? Object.keys(runs).reverse() : Object.keys(runs);
    for (const name of names) times[name].push(batch(runs[name].call, runs[name].between, runs[name].count));
  }
  for (const r of Object.values(runs)) r.dispose();
  const base = median(times.baseline);
  const mine = median(times.this);
  console.log(`| ${label} | ${base.toFixed(3)} | ${mine.toFixed(3)} | ${(mine / base).toFixed(3)} |`);
}

console.log(`${shape.label} layer (${shape.heads}/${shape.kvHeads}, ${shape.headDim}), build ${opts.build}, Node ${process.version}, ` +
  `${opts.rounds} interleaved rounds; baseline ${opts.baseline}`);
console.log('| workload | baseline ms | this ms | this / baseline |');
console.log('| --- | ---: | ---: | ---: |');
for (const dtype of opts.dtypes.split(',')) {
  for (const L of list(opts.decode)) {
    const { q, k, v, pastK, pastV } = workloadData(opts.shape, 'decode', L);
    compare(`decode ${L} ${dtype}`, (pkg) => {
      const cache = filledCache(pkg, shape, dtype, L + 16, pastK, pastV, L);
      const out = new Float32Array(q.length);
      return { call: () => cache.attend(0, q, k, v, out), between: () => cache.truncate(L), count: 40, dispose: () => cache.dispose() };
    });
  }
  for (const T of list(opts.prefill)) {
    const { q, k, v } = workloadData(opts.shape, 'prefill', T);
    compare(`prefill ${T} ${dtype}`, (pkg) => {
      const cache = new pkg.KVCache({ heads: shape.heads, kvHeads: shape.kvHeads, headDim: shape.headDim, maxTokens: T, dtype });
      const out = new Float32Array(q.length);
      return { call: () => cache.attend(0, q, k, v, out), between: () => cache.reset(), count: 3, dispose: () => cache.dispose() };
    });
  }
}
