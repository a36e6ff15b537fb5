// A Llama-family model runner around wasm-attention's KVCache: loads a checkpoint in Hugging Face layout
// (config.json + model.safetensors) and runs the forward pass in JavaScript (embeddings, RMSNorm,
// q/k/v projections, attention over the cache, output projection, SwiGLU MLP, the unembedding; the
// linear layers in WebAssembly SIMD where that loads, matmul.mjs), with greedy or sampled generation and
// prompt-lookup speculative decoding.
//
//   const model = await loadModel('examples/model/tiny');
//   const logits = model.logits(ids);                          // [ids.length][vocab], teacher-forced
//   const next = await model.generate(ids, { maxNewTokens: 64, lookup: true });
import { attentionWeights, cacheOptionsFromConfig, init, KVCache } from 'wasm-attention';
import { DraftPolicy, draftByLookup, lookupOptions } from './lookup.mjs';
import { linearFor } from './matmul.mjs';
import { addInto, rmsNorm } from './math.mjs';
import { llama3InverseFrequencies, Rotary } from './rope.mjs';
import { readSafetensors } from './safetensors.mjs';
import { TokenPicker } from './sample.mjs';

/** Tokens per forward call: a longer prompt runs as several calls (a chunked prefill, the same bits). */
const CHUNK = 64;

/**
 * The clock that times forward passes for prompt lookup's DraftPolicy, in ms: the process's CPU time where
 * the runtime gives it (Node, Bun, Deno), else the wall clock. On a busy machine the wall clock of a pass
 * includes the time slices other processes took, and their rhythm can fall on the same kind of pass every
 * time (a probe every 8th step took 4 lone steps by the clock, 1.3 in CPU time).
 */
const passClock = (() => {
  const cpuUsage = globalThis.process?.cpuUsage;
  if (typeof cpuUsage !== 'function') return () => performance.now();
  return () => {
    const { user, system } = cpuUsage.call(globalThis.process);
    return (user + system) / 1000;
  };
})();

/**
 * @typedef {{ attend(layer: number, q: Float32Array, k: Float32Array, v: Float32Array, out?: Float32Array): Float32Array,
 *   truncate(n: number): void, dispose?(): void, readonly length: number }} AttentionCache
 * @typedef {{ dtype?: 'float32' | 'int8' | 'bfloat16' | 'int4', cacheClass?: new (options: any) => AttentionCache,
 *   threads?: number | 'auto', maxTokens?: number, ropeInJs?: boolean,
 *   matmul?: 'wasm' | 'js' | WebAssembly.Module | URL, matmulMaxBytes?: number }} LoadOptions
 *   matmul: the linear layers in WebAssembly SIMD (the default, where it loads; a Worker passes the
 *   imported wasm/matmul.wasm; a URL says where the module is) or in JavaScript; the same bits either way,
 *   and JavaScript wherever the module cannot be loaded (matmul.mjs)
 *   matmulMaxBytes: the most bytes the module's memory may grow to (it holds a copy of the weights);
 *   weights and scratch that do not fit are computed with in JavaScript (`model.matmulUsage` counts the calls)
 *   ropeInJs: rotate q and k in JavaScript and give the cache none (the default for a `cacheClass`
 *   other than KVCache, which may not know `rope.scaling`)
 *   maxTokens: the longest context (default config.max_position_embeddings; past it the model runs
 *   on positions it was not trained for, which only timing measurements want)
 * @typedef {{ maxNewTokens: number, temperature?: number, topK?: number, seed?: number,
 *   onToken?: (id: number) => void | Promise<void>, stopTokens?: number[], lookup?: boolean | Partial<import('./lookup.mjs').LookupOptions>,
 *   cache?: AttentionCache, stats?: { forwards: number, drafted: number, accepted: number, passes?: number[] } }} GenerateOptions
 *   stats: counts of forward passes (the prompt's included), drafted and accepted tokens; `passes`, if
 *   given, gets the token count of each pass after the prompt's (1: a lone step)
 */

