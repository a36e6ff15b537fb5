// Memory follows the tokens, and forks share their prefix (issue #9). Prints, for a Llama-3.2-1B-shaped
// cache (16 layers, 32 heads, 8 kv heads, head size 64):
//   - byteLength and the instance's WebAssembly memory at 0, 100 and 10,000 tokens under a 32,768 limit;
//   - 100 forks of a 2,000-token prefix, each decoding a few tokens in every layer: the memory they take
//     against the prefix plus the forks' own pages (the target: at most 1.2×), and the time of fork().
// Each section runs in its own process, so each starts from an empty WebAssembly memory.
// Usage: npm run bench:memory [-- --build simd --forks 100 --prefix 2000 --steps 4] (`npm run build` first)

import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { loadPackage, median, parseArgs } from '../test/support/scripts.mjs';

const opts = parseArgs(process.argv.slice(2), { build: 'auto', forks: 100, prefix: 2000, steps: 4, section: '' });
if (opts.help) {
  console.log(
    'node bench/memory.mjs [--build auto|relaxed-simd|simd|scalar] [--forks 100] [--prefix 2000] [--steps 4]',
  );
  process.exit(0);
}
const SHAPE = { layers: 16, heads: 32, kvHeads: 8, headDim: 64 };
const MiB = (/** @type {number} */ n) => `${(n / 2 ** 20).toFixed(2)} MiB`;
/** `n` tokens of k (or v) rows, deterministic */
const rows = (/** @type {number} */ n, /** @type {number} */ seed) =>
  Float32Array.from({ length: n * SHAPE.kvHeads * SHAPE.headDim }, (_, i) => Math.sin(i * 0.37 + seed));

if (!opts.section) {
  for (const section of ['limit', 'forks']) {
    const args = [fileURLToPath(import.meta.url), ...process.argv.slice(2), '--section', section];
    const run = spawnSync(process.execPath, [...process.execArgv, ...args], { stdio: 'inherit' });
    if (run.status !== 0) process.exit(run.status ?? 1);
  }
} else {
  const pkg = await loadPackage();
  const info = await pkg.init({ build: opts.build });
  // the instance's memory (a cache's byteLength is public; the memory it lives in is not)
  const { activeInstance } = await import(new URL('../dist/init.js', import.meta.url).href);
  const wasmBytes = () => activeInstance().abi.memory.buffer.byteLength;
  if (opts.section === 'limit') {
    console.log(`wasm-attention memory, build ${info.build}, Node ${process.version}; shape ${JSON.stringify(SHAPE)}`);
    limit(pkg, wasmBytes);
  } else {
    forks(pkg, wasmBytes);
  }
}

/** byteLength and WebAssembly memory as a cache under a 32,768-token limit fills. */
function limit(/** @type {any} */ pkg, /** @type {() => number} */ wasmBytes) {
  console.log('\n## A cache under a 32,768-token limit\n');
  console.log('| tokens per layer | byteLength | WebAssembly memory |');
  console.log('| ---: | ---: | ---: |');
  const cache = new pkg.KVCache({ ...SHAPE, maxTokens: 32768 });
  let held = 0;
  for (const tokens of [0, 100, 10_000]) {
    if (tokens > held) {
      const k = rows(tokens - held, 1);
      for (let l = 0; l < SHAPE.layers; l++) cache.append(l, k, k);
      held = tokens;
    }
    console.log(`| ${tokens} | ${cache.byteLength} (${MiB(cache.byteLength)}) | ${MiB(wasmBytes())} |`);
  }
  cache.dispose();
}

/** Forks of one prefix, each decoding a few tokens in every layer: their memory, and fork()'s time. */
function forks(/** @type {any} */ pkg, /** @type {() => number} */ wasmBytes) {
  console.log(
    `\n## ${opts.forks} forks of a ${opts.prefix}-token prefix, each decoding ${opts.steps} tokens in every layer\n`,
  );
  const memoryBefore = wasmBytes();
  const prefix = new pkg.KVCache({ ...SHAPE, maxTokens: 32768 });
  const k = rows(opts.prefix, 2);
  for (let l = 0; l < SHAPE.layers; l++) prefix.append(l, k, k);
  const query = Float32Array.from({ length: SHAPE.heads * SHAPE.headDim }, (_, i) => Math.cos(i));
  const key = rows(1, 4);
  const out = new Float32Array(query.length);
  const forkMs = [];
  const children = [];
  for (let f = 0; f < opts.forks; f++) {
    const t0 = performance.now();
    const child = prefix.fork();
    forkMs.push(performance.now() - t0);
    children.push(child);
    for (let s = 0; s < opts.steps; s++) {
      for (let l = 0; l < SHAPE.layers; l++) child.attend(l, query, key, key, out);
    }
  }
  // a fork's own pages: copies of the shared, partly filled last page it writes into, and any new pages
  const pageBytes = 64 * SHAPE.headDim * 4 + 64; // and its refcount
  const pagesPerHead = (/** @type {number} */ tokens) => Math.ceil(tokens / 64);
  const sharedFull = Math.floor(opts.prefix / 64);
  const ownPerFork =
    SHAPE.layers * 2 * SHAPE.kvHeads * (pagesPerHead(opts.prefix + opts.steps) - sharedFull) * pageBytes;
  const used = wasmBytes() - memoryBefore;
  const budget = prefix.byteLength + opts.forks * ownPerFork;
  console.log('| what | bytes |');
  console.log('| --- | ---: |');
  console.log(`| the prefix cache (byteLength) | ${MiB(prefix.byteLength)} |`);
  console.log(`| one fork's own pages (copies of the last, partly filled page; new pages) | ${MiB(ownPerFork)} |`);
  console.log(`| prefix + ${opts.forks} forks' own pages | ${MiB(budget)} |`);
  console.log(
    `| WebAssembly memory the prefix and the forks took | ${MiB(used)} (${(used / budget).toFixed(3)}× the line above; target ≤ 1.2×) |`,
  );
  console.log(`| each fork's byteLength (shared pages included) | ${MiB(children[0].byteLength)} |`);
  const sorted = [...forkMs].sort((a, b) => a - b);
  console.log(
    `\nfork() of the ${opts.prefix}-token cache: median ${median(forkMs).toFixed(3)} ms, ` +
      `min ${sorted[0].toFixed(3)} ms, max ${sorted[sorted.length - 1].toFixed(3)} ms over ${forkMs.length} forks (target < 1 ms)`,
  );
  for (const child of children) child.dispose();
  prefix.dispose();
}
