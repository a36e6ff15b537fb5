// A twin for bench/many-bandwidth.mjs: a worker thread with its own instance of the package and its own
// caches (the same shape, data and dtype as the main thread's), running the same 32 lone attend calls at
// one thread over and over while the main thread times its own. Nothing is shared but the machine, so how
// much the twin slows the main thread's step estimates what two cores give this workload: what a 2-thread
// way to run it (attendMany's) can hope for. An estimate, not a bound: the twins hold two sets of caches
// (twice the K/V in the last-level cache) where a batch on two threads holds one.

import { Worker, isMainThread, parentPort, workerData } from 'node:worker_threads';
import { loadPackage } from '../test/support/scripts.mjs';
import { SHAPES, batchData, batchRunners } from './suite.mjs';

/**
 * Starts the twin for a workload; resolves once its caches are filled.
 * @param {{ shape: string, count: number, length: number, dtype: string }} workload
 */
export async function startTwin(workload) {
  const worker = new Worker(new URL(import.meta.url), { workerData: workload });
  const control = new Int32Array(new SharedArrayBuffer(12));
  await new Promise((resolve, reject) => {
    worker.once('message', resolve);
    worker.once('error', reject);
    worker.postMessage(control);
  });
  /** Waits while word `i` holds `value`; throws when the twin failed or a minute passed. */
  const waitWhile = (/** @type {number} */ i, /** @type {number} */ value) => {
    const t0 = performance.now();
    while (Atomics.load(control, i) === value) {
      if (Atomics.load(control, STATE) === FAILED)
        throw new Error('bench/twin: the twin failed (its error is on stderr)');
      if (performance.now() - t0 > 60_000) throw new Error('bench/twin: the twin did not answer within a minute');
      Atomics.wait(control, i, value, 50);
    }
  };
  return {
    /**
     * Runs `step` on this thread while the twin runs its lone calls; returns what `step` returns, timed
     * only once the twin has done a whole step, so every timed moment has both cores busy; returns once
     * the twin rests again, so it slows nothing timed after.
     * @template T @param {() => T} step @returns {T}
     */
    beside(step) {
      const done = Atomics.load(control, DONE);
      Atomics.store(control, COMMAND, RUN);
      Atomics.notify(control, COMMAND);
      waitWhile(DONE, done);
      const result = step();
      Atomics.store(control, COMMAND, REST);
      waitWhile(STATE, RUNNING);
      return result;
    },
    stop: () => worker.terminate(),
  };
}

// The control words: the command (set by the main thread), the steps done and the twin's state (set by
// the twin). The twin says it rests only once it has finished its step and found the command is rest.
const COMMAND = 0,
  DONE = 1,
  STATE = 2;
const REST = 0,
  RUN = 1;
const RUNNING = 0,
  RESTING = 1,
  FAILED = 2;

if (!isMainThread) {
  const { shape: shapeName, count, length, dtype } = workerData;
  const pkg = await loadPackage();
  await pkg.init({ threads: 1 });
  const shape = SHAPES[/** @type {keyof typeof SHAPES} */ (shapeName)];
  // its own data (another seed's numbers would not change the bytes read or the arithmetic)
  const { lone } = batchRunners(pkg, shape, batchData(shape, { count, length }), { length, dtype });
  lone();
  parentPort?.once('message', (/** @type {Int32Array} */ control) => {
    parentPort?.postMessage('ready');
    for (;;) {
      if (Atomics.load(control, COMMAND) === REST) {
        Atomics.store(control, STATE, RESTING);
        Atomics.notify(control, STATE);
        while (Atomics.load(control, COMMAND) === REST) Atomics.wait(control, COMMAND, REST);
        Atomics.store(control, STATE, RUNNING);
      }
      try {
        lone();
      } catch (error) {
        Atomics.store(control, STATE, FAILED);
        Atomics.notify(control, STATE);
        Atomics.notify(control, DONE);
        throw error;
      }
      Atomics.add(control, DONE, 1);
      Atomics.notify(control, DONE);
    }
  });
}
