// The facade's allocator over one kernel instance's linear memory.
//
// The kernel never allocates (its ABI is addresses and counts), so the facade places every block: caches,
// scratch, staging. Free space is a list of address-ordered, coalesced holes; allocation is first fit, and
// memory grows only when no hole fits. A freed block is merged with its neighbours at once, so creating and
// disposing caches in any order reuses the same bytes instead of growing memory without bound.

/** WebAssembly's 32-bit address space: 65536 pages of 64 KiB. */
export const MAX_MEMORY_BYTES = 65536 * 65536;
const PAGE_BYTES = 65536;
/** 1 MiB: memory grows by at least this much, so a cache filling up does not grow it page by page. */
const MIN_GROWTH_PAGES = 16;
/** Every block starts on a cache line (v128 loads need 16; 64 keeps rows of one block from sharing lines). */
const ALIGN = 64;

interface Hole {
  start: number;
  size: number;
}

export class LinearHeap {
  readonly #memory: WebAssembly.Memory;
  readonly #holes: Hole[] = [];
  readonly #live = new Map<number, number>(); // start → size
  #allocated = 0;
  #end: number; // bytes of memory under management (the memory's current size)
  /** Times memory has grown: views of a shared memory are never detached, so this is how they know to renew. */
  growths = 0;
  /** Called before memory grows: gives back blocks held for reuse (the page pool); true if it freed any. */
  reclaim?: () => boolean;

  constructor(memory: WebAssembly.Memory, base: number) {
    this.#memory = memory;
    const start = roundUp(base, ALIGN);
    this.#end = memory.buffer.byteLength;
    if (this.#end > start) this.#holes.push({ start, size: this.#end - start });
    else this.#end = start;
  }

  /** Bytes currently handed out. */
  get allocatedBytes(): number {
    return this.#allocated;
  }

  /** Bytes of linear memory the instance holds (grows, never shrinks: WebAssembly memory cannot). */
  get memoryBytes(): number {
    return this.#memory.buffer.byteLength;
  }

  /** A block of at least `bytes` bytes, 64-byte aligned; a RangeError when memory cannot hold it. */
  allocate(bytes: number): number {
    const size = roundUp(Math.max(bytes, 1), ALIGN);
    for (let i = 0; i < this.#holes.length; i++) {
      const hole = this.#holes[i];
      if (hole.size < size) continue;
      const start = hole.start;
      if (hole.size === size) this.#holes.splice(i, 1);
      else {
        hole.start += size;
        hole.size -= size;
      }
      this.#live.set(start, size);
      this.#allocated += size;
      return start;
    }
    if (this.reclaim?.()) return this.allocate(bytes);
    this.#grow(size);
    return this.allocate(bytes);
  }

  /** Bytes of the block handed out at `start` (0: none is). */
  sizeOf(start: number): number {
    return this.#live.get(start) ?? 0;
  }

  release(start: number): void {
    const size = this.#live.get(start);
    if (size === undefined) return;
    this.#live.delete(start);
    this.#allocated -= size;
    this.#insertHole(start, size);
  }

  /** Grows memory so that a hole of `size` bytes exists at the end. */
  #grow(size: number): void {
    const last = this.#holes[this.#holes.length - 1];
    const tailFree = last && last.start + last.size === this.#end ? last.size : 0;
    const needed = size - tailFree;
    const pages = Math.ceil(needed / PAGE_BYTES);
    const current = this.#memory.buffer.byteLength;
    if (current + pages * PAGE_BYTES > MAX_MEMORY_BYTES) {
      throw new RangeError(
        `wasm-attention: cannot reserve ${size} bytes: this instance's WebAssembly memory already holds ` +
          `${current} bytes (${this.allocatedBytes} in use) and cannot exceed ${MAX_MEMORY_BYTES} bytes`,
      );
    }
    // at least 1 MiB or 1/16 of the memory at a time (a prefill takes pages one by one, and each grow costs
    // ~1 ms at a GiB), exactly what is needed near the limit
    const generous = Math.min(
      Math.max(pages, MIN_GROWTH_PAGES, Math.floor(current / PAGE_BYTES / 16)),
      (MAX_MEMORY_BYTES - current) / PAGE_BYTES,
    );
    try {
      try {
        this.#memory.grow(generous);
      } catch (cause) {
        if (generous === pages) throw cause;
        this.#memory.grow(pages);
      }
    } catch (cause) {
      throw new RangeError(
        `wasm-attention: cannot reserve ${size} bytes: the engine refused to grow WebAssembly memory from ` +
          `${current} to ${current + pages * PAGE_BYTES} bytes (${(cause as Error).message})`,
      );
    }
    const grown = this.#memory.buffer.byteLength;
    this.growths++;
    this.#insertHole(this.#end, grown - this.#end);
    this.#end = grown;
  }

  #insertHole(start: number, size: number): void {
    const holes = this.#holes;
    // binary search: a cache's dispose frees thousands of pages
    let i = 0,
      j = holes.length;
    while (i < j) {
      const mid = (i + j) >>> 1;
      if (holes[mid].start < start) i = mid + 1;
      else j = mid;
    }
    holes.splice(i, 0, { start, size });
    // merge with the next hole, then with the previous one
    if (i + 1 < holes.length && start + size === holes[i + 1].start) {
      holes[i].size += holes[i + 1].size;
      holes.splice(i + 1, 1);
    }
    if (i > 0 && holes[i - 1].start + holes[i - 1].size === start) {
      holes[i - 1].size += holes[i].size;
      holes.splice(i, 1);
    }
  }
}

export function roundUp(value: number, multiple: number): number {
  return Math.ceil(value / multiple) * multiple;
}
