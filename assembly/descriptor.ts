// The cache descriptor: everything a call needs to know about one cache, in linear memory, so a call
// passes one address plus the step's own numbers (layer, tokens, first position). The facade writes it
// (its offsets in src/abi.ts are generated from the consts below); the kernel only reads it. Plain
// i32/f32 words at fixed offsets, so thread workers can read the same descriptor from shared memory.
//
//   word  field
//   0     heads            query heads
//   1     kvHeads
//   2     headDim
//   3     dtype            what pages hold (DTYPE_*): 0 float32 rows; 1 int8 rows, then their f32 scales;
//                          2 bfloat16 rows; 3 int4 rows (two values a byte), then per group of 32 a step
//                          and a least value (bfloat16 each)
//   4     sinks            positions that are never evicted (0 without a window)
//   5     ring             slots of the ring after the sinks (maxTokens; slots of a one-shot call)
//   6     window           0: none
//   7     scale            f32
//   8     softcap          f32, 0: none
//   9     ropeDims         0: no rotary
//   10    ropeInterleaved  1: pairwise (GPT-J), 0: half-split (NeoX/Llama)
//   11    ropeTable        address of the rope table (rope.ts)
//   12    stream           0: none; n > 0: decode-like calls touch their K/V lines ahead of the arithmetic
//                          in spans of n KiB of K and V together (attend/stream.ts)
//   13    q                staging: [tokens][heads][headDim] f32 queries (rotated in place)
//   14    k                staging: [tokens][kvHeads][headDim] f32 new keys (rotated in place)
//   15    v                staging: new values, same shape
//   16    out              staging: [tokens][heads][headDim] f32 output
//   17    scratch          scratchBytes(heads, kvHeads, headDim) bytes
//   18    layers
//   19    sinkLogits       address of heads f32 learned sink logits (0: none): each joins the softmax
//                          denominator of its query head with no value (gpt-oss)
//   20    alibiSlopes      address of heads f32 ALiBi slopes (0: none): query head h's score of the key at
//                          position j from the query at position i gains slope_h · (j − i) (BLOOM)
//   21–23 reserved (0)
//   24    tree             address of a tree of drafts' block (0: none; see below), set for attendTree calls only
//   25    treeBase         position of draft 0: drafts are stored at positions treeBase … treeBase + T − 1
//   26–31 reserved (0)
//   32 + 2·layer      address of the layer's page table
//   33 + 2·layer      capacity: entries per (kv head, K|V) row of that table
//
// A tree block (KVCache.attendTree) describes T draft tokens stored at consecutive positions from treeBase:
//   [0]                 i32 T
//   [4 …)               i32 position of each draft: where it would stand if accepted (treeBase + depth − 1);
//                       its RoPE angle, ALiBi distance and window are taken there
//   then                u32 [T][W] visibility bits, W = ⌈T / 32⌉: bit j of row i (word j >> 5, bit j & 31) is
//                       set when draft i sees draft j (j is i or an ancestor of i, and the window keeps it)
// A draft query sees the keys before treeBase as a query at its position would, and of the drafts only
// those its bits name.
//
// A page table is [kvHead][K = 0, V = 1][capacity] u32 page addresses; entry i holds slots 64·i … 64·i + 63
// (slot of a position: layout.ts). A page is PAGE_ROWS rows of [headDim] f32, or of [headDim] i8 followed
// by PAGE_ROWS f32 scales (int8), or of headDim bfloat16, or of ⌈headDim / 2⌉ bytes of int4 followed by PAGE_ROWS ·
// ⌈headDim / 32⌉ pairs of bfloat16 step and least value (int4, layout.ts). Entries the facade has not filled are 0, and are never read: the facade makes
// every page a call touches exist (and be unshared, for writes) before the call.

export const PAGE_ROWS: i32 = 64;
export const PAGE_SHIFT: i32 = 6;

export const HEADS: i32 = 0;
export const KV_HEADS: i32 = 1;
export const HEAD_DIM: i32 = 2;
export const DTYPE: i32 = 3;
export const SINKS: i32 = 4;
export const RING: i32 = 5;
export const WINDOW: i32 = 6;
export const SCALE: i32 = 7;
export const SOFTCAP: i32 = 8;
export const ROPE_DIMS: i32 = 9;
export const ROPE_INTERLEAVED: i32 = 10;
export const ROPE_TABLE: i32 = 11;
export const STREAM: i32 = 12;
export const Q: i32 = 13;
export const K: i32 = 14;
export const V: i32 = 15;
export const OUT: i32 = 16;
export const SCRATCH: i32 = 17;
export const LAYERS: i32 = 18;
export const SINK_LOGITS: i32 = 19;
export const ALIBI_SLOPES: i32 = 20;
export const TREE: i32 = 24;
export const TREE_BASE: i32 = 25;
export const LAYER_TABLES: i32 = 32;

export const DTYPE_FLOAT32: i32 = 0;
export const DTYPE_INT8: i32 = 1;
export const DTYPE_BFLOAT16: i32 = 2;
export const DTYPE_INT4: i32 = 3;
/** Values of an int4 row that share one step and least value. */
export const INT4_GROUP: i32 = 32;

// @ts-ignore: decorator
@inline export function field(descriptor: usize, word: i32): i32 {
  return load<i32>(descriptor + (<usize>word << 2));
}

// @ts-ignore: decorator
@inline export function fieldF32(descriptor: usize, word: i32): f32 {
  return load<f32>(descriptor + (<usize>word << 2));
}

// @ts-ignore: decorator
@inline export function address(descriptor: usize, word: i32): usize {
  return <usize>load<u32>(descriptor + (<usize>word << 2));
}

/** Address of layer `layer`'s page table. */
// @ts-ignore: decorator
@inline export function pageTable(descriptor: usize, layer: i32): usize {
  return address(descriptor, LAYER_TABLES + 2 * layer);
}

/** Entries per (kv head, K|V) row of layer `layer`'s page table. */
// @ts-ignore: decorator
@inline export function tableCapacity(descriptor: usize, layer: i32): i32 {
  return field(descriptor, LAYER_TABLES + 2 * layer + 1);
}

/** Bytes of one row of `headDim` values of a `dtype` page (its scales apart). */
// @ts-ignore: decorator
@inline export function rowBytesOf(headDim: i32, dtype: i32): usize {
  const d = <usize>headDim;
  return dtype == DTYPE_INT8 ? d : dtype == DTYPE_BFLOAT16 ? d << 1 : dtype == DTYPE_INT4 ? (d + 1) >> 1 : d << 2;
}

/** Scale groups of one int4 row. */
// @ts-ignore: decorator
@inline export function int4Groups(headDim: i32): i32 {
  return (headDim + INT4_GROUP - 1) / INT4_GROUP;
}
