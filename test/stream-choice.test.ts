// Streaming chosen by measurement (PERFORMANCE.md, "When decode streams"): a size class tries each
// candidate (no streaming, and touch-ahead spans of a few lengths) on its first decode steps, round-robin,
// and keeps the fastest; every candidate gives the same bits, so the choice only changes time. No timing is
// asserted here: the rule is checked with given times, the calls with real ones.

import { afterEach, describe, expect, it } from 'vitest';
import { init, KVCache } from '../src/index.js';
import {
  CANDIDATES,
  MIN_TRIAL_BYTES,
  RETRY_STEPS,
  StreamChoice,
  streamChoice,
  TRIAL_STEPS,
  trialClock,
} from '../src/stream-choice.js';
import { type Cfg, expectBitIdentical, feed, ones, slice, stream } from './support/util.js';

const TRIAL = CANDIDATES.length * TRIAL_STEPS;

describe('StreamChoice: the first decode steps of a size class go round the candidates, then the fastest is kept', () => {
  const bytes = 64 << 20;
  const key = StreamChoice.key(bytes, 8, 64);

  it('tries no streaming and at least two spans', () => {
    expect(CANDIDATES[0]).toBe(0);
    expect(CANDIDATES.filter((span) => span > 0).length).toBeGreaterThanOrEqual(2);
  });

  for (const fastest of CANDIDATES) {
    it(`keeps ${fastest ? `spans of ${fastest} KiB` : 'not streaming'} when its median was lowest`, () => {
      const choice = new StreamChoice();
      expect(choice.flag(bytes, key, 512), 'the default rule until decided').toBe(512);
      const paths: number[] = [];
      for (let i = 0; i < TRIAL; i++) {
        const path = choice.trialPath(bytes, key);
        paths.push(path);
        // the fastest by 10%, but its first two steps 10× slower and another candidate's first one 10×
        // faster: one or two outliers must not decide (medians, not means or minima)
        const round = Math.floor(i / CANDIDATES.length);
        let ms = path === fastest ? 1.8 : 2;
        if (path === fastest && round < 2) ms *= 10;
        if (path !== fastest && round === 0) ms /= 10;
        choice.record(key, path, ms);
        if (i < TRIAL - 1) expect(choice.choice(key), 'undecided until every candidate had its steps').toBe(-1);
      }
      expect(paths, 'round-robin: noise falls on every candidate alike').toEqual(
        Array.from({ length: TRIAL }, (_, i) => CANDIDATES[i % CANDIDATES.length]),
      );
      expect(choice.choice(key)).toBe(fastest);
      expect(choice.trialPath(bytes, key), 'decided: no more timed steps').toBe(-1);
      expect(choice.flag(bytes, key, fastest === 512 ? 0 : 512), 'the choice, not the default rule').toBe(fastest);
      // a step recorded late (another cache of the class, timed before the decision) changes nothing
      choice.record(key, CANDIDATES[0], 1e-3);
      expect(choice.choice(key)).toBe(fastest);
      // another geometry of the same size class is tried on its own
      expect(choice.trialPath(bytes, StreamChoice.key(bytes, 4, 128))).toBe(CANDIDATES[0]);
    });
  }

  it('tries again after RETRY_STEPS untimed steps, running its choice meanwhile, and may then change it', () => {
    const choice = new StreamChoice();
    /** `steps` timed steps of a trial in which `fastest` has the lowest times. */
    const trial = (fastest: number, steps = TRIAL) => {
      for (let i = 0; i < steps; i++) {
        const path = choice.trialPath(bytes, key);
        expect(path, 'a timed step').toBeGreaterThanOrEqual(0);
        choice.record(key, path, path === fastest ? 1 : 2);
      }
    };
    trial(128);
    expect(choice.choice(key)).toBe(128);
    for (let i = 1; i < RETRY_STEPS; i++) expect(choice.trialPath(bytes, key), 'untimed while decided').toBe(-1);
    // the machine changed: the next step begins a new trial, round-robin from the first candidate again
    expect(choice.trialPath(bytes, key)).toBe(CANDIDATES[0]);
    expect(choice.choice(key), 'trying again').toBe(-1);
    expect(choice.flag(bytes, key, 512), 'the old choice where a step is not timed').toBe(128);
    choice.record(key, CANDIDATES[0], 1);
    trial(0, TRIAL - 1); // the rest of the new trial: no streaming now the fastest
    expect(choice.choice(key)).toBe(0);
    expect(choice.flag(bytes, key, 512)).toBe(0);
  });

  it("times steps by this process's CPU time in Node, in milliseconds", () => {
    const cpu0 = trialClock();
    const wall0 = performance.now();
    while (performance.now() - wall0 < 20) {}
    const cpu = trialClock() - cpu0;
    const wall = performance.now() - wall0;
    // one thread spinning: at most the wall time, less when other processes took the core; V8's own
    // background threads may add a little, hence the slack (a clock in µs would read 1,000× more)
    expect(cpu).toBeGreaterThan(0);
    expect(cpu).toBeLessThan(1.5 * wall + 2);
  });

  it('K/V below MIN_TRIAL_BYTES never streams and is never tried', () => {
    const choice = new StreamChoice();
    const small = MIN_TRIAL_BYTES - 1;
    expect(choice.trialPath(small, StreamChoice.key(small, 8, 64))).toBe(-1);
    expect(choice.flag(small, StreamChoice.key(small, 8, 64), 512)).toBe(0);
  });
});

