// The script of a pool worker (threads.ts starts it; it ships as dist/attention-worker.js beside the .wasm files).
// It instantiates the kernel's compiled module on the shared memory it is sent, then joins every call:
// it spins a short while on the job's generation word after each call (a call that follows soon finds it
// awake: ~0.3 µs instead of ~50 µs for a wake-up), then sleeps in Atomics.wait, using no CPU, until the
// next call. Runs alike as a worker_threads worker (Node, Deno, Bun) and as a Web Worker (browsers).

// Self-contained (no imports): a bundler that copies this file as an asset instead of bundling it as a
// worker entry still ships a working worker.

/** Control words of the job block (assembly/job.ts documents them; threads.ts imports these). */
export const OPEN = 0,
  NEXT = 1,
  FINISHED = 2,
  ENTERED = 3,
  GENERATION = 4,
  SLEEPERS = 5,
  THREADS = 6,
  PIECES = 15;

/** What a worker is sent once: everything it needs to join calls. */
export interface WorkerStart {
  module: WebAssembly.Module;
  memory: WebAssembly.Memory;
  /** byte address of the job block */
  job: number;
  /** this worker's thread number (1 …; the calling thread is 0) */
  thread: number;
  /** how long an idle worker spins before it sleeps, in milliseconds */
  spinMs: number;
}

interface NodeWorkerThreads {
  parentPort: {
    once(event: 'message', listener: (message: WorkerStart) => void): void;
    postMessage(message: unknown): void;
  } | null;
}

// Node, Deno and Bun run it as a node:worker_threads worker (the one kind they can unref); browsers as a
// module Web Worker
const port = (
  (globalThis as { process?: { getBuiltinModule?(id: string): unknown } }).process?.getBuiltinModule?.(
    'node:worker_threads',
  ) as NodeWorkerThreads | undefined
)?.parentPort;
const inWebWorker = !port && typeof (globalThis as { WorkerGlobalScope?: unknown }).WorkerGlobalScope !== 'undefined';
const scope = globalThis as unknown as {
  postMessage(message: unknown): void;
  onmessage: ((event: { data: WorkerStart }) => void) | null;
};
const post = (message: unknown) => (port ? port.postMessage(message) : scope.postMessage(message));

async function start(given: WorkerStart): Promise<void> {
  const { module, memory, job, thread, spinMs } = given;
  let work: (job: number, thread: number) => number;
  try {
    const instance = await WebAssembly.instantiate(module, {
      env: {
        memory,
        abort(_message: number, _file: number, line: number, column: number): never {
          throw new Error(`wasm-attention: kernel aborted at ${line}:${column}`);
        },
      },
    });
    work = (instance.exports as unknown as { work(job: number, thread: number): number }).work;
  } catch (error) {
    post({ error: String((error as Error)?.message ?? error) });
    return;
  }
  post({ ready: true });
  // the job block was placed before this worker started, so this view covers it even after memory grows
  const words = new Int32Array(memory.buffer, job, 32);
  let seen = Atomics.load(words, GENERATION);
  for (;;) {
    const until = performance.now() + spinMs;
    while (Atomics.load(words, GENERATION) === seen && performance.now() < until) {
      /* spin */
    }
    if (Atomics.load(words, GENERATION) === seen) {
      Atomics.add(words, SLEEPERS, 1);
      Atomics.wait(words, GENERATION, seen);
      Atomics.sub(words, SLEEPERS, 1);
    }
    seen = Atomics.load(words, GENERATION);
    Atomics.add(words, ENTERED, 1);
    // only the threads the call has scratch for: a worker still starting (or being let go) by a resize
    // that has not completed stays out
    if (Atomics.load(words, OPEN) === 1 && thread < Atomics.load(words, THREADS)) {
      const done = work(job, thread);
      if (done > 0 && Atomics.add(words, FINISHED, done) + done === Atomics.load(words, PIECES)) {
        Atomics.notify(words, FINISHED);
      }
    }
    Atomics.sub(words, ENTERED, 1);
  }
}

// threads.ts imports this module's constants on the calling thread: start only inside a worker
if (port) port.once('message', (message) => void start(message));
else if (inWebWorker) {
  scope.onmessage = (event) => {
    scope.onmessage = null;
    void start(event.data);
  };
}
