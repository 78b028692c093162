/**
 * Combining repeated benchmark rounds: on a shared machine a single run drifts by ±15 %, so the
 * benchmarks alternate their targets round after round and report the median of each figure.
 *
 * @module
 */

/** The median of `values` (the mean of the middle two for an even count); NaN when empty. */
export function median(values: readonly number[]): number {
  if (values.length === 0) return Number.NaN;
  const sorted = [...values].sort((a, b) => a - b);
  const mid = sorted.length >> 1;
  return sorted.length % 2 === 1 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2;
}

/**
 * The order of `targets` in round `round` (from 1): as given in odd rounds, reversed in even
 * ones, so that over an even number of rounds each target runs first as often as any other, and
 * a drift that favours the first run of a round favours none of them.
 */
export function roundOrder<T>(targets: readonly T[], round: number): T[] {
  return round % 2 === 1 ? [...targets] : [...targets].reverse();
}
