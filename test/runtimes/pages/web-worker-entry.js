// The scenario inside a module Web Worker (bundled with esbuild), reporting back to the page. The worker's
// own message handler is set before the package loads (a dynamic import): the package must leave it, and
// the worker's messages, alone (its pool's script starts only in the pool's own workers).
let pings = 0;
self.onmessage = ({ data }) => {
  if (data === 'ping') postMessage({ pong: ++pings });
};
const { scenario } = await import('../scenario.js');
postMessage(await scenario());
