#!/usr/bin/env node
// `npm start`: simulates autoregressive generation through an attention stack shaped like
// Llama-3.2-1B (16 layers, 32 query heads, 8 kv heads, head size 64, rope theta 500000) on
// deterministic synthetic q/k/v, and reports what the package buys:
//   - prefill time and tokens/s, per-token decode time (median, p90);
//   - the speed-up over the same generation in plain JavaScript (test/support/plain-js.mjs);
//   - the speed-up the KV cache gives over recomputing attention for the whole prefix each step;
//   - a correctness check of sampled outputs against a float64 reference (exit code 1 if > 1e-3).
//
// Synthetic data: a seeded pool of random q/k/v rows; each (layer, position) picks rows from the
// pool by a hash, and the query of layer l > 0 also adds layer l-1's output for that token (a
// stand-in for the residual stream), so every layer's output feeds the next one.

import {
  busyWarning,
  loadPackage,
  hash32,
  quantile,
  median,
  sum,
  cliOptions,
  progress,
  fmtMs,
  fmtX,
} from '../test/support/scripts.mjs';
import { PlainJsKVCache } from '../test/support/plain-js.mjs';
import { maxAbsDiff, referenceAttention, referenceRope } from '../test/support/reference.js';
import { Rng } from '../test/support/rng.js';

const DEFAULTS = {
  prompt: 512,
  steps: 256,
  layers: 16,
  heads: 32,
  kvHeads: 8,
  headDim: 64,
  theta: 500000,
  build: 'auto',
  threads: 'auto',
  seed: 1,
  pool: 256,
  jsLayers: 2,
  jsSteps: -1,
  recomputeEvery: 32,
  recomputeLayers: 1,
  tolerance: 1e-3,
  json: false,
};

const HELP = `Usage: node demo/generate.mjs [options]     (npm start -- [options])

Simulates autoregressive generation through a Llama-3.2-1B-shaped attention stack with
wasm-attention's KVCache, on deterministic synthetic q/k/v, and compares it with plain JavaScript
and with recomputing attention without a cache.

  --prompt N            prompt tokens, one prefill per layer            [${DEFAULTS.prompt}]
  --steps N             decode steps after the prompt                   [${DEFAULTS.steps}]
  --layers N            layers                                          [${DEFAULTS.layers}]
  --heads N             query heads                                     [${DEFAULTS.heads}]
  --kv-heads N          kv heads (grouped-query attention)              [${DEFAULTS.kvHeads}]
  --head-dim N          head size                                       [${DEFAULTS.headDim}]
  --theta X             rope theta (half-split rope on every head dim)  [${DEFAULTS.theta}]
  --build B             auto | relaxed-simd | simd | scalar             [${DEFAULTS.build}]
                        (relaxed-simd on Node 20 needs node --experimental-wasm-relaxed-simd)
  --threads T           auto | 1 … 64 (threads calls use, the calling one included) [${DEFAULTS.threads}]
  --seed N              seed of the synthetic data                      [${DEFAULTS.seed}]
  --pool N              random rows in the q/k/v pool                   [${DEFAULTS.pool}]
  --js-layers N         layers the plain-JS run covers (0: skip it);
                        its times are scaled to all layers               [${DEFAULTS.jsLayers}]
  --js-steps N          decode steps the plain-JS run covers (-1: all)  [all]
  --recompute-every N   time the no-cache recomputation every N-th step (0: skip) [${DEFAULTS.recomputeEvery}]
  --recompute-layers N  layers that recomputation is timed on, scaled up [${DEFAULTS.recomputeLayers}]
  --tolerance X         max abs error allowed against float64           [${DEFAULTS.tolerance}]
  --json                also print a JSON summary as the last line
  -h, --help            this text

Progress goes to stderr; the report to stdout. Exit code 1 if the check fails.`;

/** @param {string} msg */
function fail(msg) {
  console.error(`generate: ${msg}`);
  process.exit(2);
}

