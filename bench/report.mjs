// Turns measured rows into the report: derived numbers (roofline, ratios to each peer), the markdown
// tables, the targets of the issue (met or not) and an SVG chart. No Node APIs (the browser bench uses it).

import { SHAPES, BUILDS, THREADED, flopsOf, bytesOf } from './suite.mjs';

/** @typedef {import('./suite.mjs').Row} Row */
/**
 * @typedef {{ bandwidth: Record<string, number>, peakMulAdd: number, peakMadd: number | null, notes?: string[] }} Limits
 * @typedef {{ title: string, machine: string[], limits: Limits | null, rows: Row[],
 *   allocations?: Record<string, any>, wasmSizes?: Record<string, number>, initMs?: Record<string, number>,
 *   notes?: string[], decode: number[], prefill: number[], shapes: string[], dtypes: string[] }} ReportInput
 */

export const PEERS = [
  ['plain', 'plain JS'],
  ['ort-web-gqa-1t', 'ort-web GQA 1t'],
  ['ort-web-mha-1t', 'ort-web Attention 1t'],
  ['ort-web-gqa-2t', 'ort-web GQA 2t'],
  ['ort-web-mha-2t', 'ort-web Attention 2t'],
  ['ort-web-gqa-auto', 'ort-web GQA auto'],
  ['ort-web-mha-auto', 'ort-web Attention auto'],
  ['ort-node-gqa-1t', 'ort-node GQA 1t'],
  ['ort-node-mha-1t', 'ort-node Attention 1t'],
];
const PEER_NAME = Object.fromEntries(PEERS);
export const implName = (/** @type {string} */ i) => PEER_NAME[i] ?? `wasm ${i}`;

/** peak GFLOP/s a build is held to: relaxed_madd for relaxed-simd (where measured), mul+add otherwise */
export function peakFor(/** @type {Limits} */ lim, /** @type {string} */ impl) {
  return impl === 'relaxed-simd' && lim.peakMadd ? lim.peakMadd : lim.peakMulAdd;
}

/**
 * Adds to each row: bytes, roofMs (max of bytes / bandwidth and flops / peak), roofline (roofMs / median),
 * peakFraction (GFLOP/s / peak), and for wasm rows `vs[peer]` = peer median / our median (the float32 peer
 * row of the same shape, kind and n: > 1 means wasm-attention is faster).
 * @param {Row[]} rows @param {Limits | null} lim
 */
export function derive(rows, lim) {
  for (const r of /** @type {any[]} */ (rows)) {
    const s = SHAPES[/** @type {keyof typeof SHAPES} */ (r.shape)];
    r.bytes = bytesOf(s, r.kind, r.n, r.dtype);
    r.flops = flopsOf(s, r.kind, r.n);
    if (lim) {
      const bw = lim.bandwidth[r.bytes];
      const peak = peakFor(lim, r.impl);
      r.roofMs = Math.max(bw ? r.bytes / bw / 1e6 : 0, r.flops / peak / 1e6);
      r.roofline = r.roofMs / r.medianMs;
      r.peakFraction = r.gflops / peak;
    }
    if (BUILDS.some((b) => r.impl === b || r.impl.startsWith(`${b}-`))) {
      r.vs = {};
      for (const [p] of PEERS) {
        const o = rows.find(
          (x) => x.impl === p && x.shape === r.shape && x.kind === r.kind && x.n === r.n && x.dtype === 'float32',
        );
        if (o) r.vs[p] = o.medianMs / r.medianMs;
      }
    }
  }
  return rows;
}

const ms = (/** @type {number} */ x) =>
  !Number.isFinite(x)
    ? String(x)
    : x >= 100
      ? x.toFixed(0)
      : x >= 10
        ? x.toFixed(1)
        : x >= 1
          ? x.toFixed(2)
          : x.toPrecision(3);
const xf = (/** @type {number} */ x) =>
  !Number.isFinite(x) ? '–' : x >= 100 ? x.toFixed(0) : x >= 10 ? x.toFixed(1) : x.toFixed(2);
const pct = (/** @type {number} */ x) => (Number.isFinite(x) ? `${(100 * x).toFixed(0)}%` : '–');
const bytesStr = (/** @type {number} */ b) =>
  b >= 1 << 20 ? `${(b / (1 << 20)).toFixed(1)} MiB` : `${(b / 1024).toFixed(0)} KiB`;

/**
 * The targets of the issue, each measured, for the SIMD builds that ran.
 * @param {ReportInput} input @returns {{ target: string, build: string, measured: string, met: boolean | null }[]}
 */
