// The thread pool's memory is its own, never a cache's (API.md, KVCache's `byteLength`): a cache's byteLength is
// what the heap holds for it even while the pool still holds a block it has replaced. A late worker may
// write into the scratch it was given, so a call that needs more scratch leaves the old block held until
// that worker leaves (src/threads.ts, #release).
//
// In a file of its own: the pool's scratch only grows, so the test needs an instance whose scratch is
// still sized by the calls below (each test file runs in a fresh module graph).

import { afterEach, describe, expect, it } from 'vitest';
import { init, KVCache } from '../src/index.js';
import { activeInstance } from '../src/init.js';
import { Rng, feed, heldBytes, slice, stream, type Cfg } from './support/util.js';

describe('the pool’s memory is no cache’s', () => {
  afterEach(async () => {
    activeInstance().pool?.resume();
    await init();
  });

  it('a block the pool replaces while a worker is late stays the pool’s until it leaves: no cache is charged for it', async () => {
    // decode steps over 6,000 keys of 8 kv heads: big enough to go across threads
    const cfg: Cfg = { heads: 16, kvHeads: 8, headDim: 64, maxTokens: 6100 };
    const s = stream(cfg, 6001, 17);
    await init({ threads: 2 });
    const pool = activeInstance().pool!;
    const rng = new Rng(23);
    const small = new KVCache(cfg as never);
    feed(small, cfg, slice(cfg, s, 0, 6000));
    pool.stopInNextCall(1);
    feed(small, cfg, slice(cfg, s, 6000, 6001));
    expect(pool.stopped, 'the worker is stopped inside its call').toBe(1);
    const before = heldBytes() - small.byteLength;
    const poolBefore = pool.bytes;
    // wider rows than cfg's: their calls need more scratch a thread
    const wide: Cfg = { heads: 16, kvHeads: 8, headDim: 128, maxTokens: 3100 };
    const abi = activeInstance().abi;
    expect(abi.scratchBytes(16, 8, 128)).toBeGreaterThan(abi.scratchBytes(16, 8, 64));
    const big = new KVCache(wide as never);
    big.append(0, rng.randn(3000 * 8 * 128), rng.randn(3000 * 8 * 128));
    const calls = pool.threadedCalls;
    big.attend(0, rng.randn(16 * 128), rng.randn(8 * 128), rng.randn(8 * 128));
    expect(pool.threadedCalls - calls, 'the step went across threads').toBe(1);
    expect(pool.bytes, 'the pool made its scratch again, bigger').toBeGreaterThan(poolBefore);
    expect(heldBytes() - before, 'while the worker is late').toBe(small.byteLength + big.byteLength);
    pool.resume();
    await new Promise((resolve) => setTimeout(resolve, 50));
    big.attend(0, rng.randn(16 * 128), rng.randn(8 * 128), rng.randn(8 * 128));
    expect(heldBytes() - before, 'once it has left').toBe(small.byteLength + big.byteLength);
    small.dispose();
    big.dispose();
    expect(heldBytes(), 'dispose releases both').toBe(before);
  }, 60_000);
});
