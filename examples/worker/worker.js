// A Cloudflare Worker that serves attention over HTTP for conversations. Each conversation is a Durable
// Object that keeps its live KVCache in memory between requests and stores it in its SQLite storage
// page by page, so a restarted (evicted) object continues exactly where it stood.
//
//   POST   /conversations/:id/attend   q, k, v of T tokens   → the attention output and the new length
//   POST   /conversations/:id/append   k, v of T tokens      → {"length"}: stored without attending (a prefill
//                                                              computed elsewhere; 8,192 tokens in seconds)
//   GET    /conversations/:id                                → {"length", "pieces", "storedBytes", "largestRowBytes",
//                                                              "cacheBytes", "sharesPrompt", "textLength"}
//   DELETE /conversations/:id                                → {"length": 0}
//   PUT    /system-prompt              q, k, v of P tokens   → {"length": P}: conversations started from
//                                                              now on begin with these P tokens
//   GET    /system-prompt                                    → its cache.save() bytes (204 when none)
//   POST   /conversations/:id/generate  {"text", "maxNewTokens"} → text from the tiny model, streamed as
//                                                              server-sent events (below)
//
// q holds [layers][T][heads][headDim] numbers, k and v the same T tokens as [layers][T][kvHeads][headDim]:
// the tokens are appended to every layer of the conversation's cache and attended causally over all it
// holds. (A real model attends layer by layer between its other blocks; here one request carries every
// layer's q/k/v of its tokens, so each request is one step of the conversation.) The body is either
//   - binary (`content-type: application/octet-stream`): q, then k, then v, as little-endian float32
//     bytes; the answer is the output as little-endian float32 bytes, with the length in `x-length`;
//   - JSON ({"q": [...], "k": [...], "v": [...]}): for small requests; the answer is {"length", "out"}.
// Every answer carries `x-written-bytes`: the bytes this request wrote to storage.
// Bad requests (malformed bodies, wrong sizes, numbers beyond float32's range, a full cache) answer 400 with a
// message; a request that fails anywhere else (e.g. storage) answers 500. Either way it changes nothing: each
// request works on a fork() of the live cache, which replaces the live cache only once storage committed.
//
// Requests to one conversation are applied one at a time in the order they arrive: each takes its place in
// the object's queue before it awaits anything (a Durable Object lets other requests in while one awaits
// its body), so none is lost and every answer's length is distinct.
//
// Storage: one row per 64 positions (a page: every layer's K/V of those tokens, from `cache.save({ from,
// to })`), plus one row per token of the last, incomplete page (`cache.save({ from })`); when a page
// fills, its row replaces its per-token rows. A request thus writes its own tokens, and one page every 64
// tokens, whatever the conversation's length. On start the object loads the rows in order
// (`KVCache.load(pieces)`, about 2 MB of rows at a time onto the previous batch's cache, each row's bytes
// freed once loaded, so the rows of a full conversation never sit in memory beside it), which checks that
// they form one history. With a window (`CACHE_OPTIONS`), a request longer than the ring has room for may
// overwrite positions a page's row needs before it is stored: that page keeps its rows and the request's
// row covers the rest, or, when even the request's first positions are gone, one row of the whole cache
// (`save()`: the ring, at most maxTokens positions) replaces every row.
//
// A system prompt is prefilled once, by its own object (named ~system-prompt, which no conversation id can
// be), and each new conversation starts from it: the first request of an empty conversation fetches the
// prompt's saved bytes (or learns it already has them), and the conversation's cache is a fork() of one
// cache of the prompt kept per isolate, so conversations running in one isolate share the prompt's pages
// in memory. Each conversation still stores its whole history in its own rows (its first request writes
// the prompt's pages, and its own rows start where the prompt ends), so it restores on its own whatever
// happens to the prompt later; while the prompt stays the same, a restarted conversation loads only its
// own rows onto the isolate's prompt (`KVCache.load(pieces, { base })`) and shares its pages again.
//
// Text: /generate runs the tiny byte-level model of examples/model/tiny, whose weights are in the bundle
// (wrangler.toml's Data rule). A conversation's text has its own cache of the model's shape, apart from
// /attend's: a fork() of one cache per isolate that holds the shared system prompt (the BOS token and the
// `SYSTEM_TEXT` variable's UTF-8 bytes), continued turn by turn: each request appends the text's bytes to
// the conversation's tokens and generates up to maxNewTokens greedy tokens after them, streamed as they
// come, one event per token (`data: {"id", "text"}`), then `event: done` (`data: {"tokens", "length",
// "matmul"}`, the last "wasm" or "js": what ran the runner's linear layers).
// It works on a fork of the conversation's text cache, which replaces it once the whole answer was sent
// and the tokens were stored (one row: the token ids; a restarted object feeds them again, which gives
// the same bits as the cache it lost). Requests take their place in the same queue as /attend's, and the
// next one starts only when a generation ended, so concurrent ones run in arrival order.
//
// `import … from 'wasm-attention'` resolves to the package's `workerd` entry under wrangler, which
// imports the .wasm files as modules (Workers may not compile WebAssembly from bytes). The model runner's
// matmuls (examples/model/wasm, built by `npm run build`) come the same way; without them it would
// compute in JavaScript, the same tokens more slowly.
import { init, KVCache } from 'wasm-attention';
import { modelFromBytes } from '../model/index.mjs';
import matmulModule from '../model/wasm/matmul.wasm';
import modelConfig from '../model/tiny/config.json';
import modelWeights from '../model/tiny/model.safetensors';
import { LLAMA_3_2_1B, LOAD_BATCH_BYTES, PAGE } from './config.js';

