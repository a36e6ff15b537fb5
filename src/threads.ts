// Threads: whether this runtime can run them, how many 'auto' means, and the pool of workers that joins
// the calls of a shared-memory kernel.
//
// A call stays synchronous: the calling thread writes the call into the job block (assembly/job.ts),
// lets the kernel cut it into pieces fixed by the problem (plan), wakes the workers, claims pieces itself
// (work), waits until every piece is done, and folds the pieces' results (finish). Outputs are the same
// bits whichever thread ran which piece, and whether any worker joined at all: a worker still starting
// or asleep simply claims nothing.

import { CALL_WORDS, type CallWords, Job, type KernelExports } from './abi.js';
import type { LinearHeap } from './heap.js';
import {
  FAILED,
  FAILED_EPOCH,
  INSIDE,
  MAX_THREADS,
  MESSAGE,
  OWNERS,
  POOL_WORKER,
  STATUS_WORDS,
  TRAP_TEST,
  spinsPerInterval,
  type WorkerStart,
} from './attention-worker.js';
import { type ProbeWorker, sharedBuffer, sharedMemoryUnavailable } from './shared-memory-probe.js';

export { MAX_THREADS };

/** 'auto' uses the runtime's cores, at most this many. */
export const MAX_AUTO_THREADS = 8;
/**
 * How long an idle worker spins after a call before it sleeps (ms). A decode step's layers follow one
 * another within this, so workers stay awake through a generation; a sleeping worker costs ~50 µs to wake
 * (measured here), an awake one ~0.3 µs.
 */
export const SPIN_MS = 2;
/**
 * Below this many multiply-adds (visible (query, key) pairs × heads × headDim) a call runs on the calling
 * thread alone: handing out pieces and folding them would cost more than they save (the measurements are
 * in docs/PERFORMANCE.md, "Facade and threads").
 */
export const MIN_THREADED_WORK = 320_000;
/**
 * When the calling thread has run out of pieces to claim, it waits for the workers' pieces at most this
 * many times the time it took per piece of that size (measured on its own pieces), and at least
 * MIN_TAKE_OVER_MS; then it runs whatever is not published itself (adopt). A worker that is running
 * finishes its last piece within about one piece's time of the caller's last one; one that is descheduled
 * (a busy core), stopped or killed does not, and the caller then loses at most one more piece's time.
 * docs/PERFORMANCE.md, "Taking over pieces", has the measurements.
 */
export const TAKE_OVER_PIECES = 2;
/** The least wait before the caller takes pieces over: about a sleeping worker's wake-up (~50 µs here). */
export const MIN_TAKE_OVER_MS = 0.05;
/** The caller times its own pieces on one threaded call in this many (performance.now() allocates). */
const TIMED_EVERY = 128;
/** The longest wait in spins (a small integer on every engine). */
const MAX_WAIT_SPINS = 0x3fffffff;

const { OPEN, NEXT, FINISHED, GENERATION, SLEEPERS, PIECES, EPOCH, STOP_TEST, STOP_AND_EXIT } = Job;

const COOP_COEP_FIX =
  'serve the page with the headers Cross-Origin-Opener-Policy: same-origin and ' +
  'Cross-Origin-Embedder-Policy: require-corp';

interface Global {
  crossOriginIsolated?: boolean;
  Worker?: new (url: URL, options: { type: 'module' }) => WebWorker;
  navigator?: { hardwareConcurrency?: number };
  process?: { getBuiltinModule?(id: string): unknown; execArgv?: string[] };
  document?: unknown;
}
const global = globalThis as unknown as Global;

interface WebWorker {
  postMessage(message: unknown): void;
  addEventListener(type: 'message' | 'error', listener: (event: { data?: unknown; message?: string }) => void): void;
  terminate(): void;
}

interface NodeWorker {
  postMessage(message: unknown): void;
  on(event: 'message' | 'error' | 'exit', listener: (value: unknown) => void): void;
  terminate(): Promise<number>;
  unref(): void;
}

type NodeWorkerConstructor = new (url: URL, options?: { execArgv?: string[]; workerData?: unknown }) => NodeWorker;

