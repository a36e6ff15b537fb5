// @ts-nocheck: wraps the example, which is plain JavaScript (examples/ is not type-checked)
// The example Worker with one route more, for bench/edge-memory.mjs: GET /__memory answers the bytes of every
// WebAssembly memory the isolate instantiated (the kernel's linear memory), which the package does not expose.
// The example's objects run in this isolate, so these are the memories their caches live in.
//
// Probes: a `debugger` statement after each stored row the object reads (a `SELECT bytes …` cursor's row,
// once the object has handled it) and after each `KVCache.load`. Without a debugger they do nothing; the bench
// enables one over the inspector during a restart and, paused at each probe, reads the isolate's heap and
// the wasm memory: samples of the whole isolate in the middle of a synchronous load, no garbage collected
// for them.
import worker, { Conversation as ExampleConversation } from 'example-worker'; // examples/worker/worker.js (an alias of bench/edge-memory.mjs's bundle)
import { KVCache } from 'wasm-attention';

const memories = new Set();
const instantiate = WebAssembly.instantiate;
WebAssembly.instantiate = async (...args) => {
  const made = await instantiate.apply(WebAssembly, args);
  const instance = made instanceof WebAssembly.Instance ? made : made.instance;
  for (const value of Object.values(instance.exports)) if (value instanceof WebAssembly.Memory) memories.add(value);
  return made;
};
/** The bytes of the isolate's WebAssembly memories now (the bench evaluates it at a probe). */
globalThis.__wasmBytes = () => [...memories].reduce((n, m) => n + m.buffer.byteLength, 0);

function probe() {
  // biome-ignore lint/suspicious/noDebugger: the bench's sampling point (a no-op without a debugger)
  debugger;
}

const load = KVCache.load;
KVCache.load = function probedLoad(...args) {
  const loaded = load.apply(this, args);
  probe();
  return loaded;
};

function* probedRows(cursor) {
  for (const row of cursor) {
    yield row;
    probe();
  }
}

/** The object's state, its SQL's `SELECT bytes` cursors probed after each row. */
function probedState(state) {
  const bound = (target, key) => {
    const value = Reflect.get(target, key);
    return typeof value === 'function' ? value.bind(target) : value;
  };
  const sql = state.storage.sql;
  const exec = (query, ...bindings) => {
    const cursor = sql.exec(query, ...bindings);
    return query.startsWith('SELECT bytes') ? probedRows(cursor) : cursor;
  };
  const probedSql = new Proxy(sql, { get: (target, key) => (key === 'exec' ? exec : bound(target, key)) });
  const storage = new Proxy(state.storage, {
    get: (target, key) => (key === 'sql' ? probedSql : bound(target, key)),
  });
  return new Proxy(state, { get: (target, key) => (key === 'storage' ? storage : bound(target, key)) });
}

export class Conversation extends ExampleConversation {
  constructor(state, env) {
    super(probedState(state), env);
  }
}

export default {
  fetch(request, env) {
    if (new URL(request.url).pathname !== '/__memory') return worker.fetch(request, env);
    return Response.json({ memories: [...memories].map((m) => m.buffer.byteLength) });
  },
};
