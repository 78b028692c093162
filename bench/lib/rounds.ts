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

/** Two-sided 95 % quantiles of Student's t for 1 to 30 degrees of freedom. */
// deno-fmt-ignore
const T95 = [
  12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.16, 2.145,
  2.131, 2.12, 2.11, 2.101, 2.093, 2.086, 2.08, 2.074, 2.069, 2.064, 2.06, 2.056, 2.052, 2.048,
  2.045, 2.042,
];

/** Ratios of two targets measured in the same rounds, and how far noise could move them. */
export interface PairedRatio {
  /** `a[i] / b[i]` for each round, in round order. */
  ratios: number[];
  /** Their geometric mean. */
  geoMean: number;
  /** Lower bound of its 95 % confidence interval; NaN with fewer than two rounds. */
  low: number;
  /** Upper bound; NaN with fewer than two rounds. */
  high: number;
}

/**
 * Compares `a` with `b` round by round: the two runs of a round are minutes apart at most, so
 * their ratio is far less exposed to the machine's drift than the ratio of two medians. The
 * interval is Student's t on the logarithms of the ratios (a ratio and its inverse get mirrored
 * intervals). Rounds missing on either side, or with a zero or non-finite figure, are left out.
 */
export function pairedRatio(a: readonly number[], b: readonly number[]): PairedRatio {
  const ratios: number[] = [];
  for (let i = 0; i < Math.min(a.length, b.length); i++) {
    const r = a[i]! / b[i]!;
    if (Number.isFinite(r) && r > 0) ratios.push(r);
  }
  const n = ratios.length;
  if (n === 0) return { ratios, geoMean: Number.NaN, low: Number.NaN, high: Number.NaN };
  const logs = ratios.map(Math.log);
  const mean = logs.reduce((s, x) => s + x, 0) / n;
  const geoMean = Math.exp(mean);
  if (n < 2) return { ratios, geoMean, low: Number.NaN, high: Number.NaN };
  const variance = logs.reduce((s, x) => s + (x - mean) ** 2, 0) / (n - 1);
  const half = (T95[n - 2] ?? 1.96) * Math.sqrt(variance / n);
  return { ratios, geoMean, low: Math.exp(mean - half), high: Math.exp(mean + half) };
}

/**
 * What a {@linkcode PairedRatio} says of the first target, for a figure where `better` is good:
 * "within the noise" when its interval holds 1, and "too few rounds to tell" without one.
 */
export function pairedVerdict(
  p: PairedRatio,
  better: "higher" | "lower",
): "better" | "worse" | "within the noise" | "too few rounds to tell" {
  if (Number.isNaN(p.low) || Number.isNaN(p.high)) return "too few rounds to tell";
  if (p.low <= 1 && p.high >= 1) return "within the noise";
  return (p.low > 1) === (better === "higher") ? "better" : "worse";
}