const opts = cliOptions(DEFAULTS, HELP, 'generate');
const { prompt: P, steps: N, layers: L, heads: H, kvHeads: KV, headDim: D, theta } = opts;
for (const [name, v, min] of /** @type {[string, number, number][]} */ ([
  ['prompt', P, 1],
  ['steps', N, 0],
  ['layers', L, 1],
  ['heads', H, 1],
  ['kv-heads', KV, 1],
  ['head-dim', D, 2],
  ['pool', opts.pool, 1],
  ['js-layers', opts.jsLayers, 0],
  ['recompute-every', opts.recomputeEvery, 0],
  ['recompute-layers', opts.recomputeLayers, 1],
])) {
  if (!Number.isInteger(v) || v < min) fail(`--${name} must be an integer >= ${min}, got ${v}`);
}
if (H % KV !== 0) fail(`--heads (${H}) must be a multiple of --kv-heads (${KV})`);
if (D % 2 !== 0) fail(`--head-dim must be even for rope, got ${D}`);
if (!['auto', 'relaxed-simd', 'simd', 'scalar'].includes(opts.build))
  fail(`--build must be auto, relaxed-simd, simd or scalar`);
const threads = opts.threads === 'auto' ? 'auto' : Number(opts.threads);
if (threads !== 'auto' && !(Number.isInteger(threads) && threads >= 1))
  fail(`--threads must be auto or an integer >= 1, got ${opts.threads}`);
const jsLayers = Math.min(opts.jsLayers, L);
const jsSteps = opts.jsSteps < 0 ? N : Math.min(opts.jsSteps, N);
const recLayers = Math.min(opts.recomputeLayers, L);
const TOTAL = P + N;
const QROW = H * D;
const KROW = KV * D;
const rope = { theta, interleaved: false };

// ---------------------------------------------------------------------------------------------
// synthetic data

const rng = new Rng(opts.seed);
const POOL = opts.pool;
const poolQ = rng.randn(POOL * QROW);
const poolK = rng.randn(POOL * KROW);
const poolV = rng.randn(POOL * KROW);
/** @param {number} kind 0 q, 1 k, 2 v @param {number} layer @param {number} pos */
const pick = (kind, layer, pos) => hash32(opts.seed, kind, layer, pos) % POOL;

/**
 * Raw (un-rotated) rows of tokens pos0 .. pos0+T-1 of one layer, token-major.
 * @param {0|1|2} kind
 * @param {number} layer
 * @param {number} pos0
 * @param {number} T
 * @param {Float32Array} [dst]
 */
function rows(kind, layer, pos0, T, dst) {
  const pool = kind === 0 ? poolQ : kind === 1 ? poolK : poolV;
  const size = kind === 0 ? QROW : KROW;
  dst ??= new Float32Array(T * size);
  for (let t = 0; t < T; t++) {
    const r = pick(kind, layer, pos0 + t);
    dst.set(pool.subarray(r * size, (r + 1) * size), t * size);
  }
  return dst;
}

// which outputs the correctness check samples: a few layers × a few positions
const checkLayers = [...new Set([0, Math.floor(L / 2), L - 1])];
const checkPositions = [...new Set([0, P >> 1, P - 1, ...(N > 0 ? [P, P + (N >> 1), P + N - 1] : [])])];

/**
 * Runs a whole generation (prefill, then decode steps) through `cache` on layers 0..layers-1.
 * Returns the time of each prefill attend and each decode step (summed over layers), and the
 * q rows and outputs at the checked positions.
 * @param {{ attend(layer: number, q: Float32Array, k: Float32Array, v: Float32Array, out?: Float32Array): Float32Array }} cache
 * @param {number} layers
 * @param {number} steps
 * @param {string} label
 */
