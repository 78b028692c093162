/**
 * End to end: session state kept under transaction pooling, with real drivers (node-postgres and
 * postgres.js) while other clients churn the few backends: settings (SET, startup options, RESET,
 * SET LOCAL, rolled-back SET), protocol-level and SQL-level prepared statements, temporary
 * tables, LISTEN/NOTIFY, pg_backend_pid().
 */
import pg from "pg";
import postgres from "postgres";
import { type PoolerServer, startPooler } from "../pooler/mod.ts";
import { assert, assertEquals, assertRejects } from "../shared/testing/assert.ts";
import { startTestPostgres, type TestPostgres } from "./support/postgres.ts";
import { waitFor } from "./support/process.ts";
import { fastIo } from "./support/fast_io.ts";

const PG_PORT = 12710;
const POOLER_PORT = 12711;
const CONFIG = { host: "127.0.0.1", port: POOLER_PORT, user: "postgres", database: "postgres" };

let marker = 0;

/** The pid of the real backend serving this statement (pg_backend_pid() shows the virtual one). */
async function realPid(client: pg.Client): Promise<number> {
  const r = await client.query(
    `select pid from pg_catalog.pg_stat_activity where query = current_query() /* ${marker++} */`,
  );
  return r.rows[0].pid;
}

/** Clients that keep borrowing backends until stopped. */
function churn(n: number): { stop(): Promise<void> } {
  let stopping = false;
  const clients = Array.from({ length: n }, () => new pg.Client(CONFIG));
  const running = Promise.all(clients.map(async (c, i) => {
    await c.connect();
    let k = 0;
    while (!stopping) await c.query("select $1::int + pg_backend_pid() * 0 as v", [i + k++]);
    await c.end();
  }));
  return {
    async stop() {
      stopping = true;
      await running;
    },
  };
}

async function withPooler(fn: (pooler: PoolerServer, db: TestPostgres) => Promise<void>) {
  const db = await startTestPostgres({ port: PG_PORT });
  let pooler: PoolerServer | undefined;
  try {
    pooler = await startPooler({
      ...fastIo(),
      listen: [`127.0.0.1:${POOLER_PORT}`],
      postgres: { socketDir: db.socketDir, port: PG_PORT },
      poolSize: 3,
      queueTimeoutMs: 60_000,
    });
    await fn(pooler, db);
  } finally {
    await pooler?.shutdown();
    await db.cleanup();
  }
}

const opts = { sanitizeOps: false, sanitizeResources: false };

/**
 * Waits until the pooler reports `count` sessions pinned for `reason` (it checks pinned state
 * right after the transaction, while the client already has its answer).
 */
async function pins(pooler: PoolerServer, reason: string, count: number | undefined) {
  await waitFor(
    `${count ?? 0} sessions pinned for ${reason}`,
    () => pooler.stats().pins[reason] === count ? true : undefined,
    10_000,
  );
}

Deno.test({
  name: "pooler session state: settings follow the client across backends (node-postgres)",
  ...opts,
  async fn() {
    await withPooler(async () => {
      const c = new pg.Client({
        ...CONFIG,
        application_name: "app-one",
        options: "-c statement_timeout=7s -c search_path=app,public",
      });
      await c.connect();
      const load = churn(8);
      try {
        await c.query("create schema app; create table app.items (id int)");
        const seen = new Set<number>();
        const show = async (name: string) =>
          (await c.query(`select current_setting('${name}') as v`)).rows[0].v;
        for (let i = 0; i < 25; i++) {
          seen.add(await realPid(c));
          assertEquals(await show("application_name"), "app-one");
          assertEquals(await show("statement_timeout"), "7s");
          await c.query("insert into items values ($1)", [i]);
        }
        assert(seen.size > 1, "the client should have been served by several backends");
        assertEquals((await c.query("select count(*)::int as n from app.items")).rows[0].n, 25);

        await c.query("set search_path = public");
        await c.query("set application_name = 'changed'");
        await c.query("select set_config('myapp.tenant', 'acme', false)");
        for (let i = 0; i < 15; i++) {
          assertEquals(await show("search_path"), "public");
          assertEquals(await show("application_name"), "changed");
          assertEquals(await show("myapp.tenant"), "acme");
        }
        // RESET goes back to the value given at startup, as on Postgres.
        await c.query("reset application_name");
        for (let i = 0; i < 5; i++) assertEquals(await show("application_name"), "app-one");
        // SET LOCAL ends with its transaction; a rolled-back SET leaves nothing.
        await c.query("begin; set local work_mem = '7MB'; commit");
        await c.query("begin; set work_mem = '9MB'; rollback");
        for (let i = 0; i < 5; i++) assertEquals(await show("work_mem"), "4MB");
        // RESET ALL / DISCARD ALL: back to the startup settings.
        await c.query("discard all");
        for (let i = 0; i < 5; i++) {
          assertEquals(await show("statement_timeout"), "7s");
          assertEquals(await show("search_path"), "app,public");
        }
        // Settings of one client never leak into another.
        const other = new pg.Client(CONFIG);
        await other.connect();
        for (let i = 0; i < 10; i++) {
          const r = await other.query(
            "select current_setting('statement_timeout') as t, current_setting('application_name') as a",
          );
          assertEquals(r.rows[0], { t: "0", a: "" });
        }
        await other.end();
      } finally {
        await load.stop();
        await c.end();
      }
    });
  },
});

