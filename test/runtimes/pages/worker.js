// The scenario as a Cloudflare Worker (bundled the way wrangler bundles: esbuild, `workerd` condition).
import { scenario } from '../scenario.js';

export default {
  async fetch() {
    return Response.json(await scenario());
  },
};
