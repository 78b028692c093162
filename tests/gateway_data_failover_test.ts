/**
 * End to end: the gateway's data path shields clients between transactions from a pooler restart
 * and a Postgres restart, and fails a transaction that was open on a lost connection with a
 * clear error while the session goes on. Real Postgres, a real pooler restarted on the same port,
 * real clients (pgbench, node-postgres). The resolver is a fixed table naming the real pooler.
 */
import pg from "pg";
import { type GatewayServer, startGateway } from "../gateway/server.ts";
import type { PoolerEndpoint, SessionTarget, TargetResolver } from "../gateway/routing/target.ts";
import { type PoolerServer, startPooler } from "../pooler/mod.ts";
import { assert, assertEquals } from "../shared/testing/assert.ts";
import { startTestPostgres, type TestPostgres } from "./support/postgres.ts";
import { makeSharedTempDir, startTask, type TestProcess, waitFor } from "./support/process.ts";

const PG_PORT = 13010;
const POOLER_PORT = 13011;
const GW_PORT = 13012;
const POOLER_HTTP_PORT = 13013;

/** Routes every target to one fixed pooler. */
class StaticResolver implements TargetResolver {
  failures = 0;
  #endpoint: PoolerEndpoint = {
    alias: "pooler-1",
    address: `127.0.0.1:${POOLER_PORT}`,
    cell: "c1",
    keyspace: "postgres",
    shard: "-",
    type: "primary",
    term: 1,
  };
  resolve(_target: SessionTarget): Promise<PoolerEndpoint> {
    return Promise.resolve(this.#endpoint);
  }
  reportFailure(): void {
    this.failures++;
  }
}

interface Stack {
  pgi: TestPostgres;
  pooler: PoolerServer;
  gateway: GatewayServer;
  resolver: StaticResolver;
  restartPooler(): Promise<void>;
}

async function withStack(fn: (s: Stack) => Promise<void>): Promise<void> {
  const pgi = await startTestPostgres({ port: PG_PORT, settings: { max_connections: "60" } });
  const startP = () =>
    startPooler({
      listen: [`127.0.0.1:${POOLER_PORT}`],
      postgres: { socketDir: pgi.socketDir, port: PG_PORT },
      poolSize: 10,
      queueTimeoutMs: 120_000,
      // These restarts stand for a pooler that goes away: no drain.
      drainTimeoutMs: 0,
    });
  let pooler: PoolerServer | undefined;
  let gateway: GatewayServer | undefined;
  try {
    pooler = await startP();
    const resolver = new StaticResolver();
    gateway = await startGateway({
      listen: [`127.0.0.1:${GW_PORT}`],
      resolver,
      auth: { lookup: () => ({ method: "trust" }) },
      poolSizePerPooler: 8,
      queueTimeoutMs: 120_000,
    });
    const stack: Stack = {
      pgi,
      pooler,
      gateway,
      resolver,
      restartPooler: async () => {
        await stack.pooler.shutdown();
        pooler = undefined;
        stack.pooler = pooler = await startP();
      },
    };
    await fn(stack);
  } finally {
    await gateway?.shutdown();
    await pooler?.shutdown();
    await pgi.cleanup();
  }
}

async function run(cmd: string, args: string[]): Promise<{ ok: boolean; out: string }> {
  const o = await new Deno.Command(cmd, {
    args,
    stdout: "piped",
    stderr: "piped",
    env: { PGCONNECT_TIMEOUT: "30" },
  }).output();
  const dec = new TextDecoder();
  return { ok: o.success, out: dec.decode(o.stdout) + dec.decode(o.stderr) };
}

interface PgError {
  code?: string;
  message: string;
}

const CONN = ["-h", "127.0.0.1", "-p", String(GW_PORT), "-U", "postgres"];

function client(): pg.Client {
  return new pg.Client({
    host: "127.0.0.1",
    port: GW_PORT,
    user: "postgres",
    database: "postgres",
  });
}

async function until(cond: () => boolean, what: string): Promise<void> {
  for (let i = 0; i < 6000; i++) {
    if (cond()) return;
    await new Promise((r) => setTimeout(r, 10));
  }
  throw new Error(`timed out waiting for ${what}`);
}

Deno.test({
  name: "gateway data: a pooler restart while pgbench runs gives zero failed transactions",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    await withStack(async (s) => {
      const init = await run("pgbench", ["-i", "-s", "1", ...CONN, "postgres"]);
      assert(init.ok, init.out);
      for (const mode of ["simple", "prepared"]) {
        const checkouts = () => s.gateway.stats().pools.reduce((n, p) => n + p.checkouts, 0);
        const start = checkouts();
        let finished = false;
        const bench = run("pgbench", [
          ...CONN,
          "-S",
          "-M",
          mode,
          "-c",
          "10",
          "-j",
          "2",
          "-t",
          "3000",
          "postgres",
        ]).finally(() => finished = true);
        await until(() => checkouts() - start >= 2000 || finished, "pgbench to get going");
        assert(!finished, "pgbench finished before the restart");
        await s.restartPooler();
        const r = await bench;
        assert(r.ok, r.out);
        const processed = /number of transactions actually processed: (\d+)\/(\d+)/.exec(r.out);
        assertEquals(processed?.[1], "30000", r.out);
        assertEquals(processed?.[2], "30000", r.out);
        const failed = /number of failed transactions: (\d+)/.exec(r.out);
        assert(failed === null || failed[1] === "0", r.out);
      }
      assert(s.resolver.failures > 0, "the restart was noticed and reported to the resolver");
    });
  },
});

