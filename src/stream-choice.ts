// How a decode step streams (touches K/V lines ahead of the arithmetic, assembly/attend/stream.ts): not at
// all, or in spans of which length, chosen from what this machine measures rather than from constants
// fitted to one machine's caches.
//
// Per kind of cache (head geometry) and size class (the K/V it holds, every layer, rounded down to a power
// of two), the first decode steps go round-robin over the CANDIDATES, TRIAL_STEPS each, and are timed
// (trialClock); the class then keeps the candidate whose median was lowest. Every candidate gives the same
// bits, so a trial changes nothing but time. Below MIN_TRIAL_BYTES nothing streams (K/V that small stays in the caches of
// any machine, where the touches only cost). Until a class has decided, the caller's default rule decides.

/**
 * The stream words tried: 0 (no touches), then touch-ahead spans in KiB of K and V together. Touched lines
 * wait in the core's caches until the arithmetic reaches them, and longer runs let the hardware prefetchers
 * follow further: 128 KiB fits any private L2 in use (256 KiB and up) beside the step's own scratch,
 * 512 KiB fits the 1–2 MiB L2 of recent cores, 2 MiB outgrows every L2 and leaves its first lines to the
 * L3 for the longest runs. Four times apart, so that neighbours can differ in what they measure.
 */
export const CANDIDATES: readonly number[] = [0, 128, 512, 2048];
/** The span where the default rule streams, before a class has decided. */
export const DEFAULT_SPAN_KIB = 512;
/** Timed decode steps per candidate before a size class decides (CANDIDATES.length × this in all). */
export const TRIAL_STEPS = 5;
/**
 * Untimed decode steps of a decided class before it is tried again: what is fastest moves with what else
 * the machine runs (a trial under a passing load can pick a span that costs 10–20% once it is gone), and a
 * trial costs a few steps' time, so trying again every this many steps costs well under 1%.
 */
export const RETRY_STEPS = 4096;
/** K/V held below this never streams and is never tried. */
export const MIN_TRIAL_BYTES = 4 << 20;

interface Trial {
  /** TRIAL_STEPS times of each candidate, candidate-major */
  times: Float64Array;
  /** timed steps recorded per candidate */
  counts: Int32Array;
  steps: number;
  /** −1 while trying; then the stream word kept */
  choice: number;
  /** the word of the trial before (−1 before the first): what runs untimed while the class tries again */
  before: number;
  /** untimed steps since the class decided */
  since: number;
}

/** The stream word of each (geometry, size class), found by timing the candidates on its first decode steps. */
export class StreamChoice {
  readonly #trials = new Map<number, Trial>();
  #forced = -1;

  /** The class key: a size class (log2 of bytes) and the head geometry. */
  static key(bytes: number, kvHeads: number, headDim: number): number {
    return Math.floor(Math.log2(Math.max(1, bytes))) * 0x100000 + (kvHeads & 0x3ff) * 0x400 + (headDim & 0x3ff);
  }

  /**
   * The stream word for a cache holding `bytes` of K/V (0, or a span in KiB): the class's choice once made,
   * the default rule before (`fallback`), 0 below MIN_TRIAL_BYTES.
   */
  flag(bytes: number, key: number, fallback: number): number {
    if (this.#forced >= 0) return this.#forced;
    if (bytes < MIN_TRIAL_BYTES) return 0;
    const trial = this.#trials.get(key);
    if (!trial) return fallback;
    if (trial.choice >= 0) return trial.choice;
    return trial.before >= 0 ? trial.before : fallback;
  }

  /**
   * The stream word the next decode step of class `key` should be timed with (a candidate), or −1 when the
   * class has decided (or nothing is tried for `bytes`): the caller then runs it as `flag` says, untimed.
   */
  trialPath(bytes: number, key: number): number {
    if (this.#forced >= 0 || bytes < MIN_TRIAL_BYTES) return -1;
    let trial = this.#trials.get(key);
    if (!trial) {
      const n = CANDIDATES.length;
      trial = {
        times: new Float64Array(n * TRIAL_STEPS),
        counts: new Int32Array(n),
        steps: 0,
        choice: -1,
        before: -1,
        since: 0,
      };
      this.#trials.set(key, trial);
    }
    if (trial.choice >= 0) {
      if (++trial.since < RETRY_STEPS) return -1;
      // try the candidates again, the choice still running untimed meanwhile
      trial.before = trial.choice;
      trial.choice = -1;
      trial.steps = 0;
      trial.since = 0;
      trial.counts.fill(0);
    }
    return CANDIDATES[trial.steps % CANDIDATES.length];
  }

  /** Records a timed step of class `key` with stream word `path`; the class decides after TRIAL_STEPS of each. */
  record(key: number, path: number, ms: number): void {
    const trial = this.#trials.get(key);
    const c = CANDIDATES.indexOf(path);
    if (!trial || trial.choice >= 0 || c < 0 || trial.counts[c] >= TRIAL_STEPS) return;
    trial.times[c * TRIAL_STEPS + trial.counts[c]++] = ms;
    if (++trial.steps < CANDIDATES.length * TRIAL_STEPS) return;
    let best = 0;
    let bestMs = Number.POSITIVE_INFINITY;
    for (let i = 0; i < CANDIDATES.length; i++) {
      const ms = medianOf(trial.times.subarray(i * TRIAL_STEPS, (i + 1) * TRIAL_STEPS));
      if (ms < bestMs) [best, bestMs] = [i, ms];
    }
    trial.choice = CANDIDATES[best];
  }

  /** The class's choice (a stream word), or −1 while it is still trying or has not begun. */
  choice(key: number): number {
    return this.#trials.get(key)?.choice ?? -1;
  }

  /** Tests and benches only: every decode uses this stream word (0: none, n: spans of n KiB), or −1: the measured choice again. */
  force(word: number): void {
    this.#forced = word;
  }
}

type CpuUsage = () => { user: number; system: number };
let cpuUsage: CpuUsage | null | undefined;

/**
 * Milliseconds for timing a trial step: this process's CPU time where the runtime reports it finely
 * (Node, Bun, Deno), since time spent waiting for a core while other processes run is the same for every
 * candidate and only adds noise; the wall clock elsewhere (browsers, or a coarse CPU clock).
 */
export function trialClock(): number {
  if (cpuUsage === undefined) cpuUsage = fineCpuUsage();
  if (!cpuUsage) return performance.now();
  const { user, system } = cpuUsage();
  return (user + system) / 1000;
}

/** process.cpuUsage if it exists and ticks in steps of 50 µs or less (Windows' ticks 15.6 ms), else null. */
function fineCpuUsage(): CpuUsage | null {
  try {
    const usage = (globalThis as { process?: { cpuUsage?: CpuUsage } }).process?.cpuUsage;
    if (typeof usage !== 'function') return null;
    const read = () => {
      const { user, system } = usage();
      return user + system;
    };
    const first = read();
    for (let i = 0; i < 2000; i++) {
      const now = read();
      if (now !== first) return now - first <= 50 && now > first ? usage : null;
    }
  } catch {}
  return null;
}

function medianOf(xs: Float64Array): number {
  const s = Float64Array.from(xs).sort();
  return (s[(s.length - 1) >> 1] + s[s.length >> 1]) / 2;
}

/** One per process: the machine is the same for every cache and instance. */
export const streamChoice = new StreamChoice();
