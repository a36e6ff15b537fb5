// The one helper module of the tests: shapes and token streams, tolerance and bit-identity checks, error
// assertions, which builds this runtime can run, feeding a cache in chunks, an independent parser/rewriter
// of the saved-cache format (docs/FORMAT.md) and an explicit model of a window's ring slots. The seeded RNG
// and the float64 reference live beside it (rng.js, reference.js: plain JS shared with bench, demo and the
// runtime matrix).

import { spawnSync } from 'node:child_process';
import { readFile } from 'node:fs/promises';
import { crc32 as zlibCrc32 } from 'node:zlib';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { KVCache, type KVCacheOptions, init } from '../../src/index.js';
import { activeInstance } from '../../src/init.js';
import { useNodeWorkerScript } from '../../src/threads.js';
import { ReferenceCache, type ReferenceCacheOptions } from './reference.js';
import { Rng } from './rng.js';

export { Rng, mulberry32, randn } from './rng.js';

// The tests run src/ as TypeScript; Node workers cannot, so the pool's workers run the compiled script
// (npm run build:ts after changing src/attention-worker.ts).
useNodeWorkerScript(new URL('../../dist/attention-worker.js', import.meta.url));
export { maxAbsDiff } from './reference.js';

// ---------------------------------------------------------------------------------------------
// Child processes

