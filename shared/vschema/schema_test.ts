import { assert, assertEquals, assertThrows } from "../testing/assert.ts";
import { TesseraError } from "../errors/mod.ts";
import { parseVSchema, validateVSchema } from "./mod.ts";

const good = {
  sharded: true,
  vindexes: {
    hash: { type: "hash" },
    email_idx: {
      type: "lookup_unique",
      params: { table: "lookups.customer_email_idx", from: "email", to: "keyspace_id" },
      owner: "customer",
    },
  },
  tables: {
    customer: {
      column_vindexes: [{ column: "id", name: "hash" }, { column: "email", name: "email_idx" }],
      auto_increment: { column: "id", sequence: "seq.customer_seq" },
    },
    countries: { type: "reference" },
  },
};

function issuesOf(json: unknown): string[] {
  const r = validateVSchema(json);
  assert(!r.ok, "should be invalid");
  return r.issues.map((i) => `${i.path}: ${i.message}`);
}

Deno.test("a valid vschema parses, with defaults filled", () => {
  const vs = parseVSchema(good);
  assertEquals(vs.tables.customer?.column_vindexes?.length, 2);
  assertEquals(parseVSchema({ sharded: false }), { sharded: false, vindexes: {}, tables: {} });
});

Deno.test("invalid vschemas name the field and the reason", () => {
  const cases: [unknown, string][] = [
    [{ sharded: "yes" }, "sharded: "],
    [{ ...good, vindexes: { hash: { type: "md5" } } }, "vindexes.hash.type"],
    [
      { ...good, tables: { t: { column_vindexes: [{ column: "id", name: "nope" }] } } },
      "tables.t.column_vindexes.0.name: names vindex 'nope'",
    ],
    [
      { ...good, tables: { t: {} } },
      "tables.t.column_vindexes: a sharded table needs a primary vindex",
    ],
    [
      {
        sharded: true,
        vindexes: { l: { type: "lookup", params: { table: "k.t", from: "a", to: "b" } } },
        tables: { t: { column_vindexes: [{ column: "id", name: "l" }] } },
      },
      "tables.t.column_vindexes.0.name: the primary vindex must be unique",
    ],
    [{ sharded: true, vindexes: { l: { type: "lookup" } } }, "vindexes.l.params.table"],
    [
      { sharded: true, vindexes: { h: { type: "hash", params: { key: "blob" } } } },
      "vindexes.h.params.key: must be 'integer' or 'text'",
    ],
    [
      { sharded: true, tables: { s: { type: "sequence" } } },
      "tables.s.type: a sequence table must be in an unsharded keyspace",
    ],
    [{ sharded: false, tables: { r: { type: "reference" } } }, "tables.r.type"],
    [{ ...good, extra: 1 }, "(root)"],
    [{
      ...good,
      tables: { t: { column_vindexes: [{ column: "a", columns: ["b"], name: "hash" }] } },
    }, "exactly one of 'column' or 'columns'"],
    [{ ...good, tables: { "bad name": { type: "reference" } } }, "tables.bad name"],
    [{
      ...good,
      tables: {
        t: { column_vindexes: [{ column: "id", name: "hash" }], auto_increment: { column: "id" } },
      },
    }, "tables.t.auto_increment.sequence"],
  ];
  for (const [json, want] of cases) {
    const issues = issuesOf(json);
    assert(issues.some((i) => i.includes(want)), `want '${want}' in ${JSON.stringify(issues)}`);
  }
  const err = assertThrows(() => parseVSchema({ sharded: 1 }, "app"), TesseraError);
  assertEquals(err.code, "22023");
  assert(err.message.includes("invalid vschema for 'app': sharded:"), err.message);
});
