// The Cloudflare Worker example (examples/worker/) under workerd, through Miniflare, with its SQLite-backed
// Durable Object: concurrent requests to one conversation are applied one at a time (none lost), a
// restart on the same storage continues bit for bit (windowed caches too), a request that fails at any point
// (refused, or a storage write that fails) changes nothing, and a conversation of Llama-3.2-1B's real shape
// (int4, the example's default) fills its 8,192 tokens through /append, attends at the end of them, and
// survives a restart there without losing a token, its rows under the 2 MB value limit and gone from the isolate's
// memory once loaded. The Worker is bundled from
// this repository's sources, the way wrangler bundles it (esbuild, conditions workerd/worker/browser,
// .wasm imported as modules).

import { mkdtempSync, readdirSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import * as esbuild from 'esbuild';
import { Miniflare, fetch as miniflareFetch } from 'miniflare';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadModel } from '../examples/model/index.mjs';
import { KVCache, init } from '../src/index.js';
import { LLAMA_3_2_1B, PAGE } from '../examples/worker/config.js';
import { WORKER_BUNDLE } from './runtimes/bundle-options.mjs';
import { ReferenceCache } from './support/reference.js';
import { DTYPE_BUDGET, Rng, expectBitIdentical, expectClose, tolFor } from './support/util.js';

const root = fileURLToPath(new URL('..', import.meta.url));
const work = mkdtempSync(join(tmpdir(), 'wasm-attention-edge-'));
const COMPATIBILITY_DATE = '2026-04-01'; // workerd 1.20260426 supports dates up to 2026-04-26

interface Shape {
  layers: number;
  heads: number;
  kvHeads: number;
  headDim: number;
  maxTokens: number;
  dtype?: 'int8' | 'int4';
  rope?: {
    theta: number;
    scaling?: {
      type: 'llama3';
      factor: number;
      lowFreqFactor: number;
      highFreqFactor: number;
      originalMaxPositions: number;
    };
  };
  window?: number;
}
/** A small float32 shape, checked against float64 within the float32 tolerance (util.ts). */
const SMALL: Shape = { layers: 2, heads: 4, kvHeads: 2, headDim: 16, maxTokens: 256, rope: { theta: 10000 } };
/** The example's default: Llama-3.2-1B's attention, int4 K/V, 8,192 tokens. */
const LLAMA: Shape = LLAMA_3_2_1B;
/** The example's former default, selected by CACHE_OPTIONS: int8 K/V, 2,048 tokens. */
const LLAMA_INT8: Shape = { ...LLAMA_3_2_1B, dtype: 'int8', maxTokens: 2048 };

let script: string;
beforeAll(async () => {
  const outdir = join(work, 'bundle');
  await esbuild.build({
    ...WORKER_BUNDLE,
    entryPoints: [join(root, 'examples/worker/worker.js')],
    outdir,
    alias: { 'wasm-attention': join(root, 'src/workerd.ts') },
    // package.json's sideEffects names the built entries (dist/), not src/workerd.ts, whose registration of
    // the wasm sources esbuild would otherwise drop as side-effect free
    ignoreAnnotations: true,
  });
  script = join(outdir, 'worker.js');
});
afterAll(() => rmSync(work, { recursive: true, force: true }));

/**
 * Runs `use` against workerd running the example, its Durable Object storage in `persist` (a folder, so a
 * second run on it is a restart) or in memory; workerd stops afterwards. With `inspect`, workerd opens its
 * inspector (for `heapUsage`).
 */
async function running<T>(
  shape: Shape,
  persist: string | false,
  use: (mf: Miniflare) => Promise<T>,
  bindings: Record<string, string> = {},
  inspect = false,
): Promise<T> {
  const dir = join(work, 'bundle');
  const modules = [
    { type: 'ESModule' as const, path: script },
    ...readdirSync(dir)
      .filter((f) => f.endsWith('.wasm'))
      .map((f) => ({ type: 'CompiledWasm' as const, path: join(dir, f) })),
    ...readdirSync(dir)
      .filter((f) => f.endsWith('.safetensors'))
      .map((f) => ({ type: 'Data' as const, path: join(dir, f) })),
  ];
  const mf = new Miniflare({
    modules,
    modulesRoot: dir,
    compatibilityDate: COMPATIBILITY_DATE,
    durableObjects: { CONVERSATIONS: { className: 'Conversation', useSQLite: true } },
    durableObjectsPersist: persist,
    bindings: { ...(shape === LLAMA ? {} : { CACHE_OPTIONS: JSON.stringify(shape) }), ...bindings },
    ...(inspect ? { inspectorPort: 0 } : {}),
  });
  try {
    await mf.ready;
    return await use(mf);
  } finally {
    await mf.dispose();
  }
}

/**
 * The example's isolate's V8 heap now (Runtime.getHeapUsage through workerd's inspector): JS objects used,
 * and `backingStorageSize`, the array buffers' bytes outside the heap, garbage not yet collected included.
 */
