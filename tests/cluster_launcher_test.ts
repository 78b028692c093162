/**
 * `deno task cluster` end to end, run exactly as a user runs it: `up`, `status --json`, `down`,
 * crash restarts by the supervisor, and the data kept across `down` and `up`.
 *
 * The first test needs nothing beyond the launcher and the components starting (it does not wait
 * for the gateway to serve); the second needs orch to bootstrap the shard (init the primary,
 * create the database, set up the replicas) and serves real queries through the gateway.
 *
 * Ports: base 20500 and 19000, so that both run beside the default cluster and each other.
 *
 * @module
 */

import pg from "pg";
import { assert, assertEquals, assertMatch } from "../shared/testing/assert.ts";
import { Logger } from "../shared/log/mod.ts";
import { TopoClient } from "../shared/topo/mod.ts";
import { ScramClient, ScramServer } from "../shared/wire/mod.ts";
import { runPsql } from "./support/psql.ts";
import {
  cluster,
  type ClusterProcess as ProcessStatus,
  type ClusterStatus as Status,
  clusterStatus as status,
} from "./support/cluster.ts";

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

async function eventually<T>(
  what: string,
  fn: () => Promise<T | undefined>,
  timeoutMs = 60_000,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  while (Date.now() < deadline) {
    try {
      const value = await fn();
      if (value !== undefined) return value;
    } catch (err) {
      last = err;
    }
    await sleep(500);
  }
  throw new Error(`timed out waiting for ${what}${last ? `: ${last}` : ""}`);
}

function alive(pid: number): boolean {
  try {
    const stat = Deno.readTextFileSync(`/proc/${pid}/stat`);
    return !/\) [ZX] /.test(stat);
  } catch {
    return false;
  }
}

function byName(st: Status, name: string): ProcessStatus {
  const p = st.processes.find((p) => p.name === name);
  assert(p !== undefined, `no process ${name} in ${st.processes.map((p) => p.name).join(", ")}`);
  return p;
}

/** SIGKILLs each named process and waits until the supervisor has restarted all of them. */
async function killAndSeeRestarts(dir: string, names: string[]): Promise<void> {
  const before = await status(dir);
  for (const name of names) {
    const p = byName(before, name);
    assertEquals(p.state, "running", `${name} before the kill`);
    Deno.kill(p.pid!, "SIGKILL");
  }
  await eventually(`restarts of ${names.join(", ")}`, async () => {
    const now = await status(dir);
    const done = names.every((name) => {
      const was = byName(before, name);
      const is = byName(now, name);
      return is.restarts > was.restarts && is.state === "running" && is.pid !== was.pid;
    });
    return done ? true : undefined;
  });
  const log = await Deno.readTextFile(`${dir}/logs/supervisor.log`);
  for (const name of names) {
    const line = log.split("\n").filter((l) => l.includes(`"process":"${name}"`))
      .map((l) => JSON.parse(l) as Record<string, unknown>)
      .find((l) => l.restarts !== undefined && l.signal === "SIGKILL");
    assert(line !== undefined, `supervisor.log has no restart line for ${name}`);
  }
}

async function assertAllStopped(dir: string, pids: number[]): Promise<void> {
  for (const pid of pids) assert(!alive(pid), `pid ${pid} still runs after down`);
  // No Postgres of this cluster is left: every postmaster.pid is gone.
  for await (const entry of Deno.readDir(dir)) {
    if (!entry.isDirectory) continue;
    try {
      await Deno.stat(`${dir}/${entry.name}/data/postmaster.pid`);
      throw new Error(`${entry.name}'s Postgres still runs after down`);
    } catch (err) {
      if (!(err instanceof Deno.errors.NotFound)) throw err;
    }
  }
}

async function logsIn(verifier: string, user: string, password: string): Promise<boolean> {
  const client = new ScramClient(password, { username: user });
  const server = new ScramServer(verifier, { username: user });
  const first = await server.serverFirstMessage(client.clientFirstMessage());
  client.verifyServerFinal(await server.serverFinalMessage(await client.clientFinalMessage(first)));
  return client.verified;
}

