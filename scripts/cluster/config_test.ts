import { assertEquals, assertStringIncludes, assertThrows } from "../../shared/testing/assert.ts";
import {
  ClusterConfigError,
  defaultClusterFile,
  loadClusterFile,
  parseClusterFile,
} from "./config.ts";
import { buildPlan } from "./plan.ts";

const good = {
  cells: ["east", "west"],
  databases: [{ name: "shop", durability: "at_least_1" }],
  keyspaces: [{ name: "orders", database: "shop" }],
  users: [{ name: "alice", password: "s3cret" }],
};

function message(value: unknown, replicas = 2): string {
  return assertThrows(() => parseClusterFile(value, replicas, "'c.json'"), ClusterConfigError)
    .message;
}

Deno.test("a valid cluster file gets its defaults", () => {
  const file = parseClusterFile(good, 2);
  assertEquals(file.keyspaces, [{
    name: "orders",
    database: "shop",
    sharded: false,
    shards: ["0"],
  }]);
  assertEquals(file.cells, ["east", "west"]);
});

Deno.test("the default file is database and keyspace app, durability after the replicas", () => {
  assertEquals(defaultClusterFile(2).databases, [{ name: "app", durability: "at_least_1" }]);
  assertEquals(defaultClusterFile(0).databases, [{ name: "app", durability: "none" }]);
  assertEquals(defaultClusterFile(1).keyspaces, [{ name: "app", sharded: false, shards: ["0"] }]);
});

Deno.test("a bad field is reported with its path and the reason", () => {
  const durability = message({ ...good, databases: [{ name: "shop", durability: "always" }] });
  assertStringIncludes(durability, "invalid cluster file 'c.json'");
  assertStringIncludes(durability, "databases[0].durability:");
  const name = message({ ...good, keyspaces: [{ name: "bad/name", database: "shop" }] });
  assertStringIncludes(name, "keyspaces[0].name: must be 1-128 letters");
  const range = message({ ...good, keyspaces: [{ name: "o", database: "shop", shards: ["zz"] }] });
  assertStringIncludes(range, "keyspaces[0].shards[0]: must be a Vitess-style key range");
  const extra = message({ ...good, users: [{ name: "bob", password: "x", admin: true }] });
  assertStringIncludes(extra, "users[0]");
  assertStringIncludes(extra, "admin");
  assertStringIncludes(message({ keyspaces: good.keyspaces }), "databases:");
});

Deno.test("references, duplicates and durability are checked against the cluster", () => {
  assertStringIncludes(
    message({ ...good, keyspaces: [{ name: "orders" }] }),
    "keyspaces[0].database: database 'orders' is not in 'databases'",
  );
  assertStringIncludes(
    message({ ...good, users: [{ name: "a", password: "x" }, { name: "a", password: "y" }] }),
    "users[1].name: 'a' is listed twice",
  );
  assertStringIncludes(
    message({ ...good, databases: [{ name: "shop", durability: "at_least_2" }] }, 1),
    "databases[0].durability: 'at_least_2' needs at least 2 replicas",
  );
});

const hashVSchema = {
  sharded: true,
  vindexes: { hash: { type: "hash" } },
  tables: { t: { column_vindexes: [{ column: "id", name: "hash" }] } },
};

/** A file with one sharded keyspace; `vschema` null leaves the vschema out. */
function sharded(shards: string[] | undefined, vschema: unknown = hashVSchema) {
  return {
    ...good,
    keyspaces: [{
      name: "orders",
      database: "shop",
      sharded: true,
      ...(shards !== undefined ? { shards } : {}),
      ...(vschema !== null ? { vschema } : {}),
    }],
  };
}

Deno.test("a sharded keyspace gets its shards and its validated vschema", () => {
  const file = parseClusterFile(sharded(["-40", "40-80", "80-c0", "c0-"]), 2);
  const ks = file.keyspaces[0]!;
  assertEquals(ks.sharded, true);
  assertEquals(ks.shards, ["-40", "40-80", "80-c0", "c0-"]);
  assertEquals(ks.vschema?.tables.t?.column_vindexes, [{ column: "id", name: "hash" }]);
  // Order does not matter, nor the width of the bounds; one full-range shard is fine too.
  parseClusterFile(sharded(["8000-", "-80"]), 2);
  parseClusterFile(sharded(["-"]), 2);
  // An unsharded keyspace may carry a vschema too.
  const seq = parseClusterFile({
    ...good,
    keyspaces: [{ name: "orders", database: "shop", vschema: { sharded: false } }],
  }, 2);
  assertEquals(seq.keyspaces[0]?.vschema, { sharded: false, vindexes: {}, tables: {} });
});

