/**
 * Chaos: a cluster started with `deno task cluster` (1 primary + 2 replicas, durability
 * `at_least_1`), writers inserting unique ids through the gateway and recording every id whose
 * commit was acknowledged, and the primary's Postgres killed with SIGKILL five times in a row (the
 * last time with its pooler and pgctld too). After each failover every acknowledged id must be on
 * the new primary, and the old primary must rejoin as a streaming replica. Prints the window from
 * the kill to the first acknowledged write after it.
 */
import pg from "pg";
import { assert, assertEquals } from "../shared/testing/assert.ts";
import { cluster, clusterStatus } from "./support/cluster.ts";
import { waitFor } from "./support/process.ts";
import { findPgBindir } from "../shared/pgbin/mod.ts";

const BASE_PORT = 21000;
const ORCH = `http://127.0.0.1:${BASE_PORT}`;
const GATEWAY = `postgres://postgres@127.0.0.1:${BASE_PORT + 432}/app`;
const ROUNDS = 5;
const WRITERS = 6;

interface OrchShard {
  keyspace: string;
  shard: string;
  primary: string | null;
  term: number;
  health: string;
  reasons: string[];
  instances: { alias: string; role: string; walReceiver: string; running: boolean }[];
}

async function orchShard(): Promise<OrchShard> {
  const res = await fetch(`${ORCH}/status`);
  const body = await res.json() as { shards: OrchShard[] };
  const shard = body.shards.find((s) => s.keyspace === "app");
  if (shard === undefined) throw new Error("orch reports no shard of app");
  return shard;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Writers that insert unique ids and remember which commits were acknowledged. */
class Writers {
  acked: number[] = [];
  /** [started, acknowledged] of every acknowledged write. */
  ackTimes: [number, number][] = [];
  errors = 0;
  #next = 1;
  #stop = false;
  #done: Promise<void>[] = [];

  start(): void {
    for (let w = 0; w < WRITERS; w++) this.#done.push(this.#run(w));
  }

  async #run(w: number): Promise<void> {
    let client: pg.Client | undefined;
    while (!this.#stop) {
      try {
        if (client === undefined) {
          client = new pg.Client({ connectionString: GATEWAY, connectionTimeoutMillis: 5000 });
          client.on("error", () => {});
          await client.connect();
        }
        const id = this.#next++;
        const started = Date.now();
        await client.query("insert into chaos (id, writer) values ($1, $2)", [id, w]);
        this.acked.push(id);
        this.ackTimes.push([started, Date.now()]);
      } catch {
        this.errors++;
        const dead = client;
        client = undefined;
        await dead?.end().catch(() => {});
        await sleep(50);
      }
    }
    await client?.end().catch(() => {});
  }

  /** When the first write sent after `t` was acknowledged. */
  firstAckAfter(t: number): number | undefined {
    return this.ackTimes.find(([started]) => started > t)?.[1];
  }

  async stop(): Promise<void> {
    this.#stop = true;
    await Promise.all(this.#done);
  }
}

async function missingAcked(ids: number[]): Promise<number[]> {
  const client = new pg.Client({ connectionString: GATEWAY });
  await client.connect();
  try {
    const res = await client.query(
      "select a.id from unnest($1::bigint[]) a(id) left join chaos c on c.id = a.id " +
        "where c.id is null",
      [ids],
    );
    return res.rows.map((r: { id: string }) => Number(r.id));
  } finally {
    await client.end();
  }
}

Deno.test({
  name: "failover: SIGKILL of the primary 5 times loses no acknowledged commit; it rejoins",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    const dir = await Deno.makeTempDir({ prefix: "tessera-chaos-" });
    await Deno.chmod(dir, 0o755);
    const writers = new Writers();
    const windows: number[] = [];
    try {
      const up = await cluster("--dir", dir, "--base-port", String(BASE_PORT));
      assertEquals(up.code, 0, `up failed:\n${up.stdout}\n${up.stderr}`);
      await waitFor("the shard ok", async () => {
        const s = await orchShard();
        return s.health === "ok" ? s : undefined;
      }, 120_000);
      const setup = new pg.Client({ connectionString: GATEWAY });
      await setup.connect();
      await setup.query("create table chaos (id bigint primary key, writer int not null)");
      await setup.end();
      writers.start();

      for (let round = 1; round <= ROUNDS; round++) {
        await sleep(1500);
        const before = await orchShard();
        const old = before.primary!;
        const status = await clusterStatus(dir);
        const pid = Number(
          (await Deno.readTextFile(`${dir}/${old}/data/postmaster.pid`)).split("\n")[0],
        );
        const whole = round === ROUNDS;
        const ackedBefore = writers.acked.length;
        const killedAt = Date.now();
        Deno.kill(pid, "SIGKILL");
        if (whole) {
          for (const name of [`pooler-${old}`, `pgctld-${old}`]) {
            const p = status.processes.find((x) => x.name === name);
            assert(p?.pid, `no pid for ${name}`);
            Deno.kill(p.pid, "SIGKILL");
          }
        }
        const after = await waitFor(`a new primary after killing ${old}`, async () => {
          const s = await orchShard();
          return s.primary !== old && s.term > before.term ? s : undefined;
        }, 60_000);
        const firstAck = await waitFor(
          "a write acknowledged after the kill",
          () => writers.firstAckAfter(killedAt),
          60_000,
        );
        windows.push(firstAck - killedAt);
        await waitFor(`${old} back as a streaming replica`, async () => {
          const s = await orchShard();
          const i = s.instances.find((x) => x.alias === old);
          return s.health === "ok" && i?.role === "replica" && i.walReceiver === "streaming"
            ? true
            : undefined;
        }, 120_000);
        const acked = [...writers.acked];
        const missing = await missingAcked(acked);
        console.log(
          `round ${round}${whole ? " (postgres, pooler and pgctld killed)" : ""}: ` +
            `${old} → ${after.primary} (term ${after.term}), ` +
            `unavailable ${firstAck - killedAt} ms, acknowledged ${acked.length} ` +
            `(+${acked.length - ackedBefore}), missing ${missing.length}`,
        );
        assertEquals(missing, [], "acknowledged commits lost");
      }
      await writers.stop();
      const missing = await missingAcked(writers.acked);
      assertEquals(missing, []);

      // Planned switchovers under pgbench load through the gateway: zero failed transactions.
      await waitFor("the shard ok before switchovers", async () => {
        const s = await orchShard();
        return s.health === "ok" ? s : undefined;
      }, 120_000);
      const pgbin = findPgBindir();
      const gw = ["-h", "127.0.0.1", "-p", String(BASE_PORT + 432), "-U", "postgres"];
      const init = await new Deno.Command(`${pgbin}/pgbench`, {
        args: [...gw, "-i", "-I", "dtGvp", "-s", "1", "app"],
        stdout: "piped",
        stderr: "piped",
      }).output();
      assertEquals(init.code, 0, new TextDecoder().decode(init.stderr));
      const bench = new Deno.Command(`${pgbin}/pgbench`, {
        args: [...gw, "-c", "8", "-j", "2", "-T", "16", "-M", "prepared", "app"],
        stdout: "piped",
        stderr: "piped",
      }).spawn();
      const paused: number[] = [];
      for (let i = 0; i < 3; i++) {
        await sleep(3500);
        const run = await new Deno.Command(Deno.execPath(), {
          args: ["task", "ctl", "switchover", "app/0", "--orch", ORCH],
          cwd: new URL("..", import.meta.url).pathname,
          stdout: "piped",
          stderr: "piped",
        }).output();
        const out = new TextDecoder().decode(run.stdout);
        assertEquals(
          run.code,
          0,
          `switchover failed: ${out} ${new TextDecoder().decode(run.stderr)}`,
        );
        const ms = Number(/writes held (\d+) ms/.exec(out)?.[1]);
        paused.push(ms);
        console.log(out.trim());
        await waitFor("the shard ok after the switchover", async () => {
          const s = await orchShard();
          return s.health === "ok" ? s : undefined;
        }, 60_000);
      }
      const result = await bench.output();
      const report = new TextDecoder().decode(result.stdout) +
        new TextDecoder().decode(result.stderr);
      const failed = /number of failed transactions: (\d+)/.exec(report)?.[1];
      const tps = /tps = ([\d.]+)/.exec(report)?.[1];
      console.log(
        `pgbench during 3 switchovers: tps ${tps}, failed ${failed}; writes held ` +
          `${paused.join(", ")} ms`,
      );
      assertEquals(result.code, 0, report);
      assert(!/aborted/.test(report), report);
      assertEquals(failed, "0", report);
      const sorted = [...windows].sort((a, b) => a - b);
      console.log(
        `kill → first acknowledged write over ${ROUNDS} failovers: median ` +
          `${sorted[Math.floor(sorted.length / 2)]} ms, max ${sorted.at(-1)} ms; ` +
          `${writers.acked.length} commits acknowledged, ${writers.errors} client errors`,
      );
    } finally {
      await writers.stop();
      const down = await cluster("down", "--dir", dir, "--clean");
      if (down.code !== 0) console.error(down.stdout, down.stderr);
      await Deno.remove(dir, { recursive: true }).catch(() => {});
    }
  },
});
