// How far the 32-conversation batch is from this machine's memory: for 32 caches of L tokens, one decode
// token each, the K/V bytes a layer step reads (every cached row of K and V, in the cache's dtype) per
// second, for 32 lone attend calls and for one attendMany, at 1 and 2 threads, next to the machine's own
// streaming read bandwidth over a working set of the same size (bench/limits: one thread over all of it,
// and two threads over half of it each, at once). Every variant of a round (lone and batch, 1 and 2
// threads) runs interleaved in one process, in a fresh shuffled order each round; each timed step is
// followed (untimed) by truncating every cache back. Every step is timed right after an untimed one of
// its own (its K/V warm, a 2-thread step's worker awake, as between a model's layers), and a 2-thread
// step is followed by a 5 ms sleep, so the worker, which spins a while after a call, is asleep before the
// next variant runs. One more variant: the lone calls at one thread beside a twin (bench/twin.mjs), a
// worker with its own package and caches running the same calls on the other core, which estimates what
// two cores give the workload with nothing shared. Reported: medians and p10–p90 of the rounds; a ratio is
// the median of the per-round ratios (lone time / batch time: > 1 means the batch is faster).
//
//   node bench/many-bandwidth.mjs [--rounds 30] [--shapes gpt2,llama] [--dtypes float32,bfloat16,int8]
//                                 [--lengths 256,64] [--count 32]

import { readFileSync } from 'node:fs';
import { availableParallelism, loadavg } from 'node:os';
import { Worker } from 'node:worker_threads';
import { Rng } from '../test/support/rng.js';
import { fmtMs, fmtX, loadPackage, parseArgs, quantile } from '../test/support/scripts.mjs';
import { buildLimits } from './limits/build.mjs';
import { SHAPES, batchData, batchRunners } from './suite.mjs';
import { startTwin } from './twin.mjs';

const opts = parseArgs(process.argv.slice(2), {
  rounds: 30,
  shapes: 'gpt2,llama',
  dtypes: 'float32,bfloat16,int8',
  lengths: '256,64',
  count: 32,
  streamRounds: 100,
  cpu: false,
});
// --cpu: one thread only, each step timed by this process's CPU time (user + system) instead of the wall
// clock, so time the step spent descheduled by other processes does not count (a loaded machine)
/** @returns {number} ms */
const now = opts.cpu
  ? () => {
      const u = process.cpuUsage();
      return (u.user + u.system) / 1000;
    }
  : () => performance.now();
if (opts.help) {
  console.log(
    'node bench/many-bandwidth.mjs [--rounds N] [--shapes gpt2,llama] [--dtypes float32,bfloat16,int8] [--lengths 256,64] [--count 32]',
  );
  process.exit(0);
}
const list = (/** @type {string} */ s) => s.split(',').filter(Boolean);

/** Bytes of K and V one decode step over `rows` cached rows reads (int8: a byte a value and an f32 scale a row). */
function kvBytes(
  /** @type {{ kvHeads: number, headDim: number }} */ s,
  /** @type {number} */ rows,
  /** @type {string} */ dtype,
) {
  const perRow = dtype === 'int8' ? s.headDim + 4 : dtype === 'bfloat16' ? 2 * s.headDim : 4 * s.headDim;
  return 2 * s.kvHeads * rows * perRow;
}

// ---------------------------------------------------------------------------------------------- the machine

const limitsWasm = readFileSync(buildLimits().simd);
/** A thread that streams (streamSum) the first `bytes` of its own buffer `reps` times when told. */
const streamerSource = `
const { parentPort, workerData } = require('node:worker_threads');
const instance = new WebAssembly.Instance(new WebAssembly.Module(workerData.wasm), {});
const ex = instance.exports;
const BASE = 65536;
const need = Math.ceil((BASE + workerData.maxBytes) / 65536) - ex.memory.buffer.byteLength / 65536;
if (need > 0) ex.memory.grow(need);
new Float32Array(ex.memory.buffer, BASE, workerData.maxBytes / 4).fill(1e-3);
parentPort.on('message', ({ bytes, reps }) => {
  const t0 = performance.now();
  ex.streamSum(BASE, bytes, reps);
  parentPort.postMessage(performance.now() - t0);
});
parentPort.postMessage('ready');
`;

