// Many caches: dozens alive at once, created and disposed in any order, each independent; memory freed by
// dispose() is reused (a long create/dispose churn does not grow WebAssembly memory without bound);
// byteLength is what the cache holds (its descriptor, then pages as tokens arrive); dispose() then any use
// throws; dispose twice is harmless.

import { describe, expect, it } from 'vitest';
import { init, KVCache } from '../src/index.js';
import { activeInstance } from '../src/init.js';
import { ReferenceCache } from './support/reference.js';
import {
  Rng,
  expectBitIdentical,
  expectClose,
  expectThrows,
  withEachBuild,
  tolFor,
  DISPOSE,
  cfgName,
  feed,
  feedRef,
  fill,
  heap,
  heldBytes,
  kvHeadsOf,
  pageBytesFor,
  slice,
  stream,
  type Cfg,
  type Stream,
  quantized,
} from './support/util.js';

function randomCfg(rng: Rng, maxTokensCap: number): Cfg {
  const kvHeads = rng.pick([1, 1, 2, 3, 4]);
  const cfg: Cfg = {
    layers: rng.int(1, 3),
    heads: kvHeads * rng.pick([1, 2, 3, 4]),
    kvHeads,
    headDim: rng.pick([1, 3, 4, 8, 16, 17, 32, 64, 128]),
    maxTokens: rng.int(1, maxTokensCap),
  };
  if (rng.next() < 0.4) {
    cfg.window = rng.int(1, cfg.maxTokens);
    cfg.sinks = rng.int(0, 3);
  }
  if (rng.next() < 0.5)
    cfg.rope = { interleaved: rng.next() < 0.5, dims: 2 * rng.int(0, cfg.headDim >> 1) || undefined };
  if (cfg.rope && !cfg.rope.dims) {
    if (cfg.headDim % 2) cfg.rope = undefined;
    else delete cfg.rope.dims;
  }
  if (rng.next() < 0.2) cfg.softcap = rng.pick([5, 30]);
  if (rng.next() < 0.4) cfg.dtype = rng.pick(['int8', 'bfloat16', 'int4']);
  return cfg;
}

/** Room left in a layer (Infinity with a window). */
function room(cache: KVCache, cfg: Cfg, layer: number): number {
  return cfg.window ? Infinity : cfg.maxTokens - cache.lengthOf(layer);
}

