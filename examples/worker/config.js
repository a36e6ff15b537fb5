// The example's settings, apart from worker.js because a Worker's main module may export only handlers.

/** The attention of Llama-3.2-1B, int8 K/V: 2,048 tokens take 34 MiB, within an isolate's 128 MB. */
export const LLAMA_3_2_1B = {
  layers: 16,
  heads: 32,
  kvHeads: 8,
  headDim: 64,
  maxTokens: 2048,
  dtype: 'int8',
  // Llama 3.2's own RoPE: base 500,000 with the llama3 scaling of its config.json (cacheOptionsFromConfig
  // reads it from there)
  rope: {
    theta: 500000,
    scaling: { type: 'llama3', factor: 32, lowFreqFactor: 1, highFreqFactor: 4, originalMaxPositions: 8192 },
  },
};

/** Positions per storage row: a page of the default shape is 64 × 17,408 bytes (1.06 MiB), under the 2 MB value limit. */
export const PAGE = 64;
