// Threads against one thread, interleaved in one process (separate processes move the same row by 25%
// here): a cache made after init({ threads: 1 }) runs on the plain kernel alone, one made after
// init({ threads: n }) on the shared kernel's pool, and both stay usable side by side, so each round times
// one call of each, alternating which goes first. Medians of the rounds; the ratio is the median of the
// per-round ratios, with their 10th–90th percentile spread. Also: init() time without threads and the time
// to start a pool of n. `--load N` starts N child processes that each keep a core busy for the whole run
// (a user's machine with something else running), and reports the pieces the calling thread took over.
//
//   node bench/threads.mjs [--threads 2] [--rounds 30] [--decode 2048,8192] [--prefill 512] [--load 0]
//                          [--shapes gpt2,llama]

import { spawn } from 'node:child_process';
import { availableParallelism } from 'node:os';
import { Rng } from '../test/support/rng.js';
import { fmtX, loadPackage, median, parseArgs, quantile } from '../test/support/scripts.mjs';
import { SHAPES } from './suite.mjs';

const opts = parseArgs(process.argv.slice(2), {
  threads: 2,
  rounds: 30,
  decode: '2048,8192',
  prefill: '512',
  load: 0,
  shapes: Object.keys(SHAPES).join(','),
});
if (opts.help) {
  console.log(
    'node bench/threads.mjs [--threads N] [--rounds N] [--decode L,…] [--prefill T,…] [--load N] [--shapes a,b]',
  );
  process.exit(0);
}
// busy children: each spins on a core until this process ends
const busy = Array.from({ length: opts.load }, () =>
  spawn(process.execPath, ['-e', 'for (;;) {}'], { stdio: 'ignore' }),
);
process.on('exit', () => {
  for (const child of busy) child.kill();
});
const list = (/** @type {string} */ s, /** @type {(x: string) => any} */ as = Number) =>
  String(s).split(',').filter(Boolean).map(as);

const pkg = await loadPackage();
const t0 = performance.now();
const one = await pkg.init({ threads: 1 });
const initMs = performance.now() - t0;
const t1 = performance.now();
const many = await pkg.init({ threads: opts.threads });
const poolMs = performance.now() - t1;
// the pool's counters (not public API): only when measuring this checkout's dist/
const pool = process.env.WASM_ATTENTION_ENTRY ? undefined : (await import('../dist/init.js')).activeInstance().pool;
console.log(
  `# threads vs one thread, interleaved in one process (node ${process.version}, ${availableParallelism()} cores, build ${one.build})`,
);
console.log(
  `init({ threads: 1 }) ${initMs.toFixed(1)} ms (first init: reads, compiles, instantiates); init({ threads: ${many.threads} }) afterwards ${poolMs.toFixed(1)} ms (shared binary + starting ${many.threads - 1} worker${many.threads > 2 ? 's' : ''})`,
);
console.log(
  `${opts.rounds} rounds; medians${opts.load ? `; ${opts.load} other process${opts.load > 1 ? 'es' : ''} keeping a core busy` : ''}\n`,
);
console.log(`| shape | workload | 1 thread | ${many.threads} threads | ratio | ratio p10–p90 | taken over |`);
console.log('| --- | --- | ---: | ---: | ---: | ---: | ---: |');

/**
 * A cache for `shape` made under init({ threads }) (the active kernel decides where it lives).
 * @param {number} threads @param {import('./suite.mjs').Shape} shape @param {number} maxTokens
 */
async function cacheOn(threads, shape, maxTokens) {
  await pkg.init({ threads });
  return new pkg.KVCache({ heads: shape.heads, kvHeads: shape.kvHeads, headDim: shape.headDim, maxTokens });
}

const shapes = list(opts.shapes, String);
for (const [name, shape] of Object.entries(SHAPES).filter(([n]) => shapes.includes(n))) {
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
// the busy children would keep this process alive (they never end by themselves)
for (const child of busy) child.kill();

/** Times `call` on both caches, alternating which goes first; prints medians and the median ratio. */
function report(
  /** @type {string} */ shape,
  /** @type {string} */ what,
  /** @type {any[]} */ caches,
  /** @type {(c: any) => number} */ call,
) {
  for (let i = 0; i < 5; i++) for (const c of caches) call(c); // warm up (and wake the workers)
  const taken = pool?.takenOver ?? 0;
  const single = [],
    threaded = [];
  /** @type {number[]} */
  const ratios = [];
  for (let r = 0; r < opts.rounds; r++) {
    const [a, b] = r % 2 ? [caches[1], caches[0]] : [caches[0], caches[1]];
    const ta = call(a),
      tb = call(b);
    const [s, t] = a === caches[0] ? [ta, tb] : [tb, ta];
    single.push(s);
    threaded.push(t);
    ratios.push(s / t);
  }
  const at = (/** @type {number} */ f) => quantile(ratios, f);
  const tookOver = pool ? String(pool.takenOver - taken) : '–';
  console.log(
    `| ${shape} | ${what} | ${median(single).toFixed(3)} ms | ${median(threaded).toFixed(3)} ms | ${fmtX(median(ratios))} | ${fmtX(at(0.1))}–${fmtX(at(0.9))} | ${tookOver} |`,
  );
  for (const c of caches) c.dispose();
}
