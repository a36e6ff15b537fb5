// The model runner of examples/model, checked against PyTorch. The tiny byte-level Llama 3 model in
// examples/model/tiny (trained by examples/model/train/train.py) ships with PyTorch's float64 logits of a
// held-out text, teacher-forced, and its greedy continuation of a prompt (reference.json and the .bin
// files beside it); here the runner, with this package's KVCache as its attention, must reproduce them.
// TINY_MODEL_DIR may point at another folder of the same layout.
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { beforeAll, describe, expect, it } from 'vitest';
import { cacheOptionsFor, loadModel, modelFromBytes } from '../examples/model/index.mjs';
import { cacheOptionsFromConfig } from '../src/index.js';
import { DraftPolicy, draftByLookup, LOOKUP_DEFAULTS } from '../examples/model/lookup.mjs';
import { linearFor } from '../examples/model/matmul.mjs';
import { exp, linear, mlpOf } from '../examples/model/math.mjs';
import { halfToFloat, readSafetensors } from '../examples/model/safetensors.mjs';
import { expectBitIdentical, Rng } from './support/util.js';

const dir = process.env.TINY_MODEL_DIR ?? fileURLToPath(new URL('../examples/model/tiny', import.meta.url));
const reference = JSON.parse(readFileSync(`${dir}/reference.json`, 'utf8'));
const config = JSON.parse(readFileSync(`${dir}/config.json`, 'utf8'));
const weights = new Uint8Array(readFileSync(`${dir}/model.safetensors`));
const vocab: number = config.vocab_size;
const heldOut: number[] = reference.logits.ids;
const pytorch64 = new Float64Array(readFileSync(`${dir}/${reference.logits.float64.file}`).buffer.slice(0));
const greedyPrompt: number[] = reference.greedy.prompt_ids;
const greedyReference: number[] = reference.greedy.new_ids;

type Model = Awaited<ReturnType<typeof loadModel>>;
let model: Model;
let int8Model: Model;
let prefill32: Float32Array; // the held-out text's logits, one prefill, float32 cache
let prefill8: Float32Array; // the same with an int8 cache
beforeAll(async () => {
  model = await loadModel(dir);
  int8Model = await loadModel(dir, { dtype: 'int8' });
  prefill32 = model.logits(heldOut);
  prefill8 = int8Model.logits(heldOut);
});

const maxAbsDiff = (a: ArrayLike<number>, b: ArrayLike<number>) => {
  let max = 0;
  for (let i = 0; i < a.length; i++) max = Math.max(max, Math.abs(a[i] - b[i]));
  return max;
};
const argmaxAt = (logits: ArrayLike<number>, row: number) => {
  let best = 0;
  for (let i = 1; i < vocab; i++) if (logits[row * vocab + i] > logits[row * vocab + best]) best = i;
  return best;
};
const top1Agreement = (a: ArrayLike<number>, b: ArrayLike<number>, rows: number) => {
  let same = 0;
  for (let t = 0; t < rows; t++) if (argmaxAt(a, t) === argmaxAt(b, t)) same++;
  return same / rows;
};
const bytes = (text: string) => Array.from(new TextEncoder().encode(text));

describe('the runner reproduces PyTorch (float32 cache)', () => {
  // PyTorch's own float32 evaluation of this model differs from its float64 one by
  // reference.logits.float32_max_abs_diff_from_float64 (1.7e-5 on logits of size ~10). The runner is
  // another float32 evaluation of the same operations: its linear layers sum in float32 too (four lanes of
  // at most 128 products each here, every product and sum rounded to 2^-24 relative, none fused, where
  // PyTorch's sgemm fuses and blocks its own way), its exp is within 2^-51 and its RoPE tables come from
  // float64 angles. Each side's error is the same kind of float32 rounding walk away from float64, so the
  // runner should land within a small multiple of PyTorch's own: 1e-4 allows 6x it. The error measured
  // must also sit well below the smallest top-2 gap of the greedy reference (min_top2_margin), or the
  // greedy comparison below would hinge on rounding.
  const TOLERANCE = 1e-4;

  it('teacher-forced logits of the held-out text: prefill within the tolerance of float64', () => {
    const logits = prefill32;
    expect(logits).toBeInstanceOf(Float32Array);
    expect(logits.length).toBe(heldOut.length * vocab);
    const error = maxAbsDiff(logits, pytorch64);
    console.log(
      `float32 cache: max |logit - PyTorch float64| = ${error.toExponential(2)} over ${heldOut.length} tokens ` +
        `(PyTorch float32: ${reference.logits.float32_max_abs_diff_from_float64.toExponential(2)})`,
    );
    expect(error).toBeLessThan(TOLERANCE);
    expect(error).toBeLessThan(reference.greedy.min_top2_margin_float64 / 10);
  });

  it('token by token gives the same bits as the prefill, and so does a prefill in chunks of 5', () => {
    expect(model.logits(heldOut, { tokensPerCall: 1 })).toEqual(prefill32);
    const start = heldOut.slice(0, 40);
    expect(model.logits(start, { tokensPerCall: 5 })).toEqual(prefill32.subarray(0, 40 * vocab));
  });

  it('any number of tokens per call gives the same bits (every blocking of the multi-token matmuls)', () => {
    // verifying k drafts runs k + 1 tokens at once, and must see the logits greedy saw one at a time
    const start = heldOut.slice(0, 30);
    for (const tokensPerCall of [2, 3, 4, 7, 13]) {
      expectBitIdentical(
        model.logits(start, { tokensPerCall }),
        prefill32.subarray(0, 30 * vocab),
        `logits in calls of ${tokensPerCall} tokens`,
      );
    }
  });

  it(`greedy continuation equals PyTorch's for all ${greedyReference.length} tokens`, async () => {
    const streamed: number[] = [];
    const generated = await model.generate(greedyPrompt, {
      maxNewTokens: greedyReference.length,
      onToken: (id) => {
        streamed.push(id);
      },
    });
    expect(generated).toEqual(greedyReference);
    expect(streamed).toEqual(greedyReference);
  });
});

