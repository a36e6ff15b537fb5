// KVCache: per layer and kv head, the keys and values of every token so far, in the kernel's memory.
// Its lifecycle and its calls; the options it is made from are options.ts's, its memory (descriptor, page
// tables, pages) is layer.ts's, the saved format is persist.ts's.

import { activeKernel, init } from './kernel.js';
import { MAX_MEMORY_BYTES } from './heap.js';
import { rangeError, typeError } from './errors.js';
import {
  MAX_POSITION, cacheSettings, integerAtLeast, layerGeometry, outputArray, sameLength, settingsToOptions, tokensIn,
  type CacheSettings, type KVCacheOptions,
} from './options.js';
import { decodeHeader, encode, restore, type Run, type SavedLayer } from './persist.js';
import { CacheMemory, pageBytesOf, pagesPerHead, stagingTokens, type LayerGeometry } from './layer.js';
import { COUNT_BYTES } from './pages.js';

export type { KVCacheDtype, KVCacheOptions, RopeOptions } from './options.js';

/** Slots per kv head save() writes: positions sit at slots 0 … length − 1 until a ring has wrapped. */
function savedRowsFor(length: number, intactFrom: number, slots: number): number {
  return intactFrom === 0 && length <= slots ? length : slots;
}

/** Payload bytes of one saved layer: K and V rows, and int8 scales (persist.ts lays them out). */
function layerPayloadBytes(geometry: LayerGeometry, rows: number): number {
  const rowBytes = geometry.headDim * (geometry.int8 ? 1 : 4);
  return 2 * geometry.kvHeads * rows * (rowBytes + (geometry.int8 ? 4 : 0));
}

const dispose: typeof Symbol.dispose = Symbol.dispose ?? Symbol.for('Symbol.dispose');

/** Frees a cache's memory if it is garbage-collected without dispose(). */
const unreleased = typeof FinalizationRegistry === 'function'
  ? new FinalizationRegistry<CacheMemory>((memory) => memory.dispose())
  : undefined;

/** Bytes a cache of these settings would hold with every slot of every layer in use (pages, refcounts, tables). */
function fullBytes(settings: CacheSettings, geometry: LayerGeometry): number {
  const pages = pagesPerHead(geometry);
  return settings.layers * 2 * settings.shape.kvHeads * pages * (pageBytesOf(geometry) + COUNT_BYTES + 4);
}

export class KVCache {
  readonly #settings: CacheSettings;
  readonly #memory: CacheMemory;
  /** tokens appended to each layer (positions keep counting past what a window holds) */
  readonly #lengths: number[];
  /** windowed caches: per layer, the lowest ring position whose row has not been overwritten since */
  readonly #intactFrom: number[];
  /** fork(): the memory and state the next constructed cache adopts instead of making its own */
  static #adopt: { memory: CacheMemory; lengths: number[]; intactFrom: number[] } | undefined;

