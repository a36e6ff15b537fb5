// Bad input (API.md, "Errors"): a TypeError (wrong type) or RangeError (wrong size or value) whose message
// names the argument, what was expected and what was given; never a WebAssembly trap; after any
// thrown error the cache is unchanged.

import { describe, expect, it } from 'vitest';
import { attention, attentionWeights, KVCache } from '../src/index.js';
import { MAX_POSITION } from '../src/options.js';
import {
  Rng,
  expectBitIdentical,
  expectRejects,
  expectThrows,
  withEachBuild,
  heap,
  named,
  withHeader,
} from './support/util.js';

type AnyFn = (...a: unknown[]) => unknown;
const attentionAny = attention as unknown as AnyFn;
const weightsAny = attentionWeights as unknown as AnyFn;
const Cache = KVCache as unknown as new (o?: unknown) => KVCache;

// One-shot base case: T=3, S=5, heads 4, kvHeads 2, headDim 8.
const H = 4;
const KV = 2;
const D = 8;
const T = 3;
const S = 5;
const base = { heads: H, kvHeads: KV, headDim: D };
const rng = new Rng(1);
const q = rng.randn(T * H * D); // 96
const k = rng.randn(S * KV * D); // 80
const v = rng.randn(S * KV * D); // 80

type Case = [label: string, call: () => unknown, type: typeof TypeError | typeof RangeError, patterns: RegExp[]];

/** the byte counts a message mentions (digits with optional , or _ separators) */
const byteCounts = (msg: string) => (msg.match(/\d[\d,_]*/g) ?? []).map((s) => Number(s.replace(/[,_]/g, '')));

/** Numbers as a message would print them. */
const num = (x: number) => new RegExp(Number.isNaN(x) ? 'NaN' : String(x).replace('.', '\\.'));

function sizeCases(fn: AnyFn, name: string, field: string, good: Record<string, unknown>): Case[] {
  const out: Case[] = [];
  for (const bad of [0, -1, 1.5, NaN, Infinity]) {
    out.push([`${name}: ${field} = ${bad}`, () => fn({ ...good, [field]: bad }), RangeError, [named(field), num(bad)]]);
  }
  out.push([`${name}: ${field} = '4' (a string)`, () => fn({ ...good, [field]: '4' }), TypeError, [named(field)]]);
  return out;
}

