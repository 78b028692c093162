/**
 * The shared pool (pooler and gateway) against a real Postgres: a backend with a cancel request
 * in flight is not lent to anyone else until Postgres has handled the cancel, so a signal that
 * arrives late cannot stop another client's query.
 */
import { startTestPostgres } from "./support/postgres.ts";
import { assert, assertEquals } from "../shared/testing/assert.ts";
import { Logger } from "../shared/log/mod.ts";
import type { BackendTarget } from "../shared/pooling/pool/backend.ts";
import { Pool, type PoolSettings } from "../shared/pooling/pool/pool.ts";

const PG_PORT = 12770;

const SETTINGS: PoolSettings = {
  poolSize: 1,
  minPoolSize: 0,
  reservePoolSize: 0,
  idleTimeoutMs: 0,
  maxLifetimeMs: 0,
  queueTimeoutMs: 10_000,
  healthCheckIdleMs: 0,
  healthCheckTimeoutMs: 1000,
};

Deno.test({
  name: "pool: a backend whose cancel is in flight goes back to the pool only once it is handled",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    const db = await startTestPostgres({ port: PG_PORT });
    const target: BackendTarget = {
      socketDir: db.socketDir,
      port: PG_PORT,
      connectTimeoutMs: 5000,
    };
    const pool = new Pool(
      "postgres",
      "postgres",
      target,
      SETTINGS,
      new Logger({ component: "test", level: "error" }),
    );
    try {
      const b = await pool.acquire("", false);
      const cancelled = b.cancel(target);
      assertEquals(b.cancelsInFlight, 1);
      pool.release(b);
      // Still counted as lent: a waiter does not get it yet.
      assertEquals(pool.snapshot().idle, 0);
      assertEquals(pool.snapshot().active, 1);
      assertEquals(pool.tryAcquire("", false), null);
      let served = false;
      const next = pool.acquire("", false).then((x) => {
        served = true;
        return x;
      });
      await new Promise((r) => setTimeout(r, 0));
      assert(!served, "lent while its cancel was in flight");
      await cancelled;
      assertEquals(b.cancelsInFlight, 0);
      // Handled: the waiter gets the same backend (the pool holds one), unharmed.
      assertEquals(await next, b);
      pool.release(b);
      assertEquals(pool.snapshot().idle, 1);
      assert(!b.closed && !b.broken);
    } finally {
      await pool.close();
      await db.cleanup();
    }
  },
});
