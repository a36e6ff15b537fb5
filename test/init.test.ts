// init(options?) (API.md, "Loading"): idempotent, safe to call concurrently, picks the fastest build this
// runtime validates, accepts an explicit build and an explicit wasm source, rejects bad options with an
// Error naming them, and can be retried after a failure. Tests that need a never-initialized facade
// import a fresh copy (vi.resetModules + dynamic import).

import { afterEach, describe, expect, it, vi } from 'vitest';
import { fusesRelaxedMadd } from '../src/fused-madd.js';
import { referenceAttention } from './support/reference.js';
import {
  BUILDS,
  Rng,
  SUPPORT,
  expectClose,
  expectRejects,
  tolFor,
  wasmBytes,
  wasmUrl,
  type Build,
} from './support/util.js';

type Api = typeof import('../src/index.js');

async function freshApi(): Promise<Api> {
  vi.resetModules();
  return import('../src/index.js');
}

/** A small attention call checked against the reference: the instance really works. */
function works(api: Api) {
  const rng = new Rng(5);
  const o = { heads: 4, kvHeads: 2, headDim: 20, window: 3, sinks: 1 };
  const q = rng.randn(6 * 4 * 20);
  const k = rng.randn(9 * 2 * 20);
  const v = rng.randn(9 * 2 * 20);
  expectClose(api.attention(q, k, v, o), referenceAttention(q, k, v, o), tolFor(undefined, 20), 'attention after init');
}

const relaxedOk = SUPPORT['relaxed-simd'].ok;
// relaxed-simd only where its multiply-add is fused (test/fused-madd.test.ts checks the probe against the kernels)
const fastest: Build = relaxedOk && (await fusesRelaxedMadd()) ? 'relaxed-simd' : 'simd';

describe('init()', () => {
  it(`with no options picks the fastest build this runtime validates (here: ${fastest})`, async () => {
    const api = await freshApi();
    const info = await api.init();
    expect(BUILDS).toContain(info.build);
    expect(info.build).toBe(fastest);
    works(api);
  });

  it("build: 'auto' is the default", async () => {
    const api = await freshApi();
    expect((await api.init({ build: 'auto' })).build).toBe(fastest);
  });

  it('is idempotent', async () => {
    const api = await freshApi();
    const a = await api.init();
    const b = await api.init();
    expect(b).toEqual(a);
    works(api);
  });

  it('concurrent calls all resolve to the same info', async () => {
    const api = await freshApi();
    const infos = await Promise.all([api.init(), api.init(), api.init(), api.init()]);
    for (const i of infos) expect(i).toEqual(infos[0]);
    works(api);
  });

  it('concurrent calls for different builds each get their build, and every instance works', async () => {
    const api = await freshApi();
    const builds: Build[] = ['scalar', 'simd', 'scalar', 'simd'];
    const infos = await Promise.all(builds.map((build) => api.init({ build })));
    expect(infos.map((i) => i.build)).toEqual(builds);
    for (const build of ['scalar', 'simd'] as const) {
      expect((await api.init({ build })).build).toBe(build);
      works(api);
    }
  });

  for (const build of BUILDS) {
    it.skipIf(!SUPPORT[build].ok)(
      `init({ build: '${build}' }) reports '${build}' and works${SUPPORT[build].ok ? '' : ` (SKIPPED: ${SUPPORT[build].reason})`}`,
      async () => {
        const api = await freshApi();
        expect((await api.init({ build })).build).toBe(build);
        works(api);
      },
    );
  }

  it.skipIf(relaxedOk)(
    `init({ build: 'relaxed-simd' }) rejects with an Error on a runtime that cannot validate it${relaxedOk ? ' (SKIPPED: this runtime validates relaxed-simd)' : ''}`,
    async () => {
      const api = await freshApi();
      await expectRejects(() => api.init({ build: 'relaxed-simd' }), Error, [/relaxed/]);
      // and the rejection does not poison a later init
      expect(BUILDS).toContain((await api.init()).build);
    },
  );

  it('a cache keeps the build it was created with when init() switches builds', async () => {
    const api = await freshApi();
    const o = { heads: 4, kvHeads: 2, headDim: 64, maxTokens: 16, rope: {} };
    const rng = new Rng(9);
    const steps = Array.from({ length: 6 }, () => ({
      q: rng.randn(4 * 64),
      k: rng.randn(2 * 64),
      v: rng.randn(2 * 64),
    }));
    // all under scalar
    await api.init({ build: 'scalar' });
    const alone = new api.KVCache(o);
    const want = steps.map((t) => alone.attend(0, t.q, t.k, t.v));
    // created under scalar, then the active build switches back and forth
    const c = new api.KVCache(o);
    const got: Float32Array[] = [];
    for (const [i, t] of steps.entries()) {
      await api.init({ build: i % 2 ? 'scalar' : 'simd' });
      got.push(c.attend(0, t.q, t.k, t.v));
    }
    for (let i = 0; i < steps.length; i++) expect(Array.from(got[i]), `step ${i}`).toEqual(Array.from(want[i]));
    c.dispose();
    alone.dispose();
  });

  it("init({ build: 'nope' }) rejects with an Error naming build and the value", async () => {
    const api = await freshApi();
    await expectRejects(() => api.init({ build: 'nope' as never }), Error, [/build/, /nope/]);
  });

  it('a failed init (bytes that are not wasm) rejects with an Error; a later init succeeds', async () => {
    const api = await freshApi();
    await expectRejects(() => api.init({ wasm: new Uint8Array([0, 1, 2, 3, 4, 5, 6, 7]) }), Error, []);
    // the sync API still says init is needed
    expect(() =>
      api.attention(new Float32Array(1), new Float32Array(1), new Float32Array(1), { heads: 1, headDim: 1 }),
    ).toThrow('wasm-attention: call await init() first');
    expect(BUILDS).toContain((await api.init()).build);
    works(api);
  });
});

