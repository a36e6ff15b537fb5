// wasm-attention's kernel: the one entry file, and the whole ABI.
//
// The ABI is numbers only: byte addresses into this module's memory, counts and flags (i32), scales (f64).
// The facade (src/) owns the memory layout: it places every block with its own allocator above
// heapBase(), copies tensors in and out, and validates every argument before a call, so nothing here
// checks bounds (the release builds use --noAssert) and nothing here allocates or grows memory.
//
// A cache is described by one *descriptor* in linear memory (descriptor.ts: geometry, scoring, rope, the
// staging area of a call, and per layer a page table): a call passes its address and the step's own
// numbers, so a decode step crosses into wasm once. Tensors are f32 and row-major:
//   queries, outputs   [tokens][heads][headDim]        (the descriptor's staging q and out)
//   new keys, values   [tokens][kvHeads][headDim]      (the descriptor's staging k and v)
//   cached K and V     per layer, kv head and K|V: pages of 64 slots [slot][headDim], f32, or i8 followed
//                      by the page's 64 f32 scales; positions map to slots as layout.ts documents
// Grouped-query attention: query head h reads kv head h / (heads / kvHeads).
//
// Threads (the builds with shared memory): a call may instead go through a *job* (job.ts) that every
// thread's instance reads from the shared memory: the caller writes the call's numbers into the job and
// calls plan (append, rotate, cut the work into pieces fixed by the problem), then each thread, the caller
// included, calls work (claiming pieces until none are left), the caller takes over what is left (adopt),
// then calls finish. Outputs are
// the same bits as attend/step on one thread (attend/chunks.ts).

import { appendRows } from './layout';
import { attendQueries } from './attend';
import { scratchBytesFor, tileTokensOf } from './attend/call';
import { attentionWeights } from './attend/weights';
import { finishJob, planJob, workPieces } from './attend/work';
import { itemAt, itemWord, numberPieces, placeResults, runItems } from './attend/many';
import {
  BATCH_MODE, DESCRIPTOR, FIRST_POSITION, ITEMS, ITEM_COUNT, ITEM_DESCRIPTOR, ITEM_FIRST_POSITION, ITEM_LAYER,
  ITEM_TOKENS, JOB_BYTES, LAYER, MODE, PIECES, RESULT_BYTES, RESULT_NEEDED, TOKENS, jobWord, setJobWord,
} from './job';
import { ropeTableBytes as ropeTableSize, ropeFrequencies as fillRopeFrequencies, rope as rotate } from './rope';
import {
  HEADS, HEAD_DIM, KV_HEADS, OUT, Q, K, ROPE_DIMS, ROPE_INTERLEAVED, ROPE_TABLE, TREE, TREE_BASE, address, field,
} from './descriptor';
import { exp4, expScalar } from './math';

/** Which build this is: 0 scalar, 1 simd, 2 relaxed-simd (so a binary handed to init() names itself). */
export function build(): i32 {
  return ASC_FEATURE_RELAXED_SIMD ? 2 : ASC_FEATURE_SIMD ? 1 : 0;
}

/** First byte the facade may use: everything below holds this module's static data. */
export function heapBase(): usize {
  return __heap_base;
}

/** Bytes of scratch `attend` and `weights` need for this head geometry. */
export function scratchBytes(heads: i32, kvHeads: i32, headDim: i32): usize {
  return scratchBytesFor(heads, kvHeads, headDim);
}

/** Query tokens one tile holds for this head geometry (a batch's cascade fits its members' rows in one). */
export function tileTokens(heads: i32, kvHeads: i32): i32 {
  return tileTokensOf(heads, kvHeads);
}

/** Bytes of a rope table for `dims` rotated dimensions (see rope.ts). */
export function ropeTableBytes(dims: i32): usize {
  return ropeTableSize(dims);
}

/** Fills a rope table: θ^(−2i/dims) for i < dims/2, and no cached position. */
export function ropeFrequencies(table: usize, dims: i32, theta: f64): void {
  fillRopeFrequencies(table, dims, theta);
}

