import { SqlState, TesseraError } from "../errors/mod.ts";
import { assert, assertEquals, assertRejects } from "../testing/assert.ts";
import {
  CHECK_TIMERS,
  delay,
  eventually,
  memoryLogger,
  startFixture,
  withEtcd,
} from "./_test_utils.ts";
import { Etcd3 } from "./etcd3.ts";
import { type PoolerRecord, TopoClient } from "./mod.ts";

const CLIENT_PORT = 12430;
const PEER_PORT = 12431;

function pooler(alias: string, type: PoolerRecord["type"] = "replica"): PoolerRecord {
  return {
    alias,
    cell: "zone1",
    keyspace: "app",
    shard: "-80",
    type,
    tags: ["olap"],
    pgAddress: "/run/tessera/pg0/.s.PGSQL.25432",
    rpcAddress: "127.0.0.1:16100",
    hostname: "host-a",
  };
}

async function connectWithCell(endpoint: string, logger = memoryLogger().logger) {
  const topo = await TopoClient.connect({ endpoints: endpoint, logger });
  await topo.global.cells.put(["zone1"], topo.defaultCellRecord("zone1"));
  return { topo, zone1: await topo.cell("zone1") };
}

/**
 * When etcd goes away mid-test, grpc-js (under etcd3) arms reconnect backoff timers in its shared
 * subchannel pool that can outlive the closed client; they are not ours to clear. Timer checks are
 * off for the tests that stop etcd, which run last in the file so that those timers cannot fire
 * during a checked test.
 */
const GRPC_RECONNECT_TIMERS = { sanitizeOps: false };

Deno.test(
  "a dead process's record disappears after its TTL; a closed one at once",
  CHECK_TIMERS,
  async () => {
    await withEtcd(CLIENT_PORT, PEER_PORT, async (etcd) => {
      const { topo, zone1 } = await connectWithCell(etcd.endpoint);
      try {
        const fixture = await startFixture("topo_holder.ts", [
          etcd.endpoint,
          "register",
          "p-dead",
          "3",
        ]);
        try {
          assert(/^ready \d+$/.test(fixture.firstLine), fixture.firstLine);
          assertEquals((await zone1.poolers.get("p-dead"))?.value.alias, "p-dead");
          await fixture.kill();
          // The process is gone but its record stays until etcd expires the lease.
          assertEquals((await zone1.poolers.get("p-dead"))?.value.alias, "p-dead");
        } finally {
          await fixture.kill();
        }
        await eventually(
          "the dead pooler's record to expire",
          async () => (await zone1.poolers.get("p-dead")) === undefined,
          30_000,
        );

        const live = await zone1.poolers.registerUnderLease(pooler("p-live"), { ttlSeconds: 30 });
        assertEquals(live.key, "/tessera/cells/zone1/poolers/p-live");
        assertEquals((await zone1.poolers.list()).map((i) => i.key), [live.key]);
        await live.update(pooler("p-live", "primary"));
        assertEquals((await zone1.poolers.get("p-live"))?.value.type, "primary");
        await live.close();
        assertEquals(await zone1.poolers.get("p-live"), undefined);
        await live.close();
      } finally {
        await topo.close();
      }
    });
  },
);

