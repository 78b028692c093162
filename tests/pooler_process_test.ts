/**
 * End to end: the pooler as users run it (`deno task pooler`), standalone and in a cluster,
 * against a real Postgres and a real etcd, driven by real clients (psql, node-postgres) and by
 * its Connect service; and a reload of its auth file and TLS files (SIGHUP, RELOAD).
 */
import pg from "pg";
import { PoolerService, PostgresRole } from "../proto/gen/tessera/pooler/v1/pooler_pb.ts";
import { createRpcClient } from "../shared/rpc/mod.ts";
import { startEtcd } from "../shared/proc/mod.ts";
import { TopoClient } from "../shared/topo/mod.ts";
import { createScramVerifier, PgClient } from "../shared/wire/mod.ts";
import { makeTestCerts, type TestCerts } from "../shared/frontend/test_server.ts";
import { assert, assertEquals, assertMatch, assertRejects } from "../shared/testing/assert.ts";
import { startTestPostgres } from "./support/postgres.ts";
import { runPsql } from "./support/psql.ts";
import { makeSharedTempDir, startTask, waitFor } from "./support/process.ts";

const PG_PORT = 12750;
const POOLER_PORT = 12751;
const POOLER_HTTP = 12752;
const ETCD_CLIENT = 12753;
const ETCD_PEER = 12754;

const psql = (port: number, sql: string, env: Record<string, string> = {}) =>
  runPsql({ port, database: "postgres" }, sql, env);

Deno.test({
  name:
    "pooler process: standalone with SCRAM users file, cluster registration under a lease, status RPCs",
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    const postgres = await startTestPostgres({ port: PG_PORT });
    const base = await makeSharedTempDir("tessera-pooler-");
    const etcd = await startEtcd({
      dataDir: `${base}/etcd`,
      clientPort: ETCD_CLIENT,
      peerPort: ETCD_PEER,
    });
    const endpoint = `http://127.0.0.1:${ETCD_CLIENT}`;
    const topo = await TopoClient.connect({ endpoints: endpoint });
    let proc: Awaited<ReturnType<typeof startTask>> | undefined;
    try {
      // Standalone, SCRAM over TCP against a users file.
      await Deno.writeTextFile(
        `${base}/users.json`,
        JSON.stringify({
          users: [{ name: "postgres", scramVerifier: await createScramVerifier("pw-1") }],
        }),
      );
      const common = [
        "--postgres-socket-dir",
        postgres.socketDir,
        "--postgres-port",
        String(PG_PORT),
        "--listen",
        `127.0.0.1:${POOLER_PORT}`,
        "--http-listen",
        `127.0.0.1:${POOLER_HTTP}`,
        "--pool-size",
        "4",
      ];
      proc = await startTask("pooler", [
        ...common,
        "--auth",
        "scram-sha-256",
        "--auth-file",
        `${base}/users.json`,
      ], `${base}/pooler.log`);
      await waitFor("pooler /live", async () => {
        const res = await fetch(`http://127.0.0.1:${POOLER_HTTP}/live`);
        await res.body?.cancel();
        return res.ok ? true : undefined;
      });
      const ok = await psql(POOLER_PORT, "select 40 + 2", { PGPASSWORD: "pw-1" });
      assertEquals(ok, { code: 0, stdout: "42", stderr: "" });
      const wrong = await psql(POOLER_PORT, "select 1", { PGPASSWORD: "nope" });
      assertEquals(wrong.code, 2);
      assertMatch(wrong.stderr, /password authentication failed for user "postgres"/);
      const client = new pg.Client({
        host: "127.0.0.1",
        port: POOLER_PORT,
        user: "postgres",
        database: "postgres",
        password: "wrong",
      });
      const err = await assertRejects(() => client.connect()) as Error & { code?: string };
      assertEquals(err.code, "28P01");
      await proc.stop();

      // In a cluster: registered in the cell topo, type read from Postgres.
      await topo.global.cells.put(["zone1"], topo.defaultCellRecord("zone1"));
      proc = await startTask("pooler", [
        ...common,
        "--topo-endpoint",
        endpoint,
        "--alias",
        "zone1-pooler-1",
        "--keyspace",
        "app",
        "--shard",
        "0",
        "--tag",
        "olap",
        "--lease-ttl",
        "3",
      ], `${base}/pooler.log`);
      const cell = await topo.cell("zone1");
      const record = await waitFor(
        "pooler topo record",
        async () => (await cell.poolers.get("zone1-pooler-1"))?.value,
      );
      assertEquals(record, {
        alias: "zone1-pooler-1",
        cell: "zone1",
        keyspace: "app",
        shard: "0",
        type: "primary",
        tags: ["olap"],
        pgAddress: `127.0.0.1:${POOLER_PORT}`,
        rpcAddress: `127.0.0.1:${POOLER_HTTP}`,
        hostname: record.hostname,
      });
      assertEquals((await psql(POOLER_PORT, "select current_user")).stdout, "postgres");

      const rpc = createRpcClient(PoolerService, `http://127.0.0.1:${POOLER_HTTP}`);
      const status = await rpc.status({});
      assertEquals(status.alias, "zone1-pooler-1");
      assertEquals([status.cell, status.keyspace, status.shard], ["zone1", "app", "0"]);
      assertEquals(status.postgres?.role, PostgresRole.PRIMARY);
      assertMatch(status.postgres?.lsn ?? "", /^[0-9A-F]+\/[0-9A-F]+$/);
      assert(status.pools.some((p) => p.user === "postgres" && p.database === "postgres"));

      const reports = [];
      for await (const report of rpc.healthStream({ intervalMs: 100 }, { timeoutMs: 5000 })) {
        reports.push(report);
        if (reports.length === 3) break;
      }
      assertEquals(reports.map((r) => r.serving), [true, true, true]);
      assert(reports[2]!.timestampMs >= reports[0]!.timestampMs);

      const statusJson = await (await fetch(`http://127.0.0.1:${POOLER_HTTP}/status`)).json();
      assertEquals(statusJson.postgres.role, "primary");

      // A killed pooler's record disappears when its lease expires.
      await proc.stop("SIGKILL");
      await waitFor(
        "record gone after lease expiry",
        async () => (await cell.poolers.get("zone1-pooler-1")) === undefined ? true : undefined,
        20_000,
      );
      proc = undefined;
    } finally {
      await proc?.stop();
      await topo.close();
      await etcd.stop();
      await postgres.cleanup();
      await Deno.remove(base, { recursive: true }).catch(() => undefined);
    }
  },
});

