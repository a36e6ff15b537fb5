// KVCache: per layer and kv head, the keys and values of every token so far, in the kernel's memory.

import { activeKernel, init, type Kernel } from './kernel.js';
import { MAX_MEMORY_BYTES } from './heap.js';
import { rangeError, typeError } from './errors.js';
import {
  MAX_POSITION, headShape, integerAtLeast, optionsObject, outputArray, ropeSettings, sameLength, scoring,
  tokensIn, type HeadShape, type RopeSettings, type Scoring,
} from './options.js';
import {
  encode, heldRanges, planPiece, readPieces, restore, runsCrc, saveRange, type PieceGeometry, type Run,
} from './persist.js';
import {
  STREAM_BYTES, Placer, appendTokens, attendTokens, layerBlockBytes, measure, placeLayer, placeStaging, stagingTokens,
  type Layer, type LayerGeometry,
} from './layer.js';

export type KVCacheDtype = 'float32' | 'int8';

export interface RopeOptions {
  theta?: number;
  dims?: number;
  interleaved?: boolean;
}

export interface KVCacheOptions {
  layers?: number;
  heads: number;
  kvHeads?: number;
  headDim: number;
  maxTokens: number;
  window?: number;
  sinks?: number;
  dtype?: KVCacheDtype;
  scale?: number;
  softcap?: number;
  rope?: RopeOptions;
}

/** Everything a cache's behaviour depends on, validated and with defaults filled in. */
export interface CacheSettings {
  layers: number;
  shape: HeadShape;
  scoring: Scoring;
  maxTokens: number;
  dtype: KVCacheDtype;
  rope?: RopeSettings;
}

export function cacheSettings(options: unknown): CacheSettings {
  const bag = optionsObject('options', options);
  const layers = bag.layers === undefined ? 1 : integerAtLeast('options.layers', bag.layers, 1, 65536);
  const shape = headShape(bag, 'options');
  const score = scoring(bag, 'options', shape.headDim);
  const maxTokens = integerAtLeast('options.maxTokens', bag.maxTokens, 1, MAX_POSITION);
  if (score.window > maxTokens) {
    throw rangeError('options.window', `at most options.maxTokens (${maxTokens}): the ring must hold a whole window`, score.window);
  }
  const dtype = bag.dtype === undefined ? 'float32' : bag.dtype;
  if (dtype !== 'float32' && dtype !== 'int8') {
    throw (typeof dtype === 'string' ? rangeError : typeError)('options.dtype', "'float32' or 'int8'", dtype);
  }
  const rope = ropeSettings(bag.rope, 'options', shape.headDim);
  return { layers, shape, scoring: score, maxTokens, dtype, rope };
}

/** The options that reproduce `settings` (what save() stores). */
export function settingsToOptions(settings: CacheSettings): KVCacheOptions & Record<string, unknown> {
  const { shape, scoring: score } = settings;
  return {
    layers: settings.layers, heads: shape.heads, kvHeads: shape.kvHeads, headDim: shape.headDim,
    maxTokens: settings.maxTokens, dtype: settings.dtype, scale: score.scale, sinks: score.sinks,
    ...(score.window ? { window: score.window } : {}),
    ...(score.softcap ? { softcap: score.softcap } : {}),
    ...(settings.rope ? { rope: { ...settings.rope } } : {}),
  };
}

/** The slots of every layer: with a window, sinks that stay plus a ring of maxTokens; else maxTokens. */
export function layerGeometry(settings: CacheSettings): LayerGeometry {
  const { window, sinks } = settings.scoring;
  const int8 = settings.dtype === 'int8';
  return window > 0
    ? { ...settings.shape, int8, slots: sinks + settings.maxTokens, sinks, ring: settings.maxTokens }
    : { ...settings.shape, int8, slots: settings.maxTokens, sinks: 0, ring: settings.maxTokens };
}

/** What the saved format needs of a cache's options. */
function pieceGeometry(settings: CacheSettings): PieceGeometry {
  const { kvHeads, headDim } = settings.shape;
  const { window, sinks } = settings.scoring;
  return { kvHeads, headDim, int8: settings.dtype === 'int8', maxTokens: settings.maxTokens, window, sinks };
}

