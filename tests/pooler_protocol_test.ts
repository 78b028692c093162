/**
 * End to end: the pooler's behaviour at the edges of the protocol, against a real Postgres:
 * clients killed mid-transaction, cancel requests, the pool's wait timeout, bad input from one
 * client while another keeps working, COPY in both directions, shutdown.
 */
import pg from "pg";
import postgres from "postgres";
import { type PoolerOptions, type PoolerServer, startPooler } from "../pooler/mod.ts";
import { TesseraError } from "../shared/errors/mod.ts";
import {
  Backend,
  decodeErrorFields,
  MessageWriter,
  PgClient,
  type WireMessage,
  writeAll,
} from "../shared/wire/mod.ts";
import { assert, assertEquals, assertRejects } from "../shared/testing/assert.ts";
import { startTestPostgres, type TestPostgres } from "./support/postgres.ts";
import { waitFor } from "./support/process.ts";
import { fastIo } from "./support/fast_io.ts";
import { RawClient } from "./support/raw_client.ts";

const PG_PORT = 12720;
const POOLER_PORT = 12721;
const SMALL_POOLER_PORT = 12722;
const opts = { sanitizeOps: false, sanitizeResources: false };

async function withPooler(
  fn: (pooler: PoolerServer, db: TestPostgres) => Promise<void>,
  poolSize = 4,
) {
  const db = await startTestPostgres({ port: PG_PORT });
  let pooler: PoolerServer | undefined;
  try {
    pooler = await startPooler({
      ...fastIo(),
      listen: [`127.0.0.1:${POOLER_PORT}`],
      postgres: { socketDir: db.socketDir, port: PG_PORT },
      poolSize,
      queueTimeoutMs: 30_000,
    });
    await fn(pooler, db);
  } finally {
    await pooler?.shutdown();
    await db.cleanup();
  }
}

function errorCodes(msgs: WireMessage[]): string[] {
  return msgs.filter((m) => m.type === Backend.errorResponse).map((m) =>
    decodeErrorFields(m.payload).code
  );
}

async function direct(db: TestPostgres, sql: string): Promise<(string | null)[][]> {
  const c = await PgClient.connect({
    socketDir: db.socketDir,
    port: PG_PORT,
    user: "postgres",
    database: "postgres",
  });
  try {
    return (await c.query(sql)).at(-1)!.rows;
  } finally {
    await c.close();
  }
}

const IN_TRANSACTION_SQL = "select count(*) from pg_stat_activity where backend_type = " +
  "'client backend' and (state like 'idle in transaction%' or query like '%pg_sleep(60)%') " +
  "and pid <> pg_backend_pid()";

/**
 * A pooler with one backend on SMALL_POOLER_PORT and the given queue timeout: `fn` gets it and a
 * connect function for raw clients (closed after it).
 */
async function withOneBackend(
  queueTimeoutMs: number,
  fn: (
    pooler: PoolerServer,
    connect: () => Promise<PgClient>,
    db: TestPostgres,
  ) => Promise<void>,
  more: Partial<PoolerOptions> = {},
): Promise<void> {
  const db = await startTestPostgres({ port: PG_PORT });
  let pooler: PoolerServer | undefined;
  const clients: PgClient[] = [];
  try {
    pooler = await startPooler({
      ...fastIo(),
      listen: [`127.0.0.1:${SMALL_POOLER_PORT}`],
      postgres: { socketDir: db.socketDir, port: PG_PORT },
      poolSize: 1,
      queueTimeoutMs,
      ...more,
    });
    const target = {
      host: "127.0.0.1",
      port: SMALL_POOLER_PORT,
      user: "postgres",
      database: "postgres",
    };
    await fn(pooler, async () => {
      const c = await PgClient.connect(target);
      clients.push(c);
      return c;
    }, db);
  } finally {
    for (const c of clients) await c.close().catch(() => {});
    await pooler?.shutdown();
    await db.cleanup();
  }
}

