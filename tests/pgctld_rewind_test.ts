/**
 * End to end: a failover with real processes. Primary A streams to replica B; A crashes, B is
 * promoted, A comes back briefly as a second primary and writes a row B never gets; then pgctld's
 * Rewind turns A into a read-only replica of B, without the diverged row. Runs as root in CI,
 * Postgres as `postgres`.
 */
import { Code, ConnectError } from "@connectrpc/connect";
import { AuthMethod, StopMode } from "../proto/gen/tessera/pgctld/v1/pgctld_pb.ts";
import { TesseraError } from "../shared/errors/mod.ts";
import { assert, assertEquals, assertMatch, assertRejects } from "../shared/testing/assert.ts";
import { makeSharedTempDir, waitFor } from "./support/process.ts";
import { expectCode, ids, type Node, query, startNode, stopNode } from "./support/pgctld.ts";

const A_RPC = 26501;
const B_RPC = 26502;
const EMPTY_RPC = 26503;
const A_PG = 27501;
const B_PG = 27502;
const EMPTY_PG = 27503;
const CLOSED_PG = 27505;
const SUPERUSER_PASSWORD = "super-s3cret";
const REPLICATION_PASSWORD = "rewind-s3cret";

Deno.test({
  name: "pgctld rewinds a crashed, diverged former primary into a replica of the new primary",
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    const base = await makeSharedTempDir("tessera-pgctld-rewind-");
    const passwordFile = `${base}/replication.password`;
    await Deno.writeTextFile(passwordFile, REPLICATION_PASSWORD + "\n", { mode: 0o600 });
    let a: Node | undefined;
    let b: Node | undefined;
    let empty: Node | undefined;
    try {
      a = await startNode(base, "a", A_RPC, A_PG, passwordFile);
      b = await startNode(base, "b", B_RPC, B_PG, passwordFile);
      empty = await startNode(base, "empty", EMPTY_RPC, EMPTY_PG, passwordFile);
      const na = a;
      const nb = b;

      // An uninitialised data directory cannot be rewound.
      const uninit = await expectCode(
        empty.rpc.rewind({ primaryHost: "127.0.0.1", primaryPort: A_PG }),
        "55000",
      );
      assertMatch(uninit.message, /not initialized/);
      await expectCode(empty.rpc.rewind({ primaryHost: "", primaryPort: A_PG }), "22023");

      // Primary A (pg_rewind's source login is allowed over TCP) and streaming replica B.
      await na.rpc.initDataDir({
        authMethod: AuthMethod.LOCAL_TRUST_TCP_SCRAM,
        superuserPassword: SUPERUSER_PASSWORD,
      });
      const hba = await Deno.readTextFile(`${na.dataDir}/pg_hba.conf`);
      assertMatch(hba, /^host\s+postgres\s+tessera_repl\s+0\.0\.0\.0\/0\s+scram-sha-256$/m);
      assertMatch(hba, /^host\s+postgres\s+tessera_repl\s+::\/0\s+scram-sha-256$/m);
      // A second primary's restart recycles WAL that pg_rewind must read back to the fork: keep it.
      await na.rpc.start({ settings: { fsync: "off", work_mem: "7MB", wal_keep_size: "1GB" } });
      await query(na, "create table t (id int primary key); insert into t values (1), (2)");
      await nb.rpc.initReplica({
        primaryHost: "127.0.0.1",
        primaryPort: A_PG,
        applicationName: "b",
      });
      await nb.rpc.reloadConfig({ settings: { work_mem: "9MB" } });
      await nb.rpc.start({});
      await query(na, "insert into t values (3)");
      await waitFor("row 3 on B", async () => (await ids(nb)).includes(3) || undefined);

      let status = (await na.rpc.status({})).status!;
      assertEquals([status.running, status.cleanShutdown, status.timeline], [true, false, 1]);

      // Rewind needs a stopped instance.
      const running = await expectCode(
        na.rpc.rewind({ primaryHost: "127.0.0.1", primaryPort: B_PG }),
        "55000",
      );
      assertMatch(running.message, /running/);

      // A crashes; B is promoted and takes writes.
      await na.rpc.stop({ mode: StopMode.IMMEDIATE });
      status = (await na.rpc.status({})).status!;
      assertEquals([status.running, status.cleanShutdown], [false, false]);
      await nb.rpc.promote({});
      await query(nb, "insert into t values (10), (11)");

      // A comes back as a second primary and writes a row B never gets, then crashes again.
      await na.rpc.start({});
      await query(na, "insert into t values (999)");
      assertEquals(await ids(na), [1, 2, 3, 999]);
      await na.rpc.stop({ mode: StopMode.IMMEDIATE });

      // An unreachable source: 08006, and A is left as it was.
      const unreachable = await expectCode(
        na.rpc.rewind({ primaryHost: "127.0.0.1", primaryPort: CLOSED_PG }),
        "08006",
      );
      assertMatch(unreachable.detail ?? "", /Connection refused|could not connect|failed/);
      status = (await na.rpc.status({})).status!;
      assertEquals([status.standby, status.primaryPort, status.timeline], [false, 0, 1]);

      // A cluster that never shared history with B: 58000 with pg_rewind's reason, left as it was.
      await empty.rpc.initDataDir({ superuserPassword: SUPERUSER_PASSWORD });
      const foreign = await expectCode(
        empty.rpc.rewind({ primaryHost: "127.0.0.1", primaryPort: B_PG }),
        "58000",
      );
      assertMatch(foreign.detail ?? "", /different systems/);
      assertMatch(foreign.hint ?? "", /left as it was/);
      status = (await empty.rpc.status({})).status!;
      assertEquals([status.standby, status.cleanShutdown, status.primaryPort], [false, true, 0]);
      assert((await empty.rpc.start({})).status!.running, "the foreign cluster still starts");

      // The rewind: A becomes a stopped standby of B with its own configuration.
      status = (await na.rpc.rewind({
        primaryHost: "127.0.0.1",
        primaryPort: B_PG,
        applicationName: "a",
      })).status!;
      assertEquals(
        [status.running, status.standby, status.inRecovery, status.port, status.primaryHost],
        [false, true, true, A_PG, "127.0.0.1"],
      );
      assertEquals([status.primaryPort, status.applicationName], [B_PG, "a"]);
      const conf = await Deno.readTextFile(`${na.dataDir}/tessera.conf`);
      assertMatch(conf, new RegExp(`^port = '${A_PG}'$`, "m"));
      assertMatch(conf, new RegExp(`^unix_socket_directories = '${na.socketDir}'$`, "m"));
      assertMatch(conf, /^listen_addresses = '127\.0\.0\.1'$/m);
      assertMatch(conf, /^work_mem = '7MB'$/m);
      assertMatch(conf, /^primary_conninfo = .*port=''27502''.*application_name=''a''/m);
      assert(!conf.includes(REPLICATION_PASSWORD), "no password in tessera.conf");
      if (Deno.uid() === 0) {
        assert((await Deno.stat(`${na.dataDir}/tessera.conf`)).uid !== 0, "owned by the OS user");
      }

      // Started, A streams from B: B's rows, not the diverged one, and it is read-only.
      status = (await na.rpc.start({})).status!;
      assertEquals([status.running, status.inRecovery, status.standby], [true, true, true]);
      await waitFor("B's rows on A", async () => {
        const got = await ids(na);
        return got.includes(10) ? got : undefined;
      }).then((got) => assertEquals(got, [1, 2, 3, 10, 11]));
      await query(nb, "insert into t values (12)");
      await waitFor("row 12 on A", async () => (await ids(na)).includes(12) || undefined);
      assertEquals(await ids(na), [1, 2, 3, 10, 11, 12]);
      const [rep] = await query(nb, "select application_name, state from pg_stat_replication");
      assertEquals(rep, { application_name: "a", state: "streaming" });
      const readOnly = await assertRejects(() => query(na, "insert into t values (13)"));
      assertEquals((readOnly as { code?: string }).code, "25006");
      const [tli] = await query(na, "select received_tli from pg_stat_wal_receiver");
      assertEquals(tli, { received_tli: 2 });
      assertEquals((await nb.rpc.status({})).status!.timeline, 2);
      const pgctldLog = await Deno.readTextFile(na.logFile);
      assertMatch(pgctldLog, /"msg":"instance rewound to a replica".*"rewound":true/);
    } catch (err) {
      if (err instanceof TesseraError) console.error(err.detail, err.hint);
      if (err instanceof ConnectError && err.code === Code.Unavailable) {
        for (const node of [a, b]) {
          if (node) console.error(await Deno.readTextFile(node.logFile).catch(() => ""));
        }
      }
      throw err;
    } finally {
      await stopNode(empty);
      await stopNode(b);
      await stopNode(a);
      await Deno.remove(base, { recursive: true }).catch(() => undefined);
    }
  },
});
