// The runner's linear layer in WebAssembly SIMD (wasm/matmul.ts, built by `npm run build`), with the same
// signature and the same bits as math.mjs's `linear`: every output the same float32 sums in the same order.
// Where the module cannot be had (not built, no SIMD, a runtime that may not compile WebAssembly from
// bytes and was given no module) the JavaScript `linear` runs instead, and the tokens are the same; so it
// does, call by call, for weights or scratch its memory cannot grow to hold (a model too large for a
// 32-bit memory, or past `maxBytes`).
import { linear as linearJs, mlpOf } from './math.mjs';

const mlpJs = mlpOf(linearJs);

/** @typedef {typeof linearJs} Linear */
/** @typedef {import('./math.mjs').Mlp} Mlp */
/**
 * @typedef {{ wasm: number, js: number, memoryBytes: number }} MatmulUsage calls of the WebAssembly
 *   linear that ran in WebAssembly and that fell back to JavaScript (weights or scratch that did not fit),
 *   and the bytes its memory holds; all 0 for the JavaScript linear
 */

const PAGE = 65536;

/** n rounded up to a multiple of 4: a placed weight row's length. @param {number} n */
const roundUp4 = (n) => Math.ceil(n / 4) * 4;

/**
 * The linear layer to run: WebAssembly's when `source` allows it, else JavaScript's.
 * @param {'wasm' | 'js' | WebAssembly.Module | URL | undefined} source 'js': JavaScript; a compiled
 *   wasm/matmul.wasm (a Worker bundle imports one); a URL: load the module from there; 'wasm' or absent:
 *   load wasm/matmul.wasm beside this file
 * @param {{ maxBytes?: number }} [options] maxBytes: the most bytes the module's memory may grow to (whole
 *   64 KiB pages, at least one); what does not fit is computed in JavaScript
 * @returns {Promise<{ linear: Linear, mlp: Mlp, kind: 'wasm' | 'js', usage: MatmulUsage, build: string }>}
 *   mlp: a layer's SwiGLU MLP, in one call of the module where it has `mlp` (its three linear calls
 *   counted in `usage`); build: the module's ('simd'; 'module' or 'url' for one given, '' for
 *   JavaScript)
 */
export async function linearFor(source, { maxBytes } = {}) {
  const usage = { wasm: 0, js: 0, memoryBytes: 0 };
  if (maxBytes !== undefined && !(Number.isFinite(maxBytes) && maxBytes >= PAGE)) {
    throw new RangeError(`loadModel: options.matmulMaxBytes must be a number >= ${PAGE}, got ${maxBytes}`);
  }
  if (source === 'js') return { linear: linearJs, mlp: mlpJs, kind: 'js', usage, build: '' };
  try {
    const { module, build } =
      source instanceof WebAssembly.Module ? { module: source, build: 'module' } : await compileFrom(source);
    const maximum = maxBytes === undefined ? undefined : Math.floor(maxBytes / PAGE);
    const memory = new WebAssembly.Memory({ initial: 1, ...(maximum ? { maximum } : {}) });
    const instance = await WebAssembly.instantiate(module, { env: { memory } });
    const kernels = /** @type {WasmKernels} */ (/** @type {unknown} */ (instance.exports));
    return { ...wasmKernels(memory, kernels, usage), kind: 'wasm', usage, build };
  } catch {
    return { linear: linearJs, mlp: mlpJs, kind: 'js', usage, build: '' };
  }
}

/**
 * The module from a URL, or by default the one beside this file. (There is no relaxed-SIMD build: the
 * kernel's float32 sums may not fuse a multiply-add, and nothing else in it would use relaxed SIMD.)
 * @param {URL | 'wasm' | undefined} source
 */