Deno.test({
  name: "pooler: a client killed in or during a transaction leaves no backend in a transaction",
  ...opts,
  async fn() {
    await withPooler(async (pooler, db) => {
      await direct(db, "create table k (id int)");
      // Killed while idle in a transaction.
      const a = await RawClient.connect(POOLER_PORT);
      const r = await a.query("begin; insert into k values (1)");
      assertEquals(r.at(-1)!.payload[0], 0x54); // 'T'
      a.close();
      // Killed while its query runs.
      const b = await RawClient.connect(POOLER_PORT);
      await b.send((w) => w.query("begin; insert into k values (2); select pg_sleep(60)"));
      await waitFor(
        "the query to run",
        async () =>
          (await direct(
              db,
              "select count(*) from pg_stat_activity where query like '%pg_sleep(60)%' " +
                "and pid <> pg_backend_pid()",
            ))[0]![0] === "1"
            ? true
            : undefined,
      );
      b.close();
      await waitFor(
        "no backend left in a transaction",
        async () => (await direct(db, IN_TRANSACTION_SQL))[0]![0] === "0" ? true : undefined,
      );
      assertEquals((await direct(db, "select count(*) from k"))[0]![0], "0");
      await waitFor(
        "no backend lent",
        () => pooler.stats().pools[0]!.active === 0 ? true : undefined,
      );
      // The pool still serves.
      const c = new pg.Client({
        host: "127.0.0.1",
        port: POOLER_PORT,
        user: "postgres",
        database: "postgres",
      });
      await c.connect();
      for (let i = 0; i < 10; i++) await c.query("insert into k values ($1)", [i]);
      assertEquals((await c.query("select count(*)::int as n from k")).rows[0].n, 10);
      await c.end();
    });
  },
});

Deno.test({
  name: "pooler: a cancel request stops the right query and only it",
  ...opts,
  async fn() {
    await withPooler(async () => {
      const target = {
        host: "127.0.0.1",
        port: POOLER_PORT,
        user: "postgres",
        database: "postgres",
      };
      const a = await PgClient.connect(target);
      const b = await PgClient.connect(target);
      try {
        const slowA = a.query("select pg_sleep(30)");
        slowA.catch(() => {});
        const slowB = b.query("select pg_sleep(1.5), 'b done'");
        await new Promise((r) => setTimeout(r, 400));
        await a.cancel();
        const err = await assertRejects(() => slowA, TesseraError);
        assertEquals(err.code, "57014");
        const [rb] = await slowB;
        assertEquals(rb!.rows[0]![1], "b done");
        // The cancelled session carries on; a cancel while idle does nothing.
        await a.cancel();
        const [ra] = await a.query("select 1");
        assertEquals(ra!.rows[0]![0], "1");
        // A wrong secret cancels nothing.
        const slow = a.query("select pg_sleep(1), 'a done'");
        const bad = await Deno.connect({ hostname: "127.0.0.1", port: POOLER_PORT });
        await writeAll(bad, new MessageWriter(16).cancelRequest(a.processId, 12345).view());
        bad.close();
        assertEquals((await slow)[0]!.rows[0]![1], "a done");
      } finally {
        await a.close();
        await b.close();
      }
    });
  },
});

Deno.test({
  name: "pooler: waiting longer than the queue timeout for a backend ends in 53300",
  ...opts,
  async fn() {
    await withOneBackend(300, async (pooler, connect) => {
      const a = await connect();
      const b = await connect();
      await a.query("begin");
      await a.query("select 1"); // holds the only backend (BEGIN alone is deferred)
      const err = await assertRejects(() => b.query("select 1"), TesseraError);
      assertEquals(err.code, "53300");
      assert(err.message.includes("waited") && err.message.includes("1 connections"), err.message);
      await a.query("commit");
      const [r] = await b.query("select 2");
      assertEquals(r!.rows[0]![0], "2");
      assertEquals(pooler.stats().pools[0]!.timeouts, 1);
    });
  },
});

Deno.test({
  name: "pooler: a cancel for a query waiting for a backend takes it out of the queue (57014)",
  ...opts,
  async fn() {
    await withOneBackend(60_000, async (pooler, connect) => {
      const [a, b, c] = [await connect(), await connect(), await connect()];
      await a.query("begin");
      await a.query("select 1"); // holds the only backend
      const queued = (n: number) =>
        waitFor(`${n} waiting`, () => pooler.stats().pools[0]!.waiting === n || undefined, 5000);

      // Autocommit: the statement fails with 57014 and the session goes on.
      const waiting = b.query("select 'b ran'");
      const behind = c.query("select 'c ran'"); // queued behind b: it must keep its place
      await queued(2);
      await b.cancel();
      const err = await assertRejects(() => waiting, TesseraError);
      assertEquals([err.code, err.message], ["57014", "canceling statement due to user request"]);
      await queued(1);

      // In a transaction block (its BEGIN answered by the pooler): the block fails, as in Postgres.
      await b.query("begin");
      const inBlock = b.query("select 'b in block'");
      await queued(2);
      await b.cancel();
      assertEquals((await assertRejects(() => inBlock, TesseraError)).code, "57014");
      assertEquals((await assertRejects(() => b.query("select 1"), TesseraError)).code, "25P02");
      await b.query("rollback");

      // a's transaction was not touched; c got the backend after it, and b works again.
      const [ra] = await a.query("select 'a still in its transaction'");
      assertEquals(ra!.rows[0]![0], "a still in its transaction");
      await a.query("commit");
      assertEquals((await behind)[0]!.rows[0]![0], "c ran");
      assertEquals((await b.query("select 'b again'"))[0]!.rows[0]![0], "b again");
      // A cancel while nothing waits or runs does nothing.
      await b.cancel();
      assertEquals((await b.query("select 3"))[0]!.rows[0]![0], "3");
      assertEquals(pooler.stats().cancelRequests, { received: 3, forwarded: 0, dequeued: 2 });
    });
  },
});

