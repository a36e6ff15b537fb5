#!/usr/bin/env node
// The facade's copy of the kernel's word offsets, generated from the kernel's own source so that they are
// written once: the `export const NAME: i32 = <integer>;` lines of descriptor.ts (the cache descriptor)
// become the generated block of src/abi.ts, and those of job.ts (the job block of a threaded call) the
// generated block of src/attention-worker.ts, which abi.ts re-exports (a worker script imports nothing,
// so the job words live in it).
//
//   node assembly/abi-words.mjs           rewrites the blocks that differ (npm run build:ts runs it first)
//   node assembly/abi-words.mjs --check   changes nothing; exits 1 naming each file that is out of date
//
// test/abi.test.ts runs the same check and checks the binaries' answers against the generated numbers.

import { readFileSync, writeFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

const root = new URL('../', import.meta.url);
const path = (/** @type {string} */ file) => fileURLToPath(new URL(file, root));

/** Each generated block: where its words come from, what it is called, and the file it is written into. */
export const BLOCKS = [
  { source: 'assembly/descriptor.ts', name: 'Descriptor', what: 'a cache descriptor', target: 'src/abi.ts' },
  {
    source: 'assembly/job.ts',
    name: 'Job',
    what: 'the job block of a threaded call, and its modes',
    target: 'src/attention-worker.ts',
  },
];

/** @param {string} source */
export const begin = (source) =>
  `// <generated from ${source} by assembly/abi-words.mjs: edit that file, not this block>`;
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
 * `target` with the generated block of `block` made from `sourceText`.
 * @param {{ source: string, name: string, what: string, target: string }} block
 * @param {string} sourceText
 * @param {string} target
 */
export function withBlock(block, sourceText, target) {
  const start = target.indexOf(begin(block.source));
  const end = target.indexOf(END, start);
  if (start < 0 || end < 0) throw new Error(`${block.target}: the markers of the generated block are missing`);
  const fields = constantsOf(sourceText, block.source)
    .map(([key, value]) => `  ${key}: ${value},`)
    .join('\n');
  const what = `${block.what[0].toUpperCase()}${block.what.slice(1)}`;
  const text = `${begin(block.source)}\n/** ${what} (${block.source}). */\nexport const ${block.name} = {\n${fields}\n} as const;\n`;
  return target.slice(0, start) + text + target.slice(end);
}

/**
 * Every file with a generated block, as it should be and as it is.
 * @param {(file: string) => string} read
 * @returns {Array<{ file: string, expected: string, actual: string }>}
 */
export function generated(read = (file) => readFileSync(path(file), 'utf8')) {
  return BLOCKS.map((block) => {
    const actual = read(block.target);
    return { file: block.target, expected: withBlock(block, read(block.source), actual), actual };
  });
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