function generate(cache, layers, steps, label) {
  /** @type {Map<string, { q: Float32Array, out: Float32Array }>} */
  const samples = new Map();
  const record = (
    /** @type {number} */ layer,
    /** @type {number} */ pos,
    /** @type {Float32Array} */ q,
    /** @type {Float32Array} */ out,
    /** @type {number} */ t,
  ) => {
    if (checkLayers.includes(layer) && checkPositions.includes(pos)) {
      samples.set(`${layer}:${pos}`, {
        q: q.slice(t * QROW, (t + 1) * QROW),
        out: out.slice(t * QROW, (t + 1) * QROW),
      });
    }
  };

  // prefill: one attend of P tokens per layer
  const qP = new Float32Array(P * QROW);
  const kP = new Float32Array(P * KROW);
  const vP = new Float32Array(P * KROW);
  let prev = new Float32Array(P * QROW);
  let cur = new Float32Array(P * QROW);
  const prefillMs = [];
  let bar = progress(`${label} prefill`, layers);
  for (let l = 0; l < layers; l++) {
    rows(0, l, 0, P, qP);
    if (l > 0) for (let i = 0; i < qP.length; i++) qP[i] += prev[i];
    rows(1, l, 0, P, kP);
    rows(2, l, 0, P, vP);
    const t0 = performance.now();
    cache.attend(l, qP, kP, vP, cur);
    prefillMs.push(performance.now() - t0);
    for (const pos of checkPositions) if (pos < P) record(l, pos, qP, cur, pos);
    [prev, cur] = [cur, prev];
    bar.update(l + 1);
  }
  bar.done();

  // decode: one token per step through every layer
  const q1 = new Float32Array(QROW);
  const k1 = new Float32Array(KROW);
  const v1 = new Float32Array(KROW);
  let prev1 = new Float32Array(QROW);
  let cur1 = new Float32Array(QROW);
  const decodeMs = [];
  bar = progress(`${label} decode`, steps);
  for (let s = 0; s < steps; s++) {
    const pos = P + s;
    let ms = 0;
    for (let l = 0; l < layers; l++) {
      rows(0, l, pos, 1, q1);
      if (l > 0) for (let i = 0; i < QROW; i++) q1[i] += prev1[i];
      rows(1, l, pos, 1, k1);
      rows(2, l, pos, 1, v1);
      const t0 = performance.now();
      cache.attend(l, q1, k1, v1, cur1);
      ms += performance.now() - t0;
      record(l, pos, q1, cur1, 0);
      [prev1, cur1] = [cur1, prev1];
    }
    decodeMs.push(ms);
    bar.update(s + 1);
  }
  bar.done();
  return { prefillMs, decodeMs, samples };
}

// ---------------------------------------------------------------------------------------------
// run

let pkg;
try {
  pkg = await loadPackage();
} catch (e) {
  fail(/** @type {Error} */ (e).message);
}
let info;
try {
  info = await pkg.init({ build: opts.build, threads });
} catch (e) {
  fail(
    `init({ build: '${opts.build}', threads: ${JSON.stringify(threads)} }) failed: ${/** @type {Error} */ (e).message}`,
  );
}

// 0. plain JavaScript first, before any KVCache exists: V8's typed-array code in a process runs
// slower once a WebAssembly.Memory has grown (its old ArrayBuffer is detached; see bench/FINDINGS.md),
// and the baseline should be what a user without WebAssembly gets.
/** @type {ReturnType<typeof generate> | null} */
let plain = null;
if (jsLayers > 0) {
  const jsCache = new PlainJsKVCache({ layers: jsLayers, heads: H, kvHeads: KV, headDim: D, maxTokens: TOTAL, rope });
  plain = generate(jsCache, jsLayers, jsSteps, 'plain JS');
}

const out = console.log;
out(`wasm-attention: generation through a Llama-3.2-1B-shaped attention stack`);
out(`  shape    ${L} layers, ${H} query heads / ${KV} kv heads, head size ${D}, rope theta ${theta} (half-split)`);
out(`  work     prompt ${P} tokens (one prefill per layer), then ${N} decode steps (positions ${P}..${TOTAL - 1})`);
out(`  data     synthetic, seed ${opts.seed}: q/k/v rows picked from a pool of ${POOL} random rows per kind;`);
out(`           each layer's q also adds the previous layer's output`);
out(`  build    ${info.build}  (asked for '${opts.build}'; Node ${process.version}, ${process.arch})`);
out(`  threads  ${info.threads}  (asked for ${JSON.stringify(threads)}; --threads 1 for one)`);
out('');

