// KVCache.attendMany (API.md, "Many caches at once"): one call for a batch of caches gives every item the
// same bits as attend on that item alone, at 1, 2 and 3 threads, over random mixes of forks of one prefix
// and strangers, windows, every dtype, caches whose layers differ (perLayer), rope, GQA and steps of one or many tokens (more than a windowed cache's
// chunk, so a batch takes several rounds); a refused call (a bad item, a failed page reservation) leaves
// every cache as it was, which its next outputs show bit for bit against a twin that never saw the call.

import { fileURLToPath } from 'node:url';
import { afterEach, describe, expect, it } from 'vitest';
import { loadModel } from '../examples/model/index.mjs';
import { init, KVCache } from '../src/index.js';
import { activeInstance } from '../src/init.js';
import {
  Rng,
  type Cfg,
  cfgName,
  expectBitIdentical,
  exhaustHeap,
  expectThrows,
  feed,
  forEachBuild,
  heap,
  pageBytesFor,
  qWidth,
  refuseGrowth,
  stream,
} from './support/util.js';

/** A cache whose layers differ (perLayer): layer 0 windowed with a rope base of its own, layer 1 global. */
const PER_LAYER_WINDOWED_FIRST = {
  heads: 8,
  kvHeads: 2,
  headDim: 64,
  maxTokens: 700,
  layers: 2,
  dtype: 'bfloat16',
  rope: { theta: 500000 },
  perLayer: [{ window: 100, sinks: 2, rope: { theta: 10000 } }, null],
} as Cfg;

/** Caches of one head shape, with options that differ in everything else. */
const SHAPES: Array<{ name: string; cfgs: Cfg[] }> = [
  {
    name: 'GQA 8/2 × 64',
    cfgs: [
      { heads: 8, kvHeads: 2, headDim: 64, maxTokens: 700 },
      { heads: 8, kvHeads: 2, headDim: 64, maxTokens: 700, dtype: 'int8' },
      { heads: 8, kvHeads: 2, headDim: 64, maxTokens: 120, window: 100, sinks: 2, rope: {} },
      { heads: 8, kvHeads: 2, headDim: 64, maxTokens: 700, rope: { theta: 500000 }, softcap: 30 },
      { heads: 8, kvHeads: 2, headDim: 64, maxTokens: 700, dtype: 'bfloat16', rope: {} },
      { heads: 8, kvHeads: 2, headDim: 64, maxTokens: 700, dtype: 'int4' },
      // perLayer: the batch's layer 0 is this mixed cache's windowed layer (its own descriptor) ...
      PER_LAYER_WINDOWED_FIRST,
      // ... and this one's global layer
      {
        heads: 8,
        kvHeads: 2,
        headDim: 64,
        maxTokens: 700,
        layers: 2,
        perLayer: [null, { window: 100, sinks: 2 }],
      } as Cfg,
    ],
  },
  {
    name: 'MHA 4 × 24',
    cfgs: [
      { heads: 4, headDim: 24, maxTokens: 700, rope: {} },
      { heads: 4, headDim: 24, maxTokens: 90, window: 80, dtype: 'int8' },
      { heads: 4, headDim: 24, maxTokens: 700, sinkLogits: [0.5, -1, 2, 0] },
      { heads: 4, headDim: 24, maxTokens: 700, dtype: 'bfloat16', softcap: 20 },
    ],
  },
];

interface Family {
  cfg: Cfg;
  /** the prefix every member holds, then each member's own tokens */
  prefix: number;
  own: number[];
}

/** A random mix: a few families (a prefix and forks of it, each fed its own tokens after) and strangers. */
function randomMix(rng: Rng, cfgs: Cfg[]): Family[] {
  const families: Family[] = [];
  const count = 2 + rng.int(0, 3 - 1);
  for (let f = 0; f < count; f++) {
    const cfg = cfgs[rng.int(0, cfgs.length - 1)];
    const members = rng.int(0, 3 - 1) === 0 ? 1 : 2 + rng.int(0, 3 - 1);
    families.push({
      cfg,
      prefix: 1 + rng.int(0, 300 - 1),
      own: Array.from({ length: members }, () => (rng.int(0, 3 - 1) === 0 ? 0 : 1 + rng.int(0, 90 - 1))),
    });
  }
  return families;
}

