// Scaled rotary embeddings: every scheme reduces to the two things the kernel's rope table holds
// (assembly/rope.ts), an f64 inverse frequency per rotated pair and an attention factor multiplying cos
// and sin. Positions stay absolute; only these numbers change.
//
// The definitions, in the rotated dimensions' own terms (`dims`, pair i < dims/2, base frequency
// f_i = θ^(−2i/dims), wavelength λ_i = 2π / f_i):
// - linear (position interpolation, Chen et al. 2023): f_i / factor.
// - llama3 (Meta's Llama 3.1 release): pairs whose wavelength is below originalMaxPositions /
//   highFreqFactor keep f_i; above originalMaxPositions / lowFreqFactor they take f_i / factor; between,
//   (1 − s)·f_i/factor + s·f_i with s = (originalMaxPositions / λ_i − lowFreqFactor) / (highFreqFactor −
//   lowFreqFactor).
// - yarn (Peng et al. 2023, "YaRN"): the pairs that turn fewer than betaSlow times over the original
//   context are interpolated (f_i / factor), those that turn more than betaFast times keep f_i, with a
//   linear ramp between, over the pair index; the ramp's ends are the dimensions d(β) = dims·ln(L / 2πβ) /
//   (2 ln θ), rounded outwards to whole dimensions unless `truncate` is false (gpt-oss). The attention
//   factor defaults to 0.1·ln(factor) + 1 (1 for factor <= 1) and multiplies both q and k.

import { positiveInteger, positiveNumber, rangeError, typeError } from './errors.js';
import { refuseUnknownKeys } from './option-keys.js';

export type RopeScaling =
  | { type: 'linear'; factor: number }
  | { type: 'llama3'; factor: number; lowFreqFactor: number; highFreqFactor: number; originalMaxPositions: number }
  | {
      type: 'yarn';
      factor: number;
      originalMaxPositions: number;
      betaFast?: number;
      betaSlow?: number;
      truncate?: boolean;
      attentionFactor?: number;
    };

/** A validated scaling with every default filled in (what save() stores). */
export type ScalingSettings = Exclude<RopeScaling, { type: 'yarn' }> | Required<Extract<RopeScaling, { type: 'yarn' }>>;

/** What the kernel's rope table holds when it is not plain θ^(−2i/dims). */
export interface RopeTable {
  frequencies: Float64Array;
  attentionFactor: number;
}

const SCALING_KEYS = {
  linear: ['type', 'factor'],
  llama3: ['type', 'factor', 'lowFreqFactor', 'highFreqFactor', 'originalMaxPositions'],
  yarn: ['type', 'factor', 'originalMaxPositions', 'betaFast', 'betaSlow', 'truncate', 'attentionFactor'],
} as const;

/** YaRN's default attention factor for a context stretched `factor` times. */
export function yarnAttentionFactor(factor: number): number {
  return factor <= 1 ? 1 : 0.1 * Math.log(factor) + 1;
}

/** Validates `rope.scaling` (at `where`, e.g. `options.rope.scaling`) and fills in its defaults. */
export function scalingSettings(value: unknown, where: string): ScalingSettings {
  if (value === null || typeof value !== 'object' || Array.isArray(value)) {
    throw typeError(where, "an object { type: 'linear' | 'llama3' | 'yarn', … }", value);
  }
  const bag = value as Record<string, unknown>;
  const type = bag.type;
  if (type !== 'linear' && type !== 'llama3' && type !== 'yarn') {
    throw (typeof type === 'string' ? rangeError : typeError)(`${where}.type`, "'linear', 'llama3' or 'yarn'", type);
  }
  refuseUnknownKeys(bag, where, SCALING_KEYS[type]);
  const factor = positiveNumber(`${where}.factor`, bag.factor);
  if (type === 'linear') return { type, factor };
  const originalMaxPositions = positiveInteger(`${where}.originalMaxPositions`, bag.originalMaxPositions);
  if (type === 'llama3') {
    const lowFreqFactor = positiveNumber(`${where}.lowFreqFactor`, bag.lowFreqFactor);
    const highFreqFactor = positiveNumber(`${where}.highFreqFactor`, bag.highFreqFactor);
    if (!(highFreqFactor > lowFreqFactor)) {
      throw rangeError(
        `${where}.highFreqFactor`,
        `greater than ${where}.lowFreqFactor (${lowFreqFactor}): the smooth band lies between them`,
        highFreqFactor,
      );
    }
    return { type, factor, lowFreqFactor, highFreqFactor, originalMaxPositions };
  }
  const betaFast = bag.betaFast === undefined ? 32 : positiveNumber(`${where}.betaFast`, bag.betaFast);
  const betaSlow = bag.betaSlow === undefined ? 1 : positiveNumber(`${where}.betaSlow`, bag.betaSlow);
  if (!(betaFast > betaSlow)) {
    throw rangeError(
      `${where}.betaFast`,
      `greater than ${where}.betaSlow (${betaSlow}): rotations counted from the fast end of the ramp`,
      betaFast,
    );
  }
  if (bag.truncate !== undefined && typeof bag.truncate !== 'boolean') {
    throw typeError(`${where}.truncate`, 'a boolean', bag.truncate);
  }
  const truncate = bag.truncate ?? true;
  const attentionFactor =
    bag.attentionFactor === undefined
      ? yarnAttentionFactor(factor)
      : positiveNumber(`${where}.attentionFactor`, bag.attentionFactor);
  return { type, factor, originalMaxPositions, betaFast, betaSlow, truncate, attentionFactor };
}

