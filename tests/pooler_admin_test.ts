/**
 * End to end: the pooler's admin console (the database `pgbouncer`) with psql and
 * node-postgres, against a real Postgres, while clients hold and wait for the pool's two
 * backends: SHOW POOLS, CLIENTS, SERVERS, STATS and VERSION tell the state as it is; unknown
 * commands, the extended protocol and non-admin users get clear errors; PAUSE and RESUME hold a
 * waiting transaction across a Postgres restart with no client error. Ports 12714-12715.
 */
import pg from "pg";
import postgres from "postgres";
import { type PoolerServer, startPooler } from "../pooler/mod.ts";
import { assert, assertEquals, assertMatch, assertRejects } from "../shared/testing/assert.ts";
import { Backend, decodeErrorFields, PgClient } from "../shared/wire/mod.ts";
import { RawClient } from "./support/raw_client.ts";
import { runPsql } from "./support/psql.ts";
import { startTestPostgres, type TestPostgres } from "./support/postgres.ts";
import { fastIo } from "./support/fast_io.ts";
import { waitFor } from "./support/process.ts";

const PG_PORT = 12714;
const POOLER_PORT = 12715;
const CONFIG = { host: "127.0.0.1", port: POOLER_PORT, user: "postgres", database: "postgres" };

/** psql's unaligned rows of a console command, split into fields. */
async function show(what: string): Promise<string[][]> {
  const r = await runPsql({ port: POOLER_PORT, database: "pgbouncer" }, `SHOW ${what};`);
  assertEquals(r.code, 0, r.stderr);
  return r.stdout === "" ? [] : r.stdout.split("\n").map((l) => l.split("|"));
}

/**
 * A Postgres and a pooler with 2 backends for `fn`, which opens node-postgres clients with
 * `connect` (to `postgres`, or to the console with `pgbouncer`); everything is closed after.
 */
async function withConsole(
  fn: (
    pooler: PoolerServer,
    db: TestPostgres,
    connect: (database?: string) => Promise<pg.Client>,
  ) => Promise<void>,
): Promise<void> {
  const db = await startTestPostgres({ port: PG_PORT });
  let pooler: PoolerServer | undefined;
  const clients: pg.Client[] = [];
  try {
    pooler = await startPooler({
      ...fastIo(),
      listen: [`127.0.0.1:${POOLER_PORT}`],
      postgres: { socketDir: db.socketDir, port: PG_PORT },
      poolSize: 2,
      queueTimeoutMs: 60_000,
      adminUsers: ["postgres"],
    });
    await fn(pooler, db, async (database = "postgres") => {
      const c = new pg.Client({ ...CONFIG, database });
      clients.push(c);
      await c.connect();
      return c;
    });
  } finally {
    for (const x of clients) await x.end().catch(() => {});
    await pooler?.shutdown();
    await db.cleanup();
  }
}