export function targets(input) {
  const rows = /** @type {any[]} */ (input.rows);
  const out = [];
  const lim = input.limits;
  const builds = BUILDS.filter((b) => rows.some((r) => r.impl === b));
  const worst = (/** @type {any[]} */ rs, /** @type {(r: any) => number} */ f) => {
    let w = null;
    for (const r of rs) {
      const v = f(r);
      if (Number.isFinite(v) && (w === null || v < w.v)) w = { v, r };
    }
    return w;
  };
  const where = (/** @type {any} */ r) =>
    `${SHAPES[/** @type {keyof typeof SHAPES} */ (r.shape)].label} ${r.kind} ${r.kind === 'decode' ? 'L' : 'T'}=${r.n}${r.dtype === 'float32' ? '' : ` ${r.dtype}`}`;
  for (const b of builds) {
    const ours = rows.filter((r) => r.impl === b);
    const f32 = ours.filter((r) => r.dtype === 'float32');
    /** @param {string} target @param {any[]} rs @param {(r: any) => number} f @param {number} goal @param {(v: number) => string} fmt */
    const add = (target, rs, f, goal, fmt) => {
      const w = worst(rs, f);
      out.push({
        target,
        build: b,
        measured: w ? `worst ${fmt(w.v)} (${where(w.r)})` : 'not measured',
        met: w ? w.v >= goal : null,
      });
    };
    if (lim) {
      for (const [target, kind, least, value, goal] of /** @type {const} */ ([
        ['decode float32, L ≥ 2048: ≥ 85% of roofline', 'decode', 2048, 'roofline', 0.85],
        ['prefill T ≥ 512: ≥ 60% of measured SIMD peak', 'prefill', 512, 'peakFraction', 0.6],
      ])) {
        add(
          target,
          f32.filter((r) => r.kind === kind && r.n >= least),
          (r) => r[value],
          goal,
          pct,
        );
      }
    }
    const best = (/** @type {any} */ r, /** @type {string[]} */ ps) =>
      Math.min(...ps.map((p) => r.vs?.[p] ?? Infinity));
    for (const kind of ['decode', 'prefill']) {
      const goal = kind === 'decode' ? 4 : 2.5;
      add(
        `${kind}: ≥ ${goal}× onnxruntime-web's faster op, 1 thread`,
        f32.filter((r) => r.kind === kind && (r.vs?.['ort-web-gqa-1t'] || r.vs?.['ort-web-mha-1t'])),
        (r) => best(r, ['ort-web-gqa-1t', 'ort-web-mha-1t']),
        goal,
        (v) => `${xf(v)}×`,
      );
    }
    add(
      'decode: faster than onnxruntime-node (native CPU), 1 thread',
      f32.filter((r) => r.kind === 'decode' && (r.vs?.['ort-node-gqa-1t'] || r.vs?.['ort-node-mha-1t'])),
      (r) => best(r, ['ort-node-gqa-1t', 'ort-node-mha-1t']),
      1,
      (v) => `${xf(v)}×`,
    );
    {
      const ratios = [];
      for (const sh of input.shapes) {
        const a = ours.find((r) => r.kind === 'decode' && r.n === 8192 && r.shape === sh && r.dtype === 'float32');
        const c = ours.find((r) => r.kind === 'decode' && r.n === 8192 && r.shape === sh && r.dtype === 'int8');
        if (a && c) ratios.push({ v: a.medianMs / c.medianMs, r: c });
      }
      const w = ratios.sort((x, y) => x.v - y.v)[0];
      out.push({
        target: 'int8 decode ≥ 2.5× float32 decode at L = 8192',
        build: b,
        measured: w
          ? `worst ${xf(w.v)}× (${ratios.map((x) => `${SHAPES[/** @type {keyof typeof SHAPES} */ (x.r.shape)].label} ${xf(x.v)}×`).join(', ')})`
          : 'not measured',
        met: w ? w.v >= 2.5 : null,
      });
    }
    add(
      '≥ 10× plain JS everywhere',
      ours.filter((r) => r.vs?.plain),
      (r) => r.vs.plain,
      10,
      (v) => `${xf(v)}×`,
    );
    out.push(...allocationTargets(input, b));
    if (input.wasmSizes?.[b] !== undefined) {
      out.push({
        target: '.wasm ≤ 64 KB',
        build: b,
        measured: `${input.wasmSizes[b]} bytes`,
        met: input.wasmSizes[b] <= 64 * 1024,
      });
    }
    if (input.initMs?.[b] !== undefined) {
      out.push({
        target: 'init() ≤ 20 ms in Node',
        build: b,
        measured: `${input.initMs[b].toFixed(1)} ms`,
        met: input.initMs[b] <= 20,
      });
    }
  }
  for (const impl of Object.keys(input.allocations ?? {}))
    if (!BUILDS.includes(impl)) out.push(...allocationTargets(input, impl));
  out.push(...threadTargets(input));
  return out;
}

