// KVCache: per layer and kv head, the keys and values of every token so far, in its instance's memory.
// Its lifecycle and its calls; the options it is made from are options.ts's, its memory (descriptor, page
// tables, pages) is cache-memory.ts's, the saved format is persist.ts's.

import { LayeredMemory } from './layer-memory.js';
import { rangeError, typeError } from './errors.js';
import { pageBytesOf, pagesPerHead, overwrittenBelow, windowStart } from './geometry.js';
import { MAX_MEMORY_BYTES } from './heap.js';
import { activeInstance, init } from './init.js';
import type { Instance } from './instance.js';
import {
  MAX_POSITION,
  cacheSettings,
  integerAtLeast,
  outputArray,
  sameLength,
  settingsToOptions,
  tokensIn,
  type CacheSettings,
  type KVCacheOptions,
} from './options.js';
import {
  encode,
  heldRanges,
  planPiece,
  readPieces,
  restore,
  runsCrc,
  saveRange,
  type PieceGeometry,
  type Run,
} from './persist.js';
import { COUNT_BYTES } from './pages.js';
import { refuseUnknownKeys } from './option-keys.js';
import {
  type PendingDrafts,
  acceptedPath,
  depthsOf,
  describeParents,
  draftParents,
  sameParents,
  treeBlock,
} from './tree.js';
import { type LayerGroup, layerGroups, layerSettings } from './per-layer.js';

import {
  type AttendManyItem,
  itemBytes,
  itemName,
  itemPlace,
  readItems,
  readManyOptions,
  recordBytes,
} from './many.js';
import { Job } from './abi.js';

export type { KVCacheDtype, KVCacheOptions, LayerOptions, RopeOptions, RopeScaling } from './options.js';
export type { AttendManyItem, AttendManyOptions } from './many.js';

/** Slots of a layer that hold data: the prefix 0 … length − 1 until a window's ring has wrapped (truncate keeps their pages). */
function heldSlots(length: number, intactFrom: number, slots: number): number {
  return intactFrom === 0 && length <= slots ? length : slots;
}

/** What the saved format needs of a cache's options, per layer (its ring is its `maxTokens`). */
function pieceGeometry(settings: CacheSettings): PieceGeometry[] {
  const { kvHeads, headDim } = settings.shape;
  return Array.from({ length: settings.layers }, (_, l) => {
    const { scoring, ring } = layerSettings(settings, l);
    const { window, sinks } = scoring;
    return { kvHeads, headDim, dtype: settings.dtype, maxTokens: ring, window, sinks };
  });
}

const dispose: typeof Symbol.dispose = Symbol.dispose ?? Symbol.for('Symbol.dispose');

/** Frees a cache's memory if it is garbage-collected without dispose(). */
const unreleased =
  typeof FinalizationRegistry === 'function'
    ? new FinalizationRegistry<LayeredMemory>((memory) => memory.dispose())
    : undefined;

/** Bytes a cache of these layer groups would hold with every slot of every layer in use (pages, refcounts, tables). */
function fullBytes(settings: CacheSettings, groups: LayerGroup[]): number {
  let bytes = 0;
  for (const { geometry, layers } of groups) {
    const pages = pagesPerHead(geometry);
    bytes += layers.length * 2 * settings.shape.kvHeads * pages * (pageBytesOf(geometry) + COUNT_BYTES + 4);
  }
  return bytes;
}

/** The layer groups of `settings`, or a RangeError when a cache of them could never fit once full. */
function fittingGroups(instance: Instance, settings: CacheSettings): LayerGroup[] {
  const groups = layerGroups(settings);
  const bytes = fullBytes(settings, groups);
  if (bytes > MAX_MEMORY_BYTES - instance.abi.heapBase()) {
    throw new RangeError(
      `wasm-attention: a KVCache with these options needs ${bytes} bytes once full, more than ` +
        `WebAssembly's 4 GiB (${MAX_MEMORY_BYTES} bytes) address space holds: lower maxTokens, layers or kvHeads, ` +
        `or use dtype 'int8', 'bfloat16' or 'int4'`,
    );
  }
  return groups;
}

/** `out` of batch item i: the one given, checked, or a new one. */
function itemOutput(i: number, value: unknown, tokens: number, heads: number, headDim: number): Float32Array {
  try {
    return outputArray(value, tokens, heads, headDim);
  } catch (error) {
    (error as Error).message = (error as Error).message.replace(
      'wasm-attention: out ',
      `wasm-attention: items[${i}].out `,
    );
    throw error;
  }
}

export class KVCache {
  readonly #settings: CacheSettings;
  readonly #memory: LayeredMemory;
  /** tokens appended to each layer (positions keep counting past what a window holds) */
  readonly #lengths: number[];
  /** windowed caches: per layer, the lowest ring position whose row has not been overwritten since */
  readonly #intactFrom: number[];
  /** attendTree: the drafts held until accept (none: undefined) */
  #drafts: PendingDrafts | undefined;
  /** fork(): the memory and state the next constructed cache adopts instead of making its own */
  static #adopt: { memory: LayeredMemory; lengths: number[]; intactFrom: number[]; drafts?: PendingDrafts } | undefined;
  /** set by a call that constructs a cache from options of its own while it holds its instance (load) */
  static #within = false;

