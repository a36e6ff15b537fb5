// Threads (API.md, "Threads"): init({ threads }) and info.threads; every output the same bits at 1, 2, 3
// and 8 threads, in every build, with prefill == decode steps == chunked prefill still bit for bit at each
// count; caches made before a thread-count change keep working; bad counts and runtimes that cannot run
// threads get clear errors; a script that used threads ends by itself.
//
// The cases are big enough that calls really go across threads (above the small-call size, with more than
// one chunk of 1024 positions, so decode steps are cut into chunks and folded): each case checks that the
// pool ran threaded calls, so none of these comparisons can pass by running everything on one thread.

import { afterEach, describe, expect, it, vi } from 'vitest';
import { attention, init, KVCache } from '../src/index.js';
import { Job } from '../src/abi.js';
import { activeInstance } from '../src/init.js';
import { referenceAttention } from './support/reference.js';
import {
  Rng,
  cfgName,
  concat,
  expectBitIdentical,
  expectClose,
  expectRejects,
  expectThrows,
  feed,
  forEachBuild,
  ones,
  qWidth,
  runNodeScript,
  slice,
  stream,
  tolFor,
  type Cfg,
} from './support/util.js';

const COUNTS = [1, 2, 3, 8];

interface Case {
  cfg: Cfg;
  /** tokens of the stream */
  n: number;
  /** a chunked prefill of the same stream (its outputs must equal one prefill's) */
  chunks: number[];
  /** decode steps after a prefill of n − steps tokens (each must equal the prefill's row) */
  steps: number;
}

const CASES: Case[] = [
  // multi-head, no window: decode steps over 2,500 keys are three chunks
  { cfg: { heads: 4, headDim: 64, maxTokens: 2600 }, n: 2500, chunks: [1000, 1, 700, 790, 9], steps: 6 },
  // multi-query with a wrapped window ring, sinks and scaled rope: chunks cut blocks that straddle pages
  {
    cfg: {
      heads: 8,
      kvHeads: 1,
      headDim: 64,
      maxTokens: 1500,
      window: 1400,
      sinks: 4,
      rope: { scaling: { type: 'yarn', factor: 8, originalMaxPositions: 512 } },
    },
    n: 2600,
    chunks: [1300, 1, 1, 500, 798],
    steps: 4,
  },
  // learned sink logits (gpt-oss): decode folds them after the chunks, prefill after each tile
  {
    cfg: { heads: 8, kvHeads: 2, headDim: 64, maxTokens: 2600, sinkLogits: [-2, 3, 0.5, 1, -1, 2.5, 0, 1.5] },
    n: 2500,
    chunks: [1000, 1, 1499],
    steps: 5,
  },
  // ALiBi (BLOOM): the bias of each lane from its key's position and the row's, whatever thread scores it
  {
    cfg: { heads: 12, kvHeads: 4, headDim: 64, maxTokens: 2600, alibi: true },
    n: 2500,
    chunks: [1000, 1, 1499],
    steps: 5,
  },
  // grouped-query, bfloat16 and int4 (a short last scale group: 72 = 32 + 32 + 8), a window with sinks
  // (1,200 tokens: a decode step over 800 or more keys of 8 heads is still past MIN_THREADED_WORK)
  {
    cfg: { heads: 8, kvHeads: 2, headDim: 64, maxTokens: 1300, window: 800, sinks: 4, dtype: 'bfloat16' },
    n: 1200,
    chunks: [64, 600, 1, 535],
    steps: 3,
  },
  {
    cfg: { heads: 8, kvHeads: 2, headDim: 72, maxTokens: 1300, dtype: 'int4', rope: {} },
    n: 1200,
    chunks: [64, 600, 1, 535],
    steps: 3,
  },
  // grouped-query, int8, an odd head size
  {
    cfg: { heads: 8, kvHeads: 2, headDim: 72, maxTokens: 2300, dtype: 'int8' },
    n: 2200,
    chunks: [64, 1100, 1, 1035],
    steps: 3,
  },
];

interface Outputs {
  prefill: Float32Array;
  chunked: Float32Array;
  decoded: Float32Array;
  oneShot: Float32Array;
}

