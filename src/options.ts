// Validation of every argument, before anything reaches the kernel or changes a cache.

import { positiveNumber, rangeError, typeError } from './errors.js';
import { alibiSlopesOf } from './alibi.js';
import { type HeadShape, type KVCacheDtype, ownRing } from './geometry.js';
import { floatsIn, typedArrayKind } from './typed-arrays.js';
import { refuseUnknownKeys } from './option-keys.js';
import {
  explicitFrequencies,
  scaledFrequencies,
  scalingSettings,
  type RopeScaling,
  type RopeTable,
  type ScalingSettings,
} from './rope-scaling.js';

export const MAX_HEAD_DIM = 512;
/**
 * The last position a token may take: positions are i32 inside the kernel (whose block walk saturates at
 * 2^31 − 1 instead of wrapping: assembly/attend/tile.ts blockEnd).
 */
export const MAX_POSITION = 2 ** 31 - 1;

/** How scores are formed and which keys a query sees (0 = none for softcap and window). */
export interface Scoring {
  scale: number;
  softcap: number;
  window: number;
  sinks: number;
  /** a learned logit per query head joining every softmax's denominator with no value (gpt-oss) */
  sinkLogits?: number[];
  /** ALiBi: a slope per query head; the score of key j from the query at i gains slope · (j − i) */
  alibi?: number[];
}

export interface RopeSettings {
  theta: number;
  dims: number;
  interleaved: boolean;
  scaling?: ScalingSettings;
  inverseFrequencies?: number[];
  attentionFactor?: number;
  /** the kernel's table when it is not plain θ^(−2i/dims) (scaled, explicit, or with an attention factor) */
  table?: RopeTable;
}

type Bag = Record<string, unknown>;

/**
 * The options a caller gave, read once: every (own or inherited) enumerable key's value copied into a
 * plain object before anything is checked, so a getter or Proxy trap runs once, up front, and cannot
 * answer one way to a check and another to the work.
 */
export function optionsObject(name: string, value: unknown): Bag {
  if (value === null || typeof value !== 'object' || Array.isArray(value)) {
    throw typeError(name, 'an object', value);
  }
  const bag: Bag = Object.create(null);
  for (const key in value) bag[key] = (value as Bag)[key];
  return bag;
}

export function integerAtLeast(name: string, value: unknown, least: number, most = Number.MAX_SAFE_INTEGER): number {
  if (typeof value !== 'number') throw typeError(name, `an integer >= ${least}`, value);
  if (!Number.isInteger(value) || value < least || value > most) {
    throw rangeError(
      name,
      most === Number.MAX_SAFE_INTEGER ? `an integer >= ${least}` : `an integer from ${least} to ${most}`,
      value,
    );
  }
  return value;
}

function optionalInteger(name: string, value: unknown, least: number, fallback: number): number {
  return value === undefined ? fallback : integerAtLeast(name, value, least);
}

/** Float32's range: the kernel multiplies by scale and divides by softcap in float32. */
const FLOAT32_RANGE = `within float32's range (${2 ** -149} to ${Math.fround(3.4028234663852886e38)}: the kernel computes in float32)`;

/** A positive number the kernel keeps as a float32: one that rounds to 0 or Infinity there is refused. */
export function positiveFloat32(name: string, value: unknown): number {
  const number = positiveNumber(name, value);
  const rounded = Math.fround(number);
  if (rounded === 0 || rounded === Number.POSITIVE_INFINITY)
    throw rangeError(name, `a number > 0 ${FLOAT32_RANGE}`, value);
  return number;
}

export function optionalBoolean(name: string, value: unknown, fallback: boolean): boolean {
  if (value === undefined) return fallback;
  if (typeof value !== 'boolean') throw typeError(name, 'a boolean', value);
  return value;
}

