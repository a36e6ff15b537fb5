// The benchmark's workloads and measurements, shared by Node (bench/node.mjs, one child process per
// implementation) and the browser (bench/browser.mjs, one page per implementation). No Node APIs here:
// everything environment-specific comes in through `ctx`.
//
// Workloads, for each shape and dtype:
//   decode  — one new token attending over L cached tokens (L + 1 visible keys);
//   prefill — T tokens, causal, into an empty cache (T(T+1)/2 visible pairs).
// Flops: 4·headDim per (query, visible key) pair per query head (q·k and p·v, a multiply and an add each).
// The same numbers (seeded) feed every implementation, so outputs can be compared across them.

import { Rng, mulberry32 } from '../test/support/rng.js';
import { median } from '../test/support/stats.mjs';
import { maxAbsDiff, referenceAttention } from '../test/support/reference.js';
import { PlainJsKVCache } from '../test/support/plain-js.mjs';

export const SHAPES = {
  gpt2: { label: 'GPT-2 small', heads: 12, kvHeads: 12, headDim: 64 },
  llama: { label: 'Llama-3.2-1B', heads: 32, kvHeads: 8, headDim: 64 },
};
export const BUILDS = ['relaxed-simd', 'simd', 'scalar'];
/** Our threaded rows: a build's name alone is one thread; -2t, -auto: init({ build, threads: 2 | 'auto' }). */
export const THREADED = ['relaxed-simd-2t', 'relaxed-simd-auto'];
/**
 * The build and thread count of one of our implementations, or undefined for a peer.
 * @param {string} impl @returns {{ build: string, threads: number | 'auto' } | undefined}
 */
export function oursOf(impl) {
  const m = /^(relaxed-simd|simd|scalar)(?:-(\d+)t|-(auto))?$/.exec(impl);
  return m ? { build: m[1], threads: m[3] ? 'auto' : Number(m[2] ?? 1) } : undefined;
}
/** onnxruntime-web at 1 and 2 threads, and at what it picks itself (ort.env.wasm.numThreads 0). */
export const ORT_WEB = ['ort-web-1t', 'ort-web-2t', 'ort-web-auto'];
/**
 * The flavor and thread count of an onnxruntime job (ort-web-2t, ort-web-auto, ort-node-1t), or undefined.
 * @param {string} impl @returns {{ flavor: 'web' | 'node', threads: number | 'auto' } | undefined}
 */
export function ortOf(impl) {
  const m = /^ort-(web|node)-(?:(\d+)t|(auto))$/.exec(impl);
  return m ? { flavor: /** @type {'web' | 'node'} */ (m[1]), threads: m[3] ? 'auto' : Number(m[2]) } : undefined;
}
export const DTYPES = ['float32', 'int8', 'bfloat16', 'int4'];
export const DEFAULT_DECODE = [128, 512, 2048, 8192, 32768];
export const DEFAULT_PREFILL = [128, 512];
export const FULL_PREFILL = [128, 512, 2048];

/** @typedef {{ label: string, heads: number, kvHeads: number, headDim: number }} Shape */
/** @typedef {'decode' | 'prefill'} Kind */

/** visible (query, key) pairs */
export const pairs = (/** @type {Kind} */ kind, /** @type {number} */ n) =>
  kind === 'decode' ? n + 1 : (n * (n + 1)) / 2;
/** flops of one call */
export const flopsOf = (/** @type {Shape} */ s, /** @type {Kind} */ kind, /** @type {number} */ n) =>
  4 * s.headDim * s.heads * pairs(kind, n);
/**
 * Bytes the call must move at least: decode reads the cached K and V once (int8: one byte a value plus a
 * f32 scale per token and kv head); prefill reads q, k, v and writes the output once.
 */