async function heapUsage(mf: Miniflare): Promise<{ usedSize: number; backingStorageSize: number }> {
  const inspector = await mf.getInspectorURL();
  const targets = (await (await fetch(new URL('/json', inspector.href.replace(/^ws/, 'http')))).json()) as Array<{
    id: string;
    webSocketDebuggerUrl: string;
  }>;
  const target = targets.find((t) => t.id.startsWith('core:user'))!;
  const response = await miniflareFetch(target.webSocketDebuggerUrl.replace(/^ws/, 'http'), {
    headers: { upgrade: 'websocket' },
  });
  const socket = response.webSocket!;
  socket.accept();
  const reply = new Promise<{ result: { usedSize: number; backingStorageSize: number } }>((resolve) => {
    socket.addEventListener('message', (event) => resolve(JSON.parse(String(event.data))));
  });
  socket.send(JSON.stringify({ id: 1, method: 'Runtime.getHeapUsage' }));
  const { result } = await reply;
  socket.close();
  return result;
}

/** One token's (or T tokens') q, k, v for every layer: [layers][T][heads or kvHeads][headDim]. */
interface Step {
  q: Float32Array;
  k: Float32Array;
  v: Float32Array;
}

function randomStep(shape: Shape, rng: Rng, tokens = 1): Step {
  const n = (h: number) => shape.layers * tokens * h * shape.headDim;
  return { q: rng.randn(n(shape.heads)), k: rng.randn(n(shape.kvHeads)), v: rng.randn(n(shape.kvHeads)) };
}

interface Answer {
  status: number;
  length: number;
  written: number;
  out?: Float32Array;
  error?: string;
  ms: number;
}

async function attend(
  mf: Miniflare,
  id: string,
  step: Step,
  binary = true,
  path = `/conversations/${id}/attend`,
  method = 'POST',
): Promise<Answer> {
  const body = binary
    ? new Uint8Array(
        Buffer.concat([step.q, step.k, step.v].map((x) => Buffer.from(x.buffer, x.byteOffset, x.byteLength))),
      )
    : JSON.stringify({ q: Array.from(step.q), k: Array.from(step.k), v: Array.from(step.v) });
  const t0 = performance.now();
  const response = await mf.dispatchFetch(`http://edge${path}`, {
    method,
    body,
    headers: { 'content-type': binary ? 'application/octet-stream' : 'application/json' },
  });
  const answer = {
    status: response.status,
    length: Number(response.headers.get('x-length')),
    written: Number(response.headers.get('x-written-bytes')),
  };
  if (response.status !== 200)
    return { ...answer, error: ((await response.json()) as { error: string }).error, ms: performance.now() - t0 };
  if (binary) return { ...answer, out: new Float32Array(await response.arrayBuffer()), ms: performance.now() - t0 };
  const { length, out } = (await response.json()) as { length: number; out: number[] };
  return { ...answer, length, out: Float32Array.from(out), ms: performance.now() - t0 };
}

async function info(
  mf: Miniflare,
  id: string,
): Promise<{ length: number; pieces: number; storedBytes: number; sharesPrompt: boolean }> {
  return (await mf.dispatchFetch(`http://edge/conversations/${id}`)).json() as never;
}

/** A layer's part of a [layers][…] tensor. */
const layerOf = (x: Float32Array, shape: Shape, l: number) =>
  x.subarray((l * x.length) / shape.layers, ((l + 1) * x.length) / shape.layers);

/** The float64 reference fed the steps in order: each step's output [layers][T][heads][headDim]. */
function referenceOutputs(shape: Shape, steps: Step[]): Float64Array[] {
  const ref = new ReferenceCache(shape);
  return steps.map((s) => {
    const parts = Array.from({ length: shape.layers }, (_, l) =>
      ref.attend(l, layerOf(s.q, shape, l), layerOf(s.k, shape, l), layerOf(s.v, shape, l)),
    );
    const out = new Float64Array(parts.reduce((n, p) => n + p.length, 0));
    parts.forEach((p, l) => {
      out.set(p, l * p.length);
    });
    return out;
  });
}

// int8 K/V against the float64 reference: test/int8.test.ts measures max abs errors of 0.017–0.028 on
// unit-variance data and holds the kernel to < 0.05; a token placed in the wrong order changes which keys
// (and rope angles) a query sees, an error of order 1, so this bound still tells the orders apart. int4's
// budget (0.4, argued in test/support/util.ts) is too loose for that, so the ordering tests run int8.
function expectMatchesReference(shape: Shape, got: Float32Array, want: Float64Array, label: string): void {
  if (shape.dtype) {
    let worst = 0;
    for (let i = 0; i < want.length; i++) worst = Math.max(worst, Math.abs(got[i] - want[i]));
    expect(got.length, label).toBe(want.length);
    expect(worst, `${label}: max abs error against float64`).toBeLessThan(DTYPE_BUDGET[shape.dtype]);
  } else {
    expectClose(got, want, tolFor(undefined, shape.headDim), label);
  }
}