/** Rotates `tokens` rows of `rowHeads` heads at `rows` by their positions, if the cache has rope. */
function rotateRows(descriptor: usize, rows: usize, tokens: i32, rowHeads: i32, firstPosition: i32): void {
  const dims = field(descriptor, ROPE_DIMS);
  if (dims == 0) return;
  const headDim = field(descriptor, HEAD_DIM), interleaved = field(descriptor, ROPE_INTERLEAVED);
  const table = address(descriptor, ROPE_TABLE);
  const tree = address(descriptor, TREE);
  if (tree == 0) {
    rotate(rows, tokens, rowHeads, headDim, firstPosition, dims, interleaved, table);
    return;
  }
  // drafts of a tree (descriptor.ts): each at the position of its depth, not where it is stored
  const positions = tree + 4 + (<usize>(firstPosition - field(descriptor, TREE_BASE)) << 2);
  const rowBytes = <usize>(rowHeads * headDim) << 2;
  for (let t = 0; t < tokens; t++) {
    rotate(rows + <usize>t * rowBytes, 1, rowHeads, headDim, load<i32>(positions + (<usize>t << 2)), dims, interleaved, table);
  }
}

/**
 * Appends the `tokens` new keys and values in staging (positions firstPosition …) to `layer`: rotates the
 * keys (rope) and writes both into their pages (int8: quantized). The pages must exist and be unshared.
 */
export function append(descriptor: usize, layer: i32, tokens: i32, firstPosition: i32): void {
  rotateRows(descriptor, address(descriptor, K), tokens, field(descriptor, KV_HEADS), firstPosition);
  appendRows(descriptor, layer, tokens, firstPosition);
}

/**
 * Staging out = attention of the `tokens` staging queries (positions firstPosition + t, rotated here) over
 * `layer`'s keys at positions 0 … keyEnd − 1.
 *   causal   1: the query at p sees keys ≤ p; 0: every key (a window still bounds from below)
 * Scoring (scale, softcap, window, sinks) and streaming come from the descriptor.
 */
export function attend(descriptor: usize, layer: i32, tokens: i32, firstPosition: i32, keyEnd: i32, causal: i32): void {
  const q = address(descriptor, Q);
  rotateRows(descriptor, q, tokens, field(descriptor, HEADS), firstPosition);
  attendQueries(descriptor, layer, q, tokens, firstPosition, keyEnd, causal, address(descriptor, OUT));
}

/**
 * One step of a cache: append (the new keys and values) then attend (the queries, causally, over every
 * key up to the new ones). A decode step is this one call.
 */
export function step(descriptor: usize, layer: i32, tokens: i32, firstPosition: i32): void {
  append(descriptor, layer, tokens, firstPosition);
  attend(descriptor, layer, tokens, firstPosition, firstPosition + tokens, 1);
}

/** Bytes of a job block (job.ts). */
export function jobBytes(): i32 {
  return JOB_BYTES;
}

/**
 * Prepares the job's call (descriptor, layer, tokens, firstPosition, keyEnd, causal, scratch, partials
 * written by the facade): appends the staging keys and values first when `appendFirst` is 1 (a step),
 * rotates the queries, and cuts the attention into pieces. Returns the number of pieces; −1 (and nothing
 * done) when each thread's results area is smaller than the call's output (the job's resultNeeded).
 */
export function plan(job: usize, appendFirst: i32): i32 {
  const descriptor = <usize>jobWord(job, DESCRIPTOR);
  const layer = jobWord(job, LAYER), tokens = jobWord(job, TOKENS), firstPosition = jobWord(job, FIRST_POSITION);
  // tile mode writes a thread's output rows into its results area, laid out as the staging out
  const outBytes = <i32>(<usize>tokens * <usize>field(descriptor, HEADS) * <usize>field(descriptor, HEAD_DIM)) << 2;
  setJobWord(job, RESULT_NEEDED, outBytes);
  if (outBytes > jobWord(job, RESULT_BYTES)) return -1;
  if (appendFirst != 0) append(descriptor, layer, tokens, firstPosition);
  rotateRows(descriptor, address(descriptor, Q), tokens, field(descriptor, HEADS), firstPosition);
  return planJob(job);
}

