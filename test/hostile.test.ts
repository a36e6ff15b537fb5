// Hostile arguments (API.md, "Errors" and "Calls do not nest"): a caller's code that runs during a call
// (a getter, an overridden method, a Proxy trap) cannot change what the call computes or touch another
// cache; a typed array is what its buffer range holds, whatever its `length` property says; a call made
// while another call on the same instance runs is refused with an Error naming the re-entrancy.

import { beforeAll, describe, expect, it } from 'vitest';
import { attention, attentionWeights, init, KVCache } from '../src/index.js';
import { Rng, expectBitIdentical, expectThrows, named, parseSave, rechecksum } from './support/util.js';

const H = 4;
const KV = 2;
const D = 8;
const opts = { heads: H, kvHeads: KV, headDim: D, maxTokens: 70 };
const rng = new Rng(19);
const q1 = rng.randn(H * D);
const k1 = rng.randn(KV * D);
const v1 = rng.randn(KV * D);
const history = { k: rng.randn(40 * KV * D), v: rng.randn(40 * KV * D) };
const REENTRY = /while .* still running.*do not nest/;

beforeAll(async () => {
  await init();
});

/** A cache holding the 40-token history. */
function filled(options: object = opts): KVCache {
  const cache = new KVCache(options as typeof opts);
  cache.append(0, history.k, history.v);
  return cache;
}

/** Runs `body` with a fresh filled cache and its twin that sees only plain calls; disposes both. */
function withTwin(body: (cache: KVCache, twin: KVCache) => void): void {
  const cache = filled();
  const twin = filled();
  try {
    body(cache, twin);
  } finally {
    cache.dispose();
    twin.dispose();
  }
}

/** A Float32Array that reports `claimed` as its length (a subclass's getter). */
function lyingLength(values: Float32Array, claimed: number): Float32Array {
  const lying = new Float32Array(values);
  Object.defineProperty(lying, 'length', { get: () => claimed });
  return lying;
}

describe('a typed array is what its buffer range holds', () => {
  it('a q claiming a length it does not have is measured by its bytes', () => {
    withTwin((cache, twin) => {
      // claims one token more than it holds: refused by its real length (H·D floats make one token)
      const q = lyingLength(q1, 2 * H * D);
      const out = cache.attend(0, q, k1, v1);
      expectBitIdentical(out, twin.attend(0, q1, k1, v1), 'out');
    });
  });

  it('a k claiming less than it holds writes no more than it holds', () => {
    withTwin((cache, twin) => {
      const k = lyingLength(rng.randn(30 * KV * D), KV * D);
      const v = lyingLength(rng.randn(30 * KV * D), KV * D);
      // the real length (30 tokens) differs from q's 1: refused, the cache unchanged
      expectThrows(() => cache.attend(0, q1, k, v), RangeError, [named('k')]);
      expect(cache.length).toBe(40);
      expectBitIdentical(cache.attend(0, q1, k1, v1), twin.attend(0, q1, k1, v1), 'next output');
    });
  });

  it('an out claiming the right length but holding more is written through its own bytes only', () => {
    withTwin((cache, twin) => {
      const out = lyingLength(new Float32Array(3 * H * D), H * D);
      expectThrows(() => cache.attend(0, q1, k1, v1, out), RangeError, [named('out')]);
      expect(cache.length).toBe(40);
      expectBitIdentical(cache.attend(0, q1, k1, v1), twin.attend(0, q1, k1, v1), 'next output');
    });
  });

  it('overridden set and subarray of out and q are never called', () => {
    withTwin((cache, twin) => {
      const q = new Float32Array(q1);
      const out = new Float32Array(H * D);
      const calls: string[] = [];
      for (const array of [q, out]) {
        for (const method of ['set', 'subarray', 'fill', 'slice']) {
          Object.defineProperty(array, method, {
            value: () => {
              calls.push(method);
              // grows the instance's memory: a view taken before would be stale
              new KVCache(opts).append(0, rng.randn(60 * KV * D), rng.randn(60 * KV * D));
            },
          });
        }
      }
      cache.attend(0, q, k1, v1, out);
      expect(calls).toEqual([]);
      expectBitIdentical(out, twin.attend(0, q1, k1, v1), 'out');
    });
  });
});

