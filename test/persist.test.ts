// save() / KVCache.load(bytes): a loaded cache continues bit-identically (same build) or within float
// rounding (another build); bytes that are truncated, corrupted, of another format version or not a cache
// at all are refused with an Error (never a trap, never a cache computing garbage, nothing leaked).

import { afterEach, describe, expect, it } from 'vitest';
import { init, KVCache } from '../src/index.js';
import { ReferenceCache } from './support/reference.js';
import {
  BUILDS,
  Rng,
  SUPPORT,
  quantized,
  expectBitIdentical,
  expectClose,
  expectThrows,
  withEachBuild,
  named,
  tolFor,
  wasmBytes,
  cfgName,
  crc32,
  envelope,
  feed,
  heldBytes,
  pageBytesFor,
  feedRef,
  heap,
  ones,
  parseSave,
  rechecksum,
  slice,
  stream,
  withHeader,
  withHeaderFields,
  type Cfg,
  type Stream,
} from './support/util.js';

/** One step of building a cache's state. */
type Op = { layer: number; chunks: number[] } | { truncate: number };

interface Point {
  name: string;
  cfg: Cfg;
  ops: Op[];
  /** a truncate the saved state must refuse (evicted keys), checked on the original and the loaded cache */
  refuse?: number;
}

const POINTS: Point[] = [
  { name: 'empty cache', cfg: { layers: 2, heads: 4, kvHeads: 2, headDim: 16, maxTokens: 32, rope: {} }, ops: [] },
  {
    name: 'empty windowed int8 cache',
    cfg: { heads: 2, headDim: 8, maxTokens: 8, window: 6, sinks: 2, dtype: 'int8' },
    ops: [],
  },
  {
    name: 'mid-prefill (first chunk of a chunked prefill)',
    cfg: { heads: 4, kvHeads: 1, headDim: 64, maxTokens: 64, rope: {} },
    ops: [{ layer: 0, chunks: [13] }],
  },
  {
    name: 'after the ring wrapped',
    cfg: { heads: 4, kvHeads: 2, headDim: 8, maxTokens: 8, window: 6, sinks: 2, rope: {} },
    ops: [{ layer: 0, chunks: [30, 1, 1, 1] }],
    refuse: 25,
  },
  {
    name: 'ring wrapped within one long attend, no sinks',
    cfg: { heads: 2, headDim: 12, maxTokens: 10, window: 10, rope: { interleaved: true } },
    ops: [{ layer: 0, chunks: [57] }],
    refuse: 50,
  },
  {
    name: 'after truncate',
    cfg: { heads: 4, kvHeads: 2, headDim: 32, maxTokens: 40, rope: {} },
    ops: [{ layer: 0, chunks: [20, 1, 5] }, { truncate: 17 }],
  },
  {
    name: 'after truncate on a wrapped ring',
    cfg: { heads: 2, kvHeads: 1, headDim: 8, maxTokens: 8, window: 5, sinks: 1, rope: {} },
    ops: [{ layer: 0, chunks: [20, 1, 1] }, { truncate: 19 }, { layer: 0, chunks: [1] }],
    refuse: 14,
  },
  {
    name: 'after truncate back into the sinks of a wrapped ring',
    cfg: { heads: 2, headDim: 8, maxTokens: 6, window: 4, sinks: 3 },
    ops: [{ layer: 0, chunks: [25] }, { truncate: 2 }],
  },
  {
    name: 'int8',
    cfg: { heads: 8, kvHeads: 2, headDim: 64, maxTokens: 64, dtype: 'int8' },
    ops: [{ layer: 0, chunks: [30, 1, 1] }],
  },
  {
    name: 'bfloat16, grouped heads',
    cfg: { heads: 8, kvHeads: 2, headDim: 64, maxTokens: 64, dtype: 'bfloat16' },
    ops: [{ layer: 0, chunks: [30, 1, 1] }],
  },
  {
    name: 'int4, odd head size (a short last group), rope, window wrapped',
    cfg: { layers: 2, heads: 4, kvHeads: 2, headDim: 40, maxTokens: 9, window: 8, sinks: 1, dtype: 'int4', rope: {} },
    ops: [
      { layer: 0, chunks: [40] },
      { layer: 1, chunks: [3] },
    ],
  },
  {
    name: 'int8, rope, window wrapped',
    cfg: { layers: 2, heads: 4, kvHeads: 2, headDim: 16, maxTokens: 9, window: 8, sinks: 1, dtype: 'int8', rope: {} },
    ops: [
      { layer: 0, chunks: [40] },
      { layer: 1, chunks: [3] },
    ],
    refuse: 20,
  },
  {
    name: 'rope (partial dims), softcap and scale',
    cfg: { heads: 4, headDim: 80, maxTokens: 48, rope: { dims: 32, theta: 500000 }, softcap: 30, scale: 0.2 },
    ops: [{ layer: 0, chunks: [17, 1] }],
  },
  {
    name: 'multiple layers at different lengths',
    cfg: { layers: 4, heads: 6, kvHeads: 3, headDim: 7, maxTokens: 40, rope: { dims: 6 } },
    ops: [
      { layer: 0, chunks: [11] },
      { layer: 2, chunks: [3, 1] },
      { layer: 3, chunks: [29, 1] },
    ],
  },
  {
    name: 'multiple layers at different lengths, windowed',
    cfg: { layers: 3, heads: 2, headDim: 4, maxTokens: 8, window: 6, sinks: 2, rope: {} },
    ops: [
      { layer: 0, chunks: [5] },
      { layer: 1, chunks: [100] },
      { layer: 2, chunks: [9] },
    ],
  },
];

