// `npm run bench:spans`: decode streaming on this machine: what the facade's trial picks (src/stream-choice.ts)
// against each candidate (no streaming, spans of 128, 512 and 2048 KiB), the fixed 512 KiB span of before
// included, interleaved in one process.
//
// Per shape, a cache holding L tokens first meets its size class untried: its first decode steps are the
// facade's own trial, and the pick is read back. Then rounds of one batch per candidate (their order rotating
// each round, so noise falls on all alike) give medians of wall and CPU time per step (process.cpuUsage: on
// a loaded machine, the time this process ran rather than waited for a core) and each candidate's ratio to
// 512 KiB (median of the per-round ratios, with the 10th–90th percentile). `--trials N` replays the trial's
// rule N more times on fresh StreamChoice instances (the same round-robin, clock and medians, timing the
// facade's calls) to show how often it picks the same. Every candidate's output is checked bit-identical first.
//
//   node bench/stream-spans.mjs [--shapes gpt2,llama] [--decode 8192] [--rounds 15] [--batch-ms 60]
//                               [--threads 1] [--trials 5] [--warmup 10]
//
// Node 20 runs the relaxed-SIMD build only behind --experimental-wasm-relaxed-simd: pass it to node there.

import { availableParallelism, loadavg } from 'node:os';
import { fmtX, median, parseArgs, quantile } from '../test/support/scripts.mjs';
import { filledCache, interleave, SHAPES, workloadData } from './suite.mjs';

const opts = parseArgs(process.argv.slice(2), {
  shapes: 'gpt2,llama',
  decode: '8192',
  rounds: 15,
  batchMs: 60,
  threads: 1,
  trials: 5,
  warmup: 10,
});
if (opts.help) {
  console.log(
    'node bench/stream-spans.mjs [--shapes gpt2,llama] [--decode L,…] [--rounds N] [--batch-ms ms] [--threads N] [--trials N] [--warmup N]',
  );
  process.exit(0);
}
const list = (/** @type {string} */ s) => String(s).split(',').filter(Boolean);

// this checkout's dist/: the trial's state is not public API
const pkg = await import('../dist/index.js');
const { CANDIDATES, StreamChoice, TRIAL_STEPS, streamChoice, trialClock } = await import('../dist/stream-choice.js');
const FIXED = 512;
const got = await pkg.init({ threads: opts.threads });
const load0 = loadavg();
console.log(
  `# decode streaming: the trial's pick against each touch-ahead span (node ${process.version}, ${availableParallelism()} cores, build ${got.build}, ${got.threads} thread${got.threads > 1 ? 's' : ''})`,
);
console.log(
  `candidates ${CANDIDATES.map((c) => (c ? `${c} KiB` : 'off')).join(', ')}; trial ${TRIAL_STEPS} steps each (${CANDIDATES.length * TRIAL_STEPS} in all); ${opts.rounds} interleaved rounds of ~${opts.batchMs} ms batches; load average at start ${load0.map((x) => x.toFixed(2)).join(' ')}\n`,
);
console.log(
  '| shape | L | K/V MB | span | wall ms | wall p10–p90 | CPU ms | ÷ 512 KiB (wall) | p10–p90 | ÷ 512 KiB (CPU) | trial |',
);
console.log('| --- | ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |');