describe("dtype 'int8' cache", () => {
  it('logits within the int8 tolerance of float64; top-1 agreement with float32 reported', () => {
    const logits8 = prefill8;
    const logits32 = prefill32;
    const error = maxAbsDiff(logits8, pytorch64);
    const agreement = top1Agreement(logits8, logits32, heldOut.length);
    console.log(
      `int8 cache: max |logit - PyTorch float64| = ${error.toFixed(4)}; top-1 agreement with the float32 cache ` +
        `${(agreement * 100).toFixed(1)}% of ${heldOut.length} positions`,
    );
    // Each cached K and V number is rounded to one of 255 steps of its (token, kv head) row's largest
    // magnitude: off by up to 0.4% of that, on every key and value of every layer. Attention outputs then
    // move by about that fraction of V's scale, and the logits, after the remaining layers and norms, by a
    // small multiple of 0.4% of their own scale (measured: 0.8% of the largest |logit| on the trained
    // model, 0.03% on the untrained one). 2% of the largest |logit| leaves room for that multiple to be 5.
    const largest = pytorch64.reduce((m, x) => Math.max(m, Math.abs(x)), 0);
    expect(error).toBeLessThan(0.02 * largest);
    // a flip needs two logits within that error of each other: rare, so at least 95% agree
    expect(agreement).toBeGreaterThanOrEqual(0.95);
  });

  it('token by token gives the same bits as the prefill, as with float32', () => {
    const start = heldOut.slice(0, 60);
    expect(int8Model.logits(start, { tokensPerCall: 1 })).toEqual(prefill8.subarray(0, 60 * vocab));
  });
});

describe('cache dtypes on held-out text: top-1 agreement with a float32 cache, bits per byte', () => {
  // 36 windows of 256 bytes from the 12 held-out addresses (heldout.json, written by train/heldout.py),
  // each teacher-forced through a fresh cache of each dtype. A flip of the top-1 token needs the dtype's
  // logit error to bridge the gap between the two best tokens; the targets (issue 22) bound how often.
  // Measured: int8 99.7%, bfloat16 99.9%, int4 97.0% (bits per byte +0.0002, +0.00002, +0.006).
  const { windows } = JSON.parse(readFileSync(`${dir}/heldout.json`, 'utf8')) as { windows: { ids: number[] }[] };
  const TARGETS = { bfloat16: 0.995, int8: 0.99, int4: 0.97 } as const;

  /** Bits per byte of the next byte of `ids` under `logits` (the last position predicts nothing). */
  const bitsPerByte = (logits: Float32Array, ids: number[]) => {
    let bits = 0;
    for (let t = 0; t + 1 < ids.length; t++) {
      const row = logits.subarray(t * vocab, (t + 1) * vocab);
      const max = row.reduce((m, x) => Math.max(m, x), -Infinity);
      const z = row.reduce((sum, x) => sum + Math.exp(x - max), 0);
      bits += (Math.log(z) - (row[ids[t + 1]] - max)) / Math.LN2;
    }
    return bits;
  };

  it('bfloat16 ≥ 99.5%, int8 ≥ 99%, int4 ≥ 97% of positions; the bits-per-byte increase reported', async () => {
    const models = {
      bfloat16: await loadModel(dir, { dtype: 'bfloat16' }),
      int8: int8Model,
      int4: await loadModel(dir, { dtype: 'int4' }),
    };
    const agree = { bfloat16: 0, int8: 0, int4: 0 };
    const bits = { float32: 0, bfloat16: 0, int8: 0, int4: 0 };
    let positions = 0;
    for (const { ids } of windows) {
      const base = model.logits(ids);
      bits.float32 += bitsPerByte(base, ids);
      for (const dtype of ['bfloat16', 'int8', 'int4'] as const) {
        const logits = models[dtype].logits(ids);
        bits[dtype] += bitsPerByte(logits, ids);
        for (let t = 0; t < ids.length; t++) if (argmaxAt(logits, t) === argmaxAt(base, t)) agree[dtype]++;
      }
      positions += ids.length;
    }
    const predicted = positions - windows.length;
    const lines = (['bfloat16', 'int8', 'int4'] as const).map(
      (dtype) =>
        `  ${dtype}: top-1 agreement ${((100 * agree[dtype]) / positions).toFixed(2)}%, bits per byte ` +
        `${(bits[dtype] / predicted).toFixed(5)} (+${((bits[dtype] - bits.float32) / predicted).toExponential(2)})`,
    );
    console.log(
      `${windows.length} held-out windows, ${positions} positions; float32 bits per byte ` +
        `${(bits.float32 / predicted).toFixed(5)}\n${lines.join('\n')}`,
    );
    for (const dtype of ['bfloat16', 'int8', 'int4'] as const) {
      expect(agree[dtype] / positions, dtype).toBeGreaterThanOrEqual(TARGETS[dtype]);
    }
  }, 120_000);
});

