// `npm run bench:dtypes` (alias bench:int8): the four cache dtypes against each other, interleaved in one
// process. Each round times one batch of decode steps of every dtype (the order rotating round to round), so
// machine noise falls on all of them alike; the report gives per-step medians, their spread (min–max of the
// rounds) and ratios to float32 and int8, and each dtype's bytes per cached token (byteLength / L). The ratios
// are also given in CPU time (process.cpuUsage: on a machine other processes load, the time this process ran,
// not the time it waited for a core).
// One thread (the targets are for the kernel on one core), the relaxed-simd build unless --build.
// --layers N: each dtype's cache has N layers (their own pages, as a model's), and a step attends all N in
// turn, as a model's decode step does (GPT-2 small has 12, Llama-3.2-1B 16): a layer's K/V then no longer
// stays in the last-level cache from one step to the next. The table still gives µs per layer (the whole
// model's step is N times that), so it reads beside the one-layer figures, which the targets are for.

import { pathToFileURL } from 'node:url';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs, median } from '../test/support/scripts.mjs';
import { SHAPES, workloadData, filledCache, interleave } from './suite.mjs';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const DEFAULTS = {
  build: 'relaxed-simd',
  shapes: 'gpt2,llama',
  decode: '2048,8192',
  rounds: 15,
  batchMs: 60,
  layers: 1,
};
const DTYPES = ['float32', 'int8', 'bfloat16', 'int4'];
const opts = parseArgs(process.argv.slice(2), DEFAULTS);
if (opts.help) {
  console.log(
    `node bench/dtypes.mjs [--build relaxed-simd] [--shapes gpt2,llama] [--decode 2048,8192] [--rounds 15] [--batch-ms 60] [--layers 1]`,
  );
  process.exit(0);
}
const list = (/** @type {string} */ s) => String(s).split(',').filter(Boolean);
const layers = Number(opts.layers);
if (!Number.isInteger(layers) || layers < 1)
  throw new RangeError(`--layers: expected an integer ≥ 1, got ${opts.layers}`);
const pkg = await import(pathToFileURL(join(root, 'dist', 'index.js')).href);
const { build } = await pkg.init({ build: opts.build, threads: 1 });

const lines = [];
lines.push(
  `Decode steps, ${build} build, one thread, ${opts.rounds} interleaved rounds (medians; spread min–max)` +
    (layers > 1 ? `; ${layers} layers a step, µs per layer (the whole step: ${layers}×).` : '.'),
);
lines.push('');
lines.push(
  '| shape | L | dtype | µs/step | spread | vs float32 | vs int8 | CPU µs/step | CPU vs float32 | CPU vs int8 | bytes/token | vs float32 |',
);
lines.push('| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |');
for (const shape of list(opts.shapes)) {
  const s = SHAPES[/** @type {keyof typeof SHAPES} */ (shape)];
  for (const L of list(opts.decode).map(Number)) {
    const { q, k, v, pastK, pastV } = workloadData(shape, 'decode', L);
    const out = new Float32Array(q.length);
    const caches = DTYPES.map((dtype) =>
      filledCache(
        pkg,
        s,
        dtype,
        L + 1,
        /** @type {Float32Array} */ (pastK),
        /** @type {Float32Array} */ (pastV),
        L,
        layers,
      ),
    );
    const bytes = caches.map((c) => c.byteLength / L / layers);
    const steps = caches.map((cache) => () => {
      for (let layer = 0; layer < layers; layer++) cache.attend(layer, q, k, v, out);
      cache.truncate(L);
    });
    // per call of each dtype, in µs per layer
    const timed = interleave(steps, { rounds: opts.rounds, batchMs: opts.batchMs });
    const perLayer = (/** @type {number[][]} */ ms) => ms.map((r) => r.map((x) => (x * 1000) / layers));
    const times = perLayer(timed.wall);
    const cpu = perLayer(timed.cpu);
    const med = times.map((t) => median(t));
    const medCpu = cpu.map((t) => median(t));
    DTYPES.forEach((dtype, i) => {
      const spread = `${Math.min(...times[i]).toFixed(0)}–${Math.max(...times[i]).toFixed(0)}`;
      lines.push(
        `| ${s.label} | ${L} | ${dtype} | ${med[i].toFixed(1)} | ${spread} | ${(med[0] / med[i]).toFixed(2)}× | ` +
          `${(med[1] / med[i]).toFixed(2)}× | ${medCpu[i].toFixed(1)} | ${(medCpu[0] / medCpu[i]).toFixed(2)}× | ` +
          `${(medCpu[1] / medCpu[i]).toFixed(2)}× | ${bytes[i].toFixed(0)} | ${(bytes[i] / bytes[0]).toFixed(3)} |`,
      );
    });
    for (const c of caches) c.dispose();
    console.error(`  ${shape} L=${L} done`);
  }
}
lines.push('');
lines.push(
  "vs float32 / vs int8: speed-ups (their time over this one's); bytes/token: byteLength over tokens held (one layer's).",
);
console.log(lines.join('\n'));