Deno.test({
  name: "cluster: up, supervision, crash restarts, metadata in topo, down and up again",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    const dir = await Deno.makeTempDir({ prefix: "tessera-cluster-a-" });
    await Deno.chmod(dir, 0o755);
    const config = `${dir}.json`;
    await Deno.writeTextFile(
      config,
      JSON.stringify({
        cells: ["zone1", "zone2"],
        databases: [{ name: "app", durability: "at_least_1" }],
        keyspaces: [{ name: "app" }],
        users: [{ name: "alice", password: "alice-pw" }],
      }),
    );
    try {
      // Refusals come before anything starts.
      const refused = await cluster("up", "--dir", dir, "--base-port", "30000");
      assertEquals(refused.code, 2, refused.stderr);
      assertMatch(refused.stderr, /'--base-port' 30000 puts ports at/);

      const upRun = await cluster(
        "up",
        "--dir",
        dir,
        "--base-port",
        "20500",
        "--replicas",
        "1",
        "--config",
        config,
        "--no-wait",
      );
      assertEquals(upRun.code, 0, `up failed:\n${upRun.stdout}\n${upRun.stderr}`);
      assertMatch(upRun.stdout, /postgres:\/\/alice@127\.0\.0\.1:20932\/app\b/);
      assertMatch(upRun.stdout, /postgres:\/\/alice@127\.0\.0\.1:20933\/app@replica/);
      assertMatch(upRun.stdout, new RegExp(`logs: +${dir}/logs`));

      // Every process runs, with the documented ports.
      const st = await eventually("every process running", async () => {
        const s = await status(dir);
        return s.processes.every((p) => p.state === "running") ? s : undefined;
      });
      assertEquals(
        st.processes.map((p) => `${p.name}/${p.kind}/${p.cell ?? "-"}`),
        [
          "etcd/etcd/-",
          "pgctld-app-0-0/pgctld/zone1",
          "pooler-app-0-0/pooler/zone1",
          "pgctld-app-0-1/pgctld/zone2",
          "pooler-app-0-1/pooler/zone2",
          "orch-zone1/orch/zone1",
          "gateway-zone1/gateway/zone1",
          "orch-zone2/orch/zone2",
          "gateway-zone2/gateway/zone2",
        ],
      );
      assertEquals(byName(st, "etcd").ports, { client: 17879, peer: 17880 });
      assertEquals(byName(st, "pooler-app-0-1").ports, { pg: 21501, http: 21601 });
      assertEquals(byName(st, "pgctld-app-0-1").ports, { http: 22601, postgres: 30933 });
      assertEquals(byName(st, "gateway-zone2").ports, { pg: 20933, http: 20601 });
      assertEquals(byName(st, "orch-zone2").ports, { http: 20501 });

      // `up` again says it runs and prints the same.
      const again = await cluster("up", "--dir", dir);
      assertEquals(again.code, 0, again.stderr);
      assertMatch(again.stdout, /already running/);
      assertMatch(again.stdout, /postgres:\/\/alice@127\.0\.0\.1:20932\/app\b/);

      // The table form names every process.
      const table = await cluster("status", "--dir", dir);
      assertEquals(table.code, 0, table.stderr);
      for (const p of st.processes) assertMatch(table.stdout, new RegExp(`^${p.name} `, "m"));

      // The replication secret: 32 random bytes, base64url, readable by root only.
      const secret = await Deno.stat(`${dir}/secrets/replication`);
      assertEquals(secret.mode! & 0o777, 0o600);
      assertMatch(await Deno.readTextFile(`${dir}/secrets/replication`), /^[A-Za-z0-9_-]{43}\n$/);

      // The metadata is in topo.
      const topo = await TopoClient.connect({
        endpoints: "http://127.0.0.1:17879",
        logger: new Logger({ component: "test", level: "error" }),
      });
      try {
        for (const cell of ["zone1", "zone2"]) {
          assertEquals((await topo.global.cells.get(cell))?.value, {
            name: cell,
            endpoints: ["http://127.0.0.1:17879"],
            root: `/tessera/cells/${cell}`,
          });
        }
        assertEquals((await topo.global.databases.get("app"))?.value, {
          name: "app",
          durability: "at_least_1",
        });
        assertEquals((await topo.global.keyspaces.get("app"))?.value, {
          name: "app",
          sharded: false,
        });
        const shard = await topo.global.shards.get("app", "0");
        assert(shard !== undefined, "no shard record app/0");
        const user = await topo.global.users.get("alice");
        assert(user !== undefined, "no user alice");
        assert(!JSON.stringify(user.value).includes("alice-pw"), "the password is stored");
        assert(await logsIn(user.value.scramVerifier, "alice", "alice-pw"));
        // orch owns the shard record from now on: a later `up` must not overwrite it.
        await topo.global.shards.update(["app", "0"], (cur) => ({
          ...cur!.value,
          term: Math.max(cur!.value.term, 41) + 1,
        }));
      } finally {
        await topo.close();
      }

      // Crashes are restarted and logged.
      await killAndSeeRestarts(dir, [
        "pooler-app-0-1",
        "pgctld-app-0-0",
        "gateway-zone1",
        "orch-zone1",
      ]);

      // down stops everything, Postgres included.
      const pids = (await status(dir)).processes.flatMap((p) => p.pid === null ? [] : [p.pid]);
      const downRun = await cluster("down", "--dir", dir);
      assertEquals(downRun.code, 0, downRun.stderr);
      await assertAllStopped(dir, pids);
      const stopped = await status(dir);
      assertEquals(stopped.supervisor.alive, false);
      assert(stopped.processes.every((p) => p.state === "stopped" && p.pid === null));

      // up again with no flags: same options, same ports, the shard record kept.
      const up2 = await cluster("up", "--dir", dir, "--no-wait");
      assertEquals(up2.code, 0, `second up failed:\n${up2.stdout}\n${up2.stderr}`);
      assertMatch(up2.stdout, /postgres:\/\/alice@127\.0\.0\.1:20932\/app\b/);
      const topo2 = await TopoClient.connect({
        endpoints: "http://127.0.0.1:17879",
        logger: new Logger({ component: "test", level: "error" }),
      });
      try {
        const shard = await topo2.global.shards.get("app", "0");
        assert((shard?.value.term ?? 0) >= 42, `the shard record was overwritten: ${shard?.value}`);
      } finally {
        await topo2.close();
      }
      const pids2 = (await eventually("processes running again", async () => {
        const s = await status(dir);
        return s.processes.every((p) => p.state === "running") ? s : undefined;
      })).processes.map((p) => p.pid!);
      const clean = await cluster("down", "--dir", dir, "--clean");
      assertEquals(clean.code, 0, clean.stderr);
      for (const pid of pids2) assert(!alive(pid), `pid ${pid} still runs`);
      assert(!await Deno.stat(dir).then(() => true, () => false), `${dir} was not removed`);
    } finally {
      await cluster("down", "--dir", dir, "--clean");
      await Deno.remove(config).catch(() => undefined);
      await Deno.remove(dir, { recursive: true }).catch(() => undefined);
    }
  },
});

