// Real HTTP requests against examples/worker/worker.js running in workerd: a conversation's prefill and
// decode steps checked against float64, its cache kept between requests, and bad requests answered 400
// with a clear message and the stored state untouched.
import { referenceAttention } from '../support/reference.js';
import { Rng } from '../support/rng.js';

/** Deterministic inputs in [-1, 1). @param {number} seed @param {number} n */
const random = (seed, n) => new Rng(seed).uniform(n);

/** The cache options the runner gives the example (its CACHE_OPTIONS variable): one layer, so tensors are [T][…]. */
export const EXAMPLE_WORKER_SHAPE = { layers: 1, heads: 4, kvHeads: 2, headDim: 16, maxTokens: 256 };
const SHAPE = EXAMPLE_WORKER_SHAPE;
const ROW = 4 * 16,
  KV_ROW = 2 * 16;

export async function exerciseWorker(base) {
  const checks = [];
  const check = (name, ok, detail) => checks.push({ name, ok: !!ok, detail });
  const call = async (method, path, body) => {
    const response = await fetch(new URL(path, base), {
      method,
      body: typeof body === 'string' ? body : body && JSON.stringify(body),
      headers: { 'content-type': 'application/json' },
    });
    return { status: response.status, body: await response.json() };
  };
  const N = 12,
    Q = random(11, N * ROW),
    K = random(12, N * KV_ROW),
    V = random(13, N * KV_ROW);
  const tokens = (from, to) => ({
    q: Array.from(Q.subarray(from * ROW, to * ROW)),
    k: Array.from(K.subarray(from * KV_ROW, to * KV_ROW)),
    v: Array.from(V.subarray(from * KV_ROW, to * KV_ROW)),
  });
  const expect = (from, to) =>
    referenceAttention(Q.subarray(from * ROW, to * ROW), K.subarray(0, to * KV_ROW), V.subarray(0, to * KV_ROW), SHAPE);
  const error = (out, ref) =>
    out.reduce((m, x, i) => Math.max(m, Math.abs(x - ref[i])), out.length === ref.length ? 0 : Infinity);
  const id = `chat-${Date.now()}`;

  let r = await call('GET', `/conversations/${id}`);
  check('a new conversation is empty', r.status === 200 && r.body.length === 0, JSON.stringify(r.body));

  r = await call('POST', `/conversations/${id}/attend`, tokens(0, 6));
  check(
    'prefill of 6 tokens matches float64',
    r.status === 200 && r.body.length === 6 && error(r.body.out, expect(0, 6)) < 2e-5,
    `status ${r.status}, length ${r.body.length}, max error ${r.body.out && error(r.body.out, expect(0, 6)).toExponential(2)}`,
  );
  let worst = 0,
    ok = true;
  for (let i = 6; i < 9; i++) {
    r = await call('POST', `/conversations/${id}/attend`, tokens(i, i + 1));
    ok &&= r.status === 200 && r.body.length === i + 1;
    worst = Math.max(worst, r.body.out ? error(r.body.out, expect(i, i + 1)) : Infinity);
  }
  check(
    'decode steps continue from the stored cache (save/load between requests)',
    ok && worst < 2e-5,
    `length ${r.body.length}, max error ${worst.toExponential(2)}`,
  );

  const bad = [
    ['malformed JSON', '{"q": [1, 2', /malformed JSON/],
    ['not an object', '[1, 2, 3]', /JSON object/],
    [
      'q of the wrong size',
      { ...tokens(9, 10), q: Array(ROW + 1).fill(0) },
      /"q" must hold \[layers=1\]\[T\]\[heads=4\]\[headDim=16\] numbers.*got 65/,
    ],
    [
      'k for another token count',
      { ...tokens(9, 10), k: Array(KV_ROW * 2).fill(0) },
      /"k" must hold the same 1 tokens.*got 64/,
    ],
    ['v not numbers', { ...tokens(9, 10), v: Array(KV_ROW).fill('x') }, /"v" must be an array of finite numbers/],
  ];
  for (const [what, body, message] of bad) {
    r = await call('POST', `/conversations/${id}/attend`, body);
    const after = await call('GET', `/conversations/${id}`);
    check(
      `${what}: 400 with a clear message, state untouched`,
      r.status === 400 && message.test(r.body.error) && after.body.length === 9,
      `${r.status} ${JSON.stringify(r.body.error)}; length after ${after.body.length}`,
    );
  }

  r = await call('POST', `/conversations/${id}/attend`, tokens(9, 12));
  check(
    'after the bad requests, the next 3 tokens still match float64',
    r.status === 200 && r.body.length === 12 && error(r.body.out, expect(9, 12)) < 2e-5,
    `length ${r.body.length}, max error ${r.body.out && error(r.body.out, expect(9, 12)).toExponential(2)}`,
  );
  r = await call('GET', `/conversations/other-${id}`);
  check('conversations are separate', r.body.length === 0, JSON.stringify(r.body));
  r = await call('GET', '/nowhere');
  check('unknown paths are 404', r.status === 404, JSON.stringify(r.body));
  r = await call('DELETE', `/conversations/${id}`);
  const cleared = await call('GET', `/conversations/${id}`);
  check('DELETE clears the conversation', r.status === 200 && cleared.body.length === 0, JSON.stringify(cleared.body));
  return { ok: checks.every((c) => c.ok), checks };
}
