// Random calls, valid and not, with hostile arguments (lying lengths, getters and Proxy traps that call
// back into the package, crafted pieces with recomputed checksums), against a few subject caches while
// bystander caches share the instance. What must hold whatever comes (API.md, "Errors", "Calls do not
// nest"): a failing call throws a TypeError or RangeError naming its argument, or an Error saying why
// (never a trap's text); and no call on one cache changes another: after every call a bystander's next
// output is bit-identical to its twin's, a cache built and fed identically that sees no hostile call.
// Bounded: fixed seeds, a fixed number of calls (a few seconds).

import { beforeAll, describe, expect, it } from 'vitest';
import { attention, attentionWeights, init, KVCache } from '../src/index.js';
import { Rng, expectBitIdentical, parseSave, rechecksum, withHeader } from './support/util.js';

const SHAPES = [
  { heads: 4, kvHeads: 2, headDim: 8, maxTokens: 48, layers: 2 },
  { heads: 2, kvHeads: 1, headDim: 5, maxTokens: 16, window: 12, sinks: 2, dtype: 'int8' as const },
  { heads: 3, headDim: 4, maxTokens: 40, softcap: 20 },
  { heads: 4, kvHeads: 2, headDim: 6, maxTokens: 30, window: 20, sinks: 1, dtype: 'bfloat16' as const },
  { heads: 2, headDim: 36, maxTokens: 24, dtype: 'int4' as const },
];
type Shape = (typeof SHAPES)[number];
const kvOf = (s: Shape) => ('kvHeads' in s && s.kvHeads ? s.kvHeads : s.heads);
const layersOf = (s: Shape) => ('layers' in s && s.layers ? s.layers : 1);

const TRAP_TEXT =
  /unreachable|out of bounds|remainder by zero|divide by zero|integer overflow|RuntimeError|null function/i;
/** what a plain Error may say: a refused piece, a nested call, a disposed cache, a cache that cannot continue */
const ERROR_TEXT = /KVCache\.load refused|do not nest|was disposed|cannot continue|at least one|must/;

const NO_OP = Symbol('no-op');

beforeAll(async () => {
  await init();
});

/** A Float32Array of n floats whose `length` claims `claimed` (or an honest one). */
function floats(rng: Rng, n: number, claimed = n): Float32Array {
  const array = rng.randn(n);
  if (claimed !== n) Object.defineProperty(array, 'length', { get: () => claimed });
  return array;
}

class Fuzz {
  readonly rng: Rng;
  /** caches the hostile calls target (replaced when disposed) */
  subjects: KVCache[];
  /** [cache, twin] pairs fed the same plain calls and nothing else */
  readonly bystanders: Array<[KVCache, KVCache, Shape]> = [];
  readonly reentries: Error[] = [];
  /** calls made from a getter or trap that were not refused (there must be none) */
  nested = 0;
  calls = 0;
  thrown = 0;

  constructor(seed: number) {
    this.rng = new Rng(seed);
    this.subjects = SHAPES.map((shape) => this.filled(shape, 10));
    for (const shape of SHAPES) {
      const tokens = this.rng.int(1, shape.maxTokens - 8);
      const history = this.stream(shape, tokens);
      const pair = [new KVCache(shape), new KVCache(shape)] as const;
      for (const cache of pair) for (let l = 0; l < layersOf(shape); l++) cache.append(l, history.k, history.v);
      this.bystanders.push([pair[0], pair[1], shape]);
    }
  }

  stream(shape: Shape, n: number): { q: Float32Array; k: Float32Array; v: Float32Array } {
    const r = new Rng(this.rng.int(0, 1e9));
    return {
      q: r.randn(n * shape.heads * shape.headDim),
      k: r.randn(n * kvOf(shape) * shape.headDim),
      v: r.randn(n * kvOf(shape) * shape.headDim),
    };
  }

  filled(shape: Shape, n: number): KVCache {
    const cache = new KVCache(shape);
    const s = this.stream(shape, n);
    for (let l = 0; l < layersOf(shape); l++) cache.append(l, s.k, s.v);
    return cache;
  }

  /** Something a getter or trap does mid-call: a call on any cache, or on the package. */
  intrusion(): () => unknown {
    const rng = this.rng;
    const [bystander, , shape] = rng.pick(this.bystanders);
    const target = rng.pick([...this.subjects, bystander]);
    const s = this.stream(shape, 1);
    return rng.pick([
      // dispose() of a disposed cache does nothing, wherever it is called from
      () => (target.byteLength === 0 ? NO_OP : target.dispose()),
      () => target.truncate(0),
      () => target.reset(),
      () => target.fork(),
      () => target.save(),
      () => bystander.attend(0, s.q, s.k, s.v),
      () => bystander.append(0, s.k, s.v),
      () => new KVCache(shape),
      () => attention(s.q, s.k, s.v, shape),
    ]);
  }

