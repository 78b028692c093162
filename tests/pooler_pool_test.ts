/**
 * End to end: the pool's own rules against a real Postgres: minimum size, idle timeout, maximum
 * lifetime, backends terminated by Postgres, the admin reserve, the client limit, and backends
 * that log in to Postgres with a password (SCRAM over TCP).
 */
import pg from "pg";
import { type PoolerOptions, type PoolerServer, startPooler } from "../pooler/mod.ts";
import { withPooler as withPoolerOn } from "./support/pooler.ts";
import { TesseraError } from "../shared/errors/mod.ts";
import { PgClient } from "../shared/wire/mod.ts";
import { assert, assertEquals, assertRejects } from "../shared/testing/assert.ts";
import { startTestPostgres, type TestPostgres } from "./support/postgres.ts";
import { waitFor } from "./support/process.ts";
import { fastIo } from "./support/fast_io.ts";

const PG_PORT = 12730;
const POOLER_PORT = 12731;
const opts = { sanitizeOps: false, sanitizeResources: false };

function withPooler(
  options: Omit<PoolerOptions, "postgres" | "listen">,
  fn: (pooler: PoolerServer, db: TestPostgres) => Promise<void>,
): Promise<void> {
  return withPoolerOn({ postgres: PG_PORT, pooler: POOLER_PORT }, options, fn);
}

function connect(user = "postgres"): Promise<PgClient> {
  return PgClient.connect({ host: "127.0.0.1", port: POOLER_PORT, user, database: "postgres" });
}

async function direct(db: TestPostgres, sql: string): Promise<string | null> {
  const c = await PgClient.connect({
    socketDir: db.socketDir,
    port: PG_PORT,
    user: "postgres",
    database: "postgres",
  });
  try {
    return (await c.query(sql)).at(-1)?.rows[0]?.[0] ?? null;
  } finally {
    await c.close();
  }
}

/** Opens a transaction that holds a backend (a BEGIN alone takes none: it is deferred). */
async function hold(c: PgClient): Promise<void> {
  await c.query("begin");
  await c.query("select 1");
}

const BACKENDS_SQL =
  "select count(*) from pg_stat_activity where backend_type = 'client backend' " +
  "and pid <> pg_backend_pid()";

Deno.test({
  name: "pooler pool: minimum size, idle timeout and maximum lifetime",
  ...opts,
  async fn() {
    await withPooler(
      { poolSize: 5, minPoolSize: 2, idleTimeoutMs: 300, maxLifetimeMs: 1500 },
      async (pooler, db) => {
        // Five transactions at once open five backends.
        const clients = await Promise.all(Array.from({ length: 5 }, () => connect()));
        await Promise.all(clients.map((c) => c.query("begin")));
        assertEquals(await direct(db, BACKENDS_SQL), "5");
        await Promise.all(clients.map((c) => c.query("commit")));
        // Idle ones above the minimum are closed.
        await waitFor(
          "the pool to shrink to its minimum",
          () => pooler.stats().pools[0]!.size === 2 ? true : undefined,
          10_000,
        );
        await waitFor(
          "Postgres to see two backends",
          async () => await direct(db, BACKENDS_SQL) === "2" ? true : undefined,
        );
        // Old backends are replaced, and the minimum is kept.
        const opened = pooler.stats().pools[0]!.opened;
        await waitFor(
          "old backends to be replaced",
          () => pooler.stats().pools[0]!.opened >= opened + 2 ? true : undefined,
          10_000,
        );
        const [r] = await clients[0]!.query("select 1");
        assertEquals(r!.rows[0]![0], "1");
        assert(pooler.stats().pools[0]!.size >= 2);
        await Promise.all(clients.map((c) => c.close()));
      },
    );
  },
});