Deno.test({
  name: "pooler: DROP, CREATE ... TEMPLATE and ALTER ... RENAME DATABASE close its idle backends " +
    "to that database first",
  ...opts,
  async fn() {
    await withPooler(async (pooler) => {
      const at = (database: string) => ({
        host: "127.0.0.1",
        port: POOLER_PORT,
        user: "postgres",
        database,
      });
      const admin = await PgClient.connect(at("postgres"));
      try {
        for (const d of ["dropme", "tmpl", "renameme"]) await admin.query(`create database ${d}`);
        // Each leaves an idle backend in the pool for its database; the tmpl client stays.
        for (const d of ["dropme", "renameme"]) {
          const c = await PgClient.connect(at(d));
          await c.query("select 1");
          await c.close();
        }
        const stays = await PgClient.connect(at("tmpl"));
        await stays.query("select 1");
        const idleOf = (d: string) => pooler.stats().pools.find((p) => p.database === d)?.idle ?? 0;
        assertEquals([idleOf("dropme"), idleOf("tmpl"), idleOf("renameme")], [1, 1, 1]);

        // Without the pooler's help each would wait 5 s for those backends, then fail (55006).
        await admin.query("create database copied template tmpl");
        await admin.query("alter database renameme rename to renamed");
        // In the extended protocol too (postgres.js sends every statement that way).
        const sql = postgres({ ...at("postgres"), port: POOLER_PORT, max: 1, fetch_types: false });
        try {
          await sql.unsafe("DROP DATABASE IF EXISTS dropme");
        } finally {
          await sql.end();
        }
        const [r] = await admin.query(
          "select string_agg(datname, ',' order by datname) from pg_database " +
            "where datname in ('dropme', 'tmpl', 'renameme', 'renamed', 'copied')",
        );
        assertEquals(r!.rows[0]![0], "copied,renamed,tmpl");
        // The client of the template goes on, on a new backend.
        const [again] = await stays.query("select current_database()");
        assertEquals(again!.rows[0]![0], "tmpl");
        await stays.close();
      } finally {
        await admin.close();
      }
    });
  },
});

Deno.test({
  name:
    "pooler: a client idle in a transaction past --idle-transaction-timeout is closed (25P03) " +
    "and its transaction rolled back",
  ...opts,
  async fn() {
    await withOneBackend(60_000, async (pooler, connect, db) => {
      const [idle, busy, next] = [await connect(), await connect(), await connect()];
      await idle.query("create table t (a int)");
      await idle.query("begin");
      await idle.query("insert into t values (1)"); // then nothing: it holds the only backend
      // The client that waits for the backend gets it once the idle one is closed, and the
      // insert was rolled back.
      assertEquals((await next.query("select count(*) from t"))[0]!.rows[0]![0], "0");
      assertEquals(await direct(db, IN_TRANSACTION_SQL), [["0"]]);
      // The idle client reads the pooler's FATAL, sent while it was idle.
      const err = await assertRejects(() => idle.query("commit"), TesseraError);
      assertEquals([err.code, err.severity], ["25P03", "FATAL"]);
      assertEquals(err.message, "terminating connection due to idle-in-transaction timeout");

      // A transaction that keeps working, and a client idle outside any, are left alone.
      await busy.query("begin");
      for (let i = 0; i < 8; i++) {
        await busy.query("insert into t values (2)");
        await new Promise((r) => setTimeout(r, 100));
      }
      await busy.query("commit");
      await new Promise((r) => setTimeout(r, 2500));
      assertEquals((await busy.query("select count(*) from t"))[0]!.rows[0]![0], "8");
      assertEquals(pooler.stats().clients, 2);
    }, { idleTransactionTimeoutMs: 1500 });
  },
});