export function headShape(options: Bag, where: string): HeadShape {
  const heads = integerAtLeast(`${where}.heads`, options.heads, 1, 65536);
  const kvHeads = options.kvHeads === undefined ? heads : integerAtLeast(`${where}.kvHeads`, options.kvHeads, 1, 65536);
  if (heads % kvHeads !== 0) {
    throw rangeError(
      `${where}.kvHeads`,
      `a divisor of ${where}.heads (${heads}), so query heads group evenly`,
      kvHeads,
    );
  }
  const headDim = integerAtLeast(`${where}.headDim`, options.headDim, 1, MAX_HEAD_DIM);
  return { heads, kvHeads, headDim };
}

export function scoring(options: Bag, where: string, headDim: number): Scoring {
  const scale = options.scale === undefined ? 1 / Math.sqrt(headDim) : positiveFloat32(`${where}.scale`, options.scale);
  // softcap 0 (or null) means none, as in onnxruntime's attention ops and Hugging Face configs
  const softcap =
    options.softcap === undefined || options.softcap === null || options.softcap === 0
      ? 0
      : positiveFloat32(`${where}.softcap`, options.softcap);
  const window = optionalInteger(`${where}.window`, options.window, 1, 0);
  const sinks = optionalInteger(`${where}.sinks`, options.sinks, 0, 0);
  return { scale, softcap, window, sinks };
}

const ROPE_KEYS = ['theta', 'dims', 'interleaved', 'scaling', 'inverseFrequencies', 'attentionFactor'];

export function ropeSettings(value: unknown, where: string, headDim: number): RopeSettings | undefined {
  if (value === undefined || value === null || value === false) return undefined;
  const rope = optionsObject(`${where}.rope`, value);
  refuseUnknownKeys(rope, `${where}.rope`, ROPE_KEYS);
  const theta = rope.theta === undefined ? 10000 : positiveNumber(`${where}.rope.theta`, rope.theta);
  const dims = rope.dims === undefined ? headDim : integerAtLeast(`${where}.rope.dims`, rope.dims, 2, headDim);
  if (dims % 2 !== 0) {
    const hint =
      rope.dims === undefined ? ` (it defaults to headDim, ${headDim}, which is odd: give rope.dims explicitly)` : '';
    throw rangeError(`${where}.rope.dims`, `an even number of rotated dimensions${hint}`, dims);
  }
  const interleaved = optionalBoolean(`${where}.rope.interleaved`, rope.interleaved, false);
  const settings: RopeSettings = { theta, dims, interleaved };
  if (rope.inverseFrequencies !== undefined) {
    for (const other of ['theta', 'scaling'] as const) {
      if (rope[other] !== undefined) {
        throw rangeError(
          `${where}.rope.${other}`,
          `absent when ${where}.rope.inverseFrequencies gives the frequencies themselves`,
          rope[other],
        );
      }
    }
    settings.inverseFrequencies = explicitFrequencies(
      rope.inverseFrequencies,
      `${where}.rope.inverseFrequencies`,
      dims,
    );
  }
  if (rope.scaling !== undefined) settings.scaling = scalingSettings(rope.scaling, `${where}.rope.scaling`);
  if (rope.attentionFactor !== undefined) {
    if (settings.scaling?.type === 'yarn') {
      throw rangeError(
        `${where}.rope.attentionFactor`,
        `absent with ${where}.rope.scaling.type 'yarn' (give ${where}.rope.scaling.attentionFactor instead)`,
        rope.attentionFactor,
      );
    }
    settings.attentionFactor = positiveNumber(`${where}.rope.attentionFactor`, rope.attentionFactor);
  }
  if (settings.scaling || settings.inverseFrequencies || settings.attentionFactor !== undefined) {
    const frequencies = settings.inverseFrequencies
      ? Float64Array.from(settings.inverseFrequencies)
      : scaledFrequencies(theta, dims, settings.scaling);
    const attentionFactor =
      settings.scaling?.type === 'yarn' ? settings.scaling.attentionFactor : (settings.attentionFactor ?? 1);
    settings.table = { frequencies, attentionFactor };
  }
  return settings;
}

