import { assert, assertEquals, assertStringIncludes } from "../../shared/testing/assert.ts";
import { TesseraError } from "../../shared/errors/mod.ts";
import {
  evenShards,
  type KeyspaceVSchema,
  parseVSchema,
  shardForKeyspaceId,
} from "../../shared/vschema/mod.ts";
import { buildVindexes } from "../sharding/mod.ts";
import {
  Bindings,
  buildInsertQuery,
  explainPlan,
  initParser,
  type Literal,
  type Plan,
  Planner,
  type Primitive,
  renderQuery,
  resolveValue,
  type Route,
} from "./mod.ts";
import { CASES } from "./testdata/cases.ts";

await initParser();

const raw = JSON.parse(
  await Deno.readTextFile(new URL("./testdata/vschemas.json", import.meta.url)),
);
const VSCHEMAS: Record<string, KeyspaceVSchema> = Object.fromEntries(
  Object.entries(raw).map(([ks, v]) => [ks, parseVSchema(v, ks)]),
);
const SHARDS = evenShards(4);
const vindexes = buildVindexes(VSCHEMAS.customer as KeyspaceVSchema, "customer");

function shape(p: Primitive): string {
  switch (p.type) {
    case "route":
      return `route:${p.opcode}`;
    case "concatenate":
      return `concatenate(${p.inputs.map(shape).join(",")})`;
    case "join":
      return `join:${p.kind}(${shape(p.outer)},${shape(p.inner)})`;
    case "insert":
      return "insert";
    case "transaction":
      return `transaction:${p.action}`;
    case "session":
      return `session:${p.action}`;
    default:
      return `${p.type}>${shape(p.input)}`;
  }
}

function firstRoute(p: Primitive): Route | undefined {
  if (p.type === "route") return p;
  if (p.type === "concatenate") return firstRoute(p.inputs[0] as Primitive);
  if (p.type === "join") return firstRoute(p.outer);
  if ("input" in p) return firstRoute(p.input);
  return undefined;
}

function shardsOf(plan: Plan, literals: Literal[]): string | undefined {
  if (plan.root.type === "insert") return "per row";
  const r = firstRoute(plan.root);
  if (r === undefined) return undefined;
  switch (r.opcode) {
    case "unsharded":
      return "only";
    case "scatter":
    case "dml_all":
      return "all";
    case "reference":
      return r.write ? "all" : "any";
    case "lookup":
      return "lookup";
  }
  if (plan.paramCount > 0) return "per value";
  const b = new Bindings(plan, [], literals);
  const v = vindexes.get(r.vindex as string);
  assert(v !== undefined);
  const ids = v.map((r.values ?? []).map((e) => resolveValue(e, b)));
  const set = new Set(ids.map((m) => m.kind === "id" ? shardForKeyspaceId(SHARDS, m.id) : "none"));
  return [...set].sort().join(",");
}

Deno.test(`planner cases (${CASES.length}) give the expected plan shape and shards`, () => {
  const planner = new Planner(VSCHEMAS);
  const failures: string[] = [];
  for (const [ks, sql, want, wantShards] of CASES) {
    let got: string;
    let shards: string | undefined;
    try {
      const [p] = planner.planSql(sql, ks);
      assert(p !== undefined);
      got = shape(p.plan.root);
      shards = shardsOf(p.plan, p.literals);
      // Every plan renders as EXPLAIN text.
      assert(explainPlan(p.plan.root).length > 0);
    } catch (err) {
      if (!(err instanceof TesseraError)) throw err;
      got = `error:${err.code}`;
      if (err.code === "0A000") {
        assertStringIncludes(err.message, "is not supported in sharded keyspace");
      }
    }
    if (got !== want) failures.push(`${sql}\n    want ${want}\n    got  ${got}`);
    else if (wantShards !== undefined && shards !== wantShards) {
      failures.push(`${sql}\n    want shards ${wantShards}\n    got  ${shards}`);
    }
  }
  assert(CASES.length >= 80);
  assertEquals(failures, []);
});

