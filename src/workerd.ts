// wasm-attention's entry for Cloudflare workerd (package.json `exports`, condition `workerd`): workerd
// compiles no WebAssembly from bytes at run time, so the kernel's .wasm files come in as module imports.
// Otherwise the same as index.ts.

import { useDefaultSources } from './init.js';
import { defaultSource } from './wasm-source-workerd.js';

useDefaultSources(defaultSource);

export * from './api.js';
