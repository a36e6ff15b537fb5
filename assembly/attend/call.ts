// The call in progress: its geometry, read once from the descriptor by beginCall, and the layout of its
// scratch. Module globals, because one call runs at a time on an instance and nothing here allocates; every
// entry point (../attend.ts, work.ts, weights.ts) starts with beginCall, and the other modules only read
// what it set, through the accessors below.

import { int8ScratchBytes, setInt8Area } from '../int8';
import { int4ScratchBytes, setInt4Area } from '../int4';
import {
  ALIBI_SLOPES, DTYPE, DTYPE_BFLOAT16, DTYPE_INT4, DTYPE_INT8, HEADS, HEAD_DIM, KV_HEADS, PAGE_ROWS, RING, SCALE, SINKS,
  SINK_LOGITS, SOFTCAP, TREE, TREE_BASE, WINDOW, address, field, fieldF32, int4Groups, pageTable, rowBytesOf, tableCapacity,
} from '../descriptor';
import { int4ScalesOf, scalesOf } from '../layout';

/** A canonical block is at most two pages of the cache (float32 and bfloat16 caches; int8 and int4 blocks stay within one page). */
export const BLOCK: i32 = 2 * PAGE_ROWS;
/** The most keys of an int8 or int4 block: the integer kernels' weights per row (int8.ts). */
const INT8_BLOCK: i32 = PAGE_ROWS;
/** Query rows per tile: enough to reuse each key many times, few enough that a tile's state stays in L1/L2. */
const TILE_ROWS: i32 = 16;
/** Positions per chunk: the unit of work a decode step is cut into for threads (a multiple of BLOCK). */
export const CHUNK: i32 = 16 * PAGE_ROWS;

// ------------------------------------------------------------------------------------------ geometry

export let heads: i32 = 1;
export let group: i32 = 1;            // query heads per kv head
export let headDim: i32 = 1;
export let int8: bool = false;
export let bfloat16: bool = false;
export let int4: bool = false;
export let sinks: i32 = 0;
export let ring: i32 = 1;
export let keyEnd: i32 = 0;           // keys exist at positions < keyEnd
export let causal: bool = true;
export let window: i32 = 0;           // 0: no window
export let scale: f32 = 1;
export let softcap: f32 = 0;          // 0: none
export let weightsMode: bool = false; // attentionWeights: collect scores instead of accumulating values
export let sinkLogits: usize = 0;     // per query head f32 learned sink logits (0: none)
export let alibiSlopes: usize = 0;    // per query head f32 ALiBi slopes (0: none)
// a tree of drafts (descriptor.ts): the call's queries are drafts stored from position treeBase
export let treeBase: i32 = 0x7fffffff; // no tree: every key lies below it
export let treePositions: usize = 0;   // 0: no tree; else i32 [T] positions of the drafts
export let treeBits: usize = 0;        // u32 [T][treeWords] visibility bits
export let treeWords: i32 = 0;

export let keyRowBytes: usize = 0;    // bytes of a page's row (descriptor.ts rowBytesOf)
let pages: usize = 0;                 // the layer's page table (descriptor.ts)
let headTableBytes: usize = 0;        // bytes of one (kv head, K|V) row of it
export let keyTable: usize = 0;       // this kv head's key pages
export let valueTable: usize = 0;
export let keyScaleBlock: usize = 0;  // int8, int4: the block in progress's key scales (the walk sets them)
export let valueScaleBlock: usize = 0;