function oneShotCases(fn: AnyFn, name: string): Case[] {
  const withOpts = (o: Record<string, unknown>) => fn(q, k, v, o);
  return [
    // wrong array types
    [
      `${name}: q is a Float64Array`,
      () => fn(Float64Array.from(q), k, v, base),
      TypeError,
      [named('q'), /Float32Array/, /Float64Array/],
    ],
    [
      `${name}: q is a plain array`,
      () => fn(Array.from(q), k, v, base),
      TypeError,
      [named('q'), /Float32Array/, /array/i],
    ],
    [`${name}: q is null`, () => fn(null, k, v, base), TypeError, [named('q'), /null/]],
    [`${name}: q is undefined`, () => fn(undefined, k, v, base), TypeError, [named('q'), /undefined/]],
    [
      `${name}: k is a Float64Array`,
      () => fn(q, Float64Array.from(k), v, base),
      TypeError,
      [named('k'), /Float64Array/],
    ],
    [`${name}: k is null`, () => fn(q, null, v, base), TypeError, [named('k'), /null/]],
    [`${name}: v is an Int32Array`, () => fn(q, k, new Int32Array(80), base), TypeError, [named('v'), /Int32Array/]],
    [`${name}: v is a plain array`, () => fn(q, k, Array.from(v), base), TypeError, [named('v')]],
    // wrong lengths
    [
      `${name}: q length 95 is not a multiple of heads*headDim = 32`,
      () => fn(q.subarray(1), k, v, base),
      RangeError,
      [named('q'), /95/, /32/],
    ],
    [
      `${name}: k length 81 is not a multiple of kvHeads*headDim = 16`,
      () => fn(q, rng.randn(81), v, base),
      RangeError,
      [named('k'), /81/, /16/],
    ],
    [`${name}: v holds 4 tokens, k holds 5`, () => fn(q, k, v.subarray(16), base), RangeError, [named('v'), /64|4/]],
    [`${name}: v holds 6 tokens, k holds 5`, () => fn(q, k, rng.randn(96), base), RangeError, [named('v'), /96|6/]],
    [`${name}: v length 79`, () => fn(q, k, v.subarray(1), base), RangeError, [named('v'), /79/]],
    // options
    [`${name}: no options`, () => fn(q, k, v), TypeError, [/options/]],
    [`${name}: options is null`, () => fn(q, k, v, null), TypeError, [/options/]],
    ...sizeCases((o) => withOpts(o as Record<string, unknown>), name, 'heads', base),
    ...sizeCases((o) => withOpts(o as Record<string, unknown>), name, 'headDim', base),
    [`${name}: kvHeads = 0`, () => withOpts({ ...base, kvHeads: 0 }), RangeError, [named('kvHeads'), /0/]],
    [`${name}: kvHeads = 1.5`, () => withOpts({ ...base, kvHeads: 1.5 }), RangeError, [named('kvHeads'), /1\.5/]],
    [`${name}: kvHeads = NaN`, () => withOpts({ ...base, kvHeads: NaN }), RangeError, [named('kvHeads'), /NaN/]],
    [
      `${name}: heads 4 % kvHeads 3 !== 0`,
      () => fn(q, rng.randn(5 * 3 * 8), rng.randn(5 * 3 * 8), { ...base, kvHeads: 3 }),
      RangeError,
      [/heads/, /kvHeads/, /3/],
    ],
    [
      `${name}: kvHeads 8 > heads 4`,
      () => fn(q, rng.randn(5 * 8 * 8), rng.randn(5 * 8 * 8), { ...base, kvHeads: 8 }),
      RangeError,
      [/kvHeads/, /8/],
    ],
    [
      `${name}: headDim 513 > 512`,
      () => fn(rng.randn(3 * 4 * 513), rng.randn(5 * 2 * 513), rng.randn(5 * 2 * 513), { ...base, headDim: 513 }),
      RangeError,
      [named('headDim'), /513/, /512/],
    ],
    [`${name}: causal = 'yes'`, () => withOpts({ ...base, causal: 'yes' }), TypeError, [named('causal'), /yes/]],
    [`${name}: scale = NaN`, () => withOpts({ ...base, scale: NaN }), RangeError, [named('scale'), /NaN/]],
    [
      `${name}: scale = Infinity`,
      () => withOpts({ ...base, scale: Infinity }),
      RangeError,
      [named('scale'), /Infinity/],
    ],
    [`${name}: scale = '0.1'`, () => withOpts({ ...base, scale: '0.1' }), TypeError, [named('scale')]],
    [`${name}: window = 0`, () => withOpts({ ...base, window: 0 }), RangeError, [named('window'), /0/]],
    [`${name}: window = -2`, () => withOpts({ ...base, window: -2 }), RangeError, [named('window'), /-2/]],
    [`${name}: window = 2.5`, () => withOpts({ ...base, window: 2.5 }), RangeError, [named('window'), /2\.5/]],
    [`${name}: window = NaN`, () => withOpts({ ...base, window: NaN }), RangeError, [named('window'), /NaN/]],
    [`${name}: sinks = -1`, () => withOpts({ ...base, window: 2, sinks: -1 }), RangeError, [named('sinks'), /-1/]],
    [`${name}: sinks = 0.5`, () => withOpts({ ...base, window: 2, sinks: 0.5 }), RangeError, [named('sinks'), /0\.5/]],
    [`${name}: softcap = -1`, () => withOpts({ ...base, softcap: -1 }), RangeError, [named('softcap'), /-1/]],
    [`${name}: softcap = NaN`, () => withOpts({ ...base, softcap: NaN }), RangeError, [named('softcap'), /NaN/]],
  ];
}

