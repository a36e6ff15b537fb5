// Real families' attention at real distances: PyTorch's float64 computation of each family's RoPE scheme
// (and gpt-oss's learned sinks, BLOOM's ALiBi)
// (test/fixtures/generate.py writes test/fixtures/attention; no Python is needed here) against every build,
// for queries at positions 10,000 and 100,000, far past each scheme's original context. Each case holds
// 16 tokens after `start` zero tokens, in a cache whose window is those 16 (generate.py says why), fed as a
// prefill, as decode steps and in chunks, each from a fork of one filled cache.
//
// Tolerance: the default f32 one for the scores' effective scale, scale × attentionFactor² (tolFor argues
// it). Far positions add nothing to it: the kernel forms each angle in f64 (position × f64 frequency, an
// error near 1e-16 × 1e5 rad) and rounds only cos and sin (× the attention factor) to f32, so a rotated
// element carries a few f32 roundings like any product the argument already counts; PyTorch's frequencies
// and ours follow the same formulas in f64 and agree to about 1e-16 relative. What it exists to catch
// moves outputs by far more: one pair on the wrong side of a ramp, a truncate read the wrong way or a
// missing attention factor changes an angle at position 100,000 by radians (outputs by 0.1 to 1). ALiBi:
// PyTorch adds BLOOM's slope · j (j near 100,000) in float64, the cache slope · (j − i) from an exact
// integer, a few units for the keys that carry weight: a score error of a few u, which the same
// tolerance covers; a flipped sign or a wrong head's slope moves outputs by far more.

import { readFileSync } from 'node:fs';
import { beforeEach, it } from 'vitest';
import { init } from '../src/index.js';
import { referenceRopeAttentionFactor } from './support/reference.js';
import { cachesDisposedAfterEach, expectClose, forEachBuild, ones, tolFor } from './support/util.js';

interface Case {
  name: string;
  family: string;
  start: number;
  tokens: number;
  options: {
    heads: number;
    kvHeads: number;
    headDim: number;
    scale?: number;
    softcap?: number;
    rope?: object;
    alibi?: true;
  };
}

const dir = new URL('./fixtures/attention/', import.meta.url);
const CASES: Case[] = JSON.parse(readFileSync(new URL('cases.json', dir), 'utf8'));

function tensors(c: Case) {
  const bytes = readFileSync(new URL(`${c.name}.bin`, dir));
  const { heads, kvHeads, headDim } = c.options;
  const [qn, kn] = [c.tokens * heads * headDim, c.tokens * kvHeads * headDim];
  const buffer = bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength);
  return {
    q: new Float32Array(buffer, 0, qn),
    k: new Float32Array(buffer, 4 * qn, kn),
    v: new Float32Array(buffer, 4 * (qn + kn), kn),
    out: new Float64Array(buffer, 4 * (qn + 2 * kn), qn),
  };
}

forEachBuild('family fixtures (PyTorch float64)', (build) => {
  beforeEach(async () => {
    await init({ build, threads: 1 });
  });
  const make = cachesDisposedAfterEach();

  for (const c of CASES) {
    it(`${c.family}, positions ${c.start}…${c.start + c.tokens - 1}: prefill, decode steps and chunks`, () => {
      const { q, k, v, out } = tensors(c);
      const { heads, kvHeads, headDim } = c.options;
      const cache = make({ ...c.options, window: c.tokens, maxTokens: c.tokens + 255 });
      const zeros = new Float32Array(4096 * kvHeads * headDim);
      for (let at = 0; at < c.start; at += 4096) {
        const n = Math.min(4096, c.start - at);
        cache.append(0, zeros.subarray(0, n * kvHeads * headDim), zeros.subarray(0, n * kvHeads * headDim));
      }
      const factor = c.options.rope ? referenceRopeAttentionFactor(c.options.rope) : 1;
      const tolerance = tolFor((c.options.scale ?? 1 / Math.sqrt(headDim)) * factor * factor, headDim);
      for (const [label, chunks] of [
        ['prefill', [c.tokens]],
        ['decode steps', ones(c.tokens)],
        ['chunks', [5, 1, c.tokens - 6]],
      ] as const) {
        const fork = cache.fork();
        const got = new Float32Array(q.length);
        let at = 0;
        for (const n of chunks) {
          const [qw, kw] = [heads * headDim, kvHeads * headDim];
          got.set(
            fork.attend(
              0,
              q.subarray(at * qw, (at + n) * qw),
              k.subarray(at * kw, (at + n) * kw),
              v.subarray(at * kw, (at + n) * kw),
            ),
            at * qw,
          );
          at += n;
        }
        fork.dispose();
        expectClose(got, out, tolerance, `${c.name}, ${label}`, [c.tokens, heads, headDim]);
      }
    }, 60_000);
  }
});

// Caches whose layers differ (perLayer): each layer's q/k/v at positions 0 … tokens − 1 against PyTorch's
// float64 attention with that layer's window, rope and sinks, fed per layer as a prefill, as decode steps
// and in chunks. The tolerance is the one argued above, for the layer's scale × attentionFactor².
interface MixedCase {
  name: string;
  family: string;
  tokens: number;
  options: Case['options'] & { layers: number; perLayer: Array<{ rope?: object } | null> };
}
const MIXED: MixedCase[] = JSON.parse(readFileSync(new URL('mixed.json', dir), 'utf8'));

forEachBuild('mixed-layer fixtures (PyTorch float64)', (build) => {
  beforeEach(async () => {
    await init({ build, threads: 1 });
  });
  const make = cachesDisposedAfterEach();

  for (const c of MIXED) {
    it(`${c.family}: every layer, prefill, decode steps and chunks`, () => {
      const { heads, kvHeads, headDim, layers } = c.options;
      const [qn, kn] = [c.tokens * heads * headDim, c.tokens * kvHeads * headDim];
      const bytes = readFileSync(new URL(`${c.name}.bin`, dir));
      const buffer = bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength);
      const layerBytes = 4 * (qn + 2 * kn) + 8 * qn;
      for (const [label, chunks] of [
        ['prefill', [c.tokens]],
        ['decode steps', ones(c.tokens)],
        ['chunks', [5, 1, c.tokens - 6]],
      ] as const) {
        const cache = make(c.options);
        for (let l = 0; l < layers; l++) {
          const at0 = l * layerBytes;
          const q = new Float32Array(buffer, at0, qn);
          const k = new Float32Array(buffer, at0 + 4 * qn, kn);
          const v = new Float32Array(buffer, at0 + 4 * (qn + kn), kn);
          const out = new Float64Array(buffer, at0 + 4 * (qn + 2 * kn), qn);
          const rope = c.options.perLayer[l]?.rope ?? c.options.rope;
          const factor = rope ? referenceRopeAttentionFactor(rope) : 1;
          const tolerance = tolFor((c.options.scale ?? 1 / Math.sqrt(headDim)) * factor * factor, headDim);
          const got = new Float32Array(qn);
          let at = 0;
          for (const n of chunks) {
            const [qw, kw] = [heads * headDim, kvHeads * headDim];
            const part = (x: Float32Array, w: number) => x.subarray(at * w, (at + n) * w);
            got.set(cache.attend(l, part(q, qw), part(k, kw), part(v, kw)), at * qw);
            at += n;
          }
          expectClose(got, out, tolerance, `${c.name}, layer ${l}, ${label}`, [c.tokens, heads, headDim]);
        }
      }
    });
  }
});
