// A caller's typed array as its buffer range holds it. Its `length`, `set`, `subarray` or `constructor`
// may be a getter or an override that lies or runs code in the middle of a call; the intrinsic getters of
// %TypedArray%.prototype read the internal slots instead (and answer for arrays of another realm too), and
// indexed reads and writes of a genuine typed array never reach caller code.

const TypedArrayPrototype = Object.getPrototypeOf(Uint8Array.prototype) as object;

function intrinsicGetter(key: string | symbol): (this: unknown) => unknown {
  return Object.getOwnPropertyDescriptor(TypedArrayPrototype, key)?.get as (this: unknown) => unknown;
}

const tagOf = intrinsicGetter(Symbol.toStringTag);
const bufferOf = intrinsicGetter('buffer');
const byteOffsetOf = intrinsicGetter('byteOffset');
const byteLengthOf = intrinsicGetter('byteLength');
const Float32 = Float32Array;
const Uint8 = Uint8Array;

/** The kind of a genuine typed array ('Float32Array', …), undefined for anything else (a Proxy included). */
export function typedArrayKind(value: unknown): string | undefined {
  return tagOf.call(value) as string | undefined;
}

/** Elements a genuine typed array of `bytesPerElement` holds (0 once its buffer is detached). */
export function elementsIn(array: ArrayBufferView, bytesPerElement: number): number {
  return (byteLengthOf.call(array) as number) / bytesPerElement;
}

/** Floats a genuine Float32Array holds: its buffer range, whatever its `length` property says. */
export function floatsIn(array: Float32Array): number {
  return elementsIn(array, 4);
}

/** Elements of any genuine typed array (for describing it in an error). */
export function typedArrayLength(array: ArrayBufferView): number {
  const kind = typedArrayKind(array) ?? '';
  return elementsIn(array, /64/.test(kind) ? 8 : /32/.test(kind) ? 4 : /16/.test(kind) ? 2 : 1);
}

/** Our own view of elements from … from + count of a genuine Float32Array (none of its methods are used). */
export function float32Range(array: Float32Array, from: number, count: number): Float32Array {
  const buffer = bufferOf.call(array) as ArrayBufferLike;
  return new Float32(buffer, (byteOffsetOf.call(array) as number) + from * 4, count);
}

const typedArraySet = (TypedArrayPrototype as Float32Array).set;

/**
 * Writes `source` (our own view) into a genuine Float32Array from element `offset` on, by the intrinsic
 * %TypedArray%.prototype.set (not the array's own `set`, which may be overridden): a memcpy, no object made.
 */
export function setFloats(array: Float32Array, source: Float32Array, offset: number): void {
  typedArraySet.call(array, source, offset);
}

/**
 * Whether a genuine Float32Array holds exactly `count` floats of an ArrayBuffer (not a SharedArrayBuffer,
 * which another thread may grow): then `set` from it copies those floats and no more. Makes no object.
 */
export function wholeUnshared(array: Float32Array, count: number): boolean {
  return floatsIn(array) === count && isArrayBuffer(bufferOf.call(array) as ArrayBufferLike);
}

/**
 * Our own view of a genuine Uint8Array's bytes; a private copy when they live in a SharedArrayBuffer,
 * where another thread could change them between their checks and their use.
 */
export function ownBytes(array: Uint8Array): Uint8Array {
  const buffer = bufferOf.call(array) as ArrayBufferLike;
  const view = new Uint8(buffer, byteOffsetOf.call(array) as number, byteLengthOf.call(array) as number);
  return isArrayBuffer(buffer) ? view : new Uint8(view);
}

const arrayBufferByteLength = Object.getOwnPropertyDescriptor(ArrayBuffer.prototype, 'byteLength')?.get;

/** Whether `buffer` is an ArrayBuffer (of any realm) rather than a SharedArrayBuffer: only the first passes its getter. */
function isArrayBuffer(buffer: ArrayBufferLike): boolean {
  try {
    arrayBufferByteLength?.call(buffer);
    return true;
  } catch {
    return false;
  }
}
