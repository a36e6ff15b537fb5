#!/usr/bin/env node
// `npm run bench:model`: the model runner of examples/model on the tiny model of examples/model/tiny.
//   1. generation tokens/s of the runner with this package's KVCache against the same runner with a
//      plain-JS attention (test/support/plain-js.mjs), and the share of a token's time spent in attention at
//      contexts 64, 256 and 512 (past the model's trained context of 256 the numbers are still right
//      for timing; the text would not be);
//   2. greedy decoding with the runner's WebAssembly matmuls against its JavaScript ones (matmul.mjs, the
//      same tokens); prompt-lookup decoding against plain greedy decoding, on a repetitive prompt and on
//      prose, and the cost of a forward pass of T tokens in lone decode steps (what bounds what lookup
//      can save);
//   3. 8 conversations decoded together (generateMany: each layer's linear layers over the 8 rows at once
//      and one KVCache.attendMany) against the same 8 decoded one after another (generate).
// Each variant of part 1 runs in its own process (a grown WebAssembly memory slows V8's typed-array code
// in the whole process; see bench/FINDINGS.md), alternating over rounds; part 2 interleaves greedy and
// lookup runs in one process. Medians over rounds, with min–max spreads; for part 2 also per second of the
// process's CPU time, which a busy machine disturbs less (with --threads 1, no worker's CPU counts).
//
//   node bench/model.mjs [--rounds 5] [--steps 32] [--tokens 128] [--threads auto|N] [--json]
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { loadModel } from '../examples/model/index.mjs';
import { LOOKUP_DEFAULTS, draftByLookup } from '../examples/model/lookup.mjs';
import { busyWarning, cliOptions, fmtX, median } from '../test/support/scripts.mjs';
import { PlainJsKVCache } from '../test/support/plain-js.mjs';

const DEFAULTS = { rounds: 5, steps: 32, tokens: 128, threads: 'auto', json: false, child: '' };
const HELP = `Usage: node bench/model.mjs [options]     (npm run bench:model -- [options])

The model runner (examples/model) on examples/model/tiny: this package's attention against plain JS,
attention's share of a token at contexts 64, 256 and 512, and prompt-lookup against greedy decoding.

  --rounds N      rounds (each variant once per round, in its own process)   [${DEFAULTS.rounds}]
  --steps N       decode steps timed at each context                          [${DEFAULTS.steps}]
  --tokens N      tokens generated per run                                     [${DEFAULTS.tokens}]
  --threads T     auto | N: threads of the attention kernel                    [${DEFAULTS.threads}]
  --json          also print a JSON summary as the last line
  -h, --help      this text

TINY_MODEL_DIR may name another model folder of the same layout.`;

const opts = cliOptions(DEFAULTS, HELP, 'bench/model');
const dir = process.env.TINY_MODEL_DIR ?? fileURLToPath(new URL('../examples/model/tiny', import.meta.url));
const reference = JSON.parse(readFileSync(`${dir}/reference.json`, 'utf8'));
const heldOut = /** @type {number[]} */ (reference.logits.ids);
const CONTEXTS = [64, 256, 512];
const threads = opts.threads === 'auto' ? 'auto' : Number(opts.threads);

/** The first n tokens of the held-out text, repeated as needed. @param {number} n */
const text = (n) => Array.from({ length: n }, (_, i) => heldOut[i % heldOut.length]);

/** Decode tokens/s of one generate call: from its first token to its last (the prompt's prefill excluded). */
async function decodeRate(
  /** @type {Awaited<ReturnType<typeof loadModel>>} */ model,
  /** @type {number[]} */ ids,
  /** @type {Record<string, any>} */ options,
) {
  let first = 0;
  let firstCpu = process.cpuUsage();
  let count = 0;
  const stats = { forwards: 0, drafted: 0, accepted: 0, passes: /** @type {number[]} */ ([]) };
  await model.generate(ids, {
    maxNewTokens: opts.tokens,
    ...options,
    stats,
    onToken: () => {
      if (count++ === 0) {
        first = performance.now();
        firstCpu = process.cpuUsage();
      }
    },
  });
  const cpu = process.cpuUsage(firstCpu);
  return {
    tokensPerSec: ((count - 1) / (performance.now() - first)) * 1000,
    // per second of this process's CPU time: what a machine with a free core would show
    cpuTokensPerSec: ((count - 1) / (cpu.user + cpu.system)) * 1e6,
    stats,
  };
}