describe('edge example: requests to one conversation are applied one at a time, in arrival order', () => {
  for (const [name, shape, binary] of [
    ['small float32 shape, JSON bodies', SMALL, false],
    ['Llama-3.2-1B int8, binary bodies', LLAMA_INT8, true],
  ] as const) {
    it(`30 concurrent requests: 30 distinct lengths, 30 tokens held, outputs = float64 fed the acknowledged order (${name})`, async () => {
      await running(shape, false, async (mf) => {
        const rng = new Rng(shape === LLAMA_INT8 ? 1 : 2);
        const steps = Array.from({ length: 30 }, () => randomStep(shape, rng));
        const answers = await Promise.all(steps.map((s) => attend(mf, 'hot', s, binary)));
        expect(answers.map((a) => a.status)).toEqual(answers.map(() => 200));
        expect(answers.map((a) => a.length).sort((x, y) => x - y)).toEqual(steps.map((_, i) => i + 1));
        expect((await info(mf, 'hot')).length).toBe(30);
        const order = answers
          .map((a, i) => [a.length, i])
          .sort((x, y) => x[0] - y[0])
          .map(([, i]) => i);
        const want = referenceOutputs(
          shape,
          order.map((i) => steps[i]),
        );
        order.forEach((i, position) => {
          expectMatchesReference(shape, answers[i].out!, want[position], `the answer of length ${position + 1}`);
        });
      });
    });
  }
});

describe('edge example: a restart (evicted object) continues bit for bit from storage', () => {
  it('Llama-3.2-1B int4 (the default): two conversations, one restarted before its last token, give the same bits; bad requests change nothing', async () => {
    const persist = join(work, 'restart');
    const rng = new Rng(3);
    const steps = [randomStep(LLAMA, rng, 40), ...Array.from({ length: 30 }, () => randomStep(LLAMA, rng))];
    let last: Answer;
    await running(LLAMA, persist, async (mf) => {
      const want = referenceOutputs(LLAMA, steps);
      for (const [i, s] of steps.entries()) {
        last = await attend(mf, 'kept', s);
        expectMatchesReference(LLAMA, last.out!, want[i], `kept, step ${i}`);
      }
      for (const s of steps.slice(0, -1)) expect((await attend(mf, 'evicted', s)).status).toBe(200);
      // bad requests in between: answered 400, nothing stored
      const wrongSize = await attend(mf, 'evicted', {
        q: new Float32Array(5),
        k: new Float32Array(0),
        v: new Float32Array(0),
      });
      expect([wrongSize.status, wrongSize.error]).toEqual([
        400,
        expect.stringMatching(/binary body must hold q, k and v of T tokens as little-endian float32.*got 20 bytes/),
      ]);
      const nan = randomStep(LLAMA, rng);
      nan.k[7] = Number.NaN;
      const notFinite = await attend(mf, 'evicted', nan);
      expect([notFinite.status, notFinite.error]).toEqual([400, expect.stringMatching(/non-finite/)]);
      expect((await info(mf, 'evicted')).length).toBe(40 + 29);
    });
    await running(LLAMA, persist, async (mf) => {
      const stored = await info(mf, 'evicted');
      // 69 positions: the page 0 … 63 and one row per token of the next page (the prefill's row 40 … 63 was folded into the page)
      expect(stored).toMatchObject({ length: 69, pieces: 1 + 5 });
      const next = await attend(mf, 'evicted', steps.at(-1)!);
      expect(next.length).toBe(70);
      expectBitIdentical(next.out!, last!.out!, 'the restarted conversation vs the one never restarted');
      expect((await info(mf, 'kept')).length).toBe(70);
    });
  });
});

