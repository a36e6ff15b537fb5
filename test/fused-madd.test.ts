// relaxed-simd and the engine's multiply-add (API.md, init options.build): relaxed SIMD lets an engine fuse
// f32x4.relaxed_madd or not. Where it does, the relaxed-simd build gives other (more exact) bits than simd;
// where it does not, exactly simd's bits, and init()'s 'auto' takes simd instead, so that the build it
// picks computes the same bits in every engine. A named relaxed-simd is still loaded.

import { afterEach, describe, expect, it, vi } from 'vitest';
import { fusesRelaxedMadd } from '../src/fused-madd.js';
import { Rng, SUPPORT, expectRejects } from './support/util.js';

const relaxedOk = SUPPORT['relaxed-simd'].ok;

function sameBits(a: Float32Array, b: Float32Array): boolean {
  const x = new Uint32Array(a.buffer, a.byteOffset, a.length);
  const y = new Uint32Array(b.buffer, b.byteOffset, b.length);
  return x.length === y.length && x.every((bits, i) => bits === y[i]);
}

describe.skipIf(!relaxedOk)('the fused multiply-add probe', () => {
  afterEach(() => {
    vi.doUnmock('../src/fused-madd.js');
    vi.resetModules();
  });

  it('says what the kernels show: relaxed-simd and simd differ in bits exactly where relaxed_madd is fused', async () => {
    vi.resetModules();
    const api = await import('../src/index.js');
    const rng = new Rng(11);
    const o = { heads: 8, kvHeads: 2, headDim: 64 };
    const q = rng.randn(16 * 8 * 64),
      k = rng.randn(200 * 2 * 64),
      v = rng.randn(200 * 2 * 64);
    await api.init({ build: 'relaxed-simd', threads: 1 });
    const relaxed = api.attention(q, k, v, { ...o, causal: false });
    await api.init({ build: 'simd', threads: 1 });
    const simd = api.attention(q, k, v, { ...o, causal: false });
    expect(!sameBits(relaxed, simd)).toBe(await fusesRelaxedMadd());
  });

  it("an engine that does not fuse: 'auto' takes simd, a named relaxed-simd still loads", async () => {
    vi.resetModules();
    vi.doMock('../src/fused-madd.js', () => ({ fusesRelaxedMadd: async () => false }));
    const api = await import('../src/index.js');
    // this fresh copy's workers run the compiled script, as test/support/util.ts sets up for the shared one
    (await import('../src/threads.js')).useNodeWorkerScript(new URL('../dist/attention-worker.js', import.meta.url));
    expect((await api.init({ threads: 1 })).build).toBe('simd');
    expect((await api.init({ build: 'relaxed-simd', threads: 1 })).build).toBe('relaxed-simd');
    expect((await api.init({ build: 'auto', threads: 2 })).build).toBe('simd');
  });

  it('an engine that fuses: auto takes relaxed-simd', async () => {
    vi.resetModules();
    vi.doMock('../src/fused-madd.js', () => ({ fusesRelaxedMadd: async () => true }));
    const api = await import('../src/index.js');
    expect((await api.init({ threads: 1 })).build).toBe('relaxed-simd');
    await expectRejects(() => api.init({ build: 'nope' as 'simd' }), TypeError, [/init options\.build/]);
  });
});
