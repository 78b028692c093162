import { Etcd3 } from "./etcd3.ts";
import { SqlState, TesseraError } from "../errors/mod.ts";
import { assert, assertEquals, assertRejects, assertStringIncludes } from "../testing/assert.ts";
import { startEtcd } from "../proc/mod.ts";
import { CHECK_TIMERS, collect, eventually, memoryLogger, withEtcd } from "./_test_utils.ts";
import { type RecordEvent, type ShardRecord, TopoClient } from "./mod.ts";

const CLIENT_PORT = 12410;
const PEER_PORT = 12411;
const CELL_CLIENT_PORT = 12412;
const CELL_PEER_PORT = 12413;

Deno.test(
  "records round-trip with revisions, and list filters by key shape",
  CHECK_TIMERS,
  async () => {
    await withEtcd(CLIENT_PORT, PEER_PORT, async (etcd) => {
      const { logger } = memoryLogger();
      const topo = await TopoClient.connect({ endpoints: etcd.endpoint, logger });
      try {
        const { global } = topo;
        assertEquals(await global.keyspaces.get("app"), undefined);
        const r1 = await global.keyspaces.put(["app"], { name: "app", sharded: true });
        await global.vschemas.put(["app"], { tables: { t: { column_vindexes: [] } } });
        await global.shards.put(["app", "-80"], { keyspace: "app", range: "-80", term: 0 });
        await global.shards.put(["app", "80-"], { keyspace: "app", range: "80-", term: 3 });
        await global.shards.put(["other", "0"], { keyspace: "other", range: "0", term: 1 });

        const ks = await global.keyspaces.get("app");
        assertEquals(ks?.value, { name: "app", sharded: true });
        assertEquals(ks?.revision, r1);
        assertEquals(ks?.key, "/tessera/global/keyspaces/app");

        // keyspaces/ also holds vschemas and shards: list() returns only keyspace records.
        const keyspaces = await global.keyspaces.list();
        assertEquals(keyspaces.map((i) => i.key), ["/tessera/global/keyspaces/app"]);

        const appShards = await global.shards.list("app");
        assertEquals(
          appShards.map((i) => i.type === "record" ? [i.params, i.value.term] : i.type),
          [[["app", "-80"], 0], [["app", "80-"], 3]],
        );
        assertEquals((await global.shards.list()).length, 3);
        assertEquals((await global.vschemas.get("app"))?.value, {
          tables: { t: { column_vindexes: [] } },
        });

        assertEquals(await global.shards.delete("app", "-80"), true);
        assertEquals(await global.shards.delete("app", "-80"), false);
        assertEquals(await global.shards.get("app", "-80"), undefined);

        await global.routingRules.put([], { rules: [] });
        assertEquals((await global.routingRules.get())?.value, { rules: [] });
        assertEquals((await global.routingRules.list()).length, 1);
      } finally {
        await topo.close();
      }
    });
  },
);

Deno.test(
  "writes are validated: bad records, bad keys and mismatched identities are refused",
  CHECK_TIMERS,
  async () => {
    await withEtcd(CLIENT_PORT, PEER_PORT, async (etcd) => {
      const topo = await TopoClient.connect({
        endpoints: etcd.endpoint,
        logger: memoryLogger().logger,
      });
      try {
        const shards = topo.global.shards;
        const bad = await assertRejects(
          () => shards.put(["app", "-80"], { keyspace: "app", range: "-80", term: -1 }),
          TesseraError,
          "invalid shard 'app/-80' record: term:",
        );
        assertEquals(bad.code, SqlState.invalidParameterValue);
        await assertRejects(
          () => shards.put(["app", "-80"], { keyspace: "app", range: "80-", term: 0 }),
          TesseraError,
          "names itself 'app/80-' but is stored as 'app/-80'",
        );
        await assertRejects(() => shards.get("app", "-8"), TesseraError, "invalid shard range");
        await assertRejects(() => shards.get("a/b", "-80"), TesseraError, "'a/b'");
        await assertRejects(
          () =>
            topo.global.users.put(["bob"], {
              name: "bob",
              scramVerifier: "md5abcdef",
            }),
          TesseraError,
          "SCRAM-SHA-256",
        );
        await topo.global.users.put(["bob"], {
          name: "bob",
          scramVerifier: "SCRAM-SHA-256$4096:c2FsdA==$c3RvcmVkS2V5:c2VydmVyS2V5",
        });
        await topo.global.cells.put(["zone1"], topo.defaultCellRecord("zone1"));
        const zone1 = await topo.cell("zone1");
        await assertRejects(
          () =>
            zone1.gateways.put(["gw1"], {
              alias: "gw1",
              cell: "zone2",
              pgAddress: "127.0.0.1:15432",
              httpAddress: "127.0.0.1:15100",
            }),
          TesseraError,
          "names cell 'zone2' but is in cell 'zone1'",
        );
        const missing = await assertRejects(() => topo.cell("nowhere"), TesseraError, "'nowhere'");
        assertEquals(missing.code, SqlState.undefinedObject);
      } finally {
        await topo.close();
      }
    });
  },
);

