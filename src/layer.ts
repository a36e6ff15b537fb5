// A cache's memory: its descriptor (assembly/descriptor.ts), a page table per layer and the pages they
// name, and the data path of a chunk of tokens through the kernel (copy q/k/v into the shared staging →
// one kernel call → copy the output out).
//
// Memory follows the tokens: a new cache holds its descriptor and rope table only; page tables grow (by
// doubling) and pages arrive as positions are written, and go back on release. Before any call that
// writes, `reserve` makes every page the call will write exist and be unshared (copying shared pages:
// copy on write), allocating everything first, so a RangeError for memory that cannot grow leaves the
// cache exactly as it was. The kernel never allocates.

import type { CallWords, Kernel } from './kernel.js';
import { attendOnThisThread } from './threads.js';
import type { HeadShape, RopeSettings, Scoring } from './options.js';
import { COUNT_BYTES, instanceMemory, type InstanceMemory, type PagePool, type SharedStaging } from './pages.js';
import type { Run } from './persist.js';

/** Where positions live (assembly/layout.ts): sinks, then a ring; `slots` = sinks + ring. */
export interface LayerGeometry extends HeadShape {
  int8: boolean;
  slots: number;
  sinks: number;
  ring: number;
}

/** Positions per page (a float32 cache's canonical blocks are one or two pages: assembly/attend/tile.ts). */
export const PAGE_ROWS = 64;

// Descriptor words (assembly/descriptor.ts documents them; these mirror it).
// Written in runs: heads … window (0–6), scale and softcap (7–8), ropeDims … ropeTable (9–11), q … scratch (13–17).
const HEADS = 0,
  SCALE = 7,
  ROPE_DIMS = 9,
  ROPE_TABLE = 11,
  STREAM = 12,
  Q = 13,
  LAYERS = 18,
  LAYER_TABLES = 32;

const STAGING_TARGET_BYTES = 1 << 20;
const STAGING_MAX_TOKENS = 256;

/** Tokens per chunk: enough to amortize each call, few enough to keep staging near 1 MiB. */
export function stagingTokens(shape: HeadShape): number {
  const perToken = (2 * shape.heads + 2 * shape.kvHeads) * shape.headDim * 4;
  return Math.max(1, Math.min(STAGING_MAX_TOKENS, Math.floor(STAGING_TARGET_BYTES / perToken)));
}

/** Bytes of one page: 64 rows of headDim f32, or of headDim i8 followed by 64 f32 scales. */
export function pageBytesOf(geometry: LayerGeometry): number {
  return geometry.int8 ? PAGE_ROWS * geometry.headDim + PAGE_ROWS * 4 : PAGE_ROWS * geometry.headDim * 4;
}

/** Pages per (layer, kv head, K|V) when every slot is in use. */
export function pagesPerHead(geometry: LayerGeometry): number {
  return Math.ceil(geometry.slots / PAGE_ROWS);
}

/**
 * Beyond this many bytes of K/V held (a whole cache's, every layer: a model's layers evict each other
 * between steps) decode streams. Measured here: +20% for a 16-layer 49 MiB cache, +30–80% for one layer
 * of 12–50 MiB, −10–20% for a single layer of 3–6 MiB that stays in L2/L3. Re-measured interleaved with the
 * register-budgeted loops (2-core machine shared with other jobs): 1.33–1.45× for one layer of 34–50 MB,
 * 1.53–1.65× for 16 layers of 8–34 MB each, 1.01× at 8–13 MB (GPT-2 and Llama shapes, L = 2048).
 * With the lone-row loops of 13 live v128 (issue #12), one layer that fits the 32 MB L3 with room to spare
 * decodes faster WITHOUT the touches, interleaved, medians of 11 rounds (no streaming vs streaming):
 * 1.10–1.27× at 8.6–12.9 MB (Llama / GPT-2, L = 2048), 1.11× at 16.8 MB, 1.12× at 19.7 MB (GPT-2) but 1.00×
 * at 19.7 MB (Llama), 0.99× at 22 MB, 0.93–1.00× at 25 MB, 0.82–0.83× at 34–48 MB: hence 20 MiB. A model's
 * many layers add up past it at any useful length, so they keep streaming. The figure fits a 32 MB L3 like
 * this machine's: where the last-level cache is smaller, K/V between its size and 20 MiB decodes from
 * DRAM without the touches (slower, as the 34–48 MB rows show). Either way the bits are the same.
 */