/**
 * Loads a checkpoint from a folder (a path in Node, Deno and Bun; a URL in a browser or anywhere with
 * fetch) holding config.json and model.safetensors.
 * @param {string | URL} dir
 * @param {LoadOptions} [options]
 */
export async function loadModel(dir, options = {}) {
  const [configBytes, weightBytes] = await Promise.all([
    readModelFile(dir, 'config.json'),
    readModelFile(dir, 'model.safetensors'),
  ]);
  return modelFromBytes(JSON.parse(new TextDecoder().decode(configBytes)), weightBytes, options);
}

/**
 * The model from a parsed config.json and the bytes of model.safetensors (for bundles that carry them).
 * @param {Record<string, any>} config
 * @param {Uint8Array} safetensors
 * @param {LoadOptions} [options]
 */
export async function modelFromBytes(config, safetensors, options = {}) {
  // a runner given another attention (the bench's plain-JS cache) never loads the kernel
  const info = options.cacheClass
    ? { build: 'plain JS', threads: 1 }
    : await init({ threads: options.threads ?? 'auto' });
  const { linear, mlp, kind, usage, build } = await linearFor(options.matmul, {
    maxBytes: options.matmulMaxBytes,
  });
  const model = new LlamaModel(
    config,
    readSafetensors(safetensors),
    options,
    { ...info, matmul: kind, matmulBuild: build },
    { linear, mlp },
  );
  model.matmulUsage = usage;
  return model;
}

/**
 * Reads one file of a model folder.
 * @param {string | URL} dir
 * @param {string} name
 * @returns {Promise<Uint8Array>}
 */
async function readModelFile(dir, name) {
  const text = String(dir);
  const fs = globalThis.process?.getBuiltinModule?.('node:fs/promises');
  if (fs && !/^(https?|blob|data):/.test(text)) {
    const path = text.startsWith('file:') ? new URL(name, text.endsWith('/') ? text : `${text}/`) : `${text}/${name}`;
    return new Uint8Array(await fs.readFile(path));
  }
  const url = new URL(name, text.endsWith('/') ? text : `${text}/`);
  const response = await fetch(url);
  if (!response.ok) throw new Error(`loadModel: ${url} answered ${response.status} ${response.statusText}`);
  return new Uint8Array(await response.arrayBuffer());
}

/**
 * The KVCache options a config asks for: the one place that maps a Hugging Face config to the cache. By
 * default the package's `cacheOptionsFromConfig` does it whole (Llama 3.1's scaled RoPE becomes the
 * cache's `rope.scaling`). With `ropeInJs` the cache gets no `rope` and the runner rotates q and k itself
 * with the config's inverse frequencies (`rotateInJs`): for an attention that only takes rotated inputs,
 * such as the bench's plain-JS cache.
 * @param {Record<string, any>} config
 * @param {{ maxTokens: number, dtype?: 'float32' | 'int8' | 'bfloat16' | 'int4', ropeInJs?: boolean }} options
 * @returns {{ cacheOptions: import('wasm-attention').KVCacheOptions, rotateInJs: Float64Array | null }}
 */
export function cacheOptionsFor(config, { maxTokens, dtype = 'float32', ropeInJs = false }) {
  if (!ropeInJs) return { cacheOptions: cacheOptionsFromConfig(config, { maxTokens, dtype }), rotateInJs: null };
  const heads = config.num_attention_heads;
  const cacheOptions = {
    layers: config.num_hidden_layers,
    heads,
    kvHeads: config.num_key_value_heads ?? heads,
    headDim: config.head_dim ?? config.hidden_size / heads,
    maxTokens,
    dtype,
    // Llama's scores are q·k / sqrt(headDim), the cache's default scale
  };
  return { cacheOptions, rotateInJs: inverseFrequencies(config) };
}

/**
 * The config's RoPE: base, type and scaling parameters (transformers 5 keeps them in `rope_parameters`,
 * 4.x in `rope_theta` and `rope_scaling`).
 * @param {Record<string, any>} config
 */
