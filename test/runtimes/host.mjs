// Runs the scenario in a server-side runtime (Node, Deno, Bun) and prints its report as one JSON line.
import { scenario } from './scenario.js';

// `node host.mjs scalar` forces a build; without an argument init() chooses. Node, Deno and Bun all run
// threads: init()'s default must give at least 2 here, and the process must still end by itself.
const report = await scenario({ build: globalThis.process?.argv?.[2], threads: 'many' });
// Node's require(esm): the package's `require` condition points at the ESM entry (Node ^20.19, >=22.12).
if (typeof process !== 'undefined' && process.release?.name === 'node' && !globalThis.Deno && !globalThis.Bun) {
  const { createRequire } = await import('node:module');
  let ok = false,
    detail;
  try {
    const required = createRequire(import.meta.url)('wasm-attention');
    ok = typeof required.init === 'function' && typeof required.KVCache === 'function';
    detail = `exports ${Object.keys(required).sort().join(', ')}`;
  } catch (error) {
    detail = String(error);
  }
  report.checks.push({ name: "require('wasm-attention') works (require(esm))", ok, detail });
  report.ok &&= ok;
}
console.log(JSON.stringify(report));