export const STREAM_BYTES = 20 << 20;

const ALIGN = 64;
const align = (n: number) => Math.ceil(n / ALIGN) * ALIGN;

/** Offsets of q, k, v, out and scratch in the shared staging area for a cache's shape. */
interface StagingLayout {
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

function stagingLayout(kernel: Kernel, shape: HeadShape, tokens: number): StagingLayout {
  const query = align(tokens * shape.heads * shape.headDim * 4);
  const key = align(tokens * shape.kvHeads * shape.headDim * 4);
  const scratch = align(kernel.abi.scratchBytes(shape.heads, shape.kvHeads, shape.headDim));
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

export class CacheMemory {
  readonly kernel: Kernel;
  readonly geometry: LayerGeometry;
  readonly layers: number;
  readonly pageBytes: number;
  /** the most table entries a (layer, kv head, K|V) can need */
  readonly maxPages: number;
  readonly #shared: InstanceMemory;
  readonly #pool: PagePool;
  readonly #staging: SharedStaging;
  readonly #layout: StagingLayout;
  /** staging addresses as this cache last wrote them into its descriptor */
  #at = { q: 0, k: 0, v: 0, out: 0 };
  #stagingGeneration = -1;
  /** descriptor, then the rope table: one block */
  #fixed = 0;
  readonly #fixedBytes: number;
  readonly #ropeAt: number;
  readonly #tables: number[];
  readonly #capacity: number[];
  #tableBytes = 0;
  #pageCount = 0;

  constructor(
    kernel: Kernel,
    geometry: LayerGeometry,
    layers: number,
    scoring: Scoring,
    rope: RopeSettings | undefined,
    chunkTokens: number,
    parent?: CacheMemory,
  ) {
    this.kernel = kernel;
    this.geometry = geometry;
    this.layers = layers;
    this.pageBytes = pageBytesOf(geometry);
    this.maxPages = pagesPerHead(geometry);
    const shared = instanceMemory(kernel);
    this.#shared = shared;
    this.#pool = shared.pages;
    this.#staging = shared.staging;
    this.#layout = parent ? parent.#layout : stagingLayout(kernel, geometry, chunkTokens);
    const descriptorBytes = align((LAYER_TABLES + 2 * layers) * 4);
    this.#ropeAt = descriptorBytes;
    this.#fixedBytes = align(descriptorBytes + (rope ? kernel.abi.ropeTableBytes(rope.dims) : 0));
    this.#tables = new Array<number>(layers).fill(0);
    this.#capacity = new Array<number>(layers).fill(0);
    this.#fixed = this.#pool.takeBlock(this.#fixedBytes);
    if (parent) {
      this.kernel.bytes().copyWithin(this.#fixed, parent.#fixed, parent.#fixed + this.#fixedBytes);
      const w = this.#words();
      const d = this.#fixed >>> 2;
      w.fill(0, d + LAYER_TABLES, d + LAYER_TABLES + 2 * layers);
      if (rope) w[d + ROPE_TABLE] = this.#fixed + this.#ropeAt;
      return;
    }
    const i32 = this.#words();
    const d = this.#fixed >>> 2;
    i32.fill(0, d, d + (descriptorBytes >>> 2));
    const { heads, kvHeads, headDim, int8, sinks, ring } = geometry;
    const table = rope ? this.#fixed + this.#ropeAt : 0;
    i32.set([heads, kvHeads, headDim, +int8, sinks, ring, scoring.window], d + HEADS);
    kernel.f32().set([scoring.scale, scoring.softcap], d + SCALE);
    i32.set([rope?.dims ?? 0, +(rope?.interleaved ?? 0), table], d + ROPE_DIMS);
    i32[d + LAYERS] = layers;
    if (rope) kernel.abi.ropeFrequencies(table, rope.dims, rope.theta);
  }

  /** A Int32Array over the whole memory (renewed after growth; never held across an allocation). */
  #words(): Int32Array {
    return this.#shared.words();
  }

  /** Bytes of linear memory this cache holds: its pages (shared ones included), tables and descriptor. */
  get byteLength(): number {
    return this.#fixed ? this.#fixedBytes + this.#tableBytes + this.#pageCount * (this.pageBytes + COUNT_BYTES) : 0;
  }

  /** Pages this cache references. */
  get pageCount(): number {
    return this.#pageCount;
  }

  get disposed(): boolean {
    return this.#fixed === 0;
  }

  /** Tokens one kernel call can take (the staging area's size). */
  get chunkTokens(): number {
    return this.#layout.tokens;
  }

  // ----------------------------------------------------------------------------------------- pages

  /**
   * Makes every page that positions firstPosition … firstPosition + tokens − 1 of `layer` will be written
   * to exist and be this cache's own, and the staging area big enough. A RangeError (naming `what` and the
   * bytes needed) when memory cannot grow; the cache is then unchanged.
   */
  reserve(what: string, layer: number, firstPosition: number, tokens: number): void {
    this.#ensureStaging(what);
    const { sinks, ring } = this.geometry;
    if (tokens === 1) {
      // a decode step: one page, and no allocation on the JS heap
      this.#one[0] = slotOf(firstPosition, sinks, ring) >> 6;
      this.#reservePages(what, layer, this.#one);
      return;
    }
    this.#reservePages(what, layer, pagesOf(firstPosition, tokens, sinks, ring));
  }

  /** Makes the pages of slots 0 … slots − 1 of `layer` exist (load() fills them). */
  reserveSlots(what: string, layer: number, slots: number): void {
    if (slots === 0) return;
    const pages: number[] = [];
    for (let i = 0; i <= (slots - 1) >> 6; i++) pages.push(i);
    this.#reservePages(what, layer, pages);
  }

  readonly #one = [0];
  readonly #taken: number[] = [];

  /** Reserves the page table entries `list` (ascending) of every (kv head, K|V) row of `layer`. */
  #reservePages(what: string, layer: number, list: number[]): void {
    const rows = 2 * this.geometry.kvHeads;
    const capacity = this.#capacity[layer];
    const table = this.#tables[layer] >>> 2;
    const largest = list[list.length - 1];
    // pages to take: missing ones, and shared ones (copy on write)
    let fresh = 0;
    const words = this.#words();
    for (let i = 0; i < list.length; i++) {
      const e = list[i];
      if (e >= capacity) {
        fresh += rows;
        continue;
      }
      for (let r = 0; r < rows; r++) {
        const page = words[table + r * capacity + e] >>> 0;
        if (page === 0 || this.#pool.isShared(page, this.pageBytes)) fresh++;
      }
    }
    const newCapacity =
      largest >= capacity ? Math.min(this.maxPages, Math.max(4, 2 * capacity, largest + 1)) : capacity;
    if (fresh === 0 && newCapacity === capacity) return;
    // take everything first: a failure here changes nothing
    const tableBytes = newCapacity !== capacity ? align(rows * newCapacity * 4) : 0;
    const needed = fresh * (this.pageBytes + COUNT_BYTES) + tableBytes;
    let newTable = 0;
    // reused, and written by index up to `count`: emptying it (length = 0) would drop its backing store,
    // and a decode step that takes a page would allocate another
    const taken = this.#taken;
    let count = 0;
    try {
      if (tableBytes) newTable = this.#pool.takeBlock(tableBytes);
      while (count < fresh) {
        const page = this.#pool.take(this.pageBytes); // first: a page that could not be taken is not counted
        taken[count++] = page;
      }
    } catch (cause) {
      for (let i = 0; i < count; i++) this.#pool.drop(taken[i], this.pageBytes);
      if (newTable) this.#pool.dropBlock(newTable, tableBytes);
      throw outOfMemory(
        what,
        `${needed} more bytes of WebAssembly memory (${fresh} pages of ` +
          `${this.pageBytes + COUNT_BYTES} bytes${tableBytes ? ` and a page table of ${tableBytes}` : ''})`,
        cause,
      );
    }
    if (newTable) this.#moveTable(layer, newTable, newCapacity);
    const cap = this.#capacity[layer];
    const at = this.#tables[layer] >>> 2;
    let bytes: Uint8Array | undefined; // a view is an allocation: made only when a shared page is copied
    const w = this.#words();
    // row by row, in the order they were taken: a prefill's pages of one (kv head, K|V) lie one after
    // another in memory, in position order, as the kernel walks them
    let next = 0;
    for (let r = 0; r < rows; r++) {
      for (let i = 0; i < list.length; i++) {
        const slot = at + r * cap + list[i];
        const page = w[slot] >>> 0;
        if (page === 0) {
          w[slot] = taken[next++];
          this.#pageCount++;
        } else if (this.#pool.isShared(page, this.pageBytes)) {
          const copy = taken[next++];
          bytes ??= this.kernel.bytes();
          bytes.copyWithin(copy, page, page + this.pageBytes);
          this.#pool.drop(page, this.pageBytes);
          w[slot] = copy;
        }
      }
    }
    this.#updateStream();
  }

  /** Installs `table` (already allocated) with `capacity` entries per row, carrying the old entries. */
  #moveTable(layer: number, table: number, capacity: number): void {
    const rows = 2 * this.geometry.kvHeads;
    const old = this.#tables[layer] >>> 2;
    const oldCapacity = this.#capacity[layer];
    const w = this.#words();
    const to = table >>> 2;
    w.fill(0, to, to + rows * capacity);
    for (let r = 0; r < rows && oldCapacity > 0; r++) {
      w.copyWithin(to + r * capacity, old + r * oldCapacity, old + (r + 1) * oldCapacity);
    }
    if (old) this.#pool.dropBlock(old * 4, align(rows * oldCapacity * 4));
    this.#tableBytes += align(rows * capacity * 4) - (oldCapacity ? align(rows * oldCapacity * 4) : 0);
    this.#setTable(layer, table, capacity);
  }

  #setTable(layer: number, table: number, capacity: number): void {
    this.#tables[layer] = table;
    this.#capacity[layer] = capacity;
    const w = this.#words();
    const d = this.#fixed >>> 2;
    w[d + LAYER_TABLES + 2 * layer] = table;
    w[d + LAYER_TABLES + 2 * layer + 1] = capacity;
  }