/** @param {number} maxBytes */
async function streamer(maxBytes) {
  const w = new Worker(streamerSource, { eval: true, workerData: { wasm: limitsWasm, maxBytes } });
  await new Promise((resolve) => w.once('message', resolve));
  return {
    /** @param {number} bytes @param {number} reps @returns {Promise<number>} ms */
    run: (bytes, reps) =>
      new Promise((resolve) => {
        w.once('message', resolve);
        w.postMessage({ bytes, reps });
      }),
    stop: () => w.terminate(),
  };
}

/**
 * The machine's streaming read bandwidth (GB/s) over a working set of `bytes`: one thread over all of it,
 * and two threads over half each at once (the sum of their bytes over the slower one's time).
 * @param {number} bytes
 */
async function machineBandwidth(bytes) {
  const size = Math.ceil(bytes / 256) * 256;
  const [a, b] = [await streamer(size), await streamer(size)];
  // single passes, many of them: on a loaded machine the best ones are the machine's, the median what
  // other processes left of it at the time
  const one = [],
    two = [];
  for (let r = 0; r < opts.streamRounds; r++) {
    one.push(size / (await a.run(size, 1)) / 1e6);
    const [x, y] = await Promise.all([a.run(size / 2, 1), b.run(size / 2, 1)]);
    two.push(size / Math.max(x, y) / 1e6);
  }
  await a.stop();
  await b.stop();
  return { one, two };
}

/** The limits module on this thread, its buffer grown to what the largest pass reads. */
const inline = (() => {
  const ex = /** @type {any} */ (new WebAssembly.Instance(new WebAssembly.Module(limitsWasm), {}).exports);
  const BASE = 65536;
  let filled = 0;
  return {
    ex,
    BASE,
    /** @param {number} bytes */
    ensure(bytes) {
      if (bytes <= filled) return;
      const memory = /** @type {WebAssembly.Memory} */ (ex.memory);
      const need = Math.ceil((BASE + bytes) / 65536) - memory.buffer.byteLength / 65536;
      if (need > 0) memory.grow(need);
      new Float32Array(memory.buffer, BASE, bytes / 4).fill(1e-3);
      filled = bytes;
    },
  };
})();

// ---------------------------------------------------------------------------------------------- attention

const pkg = await loadPackage();
const info = await pkg.init({ threads: 1 });
const loadStart = loadavg()
  .map((x) => x.toFixed(2))
  .join(' ');

/** @param {number[] | undefined} xs */
const spread = (xs) =>
  !xs ? '–' : `${fmtMs(quantile(xs, 0.5))} (${fmtMs(quantile(xs, 0.1))}–${fmtMs(quantile(xs, 0.9))})`;
/** @param {number[] | undefined} xs */
const spreadX = (xs) =>
  !xs ? '–' : `${fmtX(quantile(xs, 0.5))} (${fmtX(quantile(xs, 0.1))}–${fmtX(quantile(xs, 0.9))})`;
/** @param {number[] | undefined} xs */
const spreadGB = (xs) =>
  !xs ? '–' : `${quantile(xs, 0.5).toFixed(1)} (${quantile(xs, 0.1).toFixed(1)}–${quantile(xs, 0.9).toFixed(1)})`;

console.log(
  `# attendMany vs lone attend calls against the machine's read bandwidth (node ${process.version}, ` +
    `${availableParallelism()} cores, build ${info.build}, load ${loadStart} at the start)`,
);
console.log(
  `${opts.rounds} rounds, ${opts.count} caches, one decode token each; ${opts.cpu ? "this process's CPU ms (one thread only)" : 'times in ms'} per layer step of the whole batch, ` +
    'median (p10–p90); bandwidths in GB/s of K/V read\n',
);

