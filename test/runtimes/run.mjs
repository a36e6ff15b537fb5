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
// through puppeteer-core over WebDriver BiDi. Needs Chromium and Firefox ESR from Debian (`apt-get install -y chromium firefox-esr`; .ci/run installs
// them in CI). Everything else comes from devDependencies, and Node 22 from test/runtimes/node22.

import { execFile, spawn } from 'node:child_process';
import { cpSync, existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:http';
import { tmpdir } from 'node:os';
import { dirname, extname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { gzipSync } from 'node:zlib';

const here = dirname(fileURLToPath(import.meta.url));
const root = resolve(here, '../..');
const bin = (name) => join(root, 'node_modules/.bin', name);
const args = process.argv.slice(2);
const only = args.includes('--only') ? args[args.indexOf('--only') + 1].split(',') : undefined;
const keep = args.includes('--keep');
const wanted = (name) => !only || only.includes(name);

const CHROMIUM = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium';
const FIREFOX = process.env.FIREFOX_PATH ?? '/usr/bin/firefox-esr';
const CHROMIUM_ARGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync'];
const COMPATIBILITY_DATE = '2026-04-01'; // workerd 1.20260426 supports dates up to 2026-04-26

/** Size budgets, checked on the tarball. */
const BUDGET = { wasm: 64 * 1024, facadeJs: 64 * 1024, facadeBundle: 32 * 1024 };

const results = []; // { name, kind, build, ok, seconds, detail }
const started = Date.now();
const work = mkdtempSync(join(tmpdir(), 'wasm-attention-runtimes-'));
const app = join(work, 'app');

// ------------------------------------------------------------------------------------------- helpers

function run(command, argv, { cwd = root, env = {}, timeout = 300_000 } = {}) {
  return new Promise((resolve, reject) => {
    execFile(command, argv, { cwd, env: { ...process.env, ...env }, timeout, maxBuffer: 64 << 20 },
      (error, stdout, stderr) => {
        if (error) {
          error.message += `\n--- stdout\n${stdout.slice(-4000)}\n--- stderr\n${stderr.slice(-4000)}`;
          reject(error);
        } else resolve({ stdout, stderr });
      });
  });
}

const lastJson = (stdout) => JSON.parse(stdout.trim().split('\n').filter((l) => l.startsWith('{')).pop());

async function step(name, kind, fn) {
  if (!wanted(name)) return;
  const t0 = Date.now();
  let entry;
  try {
    const report = await fn();
    entry = { name, kind, build: report?.build ?? '', ok: report?.ok ?? true, detail: report };
  } catch (error) {
    entry = { name, kind, build: '', ok: false, detail: { error: String(error?.stack ?? error) } };
  }
  entry.seconds = (Date.now() - t0) / 1000;
  results.push(entry);
  const mark = entry.ok ? 'ok  ' : 'FAIL';
  console.log(`${mark} ${name.padEnd(24)} ${(entry.build || '').padEnd(13)} ${entry.seconds.toFixed(1).padStart(6)} s`);
  for (const c of entry.detail?.checks ?? []) if (!c.ok || process.env.VERBOSE) console.log(`       ${c.ok ? '✓' : '✗'} ${c.name}: ${c.detail}`);
  if (entry.detail?.error) console.log(entry.detail.error.replace(/^/gm, '       '));
}

/** Serves a folder over HTTP on 127.0.0.1 (with the content types browsers need for modules and wasm). */
async function serve(folder) {
  const types = { '.html': 'text/html', '.js': 'text/javascript', '.mjs': 'text/javascript', '.json': 'application/json',
    '.wasm': 'application/wasm', '.css': 'text/css', '.png': 'image/png', '.svg': 'image/svg+xml' };
  const server = createServer((req, res) => {
    const path = decodeURIComponent(new URL(req.url, 'http://x').pathname);
    let file = join(folder, path);
    if (!file.startsWith(folder)) { res.writeHead(403).end(); return; }
    if (existsSync(file) && statSync(file).isDirectory()) file = join(file, 'index.html');
    if (!existsSync(file)) { res.writeHead(404).end('not found'); return; }
    res.writeHead(200, { 'content-type': types[extname(file)] ?? 'application/octet-stream', 'cache-control': 'no-store' });
    res.end(readFileSync(file));
  });
  await new Promise((r) => server.listen(0, '127.0.0.1', r));
  return { url: `http://127.0.0.1:${server.address().port}`, close: () => new Promise((r) => server.close(r)) };
}

// Browsers, launched once each and shared by the pages that use them.
let chromium, chromiumBidi, firefox;
async function chromiumBrowser() {
  if (!existsSync(CHROMIUM)) throw new Error(`Chromium not found at ${CHROMIUM}: install it with \`apt-get install -y chromium\` (or set CHROMIUM_PATH)`);
  const { chromium: launcher } = await import('playwright-core');
  chromium ??= await launcher.launch({ executablePath: CHROMIUM, args: CHROMIUM_ARGS });
  return chromium;
}
async function chromiumBidiBrowser() {
  if (!existsSync(CHROMIUM)) throw new Error(`Chromium not found at ${CHROMIUM}: install it with \`apt-get install -y chromium\` (or set CHROMIUM_PATH)`);
  const puppeteer = (await import('puppeteer-core')).default;
  chromiumBidi ??= await puppeteer.launch({ browser: 'chrome', executablePath: CHROMIUM, headless: true,
    protocol: 'webDriverBiDi', args: CHROMIUM_ARGS.filter((a) => a !== '--headless') });
  return chromiumBidi;
}
async function firefoxBrowser() {
  if (!existsSync(FIREFOX)) throw new Error(`Firefox ESR not found at ${FIREFOX}: install it with \`apt-get install -y firefox-esr\` (or set FIREFOX_PATH)`);
  const puppeteer = (await import('puppeteer-core')).default;
  firefox ??= await puppeteer.launch({ browser: 'firefox', executablePath: FIREFOX, headless: true,
    protocol: 'webDriverBiDi', userDataDir: mkdtempSync(join(work, 'firefox-profile-')) });
  return firefox;
}

/** Opens `url` in a browser page and waits for `globalThis.__result`, collecting the page's errors. */
async function pageResult(browser, url, { timeout = 60_000, screenshot } = {}) {
  const page = await browser.newPage();
  const errors = [];
  page.on('pageerror', (e) => errors.push(String(e)));
  page.on('console', (m) => { if ((typeof m.type === 'function' ? m.type() : m.type) === 'error') errors.push(m.text()); });
  try {
    await page.goto(url);
    await page.waitForFunction(() => globalThis.__result !== undefined, undefined, { timeout }).catch(async () => {
      throw new Error(`no result from ${url} within ${timeout / 1000} s; page errors: ${errors.join(' | ') || 'none'}`);
    });
    const result = await page.evaluate(() => globalThis.__result);
    if (screenshot) await page.screenshot({ path: screenshot });
    if (errors.length && result && typeof result === 'object') result.pageErrors = errors;
    return result;
  } finally {
    await page.close();
  }
}

/**
 * Starts workerd (Miniflare) on a bundled Worker: its .js and the .wasm files beside it, the .wasm as
 * CompiledWasm modules. (Modules are listed rather than found from scriptPath because Miniflare's import
 * scanner refuses the facade's lazy `import('node:fs/promises')`, which workerd never reaches.)
 */
async function miniflare(script, options = {}) {
  const { Miniflare } = await import('miniflare');
  const dir = dirname(script);
  const modules = [{ type: 'ESModule', path: script },
    ...readdirSync(dir).filter((f) => f.endsWith('.wasm')).map((f) => ({ type: 'CompiledWasm', path: join(dir, f) }))];
  const mf = new Miniflare({ modules, modulesRoot: dir, compatibilityDate: COMPATIBILITY_DATE, ...options });
  await mf.ready;
  return mf;
}

/** Bundles a Worker the way wrangler does: esbuild, conditions workerd/worker/browser, `.wasm` kept as module imports. */
async function bundleWorker(entry, outdir) {
  const esbuild = await import('esbuild');
  await esbuild.build({ entryPoints: [entry], outdir, bundle: true, format: 'esm', platform: 'neutral', target: 'es2022',
    conditions: ['workerd', 'worker', 'browser'], mainFields: ['module', 'main'], loader: { '.wasm': 'copy' },
    absWorkingDir: app, logLevel: 'warning' });
  return join(outdir, entry.replace(/^.*\//, '').replace(/\.m?js$/, '.js'));
}

// --------------------------------------------------------------------------------------- the package

let tarball, packed;
await step('pack', 'package', async () => {
  const { stdout } = await run('npm', ['pack', '--json', '--pack-destination', work, '--loglevel=error']);
  packed = JSON.parse(stdout.slice(stdout.indexOf('[')))[0];
  tarball = join(work, packed.filename);
  const paths = packed.files.map((f) => f.path);
  const checks = [];
  const must = ['package.json', 'README.md', 'dist/index.js', 'dist/index.d.ts', 'dist/wasm-source.js', 'dist/wasm-source-workerd.js',
    'wasm/attention-relaxed-simd.wasm', 'wasm/attention-simd.wasm', 'wasm/attention-scalar.wasm'];
  const missing = must.filter((p) => !paths.includes(p));
  checks.push({ name: 'the tarball holds what users need', ok: missing.length === 0, detail: missing.length ? `missing ${missing}` : `${paths.length} files` });
  const extra = paths.filter((p) => !/^(package\.json|README\.md|LICENSE|dist\/[\w.-]+\.(js|js\.map|d\.ts)|wasm\/attention-[\w-]+\.wasm)$/.test(p));
  checks.push({ name: 'and nothing else (no sources, tests, benches)', ok: extra.length === 0, detail: extra.length ? extra.join(', ') : 'only dist/*.{js,js.map,d.ts}, wasm/*.wasm' });
  for (const f of packed.files.filter((f) => f.path.endsWith('.wasm'))) {
    checks.push({ name: `${f.path} ≤ ${BUDGET.wasm / 1024} KB`, ok: f.size <= BUDGET.wasm, detail: `${(f.size / 1024).toFixed(1)} KB` });
  }
  const js = packed.files.filter((f) => f.path.startsWith('dist/') && f.path.endsWith('.js')).reduce((s, f) => s + f.size, 0);
  checks.push({ name: `facade JavaScript ≤ ${BUDGET.facadeJs / 1024} KB`, ok: js <= BUDGET.facadeJs, detail: `${(js / 1024).toFixed(1)} KB in dist/*.js` });
  return { ok: checks.every((c) => c.ok), checks, tarball: packed.filename, size: packed.size, unpackedSize: packed.unpackedSize };
});
if (!tarball) { console.error('npm pack failed; nothing to test'); process.exit(1); }

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
  const { stdout } = await run(bin('attw'), [tarball, '--profile', 'esm-only', '--format', 'table-flipped', '--no-color',
    '--exclude-entrypoints', ...packed.files.filter((f) => f.path.endsWith('.wasm')).map((f) => `./${f.path}`)]);
  return { ok: true, checks: [{ name: 'attw --profile esm-only', ok: true, detail: stdout.trim().split('\n').filter(Boolean).pop() }] };
});

// ---------------------------------------------------------------------------------- scratch project

await step('install', 'setup', async () => {
  mkdirSync(app, { recursive: true });
  writeFileSync(join(app, 'package.json'), JSON.stringify({ name: 'consumer', private: true, type: 'module' }, null, 2));
  // Deno resolves bare imports from this node_modules folder (no `npm:` prefix needed)
  writeFileSync(join(app, 'deno.json'), JSON.stringify({ nodeModulesDir: 'manual' }, null, 2));
  cpSync(join(here, 'scenario.js'), join(app, 'scenario.js'));
  cpSync(join(here, 'reference.js'), join(app, 'reference.js'));
  cpSync(join(here, 'host.mjs'), join(app, 'host.mjs'));
  cpSync(join(here, 'pages'), join(app, 'pages'), { recursive: true });
  cpSync(join(root, 'examples'), join(app, 'examples'), { recursive: true });
  await run('npm', ['install', tarball, '--prefer-offline', '--no-audit', '--no-fund', '--loglevel=error'], { cwd: app });
  const installed = JSON.parse(readFileSync(join(app, 'node_modules/wasm-attention/package.json'), 'utf8'));
  return { ok: true, checks: [{ name: 'npm install <tarball>', ok: true, detail: `wasm-attention@${installed.version}` }] };
});

// ---------------------------------------------------------------------------------------- runtimes

const host = (command, argv, env) => async () => lastJson((await run(command, argv, { cwd: app, env })).stdout);

await step('node20', 'runtime', async () => {
  const report = await host(process.execPath, ['host.mjs'])();
  report.node = process.version;
  return report;
});
await step('node20-relaxed-flag', 'runtime', host(process.execPath, ['--experimental-wasm-relaxed-simd', 'host.mjs']));
// the contract holds in every build, not only the one init() picks: each forced, from the packed package
for (const build of ['scalar', 'simd', 'relaxed-simd']) {
  await step(`node20-${build}`, 'runtime', host(process.execPath, ['--experimental-wasm-relaxed-simd', 'host.mjs', build]));
}

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

await step('deno', 'runtime', host(bin('deno'), ['run', '--allow-read', 'host.mjs'],
  { DENO_NO_UPDATE_CHECK: '1', DENO_DIR: join(work, 'deno-dir'), NO_COLOR: '1' }));

await step('bun', 'runtime', host(bin('bun'), ['host.mjs'], { BUN_INSTALL_CACHE_DIR: join(work, 'bun-cache') }));

let server;
const served = async () => (server ??= await serve(app));

await step('chromium', 'runtime', async () => pageResult(await chromiumBrowser(), `${(await served()).url}/pages/scenario.html`));
await step('chromium-bidi', 'runtime', async () => pageResult(await chromiumBidiBrowser(), `${(await served()).url}/pages/scenario.html`));
await step('firefox', 'runtime', async () => pageResult(await firefoxBrowser(), `${(await served()).url}/pages/scenario.html`));

await step('workerd', 'runtime', async () => {
  // bundled as wrangler bundles a Worker (esbuild, conditions workerd/worker/browser), run by workerd via Miniflare
  const script = await bundleWorker('pages/worker.js', join(app, 'out/worker'));
  const imported = readFileSync(script, 'utf8').match(/from\s*"[^"]*\.wasm"/g) ?? [];
  const mf = await miniflare(script);
  try {
    const report = await (await mf.dispatchFetch('http://localhost/')).json();
    report.checks.push({ name: 'the workerd entry imports the .wasm as modules', ok: imported.length === 3, detail: imported.join(', ') });
    report.ok &&= imported.length === 3;
    return report;
  } finally {
    await mf.dispose();
  }
});

// ----------------------------------------------------------------------------------------- bundlers

await step('esbuild-browser', 'bundler', async () => {
  // The usual esbuild setup: bundle the app; ship the package's wasm/ folder beside the bundle's folder,
  // where the facade's `new URL('../wasm/…', import.meta.url)` looks (esbuild leaves import.meta.url alone).
  const esbuild = await import('esbuild');
  const out = join(app, 'out/esbuild');
  const result = await esbuild.build({ entryPoints: ['pages/bundle-entry.js'], outfile: join(out, 'js/app.js'), bundle: true,
    format: 'esm', platform: 'browser', target: 'es2022', minify: true, absWorkingDir: app, logLevel: 'warning', metafile: true });
  cpSync(join(app, 'node_modules/wasm-attention/wasm'), join(out, 'wasm'), { recursive: true });
  cpSync(join(app, 'pages/bundle.html'), join(out, 'index.html'));
  const report = await pageResult(await chromiumBrowser(), `${(await served()).url}/out/esbuild/index.html`);
  const bytes = readFileSync(join(out, 'js/app.js'));
  report.bundle = `${(bytes.length / 1024).toFixed(1)} KB minified, ${(gzipSync(bytes).length / 1024).toFixed(1)} KB gzipped (with the scenario)`;
  const facade = Object.entries(result.metafile.outputs[Object.keys(result.metafile.outputs)[0]].inputs)
    .filter(([path]) => path.includes('node_modules/')).reduce((sum, [, input]) => sum + input.bytesInOutput, 0);
  report.checks.push({ name: `the package's code in a minified bundle ≤ ${BUDGET.facadeBundle / 1024} KB`, ok: facade <= BUDGET.facadeBundle,
    detail: `${(facade / 1024).toFixed(1)} KB (facade and its two dependencies)` });
  report.ok &&= facade <= BUDGET.facadeBundle;
  return report;
});

await step('missing-wasm', 'loading', async () => {
  // the same esbuild setup with the wasm/ folder forgotten (the bundle lives one level deeper, in nowasm/js/)
  const esbuild = await import('esbuild');
  const out = join(app, 'out/esbuild/nowasm');
  await esbuild.build({ entryPoints: ['pages/missing-entry.js'], outfile: join(out, 'js/app.js'), bundle: true,
    format: 'esm', platform: 'browser', target: 'es2022', absWorkingDir: app, logLevel: 'warning' });
  cpSync(join(app, 'pages/bundle.html'), join(out, 'index.html'));
  return pageResult(await chromiumBrowser(), `${(await served()).url}/out/esbuild/nowasm/index.html`);
});

await step('esbuild-worker', 'bundler', async () => {
  // The same for a module Web Worker: the worker's bundle sits in js/ too, so the same wasm/ folder serves it.
  const esbuild = await import('esbuild');
  const out = join(app, 'out/esbuild');
  await esbuild.build({ entryPoints: ['pages/web-worker-entry.js'], outfile: join(out, 'js/worker.js'), bundle: true,
    format: 'esm', platform: 'browser', target: 'es2022', minify: true, absWorkingDir: app, logLevel: 'warning' });
  cpSync(join(app, 'pages/web-worker.html'), join(out, 'web-worker.html'));
  return pageResult(await chromiumBrowser(), `${(await served()).url}/out/esbuild/web-worker.html`);
});

await step('vite', 'bundler', async () => {
  // `vite build` with no configuration: Vite sees `new URL('../wasm/…', import.meta.url)` and emits the .wasm as assets.
  const { build } = await import('vite');
  const dir = join(app, 'pages');
  cpSync(join(dir, 'vite-index.html'), join(dir, 'index.html'));
  await build({ root: dir, logLevel: 'warn', build: { outDir: join(app, 'out/vite'), emptyOutDir: true, target: 'es2022' }, configFile: false });
  const assets = readdirSync(join(app, 'out/vite/assets'));
  const wasm = assets.filter((a) => a.endsWith('.wasm'));
  const site = await serve(join(app, 'out/vite')); // Vite's default base is '/': serve the build as a site root
  const chromiumReport = await pageResult(await chromiumBrowser(), `${site.url}/`).finally(() => {});
  const firefoxReport = await pageResult(await firefoxBrowser(), `${site.url}/`).finally(() => site.close());
  chromiumReport.checks.push({ name: 'Vite emitted the three .wasm files as assets', ok: wasm.length === 3, detail: wasm.join(', ') });
  chromiumReport.checks.push(...firefoxReport.checks.map((c) => ({ ...c, name: `firefox: ${c.name}` })));
  chromiumReport.ok = chromiumReport.checks.every((c) => c.ok);
  chromiumReport.build = `${chromiumReport.build}/${firefoxReport.build}`;
  return chromiumReport;
});

await step('vite-dev', 'bundler', async () => {
  // `vite` (the dev server, with its dependency pre-bundling) with no configuration either.
  const { createServer } = await import('vite');
  const dir = join(app, 'pages');
  const server = await createServer({ root: dir, configFile: false, logLevel: 'warn', server: { host: '127.0.0.1', port: 0 } });
  await server.listen();
  try {
    return await pageResult(await chromiumBrowser(), server.resolvedUrls.local[0]);
  } finally {
    await server.close();
  }
});

// ----------------------------------------------------------------------------------------- examples

await step('example-node', 'example', async () => {
  const { stdout } = await run(process.execPath, ['examples/node/decode.mjs', '--steps', '64'], { cwd: app });
  const report = lastJson(stdout);
  return { ...report, checks: [{ name: 'examples/node/decode.mjs', ok: report.ok, detail: stdout.trim().split('\n')[0] }] };
});

await step('example-browser', 'example', async () => {
  const shot = join(process.env.SCREENSHOT_DIR ?? work, 'example-browser.png');
  const report = await pageResult(await chromiumBrowser(), `${(await served()).url}/examples/browser/index.html?steps=200`, { screenshot: shot });
  report.screenshot = shot;
  return report;
});

await step('example-worker', 'example', async () => {
  const { exerciseWorker, EXAMPLE_WORKER_SHAPE } = await import('./exercise-worker.mjs');
  const script = await bundleWorker('examples/worker/worker.js', join(app, 'out/example-worker'));
  // the example's small-shape setting (its default is Llama-3.2-1B's), so the scenario's JSON bodies stay small
  const mf = await miniflare(script, { durableObjects: { CONVERSATIONS: { className: 'Conversation', useSQLite: true } },
    bindings: { CACHE_OPTIONS: JSON.stringify(EXAMPLE_WORKER_SHAPE) }, host: '127.0.0.1', port: 0 });
  try {
    const url = await mf.ready;
    return await exerciseWorker(url.href);
  } finally {
    await mf.dispose();
  }
});

// ------------------------------------------------------------------------------------------- report

await chromium?.close();
await chromiumBidi?.close();
await firefox?.close();
await server?.close();
if (!keep) rmSync(work, { recursive: true, force: true });
else console.log(`scratch folder kept: ${work}`);

const failed = results.filter((r) => !r.ok);
const runtimes = results.filter((r) => r.kind === 'runtime' || r.kind === 'bundler');
console.log(`\nbuild chosen: ${runtimes.map((r) => `${r.name} ${r.build || '?'}`).join(', ')}`);
console.log(`runtime matrix: ${((Date.now() - started) / 1000).toFixed(0)} s in all`);
console.log(`${results.length - failed.length} passed, ${failed.length} failed`);
if (results.length === 0) console.log('nothing matched --only');
process.exit(failed.length || results.length === 0 ? 1 : 0);

