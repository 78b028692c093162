import { assertEquals, assertStringIncludes, assertThrows } from "../../shared/testing/assert.ts";
import { ClusterConfigError, defaultClusterFile, parseClusterFile } from "./config.ts";
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

Deno.test("sharded keyspaces and several shards are refused for now", () => {
  assertStringIncludes(
    message({ ...good, keyspaces: [{ name: "orders", database: "shop", sharded: true }] }),
    "keyspaces[0].sharded: sharded keyspaces are not supported",
  );
  assertStringIncludes(
    message({ ...good, keyspaces: [{ name: "orders", database: "shop", shards: ["-80", "80-"] }] }),
    "keyspaces[0].shards: an unsharded keyspace has exactly one shard",
  );
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

Deno.test("the example file is valid", async () => {
  const path = new URL("./example.json", import.meta.url).pathname;
  const plan = await buildPlan({ replicas: 2, config: path });
  assertEquals(plan.file.keyspaces.length > 0, true);
});
