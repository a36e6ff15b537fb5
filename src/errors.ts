// Error messages that name the argument, what was expected and what was given.

import { typedArrayKind, typedArrayLength } from './typed-arrays.js';

/** A short, readable description of any value, for "…, got X". */
export function describe(value: unknown): string {
  if (value === null) return 'null';
  if (value === undefined) return 'undefined';
  if (typeof value === 'number') return Object.is(value, -0) ? '-0' : String(value);
  if (typeof value === 'string') return JSON.stringify(value.length > 40 ? `${value.slice(0, 40)}…` : value);
  if (typeof value === 'bigint') return `${value}n`;
  if (typeof value === 'boolean' || typeof value === 'symbol') return String(value);
  if (typeof value === 'function') return 'a function';
  // a typed array as its buffer holds it: its own length or constructor may lie
  const kind = typedArrayKind(value);
  if (kind) return `${kind} of length ${typedArrayLength(value as ArrayBufferView)}`;
  if (ArrayBuffer.isView(value)) return 'a DataView';
  if (Array.isArray(value)) return `an Array of length ${value.length}`;
  const name = (value as object).constructor?.name;
  return name && name !== 'Object' ? `a ${name}` : 'an object';
}

export function typeError(name: string, expected: string, got: unknown): TypeError {
  return new TypeError(`wasm-attention: ${name} must be ${expected}, got ${describe(got)}`);
}

export function rangeError(name: string, expected: string, got: unknown): RangeError {
  return new RangeError(`wasm-attention: ${name} must be ${expected}, got ${describe(got)}`);
}

/** `value` when it is a finite number > 0, else the error naming `name`. */
export function positiveNumber(name: string, value: unknown): number {
  if (typeof value !== 'number') throw typeError(name, 'a finite number > 0', value);
  if (!(Number.isFinite(value) && value > 0)) throw rangeError(name, 'a finite number > 0', value);
  return value;
}

/** `value` when it is an integer >= 1, else the error naming `name`. */
export function positiveInteger(name: string, value: unknown): number {
  if (typeof value !== 'number') throw typeError(name, 'an integer >= 1', value);
  if (!(Number.isInteger(value) && value >= 1)) throw rangeError(name, 'an integer >= 1', value);
  return value;
}

export const NOT_INITIALIZED = 'wasm-attention: call await init() first';
