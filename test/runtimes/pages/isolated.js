// The scenario on a cross-origin isolated page (scenario.html): threads wherever this browser shares a
// WebAssembly.Memory with a worker, which the page finds out on its own (not by asking the package). Where
// it does not (WebKitGTK 2.50: DataCloneError), init() runs one thread, and asking for two is refused
// saying what the browser lacks, with no hint about the headers this page already has.
import { init } from 'wasm-attention';
import { scenario } from '../scenario.js';

/** Whether a worker writes into the very memory this page holds: { shares, detail }. */
export async function workersShareMemory() {
  const memory = new WebAssembly.Memory({ initial: 1, maximum: 1, shared: true });
  const worker = new Worker(new URL('./memory-writer-worker.js', import.meta.url));
  try {
    worker.postMessage(memory);
  } catch (error) {
    worker.terminate();
    return { shares: false, detail: `postMessage threw ${error.name}: ${error.message}` };
  }
  await new Promise((resolve) => {
    worker.onmessage = resolve;
  });
  worker.terminate();
  const shares = Atomics.load(new Int32Array(memory.buffer), 0) === 1;
  return { shares, detail: shares ? 'the worker wrote into this memory' : 'the worker wrote into a copy' };
}

/** `threads`: '1' when the page's URL asks for one thread. */
export async function isolatedScenario({ threads }) {
  const sharing = await workersShareMemory();
  const report = await scenario({ threads: threads === '1' || !sharing.shares ? 1 : 'many' });
  report.sharedMemoryToWorkers = sharing;
  const check = (name, ok, detail) => {
    report.checks.push({ name, ok: !!ok, detail });
    report.ok &&= !!ok;
  };
  check('the page is cross-origin isolated', globalThis.crossOriginIsolated === true, 'crossOriginIsolated true');
  if (!sharing.shares) {
    const refused = await init({ threads: 2 }).then(
      () => '',
      (error) => String(error.message),
    );
    check(
      `this browser does not share memory with workers (${sharing.detail}): init({ threads: 2 }) says so, with no header hint`,
      /this browser does not pass shared memory to workers, even on this cross-origin isolated page/.test(refused) &&
        !/Cross-Origin/.test(refused),
      refused || 'it resolved',
    );
    check('after the rejection, init() still works (one thread)', (await init()).threads === 1, 'threads 1');
  }
  return report;
}
