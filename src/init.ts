// init(): finding, compiling and instantiating the kernel's builds, and which one is active.
//
// Each build is compiled and instantiated once per process (one Instance, one linear memory, shared by
// every cache of that build). init() chooses a build and makes it the active one; a KVCache keeps the
// instance it was created with, because its blocks live in that instance's memory.

import { relaxedSimd, simd, threads as sharedMemoryFeature } from 'wasm-feature-detect';
import { BUILDS, BUILD_IDS, type Build, type KernelExports } from './abi.js';
import { fusesRelaxedMadd } from './fused-madd.js';
import { NOT_INITIALIZED, describe, rangeError, typeError } from './errors.js';
import { Instance } from './instance.js';
import { refuseUnknownKeys } from './option-keys.js';
import { MAX_THREADS, runtimeCores, threadsUnavailable } from './threads.js';

export type { Build } from './abi.js';

/** A binary is a shared-memory (threads) build when it imports its memory. */
function importsMemory(module: WebAssembly.Module): boolean {
  return WebAssembly.Module.imports(module).some((i) => i.kind === 'memory');
}

/** Where a binary may come from (init's `wasm` option). */
export type WasmSource = WebAssembly.Module | BufferSource | URL | string | Response | PromiseLike<Response>;

/** WebAssembly pages a shared kernel's memory starts with (the static data needs far less). */
const SHARED_INITIAL_PAGES = 17;
/** Its maximum: WebAssembly's 4 GiB, as the binaries declare (asconfig.json maximumMemory). */
const SHARED_MAXIMUM_PAGES = 65536;

// ----------------------------------------------------------------------------------------------- init

export interface InitOptions {
  build?: 'auto' | Build;
  wasm?: WasmSource;
  /** 'auto' (the default): the runtime's cores, at most 8, or 1 where threads cannot run; or exactly n. */
  threads?: 'auto' | number;
}

export interface InitInfo {
  /** The build this runtime got (and that attention() and new caches use). */
  build: Build;
  /** Threads attend/attention use (the calling thread included); 1 where threads cannot run. */
  threads: number;
}

/** Loaded instances by build, and by build + '-shared' for the shared-memory (threads) builds. */
const loading = new Map<string, Promise<Instance>>();
let active: Instance | undefined;

/** The instance of the latest successful init(); throws before init() has resolved. */
export function activeInstance(): Instance {
  if (!active) throw new Error(NOT_INITIALIZED);
  return active;
}

export async function init(options?: InitOptions): Promise<InitInfo> {
  if (options !== undefined && (options === null || typeof options !== 'object')) {
    throw typeError('init options', 'an object or undefined', options);
  }
  if (options) refuseUnknownKeys(options, 'init options', ['build', 'wasm', 'threads']);
  const requested = options?.build ?? 'auto';
  if (requested !== 'auto' && !BUILDS.includes(requested as Build)) {
    throw typeError('init options.build', `one of 'auto', ${BUILDS.map((b) => `'${b}'`).join(', ')}`, requested);
  }
  const asked = options?.threads === undefined ? 'auto' : options.threads;
  if (asked !== 'auto' && typeof asked !== 'number')
    throw typeError('init options.threads', "'auto' or a number", asked);
  if (asked !== 'auto' && !(Number.isInteger(asked) && asked >= 1 && asked <= MAX_THREADS)) {
    throw rangeError('init options.threads', `'auto' or an integer from 1 to ${MAX_THREADS}`, asked);
  }
  let threads = asked === 'auto' ? 1 : asked;
  if (threads > 1 || asked === 'auto') {
    const why =
      (await threadsUnavailable()) ??
      ((await sharedMemoryFeature()) ? undefined : 'this runtime does not validate WebAssembly threads');
    if (why && asked !== 'auto') throw new Error(`wasm-attention: init({ threads: ${asked} }) cannot run here: ${why}`);
    if (!why && asked === 'auto') threads = runtimeCores();
  }
  let chosen: Instance | undefined;
  if (options?.wasm !== undefined) {
    // a given binary decides: a shared-memory one runs threads, a plain one runs on one thread
    const module = await compileGiven(options.wasm);
    if (threads > 1 && !importsMemory(module)) {
      if (asked !== 'auto') {
        throw new Error(
          `wasm-attention: init({ threads: ${asked} }) needs a shared-memory binary ` +
            '(attention-<build>-shared.wasm), and init({ wasm }) was given a plain one: pass the -shared binary, or threads: 1',
        );
      }
      threads = 1;
    }
    chosen = await loadGiven(module, requested);
    await setThreads(chosen, threads);
  } else if (threads > 1) {
    try {
      chosen = await loadDefault(requested, true);
      await setThreads(chosen, threads);
    } catch (error) {
      if (asked !== 'auto') throw error;
      chosen = undefined; // 'auto' settles for one thread where the pool cannot start
      threads = 1;
    }
  }
  if (!chosen) {
    chosen = await loadDefault(requested, false);
    await setThreads(chosen, 1);
  }
  active = chosen;
  return { build: chosen.build, threads };
}

