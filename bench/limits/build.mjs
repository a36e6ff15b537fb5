// Compiles bench/limits/limits.ts with AssemblyScript into bench/.build/ (gitignored), when missing or
// older than the source: limits-simd.wasm (--enable simd) and limits-relaxed.wasm (+ relaxed-simd).
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, statSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { dirname, join } from 'node:path';

const here = dirname(fileURLToPath(import.meta.url));
export const buildDir = join(here, '..', '.build');

/** @returns {{ simd: string, relaxed: string }} paths of the compiled modules */
export function buildLimits() {
  const src = join(here, 'limits.ts');
  const asc = join(here, '..', '..', 'node_modules', '.bin', 'asc');
  mkdirSync(buildDir, { recursive: true });
  const out = { simd: join(buildDir, 'limits-simd.wasm'), relaxed: join(buildDir, 'limits-relaxed.wasm') };
  const flags = { simd: ['--enable', 'simd'], relaxed: ['--enable', 'simd', '--enable', 'relaxed-simd'] };
  for (const k of /** @type {const} */ (['simd', 'relaxed'])) {
    if (existsSync(out[k]) && statSync(out[k]).mtimeMs >= statSync(src).mtimeMs) continue;
    execFileSync(asc, [src, '--outFile', out[k], '--runtime', 'stub', '-O3', '--noAssert', ...flags[k]], {
      stdio: 'inherit',
    });
  }
  return out;
}
