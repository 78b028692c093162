import { assertEquals } from "../../shared/testing/assert.ts";
import { median, roundOrder } from "./rounds.ts";

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