const json = (body, status = 200, headers = {}) => Response.json(body, { status, headers });
const badRequest = (message) => json({ error: message }, 400);
const LITTLE_ENDIAN = new Uint8Array(Float32Array.of(1).buffer)[3] === 0x3f;
const SYSTEM_PROMPT = '~system-prompt';
const objectNamed = (env, name) => env.CONVERSATIONS.get(env.CONVERSATIONS.idFromName(name));

/** This isolate's cache of the system prompt, which conversations fork: { key, cache } (key: its save's CRC and size). */
let sharedPrompt;

/** The tiny model, loaded once per isolate (a promise). */
let tinyModel;
const theModel = () =>
  (tinyModel ??= modelFromBytes(modelConfig, new Uint8Array(modelWeights), { matmul: matmulModule }));
/** This isolate's cache of the text system prompt, which conversations' text forks: { ids, cache }. */
let sharedTextPrompt;
/** A streamed answer → the promise of its end (the queue waits for it). */
const streaming = new WeakMap();

export default {
  async fetch(request, env) {
    const path = new URL(request.url).pathname;
    if (path === '/system-prompt') return objectNamed(env, SYSTEM_PROMPT).fetch(request);
    const match = /^\/conversations\/([\w-]{1,64})(\/attend|\/append|\/generate)?$/.exec(path);
    if (!match) {
      const routes =
        '/conversations/:id, /conversations/:id/attend, /conversations/:id/append, /conversations/:id/generate or /system-prompt';
      return json({ error: `not found: use ${routes}` }, 404);
    }
    return objectNamed(env, match[1]).fetch(request);
  },
};

export class Conversation {
  /** the cache's options: the `CACHE_OPTIONS` variable (JSON) if set, else Llama-3.2-1B's */
  #options;
  #sql;
  #storage;
  /** the live cache, loaded from storage once, when the object starts */
  #cache;
  /** why the stored conversation could not be loaded (every request then answers 500 until a DELETE) */
  #broken;
  /** the tail of the queue of requests */
  #queue = Promise.resolve();
  /** the system prompt this conversation began with, { key, length } (its rows below `length` are the prompt's) */
  #prompt;
  /** whether the live cache shares the isolate's prompt pages (a fork of it) */
  #sharesPrompt = false;