/** Applies the ops; returns, per layer, the tokens the layer holds (its kept history). */
function build(cache: KVCache, ref: ReferenceCache | undefined, cfg: Cfg, ops: Op[], seed: number): Stream[][] {
  const layers = cfg.layers ?? 1;
  const history: Stream[][] = Array.from({ length: layers }, () => []);
  ops.forEach((op, i) => {
    if ('truncate' in op) {
      cache.truncate(op.truncate);
      ref?.truncate(op.truncate);
      for (const h of history) h.length = Math.min(h.length, op.truncate);
      return;
    }
    const n = op.chunks.reduce((a, b) => a + b, 0);
    const s = stream(cfg, n, seed + i);
    feed(cache, cfg, s, op.chunks, op.layer);
    if (ref) feedRef(ref, cfg, s, op.chunks, op.layer);
    for (let t = 0; t < n; t++) history[op.layer].push(slice(cfg, s, t, t + 1));
  });
  return history;
}

/** The same continuation on every layer: outputs per layer. */
function continueAll(cache: KVCache, cfg: Cfg, seed: number, chunks = [1, 3, 1]): Float32Array[] {
  const n = chunks.reduce((a, b) => a + b, 0);
  return Array.from({ length: cfg.layers ?? 1 }, (_, l) => feed(cache, cfg, stream(cfg, n, seed + l), chunks, l));
}

function continueRef(ref: ReferenceCache, cfg: Cfg, seed: number, chunks = [1, 3, 1]): Float64Array[] {
  const n = chunks.reduce((a, b) => a + b, 0);
  return Array.from({ length: cfg.layers ?? 1 }, (_, l) => feedRef(ref, cfg, stream(cfg, n, seed + l), chunks, l));
}

const lengths = (c: KVCache, cfg: Cfg) => Array.from({ length: cfg.layers ?? 1 }, (_, l) => c.lengthOf(l));

/** A load that must be refused: an Error (not a trap), naming the bytes, leaking nothing. */
function expectRefused(bytes: unknown, label: string, patterns: RegExp[] = [], checkMemory = false): Error {
  const allocated = heap().allocatedBytes;
  const memory = heap().memoryBytes;
  let error: Error;
  try {
    error = expectThrows(() => KVCache.load(bytes as Uint8Array), Error, [/bytes/, ...patterns]);
  } catch (e) {
    throw new Error(`${label}: ${(e as Error).message}`);
  }
  expect(heap().allocatedBytes, `${label}: a refused load keeps no memory`).toBe(allocated);
  if (checkMemory) expect(heap().memoryBytes, `${label}: a refused load does not grow memory`).toBe(memory);
  return error;
}