// 1. our package
const cache = new pkg.KVCache({ layers: L, heads: H, kvHeads: KV, headDim: D, maxTokens: TOTAL, rope });
const ours = generate(cache, L, N, 'wasm-attention');
const prefillOurs = sum(ours.prefillMs);
const flopsPrefill = 4 * D * H * ((P * (P + 1)) / 2) * L;
out(`wasm-attention (${info.build}, ${info.threads} thread${info.threads > 1 ? 's' : ''})`);
out(
  `  prefill  ${P} tokens × ${L} layers: ${fmtMs(prefillOurs)} ms, ${Math.round((P / prefillOurs) * 1000)} tokens/s  (${((flopsPrefill / prefillOurs) * 1e-6).toFixed(1)} GFLOP/s)`,
);
if (N > 0) {
  const med = median(ours.decodeMs);
  const avgPos = P + (N - 1) / 2;
  out(
    `  decode   per token (all ${L} layers): median ${fmtMs(med)} ms, p90 ${fmtMs(quantile(ours.decodeMs, 0.9))} ms, ` +
      `${Math.round(1000 / med)} tokens/s  (${(((4 * D * H * (avgPos + 1) * L) / med) * 1e-6).toFixed(1)} GFLOP/s at the median)`,
  );
}
out(`  memory   cache ${(cache.byteLength / 2 ** 20).toFixed(1)} MiB for ${TOTAL} tokens`);
out('');

// 2. plain JavaScript, on jsLayers of the L identical layers
/** @type {Record<string, number>} */
const summary = {
  build: info.build,
  threads: info.threads,
  prefillMs: prefillOurs,
  prefillTokensPerSec: (P / prefillOurs) * 1000,
};
if (N > 0) {
  summary.decodeMedianMs = median(ours.decodeMs);
  summary.decodeP90Ms = quantile(ours.decodeMs, 0.9);
}
if (plain) {
  const scale = L / jsLayers;
  // compare per layer, at equal positions: ours over the same layers and steps
  const jsPrefill = sum(plain.prefillMs) * scale;
  const oursPrefillSame = sum(ours.prefillMs.slice(0, jsLayers)) * scale;
  out(
    `plain JavaScript (test/support/plain-js.mjs), measured on ${jsLayers} of the ${L} layers (all layers have the same shape)`,
  );
  out(
    `  over the full prompt and ${jsSteps === N ? `all ${N}` : `the first ${jsSteps} of ${N}`} decode steps; times below are ×${fmtX(scale)} to stand for all ${L} layers`,
  );
  out(
    `  prefill  ${fmtMs(jsPrefill)} ms, ${Math.round((P / jsPrefill) * 1000)} tokens/s` +
      `   -> wasm-attention is ${fmtX(jsPrefill / prefillOurs)}× faster (${fmtX(jsPrefill / oursPrefillSame)}× on the same ${jsLayers} layer${jsLayers > 1 ? 's' : ''})`,
  );
  summary.plainPrefillMs = jsPrefill;
  summary.prefillSpeedup = jsPrefill / prefillOurs;
  if (jsSteps > 0) {
    const jsTok = plain.decodeMs.map((ms) => ms * scale);
    const oursTok = ours.decodeMs.slice(0, jsSteps);
    const jsMed = median(jsTok);
    out(
      `  decode   per token: median ${fmtMs(jsMed)} ms, p90 ${fmtMs(quantile(jsTok, 0.9))} ms, ${(1000 / jsMed).toFixed(1)} tokens/s` +
        `   -> wasm-attention is ${fmtX(jsMed / median(oursTok))}× faster (median over the same ${jsSteps} steps)`,
    );
    summary.plainDecodeMedianMs = jsMed;
    summary.decodeSpeedup = jsMed / median(oursTok);
  }
  out('');
}

