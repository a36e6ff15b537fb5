// `perLayer`: models that mix layer kinds (Gemma 2/3, gpt-oss, Qwen with sliding windows) give each layer
// its own window, sinks, rope, softcap, scale, sink logits or ALiBi slopes (options.ts reads the entries).
// Here each layer's settings are looked up, and layers of equal settings are grouped: each group is one
// descriptor in the kernel (cache-memory.ts), exactly as a cache of those settings alone, so the kernel
// knows nothing of per-layer options and every bit-identity of a one-setting cache holds per layer.

import { type LayerGeometry, cacheGeometry } from './geometry.js';
import { type CacheSettings, type LayerSettings, type RopeSettings, type Scoring, ropeToOptions } from './options.js';

export type { LayerSettings };

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
      const geometry = cacheGeometry(settings.shape, settings.dtype, ring, scoring.window, scoring.sinks);
      group = { layers: [], geometry, scoring, rope };
      groups.set(key, group);
    }
    group.layers.push(l);
  }
  return [...groups.values()];
}
