// Seeded random numbers and medians, free of Node APIs (the browser bench imports them too).

/** mulberry32: a small, fast, seeded 32-bit generator. @param {number} seed */
export function mulberry32(seed) {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/**
 * A Float32Array of standard normal numbers (Box-Muller) from a seeded generator.
 * @param {number} n
 * @param {() => number} rand
 * @param {number} [sd]
 */
export function gaussian(n, rand, sd = 1) {
  const a = new Float32Array(n);
  for (let i = 0; i < n; i += 2) {
    const u = 1 - rand();
    const r = sd * Math.sqrt(-2 * Math.log(u));
    const th = 2 * Math.PI * rand();
    a[i] = r * Math.cos(th);
    if (i + 1 < n) a[i + 1] = r * Math.sin(th);
  }
  return a;
}

/** @param {number[]} xs @param {number} p in [0, 1] */
export function quantile(xs, p) {
  if (xs.length === 0) return NaN;
  const s = [...xs].sort((a, b) => a - b);
  const i = (s.length - 1) * p;
  const lo = Math.floor(i);
  const hi = Math.ceil(i);
  return s[lo] + (s[hi] - s[lo]) * (i - lo);
}

/** @param {number[]} xs */
export const median = (xs) => quantile(xs, 0.5);