Deno.test(
  "a corrupt record is reported by get, list and watch, never crashed on",
  CHECK_TIMERS,
  async () => {
    await withEtcd(CLIENT_PORT, PEER_PORT, async (etcd) => {
      const { logger, lines } = memoryLogger();
      const topo = await TopoClient.connect({ endpoints: etcd.endpoint, logger });
      const raw = new Etcd3({ hosts: etcd.endpoint });
      try {
        const shards = topo.global.shards;
        await shards.put(["app", "-80"], { keyspace: "app", range: "-80", term: 1 });
        await raw.put("/tessera/global/keyspaces/app/shards/80-").value("{not json");
        await raw.put("/tessera/global/keyspaces/app/shards/c0-").value('{"keyspace":"app"}');

        const notJson = await assertRejects(() => shards.get("app", "80-"), TesseraError);
        assertEquals(notJson.code, SqlState.dataCorrupted);
        assertStringIncludes(notJson.message, "'/tessera/global/keyspaces/app/shards/80-'");
        assertStringIncludes(notJson.message, "not valid JSON");
        const badSchema = await assertRejects(() => shards.get("app", "c0-"), TesseraError);
        assertEquals(badSchema.code, SqlState.dataCorrupted);
        assertStringIncludes(badSchema.message, "range:");
        assertStringIncludes(badSchema.message, "term:");

        const listed = await shards.list("app");
        assertEquals(listed.map((i) => `${i.type} ${i.key.split("/").pop()}`), [
          "record -80",
          "corrupt 80-",
          "corrupt c0-",
        ]);
        assert(lines.some((l) => l.msg === "corrupt topo record skipped" && l.level === "warn"));

        const watch = shards.watch(["app"]);
        const { events, done } = collect(watch);
        await eventually("the initial resync", () => events.length >= 1);
        await raw.put("/tessera/global/keyspaces/app/shards/-80").value("[]");
        await shards.put(["app", "-80"], { keyspace: "app", range: "-80", term: 2 });
        await eventually("two more events", () => events.length >= 3);
        await watch.close();
        await done;

        const [resync, corrupt, put] = events as [
          RecordEvent<ShardRecord, [string, string]>,
          RecordEvent<ShardRecord, [string, string]>,
          RecordEvent<ShardRecord, [string, string]>,
        ];
        assertEquals(resync.type, "resync");
        if (resync.type === "resync") {
          assertEquals(resync.items.map((i) => i.type), ["record", "corrupt", "corrupt"]);
        }
        assertEquals(corrupt.type, "corrupt");
        if (corrupt.type === "corrupt") {
          assertEquals(corrupt.key, "/tessera/global/keyspaces/app/shards/-80");
          assertStringIncludes(corrupt.error, "expected object");
        }
        assertEquals(put.type, "put");
        if (put.type === "put") assertEquals(put.value.term, 2);
      } finally {
        raw.close();
        await topo.close();
      }
    });
  },
);