function run(c: Case): Outputs {
  const s = stream(c.cfg, c.n, 7);
  const prefill = feed(new KVCache(c.cfg as never), c.cfg, s);
  const chunked = feed(new KVCache(c.cfg as never), c.cfg, s, c.chunks);
  const decoded = feed(new KVCache(c.cfg as never), c.cfg, s, [c.n - c.steps, ...ones(c.steps)]);
  const { heads, kvHeads, headDim, window, sinks } = { kvHeads: c.cfg.heads, ...c.cfg };
  const last = s.q.subarray((c.n - 3) * heads * headDim); // three queries over every key, one shot
  const oneShot = attention(last, s.k, s.v, { heads, kvHeads, headDim, window, sinks });
  return { prefill, chunked, decoded, oneShot };
}

forEachBuild('threads', (build) => {
  for (const c of CASES) {
    it(`${cfgName(c.cfg)}: every output the same bits at ${COUNTS.join(', ')} threads; prefill == chunked == decode at each`, async () => {
      let first: Outputs | undefined;
      for (const threads of COUNTS) {
        const info = await init({ build, threads });
        expect(info).toEqual({ build, threads });
        const pool = activeInstance().pool;
        const before = pool?.threadedCalls ?? 0;
        const got = run(c);
        if (threads > 1) expect(pool?.threadedCalls ?? 0, 'calls went across threads').toBeGreaterThan(before + 3);
        const at = `${threads} threads`;
        expectBitIdentical(got.chunked, got.prefill, `${at}: chunked prefill == prefill`);
        expectBitIdentical(got.decoded, got.prefill, `${at}: decode steps == prefill`);
        if (!first) {
          first = got;
          continue;
        }
        expectBitIdentical(got.prefill, first.prefill, `${at}: prefill == 1 thread's`);
        expectBitIdentical(got.oneShot, first.oneShot, `${at}: attention() == 1 thread's`);
      }
      // four thread counts of three feeds each: ~95 s on the scalar build of an idle 2-core machine, so the
      // limit leaves room for a loaded one (it bounds a hang, it checks no speed)
    }, 300_000);
  }

  it('a threaded decode step agrees with the float64 reference (chunks folded right, not just alike)', async () => {
    await init({ build, threads: 2 });
    const o = { heads: 8, kvHeads: 2, headDim: 64 };
    const rng = new Rng(3);
    const k = rng.randn(5000 * 2 * 64);
    const v = rng.randn(5000 * 2 * 64);
    const q = rng.randn(8 * 64);
    const before = activeInstance().pool?.threadedCalls ?? 0;
    expectClose(attention(q, k, v, o), referenceAttention(q, k, v, o), tolFor(undefined, 64), 'decode over 5,000 keys');
    expect(activeInstance().pool?.threadedCalls).toBe(before + 1);
    // then a call of one piece (one kv head, one chunk), which the calling thread runs through the job alone
    const mqa = { heads: 8, kvHeads: 1, headDim: 64 };
    const k1 = k.subarray(0, 1024 * 64),
      v1 = v.subarray(0, 1024 * 64); // above the small-call size
    expectClose(
      attention(q, k1, v1, mqa),
      referenceAttention(q, k1, v1, mqa),
      tolFor(undefined, 64),
      'one piece after a threaded call',
    );
  });
});

