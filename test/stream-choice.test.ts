// Streaming chosen by measurement (PERFORMANCE.md, "When decode streams"): a size class tries both paths
// on its first decode steps and keeps the faster; the paths give the same bits, so the choice only
// changes time. No timing is asserted here: the rule is checked with given times, the calls with real ones.

import { afterEach, describe, expect, it } from 'vitest';
import { init, KVCache } from '../src/index.js';
import { MIN_TRIAL_BYTES, StreamChoice, streamChoice, TRIAL_STEPS } from '../src/stream-choice.js';
import { type Cfg, concat, expectBitIdentical, feed, ones, slice, stream } from './support/util.js';

describe('StreamChoice: the first decode steps of a size class alternate the paths, then the faster is kept', () => {
  const bytes = 64 << 20;
  const key = StreamChoice.key(bytes, 8, 64);

  for (const [faster, plainMs, streamedMs] of [
    [1, 2, 1.5],
    [0, 1.5, 2],
  ] as const) {
    it(`keeps ${faster ? 'streaming' : 'not streaming'} when its median was lower`, () => {
      const choice = new StreamChoice();
      expect(choice.flag(bytes, key, 1), 'the default rule until decided').toBe(1);
      const paths: number[] = [];
      for (let i = 0; i < 2 * TRIAL_STEPS; i++) {
        const path = choice.trialPath(bytes, key);
        paths.push(path);
        // one outlier each way must not decide: medians, not means
        const ms = (path ? streamedMs : plainMs) * (i < 2 ? 10 : 1);
        choice.record(key, path, ms);
      }
      expect(paths).toEqual(Array.from({ length: 2 * TRIAL_STEPS }, (_, i) => i & 1));
      expect(choice.choice(key)).toBe(faster);
      expect(choice.trialPath(bytes, key), 'decided: no more timed steps').toBe(-1);
      expect(choice.flag(bytes, key, 1 - faster)).toBe(faster);
      // another geometry of the same size class is tried on its own
      expect(choice.trialPath(bytes, StreamChoice.key(bytes, 4, 128))).toBe(0);
    });
  }

  it('K/V below MIN_TRIAL_BYTES never streams and is never tried', () => {
    const choice = new StreamChoice();
    const small = MIN_TRIAL_BYTES - 1;
    expect(choice.trialPath(small, StreamChoice.key(small, 8, 64))).toBe(-1);
    expect(choice.flag(small, StreamChoice.key(small, 8, 64), 1)).toBe(0);
  });
});

describe('decode steps with and without streaming', () => {
  afterEach(() => streamChoice.force(-1));

  // 9 kv heads × 64 × 2 (K and V) × 4 B = 4.6 KB a token: 1,900 tokens hold 8.8 MB, past MIN_TRIAL_BYTES
  const cfg: Cfg = { heads: 18, kvHeads: 9, headDim: 64, maxTokens: 2000 };
  const s = stream(cfg, 1950, 41);
  const steps = 2 * TRIAL_STEPS + 4;

  for (const threads of [1, 2]) {
    it(`${threads} thread${threads > 1 ? 's' : ''}: the same bits streamed, not streamed, and while the size class is trying both`, async () => {
      await init({ threads });
      const run = (flag: number) => {
        streamChoice.force(flag);
        const cache = new KVCache(cfg as never);
        feed(cache, cfg, slice(cfg, s, 0, 1900));
        const out = feed(cache, cfg, slice(cfg, s, 1900, 1900 + steps), ones(steps));
        const bytes = cache.byteLength;
        cache.dispose();
        return { out, bytes };
      };
      const plain = run(0);
      const streamed = run(1);
      expectBitIdentical(streamed.out, plain.out, 'streamed == not streamed');
      expect(plain.bytes).toBeGreaterThan(MIN_TRIAL_BYTES);
      // measured: the class (fresh for this geometry in this process, unless the other thread count's
      // test tried it first) times its first steps on each path, then keeps one
      const tried = run(-1);
      expectBitIdentical(concat([tried.out]), plain.out, 'while trying both paths == not streamed');
      const key = StreamChoice.key(plain.bytes, cfg.kvHeads ?? cfg.heads, cfg.headDim);
      expect([0, 1]).toContain(streamChoice.choice(key));
    }, 60_000);
  }
});
