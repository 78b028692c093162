import { assertEquals } from "../../shared/testing/assert.ts";
import { median, pairedRatio, pairedVerdict, roundOrder } from "./rounds.ts";

Deno.test("median of odd and even counts, unsorted input left as it was", () => {
  const input = [3, 1, 2];
  assertEquals(median(input), 2);
  assertEquals(input, [3, 1, 2]);
  assertEquals(median([4, 1, 3, 2]), 2.5);
  assertEquals(median([7]), 7);
  assertEquals(Number.isNaN(median([])), true);
});

Deno.test("round order: as given, then reversed, and each target leads equally often", () => {
  const targets = ["pgbouncer", "tessera", "direct"] as const;
  assertEquals(roundOrder(targets, 1), ["pgbouncer", "tessera", "direct"]);
  assertEquals(roundOrder(targets, 2), ["direct", "tessera", "pgbouncer"]);
  assertEquals(roundOrder(targets, 3), ["pgbouncer", "tessera", "direct"]);
  assertEquals(targets, ["pgbouncer", "tessera", "direct"]);
  const pair = ["pgbouncer", "tessera"];
  const firsts = [1, 2, 3, 4].map((r) => roundOrder(pair, r)[0]);
  assertEquals(firsts.filter((t) => t === "tessera").length, 2);
});

Deno.test("paired ratio: geometric mean, a Student's t interval on the logs, bad rounds left out", () => {
  const same = pairedRatio([20, 30], [10, 15]);
  assertEquals(same.ratios, [2, 2]);
  assertEquals(same.geoMean, 2);
  assertEquals([same.low, same.high], [2, 2]); // no spread: no doubt

  // Ratios 1 and 4: the logs are 0 and ln 4, so the mean is ln 2 and the standard error ln 2.
  const two = pairedRatio([1, 4], [1, 1]);
  const close = (x: number, y: number) => Math.abs(x - y) < 1e-9;
  assertEquals(close(two.geoMean, 2), true);
  assertEquals(close(two.low, Math.exp(Math.LN2 - 12.706 * Math.LN2)), true);
  assertEquals(close(two.high, Math.exp(Math.LN2 + 12.706 * Math.LN2)), true);
  // Swapping the sides mirrors the interval.
  const swapped = pairedRatio([1, 1], [1, 4]);
  assertEquals(close(swapped.geoMean * two.geoMean, 1), true);
  assertEquals(close(swapped.low * two.high, 1), true);

  // Eight rounds around 0.95 with a small spread: the interval holds the mean and excludes 1.
  const tight = pairedRatio(
    [95, 96, 94, 95, 97, 93, 95, 96],
    [100, 100, 100, 100, 100, 100, 100, 100],
  );
  assertEquals(tight.low < tight.geoMean && tight.geoMean < tight.high, true);
  assertEquals(tight.high < 1, true);

  const holes = pairedRatio([10, 0, Number.NaN, 12], [5, 5, 5, 6, 7]);
  assertEquals(holes.ratios, [2, 2]);
  const one = pairedRatio([3], [2]);
  assertEquals([one.geoMean, Number.isNaN(one.low), Number.isNaN(one.high)], [1.5, true, true]);
  assertEquals(Number.isNaN(pairedRatio([], []).geoMean), true);
});

Deno.test("paired verdict: better or worse only when the interval leaves out 1", () => {
  const above = { ratios: [1.1, 1.2], geoMean: 1.15, low: 1.02, high: 1.3 };
  const below = { ratios: [0.9, 0.8], geoMean: 0.85, low: 0.7, high: 0.98 };
  const across = { ratios: [0.9, 1.1], geoMean: 1, low: 0.8, high: 1.2 };
  assertEquals(pairedVerdict(above, "higher"), "better"); // more TPS
  assertEquals(pairedVerdict(above, "lower"), "worse"); // a higher p99
  assertEquals(pairedVerdict(below, "higher"), "worse");
  assertEquals(pairedVerdict(below, "lower"), "better");
  assertEquals(pairedVerdict(across, "higher"), "within the noise");
  assertEquals(pairedVerdict(pairedRatio([3], [2]), "lower"), "too few rounds to tell");
  assertEquals(pairedVerdict(pairedRatio([], []), "higher"), "too few rounds to tell");
});
