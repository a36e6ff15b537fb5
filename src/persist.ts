// The saved-cache format (documented in docs/FORMAT.md): pieces that together hold everything a cache needs
// to continue exactly. A piece holds, for every layer, the positions from … to − 1 (those the cache still
// holds); `save()` is the piece from 0, `save({ from })` the positions since `from`, and `KVCache.load`
// applies pieces in order. This module owns the format: the envelope, the header, which positions a piece
// holds, and every check a piece must pass before a byte of it reaches the cache. The cache supplies only
// its bookkeeping (lengths, what a ring still holds) and the memory runs of given positions.
//
//   offset  bytes  what
//   0       8      magic: ASCII "wattn-kv"
//   8       4      format version, u32 little-endian (FORMAT_VERSION)
//   12      4      header length H, u32
//   16      H      header: UTF-8 JSON { options, build, layers: [{ from, to, held }], continues, reaches }
//                  (version 3: options may hold perLayer, and each layer's window and ring are its own)
//   …       0–3    zero padding to a multiple of 4
//   …              per layer: K rows, V rows (per kv head, the held positions in order), then for int8
//                  and int4 the K scales and V scales (per kv head and held position: int8 one f32, int4
//                  one f32 per group of 32 values of the row)
//   end − 4 4      CRC-32 (IEEE) of every byte before it
//
// The rows are the cache's own bytes, so a loaded cache continues bit-identically in the same build.

import type { Build } from './abi.js';
import { rangeError, typeError } from './errors.js';
import { type KVCacheDtype, overwrittenBelow, rowBytesOf, scaleBytesOf, windowStart } from './geometry.js';
import { refuseUnknownKeys } from './option-keys.js';
import { MAX_POSITION } from './options.js';
import { ownBytes, typedArrayKind } from './typed-arrays.js';

export const MAGIC = 'wattn-kv';
export const FORMAT_VERSION = 3;
/** Version 2 is version 3 without per-layer settings and the bfloat16 and int4 dtypes: its pieces read as they are. */
const READABLE_VERSIONS = [2, FORMAT_VERSION];
const PREFIX_BYTES = 16;

/** What a piece holds of one layer: it continues the layer at `from` and leaves it at `to`. */
export interface PieceLayer {
  from: number;
  to: number;
  /** the first ring position held (from, or later where a window had already evicted what lies between) */
  held: number;
}

export interface PieceHeader {
  options: Record<string, unknown>;
  build: Build;
  layers: PieceLayer[];
  /** CRC-32 of the rows at position from − 1 of every layer with from > 0: the state this piece continues */
  continues: number;
  /** CRC-32 of the rows at position to − 1 of every layer with to > 0: what the next piece must continue */
  reaches: number;
}

/** A cache's bookkeeping for one layer. */
export interface LayerState {
  /** tokens appended (with a window this keeps counting past what is held) */
  length: number;
  /** windowed caches: the lowest ring position whose row has not been overwritten */
  intactFrom: number;
}

/** What the format needs to know of a cache's options, for one layer (a piece has one per layer). */
export interface PieceGeometry {
  kvHeads: number;
  headDim: number;
  dtype: KVCacheDtype;
  /** slots of the ring after the sinks: maxTokens, or a perLayer window's own ring */
  maxTokens: number;
  /** 0 without a window */
  window: number;
  sinks: number;
}

/** Bytes of linear memory, `bytes` long from `address`: one stretch of a piece's payload. */
export interface Run {
  address: number;
  bytes: number;
}

/**
 * Positions [start, end) a piece holds of a layer, in payload order: the sinks it adds, then the ring's.
 * Without a window there is no ring and sinks mean nothing: just from … to − 1.
 */
export function heldRanges(layer: PieceLayer, geometry: PieceGeometry): Array<[number, number]> {
  if (geometry.window === 0) return layer.from < layer.to ? [[layer.from, layer.to]] : [];
  const ranges: Array<[number, number]> = [];
  const sinksEnd = Math.min(geometry.sinks, layer.to);
  if (layer.from < sinksEnd) ranges.push([layer.from, sinksEnd]);
  if (layer.held < layer.to) ranges.push([layer.held, layer.to]);
  return ranges;
}

