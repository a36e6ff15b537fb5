// The cost of KVCache.save() and KVCache.load() per MB of saved state (issue: the cache's lifecycle).
// Usage: node bench/save-load.mjs [--build simd] ; prints a table, writes bench/results/save-load.json
import { mkdirSync, writeFileSync } from 'node:fs';
import { init, KVCache } from '../dist/index.js';

const build = /** @type {import('../dist/index.js').Build | undefined} */ (
  process.argv.includes('--build') ? process.argv[process.argv.indexOf('--build') + 1] : undefined
);
const info = await init(build ? { build } : undefined);
const shape = { layers: 16, heads: 32, kvHeads: 8, headDim: 64 }; // Llama-3.2-1B's attention
const rows = [];
for (const dtype of /** @type {const} */ (['float32', 'int8'])) {
  for (const tokens of [256, 1024, 4096]) {
    const cache = new KVCache({ ...shape, maxTokens: tokens, dtype });
    const kv = new Float32Array(tokens * shape.kvHeads * shape.headDim).map((_, i) => Math.sin(i * 0.37));
    for (let layer = 0; layer < shape.layers; layer++) cache.append(layer, kv, kv);
    /** @param {() => void} fn @param {number} reps */
    const time = (fn, reps) => {
      const times = [];
      for (let i = 0; i < reps; i++) {
        const t0 = performance.now();
        fn();
        times.push(performance.now() - t0);
      }
      return times.sort((a, b) => a - b)[Math.floor(times.length / 2)];
    };
    let saved = cache.save();
    const saveMs = time(() => {
      saved = cache.save();
    }, 7);
    const loadMs = time(() => KVCache.load(saved).dispose(), 7);
    const mb = saved.byteLength / 1e6;
    rows.push({ dtype, tokens, mb, saveMs, loadMs, saveMBs: mb / (saveMs / 1000), loadMBs: mb / (loadMs / 1000) });
    cache.dispose();
  }
}
console.log(
  `KVCache.save()/load(), ${shape.layers} layers × ${shape.kvHeads} kv heads × head size ${shape.headDim}, build ${info.build}, Node ${process.version}`,
);
console.log('| dtype | tokens | saved MB | save ms | load ms | save MB/s | load MB/s |');
console.log('| --- | ---: | ---: | ---: | ---: | ---: | ---: |');
for (const r of rows) {
  console.log(
    `| ${r.dtype} | ${r.tokens} | ${r.mb.toFixed(1)} | ${r.saveMs.toFixed(1)} | ${r.loadMs.toFixed(1)} | ${r.saveMBs.toFixed(0)} | ${r.loadMBs.toFixed(0)} |`,
  );
}
mkdirSync(new URL('./results/', import.meta.url), { recursive: true });
writeFileSync(
  new URL('./results/save-load.json', import.meta.url),
  JSON.stringify({ build: info.build, node: process.version, rows }, null, 2),
);
