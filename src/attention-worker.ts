// The script of a pool worker (threads.ts starts it; it ships as dist/attention-worker.js beside the .wasm files).
// It instantiates the kernel's compiled module on the shared memory it is sent, then joins every call:
// it spins a short while on the job's generation word after each call (a call that follows soon finds it
// awake: ~0.3 µs instead of ~50 µs for a wake-up), then sleeps in Atomics.wait, using no CPU, until the
// next call. Runs alike as a worker_threads worker (Node, Deno, Bun) and as a Web Worker (browsers).
//
// A worker whose work throws (its kernel trapped) records the failure in the pool's status words and
// stops: the caller throws instead of waiting for the pieces it held, and the pool starts fresh workers.
// A worker that stops answering records nothing: the caller takes its pieces over (assembly/attend/work.ts).

// Self-contained (no imports): a bundler that copies this file as an asset instead of bundling it as a
// worker entry still ships a working worker. So the job block's words are generated into it (below),
// and the facade takes them from here, through abi.ts.

// <generated from assembly/job.ts by assembly/abi-words.mjs: edit that file, not this block>
/** The job block of a threaded call, and its modes (assembly/job.ts). */
export const Job = {
  OPEN: 0,
  NEXT: 1,
  FINISHED: 2,
  GENERATION: 4,
  SLEEPERS: 5,
  DESCRIPTOR: 8,
  LAYER: 9,
  TOKENS: 10,
  FIRST_POSITION: 11,
  KEY_END: 12,
  CAUSAL: 13,
  MODE: 14,
  PIECES: 15,
  SCRATCH_BASE: 16,
  SCRATCH_STRIDE: 17,
  RESULTS: 18,
  RESULT_BYTES: 19,
  PARTIAL_NEEDED: 20,
  CHUNK_SINKS: 21,
  CHUNK_FIRST: 22,
  CHUNK_COUNT: 23,
  ROWS: 24,
  EPOCH: 25,
  STATES: 26,
  STATE_CAPACITY: 27,
  STOP_TEST: 28,
  RESULT_NEEDED: 29,
  STOP_AND_EXIT: 256,
  ITEMS: 30,
  ITEM_COUNT: 31,
  JOB_BYTES: 128,
  TILE_MODE: 0,
  CHUNK_MODE: 1,
  BATCH_MODE: 2,
  ITEM_DESCRIPTOR: 0,
  ITEM_LAYER: 1,
  ITEM_TOKENS: 2,
  ITEM_FIRST_POSITION: 3,
  ITEM_FIRST_PIECE: 4,
  ITEM_TILES: 5,
  ITEM_CASCADE: 6,
  ITEM_SHARED_END: 7,
  ITEM_RESULT: 8,
  ITEM_WORDS: 9,
} as const;
// </generated>

/** The most threads a pool may have (init's `threads`): the calling thread and MAX_THREADS − 1 workers. */
export const MAX_THREADS = 64;

/**
 * The pool's status words: an Int32Array over a SharedArrayBuffer of STATUS_WORDS, apart from wasm memory
 * (the kernel never reads them).
 *
 *   FAILED       0, or 1 + the number of the first thread whose work threw (until the caller takes it)
 *   TRAP_TEST    tests only: the number of a worker whose next call traps in its kernel (0: none)
 *   FAILED_EPOCH the epoch of the call (the job's epoch word) in which that thread's work threw
 *   MESSAGE      the failure's message: its length, then up to MESSAGE_CHARS UTF-16 code units
 *   OWNERS       per thread number (0 … MAX_THREADS), the id of the worker the pool counts for it (0:
 *                none): a worker joins a call only while it is counted, so one that is starting or being
 *                let go never shares a thread number (and scratch) with another
 *   INSIDE       per thread number, the epoch of the call whose work it is running (0: none): memory a
 *                worker may still write into is released only once no worker is inside an older call
 */
export const FAILED = 0,
  TRAP_TEST = 1,
  FAILED_EPOCH = 2,
  MESSAGE = 3,
  MESSAGE_CHARS = 200,
  OWNERS = MESSAGE + 1 + MESSAGE_CHARS,
  INSIDE = OWNERS + MAX_THREADS + 1,
  STATUS_WORDS = INSIDE + MAX_THREADS + 1;

/** What a worker is sent once: everything it needs to join calls. */
export interface WorkerStart {
  module: WebAssembly.Module;
  memory: WebAssembly.Memory;
  /** byte address of the job block */
  job: number;
  /** the pool's status words (STATUS_WORDS i32) */
  status: SharedArrayBuffer;
  /** this worker's thread number (1 …; the calling thread is 0) */
  thread: number;
  /** this worker's id, never reused: its owner word says whether the pool counts it */
  id: number;
  /** how long an idle worker spins before it sleeps, in milliseconds */
  spinMs: number;
}

/**
 * Iterations of a spin on a shared word (an Atomics.load and a compare) that take about `ms` on this
 * thread, measured once (the fastest of a few rounds, so the JIT has compiled the loop). Spins count
 * iterations instead of reading a clock: performance.now() allocates on the JS heap (~6 B a call in Node
 * 20, measured), and a thread waiting for a piece spins thousands of times a call.
 */
