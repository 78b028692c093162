import { assert, assertEquals, assertThrows } from "../testing/assert.ts";
import {
  evenShards,
  formatKeyRange,
  keyRangeContains,
  parseKeyRange,
  shardForKeyspaceId,
} from "./mod.ts";

function id(hex: string): Uint8Array {
  const b = new Uint8Array(8);
  for (let i = 0; i < hex.length / 2; i++) b[i] = parseInt(hex.slice(2 * i, 2 * i + 2), 16);
  return b;
}

Deno.test("key ranges parse Vitess names and hold the ids in [start, end)", () => {
  assertEquals(formatKeyRange(parseKeyRange("40-80")), "40-80");
  assertEquals(formatKeyRange(parseKeyRange("0")), "-");
  const cases: [string, string, boolean][] = [
    ["-80", "00", true],
    ["-80", "7fffffffffffffff", true],
    ["-80", "80", false],
    ["80-", "80", true],
    ["80-", "ffffffffffffffff", true],
    ["80-", "7f", false],
    ["40-80", "40", true],
    ["40-80", "3fff", false],
    ["-", "1234", true],
    ["0", "ff", true],
    ["4000-8000", "4000000000000001", true],
  ];
  for (const [range, hex, want] of cases) {
    assertEquals(keyRangeContains(parseKeyRange(range), id(hex)), want, `${range} ∋ ${hex}`);
  }
  for (const bad of ["80", "8-", "80-40", "80-80", "xx-", "-80-"]) {
    assertThrows(() => parseKeyRange(bad), Error, `'${bad}'`);
  }
});

Deno.test("evenShards splits the space evenly with Vitess names", () => {
  assertEquals(evenShards(1), ["-"]);
  assertEquals(evenShards(2), ["-80", "80-"]);
  assertEquals(evenShards(4), ["-40", "40-80", "80-c0", "c0-"]);
  assertEquals(evenShards(3), ["-55", "55-aa", "aa-"]);
  assertEquals(evenShards(16).length, 16);
  assertEquals(evenShards(16)[1], "10-20");
  const many = evenShards(1000);
  assertEquals(many.length, 1000);
  assertEquals(many[1], "0041-0083");
  // Every id belongs to exactly one shard.
  for (const n of [2, 3, 4, 5, 7, 16, 300]) {
    const shards = evenShards(n);
    for (const hex of ["00", "3f", "40", "7fff", "80", "aa", "ab", "ff", "fffe"]) {
      const owners = shards.filter((s) => keyRangeContains(parseKeyRange(s), id(hex)));
      assertEquals(owners.length, 1, `n=${n} id=${hex}`);
    }
  }
  assertEquals(shardForKeyspaceId(evenShards(4), id("9a")), "80-c0");
  assert(shardForKeyspaceId(["-40"], id("9a")) === undefined);
  assertThrows(() => evenShards(0), RangeError, "received 0");
});