/** Part 1 in a child process: one variant's generation rate and per-context step times. @param {'wasm' | 'plain'} variant */
async function runVariant(variant) {
  const model = await loadModel(dir, {
    maxTokens: Math.max(...CONTEXTS) + opts.steps + 1,
    threads,
    ...(variant === 'plain' ? { cacheClass: PlainJsKVCache } : {}),
  });
  await decodeRate(model, text(64), {}); // warm-up: the JIT compiles the runner
  const generation = await decodeRate(model, text(64), {});
  /** @type {Record<number, { msPerToken: number, attentionMs: number }>} */
  const contexts = {};
  const logits = new Float32Array(model.config.vocab_size);
  for (const context of CONTEXTS) {
    const cache = model.createCache({ maxTokens: context + opts.steps });
    const ids = text(context + opts.steps);
    model.feed(cache, ids, 0, context, null, 0);
    model.attentionMs = 0;
    model.timeAttention = true;
    const t0 = performance.now();
    for (let s = 0; s < opts.steps; s++) model.feed(cache, ids, context + s, 1, logits, 1);
    const ms = performance.now() - t0;
    model.timeAttention = false;
    contexts[context] = { msPerToken: ms / opts.steps, attentionMs: model.attentionMs / opts.steps };
    cache.dispose?.();
  }
  return { build: model.info.build, threads: model.info.threads, generation: generation.tokensPerSec, contexts };
}

/** Part 2 in a child process: greedy and lookup, interleaved, on two prompts. */
async function runLookup() {
  const model = await loadModel(dir, { threads });
  const jsModel = await loadModel(dir, { threads, matmul: 'js' }); // the same runner, matmuls in JavaScript
  // repetitive: a passage of the held-out text three times over (the model may copy it on); prose: the
  // held-out text as it is
  const passage = heldOut.slice(1, 41);
  const prompts = {
    repetitive: [heldOut[0], ...passage, ...passage, ...passage],
    prose: text(100),
  };
  /** @type {Record<string, any>} */
  const results = { matmul: model.info.matmul };
  for (const [name, ids] of Object.entries(prompts)) {
    await decodeRate(model, ids, { lookup: true }); // warm-up
    await decodeRate(jsModel, ids, {});
    const r = {
      greedyJs: /** @type {number[]} */ ([]),
      greedyJsCpu: /** @type {number[]} */ ([]),
      greedy: /** @type {number[]} */ ([]),
      lookup: /** @type {number[]} */ ([]),
      greedyCpu: /** @type {number[]} */ ([]),
      lookupCpu: /** @type {number[]} */ ([]),
      accepted: 0,
      drafted: 0,
      forwards: 0,
      passes: /** @type {number[][]} */ ([]),
    };
    for (let i = 0; i < 3; i++) {
      const js = await decodeRate(jsModel, ids, {});
      r.greedyJs.push(js.tokensPerSec);
      r.greedyJsCpu.push(js.cpuTokensPerSec);
      const plain = await decodeRate(model, ids, {});
      r.greedy.push(plain.tokensPerSec);
      r.greedyCpu.push(plain.cpuTokensPerSec);
      const looked = await decodeRate(model, ids, { lookup: true });
      r.lookup.push(looked.tokensPerSec);
      r.lookupCpu.push(looked.cpuTokensPerSec);
      Object.assign(r, {
        accepted: looked.stats.accepted,
        drafted: looked.stats.drafted,
        forwards: looked.stats.forwards,
      });
      r.passes.push(looked.stats.passes);
    }
    results[name] = {
      ...r,
      clairvoyant: clairvoyantPasses(ids, await model.generate(ids, { maxNewTokens: opts.tokens })),
    };
  }
  const cost = passCost(model);
  for (const name of Object.keys(prompts)) {
    results[name].priced = results[name].passes.map((/** @type {number[]} */ p) => pricedRatio(p, cost));
    results[name].clairvoyant = pricedRatio(results[name].clairvoyant, cost);
    results[name].passes = results[name].passes.at(-1);
  }
  return { ...results, passCost: cost };
}

