/**
 * End to end: the gateway as users run it (`deno task gateway`) against a real etcd, a real
 * Postgres and a real pooler registered in topo (`runPooler`), plus the topo resolver following
 * real poolers.
 */
import { GatewayService } from "../proto/gen/tessera/gateway/v1/gateway_pb.ts";
import { PoolerService } from "../proto/gen/tessera/pooler/v1/pooler_pb.ts";
import { parseDatabaseName, TopoTargetResolver } from "../gateway/mod.ts";
import { poolerConfigSchema } from "../pooler/config.ts";
import { runPooler } from "../pooler/runtime.ts";
import { Logger } from "../shared/log/mod.ts";
import { makeTestCerts } from "../shared/frontend/test_server.ts";
import { createScramVerifier } from "../shared/wire/mod.ts";
import { findPgBindir } from "../shared/pgbin/mod.ts";
import { startEtcd } from "../shared/proc/mod.ts";
import { createRpcClient } from "../shared/rpc/mod.ts";
import { assert, assertEquals, assertStringIncludes } from "../shared/testing/assert.ts";
import { TopoClient } from "../shared/topo/mod.ts";
import { startTestPostgres } from "./support/postgres.ts";
import { runPsql } from "./support/psql.ts";
import {
  makeSharedTempDir,
  startTask,
  taskCommand,
  type TestProcess,
  waitFor,
} from "./support/process.ts";

const ETCD_CLIENT = 13111;
const ETCD_PEER = 13112;
const PG_PORT = 13120;
const POOLER_PORT = 13121;
const POOLER_HTTP = 13122;
const POOLER2_PORT = 13123;
const POOLER2_HTTP = 13124;
const POOLER3_PORT = 13125;
const POOLER3_HTTP = 13126;
const GATEWAY_PORT = 13130;
const GATEWAY_HTTP = 13131;
const GATEWAY2_PORT = 13132;
const GATEWAY2_HTTP = 13133;
const ROOT = "/gwproc";

const psql = (port: number, database: string, sql: string) => runPsql({ port, database }, sql);
const psqlConn = (conninfo: string, sql: string) => runPsql(conninfo, sql);

const quiet = () => new Logger({ component: "test", level: "error" });
const silentSink = () => {};

function pooler(
  alias: string,
  port: number,
  http: number,
  socketDir: string,
  type: "primary" | "replica",
) {
  return poolerConfigSchema.parse({
    alias,
    listen: [`127.0.0.1:${port}`],
    httpListen: `127.0.0.1:${http}`,
    postgresSocketDir: socketDir,
    postgresPort: PG_PORT,
    topoEndpoints: [`http://127.0.0.1:${ETCD_CLIENT}`],
    topoRoot: ROOT,
    leaseTtl: 2,
    keyspace: "app",
    shard: "0",
    type,
    logLevel: "error",
  });
}

Deno.test("gateway task: no run, write or FFI flags", () => {
  const words = taskCommand("gateway");
  for (const forbidden of ["-A", "--allow-all", "--allow-run", "--allow-write", "--allow-ffi"]) {
    assert(
      !words.some((w) => w === forbidden || w.startsWith(`${forbidden}=`)),
      `the gateway task must not have ${forbidden}: ${words.join(" ")}`,
    );
  }
  for (const denied of ["--deny-run", "--deny-write", "--deny-ffi"]) {
    assert(words.includes(denied), `the gateway task should have ${denied}`);
  }
});

Deno.test({
  name: "gateway process: invalid flags exit 2 naming the field",
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    const [program, ...args] = taskCommand("gateway");
    for (
      const [flags, field] of [
        [["--listen", "127.0.0.1:13135"], "--topo-endpoint"],
        [["--topo-endpoint", "http://127.0.0.1:1", "--buffer-window", "soon"], "--buffer-window"],
        [["--topo-endpoint", "http://127.0.0.1:1", "--auth", "md5"], "--auth"],
      ] as const
    ) {
      const out = await new Deno.Command(program!, {
        args: [...args, ...flags],
        cwd: new URL("..", import.meta.url).pathname,
        stdout: "piped",
        stderr: "piped",
      }).output();
      const stderr = new TextDecoder().decode(out.stderr);
      assertEquals(out.code, 2, stderr);
      assertStringIncludes(stderr, field);
    }
  },
});