Deno.test({
  name: "pooler: bad input closes that client with an error while another keeps working",
  ...opts,
  async fn() {
    await withPooler(async (pooler, db) => {
      await direct(db, "create table bad (id int)");
      const good = new pg.Client({
        host: "127.0.0.1",
        port: POOLER_PORT,
        user: "postgres",
        database: "postgres",
      });
      await good.connect();
      let stop = false;
      let goodQueries = 0;
      const working = (async () => {
        while (!stop) {
          const r = await good.query("select $1::int as v", [goodQueries]);
          assertEquals(r.rows[0].v, goodQueries++);
        }
      })();
      try {
        // A startup packet of garbage.
        const g = await RawClient.connect(POOLER_PORT, false);
        await g.sendBytes(new TextEncoder().encode("GET / HTTP/1.1\r\nHost: x\r\n\r\n"));
        assertEquals(errorCodes(await g.untilClosed()).length, 1);

        const cases: [string, number[]][] = [
          ["a length below 4", [0x51, 0, 0, 0, 2]],
          ["an unknown message type", [0x7a, 0, 0, 0, 4]],
          ["a Parse without terminators", [0x50, 0, 0, 0, 7, 0x61, 0x62, 0x63]],
          ["a message longer than allowed", [0x51, 0x7f, 0xff, 0xff, 0xff]],
          ["a Bind without terminators", [0x42, 0, 0, 0, 6, 0x61, 0x62]],
        ];
        for (const [what, bytes] of cases) {
          const c = await RawClient.connect(POOLER_PORT);
          await c.query("select 1");
          await c.sendBytes(bytes);
          assertEquals(errorCodes(await c.untilClosed()), ["08P01"], what);
        }
        // Garbage in the middle of a transaction: closed, and the transaction rolled back.
        const t = await RawClient.connect(POOLER_PORT);
        await t.query("begin; insert into bad values (1)");
        await t.sendBytes([0x00, 0, 0, 0, 4]);
        assertEquals(errorCodes(await t.untilClosed()), ["08P01"]);
        await waitFor(
          "the transaction to be rolled back",
          async () => (await direct(db, IN_TRANSACTION_SQL))[0]![0] === "0" ? true : undefined,
        );
        assertEquals((await direct(db, "select count(*) from bad"))[0]![0], "0");
        const before = goodQueries;
        await waitFor(
          "the good client to go on",
          () => goodQueries > before + 5 ? true : undefined,
        );
        await waitFor(
          "no backend lent but the good client's",
          () => pooler.stats().pools[0]!.active <= 1 ? true : undefined,
        );
      } finally {
        stop = true;
        await working;
        await good.end();
      }
    });
  },
});

Deno.test({
  name: "pooler: COPY from and to the client, a failed COPY, and FunctionCall, through psql",
  ...opts,
  async fn() {
    await withPooler(async (_pooler, db) => {
      const psql = async (args: string[], input?: string) => {
        const child = new Deno.Command("psql", {
          args: [
            "-h",
            "127.0.0.1",
            "-p",
            String(POOLER_PORT),
            "-U",
            "postgres",
            "-At",
            ...args,
            "postgres",
          ],
          stdin: input === undefined ? "null" : "piped",
          stdout: "piped",
          stderr: "piped",
        }).spawn();
        if (input !== undefined) {
          const w = child.stdin.getWriter();
          await w.write(new TextEncoder().encode(input));
          await w.close();
        }
        const out = await child.output();
        return {
          ok: out.success,
          stdout: new TextDecoder().decode(out.stdout),
          stderr: new TextDecoder().decode(out.stderr),
        };
      };
      await direct(db, "create table cp (id int, name text)");
      const rows = Array.from({ length: 5000 }, (_, i) => `${i}\tname ${i}`).join("\n") + "\n";
      const load = await psql(["-c", "\\copy cp from stdin"], rows);
      assert(load.ok, load.stderr);
      assertEquals((await direct(db, "select count(*), sum(id) from cp"))[0], ["5000", "12497500"]);
      const dump = await psql(["-c", "copy (select * from cp order by id) to stdout"]);
      assert(dump.ok, dump.stderr);
      assertEquals(dump.stdout, rows);
      // Large objects: psql's \lo_import uses the FunctionCall message.
      const file = await Deno.makeTempFile();
      try {
        await Deno.writeTextFile(file, "a large object through the pooler");
        const lo = await psql(["-c", `\\lo_import ${file}`]);
        assert(lo.ok && lo.stdout.startsWith("lo_import "), lo.stderr + lo.stdout);
        const oid = lo.stdout.trim().split(" ")[1]!;
        const back = await psql(["-c", `select convert_from(lo_get(${oid}), 'UTF8')`]);
        assertEquals(back.stdout.trim(), "a large object through the pooler");
      } finally {
        await Deno.remove(file);
      }
      const failed = await psql([
        "-v",
        "ON_ERROR_STOP=0",
        "-c",
        "\\copy cp from stdin",
        "-c",
        "select count(*) from cp",
      ], "1\tok\nnot-a-number\tx\n");
      assert(failed.stderr.includes("invalid input syntax"), failed.stderr);
      assertEquals(failed.stdout.trim(), "5000");
    });
  },
});

