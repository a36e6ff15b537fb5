// cacheOptionsFromConfig: a Hugging Face config.json, parsed, to the KVCache options that compute that
// model's attention. It reads only what decides attention (head counts and size, RoPE and its scaling,
// partial rotary, sliding windows per layer, softcap, the query scale, ALiBi) and refuses, with an Error
// naming the key, any setting it does not understand that would change attention: a cache that computes
// something else without saying so is worse than none. What stays the caller's (q/k norms, learned sink
// weights) is in docs/API.md.

import { positiveInteger, positiveNumber, rangeError, typeError } from './errors.js';
import { refuseUnknownKeys } from './option-keys.js';
import type { KVCacheDtype, KVCacheOptions, LayerOptions, RopeOptions } from './options.js';
import type { RopeScaling } from './rope-scaling.js';

export type { LayerOptions } from './options.js';

/** KVCache options, with the per-layer settings (`perLayer`) that some families need. */
export interface ModelCacheOptions extends KVCacheOptions {
  perLayer?: Array<LayerOptions | null>;
}

export interface ConfigOptions {
  /** the most tokens a layer will hold (a windowed layer holds its window only) */
  maxTokens: number;
  dtype?: KVCacheDtype;
}

type Json = Record<string, unknown>;

/** The families (config.json `model_type`) whose attention this module knows. */
const FAMILIES = [
  'llama',
  'mistral',
  'mixtral',
  'qwen2',
  'qwen2_moe',
  'qwen3',
  'qwen3_moe',
  'gemma',
  'gemma2',
  'gemma3_text',
  'gpt_oss',
  'phi',
  'phi3',
  'bloom',
] as const;

/**
 * Settings that change attention in ways no KVCache option expresses: present (and not null or false),
 * they are refused rather than ignored.
 */
const NOT_UNDERSTOOD = [
  'attention_chunk_size', // Llama 4: attention in fixed chunks
  'no_rope_layers', // SmolLM3, Llama 4: layers without RoPE
  'kv_lora_rank', // DeepSeek: multi-head latent attention
  'q_lora_rank',
  'attn_temperature_tuning',
  'use_bidirectional_attention',
  'alibi', // MPT-style flags outside BLOOM
  'position_embedding_type',
];

/**
 * Gemma 3's text settings that its config class fills in when a config.json leaves them out (the
 * multimodal checkpoints' text_config names only what differs from them).
 */
const GEMMA3_TEXT_DEFAULTS: Json = {
  num_attention_heads: 8,
  num_key_value_heads: 4,
  head_dim: 256,
  num_hidden_layers: 26,
  query_pre_attn_scalar: 256,
  rope_theta: 1_000_000,
  rope_local_base_freq: 10_000,
  sliding_window: 4096,
  sliding_window_pattern: 6,
};

/** Understood keys of `rope_scaling`, per type (`rope_type` or the older `type` names it). */
const SCALING_KEYS: Record<string, readonly string[]> = {
  default: [],
  linear: ['factor'],
  llama3: ['factor', 'low_freq_factor', 'high_freq_factor', 'original_max_position_embeddings'],
  yarn: [
    'factor',
    'original_max_position_embeddings',
    'beta_fast',
    'beta_slow',
    'truncate',
    'attention_factor',
    'mscale',
    'mscale_all_dim',
  ],
  longrope: ['long_factor', 'short_factor', 'factor', 'original_max_position_embeddings', 'attention_factor'],
};

/** A present setting: not undefined and not null (Hugging Face writes null for "none"). */
const given = (value: unknown) => value !== undefined && value !== null;

function refuse(key: string, why: string): Error {
  return new Error(`wasm-attention: cacheOptionsFromConfig does not understand ${key}: ${why}`);
}

function required(config: Json, path: string, ...keys: string[]): unknown {
  for (const key of keys) if (given(config[key])) return config[key];
  throw typeError(`${path}.${keys[0]}`, 'present (the model config gives it)', undefined);
}

/**
 * KVCache options computing the attention of the model whose parsed config.json is `config`, for caches
 * of at most `options.maxTokens` tokens per layer. Throws an Error naming the key for a setting that would
 * change attention and that it does not understand.
 */
