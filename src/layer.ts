// One layer's blocks in linear memory, and the data path of a chunk of tokens through the kernel:
// copy k/v in → rotate → append to the cache blocks; copy q in → rotate → attend → copy the output out.
// A prefill of many tokens runs as chunks of at most `staging.tokens`, so the staging area (and memory) is
// sized once, when the cache is made, and never grows during attend.

import type { Kernel } from './kernel.js';
import type { HeadShape, RopeSettings, Scoring } from './options.js';

/** Where positions live in a layer's blocks (assembly/layout.ts): sinks, then a ring. */
export interface LayerGeometry extends HeadShape {
  int8: boolean;
  slots: number;
  sinks: number;
  ring: number;
}

/** Byte addresses of one layer's K and V blocks (and their int8 scales, 0 for float32). */
export interface LayerBlocks {
  keys: number;
  values: number;
  keyScales: number;
  valueScales: number;
}

/** Byte addresses of the per-call working memory: token-major q, k, v, out of `tokens` tokens, scratch. */
export interface Staging {
  tokens: number;
  q: number;
  k: number;
  v: number;
  out: number;
  scratch: number;
  /** rope table (0 without rope) */
  rope: number;
}

const STAGING_TARGET_BYTES = 1 << 20;
const STAGING_MAX_TOKENS = 256;

/** Tokens per chunk: enough to amortize each call, few enough to keep staging near 1 MiB. */
export function stagingTokens(shape: HeadShape): number {
  const perToken = (2 * shape.heads + 2 * shape.kvHeads) * shape.headDim * 4;
  return Math.max(1, Math.min(STAGING_MAX_TOKENS, Math.floor(STAGING_TARGET_BYTES / perToken)));
}

/** Bytes of one layer's K block (V is the same) and of its scales. */
export function layerBlockBytes(geometry: LayerGeometry): { rows: number; scales: number } {
  const cells = geometry.kvHeads * geometry.slots;
  return { rows: cells * geometry.headDim * (geometry.int8 ? 1 : 4), scales: geometry.int8 ? cells * 4 : 0 };
}

/** Lays blocks out one after another, each on a 64-byte boundary. */
export class Placer {
  #next: number;
  constructor(base: number) {
    this.#next = base;
  }
  take(bytes: number): number {
    const at = this.#next;
    this.#next = at + Math.ceil(bytes / 64) * 64;
    return at;
  }
  get end(): number {
    return this.#next;
  }
}

export function placeLayer(placer: Placer, geometry: LayerGeometry): LayerBlocks {
  const { rows, scales } = layerBlockBytes(geometry);
  return {
    keys: placer.take(rows),
    values: placer.take(rows),
    keyScales: scales ? placer.take(scales) : 0,
    valueScales: scales ? placer.take(scales) : 0,
  };
}

export function placeStaging(placer: Placer, kernel: Kernel, shape: HeadShape, tokens: number, rope?: RopeSettings): Staging {
  const query = tokens * shape.heads * shape.headDim * 4;
  const key = tokens * shape.kvHeads * shape.headDim * 4;
  return {
    tokens,
    q: placer.take(query),
    k: placer.take(key),
    v: placer.take(key),
    out: placer.take(query),
    scratch: placer.take(kernel.abi.scratchBytes(shape.heads, shape.kvHeads, shape.headDim)),
    rope: rope ? placer.take(kernel.abi.ropeTableBytes(rope.dims)) : 0,
  };
}

/** Bytes that placeLayer/placeStaging would take, without placing anything. */
export function measure(place: (placer: Placer) => void): number {
  const placer = new Placer(0);
  place(placer);
  return placer.end;
}

export interface Layer {
  kernel: Kernel;
  geometry: LayerGeometry;
  blocks: LayerBlocks;
  staging: Staging;
  rope?: RopeSettings;
  /** K/V too large to stay cached between uses: decode steps touch each block first (assembly/attend.ts) */
  stream: boolean;
}