/**
 * The passes of a lookup run whose draft lengths knew the future: each of the runner's drafts
 * (draftByLookup with the default options) cut to the tokens greedy decoding then writes, so no drafted
 * token is ever rejected and none is held back. Priced (pricedRatio), what a perfect draft-length policy
 * would reach with these drafts at these pass costs.
 * @param {number[]} prompt @param {number[]} generated greedy decoding's tokens after it
 * @returns {number[]} token counts of the passes after the prompt's (its first token comes with the prompt)
 */
function clairvoyantPasses(prompt, generated) {
  const all = [...prompt, ...generated];
  const passes = [];
  for (let at = prompt.length + 1; at < all.length; ) {
    const draft = draftByLookup(
      all.slice(0, at),
      LOOKUP_DEFAULTS,
      Math.min(LOOKUP_DEFAULTS.maxDraft, all.length - at - 1),
    );
    let kept = 0;
    while (kept < draft.length && draft[kept] === all[at + kept]) kept++;
    passes.push(kept + 1);
    at += kept + 1;
  }
  return passes;
}

/** Token counts of a verification pass (the next token and its drafts) whose cost part 2 reports. */
const PASS_TOKENS = [1, 2, 3, 4, 8, 13];
/** Every token count a lookup pass may have (the default maxDraft of 12, plus the next token), timed too. */
const ALL_PASS_TOKENS = Array.from({ length: 13 }, (_, i) => i + 1);

/**
 * What a forward pass of T tokens costs, in µs of the process's CPU time (steadier than the clock on a busy
 * machine), at a context of 64 (the same tokens, truncated after each pass): the bound on what verifying
 * drafts can save. Token counts interleaved, medians of 25.
 * @param {Awaited<ReturnType<typeof loadModel>>} model
 * @returns {Record<number, number>}
 */
function passCost(model) {
  const ids = text(64 + Math.max(...ALL_PASS_TOKENS));
  const cache = model.createCache({ maxTokens: ids.length });
  const logits = new Float32Array(Math.max(...ALL_PASS_TOKENS) * model.config.vocab_size);
  model.feed(cache, ids, 0, 64, null, 0);
  /** @type {Record<number, number[]>} */
  const times = Object.fromEntries(ALL_PASS_TOKENS.map((T) => [T, []]));
  for (let round = 0; round < 27; round++) {
    for (const T of ALL_PASS_TOKENS) {
      const cpu0 = process.cpuUsage();
      model.feed(cache, ids, 64, T, logits, T);
      const cpu = process.cpuUsage(cpu0);
      if (round >= 2) times[T].push(cpu.user + cpu.system); // two rounds of warm-up
      cache.truncate(64);
    }
  }
  cache.dispose?.();
  return Object.fromEntries(ALL_PASS_TOKENS.map((T) => [T, median(times[T])]));
}

/**
 * Lookup against greedy as the passes a lookup run made, priced at the pass costs measured (`passCost`,
 * in lone steps): greedy's tokens − 1 lone steps over the sum of the passes' costs. The clock of a busy
 * machine scatters a run's ratio widely; this one moves only with the drafting and the pass costs.
 * @param {number[]} passes token counts of a lookup run's passes after the prompt's
 * @param {Record<number, number>} cost µs of a pass of T tokens
 */
function pricedRatio(passes, cost) {
  const steps = passes.reduce((sum, T) => sum + cost[T] / cost[1], 0);
  return (opts.tokens - 1) / steps;
}