describe('prompt-lookup speculative decoding', () => {
  const prompts = {
    repetitive: bytes('The Congress shall have power. The Congress shall have power. The Congress shall have power.'),
    list: bytes('Section 1. The Senate. Section 2. The House. Section 3. The Senate. Section 4. The House. Section 5.'),
    prose: heldOut.slice(0, 80),
  };

  for (const [name, ids] of Object.entries(prompts)) {
    it(`gives exactly greedy decoding's tokens: ${name} prompt`, async () => {
      const greedy = await model.generate(ids, { maxNewTokens: 64 });
      // adaptive (the default), and drafting at every match (many drafts, many rejected)
      for (const lookup of [true, { minNgram: 1, maxDraft: 16, adaptive: false }]) {
        const stats = { forwards: 0, drafted: 0, accepted: 0 };
        expect(await model.generate(ids, { maxNewTokens: 64, lookup, stats })).toEqual(greedy);
        expect(stats.accepted).toBeLessThanOrEqual(stats.drafted);
      }
    });
  }

  it('takes fewer forward passes than tokens on a repetitive prompt', async () => {
    const stats = { forwards: 0, drafted: 0, accepted: 0 };
    await model.generate(prompts.repetitive, { maxNewTokens: 64, lookup: { adaptive: false }, stats });
    console.log(`lookup on the repetitive prompt: ${stats.forwards} forward passes for 64 tokens`, stats);
    expect(stats.accepted).toBeGreaterThan(0);
    expect(stats.forwards).toBeLessThan(64);
  });

  it('gives sampling the same tokens too (one random draw per token, as without)', async () => {
    const options = { maxNewTokens: 48, temperature: 0.8, topK: 20, seed: 5 };
    const sampled = await model.generate(prompts.repetitive, options);
    const lookup = { minNgram: 1, adaptive: false };
    expect(await model.generate(prompts.repetitive, { ...options, lookup })).toEqual(sampled);
  });

  it('with an int8 cache as well', async () => {
    const greedy = await int8Model.generate(prompts.list, { maxNewTokens: 48 });
    const lookup = { minNgram: 1, adaptive: false };
    expect(await int8Model.generate(prompts.list, { maxNewTokens: 48, lookup })).toEqual(greedy);
  });

  it("linear: a token's outputs have the same bits whatever the number of tokens computed with it", () => {
    // math.mjs picks register blockings by token count (three tokens by three rows, two by four, a lone
    // token by eight rows) and by output count (leftover rows one at a time); each must sum every output
    // in the same order, so that a verification pass reproduces greedy decoding's logits exactly
    const rng = new Rng(21);
    const inDim = 37;
    const outDim = 23; // not a multiple of 3, 4 or 8: the leftover-row paths run too
    const W = rng.randn(outDim * inDim);
    const bias = rng.randn(outDim);
    for (const T of [1, 2, 3, 4, 5, 6, 7, 8, 10, 13]) {
      const x = rng.randn(T * inDim);
      const together = new Float32Array(T * outDim);
      linear(x, T, W, inDim, outDim, bias, together);
      const alone = new Float32Array(T * outDim);
      for (let t = 0; t < T; t++) {
        const xt = x.subarray(t * inDim, (t + 1) * inDim);
        linear(xt, 1, W, inDim, outDim, bias, alone.subarray(t * outDim, (t + 1) * outDim));
      }
      expectBitIdentical(together, alone, `linear of ${T} tokens against one at a time`, [T, outDim]);
    }
  });

  it('drafts what followed the latest earlier occurrence of the longest matching suffix', () => {
    const options = { ...LOOKUP_DEFAULTS, minNgram: 2 };
    expect(draftByLookup([1, 2, 3, 4, 9, 2, 3, 5, 7, 0, 1, 2, 3], options, 3)).toEqual([4, 9, 2]);
    expect(draftByLookup([1, 2, 3, 4], options, 3)).toEqual([]);
    // no more tokens than the match holds: the suffix [2, 3] matched alone drafts 2, [1, 2, 3] drafts 3,
    // and a match that reaches back further than the n-gram (here to 8, 1) counts all of it
    expect(draftByLookup([1, 2, 3, 4, 9, 2, 3, 5, 7, 2, 3], options, 3)).toEqual([5, 7]);
    expect(draftByLookup([1, 2, 3, 4, 9, 2, 3, 5, 7, 1, 2, 3], options, 5)).toEqual([4, 9, 2]);
    const longer = [8, 1, 2, 3, 4, 9, 6, 6, 8, 1, 2, 3];
    expect(draftByLookup(longer, { ...options, maxNgram: 2 }, 5)).toEqual([4, 9, 6, 6]);
    // a copy that runs into the suffix continues the pattern by its period
    expect(draftByLookup([5, 6, 5, 6, 5, 6], options, 5)).toEqual([5, 6, 5, 6]);
    expect(draftByLookup([7, 7, 7, 7, 7], options, 4)).toEqual([7, 7, 7, 7]);
  });

  it('drafts long while drafts are accepted, and only a probe every 8th step once they are not', () => {
    const policy = new DraftPolicy(LOOKUP_DEFAULTS);
    for (let i = 0; i < 10; i++) policy.update(policy.length(), policy.length());
    expect(policy.length()).toBe(LOOKUP_DEFAULTS.maxDraft);
    for (let i = 0; i < 10; i++) policy.update(policy.length(), 0);
    const lengths = Array.from({ length: 16 }, () => policy.length());
    expect(lengths.filter((n) => n > 0)).toEqual([1, 1]);
    expect(new DraftPolicy({ ...LOOKUP_DEFAULTS, adaptive: false }).length()).toBe(LOOKUP_DEFAULTS.maxDraft);
  });

  it('drafts less where timed verification passes cost more, not where a few were descheduled; ignores a stopped clock', () => {
    // a draft costs what its pass takes beyond the lone step it replaces, per draft, in lone steps
    /** A lone step of 1 ms, then a pass of the next token and 4 drafts costing `draftCost` each. */
    const timeOne = (policy: DraftPolicy, draftCost: number) => {
      policy.observe(1, 1);
      policy.observe(5, 1 + 4 * draftCost);
    };
    const timed = (draftCost: number, passes = 20) => {
      const policy = new DraftPolicy(LOOKUP_DEFAULTS);
      for (let i = 0; i < 5; i++) policy.update(4, 3); // acceptance rate ~0.75
      for (let i = 0; i < passes; i++) timeOne(policy, draftCost);
      return policy;
    };
    expect(new DraftPolicy(LOOKUP_DEFAULTS).draftCost()).toBe(0.7); // before any pass was timed
    // a = 0.75: worth floor(ln c / ln a) tokens
    expect(timed(0.6).draftCost()).toBeCloseTo(0.6, 10);
    expect(timed(0.6).length()).toBe(1);
    expect(timed(0.5).length()).toBe(2);
    // no cheaper than 0.5 is believed (a lone step slowed by a busy machine makes passes look cheap)
    expect(timed(0.2).draftCost()).toBe(0.5);
    // passes that cost a lone step per draft and more (stalled threads): only the probes every 8th step
    const stalled = timed(1.5, 60);
    expect(stalled.draftCost()).toBe(1);
    expect(Array.from({ length: 16 }, () => stalled.length()).filter((n) => n > 0)).toEqual([1, 1]);
    // a busy machine only adds time: passes descheduled for a time slice (10 lone steps more) now and then
    // must not stop the drafting, and nor must the first timed pass being one of them
    const busy = new DraftPolicy(LOOKUP_DEFAULTS);
    for (let i = 0; i < 5; i++) busy.update(4, 3);
    for (let i = 0; i < 20; i++) timeOne(busy, i % 5 === 0 ? 2.5 : 0.5);
    expect(busy.draftCost()).toBeLessThan(0.6);
    expect(busy.length()).toBe(2);
    // a clock that does not move while code runs (Cloudflare Workers) leaves the default cost
    const frozen = new DraftPolicy(LOOKUP_DEFAULTS);
    frozen.observe(1, 0);
    frozen.observe(5, 0);
    expect(frozen.draftCost()).toBe(0.7);
  });
});