export function bytesOf(
  /** @type {Shape} */ s,
  /** @type {Kind} */ kind,
  /** @type {number} */ n,
  /** @type {string} */ dtype,
) {
  if (kind === 'decode') {
    const values = 2 * s.kvHeads * n * s.headDim;
    if (dtype === 'int8') return values + 2 * s.kvHeads * n * 4;
    if (dtype === 'bfloat16') return values * 2;
    // int4: half a byte a value, and a bfloat16 step and least value (4 bytes) per group of 32
    if (dtype === 'int4') return values / 2 + 2 * s.kvHeads * n * 4 * Math.ceil(s.headDim / 32);
    return values * 4;
  }
  return 4 * n * (2 * s.heads + 2 * s.kvHeads) * s.headDim;
}

/**
 * The bytes each workload of a run streams, smallest first, once each: the buffer sizes the machine's
 * bandwidth is measured at (bench/limits).
 * @param {SuiteOptions} opts @returns {number[]}
 */
export function workloadSizes(opts) {
  const sizes = [];
  for (const sh of opts.shapes) {
    const s = SHAPES[/** @type {keyof typeof SHAPES} */ (sh)];
    for (const dt of opts.dtypes) for (const n of opts.decode) sizes.push(bytesOf(s, 'decode', n, dt));
    for (const n of opts.prefill) sizes.push(bytesOf(s, 'prefill', n, 'float32'));
  }
  return [...new Set(sizes)].sort((a, b) => a - b);
}

// ---------------------------------------------------------------------------------------------
// Data: a seeded pool of normal numbers, tiled in chunks at seeded offsets (fast for 50 M values).

const POOL_ROWS = 1 << 14;
/** @type {Map<number, Float32Array>} */
const pools = new Map();
function pool(/** @type {number} */ d) {
  let p = pools.get(d);
  if (!p) {
    p = new Rng(1234 + d).randn(POOL_ROWS * d);
    pools.set(d, p);
  }
  return p;
}
/** `rows` rows of `d` values from the pool, in chunks of 256 rows at offsets drawn from `rand` */
function rowsFromPool(/** @type {number} */ rows, /** @type {number} */ d, /** @type {() => number} */ rand) {
  const p = pool(d);
  const out = new Float32Array(rows * d);
  for (let r = 0; r < rows; r += 256) {
    const c = Math.min(256, rows - r);
    const from = Math.floor(rand() * (POOL_ROWS - 256)) * d;
    out.set(p.subarray(from, from + c * d), r * d);
  }
  return out;
}

/**
 * The inputs of one workload: token-major q/k/v of the new tokens; for decode also the past K/V,
 * head-major [kvHeads][L][headDim] (ORT's BNSH layout).
 * @param {string} shapeName @param {Kind} kind @param {number} n
 */
export function workloadData(shapeName, kind, n) {
  const s = SHAPES[/** @type {keyof typeof SHAPES} */ (shapeName)];
  const rand = mulberry32((kind === 'decode' ? 1 : 2) * 1000003 + n * 31 + s.heads);
  const T = kind === 'decode' ? 1 : n;
  const q = rowsFromPool(T * s.heads, s.headDim, rand);
  const k = rowsFromPool(T * s.kvHeads, s.headDim, rand);
  const v = rowsFromPool(T * s.kvHeads, s.headDim, rand);
  if (kind === 'prefill') return { q, k, v, P: 0 };
  const pastK = rowsFromPool(s.kvHeads * n, s.headDim, rand);
  const pastV = rowsFromPool(s.kvHeads * n, s.headDim, rand);
  return { q, k, v, pastK, pastV, P: n };
}

// ---------------------------------------------------------------------------------------------
// Timing

/**
 * Times `fn` (sync, or async returning a promise): warm-up calls, then timed calls until at least
 * `minReps` and `minTime` seconds, stopping early (after at least 3) past `maxTime` seconds.
 * `before` runs untimed before each call. One warm-up only when a call is slow (> 0.3 s).
 * @param {() => any} fn
 * @param {(() => void) | undefined} before
 * @param {{ warmup: number, minReps: number, minTime: number, maxTime: number }} o
 */