function runCases(cases: Case[]) {
  for (const [label, call, type, patterns] of cases) {
    it(label, () => {
      expectThrows(call, type, patterns);
    });
  }
}

// ---------------------------------------------------------------------------------------------
// KVCache fixtures: layers 2, heads 4, kvHeads 2, headDim 8, maxTokens 6; layer 0 holds 3 tokens,
// layer 1 holds 2.

interface Fixture {
  opts: Record<string, unknown>;
  history: [layer: number, n: number, seed: number][];
}

const PLAIN: Fixture = {
  opts: { layers: 2, heads: 4, kvHeads: 2, headDim: 8, maxTokens: 6, rope: {} },
  history: [
    [0, 3, 1],
    [1, 2, 2],
  ],
};
// a wrapped ring: window 4 in 5 slots plus 1 sink, 13 tokens on layer 0
const RING: Fixture = {
  opts: { layers: 2, heads: 4, kvHeads: 2, headDim: 8, maxTokens: 5, window: 4, sinks: 1, rope: { interleaved: true } },
  history: [
    [0, 9, 1],
    [0, 1, 3],
    [0, 3, 4],
    [1, 2, 2],
  ],
};

function toks(n: number, seed: number, heads = 4, kvHeads = 2, headDim = 8) {
  const r = new Rng(seed);
  return { q: r.randn(n * heads * headDim), k: r.randn(n * kvHeads * headDim), v: r.randn(n * kvHeads * headDim) };
}

function build(f: Fixture): KVCache {
  const c = new Cache(f.opts);
  for (const [layer, n, seed] of f.history) {
    const t = toks(n, seed);
    c.attend(layer, t.q, t.k, t.v);
  }
  return c;
}

function lengths(c: KVCache): number[] {
  return [c.length, c.lengthOf(0), c.lengthOf(1)];
}

/** The cache must be exactly as before: same lengths, and its next outputs equal a fresh replay's. */
function expectUnchanged(c: KVCache, f: Fixture, label: string) {
  const fresh = build(f);
  expect(lengths(c), `${label}: lengths after the error`).toEqual(lengths(fresh));
  for (const layer of [0, 1]) {
    const t = toks(1, 99 + layer);
    expectBitIdentical(
      c.attend(layer, t.q, t.k, t.v),
      fresh.attend(layer, t.q, t.k, t.v),
      `${label}: next output of layer ${layer}`,
    );
  }
  fresh.dispose();
}

type AttendCase = [
  label: string,
  call: (c: KVCache) => unknown,
  type: typeof TypeError | typeof RangeError,
  patterns: RegExp[],
];

