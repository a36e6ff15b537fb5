// A cache's memory: its descriptor (assembly/descriptor.ts), a page table per layer and the pages they
// name, all in its instance's memory, and the data path of a chunk of tokens through the kernel (copy
// q/k/v into the instance's staging area → one kernel call through Instance.call → copy the output out).
//
// Memory follows the tokens: a new cache holds its descriptor and rope table only; page tables grow (by
// doubling) and pages arrive as positions are written, and go back on release. Before any call that
// writes, `reserve` makes every page the call will write exist and be unshared (copying shared pages:
// copy on write), allocating everything first, so a RangeError for memory that cannot grow leaves the
// cache exactly as it was. The kernel never allocates.

import { CALL, type CallWords, Descriptor } from './abi.js';
import {
  dtypeCode,
  type LayerGeometry,
  PAGE_ROWS,
  pageBytesOf,
  pagesOf,
  pagesPerHead,
  rowBytesOf,
  scaleBytesOf,
  slotOf,
} from './geometry.js';
import type { Entry, Instance } from './instance.js';
import type { RopeSettings, Scoring } from './options.js';
import { COUNT_BYTES, type PagePool } from './pages.js';
import type { Run } from './persist.js';
import { writeRopeTable } from './rope-scaling.js';
import { type StagingLayout, stagingLayout } from './staging.js';
import { DEFAULT_SPAN_KIB, StreamChoice, streamChoice, trialClock } from './stream-choice.js';

const {
  HEADS,
  SCALE,
  ROPE_DIMS,
  ROPE_TABLE,
  SINK_LOGITS,
  ALIBI_SLOPES,
  STREAM,
  Q,
  LAYERS,
  LAYER_TABLES,
  TREE,
  TREE_BASE,
} = Descriptor;

/**
 * Beyond this many bytes of K/V held (a whole cache's, every layer: a model's layers evict each other
 * between steps) decode streams in spans of DEFAULT_SPAN_KIB, until this machine has timed each candidate
 * (no streaming and a few spans) for the cache's size class (stream-choice.ts): touching K/V lines ahead of the arithmetic pays once they come from DRAM, and costs
 * a little while they fit the last-level cache. Either way the bits are the same; the measurements behind
 * the figure are in docs/PERFORMANCE.md ("Facade and threads").
 */
export const STREAM_BYTES = 20 << 20;

const ALIGN = 64;
const align = (n: number) => Math.ceil(n / ALIGN) * ALIGN;

export class CacheMemory {
  readonly instance: Instance;
  readonly geometry: LayerGeometry;
  readonly layers: number;
  readonly pageBytes: number;
  /** the most table entries a (layer, kv head, K|V) can need */
  readonly maxPages: number;
  readonly #pool: PagePool;
  readonly #layout: StagingLayout;
  /** staging addresses as this cache last wrote them into its descriptor */
  #at = { q: 0, k: 0, v: 0, out: 0 };
  #stagingGeneration = -1;
  /** descriptor, then the rope table: one block */
  #fixed = 0;
  readonly #fixedBytes: number;
  readonly #ropeAt: number;
  /** where the sink logits sit in the fixed block (0: none) */
  readonly #sinkLogitsAt: number;
  /** where the ALiBi slopes sit in the fixed block (0: none) */
  readonly #alibiAt: number;
  readonly #tables: number[];
  readonly #capacity: number[];
  #tableBytes = 0;
  #pageCount = 0;

