// Types of config.js, for the TypeScript test that drives the example (test/edge.test.ts).
export declare const LLAMA_3_2_1B: {
  layers: number;
  heads: number;
  kvHeads: number;
  headDim: number;
  maxTokens: number;
  dtype: 'int4';
  rope: {
    theta: number;
    scaling: {
      type: 'llama3';
      factor: number;
      lowFreqFactor: number;
      highFreqFactor: number;
      originalMaxPositions: number;
    };
  };
};
export declare const PAGE: number;
export declare const LOAD_BATCH_BYTES: number;