/** The `rope` options that reproduce `rope` (what save() stores): every default filled in, no table. */
export function ropeToOptions(rope: RopeSettings): RopeOptions {
  const { theta, dims, interleaved, scaling, inverseFrequencies, attentionFactor } = rope;
  return {
    ...(inverseFrequencies
      ? { dims, interleaved, inverseFrequencies: [...inverseFrequencies] }
      : { theta, dims, interleaved }),
    ...(scaling ? { scaling: { ...scaling } } : {}),
    ...(attentionFactor !== undefined ? { attentionFactor } : {}),
  };
}

function isFloat32Array(value: unknown): value is Float32Array {
  // also true for arrays from another realm (an iframe, a vm context); false for a Proxy of one
  return typedArrayKind(value) === 'Float32Array';
}

/** The number of tokens in a token-major tensor of `rowFloats` floats per token (counted from its bytes). */
export function tokensIn(name: string, value: unknown, rowFloats: number, rowShape: string): number {
  if (!isFloat32Array(value)) throw typeError(name, 'a Float32Array', value);
  const length = floatsIn(value);
  if (length === 0 || length % rowFloats !== 0) {
    throw rangeError(
      name,
      `a whole number of tokens of ${rowShape} = ${rowFloats} floats (length a positive multiple of ${rowFloats})`,
      value,
    );
  }
  return length / rowFloats;
}

export function sameLength(name: string, value: Float32Array, otherName: string, other: Float32Array): void {
  if (floatsIn(value) !== floatsIn(other)) {
    throw rangeError(name, `the same length as ${otherName} (${floatsIn(other)})`, value);
  }
}

/** `out` of an attention call, [tokens][heads][headDim]: the one given, checked, or a new one. */
export function outputArray(value: unknown, tokens: number, heads: number, headDim: number): Float32Array {
  const length = tokens * heads * headDim;
  if (value === undefined) return new Float32Array(length);
  if (!isFloat32Array(value)) throw typeError('out', 'a Float32Array (or undefined)', value);
  // numbers, not a closure describing the shape: a closure (and the context it captures) is a JS-heap
  // allocation per call wherever the optimizer does not remove it
  if (floatsIn(value) !== length) {
    throw rangeError(
      'out',
      `a Float32Array of length ${length} ([T=${tokens}][heads=${heads}][headDim=${headDim}])`,
      value,
    );
  }
  return value;
}

// ------------------------------------------------------------------------------------- cache options

export type { KVCacheDtype };

/** The dtypes a cache stores K/V in, by their code in the descriptor (assembly/descriptor.ts DTYPE_*). */
export const DTYPES: readonly KVCacheDtype[] = ['float32', 'int8', 'bfloat16', 'int4'];

export interface RopeOptions {
  theta?: number;
  dims?: number;
  interleaved?: boolean;
  scaling?: RopeScaling;
  inverseFrequencies?: readonly number[] | Float64Array | Float32Array;
  attentionFactor?: number;
}

export type { RopeScaling };

export interface KVCacheOptions {
  layers?: number;
  heads: number;
  kvHeads?: number;
  headDim: number;
  maxTokens: number;
  window?: number;
  sinks?: number;
  dtype?: KVCacheDtype;
  scale?: number;
  softcap?: number;
  rope?: RopeOptions;
  sinkLogits?: readonly number[] | Float32Array | Float64Array;
  alibi?: true | readonly number[] | Float32Array | Float64Array;
  perLayer?: ReadonlyArray<LayerOptions | null>;
}

/** What one layer of a cache changes from the cache-wide options (per-layer.ts). */
export interface LayerOptions {
  /** `null`: a global layer under a cache-wide window */
  window?: number | null;
  sinks?: number;
  /** replaces the cache-wide `rope` whole; `null`: no rotary on this layer */
  rope?: RopeOptions | null;
  softcap?: number | null;
  scale?: number;
  sinkLogits?: readonly number[] | Float32Array | Float64Array | null;
  alibi?: true | readonly number[] | Float32Array | Float64Array | null;
}

/** Everything a cache's behaviour depends on, validated and with defaults filled in. */
export interface CacheSettings {
  layers: number;
  shape: HeadShape;
  scoring: Scoring;
  maxTokens: number;
  dtype: KVCacheDtype;
  rope?: RopeSettings;
  /** with the `perLayer` option: every layer's own settings (per-layer.ts) */
  perLayer?: LayerSettings[];
}