Deno.test("a lost lease is granted again and the record written again", CHECK_TIMERS, async () => {
  await withEtcd(CLIENT_PORT, PEER_PORT, async (etcd) => {
    const { logger, lines } = memoryLogger();
    const { topo, zone1 } = await connectWithCell(etcd.endpoint, logger);
    const raw = new Etcd3({ hosts: etcd.endpoint });
    try {
      const reg = await zone1.gateways.registerUnderLease({
        alias: "gw1",
        cell: "zone1",
        pgAddress: "127.0.0.1:15432",
        httpAddress: "127.0.0.1:15100",
      }, { ttlSeconds: 3 });
      const firstLease = reg.leaseId;
      assert(firstLease !== undefined);

      // Revoke the lease behind the handle's back: the record goes, then comes back.
      await raw.leaseClient.leaseRevoke({ ID: firstLease });
      assertEquals(await zone1.gateways.get("gw1"), undefined);
      await eventually(
        "the record to be written again",
        async () => (await zone1.gateways.get("gw1")) !== undefined,
      );
      assert(reg.leaseId !== undefined && reg.leaseId !== firstLease);
      const kv = await raw.get(reg.key).exec();
      assertEquals(kv.kvs[0]?.lease, reg.leaseId);
      assert(
        lines.some((l) => l.msg === "lease lost; granting a new one and writing the record again"),
      );
      assert(lines.some((l) => l.msg === "record written again under a new lease"));

      await reg.update({
        alias: "gw1",
        cell: "zone1",
        pgAddress: "127.0.0.1:15433",
        httpAddress: "127.0.0.1:15100",
      });
      assertEquals((await zone1.gateways.get("gw1"))?.value.pgAddress, "127.0.0.1:15433");
      const rename = await assertRejects(
        () =>
          reg.update({
            alias: "gw2",
            cell: "zone1",
            pgAddress: "127.0.0.1:15432",
            httpAddress: "127.0.0.1:15100",
          }),
        TesseraError,
        "cannot rename it to 'gw2'",
      );
      assertEquals(rename.code, SqlState.invalidParameterValue);
      await reg.close();
      assertEquals(await zone1.gateways.get("gw1"), undefined);
    } finally {
      raw.close();
      await topo.close();
    }
  });
});

Deno.test("closing the topo client revokes its records", CHECK_TIMERS, async () => {
  await withEtcd(CLIENT_PORT, PEER_PORT, async (etcd) => {
    const { topo, zone1 } = await connectWithCell(etcd.endpoint);
    const observer = await TopoClient.connect({
      endpoints: etcd.endpoint,
      logger: memoryLogger().logger,
    });
    try {
      await zone1.poolers.registerUnderLease(pooler("p1"), { ttlSeconds: 30 });
      await zone1.poolers.registerUnderLease(pooler("p2"), { ttlSeconds: 30 });
      const observed = await observer.cell("zone1");
      assertEquals((await observed.poolers.list()).length, 2);
      await topo.close();
      assertEquals((await observed.poolers.list()).length, 0);
      await assertRejects(() => zone1.poolers.list(), TesseraError, "closed");
    } finally {
      await topo.close();
      await observer.close();
    }
  });
});

Deno.test(
  "a record outlives an etcd outage longer than its TTL",
  GRPC_RECONNECT_TIMERS,
  async () => {
    await withEtcd(CLIENT_PORT, PEER_PORT, async (etcd) => {
      const { logger, lines } = memoryLogger();
      const { topo, zone1 } = await connectWithCell(etcd.endpoint, logger);
      const raw = new Etcd3({ hosts: etcd.endpoint });
      try {
        const reg = await zone1.orchs.registerUnderLease({
          alias: "orch1",
          cell: "zone1",
          rpcAddress: "127.0.0.1:15070",
          httpAddress: "127.0.0.1:15000",
        }, { ttlSeconds: 2 });
        const firstLease = reg.leaseId;
        await etcd.kill(); // SIGKILL: see watch_test.ts on graceful stops
        // Longer than twice the TTL: the client gives the lease up as lost.
        await delay(5000);
        await etcd.restart();

        await eventually("the record under a new lease", async () => {
          const kv = await raw.get(reg.key).exec();
          return reg.leaseId !== undefined && reg.leaseId !== firstLease &&
            kv.kvs[0]?.lease === reg.leaseId;
        }, 30_000);
        assert(
          lines.some((l) =>
            l.msg === "lease lost; granting a new one and writing the record again"
          ),
        );
        // The old lease expiring (etcd restored it on restart) does not take the record away.
        await delay(3000);
        assertEquals((await zone1.orchs.get("orch1"))?.value.alias, "orch1");
        await reg.close();
        assertEquals(await zone1.orchs.get("orch1"), undefined);
      } finally {
        raw.close();
        await topo.close();
      }
    });
  },
);