  /** `value`, or an object whose getter (or a Proxy of it whose traps) intrudes first. */
  hostile<T extends object>(value: T): T {
    const rng = this.rng;
    const intrude = this.intrusion();
    const run = () => {
      try {
        if (intrude() !== NO_OP) this.nested++;
      } catch (error) {
        this.reentries.push(error as Error);
      }
    };
    const kind = rng.int(0, 2);
    if (kind === 0) return value;
    if (kind === 1) {
      return new Proxy(value, {
        get(target, key) {
          run();
          return Reflect.get(target, key);
        },
        ownKeys(target) {
          run();
          return Reflect.ownKeys(target);
        },
      });
    }
    const copy = Array.isArray(value) ? [...value] : { ...value };
    const keys = Object.keys(copy);
    if (keys.length === 0) return copy as T;
    const key = rng.pick(keys);
    const inner = (copy as Record<string, unknown>)[key];
    Object.defineProperty(copy, key, {
      enumerable: true,
      get: () => {
        run();
        return inner;
      },
    });
    return copy as T;
  }

  /** A tensor for a call on `shape`: the right size, another size, a lying one, or not a Float32Array. */
  tensor(rowFloats: number, tokens: number): unknown {
    const rng = this.rng;
    const n = tokens * rowFloats;
    switch (rng.int(0, 9)) {
      case 0:
        return floats(rng, n + rng.int(1, rowFloats + 1));
      case 1:
        return floats(rng, n, n + rowFloats * rng.int(1, 4));
      case 2:
        return floats(rng, n + rowFloats * rng.int(1, 4), n);
      case 3:
        return rng.pick([new Float64Array(n), Array.from(rng.randn(n)), undefined, null, 'q', new Float32Array(0)]);
      case 4:
        return new Proxy(rng.randn(n), {});
      default:
        return rng.randn(n);
    }
  }

  /** A piece: a subject's save, possibly crafted (header fields, payload bytes, truncated), re-checksummed. */
  piece(subject: KVCache): Uint8Array {
    const rng = this.rng;
    const saved = subject.save();
    const crafted = rng.int(0, 3);
    if (crafted === 0) return saved;
    if (crafted === 1) {
      const bytes = new Uint8Array(saved);
      const payloadStart = parseSave(bytes).payloadStart;
      for (let i = rng.int(1, 6); i > 0; i--) bytes[rng.int(payloadStart, bytes.length - 4)] = rng.int(0, 256);
      return rechecksum(bytes);
    }
    if (crafted === 2) return rechecksum(saved.slice(0, rng.int(4, saved.length)));
    return withHeader(saved, (h) => {
      const layer = rng.pick(h.layers);
      const field = rng.pick(['from', 'to', 'held', 'reaches', 'continues', 'maxTokens', 'swap']);
      const value = rng.pick([0, 1, -1, 7, 2 ** 31 - 1, 2 ** 31, 0.5, 1e9]);
      if (field === 'swap' && h.layers.length > 1) h.layers.reverse();
      else if (field === 'maxTokens') h.options.maxTokens = value;
      else if (field === 'reaches' || field === 'continues') h[field] = value;
      else if (field !== 'swap') layer[field as 'from'] = value;
    });
  }

