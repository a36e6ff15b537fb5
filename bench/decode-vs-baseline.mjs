// `npm run bench:decode`: this checkout's kernel against a baseline commit's, interleaved in one process.
//
// Timings on a shared 2-core machine move by 25% between processes, so a ratio is only worth reading when
// both variants run in the same process, round after round: each round times one batch of calls of the
// baseline, then one of this checkout (their order alternating), and the report gives the medians over the
// rounds and their ratio, in wall time and in this process's CPU time (process.cpuUsage: on a machine other
// processes load, the time this process ran, not the time it waited for a core). Each build (`init({ build })` is per process) runs in its own child process.
//
// The baseline is the commit the issue measured against (854e4b1, "today's kernel"), checked out by this
// script as a git worktree in .tmp/baseline (gitignored; never committed) and built there once; or `this`,
// this checkout itself, to compare one dtype with another (npm run bench:dtypes compares all four).
// Also reported: the share of the relaxed-SIMD flop peak and of the streaming roofline (bench/limits/).

import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, readFileSync, symlinkSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { parseArgs, median } from '../test/support/scripts.mjs';
import { Rng } from '../test/support/rng.js';
import { SHAPES, workloadData, filledCache, flopsOf, bytesOf, interleave } from './suite.mjs';
import { buildLimits } from './limits/build.mjs';
import { measureLimits, bestLimits } from './limits/limits.mjs';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const DEFAULTS = {
  baseline: '854e4b1',
  builds: 'relaxed-simd,simd',
  shapes: 'gpt2,llama',
  decode: '2048,8192',
  prefill: '512',
  inCache: '1024',
  rounds: 15,
  batchMs: 60,
  dtype: 'float32',
  baselineDtype: '',
  child: '',
};
const HELP = `node bench/decode-vs-baseline.mjs [options]   (npm run bench:decode)
  --baseline <commit>   the kernel to compare with (default ${DEFAULTS.baseline}), built in .tmp/baseline;
                        'this': this checkout (with --baseline-dtype, one dtype against another);
                        or the path of another built checkout (a worktree holding a variant)
  --dtype <d>           the cache dtype of this checkout's rows: float32 (default), int8, bfloat16 or int4
  --baseline-dtype <d>  the baseline's cache dtype (default: --dtype)
  --builds <list>       ${DEFAULTS.builds}
  --shapes <list>       ${DEFAULTS.shapes}
  --decode <list>       cached tokens L of the decode steps (default ${DEFAULTS.decode})
  --prefill <list>      tokens T of the prefills (default ${DEFAULTS.prefill}; '' for none)
  --in-cache <list>     L of decode steps over ONE kv head of each shape (its query group), whose K/V
                        stays in L2: the kernel's arithmetic without the memory (default ${DEFAULTS.inCache}; '' for none)
  --rounds <n>          interleaved rounds per workload (default ${DEFAULTS.rounds})
  --batch-ms <ms>       time per batch of calls in a round (default ${DEFAULTS.batchMs})`;

const opts = parseArgs(process.argv.slice(2), DEFAULTS);
const list = (/** @type {string} */ s) => s.split(',').filter(Boolean);
const baselineDtype = opts.baselineDtype || opts.dtype;

const nodeMajor = +process.versions.node.split('.')[0];
if (opts.help) {
  console.log(HELP);
} else if (nodeMajor < 22 && !process.execArgv.includes('--experimental-wasm-relaxed-simd')) {
  // Node 20 runs relaxed SIMD (the kernel's build and the peak's measurement) only behind this flag
  const self = spawnSync(
    process.execPath,
    [...process.execArgv, '--experimental-wasm-relaxed-simd', ...process.argv.slice(1)],
    { stdio: 'inherit' },
  );
  process.exitCode = self.status ?? 1;
} else if (opts.child) {
  await runChild(opts.child);
} else {
  await runParent();
}

// ------------------------------------------------------------------------------------------- parent

/** Checks out and builds the baseline commit in .tmp/baseline unless its dist/ already exists. */
function ensureBaseline(/** @type {string} */ commit) {
  if (commit === 'this') return root;
  // another checkout (a git worktree holding a variant), already built
  if (existsSync(join(commit, 'dist', 'index.js'))) return resolve(commit);
  const dir = join(root, '.tmp', 'baseline');
  if (!existsSync(join(dir, 'dist', 'index.js'))) {
    if (!existsSync(dir))
      execFileSync('git', ['worktree', 'add', '--detach', dir, commit], { cwd: root, stdio: 'inherit' });
    if (!existsSync(join(dir, 'node_modules')))
      symlinkSync(join(root, 'node_modules'), join(dir, 'node_modules'), 'dir');
    execFileSync('npm', ['run', 'build'], { cwd: dir, stdio: 'inherit' });
  }
  const head = execFileSync('git', ['rev-parse', 'HEAD'], { cwd: dir }).toString().trim();
  const wanted = execFileSync('git', ['rev-parse', commit], { cwd: root }).toString().trim();
  if (head !== wanted)
    throw new Error(`.tmp/baseline holds ${head}, not ${commit}: remove it (git worktree remove .tmp/baseline)`);
  return dir;
}