function heldCount(layer: PieceLayer, geometry: PieceGeometry): number {
  return heldRanges(layer, geometry).reduce((n, [a, b]) => n + b - a, 0);
}

/** Payload bytes of `positions` positions of one layer: K and V rows, and int8/int4 scales. */
function payloadBytes(geometry: PieceGeometry, positions: number): number {
  const { headDim, dtype } = geometry;
  return 2 * geometry.kvHeads * positions * (rowBytesOf(headDim, dtype) + scaleBytesOf(headDim, dtype));
}

/**
 * The range of `cache.save(options)` per layer: `from` (default 0; a number, or one per layer such as the
 * lengths at the previous save) and `to` (default: the layer's length), clipped to what each layer holds.
 */
export function saveRange(options: unknown, lengths: number[]): { from: number[]; to: number[] } {
  if (options !== undefined && (options === null || typeof options !== 'object' || Array.isArray(options))) {
    throw typeError('options', 'an object { from?, to? } or undefined', options);
  }
  if (options) refuseUnknownKeys(options, 'options', ['from', 'to']);
  const longest = Math.max(...lengths);
  const position = (name: string, value: unknown, most: number, what: string) => {
    if (typeof value !== 'number') throw typeError(name, `an integer from 0 to ${what} (${most})`, value);
    if (!Number.isInteger(value) || value < 0 || value > most)
      throw rangeError(name, `an integer from 0 to ${what} (${most})`, value);
    return value;
  };
  // each option read once, a list of positions copied once, before anything is checked
  const bag = (options ?? {}) as { from?: unknown; to?: unknown };
  const givenTo = bag.to;
  const givenFrom = bag.from;
  const to = position('options.to', givenTo ?? longest, longest, "the longest layer's length");
  const ends = lengths.map((length) => Math.min(to, length));
  if (Array.isArray(givenFrom)) {
    const count = givenFrom.length;
    if (count !== lengths.length)
      throw rangeError('options.from', `a position per layer (${lengths.length})`, givenFrom);
    const froms: unknown[] = [];
    for (let l = 0; l < count; l++) froms.push(givenFrom[l]);
    return { from: froms.map((f, l) => position(`options.from[${l}]`, f, ends[l], `layer ${l}'s end`)), to: ends };
  }
  const from = position('options.from', givenFrom ?? 0, to, 'options.to');
  return { from: ends.map((end) => Math.min(from, end)), to: ends };
}

/**
 * What a piece holds of each layer, from `from[l]` to `to[l]`, or a RangeError when a window has evicted
 * positions the piece would need: the row before `from` (the state it continues), or positions the state
 * at `to` still attends to.
 */
export function planPiece(
  geometries: PieceGeometry[],
  states: LayerState[],
  from: number[],
  to: number[],
): PieceLayer[] {
  return states.map(({ length, intactFrom }, l) => {
    const { window, sinks, maxTokens: ring } = geometries[l];
    const [layerFrom, layerTo] = [from[l], to[l]];
    if (window === 0) return { from: layerFrom, to: layerTo, held: layerFrom };
    const isHeld = (p: number) => p < length && (p < sinks || p >= intactFrom);
    const held = Math.min(layerTo, Math.max(layerFrom, sinks, overwrittenBelow(layerTo, ring), intactFrom));
    const needed = Math.min(layerTo, Math.max(layerFrom, windowStart(layerTo, window, sinks)));
    const evicted = [layerFrom - 1, layerTo - 1].find((p) => p >= 0 && !isHeld(p));
    if (evicted !== undefined || held > needed) {
      throw new RangeError(
        `wasm-attention: options.from and options.to must name positions layer ${l} still holds: ` +
          `a piece from ${layerFrom} to ${layerTo} needs position ${evicted ?? needed}, but its ring of ${ring} slots ` +
          `holds positions from ${Math.max(sinks, intactFrom)} (and the ${sinks} sinks); got from ${layerFrom}, to ${layerTo}`,
      );
    }
    return { from: layerFrom, to: layerTo, held };
  });
}

