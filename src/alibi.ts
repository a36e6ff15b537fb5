// ALiBi (Press et al., "Train Short, Test Long"; BLOOM): each query head adds slope · (j − i) to its score
// of the key at position j from the query at position i, instead of rotating q and k.

import { rangeError, typeError } from './errors.js';

/**
 * The standard slopes for `heads` query heads: for a power of two n, head h (from 0) takes 2^(−8(h+1)/n).
 * Otherwise the slopes of the largest power of two n below the head count come first, then every other
 * slope of 2n (its odd-numbered ones: 2^(−8(2k+1)/2n)) for the remaining heads, as BLOOM's were trained.
 */
export function standardAlibiSlopes(heads: number): number[] {
  const n = 2 ** Math.floor(Math.log2(heads));
  const slopes: number[] = [];
  for (let h = 1; h <= n; h++) slopes.push(2 ** ((-8 * h) / n));
  for (let k = 0; slopes.length < heads; k++) slopes.push(2 ** ((-8 * (2 * k + 1)) / (2 * n)));
  return slopes;
}

/**
 * `alibi`: `true` (the standard slopes) or one finite slope per query head (an Array or a typed array).
 * `rope`: whether the same cache rotates positions, which ALiBi replaces.
 */
export function alibiSlopesOf(value: unknown, name: string, heads: number, rope: boolean): number[] {
  let slopes: number[];
  if (value === true) slopes = standardAlibiSlopes(heads);
  else {
    const isList = Array.isArray(value) || (ArrayBuffer.isView(value) && !(value instanceof DataView));
    if (!isList) throw typeError(name, `true or an array of ${heads} slopes (one per query head)`, value);
    const list = Array.from(value as ArrayLike<unknown>);
    if (list.length !== heads) throw rangeError(name, `one slope per query head (${heads})`, value);
    slopes = list.map((x, i) => {
      if (typeof x !== 'number') throw typeError(`${name}[${i}]`, 'a finite number', x);
      if (!Number.isFinite(x)) throw rangeError(`${name}[${i}]`, 'a finite number', x);
      return x;
    });
  }
  if (rope) {
    throw rangeError(
      name,
      'left out when options.rope is set (ALiBi biases positions instead of rotating them)',
      value,
    );
  }
  return slopes;
}
