#!/usr/bin/env node
// `npm run mutants`: shows that the suite catches the bugs attention code really gets wrong. Each mutant
// below is one small edit to the kernel (assembly/) or the facade (src/) that a plausible mistake would
// make; the script applies it to a temporary copy of this checkout (never to the working tree), rebuilds
// the .wasm when the kernel changed, runs the test files and prints which tests failed. A mutant no test
// kills, or a search text no longer found (the code moved under the script), fails the run with exit 1.
//
// About 6–8 minutes on a 2-core machine (a baseline run, then per mutant an 11 s rebuild for kernel
// mutants and one run of the test files).
//
//   node test/mutants.mjs [--only name,name] [--tests test/a.test.ts,test/b.test.ts] [--keep]
//
// What it replaces: test/FINDINGS.md recorded such a check done by hand once (window off by one: 152
// failing tests; sinks off by one: 122; rope sign: 72; ...). Automated, it stays true as the code changes.

import { spawnSync } from 'node:child_process';
import { cpSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

/**
 * @typedef {{ file: string, search: string, replace: string, count?: number }} Edit
 *   `search` must occur exactly `count` times (default 1) in `file`; every occurrence is replaced.
 * @typedef {{ name: string, bug: string, edits: Edit[] }} Mutant
 */

/**
 * @param {string} name @param {string} bug @param {[file: string, search: string, replace: string, count?: number][]} edits
 * @returns {Mutant}
 */
const mutant = (name, bug, ...edits) => ({
  name,
  bug,
  edits: edits.map(([file, search, replace, count]) => ({ file, search, replace, count })),
});

const MUTANTS = [
  mutant(
    'window-off-by-one',
    'the kernel lets a query see one key more than its window (p − window instead of p − window + 1)',
    ['assembly/attend/tile.ts', 'max(0, position - window + 1)', 'max(0, position - window)'],
  ),
  mutant('causal-alignment-shifted', 'one-shot attention places query t at S − T + t − 1 instead of S − T + t', [
    'src/attention.ts',
    'const offset = call.keys - call.queries;',
    'const offset = call.keys - call.queries - 1;',
    2,
  ]),
  mutant(
    'gqa-mapping-wrong',
    'query head h reads kv head h mod kvHeads (tiled) instead of floor(h / group) (repeated)',
    [
      'assembly/attend/tile.ts',
      'const index = <usize>(t * heads + g * group + h);',
      'const index = <usize>(t * heads + h * (heads / group) + g);',
    ],
  ),
  mutant(
    'rope-layout-swapped',
    'the facade asks the kernel for interleaved rope when half-split is configured, and the reverse',
    ['src/cache-memory.ts', '+(rope?.interleaved ?? 0)', '+!(rope?.interleaved ?? 0)'],
  ),
  mutant('scale-ignored', 'the scale option is validated, then 1/sqrt(headDim) is used anyway', [
    'src/options.ts',
    'options.scale === undefined ? 1 / Math.sqrt(headDim) :',
    'true ? 1 / Math.sqrt(headDim) :',
  ]),
  mutant(
    'masked-lane-leaks',
    'lanes of a group of four past the visible keys keep their scores (SIMD), lanes before them (scalar)',
    [
      'assembly/attend/scores.ts',
      'const visible = v128.and(i32x4.ge_s(lane, i32x4.splat(from)), i32x4.lt_s(lane, i32x4.splat(to)));',
      'const visible = i32x4.ge_s(lane, i32x4.splat(from));',
    ],
    ['assembly/attend/scores.ts', 'if (j >= from && j < to) {', 'if (j < to) {'],
  ),
  mutant(
    'int8-unseen-weight-unmasked',
    "int8 values: lanes of a group of four past a row's visible keys keep value scale × 0 (NaN × 0 leaks)",
    ['assembly/int8.ts', 'if (j < from || j + 4 > to) {', 'if (j < from) {'],
  ),
  mutant(
    'llama3-band-edge-wrong',
    'llama3 keeps the unscaled frequency up to the low-frequency wavelength instead of the high one',
    [
      'src/rope-scaling.ts',
      'if (wavelength < context / highFreqFactor) return f;',
      'if (wavelength < context / lowFreqFactor) return f;',
    ],
  ),
  mutant('yarn-ramp-reversed', 'yarn interpolates the fast pairs and keeps the slow ones (the ramp read backwards)', [
    'src/rope-scaling.ts',
    'return (f / factor) * ramp + f * (1 - ramp);',
    'return f * ramp + (f / factor) * (1 - ramp);',
  ]),
  mutant(
    'yarn-truncate-ignored',
    "yarn rounds the ramp's ends to whole dimensions even when truncate is false (gpt-oss)",
    ['src/rope-scaling.ts', 'if (truncate) [low, high]', 'if (truncate || true) [low, high]'],
  ),
  mutant(
    'rope-attention-factor-lost',
    'the kernel rotates with plain cos and sin, dropping the attention factor of the rope table',
    ['assembly/rope.ts', '<f32>(Math.cos(angle) * factor)', '<f32>Math.cos(angle)'],
    ['assembly/rope.ts', '<f32>(Math.sin(angle) * factor)', '<f32>Math.sin(angle)'],
  ),
  mutant(
    'sink-logit-ignored',
    "the kernel leaves a sink logit out of the denominator when it is below the row's maximum",
    ['assembly/attend/tile.ts', 'if (s <= m) sum += expScalar(s - m);', 'if (s <= m) sum += 0;'],
  ),
  mutant('sink-rescale-skipped', 'a sink above the maximum rescales the sum but leaves the accumulator whole', [
    'assembly/attend/tile.ts',
    'sum = sum * kept + 1;',
    'sum = sum * kept + 1;\n        kept = 1;',
  ]),
  mutant('sink-head-wrong', "row r takes the sink logit of query head r instead of its own head's", [
    'assembly/attend/tile.ts',
    'sinkLogits + (<usize>(tileGroup * group + r % group) << 2)',
    'sinkLogits + (<usize>(r % heads) << 2)',
  ]),
  mutant('alibi-sign', 'the ALiBi bias favours far keys: every slope enters with its sign flipped', [
    'assembly/attend/tile.ts',
    'store<f32>(rowSlope + (<usize>r << 2), load<f32>(',
    'store<f32>(rowSlope + (<usize>r << 2), -load<f32>(',
  ]),
  mutant('alibi-head-wrong', "row r takes the ALiBi slope of its kv head's first query head", [
    'assembly/attend/tile.ts',
    'alibiSlopes + (<usize>(g * group + h) << 2)',
    'alibiSlopes + (<usize>(g * group) << 2)',
  ]),
  mutant('per-layer-window-ignored', "a layer's own window is validated, then the cache-wide one is used", [
    'src/options.ts',
    'entry.window = scoring.window || null;',
    'entry.window = scoring.window || null;\n      scoring.window = wide.scoring.window;',
  ]),
  mutant('per-layer-ring-whole', 'a windowed layer of a perLayer cache takes a ring of maxTokens, not of its window', [
    'src/options.ts',
    'ring: ownRing(scoring.window, maxTokens),',
    'ring: maxTokens,',
  ]),
  mutant('per-layer-rope-shared', 'layers that differ only in their rope share one descriptor (and its rope table)', [
    'src/per-layer.ts',
    'JSON.stringify([scoring, ring, rope ? ropeToOptions(rope) : null])',
    'JSON.stringify([scoring, ring])',
  ]),
  mutant('per-layer-index-wrong', "every layer of a group writes and reads the group's first layer", [
    'src/layer-memory.ts',
    'local[l] = j;',
    'local[l] = 0;',
  ]),
  mutant('per-layer-save-wide-window', "save() plans every layer's piece with the cache-wide window and ring", [
    'src/cache.ts',
    'const { scoring, ring } = layerSettings(settings, l);',
    'const { scoring, ring } = { scoring: settings.scoring, ring: settings.maxTokens };',
  ]),
  mutant('per-layer-global-unbounded', 'a global layer under a cache-wide window appends past maxTokens', [
    'src/cache.ts',
    'if (layerSettings(this.#settings, index).scoring.window === 0 && length + tokens > this.#settings.maxTokens) {',
    'if (this.#settings.scoring.window === 0 && length + tokens > this.#settings.maxTokens) {',
  ]),
];

const DEFAULT_TESTS = [
  'test/attention.test.ts',
  'test/weights.test.ts',
  'test/cache.test.ts',
  'test/lifecycle.test.ts',
  'test/int8.test.ts',
  'test/streaming.test.ts',
  'test/append.test.ts',
  'test/rope-scaling.test.ts',
  'test/fixtures.test.ts',
  'test/sink-logits.test.ts',
  'test/alibi.test.ts',
  'test/per-layer.test.ts',
];

const argv = process.argv.slice(2);
const option = (/** @type {string} */ name) => {
  const i = argv.indexOf(`--${name}`);
  return i >= 0 ? argv[i + 1] : undefined;
};
if (argv.includes('--help') || argv.includes('-h')) {
  console.log(`Usage: node test/mutants.mjs [--only ${MUTANTS.map((m) => m.name).join(',')}] [--tests files] [--keep]`);
  process.exit(0);
}
const only = option('only')?.split(',');
const mutants = only ? MUTANTS.filter((m) => only.includes(m.name)) : MUTANTS;
const tests = option('tests')?.split(',') ?? DEFAULT_TESTS;

const root = fileURLToPath(new URL('..', import.meta.url));
if (only && mutants.length !== only.length) {
  console.error(`mutants: unknown mutant in --only ${only.join(',')}; known: ${MUTANTS.map((m) => m.name).join(', ')}`);
  process.exit(1);
}
const copy = mkdtempSync(join(tmpdir(), 'wasm-attention-mutants-'));
const started = Date.now();

/** @param {string} message @returns {never} */
function fail(message) {
  console.error(`mutants: ${message}`);
  if (!argv.includes('--keep')) rmSync(copy, { recursive: true, force: true });
  process.exit(1);
}

/** @param {string} command @param {string[]} args */
function run(command, args) {
  const r = spawnSync(command, args, { cwd: copy, encoding: 'utf8', maxBuffer: 1 << 28 });
  return { ok: r.status === 0, output: `${r.stdout}\n${r.stderr}` };
}

/** The names of the failing tests, by file (vitest's JSON report). */
function failingTests() {
  const report = join(copy, '.mutants-report.json');
  rmSync(report, { force: true });
  run('npx', ['vitest', 'run', ...tests, '--reporter=json', `--outputFile=${report}`]);
  if (!existsSync(report)) fail('vitest wrote no report (does the copy run at all?)');
  /** @type {{ testResults: { name: string, status: string, message?: string, assertionResults: { status: string, fullName: string }[] }[] }} */
  const json = JSON.parse(readFileSync(report, 'utf8'));
  /** @type {Map<string, string[]>} */
  const failed = new Map();
  for (const file of json.testResults) {
    const names = file.assertionResults.filter((a) => a.status === 'failed').map((a) => a.fullName);
    // a file that fails to load has no assertion results: count it as one failure
    if (names.length === 0 && file.status === 'failed')
      names.push(`(the file failed: ${file.message?.split('\n')[0]})`);
    if (names.length) failed.set(file.name.slice(copy.length + 1), names);
  }
  return failed;
}

function buildWasm() {
  const r = run('npm', ['run', 'build:wasm']);
  if (!r.ok) fail(`npm run build:wasm failed in the copy:\n${r.output}`);
}

// ---- the copy: the files git sees in this checkout as they are now (committed or not), node_modules linked
const listed = spawnSync('git', ['ls-files', '-co', '--exclude-standard'], { cwd: root, encoding: 'utf8' });
if (listed.status !== 0) fail(`git ls-files failed: ${listed.stderr}`);
for (const file of listed.stdout.split('\n').filter(Boolean)) {
  if (!existsSync(join(root, file))) continue; // deleted in the working tree
  mkdirSync(dirname(join(copy, file)), { recursive: true });
  cpSync(join(root, file), join(copy, file));
}
symlinkSync(join(root, 'node_modules'), join(copy, 'node_modules'), 'dir');
console.log(`mutants: copy in ${copy}; tests ${tests.join(' ')}`);

buildWasm();
const cleanWasm = join(copy, '.wasm-clean');
cpSync(join(copy, 'wasm'), cleanWasm, { recursive: true });
const baseline = failingTests();
if (baseline.size > 0)
  fail(`the unmutated copy already fails: ${[...baseline.values()].flat().slice(0, 5).join('; ')}`);
console.log(`mutants: baseline passes (${((Date.now() - started) / 1000).toFixed(0)} s)`);

/** @type {{ mutant: Mutant, failed: Map<string, string[]>, seconds: number }[]} */
const results = [];
for (const mutant of mutants) {
  const t0 = Date.now();
  /** @type {Map<string, string>} */
  const originals = new Map();
  for (const edit of mutant.edits) {
    const path = join(copy, edit.file);
    const text = originals.get(edit.file) ?? readFileSync(path, 'utf8');
    if (!originals.has(edit.file)) originals.set(edit.file, text);
    const current = readFileSync(path, 'utf8');
    const found = current.split(edit.search).length - 1;
    if (found !== (edit.count ?? 1)) {
      fail(
        `${mutant.name}: ${JSON.stringify(edit.search)} occurs ${found} times in ${edit.file}, expected ${edit.count ?? 1}: ` +
          'the code changed under this script; update the mutant to the new code',
      );
    }
    writeFileSync(path, current.split(edit.search).join(edit.replace));
  }
  const kernel = mutant.edits.some((e) => e.file.startsWith('assembly/'));
  if (kernel) buildWasm();
  const failed = failingTests();
  for (const [file, text] of originals) writeFileSync(join(copy, file), text);
  if (kernel) cpSync(cleanWasm, join(copy, 'wasm'), { recursive: true });
  const seconds = (Date.now() - t0) / 1000;
  results.push({ mutant, failed, seconds });
  const count = [...failed.values()].reduce((a, n) => a + n.length, 0);
  console.log(`mutants: ${mutant.name}: ${count} failing tests (${seconds.toFixed(0)} s)`);
}

// ---- the table
console.log('\n| mutant | the bug | failing tests | by file | e.g. |');
console.log('| --- | --- | ---: | --- | --- |');
for (const { mutant, failed } of results) {
  const count = [...failed.values()].reduce((a, n) => a + n.length, 0);
  const byFile = [...failed].map(([f, n]) => `${f.replace(/^test\//, '')} ${n.length}`).join(', ') || '–';
  const example = [...failed.values()].flat()[0] ?? 'NONE: the mutant survived';
  console.log(`| ${mutant.name} | ${mutant.bug} | ${count} | ${byFile} | ${example.slice(0, 110)} |`);
}
const survivors = results.filter((r) => r.failed.size === 0);
console.log(
  `\nmutants: ${results.length - survivors.length} of ${results.length} killed in ${((Date.now() - started) / 1000).toFixed(0)} s`,
);
if (!argv.includes('--keep')) rmSync(copy, { recursive: true, force: true });
if (survivors.length) fail(`survived: ${survivors.map((r) => r.mutant.name).join(', ')}`);