describe('the linear layers in WebAssembly SIMD (matmul.mjs)', () => {
  // The runner's matmuls run in wasm/matmul.wasm where it loads and in math.mjs's JavaScript elsewhere
  // (a runtime that may not compile WebAssembly from bytes, a model too large for its memory). Both sum
  // each output in float32 in the same four lanes, in the same order, rounding every product and sum, so
  // they must agree to the bit, or the same prompt would give different tokens in different runtimes.
  it('loads in Node (the tests run the built module)', async () => {
    expect(model.info.matmul).toBe('wasm');
    expect((await linearFor('js')).kind).toBe('js');
  });

  it('gives the bits of the JavaScript linear for any shape, any token count 1 to 13, with and without bias', async () => {
    const { linear: wasm, kind } = await linearFor(undefined);
    expect(kind).toBe('wasm');
    const rng = new Rng(2121);
    for (let trial = 0; trial < 130; trial++) {
      const T = 1 + (trial % 13);
      const inDim = rng.int(1, 80);
      const outDim = rng.int(1, 70); // odd counts leave a row without a partner; small ones skip the blocks
      const W = rng.randn(outDim * inDim);
      const bias = trial % 2 ? rng.randn(outDim) : null;
      const x = rng.randn(T * inDim);
      const expected = new Float32Array(T * outDim);
      linear(x, T, W, inDim, outDim, bias, expected);
      const got = new Float32Array(T * outDim);
      wasm(x, T, W, inDim, outDim, bias, got);
      expectBitIdentical(got, expected, `wasm linear, ${T} tokens of ${inDim} → ${outDim}`, [T, outDim]);
      // the weights are now placed in wasm memory: a second call reads them there
      wasm(x, T, W, inDim, outDim, bias, got);
      expectBitIdentical(got, expected, `wasm linear again, ${T} tokens of ${inDim} → ${outDim}`, [T, outDim]);
    }
  });

  it("a model computing in JavaScript gives the same logits' bits and the same tokens, with and without lookup", async () => {
    const jsModel = await loadModel(dir, { matmul: 'js' });
    expect(jsModel.info.matmul).toBe('js');
    expectBitIdentical(jsModel.logits(heldOut), prefill32, 'logits, JavaScript against wasm matmuls', [
      heldOut.length,
      vocab,
    ]);
    const prompt = bytes('the people of the United States, the people of the United States, the people of');
    const greedy = await model.generate(prompt, { maxNewTokens: 40 });
    expect(await jsModel.generate(prompt, { maxNewTokens: 40 })).toEqual(greedy);
    expect(await jsModel.generate(prompt, { maxNewTokens: 40, lookup: true })).toEqual(greedy);
    expect(await model.generate(prompt, { maxNewTokens: 40, lookup: { adaptive: false } })).toEqual(greedy);
  });

  it('gives the JavaScript bits over wide magnitudes too', async () => {
    // Inputs from 1e-20 to 1e20 give float32 products that are subnormal (down to 1e-40), that overflow
    // to ±Infinity, and sums that cancel or turn NaN: a fused multiply-add, a flush to zero or another
    // order of the lanes would show as a bit that differs.
    expect(model.info.matmulBuild).toBe('simd');
    const builds = {
      default: await linearFor(undefined),
      url: await linearFor(new URL('../examples/model/wasm/matmul.wasm', import.meta.url)),
    };
    expect(builds.default.build).toBe('simd');
    expect(builds.url.kind).toBe('wasm');
    const rng = new Rng(2122);
    const wide = (n: number) => Float32Array.from({ length: n }, () => rng.normal() * 10 ** rng.int(-20, 20));
    for (let trial = 0; trial < 130; trial++) {
      const T = 1 + (trial % 13);
      const inDim = rng.int(1, 80);
      const outDim = rng.int(1, 70);
      const W = wide(outDim * inDim);
      const x = wide(T * inDim);
      const bias = trial % 2 ? wide(outDim) : null;
      const expected = new Float32Array(T * outDim);
      linear(x, T, W, inDim, outDim, bias, expected);
      for (const [name, { linear: wasm }] of Object.entries(builds)) {
        const got = new Float32Array(T * outDim);
        wasm(x, T, W, inDim, outDim, bias, got);
        expectBitIdentical(got, expected, `${name} linear, ${T} tokens of ${inDim} → ${outDim}`, [T, outDim]);
      }
    }
  });

  it("SwiGLU's exp (math.mjs, the same operations in wasm/matmul.ts) is within 2 ulp of Math.exp", () => {
    // The runner's own exp: Math.exp may differ between engines, and the WebAssembly SwiGLU has none to
    // call. Math.exp is V8's fdlibm port, itself within an ulp of e^z, so 2 ulp (2^-51 relative) holds ours
    // to about 3 of the true value: invisible once silu(g) · up is rounded to float32 (2^-24). The sweep
    // covers every result that is a normal float64; beyond, 0 and +Infinity as Math.exp gives them.
    let worst = 0;
    const steps = 400_000;
    for (let i = 0; i <= steps; i++) {
      const z = -708 + (1417.7 * i) / steps + (i % 7) * 1e-9;
      const want = Math.exp(z);
      worst = Math.max(worst, Math.abs(exp(z) - want) / want);
    }
    for (const z of [0, 1e-300, -1e-300, 0.5 * Math.LN2, -0.5 * Math.LN2, 1, -1, 88.7, -87.3, 709.7]) {
      worst = Math.max(worst, Math.abs(exp(z) - Math.exp(z)) / Math.exp(z));
    }
    console.log(`exp: worst relative error against Math.exp ${(worst / 2 ** -52).toFixed(2)} ulp (2^-52)`);
    expect(worst).toBeLessThan(2 * 2 ** -52);
    expect(exp(0)).toBe(1);
    for (const z of [-746, -1e6, Number.NEGATIVE_INFINITY]) expect(exp(z)).toBe(0);
    for (const z of [710, 1e6, Number.POSITIVE_INFINITY]) expect(exp(z)).toBe(Number.POSITIVE_INFINITY);
    expect(exp(Number.NaN)).toBeNaN();
  });

  it("wasm/matmul.ts's exp gives math.mjs's bits, two lanes and one", async () => {
    const rng = new Rng(2124);
    const zs = Float64Array.from({ length: 20_001 }, (_, i) =>
      i < 20_000 ? -760 + (1480 * i) / 20_000 + rng.normal() * 1e-3 : 0.1,
    );
    zs.set([0, -0, 1e-300, -746, 710, Number.POSITIVE_INFINITY, Number.NEGATIVE_INFINITY, Number.NaN], 0);
    const expected = zs.map(exp);
    for (const file of ['matmul.wasm']) {
      const memory = new WebAssembly.Memory({ initial: 4 });
      const bytes = readFileSync(fileURLToPath(new URL(`../examples/model/wasm/${file}`, import.meta.url)));
      const { instance } = await WebAssembly.instantiate(bytes, { env: { memory } });
      const kernel = instance.exports.exp as (at: number, n: number) => void;
      new Float64Array(memory.buffer, 0, zs.length).set(zs); // an odd count: the last one alone
      kernel(0, zs.length);
      expectBitIdentical(new Float64Array(memory.buffer, 0, zs.length), expected, `${file} exp`);
    }
  });

  it('the MLP in one call of the module gives the bits of linear, swiglu, linear in JavaScript', async () => {
    // wasm/matmul.ts's `mlp` keeps the gate and up values in its memory and runs SwiGLU there, with an
    // exp of the same operations as math.mjs's; gate values from 1e-20 to 1e20 in magnitude drive that exp
    // through its whole range (0, +Infinity and the numbers between), odd sizes through its one-lane tail.
    const mlpJs = mlpOf(linear);
    const builds = { simd: await linearFor(undefined) };
    const rng = new Rng(2123);
    const wide = (n: number) => Float32Array.from({ length: n }, () => rng.normal() * 10 ** rng.int(-10, 10));
    for (let trial = 0; trial < 52; trial++) {
      const T = 1 + (trial % 13);
      const dim = rng.int(1, 40);
      const hidden = rng.int(1, 60);
      const withBias = trial % 2 === 1;
      const w = {
        wGate: wide(hidden * dim),
        wUp: rng.randn(hidden * dim),
        wDown: rng.randn(dim * hidden),
        bGate: withBias ? wide(hidden) : null,
        bUp: withBias ? rng.randn(hidden) : null,
        bDown: withBias ? rng.randn(dim) : null,
      };
      const x = wide(T * dim);
      const scratch = () => ({ gate: new Float32Array(T * hidden), up: new Float32Array(T * hidden) });
      const expected = new Float32Array(T * dim);
      mlpJs(x, T, w, dim, hidden, expected, scratch());
      for (const [name, { mlp, usage }] of Object.entries(builds)) {
        const before = usage.wasm;
        const got = new Float32Array(T * dim);
        mlp(x, T, w, dim, hidden, got, scratch());
        expectBitIdentical(got, expected, `${name} mlp, ${T} tokens, ${dim} → ${hidden} → ${dim}`, [T, dim]);
        expect(usage.wasm - before).toBe(3);
      }
    }
  });

  it('takes a compiled module (what a Worker bundle imports)', async () => {
    const bytes = readFileSync(fileURLToPath(new URL('../examples/model/wasm/matmul.wasm', import.meta.url)));
    const module = await WebAssembly.compile(bytes);
    const fromModule = await modelFromBytes(config, weights, { matmul: module });
    expect(fromModule.info.matmul).toBe('wasm');
    expectBitIdentical(fromModule.logits(heldOut.slice(0, 20)), prefill32.subarray(0, 20 * vocab), 'logits', [
      20,
      vocab,
    ]);
  });
});

