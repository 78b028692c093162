/**
 * `deno task cluster` with sharded keyspaces, end to end, run as a user runs it: `--shards 2
 * --vschema FILE` and a cluster file with a sharded and an unsharded keyspace. orch bootstraps
 * every shard (its database on every shard's primary), the vschema lands in topo, and
 * `deno task ctl vschema show|apply` reads and changes it through orch's admin API.
 *
 * Ports: base 13500 (d = -1500: etcd 10879/10880, orch 13500, gateway 13932/13600, poolers
 * 14500+i/14600+i, pgctld 15600+i, Postgres 23932+i), clear of the default cluster (15000) and of
 * the other launcher tests (19000, 20500, 21000).
 *
 * @module
 */

import { assert, assertEquals, assertMatch } from "../shared/testing/assert.ts";
import { Logger } from "../shared/log/mod.ts";
import { TopoClient } from "../shared/topo/mod.ts";
import { runPsql } from "./support/psql.ts";
import { cluster, clusterStatus as status } from "./support/cluster.ts";

const ROOT = new URL("..", import.meta.url).pathname;
const BASE_PORT = 13500;
const ETCD = "http://127.0.0.1:10879";
const ORCH_URL = "http://127.0.0.1:13500";
const PG_PORT = 23932;

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

async function eventually<T>(
  what: string,
  fn: () => Promise<T | undefined>,
  timeoutMs = 90_000,
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

/** Runs `deno task ctl ...args` against the test cluster's orch. */
async function ctl(...args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["task", "ctl", ...args],
    cwd: ROOT,
    env: { NO_COLOR: "1", ORCH_URL },
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).output();
  const dec = new TextDecoder();
  return { code: out.code, stdout: dec.decode(out.stdout), stderr: dec.decode(out.stderr) };
}

async function withTopo<T>(fn: (topo: TopoClient) => Promise<T>): Promise<T> {
  const topo = await TopoClient.connect({
    endpoints: ETCD,
    logger: new Logger({ component: "test", level: "error" }),
  });
  try {
    return await fn(topo);
  } finally {
    await topo.close();
  }
}

/** The databases of the Postgres of instance `alias` (number `index`), over its Unix socket. */
async function databases(dir: string, alias: string, index: number): Promise<string[]> {
  const conn = `postgresql:///postgres?host=${dir}/${alias}/run&port=${PG_PORT + index}` +
    `&user=postgres`;
  const res = await runPsql(conn, "SELECT datname FROM pg_database ORDER BY datname");
  if (res.code !== 0) throw new Error(`psql on ${alias} failed: ${res.stderr}`);
  return res.stdout.split("\n").filter((l) => l !== "");
}

/** Waits until every pooler of the cluster is its shard's primary. */
async function allShardPrimaries(dir: string, poolers: number): Promise<void> {
  await eventually("every shard with a primary pooler", async () => {
    const s = await status(dir);
    const list = s.processes.filter((p) => p.kind === "pooler");
    return list.length === poolers &&
        list.every((p) => p.state === "running" && p.role === "primary" && p.shardPrimary)
      ? true
      : undefined;
  });
}

const appVSchema = {
  sharded: true,
  vindexes: { hash: { type: "hash" } },
  tables: { customer: { column_vindexes: [{ column: "id", name: "hash" }] } },
};

