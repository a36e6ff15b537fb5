// Threads (API.md, "Threads"): init({ threads }) and info.threads; every output the same bits at 1, 2, 3
// and 8 threads, in every build, with prefill == decode steps == chunked prefill still bit for bit at each
// count; caches made before a thread-count change keep working; bad counts and runtimes that cannot run
// threads get clear errors; a script that used threads ends by itself.
//
// The cases are big enough that calls really go across threads (above the small-call size, with more than
// one chunk of 1024 positions, so decode steps are cut into chunks and folded): each case checks that the
// pool ran threaded calls, so none of these comparisons can pass by running everything on one thread.

import { spawnSync } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { attention, init, KVCache } from '../src/index.js';
import { activeKernel } from '../src/kernel.js';
import { referenceAttention } from './support/reference.js';
import {
  Rng,
  cfgName,
  concat,
  expectBitIdentical,
  expectClose,
  expectRejects,
  feed,
  forEachBuild,
  ones,
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
  // multi-query with a wrapped window ring, sinks and rope: chunks cut blocks that straddle pages
  {
    cfg: { heads: 8, kvHeads: 1, headDim: 64, maxTokens: 1500, window: 1400, sinks: 4, rope: {} },
    n: 2600,
    chunks: [1300, 1, 1, 500, 798],
    steps: 4,
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
        const pool = activeKernel().pool;
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
    }, 120_000);
  }

  it('a threaded decode step agrees with the float64 reference (chunks folded right, not just alike)', async () => {
    await init({ build, threads: 2 });
    const o = { heads: 8, kvHeads: 2, headDim: 64 };
    const rng = new Rng(3);
    const k = rng.randn(5000 * 2 * 64);
    const v = rng.randn(5000 * 2 * 64);
    const q = rng.randn(8 * 64);
    const before = activeKernel().pool?.threadedCalls ?? 0;
    expectClose(attention(q, k, v, o), referenceAttention(q, k, v, o), tolFor(undefined, 64), 'decode over 5,000 keys');
    expect(activeKernel().pool?.threadedCalls).toBe(before + 1);
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
    expect(activeKernel().pool).toBeUndefined();
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
    const pool = activeKernel().pool;
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
    const script = `
      const { init, attention } = await import(${JSON.stringify(entry)});
      const info = await init({ threads: 2 });
      const k = new Float32Array(8192 * 64).fill(0.5);
      attention(new Float32Array(4 * 64).fill(1), k, k, { heads: 4, kvHeads: 1, headDim: 64 });
      console.log(info.threads);`;
    const file = join(mkdtempSync(join(tmpdir(), 'wasm-attention-')), 'uses-threads.mjs');
    writeFileSync(file, script);
    const run = spawnSync(process.execPath, [file], { timeout: 20_000, encoding: 'utf8' });
    expect(run.error, 'the script ended within 20 s').toBeUndefined();
    expect(run.stderr).toBe('');
    expect(run.stdout.trim()).toBe('2');
    expect(run.status).toBe(0);
  }, 30_000);
});
