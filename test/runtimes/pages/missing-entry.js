// A bundle whose .wasm files were not deployed: init() must reject with an error naming what it tried,
// and a later init({ wasm }) must still succeed (a failed init may be retried).
import { init } from 'wasm-attention';

const checks = [];
let message = '';
try {
  await init();
} catch (error) {
  message = error.message;
}
const named =
  ['relaxed-simd', 'simd', 'scalar'].every((b) => message.includes(`'${b}'`)) && message.includes('init({ wasm })');
checks.push({
  name: 'with no .wasm deployed, init() rejects naming every build and location tried',
  ok: named,
  detail: message,
});
let build, detail;
try {
  ({ build } = await init({ wasm: fetch('/node_modules/wasm-attention/wasm/attention-simd.wasm') }));
  detail = build;
} catch (error) {
  detail = String(error);
}
checks.push({ name: 'a later init({ wasm: fetch(…) }) succeeds', ok: build === 'simd', detail });
globalThis.__result = { ok: checks.every((c) => c.ok), build, checks };
