import { assertEquals } from "../../shared/testing/assert.ts";
import { median, pairedRatio, roundOrder } from "./rounds.ts";

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
