// wasm-attention's entry for Node, Deno, Bun, browsers and bundlers (package.json `exports`: every condition
// but `workerd`): the kernel's .wasm files are found beside this module, by URL. The API itself is api.ts;
// docs/API.md is its reference.
//
// This module's one statement is why package.json lists it under `sideEffects`: bundlers must keep it.

import { useDefaultSources } from './init.js';
import { defaultSource } from './wasm-source.js';

useDefaultSources(defaultSource);

export * from './api.js';
