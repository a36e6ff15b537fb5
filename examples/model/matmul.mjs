// The runner's linear layer in WebAssembly SIMD (wasm/matmul.ts, built by `npm run build`), with the same
// signature and the same bits as math.mjs's `linear`: every output the same float64 sum in index order.
// Where the module cannot be had (not built, no SIMD, a runtime that may not compile WebAssembly from
// bytes and was given no module) the JavaScript `linear` runs instead, and the tokens are the same; so it
// does, call by call, for weights or scratch its memory cannot grow to hold (a model too large for a
// 32-bit memory, or past `maxBytes`).
import { linear as linearJs } from './math.mjs';

/** @typedef {typeof linearJs} Linear */
/**
 * @typedef {{ wasm: number, js: number, memoryBytes: number }} MatmulUsage calls of the WebAssembly
 *   linear that ran in WebAssembly and that fell back to JavaScript (weights or scratch that did not fit),
 *   and the bytes its memory holds; all 0 for the JavaScript linear
 */

const PAGE = 65536;

/**
 * The linear layer to run: WebAssembly's when `source` allows it, else JavaScript's.
 * @param {'wasm' | 'js' | WebAssembly.Module | URL | undefined} source 'js': JavaScript; a compiled
 *   wasm/matmul.wasm (a Worker bundle imports one); a URL: load the module from there; 'wasm' or absent:
 *   load wasm/matmul-relaxed.wasm beside this file (fused multiply-adds, the same bits) where the runtime
 *   has relaxed SIMD, else wasm/matmul.wasm
 * @param {{ maxBytes?: number }} [options] maxBytes: the most bytes the module's memory may grow to (whole
 *   64 KiB pages, at least one); what does not fit is computed in JavaScript
 * @returns {Promise<{ linear: Linear, kind: 'wasm' | 'js', usage: MatmulUsage, build: string }>} build: the
 *   module's ('relaxed-simd', 'simd'; 'module' or 'url' for one given, '' for JavaScript)
 */
export async function linearFor(source, { maxBytes } = {}) {
  const usage = { wasm: 0, js: 0, memoryBytes: 0 };
  if (maxBytes !== undefined && !(Number.isFinite(maxBytes) && maxBytes >= PAGE)) {
    throw new RangeError(`loadModel: options.matmulMaxBytes must be a number >= ${PAGE}, got ${maxBytes}`);
  }
  if (source === 'js') return { linear: linearJs, kind: 'js', usage, build: '' };
  try {
    const { module, build } =
      source instanceof WebAssembly.Module ? { module: source, build: 'module' } : await compileFrom(source);
    const maximum = maxBytes === undefined ? undefined : Math.floor(maxBytes / PAGE);
    const memory = new WebAssembly.Memory({ initial: 1, ...(maximum ? { maximum } : {}) });
    const instance = await WebAssembly.instantiate(module, { env: { memory } });
    const { linear: kernel } = /** @type {{ linear: WasmKernel }} */ (/** @type {unknown} */ (instance.exports));
    return { linear: wasmLinear(memory, kernel, usage), kind: 'wasm', usage, build };
  } catch {
    return { linear: linearJs, kind: 'js', usage, build: '' };
  }
}

/**
 * The module from a URL, or by default the relaxed-SIMD build beside this file where it compiles (a
 * runtime without relaxed SIMD refuses it), else the SIMD one.
 * @param {URL | 'wasm' | undefined} source
 */
async function compileFrom(source) {
  if (source instanceof URL) return { module: await WebAssembly.compile(await moduleBytes(source)), build: 'url' };
  try {
    const bytes = await moduleBytes(new URL('./wasm/matmul-relaxed.wasm', import.meta.url));
    return { module: await WebAssembly.compile(bytes), build: 'relaxed-simd' };
  } catch {
    const bytes = await moduleBytes(new URL('./wasm/matmul.wasm', import.meta.url));
    return { module: await WebAssembly.compile(bytes), build: 'simd' };
  }
}

/**
 * The bytes of a module: from the file system where there is one, else by fetch.
 * @param {URL} url
 */
async function moduleBytes(url) {
  const fs = globalThis.process?.getBuiltinModule?.('node:fs/promises');
  if (fs && url.protocol === 'file:') return fs.readFile(url);
  const response = await fetch(url);
  if (!response.ok) throw new Error(`${url} answered ${response.status}`);
  return response.arrayBuffer();
}

