// Trees of drafts (API.md, "Trees of drafts"): attendTree(layer, q, k, v, parents) stores each draft at a
// slot of its own, rotated at the position it would have if accepted, and lets it see the cache and its
// ancestors; accept(path) keeps a chain of drafts as the next positions of every layer.
//
// The contract checked here, each in every build:
// - any tree matches the float64 reference, which builds the ancestor mask explicitly (ReferenceCache);
// - a chain (parents −1, 0, 1, …) is the same bits as a chunked attend of the same tokens;
// - accept(path) then continuing is the same bits as a fresh cache fed the history and the accepted tokens
//   (prefill == chunked holds bit for bit, and an accepted row is the row attend would have written);
// - the same at 1 and 2 threads, with calls really going across threads;
// - a refused call (bad parents or path, pending-draft rules) throws an error naming what is wrong and
//   changes nothing.
// Tolerances: float32 within tolFor (the drafts add no arithmetic beyond a plain call's: the same scores,
// masked differently); int8 within 0.05 as in int8.test.ts (its K and V rounding dominates).

import { afterEach, describe, expect, it } from 'vitest';
import { KVCache, init } from '../src/index.js';
import { activeInstance } from '../src/init.js';
import { ReferenceCache } from './support/reference.js';
import {
  Rng,
  cfgName,
  concat,
  expectBitIdentical,
  expectClose,
  expectThrows,
  feed,
  join,
  slice,
  stream,
  tolFor,
  withEachBuild,
  type Cfg,
  type Stream,
} from './support/util.js';

const SHAPES: Cfg[] = [
  { layers: 2, heads: 4, kvHeads: 2, headDim: 16, maxTokens: 400 },
  { layers: 2, heads: 6, kvHeads: 2, headDim: 12, maxTokens: 400, rope: { dims: 8 }, softcap: 4 },
  { layers: 1, heads: 4, kvHeads: 4, headDim: 8, maxTokens: 400, alibi: true },
  {
    layers: 1,
    heads: 2,
    kvHeads: 1,
    headDim: 7,
    maxTokens: 400,
    rope: { interleaved: true, dims: 6 },
    sinkLogits: [0.5, -1],
  },
  // a ring of 80 slots behind a window of 40 with 3 sinks: histories wrap it, trees of up to 41 drafts fit
  { layers: 2, heads: 4, kvHeads: 1, headDim: 16, maxTokens: 80, window: 40, sinks: 3, rope: {} },
  { layers: 2, heads: 8, kvHeads: 2, headDim: 64, maxTokens: 400, rope: {}, dtype: 'int8' },
  { layers: 1, heads: 4, kvHeads: 2, headDim: 16, maxTokens: 160, window: 24, sinks: 2, dtype: 'int8', alibi: true },
];

const tolOf = (cfg: Cfg) => (cfg.dtype === 'int8' ? { atol: 0.05, rtol: 0 } : tolFor(cfg.scale, cfg.headDim));

/** A random tree of n drafts: each a root or the child of an earlier draft, biased towards deep chains. */
function randomTree(rng: Rng, n: number): number[] {
  return Array.from({ length: n }, (_, i) => (i === 0 || rng.next() < 0.15 ? -1 : rng.int(Math.max(0, i - 4), i - 1)));
}

/** The chain from a root down to a random draft (a path accept takes), or [] now and then. */
function randomPath(rng: Rng, parents: readonly number[]): number[] {
  if (rng.next() < 0.1) return [];
  const path: number[] = [];
  for (let d = rng.int(0, parents.length - 1); d >= 0; d = parents[d]) path.unshift(d);
  return path;
}

/** Draft tokens `path` of `s`, in that order. */
function pick(cfg: Cfg, s: Stream, path: readonly number[]): Stream {
  return join(path.map((d) => slice(cfg, s, d, d + 1)));
}

const chain = (n: number) => Array.from({ length: n }, (_, i) => i - 1);

