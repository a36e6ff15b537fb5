// The chat page: the tiny model of examples/model/tiny generating in the page, streamed token by token,
// continuing one cache across turns; tokens/s and threads shown; and the attention of a real head of the
// model over the conversation (attentionOf → the package's attentionWeights), drawn as a heatmap and on
// the text when a character is hovered.
import { loadModel } from '../model/index.mjs';

const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);
const modelUrl = new URL('../model/tiny/', import.meta.url);

const model = await loadModel(modelUrl);
const { config } = model;
const BOS = config.bos_token_id;
const EOS = config.eos_token_id;
const context = config.max_position_embeddings;
$('build').textContent = model.info.build;
$('threads').textContent = String(model.info.threads);
$('model').textContent =
  `${(model.parameters / 1e6).toFixed(2)} M parameters, ${config.num_hidden_layers} layers, ` +
  `${config.num_attention_heads}/${config.num_key_value_heads} heads, byte-level, context ${context}`;
for (let l = 0; l < config.num_hidden_layers; l++) $('layer').add(new Option(String(l), String(l)));
for (let h = 0; h < config.num_attention_heads; h++) $('head').add(new Option(String(h), String(h)));
$('layer').value = String(config.num_hidden_layers - 1);

// the conversation: its ids, one span per id, and the cache that holds all of them but the last
let ids = [BOS];
let spans = [null];
let cache = model.createCache({ maxTokens: context });
let attention = null; // [T][heads][T] of the selected layer, for the ids at the last drawing

/** A span for one byte (a character split across bytes shows on its last byte). */
const decoder = new TextDecoder();
function addToken(id, kind) {
  const span = document.createElement('span');
  span.className = kind;
  span.textContent = id < 256 ? decoder.decode(Uint8Array.of(id), { stream: true }) : '';
  span.dataset.index = String(ids.length);
  $('text').append(span);
  ids.push(id);
  spans.push(span);
}

function resetConversation() {
  cache.dispose();
  cache = model.createCache({ maxTokens: context });
  ids = [BOS];
  spans = [null];
  attention = null;
  $('text').replaceChildren();
  drawHeatmap();
}

/** Generates up to `count` tokens after the user's text, streaming them; resolves to the new ids. */
async function turn(text, count, lookup) {
  for (const byte of new TextEncoder().encode(text)) addToken(byte, 'prompt');
  if (ids.length >= context) resetConversation();
  const maxNewTokens = Math.min(count, context - ids.length);
  let first = 0;
  let shown = 0;
  let lastPaint = performance.now();
  const t0 = performance.now();
  const generated = await model.generate(ids, {
    maxNewTokens,
    lookup,
    cache,
    stopTokens: [EOS],
    onToken: async (id) => {
      if (shown++ === 0) first = performance.now();
      addToken(id, 'model');
      // let the page paint every ~30 ms: the tokens appear as they come
      if (performance.now() - lastPaint > 30) {
        const seconds = (performance.now() - first) / 1000;
        if (shown > 1) $('speed').textContent = `${((shown - 1) / seconds).toFixed(0)} tokens/s`;
        await new Promise((resolve) => setTimeout(resolve, 0));
        lastPaint = performance.now();
      }
    },
  });
  // the cache holds every id but the last one generated; the next turn's generate feeds the rest
  const seconds = (performance.now() - first) / 1000;
  const rate = generated.length > 1 ? (generated.length - 1) / seconds : 0;
  $('speed').textContent =
    `${rate.toFixed(0)} tokens/s · ${generated.length} tokens in ${((performance.now() - t0) / 1000).toFixed(2)} s ` +
    `· ${model.info.threads} thread${model.info.threads > 1 ? 's' : ''}${lookup ? ' · prompt lookup' : ''}`;
  drawHeatmap();
  return { generated, rate };
}