/** The caches of the families, built the same way each time (so twins are the same history). */
function buildCaches(families: Family[], seed: number): { caches: KVCache[]; cfgs: Cfg[] } {
  const caches: KVCache[] = [];
  const cfgs: Cfg[] = [];
  families.forEach((f, i) => {
    const base = new KVCache(f.cfg as never);
    feed(base, f.cfg, stream(f.cfg, f.prefix, seed + 100 * i));
    f.own.forEach((n, j) => {
      const c = j === f.own.length - 1 ? base : base.fork();
      if (n > 0) feed(c, f.cfg, stream(f.cfg, n, seed + 100 * i + j + 1));
      caches.push(c);
      cfgs.push(f.cfg);
    });
  });
  return { caches, cfgs };
}

/** A step for each cache: T tokens (mostly 1, sometimes several, sometimes more than a window's chunk). */
function steps(rng: Rng, cfgs: Cfg[], seed: number) {
  return cfgs.map((cfg, i) => {
    const pick = rng.int(0, 6 - 1);
    const n = pick < 3 ? 1 : pick < 5 ? 2 + rng.int(0, 20 - 1) : 40 + rng.int(0, 60 - 1);
    return stream(cfg, n, seed + i);
  });
}

function alone(caches: KVCache[], s: ReturnType<typeof steps>): Float32Array[] {
  return caches.map((c, i) => c.attend(0, s[i].q, s[i].k, s[i].v));
}

function together(caches: KVCache[], s: ReturnType<typeof steps>): Float32Array[] {
  return KVCache.attendMany(
    0,
    caches.map((cache, i) => ({ cache, q: s[i].q, k: s[i].k, v: s[i].v })),
  );
}