withEachBuild('attendTree', (_build, make) => {
  for (const [i, cfg] of SHAPES.entries()) {
    const layers = cfg.layers ?? 1;

    it(`${cfgName(cfg)}: a chain is the same bits as chunked attend, and continues as it does`, () => {
      const rng = new Rng(100 + i);
      const history = stream(cfg, rng.int(60, 200), 1 + i);
      const tree = make(cfg) as KVCache;
      const plain = make(cfg) as KVCache;
      for (let l = 0; l < layers; l++) {
        feed(tree, cfg, history, [history.n], l);
        feed(plain, cfg, history, [history.n - 5, 5], l);
      }
      for (const n of [1, 17]) {
        const drafts = stream(cfg, n, 50 + n);
        for (let l = 0; l < layers; l++) {
          const got = tree.attendTree(l, drafts.q, drafts.k, drafts.v, chain(n));
          expectBitIdentical(got, plain.attend(l, drafts.q, drafts.k, drafts.v), `layer ${l}: chain of ${n}`);
        }
        tree.accept(Int32Array.from({ length: n }, (_, d) => d));
        expect(tree.length).toBe(plain.length);
      }
      const next = stream(cfg, 3, 99);
      for (let l = 0; l < layers; l++) {
        expectBitIdentical(feed(tree, cfg, next, [1, 2], l), feed(plain, cfg, next, [3], l), `layer ${l} after accept`);
      }
    });

    it(`${cfgName(cfg)}: random trees match the reference; accept then continue == a fresh cache fed the accepted tokens`, () => {
      const rng = new Rng(200 + i);
      const cache = make(cfg) as KVCache;
      const ref = new ReferenceCache(cfg);
      const history = Array.from({ length: layers }, (_, l) => stream(cfg, rng.int(30, 150), 10 * l + i));
      /** per layer: every token the layer holds, for the fresh cache */
      const fed = history.map((h, l) => {
        expectClose(feed(cache, cfg, h, [h.n], l), ref.attend(l, h.q, h.k, h.v), tolOf(cfg), `layer ${l} history`);
        return h;
      });
      const most = cfg.window ? cfg.maxTokens - cfg.window + 1 : 40;
      for (let round = 0; round < 3; round++) {
        const parents = randomTree(rng, rng.int(1, Math.min(40, most)));
        const drafts = Array.from({ length: layers }, (_, l) => stream(cfg, parents.length, 1000 * round + l));
        for (let l = 0; l < layers; l++) {
          const { q, k, v } = drafts[l];
          const label = `round ${round}, layer ${l}, parents [${parents}]`;
          expectClose(cache.attendTree(l, q, k, v, parents), ref.attendTree(l, q, k, v, parents), tolOf(cfg), label);
        }
        const path = randomPath(rng, parents);
        cache.accept(path);
        ref.accept(path);
        for (let l = 0; l < layers; l++) fed[l] = join([fed[l], pick(cfg, drafts[l], path)]);
        expect(cache.length).toBe(fed[0].n);
      }
      const fresh = make(cfg) as KVCache;
      for (let l = 0; l < layers; l++) feed(fresh, cfg, fed[l], [fed[l].n], l);
      const next = stream(cfg, 4, 7);
      for (let l = 0; l < layers; l++) {
        const got = feed(cache, cfg, next, [1, 3], l);
        expectBitIdentical(got, feed(fresh, cfg, next, [4], l), `layer ${l}: continues as a fresh cache`);
        expectClose(
          got,
          concat(
            [
              ref.attend(l, slice(cfg, next, 0, 1).q, slice(cfg, next, 0, 1).k, slice(cfg, next, 0, 1).v),
              ref.attend(l, slice(cfg, next, 1, 4).q, slice(cfg, next, 1, 4).k, slice(cfg, next, 1, 4).v),
            ],
            Float64Array,
          ),
          tolOf(cfg),
          `layer ${l}: continues as the reference`,
        );
      }
    });
  }

  it('fork carries the pending drafts; parent and fork accept different paths, each == a fresh cache', () => {
    const cfg: Cfg = { layers: 2, heads: 4, kvHeads: 2, headDim: 16, maxTokens: 300, rope: {}, dtype: 'int8' };
    const history = stream(cfg, 70, 3);
    const parents = [-1, 0, 0, 1, 2, 2, 5];
    const drafts = stream(cfg, parents.length, 4);
    const parent = make(cfg) as KVCache;
    for (let l = 0; l < 2; l++) feed(parent, cfg, history, [history.n], l);
    parent.attendTree(0, drafts.q, drafts.k, drafts.v, parents);
    const child = parent.fork(); // layer 1 still to attend: the fork continues the same tree
    for (const c of [parent, child]) c.attendTree(1, drafts.q, drafts.k, drafts.v, parents);
    const paths = [
      [0, 1, 3],
      [0, 2, 5, 6],
    ];
    child.accept(paths[1]);
    parent.accept(paths[0]);
    const next = stream(cfg, 2, 5);
    [parent, child].forEach((c, n) => {
      const fresh = make(cfg) as KVCache;
      const all = join([history, pick(cfg, drafts, paths[n])]);
      for (let l = 0; l < 2; l++) {
        feed(fresh, cfg, all, [all.n], l);
        expectBitIdentical(feed(c, cfg, next, [2], l), feed(fresh, cfg, next, [2], l), `cache ${n}, layer ${l}`);
      }
    });
  });

  it('drafts that are sinks by position (a cache shorter than its sinks), an empty cache, trees over several staging chunks', () => {
    const rng = new Rng(300);
    const cases: Array<{ cfg: Cfg; history: number; drafts: number }> = [
      // a draft stands at a sink position while stored past it, and the window is shorter than the tree
      {
        cfg: { heads: 2, kvHeads: 1, headDim: 8, maxTokens: 40, window: 3, sinks: 6, rope: {} },
        history: 2,
        drafts: 30,
      },
      {
        cfg: { heads: 2, kvHeads: 1, headDim: 8, maxTokens: 40, window: 3, sinks: 6, alibi: true },
        history: 0,
        drafts: 20,
      },
      // 8 tokens a kernel call here (the staging area's size): a tree of 21 drafts takes three calls
      { cfg: { heads: 32, kvHeads: 32, headDim: 256, maxTokens: 64, rope: {} }, history: 5, drafts: 21 },
    ];
    for (const [n, { cfg, history, drafts }] of cases.entries()) {
      const cache = make(cfg) as KVCache;
      const ref = new ReferenceCache(cfg);
      const h = stream(cfg, history + 1, n);
      if (history > 0) {
        const part = slice(cfg, h, 0, history);
        expectClose(feed(cache, cfg, part), ref.attend(0, part.q, part.k, part.v), tolOf(cfg), `case ${n}: history`);
      }
      for (let round = 0; round < 4; round++) {
        const parents = randomTree(rng, drafts);
        const d = stream(cfg, drafts, 40 + round);
        const label = `case ${n}, round ${round}: parents [${parents}]`;
        expectClose(
          cache.attendTree(0, d.q, d.k, d.v, parents),
          ref.attendTree(0, d.q, d.k, d.v, parents),
          tolOf(cfg),
          label,
        );
        const path = round === 3 ? [] : randomPath(rng, parents);
        cache.accept(path);
        ref.accept(path);
      }
      const next = slice(cfg, h, history, history + 1);
      expectClose(feed(cache, cfg, next), ref.attend(0, next.q, next.k, next.v), tolOf(cfg), `case ${n}: a step after`);
    }
    // 70 roots, all at position 0 (a sink), then a chain of 146 under the last: the chain's late drafts see
    // only their root far below their window, stored two blocks under them (the walk must not skip it)
    const cfg: Cfg = { heads: 2, kvHeads: 1, headDim: 8, maxTokens: 256, window: 2, sinks: 8 };
    const parents = Array.from({ length: 216 }, (_, i) => (i < 70 ? -1 : i - 1));
    const d = stream(cfg, parents.length, 77);
    const ref = new ReferenceCache(cfg);
    const got = (make(cfg) as KVCache).attendTree(0, d.q, d.k, d.v, parents);
    expectClose(got, ref.attendTree(0, d.q, d.k, d.v, parents), tolOf(cfg), 'a root far below its chain');
  });

  it('truncate and reset drop the pending drafts', () => {
    const cfg: Cfg = { heads: 2, headDim: 8, maxTokens: 100, window: 30, rope: {} };
    const history = stream(cfg, 90, 6);
    const cache = make(cfg) as KVCache;
    feed(cache, cfg, history);
    const drafts = stream(cfg, 5, 7);
    cache.attendTree(0, drafts.q, drafts.k, drafts.v, [-1, 0, -1, 2, 3]);
    cache.truncate(88);
    expect(cache.length).toBe(88);
    const fresh = make(cfg) as KVCache;
    feed(fresh, cfg, slice(cfg, history, 0, 88));
    const next = stream(cfg, 3, 8);
    expectBitIdentical(feed(cache, cfg, next), feed(fresh, cfg, next), 'after truncate');
    cache.attendTree(0, drafts.q, drafts.k, drafts.v, [-1, 0, -1, 2, 3]);
    cache.reset();
    expect(cache.length).toBe(0);
    expectBitIdentical(feed(cache, cfg, next), feed(make(cfg) as KVCache, cfg, next), 'after reset');
  });
});