/** The selected head's weights over the conversation, as a heatmap (rows: queries, columns: keys). */
function drawHeatmap() {
  const canvas = $('heatmap');
  const ctx = canvas.getContext('2d');
  ctx.fillStyle = '#fff';
  ctx.fillRect(0, 0, canvas.width, canvas.height);
  const T = ids.length;
  if (T < 2) return;
  attention = model.attentionOf(ids, Number($('layer').value));
  const heads = config.num_attention_heads;
  const head = Number($('head').value);
  const cell = canvas.width / T;
  for (let t = 0; t < T; t++) {
    for (let j = 0; j <= t; j++) {
      const w = attention[(t * heads + head) * T + j];
      ctx.fillStyle = `hsl(${50 - 50 * Math.sqrt(w)}, 100%, ${97 - 67 * Math.sqrt(w)}%)`;
      ctx.fillRect(j * cell, t * cell, Math.ceil(cell), Math.ceil(cell));
    }
  }
  $('heatmap-detail').textContent =
    `layer ${$('layer').value}, head ${head}: ${T} tokens, query (rows) × key (columns); ` +
    `darker is more weight (each row sums to 1 over the keys up to its own position)`;
}

/** Hovering the character at index t colours every earlier character by how much t attended to it. */
function showAttentionOf(t) {
  for (const span of spans) if (span) span.style.background = '';
  if (!attention || t >= ids.length || attention.length !== ids.length * config.num_attention_heads * ids.length)
    return;
  const T = ids.length;
  const head = Number($('head').value);
  for (let j = 1; j <= t; j++) {
    const w = attention[(t * config.num_attention_heads + head) * T + j];
    spans[j].style.background = `rgba(229, 57, 53, ${Math.min(1, Math.sqrt(w)).toFixed(3)})`;
  }
  spans[t].classList.add('hovered');
}
$('text').addEventListener('mouseover', (e) => {
  const index = Number(e.target?.dataset?.index);
  if (Number.isInteger(index)) showAttentionOf(index);
});
$('text').addEventListener('mouseout', (e) => {
  e.target?.classList?.remove('hovered');
  for (const span of spans) if (span) span.style.background = '';
});
$('layer').addEventListener('change', drawHeatmap);
$('head').addEventListener('change', drawHeatmap);
$('reset').addEventListener('click', resetConversation);
$('form').addEventListener('submit', async (e) => {
  e.preventDefault();
  $('send').disabled = true;
  try {
    await turn($('prompt').value, Number($('tokens').value), $('lookup').checked);
    $('prompt').value = '';
  } finally {
    $('send').disabled = false;
  }
});
$('send').disabled = false;
$('reset').disabled = false;

// ?tokens=N: one turn with the default prompt, checked against PyTorch's greedy continuation (what the
// runtime matrix reads)
if (params.has('tokens')) {
  const count = Number(params.get('tokens'));
  const reference = await (await fetch(new URL('reference.json', modelUrl))).json();
  const prompt = new TextDecoder().decode(Uint8Array.from(reference.greedy.prompt_ids.slice(1)));
  $('prompt').value = '';
  const { generated, rate } = await turn(prompt, count, params.has('lookup'));
  const expected = reference.greedy.new_ids.slice(0, count);
  const sameTokens = generated.join() === expected.join();
  const T = ids.length;
  const heads = config.num_attention_heads;
  let rowsOk = attention !== null && attention.length === T * heads * T;
  for (let t = 0; rowsOk && t < T; t++) {
    let sum = 0;
    for (let j = 0; j < T; j++) sum += attention[(t * heads + 0) * T + j];
    rowsOk =
      Math.abs(sum - 1) < 1e-4 &&
      attention[(t * heads + 0) * T + Math.min(T - 1, t + 1)] === (t + 1 < T ? 0 : attention[t * heads * T + t]);
  }
  globalThis.__result = {
    build: model.info.build,
    threads: model.info.threads,
    matmul: model.info.matmul,
    ok: sameTokens && rowsOk && /tokens\/s/.test($('speed').textContent),
    tokens: generated,
    checks: [
      { name: `${count} greedy tokens equal PyTorch's`, ok: sameTokens, detail: `${rate.toFixed(0)} tokens/s` },
      {
        name: 'attention heatmap: causal rows summing to 1',
        ok: rowsOk,
        detail: `${T}×${T}, layer ${$('layer').value}`,
      },
      {
        name: 'tokens/s and threads shown',
        ok: /tokens\/s/.test($('speed').textContent),
        detail: $('speed').textContent,
      },
    ],
  };
}