/**
 * JS-heap bytes per decode step of `impl` (bench/suite.mjs allocationsPerStep), inside a page and where a
 * step takes a page, each against zero. @param {ReportInput} input @param {string} impl
 */
function allocationTargets(input, impl) {
  const a = input.allocations?.[impl];
  if (!a?.inPage) return [];
  const f = (/** @type {any} */ x) => (typeof x === 'number' ? `${x.toFixed(1)} B/step` : 'n/a (a GC ran)');
  const threads = a.threads > 1 ? ` (${a.threads} threads)` : '';
  return [
    [`inPage`, `zero JS-heap allocations per decode step after warm-up, inside a page (L = ${a.places.inPage})`],
    [`pageTaking`, `… a step that takes a page (L = ${a.places.pageTaking}; one step in 64 per layer)`],
  ].map(([place, target]) => {
    const vals = input.dtypes.map((d) => a[place][d]);
    return {
      target,
      build: `${impl}${threads}`,
      measured: `${input.dtypes.map((d) => `${d} ${f(a[place][d])}`).join(', ')}${place === 'inPage' ? ` (control: 1 view/step ${f(a.control)}; empty loop ${f(a.empty)})` : ''}`,
      met: vals.every((x) => typeof x === 'number') ? Math.max(...vals) < 1 : null,
    };
  });
}

/**
 * The issue's thread targets, float32: 2 threads against 1 (decode L = 8192 ≥ 1.7×, prefill T = 512 ≥
 * 1.8×), and at 2 threads ≥ 3× onnxruntime-web at 2 threads (its faster op; decode L ≥ 2048, prefill T =
 * 512) and prefill faster than onnxruntime-node on 1 thread. @param {ReportInput} input
 */
function threadTargets(input) {
  const rows = /** @type {any[]} */ (input.rows);
  const [one, two] = [THREAD_COUNTS[0][1], THREAD_COUNTS[1][1]];
  if (!rows.some((r) => r.impl === two)) return [];
  /** @type {ReturnType<typeof targets>} */
  const out = [];
  const where = (/** @type {any} */ r) =>
    `${SHAPES[/** @type {keyof typeof SHAPES} */ (r.shape)].label} ${r.kind} ${r.kind === 'decode' ? 'L' : 'T'}=${r.n}`;
  /** @param {string} target @param {any[]} cases [ratio, row] @param {number} goal */
  const add = (target, cases, goal) => {
    const found = cases.filter(([v]) => Number.isFinite(v));
    const worst = found.sort((x, y) => x[0] - y[0])[0];
    out.push({
      target,
      build: two,
      measured: worst
        ? `worst ${xf(worst[0])}× (${found.map(([v, r]) => `${where(r)} ${xf(v)}×`).join(', ')})`
        : 'not measured',
      met: worst ? worst[0] >= goal : null,
    });
  };
  const twos = rows.filter((r) => r.impl === two && r.dtype === 'float32');
  const overOne = (/** @type {any} */ r) => [
    (rowOf(rows, one, [r.shape, r.kind, r.n])?.medianMs ?? NaN) / r.medianMs,
    r,
  ];
  add(
    '2 threads ≥ 1.7× 1 thread: decode L = 8192',
    twos.filter((r) => r.kind === 'decode' && r.n === 8192).map(overOne),
    1.7,
  );
  add(
    '2 threads ≥ 1.8× 1 thread: prefill T = 512',
    twos.filter((r) => r.kind === 'prefill' && r.n === 512).map(overOne),
    1.8,
  );
  const best = (/** @type {any} */ r, /** @type {readonly string[]} */ ps) => [
    Math.min(...ps.map((p) => r.vs?.[p] ?? Infinity)),
    r,
  ];
  add(
    "at 2 threads ≥ 3× onnxruntime-web's faster op at 2 threads: decode L ≥ 2048, prefill T = 512",
    twos.filter((r) => (r.kind === 'decode' ? r.n >= 2048 : r.n === 512)).map((r) => best(r, THREAD_COUNTS[1][2])),
    3,
  );
  add(
    "at 2 threads: prefill faster than onnxruntime-node's faster op, 1 thread",
    twos.filter((r) => r.kind === 'prefill').map((r) => best(r, ['ort-node-gqa-1t', 'ort-node-mha-1t'])),
    1,
  );
  return out;
}