/** Part 3 in a child process: 8 conversations together and one after another, interleaved. */
async function runBatch() {
  const model = await loadModel(dir, { threads });
  const prompts = Array.from({ length: 8 }, (_, i) => text(64 + 8 * i).slice(8 * i));
  const together = () => {
    const t0 = performance.now();
    model.generateMany(prompts, { maxNewTokens: opts.tokens });
    return performance.now() - t0;
  };
  const alone = async () => {
    const t0 = performance.now();
    for (const p of prompts) await model.generate(p, { maxNewTokens: opts.tokens });
    return performance.now() - t0;
  };
  // the same tokens either way (greedy): checked once, then timed
  /** @type {number[][]} */
  const want = [];
  for (const p of prompts) want.push(await model.generate(p, { maxNewTokens: 16 }));
  const got = model.generateMany(prompts, { maxNewTokens: 16 });
  const same = got.every((g, i) => g.join() === want[i].join());
  together();
  await alone();
  const r = { together: /** @type {number[]} */ ([]), alone: /** @type {number[]} */ ([]), same };
  for (let i = 0; i < 3; i++) {
    // tokens/s over the whole runs (8 prompts' prefill included on both sides)
    r.alone.push((8 * opts.tokens * 1000) / (await alone()));
    r.together.push((8 * opts.tokens * 1000) / together());
  }
  return r;
}

if (opts.child) {
  const result =
    opts.child === 'lookup'
      ? await runLookup()
      : opts.child === 'batch'
        ? await runBatch()
        : await runVariant(/** @type {'wasm' | 'plain'} */ (opts.child));
  console.log(JSON.stringify(result));
  process.exit(0);
}

/** Runs this script as a child doing one part. @param {string} child */
function spawnChild(child) {
  const run = spawnSync(
    process.execPath,
    [
      fileURLToPath(import.meta.url),
      '--child',
      child,
      '--steps',
      String(opts.steps),
      '--tokens',
      String(opts.tokens),
      '--threads',
      String(opts.threads),
    ],
    { encoding: 'utf8', env: process.env },
  );
  if (run.status !== 0) throw new Error(`bench/model: the ${child} child failed:\n${run.stderr}`);
  return JSON.parse(run.stdout.trim().split('\n').at(-1) ?? '');
}

/** median and min–max of a list, formatted. @param {number[]} xs @param {(x: number) => string} f */
const spread = (xs, f) => `${f(median(xs))} (${f(Math.min(...xs))}–${f(Math.max(...xs))})`;
const out = console.log;

/** @type {{ wasm: any[], plain: any[] }} */
const runs = { wasm: [], plain: [] };
for (let round = 0; round < opts.rounds; round++) {
  for (const variant of /** @type {const} */ (['wasm', 'plain'])) {
    process.stderr.write(`  round ${round + 1}/${opts.rounds}: ${variant}\r`);
    runs[variant].push(spawnChild(variant));
  }
}
process.stderr.write('\x1b[K');
/** @type {any[]} */
const lookupRuns = [];
for (let round = 0; round < Math.max(1, Math.ceil(opts.rounds / 2)); round++) {
  process.stderr.write(`  lookup round ${round + 1}\r`);
  lookupRuns.push(spawnChild('lookup'));
}
process.stderr.write('\x1b[K');
const batchRuns = [];
for (let round = 0; round < Math.max(1, Math.ceil(opts.rounds / 2)); round++) {
  process.stderr.write(`  batch round ${round + 1}\r`);
  batchRuns.push(spawnChild('batch'));
}
process.stderr.write('\x1b[K');