Deno.test("statements differing only in constants share a cached plan", () => {
  const planner = new Planner(VSCHEMAS);
  const a = planner.planSql("SELECT * FROM customer WHERE id = 1", "customer")[0];
  const b = planner.planSql("SELECT * FROM customer WHERE id = 2", "customer")[0];
  assert(a && b);
  assert(!a.cached && b.cached);
  assertEquals(a.plan, b.plan);
  assertEquals(a.plan.normalized, "SELECT * FROM customer WHERE id = $1");
  // The same text with a client parameter is a different statement.
  const c = planner.planSql("SELECT * FROM customer WHERE id = $1", "customer")[0];
  assert(c && !c.cached);
  // Rendering inlines the literals exactly as written.
  const r = b.plan.root as Route;
  assertEquals(renderQuery(r.query, new Bindings(b.plan, [], b.literals)), {
    sql: "SELECT * FROM customer WHERE id = 2",
    params: [],
  });
  // The cache is bounded.
  const small = new Planner(VSCHEMAS, { cacheSize: 2 });
  for (const t of ["customer", "orders", "order_lines"]) {
    small.planSql(`SELECT * FROM ${t}`, "customer");
  }
  assertEquals(small.cacheStats.size, 2);
});

Deno.test("scatter plans push down rewritten SQL", () => {
  const planner = new Planner(VSCHEMAS);
  const plan = (sql: string) => planner.planSql(sql, "customer")[0]!.plan;
  const avg = plan("SELECT status, avg(total) AS a FROM orders GROUP BY status");
  assertEquals(
    firstRoute(avg.root)?.query.sql,
    "SELECT status, sum(total) AS a, count(total) FROM orders GROUP BY status",
  );
  const lim = plan("SELECT id FROM customer ORDER BY name DESC LIMIT 10 OFFSET 5");
  assertEquals(
    firstRoute(lim.root)?.query.sql,
    "SELECT id, name FROM customer ORDER BY name DESC LIMIT 10 + 5",
  );
  assert(lim.root.type === "project" && lim.root.input.type === "limit");
  const ms = lim.root.input.input;
  assert(ms.type === "merge_sort");
  assertEquals(ms.keys, [{ column: 1, descending: true, nullsFirst: true, expr: "name" }]);
  const star = plan("SELECT * FROM customer ORDER BY name");
  assert(star.root.type === "project" && star.root.dropLast === 1);
  assert(star.root.input.type === "merge_sort");
  assertEquals(star.root.input.keys[0]?.column, -1);
  const having = plan("SELECT status, count(*) FROM orders GROUP BY status HAVING count(*) > 2");
  assert(having.root.type === "filter");
  assertEquals(having.root.predicate, {
    op: ">",
    left: { column: 1 },
    right: { value: { kind: "bind", index: 1 } },
  });
  assertEquals(
    firstRoute(having.root)?.query.sql,
    "SELECT status, count(*) FROM orders GROUP BY status",
  );
});

Deno.test("cross-shard joins bind the outer column into the inner route", () => {
  const planner = new Planner(VSCHEMAS);
  const [p] = planner.planSql(
    "SELECT o.id, p.name FROM orders o JOIN products p ON o.sku = p.sku WHERE o.customer_id = 1",
    "customer",
  );
  const j = p!.plan.root;
  assert(j.type === "join");
  assertEquals(j.vars, [{ bind: 2, column: 1 }]);
  assertEquals(j.columns, [{ side: "outer", column: 0 }, { side: "inner", column: 0 }]);
  assert(j.outer.type === "route" && j.inner.type === "route");
  assertEquals(j.outer.query.sql, "SELECT o.id, o.sku FROM orders AS o WHERE o.customer_id = $1");
  assertEquals(j.inner.query.sql, "SELECT p.name FROM products AS p WHERE p.sku = $2");
  assertEquals(j.inner.values, [{ kind: "bind", index: 2 }]);
  const b = new Bindings(p!.plan, [], p!.literals).withVars([[2, "sku-9"]]);
  assertEquals(renderQuery(j.inner.query, b), {
    sql: "SELECT p.name FROM products AS p WHERE p.sku = $1",
    params: ["sku-9"],
  });
});

