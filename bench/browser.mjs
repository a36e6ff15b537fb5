#!/usr/bin/env node
// `npm run bench:browser`: the workloads of `npm run bench` in Chromium (headless, Debian's
// /usr/bin/chromium driven by playwright-core), from pages served locally with COOP/COEP headers (so
// onnxruntime-web and wasm-attention may use threads). One page, in its own browser context, per job: the
// machine's limits, each wasm-attention build (relaxed-simd also on 2 threads and on 'auto'), plain JS,
// onnxruntime-web on 1 and 2 threads and on its own choice ('auto'). Prints the same markdown tables as the
// Node bench and writes bench/results/browser.{json,md,svg} and browser-threads.svg. Not measured here:
// onnxruntime-node (Node only) and JS-heap allocations (no exact heap counter in a page). `--help` for options.

import { createServer } from 'node:http';
import { readFile } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import { join, normalize, extname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { cpus, loadavg, availableParallelism, totalmem } from 'node:os';
import { cliOptions, packageState, builtStamp } from '../test/support/scripts.mjs';
import { SUITE_DEFAULTS, gather, list, suiteOptions, writeReport } from './cli.mjs';
import { SHAPES, BUILDS, THREADED, ORT_WEB } from './suite.mjs';
import { buildLimits } from './limits/build.mjs';
import { buildModel } from './ort/models.mjs';
import { BROWSERS, CHROMIUM_ARGS } from '../test/runtimes/browsers.mjs';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const CHROMIUM = BROWSERS[0].path; // CHROMIUM_PATH overrides
const ALL_JOBS = [...BUILDS, ...THREADED, 'plain', ...ORT_WEB];

const DEFAULTS = {
  ...SUITE_DEFAULTS,
  impls: ALL_JOBS.join(','),
  timeout: 900,
};
const HELP = `Usage: node bench/browser.mjs [options]     (npm run bench:browser -- [options])

Same options as bench/node.mjs (--shapes, --decode, --prefill, --full, --dtypes, --min-time, --min-reps,
--max-time, --warmup, --out-dir), and:
  --impls LIST    ${ALL_JOBS.join(', ')}     [all]
  --timeout S     per page                                          [${DEFAULTS.timeout}]
Chromium: ${CHROMIUM} (CHROMIUM_PATH overrides); build the package first (npm run build).`;

const opts = cliOptions(DEFAULTS, HELP, 'bench');
/** @type {import('./suite.mjs').SuiteOptions} */
const suiteOpts = suiteOptions(opts, (message) => {
  console.error(`bench: ${message}`);
  process.exit(2);
});
const jobs = list(opts.impls);
for (const j of jobs)
  if (!ALL_JOBS.includes(j)) {
    console.error(`bench: unknown implementation ${j}`);
    process.exit(2);
  }
if (!existsSync(CHROMIUM)) {
  console.error(`bench: Chromium not found at ${CHROMIUM} (apt-get install -y chromium, or set CHROMIUM_PATH)`);
  process.exit(2);
}
if (!existsSync(join(ROOT, 'dist/index.js'))) {
  console.error('bench: build the package first: npm run build');
  process.exit(2);
}
const log = (/** @type {string} */ s) => process.stderr.write(`${s}\n`);

buildLimits();

// ---- a static server over the repository root, plus the ONNX models built on request
const TYPES = {
  '.html': 'text/html',
  '.js': 'text/javascript',
  '.mjs': 'text/javascript',
  '.wasm': 'application/wasm',
  '.json': 'application/json',
  '.map': 'application/json',
};
/** @type {Map<string, Uint8Array>} */
const models = new Map();
const server = createServer(async (req, res) => {
  const headers = {
    'Cross-Origin-Opener-Policy': 'same-origin',
    'Cross-Origin-Embedder-Policy': 'require-corp',
    'Cache-Control': 'no-store',
  };
  try {
    const url = new URL(req.url ?? '/', 'http://x');
    const m = url.pathname.match(/^\/bench-models\/(gqa|mha)-(decode|prefill)-(\w+)\.onnx$/);
    if (m) {
      const [, op, kind, shape] = m;
      if (!(shape in SHAPES)) throw new Error('no such shape');
      const key = `${op}-${kind}-${shape}`;
      if (!models.has(key))
        models.set(
          key,
          buildModel(
            /** @type {any} */ (op),
            /** @type {any} */ (kind),
            SHAPES[/** @type {keyof typeof SHAPES} */ (shape)],
          ),
        );
      res.writeHead(200, { ...headers, 'Content-Type': 'application/octet-stream' });
      res.end(models.get(key));
      return;
    }
    const path = normalize(join(ROOT, decodeURIComponent(url.pathname)));
    if (!path.startsWith(ROOT)) throw new Error('outside');
    const body = await readFile(path);
    res.writeHead(200, {
      ...headers,
      'Content-Type': TYPES[/** @type {keyof typeof TYPES} */ (extname(path))] ?? 'application/octet-stream',
    });
    res.end(body);
  } catch {
    res.writeHead(404, headers);
    res.end('not found');
  }
});
await new Promise((r) => server.listen(0, '127.0.0.1', () => r(undefined)));
const port = /** @type {import('node:net').AddressInfo} */ (server.address()).port;

const { chromium } = await import('playwright-core');
const browser = await chromium.launch({ executablePath: CHROMIUM, args: CHROMIUM_ARGS });
const version = browser.version();
const load0 = loadavg();
const stamp0 = await builtStamp();
const t0 = performance.now();
log(
  `bench: Chromium ${version}, ${cpus()[0]?.model?.trim()}, load average ${load0.map((x) => x.toFixed(2)).join(' ')}`,
);
/** @type {Record<string, any>} */
const results = {};
let wrongOutput = false;
try {
  for (const job of ['limits#1', ...jobs, 'limits#2']) {
    const c0 = performance.now();
    const context = await browser.newContext();
    const page = await context.newPage();
    /** @type {string[]} */
    const errors = [];
    page.on('console', (m) => {
      if (m.type() === 'error') errors.push(m.text());
      else if (m.type() === 'log') log(m.text());
    });
    page.on('pageerror', (e) => errors.push(String(e)));
    try {
      await page.goto(
        `http://127.0.0.1:${port}/bench/browser/index.html?job=${job.replace(/#.*/, '')}&config=${encodeURIComponent(JSON.stringify(suiteOpts))}`,
      );
      await page.waitForFunction(() => /** @type {any} */ (globalThis).__result !== undefined, undefined, {
        timeout: opts.timeout * 1000,
        polling: 500,
      });
      const r = await page.evaluate(() => /** @type {any} */ (globalThis).__result);
      // a wrong output (bench/suite.mjs WrongOutput) stops the run rather than rank the rest
      if (r.error?.includes('WrongOutput')) {
        console.error(`bench: WRONG OUTPUT in ${job}: ${r.error.split('\n')[0]}`);
        wrongOutput = true;
        break;
      }
      if (r.error) throw new Error(r.error);
      results[job] = { ...r, seconds: (performance.now() - c0) / 1000 };
      if (job.startsWith('limits'))
        log(
          `  limits: peak mul+add ${r.limits.peakMulAdd.toFixed(1)} GFLOP/s, relaxed_madd ${r.limits.peakMadd?.toFixed(1) ?? '–'} GFLOP/s`,
        );
      log(`bench: ${job} done in ${results[job].seconds.toFixed(0)} s`);
    } catch (e) {
      results[job] = {
        job,
        rows: [],
        unavailable: `${/** @type {Error} */ (e).message.split('\n')[0]}${errors.length ? `; page errors: ${errors.join(' | ')}` : ''}`,
        seconds: (performance.now() - c0) / 1000,
      };
      log(`bench: ${job} failed: ${results[job].unavailable}`);
    } finally {
      await context.close();
    }
  }
} finally {
  await browser.close();
  server.close();
}
if (wrongOutput) {
  console.error('bench: a computed output was wrong (above): the run stops rather than rank it');
  process.exit(1);
}
const seconds = (performance.now() - t0) / 1000;
const load1 = loadavg();

const { rows, limits, sizes } = await gather(results, ROOT);
const notes = [];
if ((await builtStamp()) !== stamp0)
  notes.push('**wasm/ or dist/ was rebuilt during this run: the rows may mix two versions of the package.**');
for (const [job, r] of Object.entries(results)) if (r.unavailable) notes.push(`${job}: not measured: ${r.unavailable}`);
const inits = BUILDS.filter((b) => results[b]?.initMs !== undefined).map(
  (b) => `${b} ${results[b].initMs.toFixed(1)} ms`,
);
if (inits.length)
  notes.push(
    `init() in the page (first call, fetch + compile + instantiate): ${inits.join(', ')} (the 20 ms target is for Node).`,
  );
if (results['ort-web-2t'] && !results['ort-web-2t'].unavailable)
  notes.push(
    `pages were cross-origin isolated: ${results['ort-web-2t'].crossOriginIsolated} (onnxruntime-web needs it for 2 threads).`,
  );
const ortV = results['ort-web-1t']?.ortVersion;
if (ortV)
  notes.push(
    `onnxruntime-web ${ortV} (WASM backend): one session per (op, shape, kind), inputs as CPU tensors each run (a decode run copies the past K/V into ORT's heap), fetches ['output'] only.`,
  );
notes.push(
  "int8, bfloat16 and int4 rows: wasm-attention with a cache of that dtype; their × columns compare with the peers' float32 times.",
);
notes.push('Not in the browser run: onnxruntime-node, JS-heap allocation counts.');
if (!opts.full && opts.prefill === 'default') notes.push('prefill T=2048 is only in --full.');
notes.push(
  `load average before ${load0.map((x) => x.toFixed(2)).join(' ')}, after ${load1.map((x) => x.toFixed(2)).join(' ')} on ${availableParallelism()} cores${load0[0] >= availableParallelism() / 2 || load1[0] >= availableParallelism() / 2 ? ': the machine was busy, timings are noisy' : ''}.`,
);
notes.push(
  `total ${seconds.toFixed(0)} s (${Object.entries(results)
    .map(([k, r]) => `${k} ${r.seconds.toFixed(0)} s`)
    .join(', ')}).`,
);
const input = {
  title: `Chromium ${version} (headless)`,
  machine: [
    `CPU: ${cpus()[0]?.model?.trim()} (${availableParallelism()} cores, ${(totalmem() / 2 ** 30).toFixed(0)} GiB), ${process.platform} ${process.arch}`,
    `Chromium ${version} (${CHROMIUM}, playwright-core), one page in its own browser context per implementation; one thread unless the name says 2t or auto (the Threads table gives the count 'auto' got)`,
    `date ${new Date().toISOString()}`,
    await packageState(),
  ],
  limits,
  rows,
  wasmSizes: sizes,
  notes,
};
await writeReport(opts.outDir, 'browser', input, suiteOpts, {
  options: suiteOpts,
  jobs: Object.fromEntries(Object.entries(results).map(([k, r]) => [k, { ...r, rows: undefined }])),
});