export function encode(header: PieceHeader, runs: Run[], memory: Uint8Array): Uint8Array {
  const json = new TextEncoder().encode(JSON.stringify(header));
  const payloadStart = align4(PREFIX_BYTES + json.length);
  const payload = runs.reduce((n, r) => n + r.bytes, 0);
  const bytes = new Uint8Array(payloadStart + payload + 4);
  const view = new DataView(bytes.buffer);
  bytes.set(new TextEncoder().encode(MAGIC), 0);
  view.setUint32(8, FORMAT_VERSION, true);
  view.setUint32(12, json.length, true);
  bytes.set(json, PREFIX_BYTES);
  let at = payloadStart;
  for (const r of runs) {
    bytes.set(memory.subarray(r.address, r.address + r.bytes), at);
    at += r.bytes;
  }
  view.setUint32(at, crc32(bytes, 0, at), true);
  return bytes;
}

/** CRC-32 of the memory along `runs`, as if they were one stretch of bytes. */
export function runsCrc(runs: Run[], memory: Uint8Array): number {
  let crc = 0;
  for (const r of runs) crc = crc32(memory, r.address, r.address + r.bytes, crc);
  return crc;
}

/** A checked piece, ready to be copied into a cache. */
export interface Piece {
  bytes: Uint8Array;
  payloadStart: number;
  layers: PieceLayer[];
}

/** What a list of pieces restores: the options to build the cache from, the pieces, and the final state. */
export interface Restoration<Settings> {
  settings: Settings;
  /** per layer */
  geometry: PieceGeometry[];
  pieces: Piece[];
  states: LayerState[];
}

/** How the cache reads a piece's options: validated settings (or a throw), their geometry, and canonical options. */
export type ReadOptions<Settings> = (options: unknown) => {
  settings: Settings;
  /** per layer */
  geometry: PieceGeometry[];
  layers: number;
  options: Record<string, unknown>;
};

/** A cache the pieces continue (KVCache.load's `base`): its options and build, state, and last rows. */
export interface Base {
  options: Record<string, unknown>;
  build: Build;
  states: LayerState[];
  /** per layer, the bytes of its row at position length − 1 in the saved format's order (empty at length 0) */
  lastRows: Uint8Array[];
}

/**
 * The caller's pieces, read once: a Uint8Array, or an array of them (each element read once; a hole is
 * refused like an explicit undefined), each as our own view of its bytes.
 */
function pieceList(input: unknown): Uint8Array[] {
  if (typedArrayKind(input) === 'Uint8Array') return [ownBytes(input as Uint8Array)];
  if (!Array.isArray(input)) {
    throw typeError('bytes', 'a Uint8Array from KVCache.save(), or an array of them in order', input);
  }
  const count = input.length;
  const list: Uint8Array[] = [];
  for (let i = 0; i < count; i++) {
    if (!Object.hasOwn(input, i)) {
      throw new TypeError(
        `wasm-attention: bytes[${i}] must be a Uint8Array from KVCache.save(), got a hole (a sparse array)`,
      );
    }
    const bytes: unknown = input[i];
    if (typedArrayKind(bytes) !== 'Uint8Array')
      throw typeError(`bytes[${i}]`, 'a Uint8Array from KVCache.save()', bytes);
    list.push(ownBytes(bytes as Uint8Array));
  }
  return list;
}

/**
 * The bytes of the last position a piece holds of one layer (its row at `to` − 1), in the saved format's
 * order: K rows per kv head, V rows, then (int8, int4) the K and V scales. `at`: where the layer's payload
 * starts; `held`: the positions it holds (the row at to − 1 is always the last of them).
 */
function lastRow(bytes: Uint8Array, at: number, held: number, geometry: PieceGeometry): Uint8Array[] {
  const { kvHeads, headDim, dtype } = geometry;
  const rowBytes = rowBytesOf(headDim, dtype);
  const scaleBytes = scaleBytesOf(headDim, dtype);
  const parts: Uint8Array[] = [];
  for (let r = 0; r < 2 * kvHeads; r++) {
    const start = at + (r * held + held - 1) * rowBytes;
    parts.push(bytes.subarray(start, start + rowBytes));
  }
  if (scaleBytes > 0) {
    const scales = at + 2 * kvHeads * held * rowBytes;
    for (let r = 0; r < 2 * kvHeads; r++) {
      const start = scales + (r * held + held - 1) * scaleBytes;
      parts.push(bytes.subarray(start, start + scaleBytes));
    }
  }
  return parts;
}