async function runParent() {
  const baseline = ensureBaseline(opts.baseline);
  const limitPaths = buildLimits();
  /** @param {string} name */
  const shapeOf = (name) => SHAPES[/** @type {keyof typeof SHAPES} */ (name)];
  const sizes = new Set();
  for (const shape of list(opts.shapes))
    for (const L of list(opts.decode)) sizes.add(bytesOf(shapeOf(shape), 'decode', +L, opts.dtype));
  /** @type {Uint8Array<ArrayBuffer> | null} */
  let relaxed = readFileSync(limitPaths.relaxed);
  if (!WebAssembly.validate(relaxed)) relaxed = null;
  const limitWasm = { simd: readFileSync(limitPaths.simd), relaxed };
  // measured before and after the runs, the better kept (other processes only ever slow a limit down)
  const before = await measureLimits(limitWasm, [...sizes]);

  /** @type {any[]} */
  const rows = [];
  for (const build of list(opts.builds)) {
    const args = process.argv.slice(2).filter((a) => !a.startsWith('--child'));
    const child = spawnSync(
      process.execPath,
      [...process.execArgv, fileURLToPath(import.meta.url), ...args, '--child', build],
      {
        env: { ...process.env, BASELINE_DIR: baseline },
        stdio: ['ignore', 'pipe', 'inherit'],
        maxBuffer: 1 << 24,
      },
    );
    if (child.status !== 0) throw new Error(`the ${build} child failed (exit ${child.status})`);
    rows.push(...JSON.parse(child.stdout.toString().trim().split('\n').at(-1) ?? '[]'));
  }
  const limits = bestLimits([before, await measureLimits(limitWasm, [...sizes])]);
  console.log(report(rows, limits));
}

/** The markdown table, with the % of peak and roofline for each row of this checkout. */
function report(/** @type {any[]} */ rows, /** @type {any} */ limits) {
  const out = [
    `Peak: relaxed_madd ${limits.peakMadd?.toFixed(1) ?? '–'} GFLOP/s, mul+add ${limits.peakMulAdd.toFixed(1)} GFLOP/s; ` +
      `streaming reads ${Object.entries(limits.bandwidth)
        .map(([b, g]) => `${(+b / 2 ** 20).toFixed(1)} MiB: ${(+g).toFixed(0)} GB/s`)
        .join(', ')}`,
    '',
    `Baseline: ${opts.baseline} (${baselineDtype}); this: ${opts.dtype}.`,
    '',
    '| build | shape | workload | baseline ms | this ms | speed-up | CPU-time speed-up | this: % of flop peak | this: % of roofline | same bits |',
    '| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |',
  ];
  for (const r of rows) {
    const shape = SHAPES[/** @type {keyof typeof SHAPES} */ (r.shape)];
    const s = r.kind === 'in-cache' ? { ...shape, heads: shape.heads / shape.kvHeads } : shape;
    const peak = r.build === 'relaxed-simd' ? limits.peakMadd : limits.peakMulAdd;
    const flops = flopsOf(s, r.kind === 'in-cache' ? 'decode' : r.kind, r.n);
    const computeMs = flops / peak / 1e6;
    let roofMs = computeMs;
    if (r.kind === 'decode') {
      const bytes = bytesOf(s, 'decode', r.n, opts.dtype);
      roofMs = Math.max(computeMs, bytes / limits.bandwidth[bytes] / 1e6);
    }
    const pct = (/** @type {number} */ x) => `${(100 * x).toFixed(0)}%`;
    out.push(
      `| ${r.build} | ${s.label} | ${workload(r)} | ${r.baseMs.toFixed(3)} | ` +
        `${r.thisMs.toFixed(3)} | ${(r.baseMs / r.thisMs).toFixed(2)}× | ${(r.baseCpuMs / r.thisCpuMs).toFixed(2)}× | ${pct(computeMs / r.thisMs)} | ${pct(roofMs / r.thisMs)} | ${r.identical === null ? '–' : r.identical ? 'yes' : 'NO'} |`,
    );
  }
  return out.join('\n');
}

/** @param {any} r */
function workload(r) {
  if (r.kind === 'in-cache') return `decode L = ${r.n}, one kv head (in L2)`;
  return `${r.kind} ${r.kind === 'decode' ? `L = ${r.n}` : `T = ${r.n}`}`;
}