Deno.test({
  name: "gateway process: real etcd, Postgres and pooler; status, permissions, registration, psql",
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    const base = await makeSharedTempDir("tessera-gateway-");
    const postgres = await startTestPostgres({ port: PG_PORT });
    const etcd = await startEtcd({
      dataDir: `${base}/etcd`,
      clientPort: ETCD_CLIENT,
      peerPort: ETCD_PEER,
      logger: quiet(),
    });
    const endpoint = `http://127.0.0.1:${ETCD_CLIENT}`;
    let topo: TopoClient | undefined;
    let proc: TestProcess | undefined;
    let proc2: TestProcess | undefined;
    const cleanupDirs: string[] = [];
    let resolver: TopoTargetResolver | undefined;
    const poolers: { shutdown(): Promise<void> }[] = [];
    try {
      const created = await new Deno.Command(`${findPgBindir()}/psql`, {
        args: [
          "-X",
          "-h",
          postgres.socketDir,
          "-p",
          String(PG_PORT),
          "-U",
          "postgres",
          "-d",
          "postgres",
        ],
        stdin: "piped",
        stdout: "null",
        stderr: "piped",
      }).spawn();
      {
        const w = created.stdin.getWriter();
        await w.write(new TextEncoder().encode("create database app;\n"));
        await w.close();
      }
      const createdOut = await created.output();
      assertEquals(createdOut.code, 0, new TextDecoder().decode(createdOut.stderr));
      topo = await TopoClient.connect({ endpoints: endpoint, root: ROOT, logger: quiet() });
      await topo.global.cells.put(["zone1"], topo.defaultCellRecord("zone1"));
      await topo.global.keyspaces.put(["app"], { name: "app", sharded: false });
      await topo.global.shards.put(["app", "0"], { keyspace: "app", range: "0", term: 1 });
      const p1 = await runPooler(
        pooler("p1", POOLER_PORT, POOLER_HTTP, postgres.socketDir, "primary"),
        {
          sink: silentSink,
        },
      );
      poolers.push(p1);

      // The resolver follows real poolers' records.
      resolver = new TopoTargetResolver(topo, { bufferWindowMs: 15_000, logger: quiet() });
      await resolver.start(10_000);
      await waitFor("p1 serving", () => resolver!.hasServingPrimary() ? true : undefined);
      const first = await resolver.resolve(parseDatabaseName("app"));
      assertEquals([first.alias, first.address], ["p1", `127.0.0.1:${POOLER_PORT}`]);

      proc = await startTask("gateway", [
        "--alias",
        "gw1",
        "--topo-endpoint",
        endpoint,
        "--topo-root",
        ROOT,
        "--listen",
        `127.0.0.1:${GATEWAY_PORT}`,
        "--http-listen",
        `127.0.0.1:${GATEWAY_HTTP}`,
        "--lease-ttl",
        "2",
      ], `${base}/gateway.log`);
      const http = `http://127.0.0.1:${GATEWAY_HTTP}`;
      await waitFor("gateway /live", async () => {
        const res = await fetch(`${http}/live`);
        const text = await res.text();
        return res.ok ? text : undefined;
      });
      await waitFor("gateway /ready", async () => {
        const res = await fetch(`${http}/ready`);
        await res.body?.cancel();
        return res.ok ? true : undefined;
      });
      const status = await waitFor("status with the registration", async () => {
        const s = await (await fetch(`${http}/status`)).json();
        return s.topo.registered === true ? s : undefined;
      });
      assertEquals(status.component, "gateway");
      assertEquals(status.alias, "gw1");
      assertEquals(
        [status.permissions.run, status.permissions.write, status.permissions.ffi],
        ["denied", "denied", "denied"],
      );
      assert(status.permissions.read !== "granted", "read access is given up after start");
      assert(status.permissions.envGateway !== "granted", "own env access is given up after start");
      assertEquals(status.shards[0].keyspace, "app");
      assertEquals(status.shards[0].primary, "p1");

      // Registered in the cell topo.
      const cell = await topo.cell("zone1");
      const record = await cell.gateways.get("gw1");
      assertEquals(record?.value.pgAddress, `127.0.0.1:${GATEWAY_PORT}`);
      assertEquals(record?.value.httpAddress, `127.0.0.1:${GATEWAY_HTTP}`);

      // Connect stats.
      const client = createRpcClient(GatewayService, http);
      const stats = await client.stats({});
      assertEquals(stats.alias, "gw1");
      assertEquals(stats.topoLoaded, true);
      assertEquals(stats.shards[0]?.primary, "p1");
      // Cancel by pid: either the data path supports it (no session has pid 1 here), or the
      // service says plainly that it does not.
      try {
        assertEquals((await client.cancel({ pid: 1 })).found, false);
      } catch (err) {
        assertStringIncludes(String((err as Error).message), "not supported");
      }

      // Queries through the gateway reach Postgres through the pooler.
      const out = await psql(GATEWAY_PORT, "app", "select 40 + 2");
      assertEquals(out.code, 0, out.stderr);
      assertEquals(out.stdout, "42");
      // ... over one multiplexed connection, which the pooler's Connect Status reports.
      const poolerStatus = await createRpcClient(PoolerService, `http://127.0.0.1:${POOLER_HTTP}`)
        .status({});
      assertEquals(poolerStatus.multiplexed?.connections, 1);
      assert(poolerStatus.multiplexed!.framesIn > 0n && poolerStatus.multiplexed!.writes > 0n);
      const unknown = await psql(GATEWAY_PORT, "nosuch", "select 1");
      assert(unknown.code !== 0, "an unknown keyspace is refused");
      assertStringIncludes(unknown.stderr, "nosuch");

      // A second gateway with TLS required and SCRAM users from topo, after it gave up read
      // access: psql verify-full with the right password gets rows, a wrong one 28P01.
      const certs = await makeTestCerts();
      cleanupDirs.push(certs.dir);
      await topo.global.users.put(["postgres"], {
        name: "postgres",
        scramVerifier: await createScramVerifier("gw secret"),
      });
      proc2 = await startTask("gateway", [
        "--alias",
        "gw2",
        "--topo-endpoint",
        endpoint,
        "--topo-root",
        ROOT,
        "--listen",
        `127.0.0.1:${GATEWAY2_PORT}`,
        "--http-listen",
        `127.0.0.1:${GATEWAY2_HTTP}`,
        "--auth",
        "scram-sha-256",
        "--tls-cert",
        certs.certFile,
        "--tls-key",
        certs.keyFile,
        "--require-tls",
      ], `${base}/gateway2.log`);
      await waitFor("gw2 ready", async () => {
        const res = await fetch(`http://127.0.0.1:${GATEWAY2_HTTP}/ready`);
        await res.body?.cancel();
        return res.ok ? true : undefined;
      });
      const tlsConn = (password: string) =>
        `host=localhost port=${GATEWAY2_PORT} user=postgres dbname=app password='${password}' ` +
        `sslmode=verify-full sslrootcert=${certs.caFile}`;
      const overTls = await psqlConn(tlsConn("gw secret"), "select 'tls ok'");
      assertEquals([overTls.code, overTls.stdout], [0, "tls ok"], overTls.stderr);
      const wrong = await psqlConn(tlsConn("nope"), "select 1");
      assert(wrong.code !== 0, "a wrong password is refused");
      assertStringIncludes(wrong.stderr, "password authentication failed");
      const plain = await psqlConn(
        `host=127.0.0.1 port=${GATEWAY2_PORT} user=postgres dbname=app password='gw secret' ` +
          "sslmode=disable",
        "select 1",
      );
      assert(plain.code !== 0, "a client without TLS is refused");
      await proc2.stop("SIGTERM");
      proc2 = undefined;

      // app@replica lands on a replica pooler (a pooler registered with type replica; it
      // fronts the same Postgres here, so the choice is read from /status).
      const p3 = await runPooler(
        pooler("p3", POOLER3_PORT, POOLER3_HTTP, postgres.socketDir, "replica"),
        { sink: silentSink },
      );
      poolers.push(p3);
      await waitFor("p3 in the gateway's view", async () => {
        const s = await (await fetch(`${http}/status`)).json();
        return s.shards[0]?.replicas.includes("p3") ? true : undefined;
      });
      const read = await psql(GATEWAY_PORT, "app@replica", "select 'from a replica'");
      assertEquals([read.code, read.stdout], [0, "from a replica"], read.stderr);
      const choices = (await (await fetch(`${http}/status`)).json()).choices;
      assert((choices["app@replica"]?.p3 ?? 0) >= 1, JSON.stringify(choices));
      assertEquals(choices["app@replica"]?.p1, undefined);

      // Failover in topo: p1 goes away, p2 registers as primary within the window.
      await p1.shutdown();
      poolers.splice(poolers.indexOf(p1), 1);
      await waitFor(
        "p1 gone from the view",
        () => !resolver!.hasServingPrimary() ? true : undefined,
      );
      const pending = resolver.resolve(parseDatabaseName("app"));
      await waitFor("buffered", () => resolver!.stats().bufferedNow === 1 ? true : undefined);
      const p2 = await runPooler(
        pooler("p2", POOLER2_PORT, POOLER2_HTTP, postgres.socketDir, "primary"),
        { sink: silentSink },
      );
      poolers.push(p2);
      assertEquals((await pending).alias, "p2");
      const after = await psql(GATEWAY_PORT, "app", "select 'via p2'");
      assertEquals([after.code, after.stdout], [0, "via p2"], after.stderr);

      // etcd down: the gateway keeps routing from its last view; once etcd is back it follows
      // topo again (its gRPC channels reconnect with the permissions left after start-up).
      await etcd.kill(); // SIGKILL: a graceful stop intermittently segfaults Deno's HTTP/2 client
      try {
        const down = await psql(GATEWAY_PORT, "app", "select 'etcd down'");
        assertEquals([down.code, down.stdout], [0, "etcd down"], down.stderr);
      } finally {
        await etcd.restart();
      }
      await waitFor("topo writable again", async () => {
        await topo!.global.shards.put(["app", "0"], { keyspace: "app", range: "0", term: 5 });
        return true;
      });
      await waitFor("the gateway sees the new term", async () => {
        const s = await (await fetch(`${http}/status`)).json();
        return s.shards[0]?.term === 5 ? true : undefined;
      });
      const back = await psql(GATEWAY_PORT, "app", "select 'etcd back'");
      assertEquals([back.code, back.stdout], [0, "etcd back"], back.stderr);

      // The gateway's record goes away with a clean stop.
      const stopped = await proc.stop("SIGTERM");
      proc = undefined;
      assertEquals(stopped.code, 0);
      assertEquals(await cell.gateways.get("gw1"), undefined);
    } catch (err) {
      for (const log of ["gateway.log", "gateway2.log"]) {
        console.error(await Deno.readTextFile(`${base}/${log}`).catch(() => ""));
      }
      throw err;
    } finally {
      await proc?.stop("SIGKILL").catch(() => undefined);
      await proc2?.stop("SIGKILL").catch(() => undefined);
      for (const dir of cleanupDirs) await Deno.remove(dir, { recursive: true }).catch(() => {});
      await resolver?.close();
      for (const p of poolers) await p.shutdown().catch(() => undefined);
      await topo?.close();
      await etcd.kill().catch(() => undefined);
      await postgres.cleanup();
      await Deno.remove(base, { recursive: true }).catch(() => undefined);
    }
  },
});