Deno.test("INSERT plans route per row, fill sequences and write lookups", () => {
  const planner = new Planner(VSCHEMAS);
  const [p] = planner.planSql(
    "INSERT INTO customer (name, email) VALUES ('a', 'a@x'), ($1, $2) RETURNING id",
    "customer",
  );
  const ins = p!.plan.root;
  assert(ins.type === "insert");
  assertEquals(ins.columns, ["name", "email", "id"]);
  assertEquals(ins.primary, { vindex: "hash", columns: [2] });
  assertEquals(ins.lookups, [{ vindex: "email_idx", columns: [1] }]);
  assertEquals(ins.autoIncrement, {
    column: 2,
    keyspace: "seq",
    sql: "SELECT nextval('customer_seq') FROM generate_series(1, $1)",
  });
  assertEquals(ins.rows[1]?.values, [undefined, { kind: "bind", index: 2 }, { kind: "sequence" }]);
  const q = buildInsertQuery(ins, [0, 1], new Map([[0, 100n], [1, 101n]]));
  assertEquals(
    renderQuery(q, new Bindings(p!.plan, ["b", "b@x"], p!.literals)),
    {
      sql:
        "INSERT INTO customer (name, email, id) VALUES ('a', 'a@x', 100), ($1, $2, 101) RETURNING id",
      params: ["b", "b@x"],
    },
  );
});

Deno.test("DELETE and UPDATE of lookup owners select the old lookup values first", () => {
  const planner = new Planner(VSCHEMAS);
  const del = planner.planSql("DELETE FROM customer WHERE id = 1", "customer")[0]!.plan.root;
  assert(del.type === "route" && del.owned !== undefined);
  assertEquals(del.owned.query.sql, "SELECT id, email FROM customer WHERE id = $1 FOR UPDATE");
  assertEquals(del.owned.lookups, [{ vindex: "email_idx", columns: [1] }]);
  const upd =
    planner.planSql("UPDATE customer SET email = 'n@x' WHERE id = 1", "customer")[0]!.plan.root;
  assert(upd.type === "route" && upd.owned !== undefined);
  assertEquals(upd.owned.lookups[0]?.newValues, [{ kind: "bind", index: 1 }]);
  const plain =
    planner.planSql("UPDATE customer SET name = 'n' WHERE id = 1", "customer")[0]!.plan.root;
  assert(plain.type === "route" && plain.owned === undefined);
});

Deno.test("refusals say what is unsupported and why", () => {
  const planner = new Planner(VSCHEMAS);
  try {
    planner.planSql("SELECT count(DISTINCT status) FROM orders", "customer");
    throw new Error("should refuse");
  } catch (err) {
    assert(err instanceof TesseraError);
    assertEquals(err.code, "0A000");
    assertEquals(
      err.message,
      'count(DISTINCT ...) is not supported in sharded keyspace "customer": distinct aggregates cannot be merged from per-shard results',
    );
  }
});

Deno.test("EXPLAIN text names the route kind, shards and pushed-down SQL", () => {
  const planner = new Planner(VSCHEMAS);
  const p = planner.planSql(
    "SELECT id FROM customer WHERE id IN (1, 2) ORDER BY id LIMIT 3",
    "customer",
  )[0]!;
  assertEquals(explainPlan(p.plan.root), [
    "Limit count='3' offset=0",
    "  MergeSort id (col 0) ASC NULLS LAST",
    "    Route in keyspace=customer shards=per value via vindex hash [$1, $2]",
    "      query: SELECT id FROM customer WHERE id IN ($1, $2) ORDER BY id LIMIT 3",
  ]);
});
