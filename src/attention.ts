// One-shot attention: q of T tokens over k/v of S tokens, with no cache kept afterwards.
// Internally it is a one-layer cache of exactly S slots, filled and queried once, then freed.

import { activeKernel, type Kernel } from './kernel.js';
import { MAX_MEMORY_BYTES } from './heap.js';
import { rangeError } from './errors.js';
import {
  headShape, optionalBoolean, optionsObject, outputArray, sameLength, scoring, tokensIn,
  type HeadShape, type Scoring,
} from './options.js';
import {
  STREAM_BYTES, Placer, appendTokens, attendTokens, copyIn, copyOut, layerBlockBytes, measure, placeLayer, placeStaging,
  stagingTokens,
  type Layer, type LayerGeometry,
} from './layer.js';

export interface AttentionOptions {
  heads: number;
  kvHeads?: number;
  headDim: number;
  causal?: boolean;
  scale?: number;
  window?: number;
  sinks?: number;
  softcap?: number;
}

interface OneShot {
  shape: HeadShape;
  scoring: Scoring;
  causal: boolean;
  queries: number; // T
  keys: number; // S
}

function validate(q: unknown, k: unknown, v: unknown, options: unknown): OneShot {
  const bag = optionsObject('options', options);
  const shape = headShape(bag, 'options');
  const score = scoring(bag, 'options', shape.headDim);
  const causal = optionalBoolean('options.causal', bag.causal, true);
  const queries = tokensIn('q', q, shape.heads * shape.headDim, 'heads × headDim');
  const keys = tokensIn('k', k, shape.kvHeads * shape.headDim, 'kvHeads × headDim');
  tokensIn('v', v, shape.kvHeads * shape.headDim, 'kvHeads × headDim');
  sameLength('v', v as Float32Array, 'k', k as Float32Array);
  if (causal && queries > keys) {
    throw rangeError('q', `at most as many tokens as k (${keys}) when causal (query t sits at position S − T + t)`,
      `${queries} tokens`);
  }
  return { shape, scoring: score, causal, queries, keys };
}

/** Runs `body` with a temporary one-layer cache holding all of k and v; frees it afterwards. */
function withKeys(kernel: Kernel, call: OneShot, k: Float32Array, v: Float32Array, extraBytes: number,
  body: (layer: Layer, extra: number) => void): void {
  const geometry: LayerGeometry = {
    ...call.shape, int8: false, slots: call.keys, sinks: call.scoring.sinks, ring: call.keys,
  };
  const tokens = Math.min(stagingTokens(call.shape), Math.max(call.queries, call.keys));
  const place = (placer: Placer) => {
    placeLayer(placer, geometry);
    placeStaging(placer, kernel, call.shape, tokens);
    placer.take(extraBytes);
  };
  const bytes = measure(place);
  if (bytes > MAX_MEMORY_BYTES) {
    throw rangeError('k', `small enough for WebAssembly's 4 GiB memory, but this call needs ${bytes} bytes`, k);
  }
  const base = kernel.heap.allocate(bytes);
  try {
    const placer = new Placer(base);
    const blocks = placeLayer(placer, geometry);
    const staging = placeStaging(placer, kernel, call.shape, tokens);
    const extra = placer.take(extraBytes);
    const stream = 2 * layerBlockBytes(geometry).rows > STREAM_BYTES;
    const layer: Layer = { kernel, geometry, blocks, staging, stream };
    for (let from = 0; from < call.keys; from += tokens) {
      appendTokens(layer, k, v, from, Math.min(tokens, call.keys - from), from);
    }
    body(layer, extra);
  } finally {
    kernel.heap.release(base);
  }
}

export function attention(
  q: Float32Array, k: Float32Array, v: Float32Array, options: AttentionOptions, out?: Float32Array,
): Float32Array {
  const kernel = activeKernel();
  const call = validate(q, k, v, options);
  const { heads, headDim } = call.shape;
  const result = outputArray(out, call.queries * heads * headDim,
    () => `[T=${call.queries}][heads=${heads}][headDim=${headDim}]`);
  withKeys(kernel, call, k, v, 0, (layer) => {
    const chunk = layer.staging.tokens;
    const offset = call.keys - call.queries; // query t sits at position S − T + t
    for (let from = 0; from < call.queries; from += chunk) {
      const count = Math.min(chunk, call.queries - from);
      attendTokens(layer, q, result, from, count, offset + from, call.keys, call.causal, call.scoring);
    }
  });
  return result;
}

/** The softmax probabilities [T][heads][S] behind attention(): rows sum to 1, masked keys are exactly 0. */
export function attentionWeights(
  q: Float32Array, k: Float32Array, v: Float32Array, options: AttentionOptions,
): Float32Array {
  const kernel = activeKernel();
  const call = validate(q, k, v, options);
  const { heads, kvHeads, headDim } = call.shape;
  const count = call.queries * heads * call.keys;
  let result = new Float32Array(0);
  // withKeys refuses a T×heads×S result too large for wasm memory before anything is allocated
  withKeys(kernel, call, k, v, count * 4, (layer, weights) => {
    result = new Float32Array(count);
    const { staging, geometry: g, blocks } = layer;
    const chunk = staging.tokens;
    const offset = call.keys - call.queries;
    const row = heads * headDim;
    for (let from = 0; from < call.queries; from += chunk) {
      const n = Math.min(chunk, call.queries - from);
      copyIn(kernel, staging.q, q, from * row, n * row);
      kernel.abi.weights(
        staging.q, n, offset + from, heads, kvHeads, headDim, blocks.keys, 0, 0,
        g.slots, g.sinks, g.ring, call.keys, call.causal ? 1 : 0, call.scoring.window,
        call.scoring.scale, call.scoring.softcap, weights + from * heads * call.keys * 4, call.keys, staging.scratch,
      );
    }
    copyOut(kernel, weights, result, 0, count);
  });
  return result;
}
