// WebKit for the runtime matrix: WebKitGTK's MiniBrowser, driven by WebKitWebDriver over the W3C WebDriver
// protocol (classic HTTP commands) under xvfb-run, which gives it a virtual X display (WebKitGTK has no
// headless mode). The protocol needs five commands here (new session, navigate, execute script, screenshot,
// delete session), so this speaks it with fetch: the well-kept npm clients (selenium-webdriver 4.49,
// webdriver 10) require Node 22, and the matrix runs on Node 20.
//
// Classic WebDriver reports no console messages or page errors, so pages served to WebKit get ERROR_CAPTURE
// first: it records uncaught exceptions, unhandled rejections and console.error calls in window.__errors,
// which the matrix reads as it reads the other browsers' events.

import { spawn } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { browserPath } from './browsers.mjs';

/** A classic script put before everything else on a page served to WebKit (see above). */
export const ERROR_CAPTURE = `<script>
window.__errors = [];
{ const where = (error) => (error?.stack ? ' at ' + String(error.stack).split('\\n')[0] : '');
  addEventListener('error', (e) => __errors.push(String(e.message) + where(e.error)));
  addEventListener('unhandledrejection', (e) => __errors.push('unhandled rejection: ' + String(e.reason) + where(e.reason))); }
{ const print = console.error; console.error = (...a) => { __errors.push(a.map(String).join(' ')); print.apply(console, a); }; }
</script>
`;

const freePort = () =>
  new Promise((resolve, reject) => {
    const server = createServer();
    server.on('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address();
      server.close(() => resolve(port));
    });
  });

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/**
 * Starts WebKitWebDriver under xvfb-run and opens a MiniBrowser session. The driver, its X server and the
 * browser run in their own process group, which close() ends.
 */
export async function startWebKit() {
  const port = await freePort();
  const base = `http://127.0.0.1:${port}`;
  const output = [];
  const driver = spawn(
    browserPath('xvfb-run'),
    ['--auto-servernum', browserPath('WebKitWebDriver'), `--port=${port}`],
    { detached: true, stdio: ['ignore', 'pipe', 'pipe'] },
  );
  for (const stream of [driver.stdout, driver.stderr]) stream.on('data', (d) => output.push(String(d)));
  let exited = false;
  driver.on('exit', () => {
    exited = true;
  });
  const endGroup = () => {
    try {
      process.kill(-driver.pid, 'SIGTERM');
    } catch {
      /* already gone */
    }
  };

  async function command(method, path, body) {
    const response = await fetch(`${base}${path}`, {
      method,
      headers: { 'content-type': 'application/json; charset=utf-8' },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    const answer = await response.json();
    if (!response.ok || answer.value?.error) {
      throw new Error(`WebDriver ${method} ${path}: ${answer.value?.error}: ${answer.value?.message}`);
    }
    return answer.value;
  }

  try {
    for (let waited = 0; ; waited += 100) {
      if (exited) throw new Error(`WebKitWebDriver exited: ${output.join('').slice(-2000)}`);
      if (waited > 20_000)
        throw new Error(`WebKitWebDriver did not answer within 20 s: ${output.join('').slice(-2000)}`);
      try {
        if ((await command('GET', '/status')).ready) break;
      } catch {
        /* not listening yet */
      }
      await sleep(100);
    }
    const session = await command('POST', '/session', {
      capabilities: {
        alwaysMatch: {
          'webkitgtk:browserOptions': { binary: browserPath('MiniBrowser'), args: ['--automation'] },
        },
      },
    });
    const id = session.sessionId;
    const at = (path) => `/session/${id}${path}`;
    return {
      webdriver: true,
      version: `${session.capabilities.browserName} ${session.capabilities.browserVersion}`,
      goto: (url) => command('POST', at('/url'), { url }),
      /** Runs `script` (a function body) in the page and returns what it returns. */
      evaluate: (script) => command('POST', at('/execute/sync'), { script, args: [] }),
      screenshot: async (path) => writeFileSync(path, Buffer.from(await command('GET', at('/screenshot')), 'base64')),
      async close() {
        await command('DELETE', at('')).catch(() => {});
        endGroup();
      },
    };
  } catch (error) {
    endGroup();
    throw error;
  }
}

/**
 * Opens `url` in the WebKit session and waits for `window.__result`: the report of pageResult in run.mjs,
 * with the page's recorded errors (ERROR_CAPTURE) failing it.
 */
export async function webkitPageResult(webkit, url, { timeout = 60_000, screenshot } = {}) {
  await webkit.goto(url);
  const until = Date.now() + timeout;
  let state;
  for (;;) {
    state = await webkit.evaluate(
      'return { result: window.__result ?? null, errors: window.__errors ?? null, ready: document.readyState }',
    );
    if (state.result !== null) break;
    if (state.errors?.length) throw new Error(`uncaught on ${url}: ${state.errors.join(' | ')}`);
    if (Date.now() > until) {
      throw new Error(
        `no result from ${url} within ${timeout / 1000} s; page errors: ${state.errors?.join(' | ') || 'none'}`,
      );
    }
    await sleep(100);
  }
  if (screenshot) await webkit.screenshot(screenshot);
  const { result, errors } = state;
  const captured = errors !== null;
  if (result && typeof result === 'object') {
    result.checks ??= [];
    result.checks.push({
      name: 'no uncaught exception or console error on the page',
      ok: captured && errors.length === 0,
      detail: captured ? errors.join(' | ') || 'none' : 'the page was served without the error capture',
    });
    result.ok &&= captured && errors.length === 0;
  }
  return result;
}
