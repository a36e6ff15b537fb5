// The example's settings, apart from worker.js because a Worker's main module may export only handlers.

/**
 * The attention of Llama-3.2-1B, int4 K/V: 8,192 tokens take 82.1 MiB (86,115,136 bytes), within an
 * isolate's 128 MB with room for the code and a request. int8 (`"dtype": "int8"`, 17,680 bytes a token)
 * or float32 stay a `CACHE_OPTIONS` away (wrangler.toml); at int8, 2,048 tokens take 34 MiB.
 */
export const LLAMA_3_2_1B = {
  layers: 16,
  heads: 32,
  kvHeads: 8,
  headDim: 64,
  maxTokens: 8192,
  dtype: 'int4',
  // Llama 3.2's own RoPE: base 500,000 with the llama3 scaling of its config.json (cacheOptionsFromConfig
  // reads it from there)
  rope: {
    theta: 500000,
    scaling: { type: 'llama3', factor: 32, lowFreqFactor: 1, highFreqFactor: 4, originalMaxPositions: 8192 },
  },
};

/**
 * Positions per storage row: a page of the default shape is 64 × 10,240 bytes of int4 K/V and their steps
 * (640 KiB; 1.06 MiB at int8), under the 2 MB value limit. (float32 at this shape needs 4 MiB a page: use a
 * smaller shape.)
 */
export const PAGE = 64;

/**
 * Stored rows read per `KVCache.load` on restart: a batch ends once it reaches 2 MiB (four rows, 2.6 MB, at
 * the default), and a restore holds only these beside the cache. Smaller batches lower the peak a little
 * more and cost time (each load forks the cache so far): docs/PERFORMANCE.md, "The Worker's restart".
 */
export const LOAD_BATCH_BYTES = 2 * 2 ** 20;