  #env;
  /** the system prompt's object: its save(), made once per prompt */
  #promptBytes;
  /** the conversation's text: { ids, cache } (the cache holds all the ids but the last), once used */
  #text;

  constructor(state, env) {
    this.#env = env;
    this.#options = env.CACHE_OPTIONS ? JSON.parse(env.CACHE_OPTIONS) : LLAMA_3_2_1B;
    this.#storage = state.storage;
    this.#sql = state.storage.sql;
    state.blockConcurrencyWhile(async () => {
      await init();
      this.#sql.exec('CREATE TABLE IF NOT EXISTS pieces (start INTEGER PRIMARY KEY, bytes BLOB NOT NULL)');
      this.#sql.exec('CREATE TABLE IF NOT EXISTS prompt (key TEXT NOT NULL, length INTEGER NOT NULL)');
      this.#sql.exec('CREATE TABLE IF NOT EXISTS text (ids TEXT NOT NULL)');
      this.#prompt = this.#sql.exec('SELECT key, length FROM prompt').toArray()[0];
      const rowsFrom = (start) => this.#sql.exec('SELECT count(*) AS n FROM pieces WHERE start >= ?', start).one().n;
      try {
        // on the isolate's copy of the prompt it began with, if that is still the prompt: only its own rows
        const own = this.#prompt ? rowsFrom(this.#prompt.length) : 0;
        const prompt = own ? await this.#forkOfPrompt().catch(() => undefined) : undefined;
        if (prompt?.key === this.#prompt?.key) {
          try {
            this.#cache = this.#loadRows(this.#prompt.length, prompt.cache);
            this.#sharesPrompt = true;
          } catch {
            // (rows that do not continue the prompt: the whole history from the rows, below)
          }
        }
        prompt?.cache.dispose();
        this.#cache ??= rowsFrom(0) ? this.#loadRows(0) : new KVCache(this.#options);
      } catch (error) {
        this.#broken = error.message;
      }
    });
  }