  /** One random call; its error (if any) must be one of the package's. */
  call(): void {
    const rng = this.rng;
    const index = rng.int(0, this.subjects.length - 1);
    let subject = this.subjects[index];
    if (subject.byteLength === 0) subject = this.subjects[index] = this.filled(SHAPES[index], rng.int(1, 8));
    const shape = SHAPES[index];
    const row = shape.heads * shape.headDim;
    const kvRow = kvOf(shape) * shape.headDim;
    const tokens = rng.int(1, 6);
    const layer = rng.pick([0, 0, 0, layersOf(shape) - 1, -1, 1.5, layersOf(shape), '0', Number.NaN]);
    const operations: Array<[names: string[], run: () => unknown]> = [
      [
        ['q', 'k', 'v', 'out', 'layer'],
        () =>
          subject.attend(
            layer as number,
            this.tensor(row, tokens) as Float32Array,
            this.tensor(kvRow, tokens) as Float32Array,
            this.tensor(kvRow, tokens) as Float32Array,
            rng.int(0, 1) ? undefined : (this.tensor(row, tokens) as Float32Array),
          ),
      ],
      [
        ['k', 'v', 'layer'],
        () =>
          subject.append(
            layer as number,
            this.tensor(kvRow, tokens) as Float32Array,
            this.tensor(kvRow, tokens) as Float32Array,
          ),
      ],
      [['n'], () => subject.truncate(rng.pick([0, 1, 5, subject.length, -1, 0.5, 1e12]))],
      [
        ['options.from', 'options.to', 'options'],
        () =>
          subject.save(
            this.hostile({
              from: rng.pick([0, 1, subject.length, -1, 2.5, undefined, Array(layersOf(shape)).fill(0), [0]]),
              to: rng.pick([undefined, subject.length, subject.length + 1, 0]),
            }) as { from?: number },
          ),
      ],
      [
        ['bytes', 'options.base'],
        () => {
          const list = rng.int(0, 1) ? this.piece(subject) : this.hostile([this.piece(subject), this.piece(subject)]);
          const base = rng.int(0, 2) === 0 ? subject : undefined;
          KVCache.load(list, base ? this.hostile({ base }) : undefined).dispose();
        },
      ],
      [[], () => subject.fork().dispose()],
      [[], () => (rng.int(0, 7) === 0 ? subject.dispose() : subject.reset())],
      [
        ['q', 'k', 'v', 'out', 'options'],
        () => {
          const keys = tokens + rng.int(0, 4);
          const options = this.hostile({
            heads: shape.heads,
            kvHeads: kvOf(shape),
            headDim: shape.headDim,
            scale: rng.pick([undefined, 0.5, 1e39, 1e-46, -1, Number.NaN]),
            softcap: rng.pick([undefined, 0, 30, 1e-46, Number.POSITIVE_INFINITY]),
            window: rng.pick([undefined, 2, 0]),
            causal: rng.pick([undefined, true, false, 1]),
          });
          const fn = rng.int(0, 1) ? attention : attentionWeights;
          fn(
            this.tensor(row, tokens) as Float32Array,
            this.tensor(kvRow, keys) as Float32Array,
            this.tensor(kvRow, keys) as Float32Array,
            options as Parameters<typeof attention>[3],
          );
        },
      ],
    ];
    const [names, run] = rng.pick(operations);
    this.calls++;
    try {
      run();
    } catch (error) {
      this.thrown++;
      const message = (error as Error).message;
      expect(message, 'never a trap').not.toMatch(TRAP_TEXT);
      expect(message).toMatch(/^wasm-attention: /);
      if (error instanceof TypeError || error instanceof RangeError) {
        const named = names.some((name) => new RegExp(`: ${name.replace(/[.[\]]/g, '\\$&')}[ .[]`).test(message));
        expect(named, `${message} names one of ${names.join(', ')}`).toBe(true);
      } else {
        expect(error).toBeInstanceOf(Error);
        expect(message).toMatch(ERROR_TEXT);
      }
    }
  }

  /** A random bystander's next output equals its twin's, bit for bit. */
  probe(): void {
    const [cache, twin, shape] = this.rng.pick(this.bystanders);
    const full = Array.from({ length: layersOf(shape) }, (_, l) => cache.lengthOf(l) >= shape.maxTokens);
    if (full.some(Boolean) && !('window' in shape)) {
      cache.truncate(1);
      twin.truncate(1);
    }
    const s = this.stream(shape, 1);
    const layer = this.rng.int(0, layersOf(shape) - 1);
    expectBitIdentical(cache.attend(layer, s.q, s.k, s.v), twin.attend(layer, s.q, s.k, s.v), 'bystander output');
  }

  dispose(): void {
    for (const [cache, twin] of this.bystanders) {
      expectBitIdentical(cache.save(), twin.save(), 'bystander saved bytes');
      cache.dispose();
      twin.dispose();
    }
    for (const subject of this.subjects) subject.dispose();
  }
}

describe('fuzz: hostile calls leave other caches as they were', () => {
  for (const seed of [1, 2, 3, 4, 5]) {
    it(`seed ${seed}: 1500 random calls`, () => {
      const fuzz = new Fuzz(seed);
      try {
        for (let i = 0; i < 1500; i++) {
          fuzz.call();
          fuzz.probe();
        }
      } finally {
        fuzz.dispose();
      }
      // the calls were not all refused, and not all accepted
      expect(fuzz.thrown).toBeGreaterThan(40);
      expect(fuzz.thrown).toBeLessThan(fuzz.calls - 40);
      // every call from a getter or trap was refused: as nested, or (on a disposed cache) as disposed
      expect(fuzz.nested).toBe(0);
      expect(fuzz.reentries.length).toBeGreaterThan(10);
      for (const error of fuzz.reentries) expect(error.message).toMatch(/do not nest|was disposed/);
    });
  }
});
