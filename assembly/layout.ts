// The cache layout: where a token's key and value rows live, and how new rows get there.
//
// A layer's keys (and, separately, its values) live per kv head in *pages* of PAGE_ROWS = 64 slots,
// `[slot][headDim]`, found through the layer's page table (descriptor.ts), so a decode step streams one
// page after another. Positions map to slots as
//   slot(p) = p                             for p < sinks (attention sinks are never evicted)
//   slot(p) = sinks + (p − sinks) % ring    otherwise
// and slot s lives in page s >> 6, row s & 63. Without a window the facade passes sinks = 0 and ring =
// maxTokens, and positions never wrap.
//
// int8 rows hold round(x / s) with one symmetric scale s = max|x| / 127 per (token, kv head), stored after
// the page's rows (PAGE_ROWS f32): dequantized, a row is q · s.
//
// bfloat16 rows hold the top 16 bits of each f32, rounded to nearest even (a NaN stays a quiet NaN of its
// sign; a finite value that rounds past the largest bfloat16 becomes ±Infinity, as a narrowing does).
//
// int4 rows hold codes c = round((x − z) / s) in 0…15, value 2i in the low nibble of byte i and value 2i + 1
// in the high one, per group of INT4_GROUP values of the row (the row's last group may be shorter) with its
// least value z and step s = (max − z) / 15, each stored as bfloat16 after the page's rows ([PAGE_ROWS]
// [groups] pairs of u16, step then least value): dequantized, a value is s · c + z. Keys are rotated first
// (int4.ts hadamardGroups).

import {
  DTYPE, DTYPE_BFLOAT16, DTYPE_INT4, DTYPE_INT8, HEAD_DIM, INT4_GROUP, K, KV_HEADS, PAGE_ROWS, PAGE_SHIFT, RING, SINKS, V,
  address, field, int4Groups, pageTable, rowBytesOf, tableCapacity,
} from './descriptor';
import { hadamardGroups } from './int4';

// @ts-ignore: decorator
@inline export function slotOf(position: i32, sinks: i32, ring: i32): i32 {
  return position < sinks ? position : sinks + (position - sinks) % ring;
}

/**
 * Copies the `tokens` token-major rows of the staging k and v ([T][kvHeads][headDim] f32) into the pages
 * of `layer` at the slots of positions firstPosition … firstPosition + tokens − 1 (int8: quantized).
 */
export function appendRows(descriptor: usize, layer: i32, tokens: i32, firstPosition: i32): void {
  const kvHeads = field(descriptor, KV_HEADS), headDim = field(descriptor, HEAD_DIM);
  const sinks = field(descriptor, SINKS), ring = field(descriptor, RING);
  const dtype = field(descriptor, DTYPE);
  const table = pageTable(descriptor, layer);
  const headTableBytes = <usize>tableCapacity(descriptor, layer) << 2;
  const srcRowBytes = <usize>headDim << 2;
  const keys = address(descriptor, K), values = address(descriptor, V);
  for (let t = 0; t < tokens; t++) {
    const slot = slotOf(firstPosition + t, sinks, ring);
    const entry = <usize>(slot >> PAGE_SHIFT) << 2;
    const row = slot & (PAGE_ROWS - 1);
    for (let g = 0; g < kvHeads; g++) {
      const offset = (<usize>(t * kvHeads + g)) * srcRowBytes;
      const keyPage = <usize>load<u32>(table + (<usize>(2 * g) * headTableBytes) + entry);
      const valuePage = <usize>load<u32>(table + (<usize>(2 * g + 1) * headTableBytes) + entry);
      if (dtype == DTYPE_INT8) {
        appendI8(keys + offset, keyPage, row, headDim);
        appendI8(values + offset, valuePage, row, headDim);
      } else if (dtype == DTYPE_BFLOAT16) {
        appendBf16(keys + offset, keyPage, row, headDim);
        appendBf16(values + offset, valuePage, row, headDim);
      } else if (dtype == DTYPE_INT4) {
        // keys rotated first (int4.ts hadamardGroups; the queries get the same rotation)
        hadamardGroups(keys + offset, headDim, 1);
        appendI4(keys + offset, keyPage, row, headDim);
        appendI4(values + offset, valuePage, row, headDim);
      } else {
        memory.copy(keyPage + <usize>row * srcRowBytes, keys + offset, srcRowBytes);
        memory.copy(valuePage + <usize>row * srcRowBytes, values + offset, srcRowBytes);
      }
    }
  }
}