  /**
   * A cache of the stored rows from position `start` on (onto `base`, which stays as it was, when given),
   * read a few at a time and loaded batch by batch onto the previous batch's cache: a full conversation's
   * rows (82 MiB at the default shape) never sit in memory beside the cache they fill. Each row's bytes are
   * freed as soon as they are loaded (its buffer detached): garbage waiting for a collection counts against
   * the isolate's memory limit, and V8 left tens of MB of loaded rows uncollected.
   */
  #loadRows(start, base) {
    let cache = base;
    let batch = [];
    let batchBytes = 0;
    const flush = () => {
      const loaded = KVCache.load(batch, cache ? { base: cache } : undefined);
      if (cache !== base) cache.dispose();
      cache = loaded;
      for (const row of batch) row.buffer.transfer(0);
      batch = [];
      batchBytes = 0;
    };
    try {
      for (const row of this.#sql.exec('SELECT bytes FROM pieces WHERE start >= ? ORDER BY start', start)) {
        batch.push(new Uint8Array(row.bytes));
        batchBytes += row.bytes.byteLength;
        if (batchBytes >= LOAD_BATCH_BYTES) flush();
      }
      if (batch.length) flush();
    } catch (error) {
      if (cache !== base) cache?.dispose();
      throw error;
    }
    return cache;
  }

  fetch(request) {
    // take a place in the queue now, in arrival order; the body streams in meanwhile
    const body = request.method === 'POST' || request.method === 'PUT' ? readBody(request) : undefined;
    const turn = this.#queue.then(() => this.#handle(request, body));
    // a streamed answer holds the queue until its end
    this.#queue = turn.then((response) => streaming.get(response)).catch(() => {});
    return turn;
  }

  async #handle(request, body) {
    const url = new URL(request.url);
    if (url.pathname === '/system-prompt') return this.#systemPrompt(request, body, url.searchParams.get('known'));
    const append = url.pathname.endsWith('/append');
    const attend = append || url.pathname.endsWith('/attend');
    if (!attend && request.method === 'DELETE') {
      this.#forget();
      return json({ length: 0 });
    }
    if (url.pathname.endsWith('/generate')) {
      if (request.method !== 'POST') return json({ error: 'POST {"text", "maxNewTokens"} to /generate' }, 405);
      return this.#generate(await body);
    }
    if (this.#broken) return json({ error: `the stored conversation cannot be loaded: ${this.#broken}` }, 500);
    if (!attend) {
      if (request.method !== 'GET') return json({ error: `method ${request.method} not allowed here` }, 405);
      const stored = this.#sql
        .exec(
          'SELECT count(*) AS pieces, coalesce(sum(length(bytes)), 0) AS bytes, coalesce(max(length(bytes)), 0) AS largest FROM pieces',
        )
        .one();
      return json({
        length: this.#cache.length,
        pieces: stored.pieces,
        storedBytes: stored.bytes,
        largestRowBytes: stored.largest,
        sharesPrompt: this.#sharesPrompt,
        cacheBytes: this.#cache.byteLength,
        textLength:
          this.#text?.ids.length ?? JSON.parse(this.#sql.exec('SELECT ids FROM text').toArray()[0]?.ids ?? '[]').length,
      });
    }
    if (request.method !== 'POST') {
      const what = append ? 'k, v (JSON or binary float32) to /append' : 'q, k, v (JSON or binary float32) to /attend';
      return json({ error: `POST ${what}` }, 405);
    }

    const parsed = tensors(await body, this.#options, append ? ['k', 'v'] : ['q', 'k', 'v']);
    if (typeof parsed === 'string') return badRequest(parsed);
    // an empty conversation begins with the system prompt, if there is one
    const prompt = this.#cache.length === 0 ? await this.#forkOfPrompt() : undefined;
    return this.#attend(
      parsed,
      prompt && { cache: prompt.cache, prompt: { key: prompt.key, length: prompt.cache.length } },
    );
  }

  /**
   * Appends the parsed tokens to every layer of `next`, stores what they add in one transaction, and only
   * then makes `next` the live cache: a request that fails at any point changes nothing, in memory or in
   * storage. `next` is a fork of the live cache, or, with `start`, a new beginning whose rows replace every
   * stored row: `start.cache` (an empty cache, or a fork of the system prompt, `start.prompt`).
   */
  #attend(parsed, start) {
    const { layers, heads, headDim } = { layers: 1, ...this.#options };
    const next = start?.cache ?? this.#cache.fork();
    const before = next.length;
    // an append (no q) only stores the tokens' K/V: no output
    const out = parsed.q && new Float32Array(parsed.tokens * layers * heads * headDim);
    let stored; // { written, whole } once storage committed the request's rows
    try {
      // the prompt's rows first, before the request's tokens can push its first positions out of a window's ring
      const rows = start?.prompt ? this.#rows(next, { from: 0, floor: 0, fresh: true }) : [];
      try {
        for (let l = 0; l < layers; l++) {
          const at = (tensor) => tensor.subarray((l * tensor.length) / layers, ((l + 1) * tensor.length) / layers);
          if (out) next.attend(l, at(parsed.q), at(parsed.k), at(parsed.v), at(out));
          else next.append(l, at(parsed.k), at(parsed.v));
        }
      } catch (error) {
        // the package's TypeError/RangeError (e.g. the cache is full) name what was wrong with the request
        if (error instanceof RangeError || error instanceof TypeError) return badRequest(error.message);
        throw error;
      }
      const floor = start ? (start.prompt?.length ?? 0) : (this.#prompt?.length ?? 0);
      rows.push(...this.#rows(next, { from: before, floor, fresh: Boolean(start) }));
      stored = this.#store(rows, start);
    } catch (error) {
      return json({ error: `the request failed and changed nothing: ${error.message}` }, 500);
    } finally {
      if (!stored) next.dispose();
    }
    // committed: the request's cache becomes the conversation's
    this.#cache.dispose();
    this.#cache = next;
    this.#promptBytes = undefined;
    if (start) this.#sharesPrompt = Boolean(start.prompt);
    // rows below the prompt's length hold the prompt, unless one row of the whole cache replaced them all
    if (start || stored.whole) this.#prompt = stored.whole ? undefined : start.prompt;
    const headers = { 'x-length': String(next.length), 'x-written-bytes': String(stored.written) };
    if (!out) return json({ length: next.length }, 200, headers);
    if (parsed.binary) {
      return new Response(littleEndianBytes(out), {
        headers: { ...headers, 'content-type': 'application/octet-stream' },
      });
    }
    return json({ length: next.length, out: Array.from(out) }, 200, headers);
  }

  /** Empties the conversation: no rows, an empty cache. */
  #forget() {
    this.#promptBytes = undefined;
    this.#prompt = undefined;
    this.#sharesPrompt = false;
    this.#sql.exec('DELETE FROM pieces');
    this.#sql.exec('DELETE FROM prompt');
    this.#sql.exec('DELETE FROM text');
    this.#text?.cache.dispose();
    this.#text = undefined;
    this.#cache?.dispose();
    this.#cache = new KVCache(this.#options);
    this.#broken = undefined;
  }

  /**
   * Continues the conversation's text by the request's text and up to maxNewTokens tokens of the tiny
   * model, streamed as server-sent events; on a fork of its text cache, which becomes the conversation's
   * only when the answer was sent whole and the tokens stored.
   */
  async #generate(received) {
    const asked = generateRequest(received);
    if (typeof asked === 'string') return badRequest(asked);
    const model = await theModel();
    const text = await this.#textState();
    const ids = [...text.ids, ...new TextEncoder().encode(asked.text)];
    const context = model.config.max_position_embeddings;
    if (ids.length > context) {
      return badRequest(
        `the conversation's ${text.ids.length} tokens and the text's ${ids.length - text.ids.length} bytes exceed the model's context (${context} tokens)`,
      );
    }
    const next = text.cache.fork();
    const { readable, writable } = new TransformStream();
    const writer = writable.getWriter();
    const encoder = new TextEncoder();
    const decoder = new TextDecoder();
    const send = (event, data) =>
      writer.write(encoder.encode(`${event ? `event: ${event}\n` : ''}data: ${JSON.stringify(data)}\n\n`));
    const end = (async () => {
      let committed = false;
      try {
        const tokens = await model.generate(ids, {
          maxNewTokens: asked.maxNewTokens,
          cache: next,
          stopTokens: [model.config.eos_token_id].flat(),
          onToken: (id) =>
            send(undefined, { id, text: id < 256 ? decoder.decode(Uint8Array.of(id), { stream: true }) : '' }),
        });
        const all = [...ids, ...tokens];
        this.#storage.transactionSync(() => {
          this.#sql.exec('DELETE FROM text');
          this.#sql.exec('INSERT INTO text (ids) VALUES (?)', JSON.stringify(all));
        });
        committed = true;
        text.cache.dispose();
        this.#text = { ids: all, cache: next };
        await send('done', { tokens, length: all.length, matmul: model.info.matmul });
        await writer.close();
      } catch (error) {
        if (!committed) next.dispose();
        await send('error', { error: `the generation failed and changed nothing: ${error.message}` }).catch(() => {});
        await writer.close().catch(() => {});
      }
    })();
    const response = new Response(readable, {
      headers: { 'content-type': 'text/event-stream; charset=utf-8', 'cache-control': 'no-store' },
    });
    streaming.set(response, end);
    return response;
  }

  /**
   * The conversation's text, { ids, cache }: as it stands, or from its stored ids (fed to a fork of the
   * isolate's text system prompt when they begin with it), or the system prompt alone.
   */
  async #textState() {
    if (this.#text) return this.#text;
    const model = await theModel();
    const systemIds = [model.config.bos_token_id, ...new TextEncoder().encode(this.#env.SYSTEM_TEXT ?? '')];
    if (sharedTextPrompt?.ids.join() !== systemIds.join()) {
      const cache = model.createCache();
      model.feed(cache, systemIds, 0, systemIds.length - 1, null, 0);
      sharedTextPrompt?.cache.dispose(); // its pages stay with the conversations forked from it
      sharedTextPrompt = { ids: systemIds, cache };
    }
    const row = this.#sql.exec('SELECT ids FROM text').toArray()[0];
    const ids = row ? JSON.parse(row.ids) : systemIds;
    const onPrompt = ids.length >= systemIds.length && systemIds.every((id, i) => ids[i] === id);
    const cache = onPrompt ? sharedTextPrompt.cache.fork() : model.createCache();
    model.feed(cache, ids, cache.length, ids.length - 1 - cache.length, null, 0);
    this.#text = { ids, cache };
    return this.#text;
  }

  /**
   * The system prompt's own object: PUT replaces the prompt with the body's tokens, GET answers its saved
   * bytes (304 when they are what the caller already has, `?known=<key>`; 204 when there is none).
   */
  #systemPrompt(request, body, known) {
    if (this.#broken) return json({ error: `the stored system prompt cannot be loaded: ${this.#broken}` }, 500);
    if (request.method === 'GET') {
      if (this.#cache.length === 0) return new Response(null, { status: 204 });
      this.#promptBytes ??= this.#cache.save();
      const bytes = this.#promptBytes;
      const key = promptKey(bytes);
      if (key === known) return new Response(null, { status: 304, headers: { 'x-key': key } });
      return new Response(bytes, { headers: { 'x-key': key, 'content-type': 'application/octet-stream' } });
    }
    if (request.method !== 'PUT') return json({ error: 'PUT q, k, v of the prompt, or GET its saved bytes' }, 405);
    return body.then((received) => {
      const parsed = tensors(received, this.#options);
      if (typeof parsed === 'string') return badRequest(parsed);
      const { maxTokens } = this.#options;
      if (parsed.tokens > maxTokens)
        return badRequest(`the prompt must fit in maxTokens (${maxTokens}), got ${parsed.tokens} tokens`);
      return this.#attend(parsed, { cache: new KVCache(this.#options) });
    });
  }

  /**
   * A fork of the current system prompt, { key, cache }, or undefined when there is none. The isolate keeps
   * one copy of the prompt, fetched from its object when it changed; the fork is taken in the same turn the
   * copy is read, so another conversation replacing (and disposing) the copy can never do it under a caller.
   */
  async #forkOfPrompt() {
    const known = sharedPrompt ? `?known=${sharedPrompt.key}` : '';
    const response = await objectNamed(this.#env, SYSTEM_PROMPT).fetch(`https://prompt/system-prompt${known}`);
    if (response.status === 204) return undefined;
    if (response.status === 200) {
      const bytes = new Uint8Array(await response.arrayBuffer());
      const replaced = sharedPrompt;
      sharedPrompt = { key: promptKey(bytes), cache: KVCache.load(bytes) };
      bytes.buffer.transfer(0); // freed now rather than by a later collection, as #loadRows frees its rows
      replaced?.cache.dispose(); // its pages stay with the conversations forked from it
    } else if (response.status !== 304) {
      throw new Error(`the system prompt could not be fetched: ${response.status} ${await response.text()}`);
    }
    return { key: sharedPrompt.key, cache: sharedPrompt.cache.fork() };
  }

  /**
   * The rows that store `cache`'s positions from `from` on, the rows before `from` being stored already
   * (none when `fresh`): each page of 64 positions the cache completes as one row, in place of that page's
   * rows, then one row for the rest. Rows never straddle `floor` (the end of the system prompt), so a
   * conversation's own rows load onto the prompt. A row is { start, end, bytes }: it replaces the rows
   * starting in start … end − 1.
   *
   * With a window, the ring may already have overwritten what a page's row needs (a request longer than
   * the space left in the ring): that page keeps its rows and the rest's row starts where they end; when
   * even the rest's first positions are gone, one row of the whole cache replaces every row (`whole`).
   */
  #rows(cache, { from, floor, fresh }) {
    const rows = [];
    let stored = from; // the rows so far, stored or listed here, reach this position
    /** where the first stored row at or after position p starts (before `from`), or `stored` */
    const boundaryFrom = (p) =>
      (fresh
        ? undefined
        : this.#sql.exec('SELECT min(start) AS start FROM pieces WHERE start >= ? AND start < ?', p, from).one()
            .start) ?? stored;
    for (let page = Math.floor(from / PAGE) * PAGE; page + PAGE <= cache.length; page += PAGE) {
      const start = boundaryFrom(Math.max(page, floor));
      try {
        rows.push({ start, end: page + PAGE, bytes: cache.save({ from: start, to: page + PAGE }) });
        stored = page + PAGE;
      } catch (error) {
        if (!(error instanceof RangeError)) throw error; // (only a window's ring refuses a page)
      }
    }
    if (stored === cache.length) return rows;
    try {
      rows.push({ start: stored, end: cache.length, bytes: cache.save({ from: stored }) });
    } catch (error) {
      if (!(error instanceof RangeError)) throw error;
      return [{ start: 0, end: cache.length, bytes: cache.save(), whole: true }];
    }
    return rows;
  }

  /** Writes the rows in one transaction (with `start`, in place of every stored row); returns { written, whole }. */
  #store(rows, start) {
    const whole = rows.find((row) => row.whole);
    let written = 0;
    this.#storage.transactionSync(() => {
      if (start || whole) {
        this.#sql.exec('DELETE FROM pieces');
        this.#sql.exec('DELETE FROM prompt');
      }
      if (start?.prompt && !whole)
        this.#sql.exec('INSERT INTO prompt (key, length) VALUES (?, ?)', start.prompt.key, start.prompt.length);
      for (const row of whole ? [whole] : rows) {
        this.#sql.exec('DELETE FROM pieces WHERE start > ? AND start < ?', row.start, row.end);
        this.#sql.exec('INSERT OR REPLACE INTO pieces (start, bytes) VALUES (?, ?)', row.start, row.bytes.buffer);
        written += row.bytes.length;
      }
    });
    return { written, whole: Boolean(whole) };
  }
}

