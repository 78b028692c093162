import { assertEquals } from "../../shared/testing/assert.ts";
import type { PoolerRecord, ShardRecord } from "../../shared/topo/mod.ts";
import {
  type PlanOptions,
  planTarget,
  type RoutingView,
  type ViewPooler,
} from "./topo_resolver.ts";
import { parseDatabaseName } from "./target.ts";

function pooler(
  alias: string,
  type: PoolerRecord["type"],
  extra: Partial<PoolerRecord> & { rev?: number } = {},
): ViewPooler {
  const { rev, ...rest } = extra;
  return {
    record: {
      alias,
      cell: "zone1",
      keyspace: "app",
      shard: "0",
      type,
      tags: [],
      pgAddress: `127.0.0.1:${alias.length + 16000}`,
      rpcAddress: "127.0.0.1:16100",
      ...rest,
    },
    createRevision: rev ?? 1,
  };
}

function view(
  poolers: ViewPooler[],
  shards: ShardRecord[] = [],
  keyspaces: string[] = [],
): RoutingView {
  const s = new Map<string, Map<string, ShardRecord>>();
  for (const r of shards) {
    if (!s.has(r.keyspace)) s.set(r.keyspace, new Map());
    s.get(r.keyspace)!.set(r.range, r);
  }
  return {
    keyspaces: new Map(keyspaces.map((k) => [k, { name: k, sharded: false }])),
    shards: s,
    poolers: new Map(poolers.map((p) => [`${p.record.cell}/${p.record.alias}`, p])),
  };
}

interface Case {
  name: string;
  view: RoutingView;
  database: string;
  options?: PlanOptions;
  /** Expected alias, or `!reason`. */
  expected: string;
}

const cases: Case[] = [
  {
    name: "the registered primary",
    view: view([pooler("p1", "primary"), pooler("r1", "replica")]),
    database: "app",
    expected: "p1",
  },
  {
    name: "primaryAlias wins over a pooler that still claims primary",
    view: view([pooler("old", "primary"), pooler("new", "primary")], [{
      keyspace: "app",
      range: "0",
      primaryAlias: "new",
      term: 2,
    }]),
    database: "app",
    expected: "new",
  },
  {
    name: "a recorded primary still reporting replica is being promoted: wait, never the old one",
    view: view([pooler("old", "primary"), pooler("new", "replica")], [{
      keyspace: "app",
      range: "0",
      primaryAlias: "new",
      term: 2,
    }]),
    database: "app",
    expected: "!unavailable",
  },
  {
    name: "primaryAlias set but not registered: nothing serves",
    view: view([pooler("old", "primary")], [{
      keyspace: "app",
      range: "0",
      primaryAlias: "gone",
      term: 2,
    }]),
    database: "app",
    expected: "!unavailable",
  },
  {
    name: "two poolers claim primary: the latest registered",
    view: view([pooler("a", "primary", { rev: 5 }), pooler("b", "primary", { rev: 9 })]),
    database: "app@primary",
    expected: "b",
  },
  {
    name: "unknown keyspace",
    view: view([pooler("p1", "primary")]),
    database: "nope",
    expected: "!unknown",
  },
  {
    name: "known keyspace without poolers",
    view: view([], [], ["app"]),
    database: "app",
    expected: "!unavailable",
  },
  {
    name: "known keyspace, shard record only",
    view: view([], [{ keyspace: "app", range: "0", term: 1 }]),
    database: "app",
    expected: "!unavailable",
  },
  {
    name: "primary reported failing",
    view: view([pooler("p1", "primary")]),
    database: "app",
    options: { bad: new Set(["p1"]) },
    expected: "!unavailable",
  },
  {
    name: "replica: least loaded",
    view: view([pooler("p1", "primary"), pooler("r1", "replica"), pooler("r2", "replica")]),
    database: "app@replica",
    options: { load: new Map([["r1", 3], ["r2", 1]]) },
    expected: "r2",
  },
  {
    name: "replica: equal load goes to the first alias",
    view: view([pooler("p1", "primary"), pooler("r2", "replica"), pooler("r1", "replica")]),
    database: "app@replica",
    expected: "r1",
  },
  {
    name: "replica: round robin among equals by turn",
    view: view([pooler("r2", "replica"), pooler("r1", "replica"), pooler("r3", "replica")]),
    database: "app@replica",
    options: { turn: 4 },
    expected: "r2",
  },
  {
    name: "replica: local cell preferred",
    view: view([
      pooler("r1", "replica", { cell: "zone2" }),
      pooler("r2", "replica", { cell: "zone1" }),
    ]),
    database: "app@replica",
    options: { cell: "zone1", load: new Map([["r2", 10]]) },
    expected: "r2",
  },
  {
    name: "replica: none and no fallback",
    view: view([pooler("p1", "primary")]),
    database: "app@replica",
    expected: "!unavailable",
  },
  {
    name: "replica: none, fallback to primary",
    view: view([pooler("p1", "primary")]),
    database: "app@replica",
    options: { replicaFallback: true },
    expected: "p1",
  },
  {
    name: "replica: failing replica skipped",
    view: view([pooler("r1", "replica"), pooler("r2", "replica")]),
    database: "app@replica",
    options: { bad: new Set(["r1"]) },
    expected: "r2",
  },
  {
    name: "tag: pooler with the tag",
    view: view([
      pooler("p1", "primary"),
      pooler("r1", "replica"),
      pooler("o1", "rdonly", { tags: ["olap"] }),
    ]),
    database: "app@olap",
    expected: "o1",
  },
  {
    name: "tag: nobody has it",
    view: view([pooler("p1", "primary")]),
    database: "app@olap",
    expected: "!unavailable",
  },
  {
    name: "other keyspaces' poolers are ignored",
    view: view([pooler("p1", "primary", { keyspace: "other" }), pooler("p2", "replica")]),
    database: "app",
    expected: "!unavailable",
  },
  {
    name: "sharded keyspace",
    view: view([
      pooler("a", "primary", { shard: "-80" }),
      pooler("b", "primary", { shard: "80-" }),
    ]),
    database: "app",
    expected: "!unsupported",
  },
];

for (const c of cases) {
  Deno.test(`planTarget: ${c.name}`, () => {
    const plan = planTarget(c.view, parseDatabaseName(c.database), c.options);
    assertEquals(plan.ok ? plan.endpoint.alias : `!${plan.reason}`, c.expected);
  });
}

Deno.test("planTarget: the endpoint carries the address and the shard's term", () => {
  const plan = planTarget(
    view([pooler("p1", "primary", { pgAddress: "10.0.0.1:6000" })], [{
      keyspace: "app",
      range: "0",
      term: 7,
    }]),
    parseDatabaseName("app"),
  );
  assertEquals(plan, {
    ok: true,
    endpoint: {
      alias: "p1",
      address: "10.0.0.1:6000",
      cell: "zone1",
      keyspace: "app",
      shard: "0",
      type: "primary",
      term: 7,
    },
  });
});

Deno.test("planTarget: messages name the target", () => {
  const plan = planTarget(view([pooler("p1", "primary")]), parseDatabaseName("app@replica"));
  assertEquals(plan.ok, false);
  if (!plan.ok) assertEquals(plan.message.includes('"app@replica"'), true, plan.message);
});
