// Where a cache's positions live and which of them a query sees: the rules the cache, its saved format
// and its memory share (assembly/layout.ts is the kernel's side of the same rules).
//
// A layer holds `slots` rows per kv head: without a window, position p in slot p; with one, the first
// `sinks` positions in slots 0 … sinks − 1 for ever, and every later position in a ring of `ring` slots
// after them, where it overwrites the position `ring` before it.

import { Descriptor } from './abi.js';

/** How a cache stores K and V (options.ts re-exports it as the public KVCacheDtype). */
export type KVCacheDtype = 'float32' | 'int8' | 'bfloat16' | 'int4';

export interface HeadShape {
  heads: number;
  kvHeads: number;
  headDim: number;
}

/** Where positions live (assembly/layout.ts): sinks, then a ring; `slots` = sinks + ring. */
export interface LayerGeometry extends HeadShape {
  dtype: KVCacheDtype;
  slots: number;
  sinks: number;
  ring: number;
}

/** Positions per page (a float32 cache's canonical blocks in the kernel are one or two pages). */
export const PAGE_ROWS = Descriptor.PAGE_ROWS;

/** A cache's layers: with a window, sinks that stay plus a ring of maxTokens; else maxTokens slots. */
export function cacheGeometry(
  shape: HeadShape,
  dtype: KVCacheDtype,
  maxTokens: number,
  window: number,
  sinks: number,
): LayerGeometry {
  return window > 0
    ? { ...shape, dtype, slots: sinks + maxTokens, sinks, ring: maxTokens }
    : { ...shape, dtype, slots: maxTokens, sinks: 0, ring: maxTokens };
}

/** One-shot attention's one layer: exactly `keys` slots, filled once, so the ring never wraps. */
export function oneShotGeometry(shape: HeadShape, keys: number, sinks: number): LayerGeometry {
  return { ...shape, dtype: 'float32', slots: keys, sinks, ring: keys };
}

/** The slot of a position (assembly/layout.ts). */
export function slotOf(position: number, sinks: number, ring: number): number {
  return position < sinks ? position : sinks + ((position - sinks) % ring);
}

/**
 * The lowest position past the sinks that a query at `position` sees through a window: it sees the sinks
 * and max(sinks, position − window + 1) … position. Also what a cache of length `position` must still
 * hold to continue.
 */
export function windowStart(position: number, window: number, sinks: number): number {
  return Math.max(sinks, position - window + 1);
}

/**
 * Once positions up to `end` − 1 were written, a ring of `ring` slots no longer holds the positions past
 * the sinks below this one (it may be below the sinks, or negative: then nothing was overwritten).
 */
export function overwrittenBelow(end: number, ring: number): number {
  return end - ring;
}

const STAGING_TARGET_BYTES = 1 << 20;
const STAGING_MAX_TOKENS = 256;

/**
 * Tokens one kernel call takes: enough to amortize the call, few enough to keep the staging area (q, k, v
 * and out of every token) near 1 MiB, and never more than `most`.
 */
export function chunkTokens(shape: HeadShape, most: number): number {
  const perToken = (2 * shape.heads + 2 * shape.kvHeads) * shape.headDim * 4;
  return Math.max(1, Math.min(STAGING_MAX_TOKENS, most, Math.floor(STAGING_TARGET_BYTES / perToken)));
}

/**
 * A cache's chunk: with a window, a chunk appended at once may not overwrite a key one of its own queries
 * still needs, so it takes at most ring − window + 1 tokens.
 */
export function cacheChunkTokens(geometry: LayerGeometry, window: number): number {
  return chunkTokens(geometry, window > 0 ? geometry.ring - window + 1 : geometry.ring);
}

/** The descriptor's code of a dtype (assembly/descriptor.ts DTYPE_*). */
export function dtypeCode(dtype: KVCacheDtype): number {
  if (dtype === 'int8') return Descriptor.DTYPE_INT8;
  if (dtype === 'bfloat16') return Descriptor.DTYPE_BFLOAT16;
  if (dtype === 'int4') return Descriptor.DTYPE_INT4;
  return Descriptor.DTYPE_FLOAT32;
}

/** Values of an int4 row that share one scale (assembly/descriptor.ts INT4_GROUP). */
export const INT4_GROUP = Descriptor.INT4_GROUP;

/** Bytes of one K or V row of `headDim` values in `dtype` (assembly/descriptor.ts rowBytesOf), scales apart. */
export function rowBytesOf(headDim: number, dtype: KVCacheDtype): number {
  if (dtype === 'int8') return headDim;
  if (dtype === 'bfloat16') return 2 * headDim;
  if (dtype === 'int4') return Math.ceil(headDim / 2);
  return 4 * headDim;
}

/** Bytes of one row's scales: int8 one f32, int4 one f32 per group of INT4_GROUP values, else none. */
export function scaleBytesOf(headDim: number, dtype: KVCacheDtype): number {
  if (dtype === 'int8') return 4;
  if (dtype === 'int4') return 4 * Math.ceil(headDim / INT4_GROUP);
  return 0;
}

/** Bytes of one page: 64 rows, then (int8, int4) their scales. */
export function pageBytesOf(geometry: LayerGeometry): number {
  return PAGE_ROWS * (rowBytesOf(geometry.headDim, geometry.dtype) + scaleBytesOf(geometry.headDim, geometry.dtype));
}

/** Pages per (layer, kv head, K|V) when every slot is in use. */
export function pagesPerHead(geometry: LayerGeometry): number {
  return Math.ceil(geometry.slots / PAGE_ROWS);
}

/**
 * The pages (ascending) that positions firstPosition … firstPosition + tokens − 1 write. Its own function:
 * a closure in reserve() would make every call allocate its context, a decode step's too.
 */
export function pagesOf(firstPosition: number, tokens: number, sinks: number, ring: number): number[] {
  const end = firstPosition + tokens;
  const pages = new Set<number>();
  const addSlots = (a: number, b: number) => {
    for (let i = Math.floor(a / PAGE_ROWS); i <= Math.floor((b - 1) / PAGE_ROWS); i++) pages.add(i);
  };
  if (firstPosition < sinks) addSlots(firstPosition, Math.min(end, sinks));
  const from = Math.max(firstPosition, sinks);
  if (from < end) {
    const count = end - from;
    const s0 = (from - sinks) % ring;
    if (count >= ring) addSlots(sinks, sinks + ring);
    else if (s0 + count <= ring) addSlots(sinks + s0, sinks + s0 + count);
    else {
      addSlots(sinks + s0, sinks + ring);
      addSlots(sinks, sinks + s0 + count - ring);
    }
  }
  return [...pages].sort((a, b) => a - b);
}

/** Slots a windowed layer of a `perLayer` cache holds past its window: one kernel call's chunk of 256 tokens. */
export const RING_ROOM = 255;

/**
 * The ring of a windowed layer in a `perLayer` cache: its window plus room for a chunk, at most maxTokens.
 * maxTokens is then what a global layer holds, and a windowed layer beside it costs its window only.
 */
export function ownRing(window: number, maxTokens: number): number {
  return window > 0 ? Math.min(maxTokens, window + RING_ROOM) : maxTokens;
}
