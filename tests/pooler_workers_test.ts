/**
 * End to end: the pooler as several worker processes (`--workers`), against a real Postgres.
 * Two workers in this process show that worker 0 hands client connections to the other in turn
 * (as sockets passed over a Unix socket), that a cancel request that reaches the wrong worker
 * still stops the right query (and only it), that stats add up, and that DROP DATABASE through
 * one worker closes the other's idle backends to it. Then `deno task pooler
 * --workers 2` as users run it: connections spread over both processes, Postgres never sees more
 * backends than `--pool-size`, cancels work from any connection, a killed worker is started
 * again, a shutdown stops every process, and TLS and SCRAM work on every worker.
 */
import pg from "pg";
import { type PoolerServer, startPooler } from "../pooler/mod.ts";
import { TesseraError } from "../shared/errors/mod.ts";
import { createScramVerifier, MessageWriter, PgClient, writeAll } from "../shared/wire/mod.ts";
import { makeTestCerts } from "../shared/frontend/test_server.ts";
import {
  assert,
  assertEquals,
  assertRejects,
  assertStringIncludes,
} from "../shared/testing/assert.ts";
import { runPsql } from "./support/psql.ts";
import { startTestPostgres } from "./support/postgres.ts";
import { fastIo } from "./support/fast_io.ts";
import { makeSharedTempDir, startTask, waitFor } from "./support/process.ts";

const PG_PORT = 12786;
const POOLER_A = 12787;
const POOLER_B = 12788;
const POOLER_HTTP = 12789;
const opts = { sanitizeOps: false, sanitizeResources: false };

const target = (port: number) => ({
  host: "127.0.0.1",
  port,
  user: "postgres",
  database: "postgres",
});

/** Sends a CancelRequest for (pid, secret) to `port` and waits until the pooler closes it. */
async function cancelAt(port: number, pid: number, secret: number): Promise<void> {
  const conn = await Deno.connect({ hostname: "127.0.0.1", port });
  try {
    await writeAll(conn, new MessageWriter(16).cancelRequest(pid, secret).view());
    const buf = new Uint8Array(16);
    while ((await conn.read(buf)) !== null) { /* closed once handled */ }
  } finally {
    conn.close();
  }
}

Deno.test({
  name: "pooler workers: connections handed out in turn; a cancel that reaches the other worker " +
    "stops the right query; stats add up",
  ...opts,
  async fn() {
    const db = await startTestPostgres({ port: PG_PORT });
    const dir = await Deno.makeTempDir({ prefix: "tessera-workers-" });
    const servers: PoolerServer[] = [];
    const clients: PgClient[] = [];
    try {
      // Worker 1 first (worker 0 waits for it), on a port of its own too, for direct clients.
      for (const [index, port] of [[1, POOLER_B], [0, POOLER_A]] as const) {
        servers.push(
          await startPooler({
            ...fastIo(),
            listen: [`127.0.0.1:${port}`],
            postgres: { socketDir: db.socketDir, port: PG_PORT },
            poolSize: 2,
            worker: { index, count: 2, dir },
          }),
        );
      }
      servers.reverse(); // [worker 0, worker 1]
      const onA = await PgClient.connect(target(POOLER_A));
      clients.push(onA);
      // Worker 0 hands every other connection to worker 1; ids tell the worker apart.
      const turns: PgClient[] = [];
      for (let i = 0; i < 4; i++) turns.push(await PgClient.connect(target(POOLER_A)));
      clients.push(...turns);
      assertEquals([onA, ...turns].map((c) => c.processId % 2), [0, 1, 0, 1, 0]);
      assertEquals((await turns[0]!.query("select 'served'"))[0]!.rows[0]![0], "served");
      const onB = await PgClient.connect(target(POOLER_B));
      const alsoB = await PgClient.connect(target(POOLER_B));
      clients.push(onB, alsoB);
      assertEquals(onB.processId % 2, 1);

      const slow = onB.query("select pg_sleep(30)");
      slow.catch(() => {});
      const other = alsoB.query("select pg_sleep(1), 'other done'");
      await new Promise((r) => setTimeout(r, 300));
      // A wrong secret (this connection is handed to worker 1) cancels nothing.
      await cancelAt(POOLER_A, onB.processId, onB.secretKey ^ 1);
      // The right one reaches worker 0, which hands it to worker 1 on its cancel socket.
      const started = Date.now();
      await cancelAt(POOLER_A, onB.processId, onB.secretKey);
      const err = await assertRejects(() => slow, TesseraError);
      assertEquals(err.code, "57014");
      assert(Date.now() - started < 20_000, "the query ran on: the cancel did not reach it");
      assertEquals((await other)[0]!.rows[0]![1], "other done");
      const [again] = await onB.query("select 'still here'");
      assertEquals(again!.rows[0]![0], "still here");

      // Stats: worker 0's own cover it only; allStats covers both workers, one pool.
      assertEquals(servers[0]!.stats().clients, 3);
      const all = await servers[0]!.allStats();
      assertEquals(all.workers, 2);
      assertEquals(all.clients, 7);
      assertEquals(all.pools.length, 1);
      assertEquals(
        all.pools[0]!.size,
        servers.map((s) => s.stats().pools[0]!.size).reduce((a, b) => a + b),
      );
      // Worker 0 received the right cancel (and handed it on); worker 1 received the wrong one
      // and the right one, and forwarded the right one to Postgres.
      assertEquals(servers[0]!.stats().cancelRequests, { received: 1, forwarded: 0, dequeued: 0 });
      assertEquals(servers[1]!.stats().cancelRequests, { received: 2, forwarded: 1, dequeued: 0 });
      assertEquals(all.cancelRequests, { received: 3, forwarded: 1, dequeued: 0 });

      // DROP DATABASE through worker 0 while worker 1 keeps an idle backend to it: worker 0
      // asks worker 1 to close it, and Postgres does not wait for it (or fail with 55006).
      await onA.query("create database wdb");
      const onWdb = await PgClient.connect({ ...target(POOLER_B), database: "wdb" });
      await onWdb.query("select 1");
      await onWdb.close();
      assertEquals(servers[1]!.stats().pools.find((p) => p.database === "wdb")?.idle, 1);
      await onA.query("drop database wdb");
      assertEquals(servers[1]!.stats().pools.find((p) => p.database === "wdb")?.idle, 0);
    } finally {
      for (const c of clients) await c.close().catch(() => {});
      for (const s of servers) await s.shutdown();
      await Deno.remove(dir, { recursive: true }).catch(() => {});
      await db.cleanup();
    }
  },
});