const CACHE_KEYS = [
  'layers',
  'heads',
  'kvHeads',
  'headDim',
  'maxTokens',
  'window',
  'sinks',
  'dtype',
  'scale',
  'softcap',
  'rope',
  'sinkLogits',
  'alibi',
  'perLayer',
];

/** `sinkLogits`: one finite number per query head (an Array or a typed array). */
export function sinkLogitsOf(value: unknown, name: string, heads: number): number[] {
  const isList = Array.isArray(value) || (ArrayBuffer.isView(value) && !(value instanceof DataView));
  if (!isList) throw typeError(name, `an array of ${heads} sink logits (one per query head)`, value);
  const list = Array.from(value as ArrayLike<unknown>);
  if (list.length !== heads) throw rangeError(name, `one logit per query head (${heads})`, value);
  return list.map((x, i) => {
    if (typeof x !== 'number') throw typeError(`${name}[${i}]`, 'a finite number', x);
    if (!Number.isFinite(x)) throw rangeError(`${name}[${i}]`, 'a finite number', x);
    return x;
  });
}

export function cacheSettings(options: unknown): CacheSettings {
  const bag = optionsObject('options', options);
  refuseUnknownKeys(bag, 'options', CACHE_KEYS);
  const layers = bag.layers === undefined ? 1 : integerAtLeast('options.layers', bag.layers, 1, 65536);
  const shape = headShape(bag, 'options');
  const score = scoring(bag, 'options', shape.headDim);
  const maxTokens = integerAtLeast('options.maxTokens', bag.maxTokens, 1, MAX_POSITION);
  if (score.window > maxTokens) {
    throw rangeError(
      'options.window',
      `at most options.maxTokens (${maxTokens}): the ring must hold a whole window`,
      score.window,
    );
  }
  const dtype = bag.dtype === undefined ? 'float32' : bag.dtype;
  if (!DTYPES.includes(dtype as KVCacheDtype)) {
    throw (typeof dtype === 'string' ? rangeError : typeError)(
      'options.dtype',
      "'float32', 'int8', 'bfloat16' or 'int4'",
      dtype,
    );
  }
  const rope = ropeSettings(bag.rope, 'options', shape.headDim);
  if (bag.sinkLogits !== undefined) score.sinkLogits = sinkLogitsOf(bag.sinkLogits, 'options.sinkLogits', shape.heads);
  if (bag.alibi !== undefined) score.alibi = alibiSlopesOf(bag.alibi, 'options.alibi', shape.heads, rope !== undefined);
  const settings: CacheSettings = { layers, shape, scoring: score, maxTokens, dtype: dtype as KVCacheDtype, rope };
  if (bag.perLayer !== undefined) settings.perLayer = perLayerSettings(bag.perLayer, settings);
  return settings;
}

/** The options that reproduce `settings` (what save() stores). */
export function settingsToOptions(settings: CacheSettings): KVCacheOptions & Record<string, unknown> {
  const { shape, scoring: score } = settings;
  return {
    layers: settings.layers,
    heads: shape.heads,
    kvHeads: shape.kvHeads,
    headDim: shape.headDim,
    maxTokens: settings.maxTokens,
    dtype: settings.dtype,
    scale: score.scale,
    sinks: score.sinks,
    ...(score.window ? { window: score.window } : {}),
    ...(score.softcap ? { softcap: score.softcap } : {}),
    ...(settings.rope ? { rope: ropeToOptions(settings.rope) } : {}),
    ...(score.sinkLogits ? { sinkLogits: [...score.sinkLogits] } : {}),
    // the slopes themselves, so a saved cache keeps its numbers whatever rule made them
    ...(score.alibi ? { alibi: [...score.alibi] } : {}),
    ...(settings.perLayer ? { perLayer: settings.perLayer.map((layer) => layer.entry) } : {}),
  };
}

// ------------------------------------------------------------------------------------- perLayer

