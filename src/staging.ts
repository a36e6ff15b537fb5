// The staging area of a call: where the facade copies a chunk's q, k and v before the kernel call and
// reads its output after, beside the kernel's scratch. Calls never overlap (they are synchronous), so one
// area serves every cache of an instance, sized for the largest call seen; a cache learns its addresses
// again when the area moved (`generation`).

import type { HeadShape } from './geometry.js';
import type { LinearHeap } from './heap.js';

const ALIGN = 64;
const align = (n: number) => Math.ceil(n / ALIGN) * ALIGN;

/** Byte offsets of q, k, v, out and scratch in the staging area for one cache's shape and chunk. */
export interface StagingLayout {
  tokens: number;
  q: number;
  k: number;
  v: number;
  out: number;
  scratch: number;
  /** scratch bytes of one thread */
  scratchBytes: number;
  bytes: number;
}

/** The layout of `tokens` tokens of `shape`, with `scratchBytes` of kernel scratch (its scratchBytes export). */
export function stagingLayout(shape: HeadShape, tokens: number, scratchBytes: number): StagingLayout {
  const query = align(tokens * shape.heads * shape.headDim * 4);
  const key = align(tokens * shape.kvHeads * shape.headDim * 4);
  const scratch = align(scratchBytes);
  return {
    tokens,
    q: 0,
    k: query,
    v: query + key,
    out: query + 2 * key,
    scratch: 2 * query + 2 * key,
    scratchBytes: scratch,
    bytes: 2 * query + 2 * key + scratch,
  };
}

export class Staging {
  readonly #heap: LinearHeap;
  address = 0;
  bytes = 0;
  /** bumped whenever the area moves */
  generation = 0;

  constructor(heap: LinearHeap) {
    this.#heap = heap;
  }

  /** Makes the area at least `bytes` long (a RangeError when memory cannot grow; nothing changes then). */
  ensure(bytes: number): void {
    if (bytes <= this.bytes) return;
    const address = this.#heap.allocate(bytes);
    if (this.address) this.#heap.release(this.address);
    this.address = address;
    this.bytes = bytes;
    this.generation++;
  }
}
