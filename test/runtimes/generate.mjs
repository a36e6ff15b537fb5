// A short generation with the tiny model of examples/model, in a server-side runtime (Node, Deno, Bun), from
// the installed package: `generate.mjs N` continues reference.json's greedy prompt by N tokens and prints one
// JSON line with the tokens (run.mjs compares them with PyTorch's and with every other runtime's).
import { loadModel } from './examples/model/index.mjs';

const count = Number(globalThis.process?.argv?.[2] ?? 32);
// a file: URL, not a path: the runner reads it with node:fs where that exists and with fetch elsewhere
const dir = new URL('./examples/model/tiny/', import.meta.url);
const reference = JSON.parse(
  new TextDecoder().decode(await (await import('node:fs/promises')).readFile(new URL('reference.json', dir))),
);
const model = await loadModel(dir);
const t0 = performance.now();
const tokens = await model.generate(reference.greedy.prompt_ids, { maxNewTokens: count });
const seconds = (performance.now() - t0) / 1000;
const expected = reference.greedy.new_ids.slice(0, count);
const same = tokens.join() === expected.join();
console.log(
  JSON.stringify({
    ok: same,
    build: model.info.build,
    threads: model.info.threads,
    matmul: model.info.matmul,
    tokens,
    checks: [
      {
        name: `${count} greedy tokens equal PyTorch's`,
        ok: same,
        detail: `${(tokens.length / seconds).toFixed(0)} tokens/s, ${model.info.threads} thread(s)`,
      },
    ],
  }),
);