/** The slots of positions [start, end) as [first slot, count] stretches (a ring's wrap splits one). */
function slotStretches(g: LayerGeometry, start: number, end: number): Array<[number, number]> {
  const stretches: Array<[number, number]> = [];
  while (start < end) {
    const slot = start < g.sinks ? start : g.sinks + (start - g.sinks) % g.ring;
    const stop = start < g.sinks ? Math.min(end, g.sinks) : Math.min(end, start + g.sinks + g.ring - slot);
    stretches.push([slot, stop - start]);
    start = stop;
  }
  return stretches;
}

const dispose: typeof Symbol.dispose = Symbol.dispose ?? Symbol.for('Symbol.dispose');

/** Frees a cache's memory if it is garbage-collected without dispose(). */
const unreleased = typeof FinalizationRegistry === 'function'
  ? new FinalizationRegistry<{ kernel: Kernel; base: number }>(({ kernel, base }) => kernel.heap.release(base))
  : undefined;

export class KVCache {
  readonly #kernel: Kernel;
  readonly #settings: CacheSettings;
  readonly #layers: Layer[] = [];
  readonly #bytes: number;
  #base: number;
  /** tokens appended to each layer (positions keep counting past what a window holds) */
  readonly #lengths: number[];
  /** windowed caches: per layer, the lowest ring position whose row has not been overwritten since */
  readonly #intactFrom: number[];

