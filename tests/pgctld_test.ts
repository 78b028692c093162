/**
 * End to end: pgctld runs as users run it (`deno task pgctld`), and the test drives a real
 * Postgres through its Connect RPCs, checking with a real client (node-postgres) over the Unix
 * socket and TCP. Runs as root in CI, where Postgres must run as the `postgres` OS user.
 */
import pg from "pg";
import { Code, ConnectError } from "@connectrpc/connect";
import { AuthMethod, PgctldService, StopMode } from "../proto/gen/tessera/pgctld/v1/pgctld_pb.ts";
import { TesseraError } from "../shared/errors/mod.ts";
import { createRpcClient } from "../shared/rpc/mod.ts";
import {
  assert,
  assertEquals,
  assertMatch,
  assertNotEquals,
  assertRejects,
} from "../shared/testing/assert.ts";
import { makeSharedTempDir, startTask, waitFor } from "./support/process.ts";

const RPC_PORT = 12601;
const PG_PORT = 12602;
const PASSWORD = "s3cret-pw";

async function query(config: pg.ClientConfig, sql: string): Promise<Record<string, unknown>[]> {
  const client = new pg.Client(config);
  await client.connect();
  try {
    return (await client.query(sql)).rows;
  } finally {
    await client.end();
  }
}

async function expectCode(promise: Promise<unknown>, sqlstate: string): Promise<TesseraError> {
  const err = await assertRejects(() => promise, TesseraError);
  assertEquals(err.code, sqlstate, err.message);
  return err;
}

function uidOf(pid: number): number {
  const status = Deno.readTextFileSync(`/proc/${pid}/status`);
  return Number(/^Uid:\s+(\d+)/m.exec(status)![1]);
}

Deno.test({
  name: "pgctld inits, starts, reloads, restarts and stops a real Postgres over RPC",
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    const base = await makeSharedTempDir("tessera-pgctld-");
    const dataDir = `${base}/data`;
    const socketDir = `${base}/run`;
    const args = [
      "--data-dir",
      dataDir,
      "--port",
      String(RPC_PORT),
      "--pg-port",
      String(PG_PORT),
      "--pg-listen-address",
      "127.0.0.1",
      "--alias",
      "e2e",
    ];
    let proc = await startTask("pgctld", args, `${base}/pgctld.log`);
    const url = `http://127.0.0.1:${RPC_PORT}`;
    const rpc = createRpcClient(PgctldService, url, { timeoutMs: 60_000 });
    try {
      await waitFor("pgctld /live", async () => {
        const res = await fetch(`${url}/live`);
        await res.body?.cancel();
        return res.ok ? true : undefined;
      });

      let status = (await rpc.status({})).status!;
      assertEquals([status.initialized, status.running], [false, false]);
      await expectCode(rpc.start({}), "55000");

      const init = await rpc.initDataDir({
        authMethod: AuthMethod.LOCAL_TRUST_TCP_SCRAM,
        superuserPassword: PASSWORD,
      });
      assertEquals(init.dataDir, dataDir);
      assertMatch(init.serverVersion, /^\d+\.\d+$/);
      await expectCode(rpc.initDataDir({}), "58P02");
      assertMatch(await Deno.readTextFile(`${dataDir}/postgresql.conf`), /include_if_exists/);

      status = (await rpc.start({ settings: { work_mem: "8MB" } })).status!;
      assert(status.running && status.pid > 0, "running with a pid");
      assertEquals([status.port, status.socketDir, status.inRecovery], [PG_PORT, socketDir, false]);
      const pid = status.pid;
      if (Deno.uid() === 0) assertNotEquals(uidOf(pid), 0);

      const viaSocket = { host: socketDir, port: PG_PORT, user: "postgres", database: "postgres" };
      const rows = await query(viaSocket, "select current_setting('work_mem') as wm, 1 + 1 as two");
      assertEquals(rows, [{ wm: "8MB", two: 2 }]);
      const viaTcp = { ...viaSocket, host: "127.0.0.1", password: PASSWORD };
      assertEquals(await query(viaTcp, "select current_user as u"), [{ u: "postgres" }]);
      await assertRejects(() => query({ ...viaTcp, password: "wrong" }, "select 1"));

      // A second Start is refused and changes nothing.
      await expectCode(rpc.start({}), "55000");
      assertEquals((await rpc.status({})).status!.pid, pid);

      const ready = await fetch(`${url}/ready`);
      assertEquals(ready.status, 200);
      await ready.body?.cancel();
      const statusJson = await (await fetch(`${url}/status`)).json();
      assertEquals(statusJson.postgres.pid, pid);

      assertEquals((await rpc.reloadConfig({ settings: { work_mem: "16MB" } })).pendingRestart, []);
      await waitFor("work_mem reloaded", async () => {
        const [row] = await query(viaSocket, "select current_setting('work_mem') as wm");
        return row?.wm === "16MB" ? true : undefined;
      });
      const pending = await rpc.reloadConfig({ settings: { shared_buffers: "32MB" } });
      assertEquals(pending.pendingRestart, ["shared_buffers"]);
      const bad = await expectCode(
        rpc.reloadConfig({ settings: { no_such_setting: "1" } }),
        "42704",
      );
      assertMatch(bad.message, /no_such_setting/);
      await expectCode(rpc.reloadConfig({ settings: { port: "1" } }), "22023");

      // pgctld dies; Postgres keeps running and a new pgctld adopts it.
      await proc.stop("SIGKILL");
      proc = await startTask("pgctld", args, `${base}/pgctld.log`);
      status = await waitFor("restarted pgctld", async () => (await rpc.status({})).status);
      assertEquals([status.running, status.pid], [true, pid]);

      status = (await rpc.restart({ mode: StopMode.FAST })).status!;
      assert(status.running);
      assertNotEquals(status.pid, pid);
      const [sb] = await query(viaSocket, "select current_setting('shared_buffers') as sb");
      assertEquals(sb, { sb: "32MB" });

      status = (await rpc.stop({ mode: StopMode.SMART })).status!;
      assertEquals(status.running, false);
      await expectCode(rpc.stop({}), "55000");
      const notReady = await fetch(`${url}/ready`);
      assertEquals(notReady.status, 503);
      await notReady.body?.cancel();

      // A port in use is refused with a clear error, and nothing starts.
      const squatter = Deno.listen({ hostname: "127.0.0.1", port: PG_PORT });
      try {
        const err = await expectCode(rpc.start({}), "55006");
        assertMatch(err.message, new RegExp(`port ${PG_PORT} is already in use`));
      } finally {
        squatter.close();
      }
      assertEquals((await rpc.status({})).status!.running, false);

      // A bad setting at start fails, and the previous configuration stays.
      await expectCode(rpc.start({ settings: { max_connections: "-5" } }), "58000");
      assertEquals((await rpc.status({})).status!.running, false);
      status = (await rpc.start({})).status!;
      assert(status.running);
      await rpc.stop({ mode: StopMode.IMMEDIATE });

      const unknown = await fetch(`${url}/tessera.pgctld.v1.PgctldService/Nope`, {
        method: "POST",
      });
      assertEquals(unknown.status, 404);
      await unknown.body?.cancel();
    } catch (err) {
      if (err instanceof ConnectError && err.code === Code.Unavailable) {
        console.error(await Deno.readTextFile(`${base}/pgctld.log`).catch(() => ""));
      }
      throw err;
    } finally {
      const s = await rpc.status({}).then((r) => r.status).catch(() => undefined);
      if (s?.running) await rpc.stop({ mode: StopMode.IMMEDIATE }).catch(() => undefined);
      await proc.stop();
      await Deno.remove(base, { recursive: true }).catch(() => undefined);
    }
  },
});