/** @param {ReportInput} input @returns {string} markdown */
export function markdown(input) {
  const rows = /** @type {any[]} */ (input.rows);
  const lim = input.limits;
  const L = [];
  L.push(`## ${input.title}`, '');
  for (const m of input.machine) L.push(`- ${m}`);
  L.push('');
  if (lim) {
    L.push(
      `### Machine limits (measured by the bench, WebAssembly SIMD, one thread; best of repetitions, at the start and the end of the run)`,
      '',
    );
    L.push(
      `Peak f32x4 throughput (12 independent chains): mul+add **${lim.peakMulAdd.toFixed(1)} GFLOP/s**` +
        (lim.peakMadd
          ? `, relaxed_madd **${lim.peakMadd.toFixed(1)} GFLOP/s**`
          : ', relaxed_madd not measured (no relaxed SIMD)') +
        '.',
    );
    L.push("Streaming f32x4 read bandwidth over a buffer the size of each workload's K/V:", '');
    const sizes = Object.keys(lim.bandwidth)
      .map(Number)
      .sort((a, b) => a - b);
    L.push(`| bytes | ${sizes.map(bytesStr).join(' | ')} |`, `| --- | ${sizes.map(() => '---:').join(' | ')} |`);
    L.push(`| GB/s | ${sizes.map((s) => lim.bandwidth[s].toFixed(1)).join(' | ')} |`, '');
  }

  const peers = PEERS.filter(([p]) => rows.some((r) => r.impl === p));
  L.push('### wasm-attention', '');
  L.push(
    'Median time of one call; GFLOP/s at 4·headDim flops per (query, visible key) pair per head; K/V GB/s = cached K/V bytes read per second (decode);',
  );
  L.push(
    'roofline = max(bytes / measured bandwidth at that size, flops / measured peak) ÷ time (peak: relaxed_madd for the relaxed-simd build, mul+add otherwise);',
  );
  L.push("× peer = the peer's median (float32) ÷ ours: above 1 we are faster.", '');
  L.push(
    `| shape | case | dtype | build | ms | GFLOP/s | K/V GB/s | roofline | ${peers.map(([, n]) => `× ${n}`).join(' | ')} |`,
  );
  L.push(`| --- | --- | --- | --- | ---: | ---: | ---: | ---: | ${peers.map(() => '---:').join(' | ')} |`);
  const cases = [];
  for (const sh of input.shapes) {
    for (const n of input.decode) cases.push([sh, 'decode', n]);
    for (const n of input.prefill) cases.push([sh, 'prefill', n]);
  }
  for (const [sh, kind, n] of cases) {
    for (const dtype of input.dtypes) {
      for (const b of BUILDS) {
        const r = rows.find((x) => x.impl === b && x.shape === sh && x.kind === kind && x.n === n && x.dtype === dtype);
        if (!r) continue;
        const s = SHAPES[/** @type {keyof typeof SHAPES} */ (sh)];
        L.push(
          `| ${s.label} (${s.heads}/${s.kvHeads}/${s.headDim}) | ${kind} ${kind === 'decode' ? 'L' : 'T'}=${n} | ${dtype} | ${b} | ${ms(r.medianMs)} | ${r.gflops.toFixed(1)} | ${r.gbps ? r.gbps.toFixed(1) : ''} | ${pct(r.roofline)} | ${peers.map(([p]) => (r.vs?.[p] ? `${xf(r.vs[p])}×` : '–')).join(' | ')} |`,
        );
      }
    }
  }
  L.push('');
  if (peers.length) {
    L.push('### Peers (float32)', '');
    L.push(
      "Each cell: median ms · GFLOP/s. max |Δ| = largest absolute difference of each ORT output from wasm-attention's on the same inputs (worst over the row's ORT cells).",
      '',
    );
    L.push(`| shape | case | ${peers.map(([, n]) => n).join(' | ')} | ORT max abs diff |`);
    L.push(`| --- | --- | ${peers.map(() => '---:').join(' | ')} | ---: |`);
    for (const [sh, kind, n] of cases) {
      const s = SHAPES[/** @type {keyof typeof SHAPES} */ (sh)];
      const cells = peers.map(([p]) => {
        const r = rows.find((x) => x.impl === p && x.shape === sh && x.kind === kind && x.n === n);
        return r ? `${ms(r.medianMs)} · ${r.gflops.toFixed(1)}` : '–';
      });
      const diffs = rows
        .filter((x) => x.maxAbsDiff !== undefined && x.shape === sh && x.kind === kind && x.n === n)
        .map((x) => x.maxAbsDiff);
      L.push(
        `| ${s.label} | ${kind} ${kind === 'decode' ? 'L' : 'T'}=${n} | ${cells.join(' | ')} | ${diffs.length ? Math.max(...diffs).toExponential(1) : '–'} |`,
      );
    }
    L.push('');
  }
  if (hasThreadRows(rows)) L.push(...threadsTable(input));
  const t = targets(input);
  if (t.length) {
    L.push('### Targets', '');
    L.push('| target | build | measured | met |', '| --- | --- | --- | --- |');
    for (const x of t)
      L.push(`| ${x.target} | ${x.build} | ${x.measured} | ${x.met === null ? '–' : x.met ? 'yes' : '**no**'} |`);
    L.push('');
  }
  if (input.notes?.length) {
    for (const n of input.notes) L.push(`- ${n}`);
    L.push('');
  }
  return L.join('\n');
}