/** Quantizes one f32 row at `from` into row `row` of an int8 page, with its scale after the page's rows. */
function appendI8(from: usize, page: usize, row: i32, headDim: i32): void {
  const to = page + <usize>row * <usize>headDim;
  let largest: f32 = 0;
  for (let i = 0; i < headDim; i++) largest = max<f32>(largest, abs<f32>(load<f32>(from + (<usize>i << 2))));
  const scale: f32 = largest / 127;
  const inverse: f32 = largest > 0 ? 127 / largest : 0;
  for (let i = 0; i < headDim; i++) {
    const x = min<f32>(127, max<f32>(-127, nearest<f32>(load<f32>(from + (<usize>i << 2)) * inverse)));
    // a NaN row keeps scale NaN (so it dequantizes to NaN, as float32 would); never convert NaN to int
    store<i8>(to + <usize>i, x == x ? <i8><i32>x : 0);
  }
  store<f32>(scalesOf(page, headDim) + (<usize>row << 2), scale);
}

/** f32 → bfloat16 bits, rounded to nearest even; a NaN keeps its sign and becomes quiet. */
// @ts-ignore: decorator
@inline export function toBf16(x: f32): u32 {
  const bits = reinterpret<u32>(x);
  if (x != x) return (bits >> 16) | 0x40;
  return (bits + 0x7fff + ((bits >> 16) & 1)) >> 16;
}

/** Narrows one f32 row at `from` into row `row` of a bfloat16 page. */
function appendBf16(from: usize, page: usize, row: i32, headDim: i32): void {
  const to = page + <usize>row * (<usize>headDim << 1);
  for (let i = 0; i < headDim; i++) store<u16>(to + (<usize>i << 1), <u16>toBf16(load<f32>(from + (<usize>i << 2))));
}

/** Quantizes one f32 row at `from` into row `row` of an int4 page, with its group scales after the page's rows. */
function appendI4(from: usize, page: usize, row: i32, headDim: i32): void {
  const to = page + <usize>row * rowBytesOf(headDim, DTYPE_INT4);
  const groups = int4Groups(headDim);
  const scales = int4ScalesOf(page, headDim) + (<usize>(row * groups) << 2);
  memory.fill(to, 0, rowBytesOf(headDim, DTYPE_INT4));
  for (let g = 0; g < groups; g++) {
    const lo = g * INT4_GROUP, hi = min(headDim, lo + INT4_GROUP);
    let largest: f32 = -Infinity, least: f32 = Infinity;
    for (let i = lo; i < hi; i++) {
      const x = load<f32>(from + (<usize>i << 2));
      largest = max<f32>(largest, x);
      least = min<f32>(least, x);
    }
    // the group's least value and step, each stored as bfloat16: quantize against the stored ones
    const zeroBits = toBf16(least), zero = reinterpret<f32>(zeroBits << 16);
    const stepBits = toBf16((largest - zero) / 15), step = reinterpret<f32>(stepBits << 16);
    const inverse: f32 = step > 0 ? 1 / step : 0;
    for (let i = lo; i < hi; i++) {
      const x = min<f32>(15, max<f32>(0, nearest<f32>((load<f32>(from + (<usize>i << 2)) - zero) * inverse)));
      // as int8: a NaN group keeps scale NaN (so it dequantizes to NaN); never convert NaN to int
      const nibble = (x == x ? <i32>x : 0) & 15;
      const at = to + (<usize>i >> 1);
      store<u8>(at, load<u8>(at) | <u8>(nibble << ((i & 1) << 2)));
    }
    store<u16>(scales + (<usize>g << 2), <u16>stepBits);
    store<u16>(scales + (<usize>g << 2) + 2, <u16>zeroBits);
  }
}

/** Where an int4 page's scales start: after its rows. */
// @ts-ignore: decorator
@inline export function int4ScalesOf(page: usize, headDim: i32): usize {
  return page + <usize>PAGE_ROWS * rowBytesOf(headDim, DTYPE_INT4);
}

/** Where an int8 page's PAGE_ROWS scales start: after its rows. */
// @ts-ignore: decorator
@inline export function scalesOf(page: usize, headDim: i32): usize {
  return page + <usize>PAGE_ROWS * <usize>headDim;
}
