// fork(): a second cache with the same options and history, sharing its pages copy-on-write. The contract
// (API.md): parent and fork continue independently, each exactly (bit for bit) as a fresh cache fed its
// own history; either may be disposed first; truncate on one never touches the other; save() of a fork
// writes a complete cache; windows, sinks, rope, int8, bfloat16 and int4 all work through forks.
//
// "A fresh cache fed its own history" is the bit-level reference (prefill, decode and chunked prefill give
// the same bits, so one append of the history reproduces any way it arrived); the float64 ReferenceCache
// replayed with the same history checks the numbers themselves.

import fc from 'fast-check';
import { expect, it } from 'vitest';
import { KVCache } from '../src/index.js';
import { ReferenceCache } from './support/reference.js';
import {
  Rng,
  concat,
  expectBitIdentical,
  expectClose,
  expectThrows,
  withEachBuild,
  tolFor,
  unevenChunks,
  cfgName,
  feed,
  heldBytes,
  ones,
  pageBytesFor,
  qWidth,
  slice,
  stream,
  type Cfg,
  type Stream,
  quantized,
} from './support/util.js';

const CFGS: Cfg[] = [
  { heads: 4, kvHeads: 2, headDim: 16, maxTokens: 300 },
  { layers: 2, heads: 6, kvHeads: 2, headDim: 7, maxTokens: 200, rope: { dims: 6, theta: 500 }, softcap: 20 },
  // a ring of 70 slots after 2 sinks: histories past 72 tokens have wrapped it (and cross pages)
  { layers: 2, heads: 4, kvHeads: 1, headDim: 32, maxTokens: 70, window: 50, sinks: 2, rope: {} },
  { heads: 2, kvHeads: 2, headDim: 64, maxTokens: 256, dtype: 'int8', rope: { interleaved: true } },
  { heads: 3, kvHeads: 1, headDim: 8, maxTokens: 100, window: 100, dtype: 'int8' },
  { layers: 2, heads: 4, kvHeads: 2, headDim: 24, maxTokens: 70, window: 50, sinks: 2, dtype: 'bfloat16', rope: {} },
  { heads: 6, kvHeads: 2, headDim: 40, maxTokens: 256, dtype: 'int4', rope: { interleaved: true }, softcap: 20 },
];

/** The history of one layer: its tokens' k and v (queries do not change a cache). */
type History = Stream[];

/** A fresh cache fed `histories` (one append per layer), as the bit-level reference. */
function replay(cfg: Cfg, histories: History[]): KVCache {
  const cache = new KVCache(cfg as never);
  histories.forEach((h, layer) => {
    if (h.length) cache.append(layer, concat(h.map((s) => s.k)), concat(h.map((s) => s.v)));
  });
  return cache;
}

/** The float64 reference fed the same histories. */
function replayRef(cfg: Cfg, histories: History[]): ReferenceCache {
  const ref = new ReferenceCache(cfg);
  histories.forEach((h, layer) => {
    for (const s of h) ref.attend(layer, new Float32Array(s.n * qWidth(cfg)), s.k, s.v);
  });
  return ref;
}

const layersOf = (cfg: Cfg) => cfg.layers ?? 1;

