// Helpers for the lifecycle, persistence, int8 and memory tests: token streams, feeding a cache in
// chunks, an independent parser/rewriter of the saved-cache format (docs/FORMAT.md), a float64 reference
// for one query of a windowed cache at any position, and an explicit model of a window's ring slots.

import { crc32 as zlibCrc32 } from 'node:zlib';
import { expect } from 'vitest';
import type { KVCache } from '../src/index.js';
import { activeKernel } from '../src/kernel.js';
import { instanceMemory } from '../src/pages.js';
import { referenceRope, type ReferenceCache, type ReferenceCacheOptions } from './reference.js';
import { Rng, concat, tokens } from './util.js';

export type Cfg = ReferenceCacheOptions & { dtype?: 'float32' | 'int8' };

export interface Stream {
  q: Float32Array;
  k: Float32Array;
  v: Float32Array;
  n: number;
}

export const kvHeadsOf = (cfg: Cfg) => cfg.kvHeads ?? cfg.heads;
export const qWidth = (cfg: Cfg) => cfg.heads * cfg.headDim;
export const kWidth = (cfg: Cfg) => kvHeadsOf(cfg) * cfg.headDim;

/** n tokens of unit-variance q, k, v. */
export function stream(cfg: Cfg, n: number, seed: number): Stream {
  const rng = new Rng(seed);
  return { q: rng.randn(n * qWidth(cfg)), k: rng.randn(n * kWidth(cfg)), v: rng.randn(n * kWidth(cfg)), n };
}

/** Tokens [from, to) of a stream. */
export function slice(cfg: Cfg, s: Stream, from: number, to: number): Stream {
  return {
    q: tokens(s.q, qWidth(cfg), from, to),
    k: tokens(s.k, kWidth(cfg), from, to),
    v: tokens(s.v, kWidth(cfg), from, to),
    n: to - from,
  };
}

export function join(cfg: Cfg, parts: Stream[]): Stream {
  return {
    q: concat(parts.map((p) => p.q)),
    k: concat(parts.map((p) => p.k)),
    v: concat(parts.map((p) => p.v)),
    n: parts.reduce((a, p) => a + p.n, 0),
  };
}

export const ones = (n: number): number[] => Array.from({ length: n }, () => 1);

/** Feeds the stream to `layer` in chunks of the given sizes (default: one call); the concatenated outputs. */
export function feed(cache: KVCache, cfg: Cfg, s: Stream, chunks: number[] = [s.n], layer = 0): Float32Array {
  const outs: Float32Array[] = [];
  let at = 0;
  for (const c of chunks) {
    const part = slice(cfg, s, at, at + c);
    outs.push(cache.attend(layer, part.q, part.k, part.v));
    at += c;
  }
  expect(at, 'chunks must cover the stream').toBe(s.n);
  return concat(outs);
}

export function feedRef(ref: ReferenceCache, cfg: Cfg, s: Stream, chunks: number[] = [s.n], layer = 0): Float64Array {
  const outs: Float64Array[] = [];
  let at = 0;
  for (const c of chunks) {
    const part = slice(cfg, s, at, at + c);
    outs.push(ref.attend(layer, part.q, part.k, part.v));
    at += c;
  }
  const all = new Float64Array(outs.reduce((a, o) => a + o.length, 0));
  let o = 0;
  for (const x of outs) {
    all.set(x, o);
    o += x.length;
  }
  return all;
}

export function cfgName(c: Cfg): string {
  const parts = [`${c.heads}h/${kvHeadsOf(c)}kv`, `d${c.headDim}`, `max ${c.maxTokens}`];
  if (c.layers) parts.push(`${c.layers} layers`);
  if (c.window !== undefined) parts.push(`window ${c.window}`);
  if (c.sinks) parts.push(`sinks ${c.sinks}`);
  if (c.softcap !== undefined) parts.push(`softcap ${c.softcap}`);
  if (c.scale !== undefined) parts.push(`scale ${c.scale}`);
  if (c.rope) parts.push(`rope ${JSON.stringify(c.rope)}`);
  if (c.dtype) parts.push(c.dtype);
  return parts.join(', ');
}