function ropeOf(config) {
  const parameters = config.rope_parameters ?? { rope_theta: config.rope_theta, ...config.rope_scaling };
  const type = parameters.rope_type ?? parameters.type ?? 'default';
  if (type !== 'default' && type !== 'llama3') {
    throw new RangeError(`loadModel: config rope type ${JSON.stringify(type)} is not supported (default, llama3)`);
  }
  return { theta: parameters.rope_theta ?? 10000, type, parameters };
}

/**
 * The inverse frequencies of the config's RoPE over a whole head (whoever applies it).
 * @param {Record<string, any>} config
 * @returns {Float64Array}
 */
function inverseFrequencies(config) {
  const headDim = config.head_dim ?? config.hidden_size / config.num_attention_heads;
  const { theta, type, parameters } = ropeOf(config);
  if (type === 'llama3') return llama3InverseFrequencies(theta, headDim, parameters);
  return Float64Array.from({ length: headDim / 2 }, (_, i) => theta ** ((-2 * i) / headDim));
}

/** Checks a config for what this runner implements, naming the key that is off. @param {Record<string, any>} config */
function checkConfig(config) {
  const act = config.hidden_act ?? config.hidden_activation ?? 'silu';
  if (act !== 'silu') throw new RangeError(`loadModel: config.hidden_act must be "silu" (SwiGLU), got ${act}`);
  for (const key of ['vocab_size', 'hidden_size', 'intermediate_size', 'num_hidden_layers', 'num_attention_heads']) {
    if (!(Number.isInteger(config[key]) && config[key] > 0)) {
      throw new RangeError(`loadModel: config.${key} must be a positive integer, got ${config[key]}`);
    }
  }
}

