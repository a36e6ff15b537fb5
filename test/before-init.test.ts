// Before init() resolves, every synchronous function throws Error('wasm-attention: call await init() first')
// (API.md, "Loading"). This file imports a fresh copy of the facade and checks that before anything
// in it calls init(); KVCache.create(), which runs init() itself, comes last.

import { describe, expect, it, vi } from 'vitest';

const MESSAGE = 'wasm-attention: call await init() first';

vi.resetModules();
const api = await import('../src/index.js');

function expectNotInitialized(fn: () => unknown) {
  let caught: unknown;
  try {
    fn();
  } catch (e) {
    caught = e;
  }
  expect(caught, 'should throw before init').toBeInstanceOf(Error);
  expect(caught instanceof WebAssembly.RuntimeError).toBe(false);
  expect((caught as Error).message).toBe(MESSAGE);
}

describe('before init()', () => {
  const q = new Float32Array(8);
  const opts = { heads: 1, kvHeads: 1, headDim: 8 };

  it('attention() throws the documented Error', () => {
    expectNotInitialized(() => api.attention(q, q, q, opts));
  });

  it('attentionWeights() throws the documented Error', () => {
    expectNotInitialized(() => api.attentionWeights(q, q, q, opts));
  });

  it('new KVCache() throws the documented Error', () => {
    expectNotInitialized(() => new api.KVCache({ heads: 1, headDim: 8, maxTokens: 4 }));
  });

  it('KVCache.load() throws the documented Error', () => {
    expectNotInitialized(() => api.KVCache.load(new Uint8Array(16)));
  });

  it('the check comes before argument validation (bad arguments still get the init error)', () => {
    expectNotInitialized(() => (api.attention as unknown as (...a: unknown[]) => unknown)(null, null, null, {}));
  });

  it('KVCache.create() runs init() itself and gives a working cache; then the sync API works', async () => {
    const c = await api.KVCache.create({ heads: 1, headDim: 8, maxTokens: 4 });
    const t = new Float32Array(8).fill(0.5);
    // one key: the output is its value
    for (const x of c.attend(0, t, t, t)) expect(x).toBeCloseTo(0.5, 6);
    c.dispose();
    expect(api.attention(t, t, t, opts).length).toBe(8);
  });
});
