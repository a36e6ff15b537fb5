// truncate(n) / reset(): rollback after a rejected speculative draft or an edited chat turn continues
// exactly as if the dropped tokens had never come; with a window, the ring keeps the most recent tokens
// (plus sinks), truncating into evicted tokens is a RangeError that changes nothing, and generation runs
// indefinitely (hundreds of thousands of positions through an 8-slot ring, rope positions counting on).

import { describe, expect, it } from 'vitest';
import { KVCache } from '../src/index.js';
import { ReferenceCache, referenceCacheQuery } from './support/reference.js';
import {
  withEachBuild,
  RingModel,
  Rng,
  stream,
  slice,
  join,
  ones,
  feed,
  feedRef,
  cfgName,
  TOL,
  tolFor,
  expectClose,
  expectBitIdentical,
  expectThrows,
  named,
  type Cfg,
  type Stream,
  quantized,
} from './support/util.js';

withEachBuild('lifecycle', (build, make) => {
  /** Two caches fed the same: layer l holds the first lengths[l] tokens of s (one to change, one to compare). */
  const twins = (cfg: Cfg, s: Stream, lengths: number[]) =>
    [make(cfg), make(cfg)].map((c) => {
      for (const [l, n] of lengths.entries()) feed(c, cfg, slice(cfg, s, 0, n), [n], l);
      return c;
    });

  describe('truncate(n): continues as if the dropped tokens had never come (bit-identical to a fresh cache)', () => {
    const cases: { cfg: Cfg; history: number[]; keep: number; draft: number[]; next: number[] }[] = [
      // speculative decoding: a prefill, a few accepted steps, a rejected draft of 5 (as one verify call)
      {
        cfg: { heads: 4, kvHeads: 2, headDim: 64, maxTokens: 64, rope: {} },
        history: [20, 1, 1],
        keep: 22,
        draft: [5],
        next: [1, 1, 3],
      },
      // an edited chat turn: rolled back into the middle of a prefill chunk, then a different turn
      {
        cfg: { heads: 8, kvHeads: 1, headDim: 32, maxTokens: 80, rope: { interleaved: true }, softcap: 20 },
        history: [30, 25],
        keep: 41,
        draft: [],
        next: [17, 1, 1],
      },
      // the same for int8 and for a window that has not yet wrapped
      {
        cfg: { heads: 4, kvHeads: 2, headDim: 64, maxTokens: 64, rope: {}, dtype: 'int8' },
        history: [20, 1, 1],
        keep: 19,
        draft: [4, 1],
        next: [1, 6],
      },
      {
        cfg: { heads: 2, headDim: 16, maxTokens: 40, window: 32, sinks: 3, rope: { dims: 8 } },
        history: [12, 1, 1],
        keep: 10,
        draft: [1, 1, 1],
        next: [3, 1],
      },
      // odd sizes
      {
        cfg: { heads: 3, kvHeads: 1, headDim: 7, maxTokens: 30, rope: { dims: 6 } },
        history: [9, 1],
        keep: 5,
        draft: [2],
        next: [1, 1, 8],
      },
      // back to 0 and to the full length
      { cfg: { heads: 2, headDim: 8, maxTokens: 20, rope: {} }, history: [6], keep: 0, draft: [3], next: [4, 1] },
      { cfg: { heads: 2, headDim: 8, maxTokens: 20, rope: {} }, history: [6], keep: 6, draft: [], next: [4, 1] },
    ];
    for (const [i, c] of cases.entries()) {
      it(`${cfgName(c.cfg)}: history ${c.history.join(',')}, draft ${c.draft.join(',') || '-'}, keep ${c.keep}, then ${c.next.join(',')}`, () => {
        const { cfg } = c;
        const h = c.history.reduce((a, b) => a + b, 0);
        const d = c.draft.reduce((a, b) => a + b, 0);
        const history = stream(cfg, h, 100 + i);
        const draft = stream(cfg, d, 200 + i);
        const next = stream(
          cfg,
          c.next.reduce((a, b) => a + b, 0),
          300 + i,
        );
        const cache = make(cfg);
        feed(cache, cfg, history, c.history);
        if (d) feed(cache, cfg, draft, c.draft);
        const bytes = cache.byteLength;
        cache.truncate(c.keep);
        expect(cache.length).toBe(c.keep);
        const fresh = make(cfg);
        if (!cfg.window) {
          // the pages past the kept tokens went back; what is left is what the kept tokens need
          expect(cache.byteLength, 'truncate gives pages back').toBeLessThanOrEqual(bytes);
          if (c.keep === 0) expect(cache.byteLength, 'truncate(0) holds what a new cache holds').toBe(fresh.byteLength);
        }
        if (c.keep) feed(fresh, cfg, slice(cfg, history, 0, c.keep));
        const got = feed(cache, cfg, next, c.next);
        const want = feed(fresh, cfg, next, c.next);
        expectBitIdentical(got, want, 'continuation after truncate vs a fresh cache fed only the kept history');
        expect(cache.length).toBe(fresh.length);
        if (!quantized(cfg)) {
          const ref = new ReferenceCache(cfg);
          if (c.keep) feedRef(ref, cfg, slice(cfg, history, 0, c.keep));
          expectClose(
            got,
            feedRef(ref, cfg, next, c.next),
            tolFor(cfg.scale, cfg.headDim),
            'continuation vs float64 reference',
          );
        }
      });
    }

    it('every layer keeps its first n tokens; layers already shorter keep all of theirs', () => {
      const cfg: Cfg = { layers: 3, heads: 4, kvHeads: 2, headDim: 16, maxTokens: 40, rope: {} };
      const s = [stream(cfg, 30, 1), stream(cfg, 30, 2), stream(cfg, 30, 3)];
      const lens = [25, 7, 12];
      const cache = make(cfg);
      for (const [l, n] of lens.entries()) feed(cache, cfg, slice(cfg, s[l], 0, n), [n], l);
      cache.truncate(10);
      expect([0, 1, 2].map((l) => cache.lengthOf(l))).toEqual([10, 7, 10]);
      expect(cache.length).toBe(10);
      const fresh = make(cfg);
      for (const [l, n] of [10, 7, 10].entries()) feed(fresh, cfg, slice(cfg, s[l], 0, n), [n], l);
      for (let l = 0; l < 3; l++) {
        const next = stream(cfg, 4, 10 + l);
        expectBitIdentical(feed(cache, cfg, next, [1, 3], l), feed(fresh, cfg, next, [1, 3], l), `layer ${l}`);
      }
    });

    it('truncate(n) at or past the length changes nothing', () => {
      const cfg: Cfg = { layers: 2, heads: 2, headDim: 8, maxTokens: 30, window: 5, sinks: 1, rope: {} };
      const [a, b] = twins(cfg, stream(cfg, 20, 5), [20, 3]);
      a.truncate(20);
      a.truncate(21);
      a.truncate(1e9);
      expect([a.lengthOf(0), a.lengthOf(1)]).toEqual([20, 3]);
      const next = stream(cfg, 3, 6);
      expectBitIdentical(feed(a, cfg, next), feed(b, cfg, next), 'layer 0');
      expectBitIdentical(feed(a, cfg, next, [3], 1), feed(b, cfg, next, [3], 1), 'layer 1');
    });

    it('reset() empties every layer (even after the ring wrapped); the cache then behaves as new and holds what a new cache holds', () => {
      for (const cfg of [
        { layers: 2, heads: 4, kvHeads: 1, headDim: 16, maxTokens: 8, window: 6, sinks: 2, rope: {} },
        { layers: 2, heads: 4, kvHeads: 2, headDim: 16, maxTokens: 20, dtype: 'int8' },
      ] as Cfg[]) {
        const cache = make(cfg);
        const bytes = cache.byteLength;
        feed(cache, cfg, stream(cfg, 19, 7), [19], 0);
        feed(cache, cfg, stream(cfg, 5, 8), [5], 1);
        cache.reset();
        expect([cache.length, cache.lengthOf(0), cache.lengthOf(1)]).toEqual([0, 0, 0]);
        expect(cache.byteLength).toBe(bytes);
        const fresh = make(cfg);
        const s = stream(cfg, 17, 9);
        expectBitIdentical(
          feed(cache, cfg, s, [9, 1, 7]),
          feed(fresh, cfg, s, [17]),
          `${cfgName(cfg)}: layer 0 after reset`,
        );
        expectBitIdentical(
          feed(cache, cfg, s, ones(17), 1),
          feed(fresh, cfg, s, [17], 1),
          `${cfgName(cfg)}: layer 1 after reset`,
        );
        cache.reset();
        cache.reset();
        expect(cache.length).toBe(0);
      }
    });
  });

  describe('truncate with a window: the ring keeps the most recent tokens plus sinks', () => {
    const cfg: Cfg = { heads: 2, kvHeads: 1, headDim: 4, maxTokens: 8, window: 6, sinks: 2, rope: {} };

    it('within what is held works; into evicted tokens is a RangeError that leaves the cache as it was', () => {
      const L = 50;
      const s = stream(cfg, L, 11);
      const cache = make(cfg);
      const twin = make(cfg);
      feed(cache, cfg, s, [30, ...ones(20)]);
      feed(twin, cfg, s, [L]);
      // held: sinks 0, 1 and the ring positions 42 … 49; the query at n needs n − 5 … n − 1
      for (const n of [46, 45, 44, 43, 30, 10, 3]) {
        expectThrows(() => cache.truncate(n), RangeError, [named('n'), /evicted/]);
        expect(cache.length).toBe(L);
      }
      const next = stream(cfg, 9, 12);
      // the refused truncates changed nothing: still bit-identical to the twin
      const probe = slice(cfg, next, 0, 1);
      expectBitIdentical(feed(cache, cfg, probe), feed(twin, cfg, probe), 'after refused truncates');
      // now 51 tokens: the ring holds 43 … 50; the lowest n allowed is 48 (needs 43 … 47)
      expectThrows(() => cache.truncate(47), RangeError, [named('n')]);
      expect(cache.length).toBe(L + 1);
      cache.truncate(48);
      expect(cache.length).toBe(48);
      const fresh = make(cfg);
      feed(fresh, cfg, slice(cfg, s, 0, 48), ones(48));
      const rest = slice(cfg, next, 1, 9);
      expectBitIdentical(feed(cache, cfg, rest, [1, 7]), feed(fresh, cfg, rest, [8]), 'after truncate(48)');
      // n <= sinks needs only sinks, never evicted: always allowed
      cache.truncate(2);
      const fresh2 = make(cfg);
      feed(fresh2, cfg, slice(cfg, s, 0, 2));
      const more = stream(cfg, 30, 13);
      expectBitIdentical(feed(cache, cfg, more, [25, 1, 4]), feed(fresh2, cfg, more, ones(30)), 'after truncate(2)');
      const ref = new ReferenceCache(cfg);
      feedRef(ref, cfg, slice(cfg, s, 0, 2));
      feedRef(ref, cfg, more);
      const after = stream(cfg, 3, 14);
      expectClose(feed(cache, cfg, after), feedRef(ref, cfg, after), TOL, 'vs float64 reference');
    });

    it('random appends and truncates on two layers: refused exactly when the ring model says a needed key is gone; every output bit-identical to a fresh replay', () => {
      const cfgs: Cfg[] = [
        { layers: 2, heads: 2, kvHeads: 1, headDim: 4, maxTokens: 8, window: 6, sinks: 2, rope: {} },
        { layers: 2, heads: 2, headDim: 5, maxTokens: 5, window: 3, sinks: 0, rope: { dims: 4, interleaved: true } },
        { layers: 2, heads: 4, kvHeads: 2, headDim: 4, maxTokens: 6, window: 6, sinks: 3, dtype: 'int8', rope: {} },
      ];
      for (const [ci, cfg] of cfgs.entries()) {
        const rng = new Rng(1000 + ci);
        const cache = make(cfg);
        const models = [0, 1].map(() => new RingModel(cfg.maxTokens, cfg.window as number, cfg.sinks ?? 0));
        const history: Stream[][] = [[], []]; // per layer, per position, the token
        let refused = 0;
        let allowed = 0;
        for (let op = 0; op < 70; op++) {
          const layer = rng.int(0, 1);
          if (rng.next() < 0.3 && models[0].length + models[1].length > 0) {
            const top = Math.max(models[0].length, models[1].length);
            const n = rng.int(Math.max(0, top - 12), top);
            const ok = models.every((m) => m.canTruncate(n));
            if (ok) {
              cache.truncate(n);
              allowed++;
              models.forEach((m, l) => {
                m.truncate(n);
                history[l].length = m.length;
              });
            } else {
              refused++;
              const before = [cache.lengthOf(0), cache.lengthOf(1)];
              expectThrows(() => cache.truncate(n), RangeError, [named('n')]);
              expect([cache.lengthOf(0), cache.lengthOf(1)], 'a refused truncate changes nothing').toEqual(before);
            }
            expect([cache.lengthOf(0), cache.lengthOf(1)]).toEqual(models.map((m) => m.length));
          } else {
            const T = rng.pick([1, 1, 1, 2, 3, 5, 9, 14]);
            const s = stream(cfg, T, rng.int(0, 1e9));
            const got = cache.attend(layer, s.q, s.k, s.v);
            // a fresh cache fed only this layer's kept history, then the same tokens
            const fresh = new KVCache(cfg as never);
            try {
              if (history[layer].length) feed(fresh, cfg, join(history[layer]), undefined, layer);
              const want = fresh.attend(layer, s.q, s.k, s.v);
              expectBitIdentical(
                got,
                want,
                `${cfgName(cfg)}: op ${op}, layer ${layer}, ${T} tokens at ${models[layer].length}`,
              );
            } finally {
              fresh.dispose();
            }
            for (let t = 0; t < T; t++) history[layer].push(slice(cfg, s, t, t + 1));
            models[layer].append(T);
          }
        }
        expect(refused, 'the sequence exercised refusals').toBeGreaterThan(3);
        expect(allowed, 'the sequence exercised truncates').toBeGreaterThan(3);
      }
    });
    for (const [cfg, chunks] of [
      [{ heads: 2, kvHeads: 1, headDim: 8, maxTokens: 5, window: 4, sinks: 1 }, ones(20)],
      [{ heads: 2, kvHeads: 1, headDim: 8, maxTokens: 5, window: 4, sinks: 1 }, [20]],
      [{ heads: 2, kvHeads: 1, headDim: 8, maxTokens: 7, window: 3, sinks: 2, rope: {} }, [3, 9, 1, 1, 4]],
      [{ heads: 2, kvHeads: 1, headDim: 8, maxTokens: 3, window: 3 }, [2, 1, 10]],
    ] as [Cfg, number[]][]) {
      it(`truncate(n) for every n on a wrapped ring: works exactly when no needed token was evicted (${cfgName(cfg)}; chunks ${chunks.length > 8 ? `${chunks.length} × 1` : chunks.join(',')})`, () => {
        // The ring holds the most recent maxTokens tokens at positions >= sinks; after truncate(n) the
        // next query (position n) needs max(sinks, n - window + 1) … n - 1.
        const L = chunks.reduce((a, b) => a + b, 0);
        const s = stream(cfg, L, 10);
        const sinks = cfg.sinks ?? 0;
        const next = stream(cfg, 3, 11);
        for (let n = 0; n <= L; n++) {
          const c = make(cfg);
          feed(c, cfg, s, chunks);
          let ok = true;
          for (let j = Math.max(sinks, n - (cfg.window as number) + 1); j < n; j++)
            if (j < L - cfg.maxTokens) ok = false;
          if (!ok) {
            expectThrows(() => c.truncate(n), RangeError);
            expect(c.length, `truncate(${n}) refused: length unchanged`).toBe(L);
            continue;
          }
          c.truncate(n);
          expect(c.length).toBe(n);
          const fresh = make(cfg);
          if (n > 0) feed(fresh, cfg, { ...slice(cfg, s, 0, n), n }, [n]);
          expectBitIdentical(
            feed(c, cfg, next, [1, 2]),
            feed(fresh, cfg, next, [1, 2]),
            `after truncate(${n}) of ${L}`,
          );
        }
      });
    }
  });

  describe('generation with a window runs indefinitely (tiny shapes, rope)', () => {
    // heads 2 / kvHeads 1, headDim 4, a ring of 8 slots, window 6, 2 sinks: every slot is reused tens of
    // thousands of times and rope angles reach hundreds of thousands of radians.
    const cfg: Cfg = { heads: 2, kvHeads: 1, headDim: 4, maxTokens: 8, window: 6, sinks: 2, rope: {} };
    const N = build === 'relaxed-simd' ? 400_000 : 40_000;

    it(`${N.toLocaleString('en')} positions: a few big attend calls and ${N.toLocaleString('en')} decode steps agree bit for bit, and sampled late outputs match float64`, () => {
      const s = stream(cfg, N, 77);
      const big = make(cfg);
      const a = Math.floor(N / 2);
      const chunks = [a, 1, 7, N - a - 8];
      const bigOut = feed(big, cfg, s, chunks);
      expect(big.length).toBe(N);

      const steps = make(cfg);
      const stepOut = new Float32Array(N * 8);
      for (let i = 0; i < N; i++) {
        steps.attend(
          0,
          s.q.subarray(i * 8, i * 8 + 8),
          s.k.subarray(i * 4, i * 4 + 4),
          s.v.subarray(i * 4, i * 4 + 4),
          stepOut.subarray(i * 8, i * 8 + 8),
        );
      }
      expect(steps.length).toBe(N);
      expectBitIdentical(stepOut, bigOut, 'decode steps vs big attend calls', [N, 2, 4]);

      // sampled positions: early, around the chunk seams, random late ones, the very end
      const rng = new Rng(5);
      const sample = new Set<number>([0, 1, 2, 7, 8, 9, 15, a - 1, a, a + 1, a + 7, a + 8, a + 9]);
      for (let i = 0; i < 150; i++) sample.add(rng.int(Math.floor(N * 0.6), N - 1));
      for (let p = N - 20; p < N; p++) sample.add(p);
      let worst = 0;
      for (const p of [...sample].sort((x, y) => x - y)) {
        const got = bigOut.subarray(p * 8, p * 8 + 8);
        const want = referenceCacheQuery(cfg, s.q, s.k, s.v, p);
        expectClose(got, want, TOL, `position ${p}`);
        for (let i = 0; i < 8; i++) worst = Math.max(worst, Math.abs(got[i] - want[i]));
      }
      console.log(
        `[window ${build}] ${N} positions through an 8-slot ring: max |diff| vs float64 at ${sample.size} sampled positions ${worst.toExponential(2)}`,
      );

      // it keeps going, and rollback still works at the far end
      const more = stream(cfg, 40, 78);
      const all = join([s, more]);
      const tail = feed(big, cfg, more, [1, 1, 30, 1, 7]);
      for (let t = 0; t < 40; t += 3)
        expectClose(
          tail.subarray(t * 8, t * 8 + 8),
          referenceCacheQuery(cfg, all.q, all.k, all.v, N + t),
          TOL,
          `position ${N + t}`,
        );
      const L = N + 40;
      expectThrows(() => big.truncate(L - 4), RangeError, [named('n')]); // needs L − 9 … L − 5: L − 9 is gone
      expect(big.length).toBe(L);
      big.truncate(L - 3); // needs L − 8 … L − 4: all held
      const edit = stream(cfg, 5, 79);
      const edited = join([slice(cfg, all, 0, L - 3), edit]);
      const out = feed(big, cfg, edit, [2, 1, 2]);
      for (let t = 0; t < 5; t++)
        expectClose(
          out.subarray(t * 8, t * 8 + 8),
          referenceCacheQuery(cfg, edited.q, edited.k, edited.v, L - 3 + t),
          TOL,
          `edited position ${L - 3 + t}`,
        );
      expect(big.length).toBe(L + 2);
    }, 120_000);
  });

  describe('bad input to truncate: TypeError/RangeError naming n, cache unchanged', () => {
    const cfg: Cfg = { layers: 2, heads: 2, headDim: 8, maxTokens: 16, rope: {} };
    const cases: [unknown, ErrorConstructor | TypeErrorConstructor | RangeErrorConstructor][] = [
      [-1, RangeError],
      [1.5, RangeError],
      [NaN, RangeError],
      [Infinity, RangeError],
      [-Infinity, RangeError],
      [2 ** 53, RangeError],
      ['3', TypeError],
      [undefined, TypeError],
      [null, TypeError],
      [3n, TypeError],
      [{}, TypeError],
      [[3], TypeError],
      [new Number(3), TypeError],
    ];
    it(
      cases.map(([v]) => (typeof v === 'string' ? `'${v}'` : typeof v === 'bigint' ? `${v}n` : String(v))).join(', '),
      () => {
        const [cache, twin] = twins(cfg, stream(cfg, 10, 21), [10, 4]);
        for (const [value, type] of cases) {
          const error = expectThrows(() => (cache.truncate as (n: unknown) => void)(value), type, [named('n')]);
          expect(error.message.length, 'the message says what was expected and given').toBeGreaterThan(20);
          expect([cache.lengthOf(0), cache.lengthOf(1)]).toEqual([10, 4]);
        }
        const next = stream(cfg, 3, 22);
        expectBitIdentical(feed(cache, cfg, next, [3], 0), feed(twin, cfg, next, [3], 0), 'layer 0 unchanged');
        expectBitIdentical(feed(cache, cfg, next, [3], 1), feed(twin, cfg, next, [3], 1), 'layer 1 unchanged');
      },
    );
  });
});