export async function timeIt(fn, before, o) {
  for (let i = 0; i < o.warmup; i++) {
    before?.();
    const t0 = performance.now();
    const r = fn();
    if (r && typeof r.then === 'function') await r;
    if (performance.now() - t0 > 300) break;
  }
  /** @type {number[]} */
  const times = [];
  const start = performance.now();
  for (;;) {
    before?.();
    const t0 = performance.now();
    const r = fn();
    if (r && typeof r.then === 'function') await r;
    times.push(performance.now() - t0);
    const elapsed = (performance.now() - start) / 1000;
    if (times.length >= o.minReps && elapsed >= o.minTime) break;
    if (times.length >= 3 && elapsed >= o.maxTime) break;
    if (times.length >= 20000) break;
  }
  return { medianMs: median(times), minMs: Math.min(...times), reps: times.length };
}

/**
 * Variants timed against each other in one process: rounds of one batch of each, the order rotating every
 * round, so that a busy machine slows each alike. A batch is as many calls as the fastest variant makes in
 * about `batchMs` (the same count for all); `enter(i)` runs untimed before variant i's calls (warm-up and
 * batches). Returns each variant's per-call times, one per round, by the wall clock and by the process's
 * CPU time, in ms.
 * @param {(() => void)[]} steps one call of each variant
 * @param {{ rounds: number, batchMs: number, enter?: (variant: number) => void }} o
 */
export function interleave(steps, { rounds, batchMs, enter = () => {} }) {
  const calls = steps.map((step, i) => {
    enter(i);
    for (let w = 0; w < 3; w++) step();
    const t0 = performance.now();
    step();
    return Math.max(1, Math.round(batchMs / Math.max(performance.now() - t0, 1e-3)));
  });
  const n = Math.max(...calls);
  const wall = steps.map(() => /** @type {number[]} */ ([]));
  const cpu = steps.map(() => /** @type {number[]} */ ([]));
  for (let round = 0; round < rounds; round++) {
    for (let j = 0; j < steps.length; j++) {
      const i = (round + j) % steps.length;
      enter(i);
      const c0 = process.cpuUsage();
      const t0 = performance.now();
      for (let c = 0; c < n; c++) steps[i]();
      wall[i].push((performance.now() - t0) / n);
      const c = process.cpuUsage(c0);
      cpu[i].push((c.user + c.system) / 1000 / n);
    }
  }
  return { wall, cpu };
}

// ---------------------------------------------------------------------------------------------
// wasm-attention: a cache holding L tokens without attending them in (KVCache.append)

/**
 * A KVCache holding the given past K/V, head-major [kvHeads][L][headDim] (ORT's BNSH layout), stored with
 * KVCache.append (which takes token-major rows), so a decode benchmark needs no O(L²) prefill.
 * @param {any} pkg @param {Shape} s @param {string} dtype @param {number} maxTokens
 * @param {Float32Array} pastK @param {Float32Array} pastV @param {number} L @param {number} [layers] layers of the cache, each filled alike
 */
export function filledCache(pkg, s, dtype, maxTokens, pastK, pastV, L, layers = 1) {
  const cache = new pkg.KVCache({ layers, heads: s.heads, kvHeads: s.kvHeads, headDim: s.headDim, maxTokens, dtype });
  const k = tokenMajor(s, pastK, L),
    v = tokenMajor(s, pastV, L);
  // every layer its own pages (the same rows: what a step reads is where they lie, not what they hold)
  for (let layer = 0; layer < layers; layer++) cache.append(layer, k, v);
  return cache;
}

