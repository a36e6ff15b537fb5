// `npm run bench:spills`: counts the v128 stack spills V8's optimizing compiler leaves in each loop of
// the kernel. V8 hoists a basic block's loads to its top, so a loop body whose live v128 values exceed the
// ~15 usable xmm registers stores and reloads some of them every iteration; this shows where.
//
// Compiles assembly/index.ts (of --source, default this checkout) with names (asc --debug: names only,
// the same -O3 code) into bench/.build/, has Node print TurboFan's x64 code for every function
// (--no-liftoff --no-wasm-lazy-compilation --print-wasm-code), finds the loops (backward jumps) and
// counts xmm moves to and from [rbp−…]/[rsp+…] inside each innermost loop.

import { execFileSync } from 'node:child_process';
import { mkdirSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from '../test/support/scripts.mjs';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const opts = parseArgs(process.argv.slice(2), { source: root, target: 'relaxed-simd', all: false });
if (opts.help) {
  console.log(`node bench/spills.mjs [--source <checkout>] [--target relaxed-simd|simd] [--all]
  prints, per function, each innermost loop's size, its xmm spill stores/reloads and the v128 constants it
  rebuilds every iteration (--all: every innermost loop)`);
  process.exit(0);
}

const source = resolve(opts.source);
const out = join(root, 'bench', '.build', `spills-${opts.target}.wasm`);
mkdirSync(dirname(out), { recursive: true });
execFileSync(join(root, 'node_modules', '.bin', 'asc'), [
  join(source, 'assembly', 'index.ts'),
  '--config',
  join(source, 'asconfig.json'),
  '--target',
  opts.target,
  '--outFile',
  out,
  '--debug',
]);
const printer = `const b = require('fs').readFileSync(${JSON.stringify(out)});
new WebAssembly.Instance(new WebAssembly.Module(b), { env: { abort() {} } });`;
const flags = ['--no-liftoff', '--no-wasm-lazy-compilation', '--print-wasm-code'];
if (+process.versions.node.split('.')[0] < 22) flags.unshift('--experimental-wasm-relaxed-simd');
const code = execFileSync(process.execPath, [...flags, '-e', printer], { maxBuffer: 1 << 28 }).toString();

const SPILL = /\b(v?mov(?:[ua]p[sd]|dq[ua]|s[sd]))\s+(?:(xmm\d+),\[r[bs]p[^\]]*\]|\[r[bs]p[^\]]*\],(xmm\d+))/;
const rows = [];
for (const fn of code.split('--- WebAssembly code ---').slice(1)) {
  const name = /name: (\S+)/.exec(fn)?.[1] ?? '?';
  const lines = [];
  for (const line of fn.split('\n')) {
    const m = /^0x[0-9a-f]+\s+([0-9a-f]+)\s+[0-9a-f]+\s+(.*)$/.exec(line);
    if (m) lines.push({ at: parseInt(m[1], 16), text: m[2] });
  }
  // a loop: a jump back to an earlier offset, over code with no call or return in it (the out-of-line
  // stack checks at a function's end jump back too: their saves and restores run on the slow path only);
  // innermost: it contains no other loop
  /** @type {{ from: number, to: number }[]} */
  const loops = [];
  for (const l of lines) {
    const j = /^j\w+\s+0x[0-9a-f]+\s+<\+0x([0-9a-f]+)>/.exec(l.text);
    if (!j || parseInt(j[1], 16) > l.at) continue;
    const loop = { from: parseInt(j[1], 16), to: l.at };
    if (!lines.some((x) => x.at >= loop.from && x.at <= loop.to && /^(call|ret)/.test(x.text))) loops.push(loop);
  }
  const innermost = loops.filter((a) => !loops.some((b) => b !== a && b.from >= a.from && b.to <= a.to));
  for (const loop of innermost) {
    const body = lines.filter((l) => l.at >= loop.from && l.at <= loop.to);
    let stores = 0,
      reloads = 0;
    for (const l of body) {
      const m = SPILL.exec(l.text);
      if (m) m[2] ? reloads++ : stores++;
    }
    const vectorOps = body.filter((l) => /xmm/.test(l.text)).length;
    // a v128 constant rebuilt on every iteration: an immediate moved into a general register, then into xmm
    const constants = body.filter((l) => /^(vmovq xmm\d+,r10|vpinsrq xmm\d+,xmm\d+,r10,.*)$/.test(l.text)).length;
    if (opts.all || stores + reloads + constants > 0) {
      rows.push({
        name,
        at: `+0x${loop.from.toString(16)}`,
        instructions: body.length,
        vectorOps,
        stores,
        reloads,
        constants,
      });
    }
  }
}
console.log(
  `${opts.target} build of ${source}: innermost loops${opts.all ? '' : ' with xmm stack traffic or rebuilt constants'}`,
);
console.log(
  '| function | loop at | instructions | xmm instructions | spill stores | spill reloads | v128 constants rebuilt |',
);
console.log('| --- | --- | ---: | ---: | ---: | ---: | ---: |');
for (const r of rows)
  console.log(
    `| ${r.name} | ${r.at} | ${r.instructions} | ${r.vectorOps} | ${r.stores} | ${r.reloads} | ${r.constants} |`,
  );
