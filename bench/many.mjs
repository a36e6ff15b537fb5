// attendMany against the same steps one cache at a time, interleaved in one process: per round, one
// batched step of every cache and one lone attend per cache, alternating which goes first, each followed
// (untimed) by truncating every cache back, so every round times the same step. Medians of the rounds;
// a ratio is the median of the per-round ratios (lone time / batch time: > 1 means the batch is faster).
//
// Workloads (the targets of the issue): 32 conversations of 256 tokens, one decode token each; 64 forks
// of one 2,048-token prefix, one decode token each. A cache made after init({ threads: n }) runs on that
// kernel, so each thread count has its own caches, side by side.
//
//   node bench/many.mjs [--rounds 40] [--threads 1,2] [--shapes gpt2,llama]

import { availableParallelism } from 'node:os';
import { busyWarning, fmtMs, fmtX, loadPackage, median, parseArgs } from '../test/support/scripts.mjs';
import { SHAPES, batchData, batchRunners } from './suite.mjs';

const opts = parseArgs(process.argv.slice(2), { rounds: 40, threads: '1,2', shapes: 'gpt2,llama' });
if (opts.help) {
  console.log('node bench/many.mjs [--rounds N] [--threads 1,2] [--shapes gpt2,llama]');
  process.exit(0);
}
const list = (/** @type {string} */ s) => s.split(',').filter(Boolean);
const pkg = await loadPackage();
const info = await pkg.init({ threads: 1 });

/** The workloads: how many caches, how long, and whether they are forks of one prefix. */
const WORKLOADS = [
  { name: '32 conversations × 256', count: 32, length: 256, forks: false },
  { name: '64 forks of 2,048', count: 64, length: 2048, forks: true },
];

console.log(
  `# attendMany vs lone attend calls, interleaved (node ${process.version}, ${availableParallelism()} cores, build ${info.build})`,
);
console.log(`${opts.rounds} rounds; medians (ms per layer step of the whole batch)\n`);
console.log('| shape | workload | threads | lone calls | attendMany | ratio (lone / batch) |');
console.log('| --- | --- | ---: | ---: | ---: | ---: |');

for (const shapeName of list(opts.shapes)) {
  const shape = SHAPES[/** @type {keyof typeof SHAPES} */ (shapeName)];
  for (const w of WORKLOADS) {
    const data = batchData(shape, w);
    for (const threads of list(opts.threads).map(Number)) {
      await pkg.init({ threads });
      const { caches, lone, batch } = batchRunners(pkg, shape, data, w);
      for (let i = 0; i < 3; i++) {
        lone();
        batch();
      }
      const a = [],
        b = [],
        ratio = [];
      for (let r = 0; r < opts.rounds; r++) {
        const [x, y] = r % 2 ? [lone(), batch()] : [batch(), lone()].reverse();
        a.push(x);
        b.push(y);
        ratio.push(x / y);
      }
      for (const c of caches) c.dispose();
      console.log(
        `| ${shape.label} | ${w.name} | ${threads} | ${fmtMs(median(a))} | ${fmtMs(median(b))} | ${fmtX(median(ratio))} |`,
      );
    }
  }
}
console.log(
  '\nWhat two cores give the 32 conversations with nothing shared (an estimate: the same lone calls on each): ' +
    "`npm run bench:many-bandwidth`, its column 'two cores ÷ one'.",
);
const busy = busyWarning();
if (busy) console.log(`\n${busy}`);
process.exit(0);