/** CRC-32 of every layer's last row (layers at length 0 have none): a piece's `reaches`. */
function lastRowsCrc(rows: Uint8Array[][]): number {
  let crc = 0;
  for (const parts of rows) for (const part of parts) crc = crc32(part, 0, part.length, crc);
  return crc;
}

/**
 * Checks every piece before anything is allocated: each envelope (magic, version, checksum), header and
 * payload size, and that the pieces form one history: the first starts every layer at 0 (or where `base`
 * stands, continuing its last rows), each later one continues exactly where the previous left every layer
 * (same positions, same last rows), with the same options and build. Throws an Error that names the piece
 * and what is wrong.
 */
export function readPieces<Settings>(input: unknown, read: ReadOptions<Settings>, base?: Base): Restoration<Settings> {
  const list = pieceList(input);
  if (list.length === 0) throw rangeError('bytes', 'at least one saved piece', list);
  let first: ReturnType<ReadOptions<Settings>> | undefined;
  let build = base?.build;
  let states: LayerState[] = base ? base.states.map((state) => ({ ...state })) : [];
  // per layer, the bytes of its last row so far: what a piece's `reaches` is the checksum of
  let rows: Uint8Array[][] = base ? base.lastRows.map((row) => [row]) : [];
  let reached = lastRowsCrc(rows);
  const before = base ? 'the base cache' : "the first piece's";
  const pieces: Piece[] = [];
  list.forEach((bytes, i) => {
    const refuse = (why: string) =>
      new Error(
        `wasm-attention: KVCache.load refused the bytes` +
          `${list.length > 1 ? ` (piece ${i} of ${list.length})` : ''}: ${why}`,
      );
    const { header, payloadStart } = decodeEnvelope(bytes, refuse);
    let described: ReturnType<ReadOptions<Settings>>;
    try {
      described = read(header.options);
    } catch (error) {
      throw refuse(`the saved options are invalid (${(error as Error).message})`);
    }
    const expectedOptions = base?.options ?? first?.options;
    if (expectedOptions && JSON.stringify(described.options) !== JSON.stringify(expectedOptions)) {
      throw refuse(
        `its options ${JSON.stringify(described.options)} differ from ${before} ${JSON.stringify(expectedOptions)}`,
      );
    }
    if (build !== undefined && header.build !== build) {
      throw refuse(`it was saved by the ${JSON.stringify(header.build)} build, ${before} by ${JSON.stringify(build)}`);
    }
    if (!first) {
      first = described;
      build = header.build;
      if (!base) {
        states = Array.from({ length: described.layers }, () => ({ length: 0, intactFrom: 0 }));
        rows = states.map(() => []);
      }
    }
    const geometry = described.geometry;
    const layers = header.layers;
    if (layers.length !== states.length)
      throw refuse(`${layers.length} saved layers for options.layers ${states.length}`);
    let payload = 0;
    layers.forEach((layer, l) => {
      if (!isPossible(layer, geometry[l])) {
        throw refuse(`layer ${l}'s saved range ${JSON.stringify(layer)} is not one a cache of these options can save`);
      }
      if (layer.from !== states[l].length) {
        throw refuse(
          `it continues layer ${l} from position ${layer.from}, but ${i > 0 ? 'the pieces before it leave' : base ? 'the base cache holds' : 'an empty cache has'} ` +
            `that layer at ${states[l].length} (pieces missing, repeated or out of order)`,
        );
      }
      payload += payloadBytes(geometry[l], heldCount(layer, geometry[l]));
    });
    if (
      !Number.isInteger(header.continues) ||
      !Number.isInteger(header.reaches) ||
      header.continues < 0 ||
      header.reaches < 0
    ) {
      throw refuse('the header lacks its continues/reaches checksums');
    }
    if (header.continues !== reached) {
      throw refuse(
        `it does not continue the history ${i > 0 ? 'the pieces before it hold' : base ? 'the base cache holds' : 'of an empty cache'} ` +
          '(the rows before it differ: saved from another cache, or before a truncate replaced those positions)',
      );
    }
    const expected = payloadStart + payload + 4;
    if (expected !== bytes.length) throw refuse(`expected ${expected} bytes for the saved state, got ${bytes.length}`);
    if (geometry[0].dtype === 'int8') checkScales(bytes, payloadStart, layers, geometry, refuse);
    // the header's per-layer ranges must be those of the payload: the checksum of the last rows they place
    // (lengths swapped between layers, say, keep the size but move every row boundary)
    let at = payloadStart;
    rows = layers.map((layer, l) => {
      const held = heldCount(layer, geometry[l]);
      const row = held > 0 ? lastRow(bytes, at, held, geometry[l]) : rows[l];
      at += payloadBytes(geometry[l], held);
      return row;
    });
    if (lastRowsCrc(rows) !== header.reaches) {
      throw refuse(
        "its payload does not hold the rows its header's layer ranges describe (the last row of each layer " +
          'differs from the checksum saved with it: the header or the rows were altered)',
      );
    }
    reached = header.reaches;
    states = layers.map((layer, l) => ({ length: layer.to, intactFrom: intactAfter(states[l], layer, geometry[l]) }));
    pieces.push({ bytes, payloadStart, layers });
  });
  if (!first) throw new RangeError('wasm-attention: bytes must hold at least one piece, got an empty list');
  return { settings: first.settings, geometry: first.geometry, pieces, states };
}