  /**
   * A cache for `options` (see API.md). It holds its descriptor only; pages arrive with the tokens.
   * Requires init() to have resolved.
   */
  constructor(options: KVCacheOptions) {
    const adopt = KVCache.#adopt;
    const within = KVCache.#within;
    KVCache.#adopt = undefined;
    KVCache.#within = false;
    if (adopt) {
      this.#settings = cacheSettings(options);
      this.#memory = adopt.memory;
      this.#lengths = adopt.lengths;
      this.#intactFrom = adopt.intactFrom;
      this.#drafts = adopt.drafts;
    } else {
      const instance = activeInstance();
      if (!within) instance.enter('new KVCache');
      try {
        this.#settings = cacheSettings(options);
        this.#memory = this.#allocate(instance, this.#settings);
      } finally {
        if (!within) instance.leave();
      }
      this.#lengths = new Array<number>(this.#settings.layers).fill(0);
      this.#intactFrom = new Array<number>(this.#settings.layers).fill(0);
    }
    unreleased?.register(this, this.#memory, this);
  }

  /** A new cache's memory: its descriptor (and rope table); a RangeError if it could never fit once full. */
  #allocate(instance: Instance, settings: CacheSettings): LayeredMemory {
    return LayeredMemory.create(instance, fittingGroups(instance, settings), settings.layers);
  }

  /** As `new KVCache(options)`, after `await init()` if no kernel is loaded yet. */
  static async create(options: KVCacheOptions): Promise<KVCache> {
    try {
      activeInstance();
    } catch {
      await init();
    }
    return new KVCache(options);
  }

  /** Tokens appended to layer 0 so far. */
  get length(): number {
    this.#live();
    return this.#lengths[0];
  }

  /** Tokens appended to `layer` so far. */
  lengthOf(layer: number): number {
    this.#live();
    return this.#lengths[this.#layerIndex(layer)];
  }

  /**
   * Bytes of linear memory this cache holds (0 once disposed): the pages it references (shared ones
   * included), its page tables and its descriptor. It grows with the tokens held.
   */
  get byteLength(): number {
    return this.#memory.byteLength;
  }

  /**
   * Appends the T tokens of k/v to `layer` and returns the causal attention of the T queries over every
   * token the layer holds, new ones included: [T][heads][headDim].
   */
  attend(layer: number, q: Float32Array, k: Float32Array, v: Float32Array, out?: Float32Array): Float32Array {
    const instance = this.#enter('KVCache.attend');
    try {
      this.#refuseWhileDrafts('attend');
      const index = this.#layerIndex(layer);
      const { heads, headDim } = this.#settings.shape;
      const tokens = tokensIn('q', q, heads * headDim, 'heads × headDim');
      this.#checkNewTokens(index, k, v, tokens);
      const result = outputArray(out, tokens, heads, headDim);
      this.#run(index, k, v, tokens, q, result);
      return result;
    } finally {
      instance.leave();
    }
  }