const config = JSON.parse(readFileSync(`${dir}/config.json`, 'utf8'));
const w = runs.wasm[0];
out(`wasm-attention: the model runner (examples/model) on examples/model/tiny`);
out(
  `  model    ${config.num_hidden_layers} layers, ${config.num_attention_heads}/${config.num_key_value_heads} heads of ${config.head_dim}, hidden ${config.hidden_size}, MLP ${config.intermediate_size}, vocabulary ${config.vocab_size}`,
);
out(
  `  build    ${w.build}, ${w.threads} thread${w.threads > 1 ? 's' : ''}; Node ${process.version}; ${opts.rounds} rounds, each variant in its own process`,
);
out('');
const tok = (/** @type {number} */ x) => x.toFixed(0);
const gen = (/** @type {'wasm' | 'plain'} */ v) => runs[v].map((r) => r.generation);
const ratio = runs.wasm.map((r, i) => r.generation / runs.plain[i].generation);
out(`generation, greedy, ${opts.tokens} tokens after a 64-token prompt (decode tokens/s, median (min–max))`);
out(`  runner + wasm-attention   ${spread(gen('wasm'), tok)}`);
out(`  runner + plain-JS attention ${spread(gen('plain'), tok)}`);
out(`  -> ${fmtX(median(ratio))}× (per-round ratios ${fmtX(Math.min(...ratio))}–${fmtX(Math.max(...ratio))})`);
out('');
out(`one decode step at a context of C tokens: ms per token, and the share of it spent in attention`);
out(`      C   wasm-attention ms  attention share   plain JS ms  attention share   speed-up`);
/** @type {Record<string, any>} */
const summary = {
  generation: { wasm: median(gen('wasm')), plain: median(gen('plain')), ratio: median(ratio) },
  contexts: {},
};
for (const c of CONTEXTS) {
  const wm = runs.wasm.map((r) => r.contexts[c].msPerToken);
  const ws = runs.wasm.map((r) => r.contexts[c].attentionMs / r.contexts[c].msPerToken);
  const pm = runs.plain.map((r) => r.contexts[c].msPerToken);
  const ps = runs.plain.map((r) => r.contexts[c].attentionMs / r.contexts[c].msPerToken);
  const pct = (/** @type {number} */ x) => `${(x * 100).toFixed(0)}%`;
  out(
    `  ${String(c).padStart(5)}   ${median(wm).toFixed(2).padStart(8)}           ${pct(median(ws)).padStart(4)} (${pct(Math.min(...ws))}–${pct(Math.max(...ws))})` +
      `   ${median(pm).toFixed(2).padStart(8)}     ${pct(median(ps)).padStart(4)} (${pct(Math.min(...ps))}–${pct(Math.max(...ps))})   ${fmtX(median(pm) / median(wm))}×`,
  );
  summary.contexts[c] = { wasmMs: median(wm), wasmShare: median(ws), plainMs: median(pm), plainShare: median(ps) };
}
out('');
out(
  `the runner's matmuls in WebAssembly SIMD (${lookupRuns[0].matmul}) vs JavaScript, greedy, the same tokens, decode tokens/s, interleaved`,
);
for (const name of ['repetitive', 'prose']) {
  const js = lookupRuns.flatMap((r) => r[name].greedyJs);
  const wasm = lookupRuns.flatMap((r) => r[name].greedy);
  const ratios = js.map((j, i) => wasm[i] / j);
  const cpuRatios = lookupRuns.flatMap((r) =>
    r[name].greedyCpu.map((/** @type {number} */ g, /** @type {number} */ i) => g / r[name].greedyJsCpu[i]),
  );
  out(
    `  ${name.padEnd(10)}  JavaScript ${spread(js, tok)}, wasm ${spread(wasm, tok)}: ${fmtX(median(ratios))}× ` +
      `(${fmtX(Math.min(...ratios))}–${fmtX(Math.max(...ratios))}); per CPU second ${fmtX(median(cpuRatios))}× ` +
      `(${fmtX(Math.min(...cpuRatios))}–${fmtX(Math.max(...cpuRatios))})`,
  );
  summary[`${name}Matmul`] = { js: median(js), wasm: median(wasm), ratio: median(ratios), cpuRatio: median(cpuRatios) };
}
out('');
out(`prompt-lookup decoding vs greedy (same tokens), decode tokens/s, runs interleaved in one process`);
for (const name of ['repetitive', 'prose']) {
  const greedy = lookupRuns.flatMap((r) => r[name].greedy);
  const lookup = lookupRuns.flatMap((r) => r[name].lookup);
  const ratios = greedy.map((g, i) => lookup[i] / g);
  const cpuRatios = lookupRuns.flatMap((r) =>
    r[name].lookupCpu.map((/** @type {number} */ l, /** @type {number} */ i) => l / r[name].greedyCpu[i]),
  );
  const last = lookupRuns.at(-1)[name];
  out(
    `  ${name.padEnd(10)}  greedy ${spread(greedy, tok)}, lookup ${spread(lookup, tok)}: ${fmtX(median(ratios))}× ` +
      `(${fmtX(Math.min(...ratios))}–${fmtX(Math.max(...ratios))}); per CPU second ${fmtX(median(cpuRatios))}× ` +
      `(${fmtX(Math.min(...cpuRatios))}–${fmtX(Math.max(...cpuRatios))}); ${last.accepted} of ${last.drafted} drafts accepted, ${last.forwards} forward passes for ${opts.tokens} tokens`,
  );
  const priced = lookupRuns.flatMap((r) => r[name].priced);
  out(
    `  ${''.padEnd(10)}  its passes priced at the measured pass costs (below): ${fmtX(median(priced))}× ` +
      `(${fmtX(Math.min(...priced))}–${fmtX(Math.max(...priced))}); the last run's passes: ${last.passes.join(' ')}`,
  );
  const clairvoyant = lookupRuns.map((r) => r[name].clairvoyant);
  out(
    `  ${''.padEnd(10)}  its drafts cut to what greedy decoding then writes (none rejected, none held back), priced ` +
      `the same: ${fmtX(median(clairvoyant))}× (${fmtX(Math.min(...clairvoyant))}–${fmtX(Math.max(...clairvoyant))})`,
  );
  summary[name] = {
    greedy: median(greedy),
    lookup: median(lookup),
    ratio: median(ratios),
    cpuRatio: median(cpuRatios),
    pricedRatio: median(priced),
    clairvoyantRatio: median(clairvoyant),
  };
}
// per round the cost of a T-token pass in lone steps; its inverse per token is lookup's ceiling
const passSteps = (/** @type {number} */ T) => lookupRuns.map((r) => r.passCost[T] / r.passCost[1]);
out(
  `  a forward pass of T tokens, in lone decode steps (median (min–max) over rounds): ${PASS_TOKENS.slice(1)
    .map((T) => `T=${T} ${spread(passSteps(T), (x) => x.toFixed(2))}`)
    .join(', ')}`,
);
const perToken = median(passSteps(13)) / 13;
out(
  `  -> a verified token costs ${perToken.toFixed(2)} of a lone step (T=13): lookup's ceiling is ${fmtX(1 / perToken)}× with every draft accepted`,
);
summary.passSteps = Object.fromEntries(PASS_TOKENS.map((T) => [T, median(passSteps(T))]));
{
  const alone = batchRuns.flatMap((r) => r.alone);
  const together = batchRuns.flatMap((r) => r.together);
  const ratios = together.map((t, i) => t / alone[i]);
  out('');
  out(`8 conversations, greedy, ${opts.tokens} tokens each (tokens/s of all 8, prefill included, median (min–max))`);
  out(
    `  one after another ${spread(alone, tok)}, together (generateMany, attendMany) ${spread(together, tok)}: ` +
      `${fmtX(median(ratios))}× (${fmtX(Math.min(...ratios))}–${fmtX(Math.max(...ratios))}); ` +
      `${batchRuns.every((r) => r.same) ? 'the same tokens' : 'TOKENS DIFFER from one at a time'}`,
  );
  summary.batch = { alone: median(alone), together: median(together), ratio: median(ratios) };
}
const busy = busyWarning();
if (busy) out(`\n${busy}`);
if (opts.json) out(JSON.stringify(summary));