// 3. KV cache vs recomputing attention over the whole prefix at every step (no cache)
if (opts.recomputeEvery > 0 && N > 0) {
  const sampleSteps = [];
  for (let s = 0; s < N; s += opts.recomputeEvery) sampleSteps.push(s);
  const scale = L / recLayers;
  out(`KV cache vs no cache: without a cache every step recomputes causal attention for all its tokens`);
  out(
    `  (one-shot attention(), T = S = position + 1), timed (best of 2) on ${recLayers} of ${L} layers ×${fmtX(scale)}, every ${opts.recomputeEvery} steps;`,
  );
  out(
    `  cached = median decode step within ±4 steps. Attention only: a real model without a cache would also recompute every projection and MLP.`,
  );
  out(`    step  position   cached ms/token   recompute ms/token   speed-up`);
  const bar = progress('recompute (no cache)', sampleSteps.length);
  const ratios = [];
  const q = new Float32Array(TOTAL * QROW);
  const k = new Float32Array(TOTAL * KROW);
  const v = new Float32Array(TOTAL * KROW);
  const o = new Float32Array(TOTAL * QROW);
  const lines = [];
  for (let i = 0; i < sampleSteps.length; i++) {
    const s = sampleSteps[i];
    const S = P + s + 1;
    let ms = 0;
    for (let l = 0; l < recLayers; l++) {
      const qs = rows(0, l, 0, S, q.subarray(0, S * QROW));
      const ks = rows(1, l, 0, S, k.subarray(0, S * KROW));
      const vs = rows(2, l, 0, S, v.subarray(0, S * KROW));
      let best = Infinity; // the faster of two runs: one run is easily disturbed
      for (let rep = 0; rep < 2; rep++) {
        const t0 = performance.now();
        pkg.attention(qs, ks, vs, { heads: H, kvHeads: KV, headDim: D, causal: true }, o.subarray(0, S * QROW));
        best = Math.min(best, performance.now() - t0);
      }
      ms += best;
    }
    ms *= scale;
    // the cached step's time: median of the measured steps within ±4 of it (one step is noisy)
    const cached = median(ours.decodeMs.slice(Math.max(0, s - 4), s + 5));
    ratios.push(ms / cached);
    lines.push(
      `  ${String(s).padStart(6)}  ${String(P + s).padStart(8)}   ${fmtMs(cached).padStart(15)}   ${fmtMs(ms).padStart(18)}   ${fmtX(ms / cached).padStart(7)}×`,
    );
    bar.update(i + 1);
  }
  bar.done();
  for (const line of lines) out(line);
  out(
    `  -> the KV cache makes a decode step ${fmtX(median(ratios))}× faster (median over ${ratios.length} sampled steps)`,
  );
  summary.cacheSpeedup = median(ratios);
  out('');
}

// 4. correctness: sampled outputs against a float64 reference
{
  let worst = 0;
  let worstAt = '';
  let worstJs = 0;
  let count = 0;
  let countJs = 0;
  const bar = progress('float64 check', checkLayers.length);
  for (let li = 0; li < checkLayers.length; li++) {
    const l = checkLayers[li];
    const maxPos = Math.max(...checkPositions.filter((p) => p < TOTAL));
    const kRot = referenceRope(
      rows(1, l, 0, maxPos + 1),
      maxPos + 1,
      KV,
      D,
      Array.from({ length: maxPos + 1 }, (_, p) => p),
      rope,
    );
    const vRaw = rows(2, l, 0, maxPos + 1);
    for (const pos of checkPositions) {
      for (const [run, isJs] of /** @type {[ReturnType<typeof generate> | null, boolean][]} */ ([
        [ours, false],
        [plain, true],
      ])) {
        const smp = run?.samples.get(`${l}:${pos}`);
        if (!smp) continue;
        const ref = referenceAttention(
          referenceRope(smp.q, 1, H, D, [pos], rope),
          kRot.subarray(0, (pos + 1) * KROW),
          vRaw.subarray(0, (pos + 1) * KROW),
          { heads: H, kvHeads: KV, headDim: D },
        );
        const err = maxAbsDiff(smp.out, ref);
        if (isJs) {
          countJs++;
          if (!(err <= worstJs)) worstJs = err;
        } else {
          count++;
          if (!(err <= worst)) {
            worst = err;
            worstAt = `layer ${l}, position ${pos}`;
          }
        }
      }
    }
    bar.update(li + 1);
  }
  bar.done();
  const ok = count > 0 && worst <= opts.tolerance;
  out(
    `correctness: ${count} sampled outputs (layers ${checkLayers.join(', ')} × positions ${checkPositions.join(', ')}, ${H}×${D} numbers each)`,
  );
  out(`  against a float64 reference (test/support/reference.js, rope and softmax in double precision):`);
  out(
    `  wasm-attention max abs error ${worst.toExponential(2)}${worstAt ? ` (at ${worstAt})` : ''}, limit ${opts.tolerance}: ${ok ? 'OK' : 'FAIL'}`,
  );
  if (countJs > 0)
    out(`  plain JS       max abs error ${worstJs.toExponential(2)} over ${countJs} of the same samples`);
  summary.maxAbsError = worst;
  const busy = busyWarning();
  if (busy) out(`\n${busy}`);
  if (opts.json) out(JSON.stringify(summary));
  cache.dispose?.();
  if (!ok) process.exitCode = 1;
}