describe('arrays of more than 32 floats, which a call copies by one memcpy', () => {
  // Past 32 floats, q, k and v of a whole unshared buffer go into memory by one set and out comes out by
  // one: the same bits whatever buffer holds them, no method of theirs called, and a growable buffer
  // copied by the range that was checked.
  const wide = { heads: 8, kvHeads: 4, headDim: 16, maxTokens: 8 };
  const qw = rng.randn(2 * 8 * 16);
  const kw = rng.randn(2 * 4 * 16);
  const vw = rng.randn(2 * 4 * 16);
  let expected: Float32Array;
  beforeAll(() => {
    const plain = new KVCache(wide);
    expected = plain.attend(0, qw, kw, vw);
    plain.dispose();
  });
  /** `values` in a fresh buffer made by `make`, at a float offset of 3 when `offset`. */
  const placed = (values: Float32Array, make: (bytes: number) => ArrayBufferLike, offset: boolean) => {
    const at = offset ? 3 : 0;
    const array = new Float32Array(make((values.length + at) * 4), at * 4, values.length);
    for (let i = 0; i < values.length; i++) array[i] = values[i];
    return array;
  };
  // resizable and growable buffers (ES2024), typed here since the project's lib predates them
  type Sized<B> = new (bytes: number, options?: { maxByteLength: number }) => B;
  const Resizable = ArrayBuffer as Sized<ArrayBuffer>;
  const Growable = SharedArrayBuffer as Sized<SharedArrayBuffer>;
  const buffers: Array<[string, (bytes: number) => ArrayBufferLike]> = [
    ['ArrayBuffer', (bytes) => new ArrayBuffer(bytes)],
    ['SharedArrayBuffer', (bytes) => new SharedArrayBuffer(bytes)],
    ['resizable ArrayBuffer', (bytes) => new Resizable(bytes, { maxByteLength: 4 * bytes })],
    ['growable SharedArrayBuffer', (bytes) => new Growable(bytes, { maxByteLength: 4 * bytes })],
  ];
  for (const [kind, make] of buffers) {
    for (const offset of [false, true]) {
      it(`q, k, v and out in a ${kind}${offset ? ', 3 floats in' : ''}: the bits of plain arrays`, () => {
        const cache = new KVCache(wide);
        try {
          const [q, k, v] = [qw, kw, vw].map((x) => placed(x, make, offset));
          const out = placed(new Float32Array(qw.length), make, offset);
          const calls: string[] = [];
          for (const array of [q, k, v, out]) {
            for (const method of ['set', 'subarray']) {
              Object.defineProperty(array, method, { value: () => calls.push(method) });
            }
          }
          expect(cache.attend(0, q, k, v, out)).toBe(out);
          expect(calls).toEqual([]);
          expectBitIdentical(out, expected, `${kind} out`);
        } finally {
          cache.dispose();
        }
      });
    }
  }

  it('a length-tracking q over a resizable buffer is copied as it holds when checked', () => {
    const cache = new KVCache(wide);
    try {
      const buffer = new Resizable(qw.length * 4, { maxByteLength: 8 * qw.length * 4 });
      const q = new Float32Array(buffer); // length-tracking: no length given
      q.set(qw);
      expectBitIdentical(cache.attend(0, q, kw, vw), expected, 'out');
    } finally {
      cache.dispose();
    }
  });
});