async function compileFrom(source) {
  const url = source instanceof URL ? source : new URL('./wasm/matmul.wasm', import.meta.url);
  return { module: await WebAssembly.compile(await moduleBytes(url)), build: source instanceof URL ? 'url' : 'simd' };
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

/**
 * @typedef {{ linear(x: number, T: number, w: number, n: number, m: number, bias: number, y: number, xp: number): void,
 *   mlp?(x: number, T: number, wg: number, wu: number, wd: number, n: number, hidden: number, bg: number,
 *   bu: number, bd: number, y: number, xp: number, g: number, u: number): void }} WasmKernels the module's
 *   exports (`mlp` is missing from a module built before it had one)
 */

/**
 * The linear layer and the MLP over one instance of the module. Weights are copied into its memory the
 * first time they are used (rows padded to a multiple of 4 numbers, the layout the kernel reads) and kept there, keyed by their
 * Float32Array; inputs and outputs go through scratch space that grows to the largest call.
 * @param {WebAssembly.Memory} memory the module's (imported) memory
 * @param {WasmKernels} kernels its exports
 * @param {MatmulUsage} usage counted here
 * @returns {{ linear: Linear, mlp: Mlp }}
 */
function wasmKernels(memory, kernels, usage) {
  let top = 16; // bytes in use; offset 0 stays free, as the kernel reads a bias at 0 as "none"
  usage.memoryBytes = memory.buffer.byteLength;
  /** @type {WeakMap<Float32Array, number>} weights and biases → their offset (-1: did not fit) */
  const placed = new WeakMap();
  /** @type {Map<string, { at: number, bytes: number }>} scratch blocks by use, each grown to the largest call */
  const scratch = new Map();
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
  /**
   * A scratch block of at least `bytes` (a RangeError where the memory cannot grow to it).
   * @param {string} name @param {number} bytes
   */
  const scratchOf = (name, bytes) => {
    let block = scratch.get(name);
    if (!block || block.bytes < bytes) {
      block = { at: alloc(bytes), bytes };
      scratch.set(name, block);
    }
    return block.at;
  };

  /**
   * Copies W [m][n] in as the kernel reads it: rows in groups of four, interleaved by fours of inputs
   * (wasm/matmul.ts), inputs padded with zeros to a multiple of 4 and the last group with rows of zeros.
   * @param {Float32Array} W @param {number} n @param {number} m
   */
  const placeWeights = (W, n, m) => {
    const n4 = roundUp4(n);
    const at = alloc(roundUp4(m) * n4 * 4);
    const f32 = view();
    f32.fill(0, at / 4, at / 4 + roundUp4(m) * n4);
    for (let o = 0; o < m; o++) {
      // row o is row o % 4 of group o >> 2: its quad q at 16 numbers per quad, 4 numbers per row
      const base = at / 4 + (o >> 2) * 4 * n4 + (o % 4) * 4;
      for (let i = 0; i < n; i++) f32[base + (i >> 2) * 16 + (i & 3)] = W[o * n + i];
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
  /** The offset of W [m][n], or -1. @param {Float32Array} W @param {number} n @param {number} m */
  const weightsAt = (W, n, m) => offsetOf(W, () => placeWeights(W, n, m));
  /** The offset of a bias of m numbers, 0 for none, or -1. @param {Float32Array | null} bias @param {number} m */
  const biasAt = (bias, m) =>
    bias === null
      ? 0
      : offsetOf(bias, () => {
          const at = alloc(m * 4);
          view().set(bias.subarray(0, m), at / 4);
          return at;
        });
  /** Copies the first `count` numbers of `x` to `at`. @param {Float32Array} x @param {number} count @param {number} at */
  const copyIn = (x, count, at) => view().set(x.length === count ? x : x.subarray(0, count), at / 4);
  /** Copies `count` numbers from `at` to `y`. @param {number} at @param {number} count @param {Float32Array} y */
  const copyOut = (at, count, y) => y.set(view().subarray(at / 4, at / 4 + count));

  /** @type {Linear} */
  const javaScript = (x, T, W, inDim, outDim, bias, y) => {
    usage.js++;
    linearJs(x, T, W, inDim, outDim, bias, y);
  };

  /** @type {Linear} */
  const linear = (x, T, W, inDim, outDim, bias, y) => {
    const w = weightsAt(W, inDim, outDim);
    const b = biasAt(bias, outDim);
    if (w < 0 || b < 0) return javaScript(x, T, W, inDim, outDim, bias, y);
    let at;
    try {
      at = {
        x: scratchOf('x', T * inDim * 4),
        xp: scratchOf('xp', T * roundUp4(inDim) * 4),
        y: scratchOf('y', T * outDim * 4),
      };
    } catch {
      return javaScript(x, T, W, inDim, outDim, bias, y);
    }
    usage.wasm++;
    copyIn(x, T * inDim, at.x);
    kernels.linear(at.x, T, w, inDim, outDim, b, at.y, at.xp);
    copyOut(at.y, T * outDim, y);
  };

  /** Where the module or its memory cannot take the whole MLP: linear by linear (each where it fits). */
  const mlpByParts = mlpOf(linear);
  /** @type {Mlp} */
  const mlp = (x, T, w, dim, hidden, y, parts) => {
    const offsets = [
      weightsAt(w.wGate, dim, hidden),
      weightsAt(w.wUp, dim, hidden),
      weightsAt(w.wDown, hidden, dim),
      biasAt(w.bGate, hidden),
      biasAt(w.bUp, hidden),
      biasAt(w.bDown, dim),
    ];
    if (!kernels.mlp || offsets.some((at) => at < 0)) return mlpByParts(x, T, w, dim, hidden, y, parts);
    const [wg, wu, wd, bg, bu, bd] = offsets;
    let at;
    try {
      at = {
        x: scratchOf('x', T * dim * 4),
        xp: scratchOf('xp', T * roundUp4(Math.max(dim, hidden)) * 4),
        y: scratchOf('y', T * dim * 4),
        g: scratchOf('gate', T * hidden * 4),
        u: scratchOf('up', T * hidden * 4),
      };
    } catch {
      return mlpByParts(x, T, w, dim, hidden, y, parts);
    }
    usage.wasm += 3;
    copyIn(x, T * dim, at.x);
    kernels.mlp(at.x, T, wg, wu, wd, dim, hidden, bg, bu, bd, at.y, at.xp, at.g, at.u);
    copyOut(at.y, T * dim, y);
  };
  return { linear, mlp };
}