withEachBuild('fork', (_build, make) => {
  for (const cfg of CFGS) {
    const history = cfg.window ? 150 : 100; // windows: the ring has wrapped before the fork
    it(`parent and fork continue independently, each bit for bit a fresh cache fed its own history (${cfgName(cfg)})`, () => {
      const parent = make(cfg);
      const h = stream(cfg, history, 1);
      for (let l = 0; l < layersOf(cfg); l++) feed(parent, cfg, h, [history - 7, 7], l);
      const child = parent.fork();
      expect(child).toBeInstanceOf(KVCache);
      expect([child.length, child.lengthOf(layersOf(cfg) - 1)]).toEqual([
        parent.length,
        parent.lengthOf(layersOf(cfg) - 1),
      ]);
      // different continuations: the parent as decode steps, the fork as one chunk, then both more
      const a = stream(cfg, 9, 2);
      const b = stream(cfg, 9, 3);
      const outA = feed(parent, cfg, a, ones(9));
      const outB = feed(child, cfg, b, [9]);
      const freshA = replay(
        cfg,
        Array.from({ length: layersOf(cfg) }, () => [h]),
      );
      const freshB = replay(
        cfg,
        Array.from({ length: layersOf(cfg) }, () => [h]),
      );
      expectBitIdentical(outA, feed(freshA, cfg, a), 'parent after the fork');
      expectBitIdentical(outB, feed(freshB, cfg, b), 'fork');
      if (!quantized(cfg)) {
        const ref = replayRef(
          cfg,
          Array.from({ length: layersOf(cfg) }, () => [h]),
        );
        expectClose(outB, ref.attend(0, b.q, b.k, b.v), tolFor(cfg.scale, cfg.headDim), 'fork vs float64');
      }
      // and on: the last layer too, and further steps into the same pages
      const last = layersOf(cfg) - 1;
      const c = stream(cfg, 2, 4);
      expectBitIdentical(feed(child, cfg, c, [1, 1], last), feed(freshB, cfg, c, [2], last), 'fork, last layer');
      expectBitIdentical(feed(parent, cfg, c, [2], last), feed(freshA, cfg, c, [1, 1], last), 'parent, last layer');
      for (const x of [freshA, freshB, child]) x.dispose();
    });
  }

  it('prefill == decode steps == chunked prefill inside a fork (bit-identical), windows wrapped', () => {
    for (const cfg of CFGS) {
      const parent = make(cfg);
      feed(parent, cfg, stream(cfg, 90, 5), [90]);
      const s = stream(cfg, 80, 6);
      const outs = [[80], ones(80), unevenChunks(new Rng(7), 80)].map((chunks) => {
        const child = parent.fork();
        const out = feed(child, cfg, s, chunks);
        child.dispose();
        return out;
      });
      expectBitIdentical(outs[1], outs[0], `${cfgName(cfg)}: decode steps vs prefill`);
      expectBitIdentical(outs[2], outs[0], `${cfgName(cfg)}: chunked vs prefill`);
    }
  });

  it('fork chains: a fork of a fork of a fork, disposed in any order, each continuing as its own history', () => {
    const cfg = CFGS[2];
    const h = stream(cfg, 60, 8);
    const root = make(cfg);
    feed(root, cfg, h, [60]);
    const chain: KVCache[] = [root];
    const histories: Stream[][] = [[h]];
    for (let i = 1; i <= 4; i++) {
      const s = stream(cfg, 5 + 11 * i, 10 + i);
      const next = chain[i - 1].fork();
      feed(next, cfg, s, [s.n]);
      chain.push(next);
      histories.push([...histories[i - 1], s]);
    }
    // dispose the root and one in the middle first: the others keep their (shared) pages
    chain[0].dispose();
    chain[2].dispose();
    for (const i of [1, 3, 4]) {
      const s = stream(cfg, 3, 20 + i);
      const fresh = replay(cfg, [histories[i]]);
      expectBitIdentical(feed(chain[i], cfg, s, ones(3)), feed(fresh, cfg, s), `link ${i}`);
      fresh.dispose();
      chain[i].dispose();
    }
  });

  it('truncate and reset on one never touch the other', () => {
    for (const cfg of [CFGS[0], CFGS[3]]) {
      const parent = make(cfg);
      const h = stream(cfg, 130, 30);
      feed(parent, cfg, h);
      const child = parent.fork();
      child.truncate(40);
      const s = stream(cfg, 4, 31);
      const fresh = replay(cfg, [[h]]);
      expectBitIdentical(
        feed(parent, cfg, s),
        feed(fresh, cfg, s),
        `${cfgName(cfg)}: parent after the fork's truncate`,
      );
      parent.truncate(10);
      const kept = replay(cfg, [[slice(cfg, h, 0, 40)]]);
      expectBitIdentical(feed(child, cfg, s), feed(kept, cfg, s), `${cfgName(cfg)}: fork after the parent's truncate`);
      parent.reset();
      const again = replay(cfg, [[slice(cfg, h, 0, 40), s]]);
      const t = stream(cfg, 2, 32);
      expectBitIdentical(feed(child, cfg, t), feed(again, cfg, t), `${cfgName(cfg)}: fork after the parent's reset`);
      for (const x of [fresh, kept, again, child]) x.dispose();
    }
  });

  it('save() of a fork writes a complete cache, loadable after its parent is gone', () => {
    for (const cfg of CFGS) {
      const parent = make(cfg);
      const h = stream(cfg, 120, 40);
      feed(parent, cfg, h);
      const child = parent.fork();
      const s = stream(cfg, 3, 41);
      feed(child, cfg, s, [3]);
      const bytes = child.save();
      parent.dispose();
      child.dispose();
      const loaded = KVCache.load(bytes);
      const fresh = replay(cfg, [[h, s]]);
      const t = stream(cfg, 5, 42);
      expectBitIdentical(feed(loaded, cfg, t, [2, 3]), feed(fresh, cfg, t), `${cfgName(cfg)}: loaded fork`);
      expect(fresh.save(), 'the same bytes as a fresh cache of the same history').toEqual(loaded.save());
      loaded.dispose();
      fresh.dispose();
    }
  });

  it("a fork shares its parent's pages: it costs its descriptor and tables, then a copy of each page it writes", () => {
    const cfg: Cfg = { layers: 2, heads: 8, kvHeads: 2, headDim: 64, maxTokens: 1000 };
    const parent = make(cfg);
    const h = stream(cfg, 130, 50); // 3 pages per (layer, kv head, K|V), the last one partly filled
    for (let l = 0; l < 2; l++) feed(parent, cfg, h, [130], l);
    const before = heldBytes();
    const child = parent.fork();
    expect(child.byteLength, 'byteLength counts shared pages').toBe(parent.byteLength);
    const forkCost = heldBytes() - before;
    expect(forkCost, 'the fork itself copies no page').toBeLessThan(pageBytesFor(cfg));
    // a decode step in layer 0 writes into the shared, partly filled last page of each kv head's K and V
    const s = stream(cfg, 1, 51);
    feed(child, cfg, s, [1]);
    expect(heldBytes() - before - forkCost, 'copy on write: one page per kv head, K and V').toBe(
      2 * 2 * pageBytesFor(cfg),
    );
    // the parent's next step in the same layer now owns the old page alone: no copy
    const held = heldBytes();
    feed(parent, cfg, s, [1]);
    expect(heldBytes()).toBe(held);
    // disposing the parent leaves the fork's shared pages alive
    parent.dispose();
    const fresh = replay(cfg, [[h, s], [h]]);
    const t = stream(cfg, 2, 52);
    expectBitIdentical(feed(child, cfg, t, [2], 1), feed(fresh, cfg, t, [2], 1), 'fork after its parent was disposed');
    fresh.dispose();
    child.dispose();
  });

  it('fork() of a disposed cache throws like any other use', () => {
    const c = make(CFGS[0]);
    c.dispose();
    expectThrows(() => c.fork(), Error, [/disposed/]);
  });

  it('random attend/fork/truncate/reset/dispose/save/load over several caches (fast-check), each equal to its own history', () => {
    const Op = fc.oneof(
      {
        weight: 4,
        arbitrary: fc.record({
          op: fc.constant('attend' as const),
          who: fc.nat(),
          layer: fc.nat(1),
          n: fc.integer({ min: 1, max: 40 }),
          seed: fc.nat(),
        }),
      },
      { weight: 2, arbitrary: fc.record({ op: fc.constant('fork' as const), who: fc.nat() }) },
      {
        weight: 2,
        arbitrary: fc.record({ op: fc.constant('truncate' as const), who: fc.nat(), percent: fc.nat(100) }),
      },
      fc.record({ op: fc.constant('reset' as const), who: fc.nat() }),
      fc.record({ op: fc.constant('dispose' as const), who: fc.nat() }),
      fc.record({ op: fc.constant('reload' as const), who: fc.nat() }),
    );
    fc.assert(
      fc.property(fc.constantFrom(...CFGS), fc.array(Op, { minLength: 5, maxLength: 40 }), (cfg, ops) => {
        interface Live {
          cache: KVCache;
          histories: Stream[][];
        }
        const live: Live[] = [
          { cache: new KVCache(cfg as never), histories: Array.from({ length: layersOf(cfg) }, () => []) },
        ];
        try {
          for (const o of ops) {
            if (live.length === 0)
              live.push({
                cache: new KVCache(cfg as never),
                histories: Array.from({ length: layersOf(cfg) }, () => []),
              });
            const i = o.who % live.length;
            const x = live[i];
            const tokensIn = (l: number) => x.histories[l].reduce((a, s) => a + s.n, 0);
            if (o.op === 'attend') {
              const layer = o.layer % layersOf(cfg);
              const n = cfg.window ? o.n : Math.min(o.n, cfg.maxTokens - tokensIn(layer));
              if (n === 0) continue;
              const s = stream(cfg, n, o.seed);
              const got = x.cache.attend(layer, s.q, s.k, s.v);
              const fresh = replay(cfg, x.histories);
              expectBitIdentical(
                got,
                fresh.attend(layer, s.q, s.k, s.v),
                `${cfgName(cfg)}: cache ${i} layer ${layer} vs a fresh cache of its history`,
              );
              fresh.dispose();
              if (!quantized(cfg)) {
                expectClose(
                  got,
                  replayRef(cfg, x.histories).attend(layer, s.q, s.k, s.v),
                  tolFor(cfg.scale, cfg.headDim),
                  'vs float64',
                );
              }
              x.histories[layer].push(s);
            } else if (o.op === 'fork') {
              live.push({ cache: x.cache.fork(), histories: x.histories.map((h) => [...h]) });
            } else if (o.op === 'truncate' || o.op === 'reset') {
              // truncate to a share of layer 0's length (a share of nothing: past every layer, a no-op)
              const n = o.op === 'reset' ? 0 : Math.floor((tokensIn(0) * o.percent) / 100);
              try {
                x.cache.truncate(n);
              } catch (e) {
                expect(e, 'only a window may refuse a truncate').toBeInstanceOf(RangeError);
                expect(cfg.window).toBeDefined();
                continue;
              }
              x.histories = x.histories.map((h) => {
                const all = h.length ? concatStreams(h) : undefined;
                return all && all.n > n ? [slice(cfg, all, 0, n)].filter((s) => s.n > 0) : h;
              });
            } else if (o.op === 'dispose') {
              x.cache.dispose();
              live.splice(i, 1);
            } else {
              const loaded = KVCache.load(x.cache.save());
              x.cache.dispose();
              x.cache = loaded;
            }
          }
        } finally {
          for (const x of live) x.cache.dispose();
        }
      }),
      {
        numRuns: 60,
        seed: 1234,
        // the copy-on-write case, always: a fork rolls back into the shared last page and writes there
        examples: [
          [
            CFGS[0],
            [
              { op: 'attend', who: 0, layer: 0, n: 40, seed: 1 },
              { op: 'fork', who: 0 },
              { op: 'truncate', who: 1, percent: 50 },
              { op: 'attend', who: 1, layer: 0, n: 5, seed: 2 },
              { op: 'attend', who: 0, layer: 0, n: 1, seed: 3 },
            ],
          ],
        ] as never,
      },
    );
  }, 120_000);
});

function concatStreams(parts: Stream[]): Stream {
  return {
    q: concat(parts.map((s) => s.q)),
    k: concat(parts.map((s) => s.k)),
    v: concat(parts.map((s) => s.v)),
    n: parts.reduce((a, s) => a + s.n, 0),
  };
}