Deno.test({
  name: "pgctld refuses to init into a non-empty directory and changes nothing",
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    const base = await makeSharedTempDir("tessera-pgctld-");
    const dataDir = `${base}/data`;
    await Deno.mkdir(dataDir);
    await Deno.writeTextFile(`${dataDir}/precious.txt`, "keep me");
    const proc = await startTask("pgctld", [
      "--data-dir",
      dataDir,
      "--port",
      String(RPC_PORT + 10),
      "--pg-port",
      String(PG_PORT + 10),
    ], `${base}/pgctld.log`);
    try {
      const rpc = createRpcClient(PgctldService, `http://127.0.0.1:${RPC_PORT + 10}`);
      await waitFor("pgctld", async () => (await rpc.status({})).status);
      const err = await expectCode(rpc.initDataDir({}), "55000");
      assertMatch(err.message, /is not empty/);
      assertEquals([...Deno.readDirSync(dataDir)].map((e) => e.name), ["precious.txt"]);
      assertEquals(await Deno.readTextFile(`${dataDir}/precious.txt`), "keep me");
    } finally {
      await proc.stop();
      await Deno.remove(base, { recursive: true }).catch(() => undefined);
    }
  },
});

Deno.test("pgctld exits with a clear message for an invalid flag", async () => {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["task", "-q", "pgctld", "--data-dir", "relative/path", "--pg-port", "70000"],
    cwd: new URL("..", import.meta.url).pathname,
    stdout: "piped",
    stderr: "piped",
    env: { NO_COLOR: "1" },
  }).output();
  assertEquals(out.code, 2);
  const stderr = new TextDecoder().decode(out.stderr);
  assertMatch(stderr, /--data-dir \(PGCTLD_DATA_DIR\): must be an absolute path/);
  assertMatch(stderr, /--pg-port \(PGCTLD_PG_PORT\)/);
});