Deno.test({
  name: "pooler: shutdown drains: idle clients get 57P01 at once, transactions in flight finish, " +
    "the rest are closed at the drain timeout",
  ...opts,
  async fn() {
    const db = await startTestPostgres({ port: PG_PORT });
    try {
      const pooler = await startPooler({
        ...fastIo(),
        listen: [`127.0.0.1:${POOLER_PORT}`],
        postgres: { socketDir: db.socketDir, port: PG_PORT },
        poolSize: 3,
        drainTimeoutMs: 3000,
      });
      const idle = await RawClient.connect(POOLER_PORT);
      const inTx = await RawClient.connect(POOLER_PORT);
      const stuck = await RawClient.connect(POOLER_PORT);
      await inTx.query("begin");
      await inTx.query("create table drained (x int)");
      await stuck.query("begin");
      const stopping = pooler.shutdown();
      const idleClosed = idle.untilClosed();
      // New clients are refused at once; the transaction in flight goes on and commits.
      await assertRejects(() => Deno.connect({ hostname: "127.0.0.1", port: POOLER_PORT }));
      const failed = (msgs: { type: number }[]) =>
        msgs.some((m) => m.type === Backend.errorResponse);
      assert(!failed(await inTx.query("insert into drained values (1)")));
      assertEquals(errorCodes(await idleClosed), ["57P01"]);
      assert(!failed(await inTx.query("commit")));
      // Closed as soon as its transaction ended.
      assertEquals(errorCodes(await inTx.untilClosed()), ["57P01"]);
      // Still in its transaction: served until the drain timeout, then closed.
      assert(!failed(await stuck.query("select 1")));
      assertEquals(errorCodes(await stuck.untilClosed()), ["57P01"]);
      await stopping;
      assertEquals(await direct(db, "select count(*) from drained"), [["1"]]);
      await waitFor(
        "the backends to close",
        async () =>
          (await direct(
              db,
              "select count(*) from pg_stat_activity where backend_type = " +
                "'client backend' and pid <> pg_backend_pid()",
            ))[0]![0] === "0"
            ? true
            : undefined,
      );
    } finally {
      await db.cleanup();
    }
  },
});

Deno.test({
  name: "pooler: shutdown without drain tells every client 57P01 and closes the backends",
  ...opts,
  async fn() {
    const db = await startTestPostgres({ port: PG_PORT });
    try {
      const pooler = await startPooler({
        ...fastIo(),
        listen: [`127.0.0.1:${POOLER_PORT}`],
        postgres: { socketDir: db.socketDir, port: PG_PORT },
        poolSize: 2,
        drainTimeoutMs: 0,
      });
      const idle = await RawClient.connect(POOLER_PORT);
      const inTx = await RawClient.connect(POOLER_PORT);
      await inTx.query("begin");
      await pooler.shutdown();
      assertEquals(errorCodes(await idle.untilClosed()), ["57P01"]);
      assertEquals(errorCodes(await inTx.untilClosed()), ["57P01"]);
      await waitFor(
        "the backends to close",
        async () =>
          (await direct(
              db,
              "select count(*) from pg_stat_activity where backend_type = " +
                "'client backend' and pid <> pg_backend_pid()",
            ))[0]![0] === "0"
            ? true
            : undefined,
      );
      await assertRejects(() => Deno.connect({ hostname: "127.0.0.1", port: POOLER_PORT }));
    } finally {
      await db.cleanup();
    }
  },
});
