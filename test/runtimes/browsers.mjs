#!/usr/bin/env node
// The browsers the runtime matrix drives: Debian's Chromium and Firefox ESR, and WebKit (WebKitGTK's
// MiniBrowser, driven by WebKitWebDriver under a virtual X display from xvfb-run): system packages, nothing
// is downloaded by playwright or puppeteer. `npm test` runs this first, so a fresh machine needs nothing
// installed by hand: missing ones are installed with apt when running as root, and otherwise the run stops
// at once with the command that installs them, before a minute of tests that would fail later.
//
//   node test/runtimes/browsers.mjs     check, install if missing (as root with apt), or fail saying how
//
// CHROMIUM_PATH, FIREFOX_PATH, WEBKIT_DRIVER_PATH, WEBKIT_BROWSER_PATH and XVFB_RUN_PATH point the matrix
// at other executables (and let a test fake their absence).

import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

/** Debian's multiarch folder, where libwebkit2gtk puts MiniBrowser. */
const multiarch =
  process.arch === 'arm64'
    ? 'aarch64-linux-gnu'
    : process.arch === 'x64'
      ? 'x86_64-linux-gnu'
      : `${process.arch}-linux-gnu`;

export const BROWSERS = [
  {
    name: 'Chromium',
    aptPackage: 'chromium',
    path: process.env.CHROMIUM_PATH ?? '/usr/bin/chromium',
    variable: 'CHROMIUM_PATH',
  },
  {
    name: 'Firefox ESR',
    aptPackage: 'firefox-esr',
    path: process.env.FIREFOX_PATH ?? '/usr/bin/firefox-esr',
    variable: 'FIREFOX_PATH',
  },
  {
    name: 'WebKitWebDriver',
    aptPackage: 'webkit2gtk-driver',
    path: process.env.WEBKIT_DRIVER_PATH ?? '/usr/bin/WebKitWebDriver',
    variable: 'WEBKIT_DRIVER_PATH',
  },
  {
    // WebKitGTK's small browser, which WebKitWebDriver starts (libwebkit2gtk-4.1-0, a dependency of the driver)
    name: 'MiniBrowser',
    aptPackage: 'webkit2gtk-driver',
    path: process.env.WEBKIT_BROWSER_PATH ?? `/usr/lib/${multiarch}/webkit2gtk-4.1/MiniBrowser`,
    variable: 'WEBKIT_BROWSER_PATH',
  },
  {
    // WebKitGTK has no headless mode: it draws into a virtual X display
    name: 'xvfb-run',
    aptPackage: 'xvfb',
    path: process.env.XVFB_RUN_PATH ?? '/usr/bin/xvfb-run',
    variable: 'XVFB_RUN_PATH',
  },
];

/**
 * Where BROWSERS says an executable is, by name.
 * @param {string} name
 * @returns {string}
 */
export function browserPath(name) {
  const found = BROWSERS.find((b) => b.name === name);
  if (!found) throw new Error(`no browser named ${name}`);
  return found.path;
}

/** Chromium's flags for the matrix and bench/browser.mjs: headless, and quiet (no network of its own). */
export const CHROMIUM_ARGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
];

/** @param {string} command */
const onPath = (command) => spawnSync('sh', ['-c', `command -v ${command}`], { stdio: 'ignore' }).status === 0;

/** Returns when every browser is there, installing missing ones with apt as root; throws saying how otherwise. */
export function ensureBrowsers() {
  const missing = () => BROWSERS.filter((b) => !existsSync(b.path));
  if (missing().length === 0) return;
  const packages = [...new Set(missing().map((b) => b.aptPackage))];
  const install = `apt-get update && apt-get install -y ${packages.join(' ')}`;
  // measured for the two big ones; the WebKit packages were installed together with other things here
  const size = packages.some((p) => p === 'chromium' || p === 'firefox-esr')
    ? ' (Chromium and Firefox ESR: about 25 s and 0.9 GB)'
    : '';
  const named = missing()
    .map((b) => `${b.name} (${b.path})`)
    .join(' and ');
  const variables = missing()
    .map((b) => b.variable)
    .join(' and ');
  if (!onPath('apt-get')) {
    throw new Error(
      `The runtime matrix drives ${named}, not found, and this machine has no apt-get: install ` +
        `${packages.length > 1 ? 'them' : 'it'} and point ${variables} at the executables. (npm run test:unit runs the unit tests alone.)`,
    );
  }
  if (process.getuid?.() !== 0) {
    throw new Error(
      `The runtime matrix drives ${named}, not found. Install ${packages.length > 1 ? 'them' : 'it'}` +
        `${size}, then run npm test again:\n\n  sudo sh -c '${install}'\n\n` +
        `(npm test installs them itself when run as root; ${variables} may point at other executables; ` +
        'npm run test:unit runs the unit tests alone.)',
    );
  }
  console.log(`${named} not found: installing ${packages.join(' and ')} from Debian with apt-get${size}`);
  const t0 = Date.now();
  execFileSync('apt-get', ['update', '-qq'], { stdio: 'inherit' });
  execFileSync('apt-get', ['install', '-y', '-qq', ...packages], {
    stdio: ['ignore', 'ignore', 'inherit'],
    env: { ...process.env, DEBIAN_FRONTEND: 'noninteractive' },
  });
  const still = missing();
  if (still.length) {
    throw new Error(
      `apt-get installed ${packages.join(' ')}, yet ${still.map((b) => `${b.path} (${b.variable})`).join(' and ')} still missing`,
    );
  }
  console.log(`installed in ${((Date.now() - t0) / 1000).toFixed(0)} s`);
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  try {
    ensureBrowsers();
  } catch (error) {
    console.error(/** @type {Error} */ (error).message);
    process.exit(1);
  }
}