/** @typedef {(x: number, T: number, w: number, n: number, m: number, bias: number, y: number, xd: number) => void} WasmKernel */

/**
 * A `linear` over one instance of the module. Weights are copied into its memory the first time they are
 * used (rows in pairs, the layout the kernel reads) and kept there, keyed by their Float32Array; inputs and
 * outputs go through scratch space that grows to the largest call.
 * @param {WebAssembly.Memory} memory the module's (imported) memory
 * @param {WasmKernel} kernel its `linear`
 * @param {MatmulUsage} usage counted here
 * @returns {Linear}
 */
function wasmLinear(memory, kernel, usage) {
  let top = 16; // bytes in use; offset 0 stays free, as the kernel reads a bias at 0 as "none"
  usage.memoryBytes = memory.buffer.byteLength;
  /** @type {WeakMap<Float32Array, number>} weights and biases → their offset (-1: did not fit) */
  const placed = new WeakMap();
  const scratch = { x: 0, xd: 0, y: 0, xBytes: 0, yBytes: 0 };
  /** @type {Float32Array | null} a view of the memory, made again after every growth */
  let heap = null;

  /**
   * The offset of a fresh block, 16-byte aligned (offsets may pass 2^31: no 32-bit bitwise operators).
   * @param {number} bytes
   * @returns {number}
   */
  const alloc = (bytes) => {
    const at = top;
    const end = Math.ceil((top + bytes) / 16) * 16;
    const missing = end - memory.buffer.byteLength;
    if (missing > 0) {
      memory.grow(Math.ceil(missing / PAGE)); // a RangeError past the memory's maximum; nothing changed then
      heap = null;
      usage.memoryBytes = memory.buffer.byteLength;
    }
    top = end;
    return at;
  };
  const view = () => {
    heap ??= new Float32Array(memory.buffer);
    return heap;
  };

  /** Copies W [m][n] in as pairs of rows interleaved. @param {Float32Array} W @param {number} n @param {number} m */
  const placeWeights = (W, n, m) => {
    const pairs = (m + 1) >> 1;
    const at = alloc(pairs * n * 8);
    const f32 = view();
    for (let p = 0; p < pairs; p++) {
      const dst = at / 4 + p * n * 2;
      const r0 = 2 * p * n;
      const r1 = r0 + n;
      const second = 2 * p + 1 < m;
      for (let i = 0; i < n; i++) {
        f32[dst + 2 * i] = W[r0 + i];
        f32[dst + 2 * i + 1] = second ? W[r1 + i] : 0;
      }
    }
    return at;
  };
  /** @param {Float32Array} array @param {() => number} place */
  const offsetOf = (array, place) => {
    let at = placed.get(array);
    if (at === undefined) {
      try {
        at = place();
      } catch {
        at = -1; // too large for this memory: JavaScript computes with it
      }
      placed.set(array, at);
    }
    return at;
  };

  /** @type {Linear} */
  const javaScript = (x, T, W, inDim, outDim, bias, y) => {
    usage.js++;
    linearJs(x, T, W, inDim, outDim, bias, y);
  };

  return function linear(x, T, W, inDim, outDim, bias, y) {
    const w = offsetOf(W, () => placeWeights(W, inDim, outDim));
    const b =
      bias === null
        ? 0
        : offsetOf(bias, () => {
            const at = alloc(outDim * 4);
            view().set(bias.subarray(0, outDim), at / 4);
            return at;
          });
    if (w < 0 || b < 0) return javaScript(x, T, W, inDim, outDim, bias, y);
    const xBytes = T * inDim * 4;
    const yBytes = T * outDim * 4;
    try {
      if (xBytes > scratch.xBytes) Object.assign(scratch, { x: alloc(xBytes), xd: alloc(2 * xBytes), xBytes });
      if (yBytes > scratch.yBytes) Object.assign(scratch, { y: alloc(yBytes), yBytes });
    } catch {
      return javaScript(x, T, W, inDim, outDim, bias, y);
    }
    usage.wasm++;
    const f32 = view();
    f32.set(x.length === T * inDim ? x : x.subarray(0, T * inDim), scratch.x / 4);
    kernel(scratch.x, T, w, inDim, outDim, b, scratch.y, scratch.xd);
    const start = scratch.y / 4;
    y.set(f32.subarray(start, start + T * outDim));
  };
}
