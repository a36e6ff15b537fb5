// Memory follows the tokens (API.md, "Memory"): a cache takes pages of 64 positions as tokens arrive and
// gives them back on truncate, reset and dispose; maxTokens is a limit, not a reservation; where the engine
// cannot grow linear memory for a new page, attend throws a RangeError that says how many bytes it needed,
// and the cache is unchanged.

import { afterEach, expect, it } from 'vitest';
import {
  exhaustHeap,
  expectBitIdentical,
  expectThrows,
  refuseGrowth,
  withEachBuild,
  cfgName,
  feed,
  fill,
  heap,
  heldBytes,
  pageBytesFor,
  stream,
  type Cfg,
} from './support/util.js';

const LLAMA_LAYER: Cfg = { heads: 32, kvHeads: 8, headDim: 64, maxTokens: 32768 };

withEachBuild('pages', (build, make) => {
  let restore: (() => void) | undefined;
  let blocks: number[] = [];
  afterEach(() => {
    restore?.();
    restore = undefined;
    for (const b of blocks.splice(0)) heap().release(b);
  });

  it('a Llama-3.2-1B layer under a 32,768-token limit: a few hundred bytes empty, then pages of 64 positions as tokens arrive', () => {
    const c = make(LLAMA_LAYER);
    const lines: string[] = [];
    let held = 0;
    for (const tokens of [0, 100, 10_000]) {
      fill(c, LLAMA_LAYER, tokens - held);
      held = tokens;
      const pages = 2 * 8 * Math.ceil(tokens / 64);
      expect(c.byteLength, `${tokens} tokens`).toBeGreaterThanOrEqual(pages * pageBytesFor(LLAMA_LAYER));
      // the rest: descriptor and page table (capacity doubles: at most 2 × 4 bytes per page, + 4 KiB)
      expect(c.byteLength - pages * pageBytesFor(LLAMA_LAYER), `${tokens} tokens: overhead`).toBeLessThan(
        4096 + 8 * pages,
      );
      lines.push(`${tokens} tokens: ${c.byteLength} bytes`);
    }
    if (build === 'relaxed-simd') console.log(`[pages] ${cfgName(LLAMA_LAYER)}: ${lines.join('; ')}`);
  });

  it('truncate, reset and dispose give pages back, and the pool serves them again: churn does not grow memory', () => {
    const cfg: Cfg = { layers: 2, heads: 4, kvHeads: 2, headDim: 64, maxTokens: 4096 };
    const c = make(cfg);
    fill(c, cfg, 1000, 0);
    fill(c, cfg, 1000, 1);
    const full = c.byteLength;
    c.truncate(500);
    expect(c.byteLength, 'truncate(500) keeps 8 of 16 pages per kv head').toBe(
      full - 2 * 2 * 2 * 8 * pageBytesFor(cfg),
    );
    c.reset();
    expect(c.byteLength, 'reset holds what a new cache holds').toBe(make(cfg).byteLength);
    const memory = heap().memoryBytes;
    const before = heldBytes();
    for (let i = 0; i < 30; i++) {
      fill(c, cfg, 1000, i % 2);
      const f = c.fork();
      feed(f, cfg, stream(cfg, 3, i), [3], i % 2);
      const g = f.fork();
      f.dispose();
      g.truncate(100 + i);
      g.dispose();
      c.truncate(i * 7);
      c.reset();
    }
    expect(heldBytes(), 'every page came back').toBe(before);
    expect(heap().memoryBytes, 'and was reused: memory did not grow').toBe(memory);
  });

  it('when memory cannot grow for a page, attend throws a RangeError naming the bytes, and the cache is unchanged', () => {
    for (const cfg of [
      { layers: 2, heads: 4, kvHeads: 2, headDim: 32, maxTokens: 1000, rope: {} },
      { heads: 2, kvHeads: 1, headDim: 16, maxTokens: 200, window: 100, sinks: 1, dtype: 'int8' },
    ] as Cfg[]) {
      const c = make(cfg);
      const twin = make(cfg);
      const h = stream(cfg, 64, 1); // exactly one page: the next token needs a new one
      feed(c, cfg, h);
      feed(twin, cfg, h);
      const bytes = c.byteLength;
      const saved = c.save();
      blocks = exhaustHeap();
      restore = refuseGrowth();
      const s = stream(cfg, 3, 2);
      const out = new Float32Array(3 * cfg.heads * cfg.headDim).fill(7);
      expectThrows(() => c.attend(0, s.q, s.k, s.v, out), RangeError, [
        /needs \d+ more bytes/,
        /memory could not grow/,
      ]);
      expectThrows(() => c.append(0, s.k, s.v), RangeError, [/needs \d+ more bytes/]);
      expectThrows(() => c.fork(), RangeError, [/\d+ bytes/]);
      expect(
        out.every((x) => x === 7),
        'a refused attend writes nothing into out',
      ).toBe(true);
      expect([c.length, c.byteLength], `${cfgName(cfg)}: unchanged`).toEqual([64, bytes]);
      expect(c.save(), 'the same state, byte for byte').toEqual(saved);
      // memory again: the cache continues exactly as its twin that never failed
      restore();
      restore = undefined;
      for (const b of blocks.splice(0)) heap().release(b);
      expectBitIdentical(feed(c, cfg, s), feed(twin, cfg, s), `${cfgName(cfg)}: after the refused calls`);
    }
  });

  it('a new cache costs its descriptor only, whatever maxTokens is; a limit that could never fit in 4 GiB is refused', () => {
    const small = make({ layers: 16, heads: 32, kvHeads: 8, headDim: 64, maxTokens: 64 });
    const large = make({ layers: 16, heads: 32, kvHeads: 8, headDim: 64, maxTokens: 32768 });
    expect(large.byteLength).toBe(small.byteLength);
    expect(large.byteLength).toBeLessThan(1024);
    // 16 layers × 2 × 8 kv heads × 131072 tokens × 256 bytes = 8 GiB once full
    expectThrows(() => make({ layers: 16, heads: 32, kvHeads: 8, headDim: 64, maxTokens: 131072 }), RangeError, [
      /\d{10} bytes/,
    ]);
  });
});