Deno.test({
  name: "pooler pool: a backend terminated by Postgres is dropped, idle or in use",
  ...opts,
  async fn() {
    await withPooler({ poolSize: 2, healthCheckIdleMs: 200 }, async (pooler, db) => {
      const a = await connect();
      await a.query("select 1");
      // Idle: terminated behind the pooler's back; nobody notices but the pool.
      await direct(
        db,
        "select count(pg_terminate_backend(pid)) from pg_stat_activity where backend_type = 'client backend' and pid <> pg_backend_pid()",
      );
      await waitFor(
        "the pool to drop it",
        () => pooler.stats().pools[0]!.size === 0 ? true : undefined,
      );
      const [r] = await a.query("select 2");
      assertEquals(r!.rows[0]![0], "2");
      // In use: the client learns that its session is gone, others carry on.
      await hold(a);
      await direct(
        db,
        "select count(pg_terminate_backend(pid)) from pg_stat_activity where backend_type = 'client backend' and pid <> pg_backend_pid()",
      );
      await assertRejects(() => a.query("select 3"));
      const b = await connect();
      const [rb] = await b.query("select 4");
      assertEquals(rb!.rows[0]![0], "4");
      await b.close();
      await a.close().catch(() => {});
      // Health checks run on idle backends and keep the good ones.
      await new Promise((r) => setTimeout(r, 1200));
      const s = pooler.stats().pools[0]!;
      assertEquals(s.active, 0);
      assert(s.size >= 1, JSON.stringify(s));
    });
  },
});

Deno.test({
  name: "pooler pool: the reserve is for admin users, and the client limit holds",
  ...opts,
  async fn() {
    await withPooler(
      {
        poolSize: 1,
        reservePoolSize: 1,
        adminUsers: ["postgres"],
        queueTimeoutMs: 300,
        maxClientConnections: 4,
      },
      async (pooler, db) => {
        await direct(db, "create role app login");
        const apps = [await connect("app"), await connect("app")];
        await hold(apps[0]!);
        const err = await assertRejects(() => apps[1]!.query("select 1"), TesseraError);
        assertEquals(err.code, "53300");
        const admins = [await connect(), await connect()];
        await hold(admins[0]!);
        await hold(admins[1]!); // the reserve
        // The limit of four clients: the fifth is refused.
        const sixth = await assertRejects(() => connect(), TesseraError);
        assertEquals(sixth.code, "53300");
        assertEquals(pooler.stats().clients, 4);
        assertEquals(pooler.stats().clientsRefused, 1);
        for (const c of [...apps, ...admins]) await c.close();
      },
    );
  },
});

Deno.test({
  name: "pooler pool: backends log in to Postgres over TCP with a password (SCRAM)",
  ...opts,
  async fn() {
    const db = await startTestPostgres({
      port: PG_PORT,
      listenAddress: "127.0.0.1",
      password: "pw-123",
    });
    let pooler: PoolerServer | undefined;
    let wrong: PoolerServer | undefined;
    try {
      pooler = await startPooler({
        ...fastIo(),
        listen: [`127.0.0.1:${POOLER_PORT}`],
        postgres: { host: "127.0.0.1", port: PG_PORT, password: "pw-123" },
        poolSize: 2,
      });
      const c = new pg.Client({
        host: "127.0.0.1",
        port: POOLER_PORT,
        user: "postgres",
        database: "postgres",
      });
      await c.connect();
      assertEquals((await c.query("select 40 + 2 as v")).rows[0].v, 42);
      await c.end();
      wrong = await startPooler({
        ...fastIo(),
        listen: [`127.0.0.1:${POOLER_PORT + 1}`],
        postgres: { host: "127.0.0.1", port: PG_PORT, password: "nope" },
        poolSize: 2,
      });
      const err = await assertRejects(
        () =>
          PgClient.connect({
            host: "127.0.0.1",
            port: POOLER_PORT + 1,
            user: "postgres",
            database: "postgres",
          }),
        TesseraError,
      );
      assertEquals(err.code, "28P01");
    } finally {
      await pooler?.shutdown();
      await wrong?.shutdown();
      await db.cleanup();
    }
  },
});