/** Head-major [kvHeads][L][headDim] rows as token-major [L][kvHeads][headDim]. @param {Shape} s @param {Float32Array} src @param {number} L */
function tokenMajor(s, src, L) {
  const { kvHeads, headDim } = s;
  const out = new Float32Array(kvHeads * L * headDim);
  for (let g = 0; g < kvHeads; g++) {
    for (let t = 0; t < L; t++) {
      out.set(src.subarray((g * L + t) * headDim, (g * L + t + 1) * headDim), (t * kvHeads + g) * headDim);
    }
  }
  return out;
}

/**
 * A batch of `count` conversations of `length` random tokens (strangers, or forks of one with `forks`) and
 * one random decode token each: the histories (one when forked) and the steps' q, k, v.
 * @param {Shape} shape @param {{ count: number, length: number, forks?: boolean }} w
 */
export function batchData(shape, { count, length, forks = false }) {
  const rng = new Rng(11);
  const kRow = shape.kvHeads * shape.headDim;
  const history = Array.from({ length: forks ? 1 : count }, () => ({
    k: rng.randn(length * kRow),
    v: rng.randn(length * kRow),
  }));
  const steps = Array.from({ length: count }, () => ({
    q: rng.randn(shape.heads * shape.headDim),
    k: rng.randn(kRow),
    v: rng.randn(kRow),
  }));
  return { history, steps };
}

/**
 * The caches of `batchData` on the kernel `init` gave last, and the two ways to run the decode step on all of
 * them, each returning its milliseconds by `clock` and taking the caches back to `length`: `lone` (one
 * attend per cache) and `batch` (one KVCache.attendMany).
 * @param {any} pkg @param {Shape} shape @param {ReturnType<typeof batchData>} data
 * @param {{ length: number, forks?: boolean, dtype?: string, clock?: () => number }} w
 */
export function batchRunners(
  pkg,
  shape,
  { history, steps },
  { length, forks = false, dtype = 'float32', clock = () => performance.now() },
) {
  const options = { heads: shape.heads, kvHeads: shape.kvHeads, headDim: shape.headDim, maxTokens: length + 1, dtype };
  const made = (/** @type {{ k: Float32Array, v: Float32Array }} */ h) => {
    const c = new pkg.KVCache(options);
    c.append(0, h.k, h.v);
    return c;
  };
  /** @type {any[]} */
  let caches;
  if (forks) {
    const base = made(history[0]);
    caches = steps.map(() => base.fork());
    base.dispose();
  } else caches = history.map(made);
  const outs = steps.map(() => new Float32Array(shape.heads * shape.headDim));
  const items = caches.map((cache, i) => ({ cache, ...steps[i], out: outs[i] }));
  const back = () => {
    for (const c of caches) c.truncate(length);
  };
  const lone = () => {
    const t = clock();
    for (let i = 0; i < caches.length; i++) caches[i].attend(0, steps[i].q, steps[i].k, steps[i].v, outs[i]);
    const ms = clock() - t;
    back();
    return ms;
  };
  const batch = () => {
    const t = clock();
    pkg.KVCache.attendMany(0, items);
    const ms = clock() - t;
    back();
    return ms;
  };
  return { caches, steps, outs, lone, batch };
}

// ---------------------------------------------------------------------------------------------
// Checks that gate: a wrong answer is never timed and ranked

/** Raised when an implementation's output is wrong; the bench stops instead of ranking it. */
export class WrongOutput extends Error {
  /** @param {string} message */
  constructor(message) {
    super(message);
    this.name = 'WrongOutput';
  }
}

/** Largest difference allowed: from the float64 reference (ours, per dtype), and between us and a peer. */
export const LIMITS = { float32: 1e-4, int8: 0.05, bfloat16: 0.01, int4: 0.4, peer: 1e-4 };

/**
 * Ours against the float64 reference on the last two queries of a workload (bottom-right causal
 * alignment lets the reference compute only those): throws WrongOutput past LIMITS[dtype]. Unit-normal
 * inputs keep outputs below ~1, so 1e-4 absolute sits at the suite's tolerance (test/support/util.ts TOL);
 * int8's 0.05 is its acceptance bound (test/int8.test.ts).
 * @param {string} label @param {Shape} s @param {Kind} kind @param {number} n @param {ReturnType<typeof workloadData>} x
 * @param {Float32Array} out our output of the workload @param {string} dtype
 */