// ---------------------------------------------------------------------------------------------
// Kernel internals a unit test may look at

/** The active kernel's allocator: memoryBytes (the wasm memory) and allocatedBytes (live blocks). */
export function heap() {
  return activeKernel().heap;
}

/**
 * Bytes the active kernel's caches hold: the heap's live blocks, less the pool's freed pages waiting for
 * reuse and the staging area every cache shares (neither belongs to a cache).
 */
export function heldBytes(kernel = activeKernel()): number {
  const { pages, staging } = instanceMemory(kernel);
  return kernel.heap.allocatedBytes - pages.freeBytes - staging.bytes;
}

/** Bytes one page of a cache of `cfg` takes: 64 positions of one layer's K or V for one kv head, and 64 for its refcount. */
export function pageBytesFor(cfg: Cfg): number {
  return (cfg.dtype === 'int8' ? 64 * (cfg.headDim + 4) : 64 * cfg.headDim * 4) + 64;
}

/** Appends `n` tokens of one reused random chunk to `layer` (fills big caches fast). */
export function fill(cache: KVCache, cfg: Cfg, n: number, layer = 0, chunk = 1024): void {
  const width = kWidth(cfg);
  let rows = fillRows.get(width);
  if (!rows) fillRows.set(width, (rows = new Rng(4242).randn(chunk * width)));
  for (let done = 0; done < n; done += chunk) {
    const part = rows.subarray(0, Math.min(chunk, n - done) * width);
    cache.append(layer, part, part);
  }
}
const fillRows = new Map<number, Float32Array>();

export const DISPOSE: symbol = (Symbol as unknown as { dispose?: symbol }).dispose ?? Symbol.for('Symbol.dispose');

// ---------------------------------------------------------------------------------------------
// The saved-cache format, parsed independently of src/persist.ts

export const crc32 = (bytes: Uint8Array): number => zlibCrc32(bytes) >>> 0;

export interface Parsed {
  version: number;
  headerLength: number;
  header: {
    options: Record<string, unknown>;
    build: string;
    layers: { from: number; to: number; held: number }[];
    continues: number;
    reaches: number;
  };
  payloadStart: number;
  payload: Uint8Array;
  crc: number;
}

export function parseSave(bytes: Uint8Array): Parsed {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  expect(new TextDecoder().decode(bytes.subarray(0, 8))).toBe('wattn-kv');
  const version = view.getUint32(8, true);
  const headerLength = view.getUint32(12, true);
  const header = JSON.parse(new TextDecoder().decode(bytes.subarray(16, 16 + headerLength)));
  const payloadStart = (16 + headerLength + 3) & ~3;
  return {
    version, headerLength, header, payloadStart,
    payload: bytes.subarray(payloadStart, bytes.length - 4),
    crc: view.getUint32(bytes.length - 4, true),
  };
}

/** Writes a correct CRC-32 over everything before the last 4 bytes (in place); returns the bytes. */
export function rechecksum(bytes: Uint8Array): Uint8Array {
  new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength)
    .setUint32(bytes.length - 4, crc32(bytes.subarray(0, bytes.length - 4)), true);
  return bytes;
}

/**
 * A well-formed envelope (magic, version, header length, padding, correct CRC) around `header` (an
 * object, serialized as JSON, a raw string, or raw bytes) and `payload`.
 */
export function envelope(header: unknown, payload: Uint8Array, version = 1): Uint8Array {
  const json = header instanceof Uint8Array ? header
    : new TextEncoder().encode(typeof header === 'string' ? header : JSON.stringify(header));
  const payloadStart = (16 + json.length + 3) & ~3;
  const bytes = new Uint8Array(payloadStart + payload.length + 4);
  bytes.set(new TextEncoder().encode('wattn-kv'), 0);
  const view = new DataView(bytes.buffer);
  view.setUint32(8, version, true);
  view.setUint32(12, json.length, true);
  bytes.set(json, 16);
  bytes.set(payload, payloadStart);
  return rechecksum(bytes);
}

