// Prompt-lookup drafting: guess the next tokens by finding the context's last n tokens earlier in the
// context and proposing what followed them there. Text that repeats itself (code, quotes, lists, a
// document being edited) is guessed well; the model then checks a whole guess in one forward pass.

/**
 * @typedef {{ minNgram: number, maxNgram: number, maxDraft: number }} LookupOptions
 */

/** @type {LookupOptions} */
export const LOOKUP_DEFAULTS = { minNgram: 3, maxNgram: 8, maxDraft: 12 };

/**
 * @param {true | Partial<LookupOptions>} value the `lookup` option of generate
 * @returns {LookupOptions}
 */
export function lookupOptions(value) {
  const options = { ...LOOKUP_DEFAULTS, ...(value === true ? {} : value) };
  for (const [name, v] of Object.entries(options)) {
    if (!(Number.isInteger(v) && v >= 1)) {
      throw new RangeError(`generate: options.lookup.${name} must be an integer >= 1, got ${v}`);
    }
  }
  if (options.minNgram > options.maxNgram) {
    throw new RangeError(
      `generate: options.lookup.minNgram (${options.minNgram}) must be <= maxNgram (${options.maxNgram})`,
    );
  }
  return options;
}

/**
 * `limit` draft tokens continuing `tokens` (or none): the longest suffix of n tokens (maxNgram down to
 * minNgram) that occurred before, at its most recent earlier occurrence, and the tokens that followed it.
 * @param {number[]} tokens the context so far
 * @param {LookupOptions} options
 * @param {number} limit the most draft tokens wanted
 * @returns {number[]} possibly empty
 */
export function draftByLookup(tokens, options, limit) {
  const length = tokens.length;
  if (limit <= 0) return [];
  for (let n = Math.min(options.maxNgram, length - 1); n >= options.minNgram; n--) {
    // candidate starts of an earlier occurrence, latest first; it must leave at least one token after it
    for (let start = length - n - 1; start >= 0; start--) {
      let match = true;
      for (let i = 0; i < n; i++) {
        if (tokens[start + i] !== tokens[length - n + i]) {
          match = false;
          break;
        }
      }
      if (!match) continue;
      // what followed; where that runs into the suffix itself, the copy continues from the draft, so a
      // repeating pattern extends by its period (as an LZ77 copy may overlap its own output)
      /** @type {number[]} */
      const draft = [];
      for (let i = start + n; draft.length < limit; i++) draft.push(i < length ? tokens[i] : draft[i - length]);
      return draft;
    }
  }
  return [];
}
