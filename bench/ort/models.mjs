// Tiny ONNX models for the onnxruntime peers, built in code with onnx-proto (no files to ship):
// one attention node each, with symbolic sequence lengths so one model serves every L / T.
//
//   gqa   com.microsoft GroupQueryAttention: query [1,S,H·d], key/value [1,S,kvH·d], past_key/past_value
//         [1,kvH,P,d] (BNSH), seqlens_k [1] (total − 1), total_sequence_length [] → output [1,S,H·d]
//         (+ present_key/present_value, declared but not fetched). Always causal, bottom-right aligned.
//   mha   ONNX Attention, opset 23: Q [1,S,H·d], K/V [1,S,kvH·d], past_key/past_value [1,kvH,P,d] →
//         Y [1,S,H·d] (+ present_key/present_value). Its causal mask is aligned top-left, so a decode step
//         over a past cache runs non-causal (one query sees every key, which is the causal answer) and a
//         prefill without past runs with is_causal = 1.
//
// kind 'decode' models take a past cache; kind 'prefill' models take none.
// Node only (onnx-proto is CommonJS): the browser bench fetches the bytes from its local server.

import { createRequire } from 'node:module';

const require = createRequire(import.meta.url);
const { onnx } = require('onnx-proto');

const FLOAT = onnx.TensorProto.DataType.FLOAT;
const INT32 = onnx.TensorProto.DataType.INT32;

/** @param {string} name @param {number} elemType @param {(number|string)[]} dims */
function valueInfo(name, elemType, dims) {
  return onnx.ValueInfoProto.create({
    name,
    type: onnx.TypeProto.create({
      tensorType: onnx.TypeProto.Tensor.create({
        elemType,
        shape: onnx.TensorShapeProto.create({
          dim: dims.map((d) => (typeof d === 'number' ? { dimValue: d } : { dimParam: d })),
        }),
      }),
    }),
  });
}

/** @param {string} name @param {number} i */
const intAttr = (name, i) => onnx.AttributeProto.create({ name, type: onnx.AttributeProto.AttributeType.INT, i });

/**
 * @param {'gqa' | 'mha'} op
 * @param {'decode' | 'prefill'} kind
 * @param {{ heads: number, kvHeads: number, headDim: number }} shape
 * @returns {Uint8Array} the serialized ModelProto
 */
export function buildModel(op, kind, { heads, kvHeads, headDim }) {
  const past = kind === 'decode';
  const H = heads * headDim;
  const KV = kvHeads * headDim;
  const inputs = [
    valueInfo('query', FLOAT, [1, 'S', H]),
    valueInfo('key', FLOAT, [1, 'S', KV]),
    valueInfo('value', FLOAT, [1, 'S', KV]),
  ];
  if (past) {
    inputs.push(
      valueInfo('past_key', FLOAT, [1, kvHeads, 'P', headDim]),
      valueInfo('past_value', FLOAT, [1, kvHeads, 'P', headDim]),
    );
  }
  const outputs = [valueInfo('output', FLOAT, [1, 'S', H])];
  let node;
  if (op === 'gqa') {
    inputs.push(valueInfo('seqlens_k', INT32, [1]), valueInfo('total_sequence_length', INT32, []));
    outputs.push(
      valueInfo('present_key', FLOAT, [1, kvHeads, 'N', headDim]),
      valueInfo('present_value', FLOAT, [1, kvHeads, 'N', headDim]),
    );
    node = onnx.NodeProto.create({
      opType: 'GroupQueryAttention',
      domain: 'com.microsoft',
      input: [
        'query',
        'key',
        'value',
        past ? 'past_key' : '',
        past ? 'past_value' : '',
        'seqlens_k',
        'total_sequence_length',
      ],
      output: ['output', 'present_key', 'present_value'],
      attribute: [intAttr('num_heads', heads), intAttr('kv_num_heads', kvHeads)],
    });
  } else {
    const outNames = ['output'];
    if (past) {
      outputs.push(
        valueInfo('present_key', FLOAT, [1, kvHeads, 'N', headDim]),
        valueInfo('present_value', FLOAT, [1, kvHeads, 'N', headDim]),
      );
      outNames.push('present_key', 'present_value');
    }
    node = onnx.NodeProto.create({
      opType: 'Attention',
      domain: '',
      input: past ? ['query', 'key', 'value', '', 'past_key', 'past_value'] : ['query', 'key', 'value'],
      output: outNames,
      attribute: [intAttr('q_num_heads', heads), intAttr('kv_num_heads', kvHeads), intAttr('is_causal', past ? 0 : 1)],
    });
  }
  const model = onnx.ModelProto.create({
    irVersion: 10,
    producerName: 'wasm-attention-bench',
    opsetImport: [
      onnx.OperatorSetIdProto.create({ domain: '', version: 23 }),
      onnx.OperatorSetIdProto.create({ domain: 'com.microsoft', version: 1 }),
    ],
    graph: onnx.GraphProto.create({ name: `${op}-${kind}`, node: [node], input: inputs, output: outputs }),
  });
  return onnx.ModelProto.encode(model).finish();
}