export function checkAgainstFloat64(label, s, kind, n, x, out, dtype) {
  const row = s.heads * s.headDim;
  const rows = kind === 'decode' ? 1 : Math.min(2, n);
  const keys =
    kind === 'decode'
      ? {
          k: concat(tokenMajor(s, /** @type {Float32Array} */ (x.pastK), n), x.k),
          v: concat(tokenMajor(s, /** @type {Float32Array} */ (x.pastV), n), x.v),
        }
      : { k: x.k, v: x.v };
  const tail = (/** @type {Float32Array} */ a) => a.subarray(a.length - rows * row);
  const want = referenceAttention(tail(x.q), keys.k, keys.v, {
    heads: s.heads,
    kvHeads: s.kvHeads,
    headDim: s.headDim,
  });
  const diff = maxAbsDiff(tail(out), want);
  const limit = LIMITS[/** @type {'float32' | 'int8'} */ (dtype)];
  if (!(diff <= limit)) {
    throw new WrongOutput(
      `${label} ${kind} ${n} (${dtype}) is off the float64 reference by ${diff} > ${limit}: not timed, not ranked`,
    );
  }
}

/** @param {Float32Array} a @param {Float32Array} b */
function concat(a, b) {
  const out = new Float32Array(a.length + b.length);
  out.set(a);
  out.set(b, a.length);
  return out;
}

// ---------------------------------------------------------------------------------------------
// The implementations

/**
 * @typedef {{ shapes: string[], decode: number[], prefill: number[], dtypes: string[],
 *   warmup: number, minReps: number, minTime: number, maxTime: number }} SuiteOptions
 * @typedef {{ opts: SuiteOptions, log: (s: string) => void, pkg?: any, ort?: any,
 *   getModel?: (op: string, kind: Kind, shape: string) => Promise<Uint8Array>,
 *   runtime: string }} Ctx
 * @typedef {{ impl: string, runtime: string, shape: string, kind: Kind, n: number, dtype: string,
 *   medianMs: number, minMs: number, reps: number, gflops: number, gbps?: number, maxAbsDiff?: number,
 *   threads?: number }} Row (threads: what its job ran on, added when the jobs are gathered)
 */

/** @param {Row[]} rows @param {Omit<Row, 'gflops' | 'gbps'>} r */
function push(rows, r, /** @type {Ctx} */ ctx) {
  const s = SHAPES[/** @type {keyof typeof SHAPES} */ (r.shape)];
  const row = { ...r, gflops: flopsOf(s, r.kind, r.n) / r.medianMs / 1e6 };
  if (r.kind === 'decode') /** @type {any} */ (row).gbps = bytesOf(s, 'decode', r.n, r.dtype) / r.medianMs / 1e6;
  rows.push(row);
  const diff = r.maxAbsDiff !== undefined ? `  (max |Δ| vs wasm-attention ${r.maxAbsDiff.toExponential(1)})` : '';
  ctx.log(
    `  ${r.impl.padEnd(16)} ${r.shape.padEnd(6)} ${r.kind} ${String(r.n).padStart(5)} ${r.dtype.padEnd(7)} ${r.medianMs.toPrecision(3).padStart(7)} ms ${row.gflops.toFixed(1).padStart(6)} GFLOP/s${diff}`,
  );
}

/**
 * One workload on one cache (ours or plain JS): its output checked against float64 first, then timed.
 * `restore` puts the cache back as before the call (reset after a prefill, truncate after a decode step).
 * @param {Ctx} ctx @param {string} impl @param {string} shapeName @param {Kind} kind @param {number} n
 * @param {ReturnType<typeof workloadData>} x @param {string} dtype
 * @param {{ attend: (layer: number, q: Float32Array, k: Float32Array, v: Float32Array, out: Float32Array) => unknown }} cache
 * @param {() => void} restore @param {Row[]} rows
 */