  /** A cache for `options` (see API.md), its memory reserved now. Requires init() to have resolved. */
  constructor(options: KVCacheOptions) {
    const kernel = activeKernel();
    const settings = cacheSettings(options);
    const geometry = layerGeometry(settings);
    const tokens = settings.scoring.window > 0
      ? Math.min(stagingTokens(settings.shape), settings.maxTokens - settings.scoring.window + 1)
      : Math.min(stagingTokens(settings.shape), settings.maxTokens);
    const place = (placer: Placer) => {
      for (let l = 0; l < settings.layers; l++) placeLayer(placer, geometry);
      placeStaging(placer, kernel, settings.shape, tokens, settings.rope);
    };
    const bytes = measure(place);
    if (bytes > MAX_MEMORY_BYTES - kernel.abi.heapBase()) {
      throw new RangeError(`wasm-attention: a KVCache with these options needs ${bytes} bytes, more than ` +
        `WebAssembly's 4 GiB (${MAX_MEMORY_BYTES} bytes) address space holds: lower maxTokens, layers or kvHeads, ` +
        `or use dtype 'int8'`);
    }
    this.#base = kernel.heap.allocate(bytes);
    this.#kernel = kernel;
    this.#settings = settings;
    this.#bytes = bytes;
    const placer = new Placer(this.#base);
    const blocks = [];
    for (let l = 0; l < settings.layers; l++) blocks.push(placeLayer(placer, geometry));
    const staging = placeStaging(placer, kernel, settings.shape, tokens, settings.rope);
    const stream = settings.layers * 2 * layerBlockBytes(geometry).rows > STREAM_BYTES;
    for (const layerBlocks of blocks) {
      this.#layers.push({ kernel, geometry, blocks: layerBlocks, staging, rope: settings.rope, stream });
    }
    if (settings.rope) kernel.abi.ropeFrequencies(staging.rope, settings.rope.dims, settings.rope.theta);
    this.#lengths = new Array<number>(settings.layers).fill(0);
    this.#intactFrom = new Array<number>(settings.layers).fill(0);
    unreleased?.register(this, { kernel, base: this.#base }, this);
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

  /** Bytes of linear memory this cache holds (0 once disposed). */
  get byteLength(): number {
    return this.#base ? this.#bytes : 0;
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
    const target = this.#layers[index];
    const geometry = target.geometry;
    const length = this.#lengths[index];
    const { window } = this.#settings.scoring;
    // with a window, a chunk may not overwrite a key that one of its own queries still needs
    const chunk = window > 0 ? Math.min(target.staging.tokens, geometry.ring - window + 1) : target.staging.tokens;
    for (let from = 0; from < tokens; from += chunk) {
      const count = Math.min(chunk, tokens - from);
      const position = length + from;
      appendTokens(target, k, v, from, count, position);
      if (q && out) attendTokens(target, q, out, from, count, position, position + count, true, this.#settings.scoring);
    }
    this.#lengths[index] = length + tokens;
    if (window > 0) this.#intactFrom[index] = Math.max(this.#intactFrom[index], length + tokens - geometry.ring);
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
      }
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
    this.#live();
    const { from, to } = saveRange(options, this.#lengths);
    const geometry = pieceGeometry(this.#settings);
    const layers = planPiece(geometry, this.#states(), from, to);
    const memory = this.#kernel.bytes();
    const runs = layers.flatMap((layer, l) => this.#runs(l, heldRanges(layer, geometry)));
    const rowsAt = (position: (layer: { from: number; to: number }) => number) => runsCrc(layers.flatMap((layer, l) =>
      position(layer) > 0 ? this.#runs(l, [[position(layer) - 1, position(layer)]]) : []), memory);
    const header = {
      options: settingsToOptions(this.#settings), build: this.#kernel.build, layers,
      continues: rowsAt((layer) => layer.from), reaches: rowsAt((layer) => layer.to),
    };
    return encode(header, runs, memory);
  }

  /**
   * A cache that continues exactly where the saved one stood: from the bytes of `save()`, or from pieces in
   * order (`save()` or `save({ from: 0 })` first, then each `save({ from })` continuing where the one
   * before ended). Bytes that are not such pieces of this format version (truncated, corrupted, out of
   * order, from another cache or history, anything else) are refused with an Error.
   */
  static load(bytes: Uint8Array | readonly Uint8Array[]): KVCache {
    activeKernel();
    // everything is checked before anything is allocated, so refused bytes never grow memory
    const { settings, geometry, pieces, states } = readPieces(bytes, (options) => {
      const settings = cacheSettings(options);
      return { settings, geometry: pieceGeometry(settings), layers: settings.layers, options: settingsToOptions(settings) };
    });
    const cache = new KVCache(settingsToOptions(settings));
    try {
      for (const piece of pieces) {
        const runs = piece.layers.flatMap((layer, l) => cache.#runs(l, heldRanges(layer, geometry)));
        restore(piece, runs, cache.#kernel.bytes());
      }
      states.forEach((state, l) => {
        cache.#lengths[l] = state.length;
        cache.#intactFrom[l] = state.intactFrom;
      });
    } catch (error) {
      cache.dispose();
      throw error;
    }
    return cache;
  }

  #states(): Array<{ length: number; intactFrom: number }> {
    return this.#lengths.map((length, l) => ({ length, intactFrom: this.#intactFrom[l] }));
  }

  /**
   * The memory of `positions` of one layer in the saved format's order: K rows per kv head, V rows, then
   * (int8) K and V scales, each kv head's positions in the order given. The one place saving and loading
   * touch K/V memory.
   */
  #runs(layer: number, positions: Array<[number, number]>): Run[] {
    const { geometry: g, blocks } = this.#layers[layer];
    const rowBytes = g.headDim * (g.int8 ? 1 : 4);
    const stretches = positions.flatMap(([start, end]) => slotStretches(g, start, end));
    const parts: Array<[number, number]> = [[blocks.keys, rowBytes], [blocks.values, rowBytes]];
    if (g.int8) parts.push([blocks.keyScales, 4], [blocks.valueScales, 4]);
    const runs: Run[] = [];
    for (const [base, bytes] of parts) {
      for (let h = 0; h < g.kvHeads; h++) {
        for (const [slot, count] of stretches) runs.push({ address: base + (h * g.slots + slot) * bytes, bytes: count * bytes });
      }
    }
    return runs;
  }

  /** truncate(0): empty every layer; the memory stays reserved. */
  reset(): void {
    this.truncate(0);
  }

  /** Frees the cache's memory; any later use throws. Safe to call twice. */
  dispose(): void {
    if (!this.#base) return;
    unreleased?.unregister(this);
    this.#kernel.heap.release(this.#base);
    this.#base = 0;
  }

  [dispose](): void {
    this.dispose();
  }

  #live(): void {
    if (!this.#base) throw new Error('wasm-attention: this KVCache was disposed');
  }

  #layerIndex(layer: unknown): number {
    return integerAtLeast('layer', layer, 0, this.#settings.layers - 1);
  }
}
