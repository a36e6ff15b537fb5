// Whether this engine fuses relaxed SIMD's multiply-add. The relaxed-SIMD proposal lets f32x4.relaxed_madd
// round once (fused) or twice (a multiply, then an add), the engine's choice: V8 and SpiderMonkey fuse on
// x86-64 with FMA, JavaScriptCore (Bun) does not. Unfused, the relaxed-simd build computes exactly the simd
// build's bits, a little slower (Bun 1.4: 2–3% in a decode loop), and its outputs differ from the same
// build's in engines that fuse; so init()'s 'auto' takes relaxed-simd only where it is fused.

/** A module exporting m(a, b, c) = lane 0 of f32x4.relaxed_madd(splat a, splat b, splat c). */
const MADD = new Uint8Array([
  0, 97, 115, 109, 1, 0, 0, 0, 1, 8, 1, 96, 3, 125, 125, 125, 1, 125, 3, 2, 1, 0, 7, 5, 1, 1, 109, 0, 0, 10, 22, 1, 20,
  0, 32, 0, 253, 19, 32, 1, 253, 19, 32, 2, 253, 19, 253, 133, 2, 253, 31, 0, 11,
]);

let answer: Promise<boolean> | undefined;

/**
 * Whether relaxed_madd rounds once here: (1 + 2⁻¹²)² − (1 + 2⁻¹¹) is 2⁻²⁴ fused and 0 unfused (the product
 * rounds to 1 + 2⁻¹¹ in float32). Asked once, and only where relaxed SIMD validates. Where the engine
 * compiles no bytes at run time (workerd) the answer is true: relaxed-simd stays the choice, as in V8 elsewhere.
 */
export function fusesRelaxedMadd(): Promise<boolean> {
  answer ??= WebAssembly.instantiate(MADD).then(
    ({ instance }) => {
      const m = instance.exports.m as (a: number, b: number, c: number) => number;
      return m(1 + 2 ** -12, 1 + 2 ** -12, -(1 + 2 ** -11)) !== 0;
    },
    () => true,
  );
  return answer;
}
