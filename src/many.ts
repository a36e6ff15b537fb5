// KVCache.attendMany's arguments and staging: the items read once into plain values, and the layout of a
// batch in the instance's staging area (the item records of assembly/job.ts, each item's q, k, v and out,
// and the calling thread's scratch).

import { Job } from './abi.js';
import { typeError } from './errors.js';
import { refuseUnknownKeys } from './option-keys.js';
import { optionsObject } from './options.js';

/** One conversation of a batch: a cache and the step's tensors, as `attend` takes them. */
export interface AttendManyItem<Cache = unknown> {
  cache: Cache;
  q: Float32Array;
  k: Float32Array;
  v: Float32Array;
  out?: Float32Array;
}

/** attendMany's options: none yet (a bag, so later ones need no new signature). */
export type AttendManyOptions = Record<string, never>;

const ITEM_KEYS = ['cache', 'q', 'k', 'v', 'out'];

/**
 * The items of a batch, each read once (every key's getter or Proxy trap runs once, up front): an array's
 * length once, then each element once, then each element's keys once.
 */
export function readItems(items: unknown): Array<AttendManyItem> {
  if (!Array.isArray(items)) throw typeError('items', 'an Array of { cache, q, k, v, out? }', items);
  const count = items.length;
  const read: Array<AttendManyItem> = [];
  for (let i = 0; i < count; i++) {
    const value = items[i];
    // as optionsObject then refuseUnknownKeys, without the copy of the bag: each key enumerated and read once
    if (value === null || typeof value !== 'object' || Array.isArray(value)) {
      throw typeError(`items[${i}]`, 'an object', value);
    }
    // every key present (undefined when not given, as read from the bag), so items share one shape
    const item = {
      cache: undefined,
      q: undefined,
      k: undefined,
      v: undefined,
      out: undefined,
    } as unknown as AttendManyItem;
    let unknown: Record<string, unknown> | undefined;
    for (const key in value) {
      const x = (value as Record<string, unknown>)[key];
      if (key === 'cache') item.cache = x;
      else if (key === 'q') item.q = x as Float32Array;
      else if (key === 'k') item.k = x as Float32Array;
      else if (key === 'v') item.v = x as Float32Array;
      else if (key === 'out') item.out = x as Float32Array | undefined;
      else unknown ??= { [key]: x };
    }
    if (unknown) refuseUnknownKeys(unknown, `items[${i}]`, ITEM_KEYS);
    read.push(item);
  }
  return read;
}

const itemNames = { q: [] as string[], k: [] as string[], v: [] as string[] };
/** Item indices whose names are kept (beyond, made per call). */
const KEPT_NAMES = 1024;

/**
 * `items[i].q` (or k, v), made once per index and kept: a batch's checks name every item's tensors, and
 * making the strings anew cost a batch of decode steps more than its checks.
 */
export function itemName(i: number, key: 'q' | 'k' | 'v'): string {
  if (i >= KEPT_NAMES) return `items[${i}].${key}`;
  const names = itemNames[key];
  for (let j = names.length; j <= i; j++) names.push(`items[${j}].${key}`);
  return names[i];
}

/** Refuses every key of attendMany's options: it takes none yet. */
export function readManyOptions(options: unknown): void {
  if (options === undefined) return;
  refuseUnknownKeys(optionsObject('options', options), 'options', []);
}

const ALIGN = 64;
const align = (n: number) => Math.ceil(n / ALIGN) * ALIGN;

/** Bytes of the item records of `count` items. */
export function recordBytes(count: number): number {
  return align(count * Job.ITEM_WORDS * 4);
}

/** Bytes one item's chunk of `tokens` takes in a batch: q, k, v and out. */
export function itemBytes(tokens: number, heads: number, kvHeads: number, headDim: number): number {
  return 2 * align(tokens * heads * headDim * 4) + 2 * align(tokens * kvHeads * headDim * 4);
}

/** Where one item's q, k, v and out lie in a batch whose item area starts at `at`. */
export function itemPlace(
  at: number,
  tokens: number,
  heads: number,
  kvHeads: number,
  headDim: number,
): { q: number; k: number; v: number; out: number; end: number } {
  const query = align(tokens * heads * headDim * 4);
  const key = align(tokens * kvHeads * headDim * 4);
  return { q: at, k: at + query, v: at + query + key, out: at + query + 2 * key, end: at + 2 * query + 2 * key };
}
