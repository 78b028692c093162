/**
 * End to end: two pgctld processes (`deno task pgctld`) build a primary and a streaming replica
 * of real Postgres through InitDataDir, InitReplica, Start, SetReplicationSource and Promote,
 * checked with a real client (node-postgres): rows stream, synchronous commits wait for the
 * replica, and a promoted replica takes writes. Runs as root in CI, Postgres as `postgres`.
 */
import pg from "pg";
import { Code, ConnectError } from "@connectrpc/connect";
import { AuthMethod, PgctldService, StopMode } from "../proto/gen/tessera/pgctld/v1/pgctld_pb.ts";
import { createRpcClient } from "../shared/rpc/mod.ts";
import { assert, assertEquals, assertMatch } from "../shared/testing/assert.ts";
import { makeSharedTempDir, startTask, waitFor } from "./support/process.ts";
import {
  connect,
  expectCode,
  ids,
  type Node,
  query,
  startNode,
  stopNode,
} from "./support/pgctld.ts";

const PRIMARY_RPC = 26401;
const REPLICA_RPC = 26402;
const STRANGER_RPC = 26403;
const PRIMARY_PG = 27401;
const REPLICA_PG = 27402;
const STRANGER_PG = 27403;
const CLOSED_PG = 27409;
const SUPERUSER_PASSWORD = "super-s3cret";
const REPLICATION_PASSWORD = "repl-s3cret:with\\odd chars";
const APP = "replica_a";

function sleep(ms: number): Promise<"timeout"> {
  return new Promise((resolve) => setTimeout(() => resolve("timeout"), ms));
}

