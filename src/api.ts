// wasm-attention: causal self-attention with a KV cache, in WebAssembly SIMD. The public API, exported alike by
// every entry (index.ts, workerd.ts); docs/API.md is its reference.

export { init, type InitOptions, type InitInfo, type Build, type WasmSource } from './init.js';
export { attention, attentionWeights, type AttentionOptions } from './attention.js';
export { KVCache, type KVCacheOptions, type KVCacheDtype, type RopeOptions, type RopeScaling } from './cache.js';
export {
  cacheOptionsFromConfig,
  type ConfigOptions,
  type LayerOptions,
  type ModelCacheOptions,
} from './model-config.js';
