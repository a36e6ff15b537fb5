// One benchmark job in a browser page (bench/browser.mjs opens one page per job): ?job=<limits | build |
// plain | ort-web-<n>t | ort-web-auto>&config=<SuiteOptions JSON>. Sets globalThis.__result = { rows, ... } or { error }.
import { oursOf, ortOf, runWasm, runPlain, runOrt, workloadSizes } from '../suite.mjs';
import { measureLimits } from '../limits/limits.mjs';

const params = new URLSearchParams(location.search);
const job = params.get('job') ?? '';
/** @type {import('../suite.mjs').SuiteOptions} */
const opts = JSON.parse(params.get('config') ?? '{}');
const pre = /** @type {HTMLElement} */ (document.getElementById('log'));
const log = (/** @type {string} */ s) => {
  pre.textContent += `${s}\n`;
  console.log(s);
};
/** @type {import('../suite.mjs').Ctx} */
const ctx = {
  opts,
  log,
  runtime: navigator.userAgent.match(/(HeadlessChrome|Chrome|Chromium)\/[\d.]+/)?.[0] ?? 'browser',
};

async function run() {
  /** @type {Record<string, any>} */
  const out = { job, rows: [], crossOriginIsolated };
  if (job === 'limits') {
    const get = async (/** @type {string} */ f) =>
      new Uint8Array(await (await fetch(`/bench/.build/${f}`)).arrayBuffer());
    const simd = await get('limits-simd.wasm');
    /** @type {Uint8Array<ArrayBuffer> | null} */
    let relaxed = await get('limits-relaxed.wasm');
    if (!WebAssembly.validate(relaxed)) relaxed = null;
    out.limits = await measureLimits({ simd, relaxed }, workloadSizes(opts));
  } else if (oursOf(job)) {
    const { build, threads } = /** @type {{ build: string, threads: number | 'auto' }} */ (oursOf(job));
    const pkg = await import('wasm-attention');
    const t0 = performance.now();
    const info = await pkg.init({ build: /** @type {any} */ (build), threads });
    out.initMs = performance.now() - t0;
    out.threads = info.threads;
    if (info.build !== build) out.unavailable = `init({ build: '${build}' }) gave '${info.build}'`;
    else {
      ctx.pkg = pkg;
      out.rows = await runWasm(job, ctx);
    }
  } else if (job === 'plain') {
    out.rows = await runPlain(ctx);
  } else if (ortOf(job)?.flavor === 'web') {
    const { threads } = /** @type {NonNullable<ReturnType<typeof ortOf>>} */ (ortOf(job));
    const ort = await import('onnxruntime-web');
    ort.env.wasm.numThreads = threads === 'auto' ? 0 : threads; // 0: onnxruntime-web picks
    ort.env.wasm.wasmPaths = '/node_modules/onnxruntime-web/dist/';
    out.ortVersion = ort.env.versions?.web ?? ort.env.versions?.common;
    ctx.ort = ort;
    ctx.getModel = async (op, kind, shape) =>
      new Uint8Array(await (await fetch(`/bench-models/${op}-${kind}-${shape}.onnx`)).arrayBuffer());
    const pkg = await import('wasm-attention'); // for the output check
    await pkg.init();
    ctx.pkg = pkg;
    out.rows = await runOrt('web', threads, ctx);
    out.threads = ort.env.wasm.numThreads; // what 'auto' became (onnxruntime-web writes its choice back)
  } else {
    throw new Error(`unknown job ${job}`);
  }
  return out;
}

run().then(
  (r) => {
    /** @type {any} */ (globalThis).__result = r;
  },
  (e) => {
    /** @type {any} */ (globalThis).__result = { job, error: String(e?.stack ?? e) };
  },
);
