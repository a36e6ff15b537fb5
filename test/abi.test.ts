// The word offsets of the kernel's blocks are written once, in assembly/descriptor.ts and assembly/job.ts;
// the facade's copies (the generated blocks of src/abi.ts and src/attention-worker.ts) are generated from
// them by assembly/abi-words.mjs. These tests fail when the two sides disagree: a file not regenerated
// after an offset moved, a generator that would miss a change, or a binary whose answers differ.

import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { BLOCKS, END, begin, constantsOf, generated } from '../assembly/abi-words.mjs';
import { CALL, CALL_WORDS, Descriptor, Job } from '../src/abi.js';
import { INSIDE, MAX_THREADS, OWNERS, STATUS_WORDS } from '../src/attention-worker.js';
import { BUILDS, SUPPORT, wasmBytes } from './support/util.js';

const read = (file: string) => readFileSync(new URL(`../${file}`, import.meta.url), 'utf8');

describe('ABI word offsets', () => {
  it('the generated files are what assembly/ says today (npm run build regenerates them)', () => {
    for (const { file, expected, actual } of generated()) expect(actual, file).toBe(expected);
  });

  it('every exported constant of descriptor.ts and job.ts reaches the facade with its value', () => {
    const [descriptor, job] = BLOCKS.map(({ source }) => Object.fromEntries(constantsOf(read(source), source)));
    expect(Descriptor).toEqual(descriptor);
    expect(Job).toEqual(job);
    expect(Object.keys(Descriptor).length + Object.keys(Job).length).toBeGreaterThan(40);
  });

  it('a moved offset makes the generated files stale, and an unreadable constant is refused', () => {
    const moved = (file: string) =>
      file === 'assembly/job.ts' ? read(file).replace('GENERATION: i32 = 4;', 'GENERATION: i32 = 6;') : read(file);
    const stale = generated(moved).filter(({ expected, actual }) => expected !== actual);
    expect(stale.map((s) => s.file)).toEqual(['src/attention-worker.ts']);
    expect(() => constantsOf('export const HEADS: i32 = 1 + 1;', 'x.ts')).toThrow(/x.ts: cannot read/);
    for (const { source, target } of BLOCKS) expect(read(target)).toContain(`${begin(source)}`);
    expect(() => generated((file) => read(file).replace(END, ''))).toThrow(/markers/);
  });

  it("a call's words are the job's, in the job's order", () => {
    const order = ['DESCRIPTOR', 'LAYER', 'TOKENS', 'FIRST_POSITION', 'KEY_END', 'CAUSAL'] as const;
    order.forEach((name, i) => {
      expect(CALL[name], name).toBe(i);
      expect(Job[name], name).toBe(Job.DESCRIPTOR + i);
    });
    expect(CALL_WORDS).toBe(order.length);
  });

  it('the pool has an owner word and an inside word for every thread number, the calling thread included', () => {
    expect(INSIDE - OWNERS).toBe(MAX_THREADS + 1);
    expect(STATUS_WORDS - INSIDE).toBe(MAX_THREADS + 1);
  });

  it.each(BUILDS.filter((b) => SUPPORT[b].ok))("the %s binary's job block is JOB_BYTES long", async (build) => {
    const { instance } = await WebAssembly.instantiate(await wasmBytes(build), { env: { abort() {} } });
    expect((instance.exports as { jobBytes(): number }).jobBytes()).toBe(Job.JOB_BYTES);
  });
});