/** The same saved cache with its header changed by `edit` (a deep copy is passed), re-checksummed. */
export function withHeader(bytes: Uint8Array, edit: (h: Parsed['header']) => unknown): Uint8Array {
  const p = parseSave(bytes);
  const h = JSON.parse(JSON.stringify(p.header));
  const edited = edit(h);
  return envelope(edited === undefined ? h : edited, p.payload, p.version);
}

// ---------------------------------------------------------------------------------------------
// Windowed reference at any position (the full ReferenceCache is quadratic in the history)

/**
 * The float64 output [heads][headDim] of the query at position p of a cache fed `s` from position 0,
 * under cfg's window/sinks/scale/softcap/rope: only keys j < sinks or p - window < j <= p are visible.
 */
export function windowedReferenceAt(cfg: Cfg, s: Stream, p: number): Float64Array {
  const { heads, headDim: D } = cfg;
  const kvHeads = kvHeadsOf(cfg);
  const window = cfg.window ?? Infinity;
  const sinks = cfg.sinks ?? 0;
  const scale = cfg.scale ?? 1 / Math.sqrt(D);
  const visible: number[] = [];
  for (let j = 0; j < Math.min(sinks, p + 1); j++) visible.push(j);
  for (let j = Math.max(sinks, p - window + 1); j <= p; j++) visible.push(j);
  const kw = kvHeads * D;
  let q: ArrayLike<number> = s.q.subarray(p * heads * D, (p + 1) * heads * D);
  const k = new Float64Array(visible.length * kw);
  const v = new Float64Array(visible.length * kw);
  visible.forEach((j, i) => {
    k.set(s.k.subarray(j * kw, (j + 1) * kw), i * kw);
    v.set(s.v.subarray(j * kw, (j + 1) * kw), i * kw);
  });
  let kr: ArrayLike<number> = k;
  if (cfg.rope) {
    q = referenceRope(q, 1, heads, D, [p], cfg.rope);
    kr = referenceRope(k, visible.length, kvHeads, D, visible, cfg.rope);
  }
  const out = new Float64Array(heads * D);
  const group = heads / kvHeads;
  const scores = new Float64Array(visible.length);
  for (let h = 0; h < heads; h++) {
    const kh = Math.floor(h / group);
    let max = -Infinity;
    for (let i = 0; i < visible.length; i++) {
      let dot = 0;
      for (let d = 0; d < D; d++) dot += q[h * D + d] * kr[i * kw + kh * D + d];
      let sc = scale * dot;
      if (cfg.softcap !== undefined) sc = cfg.softcap * Math.tanh(sc / cfg.softcap);
      scores[i] = sc;
      max = Math.max(max, sc);
    }
    let sum = 0;
    for (let i = 0; i < visible.length; i++) sum += (scores[i] = Math.exp(scores[i] - max));
    for (let i = 0; i < visible.length; i++) {
      const w = scores[i] / sum;
      for (let d = 0; d < D; d++) out[h * D + d] += w * v[i * kw + kh * D + d];
    }
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// An explicit model of the slots of one windowed layer (API.md: sinks never evicted, a ring of maxTokens)

export class RingModel {
  /** the position each slot holds, -1 when it holds nothing usable */
  readonly slots: number[];
  length = 0;
  constructor(readonly maxTokens: number, readonly window: number, readonly sinks: number) {
    this.slots = new Array<number>(sinks + maxTokens).fill(-1);
  }
  slotOf(p: number): number {
    return p < this.sinks ? p : this.sinks + ((p - this.sinks) % this.maxTokens);
  }
  append(count: number): void {
    for (let i = 0; i < count; i++) this.slots[this.slotOf(this.length + i)] = this.length + i;
    this.length += count;
  }
  holds(p: number): boolean {
    return this.slots[this.slotOf(p)] === p;
  }
  /** May the layer be truncated to n: does the next query (position n) find every key it may see? */
  canTruncate(n: number): boolean {
    if (n >= this.length) return true;
    for (let j = 0; j < n; j++) {
      const visible = j < this.sinks || j > n - this.window;
      if (visible && !this.holds(j)) return false;
    }
    return true;
  }
  truncate(n: number): void {
    if (n >= this.length) return;
    for (let i = 0; i < this.slots.length; i++) if (this.slots[i] >= n) this.slots[i] = -1;
    this.length = n;
  }
}