  constructor(
    instance: Instance,
    geometry: LayerGeometry,
    layers: number,
    scoring: Scoring,
    rope: RopeSettings | undefined,
    chunkTokens: number,
    parent?: CacheMemory,
  ) {
    this.instance = instance;
    this.geometry = geometry;
    this.layers = layers;
    this.pageBytes = pageBytesOf(geometry);
    this.maxPages = pagesPerHead(geometry);
    this.#pool = instance.pages;
    const { heads, kvHeads, headDim } = geometry;
    this.#layout = parent
      ? parent.#layout
      : stagingLayout(geometry, chunkTokens, instance.abi.scratchBytes(heads, kvHeads, headDim));
    const descriptorBytes = align((LAYER_TABLES + 2 * layers) * 4);
    this.#ropeAt = descriptorBytes;
    const ropeBytes = rope ? align(instance.abi.ropeTableBytes(rope.dims)) : 0;
    const sinkBytes = scoring.sinkLogits ? 4 * geometry.heads : 0;
    this.#sinkLogitsAt = scoring.sinkLogits ? descriptorBytes + ropeBytes : 0;
    this.#alibiAt = scoring.alibi ? descriptorBytes + ropeBytes + sinkBytes : 0;
    this.#fixedBytes = align(descriptorBytes + ropeBytes + sinkBytes + (scoring.alibi ? 4 * geometry.heads : 0));
    this.#tables = new Array<number>(layers).fill(0);
    this.#capacity = new Array<number>(layers).fill(0);
    this.#fixed = this.#pool.takeBlock(this.#fixedBytes);
    if (parent) {
      instance.u8().copyWithin(this.#fixed, parent.#fixed, parent.#fixed + this.#fixedBytes);
      const w = this.instance.i32();
      const d = this.#fixed >>> 2;
      w.fill(0, d + LAYER_TABLES, d + LAYER_TABLES + 2 * layers);
      if (rope) w[d + ROPE_TABLE] = this.#fixed + this.#ropeAt;
      if (this.#sinkLogitsAt) w[d + SINK_LOGITS] = this.#fixed + this.#sinkLogitsAt;
      if (this.#alibiAt) w[d + ALIBI_SLOPES] = this.#fixed + this.#alibiAt;
      return;
    }
    const i32 = this.instance.i32();
    const d = this.#fixed >>> 2;
    i32.fill(0, d, d + (descriptorBytes >>> 2));
    const { dtype, sinks, ring } = geometry;
    const table = rope ? this.#fixed + this.#ropeAt : 0;
    i32.set([heads, kvHeads, headDim, dtypeCode(dtype), sinks, ring, scoring.window], d + HEADS);
    instance.f32().set([scoring.scale, scoring.softcap], d + SCALE);
    i32.set([rope?.dims ?? 0, +(rope?.interleaved ?? 0), table], d + ROPE_DIMS);
    i32[d + LAYERS] = layers;
    if (rope) instance.abi.ropeFrequencies(table, rope.dims, rope.theta);
    if (rope?.table) writeRopeTable(instance.u8(), table, rope.table);
    if (scoring.sinkLogits) {
      i32[d + SINK_LOGITS] = this.#fixed + this.#sinkLogitsAt;
      instance.f32().set(scoring.sinkLogits, (this.#fixed + this.#sinkLogitsAt) >>> 2);
    }
    if (scoring.alibi) {
      i32[d + ALIBI_SLOPES] = this.#fixed + this.#alibiAt;
      instance.f32().set(scoring.alibi, (this.#fixed + this.#alibiAt) >>> 2);
    }
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
    const words = this.instance.i32();
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
    const w = this.instance.i32();
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
          this.instance.u8().copyWithin(copy, page, page + this.pageBytes);
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
    const w = this.instance.i32();
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
    const w = this.instance.i32();
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
    const w = this.instance.i32();
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

  /** Streaming pays once the K/V held outgrows the caches: as this machine measured, else STREAM_BYTES. */
  #updateStream(): void {
    const bytes = this.#pageCount * this.pageBytes;
    const { kvHeads, headDim } = this.geometry;
    this.#streamKey = StreamChoice.key(bytes, kvHeads, headDim);
    this.#setStream(streamChoice.flag(bytes, this.#streamKey, bytes > STREAM_BYTES ? DEFAULT_SPAN_KIB : 0));
  }

  #streamKey = 0;

  /** The descriptor's stream word: 0, or the touch-ahead span in KiB (workers read the same word). */
  #setStream(word: number): void {
    this.instance.i32()[(this.#fixed >>> 2) + STREAM] = word;
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
      child = new CacheMemory(this.instance, this.geometry, this.layers, scoring, rope, this.#layout.tokens, this);
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
    const w = this.instance.i32();
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
   * the K rows, then per kv head the V rows, then (int8, int4) the K scales and the V scales, each kv head's
   * positions in the order given. Every page of those positions' slots exists (reserveSlots, or the writes
   * that filled them).
   */
  runs(layer: number, positions: Array<[number, number]>): Run[] {
    const { kvHeads, headDim, dtype, sinks, ring } = this.geometry;
    const rowBytes = rowBytesOf(headDim, dtype);
    const scaleBytes = scaleBytesOf(headDim, dtype);
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
    const w = this.instance.i32();
    const runs: Run[] = [];
    const pagesOf = (r: number, offset: number, bytesPerRow: number) => {
      for (const [slot, count] of stretches) {
        const page = w[at + r * capacity + Math.floor(slot / PAGE_ROWS)] >>> 0;
        runs.push({ address: page + offset + (slot % PAGE_ROWS) * bytesPerRow, bytes: count * bytesPerRow });
      }
    };
    for (const kind of [0, 1]) for (let g = 0; g < kvHeads; g++) pagesOf(2 * g + kind, 0, rowBytes);
    if (scaleBytes > 0) {
      for (const kind of [0, 1])
        for (let g = 0; g < kvHeads; g++) pagesOf(2 * g + kind, PAGE_ROWS * rowBytes, scaleBytes);
    }
    return runs;
  }

  // ------------------------------------------------------------------------------------ trees of drafts

  /** the tree block of the call in progress (0: none) and its bytes */
  #tree = 0;
  #treeBytes = 0;

  /**
   * Names a tree block (src/tree.ts) in the descriptor for the calls until clearTree: its words copied into
   * a block of its own, drafts stored from `base`. A RangeError (naming `what`) when memory cannot grow.
   */
  setTree(what: string, block: Int32Array, base: number): void {
    const bytes = align(block.length * 4);
    let at: number;
    try {
      at = this.#pool.takeBlock(bytes);
    } catch (cause) {
      throw outOfMemory(what, `${bytes} bytes of WebAssembly memory for the tree of drafts`, cause);
    }
    this.#tree = at;
    this.#treeBytes = bytes;
    const w = this.instance.i32();
    w.set(block, at >>> 2);
    w[(this.#fixed >>> 2) + TREE] = at;
    w[(this.#fixed >>> 2) + TREE_BASE] = base;
  }

  /** Plain calls again: the descriptor names no tree, and the block goes back. */
  clearTree(): void {
    if (!this.#tree) return;
    const w = this.instance.i32();
    w[(this.#fixed >>> 2) + TREE] = 0;
    w[(this.#fixed >>> 2) + TREE_BASE] = 0;
    this.#pool.dropBlock(this.#tree, this.#treeBytes);
    this.#tree = 0;
  }

  /**
   * Copies the K and V rows (int8: with their scales) of position `from` of `layer` to position `to`, as they
   * are: already rotated. The pages of `to` are reserved.
   */
  copyRow(layer: number, from: number, to: number): void {
    const source = this.runs(layer, [[from, from + 1]]);
    const target = this.runs(layer, [[to, to + 1]]);
    const u8 = this.instance.u8();
    for (let i = 0; i < source.length; i++) {
      u8.copyWithin(target[i].address, source[i].address, source[i].address + source[i].bytes);
    }
  }

  // ------------------------------------------------------------------------------------ data path

  /** Makes the shared staging area hold this cache's layout, and its descriptor name the addresses. */
  #ensureStaging(what: string): void {
    const staging = this.instance.staging;
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
    this.instance.i32().set([at.q, at.k, at.v, at.out, staging.address + scratch], (this.#fixed >>> 2) + Q);
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
    const instance = this.instance;
    const row = kvHeads * headDim;
    instance.copyIn(this.#at.k, k, from * row, count * row);
    instance.copyIn(this.#at.v, v, from * row, count * row);
    if (!q || !out) {
      this.#call('append', layer, count, firstPosition, 0, 0);
      return;
    }
    const queryRow = heads * headDim;
    instance.copyIn(this.#at.q, q, from * queryRow, count * queryRow);
    this.#call('step', layer, count, firstPosition, firstPosition + count, 1);
    instance.copyOut(this.#at.out, out, from * queryRow, count * queryRow);
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
    this.instance.copyIn(this.#at.q, q, from * row, count * row);
    this.#call('attend', layer, count, firstPosition, keyEnd, causal ? 1 : 0);
    this.instance.copyOut(this.#at.out, out, from * row, count * row);
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
    this.instance.copyIn(this.#at.q, q, from * row, count * row);
    this.#callWords[CALL.OUT] = weights;
    this.#callWords[CALL.KEY_COUNT] = keyCount;
    this.#call('weights', layer, count, firstPosition, keyEnd, causal ? 1 : 0);
  }

  /** One kernel call on this cache's staged data, through the instance. */
  #call(entry: Entry, layer: number, tokens: number, firstPosition: number, keyEnd: number, causal: number): void {
    const call = this.#callWords; // reused: a decode step allocates nothing on the JS heap
    call[CALL.DESCRIPTOR] = this.#fixed;
    call[CALL.LAYER] = layer;
    call[CALL.TOKENS] = tokens;
    call[CALL.FIRST_POSITION] = firstPosition;
    call[CALL.KEY_END] = keyEnd;
    call[CALL.CAUSAL] = causal;
    const work = this.#work(tokens, keyEnd);
    // a decode step of a size class this machine has not measured yet runs timed, on each candidate in turn
    const path =
      tokens === 1 && entry !== 'append'
        ? streamChoice.trialPath(this.#pageCount * this.pageBytes, this.#streamKey)
        : -1;
    if (path < 0) {
      this.instance.call(entry, call, this.#layout.scratchBytes, work);
      return;
    }
    const key = this.#streamKey;
    this.#setStream(path);
    const t0 = trialClock();
    let ran = false;
    try {
      this.instance.call(entry, call, this.#layout.scratchBytes, work);
      ran = true;
    } finally {
      // recorded first, so the step that decides leaves this cache on the class's choice
      if (ran) streamChoice.record(key, path, trialClock() - t0);
      this.#updateStream();
    }
  }

  readonly #callWords: CallWords = new Int32Array(8);

  // ---------------------------------------------------------------------------- batches (attendMany)

  /** The descriptor's address: what a batch's item record names. */
  get descriptor(): number {
    return this.#fixed;
  }

  /** Bytes of scratch one thread needs for this cache's calls. */
  get scratchBytes(): number {
    return this.#layout.scratchBytes;
  }

  /** Bytes of this cache's own staging layout (a batch keeps the area at least this big). */
  get stagingBytes(): number {
    return this.#layout.bytes;
  }

  /**
   * Points the descriptor's staging words at a batch's places for this cache's q, k, v and out (and the
   * calling thread's scratch); the cache's next call of its own writes its usual ones back.
   */
  stageAt(q: number, k: number, v: number, out: number, scratch: number): void {
    const w = this.instance.i32();
    const at = (this.#fixed >>> 2) + Q;
    // the words Q, K, V, OUT and SCRATCH follow one another (descriptor.ts); no array made per item
    w[at] = q;
    w[at + 1] = k;
    w[at + 2] = v;
    w[at + 3] = out;
    w[at + 4] = scratch;
    this.#stagingGeneration = -1;
  }

  /** The page of `layer`'s first K entry of kv head 0 (0: none): caches that share it may share a prefix. */
  firstPage(layer: number): number {
    return this.#capacity[layer] ? this.instance.i32()[this.#tables[layer] >>> 2] >>> 0 : 0;
  }

  /** How many leading entries of `layer`'s page tables (every kv head, K and V) name the same pages as `other`'s. */
  sharedPages(layer: number, other: CacheMemory, most: number): number {
    const rows = 2 * this.geometry.kvHeads;
    const a = this.#tables[layer] >>> 2,
      b = other.#tables[layer] >>> 2;
    const ca = this.#capacity[layer],
      cb = other.#capacity[layer];
    const w = this.instance.i32();
    let e = 0;
    for (; e < Math.min(most, ca, cb); e++) {
      let same = true;
      for (let r = 0; r < rows && same; r++) same = w[a + r * ca + e] !== 0 && w[a + r * ca + e] === w[b + r * cb + e];
      if (!same) break;
    }
    return e;
  }

  /** The multiply-adds of a step of `tokens` ending at `keyEnd` (the small-call rule of threads). */
  stepWork(tokens: number, keyEnd: number): number {
    return this.#work(tokens, keyEnd);
  }

  /**
   * Multiply-adds of `tokens` causal queries ending at `keyEnd` (a window bounds the keys each sees), to
   * decide whether a call goes across threads.
   */
  #work(tokens: number, keyEnd: number): number {
    const { heads, headDim, sinks, ring } = this.geometry;
    const pairs = tokens * keyEnd - (tokens * (tokens - 1)) / 2;
    return Math.min(pairs, tokens * (sinks + ring)) * heads * headDim;
  }
}

function outOfMemory(what: string, needs: string, cause: unknown): RangeError {
  return new RangeError(
    `wasm-attention: ${what} needs ${needs}, and memory could not grow: ${(cause as Error).message}`,
  );
}
