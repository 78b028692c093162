import { assertEquals } from "../../shared/testing/assert.ts";
import { median } from "./rounds.ts";

Deno.test("median of odd and even counts, unsorted input left as it was", () => {
  const input = [3, 1, 2];
  assertEquals(median(input), 2);
  assertEquals(input, [3, 1, 2]);
  assertEquals(median([4, 1, 3, 2]), 2.5);
  assertEquals(median([7]), 7);
  assertEquals(Number.isNaN(median([])), true);
});