withEachBuild('many caches and memory', (build) => {
  it('40 caches alive at once, attends interleaved, created and disposed in any order: each matches its own reference, and bit for bit a cache that ran alone', () => {
    interface Entry {
      cache: KVCache;
      cfg: Cfg;
      ref: ReferenceCache;
      log: ({ layer: number; s: Stream; out: Float32Array } | { truncate: number })[];
    }
    const rng = new Rng(2024);
    const alive: Entry[] = [];
    const finished: Entry[] = [];
    const create = () => {
      const cfg = randomCfg(rng, 48);
      alive.push({ cache: new KVCache(cfg as never), cfg, ref: new ReferenceCache(cfg), log: [] });
    };
    for (let i = 0; i < 40; i++) create();
    let maxAlive = 0;
    for (let op = 0; op < 700; op++) {
      maxAlive = Math.max(maxAlive, alive.length);
      const r = rng.next();
      if (r < 0.05 && alive.length > 20) {
        const e = alive.splice(rng.int(0, alive.length - 1), 1)[0];
        e.cache.dispose();
        finished.push(e);
        continue;
      }
      if (r < 0.1) {
        create();
        continue;
      }
      const e = rng.pick(alive);
      if (r < 0.14 && !e.cfg.window) {
        const n = rng.int(0, e.cache.length);
        e.cache.truncate(n);
        e.ref.truncate(n);
        e.log.push({ truncate: n });
        continue;
      }
      const layer = rng.int(0, (e.cfg.layers ?? 1) - 1);
      const T = Math.min(rng.pick([1, 1, 1, 2, 3, 7]), room(e.cache, e.cfg, layer));
      if (T === 0) {
        e.cache.reset();
        e.ref.reset();
        e.log.push({ truncate: 0 });
        continue;
      }
      const s = stream(e.cfg, T, rng.int(0, 1e9));
      const out = e.cache.attend(layer, s.q, s.k, s.v);
      e.log.push({ layer, s, out });
      const want = e.ref.attend(layer, s.q, s.k, s.v);
      if (!quantized(e.cfg))
        expectClose(out, want, tolFor(undefined, e.cfg.headDim), `op ${op}: ${cfgName(e.cfg)}, layer ${layer}`);
      else expect(out.every(Number.isFinite)).toBe(true);
    }
    expect(maxAlive).toBeGreaterThanOrEqual(40);
    expect(finished.length, 'some were disposed along the way').toBeGreaterThan(5);
    // every cache, replayed alone in a fresh cache after all others are gone, gives the same bits
    for (const e of alive.splice(0)) {
      e.cache.dispose();
      finished.push(e);
    }
    for (const e of finished) {
      const solo = new KVCache(e.cfg as never);
      try {
        for (const [i, entry] of e.log.entries()) {
          if ('truncate' in entry) solo.truncate(entry.truncate);
          else
            expectBitIdentical(
              solo.attend(entry.layer, entry.s.q, entry.s.k, entry.s.v),
              entry.out,
              `${cfgName(e.cfg)}: step ${i} alone vs interleaved`,
            );
        }
      } finally {
        solo.dispose();
      }
    }
  });

  it('byteLength is honest: a new cache holds a few KiB whatever maxTokens is, then the pages of its tokens; dispose gives it all back', () => {
    const rng = new Rng(7);
    for (let i = 0; i < 40; i++) {
      const cfg = randomCfg(rng, 3000);
      const before = heldBytes();
      const c = new KVCache(cfg as never);
      const empty = c.byteLength;
      expect(empty, cfgName(cfg)).toBe(heldBytes() - before);
      // the descriptor (and rope table) only: 4 KiB covers 3 layers with a 128-dim rope table
      expect(empty, `${cfgName(cfg)}: a new cache`).toBeLessThan(4096);
      const T = Math.min(rng.int(1, 300), room(c, cfg, 0));
      feed(c, cfg, stream(cfg, T, i));
      expect(c.byteLength, 'byteLength is what the heap holds for it').toBe(heldBytes() - before);
      const slots = cfg.window ? cfg.maxTokens + (cfg.sinks ?? 0) : cfg.maxTokens;
      const perHead = Math.ceil(Math.min(T, slots) / 64);
      const pages = 2 * kvHeadsOf(cfg) * perHead;
      const tables = c.byteLength - empty - pages * pageBytesFor(cfg);
      expect(tables, `${cfgName(cfg)}: ${T} tokens hold ${pages} pages and a page table`).toBeGreaterThan(0);
      expect(tables).toBeLessThanOrEqual(2 * kvHeadsOf(cfg) * 4 * Math.max(4, 2 * perHead) + 64);
      c.dispose();
      expect(heldBytes(), 'dispose releases everything').toBe(before);
      expect(c.byteLength).toBe(0);
    }
  });

  it('fill a 32 MiB cache, dispose, and again 20 times: WebAssembly memory grows once, then never', () => {
    const cfg: Cfg = { layers: 4, heads: 8, kvHeads: 4, headDim: 128, maxTokens: 2048 }; // ~32 MiB full
    const full = (c: KVCache) => {
      for (let l = 0; l < 4; l++) fill(c, cfg, 2046, l);
    };
    const first = new KVCache(cfg as never);
    full(first);
    const bytes = first.byteLength;
    expect(bytes).toBeGreaterThan(32 * 2 ** 20);
    first.dispose();
    const memory = heap().memoryBytes;
    const held = heldBytes();
    for (let i = 0; i < 20; i++) {
      const c = new KVCache(cfg as never);
      full(c);
      const s = stream(cfg, 2, i);
      c.attend(i % 4, s.q, s.k, s.v);
      expect(c.byteLength).toBe(bytes);
      c.dispose();
      expect(heap().memoryBytes, `iteration ${i}`).toBe(memory);
      expect(heldBytes(), `iteration ${i}`).toBe(held);
    }
  });

  it('2000 iterations of create/fill/dispose churn with random sizes and random dispose order: memory stays bounded', () => {
    const rng = new Rng(99);
    const alive: { cache: KVCache; cfg: Cfg }[] = [];
    const startMemory = heap().memoryBytes;
    const startHeld = heldBytes();
    let peakLive = 0;
    let memoryAtHalf = 0;
    for (let i = 0; i < 2000; i++) {
      if (i === 1000) memoryAtHalf = heap().memoryBytes;
      if (alive.length >= 24 || (alive.length > 0 && rng.next() < 0.45)) {
        alive.splice(rng.int(0, alive.length - 1), 1)[0].cache.dispose();
      }
      const cfg = randomCfg(rng, rng.next() < 0.1 ? 8192 : 600);
      const cache = new KVCache(cfg as never);
      alive.push({ cache, cfg });
      // pages of a few tokens each, so there is something to free and to reuse
      const T = Math.min(rng.int(1, 200), room(cache, cfg, 0));
      if (i % 25 === 0) {
        // some of them attend, and stay correct
        const s = stream(cfg, T, i);
        const out = feed(cache, cfg, s);
        if (!quantized(cfg))
          expectClose(
            out,
            feedRef(new ReferenceCache(cfg), cfg, s),
            tolFor(undefined, cfg.headDim),
            `churn ${i}: ${cfgName(cfg)}`,
          );
      } else {
        fill(cache, cfg, T);
      }
      const live = alive.reduce((sum, e) => sum + e.cache.byteLength, 0);
      peakLive = Math.max(peakLive, live);
      expect(heldBytes() - startHeld).toBe(live);
    }
    for (const { cache } of alive.splice(0)) cache.dispose();
    const end = heap().memoryBytes;
    expect(heldBytes()).toBe(startHeld);
    const mib = (n: number) => `${(n / 2 ** 20).toFixed(1)} MiB`;
    console.log(
      `[memory ${build}] churn: peak live ${mib(peakLive)}; wasm memory ${mib(startMemory)} → ${mib(memoryAtHalf)} (iteration 1000) → ${mib(end)} (iteration 2000)`,
    );
    expect(end, 'memory stays within twice the most ever alive at once').toBeLessThanOrEqual(
      startMemory + 2 * peakLive,
    );
    expect(end, 'the second 1000 iterations reuse what the first reserved').toBeLessThanOrEqual(memoryAtHalf * 1.25);
    // and after the churn, everything freed serves again: a cache holding the whole peak fits without growing
    const tokens = Math.floor(peakLive / 600);
    const bigCfg: Cfg = { heads: 1, headDim: 64, maxTokens: tokens };
    const big = new KVCache(bigCfg as never);
    fill(big, bigCfg, tokens);
    expect(heap().memoryBytes, 'a cache of the peak live size fits in the memory the churn left').toBe(end);
    big.dispose();
  });

  describe('dispose()', () => {
    const cfg: Cfg = { layers: 2, heads: 4, kvHeads: 2, headDim: 16, maxTokens: 16, window: 8, sinks: 1, rope: {} };

    it('then any use throws an Error mentioning "disposed" (never a trap); dispose twice is harmless', () => {
      const c = new KVCache(cfg as never);
      const other = new KVCache(cfg as never);
      const s = stream(cfg, 3, 1);
      feed(c, cfg, s);
      feed(other, cfg, s);
      const before = heldBytes();
      const bytes = c.byteLength;
      c.dispose();
      expect(heldBytes()).toBe(before - bytes);
      const out = new Float32Array(3 * 4 * 16).fill(7);
      const uses: [string, () => unknown][] = [
        ['attend', () => c.attend(0, s.q, s.k, s.v)],
        ['attend with out', () => c.attend(1, s.q, s.k, s.v, out)],
        ['attend with bad arguments', () => c.attend(5, new Float32Array(1), s.k, s.v)],
        ['length', () => c.length],
        ['lengthOf', () => c.lengthOf(0)],
        ['truncate', () => c.truncate(1)],
        ['reset', () => c.reset()],
        ['save', () => c.save()],
      ];
      for (const [name, use] of uses) {
        try {
          expectThrows(use, Error, [/disposed/]);
        } catch (e) {
          throw new Error(`${name} after dispose: ${(e as Error).message}`);
        }
      }
      expect(
        out.every((x) => x === 7),
        'a refused attend writes nothing into out',
      ).toBe(true);
      c.dispose();
      c[DISPOSE as typeof Symbol.dispose]();
      expect(heldBytes(), 'disposing again frees nothing else').toBe(before - bytes);
      // the other cache is untouched, and a new cache reusing the memory does not disturb it
      const again = new KVCache(cfg as never);
      feed(again, cfg, stream(cfg, 5, 2));
      const fresh = new KVCache(cfg as never);
      feed(fresh, cfg, s);
      const next = stream(cfg, 2, 3);
      expectBitIdentical(feed(other, cfg, next), feed(fresh, cfg, next), 'the other cache after a dispose next to it');
      for (const x of [other, again, fresh]) x.dispose();
    });

    it('[Symbol.dispose]() disposes (what `using` calls), and is idempotent', () => {
      expect(typeof (KVCache.prototype as unknown as Record<symbol, unknown>)[DISPOSE]).toBe('function');
      const before = heldBytes();
      const c = new KVCache(cfg as never);
      feed(c, cfg, stream(cfg, 2, 4));
      c[DISPOSE as typeof Symbol.dispose]();
      expect(heldBytes()).toBe(before);
      expectThrows(() => c.length, Error, [/disposed/]);
      expectThrows(() => c.attend(0, new Float32Array(64), new Float32Array(32), new Float32Array(32)), Error, [
        /disposed/,
      ]);
      c[DISPOSE as typeof Symbol.dispose]();
      c.dispose();
      expect(heldBytes()).toBe(before);
    });

    it('a loaded cache disposes like any other; disposing the saved one leaves the loaded one working', () => {
      const before = heldBytes();
      const a = new KVCache(cfg as never);
      const s = stream(cfg, 20, 5);
      feed(a, cfg, s);
      const b = KVCache.load(a.save());
      a.dispose();
      const ref = new ReferenceCache(cfg);
      feedRef(ref, cfg, s);
      const next = stream(cfg, 2, 6);
      expectClose(
        feed(b, cfg, next),
        feedRef(ref, cfg, next),
        tolFor(undefined, 16),
        'loaded after the original was disposed',
      );
      b.dispose();
      expectThrows(() => b.save(), Error, [/disposed/]);
      expect(heldBytes()).toBe(before);
    });
  });
});