function nodeWorkerThreads(): { Worker: NodeWorkerConstructor } | undefined {
  return global.process?.getBuiltinModule?.('node:worker_threads') as { Worker: NodeWorkerConstructor } | undefined;
}

/**
 * Why threads cannot run here, with what would fix it; undefined when they can. Checks what a pool needs:
 * a cross-origin isolated page (in a browser), a Worker, and a shared WebAssembly memory that a worker
 * really shares (tried once: shared-memory-probe.ts).
 */
export async function threadsUnavailable(): Promise<string | undefined> {
  if (global.crossOriginIsolated === false) return `the page is not cross-origin isolated: ${COOP_COEP_FIX}`;
  if (typeof global.Worker !== 'function' && !nodeWorkerThreads()) {
    return "this runtime has no Worker (Cloudflare Workers run on one thread): use threads: 1 or 'auto'";
  }
  return sharedMemoryUnavailable(probeWorker);
}

/** The runtime's cores (navigator.hardwareConcurrency, os.availableParallelism()), at most MAX_AUTO_THREADS. */
export function runtimeCores(): number {
  let cores = global.navigator?.hardwareConcurrency;
  if (!cores) {
    const os = global.process?.getBuiltinModule?.('node:os') as
      | { availableParallelism?(): number; cpus(): unknown[] }
      | undefined;
    cores = os?.availableParallelism?.() ?? os?.cpus().length ?? 1;
  }
  return Math.max(1, Math.min(MAX_AUTO_THREADS, cores));
}

/** Whether this thread may block in Atomics.wait (not on a browser page's main thread). */
function mayBlock(): boolean {
  if (global.document === undefined) return true;
  try {
    Atomics.wait(new Int32Array(sharedBuffer(4)), 0, 1, 0);
    return true;
  } catch {
    return false;
  }
}

interface PoolWorker {
  /** its thread number (1 …) */
  thread: number;
  /** its id: the pool counts it while the owner word of its thread number holds this */
  id: number;
  ready: Promise<void>;
  /** Ends it; settles once it has (Node, Deno, Bun) or at once (Web Workers end synchronously). */
  terminate(): Promise<unknown>;
}

/**
 * Starts one worker on the kernel's module and memory; `ready` settles once it has instantiated.
 * `ended` runs when a started worker ends (Node, Deno, Bun: it exited; browsers: it threw).
 */
function startWorker(start: WorkerStart, ended: () => void): PoolWorker {
  let settle!: (error?: Error) => void;
  const ready = new Promise<void>((resolve, reject) => {
    settle = (error) => (error ? reject(error) : resolve());
  });
  const onMessage = (data: unknown) => {
    const message = data as { ready?: boolean; error?: string };
    settle(message.ready ? undefined : new Error(`a thread could not start the kernel: ${message.error}`));
  };
  const worker = { thread: start.thread, id: start.id, ready };
  // node:worker_threads where the runtime has it (Node, Deno, Bun: the workers it makes can be unref'd, so
  // they never keep a process alive; Deno's Web Workers cannot), else Web Workers (browsers). The literal
  // `new Worker(new URL('./attention-worker.js', import.meta.url), { …literals })` is the form bundlers
  // recognise: Vite before 6.1 refuses options that are not literals, so the mark is written out (its
  // value is POOL_WORKER's, which user-worker.test.ts checks).
  const threads = nodeWorkerThreads();
  if (!threads) {
    const web = new Worker(new URL('./attention-worker.js', import.meta.url), {
      type: 'module',
      name: 'wasm-attention pool worker',
    }) as unknown as WebWorker;
    web.addEventListener('message', (event) => onMessage(event.data));
    web.addEventListener('error', (event) => {
      settle(new Error(`a thread failed to start: ${event.message ?? 'worker error'}`));
      ended();
    });
    web.postMessage(start);
    return { ...worker, terminate: async () => web.terminate() };
  }
  const node = new threads.Worker(
    nodeWorkerScript ?? new URL('./attention-worker.js', import.meta.url),
    workerOptions(global.process?.execArgv),
  );
  node.on('message', onMessage);
  node.on('error', (error) => settle(error as Error));
  node.on('exit', () => {
    settle(new Error('a thread exited before it started'));
    ended();
  });
  node.postMessage(start);
  // once started, an idle worker never keeps the process alive (unref after the listeners: adding one refs
  // again; before it is ready, init is waiting for it)
  ready.then(
    () => node.unref(),
    () => undefined,
  );
  return { ...worker, terminate: () => node.terminate() };
}