Deno.test({
  name: "pooler admin console: SHOW POOLS, CLIENTS, SERVERS, STATS, VERSION; errors for the rest",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    await withConsole(async (pooler, db, connect) => {
      // Two clients hold both backends in transactions; a third one's query waits.
      const [a, c, waiter] = [await connect(), await connect(), await connect()];
      for (const x of [a, c]) {
        await x.query("begin");
        await x.query("select 1");
      }
      const waited = waiter.query("select 'served'");
      await waitFor("a waiting client", () => pooler!.stats().pools[0]!.waiting === 1 || undefined);

      // Columns as psql prints them (unaligned): see pooler/admin.ts for their meaning.
      const [pool] = await show("POOLS");
      assertEquals(pool!.slice(0, 8), ["postgres", "postgres", "2", "1", "2", "0", "0", "0"]);
      assertEquals(pool!.slice(10), ["transaction", "0"]);
      assertMatch(`${pool![8]} ${pool![9]}`, /^\d+ \d+$/); // the oldest wait: s and µs

      const rows = await show("CLIENTS");
      const pidOf = (x: pg.Client) => String((x as unknown as { processID: number }).processID);
      const byPid = new Map(rows.map((r) => [r[8], r]));
      assertEquals(rows.length, 3);
      assertEquals([a, c, waiter].map((x) => byPid.get(pidOf(x))?.[3]), [
        "active",
        "active",
        "waiting",
      ]);
      assertEquals(byPid.get(pidOf(a))![4], "127.0.0.1");

      // Each server's client is the client that holds it, and its pid is Postgres's own.
      const servers = await show("SERVERS");
      assertEquals(servers.length, 2);
      assertEquals(servers.map((s) => s[3]), ["active", "active"]);
      assertEquals(
        new Set(servers.map((s) => s[7])),
        new Set([pidOf(a), pidOf(c)]),
      );
      const direct = await PgClient.connect({
        socketDir: db.socketDir,
        port: PG_PORT,
        user: "postgres",
        database: "postgres",
      });
      const [real] = await direct.query(
        "select pid::text from pg_stat_activity where backend_type = 'client backend' " +
          "and state = 'idle in transaction'",
      );
      await direct.close();
      assertEquals(new Set(servers.map((s) => s[4])), new Set(real!.rows.map((r) => r[0])));
      assertEquals(
        new Set([a, c].map((x) => byPid.get(pidOf(x))![9])),
        new Set(servers.map((s) => s[4])),
      );

      await a.query("commit");
      await c.query("commit");
      assertEquals((await waited).rows[0]["?column?"], "served");
      const [stats] = await show("STATS");
      assertEquals(stats!.slice(0, 2), ["postgres", "postgres"]);
      assert(Number(stats![2]) >= 3 && Number(stats![3]) >= 1, stats!.join("|"));
      assertEquals(await show("VERSION"), [["Tessera pooler 0.1.0"]]);

      // node-postgres, simple protocol: the same console; errors carry a SQLSTATE.
      const admin = await connect("pgbouncer");
      assertEquals((await admin.query("show pools")).rows[0].sv_idle, "2");
      const bad = await assertRejects(() => admin.query("select 1"));
      assertEquals((bad as { code?: string }).code, "0A000");
      const badShow = await assertRejects(() => admin.query("show lists"));
      assertEquals((badShow as { code?: string }).code, "0A000");
      assertEquals((await admin.query("SHOW VERSION;")).rows[0].version, "Tessera pooler 0.1.0");

      // The extended protocol (postgres.js uses it for everything) is refused, then all is well.
      const sql = postgres({ ...CONFIG, database: "pgbouncer", max: 1, fetch_types: false });
      try {
        const err = await assertRejects(() => sql`show pools`);
        assertEquals((err as { code?: string }).code, "0A000");
      } finally {
        await sql.end();
      }
      assertEquals((await admin.query("show servers")).rows.length, 2);

      // A malformed message: FATAL 08P01 and the connection closes; the pooler goes on.
      const raw = await RawClient.connect(POOLER_PORT, false);
      await raw.send((w) => w.startupMessage({ user: "postgres", database: "pgbouncer" }));
      await raw.untilReady();
      await raw.sendBytes([0x51, 0, 0, 0, 6, 0x53, 0x48]); // Query "SH" without its terminator
      const last = (await raw.untilClosed()).at(-1)!;
      assertEquals(last.type, Backend.errorResponse);
      const fields = decodeErrorFields(last.payload);
      assertEquals([fields.severity, fields.code], ["FATAL", "08P01"]);
      raw.close();
      assertEquals((await admin.query("show version")).rowCount, 1);

      // Users who are not admins do not get in.
      const other = await runPsql(
        `host=127.0.0.1 port=${POOLER_PORT} user=app dbname=pgbouncer`,
        "show pools",
      );
      assertEquals(other.code, 2);
      assert(other.stderr.includes('user "app" may not open the admin console'), other.stderr);
    });
  },
});

Deno.test({
  name: "pooler admin console: PAUSE waits for running transactions, holds new ones across a " +
    "Postgres restart, RESUME serves them",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    await withConsole(async (pooler, db, connect) => {
      const [inTx, later, pinned] = [await connect(), await connect(), await connect()];
      await pinned.query("create database otherdb");
      await inTx.query("begin");
      await inTx.query("create table t (a int)");
      const console = await connect("pgbouncer");

      // PAUSE does not return while a transaction runs; meanwhile new ones wait.
      let paused = false;
      const pausing = console.query("PAUSE").then(() => paused = true);
      await waitFor(
        "the pool paused",
        async () => (await show("POOLS"))[0]![11] === "1" || undefined,
      );
      const waiting = later.query("select count(*)::int as n from t");
      await waitFor("a waiting client", () => pooler!.stats().pools[0]!.waiting === 1 || undefined);
      assertEquals(paused, false);
      await inTx.query("insert into t values (1)");
      await inTx.query("commit");
      await pausing;
      // No backend is left open: Postgres may restart. A client of a database that had no pool
      // yet waits too (its login needs a backend).
      assertEquals(pooler.stats().pools.map((p) => p.size), [0]);
      const otherQuery = connect("otherdb").then((o) => o.query("select current_database() as d"));
      await waitFor("the other pool", () => pooler!.stats().pools.length === 2 || undefined);
      const [row] = await show("POOLS");
      assertEquals([row![0], row![3], row![11]], ["postgres", "1", "1"]);
      await db.instance.restart("fast");

      // RESUME: the waiting query runs on a new backend, and no client saw an error.
      const admin = await connect("pgbouncer");
      assertEquals((await admin.query("RESUME")).command, "RESUME");
      assertEquals((await waiting).rows[0].n, 1);
      assertEquals((await otherQuery).rows[0].d, "otherdb");
      assertEquals((await inTx.query("select 2 as v")).rows[0].v, 2);

      // A pinned session between transactions does not hold PAUSE up (its backend does not
      // survive a restart, as with any connection); a database without a pool is an error.
      await pinned.query("create temp table scratch (x int)");
      await waitFor("the pin", () => pooler!.stats().pinnedClients === 1 || undefined);
      await admin.query("pause postgres");
      await admin.query("resume postgres");
      const err = await assertRejects(() => admin.query("pause nosuchdb"));
      assertEquals((err as { code?: string }).code, "3D000");
      assertEquals((await later.query("select 3 as v")).rows[0].v, 3);
    });
  },
});
