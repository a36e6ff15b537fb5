// Test helpers: a seeded RNG, unit-variance tensors, a tolerance check that names the worst element,
// strict bit-identity checks, error assertions, and which builds this runtime can run.

import { readFile } from 'node:fs/promises';
import { afterEach, describe, expect } from 'vitest';
import { KVCache, type KVCacheOptions } from '../src/index.js';

// ---------------------------------------------------------------------------------------------
// Random numbers

/** mulberry32: a tiny, well-known 32-bit seeded generator. Returns floats in [0, 1). */
export function mulberry32(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

export class Rng {
  private readonly u: () => number;
  private spare: number | undefined;
  constructor(seed: number) {
    this.u = mulberry32(seed);
  }
  /** uniform in [0, 1) */
  next(): number {
    return this.u();
  }
  /** integer in [lo, hi], both included */
  int(lo: number, hi: number): number {
    return lo + Math.floor(this.u() * (hi - lo + 1));
  }
  pick<T>(xs: readonly T[]): T {
    return xs[Math.floor(this.u() * xs.length)];
  }
  /** standard normal, Box-Muller */
  normal(): number {
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
  /** n unit-variance normals as a Float32Array */
  randn(n: number): Float32Array {
    const a = new Float32Array(n);
    for (let i = 0; i < n; i++) a[i] = this.normal();
    return a;
  }
}

export function randn(seed: number, n: number): Float32Array {
  return new Rng(seed).randn(n);
}

// ---------------------------------------------------------------------------------------------
// Shapes

export interface HeadLayout {
  heads: number;
  kvHeads: number;
}

/** MHA, GQA and MQA layouts. */
export const HEAD_LAYOUTS: readonly HeadLayout[] = [
  { heads: 1, kvHeads: 1 }, // single head
  { heads: 4, kvHeads: 4 }, // MHA
  { heads: 4, kvHeads: 2 }, // GQA, groups of 2
  { heads: 6, kvHeads: 2 }, // GQA, groups of 3 (odd group size)
  { heads: 8, kvHeads: 2 }, // GQA, groups of 4
  { heads: 4, kvHeads: 1 }, // MQA
  { heads: 3, kvHeads: 1 }, // MQA, odd head count
];

export const HEAD_DIMS: readonly number[] = [1, 3, 7, 64, 80, 128, 256];

export function layoutName(l: HeadLayout): string {
  if (l.kvHeads === l.heads) return `MHA ${l.heads}h`;
  if (l.kvHeads === 1) return `MQA ${l.heads}h/1kv`;
  return `GQA ${l.heads}h/${l.kvHeads}kv`;
}

/** Split n into `parts` uneven positive pieces (random but deterministic under rng). */
export function unevenChunks(rng: Rng, n: number, maxParts = 5): number[] {
  const chunks: number[] = [];
  let left = n;
  while (left > 0) {
    const c = chunks.length + 1 >= maxParts ? left : Math.min(left, rng.int(1, Math.max(1, Math.ceil(n / 2))));
    chunks.push(c);
    left -= c;
  }
  return chunks;
}

/** Rows [from, to) of a token-major tensor with `width` numbers per token. */
export function tokens(x: Float32Array, width: number, from: number, to: number): Float32Array {
  return x.slice(from * width, to * width);
}

export function concat(parts: ArrayLike<number>[]): Float32Array {
  let n = 0;
  for (const p of parts) n += p.length;
  const out = new Float32Array(n);
  let o = 0;
  for (const p of parts) {
    out.set(p, o);
    o += p.length;
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// Comparisons

export interface Tolerance {
  atol: number;
  rtol: number;
}

/**
 * The default tolerance for f32 kernels against the float64 reference, on unit-variance inputs.
 *
 * Why these numbers: the kernel reads f32 inputs (exact in the reference too) and accumulates in f32
 * (unit roundoff u = 2^-24 ≈ 6e-8). With the default scale the scores are ~N(0, 1) whatever headDim
 * is, so a dot product's rounding error is about u·Σ|q_i k_i|·scale ≈ u·0.8·sqrt(headDim) ≤ 1.1e-6
 * for headDim 512; the softmax turns a score error δ into a relative weight error δ; an exp polynomial
 * with a sane bound adds ~1e-7 relative; the weighted sum of S values of size ~1 adds ~u·sqrt(S)·3 in
 * practice (≈1e-5 worst case for S = 4096 with sequential summation). The output is a convex
 * combination of values of size ≤ ~4, so 2e-5 absolute + 1e-4 relative sits a few times above what
 * an honest f32 implementation reaches (reference.test.ts checks an emulated plain-f32 implementation
 * against these very tolerances) and far below what any real bug produces (a wrong mask, a wrong kv
 * head, a missing scale or a lost tail element moves outputs by ~1e-2 … 1).
 */
export const TOL: Tolerance = { atol: 2e-5, rtol: 1e-4 };

/**
 * The tolerance when scores are not ~N(0, 1): the score error grows with the score magnitude
 * (scale·sqrt(headDim) standard deviations for unit-variance q and k), and the output error with it.
 * Plain f32 at scale 1, headDim 256 (spread 16) measured 9e-6, so growing TOL by spread/4 keeps ~9×
 * headroom there. Never tighter than TOL.
 */
export function tolFor(scale: number | undefined, headDim: number): Tolerance {
  if (scale === undefined) return TOL;
  const spread = Math.abs(scale) * Math.sqrt(headDim);
  const f = Math.max(1, spread / 4);
  return { atol: TOL.atol * f, rtol: TOL.rtol * f };
}

function multiIndex(i: number, shape?: readonly number[]): string {
  if (!shape || shape.length === 0) return `[${i}]`;
  const idx: number[] = [];
  let r = i;
  for (let d = shape.length - 1; d >= 0; d--) {
    idx.unshift(r % shape[d]);
    r = Math.floor(r / shape[d]);
  }
  return `[${idx.join('][')}] (flat ${i})`;
}

/**
 * |actual - expected| <= atol + rtol·|expected| everywhere; NaN/Infinity in `actual` always fails.
 * On failure reports how many elements are off and the worst one (by excess over its tolerance).
 */
export function expectClose(
  actual: ArrayLike<number>,
  expected: ArrayLike<number>,
  tol: Tolerance,
  label: string,
  shape?: readonly number[],
): void {
  if (actual.length !== expected.length) {
    throw new Error(`${label}: length ${actual.length}, expected ${expected.length}`);
  }
  let bad = 0;
  let worst = -1;
  let worstRatio = 0;
  let maxAbs = 0;
  for (let i = 0; i < actual.length; i++) {
    const a = actual[i];
    const e = expected[i];
    const d = Math.abs(a - e);
    const lim = tol.atol + tol.rtol * Math.abs(e);
    const ratio = Number.isFinite(a) ? d / lim : Infinity;
    if (Number.isFinite(a) && d > maxAbs) maxAbs = d;
    if (!(ratio <= 1)) {
      bad++;
      if (!(ratio <= worstRatio)) {
        worstRatio = ratio;
        worst = i;
      }
    }
  }
  if (process.env.WA_TOL_REPORT) {
    // WA_TOL_REPORT=1 npx vitest run: how much of its tolerance each comparison used
    let used = 0;
    for (let i = 0; i < actual.length; i++) {
      used = Math.max(used, Math.abs(actual[i] - expected[i]) / (tol.atol + tol.rtol * Math.abs(expected[i])));
    }
    console.log(`[tol] ${used.toFixed(3)} of tolerance, max |diff| ${maxAbs.toExponential(2)}: ${label}`);
  }
  if (bad > 0) {
    const a = actual[worst];
    const e = expected[worst];
    throw new Error(
      `${label}: ${bad} of ${actual.length} elements outside atol=${tol.atol} rtol=${tol.rtol}; ` +
        `worst at ${multiIndex(worst, shape)}: got ${a}, expected ${e}, |diff| ${Math.abs(a - e).toExponential(3)} ` +
        `(${worstRatio.toFixed(1)}× its tolerance); max |diff| over finite elements ${maxAbs.toExponential(3)}`,
    );
  }
}

/** Largest |a - b| (for messages and for the reference's self-tests). */
export function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i] - b[i]));
  return m;
}

