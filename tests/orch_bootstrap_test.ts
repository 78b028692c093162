/**
 * End to end: orch bootstraps a shard from nothing. Real etcd, three pgctld + pooler pairs and
 * orch, all started as users start them (`deno task ...`); the only thing the test writes is the
 * metadata (database with policy `at_least_1`, keyspace, shard). orch must make one instance the
 * primary, build the others as streaming replicas from base backups, record primary and term,
 * enforce the durability policy (a write with every replica gone does not return until one is
 * back), restart a replica's stopped Postgres and rebuild a replica that lost its data.
 */
import pg from "pg";
import { PgctldService, StopMode } from "../proto/gen/tessera/pgctld/v1/pgctld_pb.ts";
import { OrchService } from "../proto/gen/tessera/orch/v1/orch_pb.ts";
import { Logger } from "../shared/log/mod.ts";
import { startEtcd } from "../shared/proc/mod.ts";
import { createRpcClient } from "../shared/rpc/mod.ts";
import { assert, assertEquals } from "../shared/testing/assert.ts";
import { TopoClient } from "../shared/topo/mod.ts";
import { makeSharedTempDir, startTask, type TestProcess, waitFor } from "./support/process.ts";

const ETCD_CLIENT = 13211;
const ETCD_PEER = 13212;
const ORCH_HTTP = 13261;
const ROOT = "/orchboot";
const N = 3;
const port = (base: number, i: number) => base + i;
const PGCTLD = 13221;
const PG = 13231;
const POOLER = 13241;
const POOLER_HTTP = 13251;

interface Instance {
  alias: string;
  pgctld: TestProcess;
  pooler: TestProcess;
  poolerArgs: string[];
  dataDir: string;
}

async function sql(poolerPort: number, text: string): Promise<Record<string, unknown>[]> {
  const client = new pg.Client({
    host: "127.0.0.1",
    port: poolerPort,
    user: "postgres",
    database: "postgres",
    connectionTimeoutMillis: 5000,
  });
  await client.connect();
  try {
    return (await client.query(text)).rows;
  } finally {
    await client.end();
  }
}