/** The body parsed as a JSON object, or a message saying what is wrong with it (`fields`: what it should hold). */
function jsonObject(bytes, fields) {
  let body;
  try {
    body = JSON.parse(new TextDecoder().decode(bytes));
  } catch (error) {
    return `malformed JSON: ${error.message}`;
  }
  if (body === null || typeof body !== 'object' || Array.isArray(body))
    return `the body must be a JSON object ${fields}`;
  return body;
}

/** {"text", "maxNewTokens"} from a /generate body, or a message saying what is wrong with it. */
function generateRequest({ bytes }) {
  const body = jsonObject(bytes, '{"text", "maxNewTokens"}');
  if (typeof body === 'string') return body;
  if (typeof body.text !== 'string') return `"text" must be a string, got ${JSON.stringify(body.text)}`;
  const { maxNewTokens } = body;
  if (!(Number.isInteger(maxNewTokens) && maxNewTokens >= 1 && maxNewTokens <= 256))
    return `"maxNewTokens" must be an integer from 1 to 256, got ${JSON.stringify(maxNewTokens)}`;
  return { text: body.text, maxNewTokens };
}

/** What identifies a saved prompt: its stored CRC-32 and its size. */
function promptKey(bytes) {
  return `${new DataView(bytes.buffer, bytes.byteOffset + bytes.length - 4).getUint32(0, true)}-${bytes.length}`;
}

