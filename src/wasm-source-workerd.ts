// Where init() finds each build in Cloudflare workerd (the entry workerd.ts, export condition `workerd`):
// workerd forbids compiling WebAssembly from bytes at run time, so the binaries are imported as modules, which the
// runtime compiles when it loads the Worker (wrangler's default rule for `.wasm`; Miniflare needs
// `modulesRules: [{ type: 'CompiledWasm', include: ['**/*.wasm'] }]`).

import relaxedSimd from '../wasm/attention-relaxed-simd.wasm';
import simd from '../wasm/attention-simd.wasm';
import scalar from '../wasm/attention-scalar.wasm';
import type { Build } from './abi.js';

export function defaultSource(build: Build, shared: boolean): WebAssembly.Module {
  // workerd has no Worker, so init never asks for a shared-memory build here
  if (shared) throw new Error('Cloudflare Workers run on one thread: no shared-memory build ships for workerd');
  switch (build) {
    case 'relaxed-simd':
      return relaxedSimd;
    case 'simd':
      return simd;
    case 'scalar':
      return scalar;
  }
}