/** A worker on the pool's script for the shared-memory probe, made as startWorker makes pool workers. */
function probeWorker(): ProbeWorker {
  const threads = nodeWorkerThreads();
  if (!threads) {
    const web = new Worker(new URL('./attention-worker.js', import.meta.url), {
      type: 'module',
      name: 'wasm-attention pool worker',
    }) as unknown as WebWorker;
    return {
      post: (message) => web.postMessage(message),
      onMessage: (listener) => web.addEventListener('message', (event) => listener(event.data)),
      onError: (listener) => web.addEventListener('error', (event) => listener(event.message ?? 'worker error')),
      terminate: () => web.terminate(),
    };
  }
  const node = new threads.Worker(
    nodeWorkerScript ?? new URL('./attention-worker.js', import.meta.url),
    workerOptions(global.process?.execArgv),
  );
  return {
    post: (message) => node.postMessage(message),
    onMessage: (listener) => node.on('message', listener),
    onError: (listener) => node.on('error', (error) => listener(String((error as Error)?.message ?? error))),
    terminate: () => void node.terminate(),
  };
}

/**
 * A Node worker's options: the pool's mark as its workerData (attention-worker.ts starts only where it
 * finds it), and its process options. A worker inherits the process's options, but `--input-type` (the
 * script came by --eval or stdin) makes Node refuse the worker's file (measured: init({ threads: 2 })
 * rejected under `node --input-type=module --eval`). Such a worker gets none: the worker script imports
 * nothing, and V8's flags (the relaxed-SIMD one) hold for the whole process anyway.
 */
function workerOptions(execArgv: string[] | undefined): { execArgv?: string[]; workerData: string } {
  return execArgv?.some((a) => a.startsWith('--input-type'))
    ? { execArgv: [], workerData: POOL_WORKER }
    : { workerData: POOL_WORKER };
}

let nodeWorkerScript: URL | undefined;

/**
 * Where Node workers find the worker script when it is not the compiled one beside this module: the unit
 * tests run src/ as TypeScript, and point this at dist/attention-worker.js. Not part of the public API.
 */
export function useNodeWorkerScript(url: URL): void {
  nodeWorkerScript = url;
}

/**
 * The workers of one shared-memory kernel, and its calls across them. `threads` counts the calling
 * thread: a pool of n threads has n − 1 workers, worker i on thread number i.
 *
 * A worker whose kernel traps mid-call records it in the status words and stops; the caller, which then
 * stops waiting for the pieces it held, throws an Error naming it (the call's cache is left as it was, see
 * cache.ts) and the pool starts a fresh worker on that thread number. A worker that stops answering while
 * it holds a piece (descheduled, frozen, killed outright) records nothing: the caller waits a bound it
 * measures (TAKE_OVER_PIECES), then takes the piece over. Pieces are claimed and published by
 * compare-and-swap in their states, tagged with the call's epoch, and each thread writes its results into
 * its own area (assembly/attend/work.ts), so a worker that comes back late publishes nothing and writes
 * only where nobody reads: the same bits either way. Memory a late worker may still write into (its
 * scratch and results) is released only once no worker is inside an older call. A worker that ends (killed
 * between or during calls) is replaced when the runtime reports its exit (Node, Deno, Bun); one that
 * stays frozen keeps its thread number and contributes nothing until it comes back.
 */