class LlamaModel {
  /**
   * @param {Record<string, any>} config
   * @param {Map<string, { shape: number[], data: Float32Array }>} tensors
   * @param {LoadOptions} options
   * @param {{ build: string, threads: number, matmul: 'wasm' | 'js', matmulBuild: string }} info the kernel's
   *   build and threads (from init), and what runs the linear layers (matmulBuild: which module, matmul.mjs)
   * @param {{ linear: import('./matmul.mjs').Linear, mlp: import('./matmul.mjs').Mlp }} kernels the linear
   *   layer and the SwiGLU MLP (matmul.mjs)
   */
  constructor(config, tensors, options, info, { linear, mlp }) {
    checkConfig(config);
    this.config = config;
    this.info = info;
    this.linear = linear;
    this.mlp = mlp;
    this.dtype = options.dtype ?? 'float32';
    this.cacheClass = options.cacheClass ?? KVCache;
    this.ropeInJs = options.ropeInJs ?? this.cacheClass !== KVCache;
    const vocab = config.vocab_size;
    const dim = config.hidden_size;
    const heads = config.num_attention_heads;
    const kvHeads = config.num_key_value_heads ?? heads;
    const headDim = config.head_dim ?? dim / heads;
    const hidden = config.intermediate_size;
    this.shape = { vocab, dim, heads, kvHeads, headDim, hidden, layers: config.num_hidden_layers };
    this.eps = config.rms_norm_eps ?? 1e-6;
    this.maxPositions = options.maxTokens ?? config.max_position_embeddings ?? 2048;

    /** @param {string} name @param {number[]} shape */
    const weight = (name, shape) => {
      const tensor = tensors.get(name);
      if (!tensor) throw new RangeError(`loadModel: model.safetensors has no tensor ${name}`);
      if (tensor.shape.join() !== shape.join()) {
        throw new RangeError(`loadModel: tensor ${name} has shape [${tensor.shape}], the config implies [${shape}]`);
      }
      return tensor.data;
    };
    /** @param {string} name @param {number} n */
    const bias = (name, n) => (tensors.has(name) ? weight(name, [n]) : null);
    /** numbers in the checkpoint (a tied output projection counted once) */
    this.parameters = [...tensors.values()].reduce((n, t) => n + t.data.length, 0);
    this.embedding = weight('model.embed_tokens.weight', [vocab, dim]);
    // tied embeddings: the output projection is the embedding matrix (SmolLM2, Llama 3.2 1B)
    this.lmHead = tensors.has('lm_head.weight') ? weight('lm_head.weight', [vocab, dim]) : this.embedding;
    this.finalNorm = weight('model.norm.weight', [dim]);
    this.layers = Array.from({ length: config.num_hidden_layers }, (_, l) => {
      const p = `model.layers.${l}.`;
      return {
        inputNorm: weight(`${p}input_layernorm.weight`, [dim]),
        wq: weight(`${p}self_attn.q_proj.weight`, [heads * headDim, dim]),
        bq: bias(`${p}self_attn.q_proj.bias`, heads * headDim),
        wk: weight(`${p}self_attn.k_proj.weight`, [kvHeads * headDim, dim]),
        bk: bias(`${p}self_attn.k_proj.bias`, kvHeads * headDim),
        wv: weight(`${p}self_attn.v_proj.weight`, [kvHeads * headDim, dim]),
        bv: bias(`${p}self_attn.v_proj.bias`, kvHeads * headDim),
        wo: weight(`${p}self_attn.o_proj.weight`, [dim, heads * headDim]),
        bo: bias(`${p}self_attn.o_proj.bias`, dim),
        postNorm: weight(`${p}post_attention_layernorm.weight`, [dim]),
        wGate: weight(`${p}mlp.gate_proj.weight`, [hidden, dim]),
        wUp: weight(`${p}mlp.up_proj.weight`, [hidden, dim]),
        wDown: weight(`${p}mlp.down_proj.weight`, [dim, hidden]),
        bGate: bias(`${p}mlp.gate_proj.bias`, hidden),
        bUp: bias(`${p}mlp.up_proj.bias`, hidden),
        bDown: bias(`${p}mlp.down_proj.bias`, dim),
      };
    });

    const { rotateInJs } = cacheOptionsFor(config, { maxTokens: 1, dtype: this.dtype, ropeInJs: this.ropeInJs });
    this.rotary = rotateInJs ? new Rotary(rotateInJs, headDim) : null;

    // scratch for CHUNK tokens, allocated once; views for each token count are made on first use
    const qDim = heads * headDim;
    const kvDim = kvHeads * headDim;
    this.buffers = {
      x: new Float32Array(CHUNK * dim),
      h: new Float32Array(CHUNK * dim),
      q: new Float32Array(CHUNK * qDim),
      k: new Float32Array(CHUNK * kvDim),
      v: new Float32Array(CHUNK * kvDim),
      attended: new Float32Array(CHUNK * qDim),
      projected: new Float32Array(CHUNK * dim),
      gate: new Float32Array(CHUNK * hidden),
      up: new Float32Array(CHUNK * hidden),
    };
    /** @type {Map<number, { q: Float32Array, k: Float32Array, v: Float32Array, attended: Float32Array }>} */
    this.views = new Map();
    /** @type {{ layer: number, q: Float32Array, k: Float32Array, v: Float32Array } | null} attentionOf's copy of one layer's inputs */
    this.capture = null;
    /** time spent inside attend (ms), for the bench's share of attention */
    this.attentionMs = 0;
    this.timeAttention = false;
    /** @type {import('./matmul.mjs').MatmulUsage} where the linear layers ran (set by modelFromBytes) */
    this.matmulUsage = { wasm: 0, js: 0, memoryBytes: 0 };
  }

  /**
   * A fresh cache for this model, holding at most `maxTokens` positions.
   * @param {{ maxTokens?: number }} [options]
   * @returns {AttentionCache}
   */
  createCache({ maxTokens = this.maxPositions } = {}) {
    const { cacheOptions } = cacheOptionsFor(this.config, { maxTokens, dtype: this.dtype, ropeInJs: this.ropeInJs });
    return new this.cacheClass(cacheOptions);
  }