describe('init({ threads })', () => {
  afterEach(async () => {
    await init();
  });

  it("'auto' (the default) gets this machine's cores, at most 8, and says so in info.threads", async () => {
    const { availableParallelism } = await import('node:os');
    expect((await init()).threads).toBe(Math.min(8, availableParallelism()));
    expect((await init({ threads: 'auto' })).threads).toBe(Math.min(8, availableParallelism()));
  });

  it('threads: 1 starts no worker and loads the plain binary', async () => {
    expect((await init({ threads: 1 })).threads).toBe(1);
    expect(activeInstance().pool).toBeUndefined();
  });

  it('bad counts reject with an error naming threads, what it takes and what came', async () => {
    for (const bad of [0, 65, 1.5, -2, Number.NaN]) {
      await expectRejects(() => init({ threads: bad }), RangeError, [/threads/, /1 to 64/, new RegExp(String(bad))]);
    }
    for (const bad of ['4', null, {}]) {
      await expectRejects(() => init({ threads: bad as never }), TypeError, [/threads/, /'auto' or a number/]);
    }
  });

  it('concurrent init() calls with different counts leave one pool whose threads each own a thread number', async () => {
    await Promise.all([init({ threads: 3 }), init({ threads: 3 }), init({ threads: 2 }), init({ threads: 3 })]);
    const pool = activeInstance().pool;
    expect(pool?.threads).toBe(3);
    // every worker on its own scratch: a threaded call gives the same bits as one thread
    const o = { heads: 8, kvHeads: 2, headDim: 64 };
    const rng = new Rng(9);
    const q = rng.randn(8 * 64),
      k = rng.randn(6000 * 2 * 64),
      v = rng.randn(6000 * 2 * 64);
    const many = attention(q, k, v, o);
    await init({ threads: 1 });
    expectBitIdentical(many, attention(q, k, v, o), '3 threads after concurrent inits == 1 thread');
  });

  it('caches made before a thread-count change keep working, bit for bit as if nothing changed', async () => {
    const cfg: Cfg = { heads: 4, headDim: 64, maxTokens: 3000 };
    const s = stream(cfg, 2600, 11);
    const chunks = [2000, 1, 1, 1, 597];
    const want = feed(new KVCache(cfg as never), cfg, s, chunks);
    for (const [from, to] of [
      [1, 4],
      [4, 1],
      [2, 3],
    ]) {
      await init({ threads: from });
      const cache = new KVCache(cfg as never);
      const head = feed(cache, cfg, slice(cfg, s, 0, 2002), [2000, 1, 1]);
      await init({ threads: to });
      const tail = feed(cache, cfg, slice(cfg, s, 2002, 2600), [1, 597]);
      expectBitIdentical(concat([head, tail]), want, `made at ${from} threads, continued at ${to}`);
      cache.dispose();
    }
  }, 60_000);

  it('calls made while a resize is still starting its workers keep their bits (new workers join only once counted)', async () => {
    // Workers a pending init() has started must not join calls that have scratch only for the old count:
    // they wrote past it (wrong bits, then out-of-bounds traps). The calls here run synchronously, so the
    // main thread never hears the new workers are ready while they already poll for calls.
    const cfg: Cfg = { heads: 16, kvHeads: 4, headDim: 64, maxTokens: 4096 };
    const steps = 300;
    const s = stream(cfg, 600 + steps, 13);
    await init({ threads: 1 });
    const want = feed(new KVCache(cfg as never), cfg, s, [600, ...ones(steps)]);
    await init({ threads: 2 });
    const cache = new KVCache(cfg as never);
    const head = feed(cache, cfg, slice(cfg, s, 0, 605), [600, ...ones(5)]);
    const resizing = init({ threads: 8 });
    for (let i = 0; i < 20; i++) await new Promise((resolve) => setTimeout(resolve, 0)); // the workers spawn
    const during: Float32Array[] = [];
    for (let t = 605; t < 600 + steps; t++) {
      during.push(feed(cache, cfg, slice(cfg, s, t, t + 1)));
      const until = performance.now() + 2;
      while (performance.now() < until) {
        /* leave the new workers time to start polling */
      }
    }
    await resizing;
    expectBitIdentical(concat([head, ...during]), want, 'decode steps during and after a resize to 8 threads');
    cache.dispose();
  }, 60_000);

  it('a page that is not cross-origin isolated: auto gets 1 thread; threads: 2 rejects naming the COOP/COEP headers', async () => {
    vi.resetModules();
    const api = await import('../src/index.js');
    const global = globalThis as { crossOriginIsolated?: boolean };
    global.crossOriginIsolated = false;
    try {
      expect((await api.init()).threads).toBe(1);
      await expectRejects(() => api.init({ threads: 2 }), Error, [
        /threads: 2/,
        /not cross-origin isolated/,
        /Cross-Origin-Opener-Policy: same-origin/,
        /Cross-Origin-Embedder-Policy: require-corp/,
      ]);
    } finally {
      delete global.crossOriginIsolated;
    }
  });

  it('a Node script that used threads ends by itself after its last call (idle workers hold nothing open)', () => {
    const entry = new URL('../dist/index.js', import.meta.url).href;
    const run = runNodeScript(`
      const { init, attention } = await import(${JSON.stringify(entry)});
      const info = await init({ threads: 2 });
      const k = new Float32Array(8192 * 64).fill(0.5);
      attention(new Float32Array(4 * 64).fill(1), k, k, { heads: 4, kvHeads: 1, headDim: 64 });
      console.log(info.threads);`);
    expect(run.error, 'the script ended within 20 s').toBeUndefined();
    expect(run.stderr).toBe('');
    expect(run.stdout.trim()).toBe('2');
    expect(run.status).toBe(0);
  }, 30_000);
});

