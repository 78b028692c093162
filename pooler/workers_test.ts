import { assertEquals, assertThrows } from "../shared/testing/assert.ts";
import { poolerConfigSchema } from "./config.ts";
import { mergeStats, type PoolerStats } from "./server.ts";
import { share, workerSizes } from "./workers.ts";

Deno.test("share: the first workers take the rest, the shares add up", () => {
  assertEquals([0, 1].map((i) => share(20, 2, i)), [10, 10]);
  assertEquals([0, 1].map((i) => share(5, 2, i)), [3, 2]);
  assertEquals([0, 1, 2].map((i) => share(2, 3, i)), [1, 1, 0]);
  for (const [total, count] of [[7, 3], [20, 4], [1, 2], [0, 3]]) {
    let sum = 0;
    for (let i = 0; i < count!; i++) sum += share(total!, count!, i);
    assertEquals(sum, total);
  }
});

Deno.test("workerSizes: pool sizes, reserve and client limit are split; each keeps a client", () => {
  const config = poolerConfigSchema.parse({
    postgresSocketDir: "/tmp",
    poolSize: 5,
    minPoolSize: 1,
    reservePoolSize: 2,
    maxClientConn: 3,
    workers: 2,
  });
  assertEquals(workerSizes(config, 2, 0), {
    poolSize: 3,
    minPoolSize: 1,
    reservePoolSize: 1,
    maxClientConn: 2,
  });
  assertEquals(workerSizes(config, 2, 1), {
    poolSize: 2,
    minPoolSize: 0,
    reservePoolSize: 1,
    maxClientConn: 1,
  });
});

Deno.test("pooler config: more workers than backends, or workers on Deno's networking, refused", () => {
  assertThrows(() =>
    poolerConfigSchema.parse({ postgresSocketDir: "/tmp", poolSize: 2, workers: 3 })
  );
  assertThrows(() =>
    poolerConfigSchema.parse({ postgresSocketDir: "/tmp", workers: 2, io: "deno" })
  );
  assertThrows(() => poolerConfigSchema.parse({ postgresSocketDir: "/tmp", workers: 0 }));
  assertEquals(poolerConfigSchema.parse({ postgresSocketDir: "/tmp" }).workers, 1);
});

function stats(over: Partial<PoolerStats>): PoolerStats {
  // The stats of no worker at all: every count 0.
  return { ...mergeStats([]), ...over };
}

function pool(user: string, size: number, maxWaitMs: number) {
  return {
    user,
    database: "app",
    size,
    idle: size,
    active: 0,
    waiting: 0,
    connecting: 0,
    checkouts: 10 * size,
    waits: 1,
    waitTimeMs: 5,
    maxWaitMs,
    timeouts: 0,
    opened: size,
    closed: 0,
    connectErrors: 0,
    preparedHits: 2,
    preparedMisses: 1,
    preparedEvictions: 0,
  };
}

Deno.test("mergeStats: counts add up, pools of one user and database become one", () => {
  const a = stats({
    clients: 3,
    activeClients: 1,
    clientsTotal: 9,
    cancelRequests: { received: 2, forwarded: 1, dequeued: 1 },
    pools: [pool("u", 2, 7), pool("v", 1, 1)],
    pinnedClients: 1,
    pins: { tempTable: 1 },
    preparedStatements: { hits: 4, misses: 2, evictions: 0 },
    multiplexed: { connections: 1, channels: 3, writes: 10, framesOut: 12, reads: 8, framesIn: 9 },
  });
  const b = stats({
    clients: 2,
    clientsTotal: 4,
    clientsRefused: 1,
    pools: [pool("u", 3, 4)],
    pinnedClients: 2,
    pins: { tempTable: 1, listen: 1 },
  });
  const m = mergeStats([a, b]);
  assertEquals(m.clients, 5);
  assertEquals(m.activeClients, 1);
  assertEquals(m.clientsTotal, 13);
  assertEquals(m.clientsRefused, 1);
  assertEquals(m.cancelRequests, { received: 2, forwarded: 1, dequeued: 1 });
  assertEquals(m.pinnedClients, 3);
  assertEquals(m.pins, { tempTable: 2, listen: 1 });
  assertEquals(m.preparedStatements, { hits: 4, misses: 2, evictions: 0 });
  assertEquals(m.multiplexed.channels, 3);
  assertEquals(m.pools.length, 2);
  const u = m.pools.find((p) => p.user === "u")!;
  assertEquals([u.size, u.checkouts, u.waits, u.waitTimeMs, u.maxWaitMs], [5, 50, 2, 10, 7]);
  // The inputs are left as they were.
  assertEquals(a.pools[0]!.size, 2);
});
