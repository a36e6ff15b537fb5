// The kernel's ABI as the facade sees it: the exports of a wasm instance (assembly/index.ts documents
// them), the builds they identify, the numbers of a call, and the word offsets of the blocks a call reads:
// a cache's descriptor (generated below from assembly/descriptor.ts) and the job block of a threaded call
// (generated into the worker script, which imports nothing, from assembly/job.ts).

export { Job } from './attention-worker.js';

// <generated from assembly/descriptor.ts by assembly/abi-words.mjs: edit that file, not this block>
/** A cache descriptor (assembly/descriptor.ts). */
export const Descriptor = {
  PAGE_ROWS: 64,
  PAGE_SHIFT: 6,
  HEADS: 0,
  KV_HEADS: 1,
  HEAD_DIM: 2,
  DTYPE: 3,
  SINKS: 4,
  RING: 5,
  WINDOW: 6,
  SCALE: 7,
  SOFTCAP: 8,
  ROPE_DIMS: 9,
  ROPE_INTERLEAVED: 10,
  ROPE_TABLE: 11,
  STREAM: 12,
  Q: 13,
  K: 14,
  V: 15,
  OUT: 16,
  SCRATCH: 17,
  LAYERS: 18,
  SINK_LOGITS: 19,
  ALIBI_SLOPES: 20,
  TREE: 24,
  TREE_BASE: 25,
  LAYER_TABLES: 32,
  DTYPE_FLOAT32: 0,
  DTYPE_INT8: 1,
  DTYPE_BFLOAT16: 2,
  DTYPE_INT4: 3,
  INT4_GROUP: 32,
} as const;
// </generated>

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

/** The numbers of an append or step: a cache descriptor (assembly/descriptor.ts), then the step's. */
type StepArgs = [descriptor: number, layer: number, tokens: number, firstPosition: number];
/** The numbers of an attend: a step's, then the end of the keys the queries see and whether causally. */
type AttendArgs = [...StepArgs, keyEnd: number, causal: number];

/** The kernel's exports, as assembly/index.ts documents them. */
export interface KernelExports {
  memory: WebAssembly.Memory;
  build(): number;
  heapBase(): number;
  scratchBytes(heads: number, kvHeads: number, headDim: number): number;
  ropeTableBytes(dims: number): number;
  ropeFrequencies(table: number, dims: number, theta: number): void;
  append(...call: StepArgs): void;
  attend(...call: AttendArgs): void;
  /** append, then attend the staged queries over every key up to the new ones (causal) */
  step(...call: StepArgs): void;
  /** the attend call's numbers, then where the probabilities go and how many keys a row of them holds */
  weights(...call: [...AttendArgs, out: number, keyCount: number]): void;
  exp(values: number, count: number): void;
  /** threads (assembly/job.ts): the job block's size, then plan → work on every thread → adopt → finish */
  jobBytes(): number;
  plan(job: number, appendFirst: number): number;
  work(job: number, thread: number): number;
  adopt(job: number): number;
  finish(job: number): void;
  /** a batch (assembly/job.ts, batch mode): one step of each item record, on the calling thread */
  stepMany(items: number, count: number, scratch: number): void;
  /** a batch across threads: plans the job's items, returns the pieces (then work, finish as above) */
  planMany(job: number): number;
  /** query tokens one tile of this head geometry holds (a batch's cascade fits its members in one) */
  tileTokens(heads: number, kvHeads: number): number;
}