  /**
   * One attend step of each item ({ cache, q, k, v, out? }) on `layer`, in one call into the kernel: every
   * item's output (its `out` when given), in item order, the same bits as `attend` on each item alone.
   * The caches must be distinct, live, of one instance and one head shape. Every item is checked and every
   * page reserved before anything is written: a refused call leaves every cache as it was.
   */
  static attendMany(
    layer: number,
    items: ReadonlyArray<AttendManyItem<KVCache>>,
    options?: Record<string, never>,
  ): Float32Array[] {
    const given = readItems(items);
    readManyOptions(options);
    const caches = given.map((item, i) => {
      const cache = item.cache;
      // a brand check, as load's base: a Proxy of a cache is not one
      if (!(typeof cache === 'object' && cache !== null && #memory in cache)) {
        throw typeError(`items[${i}].cache`, 'a KVCache', cache);
      }
      return cache as KVCache;
    });
    if (caches.length === 0) return [];
    const instance = caches[0].#memory.instance;
    instance.enter('KVCache.attendMany');
    try {
      return KVCache.#attendMany(layer, given, caches);
    } finally {
      instance.leave();
    }
  }

  static #attendMany(layer: unknown, given: AttendManyItem[], caches: KVCache[]): Float32Array[] {
    const first = caches[0];
    const { heads, kvHeads, headDim } = first.#settings.shape;
    const instance = first.#memory.instance;
    const seen = new Map<KVCache, number>();
    const indices: number[] = [];
    const tokens: number[] = [];
    const outs: Float32Array[] = [];
    for (let i = 0; i < caches.length; i++) {
      const cache = caches[i];
      // the name only where an error needs it: a batch of decode steps pays this loop per item
      if (cache.#memory.disposed) throw new Error(`wasm-attention: items[${i}].cache was disposed`);
      if (cache.#drafts) {
        // as attend: a step's tokens would land among the pending drafts
        throw new Error(
          `wasm-attention: items[${i}].cache has drafts pending (attendTree): KVCache.attendMany cannot run on it ` +
            'until accept(path) keeps some of them, or accept([]) none',
        );
      }
      if (cache.#memory.instance !== instance) {
        throw typeError(
          `items[${i}].cache`,
          'a KVCache of the same instance (build and threads) as items[0].cache',
          cache,
        );
      }
      const shape = cache.#settings.shape;
      if (shape.heads !== heads || shape.kvHeads !== kvHeads || shape.headDim !== headDim) {
        throw typeError(
          `items[${i}].cache`,
          `a KVCache of items[0].cache's head shape (heads ${heads}, kvHeads ${kvHeads}, headDim ${headDim}) ` +
            `(it has heads ${shape.heads}, kvHeads ${shape.kvHeads}, headDim ${shape.headDim})`,
          cache,
        );
      }
      const before = seen.get(cache);
      if (before !== undefined) {
        throw typeError(
          `items[${i}].cache`,
          `a KVCache not already in the batch (items[${before}].cache is the same cache)`,
          cache,
        );
      }
      seen.set(cache, i);
      const index = cache.#layerIndex(layer);
      const item = given[i];
      const count = tokensIn(itemName(i, 'q'), item.q, heads * headDim, 'heads × headDim');
      cache.#checkItemTokens(i, index, item.k, item.v, count);
      outs.push(itemOutput(i, item.out, count, heads, headDim));
      indices.push(index);
      tokens.push(count);
    }
    if (caches.length === 1) {
      // one item: attend's own path (a long step there is cut into chunks that threads share)
      first.#run(indices[0], given[0].k, given[0].v, tokens[0], given[0].q, outs[0]);
      return outs;
    }
    // the staging area first (it holds every item's chunk, the records and the scratch), then every page
    // every item writes: a failure anywhere leaves every cache as it was
    // plain loops, no closures: a batch of decode steps pays this per item
    let rounds = 1;
    let ownStaging = 0;
    for (let i = 0; i < caches.length; i++) {
      const memory = caches[i].#memory.memoryOf(indices[i]);
      rounds = Math.max(rounds, Math.ceil(tokens[i] / memory.chunkTokens));
      ownStaging = Math.max(ownStaging, memory.stagingBytes);
    }
    let itemArea = 0;
    for (let r = 0; r < rounds; r++) {
      let bytes = 0;
      for (let i = 0; i < caches.length; i++) {
        const n = KVCache.#roundTokens(caches[i], indices[i], tokens[i], r);
        if (n > 0) bytes += itemBytes(n, heads, kvHeads, headDim);
      }
      itemArea = Math.max(itemArea, bytes);
    }
    const scratchBytes = first.#memory.groupOf(indices[0]).memory.scratchBytes;
    const bytes = Math.max(recordBytes(caches.length) + scratchBytes + itemArea, ownStaging);
    try {
      instance.staging.ensure(bytes);
    } catch (cause) {
      throw new RangeError(
        `wasm-attention: KVCache.attendMany needs ${bytes} bytes of WebAssembly memory for the staging area of ` +
          `its batch, and memory could not grow: ${(cause as Error).message}`,
      );
    }
    let reserved = 0;
    try {
      for (; reserved < caches.length; reserved++) {
        const c = caches[reserved];
        const index = indices[reserved];
        c.#memory.reserve('KVCache.attendMany', index, c.#lengths[index], tokens[reserved]);
      }
    } catch (error) {
      for (let i = 0; i < reserved; i++) caches[i].#giveBackUnheld(indices[i]);
      throw error;
    }
    const lengths: number[] = [];
    for (let i = 0; i < caches.length; i++) lengths.push(caches[i].#lengths[indices[i]]);
    let round = 0;
    try {
      for (; round < rounds; round++)
        KVCache.#stepRound(instance, caches, given, indices, tokens, lengths, outs, round);
    } catch (error) {
      // a worker thread's kernel trapped: as #run, each layer keeps its length and gives back its new pages
      const lost: string[] = [];
      caches.forEach((c, i) => {
        const index = indices[i];
        const written = Math.min(tokens[i], (round + 1) * c.#memory.chunkTokensOf(index));
        c.#evictOverwritten(index, lengths[i] + written);
        c.#giveBackUnheld(index);
        const gap = c.#lostContinuation(index);
        if (gap) lost.push(`items[${i}].cache (layer ${index}: ${gap})`);
      });
      if (error instanceof RangeError || error instanceof TypeError) throw error;
      const state = lost.length
        ? `; these windowed caches cannot continue, the call had already written over keys they need: ${lost.join(', ')}. reset() them or load() saved copies`
        : '; every cache is as it was before the call';
      throw new Error(`${(error as Error).message}${state}`, { cause: error });
    }
    for (let i = 0; i < caches.length; i++) {
      const c = caches[i];
      c.#lengths[indices[i]] = lengths[i] + tokens[i];
      c.#evictOverwritten(indices[i], lengths[i] + tokens[i]);
    }
    return outs;
  }

  /** Tokens of round r of an item of `tokens` on layer `index` of cache c (a round takes each item's next chunk). */
  static #roundTokens(c: KVCache, index: number, tokens: number, r: number): number {
    const chunk = c.#memory.chunkTokensOf(index);
    return Math.max(0, Math.min(chunk, tokens - r * chunk));
  }

  /** One kernel call of a batch: the chunk `round` of every item that has one. */
  static #stepRound(
    instance: Instance,
    caches: KVCache[],
    given: AttendManyItem[],
    indices: number[],
    tokens: number[],
    lengths: number[],
    outs: Float32Array[],
    round: number,
  ): void {
    const { heads, kvHeads, headDim } = caches[0].#settings.shape;
    const staging = instance.staging.address;
    const scratch = staging;
    const scratchStride = caches[0].#memory.groupOf(indices[0]).memory.scratchBytes;
    const records = scratch + scratchStride;
    let at = records + recordBytes(caches.length);
    let count = 0;
    let work = 0;
    const places: Array<{ i: number; from: number; n: number; out: number }> = [];
    const order = KVCache.#cascades(instance, caches, indices, tokens, round);
    for (const { i, cascade, sharedEnd } of order) {
      const c = caches[i];
      const memory = c.#memory.memoryOf(indices[i]);
      const local = c.#memory.localOf(indices[i]);
      const n = KVCache.#roundTokens(c, indices[i], tokens[i], round);
      const from = round * memory.chunkTokens;
      const place = itemPlace(at, n, heads, kvHeads, headDim);
      at = place.end;
      const { q, k, v } = given[i];
      const row = kvHeads * headDim;
      instance.copyIn(place.k, k, from * row, n * row);
      instance.copyIn(place.v, v, from * row, n * row);
      instance.copyIn(place.q, q, from * heads * headDim, n * heads * headDim);
      memory.stageAt(place.q, place.k, place.v, place.out, scratch);
      const position = lengths[i] + from;
      const w = instance.i32();
      const record = (records >>> 2) + count * Job.ITEM_WORDS;
      w.fill(0, record, record + Job.ITEM_WORDS);
      w[record + Job.ITEM_DESCRIPTOR] = memory.descriptor;
      w[record + Job.ITEM_LAYER] = local;
      w[record + Job.ITEM_TOKENS] = n;
      w[record + Job.ITEM_FIRST_POSITION] = position;
      w[record + Job.ITEM_CASCADE] = cascade;
      w[record + Job.ITEM_SHARED_END] = sharedEnd;
      work += memory.stepWork(n, position + n);
      places.push({ i, from, n, out: place.out });
      count++;
    }
    if (!instance.pool?.stepMany(records, count, scratchStride, work)) instance.abi.stepMany(records, count, scratch);
    for (const { i, from, n, out } of places) {
      instance.copyOut(out, outs[i], from * heads * headDim, n * heads * headDim);
    }
  }

  /** The settings of a cache as one string: caches with equal ones may run in one cascade. */
  #settingsKey: string | undefined;

  /**
   * The items of round r in record order, with their cascades (assembly/job.ts): items whose caches have
   * equal settings, no window, and page tables that name the same first pages (forks of one prefix), in
   * groups whose rows fit one tile, run as one cascade over the blocks of the pages they all share.
   */
  static #cascades(
    instance: Instance,
    caches: KVCache[],
    indices: number[],
    tokens: number[],
    round: number,
  ): Array<{ i: number; cascade: number; sharedEnd: number }> {
    const { heads, kvHeads } = caches[0].#settings.shape;
    const fit = instance.abi.tileTokens(heads, kvHeads);
    const families = new Map<string, number[]>();
    const alone: number[] = [];
    // forks of one prefix name the same first page: a cache whose first page no other item names runs
    // alone, without the family key below (strangers, the common batch, pay one lookup each)
    const firstPages: number[] = [];
    const pageCount = new Map<number, number>();
    let shared = false;
    for (let i = 0; i < caches.length; i++) {
      const layers = caches[i].#memory;
      const page = layers.memoryOf(indices[i]).firstPage(layers.localOf(indices[i]));
      firstPages.push(page);
      if (page === 0) continue;
      const count = (pageCount.get(page) ?? 0) + 1;
      pageCount.set(page, count);
      if (count > 1) shared = true;
    }
    if (!shared) {
      // no forks in the batch: every item with tokens in this round runs alone, in item order
      const order: Array<{ i: number; cascade: number; sharedEnd: number }> = [];
      for (let i = 0; i < caches.length; i++) {
        if (KVCache.#roundTokens(caches[i], indices[i], tokens[i], round) > 0)
          order.push({ i, cascade: 0, sharedEnd: 0 });
      }
      return order;
    }
    caches.forEach((c, i) => {
      const n = KVCache.#roundTokens(c, indices[i], tokens[i], round);
      if (n === 0) return;
      const page = firstPages[i];
      if (n > fit || page === 0 || (pageCount.get(page) ?? 0) < 2) {
        alone.push(i);
        return;
      }
      const window = layerSettings(c.#settings, indices[i]).scoring.window;
      if (window !== 0) {
        alone.push(i);
        return;
      }
      c.#settingsKey ??= JSON.stringify(settingsToOptions(c.#settings));
      const key = `${page} ${indices[i]} ${c.#settingsKey}`;
      const family = families.get(key);
      if (family) family.push(i);
      else families.set(key, [i]);
    });
    const order: Array<{ i: number; cascade: number; sharedEnd: number }> = [];
    for (const family of families.values()) {
      for (let start = 0; start < family.length; ) {
        // as many members as fit one tile
        let end = start;
        let rows = 0;
        while (
          end < family.length &&
          rows + KVCache.#roundTokens(caches[family[end]], indices[family[end]], tokens[family[end]], round) <= fit
        ) {
          rows += KVCache.#roundTokens(caches[family[end]], indices[family[end]], tokens[family[end]], round);
          end++;
        }
        const group = family.slice(start, end);
        start = end;
        // the members are forks of one cache (their first pages are the same): the same group and local layer
        const { memory: lead, local: layer } = caches[group[0]].#memory.groupOf(indices[group[0]]);
        let pages = lead.maxPages;
        for (const j of group.slice(1)) {
          pages = lead.sharedPages(layer, caches[j].#memory.groupOf(indices[j]).memory, pages);
        }
        // a canonical block boundary (two pages a block, widened dtypes included; one in int8 caches)
        const block = lead.geometry.dtype === 'int8' ? 64 : 128;
        const sharedEnd = Math.floor((pages * 64) / block) * block;
        if (group.length < 2 || sharedEnd === 0) {
          alone.push(...group);
          continue;
        }
        group.forEach((i, j) => {
          order.push({ i, cascade: j === 0 ? group.length : -1, sharedEnd: j === 0 ? sharedEnd : 0 });
        });
      }
    }
    for (const i of alone) order.push({ i, cascade: 0, sharedEnd: 0 });
    return order;
  }

  /** Gives back the pages of a layer past what it holds (after a batch that reserved them did not write). */
  #giveBackUnheld(index: number): void {
    this.#memory.release(
      index,
      heldSlots(this.#lengths[index], this.#intactFrom[index], this.#memory.geometryOf(index).slots),
    );
  }

  /** #checkNewTokens for item i of a batch: errors name items[i].k and items[i].v. */
  #checkItemTokens(i: number, index: number, k: unknown, v: unknown, tokens: number): void {
    const { kvHeads, headDim } = this.#settings.shape;
    const keyTokens = tokensIn(itemName(i, 'k'), k, kvHeads * headDim, 'kvHeads × headDim');
    if (keyTokens !== tokens) {
      throw rangeError(
        `items[${i}].k`,
        `the same ${tokens} tokens as items[${i}].q (${tokens * kvHeads * headDim} floats)`,
        k,
      );
    }
    tokensIn(itemName(i, 'v'), v, kvHeads * headDim, 'kvHeads × headDim');
    sameLength(itemName(i, 'v'), v as Float32Array, itemName(i, 'k'), k as Float32Array);
    try {
      this.#checkNewTokens(index, k, v, tokens);
    } catch (error) {
      // the same checks as attend, with the item named
      (error as Error).message = (error as Error).message.replace('wasm-attention: ', `wasm-attention: items[${i}]: `);
      throw error;
    }
  }

  /**
   * Appends the T tokens of k/v ([T][kvHeads][headDim]) to `layer` without attending: for restoring a
   * cache from keys and values computed elsewhere. The cache then stands exactly as after attend().
   */
  append(layer: number, k: Float32Array, v: Float32Array): void {
    const instance = this.#enter('KVCache.append');
    try {
      this.#refuseWhileDrafts('append');
      const index = this.#layerIndex(layer);
      const { kvHeads, headDim } = this.#settings.shape;
      const tokens = tokensIn('k', k, kvHeads * headDim, 'kvHeads × headDim');
      this.#checkNewTokens(index, k, v, tokens);
      this.#run(index, k, v, tokens);
    } finally {
      instance.leave();
    }
  }

  /**
   * Appends T draft tokens to `layer` and returns their attention ([T][heads][headDim]): `parents[i]` is −1
   * (draft i follows the cache's last token) or the index of an earlier draft. Draft i is stored in a slot of
   * its own, rotated at the position it would have if accepted (length + depth − 1), and sees the cache and
   * its ancestors among the drafts (and itself). The drafts stay pending, not counted in the length, until
   * accept(path); every layer attends the same parents before it. A chain (−1, 0, 1, …) is the same bits as
   * attend.
   */
  attendTree(
    layer: number,
    q: Float32Array,
    k: Float32Array,
    v: Float32Array,
    parents: readonly number[] | Int32Array,
    out?: Float32Array,
  ): Float32Array {
    const instance = this.#enter('KVCache.attendTree');
    try {
      const index = this.#layerIndex(layer);
      const { heads, headDim } = this.#settings.shape;
      const tokens = tokensIn('q', q, heads * headDim, 'heads × headDim');
      this.#checkNewTokens(index, k, v, tokens);
      const checked = draftParents(parents, tokens);
      const pending = this.#drafts ?? {
        parents: checked,
        depths: depthsOf(checked),
        bases: this.#lengths.map(() => -1),
      };
      if (pending.bases[index] >= 0) {
        throw new Error(
          `wasm-attention: layer ${index} already holds the pending drafts: accept(path) keeps some of them ` +
            `(accept([]) none) before the next attendTree`,
        );
      }
      if (!sameParents(checked, pending.parents)) {
        const layerDone = pending.bases.findIndex((b) => b >= 0);
        throw rangeError(
          'parents',
          `the parents the pending drafts have (layer ${layerDone} attended ${describeParents(pending.parents)}): ` +
            'every layer attends the same tree before accept',
          describeParents(checked),
        );
      }
      const { window, sinks } = layerSettings(this.#settings, index).scoring;
      const ring = this.#memory.geometryOf(index).ring;
      const most = ring - window + 1;
      if (window > 0 && tokens > most) {
        // more would overwrite ring slots that a query of the tree, or the continuation after accept, needs
        throw rangeError(
          'parents',
          `at most ${most} drafts for a window of ${window} over a ring of ${ring} slots`,
          describeParents(checked),
        );
      }
      const result = outputArray(out, tokens, heads, headDim);
      const base = this.#lengths[index];
      this.#memory.setTree('KVCache.attendTree', index, treeBlock(pending, base, window, sinks), base);
      try {
        this.#run(index, k, v, tokens, q, result);
      } finally {
        this.#memory.clearTree(index);
      }
      // drafts are not tokens of the layer until accepted
      this.#lengths[index] = base;
      pending.bases[index] = base;
      this.#drafts = pending;
      return result;
    } finally {
      instance.leave();
    }
  }

  /**
   * Keeps the pending drafts of `path` (a chain from a root, in order; [] keeps none) as the next positions
   * of every layer and drops the others. Their K/V rows move to those positions as they are (already
   * rotated there): nothing is recomputed.
   */
  accept(path: readonly number[] | Int32Array): void {
    this.#guarded('KVCache.accept', () => this.#accept(path));
  }

  #accept(value: unknown): void {
    const pending = this.#drafts;
    if (!pending)
      throw new Error('wasm-attention: accept needs pending drafts (attendTree), and this cache holds none');
    const missing = pending.bases.findIndex((b) => b < 0);
    if (missing >= 0) {
      throw new Error(
        `wasm-attention: accept needs every layer to have attended the pending drafts; layer ${missing} has not ` +
          `(attendTree it with parents ${describeParents(pending.parents)})`,
      );
    }
    const path = acceptedPath(value, pending.parents);
    // the first draft that is not already where it belongs, and so every row that moves after it
    let moved = 0;
    while (moved < path.length && path[moved] === moved) moved++;
    const memory = this.#memory;
    // every page written, on every layer, before the first write: a failure leaves the cache as it was
    if (moved < path.length) {
      for (let l = 0; l < pending.bases.length; l++) {
        memory.reserve('KVCache.accept', l, pending.bases[l] + moved, path.length - moved);
      }
    }
    for (let l = 0; l < pending.bases.length; l++) {
      const base = pending.bases[l];
      // in order: a row's target lies below every later row's source (path ascends)
      for (let k = moved; k < path.length; k++) memory.copyRow(l, base + path[k], base + k);
      this.#lengths[l] = base + path.length;
    }
    this.#dropDrafts();
  }