/** Elementwise Object.is: the same bits up to NaN payloads (and -0 !== +0). */
export function expectBitIdentical(
  actual: ArrayLike<number>,
  expected: ArrayLike<number>,
  label: string,
  shape?: readonly number[],
): void {
  if (actual.length !== expected.length) {
    throw new Error(`${label}: length ${actual.length}, expected ${expected.length}`);
  }
  let bad = 0;
  let first = -1;
  for (let i = 0; i < actual.length; i++) {
    if (!Object.is(actual[i], expected[i])) {
      bad++;
      if (first < 0) first = i;
    }
  }
  if (bad > 0) {
    throw new Error(
      `${label}: not bit-identical, ${bad} of ${actual.length} elements differ; first at ${multiIndex(first, shape)}: ` +
        `${actual[first]} vs ${expected[first]} (diff ${Math.abs(actual[first] - expected[first]).toExponential(3)})`,
    );
  }
}

/**
 * fn() must throw an instance of `type` (never a WebAssembly trap, never a plain Error for a
 * TypeError/RangeError) whose message matches every pattern. Returns the error.
 */
export function expectThrows(
  fn: () => unknown,
  type: ErrorConstructor | TypeErrorConstructor | RangeErrorConstructor,
  patterns: RegExp[] = [],
): Error {
  let caught: unknown;
  let threw = false;
  try {
    fn();
  } catch (e) {
    threw = true;
    caught = e;
  }
  if (!threw) throw new Error(`expected a ${type.name} matching ${patterns.join(', ')}, but nothing was thrown`);
  expect(caught instanceof WebAssembly.RuntimeError, `a WebAssembly trap reached the user: ${String(caught)}`).toBe(false);
  expect(caught, `expected a ${type.name}, got ${String(caught)}`).toBeInstanceOf(type);
  const msg = (caught as Error).message;
  for (const p of patterns) {
    expect(msg, `the ${type.name}'s message should match ${p}`).toMatch(p);
  }
  return caught as Error;
}