async function checkedAndTimed(ctx, impl, shapeName, kind, n, x, dtype, cache, restore, rows) {
  const s = SHAPES[/** @type {keyof typeof SHAPES} */ (shapeName)];
  const out = new Float32Array(x.q.length);
  cache.attend(0, x.q, x.k, x.v, out);
  restore();
  checkAgainstFloat64(impl, s, kind, n, x, out, dtype);
  const r = await timeIt(() => cache.attend(0, x.q, x.k, x.v, out), restore, ctx.opts);
  push(rows, { impl, runtime: ctx.runtime, shape: shapeName, kind, n, dtype, ...r }, ctx);
}

/**
 * wasm-attention, one build (already init()ed in ctx.pkg), every dtype.
 * @param {string} build @param {Ctx} ctx @returns {Promise<Row[]>}
 */
export async function runWasm(build, ctx) {
  const { pkg, opts } = ctx;
  /** @type {Row[]} */
  const rows = [];
  for (const shapeName of opts.shapes) {
    const s = SHAPES[/** @type {keyof typeof SHAPES} */ (shapeName)];
    const base = { heads: s.heads, kvHeads: s.kvHeads, headDim: s.headDim };
    for (const T of opts.prefill) {
      const x = workloadData(shapeName, 'prefill', T);
      for (const dtype of opts.dtypes) {
        const cache = new pkg.KVCache({ ...base, maxTokens: T, dtype });
        await checkedAndTimed(ctx, build, shapeName, 'prefill', T, x, dtype, cache, () => cache.reset(), rows);
        cache.dispose();
      }
    }
    for (const L of opts.decode) {
      const x = workloadData(shapeName, 'decode', L);
      for (const dtype of opts.dtypes) {
        const cache = filledCache(
          pkg,
          s,
          dtype,
          L + 16,
          /** @type {Float32Array} */ (x.pastK),
          /** @type {Float32Array} */ (x.pastV),
          L,
        );
        await checkedAndTimed(ctx, build, shapeName, 'decode', L, x, dtype, cache, () => cache.truncate(L), rows);
        cache.dispose();
      }
    }
  }
  return rows;
}

/**
 * Bytes allocated on the JS heap per decode step (attend + truncate, Llama shape) after warm-up, at two
 * places: inside a page (L = 1000: the step writes a page it already has) and where a step takes a page (L =
 * 1024: position 1024 starts a page of 64 positions, taken by the step and given back by truncate; a decode
 * meets this once every 64 tokens per layer). Both are above the small-call size, so a threaded
 * implementation runs them across its threads. heapUsed (from `heapUsed()`) before and after 1000 and
 * 5000 steps, each kept only when no garbage collection ran in between (`gcCount()` counts them); bytes per
 * step = the slope between the two (a constant cost of reading the heap cancels), the least of up to eight
 * tries (the JIT's own allocations only ever add; a try that finds none ends them). A control loop that allocates one small typed-array view per
 * step shows the method sees allocations, and an empty loop shows its floor. Node only (the browser has no
 * exact heap counter).
 * @param {Ctx} ctx @param {() => number} heapUsed @param {() => Promise<number>} gcCount
 */