Deno.test({
  name: "cluster: --shards 2 --vschema runs two shards, ctl vschema shows and applies",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    const dir = await Deno.makeTempDir({ prefix: "tessera-cluster-sharded-" });
    await Deno.chmod(dir, 0o755);
    const files = await Deno.makeTempDir({ prefix: "tessera-sharded-files-" });
    const vschemaFile = `${files}/app_vschema.json`;
    await Deno.writeTextFile(vschemaFile, JSON.stringify(appVSchema));
    try {
      // Refusals come before anything starts.
      const noVSchema = await cluster("up", "--dir", dir, "--shards", "2");
      assertEquals(noVSchema.code, 2, noVSchema.stderr);
      assertMatch(noVSchema.stderr, /--shards needs --vschema FILE/);
      await Deno.writeTextFile(`${files}/c.json`, "{}");
      const withConfig = await cluster(
        "up",
        "--dir",
        dir,
        "--shards",
        "2",
        "--config",
        `${files}/c.json`,
      );
      assertEquals(withConfig.code, 2, withConfig.stderr);
      assertMatch(withConfig.stderr, /--shards 2 contradicts --config/);

      const upRun = await cluster(
        "up",
        "--dir",
        dir,
        "--base-port",
        String(BASE_PORT),
        "--shards",
        "2",
        "--replicas",
        "0",
        "--vschema",
        vschemaFile,
      );
      assertEquals(upRun.code, 0, `up failed:\n${upRun.stdout}\n${upRun.stderr}`);
      assertMatch(upRun.stdout, /postgres:\/\/postgres@127\.0\.0\.1:13932\/app\b/);
      assertMatch(upRun.stdout, /sharded: +keyspace app over -80, 80-/);
      await allShardPrimaries(dir, 2);
      const st = await status(dir);
      assertEquals(
        st.processes.filter((p) => p.kind === "pooler").map((p) => p.name),
        ["pooler-app--80-0", "pooler-app-80--0"],
      );

      // Topo: a sharded keyspace, one shard record per range, the vschema from the file.
      await withTopo(async (topo) => {
        assertEquals((await topo.global.keyspaces.get("app"))?.value, {
          name: "app",
          sharded: true,
        });
        assertEquals((await topo.global.databases.get("app"))?.value.durability, "none");
        const shards = (await topo.global.shards.list("app")).flatMap((s) =>
          s.type === "record" ? [`${s.value.range}:${s.value.primaryAlias}`] : []
        ).sort();
        assertEquals(shards, ["-80:app--80-0", "80-:app-80--0"]);
        assertEquals((await topo.global.vschemas.get("app"))?.value, appVSchema);
      });

      // orch created database app on every shard's primary.
      for (const [alias, index] of [["app--80-0", 0], ["app-80--0", 1]] as const) {
        await eventually(
          `database app on ${alias}`,
          async () => (await databases(dir, alias, index)).includes("app") ? true : undefined,
        );
      }

      // ctl vschema show prints the stored vschema.
      const shown = await ctl("vschema", "show", "app");
      assertEquals(shown.code, 0, shown.stderr);
      assertEquals(JSON.parse(shown.stdout), appVSchema);
      const unknown = await ctl("vschema", "show", "nope");
      assertEquals(unknown.code, 1);
      assertMatch(unknown.stderr, /keyspace 'nope' does not exist/);

      // A bad vschema is refused with the path and the reason, and nothing changes.
      const bad = `${files}/bad.json`;
      await Deno.writeTextFile(
        bad,
        JSON.stringify({
          ...appVSchema,
          tables: { t: { column_vindexes: [{ column: "id", name: "nope" }] } },
        }),
      );
      const refused = await ctl("vschema", "apply", "app", "--file", bad);
      assertEquals(refused.code, 1, refused.stdout);
      assertMatch(
        refused.stderr,
        /tables\.t\.column_vindexes\.0\.name: names vindex 'nope', which is not in 'vindexes'/,
      );
      await Deno.writeTextFile(bad, JSON.stringify({ sharded: false }));
      const unsharded = await ctl("vschema", "apply", "app", "-f", bad);
      assertEquals(unsharded.code, 1);
      assertMatch(unsharded.stderr, /sharded: must match the keyspace, which is sharded/);
      assertEquals(JSON.parse((await ctl("vschema", "show", "app")).stdout), appVSchema);

      // A good one is stored.
      const changed = {
        ...appVSchema,
        tables: {
          ...appVSchema.tables,
          corder: { column_vindexes: [{ column: "customer_id", name: "hash" }] },
        },
      };
      const good = `${files}/good.json`;
      await Deno.writeTextFile(good, JSON.stringify(changed));
      const applied = await ctl("vschema", "apply", "app", "--file", good);
      assertEquals(applied.code, 0, applied.stderr);
      assertMatch(applied.stdout, /applied the vschema of keyspace 'app'/);
      assertEquals(JSON.parse((await ctl("vschema", "show", "app")).stdout), changed);

      // down and up: the applied vschema and the shard records survive.
      const downRun = await cluster("down", "--dir", dir);
      assertEquals(downRun.code, 0, downRun.stderr);
      const up2 = await cluster("up", "--dir", dir);
      assertEquals(up2.code, 0, `second up failed:\n${up2.stdout}\n${up2.stderr}`);
      await withTopo(async (topo) => {
        assertEquals((await topo.global.vschemas.get("app"))?.value, changed);
        for (const range of ["-80", "80-"]) {
          const shard = await topo.global.shards.get("app", range);
          assert((shard?.value.term ?? 0) >= 1, `shard app/${range} lost its term`);
        }
      });

      const clean = await cluster("down", "--dir", dir, "--clean");
      assertEquals(clean.code, 0, clean.stderr);
    } finally {
      await cluster("down", "--dir", dir, "--clean");
      await Deno.remove(dir, { recursive: true }).catch(() => undefined);
      await Deno.remove(files, { recursive: true }).catch(() => undefined);
    }
  },
});

