// Small helpers shared by the bench scripts (bench/) and the demo (demo/): statistics, CLI parsing,
// a progress bar, formatting, and loading the package.

import { pathToFileURL } from 'node:url';
import { loadavg, availableParallelism } from 'node:os';

/**
 * Loads the built package (`dist/index.js` beside this folder). The environment variable
 * WASM_ATTENTION_ENTRY may name another entry (a path or a package name), e.g. an installed tarball.
 * @returns {Promise<any>}
 */
export async function loadPackage() {
  const entry = process.env.WASM_ATTENTION_ENTRY;
  const spec = entry
    ? entry.startsWith('.') || entry.startsWith('/')
      ? pathToFileURL(entry).href
      : entry
    : new URL('../../dist/index.js', import.meta.url).href;
  try {
    return await import(spec);
  } catch (e) {
    const err = /** @type {Error} */ (e);
    if (!entry && /** @type {any} */ (err).code === 'ERR_MODULE_NOT_FOUND') {
      throw new Error(`cannot load ${spec}: run \`npm run build\` first (${err.message})`);
    }
    throw err;
  }
}

export { quantile, median } from './stats.mjs';

/** A 32-bit integer hash of a few small integers. @param {number[]} xs */
export function hash32(...xs) {
  let h = 0x811c9dc5;
  for (const x of xs) {
    h = Math.imul(h ^ (x >>> 0), 0x9e3779b1);
    h ^= h >>> 15;
    h = Math.imul(h, 0x85ebca77);
    h ^= h >>> 13;
  }
  return h >>> 0;
}

/** @param {number[]} xs */
export const sum = (xs) => xs.reduce((a, b) => a + b, 0);

/**
 * Parses `--name value` / `--name=value` / `--flag` into an object, checking names against `spec`.
 * @template {Record<string, string | number | boolean>} S
 * @param {string[]} argv
 * @param {S} spec defaults; their types decide how values are parsed
 * @returns {S & { help: boolean }}
 */
export function parseArgs(argv, spec) {
  /** @type {any} */
  const out = { ...spec, help: false };
  for (let i = 0; i < argv.length; i++) {
    let a = argv[i];
    if (a === '-h' || a === '--help') {
      out.help = true;
      continue;
    }
    if (!a.startsWith('--')) throw new Error(`unexpected argument ${JSON.stringify(a)} (see --help)`);
    a = a.slice(2);
    let value;
    const eq = a.indexOf('=');
    if (eq >= 0) {
      value = a.slice(eq + 1);
      a = a.slice(0, eq);
    }
    const key = a.replace(/-([a-z])/g, (_, c) => c.toUpperCase());
    if (!(key in spec)) throw new Error(`unknown option --${a} (see --help)`);
    const def = spec[key];
    if (typeof def === 'boolean') {
      out[key] = value === undefined ? true : !/^(0|false|no)$/i.test(value);
      continue;
    }
    if (value === undefined) {
      value = argv[++i];
      if (value === undefined) throw new Error(`--${a} needs a value`);
    }
    if (typeof def === 'number') {
      const n = Number(value);
      if (!Number.isFinite(n)) throw new Error(`--${a} expects a number, got ${JSON.stringify(value)}`);
      out[key] = n;
    } else {
      out[key] = value;
    }
  }
  return out;
}

/**
 * A progress reporter on stderr: a `\r` bar when stderr is a TTY, otherwise a line at each quarter.
 * @param {string} label
 * @param {number} total
 */
