// Reads a .safetensors file: an 8-byte little-endian header length, a JSON header naming each tensor's
// dtype, shape and byte range, then the raw little-endian data. Every tensor comes out as a Float32Array
// (float32 copied, float16 and bfloat16 widened), because the runner computes in float32.

/**
 * @typedef {{ dtype: string, shape: number[], data: Float32Array }} Tensor
 */

/**
 * Parses the bytes of a .safetensors file into float32 tensors by name.
 * @param {Uint8Array} bytes
 * @returns {Map<string, Tensor>}
 */
export function readSafetensors(bytes) {
  if (!(bytes instanceof Uint8Array)) throw new TypeError('safetensors: expected the file as a Uint8Array');
  if (bytes.length < 8) throw new RangeError(`safetensors: a file needs at least 8 bytes, got ${bytes.length}`);
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const headerLength = Number(view.getBigUint64(0, true));
  if (8 + headerLength > bytes.length) {
    throw new RangeError(`safetensors: header of ${headerLength} bytes runs past the file's ${bytes.length} bytes`);
  }
  const header = JSON.parse(new TextDecoder().decode(bytes.subarray(8, 8 + headerLength)));
  const dataStart = 8 + headerLength;
  /** @type {Map<string, Tensor>} */
  const tensors = new Map();
  for (const [name, entry] of Object.entries(header)) {
    if (name === '__metadata__') continue;
    const { dtype, shape, data_offsets: offsets } = entry;
    const count = shape.reduce((/** @type {number} */ a, /** @type {number} */ b) => a * b, 1);
    const [begin, end] = offsets;
    const width = BYTES_PER_ELEMENT[dtype];
    if (width === undefined) {
      throw new TypeError(`safetensors: tensor ${name} has dtype ${dtype}; the runner reads F32, F16 and BF16`);
    }
    if (end - begin !== count * width || dataStart + end > bytes.length) {
      throw new RangeError(`safetensors: tensor ${name} (${dtype} ${JSON.stringify(shape)}) has a bad byte range`);
    }
    const raw = bytes.subarray(dataStart + begin, dataStart + end);
    tensors.set(name, { dtype, shape, data: toFloat32(raw, dtype, count) });
  }
  return tensors;
}

/** @type {Record<string, number>} */
const BYTES_PER_ELEMENT = { F32: 4, F16: 2, BF16: 2 };

/**
 * @param {Uint8Array} raw little-endian elements
 * @param {string} dtype
 * @param {number} count
 */
function toFloat32(raw, dtype, count) {
  const out = new Float32Array(count);
  const view = new DataView(raw.buffer, raw.byteOffset, raw.byteLength);
  if (dtype === 'F32') {
    for (let i = 0; i < count; i++) out[i] = view.getFloat32(4 * i, true);
  } else if (dtype === 'BF16') {
    // bfloat16 is the top half of a float32
    const bits = new Uint32Array(out.buffer);
    for (let i = 0; i < count; i++) bits[i] = view.getUint16(2 * i, true) << 16;
  } else {
    for (let i = 0; i < count; i++) out[i] = halfToFloat(view.getUint16(2 * i, true));
  }
  return out;
}

/** IEEE 754 binary16 bits → the number they encode (subnormals, infinities and NaN included). @param {number} h */
export function halfToFloat(h) {
  const sign = h & 0x8000 ? -1 : 1;
  const exponent = (h >> 10) & 0x1f;
  const fraction = h & 0x3ff;
  if (exponent === 0) return sign * fraction * 2 ** -24;
  if (exponent === 31) return fraction ? Number.NaN : sign * Number.POSITIVE_INFINITY;
  return sign * (1 + fraction / 1024) * 2 ** (exponent - 15);
}