const rows = [];
const shuffle = new Rng(5);
const nap = new Int32Array(new SharedArrayBuffer(4));
for (const shapeName of list(opts.shapes)) {
  const shape = SHAPES[/** @type {keyof typeof SHAPES} */ (shapeName)];
  for (const length of list(opts.lengths).map(Number)) {
    const data = batchData(shape, { count: opts.count, length });
    for (const dtype of list(opts.dtypes)) {
      const bytes = opts.count * kvBytes(shape, length + 1, dtype);
      const machine = await machineBandwidth(bytes);
      /**
       * One set of caches per thread count (a cache runs on the kernel init gave when it was made).
       * @type {{ threads: number, caches: any[], lone: () => number, batch: () => number, hot: () => number }[]}
       */
      const sets = [];
      for (const threads of opts.cpu ? [1] : [1, 2]) {
        await pkg.init({ threads });
        const { caches, steps, outs, lone, batch } = batchRunners(pkg, shape, data, { length, dtype, clock: now });
        // the same count of lone calls on one cache: its K/V (1/count of the batch's) stays in the core's cache
        const hot = () => {
          let ms = 0;
          for (let i = 0; i < caches.length; i++) {
            const t = now();
            caches[0].attend(0, steps[i].q, steps[i].k, steps[i].v, outs[i]);
            ms += now() - t;
            caches[0].truncate(length);
          }
          return ms;
        };
        sets.push({ threads, caches, lone, batch, hot });
      }
      const variants = sets.flatMap((s) => [
        { name: `lone ${s.threads}t`, run: s.lone, threads: s.threads },
        { name: `batch ${s.threads}t`, run: s.batch, threads: s.threads },
        ...(s.threads === 1 ? [{ name: 'hot 1t', run: s.hot, threads: 1 }] : []),
      ]);
      // the same lone calls at one thread while a twin (bench/twin.mjs) runs its own on the other core
      const twin = opts.cpu ? null : await startTwin({ shape: shapeName, count: opts.count, length, dtype });
      if (twin) variants.push({ name: 'twins 1t', run: () => twin.beside(sets[0].lone), threads: 2 });
      // one streaming pass over the same bytes on this thread, among the rounds: the machine's read rate
      // at the same moments as the steps (a loaded machine slows both alike)
      const passBytes = Math.ceil(bytes / 256) * 256;
      inline.ensure(passBytes);
      variants.push({
        name: 'stream 1t',
        run: () => {
          const t = now();
          inline.ex.streamSum(inline.BASE, passBytes, 1);
          return now() - t;
        },
        threads: 1,
      });
      for (let i = 0; i < 3; i++) for (const v of variants) v.run();
      /** @type {Record<string, number[]>} */
      const times = Object.fromEntries(variants.map((v) => [v.name, []]));
      const order = variants.map((_, j) => j);
      for (let r = 0; r < opts.rounds; r++) {
        // a fresh order each round, so no variant always follows the same one
        for (let j = order.length - 1; j > 0; j--) {
          const x = Math.floor(shuffle.next() * (j + 1));
          [order[j], order[x]] = [order[x], order[j]];
        }
        for (const j of order) {
          const v = variants[j];
          // every step runs right after an untimed one, as a model's layers follow one another: its K/V as
          // warm as a decode loop leaves it, and a 2-thread step's worker awake and spinning, not asleep
          // after the nap below
          v.run();
          times[v.name].push(v.run());
          // a 2-thread call leaves its worker spinning a while (SPIN_MS) for the next call: let it fall
          // asleep before the next variant, which it would otherwise slow on a 2-core machine
          if (v.threads > 1) Atomics.wait(nap, 0, 0, 5);
        }
      }
      for (const s of sets) for (const c of s.caches) c.dispose();
      await twin?.stop();
      const perRound = (/** @type {string} */ a, /** @type {string} */ b) => times[a].map((x, i) => x / times[b][i]);
      const gb = (/** @type {string} */ name) => times[name].map((ms) => bytes / ms / 1e6);
      rows.push({
        shape: shape.label,
        length,
        dtype,
        mb: bytes / 1e6,
        machine,
        times,
        gb: Object.fromEntries(variants.map((v) => [v.name, gb(v.name)])),
        ratios: {
          '1t': perRound('lone 1t', 'batch 1t'),
          ...(opts.cpu
            ? {}
            : {
                '2t vs lone 2t': perRound('lone 2t', 'batch 2t'),
                '2t vs lone 1t': perRound('lone 1t', 'batch 2t'),
                // two cores with nothing shared: each does a step in `twins 1t` where one alone takes `lone 1t`
                twins: perRound('lone 1t', 'twins 1t').map((x) => 2 * x),
              }),
        },
      });
      const last = rows[rows.length - 1];
      console.error(
        `${last.shape} ${length} ${dtype}: ${variants.map((v) => `${v.name} ${fmtMs(quantile(times[v.name], 0.5))}`).join(', ')}`,
      );
    }
  }
}