Deno.test({
  name: "gateway data: a Postgres restart while pgbench runs gives zero failed transactions",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    await withStack(async (s) => {
      const init = await run("pgbench", ["-i", "-s", "1", ...CONN, "postgres"]);
      assert(init.ok, init.out);
      const checkouts = () => s.gateway.stats().pools.reduce((n, p) => n + p.checkouts, 0);
      let finished = false;
      const bench = run("pgbench", [
        ...CONN,
        "-S",
        "-M",
        "extended",
        "-c",
        "10",
        "-j",
        "2",
        "-t",
        "3000",
        "postgres",
      ]).finally(() => finished = true);
      await until(() => checkouts() >= 2000 || finished, "pgbench to get going");
      assert(!finished, "pgbench finished before the restart");
      await s.pgi.instance.restart("fast");
      const r = await bench;
      assert(r.ok, r.out);
      const processed = /number of transactions actually processed: (\d+)\/(\d+)/.exec(r.out);
      assertEquals(processed?.[1], "30000", r.out);
      assertEquals(processed?.[2], "30000", r.out);
      assert(s.gateway.stats().retries > 0, "the restart was met and retried");
    });
  },
});

Deno.test({
  name: "gateway data: a Postgres restart while clients are idle; their next queries work",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    await withStack(async (s) => {
      const clients = [client(), client(), client()];
      try {
        for (const c of clients) await c.connect();
        await Promise.all(clients.map((c, i) => c.query(`SET work_mem = '${i + 5}MB'`)));
        await Promise.all(clients.map((c) => c.query("SELECT 1")));
        await s.pgi.instance.restart("fast");
        const rows = await Promise.all(
          clients.map((c) => c.query("SELECT current_setting('work_mem') AS w")),
        );
        rows.forEach((r: pg.QueryResult, i: number) => assertEquals(r.rows[0].w, `${i + 5}MB`));
        // And once more through a pooler restart, between transactions.
        await s.restartPooler();
        const again = await Promise.all(
          clients.map((c) => c.query("SELECT current_setting('work_mem') AS w")),
        );
        again.forEach((r: pg.QueryResult, i: number) => assertEquals(r.rows[0].w, `${i + 5}MB`));
      } finally {
        await Promise.allSettled(clients.map((c) => c.end()));
      }
    });
  },
});

Deno.test({
  name:
    "gateway data: a transaction open during a pooler restart fails clearly; the session goes on",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    await withStack(async (s) => {
      const c = client();
      const bystander = client();
      try {
        await c.connect();
        await bystander.connect();
        await c.query("CREATE TABLE t (x int)");
        await c.query("SET application_name = 'survivor'");
        await c.query("BEGIN");
        await c.query("INSERT INTO t VALUES (1)");
        await s.restartPooler();
        // (Pooler and gateway share this process: let the gateway read what the pooler sent.)
        await until(
          () => s.gateway.stats().transactionsFailedByFailover === 1,
          "the gateway to see its pooler connection end",
        );
        // Idle in the block when the connection went: the next statement gets 40001.
        const err = await c.query("INSERT INTO t VALUES (2)").then(() => null, (e: PgError) => e);
        assert(err !== null, "the statement after the lost connection must fail");
        assertEquals(err.code, "40001");
        assert(String(err.message).includes("transaction was rolled back"), err.message);
        const aborted = await c.query("SELECT 1").then(() => null, (e: PgError) => e);
        assertEquals(aborted?.code, "25P02");
        await c.query("ROLLBACK");
        const r = await c.query(
          "SELECT count(*)::int AS n, current_setting('application_name') AS a FROM t",
        );
        assertEquals(r.rows[0].n, 0);
        assertEquals(r.rows[0].a, "survivor");

        // A statement running when the connection goes: 08006, and the session goes on. (The
        // block is open on the pooler once a statement after the deferred BEGIN has answered;
        // a transaction whose BEGIN's reply had not come back yet would be sent again.)
        await c.query("BEGIN");
        await c.query("SELECT 1");
        const running = c.query("SELECT pg_sleep(30)").then(() => null, (e: PgError) => e);
        await until(() => s.pooler.stats().activeClients > 0, "the statement to run");
        await s.restartPooler();
        const lost = await running;
        assertEquals(lost?.code, "08006");
        await c.query("ROLLBACK");
        const after = await c.query("SELECT 7 AS v");
        assertEquals(after.rows[0].v, 7);
        const b = await bystander.query("SELECT 8 AS v");
        assertEquals(b.rows[0].v, 8);
        assert(s.gateway.stats().transactionsFailedByFailover >= 2);
      } finally {
        await Promise.allSettled([c.end(), bystander.end()]);
      }
    });
  },
});

