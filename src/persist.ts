// The saved-cache format (documented in docs/FORMAT.md): everything a cache needs to continue exactly.
//
//   offset  bytes  what
//   0       8      magic: ASCII "wattn-kv"
//   8       4      format version, u32 little-endian (FORMAT_VERSION)
//   12      4      header length H, u32
//   16      H      header: UTF-8 JSON { options, build, layers: [{ length, intactFrom, rows }] }
//   …       0–3    zero padding to a multiple of 4
//   …              per layer: K rows, V rows (per kv head, the first `rows` slots of its block), then for
//                  int8 the K scales and V scales (per kv head, `rows` f32)
//   end − 4 4      CRC-32 (IEEE) of every byte before it
//
// The rows are the cache's own bytes, so a loaded cache continues bit-identically in the same build; in
// another build (say relaxed-simd → simd) it continues within float rounding of the original.

import type { Build } from './kernel.js';

export const MAGIC = 'wattn-kv';
export const FORMAT_VERSION = 1;
const PREFIX_BYTES = 16;

export interface SavedLayer {
  /** tokens appended to the layer */
  length: number;
  /** windowed caches: lowest ring position not yet overwritten */
  intactFrom: number;
  /** slots saved per kv head: the used prefix of the block */
  rows: number;
}

export interface SavedHeader {
  options: Record<string, unknown>;
  build: Build;
  layers: SavedLayer[];
}

/** A region of the saved payload: `bytes` bytes, copied from/to `count` runs of `run` bytes each. */
export interface Run {
  /** byte address in linear memory of the first run */
  address: number;
  /** bytes between the starts of consecutive runs in memory */
  stride: number;
  run: number;
  count: number;
}

export function encode(header: SavedHeader, runs: Run[], memory: Uint8Array): Uint8Array {
  const json = new TextEncoder().encode(JSON.stringify(header));
  const payloadStart = align4(PREFIX_BYTES + json.length);
  let payload = 0;
  for (const r of runs) payload += r.run * r.count;
  const bytes = new Uint8Array(payloadStart + payload + 4);
  const view = new DataView(bytes.buffer);
  bytes.set(new TextEncoder().encode(MAGIC), 0);
  view.setUint32(8, FORMAT_VERSION, true);
  view.setUint32(12, json.length, true);
  bytes.set(json, PREFIX_BYTES);
  let at = payloadStart;
  for (const r of runs) {
    for (let i = 0; i < r.count; i++) {
      const from = r.address + i * r.stride;
      bytes.set(memory.subarray(from, from + r.run), at);
      at += r.run;
    }
  }
  view.setUint32(at, crc32(bytes, 0, at), true);
  return bytes;
}

/** Checks the envelope (magic, version, checksum) and returns the header and where the payload starts. */
export function decodeHeader(bytes: Uint8Array): { header: SavedHeader; payloadStart: number } {
  const refuse = (why: string) => new Error(`wasm-attention: KVCache.load refused the bytes: ${why}`);
  if (bytes.length < PREFIX_BYTES + 4) throw refuse(`${bytes.length} bytes are too few to be a saved cache`);
  const magic = new TextDecoder().decode(bytes.subarray(0, 8));
  if (magic !== MAGIC) throw refuse(`they do not start with "${MAGIC}" (not a saved KVCache)`);
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const version = view.getUint32(8, true);
  if (version !== FORMAT_VERSION) {
    throw refuse(`format version ${version}; this version of wasm-attention reads version ${FORMAT_VERSION}`);
  }
  const stored = view.getUint32(bytes.length - 4, true);
  const actual = crc32(bytes, 0, bytes.length - 4);
  if (stored !== actual) throw refuse('the checksum does not match (truncated or corrupted)');
  const headerLength = view.getUint32(12, true);
  if (PREFIX_BYTES + headerLength > bytes.length - 4) throw refuse('the header length runs past the end');
  let header: SavedHeader;
  try {
    header = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(bytes.subarray(PREFIX_BYTES, PREFIX_BYTES + headerLength)));
  } catch (error) {
    throw refuse(`the header is not valid JSON (${(error as Error).message})`);
  }
  if (!header || typeof header !== 'object' || !header.options || !Array.isArray(header.layers)) {
    throw refuse('the header lacks options or layers');
  }
  return { header, payloadStart: align4(PREFIX_BYTES + headerLength) };
}

/** Copies the payload into memory along `runs`; the caller has checked the total length. */
export function restore(bytes: Uint8Array, payloadStart: number, runs: Run[], memory: Uint8Array): void {
  let at = payloadStart;
  for (const r of runs) {
    for (let i = 0; i < r.count; i++) {
      memory.set(bytes.subarray(at, at + r.run), r.address + i * r.stride);
      at += r.run;
    }
  }
}

function align4(n: number): number {
  return (n + 3) & ~3;
}

// CRC-32 (IEEE 802.3, reflected, polynomial 0xEDB88320), as zlib computes it, "slicing by 8": eight
// 256-entry tables let each step fold 8 bytes (about 4× the byte-at-a-time loop, ~1 GB/s in V8).
let tables: Int32Array | undefined;

function crcTables(): Int32Array {
  const t = new Int32Array(8 * 256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    t[n] = c;
  }
  for (let n = 0; n < 256; n++) {
    for (let k = 1; k < 8; k++) t[k * 256 + n] = t[(k - 1) * 256 + n] >>> 8 ^ t[t[(k - 1) * 256 + n] & 0xff];
  }
  return t;
}

export function crc32(bytes: Uint8Array, start: number, end: number): number {
  const t = (tables ??= crcTables());
  let crc = -1;
  let i = start;
  for (; i + 8 <= end; i += 8) {
    const lo = crc ^ (bytes[i] | bytes[i + 1] << 8 | bytes[i + 2] << 16 | bytes[i + 3] << 24);
    const hi = bytes[i + 4] | bytes[i + 5] << 8 | bytes[i + 6] << 16 | bytes[i + 7] << 24;
    crc = t[1792 + (lo & 0xff)] ^ t[1536 + (lo >>> 8 & 0xff)] ^ t[1280 + (lo >>> 16 & 0xff)] ^ t[1024 + (lo >>> 24)] ^
      t[768 + (hi & 0xff)] ^ t[512 + (hi >>> 8 & 0xff)] ^ t[256 + (hi >>> 16 & 0xff)] ^ t[hi >>> 24];
  }
  for (; i < end; i++) crc = t[(crc ^ bytes[i]) & 0xff] ^ (crc >>> 8);
  return (crc ^ -1) >>> 0;
}