/**
 * The Threads section: per case (float32), our threaded build and onnxruntime-web's faster op at 1, 2 and
 * 'auto' threads ('auto' with the count it got), our speed-up over one thread, and ours over ort-web at the
 * same setting. @param {ReportInput} input @returns {string[]}
 */
function threadsTable(input) {
  const rows = /** @type {any[]} */ (input.rows);
  const L = ['### Threads', ''];
  L.push(
    `Median ms of ${THREAD_COUNTS[0][1]} and of onnxruntime-web's faster op (float32) on 1, 2 and 'auto' threads ('auto': the count in brackets is what it got; onnxruntime-web picks half the cores, at most 4); × 1t = our one-thread time ÷ ours at that setting; × ort-web = its time ÷ ours at the same setting.`,
    '',
  );
  const heads = THREAD_COUNTS.map(([name]) => name);
  L.push(
    `| shape | case | ${heads.map((h) => `ours ${h}`).join(' | ')} | ${heads.map((h) => `ort-web ${h}`).join(' | ')} | ${heads
      .slice(1)
      .map((h) => `ours × 1t, ${h}`)
      .join(' | ')} | ${heads.map((h) => `× ort-web, ${h}`).join(' | ')} |`,
  );
  L.push(`| --- | --- | ${Array.from({ length: 4 * heads.length - 1 }, () => '---:').join(' | ')} |`);
  const got = (/** @type {any} */ r, /** @type {number} */ i) =>
    r ? `${ms(r.medianMs)}${i === 2 ? ` (${r.threads}t)` : ''}` : '–';
  for (const sh of input.shapes) {
    for (const [kind, ns] of /** @type {const} */ ([
      ['decode', input.decode],
      ['prefill', input.prefill],
    ])) {
      for (const n of ns) {
        const c = [sh, kind, n];
        const ours = THREAD_COUNTS.map(([, impl]) => rowOf(rows, impl, c));
        const ort = THREAD_COUNTS.map(
          ([, , ops]) =>
            ops
              .map((op) => rowOf(rows, op, c))
              .filter(Boolean)
              .sort((a, b) => a.medianMs - b.medianMs)[0],
        );
        if (!ours.some(Boolean) && !ort.some(Boolean)) continue;
        const ratio = (/** @type {any} */ a, /** @type {any} */ b) =>
          a && b ? `${xf(a.medianMs / b.medianMs)}×` : '–';
        L.push(
          `| ${SHAPES[/** @type {keyof typeof SHAPES} */ (sh)].label} | ${kind} ${kind === 'decode' ? 'L' : 'T'}=${n} | ${ours.map(got).join(' | ')} | ${ort.map(got).join(' | ')} | ${ours
            .slice(1)
            .map((r) => ratio(ours[0], r))
            .join(' | ')} | ${ours.map((r, i) => ratio(ort[i], r)).join(' | ')} |`,
        );
      }
    }
  }
  L.push('');
  return L;
}

// ---------------------------------------------------------------------------------------------
// SVG charts: median time per call (log scale) against context length (log) or threads (linear), one
// panel per (kind, shape), a legend under the panels

const COLORS = {
  'relaxed-simd': '#d62728',
  'relaxed-simd-2t': '#8b0000',
  'relaxed-simd-auto': '#ff6f61',
  simd: '#ff7f0e',
  scalar: '#bcbd22',
  plain: '#7f7f7f',
  'ort-web-gqa-1t': '#1f77b4',
  'ort-web-mha-1t': '#17becf',
  'ort-web-gqa-2t': '#9467bd',
  'ort-web-mha-2t': '#e377c2',
  'ort-web-gqa-auto': '#6baed6',
  'ort-web-mha-auto': '#f7b6d2',
  'ort-node-gqa-1t': '#2ca02c',
  'ort-node-mha-1t': '#8c564b',
  roofline: '#000000',
};
const colorOf = (/** @type {string} */ impl) => COLORS[/** @type {keyof typeof COLORS} */ (impl)] ?? '#000';
const esc = (/** @type {string} */ s) => s.replace(/&/g, '&amp;').replace(/</g, '&lt;');

