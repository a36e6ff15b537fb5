// The cache layout: where a token's key and value rows live, and how new rows get there.
//
// A layer's keys (and, separately, its values) are one block `[kvHead][slot][headDim]`, head-major, so a
// decode step streams each kv head's rows contiguously. Positions map to slots as
//   slot(p) = p                             for p < sinks (attention sinks are never evicted)
//   slot(p) = sinks + (p − sinks) % ring    otherwise
// Without a window the facade passes sinks = 0 and ring = slots, and positions never wrap.
//
// int8 rows hold round(x / s) with one symmetric scale s = max|x| / 127 per (token, kv head), stored in a
// parallel `[kvHead][slot]` f32 block: dequantized, a row is q · s.

// @ts-ignore: decorator
@inline export function slotOf(position: i32, sinks: i32, ring: i32): i32 {
  return position < sinks ? position : sinks + (position - sinks) % ring;
}

/**
 * Copies `tokens` rows per kv head from token-major `src` ([T][kvHeads][headDim] f32) into the
 * head-major f32 block `dst` at the slots of positions firstPosition … firstPosition + tokens − 1.
 */
export function appendF32(
  src: usize, tokens: i32, firstPosition: i32, kvHeads: i32, headDim: i32,
  dst: usize, slots: i32, sinks: i32, ring: i32,
): void {
  const rowBytes = <usize>headDim << 2;
  for (let t = 0; t < tokens; t++) {
    const slot = slotOf(firstPosition + t, sinks, ring);
    for (let g = 0; g < kvHeads; g++) {
      const from = src + (<usize>(t * kvHeads + g)) * rowBytes;
      const to = dst + (<usize>g * <usize>slots + <usize>slot) * rowBytes;
      memory.copy(to, from, rowBytes);
    }
  }
}

/** As appendF32, quantizing each (token, kv head) row to int8 with its own scale into `scales`. */
export function appendI8(
  src: usize, tokens: i32, firstPosition: i32, kvHeads: i32, headDim: i32,
  dst: usize, scales: usize, slots: i32, sinks: i32, ring: i32,
): void {
  const rowBytes = <usize>headDim << 2;
  for (let t = 0; t < tokens; t++) {
    const slot = slotOf(firstPosition + t, sinks, ring);
    for (let g = 0; g < kvHeads; g++) {
      const from = src + (<usize>(t * kvHeads + g)) * rowBytes;
      const index = <usize>g * <usize>slots + <usize>slot;
      const to = dst + index * <usize>headDim;
      let largest: f32 = 0;
      for (let i = 0; i < headDim; i++) largest = max<f32>(largest, abs<f32>(load<f32>(from + (<usize>i << 2))));
      const scale: f32 = largest / 127;
      const inverse: f32 = largest > 0 ? 127 / largest : 0;
      for (let i = 0; i < headDim; i++) {
        const x = min<f32>(127, max<f32>(-127, nearest<f32>(load<f32>(from + (<usize>i << 2)) * inverse)));
        // a NaN row keeps scale NaN (so it dequantizes to NaN, as float32 would); never convert NaN to int
        store<i8>(to + <usize>i, x == x ? <i8><i32>x : 0);
      }
      store<f32>(scales + (index << 2), scale);
    }
  }
}

/** Widens `rows` int8 rows of `headDim` at `src` to f32 at `dst` (exact: every int8 is an f32). */
export function widenRows(src: usize, rows: i32, headDim: i32, dst: usize): void {
  const count = rows * headDim; // the rows are contiguous, so this is one run
  let i = 0;
  if (ASC_FEATURE_SIMD) {
    for (; i + 16 <= count; i += 16) {
      const x = v128.load(src + <usize>i);
      const lo = i16x8.extend_low_i8x16_s(x), hi = i16x8.extend_high_i8x16_s(x);
      const to = dst + (<usize>i << 2);
      v128.store(to, f32x4.convert_i32x4_s(i32x4.extend_low_i16x8_s(lo)));
      v128.store(to, f32x4.convert_i32x4_s(i32x4.extend_high_i16x8_s(lo)), 16);
      v128.store(to, f32x4.convert_i32x4_s(i32x4.extend_low_i16x8_s(hi)), 32);
      v128.store(to, f32x4.convert_i32x4_s(i32x4.extend_high_i16x8_s(hi)), 48);
    }
  }
  for (; i < count; i++) store<f32>(dst + (<usize>i << 2), <f32>load<i8>(src + <usize>i));
}
