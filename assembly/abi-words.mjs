#!/usr/bin/env node
// The facade's copy of the kernel's word offsets, generated from the kernel's own source so that they are
// written once: the `export const NAME: i32 = <integer>;` lines of descriptor.ts (the cache descriptor)
// and job.ts (the job block of a threaded call) become src/abi-words.ts, and job.ts's also the generated
// block of src/attention-worker.ts (a worker script imports nothing, so it carries its own copy).
//
//   node assembly/abi-words.mjs           rewrites both files where they differ (npm run build runs it)
//   node assembly/abi-words.mjs --check   changes nothing; exits 1 naming each file that is out of date
//
// test/abi.test.ts runs the check, and checks the wasm's answers against the generated numbers.

import { readFileSync, writeFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

const root = new URL('../', import.meta.url);
const path = (/** @type {string} */ file) => fileURLToPath(new URL(file, root));

/** Where each block of words comes from, and what its generated object is called. */
export const SOURCES = [
  { file: 'assembly/descriptor.ts', name: 'Descriptor', what: 'a cache descriptor' },
  { file: 'assembly/job.ts', name: 'Job', what: 'the job block of a threaded call, and its modes' },
];

export const WORDS_FILE = 'src/abi-words.ts';
export const WORKER_FILE = 'src/attention-worker.ts';
export const BEGIN = '// <generated from assembly/job.ts by assembly/abi-words.mjs: edit that file, not this block>';
export const END = '// </generated>';

/**
 * The i32 constants an AssemblyScript module exports, in source order, as [name, value]. Any other
 * exported const is refused: the generator would otherwise silently leave it out.
 * @param {string} source
 * @returns {Array<[string, number]>}
 */
export function constantsOf(source, file = 'the source') {
  /** @type {Array<[string, number]>} */
  const constants = [];
  for (const line of source.split('\n')) {
    if (!line.startsWith('export const ')) continue;
    const match = /^export const ([A-Z][A-Z0-9_]*): i32 = (-?\d+);$/.exec(line.trim());
    if (!match) throw new Error(`${file}: cannot read "${line.trim()}" (expected export const NAME: i32 = <integer>;)`);
    constants.push([match[1], Number(match[2])]);
  }
  if (constants.length === 0) throw new Error(`${file}: no exported i32 constants`);
  return constants;
}

/**
 * @param {string} name
 * @param {string} what
 * @param {string} file
 * @param {Array<[string, number]>} constants
 * @param {boolean} exported
 */
function objectText(name, what, file, constants, exported) {
  const fields = constants.map(([key, value]) => `  ${key}: ${value},`).join('\n');
  return `/** ${what[0].toUpperCase()}${what.slice(1)} (${file}). */\n${exported ? 'export ' : ''}const ${name} = {\n${fields}\n} as const;\n`;
}

/**
 * The text of src/abi-words.ts for these sources.
 * @param {Record<string, string>} texts file → its text
 */
export function wordsFile(texts) {
  const header =
    "// The kernel's word offsets and sizes, generated from assembly/ by assembly/abi-words.mjs (npm run build)\n" +
    '// and checked by test/abi.test.ts: edit the AssemblyScript source, never this file.\n';
  const blocks = SOURCES.map(({ file, name, what }) =>
    objectText(name, what, file, constantsOf(texts[file], file), true),
  );
  return [header, ...blocks].join('\n');
}

/**
 * src/attention-worker.ts with its generated block made from job.ts.
 * @param {string} worker
 * @param {string} jobText
 */
export function workerFile(worker, jobText) {
  const start = worker.indexOf(BEGIN);
  const end = worker.indexOf(END, start);
  if (start < 0 || end < 0) throw new Error(`${WORKER_FILE}: the generated block's markers are missing`);
  const { file, name, what } = SOURCES[1];
  const block = `${BEGIN}\n${objectText(name, what, file, constantsOf(jobText, file), false)}`;
  return worker.slice(0, start) + block + worker.slice(end);
}

/**
 * Every generated file as it should be, and as it is.
 * @param {(file: string) => string} read
 * @returns {Array<{ file: string, expected: string, actual: string }>}
 */
export function generated(read = (file) => readFileSync(path(file), 'utf8')) {
  const texts = Object.fromEntries(SOURCES.map(({ file }) => [file, read(file)]));
  const worker = read(WORKER_FILE);
  let words = '';
  try {
    words = read(WORDS_FILE);
  } catch {
    // not generated yet
  }
  return [
    { file: WORDS_FILE, expected: wordsFile(texts), actual: words },
    { file: WORKER_FILE, expected: workerFile(worker, texts[SOURCES[1].file]), actual: worker },
  ];
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  const check = process.argv.includes('--check');
  const stale = generated().filter(({ expected, actual }) => expected !== actual);
  for (const { file, expected } of stale) {
    if (check) console.error(`${file} is out of date with assembly/: run node assembly/abi-words.mjs`);
    else writeFileSync(path(file), expected);
  }
  if (check && stale.length) process.exit(1);
}
