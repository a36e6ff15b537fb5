// One-shot attention: q of T tokens over k/v of S tokens, with no cache kept afterwards.
// Internally it is a one-layer cache of exactly S slots, filled and queried once, then freed.

import { alibiSlopesOf } from './alibi.js';
import { rangeError } from './errors.js';
import { type HeadShape, chunkTokens, oneShotGeometry, pageBytesOf, pagesPerHead } from './geometry.js';
import { MAX_MEMORY_BYTES } from './heap.js';
import { activeInstance } from './init.js';
import type { Instance } from './instance.js';
import { CacheMemory } from './cache-memory.js';
import {
  headShape,
  optionalBoolean,
  optionsObject,
  outputArray,
  sameLength,
  scoring,
  tokensIn,
  type Scoring,
} from './options.js';
import { refuseUnknownKeys } from './option-keys.js';

export interface AttentionOptions {
  heads: number;
  kvHeads?: number;
  headDim: number;
  causal?: boolean;
  scale?: number;
  window?: number;
  sinks?: number;
  softcap?: number;
  alibi?: true | readonly number[] | Float32Array | Float64Array;
}

const ATTENTION_KEYS = ['heads', 'kvHeads', 'headDim', 'causal', 'scale', 'window', 'sinks', 'softcap', 'alibi'];

interface OneShot {
  shape: HeadShape;
  scoring: Scoring;
  causal: boolean;
  queries: number; // T
  keys: number; // S
}

function validate(q: unknown, k: unknown, v: unknown, options: unknown): OneShot {
  const bag = optionsObject('options', options);
  refuseUnknownKeys(bag, 'options', ATTENTION_KEYS);
  const shape = headShape(bag, 'options');
  const score = scoring(bag, 'options', shape.headDim);
  if (bag.alibi !== undefined) score.alibi = alibiSlopesOf(bag.alibi, 'options.alibi', shape.heads, false);
  const causal = optionalBoolean('options.causal', bag.causal, true);
  const queries = tokensIn('q', q, shape.heads * shape.headDim, 'heads × headDim');
  const keys = tokensIn('k', k, shape.kvHeads * shape.headDim, 'kvHeads × headDim');
  tokensIn('v', v, shape.kvHeads * shape.headDim, 'kvHeads × headDim');
  sameLength('v', v as Float32Array, 'k', k as Float32Array);
  if (causal && queries > keys) {
    throw rangeError(
      'q',
      `at most as many tokens as k (${keys}) when causal (query t sits at position S − T + t)`,
      `${queries} tokens`,
    );
  }
  // positions are i32 in the kernel: a window or sinks of at least S (every position is below S) bound
  // nothing, exactly as S does, so they reach it as S rather than as their low 32 bits
  const bounded = { ...score, window: Math.min(score.window, keys), sinks: Math.min(score.sinks, keys) };
  return { shape, scoring: bounded, causal, queries, keys };
}

/** Runs `body` with a temporary one-layer cache holding all of k and v; frees it afterwards. */
function withKeys(
  instance: Instance,
  call: OneShot,
  k: Float32Array,
  v: Float32Array,
  extraBytes: number,
  body: (memory: CacheMemory, extra: number) => void,
): void {
  const geometry = oneShotGeometry(call.shape, call.keys, call.scoring.sinks);
  const tokens = chunkTokens(call.shape, Math.max(call.queries, call.keys));
  const bytes = 2 * call.shape.kvHeads * pagesPerHead(geometry) * pageBytesOf(geometry) + extraBytes;
  if (bytes > MAX_MEMORY_BYTES) {
    throw rangeError('k', `small enough for WebAssembly's 4 GiB memory, but this call needs ${bytes} bytes`, k);
  }
  const memory = new CacheMemory(instance, geometry, 1, call.scoring, undefined, tokens);
  let extra = 0;
  try {
    memory.reserve('attention', 0, 0, call.keys);
    if (extraBytes) extra = instance.heap.allocate(extraBytes);
    for (let from = 0; from < call.keys; from += tokens) {
      memory.step(0, k, v, from, Math.min(tokens, call.keys - from), from);
    }
    body(memory, extra);
  } finally {
    if (extra) instance.heap.release(extra);
    memory.dispose();
  }
}

export function attention(
  q: Float32Array,
  k: Float32Array,
  v: Float32Array,
  options: AttentionOptions,
  out?: Float32Array,
): Float32Array {
  const instance = activeInstance();
  instance.enter('attention');
  try {
    const call = validate(q, k, v, options);
    const { heads, headDim } = call.shape;
    const result = outputArray(out, call.queries, heads, headDim);
    withKeys(instance, call, k, v, 0, (memory) => {
      const chunk = memory.chunkTokens;
      const offset = call.keys - call.queries; // query t sits at position S − T + t
      for (let from = 0; from < call.queries; from += chunk) {
        const count = Math.min(chunk, call.queries - from);
        memory.attend(0, q, result, from, count, offset + from, call.keys, call.causal);
      }
    });
    return result;
  } finally {
    instance.leave();
  }
}

/** The softmax probabilities [T][heads][S] behind attention(): rows sum to 1, masked keys are exactly 0. */
export function attentionWeights(
  q: Float32Array,
  k: Float32Array,
  v: Float32Array,
  options: AttentionOptions,
): Float32Array {
  const instance = activeInstance();
  instance.enter('attentionWeights');
  try {
    return weightsOf(instance, q, k, v, validate(q, k, v, options));
  } finally {
    instance.leave();
  }
}

function weightsOf(instance: Instance, q: Float32Array, k: Float32Array, v: Float32Array, call: OneShot): Float32Array {
  const { heads } = call.shape;
  const count = call.queries * heads * call.keys;
  let result = new Float32Array(0);
  // withKeys refuses a T×heads×S result too large for wasm memory before anything is allocated
  withKeys(instance, call, k, v, count * 4, (memory, weights) => {
    result = new Float32Array(count);
    const chunk = memory.chunkTokens;
    const offset = call.keys - call.queries;
    for (let from = 0; from < call.queries; from += chunk) {
      const n = Math.min(chunk, call.queries - from);
      memory.weights(
        0,
        q,
        from,
        n,
        offset + from,
        call.keys,
        call.causal,
        weights + from * heads * call.keys * 4,
        call.keys,
      );
    }
    instance.copyOut(weights, result, 0, count);
  });
  return result;
}
