// Finding, compiling and instantiating the kernel, and the typed view of its ABI (assembly/index.ts).
//
// Each build is compiled and instantiated once per process (one instance, one linear memory, shared by
// every cache of that build). init() chooses a build and makes it the active one; a KVCache keeps the
// kernel it was created with, because its blocks live in that instance's memory.

import { relaxedSimd, simd } from 'wasm-feature-detect';
import { LinearHeap } from './heap.js';
import { NOT_INITIALIZED, describe, typeError } from './errors.js';
import { defaultSource } from '#wasm-source'; // package.json `imports`: files by URL, or modules in workerd

export type Build = 'relaxed-simd' | 'simd' | 'scalar';
/** Fastest first: the order `build: 'auto'` tries them in. */
export const BUILDS: readonly Build[] = ['relaxed-simd', 'simd', 'scalar'];
const BUILD_IDS: readonly Build[] = ['scalar', 'simd', 'relaxed-simd']; // the kernel's build() export

/** Where a binary may come from (init's `wasm` option). */
export type WasmSource =
  | WebAssembly.Module | BufferSource | URL | string | Response | PromiseLike<Response>;

/** The kernel's exports, as assembly/index.ts documents them. */
export interface KernelExports {
  memory: WebAssembly.Memory;
  build(): number;
  heapBase(): number;
  scratchBytes(heads: number, kvHeads: number, headDim: number): number;
  ropeTableBytes(dims: number): number;
  ropeFrequencies(table: number, dims: number, theta: number): void;
  /** descriptor: a cache descriptor (assembly/descriptor.ts); the step's numbers follow */
  append(descriptor: number, layer: number, tokens: number, firstPosition: number): void;
  attend(descriptor: number, layer: number, tokens: number, firstPosition: number, keyEnd: number, causal: number): void;
  step(descriptor: number, layer: number, tokens: number, firstPosition: number): void;
  weights(descriptor: number, layer: number, tokens: number, firstPosition: number, keyEnd: number, causal: number,
    out: number, keyCount: number): void;
  exp(values: number, count: number): void;
}

/** One instantiated build: its exports, its memory's allocator, and views of that memory. */
export class Kernel {
  readonly build: Build;
  readonly abi: KernelExports;
  readonly heap: LinearHeap;
  #f32: Float32Array;

  constructor(build: Build, abi: KernelExports) {
    this.build = build;
    this.abi = abi;
    this.heap = new LinearHeap(abi.memory, abi.heapBase());
    this.#f32 = new Float32Array(abi.memory.buffer);
  }