Deno.test("pooler exits with a clear message for invalid flags", async () => {
  const [program, ...args] = (await import("./support/process.ts")).taskCommand("pooler");
  const out = await new Deno.Command(program!, {
    args: [...args, "--pool-size", "0", "--listen", "nowhere"],
    stdout: "piped",
    stderr: "piped",
  }).output();
  assertEquals(out.code, 2);
  const stderr = new TextDecoder().decode(out.stderr);
  assertMatch(stderr, /--pool-size \(POOLER_POOL_SIZE\)/);
  assertMatch(stderr, /--listen \(POOLER_LISTEN\): must be HOST:PORT/);

  const missing = await new Deno.Command(program!, { args, stdout: "piped", stderr: "piped" })
    .output();
  assertEquals(missing.code, 2);
  assertMatch(new TextDecoder().decode(missing.stderr), /give --postgres-socket-dir/);
});

// The reload and auth-query cases, one after the other.
const PG_2 = 12755;
const PORT_2 = 12756;
const HTTP_2 = 12757;

/** `deno task pooler` on PORT_2 in front of the Postgres on PG_2, with SCRAM and `more` flags. */
function scramPooler(socketDir: string, base: string, more: string[]) {
  return startTask("pooler", [
    "--postgres-socket-dir",
    socketDir,
    "--postgres-port",
    String(PG_2),
    "--listen",
    `127.0.0.1:${PORT_2}`,
    "--http-listen",
    `127.0.0.1:${HTTP_2}`,
    "--auth",
    "scram-sha-256",
    ...more,
  ], `${base}/pooler.log`);
}