Deno.test({
  name:
    "pooler session state: prepared statements, temp tables, LISTEN and pg_backend_pid (node-postgres)",
  ...opts,
  async fn() {
    await withPooler(async (pooler) => {
      const c = new pg.Client(CONFIG);
      await c.connect();
      const listener = new pg.Client(CONFIG);
      await listener.connect();
      const load = churn(8);
      try {
        // pg_backend_pid() agrees with the key the client was given, on every backend.
        const processID = (c as unknown as { processID: number }).processID;
        for (let i = 0; i < 10; i++) {
          const r = await c.query("select pg_backend_pid() as p, pg_catalog.pg_backend_pid() as q");
          assertEquals(r.rows[0], { p: processID, q: processID });
        }

        // Protocol-level named statements, used across many backends.
        await c.query("create table t (id int, v text)");
        const seen = new Set<number>();
        for (let i = 0; i < 30; i++) {
          await c.query({
            name: "ins",
            text: "insert into t values ($1, $2)",
            values: [i, `v${i}`],
          });
          const r = await c.query({ name: "sum", text: "select sum(id)::int as s from t" });
          assertEquals(r.rows[0].s, (i * (i + 1)) / 2);
          seen.add(await realPid(c));
        }
        assert(seen.size > 1, "the statements should have run on several backends");

        // SQL-level PREPARE / EXECUTE / DEALLOCATE across backends.
        await c.query("prepare add_one (int) as select $1 + 1 as v");
        const sqlSeen = new Set<number>();
        for (let i = 0; i < 20; i++) {
          assertEquals((await c.query(`execute add_one(${i})`)).rows[0].v, i + 1);
          sqlSeen.add(await realPid(c));
        }
        assert(sqlSeen.size > 1, "EXECUTE should have run on several backends");
        await assertRejects(
          () => c.query("prepare add_one (int) as select 1"),
          Error,
          "already exists",
        );
        await c.query("deallocate add_one");
        await assertRejects(() => c.query("execute add_one(1)"), Error, "does not exist");
        // Several statements in one query.
        const multi = await c.query(
          "prepare p2 as select 2 as v; execute p2; deallocate p2; select 3 as v",
        ) as unknown as pg.QueryResult[];
        assertEquals(multi[1]!.rows[0].v, 2);
        assertEquals(multi[3]!.rows[0].v, 3);

        // A temporary table pins the client to its backend until it is dropped.
        await c.query("create temp table scratch (x int)");
        await pins(pooler, "temp_table", 1);
        const pinnedPid = await realPid(c);
        for (let i = 0; i < 20; i++) {
          await c.query("insert into scratch values ($1)", [i]);
          assertEquals(await realPid(c), pinnedPid);
        }
        assertEquals((await c.query("select count(*)::int as n from scratch")).rows[0].n, 20);
        await c.query("drop table scratch");
        await pins(pooler, "temp_table", undefined);

        // LISTEN pins the listener; every notification reaches it, in order. One it sends
        // itself carries the process id it was given.
        const got: string[] = [];
        const senders: number[] = [];
        listener.on("notification", (n: pg.Notification) => {
          got.push(n.payload ?? "");
          senders.push(n.processId);
        });
        await listener.query("listen events");
        await pins(pooler, "listen", 1);
        for (let i = 0; i < 20; i++) await c.query(`notify events, 'n${i}'`);
        const deadline = Date.now() + 10_000;
        while (got.length < 20 && Date.now() < deadline) {
          await new Promise((r) => setTimeout(r, 20));
        }
        assertEquals(got, Array.from({ length: 20 }, (_, i) => `n${i}`));
        await listener.query("notify events, 'self'");
        while (got.length < 21 && Date.now() < deadline) {
          await new Promise((r) => setTimeout(r, 20));
        }
        assertEquals(senders[20], (listener as unknown as { processID: number }).processID);
        assert(senders[0] !== senders[20], "another client's notification keeps its sender");
        await listener.query("unlisten *");
        await pins(pooler, "listen", undefined);

        // A session advisory lock pins until unlocked.
        await c.query("select pg_advisory_lock(42)");
        await pins(pooler, "advisory_lock", 1);
        await c.query("select pg_advisory_unlock(42)");
        await pins(pooler, "advisory_lock", undefined);
        assertEquals(pooler.stats().pinnedClients, 0);
      } finally {
        await load.stop();
        await c.end();
        await listener.end();
      }
    });
  },
});

