/**
 * The topo resolver against a real etcd: records written by the test, watched by the resolver.
 * (The case with real poolers registered by `runPooler` is in tests/gateway_process_test.ts.)
 */

import { TesseraError } from "../../shared/errors/mod.ts";
import { Logger } from "../../shared/log/mod.ts";
import { startEtcd } from "../../shared/proc/mod.ts";
import { assert, assertEquals, assertRejects } from "../../shared/testing/assert.ts";
import { type PoolerRecord, TopoClient } from "../../shared/topo/mod.ts";
import { parseDatabaseName } from "./target.ts";
import { TopoTargetResolver, type TopoTargetResolverOptions } from "./topo_resolver.ts";

const CLIENT_PORT = 13101;
const PEER_PORT = 13102;
const quiet = () => new Logger({ component: "test", level: "error" });

function record(alias: string, type: PoolerRecord["type"], tags: string[] = []): PoolerRecord {
  return {
    alias,
    cell: "zone1",
    keyspace: "app",
    shard: "0",
    type,
    tags,
    pgAddress: `127.0.0.1:${16000 + alias.length}`,
    rpcAddress: "127.0.0.1:16100",
  };
}

async function withCluster(
  options: TopoTargetResolverOptions,
  fn: (ctx: {
    topo: TopoClient;
    resolver: TopoTargetResolver;
    restartEtcd: (stopped: () => Promise<void>) => Promise<void>;
  }) => Promise<void>,
): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "tessera-gw-resolver-" });
  const etcd = await startEtcd({
    dataDir: dir,
    clientPort: CLIENT_PORT,
    peerPort: PEER_PORT,
    logger: quiet(),
  });
  let topo: TopoClient | undefined;
  let resolver: TopoTargetResolver | undefined;
  try {
    topo = await TopoClient.connect({ endpoints: etcd.endpoint, root: "/gwtest", logger: quiet() });
    await topo.global.cells.put(["zone1"], topo.defaultCellRecord("zone1"));
    await topo.global.keyspaces.put(["app"], { name: "app", sharded: false });
    await topo.global.shards.put(["app", "0"], { keyspace: "app", range: "0", term: 1 });
    resolver = new TopoTargetResolver(topo, { logger: quiet(), cell: "zone1", ...options });
    await resolver.start(10_000);
    assert(resolver.loaded, "the view should load");
    await fn({
      topo,
      resolver,
      restartEtcd: async (stopped) => {
        await etcd.kill(); // SIGKILL: a graceful stop intermittently segfaults Deno's HTTP/2 client
        try {
          await stopped();
        } finally {
          await etcd.restart();
        }
      },
    });
  } finally {
    await resolver?.close();
    await topo?.close();
    await etcd.kill().catch(() => undefined);
    await Deno.remove(dir, { recursive: true });
  }
}

async function poolers(topo: TopoClient) {
  return (await topo.cell("zone1")).poolers;
}