  /** Attention-sized views of the scratch for T tokens (the cache checks exact lengths). @param {number} T */
  viewsFor(T) {
    let views = this.views.get(T);
    if (!views) {
      const { heads, kvHeads, headDim } = this.shape;
      const b = this.buffers;
      views = {
        q: b.q.subarray(0, T * heads * headDim),
        k: b.k.subarray(0, T * kvHeads * headDim),
        v: b.v.subarray(0, T * kvHeads * headDim),
        attended: b.attended.subarray(0, T * heads * headDim),
      };
      this.views.set(T, views);
    }
    return views;
  }

  /**
   * Layer `w`'s q, k and v (into `q`, `k`, `v`) of the first `rows` rows of the residual stream.
   * @param {any} w @param {number} rows @param {Float32Array} q @param {Float32Array} k @param {Float32Array} v
   */
  projectQkv(w, rows, q, k, v) {
    const { dim, heads, kvHeads, headDim } = this.shape;
    const { x, h } = this.buffers;
    rmsNorm(x, rows, dim, w.inputNorm, this.eps, h);
    this.linear(h, rows, w.wq, dim, heads * headDim, w.bq, q);
    this.linear(h, rows, w.wk, dim, kvHeads * headDim, w.bk, k);
    this.linear(h, rows, w.wv, dim, kvHeads * headDim, w.bv, v);
  }

  /**
   * Layer `w`'s output projection of `attended`, then its MLP, each added into the residual stream.
   * @param {any} w @param {number} rows @param {Float32Array} attended
   */
  finishLayer(w, rows, attended) {
    const { dim, heads, headDim, hidden } = this.shape;
    const { x, h, projected } = this.buffers;
    this.linear(attended, rows, w.wo, heads * headDim, dim, w.bo, projected);
    addInto(x, projected, rows * dim);
    rmsNorm(x, rows, dim, w.postNorm, this.eps, h);
    this.mlp(h, rows, w, dim, hidden, projected, this.buffers);
    addInto(x, projected, rows * dim);
  }

  /**
   * Runs T ≤ CHUNK tokens through every layer, appending them to `cache` at its current length, and writes
   * the logits of the last `rows` of them into `logits` from `offset` on.
   * @param {AttentionCache} cache
   * @param {ArrayLike<number>} ids
   * @param {number} from index of the first token in ids
   * @param {number} T
   * @param {Float32Array | null} logits
   * @param {number} rows
   * @param {number} offset
   */
  forwardChunk(cache, ids, from, T, logits, rows, offset) {
    const { vocab, dim, heads, kvHeads, headDim } = this.shape;
    const { x, h } = this.buffers;
    const { q, k, v, attended } = this.viewsFor(T);
    const position = cache.length;
    const qDim = heads * headDim;
    const kvDim = kvHeads * headDim;
    for (let t = 0; t < T; t++) {
      const id = ids[from + t];
      if (!(Number.isInteger(id) && id >= 0 && id < vocab)) {
        throw new RangeError(`token ids[${from + t}] must be an integer from 0 to ${vocab - 1}, got ${id}`);
      }
      x.set(this.embedding.subarray(id * dim, (id + 1) * dim), t * dim);
    }
    for (let l = 0; l < this.layers.length; l++) {
      const w = this.layers[l];
      this.projectQkv(w, T, q, k, v);
      if (this.rotary) {
        this.rotary.rotate(q, heads, position, T);
        this.rotary.rotate(k, kvHeads, position, T);
      }
      if (this.capture?.layer === l) {
        this.capture.q.set(q, position * qDim);
        this.capture.k.set(k, position * kvDim);
        this.capture.v.set(v, position * kvDim);
      }
      if (this.timeAttention) {
        const t0 = performance.now();
        cache.attend(l, q, k, v, attended);
        this.attentionMs += performance.now() - t0;
      } else cache.attend(l, q, k, v, attended);
      this.finishLayer(w, T, attended);
    }
    if (logits && rows > 0) {
      const last = x.subarray((T - rows) * dim, T * dim);
      rmsNorm(last, rows, dim, this.finalNorm, this.eps, h);
      this.linear(h, rows, this.lmHead, dim, vocab, null, logits.subarray(offset, offset + rows * vocab));
    }
  }