/**
 * Every shared instance loaded gets a pool of `threads` threads (1: no worker), the new active one first
 * (its failure rejects init); caches made on any instance before keep working, on that instance's threads.
 */
async function setThreads(instance: Instance, threads: number): Promise<void> {
  await instance.pool?.resize(threads);
  const instances = await Promise.all([...loading.values()].map((p) => p.catch(() => undefined)));
  for (const other of instances) if (other !== instance) await other?.pool?.resize(threads).catch(() => undefined);
}

/** Map key of a build's instance: the plain binary, or its shared-memory (threads) variant. */
const keyOf = (build: Build, shared: boolean) => (shared ? `${build}-shared` : build);

async function loadDefault(requested: 'auto' | Build, shared: boolean): Promise<Instance> {
  const candidates = requested === 'auto' ? BUILDS : [requested];
  const failures: string[] = [];
  for (const build of candidates) {
    if (!(await supports(build))) {
      failures.push(`'${build}': this runtime does not validate WebAssembly ${build === 'scalar' ? 'MVP' : build}`);
      continue;
    }
    if (requested === 'auto' && build === 'relaxed-simd' && !(await fusesRelaxedMadd())) {
      failures.push("'relaxed-simd': skipped, this engine does not fuse its multiply-add (simd gives the same bits)");
      continue;
    }
    try {
      const { source, where } = defaultLocation(build, shared);
      try {
        return await loadOnce(build, shared, () => compile(source), where);
      } catch (error) {
        failures.push(`'${build}' from ${where}: ${(error as Error).message}`);
      }
    } catch (error) {
      // no location at all (import.meta.url missing, as in a classic script bundle)
      failures.push(`'${build}': ${(error as Error).message}`);
    }
  }
  throw new Error(
    `wasm-attention: could not load a instance (tried ${failures.join('; ')}). ` +
      `Where the .wasm files cannot be found this way (a bundler, a CDN, a Worker), pass init({ wasm }).`,
  );
}

async function compileGiven(source: WasmSource): Promise<WebAssembly.Module> {
  try {
    return await compile(source);
  } catch (error) {
    if (error instanceof TypeError && error.message.startsWith('wasm-attention')) throw error;
    throw new Error(
      `wasm-attention: could not compile the binary given as init({ wasm }) (${describe(source)}): ` +
        (error as Error).message,
    );
  }
}

async function loadGiven(module: WebAssembly.Module, requested: 'auto' | Build): Promise<Instance> {
  const shared = importsMemory(module);
  const instance = await instantiate(module);
  if (requested !== 'auto' && instance.build !== requested) {
    throw new Error(`wasm-attention: init({ build: '${requested}' }) was given the '${instance.build}' binary`);
  }
  // one instance per build: a binary given twice (or after the default) reuses the first instance
  const key = keyOf(instance.build, shared);
  const existing = loading.get(key);
  if (existing) return existing;
  loading.set(key, Promise.resolve(instance));
  return instance;
}