/** @type {string[]} */
const notes = [];
for (const shapeName of list(opts.shapes)) {
  const s = SHAPES[/** @type {keyof typeof SHAPES} */ (shapeName)];
  for (const L of list(opts.decode).map(Number)) {
    // a forced stream word reaches a cache's descriptor when its pages change: a step past a page's end does
    if (L % 64) throw new Error(`--decode ${L}: L must be a multiple of 64 (a page's rows)`);
    const { q, k, v, pastK, pastV } = workloadData(shapeName, 'decode', L);
    const cache = filledCache(
      pkg,
      s,
      'float32',
      L + 1,
      /** @type {Float32Array} */ (pastK),
      /** @type {Float32Array} */ (pastV),
      L,
    );
    const out = new Float32Array(q.length);
    const step = () => {
      cache.attend(0, q, k, v, out);
      cache.truncate(L);
    };
    const bytes = cache.byteLength;
    const key = StreamChoice.key(bytes, s.kvHeads, s.headDim);

    // the facade's own trial, on this size class's first decode steps
    // after untimed steps, as a model's earlier steps would have warmed the kernel (V8 tiers wasm up as it runs)
    streamChoice.force(FIXED);
    for (let i = 0; i < opts.warmup; i++) step();
    streamChoice.force(-1);
    const trialSteps = CANDIDATES.length * TRIAL_STEPS;
    const t0 = performance.now();
    for (let i = 0; i < trialSteps && streamChoice.choice(key) < 0; i++) step();
    const trialMs = performance.now() - t0;
    const pick = streamChoice.choice(key);
    if (pick < 0) throw new Error(`${shapeName} L = ${L}: the size class did not decide in ${trialSteps} steps`);

    // every candidate gives the same bits
    /** @type {Uint32Array | undefined} */
    let first;
    for (const word of CANDIDATES) {
      streamChoice.force(word);
      step();
      const bits = new Uint32Array(out.slice().buffer);
      if (!first) first = bits;
      else if (!bits.every((x, i) => x === first?.[i])) throw new Error(`spans of ${word} KiB changed the output`);
    }

    // replays of the trial's rule
    /** @type {number[]} */
    const picks = [];
    for (let t = 0; t < opts.trials; t++) {
      const replay = new StreamChoice();
      for (let i = 0; i < trialSteps; i++) {
        const word = replay.trialPath(bytes, key);
        streamChoice.force(word);
        const a = trialClock();
        step();
        replay.record(key, word, trialClock() - a);
      }
      picks.push(replay.choice(key));
    }

    const { wall, cpu } = interleave(
      CANDIDATES.map(() => step),
      { rounds: opts.rounds, batchMs: opts.batchMs, enter: (i) => streamChoice.force(CANDIDATES[i]) },
    );
    streamChoice.force(-1);
    cache.dispose();
    const fixed = CANDIDATES.indexOf(FIXED);
    const best = CANDIDATES.reduce((b, _, i) => (median(wall[i]) < median(wall[b]) ? i : b), 0);
    for (const [i, word] of CANDIDATES.entries()) {
      const ratios = wall[i].map((ms, r) => wall[fixed][r] / ms);
      const cpuRatios = cpu[i].map((ms, r) => cpu[fixed][r] / ms);
      const marks = [word === pick ? 'picked' : '', i === best ? 'fastest' : ''].filter(Boolean).join(', ');
      console.log(
        `| ${s.label} | ${L} | ${(bytes / 1e6).toFixed(1)} | ${word ? `${word} KiB` : 'off'} | ${median(wall[i]).toFixed(3)} | ` +
          `${quantile(wall[i], 0.1).toFixed(3)}–${quantile(wall[i], 0.9).toFixed(3)} | ${median(cpu[i]).toFixed(3)} | ` +
          `${fmtX(median(ratios))}× | ${fmtX(quantile(ratios, 0.1))}–${fmtX(quantile(ratios, 0.9))} | ${fmtX(median(cpuRatios))}× | ${marks} |`,
      );
    }
    // what the trial cost: its steps against as many on the fastest candidate, by the rounds' medians
    const bestMs = median(wall[best]);
    const extra = CANDIDATES.reduce((sum, _, i) => sum + TRIAL_STEPS * (median(wall[i]) - bestMs), 0);
    const counts = CANDIDATES.map((c) => `${c ? `${c} KiB` : 'off'} ×${picks.filter((p) => p === c).length}`);
    const name = (/** @type {number} */ c) => (c ? `${c} KiB` : 'off');
    notes.push(
      `${s.label} L = ${L}: the trial picked ${name(pick)} in ${trialSteps} steps (${trialMs.toFixed(0)} ms), ` +
        `≈ ${(extra / bestMs).toFixed(1)} steps' time more than ${trialSteps} on the fastest (${name(CANDIDATES[best])}); ` +
        `the pick then runs at ${fmtX(median(wall[CANDIDATES.indexOf(pick)].map((ms, r) => wall[best][r] / ms)))}× the fastest's speed and ` +
        `${fmtX(median(wall[fixed].map((ms, r) => ms / wall[CANDIDATES.indexOf(pick)][r])))}× 512 KiB's; ` +
        `${opts.trials} replays of the rule picked ${counts.join(', ')}`,
    );
  }
}
console.log('');
for (const note of notes) console.log(`- ${note}`);
console.log(
  `\nload average at end ${loadavg()
    .map((x) => x.toFixed(2))
    .join(' ')}`,
);