describe('calls do not nest', () => {
  it('disposing the cache inside out.length is refused, and the outer call completes', () => {
    withTwin((cache, twin) => {
      const out = new Float32Array(H * D);
      let armed = true;
      let refused: unknown;
      Object.defineProperty(out, 'length', {
        get: () => {
          if (armed) {
            try {
              cache.dispose();
            } catch (error) {
              refused = error;
            }
          }
          return H * D;
        },
      });
      // the length getter is never consulted; were it, the dispose would be refused
      const result = cache.attend(0, q1, k1, v1, out);
      armed = false;
      if (refused !== undefined) expect(String(refused)).toMatch(REENTRY);
      expect(cache.length).toBe(41);
      expectBitIdentical(result, twin.attend(0, q1, k1, v1), 'out');
    });
  });

  it('a nested attend from a trap is refused: the cache never holds more than maxTokens', () => {
    withTwin((cache, twin) => {
      const k = rng.randn(30 * KV * D);
      const v = rng.randn(30 * KV * D);
      const q = rng.randn(30 * H * D);
      let refused: unknown;
      let armed = true;
      const hostile = new Proxy(q, {
        get(target, key) {
          if (armed) {
            try {
              cache.attend(0, rng.randn(8 * H * D), rng.randn(8 * KV * D), rng.randn(8 * KV * D));
            } catch (error) {
              refused ??= error;
            }
          }
          const value = Reflect.get(target, key, target);
          return typeof value === 'function' ? value.bind(target) : value;
        },
      });
      // a Proxy is not a Float32Array (its trap runs at most while the TypeError describes it); 40 + 30 = 70
      // tokens fit, and a nested 8 would have taken the layer to 78
      expectThrows(() => cache.attend(0, hostile, k, v), TypeError, [named('q')]);
      armed = false;
      if (refused !== undefined) expect(String(refused)).toMatch(REENTRY);
      expect(cache.length).toBe(40);
      cache.attend(0, q, k, v);
      twin.attend(0, q, k, v);
      expect(cache.length).toBe(70);
      const loaded = KVCache.load(cache.save());
      expectBitIdentical(loaded.save(), twin.save(), 'saved bytes');
      loaded.dispose();
    });
  });

  it('save({ to, get from() { cache.truncate(0) } }) refuses the truncate and saves what the cache held', () => {
    withTwin((cache, twin) => {
      let refused: unknown;
      const saved = cache.save({
        to: 40,
        get from() {
          try {
            cache.truncate(0);
          } catch (error) {
            refused = error;
          }
          return 0;
        },
      });
      expect(String(refused)).toMatch(REENTRY);
      expect(cache.length).toBe(40);
      const loaded = KVCache.load(saved);
      expectBitIdentical(loaded.attend(0, q1, k1, v1), twin.attend(0, q1, k1, v1), 'loaded output');
      loaded.dispose();
    });
  });

  it('a piece list whose index getter truncates base is refused the truncate during KVCache.load', () => {
    withTwin((base, twin) => {
      const from = base.length;
      const piece0 = (() => {
        const extra = filled();
        extra.attend(0, q1, k1, v1);
        const bytes = extra.save({ from });
        extra.dispose();
        return bytes;
      })();
      let refused: unknown;
      const list = [piece0];
      Object.defineProperty(list, 0, {
        get: () => {
          try {
            base.truncate(0);
          } catch (error) {
            refused = error;
          }
          return piece0;
        },
      });
      const loaded = KVCache.load(list, { base });
      expect(String(refused)).toMatch(REENTRY);
      expect(base.length).toBe(40);
      twin.attend(0, q1, k1, v1);
      const q = rng.randn(H * D);
      const k = rng.randn(KV * D);
      const v = rng.randn(KV * D);
      expectBitIdentical(loaded.attend(0, q, k, v), twin.attend(0, q, k, v), 'loaded output');
      loaded.dispose();
    });
  });

  it('every entry point refuses a call from a getter of another call, naming both', () => {
    const cache = filled();
    const other = filled();
    const saved = cache.save();
    const entries: Array<[string, () => unknown]> = [
      ['attend', () => other.attend(0, q1, k1, v1)],
      ['append', () => other.append(0, k1, v1)],
      ['save', () => other.save()],
      ['fork', () => other.fork()],
      ['truncate', () => other.truncate(1)],
      ['reset', () => other.reset()],
      ['dispose', () => other.dispose()],
      ['KVCache.load', () => KVCache.load(saved)],
      ['new KVCache', () => new KVCache(opts)],
      ['attention', () => attention(q1, k1, v1, { heads: H, kvHeads: KV, headDim: D })],
      ['attentionWeights', () => attentionWeights(q1, k1, v1, { heads: H, kvHeads: KV, headDim: D })],
    ];
    for (const [name, nested] of entries) {
      let refused: unknown;
      const options = {
        heads: H,
        kvHeads: KV,
        get headDim() {
          try {
            nested();
          } catch (error) {
            refused = error;
          }
          return D;
        },
      };
      attention(q1, k1, v1, options);
      expect(refused, name).toBeInstanceOf(Error);
      expect((refused as Error).message, name).toMatch(REENTRY);
      expect((refused as Error).message, name).toContain(name);
      expect((refused as Error).message, name).toContain('attention');
    }
    expect(other.length).toBe(40);
    const loaded = KVCache.load(saved);
    expectBitIdentical(loaded.attend(0, q1, k1, v1), other.attend(0, q1, k1, v1), 'untouched');
    for (const c of [cache, other, loaded]) c.dispose();
  });
});