/**
 * @typedef {{ color: string, width: number, dash: string, label: string }} LineStyle
 * @typedef {LineStyle & { pts: [number, number, string?][] }} Series points (x, ms, and a label for a point
 *   drawn apart: an open circle, off the line)
 * @typedef {{ title: string, xLabel: string, xs: number[], xLog: boolean, series: Series[] }} Panel
 */

/** An SVG of `panels`, two a row, under `title`, with a legend of `legend` under them. */
function svgPanels(/** @type {string} */ title, /** @type {Panel[]} */ panels, /** @type {LineStyle[]} */ legend) {
  const PW = 520,
    PH = 330,
    M = { l: 64, r: 16, t: 34, b: 44 };
  const W = 2 * PW;
  const dashAttr = (/** @type {string} */ dash) => (dash ? ` stroke-dasharray="${dash}"` : '');
  /** @type {string[]} */
  const out = [];
  panels.forEach((panel, pi) => {
    const ox = (pi % 2) * PW,
      oy = 26 + Math.floor(pi / 2) * PH;
    const xs = panel.xs;
    const ys = panel.series.flatMap((l) => l.pts.map((p) => p[1])).filter((y) => y > 0);
    if (!xs.length || !ys.length) return;
    const fx = panel.xLog ? Math.log10 : (/** @type {number} */ x) => x;
    const x0 = fx(Math.min(...xs)),
      x1 = fx(Math.max(...xs)) + (xs.length === 1 ? 1 : 0);
    const y0 = Math.floor(Math.log10(Math.min(...ys))),
      y1 = Math.ceil(Math.log10(Math.max(...ys)));
    const px = (/** @type {number} */ x) => ox + M.l + ((fx(x) - x0) / (x1 - x0 || 1)) * (PW - M.l - M.r);
    const py = (/** @type {number} */ t) => oy + PH - M.b - ((Math.log10(t) - y0) / (y1 - y0 || 1)) * (PH - M.t - M.b);
    out.push(
      `<text x="${ox + PW / 2}" y="${oy + 20}" text-anchor="middle" font-size="12" font-weight="bold">${esc(panel.title)}</text>`,
    );
    out.push(
      `<rect x="${ox + M.l}" y="${oy + M.t}" width="${PW - M.l - M.r}" height="${PH - M.t - M.b}" fill="none" stroke="#999"/>`,
    );
    for (let e = y0; e <= y1; e++) {
      const y = py(10 ** e);
      out.push(`<line x1="${ox + M.l}" x2="${ox + PW - M.r}" y1="${y}" y2="${y}" stroke="#eee"/>`);
      out.push(
        `<text x="${ox + M.l - 4}" y="${y + 4}" text-anchor="end">${10 ** e >= 1 ? 10 ** e : (10 ** e).toPrecision(1)} ms</text>`,
      );
    }
    for (const n of xs) {
      const x = px(n);
      out.push(`<line x1="${x}" x2="${x}" y1="${oy + M.t}" y2="${oy + PH - M.b}" stroke="#eee"/>`);
      out.push(`<text x="${x}" y="${oy + PH - M.b + 14}" text-anchor="middle">${n}</text>`);
    }
    out.push(`<text x="${ox + PW / 2}" y="${oy + PH - 8}" text-anchor="middle">${esc(panel.xLabel)}</text>`);
    for (const line of panel.series) {
      const pts = line.pts.filter((p) => !p[2]).sort((a, b) => a[0] - b[0]);
      const d = pts.map(([n, t], i) => `${i ? 'L' : 'M'}${px(n).toFixed(1)},${py(t).toFixed(1)}`).join(' ');
      out.push(
        `<path d="${d}" fill="none" stroke="${line.color}" stroke-width="${line.width}"${dashAttr(line.dash)}/>`,
      );
      for (const [n, t] of pts)
        out.push(`<circle cx="${px(n).toFixed(1)}" cy="${py(t).toFixed(1)}" r="2.2" fill="${line.color}"/>`);
      for (const [n, t, label] of line.pts.filter((p) => p[2])) {
        const x = px(n),
          y = py(t);
        const left = x > ox + PW / 2; // the label inside the panel
        out.push(
          `<circle cx="${x.toFixed(1)}" cy="${y.toFixed(1)}" r="3.5" fill="white" stroke="${line.color}" stroke-width="1.5"/>`,
        );
        out.push(
          `<text x="${(left ? x - 6 : x + 6).toFixed(1)}" y="${(y - 5).toFixed(1)}" text-anchor="${left ? 'end' : 'start'}" fill="${line.color}">${esc(/** @type {string} */ (label))}</text>`,
        );
      }
    }
  });
  const ly = 26 + Math.ceil(panels.length / 2) * PH + 12;
  legend.forEach((line, i) => {
    const x = 20 + (i % 4) * 260,
      y = ly + Math.floor(i / 4) * 18;
    out.push(
      `<line x1="${x}" x2="${x + 26}" y1="${y}" y2="${y}" stroke="${line.color}" stroke-width="2"${dashAttr(line.dash)}/>`,
    );
    out.push(`<text x="${x + 32}" y="${y + 4}">${esc(line.label)}</text>`);
  });
  const H = ly + Math.ceil(legend.length / 4) * 18 + 10;
  out.unshift(
    `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" font-family="sans-serif" font-size="11">`,
    `<rect width="${W}" height="${H}" fill="white"/>`,
    `<text x="${W / 2}" y="18" text-anchor="middle" font-size="14">${esc(title)}</text>`,
  );
  out.push('</svg>');
  return out.join('\n');
}

