// Options bags refuse keys they do not know: a misspelt or unsupported option (`windw: 4`, `alibi: true`)
// would otherwise be ignored and the call would compute something other than what was meant.

/** Edit distance (insertions, deletions, substitutions) between two short strings. */
function distance(a: string, b: string): number {
  let previous = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    const row = [i];
    for (let j = 1; j <= b.length; j++) {
      row[j] = Math.min(previous[j] + 1, row[j - 1] + 1, previous[j - 1] + (a[i - 1] === b[j - 1] ? 0 : 1));
    }
    previous = row;
  }
  return previous[b.length];
}

/** The known key closest to `key` when it is close enough to be a likely misspelling (or a case slip). */
export function nearestKey(key: string, known: readonly string[]): string | undefined {
  let best: string | undefined;
  let bestDistance = Number.POSITIVE_INFINITY;
  for (const candidate of known) {
    const d = candidate.toLowerCase() === key.toLowerCase() ? 0 : distance(key, candidate);
    if (d < bestDistance) [best, bestDistance] = [candidate, d];
  }
  return best !== undefined && bestDistance <= Math.max(2, Math.floor(best.length / 3)) ? best : undefined;
}

/**
 * Throws a TypeError naming the first own enumerable key of `bag` that is not in `known`, with the nearest
 * known key when one is close, else the list of known ones. `where` is the bag's path (`options.rope`).
 */
export function refuseUnknownKeys(bag: object, where: string, known: readonly string[]): void {
  for (const key of Object.keys(bag)) {
    if (known.includes(key)) continue;
    const near = nearestKey(key, known);
    const hint = near ? `did you mean ${where}.${near}?` : `known: ${known.join(', ')}`;
    throw new TypeError(`wasm-attention: ${where}.${key} is not an option (${hint})`);
  }
}
