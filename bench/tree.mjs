// A tree of drafts against a chunked attend of as many tokens, interleaved in one process: per round, one
// call of each over the same cache of `cache` tokens (alternating which goes first), each undone outside
// the timing (accept([]) drops the drafts, truncate the chunk). Medians of the rounds; the ratio is the
// median of the per-round ratios, and its spread the 10th to 90th percentile of them; the same for this
// process's CPU time (process.cpuUsage: on a loaded machine, the time it ran rather than waited).
//
//   node bench/tree.mjs [--rounds 200] [--cache 2048] [--drafts 16] [--threads 1]

import { Rng } from '../test/support/rng.js';
import { fmtX, loadPackage, median, parseArgs, quantile } from '../test/support/scripts.mjs';
import { SHAPES } from './suite.mjs';

const opts = parseArgs(process.argv.slice(2), { rounds: 200, cache: 2048, drafts: 16, threads: 1 });
if (opts.help) {
  console.log('node bench/tree.mjs [--rounds N] [--cache L] [--drafts T] [--threads N]');
  process.exit(0);
}

const pkg = await loadPackage();
const info = await pkg.init({ threads: opts.threads });
const T = opts.drafts;
// a tree as speculative decoding drafts one: four branches of four tokens from the last token
const parents = Array.from({ length: T }, (_, i) => (i % 4 === 0 ? -1 : i - 1));
console.log(
  `# a tree of ${T} drafts (4 branches of 4) vs a chunked attend of ${T} tokens over ${opts.cache} cached tokens ` +
    `(node ${process.version}, build ${info.build}, ${info.threads} thread${info.threads > 1 ? 's' : ''}, ${opts.rounds} rounds, medians)\n`,
);
console.log('| shape | chunked attend | attendTree | ratio (p10–p90) | CPU-time ratio (p10–p90) |');
console.log('| --- | ---: | ---: | ---: | ---: |');

for (const shape of Object.values(SHAPES)) {
  const rng = new Rng(11);
  const qRow = shape.heads * shape.headDim;
  const kRow = shape.kvHeads * shape.headDim;
  const cache = new pkg.KVCache({
    heads: shape.heads,
    kvHeads: shape.kvHeads,
    headDim: shape.headDim,
    maxTokens: opts.cache + T,
    rope: {},
  });
  cache.append(0, rng.randn(opts.cache * kRow), rng.randn(opts.cache * kRow));
  const q = rng.randn(T * qRow);
  const k = rng.randn(T * kRow);
  const v = rng.randn(T * kRow);
  const out = new Float32Array(T * qRow);
  /** @type {number[]} */
  const cpu = [];
  /** Runs `call`, then `undo` untimed; the wall time in ms (the CPU time goes to `cpu`). */
  const timed = (/** @type {() => void} */ call, /** @type {() => void} */ undo) => {
    const c = process.cpuUsage();
    const s = performance.now();
    call();
    const ms = performance.now() - s;
    cpu.push(process.cpuUsage(c).user / 1000);
    undo();
    return ms;
  };
  const chunked = () =>
    timed(
      () => cache.attend(0, q, k, v, out),
      () => cache.truncate(opts.cache),
    );
  const tree = () =>
    timed(
      () => cache.attendTree(0, q, k, v, parents, out),
      () => cache.accept([]),
    );
  for (let i = 0; i < 20; i++) {
    chunked();
    tree();
  }
  /** @type {number[]} */
  const a = [];
  /** @type {number[]} */
  const b = [];
  /** @type {number[]} */
  const ratios = [];
  /** @type {number[]} */
  const cpuRatios = [];
  for (let r = 0; r < opts.rounds; r++) {
    cpu.length = 0;
    let x;
    let y;
    if (r % 2 === 0) {
      x = chunked();
      y = tree();
    } else {
      y = tree();
      x = chunked();
    }
    a.push(x);
    b.push(y);
    ratios.push(y / x);
    // cpu holds the two calls in the order they ran
    cpuRatios.push(r % 2 === 0 ? cpu[1] / cpu[0] : cpu[0] / cpu[1]);
  }
  cache.dispose();
  const spread = (/** @type {number[]} */ r) =>
    `${fmtX(median(r))} (${fmtX(quantile(r, 0.1))}–${fmtX(quantile(r, 0.9))})`;
  const ms = (/** @type {number} */ t) => `${(t * 1000).toFixed(0)} µs`;
  console.log(
    `| ${shape.label} | ${ms(median(a))} | ${ms(median(b))} | ${spread(ratios)} | ${spread(cpuRatios.filter(Number.isFinite))} |`,
  );
}
