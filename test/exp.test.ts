// The kernel's exp (assembly/math.ts), through its diagnostic export `exp(values, count)`: WebAssembly has no
// exp instruction, so the softmax's accuracy rests on this polynomial. assembly/math.ts documents a relative
// error below 2^-22 for x in [EXP_MIN, 0], exactly 0 below EXP_MIN and for −∞ (a masked score must weigh
// exactly nothing), and NaN propagating. Each build's binary is instantiated directly (no facade).

import { beforeAll, describe, expect, it } from 'vitest';
import { BUILDS, SUPPORT, Rng, wasmBytes, type Build } from './support/util.js';

const EXP_MIN = Math.fround(-87.33654);

interface ExpKernel {
  /** e^x of every element, through the kernel (SIMD four at a time where the build has SIMD, tail scalar) */
  run(xs: Float32Array): Float32Array;
  /** the same, one element per call: always the scalar path */
  runScalar(xs: Float32Array): Float32Array;
}

async function load(build: Build): Promise<ExpKernel> {
  const { instance } = await WebAssembly.instantiate(await wasmBytes(build), {
    env: {
      abort() {
        throw new Error('abort');
      },
    },
  });
  const ex = instance.exports as unknown as {
    memory: WebAssembly.Memory;
    heapBase(): number;
    exp(at: number, n: number): void;
  };
  const base = (ex.heapBase() + 15) & ~15;
  const ensure = (bytes: number) => {
    const need = base + bytes - ex.memory.buffer.byteLength;
    if (need > 0) ex.memory.grow(Math.ceil(need / 65536));
  };
  return {
    run(xs) {
      ensure(xs.length * 4);
      new Float32Array(ex.memory.buffer, base, xs.length).set(xs);
      ex.exp(base, xs.length);
      return new Float32Array(ex.memory.buffer, base, xs.length).slice();
    },
    runScalar(xs) {
      ensure(xs.length * 4);
      const out = new Float32Array(xs.length);
      const view = () => new Float32Array(ex.memory.buffer, base, 1);
      for (let i = 0; i < xs.length; i++) {
        view()[0] = xs[i];
        ex.exp(base, 1);
        out[i] = view()[0];
      }
      return out;
    },
  };
}

/** Max relative error against float64 Math.exp of the same f32 inputs, and where. */
function worstRelative(xs: Float32Array, ys: Float32Array): { err: number; x: number; got: number } {
  let worst = { err: 0, x: 0, got: 0 };
  for (let i = 0; i < xs.length; i++) {
    const want = Math.exp(xs[i]);
    const err = Math.abs(ys[i] - want) / want;
    if (!(err <= worst.err)) worst = { err, x: xs[i], got: ys[i] };
  }
  return worst;
}

function grid(lo: number, hi: number, n: number): Float32Array {
  const xs = new Float32Array(n);
  for (let i = 0; i < n; i++) xs[i] = lo + ((hi - lo) * i) / (n - 1);
  return xs;
}

for (const build of BUILDS) {
  const s = SUPPORT[build];
  describe.skipIf(!s.ok)(`kernel exp [${build}]${s.ok ? '' : ` SKIPPED: ${s.reason}`}`, () => {
    let k: ExpKernel;
    beforeAll(async () => {
      k = await load(build);
    });

    it('relative error below 2^-22 where the result is a normal float (x in [-87, 0])', () => {
      const rng = new Rng(1);
      const xs = new Float32Array(1 << 20);
      xs.set(grid(-87, 0, 1 << 19));
      for (let i = 1 << 19; i < xs.length; i++) xs[i] = Math.max(-87, -Math.abs(rng.normal()) * (i % 2 ? 3 : 30));
      xs[0] = 0;
      const w = worstRelative(xs, k.run(xs));
      expect(w.err, `worst at x = ${w.x}: got ${w.got}, e^x = ${Math.exp(w.x)}`).toBeLessThan(2 ** -22);
    });

    it('the scalar path (tails) meets the same bound', () => {
      const xs = grid(-87, 0, 20011);
      const w = worstRelative(xs, k.runScalar(xs));
      expect(w.err, `worst at x = ${w.x}: got ${w.got}`).toBeLessThan(2 ** -22);
    });

    it('from -87 down to EXP_MIN the result stays within 2^-22 of e^x relative to 2^-126 (the subnormal edge)', () => {
      const xs = grid(EXP_MIN, -87, 4001);
      const ys = k.run(xs);
      for (let i = 0; i < xs.length; i++) {
        expect(Math.abs(ys[i] - Math.exp(xs[i]))).toBeLessThan(2 ** -126 * 2 ** -22 * 4);
      }
    });

    it('exactly 0 below EXP_MIN and for -Infinity (masked keys weigh exactly nothing); NaN stays NaN', () => {
      const xs = Float32Array.from([
        -Infinity,
        -1e30,
        -1000,
        -88,
        Math.fround(EXP_MIN - 0.001),
        -Infinity,
        -3.4e38,
        -90,
      ]);
      const ys = k.run(xs);
      for (let i = 0; i < xs.length; i++) expect(Object.is(ys[i], 0), `e^${xs[i]} = ${ys[i]}`).toBe(true);
      const ysScalar = k.runScalar(xs);
      for (let i = 0; i < xs.length; i++)
        expect(Object.is(ysScalar[i], 0), `scalar e^${xs[i]} = ${ysScalar[i]}`).toBe(true);
      expect(k.run(Float32Array.from([NaN, NaN, NaN, NaN, NaN])).every(Number.isNaN)).toBe(true);
    });

    it('e^0 = 1 and results never exceed 1 for x <= 0', () => {
      const xs = Float32Array.from([0, -0, -1e-30, -1e-8, -1e-7, -1e-6, 0, 0]);
      const ys = k.run(xs);
      expect(ys[0]).toBe(1);
      for (const y of ys) expect(y).toBeLessThanOrEqual(1);
      const zs = k.run(grid(-1, 0, 100003));
      expect(zs.every((y) => y <= 1)).toBe(true);
    });

    it.skipIf(build !== 'simd')(
      'simd build: the four-lane exp equals the scalar exp bit for bit (as assembly/math.ts states)',
      () => {
        const rng = new Rng(2);
        const xs = new Float32Array(40000);
        for (let i = 0; i < xs.length; i++) xs[i] = -Math.abs(rng.normal()) * 20;
        const a = k.run(xs);
        const b = k.runScalar(xs);
        for (let i = 0; i < xs.length; i++) if (!Object.is(a[i], b[i])) expect(`${a[i]} at x=${xs[i]}`).toBe(`${b[i]}`);
      },
    );
  });
}