export class ThreadPool {
  readonly #abi: KernelExports;
  readonly #heap: LinearHeap;
  readonly module: WebAssembly.Module;
  /** the job block's byte address */
  readonly job: number;
  readonly #words: Int32Array;
  /** the pool's status words (attention-worker.ts): failures, and which worker owns each thread number */
  readonly #status = new Int32Array(sharedBuffer(STATUS_WORDS * 4));
  readonly #mayBlock = mayBlock();
  /** iterations of the caller's spin before it sleeps: SPIN_MS on this thread */
  readonly #spins = spinsPerInterval(SPIN_MS);
  /** the caller's spins in a millisecond, and in MIN_TAKE_OVER_MS (whole numbers) */
  readonly #spinsPerMs = Math.ceil(this.#spins / SPIN_MS) | 0;
  readonly #minWaitSpins = Math.ceil(MIN_TAKE_OVER_MS * this.#spinsPerMs) | 0;
  #workers: PoolWorker[] = [];
  #nextId = 1;
  /** per-thread scratch: threads × stride bytes */
  #scratch = 0;
  #scratchBytes = 0;
  /** each thread's results area (job word results): threads × resultBytes */
  #results = 0;
  #resultBytes = 0;
  /** the pieces' states (job word states): stateCapacity × 8 bytes */
  #states = 0;
  #stateCapacity = 0;
  /** blocks a late worker may still write into: released once no worker is inside an older call */
  #retired: number[] = [];
  /** the last call's epoch (the job's epoch word) */
  #epoch = 0;
  /**
   * The caller's wait for the workers' last pieces, in spins per 2^20 multiply-adds of a piece:
   * TAKE_OVER_PIECES times what its own pieces took, last timed (0: not yet, the wait is MIN_TAKE_OVER_MS).
   * A whole number, as is every figure a call computes from it (#waitSpins).
   */
  #waitSpinsPerMega = 0;
  /** pieces of this many multiply-adds or more wait MAX_WAIT_SPINS (the wait's product stays a small integer) */
  #waitCapWork = MAX_WAIT_SPINS;
  /** Pieces the calling thread took over from workers that had not answered in time (tests, benches). */
  takenOver = 0;
  /** Workers the pool has replaced (failed, or ended while counted) so far (tests). */
  replacements = 0;
  /** Calls that went across threads so far (tests check that the threaded path really ran). */
  threadedCalls = 0;

  /** A pool of one thread (no worker) on a shared-memory instance's exports and heap; resize() adds workers. */
  constructor(abi: KernelExports, heap: LinearHeap, module: WebAssembly.Module) {
    this.#abi = abi;
    this.#heap = heap;
    this.module = module;
    this.job = heap.allocate(abi.jobBytes());
    // shared memory is never detached: this view stays valid however much memory grows
    this.#words = new Int32Array(abi.memory.buffer, this.job, abi.jobBytes() >>> 2);
    this.#words.fill(0);
  }

  /** Bytes of linear memory the pool holds (job, scratch, results, states): no cache's. */
  get bytes(): number {
    // blocks replaced while a late worker was inside are still held until it leaves (#release)
    let retired = 0;
    for (const at of this.#retired) retired += this.#heap.sizeOf(at);
    return (
      this.#abi.jobBytes() +
      this.#scratchBytes +
      this.#resultBytes * this.#resultsThreads +
      this.#stateCapacity * 8 +
      retired
    );
  }

  /** Threads a call may use: the workers and the calling thread. */
  get threads(): number {
    return this.#workers.length + 1;
  }

  /**
   * Starts or stops workers until the pool has `threads` threads; resolves once every new one is ready.
   * Resizes (and replacements of failed workers) run one after another: init may be called from many
   * places at once, and two workers must never share a thread number (each owns its scratch).
   */
  resize(threads: number): Promise<void> {
    return this.#queue(() => this.#resize(threads));
  }

  #resizing: Promise<void> = Promise.resolve();

  #queue(change: () => Promise<void>): Promise<void> {
    const next = this.#resizing.then(change);
    this.#resizing = next.catch(() => undefined);
    return next;
  }

