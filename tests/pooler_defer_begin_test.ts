/**
 * End to end: a plain BEGIN is answered by the pooler and sent to Postgres with the
 * transaction's first statement. The transaction it opens is a real one (rolled back, isolation
 * level and read-only mode as asked), no backend is held between BEGIN and the first statement,
 * and a first statement that cannot get a backend leaves the client in a failed transaction
 * block, as any failed statement would. The BEGIN goes out in front of the first statement's
 * text: error positions still point into the client's own text, a text that does not parse
 * fails the block (and nothing the client pipelined behind it runs outside the block), and an
 * empty query or a COPY behind a BEGIN get their own replies.
 */
import pg from "pg";
import type { PoolerOptions, PoolerServer } from "../pooler/mod.ts";
import { withPooler as withPoolerOn } from "./support/pooler.ts";
import { TesseraError } from "../shared/errors/mod.ts";
import { Backend, decodeErrorFields, PgClient } from "../shared/wire/mod.ts";
import { assert, assertEquals, assertRejects } from "../shared/testing/assert.ts";
import type { TestPostgres } from "./support/postgres.ts";
import { RawClient } from "./support/raw_client.ts";

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

/** The SQLSTATE and position of the errors `sql` gets, in a transaction block, through `c`. */
async function errorsInBlock(c: RawClient, sql: string): Promise<[string, string][]> {
  assertEquals(statusOf(await c.query("begin")), "T");
  const replies = await c.query(sql);
  assertEquals(statusOf(replies), "E");
  assertEquals(statusOf(await c.query("rollback")), "I");
  return errorsOf(replies);
}

type Reply = { type: number; payload: Uint8Array };

function errorsOf(msgs: Reply[]): [string, string][] {
  return msgs.filter((m) => m.type === Backend.errorResponse).map((m) => {
    const f = decodeErrorFields(m.payload);
    return [f.code, f.position ?? ""];
  });
}

function statusOf(msgs: Reply[]): string {
  return String.fromCharCode(msgs.at(-1)!.payload[0]!);
}

Deno.test({
  name: "pooler deferred BEGIN sent with the first statement: errors, pipelining, COPY",
  ...opts,
  async fn() {
    await withPooler({ poolSize: 2, queueTimeoutMs: 60_000 }, async (pooler, db) => {
      const a = await connect();
      await one(a, "create table behind_t (x int)");
      // Postgres gets the BEGIN in front of the first statement, in one query.
      await a.query("BEGIN ;");
      assertEquals(await one(a, "select current_query()"), "BEGIN;select current_query()");
      await a.query("rollback");
      // A runtime error and a syntax error: SQLSTATE and position as on Postgres itself.
      const direct = await RawClient.connect(`${db.socketDir}/.s.PGSQL.${PG_PORT}`);
      const r = await RawClient.connect(POOLER_PORT);
      for (
        const sql of [
          "select nosuchcol from behind_t",
          "insert into behind_t valuez (1)",
          "  select 1 +",
        ]
      ) {
        const want = await errorsInBlock(direct, sql);
        assertEquals(want.length, 1, sql);
        assert(want[0]![1] !== "", sql);
        assertEquals(await errorsInBlock(r, sql), want, sql);
        // The block failed: the next statement is refused until the rollback.
        await a.query("begin");
        await assertRejects(() => a.query(sql));
        assertEquals(a.transactionStatus, "E", sql);
        assertEquals(await sqlState(a.query("select 1")), "25P02", sql);
        assertEquals((await a.query("rollback"))[0]!.command, "ROLLBACK", sql);
        assertEquals(a.transactionStatus, "I", sql);
      }
      direct.close();
      assertEquals(pooler.stats().pools[0]!.active, 0);

      // Pipelined behind a text that does not parse: nothing runs outside the block.
      assertEquals(statusOf(await r.query("begin")), "T");
      await r.send((w) =>
        w.query("insert into behind_t valuez (1)").query("insert into behind_t values (2)")
          .query("commit")
      );
      const first = await r.untilReady();
      assertEquals(errorsOf(first).map(([code]) => code), ["42601"]);
      assertEquals(statusOf(first), "E");
      const second = await r.untilReady();
      assertEquals(errorsOf(second).map(([code]) => code), ["25P02"]);
      assertEquals(statusOf(second), "E");
      const third = await r.untilReady();
      assertEquals(third.map((m) => m.type), [Backend.commandComplete, Backend.readyForQuery]);
      assertEquals(statusOf(third), "I");
      assertEquals(await one(a, "select count(*) from behind_t"), "0");
      // ... and behind one that does: the block holds both, and a rollback undoes both.
      assertEquals(statusOf(await r.query("begin")), "T");
      await r.send((w) =>
        w.query("insert into behind_t values (3)").query("insert into behind_t values (4)")
          .query("select count(*) from behind_t")
      );
      assertEquals(statusOf(await r.untilReady()), "T");
      assertEquals(statusOf(await r.untilReady()), "T");
      const counted = await r.untilReady();
      assertEquals(statusOf(counted), "T");
      const row = counted.find((m) => m.type === Backend.dataRow)!;
      assertEquals(new TextDecoder().decode(row.payload.subarray(6)), "2");
      assertEquals(statusOf(await r.query("rollback")), "I");
      assertEquals(await one(a, "select count(*) from behind_t"), "0");

      // An empty query behind BEGIN gets its own reply, not BEGIN's.
      assertEquals(statusOf(await r.query("begin")), "T");
      const empty = await r.query("  ");
      assertEquals(empty.map((m) => m.type), [Backend.emptyQueryResponse, Backend.readyForQuery]);
      assertEquals(statusOf(empty), "T");
      // COPY FROM STDIN as the first statement.
      await r.send((w) => w.query("copy behind_t from stdin"));
      const copying = await r.reader.next();
      assertEquals(copying?.type, Backend.copyInResponse);
      await r.send((w) => w.copyData(new TextEncoder().encode("7\n8\n")).copyDone());
      const copied = await r.untilReady();
      assertEquals(copied[0]!.type, Backend.commandComplete);
      assertEquals(new TextDecoder().decode(copied[0]!.payload), "COPY 2\0");
      assertEquals(statusOf(copied), "T");
      assertEquals(statusOf(await r.query("commit")), "I");
      assertEquals(await one(a, "select count(*) from behind_t"), "2");
      r.close();
      await a.close();
    });
  },
});
