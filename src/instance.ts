// One wasm instance of the kernel and everything that belongs to it: its exports (the ABI), its memory and
// the views over that memory, the allocator that places every block in it, the page pool and the staging
// area every cache of the instance shares, and the thread pool of a shared-memory build. Every kernel call
// of a cache (append, attend, step, weights) goes through `call`, the one place that decides whether it
// runs across threads.
//
// Each build is instantiated once per process (init.ts), so every cache made on it lives in this one
// memory: a cache keeps the instance it was made on.

import { type Build, CALL, type CallWords, type KernelExports } from './abi.js';
import { LinearHeap } from './heap.js';
import { PagePool } from './pages.js';
import { Staging } from './staging.js';
import { ThreadPool } from './threads.js';
import { float32Range, setFloats, wholeUnshared } from './typed-arrays.js';

/** Floats up to which copyIn loops even over a whole unshared array (a set costs more below). */
const SMALL_COPY = 32;
/** Floats up to which a copy loops rather than make a view (a view is an object on the JavaScript heap). */
const LOOP_COPY = 4096;

/** The kernel calls of a cache: attend the staged queries, append the staged keys and values, both (step), or weights. */
export type Entry = 'append' | 'attend' | 'step' | 'weights';

export class Instance {
  readonly build: Build;
  readonly abi: KernelExports;
  readonly heap: LinearHeap;
  /** Pages, page tables and descriptors of every cache of this instance. */
  readonly pages: PagePool;
  /** Where a call's q, k, v, out and scratch are staged: one area, since calls never overlap. */
  readonly staging: Staging;
  /** The workers that join this instance's calls: shared-memory builds only. */
  readonly pool?: ThreadPool;
  #i32: Int32Array;
  #f32: Float32Array;
  #u8: Uint8Array;
  #growths: number;
  /** the public call running on this instance, if any (calls do not nest: `enter`) */
  #running: string | undefined;

  /** `shared`: the module imports its memory (a threads build), which the pool's workers instantiate too. */
  constructor(build: Build, abi: KernelExports, shared?: WebAssembly.Module) {
    this.build = build;
    this.abi = abi;
    this.heap = new LinearHeap(abi.memory, abi.heapBase());
    this.#growths = this.heap.growths;
    this.#i32 = new Int32Array(abi.memory.buffer);
    this.#f32 = new Float32Array(abi.memory.buffer);
    this.#u8 = new Uint8Array(abi.memory.buffer);
    this.pages = new PagePool(this.heap, () => this.i32());
    this.staging = new Staging(this.heap);
    if (shared) this.pool = new ThreadPool(abi, this.heap, shared);
  }

  // Views over the whole memory. Memory grows only through the heap, which counts its growths, so a view is
  // renewed when that count moved: a plain memory's old buffer is detached by growth, a shared one's is
  // only too short. Cheaper than comparing memory.buffer (a native accessor) on every read, which a fork of
  // thousands of pages would pay per page. Never hold a view across an allocation.