/**
 * Runs pieces of the planned job as thread `thread` (0: the caller) until none are left to claim; how many
 * it published (−1: a test stopped this worker for good).
 */
export function work(job: usize, thread: i32): i32 {
  return workPieces(job, thread, false);
}

/**
 * The calling thread takes over and runs every piece of the job not yet published (free, or held by a
 * worker that has not answered in time); how many. After it, every piece is published.
 */
export function adopt(job: usize): i32 {
  return workPieces(job, 0, true);
}

/**
 * A batch (job.ts, batch mode): appends each item's staging keys and values, rotates its queries and
 * numbers its pieces. Returns the number of pieces in all.
 */
function planItems(items: usize, count: i32): i32 {
  for (let i = 0; i < count; i++) {
    const item = itemAt(items, i);
    const descriptor = <usize>itemWord(item, ITEM_DESCRIPTOR);
    const tokens = itemWord(item, ITEM_TOKENS), first = itemWord(item, ITEM_FIRST_POSITION);
    append(descriptor, itemWord(item, ITEM_LAYER), tokens, first);
    rotateRows(descriptor, address(descriptor, Q), tokens, field(descriptor, HEADS), first);
  }
  return numberPieces(items, count);
}

/**
 * One step (append, then causal attend) of each of the `count` items at `items` (job.ts: item records), on
 * the calling thread, with the scratch at `scratch`: each item's staging out then holds its attention,
 * the same bits as step on the item alone.
 */
export function stepMany(items: usize, count: i32, scratch: usize): void {
  runItems(items, count, planItems(items, count), scratch);
}

/**
 * stepMany across threads: plans the job's batch (its items and itemCount words, written by the facade)
 * and returns the number of pieces; then work on every thread runs them and finish copies each piece's
 * rows from its publisher's results. −1 (and nothing done) when each thread's results area is smaller
 * than the batch's outputs (the job's resultNeeded).
 */
export function planMany(job: usize): i32 {
  const items = <usize>jobWord(job, ITEMS), count = jobWord(job, ITEM_COUNT);
  const needed = placeResults(items, count);
  setJobWord(job, RESULT_NEEDED, <i32>min<usize>(needed, 0x7fffffff));
  if (needed > <usize>jobWord(job, RESULT_BYTES)) return -1;
  const pieces = planItems(items, count);
  setJobWord(job, MODE, BATCH_MODE);
  setJobWord(job, PIECES, pieces);
  return pieces;
}

/** Completes the job once every piece is done: the staging out then holds the attention. */
export function finish(job: usize): void {
  finishJob(job);
}

/**
 * The softmax probabilities of `attend`'s computation (queries not rotated) into `out`:
 * [tokens][heads][keyCount] f32, 0 where masked.
 */
export function weights(
  descriptor: usize, layer: i32, tokens: i32, firstPosition: i32, keyEnd: i32, causal: i32, out: usize, keyCount: i32,
): void {
  attentionWeights(descriptor, layer, address(descriptor, Q), tokens, firstPosition, keyEnd, causal, out, keyCount);
}

/** Diagnostics: e^x in place over `count` floats with the kernel's own exp (tests measure its error). */
export function exp(values: usize, count: i32): void {
  let i = 0;
  if (ASC_FEATURE_SIMD) {
    for (; i + 4 <= count; i += 4) {
      const at = values + (<usize>i << 2);
      v128.store(at, exp4(v128.load(at)));
    }
  }
  for (; i < count; i++) {
    const at = values + (<usize>i << 2);
    store<f32>(at, expScalar(load<f32>(at)));
  }
}
