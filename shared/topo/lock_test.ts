import { SqlState, TesseraError } from "../errors/mod.ts";
import { assert, assertEquals, assertRejects, assertStringIncludes } from "../testing/assert.ts";
import { collect, delay, eventually, memoryLogger, startFixture, withEtcd } from "./_test_utils.ts";
import { Etcd3 } from "./etcd3.ts";
import { type LeaderCampaign, type LockHandle, shardLockKey, TopoClient } from "./mod.ts";

/**
 * etcd3's Lock and Election keep their leases alive with a timer that etcd3 re-arms (for a whole
 * TTL) when a keepalive answer arrives just after the lease was revoked; its handler does not
 * check that the lease is gone. The lease is private to those classes, so such a timer can outlive
 * a test; it fires harmlessly. Timer checks are off for these tests for that reason only.
 */
const ETCD3_LEASE_TIMERS = { sanitizeOps: false };

const CLIENT_PORT = 12440;
const PEER_PORT = 12441;

function connect(endpoint: string): Promise<TopoClient> {
  return TopoClient.connect({ endpoints: endpoint, logger: memoryLogger().logger });
}

Deno.test("two contenders for a shard lock never hold it at once", ETCD3_LEASE_TIMERS, async () => {
  await withEtcd(CLIENT_PORT, PEER_PORT, async (etcd) => {
    const clients = [await connect(etcd.endpoint), await connect(etcd.endpoint)];
    const raw = new Etcd3({ hosts: etcd.endpoint });
    const counterKey = "/tessera-test/counter";
    const iterations = 8;
    let inside: string | undefined;
    let overlaps = 0;
    try {
      await raw.put(counterKey).value("0");
      await Promise.all(clients.map(async (topo, c) => {
        for (let i = 0; i < iterations; i++) {
          const me = `contender ${c} round ${i}`;
          const lock = await topo.lockShard("app", "-80", {
            holder: me,
            ttlSeconds: 10,
            timeoutMs: 60_000,
          });
          try {
            if (inside !== undefined) overlaps++;
            inside = me;
            // An unprotected read-modify-write in etcd: loses updates unless the lock serializes.
            const value = Number(await raw.get(counterKey).string());
            await delay(5 + Math.random() * 15);
            await raw.put(counterKey).value(String(value + 1));
            assertEquals(await raw.get(shardLockKey("/tessera", "app", "-80")).string(), me);
            assert(!lock.signal.aborted);
            inside = undefined;
          } finally {
            await lock.release();
          }
        }
      }));
      assertEquals(overlaps, 0);
      assertEquals(await raw.get(counterKey).string(), String(2 * iterations));
      assertEquals(await raw.get(shardLockKey("/tessera", "app", "-80")).string(), null);
    } finally {
      raw.close();
      await Promise.all(clients.map((c) => c.close()));
    }
  });
});

Deno.test(
  "waiting for a held shard lock times out with 55P03 naming the holder",
  ETCD3_LEASE_TIMERS,
  async () => {
    await withEtcd(CLIENT_PORT, PEER_PORT, async (etcd) => {
      const a = await connect(etcd.endpoint);
      const b = await connect(etcd.endpoint);
      try {
        const held = await a.lockShard("app", "80-", {
          holder: "orch-a: failover",
          timeoutMs: 1000,
        });
        const err = await assertRejects(
          () => b.lockShard("app", "80-", { holder: "orch-b: reparent", timeoutMs: 700 }),
          TesseraError,
          "within 700 ms",
        );
        assertEquals(err.code, SqlState.lockNotAvailable);
        assertStringIncludes(err.message, "'/tessera/global/locks/keyspaces/app/shards/80-'");
        assertEquals(err.detail, "held by 'orch-a: failover'");
        // Another shard's lock is independent.
        const other = await b.lockShard("app", "-80", { holder: "orch-b", timeoutMs: 1000 });
        await other.release();

        // A waiter gets the lock once the holder releases it.
        const waiting = b.lockShard("app", "80-", {
          holder: "orch-b: reparent",
          timeoutMs: 20_000,
        });
        await delay(200);
        await held.release();
        const got = await waiting;
        assertEquals(got.holder, "orch-b: reparent");
        await got.release();
        await got.release();
        await assertRejects(() => a.lockShard("app", "8", { holder: "x" }), TesseraError, "'8'");
      } finally {
        await a.close();
        await b.close();
      }
    });
  },
);