  /**
   * A Float32Array over the whole memory. Growing memory detaches the old buffer, so the view is checked
   * against the live buffer on every call and renewed when memory has grown; callers never hold it across
   * an allocation.
   */
  f32(): Float32Array {
    if (this.#f32.buffer !== this.abi.memory.buffer) this.#f32 = new Float32Array(this.abi.memory.buffer);
    return this.#f32;
  }

  bytes(): Uint8Array {
    return new Uint8Array(this.abi.memory.buffer);
  }
}

// ----------------------------------------------------------------------------------------------- init

export interface InitOptions {
  build?: 'auto' | Build;
  wasm?: WasmSource;
}

export interface InitInfo {
  /** The build this runtime got (and that attention() and new caches use). */
  build: Build;
}

const loading = new Map<Build, Promise<Kernel>>();
let active: Kernel | undefined;

/** The kernel of the latest successful init(); throws before init() has resolved. */
export function activeKernel(): Kernel {
  if (!active) throw new Error(NOT_INITIALIZED);
  return active;
}

export async function init(options?: InitOptions): Promise<InitInfo> {
  if (options !== undefined && (options === null || typeof options !== 'object')) {
    throw typeError('init options', 'an object or undefined', options);
  }
  const requested = options?.build ?? 'auto';
  if (requested !== 'auto' && !BUILDS.includes(requested as Build)) {
    throw typeError('init options.build', `one of 'auto', ${BUILDS.map((b) => `'${b}'`).join(', ')}`, requested);
  }
  const kernel = options?.wasm !== undefined
    ? await loadGiven(options.wasm, requested)
    : await loadDefault(requested);
  active = kernel;
  return { build: kernel.build };
}

async function loadDefault(requested: 'auto' | Build): Promise<Kernel> {
  const candidates = requested === 'auto' ? BUILDS : [requested];
  const failures: string[] = [];
  for (const build of candidates) {
    if (!(await supports(build))) {
      failures.push(`'${build}': this runtime does not validate WebAssembly ${build === 'scalar' ? 'MVP' : build}`);
      continue;
    }
    try {
      const { source, where } = defaultLocation(build);
      try {
        return await loadOnce(build, () => compile(source), where);
      } catch (error) {
        failures.push(`'${build}' from ${where}: ${(error as Error).message}`);
      }
    } catch (error) { // no location at all (import.meta.url missing, as in a classic script bundle)
      failures.push(`'${build}': ${(error as Error).message}`);
    }
  }
  throw new Error(`wasm-attention: could not load a kernel (tried ${failures.join('; ')}). ` +
    `Where the .wasm files cannot be found this way (a bundler, a CDN, a Worker), pass init({ wasm }).`);
}

async function loadGiven(source: WasmSource, requested: 'auto' | Build): Promise<Kernel> {
  let module: WebAssembly.Module;
  try {
    module = await compile(source);
  } catch (error) {
    if (error instanceof TypeError && error.message.startsWith('wasm-attention')) throw error;
    throw new Error(`wasm-attention: could not compile the binary given as init({ wasm }) (${describe(source)}): ` +
      (error as Error).message);
  }
  const kernel = await instantiateKernel(module);
  if (requested !== 'auto' && kernel.build !== requested) {
    throw new Error(`wasm-attention: init({ build: '${requested}' }) was given the '${kernel.build}' binary`);
  }
  // one instance per build: a binary given twice (or after the default) reuses the first instance
  const existing = loading.get(kernel.build);
  if (existing) return existing;
  loading.set(kernel.build, Promise.resolve(kernel));
  return kernel;
}

function loadOnce(build: Build, compileIt: () => Promise<WebAssembly.Module>, where: string): Promise<Kernel> {
  let pending = loading.get(build);
  if (!pending) {
    pending = compileIt().then(instantiateKernel).then((kernel) => {
      if (kernel.build !== build) throw new Error(`${where} holds the '${kernel.build}' build, not '${build}'`);
      return kernel;
    });
    loading.set(build, pending);
    // a failed load is forgotten, so a later init() may retry
    pending.catch(() => loading.delete(build));
  }
  return pending;
}

async function instantiateKernel(module: WebAssembly.Module): Promise<Kernel> {
  // Plain WebAssembly.instantiate rather than @assemblyscript/loader: the ABI is numbers only, so none of
  // the loader's string/array helpers apply, and its instantiate() tests `instanceof Response`, which in
  // Node loads the fetch implementation (~30 ms of init measured here, against 0.2 ms for this call).
  const instance = await WebAssembly.instantiate(module, {
    env: {
      abort(_message: number, _file: number, line: number, column: number): never {
        throw new Error(`wasm-attention: kernel aborted at ${line}:${column}`);
      },
    },
  });
  const abi = instance.exports as unknown as KernelExports;
  const build = typeof abi.build === 'function' ? BUILD_IDS[abi.build()] : undefined;
  if (!build) throw new Error('wasm-attention: the binary is not a wasm-attention kernel');
  return new Kernel(build, abi);
}

async function supports(build: Build): Promise<boolean> {
  if (build === 'scalar') return true;
  if (build === 'simd') return simd();
  return (await simd()) && (await relaxedSimd());
}

/** Where each build ships: files beside the facade (a URL), or in workerd an imported module. */
function defaultLocation(build: Build): { source: WasmSource; where: string } {
  const source = defaultSource(build);
  return { source, where: source instanceof URL ? source.href : `the imported module of the '${build}' build` };
}

// -------------------------------------------------------------------------------------------- sources

/** Compiles any WasmSource, asynchronously (engines refuse large synchronous compiles on a main thread). */
async function compile(given: WasmSource): Promise<WebAssembly.Module> {
  const source = await given;
  if (source instanceof WebAssembly.Module) return source;
  if (source instanceof ArrayBuffer || ArrayBuffer.isView(source)) return WebAssembly.compile(source);
  if (typeof source === 'string' || source instanceof URL) {
    const url = toURL(source);
    if (url.protocol === 'file:') return WebAssembly.compile(await readFileURL(url));
    return compileResponse(await fetch(url));
  }
  // checked last: in Node the first touch of the global Response loads its fetch implementation (~20 ms)
  if (typeof Response !== 'undefined' && source instanceof Response) return compileResponse(source);
  throw typeError('init options.wasm', 'a WebAssembly.Module, bytes, a URL, a path, a Response or a promise of one', source);
}

async function compileResponse(response: Response): Promise<WebAssembly.Module> {
  if (!response.ok) throw new Error(`fetching ${response.url || 'the binary'} answered ${response.status} ${response.statusText}`);
  const type = response.headers.get('content-type') ?? '';
  if (typeof WebAssembly.compileStreaming === 'function' && type.startsWith('application/wasm')) {
    return WebAssembly.compileStreaming(response);
  }
  // servers that send another content type: compile from the bytes instead
  return WebAssembly.compile(await response.arrayBuffer());
}

function toURL(source: string | URL): URL {
  if (source instanceof URL) return source;
  try {
    return new URL(source);
  } catch {
    // not absolute: a page-relative URL in a browser, a file path elsewhere
    const base = (globalThis as { location?: { href: string } }).location?.href;
    if (base) return new URL(source, base);
    return new URL(`file://${source.startsWith('/') ? '' : `${processCwd()}/`}${source}`);
  }
}

function processCwd(): string {
  const proc = (globalThis as { process?: { cwd?: () => string } }).process;
  return proc?.cwd?.() ?? '';
}

/** Reads a file: URL where the runtime has node:fs (Node, Deno, Bun); imported lazily, never at top level. */
async function readFileURL(url: URL): Promise<BufferSource> {
  const specifier = 'node:fs/promises';
  const fs = (await import(/* @vite-ignore */ specifier)) as { readFile(path: URL): Promise<Uint8Array<ArrayBuffer>> };
  return fs.readFile(url);
}