describe('a decode step allocates nothing on the JS heap, at 1 and 2 threads, inside a page and where it takes one', () => {
  // Once measured: the threaded path allocated 50–250 B a step (a clock read per spin of the caller's
  // wait); in the bench, after its prefills had run, every step 40 B (the context of a closure in
  // reserve(); not reproduced here) and a step that takes a page 150–290 B (the list of pages it took,
  // emptied and refilled: this test failed at 192 B). Measured in a child process
  // with gc exposed: heap growth over rounds of 5,000 decode steps (attend + truncate) after a prefill and
  // 15,000 steps of warm-up (the JIT's own allocations settle), each round kept only if no GC ran during
  // it. What remains is a constant per round (the heap reads): ~0.3 B a step here. 16 B a step is far
  // below any per-step object (the smallest, a heap number, is 12 B; a typed-array view over 100 B; a page
  // taken once in 64 steps at 290 B would be 4.5 B a step, hence a step that takes a page every time) and
  // far above that floor.
  for (const threads of [1, 2]) {
    it(`${threads} thread${threads > 1 ? 's' : ''}: under 16 B a step (median of the rounds)`, () => {
      const dist = (file: string) => JSON.stringify(new URL(`../dist/${file}`, import.meta.url).href);
      const run = runNodeScript(
        `
        const { init, KVCache } = await import(${dist('index.js')});
        const { activeInstance } = await import(${dist('init.js')});
        const { PerformanceObserver } = await import('node:perf_hooks');
        let gcs = 0;
        new PerformanceObserver((list) => { gcs += list.getEntries().length; }).observe({ entryTypes: ['gc'] });
        const settle = () => new Promise((resolve) => setTimeout(resolve, 20)); // delivers the gc entries
        const info = await init({ threads: ${threads} });
        const heads = 8, kvHeads = 2, headDim = 64;
        const filled = (n, x) => new Float32Array(n).fill(x);
        const q = filled(heads * headDim, 1), k = filled(kvHeads * headDim, 0.1), v = filled(kvHeads * headDim, 0.2);
        const out = new Float32Array(q.length);
        // a prefill first, as a model does
        const prompt = new KVCache({ heads, kvHeads, headDim, maxTokens: 600 });
        prompt.attend(0, filled(600 * heads * headDim, 1), filled(600 * kvHeads * headDim, 0.25), filled(600 * kvHeads * headDim, 0.5));
        // 1,000 keys: inside a page (64 positions); 1,024: the step's position starts a page, taken and
        // given back (truncate) every step. Both above the small-call size, 2 pieces (kv heads).
        const result = { threads: info.threads };
        for (const [place, L] of [['inPage', 1000], ['pageTaking', 1024]]) {
          const cache = new KVCache({ heads, kvHeads, headDim, maxTokens: L + 1 });
          cache.append(0, filled(L * kvHeads * headDim, 0.25), filled(L * kvHeads * headDim, 0.5));
          const step = () => { cache.attend(0, q, k, v, out); cache.truncate(L); };
          for (let i = 0; i < 15000; i++) step();
          const before = activeInstance().pool?.threadedCalls ?? 0;
          const rounds = [];
          for (let r = 0; r < 5; r++) {
            gc();
            await settle();
            const g = gcs, h = process.memoryUsage().heapUsed;
            for (let i = 0; i < 5000; i++) step();
            const grown = process.memoryUsage().heapUsed - h;
            await settle();
            if (gcs === g) rounds.push(grown / 5000);
          }
          result[place] = { rounds, threaded: (activeInstance().pool?.threadedCalls ?? 0) - before };
          cache.dispose();
        }
        console.log(JSON.stringify(result));
        process.exit(0);`,
        ['--expose-gc', '--max-semi-space-size=64'], // no scavenge within a round, even when steps allocate
        90_000,
      );
      expect(run.stderr).toBe('');
      type Place = { rounds: number[]; threaded: number };
      const got = JSON.parse(run.stdout) as { threads: number; inPage: Place; pageTaking: Place };
      expect(got.threads).toBe(threads);
      for (const place of ['inPage', 'pageTaking'] as const) {
        const { rounds, threaded } = got[place];
        expect(threaded, `${place}: every measured step went across threads`).toBe(threads > 1 ? 25_000 : 0);
        expect(
          rounds.length,
          `${place}: rounds with no GC in them (steps that allocate set GCs off)`,
        ).toBeGreaterThanOrEqual(3);
        const median = [...rounds].sort((a, b) => a - b)[rounds.length >> 1];
        expect(median, `${place}: bytes a step (rounds: ${rounds.join(', ')})`).toBeLessThan(16);
      }
    }, 120_000);
  }
});