/** `deno task pooler` flags for two workers on POOLER_A (HTTP on POOLER_HTTP). */
function twoWorkers(socketDir: string, poolSize: number): string[] {
  return [
    "--postgres-socket-dir",
    socketDir,
    "--postgres-port",
    String(PG_PORT),
    "--listen",
    `127.0.0.1:${POOLER_A}`,
    "--http-listen",
    `127.0.0.1:${POOLER_HTTP}`,
    "--pool-size",
    String(poolSize),
    "--workers",
    "2",
  ];
}

interface Status {
  workers?: number;
  workerPids?: Record<string, number>;
  fastIo?: { turns: number; workerRounds: number; turnOpen: boolean; turnRefused?: string };
  clientsTotal: number;
  pools: { size: number; checkouts: number }[];
}

async function status(): Promise<Status> {
  const res = await fetch(`http://127.0.0.1:${POOLER_HTTP}/status`);
  if (!res.ok) throw new Error(`status ${res.status}`);
  return await res.json() as Status;
}

function alive(pid: number): boolean {
  try {
    Deno.statSync(`/proc/${pid}`);
    return true;
  } catch {
    return false;
  }
}

Deno.test({
  name: "pooler workers: deno task pooler --workers 2 spreads clients, keeps the pool size, " +
    "cancels from anywhere, restarts a killed worker and stops them all",
  ...opts,
  async fn() {
    const postgres = await startTestPostgres({ port: PG_PORT });
    const base = await makeSharedTempDir("tessera-workers-");
    let proc: Awaited<ReturnType<typeof startTask>> | undefined;
    const clients: pg.Client[] = [];
    try {
      proc = await startTask("pooler", [
        ...twoWorkers(postgres.socketDir, 4),
        "--reserve-pool-size",
        "0",
      ], `${base}/pooler.log`);
      const first = await waitFor("both workers", async () => {
        const s = await status();
        return s.workers === 2 ? s : undefined;
      });
      const childPid = first.workerPids?.["1"];
      assert(childPid !== undefined && alive(childPid), "no child worker process");
      // Deno's event loop gets its turns on the pooler's thread (shared/fastnet/deno_turn.ts).
      assertEquals(first.fastIo?.turnRefused, undefined);
      assert(first.fastIo?.turnOpen, `no socket pair for Deno's turns: ${JSON.stringify(first)}`);

      // 24 clients, 10 transactions each, on 4 backends in all.
      for (let i = 0; i < 24; i++) {
        const c = new pg.Client(target(POOLER_A));
        // Those on the worker killed below lose their connection while idle.
        c.on("error", () => {});
        await c.connect();
        clients.push(c);
      }
      await clients[0]!.query("create table if not exists w (id int, by int)");
      const pids = await Promise.all(clients.map(async (c, i) => {
        for (let t = 0; t < 10; t++) {
          await c.query("begin");
          await c.query("insert into w values ($1, $2)", [t, i]);
          await c.query("commit");
        }
        return (await c.query("select pg_backend_pid() as pid")).rows[0].pid as number;
      }));
      // Handed out in turn: half of them on each worker.
      assertEquals(pids.filter((p) => p % 2 === 1).length, 12);
      assertEquals(new Set(pids).size, 24);
      const [{ n }] = (await clients[0]!.query("select count(*)::int as n from w")).rows;
      assertEquals(n, 240);
      const after = await status();
      assertEquals(after.workers, 2);
      assert(after.pools[0]!.size <= 4, `Postgres got ${after.pools[0]!.size} backends`);
      assert(after.clientsTotal >= 24);

      // Cancels from new connections, which the kernel spreads over both workers.
      const wire = await Promise.all(
        Array.from({ length: 6 }, () => PgClient.connect(target(POOLER_A))),
      );
      try {
        assertEquals(new Set(wire.map((c) => c.processId % 2)).size, 2);
        const slow = wire.slice(0, 3).map((c) => c.query("select pg_sleep(30)"));
        for (const q of slow) q.catch(() => {});
        await new Promise((r) => setTimeout(r, 300));
        for (let k = 0; k < 3; k++) await wire[k]!.cancel();
        for (const q of slow) {
          const err = await assertRejects(() => q, TesseraError);
          assertEquals(err.code, "57014");
        }
      } finally {
        for (const c of wire) await c.close().catch(() => {});
      }

      // A killed worker: its clients lose their connections, the others do not notice, and it
      // is started again.
      Deno.kill(childPid, "SIGKILL");
      const onMain = clients.filter((_, i) => pids[i]! % 2 === 0);
      for (const c of onMain) assertEquals((await c.query("select 1 as x")).rows[0].x, 1);
      const restarted = await waitFor("a new worker", async () => {
        const pid = (await status()).workerPids?.["1"];
        return pid !== undefined && pid !== childPid ? pid : undefined;
      });
      const fresh = await waitFor("a client on the new worker", async () => {
        const c = await PgClient.connect(target(POOLER_A));
        if (c.processId % 2 === 1) return c;
        await c.close();
        return undefined;
      });
      assertEquals((await fresh.query("select 7"))[0]!.rows[0]![0], "7");
      await fresh.close();

      for (const c of clients) await c.end().catch(() => {});
      clients.length = 0;
      const st = await proc.stop("SIGTERM");
      assertEquals(st.code, 0);
      await waitFor("the worker to exit", () => alive(restarted) ? undefined : true, 10_000);
    } finally {
      for (const c of clients) await c.end().catch(() => {});
      await proc?.stop("SIGKILL");
      await postgres.cleanup();
    }
  },
});

