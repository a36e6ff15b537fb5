// @ts-nocheck: a measuring script over untyped inspector messages and /proc text; its numbers are printed, not returned
// The example Worker's memory at its default, measured in workerd (through Miniflare): one conversation of
// Llama-3.2-1B's attention in int4 filled to its 8,192 tokens (through /append in pages of 64 tokens, the
// last page through /attend), then the object restarted and its rows loaded again. Reports the whole isolate
// as its memory limit counts it (the kernel's WebAssembly memory, which only grows; the V8 heap's JS objects;
// the array buffers outside it, garbage not yet collected included), full and through a restart's load
// (sampled at every row read and every KVCache.load, paused by a debugger: nothing is collected for the
// samples), the restart's time, workerd's resident memory (from /proc: the isolate, its SQLite storage and
// workerd itself), and the largest storage row, against Cloudflare's 128 MB per isolate and 2 MB per value.
// --batch-bytes compares restarts at other LOAD_BATCH_BYTES (the Worker bundled once per value), interleaved.
//
//   node bench/edge-memory.mjs [--append-tokens 64] [--restarts 3] [--batch-bytes 1,2097152,8388608]

import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import * as esbuild from 'esbuild';
import { Miniflare } from 'miniflare';
import WebSocket from 'ws';
import { LOAD_BATCH_BYTES, PAGE, LLAMA_3_2_1B as SHAPE } from '../examples/worker/config.js';
import { WORKER_BUNDLE } from '../test/runtimes/bundle-options.mjs';
import { Rng } from '../test/support/rng.js';

const { values } = parseArgs({
  options: {
    'append-tokens': { type: 'string', default: String(PAGE) },
    restarts: { type: 'string', default: '3' },
    'batch-bytes': { type: 'string' },
  },
});
const APPEND = Number(values['append-tokens']);
const RESTARTS = Number(values.restarts);
const root = fileURLToPath(new URL('..', import.meta.url));
const work = mkdtempSync(join(tmpdir(), 'wasm-attention-edge-memory-'));
const MiB = 2 ** 20;
const INSPECTOR_PORT = 9311;

/** The restart's load batches compared (--batch-bytes 655360,2097152,…), else the example's LOAD_BATCH_BYTES. */
const BATCHES = values['batch-bytes']?.split(',').map(Number) ?? [LOAD_BATCH_BYTES];

/**
 * The measured Worker bundled into `outdir`, its LOAD_BATCH_BYTES replaced by `batchBytes` (config.js as
 * written when that is its own value).
 */
async function bundle(outdir, batchBytes) {
  const config = join(root, 'examples/worker/config.js');
  const withBatch = {
    name: 'load-batch-bytes',
    setup(build) {
      build.onLoad({ filter: /[\\/]examples[\\/]worker[\\/]config\.js$/ }, () => {
        const text = readFileSync(config, 'utf8');
        const replaced = text.replace(/LOAD_BATCH_BYTES = [^;]+;/, `LOAD_BATCH_BYTES = ${batchBytes};`);
        if (replaced === text && batchBytes !== LOAD_BATCH_BYTES)
          throw new Error('LOAD_BATCH_BYTES not found in config.js');
        return { contents: replaced, loader: 'js' };
      });
    },
  };
  await esbuild.build({
    ...WORKER_BUNDLE,
    entryPoints: [join(root, 'bench/edge/measured-worker.js')],
    outdir,
    alias: {
      'wasm-attention': join(root, 'src/workerd.ts'),
      'example-worker': join(root, 'examples/worker/worker.js'),
    },
    ignoreAnnotations: true, // as test/edge.test.ts: keep src/workerd.ts's registration of the wasm sources
    plugins: [withBatch],
    logLevel: 'error',
  });
  return outdir;
}
const outdir = await bundle(join(work, 'bundle'), LOAD_BATCH_BYTES);
const batchOutdirs = await Promise.all(BATCHES.map((b) => bundle(join(work, `bundle-${b}`), b)));

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

