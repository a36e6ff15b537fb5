// @ts-nocheck: a measuring script over untyped inspector messages and /proc text; its numbers are printed, not returned
// The example Worker's memory at its default, measured in workerd (through Miniflare): one conversation of
// Llama-3.2-1B's attention in int4 filled to its 8,192 tokens (through /append in pages of 64 tokens, the
// last page through /attend), then the object restarted and its rows loaded again. Reports the kernel's
// WebAssembly memory (which only grows, so what it holds at the end is its peak), workerd's resident memory
// (peak and idle, from /proc: the isolate's heap, the wasm memory and workerd itself), and the largest
// storage row, against Cloudflare's 128 MB per isolate and 2 MB per value.
//
//   node bench/edge-memory.mjs [--append-tokens 64]

import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import * as esbuild from 'esbuild';
import { Miniflare } from 'miniflare';
import WebSocket from 'ws';
import { LLAMA_3_2_1B as SHAPE, PAGE } from '../examples/worker/config.js';
import { WORKER_BUNDLE } from '../test/runtimes/bundle-options.mjs';
import { Rng } from '../test/support/rng.js';

const { values } = parseArgs({ options: { 'append-tokens': { type: 'string', default: String(PAGE) } } });
const APPEND = Number(values['append-tokens']);
const root = fileURLToPath(new URL('..', import.meta.url));
const work = mkdtempSync(join(tmpdir(), 'wasm-attention-edge-memory-'));
const MiB = 2 ** 20;
const LIMIT = 128 * 1e6;
const INSPECTOR_PORT = 9311; // an isolate's memory limit (Cloudflare says 128 MB)

const outdir = join(work, 'bundle');
await esbuild.build({
  ...WORKER_BUNDLE,
  entryPoints: [join(root, 'bench/edge/measured-worker.js')],
  outdir,
  alias: { 'wasm-attention': join(root, 'src/workerd.ts'), 'example-worker': join(root, 'examples/worker/worker.js') },
  ignoreAnnotations: true, // as test/edge.test.ts: keep src/workerd.ts's registration of the wasm sources
  logLevel: 'error',
});

/** workerd's processes under this one: their resident (VmRSS) and peak resident (VmHWM) bytes. */
function workerdMemory() {
  const found = { rss: 0, hwm: 0 };
  for (const pid of readdirSync('/proc').filter((p) => /^\d+$/.test(p))) {
    let status;
    try {
      status = readFileSync(`/proc/${pid}/status`, 'utf8');
    } catch {
      continue;
    }
    if (!/^Name:\s+workerd/m.test(status) || !descends(pid)) continue;
    found.rss += Number(/^VmRSS:\s+(\d+) kB/m.exec(status)[1]) * 1024;
    found.hwm += Number(/^VmHWM:\s+(\d+) kB/m.exec(status)[1]) * 1024;
  }
  return found;
}
function descends(pid) {
  for (let p = pid; p && p !== '1'; ) {
    if (p === String(process.pid)) return true;
    p = /^PPid:\s+(\d+)/m.exec(readFileSync(`/proc/${p}/status`, 'utf8'))?.[1];
  }
  return false;
}

async function running(persist, use) {
  const mf = new Miniflare({
    modules: [
      { type: 'ESModule', path: join(outdir, 'measured-worker.js') },
      ...readdirSync(outdir)
        .filter((f) => /\.(wasm|safetensors)$/.test(f))
        .map((f) => ({ type: f.endsWith('.wasm') ? 'CompiledWasm' : 'Data', path: join(outdir, f) })),
    ],
    modulesRoot: outdir,
    compatibilityDate: '2026-04-01',
    durableObjects: { CONVERSATIONS: { className: 'Conversation', useSQLite: true } },
    durableObjectsPersist: persist,
    inspectorPort: INSPECTOR_PORT,
  });
  try {
    await mf.ready;
    return await use(mf);
  } finally {
    await mf.dispose();
  }
}

/**
 * The isolate's V8 heap through the inspector (Runtime.getHeapUsage): usedSize and totalSize (JS objects), and
 * backingStorageSize (array buffers' bytes outside the heap, the wasm memory among them).
 */
async function isolateHeap() {
  const targets = await (await fetch(`http://127.0.0.1:${INSPECTOR_PORT}/json`)).json();
  const socket = new WebSocket(targets.find((t) => t.id.startsWith('core:user')).webSocketDebuggerUrl);
  await new Promise((resolve, reject) => socket.once('open', resolve).once('error', reject));
  let id = 0;
  const call = (method) =>
    new Promise((resolve) => {
      const mine = ++id;
      socket.on('message', (data) => {
        const message = JSON.parse(String(data));
        if (message.id === mine) resolve(message.result);
      });
      socket.send(JSON.stringify({ id: mine, method }));
    });
  const usage = await call('Runtime.getHeapUsage');
  socket.close();
  return usage;
}