forEachBuild('attendMany', (build) => {
  const live: KVCache[] = [];
  afterEach(() => {
    for (const c of live.splice(0)) c.dispose();
  });

  for (const threads of [1, 2, 3]) {
    for (const shape of SHAPES) {
      it(`${shape.name}, ${threads} threads: random mixes of forks and strangers, the bits of attend on each alone`, async () => {
        await init({ build, threads });
        const rng = new Rng(threads * 31 + shape.cfgs.length);
        const pool = activeInstance().pool;
        const before = pool?.threadedCalls ?? 0;
        for (let round = 0; round < 3; round++) {
          const families = randomMix(rng, shape.cfgs);
          const a = buildCaches(families, 10 * round);
          const b = buildCaches(families, 10 * round);
          live.push(...a.caches, ...b.caches);
          for (let step = 0; step < 3; step++) {
            const s = steps(rng, a.cfgs, 1000 * round + 10 * step);
            const got = together(a.caches, s);
            const want = alone(b.caches, s);
            want.forEach((w, i) => {
              expectBitIdentical(got[i], w, `round ${round} step ${step} item ${i} (${cfgName(a.cfgs[i])})`);
            });
            expect(a.caches.map((c) => c.length)).toEqual(b.caches.map((c) => c.length));
          }
        }
        if (threads > 1) expect(pool?.threadedCalls ?? 0, 'batches went across threads').toBeGreaterThan(before);
      }, 120_000);
    }
  }

  for (const threads of [1, 2, 3]) {
    it(`${threads} threads: forks of a prefix longer than a chunk (a cascade over shared pages) against each alone`, async () => {
      await init({ build, threads });
      const rng = new Rng(threads);
      for (const cfg of [
        { heads: 8, kvHeads: 2, headDim: 64, maxTokens: 2400 },
        { heads: 8, kvHeads: 2, headDim: 64, maxTokens: 2400, dtype: 'int8', rope: {} },
        { heads: 4, headDim: 24, maxTokens: 2400, alibi: true, softcap: 20 },
      ] as Cfg[]) {
        // 2,100 tokens: shared pages reach past the first chunk of 1,024 positions; forks of one, two and
        // three decode tokens after 0 to 70 tokens of their own (some past a page of their own)
        const families: Family[] = [{ cfg, prefix: 2100, own: Array.from({ length: 19 }, () => rng.int(0, 70)) }];
        const a = buildCaches(families, 3);
        const b = buildCaches(families, 3);
        live.push(...a.caches, ...b.caches);
        for (let step = 0; step < 2; step++) {
          const s = a.cfgs.map((c, i) => stream(c, 1 + rng.int(0, 2), 500 + 40 * step + i));
          const got = together(a.caches, s);
          alone(b.caches, s).forEach((w, i) => {
            expectBitIdentical(got[i], w, `${cfgName(cfg)} step ${step} fork ${i}`);
          });
        }
      }
    }, 120_000);
  }

  it('a perLayer cache’s windowed layer and its global layer, beside bfloat16 and int4 caches and forks: the bits of attend alone at 1, 2 and 3 threads', async () => {
    const cfgs = [
      PER_LAYER_WINDOWED_FIRST,
      { heads: 8, kvHeads: 2, headDim: 64, maxTokens: 700, dtype: 'bfloat16' },
      { heads: 8, kvHeads: 2, headDim: 64, maxTokens: 700, dtype: 'int4', rope: {} },
    ] as Cfg[];
    for (const threads of [1, 2, 3]) {
      await init({ build, threads });
      const build2 = () =>
        cfgs.flatMap((cfg, i) => {
          const base = new KVCache(cfg as never);
          for (const layer of [0, 1]) {
            if (layer < ((cfg as { layers?: number }).layers ?? 1))
              feed(base, cfg, stream(cfg, 260, 7 * i + layer), [260], layer);
          }
          return [base, base.fork()];
        });
      const a = build2();
      const b = build2();
      live.push(...a, ...b);
      const cfgOf = (i: number) => cfgs[i >> 1];
      for (let step = 0; step < 4; step++) {
        // the mixed caches on both of their layers; the others (one layer) on layer 0
        for (const layer of [0, 1]) {
          const idx = a.map((_, i) => i).filter((i) => layer === 0 || cfgOf(i) === PER_LAYER_WINDOWED_FIRST);
          const s = idx.map((i, j) =>
            stream(cfgOf(i), step === 3 ? 30 + j : 1 + (j % 3), 900 + 50 * step + 10 * layer + j),
          );
          const got = KVCache.attendMany(
            layer,
            idx.map((i, j) => ({ cache: a[i], q: s[j].q, k: s[j].k, v: s[j].v })),
          );
          idx.forEach((i, j) => {
            const want = b[i].attend(layer, s[j].q, s[j].k, s[j].v);
            expectBitIdentical(
              got[j],
              want,
              `${threads} threads, step ${step}, layer ${layer}, item ${j} (${cfgName(cfgOf(i))})`,
            );
          });
        }
      }
      for (const c of live.splice(0)) c.dispose();
    }
  }, 120_000);

  it('a cache with drafts pending (attendTree) is refused, as attend refuses it, and nothing is written', async () => {
    await init({ build, threads: 1 });
    const cfg: Cfg = { heads: 4, kvHeads: 2, headDim: 16, maxTokens: 100 };
    const [a, b, twinA, twinB] = [0, 1, 2, 3].map(() => new KVCache(cfg as never));
    live.push(a, b, twinA, twinB);
    for (const c of [a, b, twinA, twinB]) feed(c, cfg, stream(cfg, 10, 1));
    const d = stream(cfg, 2, 2);
    for (const c of [b, twinB]) c.attendTree(0, d.q, d.k, d.v, [-1, 0]);
    const s = stream(cfg, 1, 3);
    expectThrows(
      () =>
        KVCache.attendMany(0, [
          { cache: a, q: s.q, k: s.k, v: s.v },
          { cache: b, q: s.q, k: s.k, v: s.v },
        ]),
      Error,
      [/items\[1\]\.cache has drafts pending \(attendTree\)/],
    );
    expect(a.lengthOf(0)).toBe(10);
    for (const c of [b, twinB]) c.accept([0]);
    const next = stream(cfg, 1, 4);
    const got = KVCache.attendMany(0, [
      { cache: a, q: next.q, k: next.k, v: next.v },
      { cache: b, q: next.q, k: next.k, v: next.v },
    ]);
    expectBitIdentical(got[0], twinA.attend(0, next.q, next.k, next.v), 'the cache beside the refused one');
    expectBitIdentical(got[1], twinB.attend(0, next.q, next.k, next.v), 'the refused cache, after accept');
  });

  it('a worker killed mid-batch, holding a piece: the calling thread takes its pieces over, the same bits as one thread', async () => {
    await init({ build, threads: 2 });
    const pool = activeInstance().pool!;
    const cfg: Cfg = { heads: 8, kvHeads: 2, headDim: 64, maxTokens: 3000 };
    const make = () => {
      const base = new KVCache(cfg as never);
      feed(base, cfg, stream(cfg, 2500, 5));
      const other = new KVCache({ ...cfg, dtype: 'int4' } as never);
      feed(other, cfg, stream(cfg, 2000, 6));
      return [base, base.fork(), other];
    };
    const a = make();
    const b = make();
    live.push(...a, ...b);
    const replaced = pool.replacements;
    const takenOver = pool.takenOver;
    const s = a.map((_, i) => stream(cfg, 1 + i, 70 + i));
    pool.stopInNextCall(1, true); // it claims a piece of the batch, then its script ends the worker
    const got = together(a, s);
    expect(pool.takenOver - takenOver, 'the calling thread took its piece over').toBeGreaterThanOrEqual(1);
    alone(b, s).forEach((w, i) => {
      expectBitIdentical(got[i], w, `item ${i}, a worker killed in the batch`);
    });
    for (let i = 0; i < 250 && pool.replacements === replaced; i++) await new Promise((r) => setTimeout(r, 20));
    await pool.settled();
    expect(pool.workingThreads, 'the pool replaced the killed worker').toBe(2);
    const t = a.map((_, i) => stream(cfg, 1, 80 + i));
    const after = together(a, t);
    alone(b, t).forEach((w, i) => {
      expectBitIdentical(after[i], w, `item ${i}, the batch after the kill`);
    });
  }, 60_000);

  it('each item’s out is filled and returned; outputs come back in item order; an empty batch is []', async () => {
    await init({ build, threads: 1 });
    const cfg: Cfg = { heads: 4, kvHeads: 2, headDim: 16, maxTokens: 100 };
    const caches = [new KVCache(cfg as never), new KVCache(cfg as never)];
    live.push(...caches);
    const s = [stream(cfg, 3, 1), stream(cfg, 1, 2)];
    const out = new Float32Array(3 * qWidth(cfg));
    const got = KVCache.attendMany(0, [
      { cache: caches[0], q: s[0].q, k: s[0].k, v: s[0].v, out },
      { cache: caches[1], q: s[1].q, k: s[1].k, v: s[1].v },
    ]);
    expect(got[0]).toBe(out);
    expect(got[1].length).toBe(qWidth(cfg));
    expect(KVCache.attendMany(0, [])).toEqual([]);
  });

  it('a batch of one item takes attend’s own path: a long step across threads, the same bits', async () => {
    await init({ build, threads: 2 });
    const cfg: Cfg = { heads: 8, kvHeads: 2, headDim: 64, maxTokens: 3000 };
    const [a, b] = [new KVCache(cfg as never), new KVCache(cfg as never)];
    live.push(a, b);
    const history = stream(cfg, 2500, 8);
    feed(a, cfg, history);
    feed(b, cfg, history);
    const s = stream(cfg, 2, 9);
    const before = activeInstance().pool?.threadedCalls ?? 0;
    const [got] = KVCache.attendMany(0, [{ cache: a, q: s.q, k: s.k, v: s.v }]);
    expect(activeInstance().pool?.threadedCalls ?? 0, 'the step went across threads').toBeGreaterThan(before);
    expectBitIdentical(got, b.attend(0, s.q, s.k, s.v), 'one item == attend');
    expect(a.length).toBe(2502);
  });

  describe('refused calls leave every cache as it was', () => {
    const cfg: Cfg = { heads: 4, kvHeads: 2, headDim: 32, maxTokens: 400 };

    /** Three caches (two forks of one prefix and a stranger) and their twins. */
    function setUp() {
      const families: Family[] = [
        { cfg, prefix: 100, own: [5, 9] },
        { cfg, prefix: 40, own: [0] },
      ];
      const a = buildCaches(families, 1);
      const b = buildCaches(families, 1);
      live.push(...a.caches, ...b.caches);
      return { a: a.caches, b: b.caches };
    }

    function expectUnchanged(a: KVCache[], b: KVCache[], label: string) {
      expect(
        a.map((c) => [c.length, c.byteLength]),
        label,
      ).toEqual(b.map((c) => [c.length, c.byteLength]));
      const s = steps(
        new Rng(5),
        a.map(() => cfg),
        77,
      );
      const got = together(a, s);
      alone(b, s).forEach((w, i) => {
        expectBitIdentical(got[i], w, `${label}: item ${i} continues as its twin`);
      });
    }

    it('a bad item anywhere: a TypeError or RangeError naming it, and nothing written', async () => {
      await init({ build, threads: 2 });
      const { a, b } = setUp();
      const good = (cache: KVCache, n = 1) => {
        const s = stream(cfg, n, 3);
        return { cache, q: s.q, k: s.k, v: s.v };
      };
      const other = new KVCache({ heads: 4, kvHeads: 4, headDim: 32, maxTokens: 10 });
      const disposed = new KVCache(cfg as never);
      disposed.dispose();
      live.push(other);
      const bad: Array<[unknown, ErrorConstructor | TypeErrorConstructor | RangeErrorConstructor, RegExp[]]> = [
        [
          [good(a[0]), good(a[1]), good(a[2]), { ...good(a[2]) }],
          TypeError,
          [/items\[3\]\.cache/, /items\[2\]/, /same cache/],
        ],
        [[good(a[0]), good(a[1]), good(a[2]), good(other)], TypeError, [/items\[3\]\.cache/, /head shape/]],
        [[good(a[0]), good(a[1]), good(a[2]), { cache: {} }], TypeError, [/items\[3\]\.cache/, /a KVCache/]],
        [[good(a[0]), good(a[1]), { ...good(a[2]), k: new Float32Array(5) }], RangeError, [/items\[2\]\.k/]],
        [[good(a[0]), good(a[1]), { ...good(a[2]), q: [1, 2] }], TypeError, [/items\[2\]\.q/, /Float32Array/]],
        [[good(a[0]), { ...good(a[1]), out: new Float32Array(3) }], RangeError, [/items\[1\]\.out/]],
        [
          [good(a[0]), { ...good(a[1]), outt: new Float32Array(3) }],
          TypeError,
          [/items\[1\]\.outt/, /items\[1\]\.out\?/],
        ],
        [[good(a[0]), good(a[1], 400)], RangeError, [/items\[1\]/, /maxTokens/]],
        [[good(a[0]), good(disposed)], Error, [/items\[1\]\.cache/, /disposed/]],
        [[good(a[0]), 7], TypeError, [/items\[1\]/, /an object/]],
        ['not an array', TypeError, [/items/, /Array/]],
      ];
      for (const [items, type, patterns] of bad)
        expectThrows(() => KVCache.attendMany(0, items as never), type, patterns);
      expectThrows(() => KVCache.attendMany(1, [good(a[0])]), RangeError, [/layer/]);
      expectThrows(() => KVCache.attendMany(0, [good(a[0])], { threads: 2 } as never), TypeError, [/options\.threads/]);
      expectUnchanged(a, b, 'after the refused calls');
    });

    it('a page reservation that fails for one item: a RangeError, and no cache keeps a page or a token', async () => {
      await init({ build, threads: 1 });
      const { a, b } = setUp();
      // the batch's staging area at its size first, so only pages remain to be found
      const warm = steps(
        new Rng(1),
        a.map(() => cfg),
        5,
      );
      together(a, warm);
      alone(b, warm);
      // room for exactly one page: the first item that needs one gets it, the next one cannot
      const page = pageBytesFor(cfg) + 64;
      const spare = heap().allocate(page);
      const blocks = exhaustHeap();
      heap().release(spare);
      const restore = refuseGrowth();
      try {
        // 64 tokens each: every item needs new pages
        const s = a.map((_, i) => stream(cfg, 64, 40 + i));
        expectThrows(() => together(a, s), RangeError, [/KVCache\.attendMany/, /memory could not grow/]);
      } finally {
        restore();
        for (const x of blocks) heap().release(x);
      }
      expectUnchanged(a, b, 'after the failed reservation');
    });
  });
});

describe('the model runner decodes conversations together', () => {
  it('generateMany (attendMany each layer) gives every prompt the tokens generate gives it alone', async () => {
    const model = await loadModel(fileURLToPath(new URL('../examples/model/tiny', import.meta.url)));
    const prompts = [
      [1, 2, 3, 4, 5, 6, 7, 8],
      [40, 41, 42],
      [7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7],
      [99],
    ];
    const alone = [];
    for (const p of prompts) alone.push(await model.generate(p, { maxNewTokens: 24 }));
    expect(model.generateMany(prompts, { maxNewTokens: 24 })).toEqual(alone);
  }, 60_000);
});