function connectionStrings(stdout: string): { primary: string; replica: string } {
  const primary = /(postgres:\/\/\S+\/app)\s/.exec(stdout)?.[1];
  const replica = /(postgres:\/\/\S+\/app@replica)\b/.exec(stdout)?.[1];
  assert(primary !== undefined && replica !== undefined, `no connection strings in:\n${stdout}`);
  return { primary, replica };
}

async function psqlOk(conn: string, sql: string): Promise<string> {
  const res = await runPsql(conn, sql);
  if (res.code !== 0) throw new Error(`psql failed (${res.code}): ${res.stderr}`);
  return res.stdout;
}

Deno.test({
  name: "cluster: a user connects, writes, reads replicas, survives down/up and crashes",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    const dir = await Deno.makeTempDir({ prefix: "tessera-cluster-b-" });
    await Deno.chmod(dir, 0o755);
    try {
      const upRun = await cluster("--dir", dir, "--base-port", "19000");
      assertEquals(upRun.code, 0, `up failed:\n${upRun.stdout}\n${upRun.stderr}`);
      const { primary, replica } = connectionStrings(upRun.stdout);
      assertEquals(primary, "postgres://postgres@127.0.0.1:19432/app");

      // psql writes through the printed string; node-postgres too.
      await psqlOk(primary, "CREATE TABLE IF NOT EXISTS items (id int PRIMARY KEY, name text)");
      await psqlOk(primary, "INSERT INTO items VALUES (1, 'one'), (2, 'two')");
      const client = new pg.Client({ connectionString: primary });
      await client.connect();
      try {
        await client.query("INSERT INTO items VALUES ($1, $2)", [3, "three"]);
        const rows = await client.query("SELECT id, name FROM items ORDER BY id");
        assertEquals(rows.rows, [{ id: 1, name: "one" }, { id: 2, name: "two" }, {
          id: 3,
          name: "three",
        }]);
      } finally {
        await client.end();
      }

      // Replicas have the rows (after a little replication lag).
      await eventually("rows on a replica", async () => {
        const c = new pg.Client({ connectionString: replica });
        await c.connect();
        try {
          const r = await c.query(
            "SELECT count(*)::int AS n, pg_is_in_recovery() AS standby FROM items",
          );
          return r.rows[0].n === 3 && r.rows[0].standby === true ? true : undefined;
        } finally {
          await c.end();
        }
      }, 30_000);
      assertEquals(await psqlOk(replica, "SELECT name FROM items WHERE id = 2"), "two");

      const st = await eventually("one primary pooler", async () => {
        const s = await status(dir);
        const primaries = s.processes.filter((p) => p.kind === "pooler" && p.role === "primary");
        return s.processes.every((p) => p.state === "running") && primaries.length === 1 &&
            primaries[0]!.shardPrimary
          ? s
          : undefined;
      });
      assertEquals(st.processes.filter((p) => p.kind === "pooler").length, 3);

      // down and up again: the rows are back.
      const downRun = await cluster("down", "--dir", dir);
      assertEquals(downRun.code, 0, downRun.stderr);
      const up2 = await cluster("up", "--dir", dir);
      assertEquals(up2.code, 0, `second up failed:\n${up2.stdout}\n${up2.stderr}`);
      assertEquals(
        await psqlOk(primary, "SELECT string_agg(name, ',' ORDER BY id) FROM items"),
        "one,two,three",
      );

      // Crashes: the primary's pooler, a pgctld, the gateway and the orch are restarted, and the
      // cluster serves again.
      const now = await eventually("one primary pooler after up", async () => {
        const s = await status(dir);
        return s.processes.some((p) => p.kind === "pooler" && p.role === "primary") ? s : undefined;
      });
      const primaryPooler = now.processes.find((p) => p.kind === "pooler" && p.role === "primary")!;
      const replicaPgctld = now.processes.find((p) =>
        p.kind === "pgctld" && p.name !== primaryPooler.name.replace("pooler-", "pgctld-")
      )!;
      await killAndSeeRestarts(dir, [
        primaryPooler.name,
        replicaPgctld.name,
        "gateway-zone1",
        "orch-zone1",
      ]);
      await eventually("queries served after the crashes", async () => {
        await psqlOk(primary, "INSERT INTO items VALUES (4, 'four')");
        return (await psqlOk(primary, "SELECT count(*) FROM items")) === "4" ? true : undefined;
      });

      const clean = await cluster("down", "--dir", dir, "--clean");
      assertEquals(clean.code, 0, clean.stderr);
      assert(!await Deno.stat(dir).then(() => true, () => false), `${dir} was not removed`);
    } finally {
      await cluster("down", "--dir", dir, "--clean");
      await Deno.remove(dir, { recursive: true }).catch(() => undefined);
    }
  },
});
