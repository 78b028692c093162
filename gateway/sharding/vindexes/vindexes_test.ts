import { assert, assertEquals } from "../../../shared/testing/assert.ts";
import { bytesToHex, evenShards, shardForKeyspaceId } from "../../../shared/vschema/mod.ts";
import {
  createVindex,
  isLookupVindex,
  type Vindex,
  type VindexMapping,
  type VindexValue,
} from "./mod.ts";

interface Case {
  name: string;
  vindex: Vindex;
  unique: boolean;
  needsLookup: boolean;
  /** value → expected mapping: hex id, "none" or "lookup". */
  map: [VindexValue, string][];
  /** Whether to check the spread over 100k keys. */
  spread?: "integer" | "text";
}

const lookupDef = { table: "lookups.email_idx", from: "email", to: "keyspace_id" };

// One table that every vindex kind runs.
const CASES: Case[] = [
  {
    name: "identity",
    vindex: createVindex("id", { type: "identity" }, "ks"),
    unique: true,
    needsLookup: false,
    map: [
      [1, "0000000000000001"],
      ["1", "0000000000000001"],
      [255n, "00000000000000ff"],
      [-1, "ffffffffffffffff"],
      ["9223372036854775807", "7fffffffffffffff"],
      [null, "none"],
      ["1.5", "none"],
      ["abc", "none"],
    ],
  },
  {
    name: "hash (integer)",
    vindex: createVindex("hash", { type: "hash" }, "ks"),
    unique: true,
    needsLookup: false,
    map: [
      // splitmix64 reference outputs (state 0 → first output e220a8397b1dcdaf).
      [0, "e220a8397b1dcdaf"],
      ["0", "e220a8397b1dcdaf"],
      [0n, "e220a8397b1dcdaf"],
      [1, "910a2dec89025cc1"],
      [null, "none"],
      ["x", "none"],
    ],
    spread: "integer",
  },
  {
    name: "hash (text)",
    vindex: createVindex("h", { type: "hash", params: { key: "text" } }, "ks"),
    unique: true,
    needsLookup: false,
    map: [
      // sha256("abc") = ba7816bf8f01cfea...
      ["abc", "ba7816bf8f01cfea"],
      ["", "e3b0c44298fc1c14"],
      [null, "none"],
    ],
    spread: "text",
  },
  {
    name: "lookup_unique",
    vindex: createVindex("email_idx", { type: "lookup_unique", params: lookupDef }, "ks"),
    unique: true,
    needsLookup: true,
    map: [["a@x", "lookup"], [null, "none"]],
  },
  {
    name: "lookup",
    vindex: createVindex(
      "sku_idx",
      { type: "lookup", params: { ...lookupDef, from: "sku" } },
      "ks",
    ),
    unique: false,
    needsLookup: true,
    map: [["sku-1", "lookup"], [7, "lookup"], [null, "none"]],
  },
];

function show(m: VindexMapping): string {
  return m.kind === "id" ? bytesToHex(m.id) : m.kind;
}

for (const c of CASES) {
  Deno.test(`vindex ${c.name}: maps values, declares uniqueness and cost`, () => {
    assertEquals(c.vindex.unique, c.unique);
    assertEquals(c.vindex.needsLookup, c.needsLookup);
    assert(c.vindex.cost >= 0);
    const got = c.vindex.map(c.map.map(([v]) => v)).map(show);
    assertEquals(got, c.map.map(([, want]) => want));
    // Stable: the same value maps the same way twice.
    assertEquals(c.vindex.map(c.map.map(([v]) => v)).map(show), got);
  });
  if (c.spread !== undefined) {
    Deno.test(`vindex ${c.name}: 100k keys spread within ±5% over 4 and 16 shards`, () => {
      for (const n of [4, 16]) {
        const shards = evenShards(n);
        const counts = new Map<string, number>(shards.map((s) => [s, 0]));
        const keys: VindexValue[] = [];
        for (let i = 1; i <= 100_000; i++) {
          keys.push(c.spread === "integer" ? i : `user-${i}@example.com`);
        }
        for (const m of c.vindex.map(keys)) {
          assert(m.kind === "id");
          const s = shardForKeyspaceId(shards, m.id) as string;
          counts.set(s, (counts.get(s) ?? 0) + 1);
        }
        const expected = 100_000 / n;
        for (const [s, count] of counts) {
          assert(Math.abs(count - expected) / expected < 0.05, `shard ${s} of ${n}: ${count} keys`);
        }
      }
    });
  }
}

Deno.test("lookup vindexes build the lookup, insert and delete SQL", () => {
  const v = createVindex("email_idx", { type: "lookup_unique", params: lookupDef }, "ks");
  assert(isLookupVindex(v));
  assertEquals(v.lookupQuery(["a@x", "b@x"]), {
    keyspace: "lookups",
    sql: 'SELECT "email", "keyspace_id" FROM "email_idx" WHERE "email" IN ($1, $2)',
    params: ["a@x", "b@x"],
  });
  const id = new Uint8Array([1, 2, 3, 4, 5, 6, 7, 8]);
  assertEquals(v.createSql([{ value: "a@x", id }]), {
    keyspace: "lookups",
    sql: 'INSERT INTO "email_idx" ("email", "keyspace_id") VALUES ($1, $2)',
    params: ["a@x", "\\x0102030405060708"],
  });
  assertEquals(
    v.deleteSql("a@x", id).sql,
    'DELETE FROM "email_idx" WHERE ctid IN (SELECT ctid FROM "email_idx" WHERE "email" = $1 AND "keyspace_id" = $2 LIMIT 1)',
  );
  const ids = v.resolve(["a@x", "c@x"], [["a@x", "\\x0102030405060708"]]);
  assertEquals(ids.map((l) => l.map(bytesToHex)), [["0102030405060708"], []]);
  const multi = createVindex("m", {
    type: "lookup",
    params: { table: "t", from: ["a", "b"], to: "k" },
  }, "ks");
  assert(isLookupVindex(multi));
  assertEquals(
    multi.lookupQuery([[1, "x"]]).sql,
    'SELECT "a", "b", "k" FROM "t" WHERE ("a", "b") IN (($1, $2))',
  );
  assertEquals(multi.lookupQuery([[1, "x"]]).keyspace, "ks");
});