describe('a worker that fails never hangs a call', () => {
  afterEach(async () => {
    activeInstance().pool?.trapInNextCall(0);
    activeInstance().pool?.resume();
    await init();
  });

  // Decode steps over 6,000 keys of 8 kv heads: 48 pieces (kv head × chunk of 1,024 positions) each.
  const cfg: Cfg = { heads: 16, kvHeads: 8, headDim: 64, maxTokens: 6300 };
  const s = stream(cfg, 6200, 17);
  // A window well inside the ring: a call's steps are of 204 keys (the staging area's size). A test hook is
  // taken in the first threaded call after it is set: the calling thread waits until the worker has taken it.
  const ringCfg: Cfg = { heads: 8, kvHeads: 2, headDim: 64, maxTokens: 1024, window: 300, sinks: 4 };

  /** Two threads active, and their pool. */
  async function twoThreads() {
    await init({ threads: 2 });
    return activeInstance().pool!;
  }

  it('a worker whose kernel traps mid-call: the call throws an Error naming it, the cache is as it was, later calls give the same bits', async () => {
    await init({ threads: 1 });
    const want = feed(new KVCache(cfg as never), cfg, s, [6000, ...ones(200)]).subarray(6000 * qWidth(cfg));
    const pool = await twoThreads();
    const cache = new KVCache(cfg as never);
    feed(cache, cfg, slice(cfg, s, 0, 6000));
    // the worker traps in the first step (the calling thread waits until it has joined and trapped)
    const got: Float32Array[] = [];
    pool.trapInNextCall(1);
    let error: Error | undefined;
    for (let t = 6000; t < 6100 && !error; t++) {
      const bytes = cache.byteLength;
      const step = slice(cfg, s, t, t + 1);
      try {
        got.push(feed(cache, cfg, step));
      } catch (thrown) {
        error = thrown as Error;
        expect(cache.length, 'the length after the failed call').toBe(t);
        expect(cache.byteLength, 'the memory held after the failed call').toBe(bytes);
      }
    }
    expect(error, 'a step failed').toBeInstanceOf(Error);
    expect(got.length, 'the first step failed').toBe(0);
    expect(error).not.toBeInstanceOf(RangeError);
    for (const pattern of [/worker thread failed during this call/, /thread 1: RuntimeError/, /cache is as it was/]) {
      expect(error?.message).toMatch(pattern);
    }
    // at once (the failed worker's place is empty: the calling thread works alone) and once the pool has
    // started a fresh worker on its thread number
    expect(pool.workingThreads).toBe(1);
    const at = 6000 + got.length;
    got.push(feed(cache, cfg, slice(cfg, s, at, at + 5), ones(5)));
    await pool.settled();
    expect(pool.workingThreads, 'a fresh worker replaced the failed one').toBe(2);
    const before = pool.threadedCalls;
    got.push(feed(cache, cfg, slice(cfg, s, at + 5, 6200), ones(6195 - at)));
    expect(pool.threadedCalls).toBe(before + 6195 - at);
    expectBitIdentical(concat(got), want, 'decode steps around the failure == one thread without it');
    cache.dispose();
  }, 60_000);

  it('a trap in a prefill (query tiles) and in one-shot attention: the same, and a window ring forgets the slots the failed call overwrote', async () => {
    const r = stream(ringCfg, 2300, 19);
    const pool = await twoThreads();
    const cache = new KVCache(ringCfg as never);
    feed(cache, ringCfg, slice(ringCfg, r, 0, 1500)); // the ring has wrapped
    const saved = cache.save();
    const chunk = slice(ringCfg, r, 1500, 2300);
    pool.trapInNextCall(1);
    expectThrows(() => cache.attend(0, chunk.q, chunk.k, chunk.v), Error, [/thread 1: RuntimeError/]);
    expect(cache.length).toBe(1500);
    // the failed call wrote keys of positions 1500 … into the ring: what the cache offers from its past
    // shrinks to what is intact, and the continuation (which never needs the evicted keys) is unchanged
    // (each step writes 204 keys: the first, failed one took the slots of positions below 684; truncating to
    // 900 needs positions from 601)
    const never = KVCache.load(saved);
    never.truncate(900);
    never.dispose();
    expectThrows(() => cache.truncate(900), RangeError, [/evicted/]);
    const resumed = feed(cache, ringCfg, chunk);
    const fresh = KVCache.load(saved);
    expectBitIdentical(
      resumed,
      feed(fresh, ringCfg, chunk),
      'the chunk after the failure == on a cache that never failed',
    );
    await pool.settled();
    const o = { heads: 8, kvHeads: 2, headDim: 64 };
    const k = r.k.subarray(0, 2000 * 128),
      v = r.v.subarray(0, 2000 * 128);
    const q = r.q.subarray(0, 512 * 512); // 512 queries
    const want = attention(q, k, v, o);
    pool.trapInNextCall(1);
    expectThrows(() => attention(q, k, v, o), Error, [/thread 1: RuntimeError/]);
    await pool.settled();
    expectBitIdentical(attention(q, k, v, o), want, 'attention() after a failed one');
    cache.dispose();
    fresh.dispose();
  }, 60_000);

  it('a windowed call that fails after its earlier steps overwrote keys its continuation needs says so, and the cache refuses to continue until reset', async () => {
    // 800 tokens into a ring of 1,024 slots with a window of 300 run as kernel calls of 204 tokens (the staging
    // area's size), each writing its keys before attending. When the second call fails, the ring has lost the
    // positions below 884 (1,908 − 1,024), none of which the next query (at 1,500) needs: it sees 1,201 on.
    // When the fourth fails, it has lost those below 1,292: the cache cannot be as it was, and says so.
    const r = stream(ringCfg, 2300, 23);
    const pool = await twoThreads();
    const original = pool.attend;
    let calls = 0;
    let trapAt = 0;
    pool.attend = (...args: Parameters<typeof original>) => {
      if (++calls === trapAt) pool.trapInNextCall(1);
      return original.apply(pool, args);
    };
    const chunk = slice(ringCfg, r, 1500, 2300);
    const first = slice(ringCfg, r, 0, 1500);
    const saved = (() => {
      const cache = new KVCache(ringCfg as never);
      feed(cache, ringCfg, first);
      calls = 0;
      const bytes = cache.save();
      cache.dispose();
      return bytes;
    })();
    const fresh = KVCache.load(saved);
    calls = 0;
    const want = feed(fresh, ringCfg, chunk);
    expect(calls, 'kernel calls of the 800 tokens').toBe(4);
    fresh.dispose();
    // the worker traps in kernel call `trapAt` (the calling thread waits until it has joined and trapped);
    // each outcome once
    const seen = new Set<boolean>();
    try {
      for (let attempt = 0; attempt < 20 && seen.size < 2; attempt++) {
        const cache = new KVCache(ringCfg as never);
        feed(cache, ringCfg, first);
        calls = 0;
        trapAt = seen.has(true) ? 4 : 2;
        let error: Error | undefined;
        try {
          cache.attend(0, chunk.q, chunk.k, chunk.v);
        } catch (thrown) {
          error = thrown as Error;
        }
        const failedIn = calls;
        trapAt = 0;
        pool.trapInNextCall(0);
        await pool.settled();
        if (error) {
          const continues = failedIn <= 3;
          seen.add(continues);
          expect(error.message).toMatch(/thread 1: RuntimeError/);
          expect(error.message).toMatch(
            continues ? /cache is as it was/ : /layer 0 of this windowed cache cannot continue/,
          );
          expect(cache.length).toBe(1500);
          if (continues) {
            expectBitIdentical(feed(cache, ringCfg, chunk), want, `failure in call ${failedIn}: the continuation`);
          } else {
            expectThrows(() => cache.attend(0, chunk.q, chunk.k, chunk.v), Error, [
              /layer 0 cannot continue/,
              /reset\(\)/,
            ]);
            expect(cache.length, 'a refused call changes nothing').toBe(1500);
            cache.reset();
            const clean = new KVCache(ringCfg as never);
            expectBitIdentical(
              feed(cache, ringCfg, first),
              feed(clean, ringCfg, first),
              'after reset() it works again',
            );
            clean.dispose();
          }
        }
        cache.dispose();
      }
    } finally {
      pool.attend = original;
    }
    expect([...seen].sort(), 'failures that leave the cache as it was, and one that cannot').toEqual([false, true]);
  }, 60_000);

  it('a worker killed between calls: calls go on without it, and the pool starts a fresh one on its thread number', async () => {
    await init({ threads: 1 });
    const want = feed(new KVCache(cfg as never), cfg, slice(cfg, s, 0, 6010), [6000, ...ones(10)]).subarray(
      6000 * qWidth(cfg),
    );
    await init({ threads: 3 });
    const pool = activeInstance().pool!;
    const cache = new KVCache(cfg as never);
    feed(cache, cfg, slice(cfg, s, 0, 6000));
    await pool.killWorker(1); // ended before the calls (one killed during a call: the tests below)
    const got = [feed(cache, cfg, slice(cfg, s, 6000, 6005), ones(5))];
    for (let i = 0; i < 100 && pool.workingThreads < 3; i++) await new Promise((resolve) => setTimeout(resolve, 20));
    await pool.settled();
    expect(pool.workingThreads, 'the pool replaced the killed worker').toBe(3);
    got.push(feed(cache, cfg, slice(cfg, s, 6005, 6010), ones(5)));
    expectBitIdentical(concat(got), want, 'decode steps around the kill == one thread');
    cache.dispose();
  }, 60_000);

  it('a worker that stops answering mid-call, holding a piece: the call returns the same bits as one thread, and so do later calls, before and after it comes back late', async () => {
    await init({ threads: 1 });
    const want = feed(new KVCache(cfg as never), cfg, slice(cfg, s, 0, 6020), [6000, ...ones(20)]).subarray(
      6000 * qWidth(cfg),
    );
    const pool = await twoThreads();
    const cache = new KVCache(cfg as never);
    feed(cache, cfg, slice(cfg, s, 0, 6000));
    const before = pool.takenOver;
    // the worker claims a piece of the first step and stops there (the calling thread waits until it has)
    pool.stopInNextCall(1);
    const got = [feed(cache, cfg, slice(cfg, s, 6000, 6001))];
    expect(pool.stopped, 'the worker is still stopped, holding its piece').toBe(1);
    expect(pool.takenOver - before, 'the calling thread took its piece over').toBeGreaterThanOrEqual(1);
    got.push(feed(cache, cfg, slice(cfg, s, 6001, 6010), ones(9)));
    expect(pool.stopped, 'the later calls did not wait for it').toBe(1);
    // it comes back: it finishes its piece of the first step into its own area, cannot publish it, and
    // joins the calls after
    pool.resume();
    await new Promise((resolve) => setTimeout(resolve, 50));
    const calls = pool.threadedCalls;
    got.push(feed(cache, cfg, slice(cfg, s, 6010, 6020), ones(10)));
    expect(pool.threadedCalls - calls).toBe(10);
    expect(pool.workingThreads).toBe(2);
    expectBitIdentical(concat(got), want, 'decode steps around the stopped worker == one thread');
    cache.dispose();
  }, 60_000);

  it('a worker late from a batch reads nothing the caller has rewritten since: records turned to garbage neither trap it nor change any output', async () => {
    // Four caches of 1,000 keys, one step each: 8 pieces (item × kv head), across threads. The worker claims
    // a piece and stops; the caller takes it over and returns. Then the batch's item records are overwritten
    // (as the next call's staging would overwrite them) with words naming memory far past the end: a worker
    // that used a record without checking that its call is still open would trap on them, and be replaced.
    const c: Cfg = { heads: 8, kvHeads: 2, headDim: 64, maxTokens: 1100 };
    const r = stream(c, 1020, 31);
    const steps = (caches: KVCache[], t: number) =>
      KVCache.attendMany(
        0,
        caches.map((cache, i) => {
          const x = slice(c, r, t + i, t + i + 1);
          return { cache, q: x.q, k: x.k, v: x.v };
        }),
      );
    const filled = () => {
      const caches = [0, 1, 2, 3].map(() => new KVCache(c as never));
      for (const cache of caches) feed(cache, c, slice(c, r, 0, 1000));
      return caches;
    };
    await init({ threads: 1 });
    const alone = filled();
    const want = [steps(alone, 1000), steps(alone, 1004)];
    for (const cache of alone) cache.dispose();
    const pool = await twoThreads();
    const caches = filled();
    const replaced = pool.replacements;
    const threaded = pool.threadedCalls;
    pool.stopInNextCall(1);
    const first = steps(caches, 1000);
    expect(pool.threadedCalls - threaded, 'the batch went across threads').toBe(1);
    expect(pool.stopped, 'the worker is stopped, holding its piece').toBe(1);
    const memory = activeInstance().abi.memory;
    const words = new Int32Array(memory.buffer);
    const items = words[(pool.job >>> 2) + Job.ITEMS] >>> 2;
    const count = words[(pool.job >>> 2) + Job.ITEM_COUNT];
    expect(count).toBe(4);
    const beyond = 0x7fff_fff0;
    expect(memory.buffer.byteLength, 'the garbage names memory that does not exist').toBeLessThan(beyond);
    words.fill(beyond, items, items + count * Job.ITEM_WORDS);
    pool.resume();
    await new Promise((resolve) => setTimeout(resolve, 100));
    const second = steps(caches, 1004);
    await pool.settled();
    expect(pool.replacements - replaced, 'no worker failed (none was replaced)').toBe(0);
    expect(pool.workingThreads).toBe(2);
    for (let i = 0; i < 4; i++) {
      expectBitIdentical(first[i], want[0][i], `item ${i}, the batch the worker stopped in == one thread`);
      expectBitIdentical(second[i], want[1][i], `item ${i}, the batch after it came back == one thread`);
    }
    for (const cache of caches) cache.dispose();
  }, 60_000);

  it('a worker killed mid-call, holding a piece: the call returns the same bits as one thread, and the pool starts a fresh worker on its thread number', async () => {
    await init({ threads: 1 });
    const want = feed(new KVCache(cfg as never), cfg, slice(cfg, s, 0, 6010), [6000, ...ones(10)]).subarray(
      6000 * qWidth(cfg),
    );
    const pool = await twoThreads();
    const cache = new KVCache(cfg as never);
    feed(cache, cfg, slice(cfg, s, 0, 6000));
    const replaced = pool.replacements;
    pool.stopInNextCall(1, true); // it claims a piece, then its script ends the worker
    const got = [feed(cache, cfg, slice(cfg, s, 6000, 6001))];
    expect(pool.takenOver, 'the calling thread took its piece over').toBeGreaterThanOrEqual(1);
    // the runtime reports the exit once this thread's event loop runs
    for (let i = 0; i < 250 && pool.replacements === replaced; i++) await new Promise((r) => setTimeout(r, 20));
    await pool.settled();
    expect(pool.workingThreads, 'the pool replaced the killed worker').toBe(2);
    got.push(feed(cache, cfg, slice(cfg, s, 6001, 6010), ones(9)));
    expectBitIdentical(concat(got), want, 'decode steps around the kill == one thread');
    // a prefill (query tiles) with a worker killed in it: the same bits as one thread
    const c = { heads: 8, kvHeads: 2, headDim: 64 };
    const r = stream({ ...c, maxTokens: 600 }, 600, 29);
    const q = r.q.subarray(0, 600 * 512),
      k = r.k.subarray(0, 600 * 128),
      v = r.v.subarray(0, 600 * 128);
    const wanted = attention(q, k, v, c);
    pool.stopInNextCall(1, true);
    expectBitIdentical(attention(q, k, v, c), wanted, 'attention() with a worker killed in it');
    for (let i = 0; i < 250 && pool.replacements === replaced + 1; i++) await new Promise((r) => setTimeout(r, 20));
    await pool.settled();
    cache.dispose();
  }, 60_000);
});

