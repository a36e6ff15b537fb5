// Turns measured rows into the report: derived numbers (roofline, ratios to each peer), the markdown
// tables, the targets of the issue (met or not) and an SVG chart. No Node APIs (the browser bench uses it).

import { SHAPES, BUILDS, flopsOf, bytesOf } from './suite.mjs';

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
    `${SHAPES[/** @type {keyof typeof SHAPES} */ (r.shape)].label} ${r.kind} ${r.kind === 'decode' ? 'L' : 'T'}=${r.n}${r.dtype === 'int8' ? ' int8' : ''}`;
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
    const a = input.allocations?.[b];
    if (a) {
      const vals = input.dtypes.map((d) => a[d]);
      const f = (/** @type {any} */ x) => (typeof x === 'number' ? `${x.toFixed(1)} B/step` : 'n/a (a GC ran)');
      out.push({
        target: 'zero JS-heap allocations per decode step after warm-up',
        build: b,
        measured: `${input.dtypes.map((d) => `${d} ${f(a[d])}`).join(', ')} (control: 1 view/step ${f(a.control)}; empty loop ${f(a.empty)})`,
        met: vals.every((x) => typeof x === 'number') ? Math.max(...vals) < 1 : null,
      });
    }
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

// ---------------------------------------------------------------------------------------------
// SVG chart: time against context length, log-log, one panel per (shape, kind)

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
  'ort-node-gqa-1t': '#2ca02c',
  'ort-node-mha-1t': '#8c564b',
  roofline: '#000000',
};