/** Dash pattern of a dtype's lines (float32 solid). */
const DASHES = { int8: '6,3', bfloat16: '2,2', int4: '8,2,2,2' };

/** How one implementation's line looks: ours thicker, other dtypes dashed, the roofline dotted. */
function lineStyle(/** @type {string} */ impl, /** @type {string} */ dtype) {
  return {
    color: colorOf(impl),
    width: BUILDS.includes(impl) ? 2.2 : 1.5,
    dash: impl === 'roofline' ? '2,3' : (DASHES[/** @type {keyof typeof DASHES} */ (dtype)] ?? ''),
    label:
      impl === 'roofline'
        ? 'roofline (float32, measured bandwidth / peak)'
        : `${implName(impl)}${dtype === 'float32' ? '' : ` ${dtype}`}`,
  };
}

/** Legend order: our builds, the peers as PEERS lists them, the roofline; then dtype. */
function legendOrder(/** @type {string} */ a, /** @type {string} */ b) {
  const order = [...BUILDS, ...THREADED, ...PEERS.map(([p]) => p), 'roofline'];
  const [ia, da] = a.split('|'),
    [ib, db] = b.split('|');
  return order.indexOf(ia) - order.indexOf(ib) || da.localeCompare(db);
}

/** Time against context length (log-log), every implementation and dtype. @param {ReportInput} input @returns {string} */
export function svgChart(input) {
  const rows = /** @type {any[]} */ (input.rows);
  /** @type {Panel[]} */
  const panels = [];
  const keys = new Set();
  for (const kind of ['decode', 'prefill']) {
    for (const sh of input.shapes) {
      const ns = kind === 'decode' ? input.decode : input.prefill;
      const sel = rows.filter((r) => r.kind === kind && r.shape === sh);
      /** @type {Map<string, [number, number][]>} */
      const lines = new Map();
      for (const r of sel) {
        const key = `${r.impl}|${r.dtype}`;
        if (!lines.has(key)) lines.set(key, []);
        /** @type {[number, number][]} */ (lines.get(key)).push([r.n, r.medianMs]);
      }
      // roofline of float32 (bandwidth / peak bound) as a dotted black line
      if (input.limits && BUILDS.some((b) => sel.some((r) => r.impl === b))) {
        const pts = [];
        for (const n of ns) {
          const r =
            sel.find((x) => x.n === n && x.dtype === 'float32' && x.roofMs && x.impl === 'simd') ??
            sel.find((x) => x.n === n && x.dtype === 'float32' && x.roofMs);
          if (r) pts.push(/** @type {[number, number]} */ ([n, r.roofMs]));
        }
        if (pts.length) lines.set('roofline|float32', pts);
      }
      for (const key of lines.keys()) keys.add(key);
      const s = SHAPES[/** @type {keyof typeof SHAPES} */ (sh)];
      panels.push({
        title: `${kind} · ${s.label} (${s.heads}/${s.kvHeads}/${s.headDim})`,
        xLabel: kind === 'decode' ? 'L (cached tokens)' : 'T (prompt tokens)',
        xs: ns,
        xLog: true,
        series: [...lines].map(([key, pts]) => ({ ...lineStyle(...splitKey(key)), pts })),
      });
    }
  }
  const legend = [...keys].sort(legendOrder).map((key) => lineStyle(...splitKey(key)));
  return svgPanels(`${input.title}: median time per call vs context length (log-log)`, panels, legend);
}