Deno.test({
  name: "pgctld builds a primary and a streaming replica, waits for it, repoints and promotes it",
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    const base = await makeSharedTempDir("tessera-pgctld-repl-");
    const passwordFile = `${base}/replication.password`;
    await Deno.writeTextFile(passwordFile, REPLICATION_PASSWORD + "\n", { mode: 0o600 });
    let primary: Node | undefined;
    let replica: Node | undefined;
    let stranger: Node | undefined;
    try {
      primary = await startNode(base, "primary", PRIMARY_RPC, PRIMARY_PG, passwordFile);
      replica = await startNode(base, "replica", REPLICA_RPC, REPLICA_PG, passwordFile);
      const p = primary;
      const r = replica;

      // The primary: a replication role with a SCRAM password, and hba lines for other hosts.
      await p.rpc.initDataDir({
        authMethod: AuthMethod.LOCAL_TRUST_TCP_SCRAM,
        superuserPassword: SUPERUSER_PASSWORD,
      });
      const hba = await Deno.readTextFile(`${p.dataDir}/pg_hba.conf`);
      assertMatch(hba, /^host\s+replication\s+tessera_repl\s+0\.0\.0\.0\/0\s+scram-sha-256$/m);
      assertMatch(hba, /^host\s+replication\s+tessera_repl\s+::\/0\s+scram-sha-256$/m);
      assertMatch(hba, /^local\s+all\s+all\s+trust$/m);
      assert((await p.rpc.start({ settings: { fsync: "off" } })).status!.running);
      const [role] = await query(
        p,
        "select rolcanlogin, rolreplication, rolpassword like 'SCRAM-SHA-256$%' as scram, " +
          "current_setting('password_encryption') as enc from pg_authid " +
          "where rolname = 'tessera_repl'",
      );
      assertEquals(role, {
        rolcanlogin: true,
        rolreplication: true,
        scram: true,
        enc: "scram-sha-256",
      });
      await query(p, "create table t (id int primary key); insert into t values (1)");

      // An unreachable primary: 08006, and the data directory stays empty for a retry.
      const unreachable = await expectCode(
        r.rpc.initReplica({
          primaryHost: "127.0.0.1",
          primaryPort: CLOSED_PG,
          applicationName: APP,
        }),
        "08006",
      );
      assertMatch(unreachable.detail ?? "", /Connection refused|could not connect/);
      assertEquals((await r.rpc.status({})).status!.initialized, false);
      await expectCode(r.rpc.initReplica({ primaryHost: "", primaryPort: PRIMARY_PG }), "22023");

      // The replica: a base backup, rewritten for this instance, standby and not started.
      let status = (await r.rpc.initReplica({
        primaryHost: "127.0.0.1",
        primaryPort: PRIMARY_PG,
        applicationName: APP,
      })).status!;
      assertEquals(
        [status.initialized, status.running, status.standby, status.inRecovery, status.port],
        [true, false, true, true, REPLICA_PG],
      );
      assertEquals([status.primaryHost, status.primaryPort, status.applicationName], [
        "127.0.0.1",
        PRIMARY_PG,
        APP,
      ]);
      const conf = await Deno.readTextFile(`${r.dataDir}/tessera.conf`);
      assertMatch(conf, new RegExp(`^port = '${REPLICA_PG}'$`, "m"));
      assertMatch(conf, new RegExp(`^unix_socket_directories = '${r.socketDir}'$`, "m"));
      assertMatch(conf, /^fsync = 'off'$/m);
      assertMatch(conf, /^primary_conninfo = .*application_name=/m);
      assert(!conf.includes(REPLICATION_PASSWORD), "no password in tessera.conf");
      const passfile = /passfile='*([^' ]+)/.exec(conf)?.[1] ?? "";
      assert(passfile !== "" && !passfile.startsWith(`${r.dataDir}/`), `passfile ${passfile}`);
      const passInfo = await Deno.stat(passfile);
      assertEquals((passInfo.mode ?? 0) & 0o777, 0o600);
      if (Deno.uid() === 0) assert(passInfo.uid !== 0, "pgpass owned by the OS user");

      status = (await r.rpc.start({})).status!;
      assertEquals([status.running, status.inRecovery, status.standby], [true, true, true]);
      await query(p, "insert into t values (2)");
      await waitFor("row 2 on the replica", async () => (await ids(r)).includes(2) || undefined);
      const [rep] = await query(p, "select application_name from pg_stat_replication");
      assertEquals(rep, { application_name: APP });

      // Synchronous commit waits for the replica.
      const reload = await p.rpc.reloadConfig({
        settings: { synchronous_standby_names: `ANY 1 ("${APP}")`, synchronous_commit: "on" },
      });
      assertEquals(reload.pendingRestart, []);
      await waitFor("replica is a synchronous standby", async () => {
        const [row] = await query(p, "select sync_state from pg_stat_replication");
        return row?.sync_state === "quorum" ? true : undefined;
      });
      assertEquals(await Promise.race([query(p, "insert into t values (3)"), sleep(20_000)]), []);

      await r.rpc.stop({ mode: StopMode.FAST });
      const writer = new pg.Client(connect(p));
      await writer.connect();
      try {
        const pending = writer.query("insert into t values (4)");
        pending.catch(() => undefined);
        assertEquals(await Promise.race([pending, sleep(3_000)]), "timeout");
        assert((await r.rpc.start({})).status!.running);
        const done = await Promise.race([pending, sleep(60_000)]);
        assert(done !== "timeout", "the commit completes once the replica is back");
      } finally {
        await writer.end().catch(() => undefined);
      }
      await waitFor("row 4 on the replica", async () => (await ids(r)).includes(4) || undefined);
      await p.rpc.reloadConfig({ settings: { synchronous_standby_names: "" } });

      // Managed settings are refused by request; the sync settings above were not.
      await expectCode(r.rpc.reloadConfig({ settings: { primary_conninfo: "host=x" } }), "22023");
      await expectCode(p.rpc.reloadConfig({ settings: { password_encryption: "md5" } }), "22023");

      // SetReplicationSource: refused for a running primary and an empty host; repoints a replica.
      const asPrimary = await expectCode(
        p.rpc.setReplicationSource({ primaryHost: "127.0.0.1", primaryPort: REPLICA_PG }),
        "55000",
      );
      assertMatch(asPrimary.message, /not in recovery/);
      await expectCode(r.rpc.setReplicationSource({ primaryHost: "", primaryPort: 1 }), "22023");
      status = (await r.rpc.setReplicationSource({
        primaryHost: "127.0.0.1",
        primaryPort: PRIMARY_PG,
        applicationName: "replica_b",
      })).status!;
      assertEquals([status.applicationName, status.standby, status.running], [
        "replica_b",
        true,
        true,
      ]);
      await waitFor("replica streams as replica_b", async () => {
        const rows = await query(p, "select application_name from pg_stat_replication");
        return rows.length === 1 && rows[0]!.application_name === "replica_b" ? true : undefined;
      });

      // Promote: the primary refuses, the replica becomes writable and forgets its source.
      await expectCode(p.rpc.promote({}), "55000");
      status = (await r.rpc.promote({})).status!;
      assertEquals(
        [status.running, status.inRecovery, status.standby, status.primaryHost, status.primaryPort],
        [true, false, false, "", 0],
      );
      await query(r, "insert into t values (100)");
      assertEquals(await ids(r), [1, 2, 3, 4, 100]);
      await expectCode(r.rpc.promote({}), "55000");
      assert(!(await Deno.readTextFile(`${r.dataDir}/tessera.conf`)).includes("primary_conninfo"));

      // InitReplica over an existing instance needs replace_existing.
      const source = { primaryHost: "127.0.0.1", primaryPort: PRIMARY_PG, applicationName: APP };
      await expectCode(r.rpc.initReplica(source), "55000");
      await r.rpc.stop({ mode: StopMode.FAST });
      await expectCode(r.rpc.initReplica(source), "58P02");
      assertEquals(await Deno.stat(`${r.dataDir}/PG_VERSION`).then(() => true), true);
      await r.rpc.start({});
      status = (await r.rpc.initReplica({ ...source, replaceExisting: true })).status!;
      assertEquals([status.running, status.standby, status.applicationName], [false, true, APP]);
      await r.rpc.start({});
      await query(p, "insert into t values (5)");
      await waitFor("row 5 on the re-created replica", async () => {
        const got = await ids(r);
        return got.includes(5) ? got : undefined;
      }).then((got) => assertEquals(got, [1, 2, 3, 4, 5]));

      // A wrong replication password: 28P01 with pg_basebackup's message in the detail.
      const wrongFile = `${base}/wrong.password`;
      await Deno.writeTextFile(wrongFile, "not-the-password\n", { mode: 0o600 });
      stranger = await startNode(base, "stranger", STRANGER_RPC, STRANGER_PG, wrongFile);
      const denied = await expectCode(stranger.rpc.initReplica(source), "28P01");
      assertMatch(denied.detail ?? "", /password authentication failed/);

      // The plain password never reaches a log.
      for (const file of [p.logFile, r.logFile, `${base}/primary/log/postgres.log`]) {
        const text = await Deno.readTextFile(file).catch(() => "");
        assert(!text.includes(REPLICATION_PASSWORD), `password in ${file}`);
      }
    } catch (err) {
      if (err instanceof ConnectError && err.code === Code.Unavailable) {
        for (const node of [primary, replica]) {
          if (node) console.error(await Deno.readTextFile(node.logFile).catch(() => ""));
        }
      }
      throw err;
    } finally {
      await stopNode(stranger);
      await stopNode(replica);
      await stopNode(primary);
      await Deno.remove(base, { recursive: true }).catch(() => undefined);
    }
  },
});