describe('the JavaScript fallback of the linear layers', () => {
  // Where the WebAssembly matmul cannot run, the runner computes in JavaScript without a word: a module
  // that is missing, or a memory that refuses to grow (the module's memory is imported, so
  // `matmulMaxBytes` gives it a real maximum and the engine's grow fails as it would at 4 GiB). Both paths
  // sum each output in the same order, so every token must be the same; `matmulUsage` shows which path
  // each call took, so these cases cannot pass by never leaving WebAssembly.
  const prompt = bytes('the people of the United States, the people of the United States, the people of');
  let greedy: number[];
  beforeAll(async () => {
    greedy = await model.generate(prompt, { maxNewTokens: 40 });
  });
  /** The model's greedy tokens, with and without lookup, must be the wasm model's. */
  const expectSameTokens = async (other: Model) => {
    expect(await other.generate(prompt, { maxNewTokens: 40 })).toEqual(greedy);
    expect(await other.generate(prompt, { maxNewTokens: 40, lookup: true })).toEqual(greedy);
    expect(await other.generate(prompt, { maxNewTokens: 40, lookup: { minNgram: 1, adaptive: false } })).toEqual(
      greedy,
    );
  };

  it('a module that is not there: JavaScript runs every call, the same logits and tokens', async () => {
    const missing = new URL('./no-such-folder/matmul.wasm', import.meta.url);
    const fallback = await modelFromBytes(config, weights, { matmul: missing });
    expect(fallback.info.matmul).toBe('js');
    expectBitIdentical(fallback.logits(heldOut), prefill32, 'logits without the module', [heldOut.length, vocab]);
    await expectSameTokens(fallback);
    expect(fallback.matmulUsage).toEqual({ wasm: 0, js: 0, memoryBytes: 0 });
  });

  it('a memory that may not grow at all, or only to part of the weights: the same logits and tokens', async () => {
    const full = await modelFromBytes(config, weights, {});
    full.logits(heldOut);
    const needed = full.matmulUsage.memoryBytes; // the weights and the scratch of a 64-token chunk
    for (const maxBytes of [65536, Math.floor(needed / 2)]) {
      const capped = await modelFromBytes(config, weights, { matmulMaxBytes: maxBytes });
      expect(capped.info.matmul).toBe('wasm');
      expectBitIdentical(capped.logits(heldOut), prefill32, `logits, memory at most ${maxBytes} bytes`, [
        heldOut.length,
        vocab,
      ]);
      await expectSameTokens(capped);
      const { wasm, js, memoryBytes } = capped.matmulUsage;
      expect(memoryBytes).toBeLessThanOrEqual(maxBytes);
      expect(js).toBeGreaterThan(0); // calls with weights that did not fit
      expect(wasm).toBeGreaterThan(0); // and the small ones that did (k and v of layer 0 fit in one page)
    }
  });

  it('a memory that holds the weights but cannot grow the scratch of a longer call: that call in JavaScript', async () => {
    // short calls first place every weight and the scratch of 4 tokens; capped there, the 64-token chunks
    // of a prefill need more scratch than the memory may grow to
    const short = async (m: Model) => m.generate(prompt.slice(0, 4), { maxNewTokens: 4 });
    const sized = await modelFromBytes(config, weights, {});
    const tokens = await short(sized);
    const capped = await modelFromBytes(config, weights, { matmulMaxBytes: sized.matmulUsage.memoryBytes });
    expect(await short(capped)).toEqual(tokens);
    expect(capped.matmulUsage.js).toBe(0);
    expectBitIdentical(capped.logits(heldOut), prefill32, 'logits, scratch refused', [heldOut.length, vocab]);
    expect(capped.matmulUsage.js).toBeGreaterThan(0);
    await expectSameTokens(capped);
  });

  it('names a maximum that is not one', async () => {
    await expect(modelFromBytes(config, weights, { matmulMaxBytes: 1000 })).rejects.toThrow(
      /options\.matmulMaxBytes must be a number >= 65536, got 1000/,
    );
  });
});

