// The scenario as a Cloudflare Worker (bundled the way wrangler bundles: esbuild, `workerd` condition).
import { scenario } from '../scenario.js';

export default {
  async fetch() {
    const report = await scenario({ threads: 1 }); // workerd has no Worker: one thread
    // prove this is the restricted runtime the workerd entry exists for: compiling bytes is refused here
    const bytes = new Uint8Array([0, 97, 115, 109, 1, 0, 0, 0]);
    const refused = await WebAssembly.compile(bytes).then(
      () => '',
      (error) => String(error.message ?? error),
    );
    report.checks.push({
      name: 'workerd refuses WebAssembly.compile(bytes), so the .wasm came in as modules',
      ok: refused !== '',
      detail: refused || 'compiled',
    });
    report.ok &&= refused !== '';
    return Response.json(report);
  },
};
