// The page pool of one kernel instance (instance.ts owns it): every cache's pages, page tables and
// descriptors come from it.
//
// Pages (64 positions of one layer's K or V for one kv head, assembly/descriptor.ts) are refcounted: a
// fork shares its parent's pages, and a page goes back to the pool when no cache references it. Freed
// pages wait on a free list per page size, so a cache that gives a page back on truncate and takes one
// again on the next step costs an array pop, not an allocation; when the heap would otherwise have to
// grow WebAssembly memory, the free lists go back to the heap first (where they coalesce and serve blocks
// of any size).

import type { LinearHeap } from './heap.js';

export class PagePool {
  readonly #heap: LinearHeap;
  readonly #words: () => Int32Array;
  /** page size → freed pages of that size */
  readonly #free = new Map<number, number[]>();
  #freeBytes = 0;
  #inUse = 0;

  constructor(heap: LinearHeap, words: () => Int32Array) {
    this.#heap = heap;
    this.#words = words;
    heap.reclaim = () => this.trim();
  }

  /** Bytes of freed pages waiting for reuse (allocated from the heap, held by no cache). */
  get freeBytes(): number {
    return this.#freeBytes;
  }

  /** Pages referenced by some cache. */
  get pagesInUse(): number {
    return this.#inUse;
  }

  // A page's refcount lives in linear memory right after its `bytes` bytes (in the 64 the heap block has
  // beyond them), so a fork of thousands of pages counts them with typed-array increments, not a Map.

  /** A page of `bytes` bytes referenced once; a RangeError (from the heap) when memory cannot grow. */
  take(bytes: number): number {
    const page = this.takeBlock(bytes + COUNT_BYTES);
    this.#words()[(page + bytes) >>> 2] = 1;
    this.#inUse++;
    return page;
  }

  /**
   * A block of `bytes` (64-byte multiples) from the free list of its size, else from the heap. Caches take
   * their page tables and descriptors this way too: blocks of a few sizes, freed and taken again as caches
   * come and go, which would otherwise leave the heap a long list of small holes to search.
   */
  takeBlock(bytes: number): number {
    const free = this.#free.get(bytes);
    if (free?.length) {
      this.#freeBytes -= bytes;
      return free.pop() as number;
    }
    return this.#heap.allocate(bytes);
  }

  /** Puts a block from takeBlock on the free list of its size. */
  dropBlock(block: number, bytes: number): void {
    let free = this.#free.get(bytes);
    if (!free) {
      free = [];
      this.#free.set(bytes, free);
    }
    free.push(block);
    this.#freeBytes += bytes;
  }

  /** One more cache references `page` (of `bytes` bytes). */
  share(page: number, bytes: number): void {
    this.#words()[(page + bytes) >>> 2]++;
  }

  /** True when more than one cache references `page` (a write must copy it first). */
  isShared(page: number, bytes: number): boolean {
    return this.#words()[(page + bytes) >>> 2] > 1;
  }

  /** One cache fewer references `page` (of `bytes` bytes); the last one puts it on the free list. */
  drop(page: number, bytes: number): void {
    const words = this.#words();
    const at = (page + bytes) >>> 2;
    if (--words[at] > 0) return;
    this.dropBlock(page, bytes + COUNT_BYTES);
    this.#inUse--;
  }

  /** Gives every free page back to the heap; true if there was any. */
  trim(): boolean {
    if (this.#freeBytes === 0) return false;
    for (const pages of this.#free.values()) {
      for (const page of pages) this.#heap.release(page);
      pages.length = 0;
    }
    this.#freeBytes = 0;
    return true;
  }
}

/** Bytes after a page that hold its refcount (one cache line, so pages stay 64-byte aligned). */
export const COUNT_BYTES = 64;