describe('decode steps without streaming and with every span', () => {
  afterEach(() => streamChoice.force(-1));

  // 9 (10) kv heads × 64 × 2 (K and V) × 4 B = 4.6 (5.1) KB a token: 1,900 tokens hold 8.8 (9.7) MB, past
  // MIN_TRIAL_BYTES. A geometry per thread count, so each test meets its size class untried.
  const cfgOf = (threads: number, window: boolean): Cfg => ({
    heads: 2 * (8 + threads),
    kvHeads: 8 + threads,
    headDim: 64,
    // with a window the ring wraps (1,900 + steps tokens in 1,700 slots) and the walk starts past the sinks
    ...(window ? { maxTokens: 1700, window: 1500, sinks: 4 } : { maxTokens: 2000 }),
  });
  const history = 1900;
  const steps = TRIAL + 4;
  // the candidates, a span under one block (the kernel touches a block at least) and one past the whole cache
  const words = [...CANDIDATES, 1, 1 << 16];

  for (const threads of [1, 2]) {
    it(`${threads} thread${threads > 1 ? 's' : ''}: the same bits at every span, unstreamed, and while the size class tries them; then the class keeps its choice`, async () => {
      await init({ threads });
      for (const window of [false, true]) {
        const cfg = cfgOf(threads, window);
        const s = stream(cfg, history + 2 * steps, 41);
        const run = (word: number, from = history, n = steps) => {
          streamChoice.force(word);
          const cache = new KVCache(cfg as never);
          const past = slice(cfg, s, 0, from);
          cache.append(0, past.k, past.v);
          const out = feed(cache, cfg, slice(cfg, s, from, from + n), ones(n));
          const bytes = cache.byteLength;
          cache.dispose();
          return { out, bytes };
        };
        const plain = run(0);
        expect(plain.bytes).toBeGreaterThan(MIN_TRIAL_BYTES);
        for (const word of words.slice(1)) {
          expectBitIdentical(run(word).out, plain.out, `spans of ${word} KiB == not streamed (window: ${window})`);
        }
        if (window) continue;
        // measured: the class, untried in this process, times its first TRIAL steps on the candidates in
        // turn (same bits), then keeps one for every later step of every cache of its kind and size
        const key = StreamChoice.key(plain.bytes, cfg.kvHeads ?? cfg.heads, cfg.headDim);
        expect(streamChoice.choice(key)).toBe(-1);
        const tried = run(-1);
        expectBitIdentical(tried.out, plain.out, 'while trying the candidates == not streamed');
        const kept = streamChoice.choice(key);
        expect(CANDIDATES).toContain(kept);
        expect(streamChoice.trialPath(plain.bytes, key), 'decided: no more timed steps').toBe(-1);
        expectBitIdentical(run(-1, history + steps).out, run(0, history + steps).out, 'a later cache of the class');
        expect(streamChoice.choice(key), 'kept').toBe(kept);
      }
    }, 120_000);
  }
});
