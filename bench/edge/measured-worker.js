// @ts-nocheck: wraps the example, which is plain JavaScript (examples/ is not type-checked)
// The example Worker with one route more, for bench/edge-memory.mjs: GET /__memory answers the bytes of every
// WebAssembly memory the isolate instantiated (the kernel's linear memory), which the package does not expose.
// The example's objects run in this isolate, so these are the memories their caches live in.
import worker from 'example-worker'; // examples/worker/worker.js (an alias of bench/edge-memory.mjs's bundle)

export { Conversation } from 'example-worker';

const memories = new Set();
const instantiate = WebAssembly.instantiate;
WebAssembly.instantiate = async (...args) => {
  const made = await instantiate.apply(WebAssembly, args);
  const instance = made instanceof WebAssembly.Instance ? made : made.instance;
  for (const value of Object.values(instance.exports)) if (value instanceof WebAssembly.Memory) memories.add(value);
  return made;
};

export default {
  fetch(request, env) {
    if (new URL(request.url).pathname !== '/__memory') return worker.fetch(request, env);
    return Response.json({ memories: [...memories].map((m) => m.buffer.byteLength) });
  },
};