  /**
   * Feeds `count` tokens ids[from …] to the cache in calls of at most `perCall` tokens; the logits of the
   * last `rows` of them go to `logits` (rows === count: every token's).
   * @param {AttentionCache} cache
   * @param {ArrayLike<number>} ids
   * @param {number} from
   * @param {number} count
   * @param {Float32Array | null} logits
   * @param {number} rows
   * @param {number} [perCall]
   */
  feed(cache, ids, from, count, logits, rows, perCall = CHUNK) {
    const { vocab } = this.shape;
    const firstRow = count - rows; // index (from `from`) of the first token whose logits are wanted
    for (let done = 0; done < count; ) {
      const T = Math.min(perCall, CHUNK, count - done);
      const wanted = Math.max(0, done + T - Math.max(firstRow, done));
      const offset = Math.max(0, done - firstRow) * vocab;
      this.forwardChunk(cache, ids, from + done, T, logits, wanted, offset);
      done += T;
    }
  }

  /**
   * Teacher-forced logits of every position, on a fresh cache.
   * @param {ArrayLike<number>} ids
   * @param {{ tokensPerCall?: number }} [options] 1: token by token; default: prefill in chunks of 64
   * @returns {Float32Array} [ids.length][vocab]
   */
  logits(ids, { tokensPerCall = CHUNK } = {}) {
    if (ids.length === 0) throw new RangeError('logits: ids must hold at least one token');
    const cache = this.createCache({ maxTokens: ids.length });
    const out = new Float32Array(ids.length * this.shape.vocab);
    try {
      this.feed(cache, ids, 0, ids.length, out, ids.length, tokensPerCall);
    } finally {
      cache.dispose?.();
    }
    return out;
  }

  /**
   * What each query attended to in one layer, for pictures: a teacher-forced pass over `ids` that keeps the
   * layer's q, k and v (rotated by their positions), then the package's attentionWeights of every head.
   * @param {ArrayLike<number>} ids
   * @param {number} layer
   * @returns {Float32Array} [ids.length][heads][ids.length]: row (t, h) sums to 1 over keys 0 … t
   */
  attentionOf(ids, layer) {
    const { heads, kvHeads, headDim, layers } = this.shape;
    if (!(Number.isInteger(layer) && layer >= 0 && layer < layers)) {
      throw new RangeError(`attentionOf: layer must be an integer from 0 to ${layers - 1}, got ${layer}`);
    }
    const T = ids.length;
    const capture = {
      layer,
      q: new Float32Array(T * heads * headDim),
      k: new Float32Array(T * kvHeads * headDim),
      v: new Float32Array(T * kvHeads * headDim),
    };
    const cache = this.createCache({ maxTokens: T });
    this.capture = capture;
    try {
      this.feed(cache, ids, 0, T, null, 0);
    } finally {
      this.capture = null;
      cache.dispose?.();
    }
    if (!this.rotary) {
      // the cache rotated them inside; the same rotation here
      const rotary = new Rotary(inverseFrequencies(this.config), headDim);
      rotary.rotate(capture.q, heads, 0, T);
      rotary.rotate(capture.k, kvHeads, 0, T);
    }
    return attentionWeights(capture.q, capture.k, capture.v, { heads, kvHeads, headDim });
  }

