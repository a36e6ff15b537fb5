// wasm-attention's kernel: the one entry file, and the whole ABI.
//
// The ABI is numbers only: byte addresses into this module's memory, counts and flags (i32), scales (f32,
// f64). The facade (src/) owns the memory layout: it places every block with its own allocator above
// heapBase(), copies tensors in and out, and validates every argument before a call, so nothing here
// checks bounds (the release builds use --noAssert) and nothing here allocates or grows memory.
//
// Tensors are f32 and row-major:
//   queries, outputs   [tokens][heads][headDim]        (one contiguous "staging" block per call)
//   new keys, values   [tokens][kvHeads][headDim]
//   cached K and V     [kvHeads][slots][headDim]        f32, or i8 with f32 scales [kvHeads][slots]
// Grouped-query attention: query head h reads kv head h / (heads / kvHeads).
// Positions map to slots as documented in layout.ts (attention sinks, then a ring of `ring` slots).

import { appendF32 as appendF32Rows, appendI8 as appendI8Rows } from './layout';
import { attendQueries, attentionWeights, scratchBytesFor } from './attend';
import { ropeTableBytes as ropeTableSize, ropeFrequencies as fillRopeFrequencies, rope as rotate } from './rope';
import { exp4, expScalar } from './math';

/** Which build this is: 0 scalar, 1 simd, 2 relaxed-simd (so a binary handed to init() names itself). */
export function build(): i32 {
  return ASC_FEATURE_RELAXED_SIMD ? 2 : ASC_FEATURE_SIMD ? 1 : 0;
}

/** First byte the facade may use: everything below holds this module's static data. */
export function heapBase(): usize {
  return __heap_base;
}

/** Bytes of scratch `attend` and `weights` need for this head geometry. */
export function scratchBytes(heads: i32, kvHeads: i32, headDim: i32): usize {
  return scratchBytesFor(heads, kvHeads, headDim);
}

/** Bytes of a rope table for `dims` rotated dimensions (see rope.ts). */
export function ropeTableBytes(dims: i32): usize {
  return ropeTableSize(dims);
}

/** Fills a rope table: θ^(−2i/dims) for i < dims/2, and no cached position. */
export function ropeFrequencies(table: usize, dims: i32, theta: f64): void {
  fillRopeFrequencies(table, dims, theta);
}

/**
 * Rotates, in place, `tokens` × `rowHeads` rows of `headDim` floats at `rows` by the positions
 * firstPosition … firstPosition + tokens − 1. interleaved: 0 half-split (NeoX/Llama), 1 pairwise (GPT-J).
 */
export function rope(
  rows: usize, tokens: i32, rowHeads: i32, headDim: i32, firstPosition: i32, dims: i32, interleaved: i32, table: usize,
): void {
  rotate(rows, tokens, rowHeads, headDim, firstPosition, dims, interleaved, table);
}

/** Writes `tokens` token-major rows of `src` ([tokens][kvHeads][headDim]) into a f32 block at their slots. */
export function appendF32(
  src: usize, tokens: i32, firstPosition: i32, kvHeads: i32, headDim: i32,
  dst: usize, slots: i32, sinks: i32, ring: i32,
): void {
  appendF32Rows(src, tokens, firstPosition, kvHeads, headDim, dst, slots, sinks, ring);
}

/** As appendF32 into an int8 block, one symmetric scale per (token, kv head) written to `scales`. */
export function appendI8(
  src: usize, tokens: i32, firstPosition: i32, kvHeads: i32, headDim: i32,
  dst: usize, scales: usize, slots: i32, sinks: i32, ring: i32,
): void {
  appendI8Rows(src, tokens, firstPosition, kvHeads, headDim, dst, scales, slots, sinks, ring);
}

/**
 * out = attention of the `tokens` queries at `q` (positions firstPosition + t) over one layer's keys.
 *   keys, values          the layer's K and V blocks; keyScales, valueScales: their int8 scales (int8 = 1)
 *   slots, sinks, ring    the block's geometry (slot of a position: layout.ts)
 *   keyEnd                keys exist at positions 0 … keyEnd − 1
 *   causal                1: query at p sees keys ≤ p; 0: every key (the window still bounds from below)
 *   window                0 for none, else the query at p also needs key > p − window, except keys < sinks
 *   scale, softcap        score = scale · q·k, then softcap · tanh(score / softcap) when softcap > 0
 *   scratch               scratchBytes(heads, kvHeads, headDim) bytes
 *   stream                1: touch each block's K/V lines before use (for K/V that will not be cached;
 *                         decode-like calls only, see attend.ts)
 */
export function attend(
  q: usize, tokens: i32, firstPosition: i32, heads: i32, kvHeads: i32, headDim: i32,
  keys: usize, values: usize, keyScales: usize, valueScales: usize, int8: i32,
  slots: i32, sinks: i32, ring: i32, keyEnd: i32, causal: i32, window: i32,
  scale: f32, softcap: f32, out: usize, scratch: usize, stream: i32,
): void {
  attendQueries(q, tokens, firstPosition, heads, kvHeads, headDim, keys, values, keyScales, valueScales, int8,
    slots, sinks, ring, keyEnd, causal, window, scale, softcap, out, scratch, stream);
}

/** The softmax probabilities of `attend`'s computation into out: [tokens][heads][keyCount], 0 where masked. */
export function weights(
  q: usize, tokens: i32, firstPosition: i32, heads: i32, kvHeads: i32, headDim: i32,
  keys: usize, keyScales: usize, int8: i32,
  slots: i32, sinks: i32, ring: i32, keyEnd: i32, causal: i32, window: i32,
  scale: f32, softcap: f32, out: usize, keyCount: i32, scratch: usize,
): void {
  attentionWeights(q, tokens, firstPosition, heads, kvHeads, headDim, keys, keyScales, int8,
    slots, sinks, ring, keyEnd, causal, window, scale, softcap, out, keyCount, scratch);
}

/** Diagnostics: e^x in place over `count` floats with the kernel's own exp (tests measure its error). */
export function exp(values: usize, count: i32): void {
  let i = 0;
  if (ASC_FEATURE_SIMD) {
    for (; i + 4 <= count; i += 4) {
      const at = values + (<usize>i << 2);
      v128.store(at, exp4(v128.load(at)));
    }
  }
  for (; i < count; i++) {
    const at = values + (<usize>i << 2);
    store<f32>(at, expScalar(load<f32>(at)));
  }
}