Deno.test({
  name: "pgctld init fails cleanly when the replication role cannot be created",
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    const base = await makeSharedTempDir("tessera-pgctld-repl-");
    const passwordFile = `${base}/replication.password`;
    await Deno.writeTextFile(passwordFile, REPLICATION_PASSWORD, { mode: 0o600 });
    const dataDir = `${base}/data`;
    const proc = await startTask("pgctld", [
      "--data-dir",
      dataDir,
      "--port",
      "26404",
      "--pg-port",
      "27404",
      "--replication-user",
      "postgres",
      "--replication-password-file",
      passwordFile,
    ], `${base}/pgctld.log`);
    try {
      const rpc = createRpcClient(PgctldService, "http://127.0.0.1:26404", { timeoutMs: 60_000 });
      await waitFor("pgctld", async () => (await rpc.status({})).status);
      // The superuser is called postgres too, so CREATE ROLE fails.
      const err = await expectCode(rpc.initDataDir({}), "58000");
      assertMatch(err.message, /replication role 'postgres'/);
      assertMatch(err.detail ?? "", /already exists/);
      assertEquals([...Deno.readDirSync(dataDir)], []);
      assertEquals((await rpc.status({})).status!.initialized, false);
    } finally {
      await proc.stop();
      await Deno.remove(base, { recursive: true }).catch(() => undefined);
    }
  },
});

Deno.test("pgctld exits with a clear message for an unreadable replication password file", async () => {
  const out = await new Deno.Command(Deno.execPath(), {
    args: [
      "task",
      "-q",
      "pgctld",
      "--data-dir",
      "/nonexistent/data",
      "--port",
      "26405",
      "--replication-password-file",
      "/nonexistent/replication.password",
    ],
    cwd: new URL("..", import.meta.url).pathname,
    stdout: "piped",
    stderr: "piped",
    env: { NO_COLOR: "1" },
  }).output();
  assertEquals(out.code, 1);
  assertMatch(
    new TextDecoder().decode(out.stderr),
    /--replication-password-file: cannot read '\/nonexistent\/replication.password'/,
  );
});