function loadOnce(
  build: Build,
  shared: boolean,
  compileIt: () => Promise<WebAssembly.Module>,
  where: string,
): Promise<Instance> {
  const key = keyOf(build, shared);
  let pending = loading.get(key);
  if (!pending) {
    pending = compileIt()
      .then(instantiate)
      .then((instance) => {
        if (instance.build !== build) throw new Error(`${where} holds the '${instance.build}' build, not '${build}'`);
        return instance;
      });
    loading.set(key, pending);
    // a failed load is forgotten, so a later init() may retry
    pending.catch(() => loading.delete(key));
  }
  return pending;
}

async function instantiate(module: WebAssembly.Module): Promise<Instance> {
  // Plain WebAssembly.instantiate rather than @assemblyscript/loader: the ABI is numbers only, so none of
  // the loader's string/array helpers apply, and its instantiate() tests `instanceof Response`, which in
  // Node loads the fetch implementation (~30 ms of init measured here, against 0.2 ms for this call).
  // a shared-memory build imports its memory: made here, shared with every worker of its pool
  const memory = importsMemory(module)
    ? new WebAssembly.Memory({ initial: SHARED_INITIAL_PAGES, maximum: SHARED_MAXIMUM_PAGES, shared: true })
    : undefined;
  const { exports } = await WebAssembly.instantiate(module, {
    env: {
      ...(memory ? { memory } : {}),
      abort(_message: number, _file: number, line: number, column: number): never {
        throw new Error(`wasm-attention: kernel aborted at ${line}:${column}`);
      },
    },
  });
  const abi = exports as unknown as KernelExports;
  const build = typeof abi.build === 'function' ? BUILD_IDS[abi.build()] : undefined;
  if (!build) throw new Error('wasm-attention: the binary is not a wasm-attention kernel');
  return new Instance(build, abi, memory ? module : undefined);
}

async function supports(build: Build): Promise<boolean> {
  if (build === 'scalar') return true;
  if (build === 'simd') return simd();
  return (await simd()) && (await relaxedSimd());
}

/**
 * Where each build ships by default: files beside the facade (URLs), or in workerd imported modules.
 * `shared`: its shared-memory (threads) variant.
 */
export type DefaultSources = (build: Build, shared: boolean) => URL | WebAssembly.Module;
let defaultSources: DefaultSources | undefined;

/** Called once by each entry (index.ts, workerd.ts) with its runtime's way of finding the binaries. */
export function useDefaultSources(sources: DefaultSources): void {
  defaultSources = sources;
}

function defaultLocation(build: Build, shared: boolean): { source: WasmSource; where: string } {
  if (!defaultSources) throw new Error('no default location: import the package by its name, not a file inside it');
  const source = defaultSources(build, shared);
  return {
    source,
    where: source instanceof URL ? source.href : `the imported module of the '${keyOf(build, shared)}' build`,
  };
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
  throw typeError(
    'init options.wasm',
    'a WebAssembly.Module, bytes, a URL, a path, a Response or a promise of one',
    source,
  );
}

async function compileResponse(response: Response): Promise<WebAssembly.Module> {
  if (!response.ok)
    throw new Error(`fetching ${response.url || 'the binary'} answered ${response.status} ${response.statusText}`);
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

interface NodeProcess {
  getBuiltinModule?(id: 'node:fs/promises'): { readFile(path: URL): Promise<Uint8Array<ArrayBuffer>> };
}

/**
 * Reads a file: URL. Node's fs comes from process.getBuiltinModule (Node 20.16+ and 22.3+, Deno 2, Bun), not
 * from an import(): bundlers warn about a dynamic import of an expression and Miniflare's module scanner
 * refuses one outright, even where it is never reached. A runtime without it but with files reads them
 * with fetch (Deno and Bun answer file: URLs).
 */
async function readFileURL(url: URL): Promise<BufferSource> {
  const proc = (globalThis as { process?: NodeProcess }).process;
  if (typeof proc?.getBuiltinModule === 'function') return proc.getBuiltinModule('node:fs/promises').readFile(url);
  const response = await fetch(url);
  if (!response.ok) throw new Error(`reading ${url.href} answered ${response.status} ${response.statusText}`);
  return response.arrayBuffer();
}
