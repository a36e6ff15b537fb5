// `perLayer`: models that mix layer kinds (Gemma 2/3, gpt-oss, Qwen with sliding windows) give each layer its
// own window, sinks, rope, softcap, scale, sink logits or ALiBi slopes. Here an entry is read into the
// settings of its layer, and layers of equal settings are grouped: each group is one descriptor in the
// kernel (cache-memory.ts), exactly as a cache of those settings alone, so the kernel knows nothing of
// per-layer options and every bit-identity of a single-setting cache holds per layer.

import { alibiSlopesOf } from './alibi.js';
import { rangeError, typeError } from './errors.js';
import { type LayerGeometry, cacheGeometry } from './geometry.js';
import { refuseUnknownKeys } from './option-keys.js';
import {
  type CacheSettings,
  type RopeSettings,
  type Scoring,
  integerAtLeast,
  optionsObject,
  positiveFloat32,
  ropeSettings,
  ropeToOptions,
  sinkLogitsOf,
} from './options.js';

/** Slots a windowed layer of a `perLayer` cache holds past its window: one kernel call's chunk of 256 tokens. */
export const RING_ROOM = 255;

export const LAYER_KEYS = ['window', 'sinks', 'rope', 'softcap', 'scale', 'sinkLogits', 'alibi'];

/** One layer's settings, resolved against the cache-wide ones. */
export interface LayerSettings {
  scoring: Scoring;
  rope?: RopeSettings;
  /** slots of the layer's ring after its sinks (maxTokens for a global layer) */
  ring: number;
  /** the entry as save() stores it: what it overrides, canonical (null: nothing) */
  entry: Record<string, unknown> | null;
}

/**
 * The ring of a windowed layer in a `perLayer` cache: its window plus room for a chunk, at most maxTokens.
 * maxTokens is then what a global layer holds, and a windowed layer beside it costs its window only.
 */
export function ownRing(window: number, maxTokens: number): number {
  return window > 0 ? Math.min(maxTokens, window + RING_ROOM) : maxTokens;
}

/** `options.perLayer`: one entry per layer, each `null`, `{}` or an object of LAYER_KEYS. */
export function perLayerSettings(value: unknown, wide: CacheSettings): LayerSettings[] {
  const { layers, shape, maxTokens } = wide;
  if (!Array.isArray(value)) {
    throw typeError(
      'options.perLayer',
      `an array of options.layers (${layers}) entries, each null or an object`,
      value,
    );
  }
  if (value.length !== layers) {
    throw rangeError('options.perLayer', `one entry per layer (options.layers = ${layers})`, value);
  }
  const result: LayerSettings[] = [];
  for (let i = 0; i < layers; i++) {
    const where = `options.perLayer[${i}]`;
    const given: unknown = value[i];
    const bag = given === null ? {} : optionsObject(where, given);
    refuseUnknownKeys(bag, where, LAYER_KEYS);
    const scoring: Scoring = { ...wide.scoring };
    const entry: Record<string, unknown> = {};
    if (bag.window !== undefined) {
      scoring.window =
        bag.window === null ? 0 : integerAtLeast(`${where}.window`, bag.window, 1, Number.MAX_SAFE_INTEGER);
      if (scoring.window > maxTokens) {
        throw rangeError(
          `${where}.window`,
          `at most options.maxTokens (${maxTokens}): the ring must hold a whole window`,
          bag.window,
        );
      }
      entry.window = scoring.window || null;
    }
    if (bag.sinks !== undefined) entry.sinks = scoring.sinks = integerAtLeast(`${where}.sinks`, bag.sinks, 0);
    if (bag.scale !== undefined) entry.scale = scoring.scale = positiveFloat32(`${where}.scale`, bag.scale);
    if (bag.softcap !== undefined) {
      scoring.softcap =
        bag.softcap === null || bag.softcap === 0 ? 0 : positiveFloat32(`${where}.softcap`, bag.softcap);
      entry.softcap = scoring.softcap || null;
    }
    let rope = wide.rope;
    if (bag.rope !== undefined) {
      rope = ropeSettings(bag.rope, where, shape.headDim);
      entry.rope = rope ? ropeToOptions(rope) : null;
    }
    if (bag.sinkLogits !== undefined) {
      scoring.sinkLogits =
        bag.sinkLogits === null ? undefined : sinkLogitsOf(bag.sinkLogits, `${where}.sinkLogits`, shape.heads);
      entry.sinkLogits = scoring.sinkLogits ? [...scoring.sinkLogits] : null;
    }
    if (bag.alibi !== undefined) {
      scoring.alibi =
        bag.alibi === null || bag.alibi === false
          ? undefined
          : alibiSlopesOf(bag.alibi, `${where}.alibi`, shape.heads, false);
      entry.alibi = scoring.alibi ? [...scoring.alibi] : null;
    }
    if (scoring.alibi && rope) {
      const name = bag.alibi !== undefined ? `${where}.alibi` : `${where}.rope`;
      throw rangeError(
        name,
        `left out when layer ${i} also has ${bag.alibi !== undefined ? 'a rope' : 'ALiBi'} ` +
          `(ALiBi biases positions instead of rotating them; give ${where}.rope: null or ${where}.alibi: null)`,
        bag.alibi !== undefined ? bag.alibi : bag.rope,
      );
    }
    if (scoring.window === 0) scoring.sinks = 0; // sinks are what a window keeps: nothing without one
    result.push({
      scoring,
      rope,
      ring: ownRing(scoring.window, maxTokens),
      entry: Object.keys(entry).length ? entry : null,
    });
  }
  return result;
}

/** A layer's settings: its own with `perLayer`, else the cache-wide ones (the ring then holds maxTokens). */
export function layerSettings(settings: CacheSettings, layer: number): LayerSettings {
  return (
    settings.perLayer?.[layer] ?? {
      scoring: settings.scoring,
      rope: settings.rope,
      ring: settings.maxTokens,
      entry: null,
    }
  );
}

/** Layers of equal settings: one descriptor (and rope table) each. */
export interface LayerGroup {
  /** the cache's layer numbers, ascending; a layer's index in the group is its place here */
  layers: number[];
  geometry: LayerGeometry;
  scoring: Scoring;
  rope?: RopeSettings;
}

/** The groups of a cache's layers: one without `perLayer`, one per distinct layer setting with it. */
export function layerGroups(settings: CacheSettings): LayerGroup[] {
  const groups = new Map<string, LayerGroup>();
  for (let l = 0; l < settings.layers; l++) {
    const layer = layerSettings(settings, l);
    const { scoring, rope, ring } = layer;
    const key = JSON.stringify([scoring, ring, rope ? ropeToOptions(rope) : null]);
    let group = groups.get(key);
    if (!group) {
      const geometry = cacheGeometry(settings.shape, settings.dtype === 'int8', ring, scoring.window, scoring.sinks);
      group = { layers: [], geometry, scoring, rope };
      groups.set(key, group);
    }
    group.layers.push(l);
  }
  return [...groups.values()];
}
