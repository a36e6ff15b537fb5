// cacheOptionsFromConfig (API.md, "cacheOptionsFromConfig") on the published config.json of each family it
// knows (test/fixtures/configs, copied by hand from the models' published configs): the options it returns,
// spelled out from each model's documented attention, and the refusals of settings it does not understand.

import { readFileSync } from 'node:fs';
import { beforeAll, describe, expect, it } from 'vitest';
import { KVCache, cacheOptionsFromConfig, init } from '../src/index.js';
import { expectThrows, parseSave } from './support/util.js';

type Json = Record<string, unknown>;

const config = (name: string): Json =>
  JSON.parse(readFileSync(new URL(`./fixtures/configs/${name}.json`, import.meta.url), 'utf8'));

/** `layers` entries: `local` where `isLocal(i)`, else null (a global layer, the cache-wide settings). */
const pattern = (layers: number, isLocal: (i: number) => boolean, local: object) =>
  Array.from({ length: layers }, (_, i) => (isLocal(i) ? local : null));

/** The shape part of the options a config gives: layers, query and key/value heads, head size. */
const geometry = (layers: number, heads: number, kvHeads: number, headDim: number) => ({
  layers,
  heads,
  kvHeads,
  headDim,
});

describe('cacheOptionsFromConfig', () => {
  beforeAll(async () => {
    await init({ threads: 1 });
  });

  // configs that give their options whole: what each model's config.json gives for a cache of maxTokens
  const WHOLE: Array<{ title: string; model: string; maxTokens: number; want: object }> = [
    {
      title: 'Llama 3.2 1B: grouped heads and llama3-scaled RoPE',
      model: 'llama-3.2-1b',
      maxTokens: 4096,
      want: {
        ...geometry(16, 32, 8, 64),
        rope: {
          theta: 500000,
          dims: 64,
          scaling: { type: 'llama3', factor: 32, lowFreqFactor: 1, highFreqFactor: 4, originalMaxPositions: 8192 },
        },
      },
    },
    {
      title: 'Qwen 3 8B: explicit head_dim (q/k norms stay the caller’s)',
      model: 'qwen3-8b',
      maxTokens: 40960,
      want: {
        ...geometry(36, 32, 8, 128),
        rope: { theta: 1000000, dims: 128 },
      },
    },
    {
      title: 'Gemma 2 2B: softcap 50, scale from query_pre_attn_scalar, even layers windows of 4096',
      model: 'gemma-2-2b',
      maxTokens: 8192,
      want: {
        ...geometry(26, 8, 4, 256),
        scale: 1 / 16,
        softcap: 50,
        rope: { theta: 10000, dims: 256 },
        perLayer: pattern(26, (i) => i % 2 === 0, { window: 4096 }),
      },
    },
    {
      title: 'Gemma 3 4B (multimodal config): text_config with its class defaults; global layers linear ×8',
      model: 'gemma-3-4b-it',
      maxTokens: 131072,
      want: {
        ...geometry(34, 8, 4, 256),
        scale: 1 / 16,
        rope: { theta: 1000000, dims: 256, scaling: { type: 'linear', factor: 8 } },
        perLayer: pattern(34, (i) => (i + 1) % 6 !== 0, { window: 1024, rope: { theta: 10000, dims: 256 } }),
      },
    },
    {
      title: 'gpt-oss 20B: YaRN with truncate false, layer_types alternating windows of 128 (sinks are weights)',
      model: 'gpt-oss-20b',
      maxTokens: 131072,
      want: {
        ...geometry(24, 64, 8, 64),
        rope: {
          theta: 150000,
          dims: 64,
          scaling: { type: 'yarn', factor: 32, originalMaxPositions: 4096, betaFast: 32, betaSlow: 1, truncate: false },
        },
        perLayer: pattern(24, (i) => i % 2 === 0, { window: 128 }),
      },
    },
    {
      title: 'Phi-2: partial rotary, 0.4 of 80 = 32 dimensions',
      model: 'phi-2',
      maxTokens: 2048,
      want: {
        ...geometry(32, 32, 32, 80),
        rope: { theta: 10000, dims: 32 },
      },
    },
    {
      title: 'SmolLM2 1.7B: a llama config with plain RoPE',
      model: 'smollm2-1.7b',
      maxTokens: 8192,
      want: {
        ...geometry(24, 32, 32, 64),
        rope: { theta: 130000, dims: 64 },
      },
    },
    {
      title: 'BLOOM 560m: n_head and n_layer, ALiBi and no RoPE',
      model: 'bloom-560m',
      maxTokens: 2048,
      want: {
        ...geometry(24, 16, 16, 64),
        alibi: true,
      },
    },
  ];
  for (const { title, model, maxTokens, want } of WHOLE) {
    it(title, () => {
      expect(cacheOptionsFromConfig(config(model), { maxTokens })).toEqual({ ...want, maxTokens });
    });
  }

  it('Qwen 2.5 7B: head size from hidden_size / heads; its sliding_window is off (use_sliding_window false)', () => {
    expect(cacheOptionsFromConfig(config('qwen2.5-7b-instruct'), { maxTokens: 32768, dtype: 'int8' })).toEqual({
      ...geometry(28, 28, 4, 128),
      maxTokens: 32768,
      dtype: 'int8',
      rope: { theta: 1000000, dims: 128 },
    });
  });

  it("Qwen 2.5 with the model card's YaRN (type, not rope_type) for 128k tokens", () => {
    const qwen = {
      ...config('qwen2.5-7b-instruct'),
      rope_scaling: { factor: 4.0, original_max_position_embeddings: 32768, type: 'yarn' },
    };
    expect(cacheOptionsFromConfig(qwen, { maxTokens: 131072 }).rope).toEqual({
      theta: 1000000,
      dims: 128,
      scaling: { type: 'yarn', factor: 4, originalMaxPositions: 32768 },
    });
  });

  it('Qwen 2 with sliding windows switched on: layers from max_window_layers on slide', () => {
    const qwen = {
      ...config('qwen2.5-7b-instruct'),
      use_sliding_window: true,
      sliding_window: 4096,
      max_window_layers: 20,
    };
    const options = cacheOptionsFromConfig(qwen, { maxTokens: 32768 });
    expect(options.perLayer).toEqual(pattern(28, (i) => i >= 20, { window: 4096 }));
    expect(options.window).toBeUndefined();
  });

  it('Mistral 7B v0.1: every layer a 4096-token window (a ring), none when the cache is shorter', () => {
    const long = cacheOptionsFromConfig(config('mistral-7b-v0.1'), { maxTokens: 32768 });
    expect(long).toEqual({
      ...geometry(32, 32, 8, 128),
      maxTokens: 4096 + 255,
      window: 4096,
      rope: { theta: 10000, dims: 128 },
    });
    expect(cacheOptionsFromConfig(config('mistral-7b-v0.1'), { maxTokens: 4096 }).window).toBeUndefined();
  });

  it('Gemma 3 1B: every sixth layer global (θ 1e6), the others windows of 512 with θ 10000', () => {
    const options = cacheOptionsFromConfig(config('gemma-3-1b-it'), { maxTokens: 32768 });
    expect(options).toEqual({
      ...geometry(26, 4, 1, 256),
      maxTokens: 32768,
      scale: 1 / 16,
      rope: { theta: 1000000, dims: 256 },
      perLayer: pattern(26, (i) => (i + 1) % 6 !== 0, { window: 512, rope: { theta: 10000, dims: 256 } }),
    });
    expect(options.perLayer?.flatMap((entry, i) => (entry ? [] : [i]))).toEqual([5, 11, 17, 23]);
  });

  it('Phi-4-mini: partial rotary (96 of 128) with LongRoPE, long factors past the original 4096 tokens', () => {
    const phi = config('phi-4-mini-instruct');
    const scaling = phi.rope_scaling as { long_factor: number[]; short_factor: number[] };
    // the attention factor of LongRoPE: sqrt(1 + ln(131072 / 4096) / ln 4096)
    const attentionFactor = Math.sqrt(1 + Math.log(32) / Math.log(4096));
    for (const [maxTokens, factors] of [
      [131072, scaling.long_factor],
      [4096, scaling.short_factor],
    ] as const) {
      const options = cacheOptionsFromConfig(phi, { maxTokens });
      expect(options).toMatchObject({ layers: 32, heads: 24, kvHeads: 8, headDim: 128, maxTokens });
      expect(options.window).toBeUndefined(); // sliding_window 262144 is longer than any cache here
      const rope = options.rope as { dims: number; inverseFrequencies: number[]; attentionFactor: number };
      expect(rope.dims).toBe(96);
      expect(rope.attentionFactor).toBeCloseTo(attentionFactor, 14);
      expect(rope.inverseFrequencies).toHaveLength(48);
      rope.inverseFrequencies.forEach((f, i) => {
        expect(f * factors[i] * 10000 ** ((2 * i) / 96)).toBeCloseTo(1, 12);
      });
    }
  });

  it('the options of the single-kind families make a KVCache as they are', () => {
    for (const name of [
      'llama-3.2-1b',
      'qwen2.5-7b-instruct',
      'qwen3-8b',
      'mistral-7b-v0.1',
      'phi-2',
      'phi-4-mini-instruct',
      'smollm2-1.7b',
      'bloom-560m',
    ]) {
      new KVCache(cacheOptionsFromConfig(config(name), { maxTokens: 2048 })).dispose();
    }
    const mistral = new KVCache(cacheOptionsFromConfig(config('mistral-7b-v0.1'), { maxTokens: 32768 }));
    mistral.dispose();
  });

  it('the options of the mixed families make a KVCache whose layers slide as the config says', () => {
    for (const [name, maxTokens, window] of [
      ['gemma-3-1b-it', 1024, 512],
      ['gemma-3-4b-it', 1536, 1024],
      ['gpt-oss-20b', 512, 128],
    ] as const) {
      const options = cacheOptionsFromConfig(config(name), { maxTokens });
      const cache = new KVCache(options);
      const { heads, headDim } = options;
      const kvHeads = options.kvHeads ?? heads;
      // one token past a window, into every layer: a windowed layer's ring wraps, a global one's does not
      const n = window + 256;
      const k = new Float32Array(n * kvHeads * headDim).fill(0.5);
      const saved = options.perLayer?.map((entry, l) => {
        cache.append(l, k, k);
        return entry;
      });
      const layers = parseSave(cache.save()).header.layers.map((layer) => layer.held);
      // a windowed layer's save holds its ring (window + 255 positions) from position 1, a global layer all
      expect(layers).toEqual(saved?.map((entry) => (entry ? 1 : 0)));
      cache.dispose();
    }
  });

  it('refuses, naming the key, what would change attention and it does not understand', () => {
    const llama = config('llama-3.2-1b');
    const refusals: Array<[Json, RegExp]> = [
      [{ ...llama, rope_scaling: { rope_type: 'dynamic', factor: 2 } }, /config\.rope_scaling\.rope_type "dynamic"/],
      [
        { ...llama, rope_scaling: { type: 'mrope', mrope_section: [16, 24, 24] } },
        /config\.rope_scaling\.type "mrope"/,
      ],
      [{ ...llama, rope_scaling: { ...(llama.rope_scaling as Json), smooth: 2 } }, /config\.rope_scaling\.smooth/],
      [{ ...llama, model_type: 'deepseek_v3' }, /config\.model_type "deepseek_v3"/],
      [{ ...llama, attention_chunk_size: 8192 }, /config\.attention_chunk_size/],
      [{ ...llama, no_rope_layers: [1, 1, 1, 0] }, /config\.no_rope_layers/],
      [
        {
          ...config('gpt-oss-20b'),
          layer_types: [...(config('gpt-oss-20b').layer_types as string[]).slice(1), 'chunked_attention'],
        },
        /config\.layer_types\[23\] \("chunked_attention"\)/,
      ],
    ];
    for (const [bad, pattern] of refusals) {
      expectThrows(() => cacheOptionsFromConfig(bad, { maxTokens: 1024 }), Error, [pattern, /does not understand/]);
    }
  });

  it('bad arguments are TypeErrors and RangeErrors naming them', () => {
    const llama = config('llama-3.2-1b');
    expectThrows(() => cacheOptionsFromConfig('{}', { maxTokens: 8 }), TypeError, [/config/]);
    expectThrows(() => cacheOptionsFromConfig(llama, { maxTokens: 0 }), RangeError, [/options\.maxTokens/]);
    expectThrows(() => cacheOptionsFromConfig(llama, { maxTokens: 8, window: 4 } as never), TypeError, [
      /options\.window is not an option/,
    ]);
    const { num_attention_heads: _, ...headless } = llama;
    expectThrows(() => cacheOptionsFromConfig(headless, { maxTokens: 8 }), TypeError, [/config\.num_attention_heads/]);
    expectThrows(
      () =>
        cacheOptionsFromConfig(
          { ...llama, rope_scaling: { ...(llama.rope_scaling as Json), factor: -1 } },
          { maxTokens: 8 },
        ),
      RangeError,
      [/config\.rope_scaling\.factor/],
    );
    expectThrows(
      () => cacheOptionsFromConfig({ ...config('phi-2'), partial_rotary_factor: 0.4125 }, { maxTokens: 8 }),
      RangeError,
      [/config\.partial_rotary_factor/],
    );
  });
});