/** Runs an ES module `script` in a fresh Node process (`flags` go before it): its output and exit status. */
export function runNodeScript(script: string, flags: string[] = [], timeout = 20_000) {
  return spawnSync(process.execPath, [...flags, '--input-type=module', '--eval', script], {
    timeout,
    encoding: 'utf8',
  });
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

/** The parts one after another, as a Float32Array (or the array type given). */
export function concat<A extends Float32Array | Float64Array = Float32Array>(
  parts: ArrayLike<number>[],
  type: new (n: number) => A = Float32Array as unknown as new (
    n: number,
  ) => A,
): A {
  let n = 0;
  for (const p of parts) n += p.length;
  const out = new type(n);
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

type Values = ArrayLike<number>;

function expectSameLength(actual: Values, expected: Values, label: string): void {
  if (actual.length !== expected.length)
    throw new Error(`${label}: length ${actual.length}, expected ${expected.length}`);
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
  expectSameLength(actual, expected, label);
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

/** Elementwise Object.is: the same bits up to NaN payloads (and -0 !== +0). */
export function expectBitIdentical(actual: Values, expected: Values, label: string, shape?: readonly number[]): void {
  expectSameLength(actual, expected, label);
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

type ErrorType = ErrorConstructor | TypeErrorConstructor | RangeErrorConstructor;

/** What was caught must be a `type` (never a WebAssembly trap) whose message matches every pattern. */
function expectCaught(caught: unknown, type: ErrorType, patterns: RegExp[]): Error {
  expect(caught instanceof WebAssembly.RuntimeError, `a WebAssembly trap reached the user: ${String(caught)}`).toBe(
    false,
  );
  expect(caught, `expected a ${type.name}, got ${String(caught)}`).toBeInstanceOf(type);
  const msg = (caught as Error).message;
  for (const p of patterns) {
    expect(msg, `the ${type.name}'s message should match ${p}`).toMatch(p);
  }
  return caught as Error;
}

/**
 * fn() must throw an instance of `type` (never a WebAssembly trap, never a plain Error for a
 * TypeError/RangeError) whose message matches every pattern. Returns the error.
 */
export function expectThrows(fn: () => unknown, type: ErrorType, patterns: RegExp[] = []): Error {
  try {
    fn();
  } catch (e) {
    return expectCaught(e, type, patterns);
  }
  throw new Error(`expected a ${type.name} matching ${patterns.join(', ')}, but nothing was thrown`);
}

/** The same for async functions (sync throws are accepted too). */
export async function expectRejects(fn: () => unknown, type: ErrorType, patterns: RegExp[] = []): Promise<Error> {
  try {
    await fn();
  } catch (e) {
    return expectCaught(e, type, patterns);
  }
  throw new Error(`expected a rejection with ${type.name} matching ${patterns.join(', ')}, but it resolved`);
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
  return new URL(`../../wasm/attention-${build}.wasm`, import.meta.url);
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
 * forEachBuild with that build active in every test (init({ build, threads }) before each, so a test that
 * changes the build or the threads leaves the next one as it expects) and `make(options)`: a KVCache
 * disposed after each test. `threads` defaults to init's own default.
 */
export function withEachBuild(
  title: string,
  body: (build: Build, make: (options: object) => KVCache) => void,
  threads?: number,
): void {
  forEachBuild(title, (build) => {
    beforeEach(async () => {
      await init(threads === undefined ? { build } : { build, threads });
    });
    body(build, cachesDisposedAfterEach());
  });
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

// ---------------------------------------------------------------------------------------------
// Token streams and feeding a cache

export type Cfg = ReferenceCacheOptions & { dtype?: 'float32' | 'int8' | 'bfloat16' | 'int4' };

/** Whether a cache of `cfg` stores K/V in fewer bits than float32 (so it differs from the float64 reference by their rounding). */
export const quantized = (cfg: Cfg): boolean => cfg.dtype !== undefined && cfg.dtype !== 'float32';

/**
 * The error a cache of `cfg` keeps to against the float64 reference on unit-variance data, per output. float32:
 * tolFor. The others are dominated by their K/V rounding (measured and argued in int8.test.ts and
 * dtypes.test.ts): int8 max 0.02–0.05; bfloat16 (relative 2^-9 per stored value) below 0.01; int4 (a step of
 * (max − min) / 15 ≈ 0.33 per group of 32 unit-variance values: half a step, 0.17, on a value a query sees
 * alone, plus what its keys' rounding moves the weights) below 0.4.
 */
export const DTYPE_BUDGET = { int8: 0.05, bfloat16: 0.01, int4: 0.4 } as const;
export function tolForCfg(cfg: Cfg): Tolerance {
  return quantized(cfg)
    ? { atol: DTYPE_BUDGET[cfg.dtype as keyof typeof DTYPE_BUDGET], rtol: 0 }
    : tolFor(cfg.scale, cfg.headDim);
}

export interface Stream {
  q: Float32Array;
  k: Float32Array;
  v: Float32Array;
  n: number;
}

export const kvHeadsOf = (cfg: Cfg) => cfg.kvHeads ?? cfg.heads;
export const qWidth = (cfg: Cfg) => cfg.heads * cfg.headDim;
export const kWidth = (cfg: Cfg) => kvHeadsOf(cfg) * cfg.headDim;

/** n tokens of unit-variance q, k, v. */
export function stream(cfg: Cfg, n: number, seed: number): Stream {
  const rng = new Rng(seed);
  return { q: rng.randn(n * qWidth(cfg)), k: rng.randn(n * kWidth(cfg)), v: rng.randn(n * kWidth(cfg)), n };
}

/** Tokens [from, to) of a stream. */
export function slice(cfg: Cfg, s: Stream, from: number, to: number): Stream {
  return {
    q: tokens(s.q, qWidth(cfg), from, to),
    k: tokens(s.k, kWidth(cfg), from, to),
    v: tokens(s.v, kWidth(cfg), from, to),
    n: to - from,
  };
}

export function join(parts: Stream[]): Stream {
  return {
    q: concat(parts.map((p) => p.q)),
    k: concat(parts.map((p) => p.k)),
    v: concat(parts.map((p) => p.v)),
    n: parts.reduce((a, p) => a + p.n, 0),
  };
}

export const ones = (n: number): number[] => Array.from({ length: n }, () => 1);

/** Calls `attendPart` on consecutive parts of the stream of the given sizes (which must cover it). */
function inChunks<T>(cfg: Cfg, s: Stream, chunks: number[], attendPart: (part: Stream) => T): T[] {
  const outs: T[] = [];
  let at = 0;
  for (const c of chunks) {
    outs.push(attendPart(slice(cfg, s, at, at + c)));
    at += c;
  }
  expect(at, 'chunks must cover the stream').toBe(s.n);
  return outs;
}

/** Feeds the stream to `layer` in chunks of the given sizes (default: one call); the concatenated outputs. */
export function feed(cache: KVCache, cfg: Cfg, s: Stream, chunks: number[] = [s.n], layer = 0): Float32Array {
  return concat(inChunks(cfg, s, chunks, (p) => cache.attend(layer, p.q, p.k, p.v)));
}

/** The same for the float64 reference. */
export function feedRef(ref: ReferenceCache, cfg: Cfg, s: Stream, chunks: number[] = [s.n], layer = 0): Float64Array {
  return concat(
    inChunks(cfg, s, chunks, (p) => ref.attend(layer, p.q, p.k, p.v)),
    Float64Array,
  );
}

/**
 * One test per scenario for an option that changes each score or each softmax (sink logits, ALiBi): 260
 * tokens, fed in uneven chunks and with 12 decode steps, match the float64 reference and give the same bits
 * every way. Float32 within `tolFor`: the option adds exact or one-rounding float32 arithmetic on top of the
 * scores that bound covers. int8, bfloat16, int4 within DTYPE_BUDGET: their K and V rounding dominates.
 */
export function itMatchesReferenceAndChunkings(
  make: (options: object) => KVCache,
  scenarios: readonly { name: string; cfg: Cfg }[],
  seed: number,
): void {
  for (const [i, { name, cfg }] of scenarios.entries()) {
    it(`${name}: matches the float64 reference; prefill == chunked == decode`, () => {
      const s = stream(cfg, 260, seed + i);
      const tol = tolForCfg(cfg);
      expectReferenceAndChunkings(make, cfg, s, [130, 1, 1, 60, ...ones(8), 60], 12, tol, name);
    }, 30_000);
  }
}

/**
 * The stream fed in `chunks` matches the float64 reference within `tol`, and feeding it in one call, in
 * those chunks, or with its last `decodeSteps` tokens one at a time gives the same bits.
 */
export function expectReferenceAndChunkings(
  make: (options: object) => KVCache,
  cfg: Cfg,
  s: Stream,
  chunks: number[],
  decodeSteps: number,
  tol: Tolerance,
  label: string,
): void {
  const chunked = feed(make(cfg), cfg, s, chunks);
  expectClose(chunked, feedRef(new ReferenceCache(cfg), cfg, s, chunks), tol, label, [s.n, cfg.heads, cfg.headDim]);
  expectBitIdentical(feed(make(cfg), cfg, s), chunked, 'prefill == chunked');
  expectBitIdentical(
    feed(make(cfg), cfg, s, [s.n - decodeSteps, ...ones(decodeSteps)]),
    chunked,
    'decode steps == chunked',
  );
}

/** Two configurations that must compute the same thing give the same bits on the stream. */
export function expectSameBits(make: (options: object) => KVCache, a: Cfg, b: Cfg, s: Stream, label: string): void {
  expectBitIdentical(feed(make(a), a, s), feed(make(b), b, s), label);
}

/**
 * fork == fresh and save/load continues: a cache fed the stream's first `cut` tokens, its fork and its
 * saved-and-loaded copy each take the rest one token at a time and give the bits of the whole stream fed
 * at once. Caches come from `make` (cachesDisposedAfterEach); the fork and the copy are disposed here.
 */
export function expectForkAndLoadContinue(make: (options: object) => KVCache, cfg: Cfg, s: Stream, cut: number): void {
  const whole = feed(make(cfg), cfg, s);
  const parent = make(cfg);
  feed(parent, cfg, slice(cfg, s, 0, cut));
  const fork = parent.fork();
  const loaded = KVCache.load(parent.save());
  const rest = slice(cfg, s, cut, s.n);
  for (const [label, c] of [
    ['fork', fork],
    ['loaded', loaded],
    ['parent', parent],
  ] as const) {
    expectBitIdentical(feed(c, cfg, rest, ones(rest.n)), whole.subarray(cut * qWidth(cfg)), `${label} continues`);
  }
  fork.dispose();
  loaded.dispose();
}

export function cfgName(c: Cfg): string {
  const parts = [`${c.heads}h/${kvHeadsOf(c)}kv`, `d${c.headDim}`, `max ${c.maxTokens}`];
  if (c.layers) parts.push(`${c.layers} layers`);
  if (c.window !== undefined) parts.push(`window ${c.window}`);
  if (c.sinks) parts.push(`sinks ${c.sinks}`);
  if (c.softcap !== undefined) parts.push(`softcap ${c.softcap}`);
  if (c.scale !== undefined) parts.push(`scale ${c.scale}`);
  if (c.rope) parts.push(`rope ${JSON.stringify(c.rope)}`);
  if (c.dtype) parts.push(c.dtype);
  return parts.join(', ');
}

// ---------------------------------------------------------------------------------------------
// Instance internals a unit test may look at

/** The active instance's allocator: memoryBytes (the wasm memory) and allocatedBytes (live blocks). */
export function heap() {
  return activeInstance().heap;
}

/**
 * Bytes the active instance's caches hold: the heap's live blocks, less the pool's freed pages waiting for
 * reuse, the staging area every cache shares and the thread pool's job and scratch (none belongs to a cache).
 */
export function heldBytes(instance = activeInstance()): number {
  return instance.heap.allocatedBytes - instance.overheadBytes;
}

/** Makes the engine refuse to grow this kernel's memory (the failure a page allocation meets at 4 GiB). */
export function refuseGrowth(): () => void {
  const memory = activeInstance().abi.memory;
  const grow = Object.getOwnPropertyDescriptor(memory, 'grow');
  Object.defineProperty(memory, 'grow', {
    configurable: true,
    value: () => {
      throw new RangeError('WebAssembly.Memory.grow(): Maximum memory size exceeded');
    },
  });
  return () => {
    if (grow) Object.defineProperty(memory, 'grow', grow);
    else delete (memory as { grow?: unknown }).grow;
  };
}

/** Takes every free byte the heap has without growing (so the next page needs growth); returns the blocks. */
export function exhaustHeap(): number[] {
  const blocks: number[] = [];
  for (let size = 1 << 20; size >= 64; size >>= 1) {
    for (;;) {
      try {
        blocks.push(heap().allocate(size));
      } catch {
        break;
      }
    }
  }
  return blocks;
}

/** Bytes one page of a cache of `cfg` takes: 64 positions of one layer's K or V for one kv head, and 64 for its refcount. */
export function pageBytesFor(cfg: Cfg): number {
  const d = cfg.headDim;
  const row: Record<string, number> = { int8: d + 4, bfloat16: 2 * d, int4: Math.ceil(d / 2) + 4 * Math.ceil(d / 32) };
  return 64 * (row[cfg.dtype ?? 'float32'] ?? 4 * d) + 64;
}

/** Appends `n` tokens of one reused random chunk to `layer` (fills big caches fast). */
export function fill(cache: KVCache, cfg: Cfg, n: number, layer = 0, chunk = 1024): void {
  const width = kWidth(cfg);
  let rows = fillRows.get(width);
  if (!rows) {
    rows = new Rng(4242).randn(chunk * width);
    fillRows.set(width, rows);
  }
  for (let done = 0; done < n; done += chunk) {
    const part = rows.subarray(0, Math.min(chunk, n - done) * width);
    cache.append(layer, part, part);
  }
}
const fillRows = new Map<number, Float32Array>();

export const DISPOSE: symbol = (Symbol as unknown as { dispose?: symbol }).dispose ?? Symbol.for('Symbol.dispose');

// ---------------------------------------------------------------------------------------------
// The saved-cache format, parsed independently of src/persist.ts

export const crc32 = (bytes: Uint8Array): number => zlibCrc32(bytes) >>> 0;

export interface Parsed {
  version: number;
  headerLength: number;
  header: {
    options: Record<string, unknown>;
    build: string;
    layers: { from: number; to: number; held: number }[];
    continues: number;
    reaches: number;
  };
  payloadStart: number;
  payload: Uint8Array;
  crc: number;
}

export function parseSave(bytes: Uint8Array): Parsed {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  expect(new TextDecoder().decode(bytes.subarray(0, 8))).toBe('wattn-kv');
  const version = view.getUint32(8, true);
  const headerLength = view.getUint32(12, true);
  const header = JSON.parse(new TextDecoder().decode(bytes.subarray(16, 16 + headerLength)));
  const payloadStart = (16 + headerLength + 3) & ~3;
  return {
    version,
    headerLength,
    header,
    payloadStart,
    payload: bytes.subarray(payloadStart, bytes.length - 4),
    crc: view.getUint32(bytes.length - 4, true),
  };
}

/** Writes a correct CRC-32 over everything before the last 4 bytes (in place); returns the bytes. */
export function rechecksum(bytes: Uint8Array): Uint8Array {
  new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength).setUint32(
    bytes.length - 4,
    crc32(bytes.subarray(0, bytes.length - 4)),
    true,
  );
  return bytes;
}

/**
 * A well-formed envelope (magic, version, header length, padding, correct CRC) around `header` (an
 * object, serialized as JSON, a raw string, or raw bytes) and `payload`.
 */
export function envelope(header: unknown, payload: Uint8Array, version = 1): Uint8Array {
  const json =
    header instanceof Uint8Array
      ? header
      : new TextEncoder().encode(typeof header === 'string' ? header : JSON.stringify(header));
  const payloadStart = (16 + json.length + 3) & ~3;
  const bytes = new Uint8Array(payloadStart + payload.length + 4);
  bytes.set(new TextEncoder().encode('wattn-kv'), 0);
  const view = new DataView(bytes.buffer);
  view.setUint32(8, version, true);
  view.setUint32(12, json.length, true);
  bytes.set(json, 16);
  bytes.set(payload, payloadStart);
  return rechecksum(bytes);
}

/** The same saved cache with its header changed by `edit` (a deep copy is passed), re-checksummed. */
export function withHeader(bytes: Uint8Array, edit: (h: Parsed['header']) => unknown): Uint8Array {
  const p = parseSave(bytes);
  const h = JSON.parse(JSON.stringify(p.header));
  const edited = edit(h);
  return envelope(edited === undefined ? h : edited, p.payload, p.version);
}

/** A header edit as data: the fields to set, nested as in the header (`{ layers: { 1: { to: 5 } } }`); undefined deletes. */
export interface HeaderFields {
  [field: string]: unknown;
}

/** The same saved cache with the header's fields set (or deleted) as `fields` says, re-checksummed. */
export function withHeaderFields(bytes: Uint8Array, fields: HeaderFields): Uint8Array {
  return withHeader(bytes, (h) => setFields(h as unknown as HeaderFields, fields));
}

function setFields(target: HeaderFields, fields: HeaderFields): void {
  for (const [name, value] of Object.entries(fields)) {
    const inner = target[name];
    if (value === undefined) delete target[name];
    else if (isFields(value) && isFields(inner)) setFields(inner, value);
    else target[name] = value;
  }
}

const isFields = (value: unknown): value is HeaderFields => typeof value === 'object' && value !== null;

// ---------------------------------------------------------------------------------------------
// An explicit model of the slots of one windowed layer (API.md: sinks never evicted, a ring of maxTokens)

export class RingModel {
  /** the position each slot holds, -1 when it holds nothing usable */
  readonly slots: number[];
  length = 0;
  constructor(
    readonly maxTokens: number,
    readonly window: number,
    readonly sinks: number,
  ) {
    this.slots = new Array<number>(sinks + maxTokens).fill(-1);
  }
  slotOf(p: number): number {
    return p < this.sinks ? p : this.sinks + ((p - this.sinks) % this.maxTokens);
  }
  append(count: number): void {
    for (let i = 0; i < count; i++) this.slots[this.slotOf(this.length + i)] = this.length + i;
    this.length += count;
  }
  holds(p: number): boolean {
    return this.slots[this.slotOf(p)] === p;
  }
  /** May the layer be truncated to n: does the next query (position n) find every key it may see? */
  canTruncate(n: number): boolean {
    if (n >= this.length) return true;
    for (let j = 0; j < n; j++) {
      const visible = j < this.sinks || j > n - this.window;
      if (visible && !this.holds(j)) return false;
    }
    return true;
  }
  truncate(n: number): void {
    if (n >= this.length) return;
    for (let i = 0; i < this.slots.length; i++) if (this.slots[i] >= n) this.slots[i] = -1;
    this.length = n;
  }
}
