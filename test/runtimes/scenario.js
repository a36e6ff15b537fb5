// The scenario every runtime runs against the installed package (the packed tarball): init, one-shot
// attention and its weights, a KV-cache prefill and decode steps checked against a float64 reference,
// and save()/load() continuing bit-identically, a RoPE cache, a tree of drafts, int8, bfloat16 and int4
// caches, scaled RoPE and caches whose layers differ (perLayer). It also returns a fingerprint
// of its outputs' bits (`bits`), which the matrix compares with Node's for the same build: one build must
// give the same bits in every engine. Plain ESM with web APIs only, so the same file runs in
// Node, Deno, Bun, browsers, workerd and bundles. Returns a report instead of throwing.

import { init, attention, attentionWeights, KVCache } from 'wasm-attention';
import { ReferenceCache, referenceAttention, referenceWeights } from '../support/reference.js';
import { Rng } from '../support/rng.js';

/** Deterministic inputs in [-1, 1). @param {number} seed @param {number} n */
const random = (seed, n) => new Rng(seed).uniform(n);

// The probes wasm-feature-detect uses, repeated here so the check does not trust the code it checks.
const SIMD = new Uint8Array([
  0, 97, 115, 109, 1, 0, 0, 0, 1, 5, 1, 96, 0, 1, 123, 3, 2, 1, 0, 10, 10, 1, 8, 0, 65, 0, 253, 15, 253, 98, 11,
]);
const RELAXED = new Uint8Array([
  0, 97, 115, 109, 1, 0, 0, 0, 1, 5, 1, 96, 0, 1, 123, 3, 2, 1, 0, 10, 15, 1, 13, 0, 65, 1, 253, 15, 65, 2, 253, 15,
  253, 128, 2, 11,
]);

/**
 * lane 0 of f32x4.relaxed_madd(splat a, splat b, splat c), exported as m: relaxed SIMD lets an engine round
 * the multiply-add once or twice, and (1 + 2^-12)² − (1 + 2^-11) is 2^-24 only when it rounds once.
 */
const MADD = new Uint8Array([
  0, 97, 115, 109, 1, 0, 0, 0, 1, 8, 1, 96, 3, 125, 125, 125, 1, 125, 3, 2, 1, 0, 7, 5, 1, 1, 109, 0, 0, 10, 22, 1, 20,
  0, 32, 0, 253, 19, 32, 1, 253, 19, 32, 2, 253, 19, 253, 133, 2, 253, 31, 0, 11,
]);

/** Whether this engine fuses relaxed_madd; true where it compiles no bytes at run time (workerd, V8). */
async function fusedMadd() {
  try {
    const { instance } = await WebAssembly.instantiate(MADD);
    return instance.exports.m(1 + 2 ** -12, 1 + 2 ** -12, -(1 + 2 ** -11)) === 2 ** -24;
  } catch {
    return true;
  }
}

/**
 * The build `init()` must choose here: the fastest one this runtime validates, relaxed-simd only where its
 * multiply-add is fused (unfused it computes simd's bits, slower, and other bits than the engines that fuse).
 */
export async function expectedBuild() {
  const simd = WebAssembly.validate(SIMD);
  if (simd && WebAssembly.validate(RELAXED) && (await fusedMadd())) return 'relaxed-simd';
  return simd ? 'simd' : 'scalar';
}

function maxError(a, b) {
  let e = 0;
  for (let i = 0; i < a.length; i++) e = Math.max(e, Math.abs(a[i] - b[i]));
  if (a.length !== b.length) e = Infinity;
  return e;
}

function identical(a, b) {
  if (a.length !== b.length) return false;
  const x = new Uint32Array(a.buffer, a.byteOffset, a.length),
    y = new Uint32Array(b.buffer, b.byteOffset, b.length);
  return x.every((bits, i) => bits === y[i]);
}

const TOLERANCE = 2e-5;

/**
 * Fingerprints of outputs' bits: per named part, FNV-1a over every float's 32 bits, in hex. Equal
 * fingerprints for two engines mean (barring a 2^-32 collision per part) the same bits.
 */
