// The package inside a user's own worker thread (a model runtime that keeps inference off its main thread):
// loading it, and starting its pool there, leaves that thread's messages to the user's code. The pool's
// script is a module the facade imports too (for its constants); it starts only in the pool's own workers.

import { readFileSync } from 'node:fs';
import { Worker } from 'node:worker_threads';
import { describe, expect, it } from 'vitest';
import { POOL_WORKER } from '../src/attention-worker.js';

const PACKAGE = new URL('../dist/index.js', import.meta.url).href;

// A user's worker: loads the package (2 threads: its pool's workers are started from inside this worker),
// says so, then answers each message with an attend's first output over the message's number.
const USER_WORKER = `
const { parentPort } = require('node:worker_threads');
import(${JSON.stringify(PACKAGE)}).then(async ({ KVCache, init }) => {
  const info = await init({ threads: 2 });
  parentPort.on('message', (x) => {
    const cache = new KVCache({ heads: 2, kvHeads: 1, headDim: 8, maxTokens: 16 });
    const row = new Float32Array(8).fill(x);
    const out = cache.attend(0, new Float32Array(16).fill(x), row, row);
    cache.dispose();
    parentPort.postMessage({ answer: x, out: out[0] });
  });
  parentPort.postMessage({ loaded: info.threads });
});
`;

describe("a user's worker thread", () => {
  it('keeps its messages: the package answers none of them and takes none', async () => {
    const worker = new Worker(USER_WORKER, { eval: true });
    const received: unknown[] = [];
    const next = () =>
      new Promise((resolve, reject) => {
        worker.once('message', resolve);
        worker.once('error', reject);
      });
    worker.on('message', (m) => received.push(m));
    try {
      expect(await next()).toEqual({ loaded: 2 });
      for (const x of [1, 2, 3]) {
        worker.postMessage(x);
        // a fresh cache's one key: its softmax weight is 1, so the output is its value row
        expect(await next()).toEqual({ answer: x, out: x });
      }
      await new Promise((resolve) => setTimeout(resolve, 100)); // anything else it would send
      expect(received).toEqual([{ loaded: 2 }, ...[1, 2, 3].map((x) => ({ answer: x, out: x }))]);
    } finally {
      await worker.terminate();
    }
  }, 20_000);

  it("the pool's Web Workers carry the mark: the name written out where they are made is POOL_WORKER", () => {
    // written as a literal for bundlers (threads.ts), so this is what ties it to the worker script's check
    const source = readFileSync(new URL('../src/threads.ts', import.meta.url), 'utf8');
    const names = [
      ...source.matchAll(/= new Worker\(new URL\('\.\/attention-worker\.js', import\.meta\.url\), \{[^}]*\}/g),
    ].map((m) => /name: '([^']*)'/.exec(m[0])?.[1]);
    expect(names).toEqual([POOL_WORKER, POOL_WORKER]);
  });
});