Deno.test({
  name: "pooler session state: postgres.js pipelines, named statements, temp tables and LISTEN",
  ...opts,
  async fn() {
    await withPooler(async (pooler) => {
      const sql = postgres({ ...CONFIG, max: 1, onnotice: () => {} });
      const load = churn(8);
      try {
        await sql`create table pj (id int)`;
        await sql`set search_path = pg_catalog, public`;
        const results = await Promise.all(
          Array.from(
            { length: 60 },
            (_, i) => sql`select ${i}::int as v, current_setting('search_path') as sp`,
          ),
        );
        results.forEach((r, i) => assertEquals(r[0], { v: i, sp: "pg_catalog, public" }));
        for (let i = 0; i < 20; i++) await sql`insert into pj values (${i})`;
        assertEquals((await sql`select count(*)::int as n from pj`)[0]!.n, 20);

        // An error in the middle of pipelined queries fails only that query.
        const mixed = await Promise.allSettled([
          sql`select 1 as v`,
          sql`select 1/0 as v`,
          sql`select 3 as v`,
        ]);
        assertEquals(mixed.map((m) => m.status), ["fulfilled", "rejected", "fulfilled"]);
        assertEquals((await sql`select 4 as v`)[0]!.v, 4);

        await sql`create temp table tmp (x int)`;
        for (let i = 0; i < 10; i++) await sql`insert into tmp values (${i})`;
        assertEquals((await sql`select count(*)::int as n from tmp`)[0]!.n, 10);

        const got: string[] = [];
        const listening = await sql.listen("pj_events", (payload) => got.push(payload));
        const notifier = postgres({ ...CONFIG, max: 2 });
        for (let i = 0; i < 10; i++) await notifier`select pg_notify('pj_events', ${String(i)})`;
        const deadline = Date.now() + 10_000;
        while (got.length < 10 && Date.now() < deadline) {
          await new Promise((r) => setTimeout(r, 20));
        }
        assertEquals(got, Array.from({ length: 10 }, (_, i) => String(i)));
        await listening.unlisten();
        await notifier.end();

        await sql.begin(async (tx) => {
          await tx`insert into pj values (100)`;
          await tx`insert into pj values (101)`;
        });

        // SQL-level PREPARE, then EXECUTE through the extended protocol (a tagged template):
        // the session is pinned, and it works.
        await sql.unsafe("prepare times_ten (int) as select $1 * 10 as v");
        for (let i = 0; i < 5; i++) assertEquals((await sql`execute times_ten(4)`)[0]!.v, 40);
        await pins(pooler, "sql_prepare_extended", 1);
        await sql.unsafe("deallocate all");
        await pins(pooler, "sql_prepare_extended", undefined);
        assertEquals((await sql`select count(*)::int as n from pj`)[0]!.n, 22);
        assert(pooler.stats().preparedStatements.hits > 0);
      } finally {
        await load.stop();
        await sql.end();
      }
    });
  },
});