/** Whether something accepts TCP connections on `port` of 127.0.0.1. */
async function listening(port: number): Promise<boolean> {
  try {
    const c = await Deno.connect({ hostname: "127.0.0.1", port });
    c.close();
    return true;
  } catch {
    return false;
  }
}

Deno.test({
  name:
    "gateway data: a planned pooler restart (SIGTERM, drain, new process) gives zero failed transactions",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    const pgi = await startTestPostgres({ port: PG_PORT, settings: { max_connections: "60" } });
    const dir = await makeSharedTempDir("tessera-drain-");
    const args = [
      ...["--listen", `127.0.0.1:${POOLER_PORT}`, "--http-listen", `127.0.0.1:${POOLER_HTTP_PORT}`],
      ...["--postgres-socket-dir", pgi.socketDir, "--postgres-port", String(PG_PORT)],
      ...["--pool-size", "10", "--queue-timeout", "120", "--drain-timeout", "30"],
    ];
    let started = 0;
    const startProcess = async (): Promise<TestProcess> => {
      const p = await startTask("pooler", args, `${dir}/pooler-${++started}.log`);
      await waitFor(
        "the pooler to listen",
        async () => (await listening(POOLER_PORT)) || undefined,
      );
      return p;
    };
    let proc: TestProcess | undefined;
    let gateway: GatewayServer | undefined;
    const logs: string[] = [];
    try {
      proc = await startProcess();
      gateway = await startGateway({
        listen: [`127.0.0.1:${GW_PORT}`],
        resolver: new StaticResolver(),
        auth: { lookup: () => ({ method: "trust" }) },
        poolSizePerPooler: 8,
        queueTimeoutMs: 120_000,
      });
      const gw = gateway;
      /** SIGTERM to the running pooler, and a new one on the same ports as soon as they are free. */
      const restart = async () => {
        const old = proc!;
        old.child.kill("SIGTERM");
        // The old process closes its listeners at once, then drains; the new one starts meanwhile.
        await waitFor(
          "the old pooler to close its listener",
          async () => (await listening(POOLER_PORT)) ? undefined : true,
        );
        proc = await startProcess();
        const status = await old.child.status;
        assertEquals(status.code, 0, "the drained pooler exits cleanly");
        logs.push(await Deno.readTextFile(old.logFile));
      };
      const init = await run("pgbench", ["-i", "-s", "1", ...CONN, "postgres"]);
      assert(init.ok, init.out);
      const checkouts = () => gw.stats().pools.reduce((n, p) => n + p.checkouts, 0);
      const perClient = { "tpcb-like": 1000, "select-only": 3000 };
      for (
        const [script, mode] of [["tpcb-like", "simple"], ["select-only", "prepared"]] as const
      ) {
        const start = checkouts();
        const retries = gw.stats().retries;
        let finished = false;
        const bench = run("pgbench", [
          ...CONN,
          // -n: no vacuum first (it would empty pgbench_history, checked below).
          ...["-n", "-b", script, "-M", mode, "-c", "10", "-j", "2"],
          ...["-t", String(perClient[script]), "postgres"],
        ]).finally(() => finished = true);
        await until(() => checkouts() - start >= 1500 || finished, "pgbench to get going");
        assert(!finished, "pgbench finished before the restart");
        await restart();
        const r = await bench;
        assert(r.ok, r.out);
        const processed = /number of transactions actually processed: (\d+)\/(\d+)/.exec(r.out);
        const expected = String(10 * perClient[script]);
        assertEquals(processed?.[1], expected, r.out);
        assertEquals(processed?.[2], expected, r.out);
        const failed = /number of failed transactions: (\d+)/.exec(r.out);
        assert(failed === null || failed[1] === "0", r.out);
        assert(gw.stats().retries > retries, "transactions met the restart and were sent again");
      }
      assertEquals(gw.stats().transactionsFailedByFailover, 0);
      // Every tpcb-like transaction committed exactly once: one history row each, and the
      // balances add up.
      const c = client();
      await c.connect();
      try {
        const r = await c.query(
          `SELECT (SELECT count(*) FROM pgbench_history)::int AS n,
             (SELECT sum(delta) FROM pgbench_history)::bigint AS d,
             (SELECT sum(abalance) FROM pgbench_accounts)::bigint AS a,
             (SELECT sum(bbalance) FROM pgbench_branches)::bigint AS b`,
        );
        assertEquals(r.rows[0].n, 10 * perClient["tpcb-like"]);
        assertEquals(r.rows[0].a, r.rows[0].d);
        assertEquals(r.rows[0].b, r.rows[0].d);
      } finally {
        await c.end();
      }
      for (const log of logs) assert(log.includes("draining"), log);
    } finally {
      await gateway?.shutdown();
      await proc?.stop();
      await pgi.cleanup();
      await Deno.remove(dir, { recursive: true }).catch(() => undefined);
    }
  },
});