export function progress(label, total) {
  const tty = !!process.stderr.isTTY;
  const width = 30;
  let lastQuarter = -1;
  let lastDraw = 0;
  const draw = (/** @type {number} */ n) => {
    const f = total > 0 ? Math.min(1, n / total) : 1;
    if (tty) {
      const now = performance.now();
      if (n < total && now - lastDraw < 50) return;
      lastDraw = now;
      const fill = Math.round(f * width);
      process.stderr.write(
        `\r  ${label.padEnd(24)} [${'#'.repeat(fill)}${'-'.repeat(width - fill)}] ${String(n).padStart(String(total).length)}/${total}`,
      );
    } else {
      const q = Math.floor(f * 4);
      if (q > lastQuarter) {
        lastQuarter = q;
        process.stderr.write(`  ${label}: ${n}/${total}\n`);
      }
    }
  };
  if (tty) draw(0);
  else lastQuarter = 0;
  return {
    /** @param {number} n */
    update: draw,
    done() {
      draw(total);
      if (tty) process.stderr.write('\r\x1b[K');
    },
  };
}

/** Milliseconds with 3 significant digits. @param {number} ms */
export function fmtMs(ms) {
  if (!Number.isFinite(ms)) return String(ms);
  if (ms >= 100) return ms.toFixed(0);
  if (ms >= 10) return ms.toFixed(1);
  if (ms >= 1) return ms.toFixed(2);
  return ms.toPrecision(3);
}

/** @param {number} x */
export function fmtX(x) {
  if (!Number.isFinite(x)) return String(x);
  return x >= 100 ? x.toFixed(0) : x >= 10 ? x.toFixed(1) : x.toFixed(2);
}

/**
 * A warning when other processes keep the machine busy (1-minute load average at least half the
 * cores), since every number here is then noisy; '' otherwise.
 */
export function busyWarning() {
  const load = loadavg()[0];
  const cores = availableParallelism();
  return load >= cores / 2
    ? `note: the machine was busy (load average ${load.toFixed(1)} on ${cores} cores): timings are noisy`
    : '';
}

/**
 * What was measured: the commit, whether src/ or assembly/ had uncommitted changes, and when the .wasm
 * files were built (the bench measures dist/ and wasm/ as they are; `npm run build` first).
 */
export async function packageState() {
  const { execFileSync } = await import('node:child_process');
  const { statSync } = await import('node:fs');
  const root = new URL('../..', import.meta.url);
  let git = 'not a git checkout';
  try {
    const sha = execFileSync('git', ['rev-parse', '--short', 'HEAD'], { cwd: root, encoding: 'utf8' }).trim();
    const dirty = execFileSync('git', ['status', '--porcelain', '--', 'src', 'assembly'], {
      cwd: root,
      encoding: 'utf8',
    }).trim();
    git = `git ${sha}${dirty ? ' with uncommitted changes in src/ or assembly/' : ''}`;
  } catch {}
  let built = '';
  try {
    built = `, wasm/ built ${statSync(new URL('../../wasm/attention-simd.wasm', import.meta.url)).mtime.toISOString()}`;
  } catch {}
  return `package: ${git}${built}`;
}

/** Modification times of the built package (wasm/*.wasm, dist/*.js): to notice a rebuild during a run. */
export async function builtStamp() {
  const { readdirSync, statSync } = await import('node:fs');
  const parts = [];
  for (const dir of ['wasm', 'dist']) {
    const url = new URL(`../../${dir}/`, import.meta.url);
    try {
      for (const f of readdirSync(url).sort())
        if (/\.(wasm|js)$/.test(f)) parts.push(`${f}:${statSync(new URL(f, url)).mtimeMs}`);
    } catch {}
  }
  return parts.join(',');
}

/**
 * The options of a bench script's command line: parseArgs, then `--help` prints `help` and exits 0, and
 * a bad flag exits 2 with a message prefixed by `name`.
 * @template {Record<string, string | number | boolean>} S
 * @param {S} defaults
 * @param {string} help
 * @param {string} name
 * @returns {S & { help: boolean }}
 */
export function cliOptions(defaults, help, name) {
  let opts;
  try {
    opts = parseArgs(process.argv.slice(2), defaults);
  } catch (e) {
    console.error(`${name}: ${/** @type {Error} */ (e).message}`);
    process.exit(2);
  }
  if (opts.help) {
    console.log(help);
    process.exit(0);
  }
  return opts;
}
