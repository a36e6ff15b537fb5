#!/usr/bin/env node
// `npm run bench`: wasm-attention against its peers in Node, on one attention layer shaped like GPT-2
// small (12/12/64) and Llama-3.2-1B (32/8/64):
//   decode  — one new token over L cached tokens, L in 128, 512, 2048, 8192, 32768;
//   prefill — T tokens, causal, into an empty cache, T in 128, 512 (and 2048 with --full);
//   float32 and int8 caches (int8: wasm-attention only; its ratios are against the peers' float32).
// Side by side: each wasm-attention build (relaxed-simd, simd, scalar), plain JS (test/support/plain-js.mjs),
// onnxruntime-web (WASM backend, 1 and 2 threads) and onnxruntime-node (native CPU, 1 thread), each
// running com.microsoft GroupQueryAttention and ONNX Attention (opset 23) with a past KV cache, fetching
// only the output; and the machine's limits (bench/limits): streaming bandwidth over each workload's K/V
// size and peak f32x4 multiply-add throughput. Every implementation runs in its own child process.
// Also measured: JS-heap bytes allocated per decode step, init() time, .wasm sizes.
//
// Writes bench/results/node.{json,md,svg}; prints the markdown. `--help` for options.

import { spawn } from 'node:child_process';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { existsSync, readFileSync } from 'node:fs';
import { tmpdir, cpus, loadavg, availableParallelism, totalmem } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { PerformanceObserver } from 'node:perf_hooks';
import { loadPackage, cliOptions, median, packageState, builtStamp } from '../test/support/scripts.mjs';
import { SUITE_DEFAULTS, gather, list, suiteOptions, writeReport } from './cli.mjs';
import {
  SHAPES,
  BUILDS,
  DEFAULT_PREFILL,
  FULL_PREFILL,
  runWasm,
  runPlain,
  runOrt,
  allocationsPerStep,
  workloadSizes,
  WrongOutput,
  THREADED,
  ORT_WEB,
  oursOf,
  ortOf,
} from './suite.mjs';

const ALL_IMPLS = [...BUILDS, ...THREADED, 'plain', ...ORT_WEB, 'ort-node-1t'];
const INIT_RUNS = 5;
const DEFAULTS = {
  ...SUITE_DEFAULTS,
  impls: ALL_IMPLS.join(','),
  // internal
  child: '',
  resultFile: '',
  config: '',
};
const HELP = `Usage: node bench/node.mjs [options]     (npm run bench -- [options])

  --shapes LIST   ${Object.keys(SHAPES).join(', ')}                              [${DEFAULTS.shapes}]
  --decode LIST   cached tokens L of the decode cases              [${DEFAULTS.decode}]
  --prefill LIST  prompt tokens T of the prefill cases             [${DEFAULT_PREFILL.join(',')}; --full: ${FULL_PREFILL.join(',')}]
  --full          the whole sweep of the issue (adds prefill T=2048: several minutes more)
  --dtypes LIST   float32, int8, bfloat16, int4 (the cache dtype)   [${DEFAULTS.dtypes}]
  --impls LIST    ${ALL_IMPLS.join(', ')}
                  (the limits are always measured)                 [all]
  --min-time S    seconds of timed calls per case, at least        [${DEFAULTS.minTime}]
  --min-reps N    timed calls per case, at least                   [${DEFAULTS.minReps}]
  --max-time S    stop a case after this many seconds (≥ 3 calls)  [${DEFAULTS.maxTime}]
  --warmup N      untimed calls first (1 when a call is slow)      [${DEFAULTS.warmup}]
  --out-dir DIR   where node.json, node.md, node.svg go            [bench/results/]
  -h, --help

Builds the package first (npm run build). On Node 20 the children get --experimental-wasm-relaxed-simd.`;

/** @param {string} msg @returns {never} */
function fail(msg) {
  console.error(`bench: ${msg}`);
  process.exit(2);
}

const opts = cliOptions(DEFAULTS, HELP, 'bench');
/** @type {import('./suite.mjs').SuiteOptions} */
const suiteOpts = opts.config ? JSON.parse(opts.config) : suiteOptions(opts, fail);