/** @param {ReportInput} input @returns {string} */
export function svgChart(input) {
  const rows = /** @type {any[]} */ (input.rows);
  const panels = [];
  for (const kind of ['decode', 'prefill']) for (const sh of input.shapes) panels.push({ kind, sh });
  const PW = 520,
    PH = 330,
    M = { l: 64, r: 16, t: 34, b: 44 };
  const W = 2 * PW;
  const esc = (/** @type {string} */ s) => s.replace(/&/g, '&amp;').replace(/</g, '&lt;');
  /** @type {string[]} */
  const out = [];
  const series = new Map(); // key -> {impl, dtype}
  panels.forEach(({ kind, sh }, pi) => {
    const ox = (pi % 2) * PW,
      oy = 26 + Math.floor(pi / 2) * PH;
    const ns = kind === 'decode' ? input.decode : input.prefill;
    const sel = rows.filter((r) => r.kind === kind && r.shape === sh);
    if (!sel.length || ns.length < 1) return;
    /** @type {Map<string, [number, number][]>} */
    const lines = new Map();
    for (const r of sel) {
      const key = `${r.impl}|${r.dtype}`;
      if (!lines.has(key)) lines.set(key, []);
      /** @type {[number, number][]} */ (lines.get(key)).push([r.n, r.medianMs]);
      series.set(key, { impl: r.impl, dtype: r.dtype });
    }
    // roofline of float32 (bandwidth / peak bound) as a dashed black line
    if (input.limits && BUILDS.some((b) => sel.some((r) => r.impl === b))) {
      const pts = [];
      for (const n of ns) {
        const r =
          sel.find((x) => x.n === n && x.dtype === 'float32' && x.roofMs && x.impl === 'simd') ??
          sel.find((x) => x.n === n && x.dtype === 'float32' && x.roofMs);
        if (r) pts.push(/** @type {[number, number]} */ ([n, r.roofMs]));
      }
      if (pts.length) {
        lines.set('roofline|float32', pts);
        series.set('roofline|float32', { impl: 'roofline', dtype: 'float32' });
      }
    }
    const all = [...lines.values()].flat();
    const xs = ns,
      ys = all.map((p) => p[1]).filter((y) => y > 0);
    const x0 = Math.log10(Math.min(...xs)),
      x1 = Math.log10(Math.max(...xs)) + (xs.length === 1 ? 1 : 0);
    const y0 = Math.floor(Math.log10(Math.min(...ys))),
      y1 = Math.ceil(Math.log10(Math.max(...ys)));
    const px = (/** @type {number} */ n) => ox + M.l + ((Math.log10(n) - x0) / (x1 - x0 || 1)) * (PW - M.l - M.r);
    const py = (/** @type {number} */ t) => oy + PH - M.b - ((Math.log10(t) - y0) / (y1 - y0 || 1)) * (PH - M.t - M.b);
    const s = SHAPES[/** @type {keyof typeof SHAPES} */ (sh)];
    out.push(
      `<text x="${ox + PW / 2}" y="${oy + 20}" text-anchor="middle" font-size="12" font-weight="bold">${esc(`${kind} · ${s.label} (${s.heads}/${s.kvHeads}/${s.headDim})`)}</text>`,
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
    for (const n of ns) {
      const x = px(n);
      out.push(`<line x1="${x}" x2="${x}" y1="${oy + M.t}" y2="${oy + PH - M.b}" stroke="#eee"/>`);
      out.push(`<text x="${x}" y="${oy + PH - M.b + 14}" text-anchor="middle">${n}</text>`);
    }
    out.push(
      `<text x="${ox + PW / 2}" y="${oy + PH - 8}" text-anchor="middle">${kind === 'decode' ? 'L (cached tokens)' : 'T (prompt tokens)'}</text>`,
    );
    for (const [key, pts] of lines) {
      const { impl, dtype } = series.get(key);
      pts.sort((a, b) => a[0] - b[0]);
      const d = pts.map(([n, t], i) => `${i ? 'L' : 'M'}${px(n).toFixed(1)},${py(t).toFixed(1)}`).join(' ');
      const dash = impl === 'roofline' ? ' stroke-dasharray="2,3"' : dtype === 'int8' ? ' stroke-dasharray="6,3"' : '';
      out.push(
        `<path d="${d}" fill="none" stroke="${COLORS[/** @type {keyof typeof COLORS} */ (impl)] ?? '#000'}" stroke-width="${BUILDS.includes(impl) ? 2.2 : 1.5}"${dash}/>`,
      );
      for (const [n, t] of pts)
        out.push(
          `<circle cx="${px(n).toFixed(1)}" cy="${py(t).toFixed(1)}" r="2.2" fill="${COLORS[/** @type {keyof typeof COLORS} */ (impl)] ?? '#000'}"/>`,
        );
    }
  });
  // legend, under the panels
  const ly = 26 + Math.ceil(panels.length / 2) * PH + 12;
  const keys = [...series.keys()].sort((a, b) => {
    const order = [...BUILDS, ...PEERS.map(([p]) => p), 'roofline'];
    const [ia, da] = a.split('|'),
      [ib, db] = b.split('|');
    return order.indexOf(ia) - order.indexOf(ib) || da.localeCompare(db);
  });
  keys.forEach((key, i) => {
    const { impl, dtype } = series.get(key);
    const x = 20 + (i % 4) * 260,
      y = ly + Math.floor(i / 4) * 18;
    const dash = impl === 'roofline' ? ' stroke-dasharray="2,3"' : dtype === 'int8' ? ' stroke-dasharray="6,3"' : '';
    const label =
      impl === 'roofline'
        ? 'roofline (float32, measured bandwidth / peak)'
        : `${implName(impl)}${dtype === 'int8' ? ' int8' : ''}`;
    out.push(
      `<line x1="${x}" x2="${x + 26}" y1="${y}" y2="${y}" stroke="${COLORS[/** @type {keyof typeof COLORS} */ (impl)] ?? '#000'}" stroke-width="2"${dash}/>`,
    );
    out.push(`<text x="${x + 32}" y="${y + 4}">${esc(label)}</text>`);
  });
  const H = ly + Math.ceil(keys.length / 4) * 18 + 10;
  out.unshift(
    `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" font-family="sans-serif" font-size="11">`,
    `<rect width="${W}" height="${H}" fill="white"/>`,
    `<text x="${W / 2}" y="18" text-anchor="middle" font-size="14">${esc(input.title)}: median time per call vs context length (log-log)</text>`,
  );
  out.push('</svg>');
  return out.join('\n');
}