describe('caches of different builds live side by side', () => {
  it('a cache keeps its build after init() switches to another; both dispose into their own memory', async () => {
    const cfg: Cfg = { heads: 4, kvHeads: 2, headDim: 32, maxTokens: 32, rope: {} };
    const s = stream(cfg, 10, 1);
    const ref = new ReferenceCache(cfg);
    const want = feedRef(ref, cfg, s, [6, 4]);
    await init({ build: 'simd' });
    const a = new KVCache(cfg as never);
    const simdInstance = activeInstance();
    const outA = feed(a, cfg, slice(cfg, s, 0, 6));
    await init({ build: 'scalar' });
    const b = new KVCache(cfg as never);
    const scalarInstance = activeInstance();
    expect(scalarInstance.heap).not.toBe(simdInstance.heap);
    const outB = feed(b, cfg, s, [6, 4]);
    const outA2 = feed(a, cfg, slice(cfg, s, 6, 10));
    expectClose(
      new Float32Array([...outA, ...outA2]),
      want,
      tolFor(undefined, 32),
      'simd cache used after switching to scalar',
    );
    expectClose(outB, want, tolFor(undefined, 32), 'scalar cache');
    const simdHeld = heldBytes(simdInstance);
    const scalarHeld = heldBytes(scalarInstance);
    const aBytes = a.byteLength;
    a.dispose();
    expect(heldBytes(simdInstance)).toBe(simdHeld - aBytes);
    expect(heldBytes(scalarInstance), 'disposing the simd cache leaves the scalar heap alone').toBe(scalarHeld);
    b.dispose();
    expect(heldBytes(scalarInstance)).toBeLessThan(scalarHeld);
  });
});
