// perLayer (API.md, KVCache options): each layer of one cache with its own window, sinks, rope, softcap,
// scale, sink logits or ALiBi. The contract: a layer computes exactly (the same bits) what a one-layer cache
// of its own settings computes, which matches the float64 reference; every identity holds per layer
// (prefill == decode == chunked, fork == fresh, save/load continues; any thread count is threads.test.ts's); a windowed layer holds its ring only; errors name
// the entry's path.

import { beforeEach, describe, expect, it } from 'vitest';
import { KVCache, cacheOptionsFromConfig, init } from '../src/index.js';
import { readFileSync } from 'node:fs';
import {
  type Cfg,
  expectBitIdentical,
  expectClose,
  expectThrows,
  feed,
  feedRef,
  fill,
  ones,
  parseSave,
  slice,
  stream,
  tolFor,
  withEachBuild,
} from './support/util.js';
import { ReferenceCache } from './support/reference.js';

type Entry = Record<string, unknown> | null;
type Mixed = Cfg & { layers: number; perLayer: Entry[] };

/** A window's ring in a perLayer cache: the window plus a chunk's 255 slots, at most maxTokens (API.md). */
const ringOf = (window: number, maxTokens: number) => Math.min(maxTokens, window + 255);

/** The one-layer cache whose settings layer `l` of `cfg` has (what that layer must compute, bit for bit). */
function layerCfg(cfg: Mixed, l: number): Cfg {
  const { perLayer, layers: _, ...wide } = cfg;
  const own: Record<string, unknown> = { ...wide, ...(perLayer[l] ?? {}) };
  for (const key of Object.keys(own)) if (own[key] === null) delete own[key];
  if (typeof own.window === 'number') own.maxTokens = ringOf(own.window, cfg.maxTokens);
  else delete own.sinks;
  return own as unknown as Cfg;
}

const gptOssLike = (heads: number) => Array.from({ length: heads }, (_, h) => ((h * 7) % 11) / 2 - 2);

/** Four kinds of layer in one cache: global, windowed with its own rope and sinks, softcapped with sink logits, ALiBi. */
const MIXED: Mixed = {
  layers: 4,
  heads: 4,
  kvHeads: 2,
  headDim: 32,
  maxTokens: 400,
  rope: { theta: 1e6, scaling: { type: 'linear', factor: 8 } },
  perLayer: [
    null,
    { window: 24, sinks: 2, rope: { theta: 10000 } },
    { softcap: 20, scale: 0.1, sinkLogits: gptOssLike(4) },
    { rope: null, alibi: true },
  ],
};

/** Gemma-3-shaped (every third layer global, windows with their own base) and gpt-oss-shaped (alternating, sinks). */
const GEMMA_LIKE: Mixed = {
  layers: 3,
  heads: 4,
  kvHeads: 1,
  headDim: 64,
  maxTokens: 400,
  scale: 1 / 8,
  window: 40,
  rope: { theta: 1e6, scaling: { type: 'linear', factor: 8 } },
  perLayer: [{ rope: { theta: 10000 } }, { rope: { theta: 10000 } }, { window: null }],
};
const GPT_OSS_LIKE: Mixed = {
  layers: 2,
  heads: 8,
  kvHeads: 2,
  headDim: 32,
  maxTokens: 400,
  rope: { theta: 150000, scaling: { type: 'yarn', factor: 32, originalMaxPositions: 64, truncate: false } },
  perLayer: [{ window: 16, sinkLogits: gptOssLike(8) }, { sinkLogits: gptOssLike(8).map((x) => -x) }],
};

/** Layers that differ in their rope only (a NoPE layer among them): each must rotate by its own. */
const ROPES_ONLY: Mixed = {
  layers: 3,
  heads: 4,
  kvHeads: 2,
  headDim: 32,
  maxTokens: 300,
  rope: { theta: 1e6, scaling: { type: 'linear', factor: 8 } },
  perLayer: [null, { rope: { theta: 10000, interleaved: true } }, { rope: null }],
};

const CHUNKS = [130, 1, 1, 60, ...ones(8), 60];