Deno.test({
  name: "pooler workers: TLS and SCRAM are done by the worker a connection is handed to; " +
    "SIGHUP reloads every worker",
  ...opts,
  async fn() {
    const postgres = await startTestPostgres({ port: PG_PORT });
    const base = await makeSharedTempDir("tessera-workers-");
    const certs = await makeTestCerts();
    let proc: Awaited<ReturnType<typeof startTask>> | undefined;
    try {
      await Deno.writeTextFile(
        `${base}/users.json`,
        JSON.stringify({
          users: [{ name: "postgres", scramVerifier: await createScramVerifier("pw-w") }],
        }),
      );
      proc = await startTask("pooler", [
        ...twoWorkers(postgres.socketDir, 2),
        "--tls-cert",
        certs.certFile,
        "--tls-key",
        certs.keyFile,
        "--auth",
        "scram-sha-256",
        "--auth-file",
        `${base}/users.json`,
      ], `${base}/pooler.log`);
      await waitFor("both workers", async () => (await status()).workers === 2 ? true : undefined);
      const env = { PGPASSWORD: "pw-w", PGSSLMODE: "require" };
      const sql = "select pg_backend_pid() % 2";
      const seen: string[] = [];
      for (let i = 0; i < 4; i++) {
        const r = await runPsql({ port: POOLER_A, database: "postgres" }, sql, env);
        assertEquals(r.code, 0, r.stderr);
        seen.push(r.stdout);
      }
      // Connections alternate between the workers, and each did TLS and SCRAM itself.
      assertEquals([...new Set(seen)].sort(), ["0", "1"]);
      const info = await runPsql({ port: POOLER_A, database: "postgres" }, "\\conninfo", env);
      assertStringIncludes(info.stdout, "SSL connection");
      for (let i = 0; i < 2; i++) {
        const wrong = await runPsql({ port: POOLER_A, database: "postgres" }, "select 1", {
          ...env,
          PGPASSWORD: "nope",
        });
        assertEquals(wrong.code, 2);
        assertStringIncludes(wrong.stderr, 'password authentication failed for user "postgres"');
      }
      // SIGHUP to the first process: every worker reads the users file again.
      await Deno.writeTextFile(
        `${base}/users.json`,
        JSON.stringify({
          users: [{ name: "postgres", scramVerifier: await createScramVerifier("pw-new") }],
        }),
      );
      proc.child.kill("SIGHUP");
      const newEnv = { ...env, PGPASSWORD: "pw-new" };
      await waitFor("the reload in both workers", async () => {
        const got = new Set<string>();
        for (let i = 0; i < 4; i++) {
          const r = await runPsql({ port: POOLER_A, database: "postgres" }, sql, newEnv);
          if (r.code !== 0) return undefined;
          got.add(r.stdout);
        }
        return got.size === 2 ? true : undefined;
      });
      assertEquals((await proc.stop("SIGTERM")).code, 0);
    } finally {
      await proc?.stop("SIGKILL");
      await postgres.cleanup();
      await Deno.remove(certs.dir, { recursive: true }).catch(() => {});
    }
  },
});