  /** Gives back the pages of `layer` that hold no slot below `keepSlots` (keepSlots 0: its table too). */
  release(layer: number, keepSlots: number): void {
    const capacity = this.#capacity[layer];
    if (capacity === 0) return;
    const first = Math.ceil(keepSlots / PAGE_ROWS);
    const rows = 2 * this.geometry.kvHeads;
    const at = this.#tables[layer] >>> 2;
    const w = this.#words();
    // last to first: the pool hands freed pages out last in, first out, so the next cache to take them
    // gets them in address order again
    for (let r = rows - 1; r >= 0; r--) {
      for (let e = capacity - 1; e >= first; e--) {
        const page = w[at + r * capacity + e] >>> 0;
        if (page === 0) continue;
        this.#pool.drop(page, this.pageBytes);
        w[at + r * capacity + e] = 0;
        this.#pageCount--;
      }
    }
    if (first === 0) {
      this.#pool.dropBlock(this.#tables[layer], align(rows * capacity * 4));
      this.#tableBytes -= align(rows * capacity * 4);
      this.#setTable(layer, 0, 0);
    }
    this.#updateStream();
  }

  /** Streaming pays once the K/V held outgrows the caches (see STREAM_BYTES). */
  #updateStream(): void {
    this.#words()[(this.#fixed >>> 2) + STREAM] = this.#pageCount * this.pageBytes > STREAM_BYTES ? 1 : 0;
  }

  /**
   * A second memory with the same descriptor and page tables, sharing every page (copy on write). A
   * RangeError (naming the bytes) when memory cannot grow; nothing changes then.
   */
  fork(scoring: Scoring, rope: RopeSettings | undefined): CacheMemory {
    let child: CacheMemory | undefined;
    const tables: number[] = [];
    const rows = 2 * this.geometry.kvHeads;
    try {
      child = new CacheMemory(this.kernel, this.geometry, this.layers, scoring, rope, this.#layout.tokens, this);
      for (let l = 0; l < this.layers; l++) {
        tables.push(this.#capacity[l] ? this.#pool.takeBlock(align(rows * this.#capacity[l] * 4)) : 0);
      }
    } catch (cause) {
      tables.forEach((t, l) => {
        if (t) this.#pool.dropBlock(t, align(rows * this.#capacity[l] * 4));
      });
      if (child) child.#releaseFixed();
      throw outOfMemory(
        'fork',
        `${this.#fixedBytes + this.#tableBytes} bytes of WebAssembly memory for its descriptor and page tables`,
        cause,
      );
    }
    const w = this.#words();
    for (let l = 0; l < this.layers; l++) {
      const capacity = this.#capacity[l];
      if (!capacity) continue;
      const from = this.#tables[l] >>> 2,
        to = tables[l] >>> 2;
      w.copyWithin(to, from, from + rows * capacity);
      for (let i = to; i < to + rows * capacity; i++) if (w[i] !== 0) this.#pool.share(w[i] >>> 0, this.pageBytes);
      child.#setTable(l, tables[l], capacity);
    }
    child.#tableBytes = this.#tableBytes;
    child.#pageCount = this.#pageCount;
    child.#stagingGeneration = this.#stagingGeneration;
    child.#at = this.#at;
    return child;
  }

  #releaseFixed(): void {
    if (this.#fixed) this.#pool.dropBlock(this.#fixed, this.#fixedBytes);
    this.#fixed = 0;
  }

  /** Gives everything back: pages (to the pool), tables, descriptor. */
  dispose(): void {
    if (!this.#fixed) return;
    for (let l = 0; l < this.layers; l++) this.release(l, 0);
    this.#releaseFixed();
  }

  /**
   * The memory runs of `positions` ([start, end) ranges) of one layer, in saved-format order: per kv head
   * the K rows, then per kv head the V rows, then (int8) the K scales and the V scales, each kv head's
   * positions in the order given. Every page of those positions' slots exists (reserveSlots, or the writes
   * that filled them).
   */
  runs(layer: number, positions: Array<[number, number]>): Run[] {
    const { kvHeads, headDim, int8, sinks, ring } = this.geometry;
    const rowBytes = headDim * (int8 ? 1 : 4);
    // the slots of the positions, as stretches that stay within one page and do not wrap
    const stretches: Array<[number, number]> = [];
    for (let [start, end] of positions) {
      while (start < end) {
        const slot = slotOf(start, sinks, ring);
        const limit = start < sinks ? sinks - slot : sinks + ring - slot;
        const count = Math.min(end - start, limit, PAGE_ROWS - (slot % PAGE_ROWS));
        stretches.push([slot, count]);
        start += count;
      }
    }
    const capacity = this.#capacity[layer];
    const at = this.#tables[layer] >>> 2;
    const w = this.#words();
    const runs: Run[] = [];
    const pagesOf = (r: number, offset: number, bytesPerRow: number) => {
      for (const [slot, count] of stretches) {
        const page = w[at + r * capacity + Math.floor(slot / PAGE_ROWS)] >>> 0;
        runs.push({ address: page + offset + (slot % PAGE_ROWS) * bytesPerRow, bytes: count * bytesPerRow });
      }
    };
    for (const kind of [0, 1]) for (let g = 0; g < kvHeads; g++) pagesOf(2 * g + kind, 0, rowBytes);
    if (int8) {
      for (const kind of [0, 1]) for (let g = 0; g < kvHeads; g++) pagesOf(2 * g + kind, PAGE_ROWS * headDim, 4);
    }
    return runs;
  }

  // ------------------------------------------------------------------------------------ data path

  /** Makes the shared staging area hold this cache's layout, and its descriptor name the addresses. */
  #ensureStaging(what: string): void {
    const staging = this.#staging;
    if (staging.bytes < this.#layout.bytes) {
      try {
        staging.ensure(this.#layout.bytes);
      } catch (cause) {
        throw outOfMemory(
          what,
          `${this.#layout.bytes} bytes of WebAssembly memory for the staging area of a call`,
          cause,
        );
      }
    }
    if (this.#stagingGeneration === staging.generation) return;
    const { q, k, v, out, scratch } = this.#layout;
    const at = {
      q: staging.address + q,
      k: staging.address + k,
      v: staging.address + v,
      out: staging.address + out,
    };
    this.#at = at;
    this.#words().set([at.q, at.k, at.v, at.out, staging.address + scratch], (this.#fixed >>> 2) + Q);
    this.#stagingGeneration = staging.generation;
  }

  /**
   * Tokens from … from + count − 1 of k and v appended to `layer` at positions firstPosition …, and,
   * given q and out, their queries attended (one kernel call). The pages are reserved.
   */
  step(
    layer: number,
    k: Float32Array,
    v: Float32Array,
    from: number,
    count: number,
    firstPosition: number,
    q?: Float32Array,
    out?: Float32Array,
  ): void {
    const { heads, kvHeads, headDim } = this.geometry;
    const row = kvHeads * headDim;
    copyIn(this.kernel, this.#at.k, k, from * row, count * row);
    copyIn(this.kernel, this.#at.v, v, from * row, count * row);
    if (!q || !out) {
      this.kernel.abi.append(this.#fixed, layer, count, firstPosition);
      return;
    }
    const queryRow = heads * headDim;
    copyIn(this.kernel, this.#at.q, q, from * queryRow, count * queryRow);
    this.#attendStaged(true, layer, count, firstPosition, firstPosition + count, 1);
    copyOut(this.kernel, this.#at.out, out, from * queryRow, count * queryRow);
  }

  /** Attention of queries from … from + count − 1 (at positions firstPosition …) over keys < keyEnd. */
  attend(
    layer: number,
    q: Float32Array,
    out: Float32Array,
    from: number,
    count: number,
    firstPosition: number,
    keyEnd: number,
    causal: boolean,
  ): void {
    this.#ensureStaging('attention');
    const row = this.geometry.heads * this.geometry.headDim;
    copyIn(this.kernel, this.#at.q, q, from * row, count * row);
    this.#attendStaged(false, layer, count, firstPosition, keyEnd, causal ? 1 : 0);
    copyOut(this.kernel, this.#at.out, out, from * row, count * row);
  }

  /**
   * Attention of the staged queries (the kernel's step when `appendFirst`: the staged keys and values are
   * appended first), across the thread pool when there is one.
   */
  #attendStaged(
    appendFirst: boolean,
    layer: number,
    tokens: number,
    firstPosition: number,
    keyEnd: number,
    causal: number,
  ): void {
    const call = this.#call; // reused: a decode step allocates nothing on the JS heap
    call[0] = this.#fixed;
    call[1] = layer;
    call[2] = tokens;
    call[3] = firstPosition;
    call[4] = keyEnd;
    call[5] = causal;
    const pool = this.kernel.pool;
    if (pool) pool.attend(appendFirst, this.#layout.scratchBytes, this.#work(tokens, keyEnd), call);
    else attendOnThisThread(this.kernel.abi, appendFirst, call);
  }

  readonly #call: CallWords = new Int32Array(6);

  /**
   * Multiply-adds of `tokens` causal queries ending at `keyEnd` (a window bounds the keys each sees), to
   * decide whether a call goes across threads.
   */
  #work(tokens: number, keyEnd: number): number {
    const { heads, headDim, sinks, ring } = this.geometry;
    const pairs = tokens * keyEnd - (tokens * (tokens - 1)) / 2;
    return Math.min(pairs, tokens * (sinks + ring)) * heads * headDim;
  }

  /** The softmax probabilities of queries from … (positions firstPosition …) into `weights` (an address). */
  weights(
    layer: number,
    q: Float32Array,
    from: number,
    count: number,
    firstPosition: number,
    keyEnd: number,
    causal: boolean,
    weights: number,
    keyCount: number,
  ): void {
    this.#ensureStaging('attentionWeights');
    const row = this.geometry.heads * this.geometry.headDim;
    copyIn(this.kernel, this.#at.q, q, from * row, count * row);
    this.kernel.abi.weights(this.#fixed, layer, count, firstPosition, keyEnd, causal ? 1 : 0, weights, keyCount);
  }
}

function outOfMemory(what: string, needs: string, cause: unknown): RangeError {
  return new RangeError(
    `wasm-attention: ${what} needs ${needs}, and memory could not grow: ${(cause as Error).message}`,
  );
}

/**
 * The pages (ascending) that positions firstPosition … firstPosition + tokens − 1 write. Its own function:
 * the closure here would make every call of reserve() allocate its context, a decode step's too (measured:
 * 40 B a step once a prefill had run).
 */
function pagesOf(firstPosition: number, tokens: number, sinks: number, ring: number): number[] {
  const end = firstPosition + tokens;
  const pages = new Set<number>();
  const addSlots = (a: number, b: number) => {
    for (let i = a >> 6; i <= (b - 1) >> 6; i++) pages.add(i);
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

/** The slot of a position (assembly/layout.ts). */
export function slotOf(position: number, sinks: number, ring: number): number {
  return position < sinks ? position : sinks + ((position - sinks) % ring);
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