withEachBuild('attendTree refusals', (_build, make) => {
  const cfg: Cfg = { layers: 2, heads: 4, kvHeads: 2, headDim: 8, maxTokens: 64, window: 20, sinks: 1, rope: {} };
  const history = stream(cfg, 50, 11);
  const drafts = stream(cfg, 6, 12);
  const parents = [-1, 0, 0, 1, -1, 4];
  const { q, k, v } = drafts;

  /** A cache with the history on both layers and, given layers, those layers' drafts pending. */
  function ready(pending = 0): KVCache {
    const cache = make(cfg) as KVCache;
    for (let l = 0; l < 2; l++) feed(cache, cfg, history, [history.n], l);
    for (let l = 0; l < pending; l++) cache.attendTree(l, q, k, v, parents);
    return cache;
  }

  /** After refusals, the cache still does what an untouched one does: the drafts, then accept, then a step. */
  function expectUnchanged(cache: KVCache, pending: number): void {
    const twin = ready(pending);
    for (let l = pending; l < 2; l++) {
      expectBitIdentical(cache.attendTree(l, q, k, v, parents), twin.attendTree(l, q, k, v, parents), `layer ${l}`);
    }
    cache.accept([0, 1, 3]);
    twin.accept([0, 1, 3]);
    const next = stream(cfg, 1, 13);
    for (let l = 0; l < 2; l++)
      expectBitIdentical(feed(cache, cfg, next, [1], l), feed(twin, cfg, next, [1], l), `step ${l}`);
  }

  it('bad parents: a RangeError or TypeError naming the entry; nothing changes', () => {
    const cache = ready();
    const bad: Array<[unknown, ErrorConstructor, RegExp[]]> = [
      [[-1, 0, 0, 1, -1, 5], RangeError, [/parents\[5\]/, /earlier draft/, /got 5/]],
      [[-1, 0, 0, 7, -1, 4], RangeError, [/parents\[3\]/, /got 7/]],
      [[-1, 0, -2, 1, -1, 4], RangeError, [/parents\[2\]/, /got -2/]],
      [[-1, 0, 0.5, 1, -1, 4], RangeError, [/parents\[2\]/]],
      [[-1, 0, '0', 1, -1, 4], TypeError, [/parents\[2\]/, /integer/]],
      [[-1, 0, 0], RangeError, [/parents/, /length 6/]],
      ['-1,0', TypeError, [/parents/, /Array or Int32Array/]],
    ];
    for (const [p, type, patterns] of bad) {
      expectThrows(() => cache.attendTree(0, q, k, v, p as number[]), type, patterns);
    }
    expect(cache.length).toBe(history.n);
    expectUnchanged(cache, 0);
  });

  it('a getter of parents that calls the cache is refused (calls do not nest); nothing changes', () => {
    const cache = ready();
    const sneaky = [...parents];
    Object.defineProperty(sneaky, 2, {
      get: () => {
        cache.truncate(0);
        return 0;
      },
    });
    expectThrows(() => cache.attendTree(0, q, k, v, sneaky), Error, [/KVCache.truncate/, /do not nest/]);
    expect(cache.length).toBe(history.n);
    expectUnchanged(cache, 0);
  });

  it('a tree that a window ring cannot hold beside what it still needs: a RangeError naming parents', () => {
    const cache = ready();
    const many = stream(cfg, 46, 14); // ring 64 − window 20 + 1 = 45 at most
    expectThrows(() => cache.attendTree(0, many.q, many.k, many.v, chain(46)), RangeError, [
      /parents/,
      /at most 45 drafts/,
    ]);
    expectUnchanged(cache, 0);
  });

  it('pending drafts: every layer the same parents, once; attend, append and save wait for accept', () => {
    const cache = ready(1);
    expectThrows(() => cache.attendTree(0, q, k, v, parents), Error, [/layer 0 already holds the pending drafts/]);
    expectThrows(() => cache.attendTree(1, q, k, v, [-1, 0, 1, 2, 3, 4]), RangeError, [/parents/, /layer 0 attended/]);
    expectThrows(() => cache.attend(1, q, k, v), Error, [/KVCache.attend/, /pending/, /accept/]);
    expectThrows(() => cache.append(1, k, v), Error, [/KVCache.append/, /pending/]);
    expectThrows(() => cache.save(), Error, [/save/, /pending drafts/]);
    expectThrows(() => KVCache.load(new Uint8Array(8), { base: cache }), Error, [/base/, /pending drafts/]);
    expectThrows(() => cache.accept([0]), Error, [/layer 1 has not/]);
    expect(cache.length).toBe(history.n);
    expect(cache.lengthOf(1)).toBe(history.n);
    expectUnchanged(cache, 1);
    expectThrows(() => cache.accept([]), Error, [/holds none/]);
  });

  it('bad paths: a RangeError or TypeError naming the entry; the drafts stay pending', () => {
    const cache = ready(2);
    const bad: Array<[unknown, ErrorConstructor, RegExp[]]> = [
      [[1], RangeError, [/path\[0\]/, /root/, /got 1/]],
      [[0, 1, 2], RangeError, [/path\[2\]/, /child of draft 1/, /got 2/]],
      [[0, 6], RangeError, [/path\[1\]/, /0 to 5/]],
      [[4, 5, 0], RangeError, [/path\[2\]/]],
      [[0, '1'], TypeError, [/path\[1\]/]],
      [0, TypeError, [/path/, /Array or Int32Array/]],
    ];
    for (const [p, type, patterns] of bad) expectThrows(() => cache.accept(p as number[]), type, patterns);
    const twin = ready(2);
    cache.accept([4, 5]);
    twin.accept([4, 5]);
    const next = stream(cfg, 2, 15);
    for (let l = 0; l < 2; l++)
      expectBitIdentical(feed(cache, cfg, next, [2], l), feed(twin, cfg, next, [2], l), `layer ${l}`);
  });
});