describe('edge example: a system prompt prefilled once, each new conversation a fork of it', () => {
  it('conversations begin with the prompt, continue on their own, survive a new prompt and a restart', async () => {
    const persist = join(work, 'prompt');
    const rng = new Rng(5);
    const prompts = [randomStep(SMALL, rng, 100), randomStep(SMALL, rng, 50)];
    const chats: Record<string, { prompt: Step; steps: Step[] }> = {};
    /** one step of a conversation, checked against float64 fed its prompt and every step so far */
    const step = async (mf: Miniflare, id: string, tokens = 1) => {
      const s = randomStep(SMALL, rng, tokens);
      chats[id].steps.push(s);
      const answer = await attend(mf, id, s);
      expect(answer.status, answer.error).toBe(200);
      const history = [chats[id].prompt, ...chats[id].steps];
      const held = history.reduce((n, h) => n + h.q.length / (SMALL.layers * SMALL.heads * SMALL.headDim), 0);
      expect(answer.length).toBe(held);
      expectMatchesReference(
        SMALL,
        answer.out!,
        referenceOutputs(SMALL, history).at(-1)!,
        `${id}, step ${chats[id].steps.length}`,
      );
      return answer;
    };
    await running(SMALL, persist, async (mf) => {
      const put = await attend(mf, '', prompts[0], true, '/system-prompt', 'PUT');
      expect([put.status, put.length]).toEqual([200, 100]);
      chats.a = { prompt: prompts[0], steps: [] };
      chats.b = { prompt: prompts[0], steps: [] };
      // two conversations at once, three tokens each
      const first = await Promise.all(
        ['a', 'b'].map(async (id) => [await step(mf, id), await step(mf, id), await step(mf, id)]),
      );
      // the first request stored the prompt's pages as the conversation's own; later ones only their token
      const positionBytes = SMALL.layers * 2 * SMALL.kvHeads * SMALL.headDim * 4;
      expect(first[0][0].written).toBeGreaterThan(101 * positionBytes);
      expect(first[0][1].written).toBeLessThan(positionBytes + 1024);
      expect(await info(mf, 'a')).toMatchObject({ length: 103, sharesPrompt: true });
      // a new prompt: new conversations begin with it, running ones go on with theirs
      expect((await attend(mf, '', prompts[1], true, '/system-prompt', 'PUT')).length).toBe(50);
      chats.c = { prompt: prompts[1], steps: [] };
      await step(mf, 'c');
      // a prompt too long for the cache is refused, and the prompt stays as it was
      const tooLong = await attend(mf, '', randomStep(SMALL, rng, SMALL.maxTokens + 1), true, '/system-prompt', 'PUT');
      expect([tooLong.status, tooLong.error]).toEqual([
        400,
        expect.stringMatching(/maxTokens \(256\), got 257 tokens/),
      ]);
      chats.d = { prompt: prompts[1], steps: [] };
      // d fills the page the prompt ends in (positions 50 … 63) and starts the next: its rows still start at 50
      await step(mf, 'd', 20);
      await step(mf, 'a');
      // a conversation deleted begins again, from the current prompt
      await mf.dispatchFetch('http://edge/conversations/b', { method: 'DELETE' });
      chats.b = { prompt: prompts[1], steps: [] };
      await step(mf, 'b');
    });
    await running(SMALL, persist, async (mf) => {
      // restarted: conversations of the current prompt load their own rows onto it and share its pages
      // again; a's prompt was replaced, so a loads its whole history from its rows, on its own
      expect(await info(mf, 'a')).toMatchObject({ length: 104, sharesPrompt: false });
      for (const id of ['b', 'c', 'd']) expect(await info(mf, id), id).toMatchObject({ sharesPrompt: true });
      for (const id of ['a', 'b', 'c', 'd']) await step(mf, id);
      expect((await info(mf, 'a')).length).toBe(105);
    });
  });
});

