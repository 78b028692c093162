/**
 * Failover benchmark: a local cluster from `deno task cluster` (1 primary + 2 replicas, durability
 * `at_least_1`), six writers inserting unique ids through the gateway, then N unplanned failovers
 * (SIGKILL of the primary's postmaster) and N planned switchovers (`deno task ctl switchover`).
 * Reports how long writes were unavailable in each case and checks that no acknowledged commit
 * was lost. See bench/failover/README.md.
 *
 * `deno run --allow-all --no-check=remote bench/failover/main.ts [--rounds 5] [--base-port 18500]
 * [--dir DIR]`
 *
 * @module
 */

import { parseArgs } from "node:util";
import {
  assertPortFree,
  CleanupStack,
  firstAckSentAfter,
  formatTable,
  longestAckGap,
  missingIds,
  sleep,
  type Table,
  Writers,
} from "../lib/mod.ts";
import { cluster } from "../../tests/support/cluster.ts";
import pg from "pg";

const ROOT = new URL("../..", import.meta.url).pathname;
const WRITERS = 6;
const TABLE = "failover_bench";
const HOST = "127.0.0.1";
/** Highest instance index the cluster uses (3 instances: 0, 1, 2). */
const LAST_INSTANCE = 2;

const USAGE = `Usage: deno run --allow-all --no-check=remote bench/failover/main.ts [options]

  --rounds N        unplanned failovers and planned switchovers, N of each (default 5)
  --base-port B     the cluster's --base-port (default 18500; every port, Postgres's
                    25432+(B-15000)+2 included, must stay below 32768, so B <= 22333)
  --dir DIR         cluster directory (default: a new temporary folder, removed at the end)
  --help            this text`;

interface Options {
  rounds: number;
  basePort: number;
  dir: string | undefined;
}

function positiveInt(name: string, raw: string): number {
  const value = Number(raw);
  if (!Number.isInteger(value) || value <= 0) {
    throw new RangeError(`'--${name}' must be a positive integer: received '${raw}'`);
  }
  return value;
}

function parseOptions(args: string[]): Options | undefined {
  const { values } = parseArgs({
    args,
    options: {
      rounds: { type: "string", default: "5" },
      "base-port": { type: "string", default: "18500" },
      dir: { type: "string" },
      help: { type: "boolean", default: false },
    },
    strict: true,
  });
  if (values.help) return undefined;
  const basePort = positiveInt("base-port", values["base-port"]);
  const highest = 25432 + (basePort - 15000) + LAST_INSTANCE;
  const lowest = 12379 + (basePort - 15000);
  if (highest >= 32768 || lowest < 1024) {
    throw new RangeError(
      `'--base-port' must keep every port in 1024-32767 (Postgres of instance 2 at ` +
        `25432+(B-15000)+2, etcd at 12379+(B-15000)), so 3645 <= B <= 22333: received ${basePort}`,
    );
  }
  return { rounds: positiveInt("rounds", values.rounds), basePort, dir: values.dir };
}

interface OrchShard {
  keyspace: string;
  shard: string;
  primary: string | null;
  term: number;
  health: string;
  reasons: string[];
  instances: { alias: string; role: string; walReceiver: string; running: boolean }[];
}

function log(message: string): void {
  console.error(message);
}

function median(values: number[]): number {
  const s = [...values].sort((a, b) => a - b);
  if (s.length === 0) return Number.NaN;
  const mid = Math.floor(s.length / 2);
  return s.length % 2 === 1 ? s[mid]! : Math.round((s[mid - 1]! + s[mid]!) / 2);
}

function ms(value: number): string {
  return Number.isFinite(value) ? `${Math.round(value)} ms` : "–";
}