describe('attendTree across threads', () => {
  afterEach(async () => {
    await init({ threads: 1 });
  });

  // grouped-query: 4 tokens a tile, so 16 drafts are tiles across threads; one query head a kv head: 16 drafts
  // are one tile a kv head, cut into chunks of the cache across threads (flash-decoding)
  it.each([
    { heads: 8, kvHeads: 2, headDim: 64, maxTokens: 2200, rope: {} },
    { heads: 4, kvHeads: 4, headDim: 64, maxTokens: 2200, rope: {}, window: 2000, sinks: 4 },
  ] as Cfg[])(
    'a tree of 16 drafts over 2,100 tokens ($heads heads, $kvHeads kv): the same bits at 1 and 2 threads',
    async (cfg) => {
      const history = stream(cfg, 2100, 21);
      const rng = new Rng(22);
      const parents = randomTree(rng, 16);
      const drafts = stream(cfg, 16, 23);
      const path = randomPath(rng, parents);
      const next = stream(cfg, 1, 24);
      const outputs: Float32Array[] = [];
      for (const threads of [1, 2]) {
        await init({ threads });
        const pool = activeInstance().pool;
        const before = pool?.threadedCalls ?? 0;
        const cache = new KVCache(cfg as never);
        const chained = new KVCache(cfg as never);
        const plain = new KVCache(cfg as never);
        for (const c of [cache, chained, plain]) feed(c, cfg, history);
        const tree = cache.attendTree(0, drafts.q, drafts.k, drafts.v, parents);
        cache.accept(path);
        const step = feed(cache, cfg, next);
        expectBitIdentical(
          chained.attendTree(0, drafts.q, drafts.k, drafts.v, chain(16)),
          plain.attend(0, drafts.q, drafts.k, drafts.v),
          `${threads} threads: chain == chunked`,
        );
        if (threads > 1) expect(pool?.threadedCalls ?? 0, 'calls went across threads').toBeGreaterThan(before + 2);
        outputs.push(concat([tree, step]));
        for (const c of [cache, chained, plain]) c.dispose();
      }
      expectBitIdentical(outputs[1], outputs[0], '2 threads == 1 thread');
    },
    60_000,
  );
});