const splitKey = (/** @type {string} */ key) => /** @type {[string, string]} */ (key.split('|'));

/**
 * Our threaded build and onnxruntime-web's two ops at each thread count: per count (1, 2, 'auto'), the
 * implementation names of ours and of the ort-web ops.
 */
const THREAD_COUNTS = /** @type {const} */ ([
  ['1 thread', 'relaxed-simd', ['ort-web-gqa-1t', 'ort-web-mha-1t']],
  ['2 threads', 'relaxed-simd-2t', ['ort-web-gqa-2t', 'ort-web-mha-2t']],
  ["'auto'", 'relaxed-simd-auto', ['ort-web-gqa-auto', 'ort-web-mha-auto']],
]);

/** Whether the run measured any implementation on more than one thread. @param {any[]} rows */
function hasThreadRows(rows) {
  const threaded = THREAD_COUNTS.slice(1).flatMap(([, ours, ort]) => [ours, ...ort]);
  return rows.some((r) => threaded.includes(r.impl));
}

/** The float32 row of `impl` for one case. */
function rowOf(/** @type {any[]} */ rows, /** @type {string} */ impl, /** @type {any[]} */ [sh, kind, n]) {
  return rows.find((x) => x.impl === impl && x.shape === sh && x.kind === kind && x.n === n && x.dtype === 'float32');
}

/**
 * The cases a threads chart shows, one per (kind, shape): decode at L = 8192 and prefill at T = 512 (the
 * issue's thread targets) where the run has them, else the longest. @param {ReportInput} input
 */
function threadCases(input) {
  const pick = (/** @type {number[]} */ ns, /** @type {number} */ want) =>
    ns.includes(want) ? want : ns[ns.length - 1];
  return ['decode', 'prefill'].flatMap((kind) => {
    const ns = kind === 'decode' ? input.decode : input.prefill;
    if (!ns.length) return [];
    return input.shapes.map((sh) => [sh, kind, pick(ns, kind === 'decode' ? 8192 : 512)]);
  });
}

/** One implementation at every thread count: the one-thread row's colour, its name without the count. */
const familyStyle = (/** @type {readonly string[]} */ impls) => ({
  ...lineStyle(impls[0], 'float32'),
  label: implName(impls[0]).replace(/ 1t$/, ''),
});

/**
 * Time against threads (1, 2 and what 'auto' got, each point at its thread count), for our threaded build
 * and onnxruntime-web's two ops, float32. Empty when the run has no threaded rows. @param {ReportInput} input
 */
export function threadsSvg(input) {
  const rows = /** @type {any[]} */ (input.rows);
  if (!hasThreadRows(rows)) return '';
  /** @type {Panel[]} */
  const panels = [];
  /** @type {string[][]} each implementation's names at 1, 2 and 'auto' threads */
  const families = [THREAD_COUNTS.map((c) => c[1]), ...[0, 1].map((op) => THREAD_COUNTS.map((c) => c[2][op]))];
  for (const c of threadCases(input)) {
    const [sh, kind, n] = c;
    const series = families
      .map((impls) => {
        /** @type {[number, number, string?][]} */
        const pts = [];
        impls.forEach((impl, i) => {
          const r = rowOf(rows, impl, c);
          if (r) pts.push([r.threads, r.medianMs, i === 2 ? `auto (${r.threads})` : undefined]);
        });
        return { ...familyStyle(impls), pts };
      })
      .filter((l) => l.pts.length);
    const most = Math.max(2, ...series.flatMap((l) => l.pts.map((p) => p[0])));
    const s = SHAPES[/** @type {keyof typeof SHAPES} */ (sh)];
    panels.push({
      title: `${kind} ${kind === 'decode' ? 'L' : 'T'}=${n} · ${s.label} (${s.heads}/${s.kvHeads}/${s.headDim})`,
      xLabel: 'threads',
      xs: Array.from({ length: most }, (_, i) => i + 1),
      xLog: false,
      series,
    });
  }
  const legend = families.filter((impls) => rows.some((r) => impls.includes(r.impl))).map(familyStyle);
  return svgPanels(
    `${input.title}: median time per call vs threads (float32; open circles: 'auto', at the count it got)`,
    panels,
    legend,
  );
}