export function cacheOptionsFromConfig(config: unknown, options: ConfigOptions): ModelCacheOptions {
  if (config === null || typeof config !== 'object' || Array.isArray(config)) {
    throw typeError('config', 'a parsed config.json (an object)', config);
  }
  if (options === null || typeof options !== 'object') {
    throw typeError('options', 'an object { maxTokens, dtype? }', options);
  }
  refuseUnknownKeys(options, 'options', ['maxTokens', 'dtype']);
  const maxTokens = positiveInteger('options.maxTokens', options.maxTokens);
  let c = config as Json;
  let path = 'config';
  if (c.text_config !== undefined && c.text_config !== null) {
    if (typeof c.text_config !== 'object') throw typeError('config.text_config', 'an object', c.text_config);
    const text = c.text_config as Json;
    const family = text.model_type ?? `${c.model_type}_text`;
    c = { ...(family === 'gemma3_text' ? GEMMA3_TEXT_DEFAULTS : {}), ...text, model_type: family };
    path = 'config.text_config';
  } else if (c.model_type === 'gemma3_text') {
    c = { ...GEMMA3_TEXT_DEFAULTS, ...c };
  }
  const family = c.model_type as string;
  if (!FAMILIES.includes(family as (typeof FAMILIES)[number])) {
    throw refuse(
      `${path}.model_type ${JSON.stringify(family)}`,
      `it knows ${FAMILIES.join(', ')}; give KVCache options by hand for other models`,
    );
  }
  for (const key of NOT_UNDERSTOOD) {
    if (given(c[key]) && c[key] !== false && !(key === 'position_embedding_type' && c[key] === 'rope')) {
      throw refuse(
        `${path}.${key} (${JSON.stringify(c[key])})`,
        'it changes attention in a way no KVCache option expresses',
      );
    }
  }

  const heads = positiveInteger(`${path}.num_attention_heads`, required(c, path, 'num_attention_heads', 'n_head'));
  const kvHeads = given(c.num_key_value_heads)
    ? positiveInteger(`${path}.num_key_value_heads`, c.num_key_value_heads)
    : heads;
  const layers = positiveInteger(`${path}.num_hidden_layers`, required(c, path, 'num_hidden_layers', 'n_layer'));
  let headDim: number;
  if (given(c.head_dim)) headDim = positiveInteger(`${path}.head_dim`, c.head_dim);
  else {
    const hidden = positiveInteger(`${path}.hidden_size`, required(c, path, 'hidden_size', 'n_embed'));
    headDim = hidden / heads;
    if (!Number.isInteger(headDim)) {
      throw rangeError(
        `${path}.hidden_size`,
        `a multiple of num_attention_heads (${heads}) when head_dim is absent`,
        hidden,
      );
    }
  }
  const out: ModelCacheOptions = { layers, heads, kvHeads, headDim, maxTokens };
  if (options.dtype !== undefined) out.dtype = options.dtype;
  if (given(c.query_pre_attn_scalar)) {
    out.scale = 1 / Math.sqrt(positiveNumber(`${path}.query_pre_attn_scalar`, c.query_pre_attn_scalar));
  }
  if (given(c.attn_logit_softcapping) && c.attn_logit_softcapping !== 0) {
    out.softcap = positiveNumber(`${path}.attn_logit_softcapping`, c.attn_logit_softcapping);
  }
  if (family === 'bloom') {
    out.alibi = true;
    return out;
  }

  const theta = given(c.rope_theta) ? positiveNumber(`${path}.rope_theta`, c.rope_theta) : 10000;
  let dims = headDim;
  if (given(c.partial_rotary_factor)) {
    const factor = positiveNumber(`${path}.partial_rotary_factor`, c.partial_rotary_factor);
    const exact = headDim * factor;
    dims = Math.abs(exact - Math.round(exact)) < 1e-9 ? Math.round(exact) : Math.floor(exact); // as int() in Python
    if (factor > 1 || dims < 2 || dims % 2 !== 0) {
      throw rangeError(
        `${path}.partial_rotary_factor`,
        `a fraction of head_dim (${headDim}) that rotates an even number of dimensions`,
        factor,
      );
    }
  }
  const globalRope = ropeOf(c, path, theta, dims, maxTokens);

  // which layers slide: layer_types, else Gemma's patterns, else sliding_window (with Qwen's switches)
  const window = given(c.sliding_window) ? positiveInteger(`${path}.sliding_window`, c.sliding_window) : 0;
  const windowsOn = window > 0 && c.use_sliding_window !== false;
  let sliding: boolean[];
  if (given(c.layer_types)) {
    if (!Array.isArray(c.layer_types) || c.layer_types.length !== layers) {
      throw typeError(`${path}.layer_types`, `an array of num_hidden_layers (${layers}) layer kinds`, c.layer_types);
    }
    sliding = c.layer_types.map((kind, i) => {
      if (kind !== 'sliding_attention' && kind !== 'full_attention') {
        throw refuse(
          `${path}.layer_types[${i}] (${JSON.stringify(kind)})`,
          "it knows 'sliding_attention' and 'full_attention'",
        );
      }
      return kind === 'sliding_attention';
    });
  } else if (given(c.sliding_window_pattern)) {
    const pattern = positiveInteger(`${path}.sliding_window_pattern`, c.sliding_window_pattern);
    sliding = Array.from({ length: layers }, (_, i) => (i + 1) % pattern !== 0); // Gemma 3: every pattern-th is global
  } else if (family === 'gemma2') {
    sliding = Array.from({ length: layers }, (_, i) => i % 2 === 0); // Gemma 2: even layers slide
  } else if (given(c.max_window_layers) && family.startsWith('qwen')) {
    const first = positiveInteger(`${path}.max_window_layers`, c.max_window_layers);
    sliding = Array.from({ length: layers }, (_, i) => i >= first); // Qwen: layers from max_window_layers on slide
  } else {
    sliding = Array.from({ length: layers }, () => true);
  }
  // a window no shorter than the cache changes nothing: such layers are global
  const slides = windowsOn && window < maxTokens ? sliding : sliding.map(() => false);
  const localRope = given(c.rope_local_base_freq)
    ? { theta: positiveNumber(`${path}.rope_local_base_freq`, c.rope_local_base_freq), dims }
    : undefined;

  if (slides.every((s) => !s)) {
    out.rope = globalRope;
    return out;
  }
  if (slides.every((s) => s) && !localRope) {
    // every layer a ring of the window: enough slots past it for a chunk of 256 tokens a kernel call
    out.rope = globalRope;
    out.window = window;
    out.maxTokens = Math.min(maxTokens, window + 255);
    return out;
  }
  out.rope = globalRope;
  out.perLayer = slides.map((s) => (s ? { window, ...(localRope ? { rope: localRope } : {}) } : null));
  return out;
}