  i32(): Int32Array {
    if (this.#growths !== this.heap.growths) this.#renew();
    return this.#i32;
  }

  f32(): Float32Array {
    if (this.#growths !== this.heap.growths) this.#renew();
    return this.#f32;
  }

  u8(): Uint8Array {
    if (this.#growths !== this.heap.growths) this.#renew();
    return this.#u8;
  }

  #renew(): void {
    const buffer = this.abi.memory.buffer;
    this.#i32 = new Int32Array(buffer);
    this.#f32 = new Float32Array(buffer);
    this.#u8 = new Uint8Array(buffer);
    this.#growths = this.heap.growths;
  }

  /**
   * Marks the start of a public call (`what`: its name, as `KVCache.attend`) that runs until `leave()`; an
   * Error if another is still running. Calls are synchronous, so one can only arrive during another from
   * the caller's own code run by it (a getter, an overridden method, a Proxy trap of an argument), and a
   * call from there would change state the outer call has checked and is acting on.
   */
  enter(what: string): void {
    if (this.#running !== undefined) {
      throw new Error(
        `wasm-attention: ${what} was called while ${this.#running} was still running on the same instance ` +
          '(from a getter, method or Proxy trap of its arguments): calls on an instance do not nest',
      );
    }
    this.#running = what;
  }

  leave(): void {
    this.#running = undefined;
  }

  /** `body` between enter(what) and leave(). */
  run<T>(what: string, body: () => T): T {
    this.enter(what);
    try {
      return body();
    } finally {
      this.leave();
    }
  }

  /** Bytes of linear memory nobody's cache holds: freed pages kept for reuse, the staging area, the pool's. */
  get overheadBytes(): number {
    return this.pages.freeBytes + this.staging.bytes + (this.pool?.bytes ?? 0);
  }

  /**
   * Runs one kernel call of a cache on its staged data. `call`: its numbers (CALL); attend and step go
   * across the thread pool when there is one and the call is worth it (`work`: its multiply-adds), each
   * thread with `scratchStride` bytes of scratch.
   */
  call(entry: Entry, call: CallWords, scratchStride = 0, work = 0): void {
    const abi = this.abi;
    const d = call[CALL.DESCRIPTOR],
      layer = call[CALL.LAYER],
      tokens = call[CALL.TOKENS],
      first = call[CALL.FIRST_POSITION];
    if (entry === 'append') abi.append(d, layer, tokens, first);
    else if (entry === 'weights') {
      abi.weights(d, layer, tokens, first, call[CALL.KEY_END], call[CALL.CAUSAL], call[CALL.OUT], call[CALL.KEY_COUNT]);
    } else if (this.pool?.attend(entry === 'step', scratchStride, work, call)) {
      // ran across threads
    } else if (entry === 'step') abi.step(d, layer, tokens, first);
    else abi.attend(d, layer, tokens, first, call[CALL.KEY_END], call[CALL.CAUSAL]);
  }

  // Copies between a caller's Float32Array (checked: a genuine one, from … from + count within its bytes)
  // and memory use indexed access or our own view of its buffer, never its methods, which may be
  // overridden, and make no object on the JavaScript heap for a decode step's arrays. Indexed access
  // costs a few nanoseconds a float, so a whole array of an unshared buffer goes in by one `set` (a
  // memcpy; docs/PERFORMANCE.md, "Staging copies").

  /** Copies src[from … from + count) to the f32 at byte address `at`. */
  copyIn(at: number, src: Float32Array, from: number, count: number): void {
    const heap = this.f32();
    const start = at >>> 2;
    if (count > SMALL_COPY && from === 0 && wholeUnshared(src, count)) {
      // no other thread can resize an unshared buffer, and no caller code runs before set reads it:
      // src holds exactly the count floats checked
      heap.set(src, start);
    } else if (count <= LOOP_COPY) {
      // never `heap.set(src)` here: a length-tracking array over a growable SharedArrayBuffer may have
      // grown on another thread since it was checked, and set would copy what it holds now
      for (let i = 0; i < count; i++) heap[start + i] = src[from + i];
    } else {
      heap.set(float32Range(src, from, count), start);
    }
  }

  /** Copies count f32 from byte address `at` to dst[from …]. */
  copyOut(at: number, dst: Float32Array, from: number, count: number): void {
    const heap = this.f32();
    const start = at >>> 2;
    if (count <= SMALL_COPY) {
      for (let i = 0; i < count; i++) dst[from + i] = heap[start + i];
    } else {
      // dst was checked to hold from … from + count; only caller code could shrink it, and none runs here
      setFloats(dst, this.#heapRange(heap, start, count), from);
    }
  }

  #range: Float32Array | undefined;
  #rangeOf: Float32Array | undefined;
  #rangeStart = -1;
  #rangeCount = -1;

  /**
   * A view of `count` floats of memory from float `start`: the last one made while it still fits (a decode
   * loop copies out of the same staging place every step, and so makes no object).
   */
  #heapRange(heap: Float32Array, start: number, count: number): Float32Array {
    // the view over memory as it is now (f32() renews it when memory grew)
    if (this.#range && this.#rangeOf === heap && this.#rangeStart === start && this.#rangeCount === count) {
      return this.#range;
    }
    this.#rangeOf = heap;
    this.#rangeStart = start;
    this.#rangeCount = count;
    this.#range = heap.subarray(start, start + count);
    return this.#range;
  }
}