const get = async (mf, path, init) => {
  const response = await mf.dispatchFetch(`http://edge${path}`, init);
  if (!response.ok) throw new Error(`${path}: ${response.status} ${await response.text()}`);
  return response.headers.get('content-type')?.startsWith('application/json')
    ? response.json()
    : response.arrayBuffer();
};
const post = (mf, path, ...tensors) =>
  get(mf, path, {
    method: 'POST',
    body: new Uint8Array(Buffer.concat(tensors.map((x) => Buffer.from(x.buffer, x.byteOffset, x.byteLength)))),
    headers: { 'content-type': 'application/octet-stream' },
  });
const wasm = async (mf) => (await get(mf, '/__memory')).memories;

const { layers, heads, kvHeads, headDim, maxTokens } = SHAPE;
const rng = new Rng(7);
const kv = (tokens) => rng.randn(layers * tokens * kvHeads * headDim);
const persist = join(work, 'storage');
const rows = {};
const fill = await running(persist, async (mf) => {
  await get(mf, '/conversations/c');
  const idle = { ...workerdMemory(), wasm: await wasm(mf) };
  const t0 = performance.now();
  const tail = PAGE;
  for (let at = 0; at < maxTokens - tail; at += APPEND)
    await post(mf, '/conversations/c/append', kv(APPEND), kv(APPEND));
  const appendSeconds = (performance.now() - t0) / 1000;
  for (let at = maxTokens - tail; at < maxTokens; at++)
    await post(mf, '/conversations/c/attend', rng.randn(layers * heads * headDim), kv(1), kv(1));
  Object.assign(rows, await get(mf, '/conversations/c'));
  return { idle, full: { ...workerdMemory(), wasm: await wasm(mf), heap: await isolateHeap() }, appendSeconds };
});
const restore = await running(persist, async (mf) => {
  const idle = workerdMemory();
  const t0 = performance.now();
  const state = await get(mf, '/conversations/c');
  const ms = performance.now() - t0;
  if (state.length !== maxTokens) throw new Error(`restored ${state.length} tokens`);
  return { idle, full: { ...workerdMemory(), wasm: await wasm(mf), heap: await isolateHeap() }, ms };
});
rmSync(work, { recursive: true, force: true });

const mb = (n) => `${(n / 1e6).toFixed(1)} MB`;
const heap = (h) => `${mb(h.usedSize)} of ${mb(h.totalSize)}, buffers ${mb(h.backingStorageSize)}`;
const sum = (xs) => xs.reduce((n, x) => n + x, 0);
console.log(
  `Worker example, ${JSON.stringify({ layers, heads, kvHeads, headDim, maxTokens, dtype: SHAPE.dtype })}, in workerd:\n` +
    `  filled to ${rows.length} tokens (/append of ${APPEND} tokens per request, ${fill.appendSeconds.toFixed(1)} s; the last page by /attend)\n` +
    `  cache.byteLength ${rows.cacheBytes} (${(rows.cacheBytes / MiB).toFixed(1)} MiB); the largest row ${rows.largestRowBytes} bytes ` +
    `of ${rows.pieces} (${((100 * rows.largestRowBytes) / 2e6).toFixed(0)}% of the 2 MB value limit)\n` +
    `  WebAssembly memory (its peak): ${mb(sum(fill.full.wasm))} full [${fill.full.wasm}] (idle ${mb(sum(fill.idle.wasm))}), ` +
    `${mb(sum(restore.full.wasm))} after a restart's load [${restore.full.wasm}]; ${((100 * sum(fill.full.wasm)) / LIMIT).toFixed(0)}% of 128 MB\n` +
    `  the isolate's V8 heap (JS objects used of total; array buffers outside it, garbage not yet collected included):\n` +
    `    full: ${heap(fill.full.heap)}; after the restart's load: ${heap(restore.full.heap)}\n` +
    `  workerd resident: idle ${mb(fill.idle.rss)}; peak while filling ${mb(fill.full.hwm)} (+${mb(fill.full.hwm - fill.idle.rss)}), ` +
    `now ${mb(fill.full.rss)}; restart: idle ${mb(restore.idle.rss)}, peak through the load ${mb(restore.full.hwm)} ` +
    `(+${mb(restore.full.hwm - restore.idle.rss)}, ${restore.ms.toFixed(0)} ms)`,
);