describe('generate', () => {
  it('sampling: the same seed gives the same tokens, topK 1 is greedy, temperature 0 is greedy', async () => {
    const ids = greedyPrompt;
    const a = await model.generate(ids, { maxNewTokens: 32, temperature: 1, seed: 3 });
    expect(await model.generate(ids, { maxNewTokens: 32, temperature: 1, seed: 3 })).toEqual(a);
    expect(await model.generate(ids, { maxNewTokens: 32, temperature: 1, seed: 4 })).not.toEqual(a);
    const greedy = greedyReference.slice(0, 32);
    expect(await model.generate(ids, { maxNewTokens: 32, temperature: 0.7, topK: 1, seed: 9 })).toEqual(greedy);
    expect(await model.generate(ids, { maxNewTokens: 32, temperature: 0 })).toEqual(greedy);
  });

  it('continues a cache that holds a prefix of the ids, as a fresh cache would', async () => {
    const cache = model.createCache({ maxTokens: 256 });
    expect(await model.generate(greedyPrompt.slice(0, 20), { maxNewTokens: 0, cache })).toEqual([]);
    expect(cache.length).toBe(20);
    const continued = await model.generate(greedyPrompt, { maxNewTokens: 32, cache });
    expect(continued).toEqual(greedyReference.slice(0, 32));
    cache.dispose?.();
  });

  it('stops after a stop token, which it returns', async () => {
    const stop = greedyReference[10];
    const out = await model.generate(greedyPrompt, { maxNewTokens: 64, stopTokens: [stop], lookup: true });
    expect(out).toEqual(greedyReference.slice(0, greedyReference.indexOf(stop) + 1));
  });

  it('ends when the context is full', async () => {
    const short = await modelFromBytes({ ...config, max_position_embeddings: 40 }, weights);
    const ids = [...heldOut.slice(0, 20), ...heldOut.slice(0, 10)];
    for (const lookup of [false, true]) {
      const out = await short.generate(ids, { maxNewTokens: 50, lookup });
      expect(out.length).toBe(11); // the last one is chosen from the logits of position 39
      expect(out).toEqual(await model.generate(ids, { maxNewTokens: 11 }));
    }
  });

  it('names what is wrong', async () => {
    await expect(model.generate(greedyPrompt, { maxNewTokens: -1 })).rejects.toThrow(/maxNewTokens/);
    await expect(model.generate(greedyPrompt, { maxNewTokens: 4, temperature: -1 })).rejects.toThrow(/temperature/);
    expect(() => model.logits([1, vocab])).toThrow(RangeError);
    expect(() => model.logits([1, vocab])).toThrow(/ids\[1\]/);
  });
});