/** The global layers' rope: base, rotated dims and the scaling `rope_scaling` names. */
function ropeOf(c: Json, path: string, theta: number, dims: number, maxTokens: number): RopeOptions {
  const rope: RopeOptions = { theta, dims };
  if (!given(c.rope_scaling)) return rope;
  const where = `${path}.rope_scaling`;
  if (typeof c.rope_scaling !== 'object') throw typeError(where, 'an object', c.rope_scaling);
  const s = c.rope_scaling as Json;
  const type = s.rope_type ?? s.type;
  const known = typeof type === 'string' ? SCALING_KEYS[type] : undefined;
  if (!known) {
    throw refuse(
      `${where}.${s.rope_type !== undefined ? 'rope_type' : 'type'} ${JSON.stringify(type)}`,
      `it knows ${Object.keys(SCALING_KEYS).join(', ')}`,
    );
  }
  for (const key of Object.keys(s)) {
    if (key !== 'rope_type' && key !== 'type' && !known.includes(key)) {
      throw refuse(`${where}.${key}`, `not a setting of rope_type ${JSON.stringify(type)} it knows`);
    }
  }
  const factor = () => positiveNumber(`${where}.factor`, s.factor);
  let scaling: RopeScaling | undefined;
  if (type === 'linear') scaling = { type, factor: factor() };
  if (type === 'llama3') {
    scaling = {
      type,
      factor: factor(),
      lowFreqFactor: positiveNumber(`${where}.low_freq_factor`, s.low_freq_factor),
      highFreqFactor: positiveNumber(`${where}.high_freq_factor`, s.high_freq_factor),
      originalMaxPositions: positiveInteger(
        `${where}.original_max_position_embeddings`,
        s.original_max_position_embeddings,
      ),
    };
  }
  if (type === 'yarn') {
    const original = positiveInteger(
      `${where}.original_max_position_embeddings`,
      s.original_max_position_embeddings ?? c.max_position_embeddings,
    );
    // without a factor, the library takes the ratio of the context lengths
    const f = given(s.factor)
      ? factor()
      : positiveNumber(`${path}.max_position_embeddings`, c.max_position_embeddings) / original;
    const yarn: RopeScaling = { type, factor: f, originalMaxPositions: original };
    if (given(s.beta_fast)) yarn.betaFast = positiveNumber(`${where}.beta_fast`, s.beta_fast);
    if (given(s.beta_slow)) yarn.betaSlow = positiveNumber(`${where}.beta_slow`, s.beta_slow);
    if (given(s.truncate)) {
      if (typeof s.truncate !== 'boolean') throw typeError(`${where}.truncate`, 'a boolean', s.truncate);
      yarn.truncate = s.truncate;
    }
    if (given(s.attention_factor))
      yarn.attentionFactor = positiveNumber(`${where}.attention_factor`, s.attention_factor);
    else if (given(s.mscale) && given(s.mscale_all_dim) && s.mscale && s.mscale_all_dim) {
      // DeepSeek's form: the ratio of two YaRN factors
      const m = (scale: number) => (f <= 1 ? 1 : 0.1 * scale * Math.log(f) + 1);
      yarn.attentionFactor =
        m(positiveNumber(`${where}.mscale`, s.mscale)) / m(positiveNumber(`${where}.mscale_all_dim`, s.mscale_all_dim));
    }
    scaling = yarn;
  }
  if (type === 'longrope') return longRope(c, s, where, path, theta, dims, maxTokens);
  return scaling ? { ...rope, scaling } : rope;
}

