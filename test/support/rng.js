// The one seeded random-number generator of the project (tests, bench, demo and the runtime matrix).
// Plain ESM with no Node built-ins, so browsers, Deno, Bun and workerd import it unchanged.

// mulberry32 itself is the one copy in the examples (which must not import from test/, being copied
// by users); every seeded test, bench and the runtime matrix draw the same sequence from it.
import { seededRandom } from '../../examples/model/sample.mjs';

/**
 * mulberry32: a tiny, well-known 32-bit seeded generator.
 * @type {(seed: number) => () => number} floats in [0, 1)
 */
export const mulberry32 = seededRandom;

/** Uniform, integer and standard normal numbers from one mulberry32 stream. */
export class Rng {
  /** @param {number} seed */
  constructor(seed) {
    /** @private */
    this.u = mulberry32(seed);
    /** @private @type {number | undefined} the second number of the last Box-Muller pair */
    this.spare = undefined;
  }

  /** @returns {number} uniform in [0, 1) */
  next() {
    return this.u();
  }

  /** @param {number} lo @param {number} hi @returns {number} an integer in [lo, hi], both included */
  int(lo, hi) {
    return lo + Math.floor(this.u() * (hi - lo + 1));
  }

  /** @template T @param {readonly T[]} xs @returns {T} */
  pick(xs) {
    return xs[Math.floor(this.u() * xs.length)];
  }

  /** @returns {number} standard normal (Box-Muller) */
  normal() {
    if (this.spare !== undefined) {
      const s = this.spare;
      this.spare = undefined;
      return s;
    }
    let u1 = this.u();
    while (u1 <= 0) u1 = this.u();
    const u2 = this.u();
    const r = Math.sqrt(-2 * Math.log(u1));
    this.spare = r * Math.sin(2 * Math.PI * u2);
    return r * Math.cos(2 * Math.PI * u2);
  }

  /** @param {number} n @param {number} [sd] @returns {Float32Array<ArrayBuffer>} n normals of standard deviation sd */
  randn(n, sd = 1) {
    const a = new Float32Array(n);
    for (let i = 0; i < n; i++) a[i] = sd * this.normal();
    return a;
  }

  /** @param {number} n @returns {Float32Array<ArrayBuffer>} n numbers uniform in [-1, 1) */
  uniform(n) {
    const a = new Float32Array(n);
    for (let i = 0; i < n; i++) a[i] = 2 * this.u() - 1;
    return a;
  }
}

/** @param {number} seed @param {number} n @returns {Float32Array<ArrayBuffer>} n unit-variance normals */
export function randn(seed, n) {
  return new Rng(seed).randn(n);
}
