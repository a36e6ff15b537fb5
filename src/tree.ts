// Trees of drafts (KVCache.attendTree, accept): the checks of `parents` and `path`, and the tree block the
// kernel reads (assembly/descriptor.ts). Draft i is stored at position base + i and stands at base + depth − 1,
// where it would be if accepted: its RoPE angle, ALiBi distance and window are taken there.

import { describe, rangeError, typeError } from './errors.js';

/** The drafts a cache holds between attendTree and accept. */
export interface PendingDrafts {
  readonly parents: Int32Array;
  /** depth of each draft: 1 for a root (parent −1) */
  readonly depths: Int32Array;
  /** per layer: its length when it attended the drafts (where draft 0 is stored), −1 until it has */
  readonly bases: number[];
}

/** A list of integers: an Array or an Int32Array, else a TypeError naming `name`. */
function integerList(name: string, value: unknown): ArrayLike<unknown> {
  if (Array.isArray(value) || value instanceof Int32Array) return value as ArrayLike<unknown>;
  throw typeError(name, 'an Array or Int32Array of integers', value);
}

/**
 * `parents` of `tokens` drafts as an Int32Array: parents[i] is −1 (the draft follows the cache's last token)
 * or the index of an earlier draft. A TypeError or RangeError naming the entry otherwise.
 */
export function draftParents(value: unknown, tokens: number): Int32Array {
  const list = integerList('parents', value);
  if (list.length !== tokens) {
    throw rangeError('parents', `one parent per draft token (length ${tokens}, as q holds)`, value);
  }
  const parents = new Int32Array(tokens);
  for (let i = 0; i < tokens; i++) {
    const p = list[i];
    if (typeof p !== 'number') throw typeError(`parents[${i}]`, 'an integer', p);
    if (!Number.isInteger(p) || p < -1 || p >= i) {
      throw rangeError(`parents[${i}]`, `-1 or the index of an earlier draft (an integer from -1 to ${i - 1})`, p);
    }
    parents[i] = p;
  }
  return parents;
}

/** Depth of each draft (1 for a root): parents come before children, so one pass. */
export function depthsOf(parents: Int32Array): Int32Array {
  const depths = new Int32Array(parents.length);
  for (let i = 0; i < parents.length; i++) depths[i] = parents[i] < 0 ? 1 : depths[parents[i]] + 1;
  return depths;
}

export function sameParents(a: Int32Array, b: Int32Array): boolean {
  return a.length === b.length && a.every((p, i) => p === b[i]);
}

/** The parents as a short readable list for an error message. */
export function describeParents(parents: Int32Array): string {
  const shown = Array.from(parents.subarray(0, 16)).join(', ');
  return `[${shown}${parents.length > 16 ? ', …' : ''}]`;
}

/**
 * The kernel's tree block for drafts stored from `base` (assembly/descriptor.ts): [T], each draft's
 * position, then [T][⌈T/32⌉] bits: draft i sees draft j when j is i or an ancestor of i and, with a window,
 * j's position is a sink or within the window of i's.
 */
export function treeBlock(pending: PendingDrafts, base: number, window: number, sinks: number): Int32Array {
  const { parents, depths } = pending;
  const count = parents.length;
  const words = (count + 31) >>> 5;
  const block = new Int32Array(1 + count + count * words);
  block[0] = count;
  const position = (i: number) => base + depths[i] - 1;
  for (let i = 0; i < count; i++) block[1 + i] = position(i);
  const bits = 1 + count;
  for (let i = 0; i < count; i++) {
    for (let j = i; j >= 0; j = parents[j]) {
      const p = position(j);
      if (window === 0 || p < sinks || p > position(i) - window) block[bits + i * words + (j >>> 5)] |= 1 << (j & 31);
    }
  }
  return block;
}

/**
 * `path` as draft indices: a chain from a root (path[0]'s parent is −1, each next one a child of the one
 * before), possibly empty. A TypeError or RangeError naming the entry otherwise.
 */
export function acceptedPath(value: unknown, parents: Int32Array): number[] {
  const list = integerList('path', value);
  const path: number[] = [];
  for (let k = 0; k < list.length; k++) {
    const d = list[k];
    const name = `path[${k}]`;
    if (typeof d !== 'number') throw typeError(name, 'an integer', d);
    if (!Number.isInteger(d) || d < 0 || d >= parents.length) {
      throw rangeError(name, `the index of a pending draft (an integer from 0 to ${parents.length - 1})`, d);
    }
    const expected = k === 0 ? -1 : path[k - 1];
    if (parents[d] !== expected) {
      throw new RangeError(
        `wasm-attention: path must be a chain of drafts from a root: ${name} must be ` +
          (k === 0 ? 'a root (parent -1)' : `a child of draft ${expected}`) +
          `, got ${describe(d)} (parent ${parents[d]})`,
      );
    }
    path.push(d);
  }
  return path;
}