describe('edge example: a request that fails at any point changes nothing, in memory or in storage', () => {
  /** GET /conversations/:id and the stored rows, as the object reports them */
  const state = (mf: Miniflare, id: string) =>
    info(mf, id).then(({ length, pieces, storedBytes }) => ({ length, pieces, storedBytes }));
  const tokens = (shape: Shape, s: Step) => s.q.length / (shape.layers * shape.heads * shape.headDim);

  it('a window: requests longer than the ring has left are stored, and a restart continues bit for bit', async () => {
    // a ring of 100 slots, a window of 30: a 90-token request overwrites the first positions of the page it
    // completes before the page can be stored (its row would need them), and a 150-token one overwrites
    // even the request's own first positions: both must still be stored so that a restart loads
    const shape: Shape = {
      layers: 2,
      heads: 2,
      kvHeads: 1,
      headDim: 4,
      maxTokens: 100,
      window: 30,
      rope: { theta: 10000 },
    };
    const persist = join(work, 'window');
    const rng = new Rng(7);
    const steps = [60, 90, 1, 150, 3].map((n) => randomStep(shape, rng, n));
    const last = randomStep(shape, rng);
    const want = referenceOutputs(shape, [...steps, last]);
    let kept: Answer;
    await running(shape, persist, async (mf) => {
      let length = 0;
      for (const [i, s] of steps.entries()) {
        const answer = await attend(mf, 'w', s);
        expect(answer.status, answer.error).toBe(200);
        length += tokens(shape, s);
        expect(answer.length).toBe(length);
        expectMatchesReference(shape, answer.out!, want[i], `request ${i} (${tokens(shape, s)} tokens)`);
      }
      kept = await attend(mf, 'kept-in-memory', steps[0]);
      for (const s of steps.slice(1)) await attend(mf, 'kept-in-memory', s);
      kept = await attend(mf, 'kept-in-memory', last);
      expectMatchesReference(shape, kept.out!, want.at(-1)!, 'the last token, never restarted');
    });
    await running(shape, persist, async (mf) => {
      expect(await info(mf, 'w')).toMatchObject({ length: 304 });
      const next = await attend(mf, 'w', last);
      expect(next.status, next.error).toBe(200);
      expectBitIdentical(next.out!, kept!.out!, 'the restarted windowed conversation vs the one never restarted');
    });
  });

  it('a request refused after the system prompt was forked leaves the conversation empty; the next one starts it', async () => {
    const shape: Shape = { ...SMALL, maxTokens: 100 };
    const rng = new Rng(8);
    await running(shape, false, async (mf) => {
      const prompt = randomStep(shape, rng, 80);
      expect((await attend(mf, '', prompt, true, '/system-prompt', 'PUT')).status).toBe(200);
      // 80 + 30 > 100: refused, and neither the prompt nor the request stays
      const tooLong = await attend(mf, 'c', randomStep(shape, rng, 30));
      expect([tooLong.status, tooLong.error]).toEqual([400, expect.stringMatching(/maxTokens/)]);
      expect(await state(mf, 'c')).toEqual({ length: 0, pieces: 0, storedBytes: 0 });
      const fits = randomStep(shape, rng, 20);
      const answer = await attend(mf, 'c', fits);
      expect([answer.status, answer.length]).toEqual([200, 100]);
      expectMatchesReference(
        shape,
        answer.out!,
        referenceOutputs(shape, [prompt, fits])[1],
        'the prompt and the request that fits',
      );
    });
  });

  it('a storage write that fails (a row over the 2 MB value limit) changes nothing: not the cache, not the rows, not the prompt', async () => {
    // 64 KiB per position: a row of 40 positions (2.6 MB) is over a SQLite-backed object's 2 MB value limit
    const shape: Shape = { layers: 1, heads: 16, kvHeads: 16, headDim: 512, maxTokens: 256 };
    const persist = join(work, 'too-big');
    const rng = new Rng(9);
    const prompt = randomStep(shape, rng, 10);
    const first = randomStep(shape, rng, 20);
    const again = randomStep(shape, rng);
    await running(shape, persist, async (mf) => {
      expect((await attend(mf, '', prompt, true, '/system-prompt', 'PUT')).status).toBe(200);
      // the conversation's first request: the prompt's row (10 positions) and the request's row (40) in one transaction
      const tooBig = await attend(mf, 'p', randomStep(shape, rng, 40));
      expect([tooBig.status, tooBig.error]).toEqual([500, expect.stringMatching(/changed nothing/)]);
      expect(await state(mf, 'p')).toEqual({ length: 0, pieces: 0, storedBytes: 0 });
      // it starts from the prompt again, and stores the prompt's rows with its own
      expect((await attend(mf, 'p', first)).length).toBe(30);
      const stored = await state(mf, 'p');
      expect(stored.pieces).toBe(2);
      // a later request too big to store: the conversation stays at 30, its rows as they were
      const later = await attend(mf, 'p', randomStep(shape, rng, 40));
      expect([later.status, later.length]).toEqual([500, 0]);
      expect(await state(mf, 'p')).toEqual(stored);
      // and a new prompt too big to store leaves the old one in place
      const bigPrompt = await attend(mf, '', randomStep(shape, rng, 40), true, '/system-prompt', 'PUT');
      expect(bigPrompt.status).toBe(500);
    });
    await running(shape, persist, async (mf) => {
      expect(await info(mf, 'p')).toMatchObject({ length: 30, sharesPrompt: true });
      const answer = await attend(mf, 'p', again);
      expect(answer.status, answer.error).toBe(200);
      expectMatchesReference(
        shape,
        answer.out!,
        referenceOutputs(shape, [prompt, first, again])[2],
        'after the failed writes and a restart',
      );
    });
  });

  it("JSON numbers beyond float32's range are refused (they would be stored as Infinity); DELETE /system-prompt is not a route", async () => {
    await running(SMALL, false, async (mf) => {
      const rng = new Rng(10);
      expect((await attend(mf, 'j', randomStep(SMALL, rng), false)).status).toBe(200);
      const huge = { ...randomStep(SMALL, rng) };
      const body = JSON.stringify({
        q: Array.from(huge.q),
        k: Array.from(huge.k).map((x, i) => (i === 9 ? 1e39 : x)),
        v: Array.from(huge.v),
      });
      const response = await mf.dispatchFetch('http://edge/conversations/j/attend', {
        method: 'POST',
        body,
        headers: { 'content-type': 'application/json' },
      });
      expect([response.status, ((await response.json()) as { error: string }).error]).toEqual([
        400,
        expect.stringMatching(/"k" must be an array of finite numbers: 1e\+39 at index 9 is beyond float32's range/),
      ]);
      expect((await info(mf, 'j')).length).toBe(1);

      const prompt = randomStep(SMALL, rng, 5);
      expect((await attend(mf, '', prompt, true, '/system-prompt', 'PUT')).status).toBe(200);
      const deleted = await mf.dispatchFetch('http://edge/system-prompt', { method: 'DELETE' });
      expect(deleted.status).toBe(405);
      expect((await mf.dispatchFetch('http://edge/system-prompt')).status, 'the prompt is still there').toBe(200);
    });
  });
});

/** POSTs k, v of T tokens (binary) to /append: stored without attending. */
async function append(mf: Miniflare, id: string, step: Step): Promise<Answer> {
  const body = new Uint8Array(
    Buffer.concat([step.k, step.v].map((x) => Buffer.from(x.buffer, x.byteOffset, x.byteLength))),
  );
  const t0 = performance.now();
  const response = await mf.dispatchFetch(`http://edge/conversations/${id}/append`, {
    method: 'POST',
    body,
    headers: { 'content-type': 'application/octet-stream' },
  });
  const { length, error } = (await response.json()) as { length: number; error?: string };
  return {
    status: response.status,
    length,
    error,
    written: Number(response.headers.get('x-written-bytes')),
    ms: performance.now() - t0,
  };
}

describe('edge example at real size: Llama-3.2-1B int4, filled to its 8,192 tokens', () => {
  it('filled by /append, attended at its end, restarted before its last token without losing it; rows under 2 MB', async () => {
    const persist = join(work, 'long');
    const rng = new Rng(4);
    const { maxTokens, layers } = LLAMA;
    const APPEND = PAGE; // tokens per /append: bodies of 4 MiB
    // four random blocks cycled for the first 8,128 tokens, a page per request (a causal prefill of 8,192 tokens is minutes of
    // arithmetic on this machine; /append stores K/V computed elsewhere); the last page by /attend: 32
    // tokens at once, then one at a time
    const blocks = Array.from({ length: 4 }, () => randomStep(LLAMA, rng, APPEND));
    const appends = (maxTokens - PAGE) / APPEND;
    const tail = [randomStep(LLAMA, rng, 32), ...Array.from({ length: PAGE - 32 }, () => randomStep(LLAMA, rng))];

    // the package in Node fed the same, never restarted: what every /attend must answer. Node may run
    // another build than workerd (simd, relaxed-simd): the same int4 codes, outputs apart by float rounding
    // of sums over 8,192 positions (measured: none, the same bits here), far below int4's own error (DTYPE_BUDGET)
    await init({ threads: 1 });
    const twin = new KVCache(LLAMA);
    const twinOut = (s: Step, tokens: number) => {
      const out = new Float32Array(tokens * layers * LLAMA.heads * LLAMA.headDim);
      for (let l = 0; l < layers; l++)
        twin.attend(l, layerOf(s.q, LLAMA, l), layerOf(s.k, LLAMA, l), layerOf(s.v, LLAMA, l), layerOf(out, LLAMA, l));
      return out;
    };
    let worst = 0;
    const t0 = performance.now();
    const fills: Answer[] = [];
    let last: Answer | undefined;
    let tailMs = 0;
    await running(LLAMA, persist, async (mf) => {
      for (let i = 0; i < appends; i++) {
        const block = blocks[i % blocks.length];
        for (let l = 0; l < layers; l++) twin.append(l, layerOf(block.k, LLAMA, l), layerOf(block.v, LLAMA, l));
        for (const id of ['kept', 'evicted']) {
          const a = await append(mf, id, block);
          expect([a.status, a.error, a.length]).toEqual([200, undefined, (i + 1) * APPEND]);
          if (id === 'kept') fills.push(a);
        }
      }
      const t1 = performance.now();
      for (const [i, s] of tail.entries()) {
        const tokens = s.q.length / (layers * LLAMA.heads * LLAMA.headDim);
        const want = twinOut(s, tokens);
        last = await attend(mf, 'kept', s);
        expect(last.status, last.error).toBe(200);
        for (let j = 0; j < want.length; j++) worst = Math.max(worst, Math.abs(last.out![j] - want[j]));
        if (i < tail.length - 1) expect((await attend(mf, 'evicted', s)).status).toBe(200);
      }
      tailMs = performance.now() - t1;
      expect(last!.length).toBe(maxTokens);
      const full = await append(mf, 'kept', randomStep(LLAMA, rng));
      expect([full.status, full.error]).toEqual([400, expect.stringMatching(/maxTokens/)]);
    });
    const filled = (performance.now() - t0) / 1000;
    expect(worst, 'the Worker against the package in Node, at 8,128–8,192 tokens').toBeLessThan(1e-4);

    const restarted = performance.now();
    await running(
      LLAMA,
      persist,
      async (mf) => {
        const ready = performance.now();
        const stored = (await info(mf, 'evicted')) as Awaited<ReturnType<typeof info>> & {
          cacheBytes: number;
          largestRowBytes: number;
        };
        const restoredMs = performance.now() - ready;
        // 127 pages, then the 32-token request's row and one row per token after it
        expect(stored).toMatchObject({ length: maxTokens - 1, pieces: maxTokens / PAGE - 1 + 1 + 31 });
        // the 84 MB of rows just loaded no longer take the isolate's memory, not even as garbage awaiting a
        // collection: beside the cache's wasm memory its array buffers hold the tiny model's weights (a Data
        // module) and little else (a request's bytes); rows left to the collector measured 3–33 MB here
        const { backingStorageSize } = await heapUsage(mf);
        const weights = readdirSync(join(work, 'bundle'))
          .filter((f) => f.endsWith('.safetensors'))
          .reduce((n, f) => n + statSync(join(work, 'bundle', f)).size, 0);
        expect(backingStorageSize - weights, "array buffers beside the model's weights after the load").toBeLessThan(
          1_000_000,
        );
        const next = await attend(mf, 'evicted', tail.at(-1)!);
        expect(next.length, 'not a token lost').toBe(maxTokens);
        expectBitIdentical(next.out!, last!.out!, 'the restarted conversation vs the one never restarted');
        const after = (await info(mf, 'evicted')) as typeof stored;
        expect(after).toMatchObject({ length: maxTokens, pieces: maxTokens / PAGE, cacheBytes: twin.byteLength });
        // a row holds a page: 64 positions × 16 layers × 8 kv heads × (K and V: 32 bytes of codes + 4 of step and least per 32 values)
        const pageBytes = PAGE * layers * LLAMA.kvHeads * 2 * (LLAMA.headDim / 2 + (LLAMA.headDim / 32) * 4);
        expect(after.largestRowBytes - pageBytes, 'a page and its header').toBeGreaterThan(0);
        expect(after.largestRowBytes - pageBytes, 'a page and its header').toBeLessThan(1024);
        expect(after.largestRowBytes).toBeLessThan(2_000_000); // a SQLite-backed object's value limit (2 MB)
        const median = (xs: number[]) => [...xs].sort((x, y) => x - y)[Math.floor(xs.length / 2)];
        console.log(
          `edge example, Llama-3.2-1B int4 to ${maxTokens} tokens, two conversations: ${filled.toFixed(1)} s in all ` +
            `(${appends} /append requests of ${APPEND} tokens each, ${(APPEND * (blocks[0].k.length / APPEND) * 8) / 2 ** 20} MiB bodies, ` +
            `median ${median(fills.map((a) => a.ms)).toFixed(0)} ms, writing ${median(fills.map((a) => a.written))} bytes; ` +
            `the last page by /attend: ${(tailMs / 1000).toFixed(1)} s)\n` +
            `  stored: ${after.storedBytes} bytes in ${after.pieces} rows, the largest ${after.largestRowBytes} bytes; ` +
            `cache ${after.cacheBytes} bytes; the Worker vs Node's package: max diff ${worst.toExponential(1)}\n` +
            `  restart: workerd up in ${(ready - restarted).toFixed(0)} ms; first request (object start + load of ` +
            `${stored.storedBytes} bytes in ${stored.pieces} rows) ${restoredMs.toFixed(0)} ms; the isolate's array buffers ` +
            `then the model's weights and ${backingStorageSize - weights} bytes`,
        );
      },
      {},
      true,
    );
    twin.dispose();
  }, 300_000);
});

/** A /generate answer: its status, the streamed events, and the chunks the body arrived in. */
interface Generated {
  status: number;
  type: string | null;
  ids: number[];
  text: string;
  done?: { tokens: number[]; length: number };
  error?: string;
  chunks: number;
}

async function generateText(mf: Miniflare, id: string, body: unknown): Promise<Generated> {
  const response = await mf.dispatchFetch(`http://edge/conversations/${id}/generate`, {
    method: 'POST',
    body: typeof body === 'string' ? body : JSON.stringify(body),
    headers: { 'content-type': 'application/json' },
  });
  const type = response.headers.get('content-type');
  if (response.status !== 200) {
    const { error } = (await response.json()) as { error: string };
    return { status: response.status, type, ids: [], text: '', error, chunks: 0 };
  }
  let raw = '';
  let chunks = 0;
  const decoder = new TextDecoder();
  for await (const chunk of response.body as unknown as AsyncIterable<Uint8Array>) {
    raw += decoder.decode(chunk, { stream: true });
    chunks++;
  }
  const answer: Generated = { status: response.status, type, ids: [], text: '', chunks };
  for (const block of raw.split('\n\n').filter(Boolean)) {
    const event = /^event: (.*)$/m.exec(block)?.[1];
    const data = JSON.parse(/^data: (.*)$/m.exec(block)?.[1] ?? 'null');
    if (event === 'done') answer.done = data;
    else if (event === 'error') answer.error = data.error;
    else {
      answer.ids.push(data.id);
      answer.text += data.text;
    }
  }
  return answer;
}

describe('edge example: /generate continues a conversation with the tiny model, streamed', () => {
  const tiny = join(root, 'examples/model/tiny');
  const reference = JSON.parse(readFileSync(join(tiny, 'reference.json'), 'utf8'));
  const bytes = (text: string) => Array.from(new TextEncoder().encode(text));
  const BOS = reference.greedy.prompt_ids[0];

  it("the prompt of PyTorch's reference gives its greedy tokens; concurrent turns run in arrival order; bad requests change nothing", async () => {
    // Node's runner on the same weights is what every turn must equal: the Worker runs the same code on the
    // same kernel build family, and the runner gives the same bits for a prefill as for token-by-token decoding.
    const model = await loadModel(tiny);
    await running(SMALL, false, async (mf) => {
      const prompt = new TextDecoder().decode(Uint8Array.from(reference.greedy.prompt_ids.slice(1)));
      let t0 = performance.now();
      const first = await generateText(mf, 'ref', { text: prompt, maxNewTokens: 32 });
      const firstMs = performance.now() - t0; // the isolate loads the model first
      t0 = performance.now();
      const again = await generateText(mf, 'again', { text: prompt, maxNewTokens: 32 });
      const warmMs = performance.now() - t0;
      expect(again.ids, 'another conversation, the same tokens').toEqual(first.ids);
      expect(first.type).toMatch(/^text\/event-stream/);
      expect(first.error).toBeUndefined();
      expect(first.ids, "PyTorch's greedy continuation").toEqual(reference.greedy.new_ids.slice(0, 32));
      // matmul: the bundle's imported matmul module ran (workerd compiles no WebAssembly from bytes)
      expect(first.done).toEqual({
        tokens: first.ids,
        length: reference.greedy.prompt_ids.length + 32,
        matmul: 'wasm',
      });
      expect(first.text).toBe(reference.greedy.new_text.slice(0, 32));
      // streamed as the tokens come: an answer sent whole (about 1.5 KB) would arrive in one chunk
      expect(first.chunks).toBeGreaterThan(1);

      // two turns sent at once: the one the object took first (the shorter conversation) is the one continued first
      const turns = ['Fellow-Citizens of the Senate', ' and of the House'];
      const both = await Promise.all(turns.map((text) => generateText(mf, 'two', { text, maxNewTokens: 12 })));
      const order = both[0].done!.length < both[1].done!.length ? [0, 1] : [1, 0];
      let ids = [BOS];
      for (const i of order) {
        ids = [...ids, ...bytes(turns[i])];
        const want = await model.generate(ids, { maxNewTokens: 12, stopTokens: [257] });
        expect(both[i].ids, `turn "${turns[i]}" (taken ${order.indexOf(i) + 1}.)`).toEqual(want);
        ids = [...ids, ...want];
        expect(both[i].done!.length).toBe(ids.length);
      }

      // refused: nothing changes, and the next turn continues as if they never came
      const before = ((await info(mf, 'two')) as unknown as { textLength: number }).textLength;
      const refused = [
        await generateText(mf, 'two', { text: 'x', maxNewTokens: 0 }),
        await generateText(mf, 'two', { text: 3, maxNewTokens: 4 }),
        await generateText(mf, 'two', '{"text": '),
        await generateText(mf, 'two', { text: 'x'.repeat(256), maxNewTokens: 4 }),
      ];
      expect(refused.map((r) => r.status)).toEqual([400, 400, 400, 400]);
      expect(refused.map((r) => r.error)).toEqual([
        '"maxNewTokens" must be an integer from 1 to 256, got 0',
        '"text" must be a string, got 3',
        expect.stringMatching(/^malformed JSON/),
        expect.stringMatching(/exceed the model's context \(256 tokens\)/),
      ]);
      expect(((await info(mf, 'two')) as unknown as { textLength: number }).textLength).toBe(before);
      const after = await generateText(mf, 'two', { text: ' of', maxNewTokens: 8 });
      ids = [...ids, ...bytes(' of')];
      expect(after.ids).toEqual(await model.generate(ids, { maxNewTokens: 8, stopTokens: [257] }));
      const get = await mf.dispatchFetch('http://edge/conversations/two/generate');
      expect(get.status).toBe(405);
      await get.arrayBuffer();
      console.log(
        `edge example /generate: "${prompt}${first.text}" (32 tokens in ${first.chunks} chunks of the stream; ` +
          `${firstMs.toFixed(0)} ms with the model's loading, ${warmMs.toFixed(0)} ms warm)`,
      );
    });
  });

  it('on a shared system prompt (SYSTEM_TEXT): conversations fork it, and a restart continues the same tokens', async () => {
    const model = await loadModel(tiny);
    const persist = join(work, 'generate');
    const system = 'The President of the United States. ';
    const bindings = { SYSTEM_TEXT: system };
    const start = [BOS, ...bytes(system)];
    const asks = ['We the People', ' of the United States'];
    const want1 = await model.generate([...start, ...bytes(asks[0])], { maxNewTokens: 16, stopTokens: [257] });
    const ids2 = [...start, ...bytes(asks[0]), ...want1, ...bytes(asks[1])];
    const want2 = await model.generate(ids2, { maxNewTokens: 16, stopTokens: [257] });
    await running(
      SMALL,
      persist,
      async (mf) => {
        const a = await generateText(mf, 'a', { text: asks[0], maxNewTokens: 16 });
        const b = await generateText(mf, 'b', { text: asks[0], maxNewTokens: 16 });
        expect(a.ids, 'a conversation begins after the system prompt').toEqual(want1);
        expect(b.ids, 'and so does another, forked from the same prompt').toEqual(want1);
      },
      bindings,
    );
    await running(
      SMALL,
      persist,
      async (mf) => {
        expect(((await info(mf, 'a')) as unknown as { textLength: number }).textLength).toBe(start.length + 13 + 16);
        const a = await generateText(mf, 'a', { text: asks[1], maxNewTokens: 16 });
        expect(a.ids, 'the restarted conversation continues').toEqual(want2);
        expect(a.done!.length).toBe(ids2.length + 16);
        // DELETE forgets the text too: the next turn begins after the system prompt again
        await (await mf.dispatchFetch('http://edge/conversations/b', { method: 'DELETE' })).arrayBuffer();
        const b = await generateText(mf, 'b', { text: asks[0], maxNewTokens: 16 });
        expect(b.ids).toEqual(want1);
      },
      bindings,
    );
  });
});