  /** Forgets the pending drafts and gives back the pages that held only them. */
  #dropDrafts(): void {
    this.#drafts = undefined;
    for (let l = 0; l < this.#lengths.length; l++) {
      const slots = this.#memory.geometryOf(l).slots;
      this.#memory.release(l, heldSlots(this.#lengths[l], this.#intactFrom[l], slots));
    }
  }

  /** attend and append wait for accept while drafts are pending: their tokens would land among the drafts. */
  #refuseWhileDrafts(what: string): void {
    if (!this.#drafts) return;
    throw new Error(
      `wasm-attention: KVCache.${what} cannot run while drafts are pending (attendTree): accept(path) keeps some ` +
        'of them, accept([]) none',
    );
  }

  /** Checks that k/v hold `tokens` tokens and that the layer has room for them. */
  #checkNewTokens(index: number, k: unknown, v: unknown, tokens: number): void {
    const { kvHeads, headDim } = this.#settings.shape;
    const keyTokens = tokensIn('k', k, kvHeads * headDim, 'kvHeads × headDim');
    if (keyTokens !== tokens) {
      throw rangeError('k', `the same ${tokens} tokens as q (${tokens * kvHeads * headDim} floats)`, k);
    }
    tokensIn('v', v, kvHeads * headDim, 'kvHeads × headDim');
    sameLength('v', v as Float32Array, 'k', k as Float32Array);
    const length = this.#lengths[index];
    const lost = this.#lostContinuation(index);
    if (lost) {
      throw new Error(
        `wasm-attention: layer ${index} cannot continue: a call that failed (a worker thread's kernel trapped) ` +
          `had written over ${lost}, which its next query needs. reset() the cache or load() a saved copy`,
      );
    }
    if (layerSettings(this.#settings, index).scoring.window === 0 && length + tokens > this.#settings.maxTokens) {
      throw new RangeError(
        `wasm-attention: k must fit in the cache: layer ${index} holds ${length} of maxTokens ` +
          `${this.#settings.maxTokens} tokens, room for ${this.#settings.maxTokens - length} more, got ${tokens} tokens`,
      );
    }
    if (length + tokens > MAX_POSITION) {
      throw new RangeError(
        `wasm-attention: k would take layer ${index} past position ${MAX_POSITION}, got ${tokens} tokens`,
      );
    }
  }

  /** Appends validated tokens chunk by chunk and, given q and out, attends each chunk's queries. */
  #run(index: number, k: Float32Array, v: Float32Array, tokens: number, q?: Float32Array, out?: Float32Array): void {
    const memory = this.#memory;
    const length = this.#lengths[index];
    // every page the whole call writes, before the first write: a failure leaves the cache as it was
    memory.reserve(q ? 'attend' : 'append', index, length, tokens);
    // with a window, a chunk is small enough not to overwrite a key one of its own queries needs (cacheChunkTokens)
    const chunk = memory.chunkTokensOf(index);
    let written = 0;
    try {
      for (let from = 0; from < tokens; from = written) {
        written = from + Math.min(chunk, tokens - from);
        memory.step(index, k, v, from, written - from, length + from, q, out);
      }
    } catch (error) {
      // a step failed after its keys were written (a worker thread's kernel trapped): the layer keeps its
      // length, gives back the pages past it, and no longer offers the ring slots those keys overwrote
      this.#evictOverwritten(index, length + written);
      this.#memory.release(index, heldSlots(length, this.#intactFrom[index], memory.geometryOf(index).slots));
      if (error instanceof RangeError || error instanceof TypeError) throw error;
      const lost = this.#lostContinuation(index);
      const state = lost
        ? `; layer ${index} of this windowed cache cannot continue: the call's earlier steps had already ` +
          `written over ${lost}. reset() the cache or load() a saved copy`
        : '; the cache is as it was before the call';
      throw new Error(`${(error as Error).message}${state}`, { cause: error });
    }
    this.#lengths[index] = length + tokens;
    this.#evictOverwritten(index, length + tokens);
  }

  /**
   * With a window, which keys the layer's next query needs but no longer holds ('' when it holds them all):
   * only a call that failed after writing more than a ring's worth of keys past the window leaves a gap.
   */
  #lostContinuation(index: number): string {
    const { window, sinks } = layerSettings(this.#settings, index).scoring;
    const needed = windowStart(this.#lengths[index], window, sinks);
    const intactFrom = this.#intactFrom[index];
    return window > 0 && intactFrom > needed ? `the keys of positions ${needed} … ${intactFrom - 1}` : '';
  }

  /** With a window, keys were written up to position `end`: the ring slots they took no longer hold older ones. */
  #evictOverwritten(index: number, end: number): void {
    if (layerSettings(this.#settings, index).scoring.window === 0) return;
    this.#intactFrom[index] = Math.max(
      this.#intactFrom[index],
      overwrittenBelow(end, this.#memory.geometryOf(index).ring),
    );
  }

  /**
   * Every layer keeps its first n tokens (a layer holding fewer keeps all). With a window, a RangeError if
   * a token the continuation would need has already been evicted; the cache is then unchanged.
   */
  truncate(n: number): void {
    // no closure: a decode loop may truncate every step, and allocates nothing on the JS heap
    const instance = this.#enter('KVCache.truncate');
    try {
      this.#truncate(n);
    } finally {
      instance.leave();
    }
  }

  #truncate(n: number): void {
    // n past a layer's length keeps all of it: "every layer keeps its first n tokens"
    integerAtLeast('n', n, 0);
    for (let l = 0; l < this.#lengths.length; l++) {
      const { window, sinks } = layerSettings(this.#settings, l).scoring;
      if (window === 0) continue;
      // the next query, at position n, needs positions from windowStart up to n − 1
      const needed = windowStart(n, window, sinks);
      if (this.#lengths[l] > n && needed < n && needed < this.#intactFrom[l]) {
        throw new RangeError(
          `wasm-attention: n must leave the cache able to continue: truncating to ${n} needs ` +
            `layer ${l}'s tokens from position ${needed}, but positions below ${this.#intactFrom[l]} were already ` +
            `evicted from its ring of ${this.#memory.geometryOf(l).ring} slots; got n = ${n}`,
        );
      }
    }
    // pending drafts lie past every layer's length: truncating drops them
    if (this.#drafts) this.#dropDrafts();
    for (let l = 0; l < this.#lengths.length; l++) {
      if (this.#lengths[l] > n) {
        this.#lengths[l] = n;
        this.#intactFrom[l] = Math.min(this.#intactFrom[l], n);
        // pages past what the layer still holds go back (a wrapped ring keeps them: save() writes every slot)
        this.#memory.release(l, heldSlots(this.#lengths[l], this.#intactFrom[l], this.#memory.geometryOf(l).slots));
      }
    }
  }

  /**
   * A second cache with the same options and history. The two share the pages of that history (copy on
   * write) and continue independently, each exactly as a fresh cache fed its own history; either may be
   * disposed first.
   */
  fork(): KVCache {
    return this.#guarded('KVCache.fork', () => this.#fork());
  }

  #fork(): KVCache {
    const memory = this.#memory.fork(layerGroups(this.#settings));
    const drafts = this.#drafts && { ...this.#drafts, bases: [...this.#drafts.bases] };
    KVCache.#adopt = { memory, lengths: [...this.#lengths], intactFrom: [...this.#intactFrom], drafts };
    try {
      return new KVCache(settingsToOptions(this.#settings));
    } finally {
      KVCache.#adopt = undefined;
    }
  }

  /**
   * Everything needed to continue later, in the format of docs/FORMAT.md: the options and, per layer, the
   * positions `from` … `to` − 1 (defaults: 0 and the layer's length) the cache holds. `save()` is the whole
   * state; `save({ from: n })` a piece holding only what came after position n, which `KVCache.load` applies
   * after pieces reaching n (`from` may also be one position per layer, for layers at different lengths).
   * A RangeError if a window already evicted positions the piece needs.
   */
  save(options?: { from?: number | readonly number[]; to?: number }): Uint8Array {
    return this.#guarded('KVCache.save', () => this.#save(options));
  }

  #save(options: unknown): Uint8Array {
    if (this.#drafts) {
      throw new Error(
        'wasm-attention: save cannot hold pending drafts (attendTree): accept(path) first (accept([]) drops them)',
      );
    }
    const { from, to } = saveRange(options, this.#lengths);
    const geometry = pieceGeometry(this.#settings);
    const layers = planPiece(geometry, this.#states(), from, to);
    const runs = layers.flatMap((layer, l) => this.#runs(l, heldRanges(layer, geometry[l])));
    const header = {
      options: settingsToOptions(this.#settings),
      build: this.#memory.instance.build,
      layers,
      continues: this.#rowsCrc(layers.map((layer) => layer.from)),
      reaches: this.#rowsCrc(layers.map((layer) => layer.to)),
    };
    return encode(header, runs, this.#memory.instance.u8());
  }

  /** CRC-32 of the rows at position ends[l] − 1 of every layer with ends[l] > 0: what pieces chain on. */
  #rowsCrc(ends: number[]): number {
    return runsCrc(
      ends.flatMap((end, l) => (end > 0 ? this.#runs(l, [[end - 1, end]]) : [])),
      this.#memory.instance.u8(),
    );
  }

  /**
   * A cache that continues exactly where the saved one stood: from the bytes of `save()`, or from pieces in
   * order (`save()` or `save({ from: 0 })` first, then each `save({ from })` continuing where the one
   * before ended). With `base`, the pieces continue that cache instead (the first starting where it
   * stands): the result is a fork() of it, sharing its pages, with the pieces applied; `base` is unchanged.
   * Bytes that are not such pieces of this format version (truncated, corrupted, out of order, from another
   * cache or history, anything else) are refused with an Error.
   */
  static load(bytes: Uint8Array | readonly Uint8Array[], options?: { base?: KVCache }): KVCache {
    const instance = activeInstance();
    instance.enter('KVCache.load');
    try {
      if (options !== undefined && (options === null || typeof options !== 'object')) {
        throw typeError('options', 'an object { base? } or undefined', options);
      }
      if (options) refuseUnknownKeys(options, 'options', ['base']);
      const base = options?.base;
      // a brand check: a Proxy of a cache, or an object whose prototype is KVCache's, is not one
      if (base !== undefined && !(typeof base === 'object' && base !== null && #memory in base)) {
        throw typeError('options.base', 'a KVCache', base);
      }
      if (!base || base.#memory.instance === instance) return KVCache.#load(bytes, base);
      base.#memory.instance.enter('KVCache.load');
      try {
        return KVCache.#load(bytes, base);
      } finally {
        base.#memory.instance.leave();
      }
    } finally {
      instance.leave();
    }
  }

  static #load(bytes: unknown, base: KVCache | undefined): KVCache {
    if (base) {
      base.#live();
      if (base.#drafts) {
        throw new Error('wasm-attention: options.base holds pending drafts (attendTree): accept(path) first');
      }
    }
    // everything is checked before anything is allocated, so refused bytes never grow memory
    const { settings, geometry, pieces, states } = readPieces(
      bytes,
      (options) => {
        const settings = cacheSettings(options);
        // a piece's options that no cache could hold are refused with the piece (it is never allocated)
        fittingGroups(base ? base.#memory.instance : activeInstance(), settings);
        return {
          settings,
          geometry: pieceGeometry(settings),
          layers: settings.layers,
          options: settingsToOptions(settings),
        };
      },
      base && {
        options: settingsToOptions(base.#settings),
        build: base.#memory.instance.build,
        states: base.#states(),
        lastRows: base.#lastRows(),
      },
    );
    KVCache.#within = !base;
    const cache = base ? base.#fork() : new KVCache(settingsToOptions(settings));
    try {
      states.forEach((state, l) => {
        const slots = cache.#memory.geometryOf(l).slots;
        const from = cache.#lengths[l];
        // the pages the pieces write: on a fork, its own copies of the pages it shares (copy on write)
        if (base) {
          if (state.length > from) cache.#memory.reserve('KVCache.load', l, from, state.length - from);
        } else cache.#memory.reserveSlots('KVCache.load', l, heldSlots(state.length, state.intactFrom, slots));
      });
      for (const piece of pieces) {
        const runs = piece.layers.flatMap((layer, l) => cache.#runs(l, heldRanges(layer, geometry[l])));
        restore(piece, runs, cache.#memory.instance.u8());
      }
      states.forEach((state, l) => {
        cache.#lengths[l] = state.length;
        cache.#intactFrom[l] = state.intactFrom;
      });
    } catch (error) {
      cache.#free();
      throw error;
    }
    return cache;
  }

  /** Per layer, a copy of the bytes of its row at position length − 1 (saved-format order; empty at 0). */
  #lastRows(): Uint8Array[] {
    const memory = this.#memory.instance.u8();
    return this.#lengths.map((length, l) => {
      const runs = length > 0 ? this.#runs(l, [[length - 1, length]]) : [];
      const row = new Uint8Array(runs.reduce((n, r) => n + r.bytes, 0));
      let at = 0;
      for (const r of runs) {
        row.set(memory.subarray(r.address, r.address + r.bytes), at);
        at += r.bytes;
      }
      return row;
    });
  }

  #states(): Array<{ length: number; intactFrom: number }> {
    return this.#lengths.map((length, l) => ({ length, intactFrom: this.#intactFrom[l] }));
  }

  /**
   * The memory of `positions` of one layer in the saved format's order (K rows per kv head, V rows, then
   * int8 scales): the one place that knows where saved K/V lives (pages, cache-memory.ts).
   */
  #runs(layer: number, positions: Array<[number, number]>): Run[] {
    return this.#memory.runs(layer, positions);
  }

  /** truncate(0): empty every layer; its pages go back to the pool. */
  reset(): void {
    this.#guarded('KVCache.reset', () => this.#truncate(0));
  }

  /** Frees the cache's memory (pages it shares stay with the caches that share them); any later use throws. */
  dispose(): void {
    if (this.#memory.disposed) return;
    this.#memory.instance.run('KVCache.dispose', () => this.#free());
  }

  #free(): void {
    unreleased?.unregister(this);
    this.#memory.dispose();
  }

  [dispose](): void {
    this.dispose();
  }

  #live(): void {
    if (this.#memory.disposed) throw new Error('wasm-attention: this KVCache was disposed');
  }

  /** A public call on a live cache, as the one call running on its instance (Instance.run). */
  #guarded<T>(what: string, body: () => T): T {
    this.#live();
    return this.#memory.instance.run(what, body);
  }

  /** The start of a public call (Instance.enter) on a live cache; returns the instance to leave. */
  #enter(what: string): Instance {
    this.#live();
    const instance = this.#memory.instance;
    instance.enter(what);
    return instance;
  }

  #layerIndex(layer: unknown): number {
    return integerAtLeast('layer', layer, 0, this.#settings.layers - 1);
  }
}