describe('init({ wasm })', () => {
  // each source is boxed so that a Promise<Response> reaches init() as a promise
  const sources: [string, () => Promise<{ wasm: unknown }>][] = [
    ['a Uint8Array', async () => ({ wasm: await wasmBytes('simd') })],
    ['an ArrayBuffer', async () => ({ wasm: (await wasmBytes('simd')).slice().buffer })],
    ['a WebAssembly.Module', async () => ({ wasm: await WebAssembly.compile(await wasmBytes('simd')) })],
    ['a file: URL', async () => ({ wasm: wasmUrl('simd') })],
    ['a file: URL string', async () => ({ wasm: wasmUrl('simd').href })],
    [
      'a Response',
      async () => ({
        wasm: new Response(await wasmBytes('simd'), { headers: { 'content-type': 'application/wasm' } }),
      }),
    ],
    [
      'a Promise<Response>',
      async () => {
        const bytes = await wasmBytes('simd');
        return { wasm: Promise.resolve(new Response(bytes, { headers: { 'content-type': 'application/wasm' } })) };
      },
    ],
  ];
  for (const [what, make] of sources) {
    it(`accepts ${what} (of the simd build)`, async () => {
      const api = await freshApi();
      const { wasm } = await make();
      const info = await api.init({ wasm: wasm as never });
      expect(BUILDS).toContain(info.build);
      works(api);
    });
  }

  for (const build of ['scalar', 'simd'] as const) {
    it(`init({ build: '${build}', wasm: <its bytes> }) reports '${build}' and works`, async () => {
      const api = await freshApi();
      const info = await api.init({ build, wasm: await wasmBytes(build) });
      expect(info.build).toBe(build);
      works(api);
    });
  }
});

describe('init({ wasm }) refuses what it cannot use, naming the option, and a later init still works', () => {
  it("init({ build: 'scalar', wasm: <the simd binary> }) rejects: the build asked for contradicts the binary", async () => {
    const api = await freshApi();
    await expectRejects(() => api.init({ build: 'scalar', wasm: wasmUrl('simd') }), Error, [/scalar/, /simd/]);
    expect((await api.init({ build: 'scalar' })).build).toBe('scalar');
    works(api);
  });

  it('valid WebAssembly that is not the kernel rejects with an Error saying so (no trap, no half-initialized facade)', async () => {
    const api = await freshApi();
    // the smallest valid module: magic and version, no sections
    const empty = new Uint8Array([0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00]);
    expect(WebAssembly.validate(empty)).toBe(true);
    await expectRejects(() => api.init({ wasm: empty }), Error, [/not a wasm-attention kernel/]);
    expect(() =>
      api.attention(new Float32Array(4), new Float32Array(4), new Float32Array(4), { heads: 1, headDim: 4 }),
    ).toThrow(/init\(\)/);
    expect(BUILDS).toContain((await api.init()).build);
    works(api);
  });

  for (const [what, wasm] of [
    ['a number', 42],
    ['a plain object', { bytes: [0, 97, 115, 109] }],
    ['an array of bytes', [0, 97, 115, 109, 1, 0, 0, 0]],
    ['null', null],
  ] as const) {
    it(`a wasm option that is ${what} rejects with a TypeError naming wasm`, async () => {
      const api = await freshApi();
      await expectRejects(() => api.init({ wasm: wasm as never }), TypeError, [/wasm/]);
      expect(BUILDS).toContain((await api.init()).build);
    });
  }
});

describe('reading the .wasm files from disk', () => {
  // Node's fs comes from process.getBuiltinModule, never from an import() (which bundlers warn about and
  // Miniflare's module scanner refuses); a runtime without it (but with files) reads file: URLs with fetch.
  const getBuiltinModule = process.getBuiltinModule;
  afterEach(() => {
    process.getBuiltinModule = getBuiltinModule;
    vi.unstubAllGlobals();
  });

  it('in Node: through process.getBuiltinModule, without fetch', async () => {
    const fetched = vi.fn();
    vi.stubGlobal('fetch', fetched);
    const api = await freshApi();
    expect((await api.init({ build: 'simd' })).build).toBe('simd');
    expect(fetched).not.toHaveBeenCalled();
    works(api);
  });

  it('without process.getBuiltinModule: with fetch of the file: URL', async () => {
    const fetched: string[] = [];
    vi.stubGlobal('fetch', async (url: URL) => {
      fetched.push(String(url));
      return new Response(await wasmBytes('simd'));
    });
    (process as { getBuiltinModule?: unknown }).getBuiltinModule = undefined;
    const api = await freshApi();
    expect((await api.init({ build: 'simd' })).build).toBe('simd');
    expect(fetched).toEqual([wasmUrl('simd').href]);
    works(api);
  });

  it('without process.getBuiltinModule: a failed read names the file and the status', async () => {
    vi.stubGlobal('fetch', async () => new Response(null, { status: 404, statusText: 'Not Found' }));
    (process as { getBuiltinModule?: unknown }).getBuiltinModule = undefined;
    const api = await freshApi();
    await expectRejects(() => api.init({ wasm: wasmUrl('simd') }), Error, [
      /reading file:\S+attention-simd\.wasm answered 404 Not Found/,
    ]);
  });
});
