// Whether this runtime can give the pool's workers the kernel's memory, found by doing it once: a shared
// WebAssembly.Memory is sent to a worker (the pool's own script), the worker writes to it, and this thread
// must see the write. A runtime's globals do not answer that: WebKitGTK 2.50 has no SharedArrayBuffer
// global on a cross-origin isolated page, yet shared WebAssembly memory works there on one thread, and
// sending it to a worker throws "The object can not be cloned"; another engine may share memory without
// the global. The answer is kept for the life of the page or process.

/** A worker as the probe uses it: one message out, answers back, then ended. */
export interface ProbeWorker {
  /** Sends a message; throws where the runtime cannot send it (a DataCloneError). */
  post(message: unknown): void;
  onMessage(listener: (data: unknown) => void): void;
  /** The worker failed to start or threw. */
  onError(listener: (message: string) => void): void;
  terminate(): void;
}

/** The message attention-worker.ts answers with a write to the memory instead of starting a pool thread. */
export interface ProbeMessage {
  probe: WebAssembly.Memory;
}

/** The value the worker stores in the probe memory's first word. */
export const PROBE_MARK = 0x5eed;

interface Global {
  SharedArrayBuffer?: new (bytes: number) => ArrayBufferLike;
  crossOriginIsolated?: boolean;
  document?: unknown;
}
const global = globalThis as unknown as Global;

/** Who refuses, for the reason: a page's browser, or the runtime. */
const whoCannot = () => (global.document !== undefined ? 'this browser' : 'this runtime');

function evenHere(): string {
  return global.document !== undefined && global.crossOriginIsolated === true
    ? ', even on this cross-origin isolated page'
    : '';
}

/**
 * Sends a shared memory to a fresh worker and waits for its write. Resolves undefined when the worker
 * wrote to the very memory this thread holds, else why threads cannot run here (never rejects).
 */
export function probeSharedMemory(spawn: () => ProbeWorker): Promise<string | undefined> {
  let memory: WebAssembly.Memory;
  try {
    memory = new WebAssembly.Memory({ initial: 1, maximum: 1, shared: true });
  } catch (error) {
    return Promise.resolve(`this runtime refuses shared WebAssembly memory (${(error as Error).message})`);
  }
  return new Promise((resolve) => {
    let worker: ProbeWorker | undefined;
    const done = (why: string | undefined) => {
      worker?.terminate();
      worker = undefined;
      resolve(why);
    };
    try {
      worker = spawn();
    } catch (error) {
      done(`a worker could not start (${(error as Error).message})`);
      return;
    }
    worker.onError((message) => done(`a worker could not start (${message})`));
    worker.onMessage((data) => {
      const answer = data as { probed?: boolean; error?: string };
      if (!answer?.probed) done(`a worker could not take shared memory (${answer?.error ?? 'no answer'})`);
      else if (Atomics.load(new Int32Array(memory.buffer), 0) === PROBE_MARK) done(undefined);
      else done(`${whoCannot()} copies shared memory to workers instead of sharing it${evenHere()}`);
    });
    try {
      worker.post({ probe: memory } satisfies ProbeMessage);
    } catch (error) {
      const name = (error as Error)?.name === 'DataCloneError' ? 'DataCloneError: ' : '';
      done(`${whoCannot()} does not pass shared memory to workers${evenHere()} (${name}${(error as Error).message})`);
    }
  });
}

let probed: Promise<string | undefined> | undefined;

/** probeSharedMemory, run once: later calls get the first answer. */
export function sharedMemoryUnavailable(spawn: () => ProbeWorker): Promise<string | undefined> {
  probed ??= probeSharedMemory(spawn);
  return probed;
}

/**
 * A SharedArrayBuffer of at least `bytes`, also where the global constructor is missing (the buffer of a
 * shared WebAssembly.Memory is one): the pool's status words and wait cells need nothing more.
 */
export function sharedBuffer(bytes: number): SharedArrayBuffer {
  if (typeof global.SharedArrayBuffer === 'function') return new global.SharedArrayBuffer(bytes) as SharedArrayBuffer;
  const pages = Math.max(1, Math.ceil(bytes / 65536));
  return new WebAssembly.Memory({ initial: pages, maximum: pages, shared: true })
    .buffer as unknown as SharedArrayBuffer;
}