Deno.test(
  "a shard lock held by a killed process frees itself after the TTL",
  ETCD3_LEASE_TIMERS,
  async () => {
    await withEtcd(CLIENT_PORT, PEER_PORT, async (etcd) => {
      const topo = await connect(etcd.endpoint);
      try {
        const fixture = await startFixture("topo_holder.ts", [
          etcd.endpoint,
          "lock",
          "app",
          "0",
          "2",
        ]);
        let lock: LockHandle | undefined;
        try {
          assertStringIncludes(fixture.firstLine, "ready pid ");
          const err = await assertRejects(
            () => topo.lockShard("app", "0", { holder: "survivor", timeoutMs: 300 }),
            TesseraError,
          );
          assertEquals(err.code, SqlState.lockNotAvailable);
          await fixture.kill();
          lock = await topo.lockShard("app", "0", { holder: "survivor", timeoutMs: 30_000 });
          assertEquals(lock.holder, "survivor");
        } finally {
          await fixture.kill();
          await lock?.release();
        }
      } finally {
        await topo.close();
      }
    });
  },
);

Deno.test(
  "the holder of a shard lock learns when its lease is lost",
  ETCD3_LEASE_TIMERS,
  async () => {
    await withEtcd(CLIENT_PORT, PEER_PORT, async (etcd) => {
      const { logger, lines } = memoryLogger();
      const topo = await TopoClient.connect({ endpoints: etcd.endpoint, logger });
      const raw = new Etcd3({ hosts: etcd.endpoint });
      try {
        const lock = await topo.lockShard("app", "-80", { holder: "orch-a", ttlSeconds: 5 });
        const kv = await raw.get(lock.key).exec();
        const leaseId = kv.kvs[0]?.lease;
        assert(leaseId !== undefined && leaseId !== "0");
        assert(!lock.signal.aborted);
        await raw.leaseClient.leaseRevoke({ ID: leaseId });
        await eventually("the lock's signal to abort", () => lock.signal.aborted);
        const reason = lock.signal.reason;
        assert(reason instanceof TesseraError);
        assertEquals(reason.code, SqlState.lockNotAvailable);
        assertStringIncludes(reason.message, "was lost");
        assert(lines.some((l) => l.msg === "lock lost"));
        // Someone else can take it now.
        const other = await topo.lockShard("app", "-80", { holder: "orch-b", timeoutMs: 5000 });
        await other.release();
        await lock.release();
      } finally {
        raw.close();
        await topo.close();
      }
    });
  },
);