/** Polls `fn` every 100 ms until it returns a value, or throws after `timeoutMs` or on abort. */
async function waitFor<T>(
  what: string,
  fn: () => Promise<T | undefined> | T | undefined,
  timeoutMs: number,
  signal: AbortSignal,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let lastError: unknown;
  while (Date.now() < deadline) {
    signal.throwIfAborted();
    try {
      const value = await fn();
      if (value !== undefined) return value;
    } catch (err) {
      lastError = err;
    }
    await sleep(100, signal);
  }
  const why = lastError === undefined ? "" : ` (last error: ${(lastError as Error).message})`;
  throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${why}`);
}

export async function main(args: string[] = Deno.args): Promise<number> {
  let opts: Options | undefined;
  try {
    opts = parseOptions(args);
  } catch (err) {
    console.error(`bench/failover: ${(err as Error).message}\n\n${USAGE}`);
    return 2;
  }
  if (opts === undefined) {
    console.log(USAGE);
    return 0;
  }
  const o = opts;
  const orchUrl = `http://${HOST}:${o.basePort}`;
  const gatewayUrl = `postgres://postgres@${HOST}:${o.basePort + 432}/app`;

  const orchShard = async (): Promise<OrchShard> => {
    const res = await fetch(`${orchUrl}/status`, { signal: AbortSignal.timeout(5000) });
    const body = await res.json() as { shards: OrchShard[] };
    const shard = body.shards.find((s) => s.keyspace === "app") ?? body.shards[0];
    if (shard === undefined) throw new Error("orch reports no shard");
    return shard;
  };

  const controller = new AbortController();
  const signal = controller.signal;
  const onSignal = () => {
    log("interrupted: stopping the cluster");
    controller.abort(new Error("interrupted"));
  };
  const signals = ["SIGINT", "SIGTERM"] as const;
  for (const s of signals) Deno.addSignalListener(s, onSignal);
  const cleanup = new CleanupStack((what, err) =>
    log(`cleanup of ${what} failed: ${(err as Error).message}`)
  );

  const unplanned: { round: number; from: string; to: string; windowMs: number }[] = [];
  const planned: { round: number; heldMs: number; gapMs: number; line: string }[] = [];
  let lost = 0;
  let writers: Writers | undefined;
  let exitCode = 0;
  const started = new Date();
  try {
    for (const port of [o.basePort, o.basePort + 432]) assertPortFree(port, HOST);
    let dir = o.dir;
    if (dir === undefined) {
      dir = await Deno.makeTempDir({ prefix: "tessera-bench-failover-" });
      await Deno.chmod(dir, 0o755);
      const made = dir;
      cleanup.push("cluster directory", async () => {
        // `down --clean` removes it when it succeeds.
        await Deno.remove(made, { recursive: true }).catch((err) => {
          if (!(err instanceof Deno.errors.NotFound)) throw err;
        });
      });
    }
    const d = dir;
    cleanup.push("cluster", async () => {
      const down = await cluster("down", "--dir", d, "--clean");
      if (down.code !== 0) log(`cluster down failed:\n${down.stdout}\n${down.stderr}`);
      else log("cluster down");
    });
    log(`starting the cluster in ${d} (base port ${o.basePort})`);
    const up = await cluster("--dir", d, "--base-port", String(o.basePort));
    if (up.code !== 0) {
      throw new Error(`cluster up failed (${up.code}):\n${up.stdout}\n${up.stderr}`);
    }
    signal.throwIfAborted();
    await waitFor(
      "orch to report the shard ok",
      async () => {
        const s = await orchShard();
        return s.health === "ok" ? s : undefined;
      },
      180_000,
      signal,
    );
    log("shard ok");

    const setup = new pg.Client({ connectionString: gatewayUrl });
    setup.on("error", () => {});
    await setup.connect();
    await setup.query(`create table ${TABLE} (id bigint primary key, writer int not null)`);
    await setup.end();

    const w = new Writers({ url: gatewayUrl, connections: WRITERS, table: TABLE });
    writers = w;
    w.start();
    const checkLost = async (label: string): Promise<number> => {
      const ids = w.ackedIds();
      const missing = await waitFor(
        "the check of acknowledged ids",
        () => missingIds(gatewayUrl, TABLE, ids),
        30_000,
        signal,
      );
      if (missing.length > 0) {
        log(`${label}: ${missing.length} acknowledged ids missing: ${missing.slice(0, 20)}`);
      }
      lost += missing.length;
      return missing.length;
    };
    const healthy = (what: string) =>
      waitFor(
        what,
        async () => {
          const s = await orchShard();
          return s.health === "ok" ? s : undefined;
        },
        120_000,
        signal,
      );

    // Unplanned: SIGKILL of the primary's postmaster.
    for (let round = 1; round <= o.rounds; round++) {
      await sleep(1500, signal);
      const before = await healthy("the shard ok before the kill");
      const old = before.primary;
      if (old === null) throw new Error("orch names no primary");
      const pid = Number(
        (await Deno.readTextFile(`${d}/${old}/data/postmaster.pid`)).split("\n")[0],
      );
      const ackedBefore = w.acks.length;
      const killedAt = Date.now();
      Deno.kill(pid, "SIGKILL");
      const after = await waitFor(
        `a new primary after killing ${old}`,
        async () => {
          const s = await orchShard();
          return s.primary !== null && s.primary !== old && s.term > before.term ? s : undefined;
        },
        60_000,
        signal,
      );
      const firstAck = await waitFor(
        "a write sent after the kill to be acknowledged",
        () => firstAckSentAfter(w.acks, killedAt),
        60_000,
        signal,
      );
      const windowMs = firstAck - killedAt;
      unplanned.push({ round, from: old, to: after.primary!, windowMs });
      await waitFor(
        `${old} back as a streaming replica`,
        async () => {
          const s = await orchShard();
          const i = s.instances.find((x) => x.alias === old);
          return s.health === "ok" && i?.role === "replica" && i.walReceiver === "streaming"
            ? true
            : undefined;
        },
        180_000,
        signal,
      );
      const missing = await checkLost(`unplanned round ${round}`);
      log(
        `unplanned ${round}/${o.rounds}: killed postgres of ${old} (pid ${pid}) → ` +
          `${after.primary} (term ${after.term}); kill → first write ${windowMs} ms; ` +
          `acknowledged ${w.acks.length} (+${w.acks.length - ackedBefore}), missing ${missing}`,
      );
    }

    // Planned: switchover through orch.
    for (let round = 1; round <= o.rounds; round++) {
      await sleep(1500, signal);
      await healthy("the shard ok before the switchover");
      const t0 = Date.now();
      const run = await new Deno.Command(Deno.execPath(), {
        args: ["task", "ctl", "switchover", "app/0", "--orch", orchUrl],
        cwd: ROOT,
        env: { NO_COLOR: "1" },
        stdin: "null",
        stdout: "piped",
        stderr: "piped",
        signal,
      }).output();
      const t1 = Date.now();
      const out = new TextDecoder().decode(run.stdout).trim();
      if (run.code !== 0) {
        throw new Error(
          `switchover failed (${run.code}): ${out} ${new TextDecoder().decode(run.stderr)}`,
        );
      }
      const held = /writes held (\d+) ms/.exec(out);
      if (held === null) throw new Error(`no "writes held N ms" in the ctl output: ${out}`);
      await waitFor(
        "a write acknowledged after the switchover",
        () => w.acks.some((a) => a.sentAt > t1) ? true : undefined,
        60_000,
        signal,
      );
      const gapMs = longestAckGap(w.acks, t0, t1)!;
      planned.push({ round, heldMs: Number(held[1]), gapMs, line: out });
      await healthy("the shard ok after the switchover");
      const missing = await checkLost(`planned round ${round}`);
      log(
        `planned ${round}/${o.rounds}: ${out.split("\n").at(-1)}; client-side longest gap ` +
          `${gapMs} ms (ctl ran ${t1 - t0} ms); missing ${missing}`,
      );
    }

    await w.stop();
    writers = undefined;
    if (w.stuckAtStop > 0) log(`${w.stuckAtStop} writers did not stop within 30 s`);
    const finalMissing = await missingIds(gatewayUrl, TABLE, w.ackedIds());
    if (finalMissing.length > 0) {
      log(`final check: ${finalMissing.length} acknowledged ids missing`);
      lost = Math.max(lost, finalMissing.length);
    }

    const windows = unplanned.map((u) => u.windowMs);
    const helds = planned.map((p) => p.heldMs);
    const gaps = planned.map((p) => p.gapMs);
    const table: Table = {
      headers: ["", "rounds", "median", "max", "target", "met"],
      rows: [
        [
          "unplanned: SIGKILL → first acknowledged write",
          String(windows.length),
          ms(median(windows)),
          ms(Math.max(...windows)),
          "< 5000 ms",
          Math.max(...windows) < 5000 ? "yes" : "no",
        ],
        [
          "planned: writes held (orch)",
          String(helds.length),
          ms(median(helds)),
          ms(Math.max(...helds)),
          "< 1000 ms",
          Math.max(...helds) < 1000 ? "yes" : "no",
        ],
        [
          "planned: longest gap between acks (client)",
          String(gaps.length),
          ms(median(gaps)),
          ms(Math.max(...gaps)),
          "< 1000 ms",
          Math.max(...gaps) < 1000 ? "yes" : "no",
        ],
      ],
    };
    console.log(`# Tessera failover benchmark, ${started.toISOString()}`);
    console.log(
      `machine: ${navigator.hardwareConcurrency} CPUs, Linux ${Deno.osRelease()}, Deno ` +
        `${Deno.version.deno}; cluster: 1 primary + 2 replicas, durability at_least_1; ` +
        `${WRITERS} writers through the gateway\n`,
    );
    console.log(
      `unplanned rounds (ms): ${
        unplanned.map((u) => `${u.from}→${u.to} ${u.windowMs}`).join(", ")
      }`,
    );
    console.log(
      `planned rounds, held/client gap (ms): ${
        planned.map((p) => `${p.heldMs}/${p.gapMs}`).join(", ")
      }\n`,
    );
    console.log(formatTable(table));
    console.log(
      `\nacknowledged commits: ${w.acks.length}; lost: ${lost}; client errors: ${w.errors} ` +
        `(of which writes with no answer in 20 s: ${w.stalled}); writers stuck at stop: ` +
        `${w.stuckAtStop}`,
    );
    const wall = (Date.now() - started.getTime()) / 1000;
    console.log(`wall time: ${Math.floor(wall / 60)} min ${Math.round(wall % 60)} s`);
    if (lost > 0) {
      console.error(`bench/failover: ${lost} acknowledged commits lost`);
      exitCode = 1;
    }
  } catch (err) {
    exitCode = signal.aborted ? 130 : 1;
    if (!signal.aborted) console.error(`bench/failover: ${(err as Error).message}`);
  } finally {
    await writers?.stop();
    await cleanup.runAll();
    for (const s of signals) Deno.removeSignalListener(s, onSignal);
  }
  return exitCode;
}

if (import.meta.main) Deno.exit(await main());
