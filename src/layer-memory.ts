// A cache's memory as its layer groups hold it (per-layer.ts): one CacheMemory per group of layers with
// equal settings, each with its own descriptor, rope table and page tables. A cache without `perLayer` is
// one group, exactly the memory it always was. Calls name the cache's layer; this maps it to its group and
// its index there.

import { CacheMemory } from './cache-memory.js';
import { type LayerGeometry, cacheChunkTokens } from './geometry.js';
import type { Instance } from './instance.js';
import type { LayerGroup } from './per-layer.js';
import type { Run } from './persist.js';

export class LayeredMemory {
  readonly instance: Instance;
  readonly #groups: CacheMemory[];
  /** per layer: its group and its index in it */
  readonly #group: number[];
  readonly #local: number[];

  private constructor(instance: Instance, groups: CacheMemory[], group: number[], local: number[]) {
    this.instance = instance;
    this.#groups = groups;
    this.#group = group;
    this.#local = local;
  }

  /** The memories of `groups` (a RangeError from any of them gives back those already made). */
  static create(instance: Instance, groups: LayerGroup[], layers: number): LayeredMemory {
    const group = new Array<number>(layers).fill(0);
    const local = new Array<number>(layers).fill(0);
    groups.forEach((g, i) => {
      g.layers.forEach((l, j) => {
        group[l] = i;
        local[l] = j;
      });
    });
    const made: CacheMemory[] = [];
    try {
      for (const g of groups) {
        const chunk = cacheChunkTokens(g.geometry, g.scoring.window);
        made.push(new CacheMemory(instance, g.geometry, g.layers.length, g.scoring, g.rope, chunk));
      }
    } catch (error) {
      for (const m of made) m.dispose();
      throw error;
    }
    return new LayeredMemory(instance, made, group, local);
  }

  #of(layer: number): CacheMemory {
    return this.#groups[this.#group[layer]];
  }

  /** The memory of `layer`'s group and the layer's index in it (what a batch's item record names). */
  groupOf(layer: number): { memory: CacheMemory; local: number } {
    return { memory: this.#of(layer), local: this.#local[layer] };
  }

  /** The memory of `layer`'s group (groupOf without the object: a batch asks this per item). */
  memoryOf(layer: number): CacheMemory {
    return this.#of(layer);
  }

  /** `layer`'s index in its group's memory. */
  localOf(layer: number): number {
    return this.#local[layer];
  }

  /** Where `layer`'s positions live. */
  geometryOf(layer: number): LayerGeometry {
    return this.#of(layer).geometry;
  }

  /** Tokens one kernel call on `layer` takes. */
  chunkTokensOf(layer: number): number {
    return this.#of(layer).chunkTokens;
  }

  get byteLength(): number {
    let bytes = 0;
    for (const g of this.#groups) bytes += g.byteLength;
    return bytes;
  }

  get disposed(): boolean {
    return this.#groups[0].disposed;
  }

  reserve(what: string, layer: number, firstPosition: number, tokens: number): void {
    this.#of(layer).reserve(what, this.#local[layer], firstPosition, tokens);
  }

  reserveSlots(what: string, layer: number, slots: number): void {
    this.#of(layer).reserveSlots(what, this.#local[layer], slots);
  }

  release(layer: number, keepSlots: number): void {
    this.#of(layer).release(this.#local[layer], keepSlots);
  }

  runs(layer: number, positions: Array<[number, number]>): Run[] {
    return this.#of(layer).runs(this.#local[layer], positions);
  }

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
    this.#of(layer).step(this.#local[layer], k, v, from, count, firstPosition, q, out);
  }

  /** attendTree: the tree block for `layer`'s calls until clearTree (cache-memory.ts). */
  setTree(what: string, layer: number, block: Int32Array, base: number): void {
    this.#of(layer).setTree(what, block, base);
  }

  clearTree(layer: number): void {
    this.#of(layer).clearTree();
  }

  /** accept: one position's K/V row (and scale) copied to another slot of `layer`. */
  copyRow(layer: number, from: number, to: number): void {
    this.#of(layer).copyRow(this.#local[layer], from, to);
  }

  /** Every group forked (copy on write); a RangeError from one gives back the forks already made. */
  fork(groups: LayerGroup[]): LayeredMemory {
    const made: CacheMemory[] = [];
    try {
      this.#groups.forEach((g, i) => {
        made.push(g.fork(groups[i].scoring, groups[i].rope));
      });
    } catch (error) {
      for (const m of made) m.dispose();
      throw error;
    }
    return new LayeredMemory(this.instance, made, this.#group, this.#local);
  }

  dispose(): void {
    for (const g of this.#groups) g.dispose();
  }
}