export async function allocationsPerStep(ctx, heapUsed, gcCount) {
  const { pkg } = ctx;
  const s = SHAPES.llama;
  const STEPS = [1000, 5000];
  const places = { inPage: 1000, pageTaking: 1024 };
  /** @type {Record<string, any>} */
  const res = { steps: STEPS, warmup: 10000, shape: 'llama', places };
  /** heapUsed growth over n steps with no GC in between (null if a GC ran in every attempt) */
  const grow = async (/** @type {() => void} */ step, /** @type {number} */ n) => {
    for (let attempt = 0; attempt < 5; attempt++) {
      const g0 = await gcCount();
      const h0 = heapUsed();
      for (let i = 0; i < n; i++) step();
      const h1 = heapUsed();
      const g1 = await gcCount();
      if (g1 === g0) return h1 - h0;
    }
    return null;
  };
  // bytes per step: the slope between two step counts (the heap reads themselves cost a constant)
  const measure = async (/** @type {() => void} */ step) => {
    for (let i = 0; i < res.warmup; i++) step(); // optimizing compilers done
    let least = null;
    // on a busy machine the optimizing compiler may still be at work after the warm-up (measured: ~45 B a
    // step for a further 10,000–30,000 steps, then none): more tries, until one finds no allocation
    for (let tries = 0; tries < 8 && !(least !== null && least < 0.5); tries++) {
      const a = await grow(step, STEPS[0]);
      const b = await grow(step, STEPS[1]);
      if (a === null || b === null) continue;
      const slope = Math.max(0, (b - a) / (STEPS[1] - STEPS[0]));
      least = least === null ? slope : Math.min(least, slope);
    }
    return least;
  };
  for (const [place, L] of Object.entries(places)) {
    const { q, k, v, pastK, pastV } = workloadData('llama', 'decode', L);
    const out = new Float32Array(q.length);
    res[place] = {};
    for (const dtype of ctx.opts.dtypes) {
      const cache = filledCache(
        pkg,
        s,
        dtype,
        L + 16,
        /** @type {Float32Array} */ (pastK),
        /** @type {Float32Array} */ (pastV),
        L,
      );
      res[place][dtype] = await measure(() => {
        cache.attend(0, q, k, v, out);
        cache.truncate(L);
      });
      cache.dispose();
    }
  }
  /** @type {any[]} */
  const keep = [];
  const view = new Float32Array(16);
  res.control = await measure(() => {
    keep.push(view.subarray(0, 4)); // one small allocation per step, kept alive
    if (keep.length > 100) keep.length = 0;
  });
  res.empty = await measure(() => {});
  return res;
}

/** The plain-JS baseline (float32 only: it has no int8 cache). @param {Ctx} ctx @returns {Promise<Row[]>} */
export async function runPlain(ctx) {
  const { opts } = ctx;
  /** @type {Row[]} */
  const rows = [];
  for (const shapeName of opts.shapes) {
    const s = SHAPES[/** @type {keyof typeof SHAPES} */ (shapeName)];
    const base = { heads: s.heads, kvHeads: s.kvHeads, headDim: s.headDim };
    for (const T of opts.prefill) {
      const cache = new PlainJsKVCache({ ...base, maxTokens: T });
      const x = workloadData(shapeName, 'prefill', T);
      await checkedAndTimed(ctx, 'plain', shapeName, 'prefill', T, x, 'float32', cache, () => cache.reset(), rows);
    }
    for (const L of opts.decode) {
      const x = workloadData(shapeName, 'decode', L);
      const maxTokens = L + 16;
      const cache = new PlainJsKVCache({ ...base, maxTokens });
      const d = s.headDim;
      for (let g = 0; g < s.kvHeads; g++) {
        cache.K[0].set(/** @type {Float32Array} */ (x.pastK).subarray(g * L * d, (g + 1) * L * d), g * maxTokens * d);
        cache.V[0].set(/** @type {Float32Array} */ (x.pastV).subarray(g * L * d, (g + 1) * L * d), g * maxTokens * d);
      }
      cache.lengths[0] = L;
      await checkedAndTimed(ctx, 'plain', shapeName, 'decode', L, x, 'float32', cache, () => cache.truncate(L), rows);
    }
  }
  return rows;
}