function attendCases(): AttendCase[] {
  const one = toks(1, 50);
  const two = toks(2, 51);
  const at = (c: KVCache, ...a: unknown[]) => (c.attend as unknown as AnyFn).apply(c, a);
  return [
    ['layer = -1', (c) => at(c, -1, one.q, one.k, one.v), RangeError, [named('layer'), /-1/]],
    ['layer = 2 (layers is 2)', (c) => at(c, 2, one.q, one.k, one.v), RangeError, [named('layer'), /2/]],
    ['layer = 1.5', (c) => at(c, 1.5, one.q, one.k, one.v), RangeError, [named('layer'), /1\.5/]],
    ['layer = NaN', (c) => at(c, NaN, one.q, one.k, one.v), RangeError, [named('layer'), /NaN/]],
    ['layer = "0"', (c) => at(c, '0', one.q, one.k, one.v), TypeError, [named('layer')]],
    [
      'q is a Float64Array',
      (c) => at(c, 0, Float64Array.from(one.q), one.k, one.v),
      TypeError,
      [named('q'), /Float64Array/],
    ],
    ['q is null', (c) => at(c, 0, null, one.k, one.v), TypeError, [named('q'), /null/]],
    ['k is a plain array', (c) => at(c, 0, one.q, Array.from(one.k), one.v), TypeError, [named('k')]],
    ['v is undefined', (c) => at(c, 0, one.q, one.k, undefined), TypeError, [named('v'), /undefined/]],
    [
      'q length 31 (heads*headDim = 32)',
      (c) => at(c, 0, one.q.subarray(1), one.k, one.v),
      RangeError,
      [named('q'), /31/, /32/],
    ],
    [
      'k length 15 (kvHeads*headDim = 16)',
      (c) => at(c, 0, one.q, one.k.subarray(1), one.v),
      RangeError,
      [named('k'), /15/, /16/],
    ],
    [
      'q 2 tokens, k and v 1 token',
      (c) => at(c, 0, two.q, one.k, one.v),
      RangeError,
      [/(^|\W)(q|k)(\W|$)/, /2|64/, /1|16/],
    ],
    ['v 2 tokens, q and k 1 token', (c) => at(c, 0, one.q, one.k, two.v), RangeError, [named('v'), /2|32/]],
    ['empty k with one query', (c) => at(c, 0, one.q, new Float32Array(0), one.v), RangeError, [named('k'), /0/]],
    [
      'out is a Float64Array',
      (c) => at(c, 0, one.q, one.k, one.v, new Float64Array(32)),
      TypeError,
      [named('out'), /Float64Array/],
    ],
    [
      'out has 31 elements, needs 32',
      (c) => at(c, 0, one.q, one.k, one.v, new Float32Array(31)),
      RangeError,
      [named('out'), /31/, /32/],
    ],
  ];
}

// ---------------------------------------------------------------------------------------------

