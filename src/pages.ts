// Memory every cache of one kernel instance shares: the page pool and the staging area of a call.
//
// Pages (64 positions of one layer's K or V for one kv head, assembly/descriptor.ts) are refcounted: a
// fork shares its parent's pages, and a page goes back to the pool when no cache references it. Freed
// pages wait on a free list per page size, so a cache that gives a page back on truncate and takes one
// again on the next step costs an array pop, not an allocation; when the heap would otherwise have to
// grow WebAssembly memory, the free lists go back to the heap first (where they coalesce and serve blocks
// of any size).
//
// Calls never overlap (they are synchronous), so one staging area serves every cache of the instance,
// sized for the largest call seen; a cache learns its addresses again when it moved (`generation`).

import type { Kernel } from './kernel.js';
import type { LinearHeap } from './heap.js';

export class PagePool {
  readonly #heap: LinearHeap;
  /** page address → caches that reference it */
  readonly #refs = new Map<number, number>();
  /** page size → freed pages of that size */
  readonly #free = new Map<number, number[]>();
  #freeBytes = 0;

  constructor(heap: LinearHeap) {
    this.#heap = heap;
    heap.reclaim = () => this.trim();
  }

  /** Bytes of freed pages waiting for reuse (allocated from the heap, held by no cache). */
  get freeBytes(): number {
    return this.#freeBytes;
  }

  /** Pages referenced by some cache. */
  get pagesInUse(): number {
    return this.#refs.size;
  }

  /** A page of `bytes` bytes referenced once; a RangeError (from the heap) when memory cannot grow. */
  take(bytes: number): number {
    const free = this.#free.get(bytes);
    let page: number;
    if (free?.length) {
      page = free.pop() as number;
      this.#freeBytes -= bytes;
    } else {
      page = this.#heap.allocate(bytes);
    }
    this.#refs.set(page, 1);
    return page;
  }

  /** One more cache references `page`. */
  share(page: number): void {
    this.#refs.set(page, (this.#refs.get(page) as number) + 1);
  }

  /** True when more than one cache references `page` (a write must copy it first). */
  isShared(page: number): boolean {
    return (this.#refs.get(page) as number) > 1;
  }

  /** One cache fewer references `page` (of `bytes` bytes); the last one puts it on the free list. */
  drop(page: number, bytes: number): void {
    const refs = this.#refs.get(page) as number;
    if (refs > 1) {
      this.#refs.set(page, refs - 1);
      return;
    }
    this.#refs.delete(page);
    let free = this.#free.get(bytes);
    if (!free) this.#free.set(bytes, (free = []));
    free.push(page);
    this.#freeBytes += bytes;
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

/** The staging area shared by the caches of one instance. */
export class SharedStaging {
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

export interface InstanceMemory {
  pages: PagePool;
  staging: SharedStaging;
  /** An Int32Array over the whole memory, renewed when memory has grown (never hold it across an allocation). */
  words(): Int32Array;
}

const instances = new WeakMap<Kernel, InstanceMemory>();

/** The pool and staging of a kernel instance, made on first use. */
export function instanceMemory(kernel: Kernel): InstanceMemory {
  let memory = instances.get(kernel);
  if (!memory) {
    let view = new Int32Array(kernel.abi.memory.buffer);
    memory = {
      pages: new PagePool(kernel.heap),
      staging: new SharedStaging(kernel.heap),
      words() {
        if (view.buffer !== kernel.abi.memory.buffer) view = new Int32Array(kernel.abi.memory.buffer);
        return view;
      },
    };
    instances.set(kernel, memory);
  }
  return memory;
}