/**
 * onnxruntime (web: WASM backend; node: native CPU), both ops, one thread count (set up by the caller:
 * ort.env.wasm.numThreads for web). Fetches only the output. When ctx.pkg is given, checks each output
 * against wasm-attention's on the same inputs before timing it: a difference past LIMITS.peer (or ours off
 * float64) throws WrongOutput.
 * @param {'web' | 'node'} flavor @param {number | 'auto'} threads @param {Ctx} ctx @returns {Promise<Row[]>}
 */
export async function runOrt(flavor, threads, ctx) {
  const { ort, opts } = ctx;
  /** @type {Row[]} */
  const rows = [];
  const sessionOptions =
    flavor === 'web'
      ? { executionProviders: ['wasm'], graphOptimizationLevel: 'all' }
      : {
          executionProviders: ['cpu'],
          intraOpNumThreads: threads === 'auto' ? 0 : threads, // 0: onnxruntime picks
          interOpNumThreads: 1,
          executionMode: 'sequential',
          graphOptimizationLevel: 'all',
        };
  const { feeds } = await import('./ort/feeds.mjs');
  for (const shapeName of opts.shapes) {
    const s = SHAPES[/** @type {keyof typeof SHAPES} */ (shapeName)];
    for (const op of /** @type {('gqa' | 'mha')[]} */ (['gqa', 'mha'])) {
      const impl = `ort-${flavor}-${op}-${threads === 'auto' ? 'auto' : `${threads}t`}`;
      for (const kind of /** @type {Kind[]} */ (['prefill', 'decode'])) {
        const ns = kind === 'decode' ? opts.decode : opts.prefill;
        if (ns.length === 0) continue;
        const model = await /** @type {NonNullable<Ctx['getModel']>} */ (ctx.getModel)(op, kind, shapeName);
        const session = await ort.InferenceSession.create(model, sessionOptions);
        for (const n of ns) {
          const x = workloadData(shapeName, kind, n);
          const f = feeds(ort, op, s, x);
          // checked before timing: a peer that computes something else is not ranked
          const first = await session.run(f, ['output']);
          let maxAbsDiff;
          if (ctx.pkg) {
            maxAbsDiff = maxAbsDiffVsOurs(ctx, shapeName, kind, n, x, first.output.data);
            if (!(maxAbsDiff <= LIMITS.peer)) {
              throw new WrongOutput(
                `${impl} ${kind} ${n} differs from wasm-attention by ${maxAbsDiff} > ${LIMITS.peer}: not timed, not ranked`,
              );
            }
          }
          first.output.dispose?.();
          /** @type {any} */
          let last;
          const r = await timeIt(
            async () => {
              last = await session.run(f, ['output']);
            },
            undefined,
            opts,
          );
          push(
            rows,
            { impl, runtime: ctx.runtime, shape: shapeName, kind, n, dtype: 'float32', ...r, maxAbsDiff },
            ctx,
          );
          last.output.dispose?.();
        }
        await session.release?.();
      }
    }
  }
  return rows;
}

/** wasm-attention's output on the same inputs, compared with `got`. */
function maxAbsDiffVsOurs(
  /** @type {Ctx} */ ctx,
  /** @type {string} */ shapeName,
  /** @type {Kind} */ kind,
  /** @type {number} */ n,
  /** @type {any} */ x,
  /** @type {Float32Array} */ got,
) {
  const { pkg } = ctx;
  const s = SHAPES[/** @type {keyof typeof SHAPES} */ (shapeName)];
  const base = { heads: s.heads, kvHeads: s.kvHeads, headDim: s.headDim };
  const cache =
    kind === 'decode'
      ? filledCache(pkg, s, 'float32', n + 1, x.pastK, x.pastV, n)
      : new pkg.KVCache({ ...base, maxTokens: n });
  const ours = cache.attend(0, x.q, x.k, x.v);
  cache.dispose();
  checkAgainstFloat64('wasm-attention', s, kind, n, x, ours, 'float32');
  const m = maxAbsDiff(ours, got);
  return Number.isNaN(m) ? Infinity : m;
}