withEachBuild('save/load', (buildName) => {
  const live: KVCache[] = [];
  function keep<T extends KVCache>(c: T): T {
    live.push(c);
    return c;
  }
  const make = (cfg: Cfg) => keep(new KVCache(cfg as never));
  afterEach(() => {
    for (const c of live.splice(0)) c.dispose();
  });

  describe('a loaded cache continues exactly where the saved one stood (bit-identical)', () => {
    for (const [i, pt] of POINTS.entries()) {
      it(`${pt.name} (${cfgName(pt.cfg)})`, () => {
        const { cfg } = pt;
        const original = make(cfg);
        const ref = quantized(cfg) ? undefined : new ReferenceCache(cfg);
        build(original, ref, cfg, pt.ops, 1000 * i);
        const bytes = original.save();
        expect(bytes).toBeInstanceOf(Uint8Array);
        const copy = bytes.slice();
        const loaded = keep(KVCache.load(copy));
        expect(lengths(loaded, cfg)).toEqual(lengths(original, cfg));
        expect(loaded.length).toBe(original.length);
        expect(loaded.byteLength).toBe(original.byteLength);
        // the loaded cache saves the very same bytes; the input array is not kept (scribbling on it is harmless)
        copy.fill(0xa5);
        const again = loaded.save();
        expect(again.length).toBe(bytes.length);
        expect(Buffer.from(again).equals(Buffer.from(bytes)), 'save(load(bytes)) === bytes').toBe(true);
        const refuse = pt.refuse;
        if (refuse !== undefined) {
          expectThrows(() => original.truncate(refuse), RangeError, [named('n')]);
          expectThrows(() => loaded.truncate(refuse), RangeError, [named('n')]);
        }
        const a = continueAll(original, cfg, 7 + i);
        const b = continueAll(loaded, cfg, 7 + i);
        for (const [l, x] of a.entries()) expectBitIdentical(b[l], x, `layer ${l}: loaded vs original`);
        if (ref) {
          const want = continueRef(ref, cfg, 7 + i);
          for (const l of a.keys())
            expectClose(b[l], want[l], tolFor(cfg.scale, cfg.headDim), `layer ${l}: loaded vs float64 reference`);
        }
        // and they keep agreeing through a truncate within what both hold
        const n = Math.max(0, ...lengths(original, cfg)) - 1;
        original.truncate(n);
        loaded.truncate(n);
        const a2 = continueAll(original, cfg, 99);
        const b2 = continueAll(loaded, cfg, 99);
        for (const [l, x] of a2.entries()) expectBitIdentical(b2[l], x, `layer ${l} after truncate(${n})`);
      });
    }

    it('save() changes nothing, twice gives the same bytes, and old bytes restore the old state', () => {
      const cfg: Cfg = { layers: 2, heads: 4, kvHeads: 2, headDim: 16, maxTokens: 10, window: 8, sinks: 1, rope: {} };
      const a = make(cfg);
      const b = make(cfg);
      const s = stream(cfg, 30, 3);
      for (const c of [a, b]) feed(c, cfg, s, [30]);
      const first = a.save();
      expect(Buffer.from(a.save()).equals(Buffer.from(first))).toBe(true);
      const next = stream(cfg, 5, 4);
      expectBitIdentical(feed(a, cfg, next, [2, 3]), feed(b, cfg, next, [2, 3]), 'a (saved twice) vs b (never saved)');
      // the first bytes still hold the state before `next`; the original's later life does not reach them
      a.dispose();
      const old = keep(KVCache.load(first));
      expect(old.length).toBe(30);
      const fresh = make(cfg);
      feed(fresh, cfg, s, [30]);
      expectBitIdentical(feed(old, cfg, next, ones(5)), feed(fresh, cfg, next, [5]), 'loaded from the first save');
    });

    it('loads bytes that sit inside a larger buffer (byteOffset) and from a Node Buffer', () => {
      const cfg: Cfg = { heads: 2, headDim: 8, maxTokens: 16, rope: {} };
      const a = make(cfg);
      feed(a, cfg, stream(cfg, 7, 5));
      const bytes = a.save();
      const big = new Uint8Array(bytes.length + 13);
      big.set(bytes, 5);
      const next = stream(cfg, 2, 6);
      const want = feed(keep(KVCache.load(bytes)), cfg, next);
      expectBitIdentical(
        feed(keep(KVCache.load(big.subarray(5, 5 + bytes.length))), cfg, next),
        want,
        'from a subarray at offset 5',
      );
      expectBitIdentical(feed(keep(KVCache.load(Buffer.from(bytes))), cfg, next), want, 'from a Buffer');
    });

    it('the format is the documented one: magic, version 3, JSON header with options, layers and row checksums, CRC-32', () => {
      const cfg: Cfg = {
        layers: 2,
        heads: 4,
        kvHeads: 2,
        headDim: 8,
        maxTokens: 12,
        window: 10,
        sinks: 2,
        rope: { theta: 1000 },
      };
      const a = make(cfg);
      feed(a, cfg, stream(cfg, 5, 1), [5], 0);
      feed(a, cfg, stream(cfg, 30, 2), [30], 1);
      const bytes = a.save();
      const p = parseSave(bytes);
      expect(p.version).toBe(3);
      expect(p.header.build).toBe(buildName);
      // the options the cache was made with, its dtype filled in (rope left out: the header holds it resolved)
      const { rope: _, ...made } = cfg;
      expect(p.header.options).toMatchObject({ ...made, dtype: 'float32' });
      // layer 1's ring wrapped: it holds its 2 sinks and positions 18 … 29 (30 − 12 slots)
      expect(p.header.layers).toEqual([
        { from: 0, to: 5, held: 2 },
        { from: 0, to: 30, held: 18 },
      ]);
      expect(p.payload.length).toBe((5 + 2 + 12) * 2 * 2 * 8 * 4);
      expect(p.header.continues, 'a piece from 0 continues nothing').toBe(0);
      // reaches: CRC-32 of the rows at each layer's last position, in payload order (K per kv head, V per kv head)
      const row = 8 * 4;
      const rowsAt = (layerStart: number, held: number, index: number) =>
        [0, 1, 2, 3].map((part) =>
          p.payload.subarray(layerStart + (part * held + index) * row, layerStart + (part * held + index + 1) * row),
        );
      const last = [...rowsAt(0, 5, 4), ...rowsAt(5 * 4 * row, 14, 13)];
      expect(p.header.reaches).toBe(crc32(Buffer.concat(last)));
      expect(
        rechecksum(bytes.slice()).every((x, i) => x === bytes[i]),
        'the stored CRC is zlib CRC-32',
      ).toBe(true);
    });
    it('sinks without a window change nothing in the payload: each position is held once', () => {
      // sinks only pin positions in a window's ring; without a window every position is held anyway
      for (const sinks of [0, 4]) {
        const cfg: Cfg = { layers: 2, heads: 2, kvHeads: 1, headDim: 4, maxTokens: 64, sinks };
        const a = make(cfg);
        for (let l = 0; l < 2; l++) feed(a, cfg, stream(cfg, 10, 20 + l), [10], l);
        const whole = parseSave(a.save());
        expect(whole.payload.length, `save() of 10 positions, sinks ${sinks}`).toBe(2 * 10 * 2 * 1 * 4 * 4);
        expect(parseSave(a.save({ from: 2 })).payload.length, `save({ from: 2 }), sinks ${sinks}`).toBe(
          2 * 8 * 2 * 1 * 4 * 4,
        );
        const next = stream(cfg, 3, 22);
        expectBitIdentical(
          feed(keep(KVCache.load([a.save({ to: 2 }), a.save({ from: 2 })])), cfg, next),
          feed(a, cfg, next),
          `sinks ${sinks}`,
        );
      }
    });
  });

  describe('pieces: save({ from, to }) holds only positions since from; load(pieces) applies them in order', () => {
    /** Builds the point's state, saving a piece after every op from the lengths of the save before it. */
    function savedInPieces(pt: Point, seed: number): { original: KVCache; pieces: Uint8Array[] } {
      const original = make(pt.cfg);
      let pieces = [original.save()];
      let since = lengths(original, pt.cfg);
      for (const op of pt.ops) {
        build(original, undefined, pt.cfg, [op], seed++);
        // a truncate replaced positions the pieces so far reach: start again from a whole save
        pieces = 'truncate' in op ? [original.save()] : [...pieces, original.save({ from: since })];
        since = lengths(original, pt.cfg);
      }
      return { original, pieces };
    }

    for (const [i, pt] of POINTS.entries()) {
      it(`saved op by op, loaded from the pieces: the same state as saved whole (${pt.name})`, () => {
        const { original, pieces } = savedInPieces(pt, 2000 * i);
        const loaded = keep(KVCache.load(pieces));
        expect(lengths(loaded, pt.cfg)).toEqual(lengths(original, pt.cfg));
        expect(
          Buffer.from(loaded.save()).equals(Buffer.from(original.save())),
          'save() of the pieces === save() of the original',
        ).toBe(true);
        const a = continueAll(original, pt.cfg, 11 + i);
        const b = continueAll(loaded, pt.cfg, 11 + i);
        a.forEach((x, l) => {
          expectBitIdentical(b[l], x, `layer ${l}: loaded from ${pieces.length} pieces vs original`);
        });
      });
    }

    it('a piece holds only its positions: pages of 64 positions and a partial last page, as the edge example stores them', () => {
      const cfg: Cfg = { layers: 2, heads: 4, kvHeads: 2, headDim: 16, maxTokens: 300, dtype: 'int8', rope: {} };
      const a = make(cfg);
      const twin = make(cfg);
      const s = stream(cfg, 150, 21);
      const rows = new Map<number, Uint8Array>(); // storage rows keyed by first position
      // payload of n positions: 2 layers × K and V × 2 kv heads × (16 int8 values + an f32 scale)
      const payloadOf = (n: number) => n * 2 * 2 * 2 * (16 + 4);
      for (let t = 0; t < 150; t++) {
        for (let l = 0; l < 2; l++) feed(a, cfg, slice(cfg, s, t, t + 1), [1], l);
        const page = Math.floor(t / 64) * 64;
        if (t + 1 === page + 64) {
          // the page is complete: one row for it replaces its one-token rows
          for (const key of [...rows.keys()].filter((k) => k >= page)) rows.delete(key);
          rows.set(page, a.save({ from: page, to: page + 64 }));
          expect(parseSave(rows.get(page)!).payload.length).toBe(payloadOf(64));
        } else {
          rows.set(t, a.save({ from: t }));
          expect(parseSave(rows.get(t)!).payload.length, 'a one-token piece').toBe(payloadOf(1));
        }
      }
      expect([...rows.keys()].filter((k) => k % 64 === 0 && k < 128)).toEqual([0, 64]);
      const loaded = keep(KVCache.load([...rows.keys()].sort((x, y) => x - y).map((k) => rows.get(k)!)));
      for (let l = 0; l < 2; l++) feed(twin, cfg, s, [150], l);
      expect(Buffer.from(loaded.save()).equals(Buffer.from(twin.save()))).toBe(true);
      const next = stream(cfg, 3, 22);
      expectBitIdentical(
        feed(loaded, cfg, next, [1, 2], 1),
        feed(twin, cfg, next, [1, 2], 1),
        'loaded from pages vs fed whole',
      );
    });

    it("a fork stores only what it adds: the parent's save, then the fork's pieces, load as the fork", () => {
      const cfg: Cfg = { layers: 2, heads: 4, kvHeads: 2, headDim: 16, maxTokens: 200, dtype: 'int8', rope: {} };
      const prompt = make(cfg);
      for (let l = 0; l < 2; l++) feed(prompt, cfg, stream(cfg, 70, 61), [70], l);
      const shared = prompt.save();
      const chats = [keep(prompt.fork()), keep(prompt.fork())];
      const pieces = chats.map((chat, i) => {
        for (let l = 0; l < 2; l++) feed(chat, cfg, stream(cfg, 5, 62 + i), [1, 4], l);
        return chat.save({ from: 70 });
      });
      chats.forEach((chat, i) => {
        const loaded = keep(KVCache.load([shared, pieces[i]]));
        expect(Buffer.from(loaded.save()).equals(Buffer.from(chat.save())), `chat ${i}`).toBe(true);
        const next = stream(cfg, 2, 70);
        expectBitIdentical(feed(loaded, cfg, next, [2], 1), feed(chat, cfg, next, [2], 1), `chat ${i} loaded vs live`);
      });
      // and one chat's piece does not continue the other's history
      expectRefused([shared, pieces[0], pieces[1]], "chat 1's piece after chat 0's", [/piece 2 of 3/]);
    });

    for (const cfg of [
      { layers: 2, heads: 4, kvHeads: 2, headDim: 16, maxTokens: 300, dtype: 'int8', rope: {} },
      { layers: 2, heads: 4, kvHeads: 2, headDim: 8, maxTokens: 40, window: 24, sinks: 2, rope: {} },
    ] as Cfg[]) {
      it(`load(pieces, { base }): a fork of base with the pieces, sharing base's pages; base unchanged (${cfgName(cfg)})`, () => {
        const prompt = make(cfg);
        const twin = make(cfg);
        const s = stream(cfg, 150, 81);
        for (const c of [prompt, twin]) for (let l = 0; l < 2; l++) feed(c, cfg, s, [150], l);
        const chat = keep(prompt.fork());
        // (a window of 24 keeps a piece within what the ring still holds)
        const n = cfg.window ? 10 : 70;
        for (let l = 0; l < 2; l++) feed(chat, cfg, stream(cfg, n, 82), [1, n - 1], l);
        const pieces = [chat.save({ from: 150, to: 151 }), chat.save({ from: 151 })];
        const held = heldBytes();
        const loaded = keep(KVCache.load(pieces, { base: prompt }));
        const onBase = heldBytes() - held;
        const alone = keep(KVCache.load([prompt.save(), ...pieces]));
        if (!cfg.window) {
          // positions 150 … 219 take pages 2 and 3 of each (layer, kv head, K|V): the fork copies the shared
          // page 2 and adds page 3, where a cache of its own holds pages 0 … 3
          const rows = 2 * 2 * 2;
          expect(onBase, 'loaded on base: 2 pages per row (and a descriptor)').toBeLessThan(
            (2 * rows + 1) * pageBytesFor(cfg),
          );
          expect(heldBytes() - held - onBase, 'loaded alone: 4 pages per row').toBeGreaterThanOrEqual(
            4 * rows * pageBytesFor(cfg),
          );
        }
        expect(Buffer.from(loaded.save()).equals(Buffer.from(chat.save())), 'the same state as the live fork').toBe(
          true,
        );
        expect(
          Buffer.from(alone.save()).equals(Buffer.from(chat.save())),
          "and as the pieces loaded after the base's save",
        ).toBe(true);
        const next = stream(cfg, 3, 83);
        expectBitIdentical(
          feed(loaded, cfg, next, [1, 2], 1),
          feed(chat, cfg, next, [1, 2], 1),
          'loaded on base vs the live fork',
        );
        expect(prompt.length).toBe(150);
        expectBitIdentical(
          feed(prompt, cfg, next, [3], 0),
          feed(twin, cfg, next, [3], 0),
          'the base goes on as if nothing happened',
        );
      });
    }

    it('load(pieces, { base }) refuses pieces that do not continue the base, and bad bases', () => {
      const cfg: Cfg = { layers: 2, heads: 4, kvHeads: 2, headDim: 8, maxTokens: 40, rope: {} };
      const base = make(cfg);
      const other = make(cfg);
      for (let l = 0; l < 2; l++) {
        feed(base, cfg, stream(cfg, 10, 91), [10], l);
        feed(other, cfg, stream(cfg, 10, 92), [10], l);
      }
      const fork = keep(base.fork());
      for (let l = 0; l < 2; l++) feed(fork, cfg, stream(cfg, 5, 93), [5], l);
      const piece = fork.save({ from: 10 });
      const baseBytes = base.save();
      const longer = make({ ...cfg, maxTokens: 41 });
      const cases: [string, () => unknown, ErrorConstructor, RegExp][] = [
        [
          'a base of another history',
          () => KVCache.load(piece, { base: other }),
          Error,
          /does not continue the history the base cache holds/,
        ],
        [
          'a piece from elsewhere',
          () => KVCache.load(fork.save({ from: 12 }), { base }),
          Error,
          /from position 12, but the base cache holds that layer at 10/,
        ],
        [
          'a whole save',
          () => KVCache.load(fork.save(), { base }),
          Error,
          /from position 0, but the base cache holds that layer at 10/,
        ],
        [
          'a base of other options',
          () => KVCache.load(piece, { base: longer }),
          Error,
          /options .* differ from the base cache/,
        ],
        [
          'a base that is not a cache',
          () => KVCache.load(piece, { base: {} as never }),
          TypeError,
          named('options.base'),
        ],
        ['options that are not an object', () => KVCache.load(piece, 5 as never), TypeError, named('options')],
      ];
      for (const [what, load, type, message] of cases) {
        const allocated = heap().allocatedBytes;
        try {
          expectThrows(load, type, [message]);
        } catch (e) {
          throw new Error(`${what}: ${(e as Error).message}`);
        }
        expect(heap().allocatedBytes, `${what}: nothing kept`).toBe(allocated);
      }
      expect(Buffer.from(base.save()).equals(Buffer.from(baseBytes)), 'the base is unchanged').toBe(true);
      const gone = make(cfg);
      gone.dispose();
      expectThrows(() => KVCache.load(piece, { base: gone }), Error, [/disposed/]);
    });

    it('cut anywhere with { from, to }: the pieces load as the whole', () => {
      const cfg: Cfg = { layers: 3, heads: 2, headDim: 8, maxTokens: 64, rope: {} };
      const a = make(cfg);
      feed(a, cfg, stream(cfg, 40, 31), [40], 0);
      feed(a, cfg, stream(cfg, 40, 32), [40], 1);
      feed(a, cfg, stream(cfg, 17, 33), [17], 2);
      const rng = new Rng(34);
      for (let round = 0; round < 10; round++) {
        const cuts = [...new Set([0, 40, ...Array.from({ length: rng.int(0, 6) }, () => rng.int(0, 40))])].sort(
          (x, y) => x - y,
        );
        const pieces = cuts.slice(1).map((to, j) => a.save({ from: cuts[j], to }));
        const loaded = KVCache.load(pieces);
        try {
          expect(Buffer.from(loaded.save()).equals(Buffer.from(a.save())), `cut at ${cuts}`).toBe(true);
        } finally {
          loaded.dispose();
        }
      }
    });

    it('refused: pieces out of order, missing, repeated, from another cache, from before a truncate, of other options or build', () => {
      const cfg: Cfg = { layers: 2, heads: 4, kvHeads: 2, headDim: 8, maxTokens: 40, rope: {} };
      const a = make(cfg);
      const s = stream(cfg, 30, 41);
      const cutsAt = [0, 10, 20, 30];
      const pieces: Uint8Array[] = [];
      for (let j = 1; j < cutsAt.length; j++) {
        for (let l = 0; l < 2; l++)
          feed(a, cfg, slice(cfg, s, cutsAt[j - 1], cutsAt[j]), [cutsAt[j] - cutsAt[j - 1]], l);
        pieces.push(a.save({ from: cutsAt[j - 1] }));
      }
      const [p0, p1, p2] = pieces;
      expect(keep(KVCache.load(pieces)).length).toBe(30);
      // another cache of the same options at the same lengths, fed other tokens
      const b = make(cfg);
      for (let l = 0; l < 2; l++) feed(b, cfg, stream(cfg, 20, 42), [20], l);
      const other = b.save({ from: 10 });
      // a truncate to 15 and 5 other tokens: a piece from 20 no longer continues the pieces saved before
      const c = keep(KVCache.load([p0, p1]));
      c.truncate(15);
      for (let l = 0; l < 2; l++) feed(c, cfg, stream(cfg, 10, 43), [10], l);
      const afterTruncate = c.save({ from: 20 });
      const scaled = make({ ...cfg, scale: 0.5 });
      for (let l = 0; l < 2; l++) feed(scaled, cfg, slice(cfg, s, 0, 20), [20], l);
      const otherBuild = withHeader(p2, (x) => {
        x.build = x.build === 'simd' ? 'scalar' : 'simd';
      });
      const cases: [string, Uint8Array[], RegExp][] = [
        [
          'the last two swapped',
          [p0, p2, p1],
          /piece 1 of 3.*continues layer 0 from position 20.*leave that layer at 10/,
        ],
        ['the middle one missing', [p0, p2], /piece 1 of 2.*from position 20.*at 10/],
        ['one repeated', [p0, p1, p1, p2], /piece 2 of 4/],
        ['no whole save first', [p1, p2], /piece 0 of 2.*from position 10.*at 0/],
        ['a piece of another cache', [p0, other, p2], /piece 1 of 3.*does not continue/],
        [
          'a piece saved after a truncate replaced positions the earlier pieces hold',
          [p0, p1, afterTruncate],
          /piece 2 of 3.*does not continue/,
        ],
        ['a piece of other options', [p0, scaled.save({ from: 10 }), p2], /piece 1 of 3.*options/],
        ['a piece of another build', [p0, p1, otherBuild], /piece 2 of 3.*build/],
        [
          'a piece corrupted',
          [p0, p1, rechecksum(p2.slice()).map((x, i) => (i === p2.length - 9 ? x ^ 1 : x))],
          /piece 2 of 3.*checksum/,
        ],
      ];
      for (const [what, list, message] of cases) expectRefused(list, what, [message], true);
      expectThrows(() => KVCache.load([]), RangeError, [named('bytes')]);
      expectThrows(() => KVCache.load([p0, 'x' as never]), TypeError, [named('bytes[1]')]);
    });

    it('save({ from, to }) refuses bad ranges, and positions a window has evicted', () => {
      const cfg: Cfg = { layers: 2, heads: 2, headDim: 4, maxTokens: 8, window: 6, sinks: 1 };
      const c = make(cfg);
      feed(c, cfg, stream(cfg, 20, 51), [20], 0);
      feed(c, cfg, stream(cfg, 5, 52), [5], 1);
      const bad: [unknown, ErrorConstructor, RegExp][] = [
        [null, TypeError, named('options')],
        [5, TypeError, named('options')],
        [[], TypeError, named('options')],
        [{ from: '3' }, TypeError, named('options.from')],
        [{ from: -1 }, RangeError, named('options.from')],
        [{ from: 1.5 }, RangeError, named('options.from')],
        [{ from: 21 }, RangeError, named('options.from')],
        [{ to: 21 }, RangeError, named('options.to')],
        [{ from: 5, to: 4 }, RangeError, named('options.from')],
        [{ from: [3] }, RangeError, named('options.from')],
        [{ from: [3, 6] }, RangeError, named('options.from[1]')],
        // layer 0's ring of 8 holds positions 12 … 19 (and sink 0): a piece from 10 would continue an evicted row
        [{ from: 10 }, RangeError, /position 9.*holds positions from 12/],
        // a piece to 11 would leave a state holding positions that were overwritten since
        [{ from: 5, to: 11 }, RangeError, /layer 0/],
      ];
      for (const [options, type, message] of bad) expectThrows(() => c.save(options as never), type, [message]);
      expect(parseSave(c.save({ from: 13 })).header.layers).toEqual([
        { from: 13, to: 20, held: 13 },
        { from: 5, to: 5, held: 5 },
      ]);
      expect(parseSave(c.save({ from: [13, 2] })).header.layers).toEqual([
        { from: 13, to: 20, held: 13 },
        { from: 2, to: 5, held: 2 },
      ]);
    });
  });

  describe('refused with an Error: never a trap, never garbage, nothing leaked', () => {
    // a small save with every part present: two layers, a wrapped ring, rope
    const cfg: Cfg = { layers: 2, heads: 2, kvHeads: 1, headDim: 4, maxTokens: 6, window: 5, sinks: 1, rope: {} };
    const int8: Cfg = { heads: 4, kvHeads: 2, headDim: 8, maxTokens: 10, dtype: 'int8' };
    function saved(c: Cfg, seed: number): Uint8Array {
      const a = new KVCache(c as never);
      try {
        const n = c.window ? 20 : Math.min(20, c.maxTokens);
        feed(a, c, stream(c, n, seed), [n], 0);
        if ((c.layers ?? 1) > 1) feed(a, c, stream(c, 4, seed + 1), [4], 1);
        return a.save();
      } finally {
        a.dispose();
      }
    }

    it('truncated at every length', () => {
      for (const bytes of [saved(cfg, 1), saved(int8, 2)]) {
        for (let n = 0; n < bytes.length; n++) expectRefused(bytes.slice(0, n), `first ${n} of ${bytes.length} bytes`);
        // and a truncated save that is also re-checksummed (as if saved short) no longer has its payload
        for (const n of [bytes.length - 5, bytes.length - 8, bytes.length - 40]) {
          const short = bytes.slice(0, n + 4);
          expectRefused(rechecksum(short), `first ${n} bytes, re-checksummed`, [/expected|payload|bytes/]);
        }
      }
    });

    it('a bit flipped at every byte offset (header, padding, payload, checksum), and bytes overwritten', () => {
      const rng = new Rng(9);
      for (const bytes of [saved(cfg, 3), saved(int8, 4)]) {
        const p = parseSave(bytes);
        let where = { prefix: 0, header: 0, payload: 0, checksum: 0 };
        for (let at = 0; at < bytes.length; at++) {
          const bad = bytes.slice();
          bad[at] ^= 1 << rng.int(0, 7);
          expectRefused(bad, `bit flipped at byte ${at} of ${bytes.length}`);
          const part =
            at < 16 ? 'prefix' : at < p.payloadStart ? 'header' : at < bytes.length - 4 ? 'payload' : 'checksum';
          where = { ...where, [part]: where[part as keyof typeof where] + 1 };
        }
        expect(Math.min(where.prefix, where.header, where.payload, where.checksum)).toBeGreaterThan(3);
        // several bits at once, and runs of bytes overwritten
        for (let i = 0; i < 200; i++) {
          const bad = bytes.slice();
          const from = rng.int(0, bytes.length - 1);
          const len = rng.int(1, 12);
          for (let j = from; j < Math.min(bytes.length, from + len); j++)
            bad[j] = rng.next() < 0.5 ? 0 : bad[j] ^ rng.int(1, 255);
          if (bad.every((x, j) => x === bytes[j])) continue;
          expectRefused(bad, `bytes ${from}..${from + len - 1} overwritten`);
        }
        // appended bytes
        expectRefused(new Uint8Array([...bytes, 0]), 'one byte appended');
        expectRefused(new Uint8Array([...bytes, 0, 0, 0, 0]), 'four zero bytes appended');
      }
    });

    it('another format version (with or without a matching checksum)', () => {
      const bytes = saved(cfg, 5);
      for (const version of [0, 1, 4, 255, 0x100, 0xffffffff]) {
        const bad = bytes.slice();
        new DataView(bad.buffer).setUint32(8, version, true);
        expectRefused(bad, `version ${version}`);
        expectRefused(rechecksum(bad), `version ${version}, re-checksummed`, [/version/]);
      }
      const p = parseSave(bytes);
      expectRefused(envelope(p.header, p.payload, 4), 'a well-formed version 4 envelope', [
        /version 4/,
        /reads versions 2 and 3/,
      ]);
      // version 2 is version 3 without per-layer settings: its pieces still load
      expectBitIdentical(
        feed(keep(KVCache.load(envelope(p.header, p.payload, 2))), cfg, stream(cfg, 3, 9)),
        feed(keep(KVCache.load(bytes)), cfg, stream(cfg, 3, 9)),
        'a version-2 piece continues as the version-3 one',
      );
      // what wasm-attention 0.1.0 saved (format version 1) is refused with what to do about it
      const v1 = envelope(
        {
          options: p.header.options,
          build: buildName,
          layers: [
            { length: 0, intactFrom: 0, rows: 0 },
            { length: 0, intactFrom: 0, rows: 0 },
          ],
        },
        new Uint8Array(0),
        1,
      );
      expectRefused(v1, 'a version-1 save of an empty cache', [
        /format version 1 \(wasm-attention 0\.1\.0\)/,
        /reads versions 2 and 3/,
      ]);
    });

    it('not a cache at all', async () => {
      const rng = new Rng(6);
      const text = (s: string) => new TextEncoder().encode(s);
      const cases: [string, Uint8Array][] = [
        ['empty', new Uint8Array(0)],
        ['one byte', new Uint8Array(1)],
        ['20 zero bytes', new Uint8Array(20)],
        ['4 KiB of zeros', new Uint8Array(4096)],
        ['4 KiB of 0xff', new Uint8Array(4096).fill(255)],
        ['1 KiB of noise', Uint8Array.from({ length: 1024 }, () => rng.int(0, 255))],
        ['JSON text', text(JSON.stringify({ options: { heads: 1, headDim: 1, maxTokens: 1 }, layers: [] }))],
        ['the magic alone', text('wattn-kv')],
        ['the magic and 100 zero bytes', new Uint8Array([...text('wattn-kv'), ...new Uint8Array(100)])],
        ['a PNG signature', new Uint8Array([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a, ...new Uint8Array(40)])],
        ['the kernel binary', await wasmBytes(buildName)],
      ];
      const bytes = saved(cfg, 7);
      const magic = bytes.slice();
      magic.set(text('wattn-kx'), 0);
      cases.push(['another magic', magic], ['another magic, re-checksummed', rechecksum(magic.slice())]);
      for (const [name, b] of cases) expectRefused(b, name);
    });

    it('well-formed envelopes (valid checksum) whose header does not describe this payload', () => {
      const bytes = saved(cfg, 8);
      const p = parseSave(bytes);
      const h = p.header;
      const cases: [string, Uint8Array][] = [
        ['header not JSON', envelope('{"options": {', p.payload)],
        ['header not UTF-8', envelope(new Uint8Array([0x7b, 0xff, 0xfe, 0x7d]), p.payload)],
        ['header empty', envelope('', p.payload)],
        ['header JSON null', envelope('null', p.payload)],
        ['header JSON array', envelope('[1, 2]', p.payload)],
        ['header without options', withHeader(bytes, (x) => ({ ...x, options: undefined }))],
        ['header without layers', withHeader(bytes, (x) => ({ ...x, layers: undefined }))],
        ['options.heads 0', withHeaderFields(bytes, { options: { heads: 0 } })],
        ['options.headDim "4"', withHeaderFields(bytes, { options: { headDim: '4' } })],
        ['options.dtype "float16"', withHeaderFields(bytes, { options: { dtype: 'float16' } })],
        ['options.window above maxTokens', withHeaderFields(bytes, { options: { window: 7 } })],
        ['options.kvHeads not dividing heads', withHeaderFields(bytes, { options: { heads: 3, kvHeads: 2 } })],
        [
          'options.rope.dims odd',
          withHeader(bytes, (x) => {
            x.options.rope = { theta: 10000, dims: 3, interleaved: false };
          }),
        ],
        [
          'one layer fewer',
          withHeader(bytes, (x) => {
            x.layers.pop();
          }),
        ],
        [
          'one layer more',
          withHeader(bytes, (x) => {
            x.layers.push(x.layers[1]);
          }),
        ],
        ['a layer that is not an object', withHeaderFields(bytes, { layers: { 1: 4 } })],
        ['a negative end', withHeaderFields(bytes, { layers: { 1: { to: -1 } } })],
        ['a fractional end', withHeaderFields(bytes, { layers: { 1: { to: 3.5 } } })],
        ['a layer without held', withHeaderFields(bytes, { layers: { 1: { held: undefined } } })],
        ['held past the end', withHeaderFields(bytes, { layers: { 1: { held: 5 } } })],
        ['from past the end', withHeaderFields(bytes, { layers: { 1: { from: 5 } } })],
        ['a first piece that does not start at 0', withHeaderFields(bytes, { layers: { 1: { from: 1, held: 1 } } })],
        ['a first piece that claims to continue rows', withHeaderFields(bytes, { continues: 12345 })],
        ['no continues checksum', withHeaderFields(bytes, { continues: undefined })],
        ['no reaches checksum', withHeaderFields(bytes, { reaches: undefined })],
        ['a ring holding from later than its window needs', withHeaderFields(bytes, { layers: { 0: { held: 17 } } })],
        ['one layer more positions claimed', withHeaderFields(bytes, { layers: { 1: { to: 5 } } })],
        ['one layer fewer positions claimed', withHeaderFields(bytes, { layers: { 0: { held: 15 } } })],
        ['dtype int8 over a float32 payload', withHeaderFields(bytes, { options: { dtype: 'int8' } })],
        ['headDim 8 over a headDim 4 payload', withHeaderFields(bytes, { options: { headDim: 8, scale: 0.5 } })],
        ['the payload one byte short', envelope(h, p.payload.subarray(0, p.payload.length - 1))],
        ['the payload 4 bytes long', envelope(h, new Uint8Array([...p.payload, 0, 0, 0, 0]))],
        ['no payload', envelope(h, new Uint8Array(0))],
      ];
      // without a window every position is held: a length past maxTokens cannot be
      const plain: Cfg = { heads: 2, headDim: 4, maxTokens: 6 };
      const a = new KVCache(plain as never);
      feed(a, plain, stream(plain, 6, 1));
      const full = a.save();
      a.dispose();
      cases.push(
        ['no window, an end past maxTokens', withHeaderFields(full, { layers: { 0: { to: 7 } } })],
        ['no window, held not at from', withHeaderFields(full, { layers: { 0: { held: 1 } } })],
      );
      for (const [name, b] of cases) expectRefused(b, name);
    });

    it('well-formed envelopes whose layer state is impossible for a window (would continue on keys it never held)', () => {
      // layer 1 of `saved(cfg)` holds 4 tokens of a ring of 6 slots (+1 sink), unwrapped; layer 0 took 20 tokens
      const bytes = saved(cfg, 10);
      const p = parseSave(bytes);
      expect(p.header.layers[1]).toEqual({ from: 0, to: 4, held: 1 });
      expect(p.header.layers[0]).toEqual({ from: 0, to: 20, held: 14 });
      // claims 7 tokens held while holding rows for 4: positions 4 … 6 would be read from zeroed slots
      const rowsShort = withHeader(bytes, (x) => {
        x.layers[1].to = 7;
      });
      // claims nothing was evicted from a wrapped ring: truncate would then roll back onto overwritten slots
      const neverEvicted = withHeader(bytes, (x) => {
        x.layers[0].held = 1;
      });
      const findings: string[] = [];
      for (const [name, b] of [
        ['to 7 with rows for 4 (unwrapped ring)', rowsShort],
        ['held from 1 after 20 tokens through 6 slots', neverEvicted],
      ] as const) {
        try {
          expectRefused(b, name);
        } catch (e) {
          findings.push((e as Error).message.split('\n')[0]);
        }
      }
      expect(findings, 'load accepted an impossible layer state').toEqual([]);
    });

    it('a header claiming a huge cache with a tiny payload is refused without growing memory', () => {
      const bytes = saved({ heads: 2, headDim: 4, maxTokens: 6 }, 11);
      // 2 × 8 kv heads × 2^22 slots × 64 dims × 4 bytes = 16 GiB: refused by size
      expectRefused(
        withHeader(bytes, (x) => {
          Object.assign(x.options, { heads: 8, kvHeads: 8, headDim: 64, maxTokens: 2 ** 22, scale: 0.125 });
        }),
        '16 GiB claimed',
        [],
        true,
      );
      // 2 × 4 × 2^17 × 64 × 4 = 256 MiB would fit: the payload (a few hundred bytes) cannot be it, so the
      // refusal needs no memory (FORMAT.md: load "allocates nothing that outlives the call"; grown
      // WebAssembly memory never shrinks)
      expectRefused(
        withHeader(bytes, (x) => {
          Object.assign(x.options, { heads: 4, kvHeads: 4, headDim: 64, maxTokens: 2 ** 17, scale: 0.125 });
        }),
        '256 MiB claimed',
        [],
        true,
      );
    });

    it('bad arguments: TypeError naming bytes for non-Uint8Array input, Error for empty bytes', () => {
      for (const value of [
        null,
        undefined,
        new Float32Array(4),
        new Int8Array(40),
        new Uint8ClampedArray(40),
        new ArrayBuffer(40),
        new DataView(new ArrayBuffer(40)),
        [1, 2, 3],
        'wattn-kv',
        42,
        {},
      ]) {
        expectThrows(() => KVCache.load(value as never), TypeError, [named('bytes')]);
      }
      expectRefused(new Uint8Array(0), 'empty Uint8Array', [/bytes/]);
      // a live cache is not disturbed by any of it
      const c = make({ heads: 2, headDim: 4, maxTokens: 4 });
      expect(c.length).toBe(0);
    });
  });
});