Deno.test({
  name: "pooler process: SIGHUP and the console's RELOAD read the auth file and TLS files again",
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    const postgres = await startTestPostgres({ port: PG_2 });
    const base = await makeSharedTempDir("tessera-pooler-reload-");
    const first = await makeTestCerts();
    const second = await makeTestCerts();
    const users = async (password: string) =>
      await Deno.writeTextFile(
        `${base}/users.json`,
        JSON.stringify({
          users: [{ name: "postgres", scramVerifier: await createScramVerifier(password) }],
        }),
      );
    const useCerts = async (c: TestCerts) => {
      await Deno.copyFile(c.certFile, `${base}/tls.crt`);
      await Deno.copyFile(c.keyFile, `${base}/tls.key`);
    };
    // verify-ca with the given CA: the pooler must present that CA's certificate.
    const login = (password: string, ca: string, sql = "select 'in'", db = "postgres") =>
      runPsql(
        `host=127.0.0.1 port=${PORT_2} user=postgres dbname=${db} sslmode=verify-ca sslrootcert=${ca}`,
        sql,
        { PGPASSWORD: password },
      );
    let proc: Awaited<ReturnType<typeof startTask>> | undefined;
    try {
      await users("pw-1");
      await useCerts(first);
      proc = await scramPooler(postgres.socketDir, base, [
        "--auth-file",
        `${base}/users.json`,
        "--tls-cert",
        `${base}/tls.crt`,
        "--tls-key",
        `${base}/tls.key`,
      ]);
      await waitFor(
        "the pooler",
        async () => (await login("pw-1", first.caFile)).code === 0 || undefined,
      );

      // SIGHUP: a new password and a new certificate (from another CA) for new connections.
      await users("pw-2");
      await useCerts(second);
      proc.child.kill("SIGHUP");
      await waitFor(
        "the reload",
        async () => (await login("pw-2", second.caFile)).code === 0 || undefined,
      );
      assertMatch((await login("pw-1", second.caFile)).stderr, /password authentication failed/);
      assertMatch((await login("pw-2", first.caFile)).stderr, /certificate verify failed/);

      // RELOAD in the admin console does the same; a broken file is refused and the last good
      // version stays.
      await users("pw-3");
      assertEquals(await login("pw-2", second.caFile, "RELOAD", "pgbouncer"), {
        code: 0,
        stdout: "RELOAD",
        stderr: "",
      });
      assertEquals((await login("pw-3", second.caFile)).stdout, "in");
      await Deno.writeTextFile(`${base}/users.json`, "{ not json");
      const broken = await login("pw-3", second.caFile, "RELOAD", "pgbouncer");
      assertMatch(broken.stderr, /reload failed: the auth file/);
      proc.child.kill("SIGHUP"); // the same, logged; the process goes on
      assertEquals((await login("pw-3", second.caFile)).stdout, "in");
    } finally {
      await proc?.stop();
      await postgres.cleanup();
      for (const c of [first, second]) await Deno.remove(c.dir, { recursive: true });
      await Deno.remove(base, { recursive: true }).catch(() => undefined);
    }
  },
});

Deno.test({
  name: "pooler process: --auth-query takes SCRAM verifiers from Postgres's own roles",
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    const postgres = await startTestPostgres({ port: PG_2 });
    const base = await makeSharedTempDir("tessera-pooler-authq-");
    const direct = await PgClient.connect({
      socketDir: postgres.socketDir,
      port: PG_2,
      user: "postgres",
      database: "postgres",
    });
    const login = (user: string, password: string) =>
      runPsql(
        `host=127.0.0.1 port=${PORT_2} user='${user.replaceAll("'", "\\'")}' dbname=postgres`,
        "select current_user",
        { PGPASSWORD: password },
      );
    let proc: Awaited<ReturnType<typeof startTask>> | undefined;
    try {
      await direct.query("create role app login password 'app-pw'");
      await direct.query("set password_encryption = 'md5'");
      await direct.query("create role oldstyle login password 'md5-pw'");
      await direct.query("reset password_encryption");
      proc = await scramPooler(postgres.socketDir, base, [
        "--auth-query",
        "SELECT rolname, rolpassword FROM pg_catalog.pg_authid WHERE rolname = $1 AND rolcanlogin",
      ]);
      await waitFor(
        "the pooler",
        async () => (await login("app", "app-pw")).code === 0 || undefined,
      );
      assertEquals((await login("app", "app-pw")).stdout, "app");
      assertMatch((await login("app", "nope")).stderr, /password authentication failed/);

      // A new password counts at once: the verifier is read at each login.
      await direct.query("alter role app password 'new-pw'");
      assertEquals((await login("app", "new-pw")).stdout, "app");
      assertMatch((await login("app", "app-pw")).stderr, /password authentication failed/);

      // An MD5 password, no role, a name built to break out of the literal: no login.
      assertMatch((await login("oldstyle", "md5-pw")).stderr, /role "oldstyle" does not exist/);
      assertMatch((await login("ghost", "x")).stderr, /role "ghost" does not exist/);
      assertMatch((await login("x' or 'a'='a", "x")).stderr, /does not exist/);
      const log = await Deno.readTextFile(`${base}/pooler.log`);
      assert(log.includes("the auth query gave no SCRAM verifier"), log);
    } finally {
      await proc?.stop();
      await direct.close();
      await postgres.cleanup();
      await Deno.remove(base, { recursive: true }).catch(() => undefined);
    }
  },
});
