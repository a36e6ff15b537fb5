// The browser example: init, a decode loop with its speed shown live, and a heatmap of causal attention
// weights (attentionWeights) where the mask shows as zeros above the diagonal and outside the window.
import { init, attentionWeights, KVCache } from 'wasm-attention';

const params = new URLSearchParams(location.search);
const totalSteps = Number(params.get('steps') ?? 2000);
const $ = (id) => document.getElementById(id);
const random = (n) => Float32Array.from({ length: n }, () => Math.random() * 2 - 1);

const { build } = await init();
$('build').textContent = build;

// ---- heatmap: 24 tokens attending causally with a window of 8 and 2 attention sinks
const T = 24,
  headDim = 16,
  window = 8,
  sinks = 2;
const q = random(T * headDim),
  k = random(T * headDim),
  v = random(T * headDim);
const weights = attentionWeights(q, k, v, { heads: 1, headDim, window, sinks }); // [T][1][T]
const canvas = $('heatmap'),
  ctx = canvas.getContext('2d'),
  cell = canvas.width / T;
const max = weights.reduce((m, w) => Math.max(m, w), 0);
for (let t = 0; t < T; t++) {
  for (let j = 0; j < T; j++) {
    const w = weights[t * T + j];
    // exact zeros (masked keys) in light grey; visible keys from pale yellow to dark red by weight
    ctx.fillStyle =
      w === 0 ? '#e8e8e8' : `hsl(${50 - 50 * Math.sqrt(w / max)}, 100%, ${85 - 55 * Math.sqrt(w / max)}%)`;
    ctx.fillRect(j * cell, t * cell, cell, cell);
  }
}
let maskOk = true;
for (let t = 0; t < T; t++)
  for (let j = 0; j < T; j++) {
    const visible = j <= t && (j > t - window || j < sinks);
    if (visible !== weights[t * T + j] > 0) maskOk = false;
  }
$('heatmap-detail').textContent =
  `query (rows) × key (columns), ${T} tokens, window ${window}, ${sinks} sinks: ` +
  `grey cells are exactly 0 (${maskOk ? 'mask exact' : 'MASK WRONG'})`;

// ---- decode loop: prefill 128 tokens, then one token at a time, timing as it goes
const shape = { layers: 4, heads: 8, kvHeads: 2, headDim: 64 };
const cache = new KVCache({ ...shape, maxTokens: 128 + totalSteps, rope: {} });
const row = shape.heads * shape.headDim,
  kvRow = shape.kvHeads * shape.headDim;
for (let l = 0; l < shape.layers; l++) cache.attend(l, random(128 * row), random(128 * kvRow), random(128 * kvRow));
const tq = random(row),
  tk = random(kvRow),
  tv = random(kvRow),
  out = new Float32Array(row);
let done = 0,
  elapsed = 0,
  tokensPerSecond = 0;
await new Promise((resolve) => {
  function frame() {
    const t0 = performance.now();
    const batch = Math.min(50, totalSteps - done);
    for (let i = 0; i < batch; i++) for (let l = 0; l < shape.layers; l++) cache.attend(l, tq, tk, tv, out);
    elapsed += performance.now() - t0;
    done += batch;
    tokensPerSecond = done / (elapsed / 1000);
    $('speed').textContent = `${tokensPerSecond.toFixed(0)} tokens/s`;
    $('decode-detail').textContent =
      `${done} / ${totalSteps} steps, ${cache.length} tokens cached; ` +
      `4 layers, 8 query heads, 2 kv heads, head size 64`;
    if (done < totalSteps) requestAnimationFrame(frame);
    else resolve();
  }
  requestAnimationFrame(frame);
});

// what a test reads (test/runtimes/run.mjs opens this page in Chromium)
const pixel = (t, j) => Array.from(ctx.getImageData(j * cell + cell / 2, t * cell + cell / 2, 1, 1).data.slice(0, 3));
const grey = [232, 232, 232];
const drawnOk =
  [
    [0, 5],
    [3, 20],
    [20, 5],
    [23, 14],
  ].every(([t, j]) => pixel(t, j).join() === grey.join()) && // above diagonal, outside window
  [
    [0, 0],
    [20, 0],
    [20, 1],
    [20, 20],
  ].every(([t, j]) => pixel(t, j).join() !== grey.join()); // diagonal, sinks
globalThis.__result = {
  build,
  ok: maskOk && drawnOk && done === totalSteps && out.every(Number.isFinite),
  checks: [
    {
      name: 'heatmap weights: zeros exactly where masked',
      ok: maskOk,
      detail: `${T}×${T}, window ${window}, ${sinks} sinks`,
    },
    { name: 'heatmap drawn: masked cells grey, diagonal and sinks coloured', ok: drawnOk, detail: '' },
    {
      name: 'decode loop ran with its speed shown',
      ok: done === totalSteps && /tokens\/s/.test($('speed').textContent),
      detail: $('speed').textContent,
    },
  ],
};
