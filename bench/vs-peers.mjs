// `npm run bench:peers`: this package against onnxruntime-web (WASM backend, its GroupQueryAttention and
// ONNX Attention ops) and onnxruntime-node (native CPU, one intra-op thread), interleaved in ONE process.
//
// `npm run bench` runs every implementation in its own child process, which is what a user gets but
// moves a row by 25% between processes on a shared machine; here each round times one batch of each
// implementation in turn (the order rotating), and a ratio is the median over the rounds of that round's
// peer time ÷ ours, the peer's faster op taken per round. Ours and onnxruntime-web run on `--threads`
// threads (ort.env.wasm.numThreads, set once per process), onnxruntime-node on one.
//
//   node bench/vs-peers.mjs [--threads 2] [--rounds 15] [--batch-ms 100] [--shapes gpt2,llama] [--decode 2048,8192] [--prefill 512]

import { fmtX, loadPackage, median, parseArgs } from '../test/support/scripts.mjs';
import { SHAPES, filledCache, workloadData } from './suite.mjs';
import { buildModel } from './ort/models.mjs';
import { feeds } from './ort/feeds.mjs';

const opts = parseArgs(process.argv.slice(2), {
  threads: 2,
  rounds: 15,
  batchMs: 100,
  shapes: 'gpt2,llama',
  decode: '2048,8192',
  prefill: '512',
});
if (opts.help) {
  console.log(
    'node bench/vs-peers.mjs [--threads N] [--rounds N] [--batch-ms MS] [--shapes gpt2,llama] [--decode L,…] [--prefill T,…]',
  );
  process.exit(0);
}
const list = (/** @type {string} */ s) => String(s).split(',').filter(Boolean);
const threads = Number(opts.threads);

const pkg = await loadPackage();
const info = await pkg.init({ threads });
const web = await import('onnxruntime-web');
web.env.wasm.numThreads = threads;
const node = (await import('onnxruntime-node')).default;
/** @type {any} */
const nodeOptions = {
  executionProviders: ['cpu'],
  intraOpNumThreads: 1,
  interOpNumThreads: 1,
  executionMode: 'sequential',
  graphOptimizationLevel: 'all',
};
/** @type {any} */
const webOptions = { executionProviders: ['wasm'], graphOptimizationLevel: 'all' };

/** Per-call ms of `fn` over one batch of about batchMs. @param {() => unknown} fn */
async function batch(fn) {
  const t0 = performance.now();
  let calls = 0;
  do {
    await fn();
    calls++;
  } while (performance.now() - t0 < opts.batchMs);
  return (performance.now() - t0) / calls;
}

console.log(
  `# wasm-attention (${info.build}, ${info.threads} threads) vs onnxruntime-web (${threads} threads) and onnxruntime-node (1 thread), interleaved in one process`,
);
console.log(`node ${process.version}; ${opts.rounds} rounds of ${opts.batchMs} ms batches; medians\n`);
console.log(
  '| shape | workload | ours ms | ort-web ms (faster op) | ort-node ms (faster op) | × ort-web | × ort-node |',
);
console.log('| --- | --- | ---: | ---: | ---: | ---: | ---: |');

for (const shapeName of list(opts.shapes)) {
  const s = SHAPES[/** @type {keyof typeof SHAPES} */ (shapeName)];
  const workloads = [
    ...list(opts.decode).map((n) => /** @type {const} */ (['decode', Number(n)])),
    ...list(opts.prefill).map((n) => /** @type {const} */ (['prefill', Number(n)])),
  ];
  for (const [kind, n] of workloads) {
    const x = workloadData(shapeName, kind, n);
    const out = new Float32Array(x.q.length);
    /** @type {() => unknown} */
    let ours;
    if (kind === 'decode') {
      const cache = filledCache(
        pkg,
        s,
        'float32',
        n + 1,
        /** @type {Float32Array} */ (x.pastK),
        /** @type {Float32Array} */ (x.pastV),
        n,
      );
      ours = () => {
        cache.attend(0, x.q, x.k, x.v, out);
        cache.truncate(n);
      };
    } else {
      const cache = new pkg.KVCache({ heads: s.heads, kvHeads: s.kvHeads, headDim: s.headDim, maxTokens: n });
      ours = () => {
        cache.attend(0, x.q, x.k, x.v, out);
        cache.reset();
      };
    }
    /** @type {Record<string, () => Promise<unknown>>} */
    const peers = {};
    for (const [flavor, ort, sessionOptions] of /** @type {[string, any, any][]} */ ([
      ['web', web, webOptions],
      ['node', node, nodeOptions],
    ])) {
      for (const op of /** @type {const} */ (['gqa', 'mha'])) {
        const session = await ort.InferenceSession.create(await buildModel(op, kind, s), sessionOptions);
        const f = feeds(ort, op, s, x);
        peers[`${flavor}-${op}`] = async () => {
          const r = await session.run(f, ['output']);
          r.output.dispose?.();
        };
      }
    }
    /** @type {Record<string, () => Promise<unknown>>} */
    const impls = { ours: async () => ours(), ...peers };
    const names = Object.keys(impls);
    for (const name of names) await batch(impls[name]); // warm-up
    /** @type {Record<string, number[]>} */
    const times = Object.fromEntries(names.map((k) => [k, []]));
    const webX = [];
    const nodeX = [];
    for (let round = 0; round < opts.rounds; round++) {
      for (let i = 0; i < names.length; i++) {
        const name = names[(i + round) % names.length];
        times[name].push(await batch(impls[name]));
      }
      const mine = times.ours[round];
      webX.push(Math.min(times['web-gqa'][round], times['web-mha'][round]) / mine);
      nodeX.push(Math.min(times['node-gqa'][round], times['node-mha'][round]) / mine);
    }
    const m = (/** @type {string} */ k) => median(times[k]);
    const fmt = (/** @type {number} */ v) => (v < 1 ? v.toFixed(3) : v.toFixed(2));
    console.log(
      `| ${s.label} | ${kind} ${kind === 'decode' ? `L=${n}` : `T=${n}`} | ${fmt(m('ours'))} | ${fmt(Math.min(m('web-gqa'), m('web-mha')))} | ${fmt(Math.min(m('node-gqa'), m('node-mha')))} | ${fmtX(median(webX))} | ${fmtX(median(nodeX))} |`,
    );
  }
}
// onnxruntime-web's worker threads may keep the process alive
process.exit(0);