Deno.test(
  "update retries compare-and-set conflicts so no term bump is lost",
  CHECK_TIMERS,
  async () => {
    await withEtcd(CLIENT_PORT, PEER_PORT, async (etcd) => {
      const topo = await TopoClient.connect({
        endpoints: etcd.endpoint,
        logger: memoryLogger().logger,
      });
      const other = await TopoClient.connect({
        endpoints: etcd.endpoint,
        logger: memoryLogger().logger,
      });
      try {
        const shards = topo.global.shards;
        const first = await shards.create(["app", "0"], { keyspace: "app", range: "0", term: 0 });
        const dup = await assertRejects(
          () => shards.create(["app", "0"], { keyspace: "app", range: "0", term: 0 }),
          TesseraError,
          "already exists",
        );
        assertEquals(dup.code, SqlState.duplicateObject);

        // A stale compare-and-set put fails with 40001.
        await shards.put(["app", "0"], { keyspace: "app", range: "0", term: 0 }, {
          ifRevision: first,
        });
        const stale = await assertRejects(
          () =>
            shards.put(["app", "0"], { keyspace: "app", range: "0", term: 9 }, {
              ifRevision: first,
            }),
          TesseraError,
          `changed since revision ${first}`,
        );
        assertEquals(stale.code, SqlState.serializationFailure);

        // The first round of this update is made to conflict by a write from another client.
        let rounds = 0;
        const updated = await shards.update(["app", "0"], async (cur) => {
          rounds++;
          if (rounds === 1) {
            await other.global.shards.update(
              ["app", "0"],
              (c) => c && { ...c.value, term: c.value.term + 1 },
            );
          }
          return cur && { ...cur.value, term: cur.value.term + 1, primaryAlias: "zone1-101" };
        });
        assertEquals(rounds, 2);
        assertEquals(updated?.value, {
          keyspace: "app",
          range: "0",
          term: 2,
          primaryAlias: "zone1-101",
        });
        assertEquals((await shards.get("app", "0"))?.value.term, 2);

        // Many concurrent bumps from two clients: every one of them lands.
        const bumps = 20;
        await Promise.all(
          Array.from(
            { length: bumps },
            (_, i) =>
              (i % 2 === 0 ? topo : other).global.shards.update(
                ["app", "0"],
                (c) => c && { ...c.value, term: c.value.term + 1 },
                { maxAttempts: 100 },
              ),
          ),
        );
        assertEquals((await shards.get("app", "0"))?.value.term, 2 + bumps);

        // Returning undefined leaves the record unchanged.
        const before = await shards.get("app", "0");
        const same = await shards.update(["app", "0"], () => undefined);
        assertEquals(same?.revision, before?.revision);
      } finally {
        await other.close();
        await topo.close();
      }
    });
  },
);

Deno.test(
  "a cell's local topo can live in another etcd, under the root its record names",
  CHECK_TIMERS,
  async () => {
    await withEtcd(CLIENT_PORT, PEER_PORT, async (globalEtcd) => {
      await withEtcd(CELL_CLIENT_PORT, CELL_PEER_PORT, async (cellEtcd) => {
        const { logger } = memoryLogger();
        const topo = await TopoClient.connect({ endpoints: globalEtcd.endpoint, logger });
        const cellRaw = new Etcd3({ hosts: cellEtcd.endpoint });
        const globalRaw = new Etcd3({ hosts: globalEtcd.endpoint });
        try {
          assertEquals(topo.defaultCellRecord("zone1"), {
            name: "zone1",
            endpoints: [globalEtcd.endpoint],
            root: "/tessera/cells/zone1",
          });
          await topo.global.cells.put(["zone2"], {
            name: "zone2",
            endpoints: [cellEtcd.endpoint],
            root: "/zone2-topo",
          });
          const zone2 = await topo.cell("zone2");
          assertEquals(zone2.root, "/zone2-topo");
          assertEquals(await topo.cell("zone2"), zone2);
          const reg = await zone2.orchs.registerUnderLease({
            alias: "orch1",
            cell: "zone2",
            rpcAddress: "127.0.0.1:15070",
            httpAddress: "127.0.0.1:15000",
          }, { ttlSeconds: 30 });
          assertEquals(reg.key, "/zone2-topo/orchs/orch1");
          assertStringIncludes((await cellRaw.get(reg.key).string()) ?? "", '"alias":"orch1"');
          assertEquals(await globalRaw.get(reg.key).string(), null);
          // Closing the client closes the cell's connection too: the record goes.
          await topo.close();
          assertEquals(await cellRaw.get(reg.key).string(), null);
        } finally {
          cellRaw.close();
          globalRaw.close();
          await topo.close();
        }
      });
    });
  },
);