/**
 * An int8 piece's row scales are what save() writes, max|x| / 127: never negative (NaN and +Infinity for
 * rows that held them). The kernel relies on it: its integer value sums round each block's weights
 * p · scale against their largest.
 */
function checkScales(
  bytes: Uint8Array,
  payloadStart: number,
  layers: PieceLayer[],
  geometries: PieceGeometry[],
  refuse: (why: string) => Error,
): void {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  let at = payloadStart;
  layers.forEach((layer, l) => {
    const geometry = geometries[l];
    const positions = heldCount(layer, geometry);
    const scales = at + 2 * geometry.kvHeads * positions * geometry.headDim;
    for (let i = 0; i < 2 * geometry.kvHeads * positions; i++) {
      const scale = view.getFloat32(scales + 4 * i, true);
      if (scale < 0) {
        throw refuse(`layer ${l} holds an int8 row scale of ${scale} (saved scales are never negative)`);
      }
    }
    at += payloadBytes(geometry, positions);
  });
}

/** Exactly the ranges planPiece can produce for these options (whatever state they came from). */
function isPossible(layer: PieceLayer, geometry: PieceGeometry): boolean {
  if (!layer || typeof layer !== 'object') return false;
  const { from, to, held } = layer;
  if (![from, to, held].every((n) => Number.isInteger(n) && n >= 0) || from > to || to > MAX_POSITION) return false;
  const { window, sinks, maxTokens: ring } = geometry;
  if (window === 0) return to <= ring && held === from;
  const lowest = Math.min(to, Math.max(from, sinks, overwrittenBelow(to, ring)));
  const highest = Math.min(to, Math.max(from, windowStart(to, window, sinks)));
  return held >= lowest && held <= highest;
}

/** A windowed layer's lowest intact ring position after a piece: positions it skipped or overwrote are not. */
function intactAfter(state: LayerState, layer: PieceLayer, geometry: PieceGeometry): number {
  if (geometry.window === 0) return 0;
  const skipped = layer.held > Math.max(layer.from, geometry.sinks) ? layer.held : 0;
  return Math.max(state.intactFrom, overwrittenBelow(layer.to, geometry.maxTokens), skipped);
}