const LAYER_KEYS = ['window', 'sinks', 'rope', 'softcap', 'scale', 'sinkLogits', 'alibi'];

/** One layer's settings, resolved against the cache-wide ones. */
export interface LayerSettings {
  scoring: Scoring;
  rope?: RopeSettings;
  /** slots of the layer's ring after its sinks (maxTokens for a global layer) */
  ring: number;
  /** the entry as save() stores it: what it overrides, canonical (null: nothing) */
  entry: Record<string, unknown> | null;
}

/** `options.perLayer`: one entry per layer, each `null`, `{}` or an object of LAYER_KEYS. */
export function perLayerSettings(value: unknown, wide: CacheSettings): LayerSettings[] {
  const { layers, shape, maxTokens } = wide;
  if (!Array.isArray(value)) {
    throw typeError(
      'options.perLayer',
      `an array of options.layers (${layers}) entries, each null or an object`,
      value,
    );
  }
  if (value.length !== layers) {
    throw rangeError('options.perLayer', `one entry per layer (options.layers = ${layers})`, value);
  }
  const result: LayerSettings[] = [];
  for (let i = 0; i < layers; i++) {
    const where = `options.perLayer[${i}]`;
    const given: unknown = value[i];
    const bag = given === null ? {} : optionsObject(where, given);
    refuseUnknownKeys(bag, where, LAYER_KEYS);
    const scoring: Scoring = { ...wide.scoring };
    const entry: Record<string, unknown> = {};
    if (bag.window !== undefined) {
      scoring.window =
        bag.window === null ? 0 : integerAtLeast(`${where}.window`, bag.window, 1, Number.MAX_SAFE_INTEGER);
      if (scoring.window > maxTokens) {
        throw rangeError(
          `${where}.window`,
          `at most options.maxTokens (${maxTokens}): the ring must hold a whole window`,
          bag.window,
        );
      }
      entry.window = scoring.window || null;
    }
    if (bag.sinks !== undefined) entry.sinks = scoring.sinks = integerAtLeast(`${where}.sinks`, bag.sinks, 0);
    if (bag.scale !== undefined) entry.scale = scoring.scale = positiveFloat32(`${where}.scale`, bag.scale);
    if (bag.softcap !== undefined) {
      scoring.softcap =
        bag.softcap === null || bag.softcap === 0 ? 0 : positiveFloat32(`${where}.softcap`, bag.softcap);
      entry.softcap = scoring.softcap || null;
    }
    let rope = wide.rope;
    if (bag.rope !== undefined) {
      rope = ropeSettings(bag.rope, where, shape.headDim);
      entry.rope = rope ? ropeToOptions(rope) : null;
    }
    if (bag.sinkLogits !== undefined) {
      scoring.sinkLogits =
        bag.sinkLogits === null ? undefined : sinkLogitsOf(bag.sinkLogits, `${where}.sinkLogits`, shape.heads);
      entry.sinkLogits = scoring.sinkLogits ? [...scoring.sinkLogits] : null;
    }
    if (bag.alibi !== undefined) {
      scoring.alibi =
        bag.alibi === null || bag.alibi === false
          ? undefined
          : alibiSlopesOf(bag.alibi, `${where}.alibi`, shape.heads, false);
      entry.alibi = scoring.alibi ? [...scoring.alibi] : null;
    }
    if (scoring.alibi && rope) {
      const name = bag.alibi !== undefined ? `${where}.alibi` : `${where}.rope`;
      throw rangeError(
        name,
        `left out when layer ${i} also has ${bag.alibi !== undefined ? 'a rope' : 'ALiBi'} ` +
          `(ALiBi biases positions instead of rotating them; give ${where}.rope: null or ${where}.alibi: null)`,
        bag.alibi !== undefined ? bag.alibi : bag.rope,
      );
    }
    if (scoring.window === 0) scoring.sinks = 0; // sinks are what a window keeps: nothing without one
    result.push({
      scoring,
      rope,
      ring: ownRing(scoring.window, maxTokens),
      entry: Object.keys(entry).length ? entry : null,
    });
  }
  return result;
}