async function running(persist, use, dir = outdir) {
  const mf = new Miniflare({
    modules: [
      { type: 'ESModule', path: join(dir, 'measured-worker.js') },
      ...readdirSync(dir)
        .filter((f) => /\.(wasm|safetensors)$/.test(f))
        .map((f) => ({ type: f.endsWith('.wasm') ? 'CompiledWasm' : 'Data', path: join(dir, f) })),
    ],
    modulesRoot: dir,
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

/** A connection to the isolate's inspector: call(method, params) → its result; onEvent(message) for events. */
async function inspector() {
  const targets = await (await fetch(`http://127.0.0.1:${INSPECTOR_PORT}/json`)).json();
  const socket = new WebSocket(targets.find((t) => t.id.startsWith('core:user')).webSocketDebuggerUrl);
  await new Promise((resolve, reject) => socket.once('open', resolve).once('error', reject));
  let id = 0;
  const pending = new Map();
  const connection = {
    onEvent: () => {},
    call: (method, params = {}) =>
      new Promise((resolve, reject) => {
        const mine = ++id;
        pending.set(mine, { resolve, reject });
        socket.send(JSON.stringify({ id: mine, method, params }));
      }),
    close: () => socket.close(),
  };
  socket.on('message', (data) => {
    const message = JSON.parse(String(data));
    const waiting = pending.get(message.id);
    if (!waiting) return connection.onEvent(message);
    pending.delete(message.id);
    if (message.error) waiting.reject(new Error(`${message.error.message}`));
    else waiting.resolve(message.result);
  });
  return connection;
}

/**
 * The isolate's V8 heap (Runtime.getHeapUsage): usedSize and totalSize (JS objects), and backingStorageSize
 * (array buffers' bytes outside the heap; the wasm memory is not among them, see /__memory).
 */
async function isolateHeap() {
  const connection = await inspector();
  const usage = await connection.call('Runtime.getHeapUsage');
  connection.close();
  return usage;
}

/**
 * Runs `use` with a debugger on the isolate: paused at each probe of bench/edge/measured-worker.js (after each
 * stored row the object handles, after each KVCache.load), it samples the V8 heap and the wasm memory, then
 * resumes. Returns the samples: { usedSize, totalSize, backingStorageSize, wasm }. Nothing is collected for them.
 */
async function sampled(use) {
  const connection = await inspector();
  const samples = [];
  let failed;
  connection.onEvent = async (message) => {
    if (message.method !== 'Debugger.paused') return;
    try {
      const heap = await connection.call('Runtime.getHeapUsage');
      const { result } = await connection.call('Debugger.evaluateOnCallFrame', {
        callFrameId: message.params.callFrames[0].callFrameId,
        expression: 'globalThis.__wasmBytes()',
        returnByValue: true,
      });
      samples.push({ ...heap, wasm: result.value });
    } catch (error) {
      failed = error;
    }
    await connection.call('Debugger.resume');
  };
  await connection.call('Debugger.enable');
  try {
    await use();
  } finally {
    await connection.call('Debugger.disable');
    connection.close();
  }
  if (failed) throw failed;
  return samples;
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
/**
 * A restart on the stored rows (the Worker of `dir`): workerd started, then the first request (object start,
 * the rows read and loaded); with `probe`, paused at every row and load for samples (its time is then not
 * the load's).
 */
const restart = (dir, probe) =>
  running(
    persist,
    async (mf) => {
      const idle = workerdMemory();
      let ms;
      const samples = await (probe ? sampled : (f) => f())(async () => {
        const t0 = performance.now();
        const state = await get(mf, '/conversations/c');
        ms = performance.now() - t0;
        if (state.length !== maxTokens) throw new Error(`restored ${state.length} tokens`);
      });
      return { idle, full: { ...workerdMemory(), wasm: await wasm(mf), heap: await isolateHeap() }, ms, samples };
    },
    dir,
  );
// the batch sizes interleaved, round by round, so that a busy machine slows each alike
const restores = BATCHES.map(() => []);
for (let round = 0; round < RESTARTS; round++)
  for (const [i, dir] of batchOutdirs.entries()) restores[i].push(await restart(dir, false));
const probed = [];
for (const dir of batchOutdirs) probed.push(await restart(dir, true));
rmSync(work, { recursive: true, force: true });

const mb = (n) => `${(n / 1e6).toFixed(1)} MB`;
const sum = (xs) => xs.reduce((n, x) => n + x, 0);
/** The whole isolate as its memory limit counts it: the wasm memory, the JS heap's objects, the array buffers. */
const isolate = (wasmBytes, h) => wasmBytes + h.usedSize + h.backingStorageSize;
const parts = (wasmBytes, h) =>
  `${mb(isolate(wasmBytes, h))} (wasm ${mb(wasmBytes)}, JS ${mb(h.usedSize)} of ${mb(h.totalSize)}, buffers ${mb(h.backingStorageSize)})`;
const median = (xs) => [...xs].sort((x, y) => x - y)[Math.floor(xs.length / 2)];
const restartLines = BATCHES.map((batch, i) => {
  const { samples } = probed[i];
  const peak = samples.reduce((top, s) => (isolate(s.wasm, s) > isolate(top.wasm, top) ? s : top));
  const after = restores[i][0].full;
  return (
    `    LOAD_BATCH_BYTES ${batch}${batch === LOAD_BATCH_BYTES ? ' (the default)' : ''}: ${restores[i].map((r) => r.ms.toFixed(0)).join(', ')} ms ` +
    `(median ${median(restores[i].map((r) => r.ms)).toFixed(0)} ms); after it ${parts(sum(after.wasm), after.heap)};\n` +
    `      through it, at each of ${samples.length} probes: peak ${parts(peak.wasm, peak)} at probe ${samples.indexOf(peak) + 1}`
  );
});
const restore = restores[0][0];
console.log(
  `Worker example, ${JSON.stringify({ layers, heads, kvHeads, headDim, maxTokens, dtype: SHAPE.dtype })}, in workerd:\n` +
    `  filled to ${rows.length} tokens (/append of ${APPEND} tokens per request, ${fill.appendSeconds.toFixed(1)} s; the last page by /attend)\n` +
    `  cache.byteLength ${rows.cacheBytes} (${(rows.cacheBytes / MiB).toFixed(1)} MiB); the largest row ${rows.largestRowBytes} bytes ` +
    `of ${rows.pieces} (${((100 * rows.largestRowBytes) / 2e6).toFixed(0)}% of the 2 MB value limit)\n` +
    `  WebAssembly memory (only grows): ${mb(sum(fill.full.wasm))} full [${fill.full.wasm}] (idle ${mb(sum(fill.idle.wasm))}), ` +
    `${mb(sum(restore.full.wasm))} after a restart's load [${restore.full.wasm}]\n` +
    `  the isolate (wasm memory + JS objects used of the heap's total + array buffers; garbage not yet collected ` +
    `included; limit 128 MB):\n` +
    `    full: ${parts(sum(fill.full.wasm), fill.full.heap)}\n` +
    `  a restart (its first request: object start, rows read and loaded), ${RESTARTS} each, interleaved; then ` +
    `one paused by a debugger after each row read and each KVCache.load:\n` +
    `${restartLines.join('\n')}\n` +
    `  workerd resident: idle ${mb(fill.idle.rss)}; peak while filling ${mb(fill.full.hwm)} (+${mb(fill.full.hwm - fill.idle.rss)}), ` +
    `now ${mb(fill.full.rss)}; restart: idle ${mb(restore.idle.rss)}, peak through the load ${mb(restore.full.hwm)} ` +
    `(+${mb(restore.full.hwm - restore.idle.rss)})`,
);