async function eventually(what: string, fn: () => boolean): Promise<void> {
  const deadline = Date.now() + 10_000;
  while (!fn()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

async function retry<T>(fn: () => Promise<T>): Promise<T> {
  const deadline = Date.now() + 15_000;
  while (true) {
    try {
      return await fn();
    } catch (err) {
      if (Date.now() > deadline) throw err;
      await new Promise((r) => setTimeout(r, 200));
    }
  }
}

async function sqlstate(p: Promise<unknown>): Promise<string> {
  const err = await assertRejects(() => p);
  assert(err instanceof TesseraError, `expected a TesseraError, got ${err}`);
  return err.code;
}

Deno.test("resolver: primary chosen, failover buffered until a new primary registers", async () => {
  await withCluster({ bufferWindowMs: 8000 }, async ({ topo, resolver }) => {
    const store = await poolers(topo);
    await store.put(["p1"], record("p1", "primary"));
    await store.put(["r1"], record("r1", "replica"));
    await eventually("p1 in the view", () => resolver.hasServingPrimary());
    assertEquals((await resolver.resolve(parseDatabaseName("app"))).alias, "p1");

    await store.delete("p1");
    await eventually("p1 gone", () => !resolver.hasServingPrimary());
    const started = Date.now();
    const pending = resolver.resolve(parseDatabaseName("app"));
    await eventually("the call to be buffered", () => resolver.stats().bufferedNow === 1);
    await store.put(["r1"], record("r1", "primary"));
    const endpoint = await pending;
    assertEquals(endpoint.alias, "r1");
    assert(Date.now() - started < 8000, "resolved within the window");
    const stats = resolver.stats();
    assertEquals(stats.bufferedNow, 0);
    assertEquals(stats.bufferedTotal, 1);
    assertEquals(stats.choices["app"], { p1: 1, r1: 1 });
  });
});

Deno.test("resolver: primaryAlias in the shard record decides", async () => {
  await withCluster({ bufferWindowMs: 5000 }, async ({ topo, resolver }) => {
    const store = await poolers(topo);
    await store.put(["p1"], record("p1", "primary"));
    await store.put(["p2"], record("p2", "replica"));
    await eventually("p1 serving", () => resolver.hasServingPrimary());
    await topo.global.shards.put(["app", "0"], {
      keyspace: "app",
      range: "0",
      primaryAlias: "p2",
      term: 2,
    });
    await eventually("shard record seen", () => resolver.shardTargets()[0]?.term === 2);
    // p2 still reports itself a replica (being promoted): writes wait until it is a primary.
    const pending = resolver.resolve(parseDatabaseName("app"));
    await store.put(["p2"], record("p2", "primary"));
    assertEquals((await pending).alias, "p2");
    const endpoint = await resolver.resolve(parseDatabaseName("app"));
    assertEquals([endpoint.alias, endpoint.term], ["p2", 2]);
  });
});

Deno.test("resolver: window expiry fails with 08006 naming the keyspace; unknown is 3D000", async () => {
  await withCluster({ bufferWindowMs: 500 }, async ({ resolver }) => {
    const err = await assertRejects(() => resolver.resolve(parseDatabaseName("app")));
    assert(err instanceof TesseraError);
    assertEquals(err.code, "08006");
    assert(err.message.includes('"app"'), err.message);
    assertEquals(resolver.stats().timeouts, 1);
    assertEquals(await sqlstate(resolver.resolve(parseDatabaseName("nosuch"))), "3D000");
    const abort = new AbortController();
    const waiting = resolver.resolve(parseDatabaseName("app"), abort.signal);
    abort.abort();
    assertEquals(await sqlstate(waiting), "57014");
    assertEquals(resolver.stats().bufferedNow, 0);
  });
});

Deno.test("resolver: more than maxBuffered waiting calls fail with 53300", async () => {
  await withCluster({ bufferWindowMs: 3000, maxBuffered: 2 }, async ({ topo, resolver }) => {
    const target = parseDatabaseName("app");
    const waiting = [resolver.resolve(target), resolver.resolve(target)];
    await eventually("two buffered", () => resolver.stats().bufferedNow === 2);
    assertEquals(await sqlstate(resolver.resolve(target)), "53300");
    assertEquals(resolver.stats().rejected, 1);
    await (await poolers(topo)).put(["p1"], record("p1", "primary"));
    assertEquals((await Promise.all(waiting)).map((e) => e.alias), ["p1", "p1"]);
  });
});

Deno.test("resolver: replicas round robin, fallback only when configured, tags", async () => {
  await withCluster({ bufferWindowMs: 300 }, async ({ topo, resolver }) => {
    const store = await poolers(topo);
    await store.put(["p1"], record("p1", "primary"));
    await store.put(["r1"], record("r1", "replica"));
    await store.put(["r2"], record("r2", "replica", ["olap"]));
    await eventually("three poolers", () => resolver.view.poolers.size === 3);
    const replica = parseDatabaseName("app@replica");
    const chosen = [];
    for (let i = 0; i < 4; i++) chosen.push((await resolver.resolve(replica)).alias);
    assertEquals(chosen.sort(), ["r1", "r1", "r2", "r2"]);
    assertEquals((await resolver.resolve(parseDatabaseName("app@olap"))).alias, "r2");

    resolver.reportFailure(await resolver.resolve(replica), new Error("refused"));
    const next = await resolver.resolve(replica);
    assert(!resolver.stats().failing.includes(next.alias), "a failing replica is avoided");

    await store.delete("r1");
    await store.delete("r2");
    await eventually("replicas gone", () => resolver.view.poolers.size === 1);
    assertEquals(await sqlstate(resolver.resolve(replica)), "08006");
  });
  await withCluster({ bufferWindowMs: 300, replicaFallback: true }, async ({ topo, resolver }) => {
    await (await poolers(topo)).put(["p1"], record("p1", "primary"));
    await eventually("p1", () => resolver.hasServingPrimary());
    assertEquals((await resolver.resolve(parseDatabaseName("app@replica"))).alias, "p1");
  });
});

Deno.test("resolver: keeps answering from the last view while etcd is down, then follows again", async () => {
  await withCluster({ bufferWindowMs: 5000 }, async ({ topo, resolver, restartEtcd }) => {
    const store = await poolers(topo);
    await store.put(["p1"], record("p1", "primary"));
    await eventually("p1", () => resolver.hasServingPrimary());
    await restartEtcd(async () => {
      assertEquals((await resolver.resolve(parseDatabaseName("app"))).alias, "p1");
    });
    // The client's circuit breaker stays open for a moment after etcd comes back.
    await retry(() => store.delete("p1"));
    await retry(() => store.put(["p2"], record("p2", "primary")));
    await eventually("p2 after the restart", () => resolver.shardTargets()[0]?.primary === "p2");
    assertEquals((await resolver.resolve(parseDatabaseName("app"))).alias, "p2");
  });
});

Deno.test("resolver: follows cells added to and removed from the global cells list", async () => {
  await withCluster({ bufferWindowMs: 300 }, async ({ topo, resolver }) => {
    await (await poolers(topo)).put(["r1"], record("r1", "replica"));
    await topo.global.cells.put(["zone2"], topo.defaultCellRecord("zone2"));
    const zone2 = (await topo.cell("zone2")).poolers;
    await zone2.put(["r2"], { ...record("r2", "replica"), cell: "zone2" });
    // Each cell is watched on its own: zone2's r2 may arrive before zone1's r1.
    await eventually(
      "r1 from zone1 and r2 from zone2",
      () => resolver.view.poolers.has("zone1/r1") && resolver.view.poolers.has("zone2/r2"),
    );
    // The gateway's own cell (zone1) is preferred while it has a replica.
    for (let i = 0; i < 3; i++) {
      assertEquals((await resolver.resolve(parseDatabaseName("app@replica"))).alias, "r1");
    }
    await (await poolers(topo)).delete("r1");
    await eventually("r1 gone", () => !resolver.view.poolers.has("zone1/r1"));
    const other = await resolver.resolve(parseDatabaseName("app@replica"));
    assertEquals([other.alias, other.cell], ["r2", "zone2"]);
    await topo.global.cells.delete("zone2");
    await eventually("zone2 dropped", () => resolver.view.poolers.size === 0);
  });
});