// ------------------------------------------------------------------------------------------- scratch
// For tileRows rows (see scratchBytesFor):
//   acc [row][accStride] f32 · probs [row][BLOCK] f32 · factors [BLOCK] f32 ·
//   int8 and int4 caches: the integer kernels' working area (int8.ts: queries and block weights as int16) ·
//   int4 caches: theirs (int4.ts: queries as int8, the block's group scales as f32) · then per row:
//   running max, running sum (f32); query and output addresses; query position and ALiBi slope; visible set (sinkEnd, first, last);
//   visible lanes of the current block (from, to); the list of rows active in the block; whether the row
//   saw a key in the current chunk; then the state folded over the chunks so far: accumulator
//   [row][accStride], max, sum, and whether any chunk was folded in yet.
export let tileRows: i32 = 1;
export let accStride: usize = 0;      // bytes
export let accBase: usize = 0;
let probBase: usize = 0;
export let factorBase: usize = 0;
let int8Area: usize = 0;
export let rowMax: usize = 0;
export let rowSum: usize = 0;
export let rowQuery: usize = 0;
export let rowOut: usize = 0;         // attend: output row; weights: [keyCount] probability row
export let rowPosition: usize = 0;    // the query's position (ALiBi's i)
export let rowSlope: usize = 0;       // f32: the ALiBi slope of the row's query head
export let rowSinkEnd: usize = 0;
export let rowFirst: usize = 0;
export let rowLast: usize = 0;
export let rowFrom: usize = 0;
export let rowTo: usize = 0;
export let activeRows: usize = 0;
export let activeCount: i32 = 0;      // rows active in the block in progress (the walk lists them)
export let rowSeen: usize = 0;
export let foldAcc: usize = 0;
export let foldMax: usize = 0;
export let foldSum: usize = 0;
export let foldSeen: usize = 0;

// @ts-ignore: decorator
@inline function tileTokensFor(rowsPerToken: i32): i32 {
  return max(1, TILE_ROWS / rowsPerToken);
}

/** Query tokens per tile for this head geometry. */
export function tileTokensOf(queryHeads: i32, kvHeads: i32): i32 {
  return tileTokensFor(queryHeads / kvHeads);
}

/** Bytes of scratch one attend/weights call needs. */
export function scratchBytesFor(queryHeads: i32, kvHeads: i32, dim: i32): usize {
  const perToken = queryHeads / kvHeads;
  const rows = <usize>(tileTokensFor(perToken) * perToken);
  const stride = <usize>((dim + 3) & ~3) << 2;
  return rows * (2 * stride + (<usize>BLOCK << 2) + 4 * 16) + (<usize>BLOCK << 2) + int8ScratchBytes(rows, dim, INT8_BLOCK) +
    int4ScratchBytes(rows, dim) + 80;
}

/**
 * The setup of every entry point: reads the geometry and scoring of `layer` from the descriptor; `end` and
 * `isCausal` are the call's; `scratch`: this thread's scratch (scratchBytesFor bytes).
 */
export function beginCall(descriptor: usize, layer: i32, end: i32, isCausal: i32, scratch: usize): void {
  heads = field(descriptor, HEADS);
  // a worker late from a closed call may read a freed descriptor here before it checks (work.ts): nothing
  // it reads may trap (the divisions, the tree's count below); it then uses none of it
  const kvHeads = field(descriptor, KV_HEADS);
  group = kvHeads > 0 && heads >= kvHeads ? heads / kvHeads : 1;
  headDim = field(descriptor, HEAD_DIM);
  const dim = headDim;
  const dtype = field(descriptor, DTYPE);
  int8 = dtype == DTYPE_INT8;
  bfloat16 = dtype == DTYPE_BFLOAT16;
  int4 = dtype == DTYPE_INT4;
  sinks = field(descriptor, SINKS);
  ring = field(descriptor, RING);
  keyEnd = end;
  causal = isCausal != 0;
  window = field(descriptor, WINDOW);
  scale = fieldF32(descriptor, SCALE);
  softcap = fieldF32(descriptor, SOFTCAP);
  sinkLogits = address(descriptor, SINK_LOGITS);
  alibiSlopes = address(descriptor, ALIBI_SLOPES);
  const tree = address(descriptor, TREE);
  if (tree != 0 && <u64>tree + 4 <= (<u64>memory.size() << 16)) {
    const count = load<i32>(tree);
    treeBase = field(descriptor, TREE_BASE);
    treePositions = tree + 4;
    treeWords = (count + 31) >> 5;
    treeBits = treePositions + (<usize>count << 2);
  } else {
    treeBase = 0x7fffffff;
    treePositions = 0;
    treeBits = 0;
  }
  pages = pageTable(descriptor, layer);
  headTableBytes = <usize>tableCapacity(descriptor, layer) << 2;
  keyRowBytes = rowBytesOf(dim, dtype);
  tileRows = tileTokensFor(group) * group;
  const rows = <usize>tileRows;
  accStride = <usize>((dim + 3) & ~3) << 2;
  accBase = scratch;
  probBase = accBase + rows * accStride;
  factorBase = probBase + (rows * <usize>BLOCK << 2);
  int8Area = factorBase + (<usize>BLOCK << 2);
  setInt8Area(int8Area, tileRows, dim, INT8_BLOCK);
  const int4Area = (int8Area + int8ScratchBytes(rows, dim, INT8_BLOCK) + 15) & ~15;
  setInt4Area(int4Area, tileRows, dim);
  rowMax = int4Area + int4ScratchBytes(rows, dim);
  rowSum = rowMax + (rows << 2);
  rowQuery = rowSum + (rows << 2);
  rowOut = rowQuery + (rows << 2);
  rowPosition = rowOut + (rows << 2);
  rowSlope = rowPosition + (rows << 2);
  rowSinkEnd = rowSlope + (rows << 2);
  rowFirst = rowSinkEnd + (rows << 2);
  rowLast = rowFirst + (rows << 2);
  rowFrom = rowLast + (rows << 2);
  rowTo = rowFrom + (rows << 2);
  activeRows = rowTo + (rows << 2);
  rowSeen = activeRows + (rows << 2);
  foldMax = rowSeen + (rows << 2);
  foldSum = foldMax + (rows << 2);
  foldSeen = foldSum + (rows << 2);
  foldAcc = foldSeen + (rows << 2);
}