  /**
   * Continues `ids` by up to `maxNewTokens` tokens; greedy unless `temperature` > 0. With `lookup`, drafts
   * come from the context (prompt lookup) and are verified several at a time: the same tokens as without.
   * `onToken` sees each new id as it is chosen (awaited, so a page can render between tokens); generation
   * ends early after any of `stopTokens` (which is returned last), or when the context is full
   * (config.max_position_embeddings tokens, the new ones included).
   * With `cache` (from createCache), continues that cache, which must hold a prefix of ids; it is left
   * holding ids and the new tokens but the last (whose logits were never needed).
   * @param {ArrayLike<number>} ids
   * @param {GenerateOptions} options
   * @returns {Promise<number[]>} the new ids
   */
  async generate(ids, options) {
    const { maxNewTokens } = options;
    if (!(Number.isInteger(maxNewTokens) && maxNewTokens >= 0)) {
      throw new RangeError(`generate: options.maxNewTokens must be an integer >= 0, got ${maxNewTokens}`);
    }
    if (ids.length === 0 || ids.length > this.maxPositions) {
      throw new RangeError(`generate: ids must hold 1 to ${this.maxPositions} tokens (the context), got ${ids.length}`);
    }
    const { vocab } = this.shape;
    const picker = new TokenPicker(vocab, options);
    const lookup = options.lookup ? lookupOptions(options.lookup) : null;
    const stats = options.stats ?? { forwards: 0, drafted: 0, accepted: 0 };
    const onToken = options.onToken ?? (() => {});
    const stopTokens = options.stopTokens ?? [];
    const ownCache = !options.cache;
    const cache =
      options.cache ?? this.createCache({ maxTokens: Math.min(this.maxPositions, ids.length + maxNewTokens) });
    if (cache.length >= ids.length) {
      throw new RangeError(
        `generate: options.cache holds ${cache.length} tokens; ids must extend them (${ids.length})`,
      );
    }
    const rowsMax = (lookup ? lookup.maxDraft : 0) + 1;
    const logits = new Float32Array(rowsMax * vocab);
    const input = new Int32Array(rowsMax); // the tokens of one forward pass: the next one and its drafts
    /** @type {number[]} */
    const tokens = Array.from(ids);
    /** @type {number[]} */
    const generated = [];
    /** @param {number} id */
    const emit = async (id) => {
      tokens.push(id);
      generated.push(id);
      await onToken(id);
      return stopTokens.includes(id);
    };
    try {
      this.feed(cache, tokens, cache.length, tokens.length - cache.length, logits, 1);
      stats.forwards++;
      let row = 0; // the logits row that predicts the next token
      let pending = -1; // a token already chosen (a draft's correction) that has not been through the model
      let stopped = false;
      const policy = lookup ? new DraftPolicy(lookup) : null;
      while (generated.length < maxNewTokens) {
        const next = pending >= 0 ? pending : picker.pick(logits, row * vocab);
        pending = -1;
        if (await emit(next)) break;
        const left = maxNewTokens - generated.length;
        const room = this.maxPositions - cache.length - 1; // positions left for drafts after `next`
        if (left === 0 || room < 0) break;
        // with lookup: the next token plus the drafts that follow it, checked in one forward pass
        const wanted = policy ? Math.min(left, policy.length(), room) : 0;
        const draft = lookup && wanted > 0 ? draftByLookup(tokens, lookup, wanted) : [];
        const position = cache.length; // where `next` goes
        input[0] = next;
        for (let i = 0; i < draft.length; i++) input[i + 1] = draft[i];
        const started = policy ? passClock() : 0;
        this.feed(cache, input, 0, draft.length + 1, logits, draft.length + 1);
        policy?.observe(draft.length + 1, passClock() - started);
        stats.forwards++;
        stats.passes?.push(draft.length + 1);
        stats.drafted += draft.length;
        // row i predicts the token after draft i: keep drafts while they are what the model picks there
        let accepted = 0;
        for (; accepted < draft.length; accepted++) {
          const choice = picker.pick(logits, accepted * vocab);
          if (choice !== draft[accepted]) {
            pending = choice;
            break;
          }
          if (await emit(choice)) {
            stopped = true;
            break;
          }
        }
        stats.accepted += accepted;
        if (accepted < draft.length) cache.truncate(position + 1 + accepted);
        policy?.update(draft.length, accepted);
        if (stopped) break;
        row = accepted;
      }
    } finally {
      if (ownCache) cache.dispose?.();
    }
    return generated;
  }