Deno.test("the shards of a keyspace cover every keyspace id exactly once", () => {
  const cases: [string[], string][] = [
    [["-80"], "keyspace ids from the end of '-80' up belong to no shard"],
    [["80-"], "keyspace ids below '80-' belong to no shard"],
    [["-40", "80-"], "keyspace ids between '-40' and '80-' belong to no shard"],
    [["-80", "40-"], "'-80' and '40-' overlap"],
    [["-80", "80-", "-"], "overlap"],
    [["-80", "-80", "80-"], "'-80' and '-80' overlap"],
  ];
  for (const [shards, want] of cases) {
    const text = message(sharded(shards));
    assertStringIncludes(text, "keyspaces[0].shards: the shards must cover every keyspace id");
    assertStringIncludes(text, want);
  }
  assertStringIncludes(
    message(sharded(["-80", "80-c0", "zz"])),
    "keyspaces[0].shards[2]: must be a Vitess-style key range",
  );
  assertStringIncludes(
    message(sharded(undefined)),
    "keyspaces[0].shards: a sharded keyspace lists its shards",
  );
  assertStringIncludes(
    message({ ...good, keyspaces: [{ name: "orders", database: "shop", shards: ["-80", "80-"] }] }),
    "keyspaces[0].shards: an unsharded keyspace has exactly one shard, '0'",
  );
});

Deno.test("a sharded keyspace needs a valid vschema that agrees with it", () => {
  assertStringIncludes(
    message(sharded(["-80", "80-"], null)),
    "keyspaces[0].vschema: a sharded keyspace needs a vschema",
  );
  assertStringIncludes(
    message(sharded(["-80", "80-"], {
      ...hashVSchema,
      tables: { t: { column_vindexes: [{ column: "id", name: "nope" }] } },
    })),
    "keyspaces[0].vschema.tables.t.column_vindexes.0.name: names vindex 'nope'",
  );
  assertStringIncludes(
    message(sharded(["-80", "80-"], { ...hashVSchema, sharded: false })),
    "keyspaces[0].vschema.sharded: must match the keyspace's 'sharded' (true): received false",
  );
  assertStringIncludes(
    message(sharded(["-80", "80-"], 42)),
    "keyspaces[0].vschema: must be a vschema object or the path of a JSON file",
  );
  assertStringIncludes(message(sharded(["-80", "80-"], { sharded: true, x: 1 })), "vschema:");
});

Deno.test("lookup tables and sequences must name keyspaces of the file", () => {
  const vs = {
    sharded: true,
    vindexes: {
      hash: { type: "hash" },
      email: {
        type: "lookup_unique",
        params: { table: "lookups.email_idx", from: "email", to: "keyspace_id" },
      },
    },
    tables: {
      t: {
        column_vindexes: [{ column: "id", name: "hash" }, { column: "email", name: "email" }],
        auto_increment: { column: "id", sequence: "seq.t_seq" },
      },
    },
  };
  const text = message(sharded(["-80", "80-"], vs));
  assertStringIncludes(
    text,
    "keyspaces[0].vschema.vindexes.email.params.table: names keyspace 'lookups', which is not in 'keyspaces'",
  );
  assertStringIncludes(
    text,
    "keyspaces[0].vschema.tables.t.auto_increment.sequence: names keyspace 'seq', which is not in 'keyspaces'",
  );
  const withOthers = (seqTables: Record<string, unknown>) => ({
    ...good,
    keyspaces: [
      sharded(["-80", "80-"], vs).keyspaces[0],
      { name: "lookups", database: "shop" },
      { name: "seq", database: "shop", vschema: { sharded: false, tables: seqTables } },
    ],
  });
  const file = parseClusterFile(withOthers({ t_seq: { type: "sequence" } }), 2);
  assertEquals(file.keyspaces.map((k) => k.name), ["orders", "lookups", "seq"]);
  assertStringIncludes(
    message(withOthers({ t_seq: {} })),
    "keyspaces[0].vschema.tables.t.auto_increment.sequence: 't_seq' is not a sequence table",
  );
});