class Fingerprints {
  parts = {};
  /** @param {string} name @param {Float32Array} output */
  add(name, output) {
    let h = this.parts[name] === undefined ? 0x811c9dc5 : Number.parseInt(this.parts[name], 16);
    const words = new Uint32Array(output.buffer, output.byteOffset, output.length);
    for (const w of words) {
      for (let shift = 0; shift < 32; shift += 8) {
        h ^= (w >>> shift) & 0xff;
        h = Math.imul(h, 0x01000193) >>> 0;
      }
    }
    this.parts[name] = h.toString(16).padStart(8, '0');
  }
}

/**
 * `build`: force one build with init({ build }) (every build must hold the contract); default: auto.
 * `threads`: what init()'s default ('auto') must give here: 'many' (at least 2) or 1.
 */
export async function scenario({ build: forced, threads: expectedThreads } = {}) {
  const started = Date.now();
  const checks = [];
  const check = (name, ok, detail) => checks.push({ name, ok: !!ok, detail });
  let build, threads;
  const bits = new Fingerprints();
  try {
    ({ build, threads } = await init(forced ? { build: forced } : undefined));
    if (expectedThreads !== undefined) {
      check(
        `init() got ${expectedThreads === 'many' ? 'at least 2 threads' : `${expectedThreads} thread`}`,
        expectedThreads === 'many' ? threads >= 2 : threads === expectedThreads,
        `info.threads ${threads}`,
      );
    }
    const expected = forced ?? (await expectedBuild());
    check(
      forced ? `init({ build: '${forced}' }) got it` : 'init chose the fastest build this runtime validates',
      build === expected,
      `${build} (expected ${expected})`,
    );
    check('init is idempotent', (await init(forced ? { build: forced } : undefined)).build === build, build);

    // one-shot: grouped-query, causal, then a sliding window with a sink
    const shape = { heads: 4, kvHeads: 2, headDim: 64 };
    const T = 12,
      q = random(1, T * 4 * 64),
      k = random(2, T * 2 * 64),
      v = random(3, T * 2 * 64);
    const out = attention(q, k, v, shape);
    bits.add('attention', out);
    const e1 = maxError(out, referenceAttention(q, k, v, shape));
    check('one-shot causal attention matches float64', e1 < TOLERANCE, `max error ${e1.toExponential(2)}`);
    const windowed = { ...shape, window: 4, sinks: 1 };
    const w = attentionWeights(q, k, v, windowed);
    bits.add('weights', w);
    const wref = referenceWeights(q, k, v, windowed);
    const e2 = maxError(w, wref);
    const masked = wref.every((x, i) => x !== 0 || w[i] === 0);
    check(
      'attentionWeights (window 4, 1 sink) match float64, masked keys exactly 0',
      e2 < TOLERANCE && masked,
      `max error ${e2.toExponential(2)}, mask ${masked ? 'exact' : 'WRONG'}`,
    );
    const windowedOut = attention(q, k, v, windowed);
    bits.add('windowed', windowedOut);
    const e3 = maxError(windowedOut, referenceAttention(q, k, v, windowed));
    check('windowed attention matches float64', e3 < TOLERANCE, `max error ${e3.toExponential(2)}`);

    // a cache: prefill 10 tokens, decode 6, each step against float64 over everything appended so far
    const cache = await KVCache.create({ layers: 2, ...shape, maxTokens: 64 });
    const prompt = 10,
      steps = 6,
      row = 4 * 64,
      kvRow = 2 * 64;
    const Q = random(4, (prompt + steps) * row),
      K = random(5, (prompt + steps) * kvRow),
      V = random(6, (prompt + steps) * kvRow);
    let worst = 0;
    const refAt = (end, t) =>
      referenceAttention(
        Q.subarray((end - t) * row, end * row),
        K.subarray(0, end * kvRow),
        V.subarray(0, end * kvRow),
        shape,
      );
    for (let layer = 0; layer < 2; layer++) {
      const o = cache.attend(
        layer,
        Q.subarray(0, prompt * row),
        K.subarray(0, prompt * kvRow),
        V.subarray(0, prompt * kvRow),
      );
      bits.add('cache', o);
      worst = Math.max(worst, maxError(o, refAt(prompt, prompt)));
    }
    const decode = (c, i) =>
      [0, 1].map((layer) =>
        c.attend(
          layer,
          Q.subarray(i * row, (i + 1) * row),
          K.subarray(i * kvRow, (i + 1) * kvRow),
          V.subarray(i * kvRow, (i + 1) * kvRow),
        ),
      );
    for (let i = prompt; i < prompt + 3; i++) {
      for (const o of decode(cache, i)) {
        bits.add('cache', o);
        worst = Math.max(worst, maxError(o, refAt(i + 1, 1)));
      }
    }
    const saved = cache.save();
    const restored = KVCache.load(saved);
    check(
      'load(save()) restores the lengths',
      restored.length === cache.length && restored.lengthOf(1) === prompt + 3,
      `${restored.length} tokens, ${saved.byteLength} bytes saved`,
    );
    let same = true;
    for (let i = prompt + 3; i < prompt + steps; i++) {
      const a = decode(cache, i),
        b = decode(restored, i);
      for (const o of a) {
        bits.add('cache', o);
        worst = Math.max(worst, maxError(o, refAt(i + 1, 1)));
      }
      same &&= a.every((o, l) => identical(o, b[l]));
    }
    check(
      'prefill and decode steps match float64',
      worst < TOLERANCE,
      `max error ${worst.toExponential(2)} over ${prompt} + ${steps} tokens, 2 layers`,
    );
    check('a loaded cache continues bit-identically', same, same ? 'identical bits' : 'outputs differ');
    cache.dispose();
    restored.dispose();

    // int8 K/V: the integer kernels (int16 dot products on the int8 rows) in this engine, prefill then
    // decode steps, within int8's budget of float64 (max < 0.05 on unit-variance data: test/int8.test.ts)
    const int8 = await KVCache.create({ ...shape, maxTokens: 64, dtype: 'int8' });
    const tokens = (x, w, from, to) => x.subarray(from * w, to * w);
    const prefill8 = int8.attend(
      0,
      tokens(Q, row, 0, prompt),
      tokens(K, kvRow, 0, prompt),
      tokens(V, kvRow, 0, prompt),
    );
    bits.add('int8', prefill8);
    let worst8 = maxError(prefill8, refAt(prompt, prompt));
    for (let i = prompt; i < prompt + steps; i++) {
      const o = int8.attend(0, tokens(Q, row, i, i + 1), tokens(K, kvRow, i, i + 1), tokens(V, kvRow, i, i + 1));
      bits.add('int8', o);
      worst8 = Math.max(worst8, maxError(o, refAt(i + 1, 1)));
    }
    check('int8 K/V within its budget of float64', worst8 < 0.05, `max error ${worst8.toExponential(2)}`);
    int8.dispose();

    // bfloat16 and int4 K/V (widened to float32 per block in this engine), prefill then decode steps, within
    // their budgets of float64 on unit-variance data (max < 0.01 and < 0.4: test/dtypes.test.ts)
    for (const [dtype, budget] of [
      ['bfloat16', 0.01],
      ['int4', 0.4],
    ]) {
      const narrow = await KVCache.create({ ...shape, maxTokens: 64, dtype });
      const first = narrow.attend(
        0,
        tokens(Q, row, 0, prompt),
        tokens(K, kvRow, 0, prompt),
        tokens(V, kvRow, 0, prompt),
      );
      bits.add(dtype, first);
      let worst = maxError(first, refAt(prompt, prompt));
      for (let i = prompt; i < prompt + steps; i++) {
        const o = narrow.attend(0, tokens(Q, row, i, i + 1), tokens(K, kvRow, i, i + 1), tokens(V, kvRow, i, i + 1));
        bits.add(dtype, o);
        worst = Math.max(worst, maxError(o, refAt(i + 1, 1)));
      }
      check(`${dtype} K/V within its budget of float64`, worst < budget, `max error ${worst.toExponential(2)}`);
      narrow.dispose();
    }

    // RoPE (the kernel's own sin/cos tables, Llama's half-split layout) over a prefill and decode steps
    const ropeOptions = { ...shape, maxTokens: 64, rope: { theta: 500000 } };
    const roped = await KVCache.create(ropeOptions);
    const ropeRef = new ReferenceCache(ropeOptions);
    let worstRope = 0;
    for (const [from, to] of [[0, prompt], ...Array.from({ length: steps }, (_, s) => [prompt + s, prompt + s + 1])]) {
      const args = [tokens(Q, row, from, to), tokens(K, kvRow, from, to), tokens(V, kvRow, from, to)];
      const o = roped.attend(0, ...args);
      bits.add('rope', o);
      worstRope = Math.max(worstRope, maxError(o, ropeRef.attend(0, ...args)));
    }
    check('a RoPE cache matches float64', worstRope < TOLERANCE, `max error ${worstRope.toExponential(2)}`);
    roped.dispose();

    // a tree of drafts over a RoPE cache: each draft against float64 (its ancestors only), accept, a step
    // after it; and a chain of drafts is the same bits as a chunked attend of the same tokens
    {
      const treeOptions = { ...shape, maxTokens: 64, rope: {} };
      const tree = await KVCache.create(treeOptions);
      const plain = await KVCache.create(treeOptions);
      const treeRef = new ReferenceCache(treeOptions);
      const at = (i, j) => [tokens(Q, row, i, j), tokens(K, kvRow, i, j), tokens(V, kvRow, i, j)];
      tree.attend(0, ...at(0, prompt));
      plain.attend(0, ...at(0, prompt));
      treeRef.attend(0, ...at(0, prompt));
      const chained = tree.attendTree(0, ...at(prompt, prompt + 4), [-1, 0, 1, 2]);
      const sameChain = identical(chained, plain.attend(0, ...at(prompt, prompt + 4)));
      check('a chain of drafts is the same bits as attend', sameChain, sameChain ? 'identical bits' : 'bits differ');
      tree.accept([]);
      const parents = [-1, 0, 0, 1, -1, 4];
      const drafts = at(prompt, prompt + 6);
      const o = tree.attendTree(0, ...drafts, parents);
      bits.add('tree', o);
      let worstTree = maxError(o, treeRef.attendTree(0, ...drafts, parents));
      tree.accept([0, 1, 3]);
      treeRef.accept([0, 1, 3]);
      const step = tree.attend(0, ...at(prompt + 5, prompt + 6));
      bits.add('tree', step);
      worstTree = Math.max(worstTree, maxError(step, treeRef.attend(0, ...at(prompt + 5, prompt + 6))));
      check(
        'a tree of drafts, accept and a step after it match float64',
        worstTree < TOLERANCE && tree.length === prompt + 4,
        `max error ${worstTree.toExponential(2)}, length ${tree.length}`,
      );
      tree.dispose();
      plain.dispose();
    }

    // scaled RoPE past a (small) original context: gpt-oss's YaRN (with its attention factor) and Llama
    // 3's scaling, prefill then decode steps, against the float64 reference's reading of each definition
    for (const rope of [
      { theta: 150000, scaling: { type: 'yarn', factor: 32, originalMaxPositions: 8, truncate: false } },
      {
        theta: 500000,
        scaling: { type: 'llama3', factor: 32, lowFreqFactor: 1, highFreqFactor: 4, originalMaxPositions: 8 },
      },
    ]) {
      const o = { ...shape, maxTokens: 64, rope };
      const scaled = await KVCache.create(o);
      const ref = new ReferenceCache(o);
      const at = (i, j) => [tokens(Q, row, i, j), tokens(K, kvRow, i, j), tokens(V, kvRow, i, j)];
      let worstR = maxError(scaled.attend(0, ...at(0, prompt)), ref.attend(0, ...at(0, prompt)));
      for (let i = prompt; i < prompt + steps; i++) {
        worstR = Math.max(worstR, maxError(scaled.attend(0, ...at(i, i + 1)), ref.attend(0, ...at(i, i + 1))));
      }
      check(
        `rope.scaling ${rope.scaling.type} matches float64`,
        worstR < TOLERANCE,
        `max error ${worstR.toExponential(2)}`,
      );
      scaled.dispose();
    }

    // caches whose layers differ (perLayer): Gemma-3-shaped (two windowed layers with their own rope base
    // beside a global one with linear scaling) and gpt-oss-shaped (a window and a global layer, each with
    // its learned sink logits, YaRN). Every layer against the float64 reference of its own settings over a
    // prefill and decode steps; a saved and loaded copy continues with the same bits.
    const mixedCaches = {
      'Gemma-3-shaped': {
        layers: 3,
        ...shape,
        maxTokens: 64,
        scale: 1 / 8,
        rope: { theta: 1000000, scaling: { type: 'linear', factor: 8 } },
        perLayer: [{ window: 4, rope: { theta: 10000 } }, { window: 4, rope: { theta: 10000 } }, null],
      },
      'gpt-oss-shaped': {
        layers: 2,
        ...shape,
        maxTokens: 64,
        rope: { theta: 150000, scaling: { type: 'yarn', factor: 32, originalMaxPositions: 8, truncate: false } },
        perLayer: [{ window: 4, sinkLogits: [-0.5, 1.25, 2.75, 0] }, { sinkLogits: [1.5, -2, 0.25, 3] }],
      },
    };
    for (const [name, options] of Object.entries(mixedCaches)) {
      const mixed = await KVCache.create(options);
      const { perLayer, layers: _, ...wide } = options;
      const refs = perLayer.map((entry) => new ReferenceCache({ ...wide, ...(entry ?? {}) }));
      const at = (i, j) => [tokens(Q, row, i, j), tokens(K, kvRow, i, j), tokens(V, kvRow, i, j)];
      let worstM = 0;
      const step = (c, i, j, l) => {
        const o = c.attend(l, ...at(i, j));
        bits.add('perLayer', o);
        return o;
      };
      for (let l = 0; l < options.layers; l++) {
        worstM = Math.max(worstM, maxError(step(mixed, 0, prompt, l), refs[l].attend(0, ...at(0, prompt))));
      }
      const copy = KVCache.load(mixed.save());
      let sameM = true;
      for (let i = prompt; i < prompt + steps; i++) {
        for (let l = 0; l < options.layers; l++) {
          const o = step(mixed, i, i + 1, l);
          worstM = Math.max(worstM, maxError(o, refs[l].attend(0, ...at(i, i + 1))));
          sameM &&= identical(o, copy.attend(l, ...at(i, i + 1)));
        }
      }
      check(
        `a ${name} mixed cache matches float64 on every layer; a loaded copy continues bit-identically`,
        worstM < TOLERANCE && sameM,
        `max error ${worstM.toExponential(2)}, ${sameM ? 'identical bits' : 'loaded copy differs'}`,
      );
      mixed.dispose();
      copy.dispose();
    }

    // a batch (KVCache.attendMany): three forks of one 140-token prefix (their shared pages read once)
    // and a stranger, one step each, against the same steps on twin caches one at a time
    {
      const make = () => {
        const base = new KVCache({ ...shape, maxTokens: 200 });
        base.attend(0, random(10, 140 * row), random(11, 140 * kvRow), random(12, 140 * kvRow));
        const stranger = new KVCache({ ...shape, maxTokens: 200, dtype: 'int8' });
        stranger.attend(0, random(13, 30 * row), random(14, 30 * kvRow), random(15, 30 * kvRow));
        return [base.fork(), base.fork(), base, stranger];
      };
      const [batch, lone] = [make(), make()];
      const stepsOf = (i) => ({
        q: random(20 + i, (1 + i) * row),
        k: random(30 + i, (1 + i) * kvRow),
        v: random(40 + i, (1 + i) * kvRow),
      });
      const got = KVCache.attendMany(
        0,
        batch.map((cache, i) => ({ cache, ...stepsOf(i) })),
      );
      const want = lone.map((cache, i) => cache.attend(0, stepsOf(i).q, stepsOf(i).k, stepsOf(i).v));
      for (const o of got) bits.add('many', o);
      const alike = got.every((o, i) => identical(o, want[i]));
      check('attendMany gives each cache the bits of attend alone', alike, alike ? 'identical bits' : 'bits differ');
      for (const c of [...batch, ...lone]) c.dispose();
    }

    if (threads > 1) {
      // a decode step over 4,096 keys runs across the threads: float64-close, and the same bits as one thread
      const o = { heads: 8, kvHeads: 2, headDim: 64 };
      const q1 = random(7, 8 * 64),
        k1 = random(8, 4096 * 2 * 64),
        v1 = random(9, 4096 * 2 * 64);
      const many = attention(q1, k1, v1, o);
      await init({ build, threads: 1 });
      const one = attention(q1, k1, v1, o);
      await init(forced ? { build: forced } : undefined);
      const e4 = maxError(many, referenceAttention(q1, k1, v1, o));
      check(
        `a decode step on ${threads} threads matches float64 and is the same bits as on one`,
        e4 < TOLERANCE && identical(many, one),
        `max error ${e4.toExponential(2)}, ${identical(many, one) ? 'identical bits' : 'bits differ'}`,
      );
    }
  } catch (error) {
    check('no exception', false, String(error?.stack || error));
  }
  return {
    build,
    threads,
    ok: checks.length > 0 && checks.every((c) => c.ok),
    checks,
    bits: bits.parts,
    ms: Date.now() - started,
  };
}