/**
 * LongRoPE (Phi-3.5, Phi-4-mini): frequencies divided by a factor per pair, `long_factor` beyond the
 * original context and `short_factor` within it, and an attention factor from the context ratio. The
 * library switches a whole sequence to the long factors once it passes the original context (re-rotating
 * what it holds); a cache cannot re-rotate the keys it holds, so the choice is made once, by maxTokens.
 */
function longRope(
  c: Json,
  s: Json,
  where: string,
  path: string,
  theta: number,
  dims: number,
  maxTokens: number,
): RopeOptions {
  const original = positiveInteger(
    `${path}.original_max_position_embeddings`,
    c.original_max_position_embeddings ?? s.original_max_position_embeddings,
  );
  const key = maxTokens > original ? 'long_factor' : 'short_factor';
  const factors = s[key];
  if (!Array.isArray(factors) || factors.length !== dims / 2) {
    throw typeError(`${where}.${key}`, `an array of ${dims / 2} factors (one per rotated pair)`, factors);
  }
  const inverseFrequencies = factors.map(
    (f, i) => 1 / (positiveNumber(`${where}.${key}[${i}]`, f) * theta ** ((2 * i) / dims)),
  );
  let attentionFactor: number;
  if (given(s.attention_factor)) attentionFactor = positiveNumber(`${where}.attention_factor`, s.attention_factor);
  else {
    const ratio = positiveNumber(`${path}.max_position_embeddings`, c.max_position_embeddings) / original;
    attentionFactor = ratio <= 1 ? 1 : Math.sqrt(1 + Math.log(ratio) / Math.log(original));
  }
  return { dims, inverseFrequencies, ...(attentionFactor !== 1 ? { attentionFactor } : {}) };
}