console.log('## Times and ratios\n');
console.log(
  '| shape | tokens | dtype | K/V MB | lone 1t | attendMany 1t | lone 2t | attendMany 2t | lone 1t beside a twin | ratio 1t | ratio 2t (vs lone 2t) | ratio 2t (vs lone 1t) | two cores ÷ one (twins) |',
);
console.log('| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |');
for (const r of rows) {
  console.log(
    `| ${r.shape} | ${r.length} | ${r.dtype} | ${r.mb.toFixed(1)} | ${spread(r.times['lone 1t'])} | ${spread(r.times['batch 1t'])} | ` +
      `${spread(r.times['lone 2t'])} | ${spread(r.times['batch 2t'])} | ${spread(r.times['twins 1t'])} | ${spreadX(r.ratios['1t'])} | ` +
      `${spreadX(r.ratios['2t vs lone 2t'])} | ${spreadX(r.ratios['2t vs lone 1t'])} | ${spreadX(r.ratios.twins)} |`,
  );
}
console.log(
  '\nTwo cores ÷ one: twice a lone step at one thread over the same step beside a twin, a worker with its own ' +
    'package and caches running the same lone calls on the other core (bench/twin.mjs): what two cores give ' +
    'this workload with nothing shared: what "ratio 2t (vs lone 1t)" can hope for. An estimate, not a bound: ' +
    'the twins hold two sets of caches where a batch holds one, and a batch saves per-call costs besides.',
);
console.log("\n## K/V read bandwidth (GB/s) against the machine's streaming read over the same bytes\n");
console.log(
  'Median (p10–p90). The machine: single streaming passes over the bytes, 100 of them before the steps (on 1 ' +
    'and on 2 threads at once) and one per round among the steps (1 thread); its best is what other processes ' +
    'left of it at their quietest. The last columns: the best round of each against the best pass.\n',
);
console.log(
  '| shape | tokens | dtype | K/V MB | machine 1t | machine 2t | machine best 1t / 2t | stream 1t, interleaved | lone, one cache (in cache) | lone 1t | attendMany 1t | lone 2t | attendMany 2t | best: lone 1t / machine 1t | best: attendMany 1t / machine 1t | best: attendMany 2t / machine 2t |',
);
console.log(
  '| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |',
);
for (const r of rows) {
  const m1 = Math.max(...r.machine.one, ...r.gb['stream 1t']),
    m2 = Math.max(...r.machine.two);
  console.log(
    `| ${r.shape} | ${r.length} | ${r.dtype} | ${r.mb.toFixed(1)} | ${spreadGB(r.machine.one)} | ${spreadGB(r.machine.two)} | ` +
      `${Math.max(...r.machine.one).toFixed(1)} / ${Math.max(...r.machine.two).toFixed(1)} | ${spreadGB(r.gb['stream 1t'])} | ${spreadGB(r.gb['hot 1t'])} | ${spreadGB(r.gb['lone 1t'])} | ${spreadGB(r.gb['batch 1t'])} | ${spreadGB(r.gb['lone 2t'])} | ${spreadGB(r.gb['batch 2t'])} | ` +
      `${((100 * Math.max(...r.gb['lone 1t'])) / m1).toFixed(0)}% | ${((100 * Math.max(...r.gb['batch 1t'])) / m1).toFixed(0)}% | ${r.gb['batch 2t'] ? `${((100 * Math.max(...r.gb['batch 2t'])) / m2).toFixed(0)}%` : '–'} |`,
  );
}
console.log(
  `\nload average at the end: ${loadavg()
    .map((x) => x.toFixed(2))
    .join(' ')}`,
);
process.exit(0);
