// esbuild's settings, shared by the runtime matrix (run.mjs) and the Worker test (test/edge.test.ts), so that
// each bundles the way an app's build would, and both the same way.

/** @typedef {import('esbuild').BuildOptions} BuildOptions */

/** An app's bundle: one ES2022 module; warnings are printed (the checks also refuse them). */
/** @type {BuildOptions} */
const APP_BUNDLE = { bundle: true, format: 'esm', target: 'es2022', logLevel: 'warning' };

/** A page's script, bundled for browsers. */
/** @type {BuildOptions} */
export const BROWSER_BUNDLE = { ...APP_BUNDLE, platform: 'browser' };

/**
 * A Worker, bundled as wrangler does: conditions workerd/worker/browser, `.wasm` kept as module imports (and
 * `.safetensors`, the example's model weights, as Data modules, by its wrangler.toml's rule).
 */
/** @type {BuildOptions} */
export const WORKER_BUNDLE = {
  ...APP_BUNDLE,
  platform: 'neutral',
  conditions: ['workerd', 'worker', 'browser'],
  mainFields: ['module', 'main'],
  loader: { '.wasm': 'copy', '.safetensors': 'copy' },
};
