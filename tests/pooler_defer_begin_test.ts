/**
 * End to end: a plain BEGIN is answered by the pooler and sent to Postgres with the
 * transaction's first statement. The transaction it opens is a real one (rolled back, isolation
 * level and read-only mode as asked), no backend is held between BEGIN and the first statement,
 * and a first statement that cannot get a backend leaves the client in a failed transaction
 * block, as any failed statement would.
 */
import pg from "pg";
import type { PoolerOptions, PoolerServer } from "../pooler/mod.ts";
import { withPooler as withPoolerOn } from "./support/pooler.ts";
import { TesseraError } from "../shared/errors/mod.ts";
import { PgClient } from "../shared/wire/mod.ts";
import { assert, assertEquals, assertRejects } from "../shared/testing/assert.ts";
import type { TestPostgres } from "./support/postgres.ts";

const PG_PORT = 12780;
const POOLER_PORT = 12781;
const opts = { sanitizeOps: false, sanitizeResources: false };

function withPooler(
  options: Omit<PoolerOptions, "postgres" | "listen">,
  fn: (pooler: PoolerServer, db: TestPostgres) => Promise<void>,
): Promise<void> {
  return withPoolerOn({ postgres: PG_PORT, pooler: POOLER_PORT }, options, fn);
}

function connect(): Promise<PgClient> {
  return PgClient.connect({
    host: "127.0.0.1",
    port: POOLER_PORT,
    user: "postgres",
    database: "postgres",
  });
}

async function one(c: PgClient, sql: string): Promise<string | null> {
  return (await c.query(sql)).at(-1)?.rows[0]?.[0] ?? null;
}

async function sqlState(p: Promise<unknown>): Promise<string> {
  const err = await assertRejects(() => p);
  return (err as TesseraError).code;
}

Deno.test({
  name: "pooler deferred BEGIN: no backend held until the first statement, a real transaction",
  ...opts,
  async fn() {
    await withPooler({ poolSize: 1, queueTimeoutMs: 60_000 }, async (pooler) => {
      const a = await connect();
      const b = await connect();
      await one(a, "create table deferred_t (x int)");
      const [begun] = await a.query("BEGIN");
      assertEquals(begun!.command, "BEGIN");
      assertEquals(a.transactionStatus, "T");
      // The only backend is free while `a` sits in its BEGIN.
      assertEquals(pooler.stats().pools[0]!.active, 0);
      assertEquals(await one(b, "select 2"), "2");
      // The transaction is real: its insert is rolled back.
      await a.query("insert into deferred_t values (1)");
      assertEquals(a.transactionStatus, "T");
      assertEquals(pooler.stats().pools[0]!.active, 1);
      const [rolled] = await a.query("rollback");
      assertEquals(rolled!.command, "ROLLBACK");
      assertEquals(a.transactionStatus, "I");
      assertEquals(await one(b, "select count(*) from deferred_t"), "0");
      // ... and committed when asked; an empty one commits too.
      await a.query("begin work");
      await a.query("insert into deferred_t values (2)");
      assertEquals((await a.query("commit"))[0]!.command, "COMMIT");
      await a.query("start transaction");
      assertEquals((await a.query("commit"))[0]!.command, "COMMIT");
      assertEquals(await one(b, "select count(*) from deferred_t"), "1");
      // Its modes reach Postgres.
      await a.query("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY;");
      assertEquals(await one(a, "show transaction_isolation"), "repeatable read");
      assertEquals(await one(a, "show transaction_read_only"), "on");
      assertEquals(await sqlState(a.query("insert into deferred_t values (3)")), "25006");
      assertEquals(a.transactionStatus, "E");
      await a.query("rollback");
      await a.query("begin transaction isolation level read uncommitted not deferrable");
      assertEquals(await one(a, "show transaction_isolation"), "read uncommitted");
      assertEquals(await one(a, "show transaction_deferrable"), "off");
      await a.query("commit");
      // A second BEGIN inside the block reaches Postgres (its warning included), as without
      // deferral; so do the forms that may fail at BEGIN itself.
      await a.query("begin");
      await a.query("begin");
      assertEquals(a.transactionStatus, "T");
      await a.query("commit");
      await a.query("begin isolation level serializable");
      assertEquals(await one(a, "show transaction_isolation"), "serializable");
      await a.query("commit");
      // node-postgres, parameters (extended protocol) after a deferred BEGIN.
      const client = new pg.Client({
        host: "127.0.0.1",
        port: POOLER_PORT,
        user: "postgres",
        database: "postgres",
      });
      await client.connect();
      await client.query("BEGIN");
      await client.query("insert into deferred_t values ($1)", [4]);
      const seen = await client.query("select count(*)::int as n from deferred_t where x = $1", [
        4,
      ]);
      assertEquals(seen.rows[0].n, 1);
      await client.query("ROLLBACK");
      await client.end();
      assertEquals(await one(b, "select count(*) from deferred_t where x = 4"), "0");
      await a.close();
      await b.close();
    });
  },
});

Deno.test({
  name: "pooler deferred BEGIN: a first statement that gets no backend fails the block",
  ...opts,
  async fn() {
    await withPooler({ poolSize: 1, reservePoolSize: 0, queueTimeoutMs: 500 }, async () => {
      const holder = await connect();
      const c = await connect();
      await holder.query("begin");
      await holder.query("select 1"); // holds the only backend
      await c.query("begin");
      assertEquals(c.transactionStatus, "T");
      assertEquals(await sqlState(c.query("select 1")), "53300");
      assertEquals(c.transactionStatus, "E");
      assertEquals(await sqlState(c.query("select 1")), "25P02");
      assertEquals((await c.query("rollback"))[0]!.command, "ROLLBACK");
      assertEquals(c.transactionStatus, "I");
      await holder.query("commit");
      assertEquals(await one(c, "select 3"), "3");
      await holder.close();
      await c.close();
    });
  },
});

Deno.test({
  name: "pooler deferred BEGIN: off, a BEGIN takes its backend at once",
  ...opts,
  async fn() {
    await withPooler({ poolSize: 1, queueTimeoutMs: 60_000, deferBegin: false }, async (pooler) => {
      const a = await connect();
      await a.query("begin");
      assertEquals(pooler.stats().pools[0]!.active, 1);
      await a.query("commit");
      assert(pooler.stats().pools[0]!.active <= 1);
      await a.close();
    });
  },
});
