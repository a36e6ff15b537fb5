// Prompt-lookup drafting: guess the next tokens by finding the context's last n tokens earlier in the
// context and proposing what followed them there. Text that repeats itself (code, quotes, lists, a
// document being edited) is guessed well; the model then checks a whole guess in one forward pass.

/**
 * @typedef {{ minNgram: number, maxNgram: number, maxDraft: number, adaptive: boolean }} LookupOptions
 *   adaptive: draft only as much as the acceptance so far makes worth it (DraftPolicy); false: draft up
 *   to maxDraft tokens whenever the context has a match
 */

/** @type {LookupOptions} */
export const LOOKUP_DEFAULTS = { minNgram: 3, maxNgram: 12, maxDraft: 12, adaptive: true };

/**
 * @param {true | Partial<LookupOptions>} value the `lookup` option of generate
 * @returns {LookupOptions}
 */
export function lookupOptions(value) {
  const options = { ...LOOKUP_DEFAULTS, ...(value === true ? {} : value) };
  if (typeof options.adaptive !== 'boolean') {
    throw new TypeError(`generate: options.lookup.adaptive must be a boolean, got ${options.adaptive}`);
  }
  for (const name of /** @type {const} */ (['minNgram', 'maxNgram', 'maxDraft'])) {
    const v = options[name];
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
 * Up to `limit` draft tokens continuing `tokens` (or none): the longest suffix of n tokens (maxNgram down to
 * minNgram) that occurred before, at its most recent earlier occurrence, and the tokens that followed it.
 * The draft is no longer than the match (the n tokens, and as many before them as agree too): a match of
 * 3 tokens is weak evidence for what the next 12 are, and its rejected drafts cost a verification share
 * each (docs/PERFORMANCE.md).
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
      // how far the match reaches back, up to `limit`
      let matched = n;
      while (
        matched < limit &&
        start + n - matched > 0 &&
        tokens[start + n - matched - 1] === tokens[length - matched - 1]
      ) {
        matched++;
      }
      // what followed; where that runs into the suffix itself, the copy continues from the draft, so a
      // repeating pattern extends by its period (as an LZ77 copy may overlap its own output)
      /** @type {number[]} */
      const draft = [];
      const count = Math.min(matched, limit);
      for (let i = start + n; draft.length < count; i++) draft.push(i < length ? tokens[i] : draft[i - length]);
      return draft;
    }
  }
  return [];
}

/**
 * How many tokens to draft next. Checking a draft token costs a share `c` of decoding a token alone: what
 * a pass of the next token and its drafts takes beyond the lone step it replaces, per draft (about
 * 0.45–0.55 with the runner's WebAssembly matmuls, matmul.mjs, about 1 with its JavaScript ones, math.mjs;
 * more where a verification pass waits for a worker thread that a busy machine descheduled); it saves a
 * whole step only when the model agrees with it. The policy keeps a decaying count of accepted and
 * rejected drafts; with acceptance rate a, the i-th token of a draft is worth checking while a^i > c, so
 * it drafts floor(ln c / ln a) tokens, and none where that is 0 but one every 8th step, to notice when the
 * text starts repeating. `c` starts at 0.7 and follows the times the runner reports (`observe`), so a machine
 * where verifying costs more drafts less.
 */
export class DraftPolicy {
  /** @param {LookupOptions} options */
  constructor(options) {
    this.maxDraft = options.maxDraft;
    this.adaptive = options.adaptive;
    // optimistic at first (a = 0.8): a context that repeats shows it within a few drafts
    this.accepted = 4;
    this.rejected = 1;
    this.idle = 0;
    /** ms of a lone step, as its floor (`follow`); 0: none yet */
    this.loneMs = 0;
    /** a checked draft's cost in lone steps, as its floor from DRAFT_COST on (`follow`) */
    this.cost = DRAFT_COST;
  }

  /** What a checked draft token costs, in lone decode steps (DRAFT_COST until passes were timed). */
  draftCost() {
    return Math.min(this.cost, 1);
  }

  /** The most tokens to draft at this step (0: decode one token alone). */
  length() {
    if (!this.adaptive) return this.maxDraft;
    const rate = this.accepted / (this.accepted + this.rejected);
    const cost = this.draftCost();
    let worth = 0;
    if (cost < 1) worth = rate >= 1 ? this.maxDraft : Math.floor(Math.log(cost) / Math.log(rate));
    if (worth >= 1) return Math.min(worth, this.maxDraft);
    if (++this.idle < PROBE_EVERY) return 0;
    this.idle = 0;
    return 1;
  }

  /** After a verification: `drafted` tokens were checked, the first `accepted` of them kept. */
  update(/** @type {number} */ drafted, /** @type {number} */ accepted) {
    if (drafted === 0) return;
    this.accepted = this.accepted * DECAY + accepted;
    this.rejected = this.rejected * DECAY + (accepted < drafted ? 1 : 0);
  }

  /**
   * The time a forward pass of `tokens` tokens took (a lone step, or a token and its drafts). Times of 0
   * or less are ignored: runtimes that stop the clock while code runs (Cloudflare Workers) keep 0.7.
   */
  observe(/** @type {number} */ tokens, /** @type {number} */ ms) {
    if (!(ms > 0)) return;
    if (tokens === 1) this.loneMs = follow(this.loneMs, ms);
    else if (this.loneMs > 0) {
      const cost = (ms - this.loneMs) / (tokens - 1) / this.loneMs;
      this.cost = follow(this.cost, Math.max(cost, MIN_DRAFT_COST));
    }
  }
}

/**
 * A running floor: down at once to a lower value, up by a share of a higher one. A busy machine only ever
 * adds time (a pass descheduled for a time slice can take 10 lone steps), and a few such passes inflating
 * an average made the policy stop drafting where drafts paid; a cost that really rose still wins within a
 * few dozen passes.
 * @param {number} floor 0: none yet
 * @param {number} value
 */
function follow(floor, value) {
  return floor === 0 || value < floor ? value : floor + (value - floor) * RISE;
}

/** a checked draft token's cost, in decode steps, before any pass was timed (the WebAssembly matmuls'
 * 0.45–0.55 and the JavaScript ones' 1 are learnt from the first passes) */
const DRAFT_COST = 0.7;
/** the least cost believed from timings (a lone step slowed by a busy machine can make passes look cheap) */
const MIN_DRAFT_COST = 0.5;
/** steps between single-token probes while drafting does not pay */
const PROBE_EVERY = 8;
/** how fast old verifications fade from the acceptance rate */
const DECAY = 0.8;
/** how far a time's floor moves towards a slower time */
const RISE = 0.05;