/** Whether the call collects attention weights (weights.ts) instead of accumulating values. */
// @ts-ignore: decorator
@inline export function setWeightsMode(on: bool): void {
  weightsMode = on;
}

/** Query tokens per tile. */
// @ts-ignore: decorator
@inline export function tokensPerTile(): i32 {
  return tileRows / group;
}

/** Kv heads of the layer. */
// @ts-ignore: decorator
@inline export function kvHeadCount(): i32 {
  return heads / group;
}

/** Points keyTable and valueTable at kv head g's pages. */
export function selectHead(g: i32): void {
  keyTable = pages + <usize>(2 * g) * headTableBytes;
  valueTable = keyTable + headTableBytes;
}

// @ts-ignore: decorator
@inline export function getI32(base: usize, row: i32): i32 {
  return load<i32>(base + (<usize>row << 2));
}

// @ts-ignore: decorator
@inline export function setI32(base: usize, row: i32, value: i32): void {
  store<i32>(base + (<usize>row << 2), value);
}

// @ts-ignore: decorator
@inline export function accOf(row: i32): usize {
  return accBase + <usize>row * accStride;
}

// @ts-ignore: decorator
@inline export function probsOf(row: i32): usize {
  return probBase + (<usize>(row * BLOCK) << 2);
}

/** The position draft i of the call's tree stands at (its depth's). */
// @ts-ignore: decorator
@inline export function draftPosition(i: i32): i32 {
  return getI32(treePositions, i);
}

/** Whether draft i of the call's tree sees draft j. */
// @ts-ignore: decorator
@inline export function draftSees(i: i32, j: i32): bool {
  return ((load<u32>(treeBits + (<usize>(i * treeWords + (j >> 5)) << 2)) >>> (<u32>j & 31)) & 1) != 0;
}

/** The block in progress: no row active yet. */
// @ts-ignore: decorator
@inline export function clearActiveRows(): void {
  activeCount = 0;
}

/** The block in progress: row r sees keys in it. */
// @ts-ignore: decorator
@inline export function addActiveRow(r: i32): void {
  setI32(activeRows, activeCount++, r);
}

/** The block in progress (int8, int4): its row scales, from lane `row` of the key and value pages. */
// @ts-ignore: decorator
@inline export function setBlockScales(keyPage: usize, valuePage: usize, row: i32): void {
  if (int4) {
    const rowScaleBytes = <usize>int4Groups(headDim) << 2;
    keyScaleBlock = int4ScalesOf(keyPage, headDim) + <usize>row * rowScaleBytes;
    valueScaleBlock = int4ScalesOf(valuePage, headDim) + <usize>row * rowScaleBytes;
  } else {
    keyScaleBlock = scalesOf(keyPage, headDim) + (<usize>row << 2);
    valueScaleBlock = scalesOf(valuePage, headDim) + (<usize>row << 2);
  }
}