withEachBuild(
  'perLayer',
  (_build, make) => {
    for (const [name, cfg] of [
      ['four kinds of layer', MIXED],
      ['Gemma-3-shaped', GEMMA_LIKE],
      ['gpt-oss-shaped', GPT_OSS_LIKE],
      ['layers that differ in their rope only', ROPES_ONLY],
      ['int8, four kinds of layer', { ...MIXED, dtype: 'int8' } as Mixed],
    ] as const) {
      it(`${name}: each layer == a cache of its own settings == the float64 reference; prefill == chunked == decode`, () => {
        const s = stream(cfg, 260, 7);
        const mixed = make(cfg);
        const prefill = make(cfg);
        const decode = make(cfg);
        for (let l = 0; l < cfg.layers; l++) {
          const own = layerCfg(cfg, l);
          // layers get different streams: a layer that read another's keys would show
          const ls = { ...s, q: s.q.map((x) => x * (1 + l / 8)) };
          const chunked = feed(mixed, cfg, ls, CHUNKS, l);
          expectBitIdentical(chunked, feed(make(own), own, ls, CHUNKS), `layer ${l} == a cache of its settings`);
          const tol = cfg.dtype === 'int8' ? { atol: 0.05, rtol: 0 } : tolFor(own.scale, own.headDim);
          expectClose(chunked, feedRef(new ReferenceCache(own), own, ls, CHUNKS), tol, `layer ${l}`, [
            s.n,
            cfg.heads,
            cfg.headDim,
          ]);
          expectBitIdentical(feed(prefill, cfg, ls, [s.n], l), chunked, `layer ${l}: prefill == chunked`);
          expectBitIdentical(feed(decode, cfg, ls, [s.n - 12, ...ones(12)], l), chunked, `layer ${l}: decode`);
          expect(mixed.lengthOf(l)).toBe(s.n);
        }
      }, 60_000);
    }

    it('a tree of drafts on every layer == the same tree on a cache of its own settings; accept continues', () => {
      const cfg = MIXED;
      const history = stream(cfg, 150, 21);
      const parents = [-1, 0, 0, 1, 3, -1, 5, 2];
      const path = [0, 1, 3, 4];
      const drafts = stream(cfg, parents.length, 22);
      const next = stream(cfg, 3, 23);
      const mixed = make(cfg);
      const owns = Array.from({ length: cfg.layers }, (_, l) => make(layerCfg(cfg, l)));
      for (let l = 0; l < cfg.layers; l++) {
        const own = layerCfg(cfg, l);
        expectBitIdentical(
          feed(mixed, cfg, history, [history.n], l),
          feed(owns[l], own, history, [history.n]),
          `layer ${l}`,
        );
      }
      for (let l = 0; l < cfg.layers; l++) {
        const got = mixed.attendTree(l, drafts.q, drafts.k, drafts.v, parents);
        expectBitIdentical(got, owns[l].attendTree(0, drafts.q, drafts.k, drafts.v, parents), `layer ${l}: tree`);
      }
      mixed.accept(path);
      for (const own of owns) own.accept(path);
      for (let l = 0; l < cfg.layers; l++) {
        expect(mixed.lengthOf(l)).toBe(history.n + path.length);
        const got = feed(mixed, cfg, next, [1, 2], l);
        expectBitIdentical(got, feed(owns[l], layerCfg(cfg, l), next, [3]), `layer ${l}: after accept`);
      }
    });

    it('fork == fresh and save/load continues, every layer, from layers at different lengths', () => {
      const cfg = MIXED;
      const s = stream(cfg, 200, 11);
      const whole = make(cfg);
      const wants = Array.from({ length: cfg.layers }, (_, l) => feed(whole, cfg, s, [s.n], l));
      const cuts = [150, 120, 90, 60];
      const parent = make(cfg);
      cuts.forEach((cut, l) => {
        feed(parent, cfg, slice(cfg, s, 0, cut), [cut], l);
      });
      const fork = parent.fork();
      const loaded = KVCache.load(parent.save());
      const pieces = KVCache.load([parent.save({ to: 50 }), parent.save({ from: 50 })]);
      for (const [label, c] of [
        ['fork', fork],
        ['loaded', loaded],
        ['loaded from pieces', pieces],
        ['parent', parent],
      ] as const) {
        cuts.forEach((cut, l) => {
          const rest = slice(cfg, s, cut, s.n);
          const got = feed(c, cfg, rest, ones(rest.n), l);
          expectBitIdentical(got, wants[l].subarray(cut * cfg.heads * cfg.headDim), `${label}: layer ${l} continues`);
        });
      }
      for (const c of [fork, loaded, pieces]) c.dispose();
    });

    it("a windowed layer's save holds its ring only, and a global layer under a cache-wide window stops at maxTokens", () => {
      const cfg = MIXED;
      const s = stream(cfg, 330, 12);
      const cache = make(cfg);
      feed(cache, cfg, s, [s.n], 1);
      feed(cache, cfg, slice(cfg, s, 0, 10), [10], 0);
      const bytes = cache.save();
      // layer 1: its 2 sinks, then the ring's 279 positions from 51 (24 + 255 slots)
      expect(parseSave(bytes).header.layers.slice(0, 2)).toEqual([
        { from: 0, to: 10, held: 0 },
        { from: 0, to: 330, held: 51 },
      ]);
      const loaded = KVCache.load(bytes);
      const next = stream(cfg, 3, 4);
      expectBitIdentical(
        feed(loaded, cfg, next, ones(3), 1),
        feed(cache, cfg, next, ones(3), 1),
        'loaded layer 1 continues',
      );
      expectThrows(() => loaded.truncate(40), RangeError, [/layer 1's tokens/]);
      loaded.dispose();
      const gemma = make(GEMMA_LIKE);
      const long = stream(GEMMA_LIKE, 401, 6);
      feed(gemma, GEMMA_LIKE, long, [long.n], 0); // a windowed layer runs past maxTokens
      expectThrows(() => feed(gemma, GEMMA_LIKE, long, [long.n], 2), RangeError, [/layer 2 holds 0 of maxTokens 400/]);
    });

    it('truncate rolls every layer back; a windowed layer refuses what its ring evicted', () => {
      const cfg = MIXED;
      const s = stream(cfg, 330, 5);
      const cache = make(cfg);
      for (let l = 0; l < cfg.layers; l++) feed(cache, cfg, s, [s.n], l);
      // layer 1's ring holds 279 (24 + 255) slots after its 2 sinks: of 330 tokens, positions from 51; n = 40 needs 17 …
      expectThrows(() => cache.truncate(40), RangeError, [/layer 1's tokens/, /ring of 279 slots/]);
      expect(cache.lengthOf(0)).toBe(330);
      cache.truncate(300);
      const fresh = make(cfg);
      for (let l = 0; l < cfg.layers; l++) {
        feed(fresh, cfg, slice(cfg, s, 0, 300), [300], l);
        const next = stream(cfg, 5, 99 + l);
        expectBitIdentical(feed(cache, cfg, next, ones(5), l), feed(fresh, cfg, next, ones(5), l), `layer ${l}`);
      }
    });
  },
  1,
);

describe('perLayer memory', () => {
  beforeEach(async () => {
    await init({ threads: 1 });
  });

  it('a windowed layer holds its ring, a global layer beside it grows', () => {
    const cfg: Cfg & { perLayer: Entry[] } = {
      layers: 2,
      heads: 2,
      headDim: 64,
      maxTokens: 4096,
      perLayer: [{ window: 64 }, null],
    };
    const cache = new KVCache(cfg as never);
    fill(cache, cfg, 4000, 0);
    const windowed = cache.byteLength;
    fill(cache, cfg, 4000, 1);
    const global = cache.byteLength - windowed;
    // the ring: 64 + 255 slots, 5 pages per (kv head, K|V); the global layer: 63 pages each
    const pages = (n: number) => n * 2 * 2 * (64 * 64 * 4 + 64);
    expect(windowed).toBeLessThan(pages(5) + 4096);
    expect(global).toBeGreaterThanOrEqual(pages(63));
    cache.dispose();
  });

  it('Gemma 3 1B at 32,768 tokens holds at most 1.25× what its 4 global layers alone need', () => {
    const config = JSON.parse(readFileSync(new URL('./fixtures/configs/gemma-3-1b-it.json', import.meta.url), 'utf8'));
    const options = cacheOptionsFromConfig(config, { maxTokens: 32768 });
    const cfg = options as unknown as Cfg;
    const gemma = new KVCache(options);
    for (let l = 0; l < 26; l++) fill(gemma, cfg, 32768, l, 4096);
    const mixed = gemma.byteLength;
    gemma.dispose();
    const { perLayer: _, ...wide } = options;
    const globals = new KVCache({ ...wide, layers: 4 });
    for (let l = 0; l < 4; l++) fill(globals, cfg, 32768, l, 4096);
    const alone = globals.byteLength;
    globals.dispose();
    // 22 rings of 512 + 255 slots (12 pages) beside 4 layers of 32,768 positions (512 pages)
    expect(mixed / alone).toBeLessThanOrEqual(1.25);
    expect(mixed / alone).toBeGreaterThan(1);
    console.log(
      `Gemma-3-1B-shaped cache at 32768 tokens: ${mixed} bytes, global layers alone ${alone} (${(mixed / alone).toFixed(4)}×)`,
    );
  }, 60_000);
});

describe('perLayer option', () => {
  beforeEach(async () => {
    await init({ threads: 1 });
  });
  const base = { layers: 3, heads: 2, headDim: 8, maxTokens: 64 };
  const make =
    (perLayer: unknown, extra: object = {}) =>
    () =>
      new KVCache({ ...base, ...extra, perLayer } as never).dispose();

  it('null and {} are the cache-wide settings: the same bits as no perLayer, and save() keeps the entries', () => {
    const cfg: Cfg = { ...base, window: 16, rope: { theta: 500 } };
    const s = stream(cfg, 100, 1);
    const plain = new KVCache(cfg as never);
    const mixed = new KVCache({ ...cfg, perLayer: [null, {}, { window: 16 }] } as never);
    for (let l = 0; l < 3; l++) {
      // the rings differ (maxTokens vs. window + 255 slots), the attention does not
      expectBitIdentical(feed(mixed, cfg, s, [s.n], l), feed(plain, cfg, s, [s.n], l), `layer ${l}`);
    }
    const header = parseSave(mixed.save()).header.options as { perLayer: unknown };
    expect(header.perLayer).toEqual([null, null, { window: 16 }]);
    plain.dispose();
    mixed.dispose();
  });

  it('save() stores each entry resolved; load() rebuilds it', () => {
    const cache = new KVCache({
      ...base,
      window: 8,
      perLayer: [{ window: null }, { rope: { theta: 10, dims: 4 }, alibi: null }, { alibi: true, softcap: 0 }],
    } as never);
    const options = parseSave(cache.save()).header.options as { perLayer: unknown };
    expect(options.perLayer).toEqual([
      { window: null },
      { rope: { theta: 10, dims: 4, interleaved: false }, alibi: null },
      { softcap: null, alibi: [2 ** -4, 2 ** -8] },
    ]);
    KVCache.load(cache.save()).dispose();
    cache.dispose();
  });

  it('errors name the entry and its key, what it takes and what came', () => {
    expectThrows(make({}), TypeError, [/options\.perLayer must be an array of options\.layers \(3\)/]);
    expectThrows(make([null, null]), RangeError, [/options\.perLayer must be one entry per layer/, /length 2/]);
    expectThrows(make([null, 4, null]), TypeError, [/options\.perLayer\[1\] must be an object, got 4/]);
    expectThrows(make([null, null, { windw: 4 }]), TypeError, [
      /options\.perLayer\[2\]\.windw is not an option \(did you mean options\.perLayer\[2\]\.window\?\)/,
    ]);
    expectThrows(make([null, null, { layers: 4 }]), TypeError, [/options\.perLayer\[2\]\.layers is not an option/]);
    expectThrows(make([null, { window: 65 }, null]), RangeError, [
      /options\.perLayer\[1\]\.window must be at most options\.maxTokens \(64\)/,
    ]);
    expectThrows(make([null, { window: 0 }, null]), RangeError, [/options\.perLayer\[1\]\.window/]);
    expectThrows(make([{ sinks: -1 }, null, null]), RangeError, [/options\.perLayer\[0\]\.sinks/]);
    expectThrows(make([{ scale: 0 }, null, null]), RangeError, [/options\.perLayer\[0\]\.scale/]);
    expectThrows(make([{ softcap: 'x' }, null, null]), TypeError, [/options\.perLayer\[0\]\.softcap/]);
    expectThrows(make([{ sinkLogits: [1] }, null, null]), RangeError, [/options\.perLayer\[0\]\.sinkLogits/]);
    expectThrows(make([null, null, { rope: { theta: 10, scaling: { type: 'linear', factor: -2 } } }]), RangeError, [
      /options\.perLayer\[2\]\.rope\.scaling\.factor/,
    ]);
    expectThrows(make([null, null, { rope: { thetta: 10 } }]), TypeError, [
      /options\.perLayer\[2\]\.rope\.thetta is not an option \(did you mean options\.perLayer\[2\]\.rope\.theta\?\)/,
    ]);
    // ALiBi replaces rope: on a layer with the cache-wide rope, or its own, it is refused
    expectThrows(make([{ alibi: true }, null, null], { rope: {} }), RangeError, [
      /options\.perLayer\[0\]\.alibi/,
      /rope: null/,
    ]);
    expectThrows(make([{ rope: {} }, null, null], { alibi: true }), RangeError, [/options\.perLayer\[0\]\.rope/]);
    // what an entry may turn off stays valid
    make([{ rope: null, alibi: true }, { window: null }, { alibi: null }], { rope: {} })();
  });
});