Deno.test({
  name: "cluster: a cluster file with a sharded and an unsharded sequence keyspace",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    const dir = await Deno.makeTempDir({ prefix: "tessera-cluster-sharded-file-" });
    await Deno.chmod(dir, 0o755);
    const files = await Deno.makeTempDir({ prefix: "tessera-sharded-files-" });
    const withSeq = {
      ...appVSchema,
      tables: {
        customer: {
          column_vindexes: [{ column: "id", name: "hash" }],
          auto_increment: { column: "id", sequence: "seq.customer_seq" },
        },
      },
    };
    await Deno.writeTextFile(`${files}/app.json`, JSON.stringify(withSeq));
    const config = `${files}/cluster.json`;
    const file = {
      databases: [{ name: "app", durability: "none" }],
      keyspaces: [
        { name: "app", sharded: true, shards: ["-80", "80-"], vschema: "app.json" },
        {
          name: "seq",
          database: "app",
          vschema: { sharded: false, tables: { customer_seq: { type: "sequence" } } },
        },
      ],
    };
    try {
      // A sequence in a keyspace the file does not have is refused with its path.
      await Deno.writeTextFile(config, JSON.stringify({ ...file, keyspaces: [file.keyspaces[0]] }));
      const refused = await cluster(
        "up",
        "--dir",
        dir,
        "--base-port",
        String(BASE_PORT),
        "--replicas",
        "0",
        "--config",
        config,
      );
      assertEquals(refused.code, 2, refused.stderr);
      assertMatch(
        refused.stderr,
        /keyspaces\[0\]\.vschema\.tables\.customer\.auto_increment\.sequence: names keyspace 'seq', which is not in 'keyspaces'/,
      );

      await Deno.writeTextFile(config, JSON.stringify(file));
      const upRun = await cluster(
        "up",
        "--dir",
        dir,
        "--base-port",
        String(BASE_PORT),
        "--replicas",
        "0",
        "--config",
        config,
      );
      assertEquals(upRun.code, 0, `up failed:\n${upRun.stdout}\n${upRun.stderr}`);
      await allShardPrimaries(dir, 3);
      await withTopo(async (topo) => {
        assertEquals((await topo.global.keyspaces.get("seq"))?.value, {
          name: "seq",
          sharded: false,
          database: "app",
        });
        assertEquals(
          (await topo.global.vschemas.get("seq"))?.value.tables,
          { customer_seq: { type: "sequence" } },
        );
        assertEquals(
          (await topo.global.vschemas.get("app"))?.value.tables,
          withSeq.tables,
        );
      });
      await eventually(
        "database seq on seq-0-0",
        async () => (await databases(dir, "seq-0-0", 2)).includes("seq") ? true : undefined,
      );

      // The admin API checks references against the keyspaces in topo.
      const bad = `${files}/bad.json`;
      await Deno.writeTextFile(
        bad,
        JSON.stringify({
          ...withSeq,
          tables: {
            customer: {
              ...withSeq.tables.customer,
              auto_increment: { column: "id", sequence: "nowhere.s" },
            },
          },
        }),
      );
      const res = await ctl("vschema", "apply", "app", "--file", bad);
      assertEquals(res.code, 1);
      assertMatch(
        res.stderr,
        /tables\.customer\.auto_increment\.sequence: names keyspace 'nowhere', which does not exist/,
      );

      const clean = await cluster("down", "--dir", dir, "--clean");
      assertEquals(clean.code, 0, clean.stderr);
    } finally {
      await cluster("down", "--dir", dir, "--clean");
      await Deno.remove(dir, { recursive: true }).catch(() => undefined);
      await Deno.remove(files, { recursive: true }).catch(() => undefined);
    }
  },
});