const log = (/** @type {string} */ s) => process.stderr.write(`${s}\n`);
const ROOT = fileURLToPath(new URL('..', import.meta.url));

// =============================================================================================
// children

async function runChild(/** @type {string} */ impl) {
  /** @type {Record<string, any>} */
  const out = { impl, rows: [] };
  /** @type {import('./suite.mjs').Ctx} */
  const ctx = { opts: suiteOpts, log, runtime: `node ${process.version}` };
  if (impl.startsWith('init-')) {
    const pkg = await loadPackage();
    const t0 = performance.now();
    const info = await pkg.init({ build: impl.slice(5), threads: 1 });
    out.initMs = performance.now() - t0;
    out.build = info.build;
  } else if (impl === 'limits') {
    const { measureLimits } = await import('./limits/limits.mjs');
    const { buildLimits } = await import('./limits/build.mjs');
    const paths = buildLimits();
    /** @type {Uint8Array<ArrayBuffer> | null} */
    let relaxed = new Uint8Array(readFileSync(paths.relaxed));
    if (!WebAssembly.validate(relaxed)) relaxed = null;
    out.limits = await measureLimits({ simd: readFileSync(paths.simd), relaxed }, workloadSizes(suiteOpts));
    log(
      `  limits: peak mul+add ${out.limits.peakMulAdd.toFixed(1)} GFLOP/s, relaxed_madd ${out.limits.peakMadd?.toFixed(1) ?? '–'} GFLOP/s; bandwidth ${Object.values(
        out.limits.bandwidth,
      )
        .map((x) => /** @type {number} */ (x).toFixed(0))
        .join('/')} GB/s`,
    );
  } else if (oursOf(impl)) {
    const { build, threads } = /** @type {{ build: string, threads: number | 'auto' }} */ (oursOf(impl));
    const pkg = await loadPackage();
    const t0 = performance.now();
    const info = await pkg.init({ build, threads });
    out.initMs = performance.now() - t0;
    out.threads = info.threads;
    if (info.build !== build) {
      out.unavailable = `init({ build: '${build}' }) gave '${info.build}'`;
    } else {
      ctx.pkg = pkg;
      out.rows = await runWasm(impl, ctx);
      let gcs = 0;
      const obs = new PerformanceObserver((l) => {
        gcs += l.getEntries().length;
      });
      obs.observe({ entryTypes: ['gc'] });
      out.allocations = await allocationsPerStep(
        ctx,
        () => process.memoryUsage().heapUsed,
        () => new Promise((r) => setTimeout(() => r(gcs), 30)),
      );
      obs.disconnect();
      const a = out.allocations;
      const bytes = (/** @type {string} */ place) => suiteOpts.dtypes.map((d) => `${d} ${a[place][d]} B`).join(', ');
      log(
        `  ${impl} (${info.threads} thread${info.threads > 1 ? 's' : ''}): init ${out.initMs.toFixed(1)} ms; JS heap per decode step inside a page: ${bytes('inPage')}; a step that takes a page: ${bytes('pageTaking')} (control ${a.control} B)`,
      );
    }
  } else if (impl === 'plain') {
    out.rows = await runPlain(ctx);
  } else if (impl.startsWith('ort-')) {
    const { flavor, threads } = /** @type {NonNullable<ReturnType<typeof ortOf>>} */ (ortOf(impl));
    let ort;
    if (flavor === 'web') {
      ort = await import('onnxruntime-web');
      ort.env.wasm.numThreads = threads === 'auto' ? 0 : threads; // 0: onnxruntime-web picks
    } else {
      ort = (await import('onnxruntime-node')).default;
    }
    out.ortVersion = ort.env?.versions?.[/** @type {'web' | 'node'} */ (flavor)] ?? ort.env?.versions?.common;
    const { buildModel } = await import('./ort/models.mjs');
    ctx.ort = ort;
    ctx.getModel = async (op, kind, shape) =>
      buildModel(/** @type {any} */ (op), kind, SHAPES[/** @type {keyof typeof SHAPES} */ (shape)]);
    // for the output check: wasm-attention's default build on this runtime
    const pkg = await loadPackage();
    await pkg.init();
    ctx.pkg = pkg;
    out.rows = await runOrt(flavor, threads, ctx);
    // what 'auto' became (onnxruntime-web writes the count it chose back)
    out.threads = flavor === 'web' ? ort.env.wasm.numThreads : threads;
  } else {
    throw new Error(`unknown implementation ${impl}`);
  }
  await writeFile(opts.resultFile, JSON.stringify(out));
  // onnxruntime-web's worker threads may keep the process alive
  process.exit(0);
}

