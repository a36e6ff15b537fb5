// What bench/node.mjs and bench/browser.mjs share on the Node side: the suite's command-line options,
// their parsing into a SuiteOptions, the sizes of the built .wasm files, and gathering the jobs' results.

import { mkdir, stat, writeFile } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { SHAPES, BUILDS, DTYPES, DEFAULT_DECODE, DEFAULT_PREFILL, FULL_PREFILL } from './suite.mjs';
import { derive, markdown, svgChart, threadsSvg } from './report.mjs';
import { bestLimits } from './limits/limits.mjs';

/** Defaults of the options both runners take (each adds its own: impls, timeouts, internals). */
export const SUITE_DEFAULTS = {
  shapes: Object.keys(SHAPES).join(','),
  decode: DEFAULT_DECODE.join(','),
  prefill: 'default',
  dtypes: DTYPES.join(','),
  full: false,
  minTime: 0.25,
  minReps: 5,
  maxTime: 1.5,
  warmup: 2,
  outDir: fileURLToPath(new URL('./results/', import.meta.url)),
};

/** Comma lists of the command line. */
export const list = (/** @type {string} */ s) => String(s).split(',').filter(Boolean);

/**
 * The workloads the options ask for, checked: positive integer lengths, known shapes and dtypes.
 * @param {typeof SUITE_DEFAULTS} opts
 * @param {(message: string) => never} fail
 * @returns {import('./suite.mjs').SuiteOptions}
 */
export function suiteOptions(opts, fail) {
  const ints = (/** @type {string} */ s) =>
    list(s)
      .map((x) => {
        const n = Number(x);
        if (!Number.isInteger(n) || n < 1) fail(`not a positive integer: ${x}`);
        return n;
      })
      .sort((a, b) => a - b);
  const suite = {
    shapes: list(opts.shapes),
    decode: ints(opts.decode),
    prefill: opts.prefill !== 'default' ? ints(opts.prefill) : opts.full ? FULL_PREFILL : DEFAULT_PREFILL,
    dtypes: list(opts.dtypes),
    warmup: opts.warmup,
    minReps: opts.minReps,
    minTime: opts.minTime,
    maxTime: opts.maxTime,
  };
  for (const s of suite.shapes) if (!(s in SHAPES)) fail(`unknown shape ${s}`);
  for (const d of suite.dtypes) if (!DTYPES.includes(d)) fail(`unknown dtype ${d}`);
  return suite;
}

/** Bytes of each built .wasm under `root`. */
export async function wasmSizes(/** @type {string} */ root) {
  /** @type {Record<string, number>} */
  const sizes = {};
  for (const b of BUILDS) {
    const file = `${root}/wasm/attention-${b}.wasm`;
    if (existsSync(file)) sizes[b] = (await stat(file)).size;
  }
  return sizes;
}

/**
 * Every job's rows (with the threads it ran on), the machine's limits (the best of the `limits#…` jobs) and the numbers derived from
 * both (report.mjs derive), and the .wasm sizes under `root`.
 * @param {Record<string, any>} jobs results by job name @param {string} root
 */
export async function gather(jobs, root) {
  // each row carries the threads its job ran on (what 'auto' became; 1 where a job says nothing)
  const rows = Object.values(jobs).flatMap((j) =>
    (j.rows ?? []).map((/** @type {any} */ r) => ({ ...r, threads: j.threads ?? 1 })),
  );
  const limits = bestLimits(
    Object.entries(jobs)
      .filter(([k]) => k.startsWith('limits#'))
      .map(([, j]) => j.limits),
  );
  derive(rows, limits);
  return { rows, limits, sizes: await wasmSizes(root) };
}

/**
 * Prints the markdown report and writes `<name>.md`, `<name>.svg`, `<name>-threads.svg` (when the run
 * has threaded rows) and `<name>.json` (the input plus `extra`) into `outDir`. The report covers the suite's shapes, decode and prefill lengths and dtypes.
 * @param {string} outDir @param {string} name
 * @param {Omit<import('./report.mjs').ReportInput, 'shapes' | 'decode' | 'prefill' | 'dtypes'>} partial
 * @param {import('./suite.mjs').SuiteOptions} suite @param {Record<string, unknown>} extra
 */
export async function writeReport(outDir, name, partial, suite, extra) {
  const { shapes, decode, prefill, dtypes } = suite;
  const input = { ...partial, shapes, decode, prefill, dtypes };
  const md = markdown(input);
  console.log(md);
  await mkdir(outDir, { recursive: true });
  await writeFile(join(outDir, `${name}.md`), `${md}\n`);
  await writeFile(join(outDir, `${name}.svg`), `${svgChart(input)}\n`);
  const threads = threadsSvg(input);
  if (threads) await writeFile(join(outDir, `${name}-threads.svg`), `${threads}\n`);
  await writeFile(join(outDir, `${name}.json`), `${JSON.stringify({ ...input, ...extra }, null, 2)}\n`);
  process.stderr.write(
    `\nwrote ${join(outDir, `${name}.md`)}, ${name}.json, ${name}.svg${threads ? `, ${name}-threads.svg` : ''}\n`,
  );
}