/** The same for async functions (sync throws are accepted too). */
export async function expectRejects(
  fn: () => unknown,
  type: ErrorConstructor | TypeErrorConstructor | RangeErrorConstructor,
  patterns: RegExp[] = [],
): Promise<Error> {
  let caught: unknown;
  let threw = false;
  try {
    await fn();
  } catch (e) {
    threw = true;
    caught = e;
  }
  if (!threw) throw new Error(`expected a rejection with ${type.name} matching ${patterns.join(', ')}, but it resolved`);
  expect(caught instanceof WebAssembly.RuntimeError, `a WebAssembly trap reached the user: ${String(caught)}`).toBe(false);
  expect(caught, `expected a ${type.name}, got ${String(caught)}`).toBeInstanceOf(type);
  const msg = (caught as Error).message;
  for (const p of patterns) {
    expect(msg, `the ${type.name}'s message should match ${p}`).toMatch(p);
  }
  return caught as Error;
}

/** A regex that matches the name as a word (so 'q' does not match inside 'sequence'). */
export function named(name: string): RegExp {
  const esc = name.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
  return new RegExp(`(^|[^A-Za-z0-9_])${esc}($|[^A-Za-z0-9_])`);
}

// ---------------------------------------------------------------------------------------------
// Builds

export const BUILDS = ['scalar', 'simd', 'relaxed-simd'] as const;
export type Build = (typeof BUILDS)[number];

export function wasmUrl(build: Build): URL {
  return new URL(`../wasm/attention-${build}.wasm`, import.meta.url);
}

export async function wasmBytes(build: Build): Promise<Uint8Array<ArrayBuffer>> {
  const file = await readFile(wasmUrl(build));
  const bytes = new Uint8Array(new ArrayBuffer(file.length));
  bytes.set(file);
  return bytes;
}

export interface BuildSupport {
  ok: boolean;
  reason: string;
}

/**
 * Which builds this runtime can run. scalar and simd must run everywhere we test (a missing file is a
 * failure, not a skip). relaxed-simd is skipped only when its bytes exist and this runtime's
 * WebAssembly.validate refuses them (Node 20 without --experimental-wasm-relaxed-simd).
 */
export async function buildSupport(): Promise<Record<Build, BuildSupport>> {
  const out = {} as Record<Build, BuildSupport>;
  for (const b of BUILDS) {
    if (b !== 'relaxed-simd') {
      out[b] = { ok: true, reason: '' };
      continue;
    }
    let bytes: Uint8Array<ArrayBuffer>;
    try {
      bytes = await wasmBytes(b);
    } catch {
      // No file: run the tests anyway so that they fail loudly instead of passing silently.
      out[b] = { ok: true, reason: '' };
      continue;
    }
    const ok = WebAssembly.validate(bytes);
    out[b] = {
      ok,
      reason: ok
        ? ''
        : `this runtime (Node ${process.versions.node}) does not validate wasm/attention-relaxed-simd.wasm; ` +
          `run under Node >= 22 or with node --experimental-wasm-relaxed-simd to cover it`,
    };
  }
  return out;
}

export const SUPPORT = await buildSupport();

/**
 * describe() once per build; a build this runtime cannot validate is visibly skipped with its reason
 * in the title. `body` registers tests and hooks for that build.
 */
export function forEachBuild(title: string, body: (build: Build) => void): void {
  for (const build of BUILDS) {
    const s = SUPPORT[build];
    const name = s.ok ? `${title} [${build}]` : `${title} [${build}] SKIPPED: ${s.reason}`;
    describe.skipIf(!s.ok)(name, () => body(build));
  }
}

/**
 * For the enclosing describe block: `make(options)` creates a KVCache that is disposed after each test
 * (disposing twice is harmless, so tests may dispose their own).
 */
export function cachesDisposedAfterEach(): (options: object) => KVCache {
  const live: KVCache[] = [];
  afterEach(() => {
    for (const cache of live.splice(0)) cache.dispose();
  });
  return (options) => {
    const cache = new KVCache(options as KVCacheOptions);
    live.push(cache);
    return cache;
  };
}