withEachBuild('errors', () => {
  describe('attention()', () => {
    runCases(oneShotCases(attentionAny, 'attention'));
    runCases([
      [
        'attention: out is a Float64Array',
        () => attentionAny(q, k, v, base, new Float64Array(96)),
        TypeError,
        [named('out'), /Float64Array/],
      ],
      [
        'attention: out is a plain array',
        () => attentionAny(q, k, v, base, new Array(96).fill(0)),
        TypeError,
        [named('out')],
      ],
      [
        'attention: out has 95 elements, needs 96',
        () => attentionAny(q, k, v, base, new Float32Array(95)),
        RangeError,
        [named('out'), /95/, /96/],
      ],
      [
        'attention: out has 97 elements, needs 96',
        () => attentionAny(q, k, v, base, new Float32Array(97)),
        RangeError,
        [named('out'), /97/, /96/],
      ],
    ]);

    it('a valid call after all those errors still works', () => {
      expect(attention(q, k, v, base).length).toBe(96);
    });

    it('more queries than keys (T > S, causal) is a RangeError naming q, k and both token counts', () => {
      // README: a causal one-shot call needs T <= S (a query at a negative position would see no key)
      for (const fn of [attentionAny, weightsAny]) {
        expectThrows(() => fn(rng.randn(6 * H * D), k, v, base), RangeError, [
          named('q'),
          named('k'),
          /\b5\b/,
          /\b6\b/,
          /causal/,
        ]);
      }
      // without causal masking every query sees every key: T > S is fine
      expect(attention(rng.randn(6 * H * D), k, v, { ...base, causal: false }).every(Number.isFinite)).toBe(true);
    });

    it('a call needing more than 4 GiB of WebAssembly memory is a RangeError naming the bytes, before any work', () => {
      // weights of T = S = 40,000 (one head of size 1): 40,000² floats = 6.4 GB, past wasm32's 4 GiB
      const x = new Float32Array(40000);
      const e = expectThrows(() => attentionWeights(x, x, x, { heads: 1, headDim: 1 }), RangeError, []);
      expect(
        byteCounts(e.message).some((n) => n >= 40000 * 40000 * 4),
        e.message,
      ).toBe(true);
      expect(attention(q, k, v, base).length, 'a valid call afterwards').toBe(96);
    });

    it('the engine refusing to grow memory is a RangeError naming the bytes (no trap); calls that fit still work', () => {
      const memory = heap().memoryBytes;
      // k and v of this call alone take more than all of today's memory, so it must grow
      const tokens = Math.ceil(memory / (KV * D * 4)) + 1024;
      const big = new Float32Array(tokens * KV * D);
      const grow = WebAssembly.Memory.prototype.grow;
      WebAssembly.Memory.prototype.grow = () => {
        throw new RangeError('WebAssembly.Memory.grow(): refused by the test');
      };
      try {
        const e = expectThrows(() => attention(q, big, big, base), RangeError, [/refused by the test/]);
        expect(
          byteCounts(e.message).some((n) => n >= memory),
          e.message,
        ).toBe(true);
        expect(heap().memoryBytes).toBe(memory);
        expectBitIdentical(attention(q, k, v, base), attention(q, k, v, base), 'a call that fits, during the refusal');
      } finally {
        WebAssembly.Memory.prototype.grow = grow;
      }
      expect(attention(q, big, big, base).every(Number.isFinite), 'the same call once memory may grow').toBe(true);
    });
  });

  describe('attentionWeights()', () => {
    runCases(oneShotCases(weightsAny, 'attentionWeights'));
  });

  describe('new KVCache(options)', () => {
    const good = { layers: 2, heads: 4, kvHeads: 2, headDim: 8, maxTokens: 16 };
    const mk = (o: unknown) => () => new Cache(o);
    runCases([
      ['no options', mk(undefined), TypeError, [/options/]],
      ['options is null', mk(null), TypeError, [/options/]],
      ...sizeCases((o) => new Cache(o), 'KVCache', 'layers', good),
      ...sizeCases((o) => new Cache(o), 'KVCache', 'heads', good),
      ...sizeCases((o) => new Cache(o), 'KVCache', 'headDim', good),
      ...sizeCases((o) => new Cache(o), 'KVCache', 'maxTokens', good),
      ['heads missing', mk({ headDim: 8, maxTokens: 16 }), TypeError, [named('heads'), /undefined/]],
      ['headDim missing', mk({ heads: 4, maxTokens: 16 }), TypeError, [named('headDim'), /undefined/]],
      ['maxTokens missing', mk({ heads: 4, headDim: 8 }), TypeError, [named('maxTokens'), /undefined/]],
      ['heads 4 % kvHeads 3 !== 0', mk({ ...good, kvHeads: 3 }), RangeError, [/heads/, /kvHeads/, /3/]],
      ['kvHeads 8 > heads 4', mk({ ...good, kvHeads: 8 }), RangeError, [/kvHeads/, /8/]],
      ['kvHeads 0', mk({ ...good, kvHeads: 0 }), RangeError, [named('kvHeads'), /0/]],
      ['headDim 513 > 512', mk({ ...good, headDim: 513 }), RangeError, [named('headDim'), /512/, /513/]],
      ['window 0', mk({ ...good, window: 0 }), RangeError, [named('window'), /0/]],
      ['window -3', mk({ ...good, window: -3 }), RangeError, [named('window'), /-3/]],
      ['window 2.5', mk({ ...good, window: 2.5 }), RangeError, [named('window'), /2\.5/]],
      ['window 17 > maxTokens 16', mk({ ...good, window: 17 }), RangeError, [/window/, /maxTokens/, /17/, /16/]],
      ['sinks -1', mk({ ...good, window: 4, sinks: -1 }), RangeError, [named('sinks'), /-1/]],
      ['sinks 1.5', mk({ ...good, window: 4, sinks: 1.5 }), RangeError, [named('sinks'), /1\.5/]],
      ["dtype 'float16'", mk({ ...good, dtype: 'float16' }), RangeError, [named('dtype'), /float16/, /float32/]],
      ["dtype 'Float32' (case matters)", mk({ ...good, dtype: 'Float32' }), RangeError, [named('dtype'), /Float32/]],
      ['scale NaN', mk({ ...good, scale: NaN }), RangeError, [named('scale'), /NaN/]],
      ['softcap -3', mk({ ...good, softcap: -3 }), RangeError, [named('softcap'), /-3/]],
      ['rope dims 7 (odd)', mk({ ...good, rope: { dims: 7 } }), RangeError, [named('dims'), /7/, /even/]],
      ['rope dims 10 > headDim 8', mk({ ...good, rope: { dims: 10 } }), RangeError, [named('dims'), /10/, /8/]],
      ['rope dims -2', mk({ ...good, rope: { dims: -2 } }), RangeError, [named('dims'), /-2/]],
      [
        'rope on headDim 7 without explicit dims (dims defaults to 7, odd)',
        mk({ ...good, headDim: 7, rope: {} }),
        RangeError,
        [named('dims'), /7/],
      ],
      ['rope theta -1', mk({ ...good, rope: { theta: -1 } }), RangeError, [named('theta'), /-1/]],
      ['rope theta NaN', mk({ ...good, rope: { theta: NaN } }), RangeError, [named('theta'), /NaN/]],
      ["rope 'yes'", mk({ ...good, rope: 'yes' }), TypeError, [named('rope')]],
      ["rope interleaved 'no'", mk({ ...good, rope: { interleaved: 'no' } }), TypeError, [named('interleaved')]],
    ]);

    it('dtype 42 (not a string) is refused naming dtype', () => {
      const e = expectThrows(mk({ ...good, dtype: 42 }), Error, [named('dtype'), /42/]);
      expect(e instanceof TypeError || e instanceof RangeError, `${e.name}: ${e.message}`).toBe(true);
    });

    it('KVCache.create() with bad options rejects with the same RangeError', async () => {
      await expectRejects(() => KVCache.create({ ...good, heads: 0 } as never), RangeError, [named('heads'), /0/]);
      await expectRejects(() => KVCache.create({ ...good, window: 17 } as never), RangeError, [/window/, /17/]);
    });

    it("dtype 'float32' is accepted and is the default spelled out (same size, same outputs)", () => {
      const spelled = new Cache({ ...good, dtype: 'float32' });
      const omitted = new Cache(good);
      expect(spelled.byteLength).toBe(omitted.byteLength);
      const t = toks(3, 7);
      expectBitIdentical(spelled.attend(1, t.q, t.k, t.v), omitted.attend(1, t.q, t.k, t.v), "dtype 'float32' vs none");
      spelled.dispose();
      omitted.dispose();
    });

    for (const [label, o, kvBytes] of [
      [
        'a 34 GiB cache (32 layers, 8 kv heads × 128, 131072 tokens)',
        { layers: 32, heads: 32, kvHeads: 8, headDim: 128, maxTokens: 131072 },
        32 * 2 * 8 * 128 * 131072 * 4,
      ],
      [
        'a cache just over 4 GiB (headDim 512, 2^20 + 1 tokens)',
        { heads: 1, headDim: 512, maxTokens: 2 ** 20 + 1 },
        2 * 512 * (2 ** 20 + 1) * 4,
      ],
      [
        'a windowed cache whose ring and sinks exceed 4 GiB',
        { heads: 2, headDim: 512, maxTokens: 2 ** 19, window: 2 ** 19, sinks: 64 },
        2 ** 32,
      ],
    ] as const) {
      it(`${label} is refused at construction with the bytes it would need`, () => {
        const e = expectThrows(mk(o), RangeError, []);
        const counts = byteCounts(e.message);
        expect(
          counts.some((n) => n >= kvBytes && n <= 2 * kvBytes + 2 ** 24),
          `message should contain the byte count (>= ${kvBytes}): "${e.message}"`,
        ).toBe(true);
        expect(kvBytes).toBeGreaterThanOrEqual(2 ** 32);
      });
    }
  });

  for (const fixture of [PLAIN, RING]) {
    const fname = fixture === PLAIN ? 'no window' : 'wrapped ring';
    describe(`cache.attend() (${fname}): each error leaves the cache unchanged`, () => {
      for (const [label, call, type, patterns] of attendCases()) {
        it(label, () => {
          const c = build(fixture);
          expectThrows(() => call(c), type, patterns);
          expectUnchanged(c, fixture, label);
          c.dispose();
        });
      }
    });
  }

  describe('capacity without a window', () => {
    it('appending past maxTokens is a RangeError naming maxTokens; the cache is unchanged', () => {
      const c = build(PLAIN); // layer 0 holds 3 of 6
      const four = toks(4, 60);
      expectThrows(() => c.attend(0, four.q, four.k, four.v), RangeError, [named('maxTokens'), /6/]);
      expectUnchanged(c, PLAIN, 'past maxTokens');
      c.dispose();
    });

    it('one token too many after filling exactly', () => {
      const c = build(PLAIN);
      const three = toks(3, 61);
      c.attend(0, three.q, three.k, three.v); // 6 of 6
      const one = toks(1, 62);
      expectThrows(() => c.attend(0, one.q, one.k, one.v), RangeError, [named('maxTokens'), /6/]);
      expect(lengths(c)).toEqual([6, 6, 2]);
      // layer 1 is not full and still works
      c.attend(1, one.q, one.k, one.v);
      expect(c.lengthOf(1)).toBe(3);
      c.dispose();
    });
  });

  describe('positions', () => {
    it(`a token past the last position (${MAX_POSITION}) is a RangeError naming k and the maximum; the cache is unchanged`, () => {
      // A windowed cache runs forever, but positions are int32 in the kernel. Reaching ~2^31 tokens for
      // real takes hours, so the saved state of RING's layer 0 is moved up by a whole number of rings
      // (each slot keeps its rows) to a few tokens below the maximum.
      const c = build(RING);
      const ring = RING.opts.maxTokens as number;
      const shift = Math.floor((MAX_POSITION - 3 - c.lengthOf(0)) / ring) * ring;
      const moved = KVCache.load(
        withHeader(c.save(), (h) => {
          h.layers[0].to += shift;
          h.layers[0].held += shift;
        }),
      );
      c.dispose();
      const room = MAX_POSITION - moved.lengthOf(0);
      expect(room).toBeGreaterThanOrEqual(3);
      expect(room).toBeLessThan(3 + ring);
      const fill = toks(room, 70);
      expect(moved.attend(0, fill.q, fill.k, fill.v).every(Number.isFinite), 'the last positions work').toBe(true);
      expect(moved.lengthOf(0)).toBe(MAX_POSITION);
      const one = toks(1, 71);
      const before = moved.save();
      expectThrows(() => moved.attend(0, one.q, one.k, one.v), RangeError, [
        named('k'),
        new RegExp(String(MAX_POSITION)),
      ]);
      expectThrows(() => moved.append(0, one.k, one.v), RangeError, [named('k'), new RegExp(String(MAX_POSITION))]);
      expect(moved.lengthOf(0)).toBe(MAX_POSITION);
      expectBitIdentical(moved.save(), before, 'the saved state after the refusals');
      expect(moved.attend(1, one.q, one.k, one.v).length, 'another layer still works').toBe(32);
      moved.dispose();
    });
  });

  describe('truncate(n)', () => {
    for (const [label, n, type, patterns] of [
      ['n = -1', -1, RangeError, [/-1/]],
      ['n = 1.5', 1.5, RangeError, [/1\.5/]],
      ['n = NaN', NaN, RangeError, [/NaN/]],
      ["n = '1'", '1', TypeError, []],
    ] as const) {
      it(`${label} is refused and changes nothing`, () => {
        const c = build(PLAIN);
        expectThrows(() => (c.truncate as unknown as AnyFn).call(c, n), type, [...patterns]);
        expectUnchanged(c, PLAIN, label);
        c.dispose();
      });
    }
  });
});