  /**
   * A cache for `options` (see API.md). It holds its descriptor only; pages arrive with the tokens.
   * Requires init() to have resolved.
   */
  constructor(options: KVCacheOptions) {
    const adopt = KVCache.#adopt;
    KVCache.#adopt = undefined;
    const settings = cacheSettings(options);
    this.#settings = settings;
    if (adopt) {
      this.#memory = adopt.memory;
      this.#lengths = adopt.lengths;
      this.#intactFrom = adopt.intactFrom;
    } else {
      const kernel = activeKernel();
      const geometry = layerGeometry(settings);
      const bytes = fullBytes(settings, geometry);
      if (bytes > MAX_MEMORY_BYTES - kernel.abi.heapBase()) {
        throw new RangeError(`wasm-attention: a KVCache with these options needs ${bytes} bytes once full, more than ` +
          `WebAssembly's 4 GiB (${MAX_MEMORY_BYTES} bytes) address space holds: lower maxTokens, layers or kvHeads, ` +
          `or use dtype 'int8'`);
      }
      const chunk = settings.scoring.window > 0
        ? Math.min(stagingTokens(settings.shape), settings.maxTokens - settings.scoring.window + 1)
        : Math.min(stagingTokens(settings.shape), settings.maxTokens);
      this.#memory = new CacheMemory(kernel, geometry, settings.layers, settings.scoring, settings.rope, chunk);
      this.#lengths = new Array<number>(settings.layers).fill(0);
      this.#intactFrom = new Array<number>(settings.layers).fill(0);
    }
    unreleased?.register(this, this.#memory, this);
  }

  /** As `new KVCache(options)`, after `await init()` if no kernel is loaded yet. */
  static async create(options: KVCacheOptions): Promise<KVCache> {
    try {
      activeKernel();
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
    this.#live();
    const index = this.#layerIndex(layer);
    const { heads, headDim } = this.#settings.shape;
    const tokens = tokensIn('q', q, heads * headDim, 'heads × headDim');
    this.#checkNewTokens(index, k, v, tokens);
    const result = outputArray(out, tokens * heads * headDim, () => `[T=${tokens}][heads=${heads}][headDim=${headDim}]`);
    this.#run(index, k, v, tokens, q, result);
    return result;
  }

  /**
   * Appends the T tokens of k/v ([T][kvHeads][headDim]) to `layer` without attending: for restoring a
   * cache from keys and values computed elsewhere. The cache then stands exactly as after attend().
   */
  append(layer: number, k: Float32Array, v: Float32Array): void {
    this.#live();
    const index = this.#layerIndex(layer);
    const { kvHeads, headDim } = this.#settings.shape;
    const tokens = tokensIn('k', k, kvHeads * headDim, 'kvHeads × headDim');
    this.#checkNewTokens(index, k, v, tokens);
    this.#run(index, k, v, tokens);
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
    if (this.#settings.scoring.window === 0 && length + tokens > this.#settings.maxTokens) {
      throw new RangeError(`wasm-attention: k must fit in the cache: layer ${index} holds ${length} of maxTokens ` +
        `${this.#settings.maxTokens} tokens, room for ${this.#settings.maxTokens - length} more, got ${tokens} tokens`);
    }
    if (length + tokens > MAX_POSITION) {
      throw new RangeError(`wasm-attention: k would take layer ${index} past position ${MAX_POSITION}, got ${tokens} tokens`);
    }
  }

  /** Appends validated tokens chunk by chunk and, given q and out, attends each chunk's queries. */
  #run(index: number, k: Float32Array, v: Float32Array, tokens: number, q?: Float32Array, out?: Float32Array): void {
    const memory = this.#memory;
    const length = this.#lengths[index];
    const { window } = this.#settings.scoring;
    // every page the whole call writes, before the first write: a failure leaves the cache as it was
    memory.reserve(q ? 'attend' : 'append', index, length, tokens);
    // with a window, a chunk may not overwrite a key that one of its own queries still needs
    const chunk = window > 0 ? Math.min(memory.chunkTokens, memory.geometry.ring - window + 1) : memory.chunkTokens;
    for (let from = 0; from < tokens; from += chunk) {
      const count = Math.min(chunk, tokens - from);
      memory.step(index, k, v, from, count, length + from, q, out);
    }
    this.#lengths[index] = length + tokens;
    if (window > 0) this.#intactFrom[index] = Math.max(this.#intactFrom[index], length + tokens - memory.geometry.ring);
  }

  /**
   * Every layer keeps its first n tokens (a layer holding fewer keeps all). With a window, a RangeError if
   * a token the continuation would need has already been evicted; the cache is then unchanged.
   */
  truncate(n: number): void {
    this.#live();
    // n past a layer's length keeps all of it: "every layer keeps its first n tokens"
    integerAtLeast('n', n, 0);
    const { window, sinks } = this.#settings.scoring;
    if (window > 0) {
      // the next query, at position n, needs positions from max(sinks, n − window + 1) up to n − 1
      const needed = Math.max(sinks, n - window + 1);
      for (let l = 0; l < this.#lengths.length; l++) {
        if (this.#lengths[l] > n && needed < n && needed < this.#intactFrom[l]) {
          throw new RangeError(`wasm-attention: n must leave the cache able to continue: truncating to ${n} needs ` +
            `layer ${l}'s tokens from position ${needed}, but positions below ${this.#intactFrom[l]} were already ` +
            `evicted from its ring of ${this.#settings.maxTokens} slots; got n = ${n}`);
        }
      }
    }
    for (let l = 0; l < this.#lengths.length; l++) {
      if (this.#lengths[l] > n) {
        this.#lengths[l] = n;
        this.#intactFrom[l] = Math.min(this.#intactFrom[l], n);
        // pages past what the layer still holds go back (a wrapped ring keeps them: save() writes every slot)
        this.#memory.release(l, this.#savedRows(l));
      }
    }
  }

  /**
   * A second cache with the same options and history. The two share the pages of that history (copy on
   * write) and continue independently, each exactly as a fresh cache fed its own history; either may be
   * disposed first.
   */
  fork(): KVCache {
    this.#live();
    const memory = this.#memory.fork(this.#settings.scoring, this.#settings.rope);
    KVCache.#adopt = { memory, lengths: [...this.#lengths], intactFrom: [...this.#intactFrom] };
    try {
      return new KVCache(settingsToOptions(this.#settings));
    } finally {
      KVCache.#adopt = undefined;
    }
  }

  /**
   * Everything needed to continue later (options, lengths, the held K/V), in the format of
   * docs/FORMAT.md. `KVCache.load` of these bytes continues bit-identically in the same build.
   */
  save(): Uint8Array {
    this.#live();
    const layers: SavedLayer[] = this.#lengths.map((length, l) => ({
      length, intactFrom: this.#intactFrom[l], rows: this.#savedRows(l),
    }));
    const runs = layers.flatMap((saved, l) => this.#runs(l, saved.rows));
    return encode({ options: settingsToOptions(this.#settings), build: this.#memory.kernel.build, layers }, runs, this.#memory.kernel.bytes());
  }

  /**
   * A cache that continues exactly where the saved one stood. Bytes that are not a saved cache of this
   * format version (truncated, corrupted, or anything else) are refused with an Error.
   */
  static load(bytes: Uint8Array): KVCache {
    activeKernel();
    if (!(bytes instanceof Uint8Array)) throw typeError('bytes', 'a Uint8Array from KVCache.save()', bytes);
    const { header, payloadStart } = decodeHeader(bytes);
    const refuse = (why: string) => new Error(`wasm-attention: KVCache.load refused the bytes: ${why}`);
    let settings: CacheSettings;
    try {
      settings = cacheSettings(header.options);
    } catch (error) {
      throw refuse(`the saved options are invalid (${(error as Error).message})`);
    }
    const geometry = layerGeometry(settings);
    const layers = header.layers;
    if (layers.length !== settings.layers) throw refuse(`${layers.length} saved layers for options.layers ${settings.layers}`);
    const windowed = settings.scoring.window > 0;
    let payload = 0;
    layers.forEach((saved, l) => {
      const numbers = saved && [saved.length, saved.intactFrom, saved.rows].every((n) => Number.isInteger(n) && n >= 0);
      // exactly the states save() can write: eviction only past a full ring, and the rows that rule implies
      const ok = numbers && saved.length <= MAX_POSITION && saved.intactFrom <= saved.length &&
        (windowed ? saved.intactFrom >= saved.length - geometry.ring : saved.intactFrom === 0 && saved.length <= settings.maxTokens) &&
        saved.rows === savedRowsFor(saved.length, saved.intactFrom, geometry.slots);
      if (!ok) throw refuse(`layer ${l}'s saved state ${JSON.stringify(saved)} is not one a cache of these options can be in`);
      payload += layerPayloadBytes(geometry, saved.rows);
    });
    // checked before anything is allocated, so refused bytes never grow memory
    const expected = payloadStart + payload + 4;
    if (expected !== bytes.length) throw refuse(`expected ${expected} bytes for the saved state, got ${bytes.length}`);
    const cache = new KVCache(settingsToOptions(settings));
    try {
      layers.forEach((saved, l) => cache.#memory.reserveSlots('KVCache.load', l, saved.rows));
      const runs = layers.flatMap((saved, l) => cache.#runs(l, saved.rows));
      restore(bytes, payloadStart, runs, cache.#memory.kernel.bytes());
      layers.forEach((saved, l) => {
        cache.#lengths[l] = saved.length;
        cache.#intactFrom[l] = saved.intactFrom;
      });
    } catch (error) {
      cache.dispose();
      throw error;
    }
    return cache;
  }

  /** Slots per kv head that hold data: the prefix 0 … length − 1 until a window's ring has wrapped. */
  #savedRows(layer: number): number {
    return savedRowsFor(this.#lengths[layer], this.#intactFrom[layer], this.#memory.geometry.slots);
  }

  /**
   * The memory runs of one layer's first `rows` slots (K rows, V rows, then int8 scales): the one place
   * that knows where saved K/V lives (pages, layer.ts).
   */
  #runs(layer: number, rows: number): Run[] {
    return this.#memory.runs(layer, rows);
  }

  /** truncate(0): empty every layer; its pages go back to the pool. */
  reset(): void {
    this.truncate(0);
  }

  /** Frees the cache's memory (pages it shares stay with the caches that share them); any later use throws. */
  dispose(): void {
    if (this.#memory.disposed) return;
    unreleased?.unregister(this);
    this.#memory.dispose();
  }

  [dispose](): void {
    this.dispose();
  }

  #live(): void {
    if (this.#memory.disposed) throw new Error('wasm-attention: this KVCache was disposed');
  }

  #layerIndex(layer: unknown): number {
    return integerAtLeast('layer', layer, 0, this.#settings.layers - 1);
  }
}
