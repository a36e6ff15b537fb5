#!/usr/bin/env node
// The runtime matrix, run on the package as users install it: `npm pack`, the tarball installed into a
// scratch project outside this repository, then the same scenario (scenario.js) in every runtime, the
// bundlers, and the examples. Also checks the tarball's contents, size budgets, publint and attw.
//
//   node test/runtimes/run.mjs            everything (what `npm test` and CI run)
//   node test/runtimes/run.mjs --only node20,deno,chromium   a subset (names as in the report)
//   node test/runtimes/run.mjs --keep     keep the scratch folder and print where it is
//
// Browsers: Chromium through playwright-core (CDP) and through puppeteer-core over WebDriver BiDi, Firefox ESR
// through puppeteer-core over WebDriver BiDi, WebKit (WebKitGTK's MiniBrowser) through WebKitWebDriver over
// classic WebDriver under xvfb-run (webdriver.mjs): Debian's chromium, firefox-esr, webkit2gtk-driver and
// xvfb, which browsers.mjs installs when missing (as root with apt) or names the command for. Everything else comes from devDependencies, and
// Node 22 from test/runtimes/node22.
//
// A step passes only when its report says `ok: true`; a page fails on any uncaught exception or console error.
// Every step whose scenario reports its outputs' bits must give the bits Node gives for the same build.

