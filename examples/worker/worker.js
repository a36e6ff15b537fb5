// A Cloudflare Worker that serves attention over HTTP for a conversation. Each conversation is a Durable
// Object whose storage holds its KV cache between requests, as the bytes of `cache.save()`.
//
//   POST   /conversations/:id/attend   {"q": [...], "k": [...], "v": [...]}   → {"length", "out": [...]}
//   GET    /conversations/:id                                                → {"length"}
//   DELETE /conversations/:id                                                → {"length": 0}
//
// q holds T tokens of [heads][headDim] numbers, k and v the same T tokens of [kvHeads][headDim]: the
// tokens are appended to the conversation's cache and attended causally over everything it holds.
// Bad requests (malformed JSON, wrong sizes) answer 400 with a message and leave the stored state as it was.
//
// `import … from 'wasm-attention'` resolves to the package's `workerd` entry under wrangler, which
// imports the .wasm files as modules (Workers may not compile WebAssembly from bytes).
import { init, KVCache } from 'wasm-attention';

export const CONFIG = { layers: 1, heads: 4, kvHeads: 2, headDim: 16, maxTokens: 256 };

const json = (body, status = 200) => Response.json(body, { status });
const badRequest = (message) => json({ error: message }, 400);

export default {
  async fetch(request, env) {
    const match = /^\/conversations\/([\w-]{1,64})(\/attend)?$/.exec(new URL(request.url).pathname);
    if (!match) return json({ error: 'not found: use /conversations/:id or /conversations/:id/attend' }, 404);
    const stub = env.CONVERSATIONS.get(env.CONVERSATIONS.idFromName(match[1]));
    return stub.fetch(request);
  },
};

export class Conversation {
  constructor(state) {
    this.storage = state.storage;
  }

  async fetch(request) {
    await init();
    const attend = new URL(request.url).pathname.endsWith('/attend');
    const saved = await this.storage.get('cache');
    if (!attend) {
      if (request.method === 'GET') return json({ length: saved ? this.#withCache(saved, (c) => c.length) : 0 });
      if (request.method === 'DELETE') { await this.storage.delete('cache'); return json({ length: 0 }); }
      return json({ error: `method ${request.method} not allowed here` }, 405);
    }
    if (request.method !== 'POST') return json({ error: 'POST a JSON body {"q", "k", "v"} to /attend' }, 405);

    let body;
    try {
      body = JSON.parse(await request.text());
    } catch (error) {
      return badRequest(`malformed JSON: ${error.message}`);
    }
    if (body === null || typeof body !== 'object' || Array.isArray(body)) return badRequest('the body must be a JSON object {"q", "k", "v"}');
    const tensors = {};
    for (const name of ['q', 'k', 'v']) {
      const value = body[name];
      if (!Array.isArray(value) || !value.every((x) => typeof x === 'number' && Number.isFinite(x))) {
        return badRequest(`"${name}" must be an array of finite numbers`);
      }
      tensors[name] = Float32Array.from(value);
    }
    const { heads, kvHeads, headDim } = CONFIG;
    const tokens = tensors.q.length / (heads * headDim);
    if (!Number.isInteger(tokens) || tokens < 1) {
      return badRequest(`"q" must hold T tokens of ${heads} heads × ${headDim} numbers (a multiple of ${heads * headDim}), got ${tensors.q.length}`);
    }
    for (const name of ['k', 'v']) {
      if (tensors[name].length !== tokens * kvHeads * headDim) {
        return badRequest(`"${name}" must hold the same ${tokens} tokens of ${kvHeads} kv heads × ${headDim} numbers ` +
          `(${tokens * kvHeads * headDim}), got ${tensors[name].length}`);
      }
    }

    const cache = saved ? KVCache.load(saved) : new KVCache(CONFIG);
    try {
      const out = cache.attend(0, tensors.q, tensors.k, tensors.v);
      await this.storage.put('cache', cache.save());
      return json({ length: cache.length, out: Array.from(out) });
    } catch (error) {
      // the package's TypeError/RangeError (e.g. the cache is full) name what was wrong; the stored bytes were not replaced
      if (error instanceof RangeError || error instanceof TypeError) return badRequest(error.message);
      throw error;
    } finally {
      cache.dispose();
    }
  }

  #withCache(bytes, use) {
    const cache = KVCache.load(bytes);
    try {
      return use(cache);
    } finally {
      cache.dispose();
    }
  }
}
