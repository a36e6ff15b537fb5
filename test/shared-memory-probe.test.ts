// Whether threads can run is found by what they need (API.md, Threads): a shared WebAssembly.Memory sent
// to a worker and written there must be seen written here. Tried once. Where the runtime refuses to send
// it (WebKitGTK 2.50 on a cross-origin isolated page: DataCloneError), 'auto' gets one thread and an
// explicit count is refused with what the engine lacks, not with a hint about headers the page already has.
// The probe is checked with scripted workers for the answers Node cannot give, and for real through init.

import { afterEach, describe, expect, it, vi } from 'vitest';
import { PROBE_MARK, type ProbeWorker, probeSharedMemory, sharedBuffer } from '../src/shared-memory-probe.js';
import { expectRejects } from './support/util.js';

/** A scripted worker: `answer` gets what was posted and answers through `reply` (or throws, as post may). */
function scripted(answer: (message: { probe: WebAssembly.Memory }, reply: (data: unknown) => void) => void) {
  const log = { spawned: 0, terminated: 0 };
  const spawn = (): ProbeWorker => {
    log.spawned++;
    let listener: (data: unknown) => void = () => {};
    return {
      post: (message) =>
        answer(message as { probe: WebAssembly.Memory }, (data) => queueMicrotask(() => listener(data))),
      onMessage: (l) => {
        listener = l;
      },
      onError: () => {},
      terminate: () => {
        log.terminated++;
      },
    };
  };
  return { spawn, log };
}

const refusing = () =>
  scripted(() => {
    throw new DOMException('The object can not be cloned.', 'DataCloneError');
  });
const sharing = () =>
  scripted((m, reply) => {
    Atomics.store(new Int32Array(m.probe.buffer), 0, PROBE_MARK);
    reply({ probed: true });
  });

/** Runs `body` with globalThis looking like a browser page, cross-origin isolated or not. */
async function asPage<T>(isolated: boolean, body: () => Promise<T>): Promise<T> {
  const global = globalThis as { document?: unknown; crossOriginIsolated?: boolean };
  global.document = {};
  global.crossOriginIsolated = isolated;
  try {
    return await body();
  } finally {
    delete global.document;
    delete global.crossOriginIsolated;
  }
}

describe('the shared-memory probe', () => {
  it('a worker that writes to the memory it was sent: threads can run (undefined), and the worker is ended', async () => {
    const { spawn, log } = sharing();
    expect(await probeSharedMemory(spawn)).toBeUndefined();
    expect(log).toEqual({ spawned: 1, terminated: 1 });
  });

  it('a runtime that refuses to send shared memory: says so, on an isolated page naming the browser and the page', async () => {
    expect(await probeSharedMemory(refusing().spawn)).toBe(
      'this runtime does not pass shared memory to workers (DataCloneError: The object can not be cloned.)',
    );
    expect(await asPage(true, () => probeSharedMemory(refusing().spawn))).toBe(
      'this browser does not pass shared memory to workers, even on this cross-origin isolated page ' +
        '(DataCloneError: The object can not be cloned.)',
    );
  });

  it('a worker that got a copy (its write is not seen here), or could not start: says which', async () => {
    const copying = scripted((_m, reply) => reply({ probed: true }));
    expect(await probeSharedMemory(copying.spawn)).toBe(
      'this runtime copies shared memory to workers instead of sharing it',
    );
    expect(copying.log.terminated).toBe(1);
    const failing: ProbeWorker = {
      post: () => {},
      onMessage: () => {},
      onError: (listener) => queueMicrotask(() => listener('404 attention-worker.js')),
      terminate: () => {},
    };
    expect(await probeSharedMemory(() => failing)).toBe('a worker could not start (404 attention-worker.js)');
  });

  it('a SharedArrayBuffer for the pool also where the global constructor is missing', () => {
    const global = globalThis as { SharedArrayBuffer?: unknown };
    const saved = global.SharedArrayBuffer;
    delete global.SharedArrayBuffer;
    try {
      const buffer = sharedBuffer(1072);
      expect(Object.prototype.toString.call(buffer)).toBe('[object SharedArrayBuffer]');
      expect(buffer.byteLength).toBeGreaterThanOrEqual(1072);
      const words = new Int32Array(buffer);
      Atomics.store(words, 3, 7);
      expect(Atomics.load(words, 3)).toBe(7);
    } finally {
      global.SharedArrayBuffer = saved;
    }
  });
});

describe('init() and the probe', () => {
  afterEach(() => {
    vi.doUnmock('../src/shared-memory-probe.js');
    vi.resetModules();
  });

  /** The package, fresh, with its probe's workers replaced by `spawn`. */
  async function packageProbingWith(spawn: () => ProbeWorker) {
    vi.resetModules();
    vi.doMock('../src/shared-memory-probe.js', async (original) => {
      const probe = await original<typeof import('../src/shared-memory-probe.js')>();
      return { ...probe, sharedMemoryUnavailable: () => probe.sharedMemoryUnavailable(spawn) };
    });
    return import('../src/index.js');
  }

  it("an isolated page whose browser does not pass shared memory: 'auto' gets 1 thread; threads: 2 says what it lacks, probed once", async () => {
    const { spawn, log } = refusing();
    const api = await packageProbingWith(spawn);
    await asPage(true, async () => {
      expect((await api.init()).threads).toBe(1);
      await expectRejects(() => api.init({ threads: 2 }), Error, [
        /init\(\{ threads: 2 \}\) cannot run here: this browser does not pass shared memory to workers, even on this cross-origin isolated page/,
      ]);
      expect((await api.init({ threads: 1 })).threads).toBe(1);
    });
    expect(log.spawned).toBe(1);
  });

  it('the real probe in Node: a worker_threads worker shares the memory, and threads run', async () => {
    vi.resetModules();
    const threads = await import('../src/threads.js');
    threads.useNodeWorkerScript(new URL('../dist/attention-worker.js', import.meta.url));
    expect(await threads.threadsUnavailable()).toBeUndefined();
    const api = await import('../src/index.js');
    expect((await api.init({ threads: 2 })).threads).toBe(2);
  });
});
