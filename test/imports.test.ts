// The facade's modules import one another without a loop (type-only imports count too: a loop of types is
// still two modules that cannot be read one without the other), and the worker script imports nothing.

import { readFileSync, readdirSync } from 'node:fs';
import { describe, expect, it } from 'vitest';

const SRC = new URL('../src/', import.meta.url);

/** Each src/ module's relative imports and re-exports, by file name (`./x.js` names src/x.ts). */
function importGraph(): Map<string, string[]> {
  const graph = new Map<string, string[]>();
  for (const file of readdirSync(SRC).filter((f) => f.endsWith('.ts') && !f.endsWith('.d.ts'))) {
    const text = readFileSync(new URL(file, SRC), 'utf8');
    const targets = [...text.matchAll(/^\s*(?:import|export)\b[^;]*?\bfrom\s+'\.\/([\w.-]+)\.js'/gms)].map(
      (m) => `${m[1]}.ts`,
    );
    graph.set(file, [...new Set(targets)]);
  }
  return graph;
}

/** A loop of imports as [a, b, …, a], or undefined when there is none (depth-first, in name order). */
function findCycle(graph: Map<string, string[]>): string[] | undefined {
  const state = new Map<string, 'open' | 'done'>();
  const path: string[] = [];
  const visit = (node: string): string[] | undefined => {
    if (state.get(node) === 'done') return undefined;
    if (state.get(node) === 'open') return [...path.slice(path.indexOf(node)), node];
    state.set(node, 'open');
    path.push(node);
    for (const next of graph.get(node) ?? []) {
      const cycle = visit(next);
      if (cycle) return cycle;
    }
    path.pop();
    state.set(node, 'done');
    return undefined;
  };
  for (const node of [...graph.keys()].sort()) {
    const cycle = visit(node);
    if (cycle) return cycle;
  }
  return undefined;
}

describe('src/ imports', () => {
  const graph = importGraph();

  it('reads every module and the imports it has', () => {
    expect(graph.get('cache.ts')).toContain('layer-memory.ts');
    expect(graph.get('layer-memory.ts')).toContain('cache-memory.ts');
    expect(graph.get('threads.ts')).toContain('abi.ts');
    expect(graph.get('index.ts')).toContain('api.ts'); // an `export * from`
    for (const targets of graph.values()) for (const t of targets) expect(graph.has(t), t).toBe(true);
  });

  it('form no loop', () => {
    expect(findCycle(graph)).toBeUndefined();
  });

  it('a loop would be found, however long', () => {
    const looped = new Map(graph);
    looped.set('abi.ts', [...(graph.get('abi.ts') ?? []), 'cache.ts']); // cache → … → abi → cache
    const cycle = findCycle(looped);
    expect(cycle).toBeDefined();
    expect(cycle?.[0]).toBe(cycle?.[cycle.length - 1]);
    expect(cycle).toContain('abi.ts');
    expect(findCycle(new Map([['a.ts', ['a.ts']]]))).toEqual(['a.ts', 'a.ts']);
  });

  it('the worker script imports nothing (a bundler may copy it as a plain asset)', () => {
    const worker = readFileSync(new URL('attention-worker.ts', SRC), 'utf8');
    expect(worker).not.toMatch(/^\s*import\b/m);
    expect(graph.get('attention-worker.ts')).toEqual([]);
  });
});