import { execFile } from 'node:child_process';
import {
  cpSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  readdirSync,
  rmSync,
  statSync,
  writeFileSync,
} from 'node:fs';
import { createServer } from 'node:http';
import { tmpdir } from 'node:os';
import { dirname, extname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { gzipSync } from 'node:zlib';
import { BROWSERS, CHROMIUM_ARGS, ensureBrowsers } from './browsers.mjs';
import { BROWSER_BUNDLE, WORKER_BUNDLE } from './bundle-options.mjs';
import { ERROR_CAPTURE, startWebKit, webkitPageResult } from './webdriver.mjs';

const here = dirname(fileURLToPath(import.meta.url));
const root = resolve(here, '../..');
const bin = (name) => join(root, 'node_modules/.bin', name);
const args = process.argv.slice(2);
const only = args.includes('--only') ? args[args.indexOf('--only') + 1].split(',') : undefined;
const keep = args.includes('--keep');
const wanted = (name) => !only || only.includes(name);

const [CHROMIUM, FIREFOX] = BROWSERS.map((b) => b.path);
const COMPATIBILITY_DATE = '2026-04-01'; // workerd 1.20260426 supports dates up to 2026-04-26

/**
 * Size budgets, checked on the tarball. The JavaScript ones were raised from 64 and 32 KB when pages, fork()
 * and saved pieces arrived (dist/*.js 64.7 KB without comments, 30.5 KB minified, 11.7 KB gzipped; with the
 * thread pool 80 KB, 37 KB, 14 KB; with arguments read once through the intrinsic typed-array getters, the
 * guard that refuses nested calls and the check of pieces' last rows, issue #19, 94 → 102 KB without
 * comments; with scaled RoPE, unknown-key checks, sink logits and cacheOptionsFromConfig, issue #20,
 * model-config.js alone 12 KB; the minified bundle with both issues 53.6 KB, which tree-shakes
 * cacheOptionsFromConfig away; trees of drafts, issue #23, attendTree/accept and their checks, 54.5 → 59.0
 * KB; with perLayer, its layer groups and their memories, issue #20, 58.1 KB alone; KVCache.attendMany
 * and its cascades, issue #23, 141.6 KB of facade and a 60.8 KB bundle on the older base alone; all of
 * them with the pool's take-over protocol (#19) and the bfloat16/int4 dtypes (#22): 168.4 KB of
 * dist/*.js and a 73.3 KB minified bundle, so 136 → 172 KB and 56 → 76 KB, the sum of what those features
 * need rather than a cut of any); staging copies that make no object per step and attendMany's per-item
 * loops without closures (#23), and the pool's wait in small integers (#19): 172.5 KB, so 172 → 180 KB.
 * They are there to make growth a decision, not to forbid it.
 */
const BUDGET = { wasm: 64 * 1024, facadeJs: 180 * 1024, facadeBundle: 76 * 1024 };

const results = []; // { name, kind, build, ok, seconds, detail }
const started = Date.now();
const work = mkdtempSync(join(tmpdir(), 'wasm-attention-runtimes-'));
const app = join(work, 'app');

// ------------------------------------------------------------------------------------------- helpers

function run(command, argv, { cwd = root, env = {}, timeout = 300_000 } = {}) {
  return new Promise((resolve, reject) => {
    execFile(
      command,
      argv,
      { cwd, env: { ...process.env, ...env }, timeout, maxBuffer: 64 << 20 },
      (error, stdout, stderr) => {
        if (error) {
          error.message += `\n--- stdout\n${stdout.slice(-4000)}\n--- stderr\n${stderr.slice(-4000)}`;
          reject(error);
        } else resolve({ stdout, stderr });
      },
    );
  });
}

const lastJson = (stdout) =>
  JSON.parse(
    stdout
      .trim()
      .split('\n')
      .filter((l) => l.startsWith('{'))
      .pop(),
  );

async function step(name, kind, fn) {
  if (!wanted(name)) return;
  const t0 = Date.now();
  let entry;
  try {
    const report = await fn();
    if (report?.bits) await sameBitsAsNode(name, report);
    // a report that does not say ok: true is a failure (a step that forgot to report proves nothing)
    entry = { name, kind, build: report?.build ?? '', ok: report?.ok === true, detail: report };
    if (typeof report?.ok !== 'boolean')
      entry.detail = { ...report, error: `the step's report has no ok: ${JSON.stringify(report)?.slice(0, 300)}` };
  } catch (error) {
    entry = { name, kind, build: '', ok: false, detail: { error: String(error?.stack ?? error) } };
  }
  entry.seconds = (Date.now() - t0) / 1000;
  results.push(entry);
  const mark = entry.ok ? 'ok  ' : 'FAIL';
  console.log(`${mark} ${name.padEnd(24)} ${(entry.build || '').padEnd(13)} ${entry.seconds.toFixed(1).padStart(6)} s`);
  for (const c of entry.detail?.checks ?? [])
    if (!c.ok || process.env.VERBOSE) console.log(`       ${c.ok ? '✓' : '✗'} ${c.name}: ${c.detail}`);
  if (entry.detail?.error) console.log(entry.detail.error.replace(/^/gm, '       '));
}

/**
 * Serves a folder over HTTP on 127.0.0.1 (with the content types browsers need for modules and wasm),
 * cross-origin isolated (COOP/COEP: pages get SharedArrayBuffer, so threads) unless `isolated` is false.
 * `captureErrors`: HTML pages get webdriver.mjs's ERROR_CAPTURE first (for a browser that reports no errors).
 */
async function serve(folder, { isolated = true, captureErrors = false } = {}) {
  const isolation = isolated
    ? { 'cross-origin-opener-policy': 'same-origin', 'cross-origin-embedder-policy': 'require-corp' }
    : {};
  const types = {
    '.html': 'text/html',
    '.js': 'text/javascript',
    '.mjs': 'text/javascript',
    '.json': 'application/json',
    '.wasm': 'application/wasm',
    '.css': 'text/css',
    '.png': 'image/png',
    '.svg': 'image/svg+xml',
  };
  const server = createServer((req, res) => {
    const path = decodeURIComponent(new URL(req.url, 'http://x').pathname);
    // browsers ask for a favicon on their own; a 404 would be a console error that fails the page
    if (path === '/favicon.ico') {
      res.writeHead(204).end();
      return;
    }
    let file = join(folder, path);
    if (!file.startsWith(folder)) {
      res.writeHead(403).end();
      return;
    }
    if (existsSync(file) && statSync(file).isDirectory()) file = join(file, 'index.html');
    if (!existsSync(file)) {
      res.writeHead(404).end('not found');
      return;
    }
    res.writeHead(200, {
      'content-type': types[extname(file)] ?? 'application/octet-stream',
      'cache-control': 'no-store',
      ...isolation,
    });
    const body = readFileSync(file);
    // after the doctype (a script before it would put the page in quirks mode)
    const capture = (html) => html.replace(/^(\s*<!doctype[^>]*>)?/i, (doctype) => `${doctype}\n${ERROR_CAPTURE}`);
    res.end(captureErrors && extname(file) === '.html' ? capture(String(body)) : body);
  });
  await new Promise((r) => server.listen(0, '127.0.0.1', r));
  return { url: `http://127.0.0.1:${server.address().port}`, close: () => new Promise((r) => server.close(r)) };
}

// Browsers, launched once each and shared by the pages that use them.
let chromium, chromiumBidi, firefox, webkit;
async function chromiumBrowser() {
  ensureBrowsers();
  const { chromium: launcher } = await import('playwright-core');
  chromium ??= await launcher.launch({ executablePath: CHROMIUM, args: CHROMIUM_ARGS });
  return chromium;
}
/** A headless browser driven by puppeteer over WebDriver BiDi; `options`: what differs between the two. */
async function bidiBrowser(options) {
  ensureBrowsers();
  const puppeteer = (await import('puppeteer-core')).default;
  return puppeteer.launch({ headless: true, protocol: 'webDriverBiDi', ...options });
}
async function chromiumBidiBrowser() {
  chromiumBidi ??= await bidiBrowser({
    browser: 'chrome',
    executablePath: CHROMIUM,
    args: CHROMIUM_ARGS.filter((a) => a !== '--headless'),
  });
  return chromiumBidi;
}
async function firefoxBrowser() {
  firefox ??= await bidiBrowser({
    browser: 'firefox',
    executablePath: FIREFOX,
    userDataDir: mkdtempSync(join(work, 'firefox-profile-')),
  });
  return firefox;
}

async function webkitBrowser() {
  ensureBrowsers();
  webkit ??= await startWebKit();
  return webkit;
}

/**
 * Opens `url` in a browser page and waits for `globalThis.__result`. Any uncaught exception or console error
 * fails the page, except those matching `expectedErrors` (a page that provokes errors on purpose).
 */
async function pageResult(browser, url, { timeout = 60_000, screenshot, expectedErrors } = {}) {
  if (browser.webdriver) return webkitPageResult(browser, url, { timeout, screenshot });
  const page = await browser.newPage();
  const errors = [];
  // an uncaught exception fails the page at once (a module that failed to load never reports)
  let uncaught;
  const thrown = new Promise((_, reject) => {
    uncaught = reject;
  });
  thrown.catch(() => {}); // it may reject during goto(), before the race below listens
  page.on('pageerror', (e) => {
    errors.push(String(e));
    if (!expectedErrors?.test(String(e))) uncaught(new Error(`uncaught on ${url}: ${e}`));
  });
  page.on('console', (m) => {
    if ((typeof m.type === 'function' ? m.type() : m.type) !== 'error') return;
    const where = m.location?.()?.url;
    errors.push(where ? `${m.text()} (${where})` : m.text());
  });
  try {
    await page.goto(url);
    await Promise.race([
      thrown,
      page
        .waitForFunction(() => globalThis.__result !== undefined, undefined, { timeout })
        .catch(() => {
          throw new Error(
            `no result from ${url} within ${timeout / 1000} s; page errors: ${errors.join(' | ') || 'none'}`,
          );
        }),
    ]);
    const result = await page.evaluate(() => globalThis.__result);
    if (screenshot) await page.screenshot({ path: screenshot });
    const unexpected = errors.filter((e) => !expectedErrors?.test(e));
    if (result && typeof result === 'object') {
      result.checks ??= [];
      result.checks.push({
        name: 'no uncaught exception or console error on the page',
        ok: unexpected.length === 0,
        detail: unexpected.length
          ? unexpected.join(' | ')
          : `none${errors.length ? ` (${errors.length} expected: ${errors.join(' | ')})` : ''}`,
      });
      result.ok &&= unexpected.length === 0;
    }
    return result;
  } finally {
    await page.close();
  }
}

/**
 * Starts workerd (Miniflare) on a bundled Worker given only its entry: Miniflare follows the imports from
 * `scriptPath` itself, the .wasm ones as CompiledWasm modules (no module list; its scanner refuses any
 * `import()` of an expression, so this also proves the bundle has none).
 */
async function miniflare(script, options = {}) {
  const { Miniflare } = await import('miniflare');
  const mf = new Miniflare({
    modules: true,
    scriptPath: script,
    modulesRules: [
      { type: 'CompiledWasm', include: ['**/*.wasm'] },
      { type: 'Data', include: ['**/*.safetensors'] }, // the example Worker's model weights
    ],
    modulesRoot: dirname(script),
    compatibilityDate: COMPATIBILITY_DATE,
    ...options,
  });
  await mf.ready;
  return mf;
}

/** Bundles a Worker with wrangler itself (`wrangler deploy --dry-run`), as a user deploying it would; returns the script. */
async function wranglerBundle(entry, outdir, argv = []) {
  const { stdout, stderr } = await run(
    bin('wrangler'),
    ['deploy', ...(entry ? [entry] : []), '--dry-run', '--outdir', outdir, ...argv],
    { cwd: app, env: { WRANGLER_SEND_METRICS: 'false', NO_COLOR: '1' } },
  );
  const warnings = `${stdout}\n${stderr}`.split('\n').filter((line) => /\[WARNING\]/.test(line));
  return {
    script: join(
      outdir,
      readdirSync(outdir).find((f) => f.endsWith('.js')),
    ),
    warnings,
  };
}

/** The check that a bundler printed no warning about the package (it needs no configuration, so nothing to warn of). */
function noWarnings(tool, warnings) {
  return {
    name: `${tool} printed no warning`,
    ok: warnings.length === 0,
    detail: warnings.length ? warnings.join(' | ') : 'none',
  };
}

/** A Vite logger that keeps what it warns (and still prints it). */
async function viteLogger() {
  const { createLogger } = await import('vite');
  const logger = createLogger('warn');
  const warnings = [];
  for (const level of ['warn', 'warnOnce', 'error']) {
    const print = logger[level];
    logger[level] = (message, options) => {
      warnings.push(String(message));
      print(message, options);
    };
  }
  return { logger, warnings };
}

/** The .wasm module imports a bundled Worker kept (wrangler and the esbuild setup both keep three). */
function wasmImports(script) {
  const imported = readFileSync(script, 'utf8').match(/from\s*"[^"]*\.wasm"/g) ?? [];
  return {
    name: 'the workerd entry imports the three .wasm as modules',
    ok: imported.length === 3,
    detail: imported.join(', '),
  };
}

/** The same bundle with esbuild directly, as wrangler does: conditions workerd/worker/browser, `.wasm` kept as module imports. */
async function bundleWorker(entry, outdir) {
  const esbuild = await import('esbuild');
  const result = await esbuild.build({
    ...WORKER_BUNDLE,
    entryPoints: [entry],
    outdir,
    absWorkingDir: app,
  });
  return {
    script: join(outdir, entry.replace(/^.*\//, '').replace(/\.m?js$/, '.js')),
    warnings: result.warnings.map((w) => w.text),
  };
}

/** Node 20's bits for each build (scenario.js's fingerprints): from its node20-<build> step, else run now. */
const nodeBits = new Map();
async function nodeBitsOf(build) {
  if (!['scalar', 'simd', 'relaxed-simd'].includes(build)) throw new Error(`no build named ${build}`);
  if (!nodeBits.has(build)) {
    const { stdout } = await run(process.execPath, ['--experimental-wasm-relaxed-simd', 'host.mjs', build], {
      cwd: app,
    });
    nodeBits.set(build, lastJson(stdout).bits);
  }
  return nodeBits.get(build);
}

/**
 * Adds the check that a step's scenario gave the bits Node gives for the same build: a build is the same
 * code everywhere, so every engine must compute the same bits (the forced node20-<build> steps are the
 * reference).
 */
async function sameBitsAsNode(name, report) {
  if (!report.build) return;
  if (name === `node20-${report.build}`) {
    nodeBits.set(report.build, report.bits);
    return;
  }
  const want = await nodeBitsOf(report.build);
  const differ = Object.keys({ ...want, ...report.bits }).filter((part) => want?.[part] !== report.bits[part]);
  report.checks ??= [];
  report.checks.push({
    name: `the same bits as Node 20's ${report.build} build`,
    ok: differ.length === 0,
    detail: differ.length
      ? `differ in ${differ.map((p) => `${p} (${report.bits[p]} vs ${want?.[p]})`).join(', ')}`
      : `${Object.keys(want).length} parts identical`,
  });
  report.ok &&= differ.length === 0;
}

// --------------------------------------------------------------------------------------- the package

let tarball, packed;
await step('pack', 'package', async () => {
  const { stdout } = await run('npm', ['pack', '--json', '--pack-destination', work, '--loglevel=error']);
  packed = JSON.parse(stdout.slice(stdout.indexOf('[')))[0];
  tarball = join(work, packed.filename);
  const paths = packed.files.map((f) => f.path);
  const checks = [];
  const must = [
    'package.json',
    'README.md',
    'LICENSE',
    'CHANGELOG.md',
    'dist/index.js',
    'dist/index.d.ts',
    'dist/workerd.js',
    'dist/wasm-source.js',
    'dist/wasm-source-workerd.js',
    'dist/attention-worker.js',
    'wasm/attention-relaxed-simd.wasm',
    'wasm/attention-simd.wasm',
    'wasm/attention-scalar.wasm',
    'wasm/attention-relaxed-simd-shared.wasm',
    'wasm/attention-simd-shared.wasm',
    'wasm/attention-scalar-shared.wasm',
  ];
  const missing = must.filter((p) => !paths.includes(p));
  checks.push({
    name: 'the tarball holds what users need',
    ok: missing.length === 0,
    detail: missing.length ? `missing ${missing}` : `${paths.length} files`,
  });
  const extra = paths.filter(
    (p) =>
      !/^(package\.json|README\.md|LICENSE|CHANGELOG\.md|dist\/[\w.-]+\.(js|js\.map|d\.ts)|wasm\/attention-[\w-]+\.wasm)$/.test(
        p,
      ),
  );
  checks.push({
    name: 'and nothing else (no sources, tests, benches)',
    ok: extra.length === 0,
    detail: extra.length ? extra.join(', ') : 'only dist/*.{js,js.map,d.ts}, wasm/*.wasm',
  });
  for (const f of packed.files.filter((f) => f.path.endsWith('.wasm'))) {
    checks.push({
      name: `${f.path} ≤ ${BUDGET.wasm / 1024} KB`,
      ok: f.size <= BUDGET.wasm,
      detail: `${(f.size / 1024).toFixed(1)} KB`,
    });
  }
  const js = packed.files
    .filter((f) => f.path.startsWith('dist/') && f.path.endsWith('.js'))
    .reduce((s, f) => s + f.size, 0);
  checks.push({
    name: `facade JavaScript ≤ ${BUDGET.facadeJs / 1024} KB`,
    ok: js <= BUDGET.facadeJs,
    detail: `${(js / 1024).toFixed(1)} KB in dist/*.js`,
  });
  return {
    ok: checks.every((c) => c.ok),
    checks,
    tarball: packed.filename,
    size: packed.size,
    unpackedSize: packed.unpackedSize,
  };
});
if (!tarball) {
  console.error('npm pack failed; nothing to test');
  process.exit(1);
}

await step('publint', 'lint', async () => {
  const dir = join(work, 'extracted');
  mkdirSync(dir);
  await run('tar', ['xzf', tarball, '-C', dir]);
  const { stdout } = await run(bin('publint'), ['--strict', join(dir, 'package')]);
  return { ok: true, checks: [{ name: 'publint --strict', ok: true, detail: stdout.trim().split('\n').pop() }] };
});

await step('attw', 'lint', async () => {
  // ESM-only by design: `require` works through Node's require(esm) (Node ^20.19 and >=22.12, tested below), which
  // attw's node10/node16-cjs resolutions do not model; the esm-only profile checks the rest.
  // The .wasm subpaths are assets for bundlers and workerd, with no types to check.
  const { stdout } = await run(bin('attw'), [
    tarball,
    '--profile',
    'esm-only',
    '--format',
    'table-flipped',
    '--no-color',
    '--exclude-entrypoints',
    ...packed.files.filter((f) => f.path.endsWith('.wasm')).map((f) => `./${f.path}`),
  ]);
  return {
    ok: true,
    checks: [{ name: 'attw --profile esm-only', ok: true, detail: stdout.trim().split('\n').filter(Boolean).pop() }],
  };
});

// ---------------------------------------------------------------------------------- scratch project

await step('install', 'setup', async () => {
  mkdirSync(app, { recursive: true });
  writeFileSync(
    join(app, 'package.json'),
    JSON.stringify({ name: 'consumer', private: true, type: 'module' }, null, 2),
  );
  // Deno resolves bare imports from this node_modules folder (no `npm:` prefix needed)
  writeFileSync(join(app, 'deno.json'), JSON.stringify({ nodeModulesDir: 'manual' }, null, 2));
  // the scenario imports the one float64 reference and RNG (test/support/, whose RNG imports the
  // examples' generator): keep the repository's layout
  cpSync(join(here, 'scenario.js'), join(app, 'test/runtimes/scenario.js'));
  cpSync(join(here, '../support'), join(app, 'test/support'), { recursive: true, filter: (f) => !f.endsWith('.ts') });
  writeFileSync(join(app, 'scenario.js'), "export * from './test/runtimes/scenario.js';\n");
  cpSync(join(here, 'host.mjs'), join(app, 'host.mjs'));
  cpSync(join(here, 'pages'), join(app, 'pages'), { recursive: true });
  cpSync(join(root, 'examples'), join(app, 'examples'), { recursive: true });
  await run('npm', ['install', tarball, '--prefer-offline', '--no-audit', '--no-fund', '--loglevel=error'], {
    cwd: app,
  });
  const installed = JSON.parse(readFileSync(join(app, 'node_modules/wasm-attention/package.json'), 'utf8'));
  return {
    ok: true,
    checks: [{ name: 'npm install <tarball>', ok: true, detail: `wasm-attention@${installed.version}` }],
  };
});

// ---------------------------------------------------------------------------------------- runtimes

const host = (command, argv, env) => async () => lastJson((await run(command, argv, { cwd: app, env })).stdout);

// the contract holds in every build, not only the one init() picks: each forced, from the packed package
// (first: their bits are what every other step's are compared with)
for (const build of ['scalar', 'simd', 'relaxed-simd']) {
  await step(
    `node20-${build}`,
    'runtime',
    host(process.execPath, ['--experimental-wasm-relaxed-simd', 'host.mjs', build]),
  );
}

await step('node20', 'runtime', async () => {
  const report = await host(process.execPath, ['host.mjs'])();
  report.node = process.version;
  return report;
});
await step('node20-relaxed-flag', 'runtime', host(process.execPath, ['--experimental-wasm-relaxed-simd', 'host.mjs']));
await step('node22', 'runtime', async () => {
  const dir = join(here, 'node22');
  const node22 = join(dir, 'node_modules/.bin/node');
  const want = JSON.parse(readFileSync(join(dir, 'package.json'), 'utf8')).devDependencies.node;
  const have = existsSync(node22) ? (await run(node22, ['--version'])).stdout.trim() : '';
  if (have !== `v${want}`) await run('npm', ['ci', '--no-audit', '--no-fund', '--loglevel=error'], { cwd: dir });
  const report = await host(node22, ['host.mjs'])();
  report.node = (await run(node22, ['--version'])).stdout.trim();
  return report;
});

await step(
  'deno',
  'runtime',
  host(bin('deno'), ['run', '--allow-read', 'host.mjs'], {
    DENO_NO_UPDATE_CHECK: '1',
    DENO_DIR: join(work, 'deno-dir'),
    NO_COLOR: '1',
  }),
);

await step('bun', 'runtime', host(bin('bun'), ['host.mjs'], { BUN_INSTALL_CACHE_DIR: join(work, 'bun-cache') }));

let server, capturingServer;
const served = async () => (server ??= await serve(app));
/** The same site for WebKit, whose pages record their own errors (webdriver.mjs). */
const servedCapturing = async () => (capturingServer ??= await serve(app, { captureErrors: true }));

/**
 * The check that a page's import map is what a user writes for any npm package: package names mapped to
 * their browser entries, nothing internal to the package (no `#` subpath import, no scopes).
 */
function importMapCheck(page) {
  const html = readFileSync(join(app, page.replace(/\?.*$/, '')), 'utf8');
  const map = JSON.parse(/<script type="importmap">([\s\S]*?)<\/script>/.exec(html)?.[1] ?? '{}');
  const names = Object.keys(map.imports ?? {});
  const ok = names.length > 0 && names.every((n) => /^(@[\w.-]+\/)?[\w.-]+$/.test(n)) && !map.scopes;
  return {
    name: `${page}'s import map names only packages`,
    ok,
    detail: `${names.join(', ')}${map.scopes ? `; scopes ${JSON.stringify(map.scopes)}` : ''}`,
  };
}

/** A page with an import map, with the import map checked too. */
async function importMapPage(browser, page, options) {
  const site = browser.webdriver ? await servedCapturing() : await served();
  const report = await pageResult(browser, `${site.url}/${page}`, options);
  const check = importMapCheck(page);
  report.checks.push(check);
  report.ok &&= check.ok;
  return report;
}

// no bundler: an import map of package names alone (pages/scenario.html)
await step('chromium', 'runtime', async () => importMapPage(await chromiumBrowser(), 'pages/scenario.html'));
await step('chromium-bidi', 'runtime', async () => importMapPage(await chromiumBidiBrowser(), 'pages/scenario.html'));
await step('firefox', 'runtime', async () => importMapPage(await firefoxBrowser(), 'pages/scenario.html'));
await step('webkit', 'runtime', async () => {
  const browser = await webkitBrowser();
  const report = await importMapPage(browser, 'pages/scenario.html');
  report.browser = browser.version;
  return report;
});
// the same package on a page served without COOP/COEP: one thread with 'auto', a clear rejection for 2
await step('chromium-not-isolated', 'runtime', async () => {
  const site = await serve(app, { isolated: false });
  try {
    return await pageResult(await chromiumBrowser(), `${site.url}/pages/scenario.html?not-isolated`);
  } finally {
    await site.close();
  }
});

await step('webkit-not-isolated', 'runtime', async () => {
  const site = await serve(app, { isolated: false, captureErrors: true });
  try {
    return await pageResult(await webkitBrowser(), `${site.url}/pages/scenario.html?not-isolated`);
  } finally {
    await site.close();
  }
});

await step('workerd', 'runtime', async () => {
  // bundled as wrangler bundles a Worker (esbuild, conditions workerd/worker/browser), run by workerd via Miniflare
  const { script, warnings } = await bundleWorker('pages/worker.js', join(app, 'out/worker'));
  return workerdScenario(script, noWarnings('esbuild', warnings));
});

await step('workerd-wrangler', 'runtime', async () => {
  // bundled by wrangler itself (no configuration: its default rule keeps .wasm imports as modules)
  const { script, warnings } = await wranglerBundle('pages/worker.js', join(app, 'out/worker-wrangler'), [
    '--name',
    'scenario',
    '--compatibility-date',
    COMPATIBILITY_DATE,
  ]);
  return workerdScenario(script, noWarnings('wrangler', warnings));
});

/** Runs the scenario Worker in workerd from its bundle's entry alone, adding the bundler's check. */
async function workerdScenario(script, bundlerCheck) {
  const mf = await miniflare(script);
  try {
    const report = await (await mf.dispatchFetch('http://localhost/')).json();
    report.checks.push(wasmImports(script), bundlerCheck);
    report.ok &&= report.checks.every((c) => c.ok);
    return report;
  } finally {
    await mf.dispose();
  }
}

// ----------------------------------------------------------------------------------------- bundlers

/** Bundles a page's script with esbuild for browsers, as an app would; `options` add to BROWSER_BUNDLE. */
async function bundlePage(entry, outfile, options = {}) {
  const esbuild = await import('esbuild');
  return esbuild.build({ ...BROWSER_BUNDLE, entryPoints: [entry], outfile, absWorkingDir: app, ...options });
}

/**
 * What an esbuild app ships by hand beside its bundle in `out`/js/: the package's wasm/ folder (where the facade's
 * `new URL('../wasm/…', import.meta.url)` looks) and the threads' worker script beside the bundle (where
 * `new URL('./attention-worker.js', import.meta.url)` looks).
 */
function shipBesideBundle(out) {
  cpSync(join(app, 'node_modules/wasm-attention/wasm'), join(out, 'wasm'), { recursive: true });
  cpSync(join(app, 'node_modules/wasm-attention/dist/attention-worker.js'), join(out, 'js/attention-worker.js'));
}

await step('esbuild-browser', 'bundler', async () => {
  // The usual esbuild setup: bundle the app; ship the package's wasm/ folder beside the bundle's folder,
  // where the facade's `new URL('../wasm/…', import.meta.url)` looks (esbuild leaves import.meta.url alone).
  const out = join(app, 'out/esbuild');
  const result = await bundlePage('pages/bundle-entry.js', join(out, 'js/app.js'), { minify: true, metafile: true });
  shipBesideBundle(out);
  cpSync(join(app, 'pages/bundle.html'), join(out, 'index.html'));
  const report = await pageResult(await chromiumBrowser(), `${(await served()).url}/out/esbuild/index.html`);
  const bytes = readFileSync(join(out, 'js/app.js'));
  report.bundle = `${(bytes.length / 1024).toFixed(1)} KB minified, ${(gzipSync(bytes).length / 1024).toFixed(1)} KB gzipped (with the scenario)`;
  const facade = Object.entries(result.metafile.outputs[Object.keys(result.metafile.outputs)[0]].inputs)
    .filter(([path]) => path.includes('node_modules/'))
    .reduce((sum, [, input]) => sum + input.bytesInOutput, 0);
  report.checks.push(
    {
      name: `the package's code in a minified bundle ≤ ${BUDGET.facadeBundle / 1024} KB`,
      ok: facade <= BUDGET.facadeBundle,
      detail: `${(facade / 1024).toFixed(1)} KB (facade and its dependency)`,
    },
    noWarnings(
      'esbuild',
      result.warnings.map((w) => w.text),
    ),
  );
  report.ok &&= report.checks.every((c) => c.ok);
  return report;
});

await step('missing-wasm', 'loading', async () => {
  // the same esbuild setup with the wasm/ folder forgotten (the bundle lives one level deeper, in nowasm/js/)
  const out = join(app, 'out/esbuild/nowasm');
  await bundlePage('pages/missing-entry.js', join(out, 'js/app.js'));
  cpSync(join(app, 'pages/bundle.html'), join(out, 'index.html'));
  return pageResult(await chromiumBrowser(), `${(await served()).url}/out/esbuild/nowasm/index.html`, {
    expectedErrors: /404/,
  }); // the forgotten .wasm files, which the page provokes on purpose
});

await step('esbuild-worker', 'bundler', async () => {
  // The same for a module Web Worker: the worker's bundle sits in js/ too, so the same wasm/ folder serves it.
  const out = join(app, 'out/esbuild');
  await bundlePage('pages/web-worker-entry.js', join(out, 'js/worker.js'), { minify: true });
  shipBesideBundle(out); // also under --only
  cpSync(join(app, 'pages/web-worker.html'), join(out, 'web-worker.html'));
  return pageResult(await chromiumBrowser(), `${(await served()).url}/out/esbuild/web-worker.html`);
});

await step('vite', 'bundler', async () => {
  // `vite build` with no configuration: Vite sees `new URL('../wasm/…', import.meta.url)` and emits the .wasm as assets.
  const { build } = await import('vite');
  const dir = join(app, 'pages');
  cpSync(join(dir, 'vite-index.html'), join(dir, 'index.html'));
  const { logger, warnings } = await viteLogger();
  await build({
    root: dir,
    customLogger: logger,
    build: { outDir: join(app, 'out/vite'), emptyOutDir: true, target: 'es2022' },
    configFile: false,
  });
  const assets = readdirSync(join(app, 'out/vite/assets'));
  const wasm = assets.filter((a) => a.endsWith('.wasm'));
  const site = await serve(join(app, 'out/vite')); // Vite's default base is '/': serve the build as a site root
  const chromiumReport = await pageResult(await chromiumBrowser(), `${site.url}/`).finally(() => {});
  const firefoxReport = await pageResult(await firefoxBrowser(), `${site.url}/`).finally(() => site.close());
  // each browser's bits against Node's for its build, before the two reports become one
  await sameBitsAsNode('vite', chromiumReport);
  await sameBitsAsNode('vite', firefoxReport);
  delete chromiumReport.bits;
  chromiumReport.checks.push(
    {
      name: 'Vite emitted the six .wasm files (plain and shared-memory) as assets',
      ok: wasm.length === 6,
      detail: wasm.join(', '),
    },
    noWarnings('vite build', warnings),
  );
  chromiumReport.checks.push(...firefoxReport.checks.map((c) => ({ ...c, name: `firefox: ${c.name}` })));
  chromiumReport.ok = chromiumReport.checks.every((c) => c.ok);
  chromiumReport.build = `${chromiumReport.build}/${firefoxReport.build}`;
  return chromiumReport;
});

await step('vite-dev', 'bundler', async () => {
  // `vite` (the dev server, with its dependency pre-bundling) with no configuration either.
  const { createServer } = await import('vite');
  const dir = join(app, 'pages');
  const { logger, warnings } = await viteLogger();
  const server = await createServer({
    root: dir,
    configFile: false,
    customLogger: logger,
    server: { host: '127.0.0.1', port: 0 },
  });
  await server.listen();
  try {
    const report = await pageResult(await chromiumBrowser(), server.resolvedUrls.local[0]);
    report.checks.push(noWarnings('the vite dev server', warnings));
    report.ok &&= report.checks.every((c) => c.ok);
    return report;
  } finally {
    await server.close();
  }
});

// ----------------------------------------------------------------------------------------- examples

/** Runs a Node example from the installed package; its last line is a JSON report with `ok`. */
async function nodeExample(file, argv) {
  const { stdout } = await run(process.execPath, [file, ...argv], { cwd: app });
  const report = lastJson(stdout);
  const lines = stdout.trim().split('\n');
  return { ...report, checks: [{ name: file, ok: report.ok, detail: lines.slice(0, -1).join(' / ') }] };
}

await step('example-node', 'example', () => nodeExample('examples/node/decode.mjs', ['--steps', '64']));
// the README's "Use it in a model": a transformer's decode loop around KVCache, checked against recomputing
await step('example-model', 'example', async () => {
  const report = await nodeExample('examples/node/model.mjs', ['--steps', '16']);
  // the layer the README shows is the one that runs
  const forward = (text) => /^function forward[\s\S]*?^}$/m.exec(text)?.[0];
  const shown = forward(readFileSync(join(root, 'README.md'), 'utf8'));
  const same = shown !== undefined && shown === forward(readFileSync(join(app, 'examples/node/model.mjs'), 'utf8'));
  report.checks.push({
    name: "the README's forward() is examples/node/model.mjs's",
    ok: same,
    detail: same ? `${shown.split('\n').length} lines` : 'they differ',
  });
  report.ok &&= same;
  return report;
});

/**
 * The tiny model of examples/model generating from the installed package: PyTorch's greedy continuation
 * (reference.json) is what every runtime must give, token for token, so all of them give the same tokens.
 */
const MODEL_TOKENS = 32;
const modelTokens = new Map(); // leg → the tokens it generated
async function modelLeg(name, generate) {
  const reference = JSON.parse(readFileSync(join(root, 'examples/model/tiny/reference.json'), 'utf8'));
  const expected = reference.greedy.new_ids.slice(0, MODEL_TOKENS);
  const report = await generate();
  const tokens = Array.isArray(report?.tokens) ? report.tokens : [];
  modelTokens.set(name, tokens);
  const same = tokens.join() === expected.join();
  report.checks ??= [];
  report.checks.push({
    name: `the ${MODEL_TOKENS} tokens of PyTorch's greedy continuation`,
    ok: same,
    detail: same ? tokens.join(',') : `got ${tokens.join(',')}, want ${expected.join(',')}`,
  });
  // the runner's matmuls: WebAssembly wherever the runtime can have the module (the workerd bundle imports it)
  const wasm = report?.matmul === 'wasm';
  report.checks.push({ name: "the runner's matmuls in WebAssembly SIMD", ok: wasm, detail: String(report?.matmul) });
  report.ok &&= same && wasm;
  return report;
}
/** Runs test/runtimes/generate.mjs in a server-side runtime, from the scratch project. */
const generateIn = (command, argv, env) => async () => {
  cpSync(join(here, 'generate.mjs'), join(app, 'generate.mjs'));
  return lastJson((await run(command, [...argv, 'generate.mjs', String(MODEL_TOKENS)], { cwd: app, env })).stdout);
};
const chatPage = async (browser) => importMapPage(await browser, `examples/browser/chat.html?tokens=${MODEL_TOKENS}`);

await step('model-node20', 'example', () => modelLeg('model-node20', generateIn(process.execPath, [])));
await step('model-node22', 'example', async () => {
  const node22 = join(here, 'node22/node_modules/.bin/node'); // the node22 step's (installed here under --only)
  if (!existsSync(node22))
    await run('npm', ['ci', '--no-audit', '--no-fund', '--loglevel=error'], { cwd: join(here, 'node22') });
  return modelLeg('model-node22', generateIn(node22, []));
});
await step('model-deno', 'example', () =>
  modelLeg(
    'model-deno',
    generateIn(bin('deno'), ['run', '--allow-read'], {
      DENO_NO_UPDATE_CHECK: '1',
      DENO_DIR: join(work, 'deno-dir'),
      NO_COLOR: '1',
    }),
  ),
);
await step('model-bun', 'example', () =>
  modelLeg('model-bun', generateIn(bin('bun'), [], { BUN_INSTALL_CACHE_DIR: join(work, 'bun-cache') })),
);
await step('model-chromium', 'example', () => modelLeg('model-chromium', () => chatPage(chromiumBrowser())));
await step('model-firefox', 'example', () => modelLeg('model-firefox', () => chatPage(firefoxBrowser())));
await step('model-webkit', 'example', () => modelLeg('model-webkit', () => chatPage(webkitBrowser())));

/** The browser example (examples/browser/index.html) run for 200 steps, with a screenshot of its page. */
async function browserExample(name, browser) {
  const shot = join(process.env.SCREENSHOT_DIR ?? work, `${name}.png`);
  const report = await importMapPage(await browser, 'examples/browser/index.html?steps=200', { screenshot: shot });
  report.screenshot = shot;
  return report;
}

await step('example-browser', 'example', () => browserExample('example-browser', chromiumBrowser()));
await step('example-browser-webkit', 'example', () => browserExample('example-browser-webkit', webkitBrowser()));

await step('example-worker', 'example', async () => {
  const { exerciseWorker, EXAMPLE_WORKER_SHAPE } = await import('./exercise-worker.mjs');
  // deployed as its README says: wrangler with the example's wrangler.toml, nothing else
  const { script, warnings } = await wranglerBundle(undefined, join(app, 'out/example-worker'), [
    '--config',
    'examples/worker/wrangler.toml',
  ]);
  // the example's small-shape setting (its default is Llama-3.2-1B's), so the scenario's JSON bodies stay small
  const mf = await miniflare(script, {
    durableObjects: { CONVERSATIONS: { className: 'Conversation', useSQLite: true } },
    bindings: { CACHE_OPTIONS: JSON.stringify(EXAMPLE_WORKER_SHAPE) },
    host: '127.0.0.1',
    port: 0,
  });
  try {
    const url = await mf.ready;
    const report = await exerciseWorker(url.href);
    report.checks.push(noWarnings('wrangler', warnings));
    report.ok &&= report.checks.every((c) => c.ok);
    return report;
  } finally {
    await mf.dispose();
  }
});

// the example Worker's /generate: the tiny model, its weights in the bundle, in workerd
await step('model-workerd', 'example', () =>
  modelLeg('model-workerd', async () => {
    const outdir = join(app, 'out/model-worker');
    const { script, warnings } = await wranglerBundle(undefined, outdir, ['--config', 'examples/worker/wrangler.toml']);
    // what Workers count against the script size limit: the upload (the script and its modules), compressed
    const files = readdirSync(outdir).filter((f) => /\.(js|wasm|safetensors)$/.test(f));
    const gzipped = files.reduce((n, f) => n + gzipSync(readFileSync(join(outdir, f))).length, 0);
    const mf = await miniflare(script, {
      durableObjects: { CONVERSATIONS: { className: 'Conversation', useSQLite: true } },
    });
    try {
      const reference = JSON.parse(readFileSync(join(root, 'examples/model/tiny/reference.json'), 'utf8'));
      const text = new TextDecoder().decode(Uint8Array.from(reference.greedy.prompt_ids.slice(1)));
      const response = await mf.dispatchFetch('http://localhost/conversations/matrix/generate', {
        method: 'POST',
        body: JSON.stringify({ text, maxNewTokens: MODEL_TOKENS }),
        headers: { 'content-type': 'application/json' },
      });
      const events = (await response.text()).split('\n\n').filter(Boolean);
      const tokens = events.filter((e) => e.startsWith('data: ')).map((e) => JSON.parse(e.slice(6)).id);
      const done = events.some((e) => e.startsWith('event: done\n'));
      const checks = [
        {
          name: 'POST /conversations/:id/generate streams server-sent events to the end',
          ok: response.status === 200 && /^text\/event-stream/.test(response.headers.get('content-type')) && done,
          detail: `${response.status}, ${events.length} events, ${done ? 'done' : `no done event: ${events.at(-1)}`}`,
        },
        {
          name: "the Worker's upload, compressed, within Workers' 10 MB script limit (paid plans; free: 3 MB)",
          ok: gzipped <= 10 * 1024 * 1024,
          detail: `${(gzipped / 1024 / 1024).toFixed(2)} MiB gzipped (${files.join(', ')})`,
        },
        noWarnings('wrangler', warnings),
      ];
      const finished = events.find((e) => e.startsWith('event: done\n'));
      const matmul = finished ? JSON.parse(finished.split('\ndata: ')[1]).matmul : undefined;
      return { ok: checks.every((c) => c.ok), tokens, checks, build: '', matmul };
    } finally {
      await mf.dispose();
    }
  }),
);

// ------------------------------------------------------------------------------------------- report

await chromium?.close();
await chromiumBidi?.close();
await firefox?.close();
await webkit?.close();
await server?.close();
await capturingServer?.close();
if (!keep) rmSync(work, { recursive: true, force: true });
else console.log(`scratch folder kept: ${work}`);

const failed = results.filter((r) => !r.ok);
const runtimes = results.filter((r) => r.kind === 'runtime' || r.kind === 'bundler');
console.log(`\nbuild chosen: ${runtimes.map((r) => `${r.name} ${r.build || '?'}`).join(', ')}`);
console.log(
  `threads got: ${runtimes
    .filter((r) => r.detail?.threads)
    .map((r) => `${r.name} ${r.detail.threads}`)
    .join(', ')}`,
);
if (modelTokens.size) {
  const kinds = new Set([...modelTokens.values()].map((t) => t.join()));
  console.log(
    `model tokens: ${kinds.size === 1 ? `the same ${MODEL_TOKENS} in` : 'DIFFER across'} ${[...modelTokens.keys()].join(', ')}: ` +
      [...kinds].map((k) => `[${k}]`).join(' vs '),
  );
}
console.log(`runtime matrix: ${((Date.now() - started) / 1000).toFixed(0)} s in all`);
console.log(`${results.length - failed.length} passed, ${failed.length} failed`);
if (results.length === 0) console.log('nothing matched --only');
process.exit(failed.length || results.length === 0 ? 1 : 0);