  async #resize(threads: number): Promise<void> {
    while (this.#workers.length > threads - 1) this.#letGo(this.#workers[this.#workers.length - 1]);
    const started: PoolWorker[] = [];
    for (let thread = this.#workers.length + 1; thread < threads; thread++) started.push(this.#start(thread));
    try {
      await Promise.all(started.map((w) => w.ready));
    } catch (error) {
      for (const w of started) w.terminate();
      throw error;
    }
    for (const w of started) this.#count(w);
  }

  #start(thread: number): PoolWorker {
    const start: WorkerStart = {
      module: this.module,
      memory: this.#abi.memory,
      job: this.job,
      status: this.#status.buffer as SharedArrayBuffer,
      thread,
      id: this.#nextId++,
      spinMs: SPIN_MS,
    };
    const worker = startWorker(start, () => {
      // it writes nothing any more (unless a fresh worker already holds its thread number)
      if (this.#workers[thread - 1] === worker || !this.#workers[thread - 1])
        Atomics.store(this.#status, INSIDE + thread, 0);
      // a worker that ends while counted (killed from outside) is replaced; one let go or failed is not
      if (this.#counts(worker)) this.#replace(worker);
    });
    return worker;
  }

  /** Counts a ready worker: it joins calls from now on. */
  #count(worker: PoolWorker): void {
    this.#workers[worker.thread - 1] = worker;
    Atomics.store(this.#status, OWNERS + worker.thread, worker.id);
  }

  #counts(worker: PoolWorker): boolean {
    return Atomics.load(this.#status, OWNERS + worker.thread) === worker.id;
  }

  /** Stops counting the last worker (it joins no later call, even before it has really ended) and ends it. */
  #letGo(worker: PoolWorker): void {
    Atomics.compareExchange(this.#status, OWNERS + worker.thread, worker.id, 0);
    this.#workers.pop();
    worker.terminate();
  }

  /**
   * Ends a failed (or vanished) worker and starts a fresh one on its thread number. Until it is ready the
   * thread number stays counted but joins nothing: calls run on the other threads, with the same bits.
   * If the fresh one cannot start, the thread number stays idle.
   */
  #replace(worker: PoolWorker): void {
    this.replacements++;
    Atomics.compareExchange(this.#status, OWNERS + worker.thread, worker.id, 0);
    worker.terminate();
    void this.#queue(async () => {
      if (this.#workers[worker.thread - 1] !== worker) return; // a resize let the thread number go meanwhile
      const fresh = this.#start(worker.thread);
      try {
        await fresh.ready;
      } catch {
        fresh.terminate();
        return;
      }
      this.#count(fresh);
    });
  }

  /**
   * Runs an attend (appendFirst 0) or step (appendFirst 1) of the staged tokens on every thread, with
   * the same result as the kernel's attend/step; false (and nothing done) when the call should run on the
   * calling thread alone. `work`: the call's multiply-adds, for the small-call rule.
   */
  attend(appendFirst: boolean, scratchStride: number, work: number, call: CallWords): boolean {
    if (this.#workers.length === 0 || work < MIN_THREADED_WORK || !this.#ensureScratch(scratchStride)) return false;
    const w = this.#words;
    // word by word: no array is made per call (a decode step allocates nothing on the JS heap)
    for (let i = 0; i < CALL_WORDS; i++) w[Job.DESCRIPTOR + i] = call[i];
    w[Job.SCRATCH_BASE] = this.#scratch;
    w[Job.SCRATCH_STRIDE] = scratchStride;
    if (!this.#planAndRun(false, appendFirst, work)) return false;
    // chunk mode needed more room than there was (this call ran in tile mode): make it for the next call
    if (w[Job.PARTIAL_NEEDED] > this.#resultBytes) this.#growResults(w[Job.PARTIAL_NEEDED]);
    return true;
  }

  /**
   * Runs a batch (`count` item records at `items`, assembly/job.ts) on every thread, with the same result
   * as the kernel's stepMany; false (and nothing done) when it should run on the calling thread alone. Its
   * pieces are claimed, published and taken over as attend's are.
   */
  stepMany(items: number, count: number, scratchStride: number, work: number): boolean {
    if (this.#workers.length === 0 || work < MIN_THREADED_WORK || !this.#ensureScratch(scratchStride)) return false;
    const w = this.#words;
    w[Job.ITEMS] = items;
    w[Job.ITEM_COUNT] = count;
    w[Job.SCRATCH_BASE] = this.#scratch;
    w[Job.SCRATCH_STRIDE] = scratchStride;
    return this.#planAndRun(true, false, work);
  }

  /**
   * Plans the job's words (a batch's items, or one call's), claims states for its pieces, runs them across
   * the threads and finishes; false (nothing done) when the results area cannot grow. A flag rather than a
   * plan callback, so a decode step makes no closure.
   */
  #planAndRun(batch: boolean, appendFirst: boolean, work: number): boolean {
    const abi = this.#abi;
    const w = this.#words;
    this.#writeResults();
    Atomics.store(w, NEXT, 0);
    let pieces = batch ? abi.planMany(this.job) : abi.plan(this.job, appendFirst ? 1 : 0);
    if (pieces < 0) {
      // each thread's results area is smaller than the outputs: make room (nothing was done yet)
      if (!this.#growResults(w[Job.RESULT_NEEDED])) return false;
      pieces = batch ? abi.planMany(this.job) : abi.plan(this.job, appendFirst ? 1 : 0);
    }
    if (pieces > this.#stateCapacity && !this.#growStates(pieces)) {
      throw new Error('wasm-attention: memory cannot grow to hold the states of a threaded call');
    }
    Atomics.store(w, EPOCH, ++this.#epoch);
    if (pieces > 1) this.#runAcrossThreads(pieces, work);
    else abi.adopt(this.job); // one piece: the calling thread runs it
    abi.finish(this.job);
    return true;
  }

  #runAcrossThreads(pieces: number, work: number): void {
    this.threadedCalls++;
    const w = this.#words;
    const status = this.#status;
    const epoch = this.#epoch;
    Atomics.store(w, FINISHED, 0);
    Atomics.store(w, PIECES, pieces);
    Atomics.store(w, OPEN, 1);
    Atomics.add(w, GENERATION, 1);
    if (Atomics.load(w, SLEEPERS) > 0) Atomics.notify(w, GENERATION);
    if (Atomics.load(status, TRAP_TEST) !== 0 || Atomics.load(w, STOP_TEST) > 0) this.#awaitTestHook();
    let failure: string | undefined;
    try {
      // No fraction is computed per call (only on a timed one): V8 boxes every fractional number in its
      // unoptimized tiers, where this function runs again after a deopt, and a decode step allocates
      // nothing (threads.test.ts)
      const timed = this.threadedCalls % TIMED_EVERY === 1;
      const t0 = timed ? performance.now() : 0;
      const mine = this.#abi.work(this.job, 0);
      if (timed && mine > 0) this.#timeOwnPieces(performance.now() - t0, mine, work / pieces);
      this.#awaitPieces(pieces, epoch, this.#waitSpins(work, pieces));
      // what is not published by now, the calling thread runs itself (its workers may publish meanwhile)
      if (!this.#failedIn(epoch)) this.takenOver += this.#abi.adopt(this.job);
    } finally {
      // closed even when this thread's work threw, so no worker joins a job the next call rewrites (one
      // that is inside still checks the epoch before it claims or publishes anything)
      Atomics.store(w, OPEN, 0);
      failure = this.#takeFailure(epoch);
    }
    if (failure !== undefined) {
      throw new Error(
        `wasm-attention: a worker thread failed during this call (${failure}); the call was abandoned. ` +
          'The pool starts a fresh worker in its place; calls meanwhile run on the other threads',
      );
    }
  }

  /** Records what the calling thread took for `mine` pieces of `pieceWork` multiply-adds each: the wait's rate. */
  #timeOwnPieces(ms: number, mine: number, pieceWork: number): void {
    const spinsPerWork = (TAKE_OVER_PIECES * ms * this.#spinsPerMs) / (mine * pieceWork);
    const rate = Math.max(1, Math.min(Math.ceil(spinsPerWork * 2 ** 20), MAX_WAIT_SPINS)) | 0;
    this.#waitSpinsPerMega = rate;
    this.#waitCapWork = Math.min(Math.floor(MAX_WAIT_SPINS / rate) * 1024, MAX_WAIT_SPINS) | 0;
  }

  /**
   * How long the caller waits for the workers' pieces of a call (`work` multiply-adds in `pieces`) before it
   * takes them over, in spins: at least MIN_TAKE_OVER_MS. Small integers only, so it allocates in no tier.
   */
  #waitSpins(work: number, pieces: number): number {
    const pieceWork = (work - (work % pieces)) / pieces; // an exact quotient: no fraction
    if (pieceWork >= this.#waitCapWork) return MAX_WAIT_SPINS;
    return Math.max(this.#minWaitSpins, ((pieceWork >> 10) * this.#waitSpinsPerMega) >> 10);
  }

  /**
   * Waits until the call's `pieces` are published, `bound` spins have passed, or a worker failed in it: a
   * spin, since waking from Atomics.wait costs ~50 µs here (as much as a piece); a wait longer than SPIN_MS
   * sleeps in steps of a millisecond. A method of its own, of small integers only: when V8 enters it
   * mid-loop or runs it unoptimized, nothing is boxed.
   */
  #awaitPieces(pieces: number, epoch: number, bound: number): void {
    const w = this.#words;
    let finished = Atomics.load(w, FINISHED);
    for (let spin = 0; finished < pieces && spin < bound && !this.#failedIn(epoch); spin++) {
      if (this.#mayBlock && spin > this.#spins) {
        Atomics.wait(w, FINISHED, finished, 1);
        spin += this.#spinsPerMs;
      }
      finished = Atomics.load(w, FINISHED);
    }
  }

  #failedIn(epoch: number): boolean {
    return Atomics.load(this.#status, FAILED) !== 0 && Atomics.load(this.#status, FAILED_EPOCH) === epoch;
  }

  /** Tests only: waits (at most 10 s) until the worker a test hook names has taken it in this call. */
  #awaitTestHook(): void {
    const w = this.#words;
    const status = this.#status;
    for (let i = 0; i < 10_000; i++) {
      if (Atomics.load(status, TRAP_TEST) === 0 && Atomics.load(w, STOP_TEST) <= 0) return;
      if (this.#mayBlock) Atomics.wait(w, STOP_TEST, Atomics.load(w, STOP_TEST), 1);
    }
  }

  /**
   * The failure a worker recorded in call `epoch` ("thread n: message"), cleared, its worker replaced; or
   * undefined (a failure recorded in an older call, after the caller took its pieces over, only replaces it).
   */
  #takeFailure(epoch: number): string | undefined {
    const status = this.#status;
    const failed = Atomics.load(status, FAILED);
    if (failed === 0) return undefined;
    const thread = failed - 1;
    const inThisCall = Atomics.load(status, FAILED_EPOCH) === epoch;
    const length = Atomics.load(status, MESSAGE);
    let message = '';
    for (let i = 0; i < length; i++) message += String.fromCharCode(status[MESSAGE + 1 + i]);
    Atomics.store(status, FAILED, 0);
    const worker = this.#workers[thread - 1];
    if (worker) this.#replace(worker);
    return inThisCall ? `thread ${thread}: ${message}` : undefined;
  }

  /** Threads that join calls now: the calling thread and the counted workers (a failed one's place is empty until replaced). */
  get workingThreads(): number {
    let n = 1;
    for (const worker of this.#workers) if (this.#counts(worker)) n++;
    return n;
  }

  /** Settles once every resize and replacement asked for so far has run. */
  settled(): Promise<void> {
    return this.#resizing;
  }

  /**
   * Tests only (not part of the public API): the next call worker `thread` joins traps in its kernel after
   * the worker has claimed a piece (0: none).
   */
  trapInNextCall(thread: number): void {
    Atomics.store(this.#status, TRAP_TEST, thread);
  }

  /**
   * Tests only: in the next call worker `thread` joins, it stops at the piece it has just claimed, as a
   * worker descheduled for that long would, until resume(); with `exit`, it stops for good and ends, as a
   * worker killed mid-call. The caller waits until it has stopped (so the call is really missing it).
   */
  stopInNextCall(thread: number, exit = false): void {
    Atomics.store(this.#words, STOP_TEST, exit ? thread + STOP_AND_EXIT : thread);
  }

  /** Tests only: the thread number of the worker stopped by stopInNextCall, still stopped (0: none). */
  get stopped(): number {
    const word = Atomics.load(this.#words, STOP_TEST);
    return word < 0 && -word < STOP_AND_EXIT ? -word : 0;
  }

  /** Tests only: lets a worker stopped by stopInNextCall go on (it comes back late to its call). */
  resume(): void {
    Atomics.store(this.#words, STOP_TEST, 0);
    Atomics.notify(this.#words, STOP_TEST);
  }

  /**
   * Tests only: ends worker `thread` outright, as a runtime killing it would (the pool is not told);
   * settles once it has ended.
   */
  async killWorker(thread: number): Promise<void> {
    await this.#workers[thread - 1].terminate();
  }

  /** Makes room for every thread's scratch; false when memory cannot grow (the call then runs alone). */
  #ensureScratch(stride: number): boolean {
    if (this.#retired.length > 0) this.#releaseRetired();
    const bytes = stride * this.threads;
    if (bytes <= this.#scratchBytes) return this.#resultBytes === 0 || this.#resultsFit();
    try {
      const at = this.#heap.allocate(bytes);
      this.#release(this.#scratch);
      this.#scratch = at;
      this.#scratchBytes = bytes;
      return this.#resultsFit();
    } catch {
      return false;
    }
  }

  /** Whether the results areas cover every thread (after a resize added some): else makes them again. */
  #resultsFit(): boolean {
    if (this.#resultsThreads >= this.threads) return true;
    return this.#growResults(this.#resultBytes);
  }

  #resultsThreads = 0;

  #writeResults(): void {
    this.#words[Job.RESULTS] = this.#results;
    this.#words[Job.RESULT_BYTES] = this.#resultBytes;
    this.#words[Job.STATES] = this.#states;
    this.#words[Job.STATE_CAPACITY] = this.#stateCapacity;
  }

  /** Gives each thread a results area of at least `needed` bytes; false when memory cannot grow. */
  #growResults(needed: number): boolean {
    const bytes = Math.ceil(Math.max(needed, this.#resultBytes) / 64) * 64; // the heap's alignment
    try {
      const at = this.#heap.allocate(bytes * this.threads);
      this.#release(this.#results);
      this.#results = at;
      this.#resultBytes = bytes;
      this.#resultsThreads = this.threads;
      this.#writeResults();
      return true;
    } catch {
      return false; // memory cannot grow: calls run on the calling thread alone, or in tile mode
    }
  }

  /** Makes room for `pieces` states, zeroed (epoch 0: free in every call); false when memory cannot grow. */
  #growStates(pieces: number): boolean {
    // whole 64-byte blocks (8 states), as the heap hands them out, so `bytes` counts what is held
    const capacity = Math.ceil(Math.max(pieces, this.#stateCapacity * 2, 64) / 8) * 8;
    try {
      const at = this.#heap.allocate(capacity * 8);
      new Uint8Array(this.#abi.memory.buffer, at, capacity * 8).fill(0);
      this.#release(this.#states);
      this.#states = at;
      this.#stateCapacity = capacity;
      this.#writeResults();
      return true;
    } catch {
      return false;
    }
  }

  /** Whether some worker is still inside a call (it may write into its scratch and results). */
  #workerInside(): boolean {
    for (let thread = 1; thread <= MAX_THREADS; thread++) if (Atomics.load(this.#status, INSIDE + thread)) return true;
    return false;
  }

  /** Releases a block no call uses any more, or keeps it until no worker that may write into it is inside. */
  #release(at: number): void {
    if (!at) return;
    this.#retired.push(at);
    this.#releaseRetired();
  }

  #releaseRetired(): void {
    if (this.#workerInside()) return;
    for (const at of this.#retired) this.#heap.release(at);
    this.#retired.length = 0;
  }
}
