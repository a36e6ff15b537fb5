// int4 caches widen a block's rows to f32 in the call's scratch, then score and accumulate them with the
// float32 kernels (score.ts, values.ts). Widening is exact up to one f32 rounding (a nibble times its group's
// scale, plus its zero) that every build performs alike, so int4 keeps every identity float32 has.
// (bfloat16 rows widen as they load, inside the kernels: bf16.ts.)

import { INT4_GROUP, PAGE_ROWS, int4Groups } from './descriptor';

/**
 * Widens `rows` int4 rows of `headDim`, starting at row `row` of the int4 page `page`, into f32 rows at `to`
 * (`stride` bytes apart): each nibble times its group's scale.
 */
export function widenI4(to: usize, stride: usize, page: usize, row: i32, rows: i32, headDim: i32): void {
  const rowBytes = <usize>((headDim + 1) >> 1);
  const groups = int4Groups(headDim);
  const scaleBase = page + <usize>PAGE_ROWS * rowBytes;
  for (let r = 0; r < rows; r++) {
    const src = page + <usize>(row + r) * rowBytes, dst = to + <usize>r * stride;
    const scales = scaleBase + (<usize>((row + r) * groups) << 2);
    for (let g = 0; g < groups; g++) {
      const lo = g * INT4_GROUP, hi = min(headDim, lo + INT4_GROUP);
      const s = reinterpret<f32>(<u32>load<u16>(scales + (<usize>g << 2)) << 16);
      const zero = reinterpret<f32>(<u32>load<u16>(scales + (<usize>g << 2) + 2) << 16);
      let i = lo;
      if (ASC_FEATURE_SIMD) {
        if (hi - lo == INT4_GROUP) {
          // 16 bytes: low nibbles are the even values, high nibbles the odd ones
          const bytes = v128.load(src + (<usize>lo >> 1));
          const low = v128.and(bytes, i8x16.splat(15));
          const high = i8x16.shr_u(bytes, 4);
          const first = i8x16.shuffle(low, high, 0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23);
          const second = i8x16.shuffle(low, high, 8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31);
          const scale = f32x4.splat(s), offset = f32x4.splat(zero);
          const at = dst + (<usize>lo << 2);
          storeWidened(at, i16x8.extend_low_i8x16_u(first), scale, offset);
          storeWidened(at + 32, i16x8.extend_high_i8x16_u(first), scale, offset);
          storeWidened(at + 64, i16x8.extend_low_i8x16_u(second), scale, offset);
          storeWidened(at + 96, i16x8.extend_high_i8x16_u(second), scale, offset);
          i = hi;
        }
      }
      for (; i < hi; i++) {
        const nibble = (<i32>load<u8>(src + (<usize>i >> 1)) >> ((i & 1) << 2)) & 15;
        store<f32>(dst + (<usize>i << 2), <f32>nibble * s + zero);
      }
    }
  }
}

/** Eight i16 values times `scale` plus `offset`, as f32, at `at` (a multiply, then an add: as the scalar loop). */
// @ts-ignore: decorator
@inline function storeWidened(at: usize, values: v128, scale: v128, offset: v128): void {
  v128.store(at, f32x4.add(f32x4.mul(f32x4.convert_i32x4_s(i32x4.extend_low_i16x8_s(values)), scale), offset));
  v128.store(at, f32x4.add(f32x4.mul(f32x4.convert_i32x4_s(i32x4.extend_high_i16x8_s(values)), scale), offset), 16);
}

/**
 * int4 keys: rotates each whole group of INT4_GROUP values at `at` in place by the (unnormalized) 32-point
 * Walsh–Hadamard transform H, which spreads a group's outliers over all its values before they share one
 * scale. Queries get the same H and a factor 1/32 (exact: HᵀH = 32·I), so q·k is unchanged in exact
 * arithmetic; a short last group is left as it is in both. Plain scalar code: every build rounds alike.
 */
export function hadamardGroups(at: usize, headDim: i32, factor: f32): void {
  for (let g = 0; g + INT4_GROUP <= headDim; g += INT4_GROUP) {
    const base = at + (<usize>g << 2);
    for (let h = 1; h < INT4_GROUP; h <<= 1) {
      for (let i = 0; i < INT4_GROUP; i += h << 1) {
        for (let j = i; j < i + h; j++) {
          const a = base + (<usize>j << 2), b = base + (<usize>(j + h) << 2);
          const x = load<f32>(a), y = load<f32>(b);
          store<f32>(a, x + y);
          store<f32>(b, x - y);
        }
      }
    }
    if (factor != 1) for (let i = 0; i < INT4_GROUP; i++) store<f32>(base + (<usize>i << 2), load<f32>(base + (<usize>i << 2)) * factor);
  }
}