describe('options are read once', () => {
  it('a getter answering differently on each read is read once', () => {
    let reads = 0;
    const options = {
      heads: H,
      kvHeads: KV,
      headDim: D,
      get softcap() {
        reads++;
        return reads === 1 ? 30 : -1;
      },
    };
    attention(q1, k1, v1, options);
    expect(reads).toBe(1);
  });
});

describe('crafted pieces', () => {
  it("a header that swaps two layers' lengths (same payload size, valid CRC) is refused", () => {
    const two = { ...opts, layers: 2 };
    const cache = new KVCache(two);
    cache.append(0, rng.randn(10 * KV * D), rng.randn(10 * KV * D));
    cache.append(1, rng.randn(20 * KV * D), rng.randn(20 * KV * D));
    const saved = cache.save();
    const p = parseSave(saved);
    const [a, b] = p.header.layers;
    const header = { ...p.header, layers: [{ ...b }, { ...a }] };
    const json = new TextEncoder().encode(JSON.stringify(header));
    expect(json.length).toBe(p.headerLength);
    const crafted = new Uint8Array(saved);
    crafted.set(json, 16);
    rechecksum(crafted);
    expectThrows(() => KVCache.load(crafted), Error, [/refused/, /layer/]);
    cache.dispose();
  });
});

describe('float32 range of scale and softcap', () => {
  for (const [name, value] of [
    ['scale', 1e39],
    ['scale', 1e-46],
    ['softcap', 1e39],
    ['softcap', 1e-46],
  ] as const) {
    it(`${name} ${value} is a RangeError stating the float32 range`, () => {
      const options = { heads: H, kvHeads: KV, headDim: D, [name]: value };
      expectThrows(() => attention(q1, k1, v1, options), RangeError, [named(`options.${name}`), /float32/]);
      expectThrows(() => new KVCache({ ...opts, [name]: value }), RangeError, [named(`options.${name}`), /float32/]);
    });
  }
});

describe('pieces and base', () => {
  it('a sparse array of pieces is a TypeError naming the hole, like an explicit undefined', () => {
    const cache = filled();
    const first = cache.save();
    cache.attend(0, q1, k1, v1);
    const second = cache.save({ from: 40 });
    // biome-ignore lint/suspicious/noSparseArray: the hole is the point
    const sparse = [first, , second] as Uint8Array[];
    expectThrows(() => KVCache.load(sparse), TypeError, [named('bytes[1]')]);
    expectThrows(() => KVCache.load([first, undefined as unknown as Uint8Array, second]), TypeError, [
      named('bytes[1]'),
    ]);
    cache.dispose();
  });

  it('a Proxy of a cache as base is a TypeError naming options.base', () => {
    const cache = filled();
    const proxy = new Proxy(cache, {});
    expectThrows(() => KVCache.load(cache.save(), { base: proxy }), TypeError, [named('options.base')]);
    cache.dispose();
  });
});
