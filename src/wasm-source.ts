// Where init() finds each build by default, everywhere but workerd: the .wasm files shipped beside the
// facade (plain, and the shared-memory variants threads need), as URLs relative to this module. The `new URL('literal', import.meta.url)` form is the one
// bundlers (Vite, webpack, Parcel, Rollup plugins) recognise and copy as assets.
//
// Imported relatively by the entry index.ts, so nothing internal to the package needs resolving by name (a
// browser import map names only the package). workerd's entry uses wasm-source-workerd.ts instead.

import type { Build } from './abi.js';

export function defaultSource(build: Build, shared: boolean): URL {
  if (shared) {
    switch (build) {
      case 'relaxed-simd':
        return new URL('../wasm/attention-relaxed-simd-shared.wasm', import.meta.url);
      case 'simd':
        return new URL('../wasm/attention-simd-shared.wasm', import.meta.url);
      case 'scalar':
        return new URL('../wasm/attention-scalar-shared.wasm', import.meta.url);
    }
  }
  switch (build) {
    case 'relaxed-simd':
      return new URL('../wasm/attention-relaxed-simd.wasm', import.meta.url);
    case 'simd':
      return new URL('../wasm/attention-simd.wasm', import.meta.url);
    case 'scalar':
      return new URL('../wasm/attention-scalar.wasm', import.meta.url);
  }
}
