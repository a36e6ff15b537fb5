// A twin for bench/many-bandwidth.mjs: a worker thread with its own instance of the package and its own
// caches (the same shape, data and dtype as the main thread's), running the same 32 lone attend calls at
// one thread over and over while the main thread times its own. Nothing is shared but the machine, so how
// much the twin slows the main thread's step is what two cores can give this workload at best: the
// ceiling of any 2-thread way to run it, attendMany's included.

import { Worker, isMainThread, parentPort, workerData } from 'node:worker_threads';
import { loadPackage } from '../test/support/scripts.mjs';
import { SHAPES, batchData, batchRunners } from './suite.mjs';

/**
 * Starts the twin for a workload; resolves once its caches are filled.
 * @param {{ shape: string, count: number, length: number, dtype: string }} workload
 */
export async function startTwin(workload) {
  const worker = new Worker(new URL(import.meta.url), { workerData: workload });
  // [0]: run (1) or rest (0), set here; [1]: steps done and [2]: resting (1) or not, set by the twin
  const control = new Int32Array(new SharedArrayBuffer(12));
  await new Promise((resolve, reject) => {
    worker.once('message', resolve);
    worker.once('error', reject);
    worker.postMessage(control);
  });
  return {
    /**
     * Runs `step` on this thread while the twin runs its lone calls; returns what `step` returns, timed
     * only once the twin has done a whole step, so every timed moment has both cores busy; returns once
     * the twin rests again, so it slows nothing timed after.
     * @template T @param {() => T} step @returns {T}
     */
    beside(step) {
      const done = Atomics.load(control, 1);
      Atomics.store(control, 0, 1);
      Atomics.notify(control, 0);
      while (Atomics.load(control, 1) < done + 1) Atomics.wait(control, 1, Atomics.load(control, 1), 50);
      const result = step();
      Atomics.store(control, 0, 0);
      while (Atomics.load(control, 2) === 0) Atomics.wait(control, 2, 0, 50);
      return result;
    },
    stop: () => worker.terminate(),
  };
}

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
      Atomics.store(control, 2, 1);
      Atomics.notify(control, 2);
      while (Atomics.load(control, 0) === 0) Atomics.wait(control, 0, 0);
      Atomics.store(control, 2, 0);
      lone();
      Atomics.add(control, 1, 1);
      Atomics.notify(control, 1);
    }
  });
}