/**
 * Beyond this many bytes of K/V (a whole cache's, every layer: a model's layers evict each other between
 * steps) decode streams. Measured here: +20% for a 16-layer 49 MiB cache, +30–80% for one layer of
 * 12–50 MiB, −10–20% for a single layer of 3–6 MiB that stays in L2/L3. Re-measured interleaved with the
 * register-budgeted loops (2-core machine shared with other jobs): 1.33–1.45× for one layer of 34–50 MB,
 * 1.53–1.65× for 16 layers of 8–34 MB each, 1.01× at 8–13 MB (GPT-2 and Llama shapes, L = 2048).
 */
export const STREAM_BYTES = 8 << 20;

/** Appends tokens from … from + count − 1 of k and v at positions firstPosition …, rotating k first. */
export function appendTokens(
  layer: Layer, k: Float32Array, v: Float32Array, from: number, count: number, firstPosition: number,
): void {
  const { kernel, geometry: g, blocks, staging } = layer;
  const row = g.kvHeads * g.headDim;
  copyIn(kernel, staging.k, k, from * row, count * row);
  copyIn(kernel, staging.v, v, from * row, count * row);
  if (layer.rope) {
    kernel.abi.rope(staging.k, count, g.kvHeads, g.headDim, firstPosition, layer.rope.dims, layer.rope.interleaved ? 1 : 0, staging.rope);
  }
  if (g.int8) {
    kernel.abi.appendI8(staging.k, count, firstPosition, g.kvHeads, g.headDim, blocks.keys, blocks.keyScales, g.slots, g.sinks, g.ring);
    kernel.abi.appendI8(staging.v, count, firstPosition, g.kvHeads, g.headDim, blocks.values, blocks.valueScales, g.slots, g.sinks, g.ring);
  } else {
    kernel.abi.appendF32(staging.k, count, firstPosition, g.kvHeads, g.headDim, blocks.keys, g.slots, g.sinks, g.ring);
    kernel.abi.appendF32(staging.v, count, firstPosition, g.kvHeads, g.headDim, blocks.values, g.slots, g.sinks, g.ring);
  }
}

/** Attention of queries from … from + count − 1 (at positions firstPosition …) into out. */
export function attendTokens(
  layer: Layer, q: Float32Array, out: Float32Array, from: number, count: number, firstPosition: number,
  keyEnd: number, causal: boolean, scoring: Scoring,
): void {
  const { kernel, geometry: g, blocks, staging } = layer;
  const row = g.heads * g.headDim;
  copyIn(kernel, staging.q, q, from * row, count * row);
  if (layer.rope) {
    kernel.abi.rope(staging.q, count, g.heads, g.headDim, firstPosition, layer.rope.dims, layer.rope.interleaved ? 1 : 0, staging.rope);
  }
  kernel.abi.attend(
    staging.q, count, firstPosition, g.heads, g.kvHeads, g.headDim,
    blocks.keys, blocks.values, blocks.keyScales, blocks.valueScales, g.int8 ? 1 : 0,
    g.slots, g.sinks, g.ring, keyEnd, causal ? 1 : 0, scoring.window,
    scoring.scale, scoring.softcap, staging.out, staging.scratch, layer.stream ? 1 : 0,
  );
  copyOut(kernel, staging.out, out, from * row, count * row);
}

/** Copies src[from … from + count) to the f32 at byte address `at`. */
export function copyIn(kernel: Kernel, at: number, src: Float32Array, from: number, count: number): void {
  const heap = kernel.f32();
  heap.set(from === 0 && count === src.length ? src : src.subarray(from, from + count), at >>> 2);
}

/** Copies count f32 from byte address `at` to dst[from …]; small copies loop instead of making a view. */
export function copyOut(kernel: Kernel, at: number, dst: Float32Array, from: number, count: number): void {
  const heap = kernel.f32();
  const start = at >>> 2;
  if (count <= 4096) {
    for (let i = 0; i < count; i++) dst[from + i] = heap[start + i];
  } else {
    dst.set(heap.subarray(start, start + count), from);
  }
}
