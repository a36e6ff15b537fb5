// Unknown option keys (API.md, Errors): every options bag of the public API refuses a key it does not know
// with a TypeError naming the key's path and the nearest known key, so a misspelt or unsupported option
// never silently computes something else than what was meant.

import { beforeAll, describe, expect, it } from 'vitest';
import { KVCache, attention, attentionWeights, init } from '../src/index.js';
import { nearestKey } from '../src/option-keys.js';
import { expectRejects, expectThrows, withHeaderFields } from './support/util.js';

const shape = { heads: 2, headDim: 4 };
const q = new Float32Array(8);
const kv = new Float32Array(8);

describe('unknown option keys', () => {
  beforeAll(async () => {
    await init({ threads: 1 });
  });

  it('new KVCache({ …, windw: 4 }) names windw and suggests window', () => {
    expectThrows(() => new KVCache({ ...shape, maxTokens: 8, windw: 4 } as never), TypeError, [
      /options\.windw is not an option/,
      /did you mean options\.window\?/,
    ]);
  });

  it('a key with no near neighbour lists the known ones', () => {
    expectThrows(() => new KVCache({ ...shape, maxTokens: 8, alibiSlopesXYZ: [1, 2] } as never), TypeError, [
      /options\.alibiSlopesXYZ is not an option/,
      /known: layers, heads, kvHeads, headDim, maxTokens/,
    ]);
  });

  it('every bag: cache options, rope, rope.scaling, attention, attentionWeights, save, load, init', async () => {
    const bad: Array<[string, () => unknown, RegExp]> = [
      [
        'rope',
        () => new KVCache({ ...shape, maxTokens: 8, rope: { thetta: 5 } } as never),
        /options\.rope\.thetta.*options\.rope\.theta/,
      ],
      [
        'rope.scaling',
        () => new KVCache({ ...shape, maxTokens: 8, rope: { scaling: { type: 'linear', factr: 2 } } } as never),
        /options\.rope\.scaling\.factr.*options\.rope\.scaling\.factor/,
      ],
      [
        'attention',
        () => attention(q, kv, kv, { ...shape, casual: false } as never),
        /options\.casual.*options\.causal/,
      ],
      [
        'attentionWeights',
        () => attentionWeights(q, kv, kv, { ...shape, Scale: 1 } as never),
        /options\.Scale.*options\.scale/,
      ],
      [
        'save',
        () => {
          const cache = new KVCache({ ...shape, maxTokens: 8 });
          try {
            return cache.save({ form: 0 } as never);
          } finally {
            cache.dispose();
          }
        },
        /options\.form.*options\.from/,
      ],
      [
        'load',
        () => {
          const cache = new KVCache({ ...shape, maxTokens: 8 });
          try {
            return KVCache.load(cache.save(), { bse: cache } as never);
          } finally {
            cache.dispose();
          }
        },
        /options\.bse.*options\.base/,
      ],
    ];
    for (const [, fn, pattern] of bad) expectThrows(fn, TypeError, [pattern]);
    await expectRejects(() => init({ thread: 1 } as never), TypeError, [
      /init options\.thread .*init options\.threads/,
    ]);
  });

  it('KVCache.load refuses saved options with a key this version does not know (a setting it cannot honour)', () => {
    const cache = new KVCache({ ...shape, maxTokens: 8, rope: {} });
    const bytes = withHeaderFields(cache.save(), { options: { rope: { ntkAlpha: 2 } } });
    cache.dispose();
    expectThrows(() => KVCache.load(bytes), Error, [
      /refused/,
      /saved options are invalid/,
      /options\.rope\.ntkAlpha is not an option/,
    ]);
  });

  it('the nearest key: a case slip or up to a third of the name misspelt, nothing farther', () => {
    const known = ['window', 'sinks', 'maxTokens', 'kvHeads'];
    expect(nearestKey('Window', known)).toBe('window');
    expect(nearestKey('max_tokens', known)).toBe('maxTokens');
    expect(nearestKey('kv_heads', known)).toBe('kvHeads');
    expect(nearestKey('sink', known)).toBe('sinks');
    expect(nearestKey('temperature', known)).toBeUndefined();
  });
});