describe('attentionOf (the pictures of the browser example)', () => {
  it("gives a layer's causal softmax weights, and the same whether RoPE is applied in JS or by the cache", async () => {
    const ids = heldOut.slice(0, 30);
    const heads: number = config.num_attention_heads;
    const attention = model.attentionOf(ids, 1);
    expect(attention.length).toBe(30 * heads * 30);
    for (let t = 0; t < 30; t++) {
      for (let h = 0; h < heads; h++) {
        const row = attention.subarray((t * heads + h) * 30, (t * heads + h + 1) * 30);
        expect(row.slice(t + 1).every((w) => w === 0)).toBe(true);
        expect(row.reduce((a, w) => a + w, 0)).toBeCloseTo(1, 5);
      }
    }
    // llama3 scaling with factor 1 is plain RoPE: rotated in JS for one model, by the cache for the other
    const byCache = await modelFromBytes({ ...config, rope_scaling: null }, weights);
    const byJs = await modelFromBytes({ ...config, rope_scaling: { ...config.rope_scaling, factor: 1 } }, weights);
    expect(maxAbsDiff(byCache.attentionOf(ids, 2), byJs.attentionOf(ids, 2))).toBeLessThan(1e-5);
  });
});

describe('checkpoints: dtypes, tied and untied embeddings, RoPE', () => {
  const tensors = readSafetensors(weights);

  /** A .safetensors file of the given tensors, each stored in `dtype` (values already representable). */
  function writeSafetensors(entries: [string, { shape: number[]; data: Float32Array }][], dtype: 'F32' | 'BF16') {
    const width = dtype === 'F32' ? 4 : 2;
    const header: Record<string, unknown> = {};
    let offset = 0;
    for (const [name, t] of entries) {
      header[name] = { dtype, shape: t.shape, data_offsets: [offset, offset + t.data.length * width] };
      offset += t.data.length * width;
    }
    const json = new TextEncoder().encode(JSON.stringify(header));
    const out = new Uint8Array(8 + json.length + offset);
    const view = new DataView(out.buffer);
    view.setBigUint64(0, BigInt(json.length), true);
    out.set(json, 8);
    let p = 8 + json.length;
    for (const [, t] of entries) {
      // little-endian host: float32 bytes as they are; bfloat16 is the high half of each float32
      const bits = new Uint32Array(Float32Array.from(t.data).buffer);
      const stored = dtype === 'F32' ? bits : Uint16Array.from(bits, (x) => x >>> 16);
      out.set(new Uint8Array(stored.buffer), p);
      p += t.data.length * width;
    }
    return out;
  }

  it('bfloat16 weights give the bits of the same values stored as float32; untied equals tied', async () => {
    // round every weight down to bfloat16 (drop the low 16 bits), then store it both ways
    const rounded = [...tensors].map(([name, t]): [string, { shape: number[]; data: Float32Array }] => {
      const data = Float32Array.from(t.data);
      const bits = new Uint32Array(data.buffer);
      for (let i = 0; i < bits.length; i++) bits[i] &= 0xffff0000;
      return [name, { shape: t.shape, data }];
    });
    const asFloat32 = await modelFromBytes(config, writeSafetensors(rounded, 'F32'));
    const asBfloat16 = await modelFromBytes(config, writeSafetensors(rounded, 'BF16'));
    const embedding = rounded.find(([name]) => name === 'model.embed_tokens.weight')![1];
    const untied = await modelFromBytes(
      { ...config, tie_word_embeddings: false },
      writeSafetensors([...rounded, ['lm_head.weight', embedding]], 'BF16'),
    );
    const ids = heldOut.slice(0, 24);
    const expected = asFloat32.logits(ids);
    expect(asBfloat16.logits(ids)).toEqual(expected);
    expect(untied.logits(ids)).toEqual(expected);
    // and bfloat16 weights stay close to the float32 model (8 mantissa bits: logits move by ~0.1)
    expect(maxAbsDiff(expected, prefill32.subarray(0, 24 * vocab))).toBeLessThan(1);
  });

  it('reads float16 and bfloat16 numbers exactly', () => {
    expect([0x3c00, 0xc000, 0x0001, 0x03ff, 0x0400, 0x7bff, 0x3555].map(halfToFloat)).toEqual([
      1,
      -2,
      2 ** -24,
      1023 * 2 ** -24,
      2 ** -14,
      65504,
      0.333251953125,
    ]);
    expect(halfToFloat(0x7c00)).toBe(Number.POSITIVE_INFINITY);
    expect(halfToFloat(0xfc00)).toBe(Number.NEGATIVE_INFINITY);
    expect(halfToFloat(0x7e00)).toBeNaN();
    const header = new TextEncoder().encode(
      JSON.stringify({
        a: { dtype: 'F16', shape: [2], data_offsets: [0, 4] },
        b: { dtype: 'BF16', shape: [2], data_offsets: [4, 8] },
        c: { dtype: 'F32', shape: [1, 1], data_offsets: [8, 12] },
      }),
    );
    const file = new Uint8Array(8 + header.length + 12);
    const view = new DataView(file.buffer);
    view.setBigUint64(0, BigInt(header.length), true);
    file.set(header, 8);
    const at = 8 + header.length;
    view.setUint16(at, 0x3c00, true); // 1
    view.setUint16(at + 2, 0xb800, true); // -0.5
    view.setUint16(at + 4, 0x4049, true); // 3.140625
    view.setUint16(at + 6, 0xbf80, true); // -1
    view.setFloat32(at + 8, 1.5, true);
    const read = readSafetensors(file);
    expect(Array.from(read.get('a')!.data)).toEqual([1, -0.5]);
    expect(Array.from(read.get('b')!.data)).toEqual([3.140625, -1]);
    expect(read.get('c')!.shape).toEqual([1, 1]);
    expect(Array.from(read.get('c')!.data)).toEqual([1.5]);
    expect(() => readSafetensors(file.subarray(0, file.length - 1))).toThrow(/byte range/);
  });

  it("maps the config through cacheOptionsFromConfig (llama3 scaling in the cache's rope), and rotating in JS agrees", async () => {
    const mapped = cacheOptionsFor(config, { maxTokens: 256 });
    expect(mapped.rotateInJs).toBeNull();
    expect(mapped.cacheOptions).toEqual(cacheOptionsFromConfig(config, { maxTokens: 256, dtype: 'float32' }));
    expect(mapped.cacheOptions.rope?.scaling?.type).toBe('llama3');

    const invFreq = cacheOptionsFor(config, { maxTokens: 256, ropeInJs: true }).rotateInJs!;
    const headDim = config.head_dim;
    const theta = config.rope_theta;
    const { factor } = config.rope_scaling;
    // the highest frequency is kept, the lowest divided by factor, the ones between blended
    expect(invFreq[0]).toBeCloseTo(1, 12);
    expect(invFreq[headDim / 2 - 1]).toBeCloseTo(theta ** (-(headDim - 2) / headDim) / factor, 15);
    for (let i = 0; i < headDim / 2; i++) {
      const base = theta ** ((-2 * i) / headDim);
      expect(invFreq[i]).toBeLessThanOrEqual(base);
      expect(invFreq[i]).toBeGreaterThanOrEqual(base / factor - 1e-18);
    }

    // the cache's scaled rope and the runner's own rotation are one rotation with other roundings (float32
    // cos/sin tables in the kernel, float64 angles in JS): both stay within the reference's 1e-4
    const byCache = await modelFromBytes(config, weights);
    const byJs = await modelFromBytes(config, weights, { ropeInJs: true });
    const ids = heldOut.slice(0, 96);
    expect(maxAbsDiff(byCache.logits(ids), byJs.logits(ids))).toBeLessThan(1e-4);
  });

  it('refuses what it does not implement, naming it', async () => {
    expect(() =>
      cacheOptionsFor({ ...config, rope_scaling: { rope_type: 'yarn' } }, { maxTokens: 8, ropeInJs: true }),
    ).toThrow(/yarn/);
    expect(() => cacheOptionsFor({ ...config, rope_scaling: { rope_type: 'dynamic' } }, { maxTokens: 8 })).toThrow(
      /rope_type|dynamic/,
    );
    await expect(modelFromBytes({ ...config, hidden_act: 'gelu' }, weights)).rejects.toThrow(/hidden_act/);
    await expect(modelFromBytes({ ...config, hidden_size: config.hidden_size * 2 }, weights)).rejects.toThrow(
      /model\.embed_tokens\.weight/,
    );
  });
});

describe('the CLI', () => {
  it('continues a byte-level prompt with the greedy tokens', () => {
    // the CLI starts the prompt with the config's bos_token_id, as the reference's prompt does
    expect(greedyPrompt[0]).toBe(config.bos_token_id);
    const prompt = new TextDecoder().decode(new Uint8Array(greedyPrompt.slice(1)));
    const cli = fileURLToPath(new URL('../examples/model/cli.mjs', import.meta.url));
    const run = spawnSync(process.execPath, [cli, dir, '--prompt', prompt, '--max-new-tokens', '40', '--lookup'], {
      encoding: 'utf8',
      timeout: 30_000,
    });
    expect(run.status, run.stderr).toBe(0);
    // it stops after an end-of-text token and prints only bytes
    const eos = greedyReference.indexOf(config.eos_token_id);
    const expected = greedyReference.slice(0, eos >= 0 && eos < 40 ? eos + 1 : 40);
    const text = new TextDecoder().decode(new Uint8Array(expected.filter((id) => id < 256)));
    expect(run.stdout).toBe(`${prompt}${text}\n`);
    expect(run.stderr).toMatch(new RegExp(`^${expected.length} tokens in .* tokens/s`));
  });
});