describe('KVCache.load across builds (saved under one build, loaded under another): continues within float tolerance', () => {
  const builds = BUILDS.filter((b) => SUPPORT[b].ok);
  const cfgs: Cfg[] = [
    { layers: 2, heads: 8, kvHeads: 2, headDim: 64, maxTokens: 20, window: 16, sinks: 2, rope: {} },
    { heads: 4, kvHeads: 2, headDim: 128, maxTokens: 64, dtype: 'int8', rope: { interleaved: true }, softcap: 30 },
  ];
  for (const from of builds) {
    for (const to of builds) {
      if (from === to) continue;
      it(`${from} → ${to}`, async () => {
        for (const [i, cfg] of cfgs.entries()) {
          await init({ build: from });
          const original = new KVCache(cfg as never);
          const ref = new ReferenceCache(cfg);
          build(
            original,
            ref,
            cfg,
            [
              { layer: 0, chunks: [30, 1] },
              { layer: (cfg.layers ?? 1) - 1, chunks: [17] },
            ],
            40 + i,
          );
          const bytes = original.save();
          await init({ build: to });
          const loaded = KVCache.load(bytes);
          try {
            expect(parseSave(loaded.save()).header.build, 'the loaded cache lives in the new build').toBe(to);
            const a = continueAll(original, cfg, 50 + i, [1, 1, 5]);
            const b = continueAll(loaded, cfg, 50 + i, [1, 1, 5]);
            for (const [l, x] of a.entries())
              expectClose(
                b[l],
                x,
                tolFor(cfg.scale, cfg.headDim),
                `${cfgName(cfg)}: layer ${l}, ${to} (loaded) vs ${from} (original)`,
              );
            if (!quantized(cfg)) {
              const want = continueRef(ref, cfg, 50 + i, [1, 1, 5]);
              for (const [l, x] of b.entries())
                expectClose(x, want[l], tolFor(cfg.scale, cfg.headDim), `layer ${l}: ${to} (loaded) vs float64`);
            }
          } finally {
            original.dispose();
            loaded.dispose();
          }
        }
      });
    }
  }
});