Deno.test("an election picks one leader and hands over on resign", ETCD3_LEASE_TIMERS, async () => {
  await withEtcd(CLIENT_PORT, PEER_PORT, async (etcd) => {
    const clients = await Promise.all([1, 2, 3, 4].map(() => connect(etcd.endpoint)));
    const [c1, c2, c3, watcher] = clients as [TopoClient, TopoClient, TopoClient, TopoClient];
    const observed = watcher.observeLeader("orch");
    const leaders = collect(observed);
    try {
      await eventually("the observer's first event", () => leaders.events.length === 1);
      assertEquals(leaders.events[0], { leader: undefined });

      const a = c1.elect("orch", "orch-a", { ttlSeconds: 5 });
      await a.waitUntilElected({ timeoutMs: 10_000 });
      const b = c2.elect("orch", "orch-b", { ttlSeconds: 5 });
      await delay(100);
      const c = c3.elect("orch", "orch-c", { ttlSeconds: 5 });
      const notYet = await assertRejects(
        () => b.waitUntilElected({ timeoutMs: 500 }),
        TesseraError,
      );
      assertEquals(notYet.code, SqlState.lockNotAvailable);
      const onlyOne = (expected: LeaderCampaign) =>
        [a, b, c].every((x) => x.isLeader === (x === expected));
      assert(onlyOne(a));
      assertEquals(await watcher.leader("orch"), "orch-a");

      await a.resign();
      assert(a.signal.aborted);
      await b.waitUntilElected({ timeoutMs: 10_000 });
      assert(onlyOne(b));
      assertEquals(await watcher.leader("orch"), "orch-b");

      // A waiting candidate that resigns never becomes leader, and leaves nothing running.
      await c.resign();
      assert(c.signal.aborted && !c.isLeader);
      await assertRejects(() => c.waitUntilElected(), TesseraError, "resigned");
      await b.resign();
      await eventually("no leader", async () => (await watcher.leader("orch")) === undefined);
      await eventually("the observer to see every change", () => leaders.events.length === 4);
      assertEquals(leaders.events.map((e) => e.leader), [undefined, "orch-a", "orch-b", undefined]);
    } finally {
      await observed.close();
      await leaders.done;
      await Promise.all(clients.map((c) => c.close()));
    }
  });
});

Deno.test(
  "a leader whose lease is lost is told so, and the next candidate takes over",
  ETCD3_LEASE_TIMERS,
  async () => {
    await withEtcd(CLIENT_PORT, PEER_PORT, async (etcd) => {
      const c1 = await connect(etcd.endpoint);
      const c2 = await connect(etcd.endpoint);
      const raw = new Etcd3({ hosts: etcd.endpoint });
      try {
        const a = c1.elect("orch", "orch-a", { ttlSeconds: 5 });
        await a.waitUntilElected({ timeoutMs: 10_000 });
        const b = c2.elect("orch", "orch-b", { ttlSeconds: 5 });
        const keys = await raw.getAll().prefix("/tessera/global/election/orch/").exec();
        const leaderKv = keys.kvs.find((kv) => kv.value.toString() === "orch-a");
        assert(leaderKv !== undefined);
        await raw.leaseClient.leaseRevoke({ ID: leaderKv.lease });
        await b.waitUntilElected({ timeoutMs: 20_000 });
        await eventually("the old leader to learn it lost", () => a.signal.aborted);
        assert(!a.isLeader);
        assert(a.signal.reason instanceof TesseraError);
        await b.resign();
        await a.resign();
      } finally {
        raw.close();
        await c1.close();
        await c2.close();
      }
    });
  },
);

/** etcd's own count of open watchers, from its /metrics endpoint. */
async function etcdWatchers(endpoint: string): Promise<number> {
  const text = await (await fetch(`${endpoint}/metrics`)).text();
  const line = text.split("\n").find((l) => l.startsWith("etcd_debugging_mvcc_watcher_total "));
  assert(line !== undefined, "etcd reports etcd_debugging_mvcc_watcher_total");
  return Number(line.split(" ")[1]);
}

Deno.test(
  "a standby candidate that resigns leaves no watch open in etcd",
  ETCD3_LEASE_TIMERS,
  async () => {
    await withEtcd(CLIENT_PORT, PEER_PORT, async (etcd) => {
      const c1 = await connect(etcd.endpoint);
      const c2 = await connect(etcd.endpoint);
      try {
        const a = c1.elect("orch", "orch-a");
        await a.waitUntilElected({ timeoutMs: 10_000 });
        assertEquals(await etcdWatchers(etcd.endpoint), 0);
        const b = c2.elect("orch", "orch-b");
        // The standby waits on a watch of the leader's key.
        await eventually(
          "the standby's watch",
          async () => (await etcdWatchers(etcd.endpoint)) === 1,
        );
        await b.resign();
        await c2.close();
        await eventually(
          "the standby's watch to close",
          async () => (await etcdWatchers(etcd.endpoint)) === 0,
        );
        assert(a.isLeader);
        await a.resign();
      } finally {
        await c1.close();
        await c2.close();
      }
    });
  },
);