Deno.test({
  name: "orch bootstraps a shard: primary, streaming replicas, durability at_least_1, repair",
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    const base = await makeSharedTempDir("tessera-orchboot-");
    const secret = `${base}/replication-secret`;
    await Deno.writeTextFile(secret, crypto.randomUUID() + "\n", { mode: 0o600 });
    const etcd = await startEtcd({
      dataDir: `${base}/etcd`,
      clientPort: ETCD_CLIENT,
      peerPort: ETCD_PEER,
    });
    const logger = new Logger({ component: "test", level: "error" });
    const topo = await TopoClient.connect({ endpoints: etcd.endpoint, root: ROOT, logger });
    const instances: Instance[] = [];
    let orch: TestProcess | undefined;
    const orchRpc = createRpcClient(OrchService, `http://127.0.0.1:${ORCH_HTTP}`);
    const pgctldRpc = (i: number) =>
      createRpcClient(PgctldService, `http://127.0.0.1:${port(PGCTLD, i)}`, { timeoutMs: 60_000 });
    const shardStatus = async () =>
      (await orchRpc.status({})).shards.find((s) => s.keyspace === "app");
    try {
      await topo.global.cells.put(["zone1"], topo.defaultCellRecord("zone1"));
      await topo.global.databases.put(["app"], { name: "app", durability: "at_least_1" });
      await topo.global.keyspaces.put(["app"], { name: "app", sharded: false, database: "app" });
      await topo.global.shards.put(["app", "0"], { keyspace: "app", range: "0", term: 0 });

      for (let i = 0; i < N; i++) {
        const alias = `app-0-${i}`;
        const dir = `${base}/${alias}`;
        await Deno.mkdir(dir, { mode: 0o755 });
        const pgctld = await startTask("pgctld", [
          "--alias",
          alias,
          "--port",
          String(port(PGCTLD, i)),
          "--data-dir",
          `${dir}/data`,
          "--socket-dir",
          `${dir}/run`,
          "--pg-port",
          String(port(PG, i)),
          "--pg-listen-address",
          "127.0.0.1",
          "--replication-password-file",
          secret,
        ], `${dir}/pgctld.log`);
        const poolerArgs = [
          "--alias",
          alias,
          "--cell",
          "zone1",
          "--keyspace",
          "app",
          "--shard",
          "0",
          "--listen",
          `127.0.0.1:${port(POOLER, i)}`,
          "--http-listen",
          `127.0.0.1:${port(POOLER_HTTP, i)}`,
          "--postgres-socket-dir",
          `${dir}/run`,
          "--postgres-port",
          String(port(PG, i)),
          "--topo-endpoint",
          etcd.endpoint,
          "--topo-root",
          ROOT,
          "--lease-ttl",
          "3",
          "--pgctld-address",
          `127.0.0.1:${port(PGCTLD, i)}`,
        ];
        const pooler = await startTask("pooler", poolerArgs, `${dir}/pooler.log`);
        instances.push({ alias, pgctld, pooler, poolerArgs, dataDir: `${dir}/data` });
      }
      orch = await startTask("orch", [
        "--alias",
        "orch-test",
        "--http-listen",
        `127.0.0.1:${ORCH_HTTP}`,
        "--topo-endpoint",
        etcd.endpoint,
        "--topo-root",
        ROOT,
        "--check-interval",
        "500",
        "--rebuild-after",
        "5",
      ], `${base}/orch.log`);

      // Bootstrap: a primary with term 1, two streaming replicas, the policy met.
      const started = Date.now();
      const shard = await waitFor("the shard to be bootstrapped", async () => {
        const s = await shardStatus();
        return s?.health === "ok" && s.durabilityMet ? s : undefined;
      }, 180_000);
      console.log(`bootstrap of 1 primary + 2 replicas took ${Date.now() - started} ms`);
      assertEquals(shard.term, 1n);
      const P = Number(shard.primaryAlias.at(-1));
      const [R1, R2] = [0, 1, 2].filter((i) => i !== P) as [number, number];
      const alias = (i: number) => `app-0-${i}`;
      assertEquals(shard.primaryAlias, alias(P));
      assertEquals(shard.synchronousStandbyNames, `ANY 1 ("${alias(R1)}", "${alias(R2)}")`);
      const record = (await topo.global.shards.get("app", "0"))!.value;
      assertEquals([record.primaryAlias, record.term], [alias(P), 1]);
      const roles = await waitFor("pooler records with roles", async () => {
        const list = await (await topo.cell("zone1")).poolers.list();
        const types = list.flatMap((p) =>
          p.type === "record" ? [`${p.value.alias}=${p.value.type}`] : []
        )
          .sort();
        return types.length === 3 && !types.some((t) => t.endsWith("unknown")) ? types : undefined;
      });
      assertEquals(roles, [0, 1, 2].map((i) => `${alias(i)}=${i === P ? "primary" : "replica"}`));

      // Writes on the primary reach both replicas; the replicas refuse writes.
      await sql(port(POOLER, P), "create table t (id int primary key, v text)");
      await sql(
        port(POOLER, P),
        "insert into t select g, 'row ' || g from generate_series(1, 100) g",
      );
      for (const i of [R1, R2]) {
        await waitFor(`rows on replica ${alias(i)}`, async () => {
          const rows = await sql(port(POOLER, i), "select count(*)::int as n from t");
          return rows[0]?.n === 100 ? true : undefined;
        });
      }
      const sync = await sql(
        port(POOLER, P),
        "select application_name, sync_state from pg_stat_replication order by 1",
      );
      assertEquals(sync.map((r) => `${r.application_name}:${r.sync_state}`), [
        `${alias(R1)}:quorum`,
        `${alias(R2)}:quorum`,
      ]);

      // A replica's Postgres stopped behind orch's back is started again.
      await pgctldRpc(R1).stop({ mode: StopMode.FAST });
      await waitFor("replica 1 to be started again", async () => {
        const st = (await pgctldRpc(R1).status({})).status!;
        return st.running ? true : undefined;
      }, 60_000);

      // Durability: with both replicas gone a commit does not return; it does when one is back.
      for (const i of [R1, R2]) {
        await instances[i]!.pooler.stop();
        await pgctldRpc(i).stop({ mode: StopMode.FAST });
      }
      const writer = new pg.Client({
        host: "127.0.0.1",
        port: port(POOLER, P),
        user: "postgres",
        database: "postgres",
      });
      await writer.connect();
      let acknowledged = false;
      const write = writer.query("insert into t values (1000, 'needs a replica')").then(() => {
        acknowledged = true;
      });
      await new Promise((r) => setTimeout(r, 4000));
      assert(!acknowledged, "a commit returned with every replica stopped");
      const blocked = await waitFor("orch to report the shard blocked", async () => {
        const s = await shardStatus();
        return s?.health === "blocked" && !s.durabilityMet ? s : undefined;
      });
      assert(blocked.reason.includes("at_least_1"), blocked.reason);
      instances[R2]!.pooler = await startTask(
        "pooler",
        instances[R2]!.poolerArgs,
        `${base}/${alias(R2)}/pooler.log`,
      );
      await waitFor("the blocked commit to return", () => acknowledged ? true : undefined, 90_000);
      await write;
      await writer.end();
      const back = await waitFor("replica 2's copy of the commit", async () => {
        const rows = await sql(port(POOLER, R2), "select v from t where id = 1000");
        return rows[0]?.v as string | undefined;
      });
      assertEquals(back, "needs a replica");

      // A replica that lost its data is rebuilt from a new base backup.
      instances[R1]!.pooler = await startTask(
        "pooler",
        instances[R1]!.poolerArgs,
        `${base}/${alias(R1)}/pooler.log`,
      );
      await waitFor("replica 1 running", async () => {
        const st = (await pgctldRpc(R1).status({})).status!;
        return st.running ? true : undefined;
      }, 60_000);
      await instances[R1]!.pooler.stop();
      await pgctldRpc(R1).stop({ mode: StopMode.IMMEDIATE });
      await Deno.remove(instances[R1]!.dataDir, { recursive: true });
      instances[R1]!.pooler = await startTask(
        "pooler",
        instances[R1]!.poolerArgs,
        `${base}/${alias(R1)}/pooler.log`,
      );
      await waitFor("replica 1 rebuilt with every row", async () => {
        const rows = await sql(port(POOLER, R1), "select count(*)::int as n from t");
        return rows[0]?.n === 101 ? true : undefined;
      }, 120_000);
      await waitFor("the shard ok again", async () => {
        const s = await shardStatus();
        return s?.health === "ok" && s.durabilityMet ? s : undefined;
      }, 60_000);
      const final = (await topo.global.shards.get("app", "0"))!.value;
      assertEquals(final.term, 1, "no change of primary happened");
    } finally {
      await orch?.stop();
      for (const inst of instances) await inst.pooler.stop();
      for (let i = 0; i < instances.length; i++) {
        await pgctldRpc(i).stop({ mode: StopMode.IMMEDIATE }).catch(() => {});
        await instances[i]!.pgctld.stop();
      }
      await topo.close();
      await etcd.kill();
      await Deno.remove(base, { recursive: true }).catch(() => {});
    }
  },
});
