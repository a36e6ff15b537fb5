// The scenario as a bundled app (esbuild, Vite): the bundler resolves 'wasm-attention' from node_modules.
import { scenario } from '../scenario.js';

const report = await scenario();
document.getElementById('report').textContent = JSON.stringify(report, null, 2);
globalThis.__result = report;