/** Checks the envelope (magic, version, checksum, JSON header) and returns the header and where the payload starts. */
function decodeEnvelope(
  bytes: Uint8Array,
  refuse: (why: string) => Error,
): { header: PieceHeader; payloadStart: number } {
  if (bytes.length < PREFIX_BYTES + 4) throw refuse(`${bytes.length} bytes are too few to be a saved cache`);
  const magic = new TextDecoder().decode(bytes.subarray(0, 8));
  if (magic !== MAGIC) throw refuse(`they do not start with "${MAGIC}" (not a saved KVCache)`);
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const version = view.getUint32(8, true);
  if (version === 1) {
    throw refuse(
      'format version 1 (wasm-attention 0.1.0); this version reads versions 2 and 3 (pieces) only: ' +
        'rebuild the cache from its tokens, or load these bytes with 0.1.0',
    );
  }
  if (!READABLE_VERSIONS.includes(version)) {
    throw refuse(
      `format version ${version}; this version of wasm-attention reads versions ${READABLE_VERSIONS.join(' and ')} ` +
        `(it writes ${FORMAT_VERSION})`,
    );
  }
  const stored = view.getUint32(bytes.length - 4, true);
  if (stored !== crc32(bytes, 0, bytes.length - 4))
    throw refuse('the checksum does not match (truncated or corrupted)');
  const headerLength = view.getUint32(12, true);
  if (PREFIX_BYTES + headerLength > bytes.length - 4) throw refuse('the header length runs past the end');
  let header: PieceHeader;
  try {
    header = JSON.parse(
      new TextDecoder('utf-8', { fatal: true }).decode(bytes.subarray(PREFIX_BYTES, PREFIX_BYTES + headerLength)),
    );
  } catch (error) {
    throw refuse(`the header is not valid JSON (${(error as Error).message})`);
  }
  if (!header || typeof header !== 'object' || !header.options || !Array.isArray(header.layers)) {
    throw refuse('the header lacks options or layers');
  }
  const options = header.options as { perLayer?: unknown; dtype?: unknown };
  if (
    version === 2 &&
    (options.perLayer !== undefined ||
      (options.dtype !== undefined && options.dtype !== 'float32' && options.dtype !== 'int8'))
  ) {
    // version 2 had neither: such a header was not written by a version-2 writer
    throw refuse('a version-2 header with perLayer or a bfloat16/int4 dtype (version 3 settings)');
  }
  return { header, payloadStart: align4(PREFIX_BYTES + headerLength) };
}

/** Copies a piece's payload into memory along `runs` (readPieces checked its size). */
export function restore(piece: Piece, runs: Run[], memory: Uint8Array): void {
  let at = piece.payloadStart;
  for (const r of runs) {
    memory.set(piece.bytes.subarray(at, at + r.bytes), r.address);
    at += r.bytes;
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
    for (let k = 1; k < 8; k++) t[k * 256 + n] = (t[(k - 1) * 256 + n] >>> 8) ^ t[t[(k - 1) * 256 + n] & 0xff];
  }
  return t;
}

/** CRC-32 of bytes[start … end), continuing `previous` (the CRC of the bytes before them, 0 for none). */
export function crc32(bytes: Uint8Array, start: number, end: number, previous = 0): number {
  tables ??= crcTables();
  const t = tables;
  let crc = ~previous;
  let i = start;
  for (; i + 8 <= end; i += 8) {
    const lo = crc ^ (bytes[i] | (bytes[i + 1] << 8) | (bytes[i + 2] << 16) | (bytes[i + 3] << 24));
    const hi = bytes[i + 4] | (bytes[i + 5] << 8) | (bytes[i + 6] << 16) | (bytes[i + 7] << 24);
    crc =
      t[1792 + (lo & 0xff)] ^
      t[1536 + ((lo >>> 8) & 0xff)] ^
      t[1280 + ((lo >>> 16) & 0xff)] ^
      t[1024 + (lo >>> 24)] ^
      t[768 + (hi & 0xff)] ^
      t[512 + ((hi >>> 8) & 0xff)] ^
      t[256 + ((hi >>> 16) & 0xff)] ^
      t[hi >>> 24];
  }
  for (; i < end; i++) crc = t[(crc ^ bytes[i]) & 0xff] ^ (crc >>> 8);
  return (crc ^ -1) >>> 0;
}