// perLayer: every layer of a mixed cache (its own descriptor per setting) the same bits at any thread count
forEachBuild('perLayer across threads', (build) => {
  it('1, 2 and 3 threads give the same bits on every layer, prefill and decode', async () => {
    // Gemma-3-shaped: two windowed layers with their own base beside a global one with linear scaling
    const cfg = {
      layers: 3,
      heads: 8,
      kvHeads: 2,
      headDim: 64,
      maxTokens: 2000,
      window: 300,
      rope: { theta: 1e6, scaling: { type: 'linear', factor: 8 } },
      perLayer: [{ rope: { theta: 10000 } }, { rope: { theta: 10000 } }, { window: null }],
    } as Cfg & { layers: number };
    const s = stream(cfg, 1500, 3);
    let first: Float32Array[] | undefined;
    for (const threads of [1, 2, 3]) {
      await init({ build, threads });
      const before = activeInstance().pool?.threadedCalls ?? 0;
      const cache = new KVCache(cfg as never);
      const outs = Array.from({ length: cfg.layers }, (_, l) => feed(cache, cfg, s, [1400, ...ones(100)], l));
      cache.dispose();
      if (threads > 1)
        expect(activeInstance().pool?.threadedCalls ?? 0, 'calls went across threads').toBeGreaterThan(before + 3);
      if (!first) first = outs;
      else for (const [l, o] of outs.entries()) expectBitIdentical(o, first[l], `${threads} threads: layer ${l}`);
    }
  }, 120_000);
});