// -------------------------------------------------------------------------------------------- child

async function runChild(/** @type {string} */ build) {
  const variants = [
    await import(pathToFileURL(join(/** @type {string} */ (process.env.BASELINE_DIR), 'dist', 'index.js')).href),
    await import(pathToFileURL(join(root, 'dist', 'index.js')).href),
  ];
  for (const pkg of variants) {
    // one thread: the issue's targets are for the kernel on one core (this checkout's default is 'auto'; a
    // version from before threads ignores the option)
    const got = (await pkg.init({ build, threads: 1 })).build;
    if (got !== build) throw new Error(`asked for the ${build} build, got ${got}`);
  }
  const dtypes = [baselineDtype, opts.dtype];
  // different dtypes give different outputs: only a comparison of one dtype checks the bits
  const sameBits = dtypes[0] === dtypes[1] ? sameBitsOf : () => null;
  const rows = [];
  for (const shape of list(opts.shapes)) {
    const s = SHAPES[/** @type {keyof typeof SHAPES} */ (shape)];
    for (const L of list(opts.decode).map(Number)) {
      const { q, k, v, pastK, pastV } = workloadData(shape, 'decode', L);
      /** @type {Float32Array} */
      const scratch = new Float32Array(q.length);
      const steps = variants.map((pkg, which) => {
        const cache = filledCache(
          pkg,
          s,
          dtypes[which],
          L + 1,
          /** @type {Float32Array} */ (pastK),
          /** @type {Float32Array} */ (pastV),
          L,
        );
        return (/** @type {Float32Array} */ out = scratch) => {
          cache.attend(0, q, k, v, out);
          cache.truncate(L);
        };
      });
      rows.push({
        build,
        shape,
        kind: 'decode',
        n: L,
        ...baseAgainstThis(steps),
        identical: sameBits(steps, q.length),
      });
    }
    for (const L of list(opts.inCache).map(Number)) {
      const one = { ...s, heads: s.heads / s.kvHeads, kvHeads: 1 };
      const rng = new Rng(7 * L + one.heads);
      const [q, k, v] = [one.heads, 1, 1].map((rows) => rng.randn(rows * s.headDim));
      const [pastK, pastV] = [0, 1].map(() => rng.randn(L * s.headDim));
      const steps = variants.map((pkg, which) => {
        const cache = new pkg.KVCache({
          heads: one.heads,
          kvHeads: 1,
          headDim: s.headDim,
          maxTokens: L + 1,
          dtype: dtypes[which],
        });
        cache.append(0, pastK, pastV);
        return (/** @type {Float32Array} */ out = new Float32Array(q.length)) => {
          cache.attend(0, q, k, v, out);
          cache.truncate(L);
        };
      });
      rows.push({
        build,
        shape,
        kind: 'in-cache',
        n: L,
        ...baseAgainstThis(steps),
        identical: sameBits(steps, q.length),
      });
    }
    for (const T of list(opts.prefill).map(Number)) {
      const { q, k, v } = workloadData(shape, 'prefill', T);
      /** @type {Float32Array} */
      const scratch = new Float32Array(q.length);
      const steps = variants.map((pkg, which) => {
        const cache = new pkg.KVCache({
          heads: s.heads,
          kvHeads: s.kvHeads,
          headDim: s.headDim,
          maxTokens: T,
          dtype: dtypes[which],
        });
        return (/** @type {Float32Array} */ out = scratch) => {
          cache.attend(0, q, k, v, out);
          cache.truncate(0);
        };
      });
      rows.push({
        build,
        shape,
        kind: 'prefill',
        n: T,
        ...baseAgainstThis(steps),
        identical: sameBits(steps, q.length),
      });
    }
    console.error(`  ${build} ${shape} done`);
  }
  console.log(JSON.stringify(rows));
}

/**
 * Whether both variants give the same bits (a faster loop must not change a single output).
 * @param {((out?: Float32Array) => void)[]} steps @param {number} length
 */
function sameBitsOf(steps, length) {
  const outs = steps.map((step) => {
    const out = new Float32Array(length);
    step(out);
    return new Uint32Array(out.buffer);
  });
  return outs[0].every((x, i) => x === outs[1][i]);
}

/**
 * The baseline's step against this checkout's, interleaved (suite.mjs); medians over rounds of each one's
 * per-call time.
 * @param {((out?: Float32Array) => void)[]} steps baseline, this
 */
function baseAgainstThis(steps) {
  const { wall, cpu } = interleave(steps, { rounds: opts.rounds, batchMs: opts.batchMs });
  return { baseMs: median(wall[0]), thisMs: median(wall[1]), baseCpuMs: median(cpu[0]), thisCpuMs: median(cpu[1]) };
}
