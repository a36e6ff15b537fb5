// The scenario on a page served without COOP/COEP (scenario.html?not-isolated): no SharedArrayBuffer, so
// init() runs one thread, and asking for two is a clear rejection that names the headers that would fix it.
import { init } from 'wasm-attention';
import { scenario } from '../scenario.js';

export async function notIsolatedScenario() {
  const report = await scenario({ threads: 1 });
  const check = (name, ok, detail) => {
    report.checks.push({ name, ok: !!ok, detail });
    report.ok &&= !!ok;
  };
  check(
    'the page is not cross-origin isolated',
    globalThis.crossOriginIsolated === false,
    `crossOriginIsolated ${globalThis.crossOriginIsolated}`,
  );
  const refused = await init({ threads: 2 }).then(
    () => '',
    (error) => String(error.message),
  );
  check(
    'init({ threads: 2 }) rejects naming the COOP/COEP headers',
    /not cross-origin isolated/.test(refused) &&
      /Cross-Origin-Opener-Policy: same-origin/.test(refused) &&
      /Cross-Origin-Embedder-Policy: require-corp/.test(refused),
    refused || 'it resolved',
  );
  check('after the rejection, init() still works (one thread)', (await init()).threads === 1, 'threads 1');
  return report;
}