Deno.test("a vschema path is read relative to the cluster file", async () => {
  const dir = await Deno.makeTempDir();
  try {
    await Deno.mkdir(`${dir}/vs`);
    await Deno.writeTextFile(`${dir}/vs/orders.json`, JSON.stringify(hashVSchema));
    const path = `${dir}/c.json`;
    await Deno.writeTextFile(path, JSON.stringify(sharded(["-80", "80-"], "vs/orders.json")));
    const file = await loadClusterFile(path, 2);
    assertEquals(file.keyspaces[0]?.vschema?.sharded, true);

    await Deno.writeTextFile(
      `${dir}/vs/orders.json`,
      JSON.stringify({ ...hashVSchema, tables: { t: {} } }),
    );
    const bad = await loadClusterFile(path, 2).then(() => "", (e) => String(e));
    assertStringIncludes(
      bad,
      "keyspaces[0].vschema.tables.t.column_vindexes: a sharded table needs a primary vindex",
    );
    assertStringIncludes(bad, `(in vschema file '${dir}/vs/orders.json')`);
    await Deno.writeTextFile(`${dir}/vs/orders.json`, "{ nope");
    assertStringIncludes(
      await loadClusterFile(path, 2).then(() => "", (e) => String(e)),
      `keyspaces[0].vschema: vschema file '${dir}/vs/orders.json' is not valid JSON`,
    );
    await Deno.remove(`${dir}/vs/orders.json`);
    assertStringIncludes(
      await loadClusterFile(path, 2).then(() => "", (e) => String(e)),
      `keyspaces[0].vschema: cannot read vschema file '${dir}/vs/orders.json'`,
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("--shards and --vschema shard the default keyspace", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const vs = `${dir}/vs.json`;
    await Deno.writeTextFile(vs, JSON.stringify(hashVSchema));
    const plan = await buildPlan({ replicas: 0, shards: 4, vschema: vs });
    assertEquals(plan.file.keyspaces[0]?.shards, ["-40", "40-80", "80-c0", "c0-"]);
    assertEquals(plan.file.keyspaces[0]?.sharded, true);
    assertEquals(plan.file.databases, [{ name: "app", durability: "none" }]);
    assertEquals(plan.layout.instances.map((i) => `${i.alias}:${i.shard}`), [
      "app--40-0:-40",
      "app-40-80-0:40-80",
      "app-80-c0-0:80-c0",
      "app-c0--0:c0-",
    ]);
    assertEquals(plan.options.shards, 4);
    assertEquals(plan.options.vschema, vs);
    const two = await buildPlan({ replicas: 1, shards: 2, vschema: vs });
    assertEquals(two.layout.instances.map((i) => i.alias), [
      "app--80-0",
      "app--80-1",
      "app-80--0",
      "app-80--1",
    ]);
    // --shards 1 is the unsharded default; it takes an unsharded vschema.
    await Deno.writeTextFile(`${dir}/u.json`, JSON.stringify({ sharded: false }));
    const one = await buildPlan({ shards: 1, vschema: `${dir}/u.json` });
    assertEquals(one.file.keyspaces[0]?.shards, ["0"]);
    assertEquals((await buildPlan({ shards: 1 })).file.keyspaces[0]?.sharded, false);

    const refused = async (input: Parameters<typeof buildPlan>[0]) =>
      await buildPlan(input).then(() => "", (e) => `${e.name}: ${e.message}`);
    assertStringIncludes(await refused({ shards: 2 }), "--shards needs --vschema FILE");
    assertStringIncludes(await refused({ vschema: vs }), "--vschema needs --shards N");
    assertStringIncludes(await refused({ shards: 0, vschema: vs }), "'--shards' must be");
    await Deno.writeTextFile(`${dir}/c.json`, JSON.stringify(good));
    assertStringIncludes(
      await refused({ shards: 2, vschema: vs, config: `${dir}/c.json` }),
      "--shards 2 contradicts --config",
    );
    assertStringIncludes(
      await refused({ vschema: vs, config: `${dir}/c.json` }),
      "--vschema contradicts --config",
    );
    assertStringIncludes(
      await refused({ shards: 2, vschema: `${dir}/u.json` }),
      "keyspaces[0].vschema.sharded: must match",
    );
    assertStringIncludes(await refused({ shards: 2 }), "ClusterConfigError");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("the plan takes its cells from the file and refuses a contradicting --cells", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const path = `${dir}/c.json`;
    await Deno.writeTextFile(path, JSON.stringify(good));
    const plan = await buildPlan({ replicas: 1, config: path });
    assertEquals(plan.cells, ["east", "west"]);
    assertEquals(plan.auth, "scram-sha-256");
    assertEquals(plan.layout.instances.map((i) => `${i.alias}@${i.cell}`), [
      "orders-0-0@east",
      "orders-0-1@west",
    ]);
    const err = await buildPlan({ replicas: 1, cells: 3, config: path }).then(
      () => undefined,
      (e) => e,
    );
    assertStringIncludes(String(err), "--cells 3 contradicts the cluster file");
    await Deno.writeTextFile(path, "{ not json");
    const bad = await buildPlan({ config: path }).then(() => undefined, (e) => e);
    assertStringIncludes(String(bad), "is not valid JSON");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("the example files are valid", async () => {
  const path = new URL("./example.json", import.meta.url).pathname;
  const plan = await buildPlan({ replicas: 2, config: path });
  assertEquals(plan.file.keyspaces.length > 0, true);
  const shardedPath = new URL("./example_sharded.json", import.meta.url).pathname;
  const shardedPlan = await buildPlan({ replicas: 1, config: shardedPath });
  assertEquals(shardedPlan.file.keyspaces.map((k) => [k.name, k.shards]), [
    ["customers", ["-80", "80-"]],
    ["lookups", ["0"]],
    ["seq", ["0"]],
  ]);
  assertEquals(shardedPlan.file.keyspaces[0]?.vschema?.vindexes.email_idx?.type, "lookup_unique");
  const appVSchema = new URL("./example_app_vschema.json", import.meta.url).pathname;
  await buildPlan({ replicas: 0, shards: 2, vschema: appVSchema });
});
