// The scenario inside a module Web Worker (bundled with esbuild), reporting back to the page.
import { scenario } from '../scenario.js';

scenario().then((report) => postMessage(report));
