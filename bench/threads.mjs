// Threads against one thread, interleaved in one process (separate processes move the same row by 25%
// here): a cache made after init({ threads: 1 }) runs on the plain kernel alone, one made after
// init({ threads: n }) on the shared kernel's pool, and both stay usable side by side, so each round times
// one call of each, alternating which goes first. Medians of the rounds; the ratio is the median of the
// per-round ratios. Also: init() time without threads and the time to start a pool of n.
//
//   node bench/threads.mjs [--threads 2] [--rounds 30] [--decode 2048,8192] [--prefill 512]

import { availableParallelism } from 'node:os';
import { Rng } from '../test/support/rng.js';
import { fmtX, loadPackage, median, parseArgs } from '../test/support/scripts.mjs';
import { SHAPES } from './suite.mjs';

const opts = parseArgs(process.argv.slice(2), { threads: 2, rounds: 30, decode: '2048,8192', prefill: '512' });
if (opts.help) {
  console.log('node bench/threads.mjs [--threads N] [--rounds N] [--decode L,…] [--prefill T,…]');
  process.exit(0);
}
const list = (/** @type {string} */ s) => s.split(',').filter(Boolean).map(Number);

const pkg = await loadPackage();
const t0 = performance.now();
const one = await pkg.init({ threads: 1 });
const initMs = performance.now() - t0;
const t1 = performance.now();
const many = await pkg.init({ threads: opts.threads });
const poolMs = performance.now() - t1;
console.log(
  `# threads vs one thread, interleaved in one process (node ${process.version}, ${availableParallelism()} cores, build ${one.build})`,
);
console.log(
  `init({ threads: 1 }) ${initMs.toFixed(1)} ms (first init: reads, compiles, instantiates); init({ threads: ${many.threads} }) afterwards ${poolMs.toFixed(1)} ms (shared binary + starting ${many.threads - 1} worker${many.threads > 2 ? 's' : ''})`,
);
console.log(`${opts.rounds} rounds; medians\n`);
console.log(`| shape | workload | 1 thread | ${many.threads} threads | ratio |`);
console.log('| --- | --- | ---: | ---: | ---: |');

/**
 * A cache for `shape` made under init({ threads }) (the active kernel decides where it lives).
 * @param {number} threads @param {import('./suite.mjs').Shape} shape @param {number} maxTokens
 */
async function cacheOn(threads, shape, maxTokens) {
  await pkg.init({ threads });
  return new pkg.KVCache({ heads: shape.heads, kvHeads: shape.kvHeads, headDim: shape.headDim, maxTokens });
}

for (const [name, shape] of Object.entries(SHAPES)) {
  const rng = new Rng(7);
  const qRow = shape.heads * shape.headDim,
    kRow = shape.kvHeads * shape.headDim;
  for (const L of list(opts.decode)) {
    const k = rng.randn(L * kRow),
      v = rng.randn(L * kRow);
    const q1 = rng.randn(qRow),
      k1 = rng.randn(kRow),
      v1 = rng.randn(kRow);
    const caches = [await cacheOn(1, shape, L + 1), await cacheOn(opts.threads, shape, L + 1)];
    for (const c of caches) c.append(0, k, v);
    const step = (/** @type {any} */ c) => {
      const s = performance.now();
      c.attend(0, q1, k1, v1);
      const ms = performance.now() - s;
      c.truncate(L);
      return ms;
    };
    report(name, `decode L=${L}`, caches, step);
  }
  for (const T of list(opts.prefill)) {
    const q = rng.randn(T * qRow),
      k = rng.randn(T * kRow),
      v = rng.randn(T * kRow);
    const caches = [await cacheOn(1, shape, T), await cacheOn(opts.threads, shape, T)];
    const prefill = (/** @type {any} */ c) => {
      const s = performance.now();
      c.attend(0, q, k, v);
      const ms = performance.now() - s;
      c.reset();
      return ms;
    };
    report(name, `prefill T=${T}`, caches, prefill);
  }
}

/** Times `call` on both caches, alternating which goes first; prints medians and the median ratio. */
function report(
  /** @type {string} */ shape,
  /** @type {string} */ what,
  /** @type {any[]} */ caches,
  /** @type {(c: any) => number} */ call,
) {
  for (let i = 0; i < 5; i++) for (const c of caches) call(c); // warm up (and wake the workers)
  const single = [],
    threaded = [],
    ratios = [];
  for (let r = 0; r < opts.rounds; r++) {
    const [a, b] = r % 2 ? [caches[1], caches[0]] : [caches[0], caches[1]];
    const ta = call(a),
      tb = call(b);
    const [s, t] = a === caches[0] ? [ta, tb] : [tb, ta];
    single.push(s);
    threaded.push(t);
    ratios.push(s / t);
  }
  console.log(
    `| ${shape} | ${what} | ${median(single).toFixed(3)} ms | ${median(threaded).toFixed(3)} ms | ${fmtX(median(ratios))} |`,
  );
  for (const c of caches) c.dispose();
}
