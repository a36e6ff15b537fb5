#!/usr/bin/env node
// Generates text with a Llama-family checkpoint in Hugging Face layout (config.json + model.safetensors).
//
//   node examples/model/cli.mjs examples/model/tiny --prompt "Fellow-Citizens of the Senate" --max-new-tokens 200
//   node examples/model/cli.mjs ~/models/SmolLM2-135M --ids 1,504,3250 --max-new-tokens 32
//
// A byte-level vocabulary (a config with at most 512 ids and no tokenizer.json, like the tiny model) takes
// the prompt's UTF-8 bytes as ids and prints the bytes it generates. Other vocabularies need a tokenizer,
// which this example does not include: give the prompt as ids (--ids) and it prints ids.
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { loadModel } from './index.mjs';

const HELP = `Usage: node examples/model/cli.mjs <model dir> (--prompt TEXT | --ids 1,2,3) [options]

  --prompt TEXT          the text to continue (byte-level vocabularies only)
  --ids LIST             the prompt as comma-separated token ids (any vocabulary)
  --max-new-tokens N     tokens to generate                                 [128]
  --temperature T        0: greedy; > 0: sample from softmax(logits / T)    [0]
  --top-k K              sample among the K most likely tokens (0: all)    [0]
  --seed S               seed of the sampler                                [0]
  --lookup               prompt-lookup speculative decoding (same tokens, fewer forward passes)
  --dtype D              float32 | int8: how the KV cache stores K and V    [float32]
  --threads T            auto | N: threads of the attention kernel          [auto]
  --no-bos               do not start the prompt with the config's bos_token_id
  -h, --help             this text`;

const { values, positionals } = parseArgs({
  allowPositionals: true,
  options: {
    prompt: { type: 'string' },
    ids: { type: 'string' },
    'max-new-tokens': { type: 'string', default: '128' },
    temperature: { type: 'string', default: '0' },
    'top-k': { type: 'string', default: '0' },
    seed: { type: 'string', default: '0' },
    lookup: { type: 'boolean', default: false },
    dtype: { type: 'string', default: 'float32' },
    threads: { type: 'string', default: 'auto' },
    'no-bos': { type: 'boolean', default: false },
    help: { type: 'boolean', short: 'h', default: false },
  },
});

/** @param {string} message */
function fail(message) {
  console.error(`cli: ${message}`);
  process.exit(2);
}

if (values.help || positionals.length !== 1) {
  console.log(HELP);
  process.exit(values.help ? 0 : 2);
}
const dir = positionals[0];
if (!existsSync(join(dir, 'config.json'))) fail(`${dir} has no config.json`);
if (values.dtype !== 'float32' && values.dtype !== 'int8') fail(`--dtype must be float32 or int8, got ${values.dtype}`);
const threads = values.threads === 'auto' ? 'auto' : Number(values.threads);

const model = await loadModel(dir, { dtype: values.dtype, threads });
const { config } = model;
const byteLevel = config.vocab_size <= 512 && !existsSync(join(dir, 'tokenizer.json'));

/** @type {number[]} */
let ids;
if (values.ids !== undefined) {
  ids = values.ids.split(',').map((s) => Number(s.trim()));
} else if (values.prompt !== undefined) {
  if (!byteLevel) {
    fail('this model has a tokenizer (tokenizer.json) that the example does not include: give the prompt as --ids');
  }
  ids = Array.from(new TextEncoder().encode(values.prompt));
} else fail('give --prompt TEXT or --ids 1,2,3');
const bos = config.bos_token_id;
if (!values['no-bos'] && Number.isInteger(bos) && ids[0] !== bos) ids.unshift(bos);
const eos = [config.eos_token_id].flat().filter((id) => Number.isInteger(id));

// bytes are printed as they come; a character split across tokens waits for its last byte
const decoder = new TextDecoder();
if (byteLevel && values.prompt !== undefined) process.stdout.write(values.prompt);
/** @param {number} id */
const show = (id) => {
  if (!byteLevel) process.stdout.write(`${id},`);
  else if (id < 256) process.stdout.write(decoder.decode(new Uint8Array([id]), { stream: true }));
};

const stats = { forwards: 0, drafted: 0, accepted: 0 };
const t0 = performance.now();
const generated = await model.generate(ids, {
  maxNewTokens: Number(values['max-new-tokens']),
  temperature: Number(values.temperature),
  topK: Number(values['top-k']),
  seed: Number(values.seed),
  lookup: values.lookup,
  stopTokens: eos,
  onToken: show,
  stats,
});
const seconds = (performance.now() - t0) / 1000;
process.stdout.write(`${byteLevel ? decoder.decode() : ''}\n`);
const lookupNote = values.lookup ? `, ${stats.accepted} of ${stats.drafted} drafted tokens accepted` : '';
console.error(
  `${generated.length} tokens in ${seconds.toFixed(2)} s (${(generated.length / seconds).toFixed(0)} tokens/s; ` +
    `prompt ${ids.length} tokens, ${stats.forwards} forward passes${lookupNote}; ${model.info.build}, ${model.info.threads} thread(s))`,
);
