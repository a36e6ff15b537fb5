// Measures the machine's limits with bench/limits/limits.ts (compiled by bench/limits/build.mjs):
// streaming read bandwidth over buffers of given sizes, and peak f32x4 multiply-add throughput.
// Runs in Node and in the browser (no Node APIs): give it the compiled bytes.

/**
 * @param {{ simd: BufferSource, relaxed?: BufferSource | null }} wasm compiled limits modules
 * @param {number[]} sizes buffer sizes in bytes (rounded up to 128) to measure bandwidth over
 * @param {{ minMs?: number, reps?: number }} [o]
 * @returns {Promise<{ bandwidth: Record<string, number>, peakMulAdd: number, peakMadd: number | null, notes: string[] }>}
 *   bandwidth[size] in GB/s (1e9 bytes/s), peaks in GFLOP/s; each the best of its repetitions
 */
export async function measureLimits(wasm, sizes, o = {}) {
  const minMs = o.minMs ?? 40;
  const reps = o.reps ?? 7;
  const notes = [];
  const { instance } = await WebAssembly.instantiate(wasm.simd, {});
  const ex = /** @type {any} */ (instance.exports);
  const memory = /** @type {WebAssembly.Memory} */ (ex.memory);
  const BASE = 65536;
  const rounded = sizes.map((s) => Math.ceil(s / 128) * 128);
  const maxBytes = Math.max(0, ...rounded);
  const needPages = Math.ceil((BASE + maxBytes) / 65536);
  if (needPages > memory.buffer.byteLength / 65536) memory.grow(needPages - memory.buffer.byteLength / 65536);
  // real data, every page touched (fresh pages would read as the shared zero page)
  new Float32Array(memory.buffer, BASE, maxBytes / 4).fill(1e-3);

  /** best of `reps` timings of fn(n), n scaled so one timing takes at least minMs */
  const timeScaled = (/** @type {(n: number) => void} */ fn) => {
    let n = 1;
    for (;;) {
      const t0 = performance.now();
      fn(n);
      const ms = performance.now() - t0;
      if (ms >= minMs / 4 || n > 1 << 28) {
        n = Math.max(1, Math.ceil((n * minMs) / Math.max(ms, 1e-3)));
        break;
      }
      n *= 4;
    }
    const per = [];
    for (let r = 0; r < reps; r++) {
      const t0 = performance.now();
      fn(n);
      per.push((performance.now() - t0) / n);
    }
    // the fastest repetition: other processes only ever slow a limit down
    return Math.min(...per); // ms per unit
  };

  /** @type {Record<string, number>} */
  const bandwidth = {};
  for (const [i, size] of sizes.entries()) {
    const bytes = rounded[i];
    if (bytes === 0) continue;
    const ms = timeScaled((n) => ex.streamSum(BASE, bytes, n));
    bandwidth[size] = bytes / ms / 1e6;
  }
  const ITERS = 1 << 16;
  const mulAddMs = timeScaled((n) => ex.peakMulAdd(ITERS * n, 0.9999999));
  const peakMulAdd = (12 * 8 * ITERS) / mulAddMs / 1e6;
  let peakMadd = null;
  if (wasm.relaxed) {
    try {
      const r = await WebAssembly.instantiate(wasm.relaxed, {});
      const rx = /** @type {any} */ (r.instance.exports);
      const maddMs = timeScaled((n) => rx.peakMadd(ITERS * n, 0.9999999));
      peakMadd = (12 * 8 * ITERS) / maddMs / 1e6;
    } catch (e) {
      notes.push(`relaxed_madd peak not measured: ${/** @type {Error} */ (e).message}`);
    }
  }
  return { bandwidth, peakMulAdd, peakMadd, notes };
}

/**
 * The best of several measurements of the limits (each key's maximum).
 * @param {Awaited<ReturnType<typeof measureLimits>>[]} all
 */
export function bestLimits(all) {
  const ok = all.filter(Boolean);
  if (!ok.length) return null;
  /** @type {Record<string, number>} */
  const bandwidth = {};
  for (const l of ok) for (const [k, v] of Object.entries(l.bandwidth)) bandwidth[k] = Math.max(bandwidth[k] ?? 0, v);
  const madds = ok.map((l) => l.peakMadd).filter((x) => x !== null);
  return {
    bandwidth,
    peakMulAdd: Math.max(...ok.map((l) => l.peakMulAdd)),
    peakMadd: madds.length ? Math.max(.../** @type {number[]} */ (madds)) : null,
    notes: [...new Set(ok.flatMap((l) => l.notes))],
    runs: ok.length,
  };
}