export function spinsPerInterval(ms: number): number {
  // a runtime may share memory without the SharedArrayBuffer global (the buffer of a shared memory is one)
  const word = new Int32Array(
    typeof SharedArrayBuffer === 'function'
      ? new SharedArrayBuffer(4)
      : new WebAssembly.Memory({ initial: 1, maximum: 1, shared: true }).buffer,
  );
  const rounds = 8,
    iterations = 1 << 15;
  let fastest = Number.POSITIVE_INFINITY;
  for (let r = 0; r < rounds; r++) {
    const t0 = performance.now();
    let i = 0;
    while (i < iterations && Atomics.load(word, 0) === 0) i++;
    fastest = Math.min(fastest, performance.now() - t0);
  }
  return Math.max(1, Math.round((iterations * ms) / Math.max(fastest, 1e-3)));
}

/** Records `error` as call `epoch`'s failure, unless another thread's came first; wakes a waiting caller. */
function recordFailure(status: Int32Array, words: Int32Array, thread: number, epoch: number, error: unknown): void {
  if (Atomics.compareExchange(status, FAILED, 0, thread + 1) !== 0) return;
  Atomics.store(status, FAILED_EPOCH, epoch);
  const text = String((error as Error)?.stack?.split('\n')[0] ?? error);
  const length = Math.min(text.length, MESSAGE_CHARS);
  for (let i = 0; i < length; i++) status[MESSAGE + 1 + i] = text.charCodeAt(i);
  Atomics.store(status, MESSAGE, length);
  Atomics.notify(words, Job.FINISHED);
}

/**
 * The mark the pool gives its workers: their `workerData` (node:worker_threads) or their `name` (Web
 * Workers). The facade imports this module too, in whatever thread a user loads the package, so the
 * script starts only where it finds the mark: a user's own worker keeps its messages.
 */
export const POOL_WORKER = 'wasm-attention pool worker';

interface NodeWorkerThreads {
  workerData?: unknown;
  parentPort: {
    once(event: 'message', listener: (message: WorkerStart | { probe: WebAssembly.Memory }) => void): void;
    postMessage(message: unknown): void;
  } | null;
}

// Node, Deno and Bun run it as a node:worker_threads worker (the one kind they can unref); browsers as a
// module Web Worker
const nodeThreads = (
  globalThis as { process?: { getBuiltinModule?(id: string): unknown } }
).process?.getBuiltinModule?.('node:worker_threads') as NodeWorkerThreads | undefined;
const port = nodeThreads?.workerData === POOL_WORKER ? nodeThreads.parentPort : null;
const inWebWorker =
  typeof (globalThis as { WorkerGlobalScope?: unknown }).WorkerGlobalScope !== 'undefined' &&
  (globalThis as { name?: unknown }).name === POOL_WORKER;
const scope = globalThis as unknown as {
  postMessage(message: unknown): void;
  onmessage: ((event: { data: WorkerStart | { probe: WebAssembly.Memory } }) => void) | null;
};
const post = (message: unknown) => (port ? port.postMessage(message) : scope.postMessage(message));

async function start(given: WorkerStart): Promise<void> {
  const { module, memory, job, thread, id } = given;
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
  const spins = spinsPerInterval(given.spinMs);
  post({ ready: true });
  // the job block was placed before this worker started, so this view covers it even after memory grows
  const words = new Int32Array(memory.buffer, job, Job.JOB_BYTES >>> 2);
  const status = new Int32Array(given.status);
  let seen = Atomics.load(words, Job.GENERATION);
  for (;;) {
    for (let i = 0; i < spins && Atomics.load(words, Job.GENERATION) === seen; i++) {
      /* spin */
    }
    if (Atomics.load(words, Job.GENERATION) === seen) {
      Atomics.add(words, Job.SLEEPERS, 1);
      Atomics.wait(words, Job.GENERATION, seen);
      Atomics.sub(words, Job.SLEEPERS, 1);
    }
    seen = Atomics.load(words, Job.GENERATION);
    const epoch = Atomics.load(words, Job.EPOCH);
    Atomics.store(status, INSIDE + thread, epoch);
    try {
      // only while the pool counts this worker: one it is starting (or letting go) stays out. The kernel
      // counts the pieces it publishes (and checks that the call is still open and its own)
      if (Atomics.load(words, Job.OPEN) === 1 && Atomics.load(status, OWNERS + thread) === id) {
        if (Atomics.load(status, TRAP_TEST) === thread) work(memory.buffer.byteLength, thread);
        else if (work(job, thread) < 0) return end(); // a test stopped it for good, as if killed mid-call
      }
    } catch (error) {
      recordFailure(status, words, thread, epoch, error);
      Atomics.compareExchange(status, TRAP_TEST, thread, 0); // a test's trap is recorded: the caller goes on
      return; // this worker is done: its instance may hold a half-written piece's state
    } finally {
      Atomics.store(status, INSIDE + thread, 0);
    }
  }
}

/** Ends this worker from inside (tests: a worker killed mid-call). */
function end(): void {
  const process = (globalThis as { process?: { exit(code?: number): never } }).process;
  if (port && process) process.exit(0);
  else (globalThis as unknown as { close(): void }).close();
}

/**
 * The first message: a pool thread's start, or the shared-memory probe (shared-memory-probe.ts, whose
 * PROBE_MARK this repeats to stay import-free), answered by a write to the memory it sent.
 */
function first(message: WorkerStart | { probe: WebAssembly.Memory }): void {
  if (!('probe' in message)) {
    void start(message);
    return;
  }
  try {
    Atomics.store(new Int32Array(message.probe.buffer), 0, 0x5eed);
    post({ probed: true });
  } catch (error) {
    post({ error: String((error as Error)?.message ?? error) });
  }
}

// threads.ts imports this module's constants on the calling thread: start only inside a worker
if (port) port.once('message', first);
else if (inWebWorker) {
  scope.onmessage = (event) => {
    scope.onmessage = null;
    first(event.data);
  };
}