// =============================================================================================
// parent

async function runParent() {
  const impls = list(opts.impls);
  for (const i of impls)
    if (!ALL_IMPLS.includes(i)) fail(`unknown implementation ${i}; known: ${ALL_IMPLS.join(', ')}`);
  if (!existsSync(join(ROOT, 'dist/index.js')) || !existsSync(join(ROOT, 'wasm/attention-simd.wasm')))
    fail('build the package first: npm run build');
  const { buildLimits } = await import('./limits/build.mjs');
  buildLimits();
  const nodeMajor = Number(process.versions.node.split('.')[0]);
  const flags = [...process.execArgv];
  if (nodeMajor < 22 && !flags.includes('--experimental-wasm-relaxed-simd'))
    flags.push('--experimental-wasm-relaxed-simd');
  const dir = await mkdtemp(join(tmpdir(), 'wasm-attention-bench-'));
  const self = fileURLToPath(import.meta.url);
  const load0 = loadavg();
  const stamp0 = await builtStamp();
  const t0 = performance.now();
  log(
    `bench: Node ${process.version}, ${cpus()[0]?.model?.trim()}, load average ${load0.map((x) => x.toFixed(2)).join(' ')}`,
  );
  log(
    `bench: shapes ${suiteOpts.shapes.join(',')}; decode L ${suiteOpts.decode.join(',')}; prefill T ${suiteOpts.prefill.join(',')}; dtypes ${suiteOpts.dtypes.join(',')}`,
  );
  /** @type {Record<string, any>} */
  const children = {};
  try {
    const initRuns = BUILDS.filter((b) => impls.includes(b)).flatMap((b) =>
      Array.from({ length: INIT_RUNS }, (_, i) => `init-${b}#${i}`),
    );
    for (const job of ['limits#1', ...initRuns, ...impls, 'limits#2']) {
      const impl = job.replace(/#.*/, '');
      const resultFile = join(dir, `${job}.json`);
      const c0 = performance.now();
      const code = await new Promise((resolve, reject) => {
        const p = spawn(
          process.execPath,
          [
            ...flags,
            // room for the allocation check's 5,000 steps without a scavenge, even where steps allocate
            ...(oursOf(impl) ? ['--max-semi-space-size=64'] : []),
            self,
            '--child',
            impl,
            '--result-file',
            resultFile,
            '--config',
            JSON.stringify(suiteOpts),
          ],
          {
            stdio: ['ignore', 'inherit', 'inherit'],
          },
        );
        p.on('error', reject);
        p.on('exit', (c, sig) => resolve(sig ?? c));
      });
      const seconds = (performance.now() - c0) / 1000;
      if (code === WRONG_OUTPUT_EXIT) {
        await rm(dir, { recursive: true, force: true });
        fail(`${job} computed a wrong output (above): the run stops rather than rank it`);
      }
      if (code !== 0 || !existsSync(resultFile)) {
        children[job] = { impl, unavailable: `child process failed (${code})`, seconds, rows: [] };
        log(`bench: ${job} failed (${code})`);
        continue;
      }
      children[job] = { ...JSON.parse(await readFile(resultFile, 'utf8')), seconds };
      if (!impl.startsWith('init-')) log(`bench: ${job} done in ${seconds.toFixed(0)} s`);
    }
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
  const seconds = (performance.now() - t0) / 1000;
  const load1 = loadavg();

  const { rows, limits, sizes } = await gather(children, ROOT);
  /** @type {Record<string, number>} */
  const initMs = {};
  /** @type {Record<string, any>} */
  const allocations = {};
  for (const b of BUILDS) {
    const inits = Object.entries(children)
      .filter(([k, c]) => k.startsWith(`init-${b}#`) && c.build === b)
      .map(([, c]) => c.initMs);
    if (inits.length) initMs[b] = median(inits);
  }
  for (const impl of [...BUILDS, ...THREADED]) {
    if (children[impl]?.allocations)
      allocations[impl] = { ...children[impl].allocations, threads: children[impl].threads };
  }
  const notes = [];
  if ((await builtStamp()) !== stamp0)
    notes.push('**wasm/ or dist/ was rebuilt during this run: the rows may mix two versions of the package.**');
  for (const [impl, c] of Object.entries(children))
    if (c.unavailable && !impl.startsWith('init-')) notes.push(`${impl}: not measured: ${c.unavailable}`);
  const ortV = children['ort-web-1t']?.ortVersion ?? children['ort-node-1t']?.ortVersion;
  if (ortV)
    notes.push(
      `onnxruntime ${ortV}: one session per (op, shape, kind), inputs as CPU tensors each run (a decode run copies the past K/V into ORT's heap, as ORT's API requires), fetches ['output'] only.`,
    );
  notes.push(
    "int8 rows: wasm-attention with an int8 cache; their × columns compare with the peers' float32 times (the peers have no int8 cache).",
  );
  notes.push(
    'JS-heap allocations: process.memoryUsage().heapUsed growth over 1000 and over 5000 decode steps (attend + truncate; Llama shape, after 10000 warm-up steps), each kept only when a PerformanceObserver (gc entries) saw no GC in between; bytes/step = the slope between the two, the least of up to eight tries (a try under 0.5 B/step ends them; the children measuring it run with --max-semi-space-size=64). Inside a page: L=1000; a step that takes a page (once every 64 tokens per layer): L=1024. Both go across threads in the threaded rows. A control loop allocating one small typed-array view per step and an empty loop calibrate it.',
  );
  notes.push(
    `init(): median of ${INIT_RUNS} fresh processes per build, time of the first \`await init({ build })\` after importing the package (reads, compiles and instantiates the .wasm).`,
  );
  if (!opts.full && opts.prefill === 'default')
    notes.push(`prefill T=2048 is only in --full (it alone takes several minutes with the slower peers).`);
  notes.push(
    `load average before ${load0.map((x) => x.toFixed(2)).join(' ')}, after ${load1.map((x) => x.toFixed(2)).join(' ')} on ${availableParallelism()} cores${load0[0] >= availableParallelism() / 2 || load1[0] >= availableParallelism() / 2 ? ': the machine was busy, timings are noisy' : ''}.`,
  );
  notes.push(
    `total ${seconds.toFixed(0)} s (${Object.entries(children)
      .filter(([k]) => !k.startsWith('init-'))
      .map(([k, c]) => `${k} ${c.seconds.toFixed(0)} s`)
      .join(', ')}).`,
  );
  const input = {
    title: `Node ${process.version}`,
    machine: [
      `CPU: ${cpus()[0]?.model?.trim()} (${availableParallelism()} cores, ${(totalmem() / 2 ** 30).toFixed(0)} GiB), ${process.platform} ${process.arch}`,
      `Node ${process.version}${flags.length ? ` with ${flags.join(' ')}` : ''}; every implementation in its own child process; one thread unless the name says 2t or auto (the Threads table gives the count 'auto' got)`,
      `date ${new Date().toISOString()}`,
      await packageState(),
    ],
    limits,
    rows,
    allocations,
    wasmSizes: sizes,
    initMs,
    notes,
  };
  await writeReport(opts.outDir, 'node', input, suiteOpts, {
    options: suiteOpts,
    children: Object.fromEntries(Object.entries(children).map(([k, c]) => [k, { ...c, rows: undefined }])),
    initRuns: INIT_RUNS,
  });
}

/** A child's exit code for WrongOutput: the parent stops the whole run on it. */
const WRONG_OUTPUT_EXIT = 3;

if (opts.child) {
  try {
    await runChild(opts.child);
  } catch (error) {
    if (!(error instanceof WrongOutput)) throw error;
    console.error(`bench: WRONG OUTPUT: ${error.message}`);
    process.exit(WRONG_OUTPUT_EXIT);
  }
} else await runParent();