/** The body as bytes and its kind, read as soon as the request arrives. */
async function readBody(request) {
  const type = request.headers.get('content-type') ?? '';
  return { binary: type.startsWith('application/octet-stream'), bytes: await request.arrayBuffer() };
}

/**
 * The tensors `names` (q, k, v for /attend; k, v for /append) as Float32Arrays of T tokens for every layer,
 * or a message saying what is wrong with the body.
 */
function tensors({ binary, bytes }, options, names = ['q', 'k', 'v']) {
  const { layers = 1, heads, kvHeads = heads, headDim } = options;
  const widths = { q: layers * heads * headDim, k: layers * kvHeads * headDim, v: layers * kvHeads * headDim };
  const [first] = names;
  const perToken = names.reduce((n, name) => n + widths[name], 0);
  if (binary) {
    const floats = bytes.byteLength / 4;
    const tokens = floats / perToken;
    if (!Number.isInteger(tokens) || tokens < 1) {
      const rowHeads = names.length === 3 ? `heads=${heads} + 2 × kvHeads=${kvHeads}` : `2 × kvHeads=${kvHeads}`;
      return (
        `a binary body must hold ${names.join(', ').replace(/, (\w)$/, ' and $1')} of T tokens as little-endian float32: T × ${perToken * 4} bytes ` +
        `([layers=${layers}] × [${rowHeads}] × [headDim=${headDim}] × 4), got ${bytes.byteLength} bytes`
      );
    }
    const all = floats32(bytes);
    for (let i = 0; i < all.length; i++)
      if (!Number.isFinite(all[i])) return `the binary body holds a non-finite number at float ${i}`;
    const parsed = { binary, tokens };
    let at = 0;
    for (const name of names) {
      parsed[name] = all.subarray(at, at + tokens * widths[name]);
      at += tokens * widths[name];
    }
    return parsed;
  }
  const body = jsonObject(bytes, `{${names.map((name) => `"${name}"`).join(', ')}}`);
  if (typeof body === 'string') return body;
  const parsed = { binary };
  for (const name of names) {
    const value = body[name];
    if (!Array.isArray(value) || !value.every((x) => typeof x === 'number'))
      return `"${name}" must be an array of finite numbers`;
    // checked as float32: a double beyond float32's range (such as 1e39) becomes Infinity
    parsed[name] = Float32Array.from(value);
    const bad = parsed[name].findIndex((x) => !Number.isFinite(x));
    if (bad >= 0)
      return `"${name}" must be an array of finite numbers: ${value[bad]} at index ${bad} is beyond float32's range (±3.4e38)`;
  }
  parsed.tokens = parsed[first].length / widths[first];
  if (!Number.isInteger(parsed.tokens) || parsed.tokens < 1) {
    const dims = first === 'q' ? `[heads=${heads}]` : `[kvHeads=${kvHeads}]`;
    return `"${first}" must hold [layers=${layers}][T]${dims}[headDim=${headDim}] numbers (a multiple of ${widths[first]}), got ${parsed[first].length}`;
  }
  for (const name of names.slice(1)) {
    if (parsed[name].length !== parsed.tokens * widths[name]) {
      return (
        `"${name}" must hold the same ${parsed.tokens} tokens as [layers=${layers}][T=${parsed.tokens}][kvHeads=${kvHeads}]` +
        `[headDim=${headDim}] numbers (${parsed.tokens * widths[name]}), got ${parsed[name].length}`
      );
    }
  }
  return parsed;
}

/** Little-endian float32 bytes as a Float32Array (Workers run on little-endian hosts; swapped otherwise). */
function floats32(bytes) {
  if (LITTLE_ENDIAN) return new Float32Array(bytes);
  const view = new DataView(bytes);
  return Float32Array.from({ length: bytes.byteLength / 4 }, (_, i) => view.getFloat32(4 * i, true));
}

function littleEndianBytes(floats) {
  if (LITTLE_ENDIAN) return floats;
  const view = new DataView(new ArrayBuffer(floats.length * 4));
  floats.forEach((x, i) => {
    view.setFloat32(4 * i, x, true);
  });
  return view.buffer;
}