  /**
   * One token for each of several caches (each at its own position) through every layer: the linear
   * layers take the batch as one matrix of B rows, so each weight is read once for all of them, and each
   * layer's attention is one KVCache.attendMany call (the same bits as each cache alone). Writes the
   * logits of every row into `logits` ([B][vocab]).
   * @param {KVCache[]} caches at most 64
   * @param {ArrayLike<number>} ids one token per cache
   * @param {Float32Array} logits
   */
  forwardMany(caches, ids, logits) {
    const { vocab, dim, heads, kvHeads, headDim } = this.shape;
    const B = caches.length;
    if (B > CHUNK) throw new RangeError(`forwardMany: at most ${CHUNK} caches, got ${B}`);
    const { x, h } = this.buffers;
    const { q, k, v, attended } = this.viewsFor(B);
    const qDim = heads * headDim;
    const kvDim = kvHeads * headDim;
    const positions = caches.map((c) => c.length);
    for (let b = 0; b < B; b++) {
      const id = ids[b];
      if (!(Number.isInteger(id) && id >= 0 && id < vocab)) {
        throw new RangeError(`forwardMany: ids[${b}] must be an integer from 0 to ${vocab - 1}, got ${id}`);
      }
      x.set(this.embedding.subarray(id * dim, (id + 1) * dim), b * dim);
    }
    const items = caches.map((cache, b) => ({
      cache,
      q: q.subarray(b * qDim, (b + 1) * qDim),
      k: k.subarray(b * kvDim, (b + 1) * kvDim),
      v: v.subarray(b * kvDim, (b + 1) * kvDim),
      out: attended.subarray(b * qDim, (b + 1) * qDim),
    }));
    for (let l = 0; l < this.layers.length; l++) {
      const w = this.layers[l];
      this.projectQkv(w, B, q, k, v);
      if (this.rotary) {
        for (let b = 0; b < B; b++) {
          this.rotary.rotate(items[b].q, heads, positions[b], 1);
          this.rotary.rotate(items[b].k, kvHeads, positions[b], 1);
        }
      }
      KVCache.attendMany(l, items);
      this.finishLayer(w, B, attended);
    }
    rmsNorm(x, B, dim, this.finalNorm, this.eps, h);
    this.linear(h, B, this.lmHead, dim, vocab, null, logits.subarray(0, B * vocab));
  }

  /**
   * Greedy generation for several prompts at once: each prompt is prefilled on its own cache, then every
   * decode step runs all of them through forwardMany together. The new ids of each prompt, the same as
   * `generate` gives it alone (greedy, no lookup).
   * @param {Array<ArrayLike<number>>} prompts at most 64
   * @param {{ maxNewTokens: number, onStep?: () => void }} options onStep: after each batched step
   * @returns {number[][]}
   */
  generateMany(prompts, { maxNewTokens, onStep }) {
    if (this.cacheClass !== KVCache) throw new TypeError('generateMany: needs the KVCache of wasm-attention');
    const { vocab } = this.shape;
    const picker = new TokenPicker(vocab, {});
    const caches = /** @type {KVCache[]} */ (
      prompts.map((p) => this.createCache({ maxTokens: Math.min(this.maxPositions, p.length + maxNewTokens) }))
    );
    const logits = new Float32Array(prompts.length * vocab);
    /** @type {number[][]} */
    const generated = prompts.map(() => []);
    try {
      prompts.forEach((p, b) => {
        this.feed(caches[b], p, 0, p.length, logits.subarray(b * vocab), 1);
      });
      const next = new Int32Array(prompts.length);
      for (let step = 0; step < maxNewTokens; step++) {
        for (let b = 0; b < prompts.length; b++) {
          next[b] = picker.pick(logits, b * vocab);
          generated[b].push(next[b]);
        }
        if (step === maxNewTokens - 1) break;
        this.forwardMany(caches, next, logits);
        onStep?.();
      }
    } finally {
      for (const c of caches) c.dispose();
    }
    return generated;
  }
}