/** Validates `rope.inverseFrequencies`: dims / 2 finite numbers > 0 (an Array or a typed array). */
export function explicitFrequencies(value: unknown, where: string, dims: number): number[] {
  const isList = Array.isArray(value) || (ArrayBuffer.isView(value) && !(value instanceof DataView));
  if (!isList) throw typeError(where, `an array of ${dims / 2} inverse frequencies (dims / 2)`, value);
  const list = Array.from(value as ArrayLike<unknown>);
  if (list.length !== dims / 2) {
    throw rangeError(where, `dims / 2 = ${dims / 2} inverse frequencies (one per rotated pair)`, value);
  }
  return list.map((f, i) => positiveNumber(`${where}[${i}]`, f));
}

/** Inverse frequencies of `dims` rotated dimensions at base `theta`, scaled by `scaling`, in f64. */
export function scaledFrequencies(theta: number, dims: number, scaling: ScalingSettings | undefined): Float64Array {
  const half = dims / 2;
  const frequencies = new Float64Array(half);
  for (let i = 0; i < half; i++) frequencies[i] = theta ** ((-2 * i) / dims);
  if (!scaling) return frequencies;
  if (scaling.type === 'linear') return frequencies.map((f) => f / scaling.factor);
  if (scaling.type === 'llama3') {
    const { factor, lowFreqFactor, highFreqFactor, originalMaxPositions: context } = scaling;
    return frequencies.map((f) => {
      const wavelength = (2 * Math.PI) / f;
      if (wavelength < context / highFreqFactor) return f;
      if (wavelength > context / lowFreqFactor) return f / factor;
      const smooth = (context / wavelength - lowFreqFactor) / (highFreqFactor - lowFreqFactor);
      return (1 - smooth) * (f / factor) + smooth * f;
    });
  }
  const { factor, originalMaxPositions: context, betaFast, betaSlow, truncate } = scaling;
  // the dimension (not pair) at which a frequency turns `rotations` times over the original context
  const dimensionOf = (rotations: number) =>
    (dims * Math.log(context / (rotations * 2 * Math.PI))) / (2 * Math.log(theta));
  let low = dimensionOf(betaFast);
  let high = dimensionOf(betaSlow);
  if (truncate) [low, high] = [Math.floor(low), Math.ceil(high)];
  low = Math.max(low, 0);
  high = Math.min(high, dims - 1);
  if (low === high) high += 0.001; // a ramp of zero width would divide by zero
  return frequencies.map((f, i) => {
    const ramp = Math.min(1, Math.max(0, (i - low) / (high - low))); // 0: keep f, 1: interpolate
    return (f / factor) * ramp + f * (1 - ramp);
  });
}

/** Writes a rope table's attention factor and inverse frequencies (layout: assembly/rope.ts) into memory. */
export function writeRopeTable(memory: Uint8Array, table: number, rope: RopeTable): void {
  const view = new DataView(memory.buffer, memory.byteOffset, memory.byteLength);
  view.setFloat64(table + 8, rope.attentionFactor, true);
  for (let i = 0; i < rope.frequencies.length; i++) view.setFloat64(table + 16 + 8 * i, rope.frequencies[i], true);
}
