// How long the fuzz tests run. `npm test` runs a fixed, short, reproducible campaign (seed
// FUZZ_SEED_DEFAULT, each test's own small run count); for a long campaign set
//   FUZZ_RUNS=<runs per property>   e.g. 200000
//   FUZZ_SEED=<integer>             another seed, or "random" for a fresh one each run
// (docs/security.md, "Fuzzing"). A failure prints the seed and path that reproduce it.
import type { Parameters } from "fast-check";

export const FUZZ_SEED_DEFAULT = 20261127;

function seed(): number {
  const s = process.env.FUZZ_SEED;
  if (s === undefined || s === "") return FUZZ_SEED_DEFAULT;
  if (s === "random") return (Date.now() ^ (Math.random() * 0x7fffffff)) | 0;
  const n = Number(s);
  if (!Number.isInteger(n)) throw new Error(`FUZZ_SEED must be an integer or "random", got ${JSON.stringify(s)}`);
  return n;
}

/** Whether a long campaign was asked for (then tests may raise their own time limits). */
export const LONG_FUZZ = process.env.FUZZ_RUNS !== undefined && process.env.FUZZ_RUNS !== "";

/** fast-check parameters: `runs` in the short campaign, FUZZ_RUNS in a long one. */
export function fuzzParams<T>(runs: number): Parameters<T> {
  const n = LONG_FUZZ ? Number(process.env.FUZZ_RUNS) : runs;
  if (!Number.isInteger(n) || n <= 0) throw new Error(`FUZZ_RUNS must be a positive integer, got ${process.env.FUZZ_RUNS}`);
  return { seed: seed(), numRuns: n, endOnFailure: true };
}

/** Timeout of a fuzz test: generous for a long campaign. */
export function fuzzTimeout(shortMs: number): number {
  return LONG_FUZZ ? 24 * 3600 * 1000 : shortMs;
}

/**
 * Runs `parse` and lets through only the error classes a caller is told to expect: anything else
 * (TypeError, RangeError, an assertion inside a library) is a bug that input can trigger.
 */
export function onlyThrows(parse: () => unknown, ...allowed: Array<abstract new (...args: never[]) => Error>): void {
  try {
    parse();
  } catch (e) {
    if (allowed.some((c) => e instanceof c)) return;
    throw e;
  }
}
