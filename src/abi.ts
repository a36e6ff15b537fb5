// The kernel's ABI as the facade sees it: the exports of a wasm instance (assembly/index.ts documents
// them), the builds they identify, and the numbers of a call. Numbers only: addresses, counts, flags.
// The word offsets of the blocks a call reads (descriptor, job) are generated into abi-words.ts.

export { Descriptor, Job } from './abi-words.js';

export type Build = 'relaxed-simd' | 'simd' | 'scalar';
/** Fastest first: the order `build: 'auto'` tries them in. */
export const BUILDS: readonly Build[] = ['relaxed-simd', 'simd', 'scalar'];
/** The builds by the number the kernel's build() export answers. */
export const BUILD_IDS: readonly Build[] = ['scalar', 'simd', 'relaxed-simd'];

/**
 * The numbers of one kernel call, in one reused Int32Array (a decode step allocates nothing): the first
 * CALL_WORDS in the order of the job words a threaded call copies them to (assembly/job.ts, from
 * DESCRIPTOR), then the weights call's two more.
 */
export type CallWords = Int32Array;
export const CALL = {
  DESCRIPTOR: 0,
  LAYER: 1,
  TOKENS: 2,
  FIRST_POSITION: 3,
  KEY_END: 4,
  CAUSAL: 5,
  /** weights: where the probabilities go */
  OUT: 6,
  /** weights: keys per row of them */
  KEY_COUNT: 7,
} as const;
/** Words of a call that a threaded call copies into the job block. */
export const CALL_WORDS = 6;

/** The kernel's exports, as assembly/index.ts documents them. */
export interface KernelExports {
  memory: WebAssembly.Memory;
  build(): number;
  heapBase(): number;
  scratchBytes(heads: number, kvHeads: number, headDim: number): number;
  ropeTableBytes(dims: number): number;
  ropeFrequencies(table: number, dims: number, theta: number): void;
  /** descriptor: a cache descriptor (assembly/descriptor.ts); the step's numbers follow */
  append(descriptor: number, layer: number, tokens: number, firstPosition: number): void;
  attend(
    descriptor: number,
    layer: number,
    tokens: number,
    firstPosition: number,
    keyEnd: number,
    causal: number,
  ): void;
  step(descriptor: number, layer: number, tokens: number, firstPosition: number): void;
  /** the attend call's numbers, then where the probabilities go and how many keys a row of them holds */
  weights(
    descriptor: number,
    layer: number,
    tokens: number,
    firstPosition: number,
    keyEnd: number,
    causal: number,
    out: number,
    keyCount: number,
  ): void;
  exp(values: number, count: number): void;
  /** threads (assembly/job.ts): the job block's size, then plan → work on every thread → finish */
  jobBytes(): number;
  plan(job: number, appendFirst: number): number;
  work(job: number, thread: number): number;
  finish(job: number): void;
}