// grpc-js keeps reconnect, idle and backoff timers for a channel whose server never answered,
// even after the channel is closed; they are not ours to clear. This test runs last in the file so
// that they cannot fire during another test.
Deno.test("an unreachable etcd gives a 08006 error naming the endpoint, within the deadline", {
  sanitizeOps: false,
}, async () => {
  const { logger } = memoryLogger();
  const err = await assertRejects(
    () => TopoClient.connect({ endpoints: "http://127.0.0.1:12419", logger, callTimeoutMs: 1500 }),
    TesseraError,
    "'http://127.0.0.1:12419'",
  );
  assertEquals(err.code, SqlState.connectionFailure);
  assertEquals(err.sqlClass, "08");

  // A listener that never answers: the call must give up at its deadline, not hang.
  const silent = Deno.listen({ hostname: "127.0.0.1", port: 12418 });
  try {
    let timer: ReturnType<typeof setTimeout> | undefined;
    const hung = await assertRejects(
      () =>
        Promise.race([
          TopoClient.connect({ endpoints: "http://127.0.0.1:12418", logger, callTimeoutMs: 1000 }),
          new Promise((_, reject) => {
            timer = setTimeout(
              () => reject(new Error("connect did not give up within 20 s")),
              20_000,
            );
          }),
        ]),
      TesseraError,
      "'http://127.0.0.1:12418' is unreachable",
    );
    clearTimeout(timer);
    assertEquals(hung.code, SqlState.connectionFailure);
  } finally {
    silent.close();
  }

  await assertRejects(
    () => TopoClient.connect({ endpoints: "127.0.0.1:12419", logger }),
    TesseraError,
    "invalid topo endpoint: '127.0.0.1:12419'",
  );

  await withEtcd(CLIENT_PORT, PEER_PORT, async (etcd) => {
    const topo = await TopoClient.connect({
      endpoints: etcd.endpoint,
      logger,
      callTimeoutMs: 1500,
    });
    try {
      await etcd.kill(); // SIGKILL: see watch_test.ts on graceful stops
      const down = await assertRejects(() => topo.global.keyspaces.get("app"), TesseraError);
      assertEquals(down.code, SqlState.connectionFailure);
      assertStringIncludes(down.message, etcd.endpoint);
    } finally {
      await topo.close();
    }
  });
});

Deno.test(
  "with one etcd endpoint, failed calls trip no circuit breaker: each gets 08006, and the first call after etcd is back works",
  { sanitizeOps: false },
  async () => {
    const { logger } = memoryLogger();
    const dir = await Deno.makeTempDir({ prefix: "tessera-topo-test-" });
    const etcdOptions = {
      dataDir: dir,
      clientPort: CLIENT_PORT,
      peerPort: PEER_PORT,
      logger: memoryLogger("proc").logger,
    };
    let etcd = await startEtcd(etcdOptions);
    try {
      const topo = await TopoClient.connect({
        endpoints: etcd.endpoint,
        logger,
        callTimeoutMs: 1500,
      });
      try {
        await topo.global.keyspaces.put(["app"], { name: "app", sharded: false });
        await etcd.kill();
        // etcd3's default breaker opens after three failures and then refuses every call for 5 s.
        for (let i = 0; i < 5; i++) {
          const err = await assertRejects(() => topo.global.keyspaces.get("app"), TesseraError);
          assertEquals(err.code, SqlState.connectionFailure, err.message);
          assert(!err.message.includes("circuit breaker"), err.message);
        }
        etcd = await startEtcd(etcdOptions);
        assertEquals((await topo.global.keyspaces.get("app"))?.value, {
          name: "app",
          sharded: false,
        });
      } finally {
        await topo.close();
      }
    } finally {
      await etcd.kill();
      await Deno.remove(dir, { recursive: true });
    }
  },
);
