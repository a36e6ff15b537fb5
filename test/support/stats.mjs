// Quantiles and medians, free of Node APIs (the browser bench imports them too).

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
