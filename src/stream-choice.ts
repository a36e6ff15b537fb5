// Whether a decode step streams (touches K/V lines ahead of the arithmetic, assembly/attend/stream.ts),
// chosen from what this machine measures rather than from a threshold fitted to one machine's caches.
//
// Per kind of cache (head geometry) and size class (the K/V it holds, every layer, rounded down to a power
// of two), the first TRIAL_STEPS decode steps of each path alternate streamed and not and are timed; the
// class then keeps the path whose median was lower. Both paths give the same bits, so a trial changes
// nothing but time. Below MIN_TRIAL_BYTES nothing streams (K/V that small stays in the caches of any
// machine, where the touches only cost). Until a class has decided, STREAM_BYTES decides.

/** Timed decode steps per path before a size class decides. */
export const TRIAL_STEPS = 8;
/** K/V held below this never streams and is never tried. */
export const MIN_TRIAL_BYTES = 4 << 20;

interface Trial {
  /** TRIAL_STEPS times without streaming, then TRIAL_STEPS with */
  times: Float64Array;
  steps: number;
  /** −1 while trying; then 0 or 1 */
  choice: number;
}

/** The stream flag of each (geometry, size class), found by timing both paths on its first decode steps. */
export class StreamChoice {
  readonly #trials = new Map<number, Trial>();
  #forced = -1;

  /** The class key: a size class (log2 of bytes) and the head geometry. */
  static key(bytes: number, kvHeads: number, headDim: number): number {
    return Math.floor(Math.log2(Math.max(1, bytes))) * 0x100000 + (kvHeads & 0x3ff) * 0x400 + (headDim & 0x3ff);
  }

  /**
   * The flag for a cache holding `bytes` of K/V: the class's choice once made, the default rule before
   * (`fallback`), 0 below MIN_TRIAL_BYTES.
   */
  flag(bytes: number, key: number, fallback: number): number {
    if (this.#forced >= 0) return this.#forced;
    if (bytes < MIN_TRIAL_BYTES) return 0;
    const trial = this.#trials.get(key);
    return trial && trial.choice >= 0 ? trial.choice : fallback;
  }

  /**
   * The path the next decode step of class `key` should be timed on (0, 1), or −1 when the class has
   * decided (or nothing is tried for `bytes`): the caller then runs it as `flag` says, untimed.
   */
  trialPath(bytes: number, key: number): number {
    if (this.#forced >= 0 || bytes < MIN_TRIAL_BYTES) return -1;
    let trial = this.#trials.get(key);
    if (!trial) {
      trial = { times: new Float64Array(2 * TRIAL_STEPS), steps: 0, choice: -1 };
      this.#trials.set(key, trial);
    }
    return trial.choice >= 0 ? -1 : trial.steps & 1;
  }

  /** Records a timed step of class `key` on `path`; the class decides after TRIAL_STEPS of each. */
  record(key: number, path: number, ms: number): void {
    const trial = this.#trials.get(key);
    if (!trial || trial.choice >= 0) return;
    trial.times[path * TRIAL_STEPS + (trial.steps >> 1)] = ms;
    if (++trial.steps < 2 * TRIAL_STEPS) return;
    const plain = medianOf(trial.times.subarray(0, TRIAL_STEPS));
    const streamed = medianOf(trial.times.subarray(TRIAL_STEPS));
    trial.choice = streamed < plain ? 1 : 0;
  }

  /** The class's choice (0, 1), or −1 while it is still trying or has not begun. */
  choice(key: number): number {
    return this.#trials.get(key)?.choice ?? -1;
  }

  /** Tests only: every decode streams (1), none does (0), or the measured choice again (−1). */
  force(flag: number): void {
    this.#forced = flag;
  }
}

function medianOf(xs: Float64Array): number {
  const s = Float64Array.from(xs).sort();
  return (s[(s.length - 1) >> 1] + s[s.length >> 1]) / 2;
}

/** One per process: the machine is the same for every cache and instance. */
export const streamChoice = new StreamChoice();
