/**
 * Gateway benchmark: pgbench through client → Tessera gateway → Tessera pooler → Postgres,
 * through PgBouncer (transaction mode) → Postgres, and to Postgres directly, in one run on one
 * machine. See bench/gateway/README.md.
 *
 * `deno run -A bench/gateway/main.ts [--clients 10,50,200] [--duration 30] [--pool-size 20]
 * [--scale 10]`
 *
 * @module
 */

import { parseArgs } from "node:util";
import {
  assertPortFree,
  CleanupStack,
  CpuMeter,
  findBinary,
  findPgbench,
  findPgbouncer,
  fixed,
  formatTable,
  loadAverage,
  type PgbenchResult,
  type PgbenchWorkload,
  ratio,
  runPgbench,
  sleep,
  startPgbouncer,
  stopChild,
  type Table,
} from "../lib/mod.ts";
import { startTestPostgres } from "../../tests/support/postgres.ts";
import { startTask, type TestProcess } from "../../tests/support/process.ts";
import { findPgBindir } from "../../shared/pgbin/mod.ts";
import { startEtcd } from "../../shared/proc/mod.ts";
import { TopoClient } from "../../shared/topo/mod.ts";
import { Logger } from "../../shared/log/mod.ts";

const TARGETS = ["direct", "pgbouncer", "gateway", "relay"] as const;
type Target = typeof TARGETS[number];
const WORKLOADS = ["select-only", "tpcb-like"] as const;
const USER = "postgres";
const KEYSPACE = "app";
const PASSWORD = "tessera-bench";
const HOST = "127.0.0.1";
const TOPO_ROOT = "/tessera-bench-gateway";
const CELL = "zone1";

const USAGE = `Usage: deno run -A bench/gateway/main.ts [options]

  --clients LIST        pgbench client counts (default 10,50,200)
  --duration S          seconds per pgbench run (default 30)
  --pool-size N         backends per pool: the pooler's --pool-size, PgBouncer's
                        default_pool_size (default 20)
  --gateway-pool N      the gateway's --pool-size-per-pooler (default: the gateway's own)
  --pooler-channel C    the gateway's --pooler-channel: mux or direct (default mux)
  --rounds N            run the targets N times, alternating, per workload and client
                        count (default 1); the verdict uses the mean TPS of the rounds
  --scale N             pgbench -i scale factor (default 10)
  --warmup S            seconds of unrecorded select-only load on each target before the
                        measured runs (default 5; 0: none)
  --targets LIST        direct,pgbouncer,gateway,relay (default all four); relay is a
                        byte relay in Deno with the gateway's permissions in front of
                        PgBouncer: the floor any such hop pays
  --workloads LIST      select-only,tpcb-like (default both)
  --threads N           pgbench -j (default 2)
  --port-base N         first of nine ports used (default 14000; all must stay in 14000-14099)
  --help                this text`;

interface Options {
  clients: number[];
  durationS: number;
  poolSize: number;
  gatewayPool: number | undefined;
  poolerChannel: "mux" | "direct";
  rounds: number;
  warmupS: number;
  scale: number;
  targets: Target[];
  workloads: PgbenchWorkload[];
  threads: number;
  portBase: number;
}

function positiveInt(name: string, raw: string): number {
  const value = Number(raw);
  if (!Number.isInteger(value) || value <= 0) {
    throw new RangeError(`'--${name}' must be a positive integer: received '${raw}'`);
  }
  return value;
}

function list<T extends string>(name: string, raw: string, allowed: readonly T[]): T[] {
  const items = raw.split(",").map((s) => s.trim()).filter((s) => s !== "");
  for (const item of items) {
    if (!allowed.includes(item as T)) {
      throw new RangeError(`'--${name}' accepts ${allowed.join(", ")}: received '${item}'`);
    }
  }
  if (items.length === 0) throw new RangeError(`'--${name}' must name at least one value`);
  return [...new Set(items)] as T[];
}

function poolerChannel(raw: string): "mux" | "direct" {
  if (raw !== "mux" && raw !== "direct") {
    throw new RangeError(`'--pooler-channel' accepts mux or direct: received '${raw}'`);
  }
  return raw;
}

function parseOptions(args: string[]): Options | undefined {
  const { values } = parseArgs({
    args,
    options: {
      clients: { type: "string", default: "10,50,200" },
      duration: { type: "string", default: "30" },
      "pool-size": { type: "string", default: "20" },
      "gateway-pool": { type: "string" },
      "pooler-channel": { type: "string", default: "mux" },
      rounds: { type: "string", default: "1" },
      warmup: { type: "string", default: "5" },
      scale: { type: "string", default: "10" },
      targets: { type: "string", default: TARGETS.join(",") },
      workloads: { type: "string", default: WORKLOADS.join(",") },
      threads: { type: "string", default: "2" },
      "port-base": { type: "string", default: "14000" },
      help: { type: "boolean", default: false },
    },
    strict: true,
  });
  if (values.help) return undefined;
  const poolSize = positiveInt("pool-size", values["pool-size"]);
  return {
    clients: [...new Set(values.clients.split(",").map((c) => positiveInt("clients", c.trim())))],
    durationS: positiveInt("duration", values.duration),
    poolSize,
    gatewayPool: values["gateway-pool"] === undefined
      ? undefined
      : positiveInt("gateway-pool", values["gateway-pool"]),
    poolerChannel: poolerChannel(values["pooler-channel"]),
    rounds: positiveInt("rounds", values.rounds),
    warmupS: values.warmup === "0" ? 0 : positiveInt("warmup", values.warmup),
    scale: positiveInt("scale", values.scale),
    targets: list("targets", values.targets, TARGETS),
    workloads: list("workloads", values.workloads, WORKLOADS),
    threads: positiveInt("threads", values.threads),
    portBase: positiveInt("port-base", values["port-base"]),
  };
}

/** One pgbench run's figures. */
interface RunRow {
  workload: PgbenchWorkload;
  clients: number;
  target: Target;
  /** Which of the alternating rounds (1-based). */
  round: number;
  tps: number;
  meanMs: number;
  p99Ms: number;
  failed: number;
  abortedClients: number;
  errors: string[];
  ourCpuPct: number;
  otherCpuPct: number;
  /** CPU of the gateway process (gateway runs) or the relay (relay runs), percent of one core. */
  gatewayCorePct?: number;
  /** CPU of the pooler process, percent of one core (gateway runs only). */
  poolerCorePct?: number;
}

function log(message: string): void {
  console.error(message);
}

/** utime + stime of one process, in clock ticks (100 per second on Linux). */
function processTicks(pid: number): number {
  try {
    const stat = Deno.readTextFileSync(`/proc/${pid}/stat`);
    const f = stat.slice(stat.lastIndexOf(")") + 2).split(" ").map(Number);
    return (f[11] ?? 0) + (f[12] ?? 0);
  } catch {
    return Number.NaN;
  }
}

async function psql(socketDir: string, port: number, database: string, sql: string[]) {
  const out = await new Deno.Command(`${findPgBindir()}/psql`, {
    args: ["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-h", socketDir, "-p", String(port)]
      .concat(["-U", USER, "-d", database, ...sql.flatMap((s) => ["-c", s])]),
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
    env: { PGCONNECT_TIMEOUT: "5" },
  }).output();
  if (!out.success) {
    throw new Error(`psql failed on ${sql.join("; ")}: ${new TextDecoder().decode(out.stderr)}`);
  }
  return new TextDecoder().decode(out.stdout).trim();
}

async function logTail(file: string, lines = 15): Promise<string> {
  const text = await Deno.readTextFile(file).catch(() => "");
  return text.trimEnd().split("\n").slice(-lines).join("\n");
}

/** Polls psql through `host:port` to `database` until `select 1` answers, or throws. */
async function waitForPsql(
  what: string,
  port: number,
  proc: TestProcess,
  timeoutMs: number,
  signal: AbortSignal,
): Promise<void> {
  let exited: Deno.CommandStatus | undefined;
  proc.child.status.then((s) => exited = s, () => undefined);
  const deadline = Date.now() + timeoutMs;
  let lastError = "not tried";
  while (Date.now() < deadline && exited === undefined) {
    signal.throwIfAborted();
    try {
      if ((await psql(HOST, port, KEYSPACE, ["select 1"])) === "1") return;
    } catch (err) {
      lastError = (err as Error).message.trim();
    }
    await sleep(250, signal);
  }
  const why = exited !== undefined
    ? `exited with code ${exited.code}`
    : `did not answer psql within ${timeoutMs / 1000} s (${lastError})`;
  throw new Error(`the ${what} ${why}; its log ends with:\n${await logTail(proc.logFile)}`);
}

function rowFromResult(
  key: Pick<RunRow, "workload" | "clients" | "target" | "round">,
  result: PgbenchResult,
  cpu: { oursPct: number; othersPct: number },
): RunRow {
  return {
    ...key,
    tps: result.report.tps,
    meanMs: result.latency.meanMs,
    p99Ms: result.latency.p99Ms,
    failed: Math.max(result.report.failed, result.latency.failed),
    abortedClients: result.exitCode === 1 && result.report.abortedClients === 0
      ? key.clients
      : result.report.abortedClients,
    errors: result.report.errors,
    ourCpuPct: cpu.oursPct,
    otherCpuPct: cpu.othersPct,
  };
}

function throughputTable(rows: RunRow[]): Table {
  const baseline = (row: RunRow) =>
    rows.find((r) =>
      r.target === "pgbouncer" && r.workload === row.workload && r.clients === row.clients &&
      r.round === row.round
    );
  return {
    headers: [
      "workload",
      "clients",
      "target",
      "round",
      "TPS",
      "mean ms",
      "p99 ms",
      "failed",
      "aborted",
      "vs PgBouncer",
      "hop CPU %",
      "pooler CPU %",
      "other CPU %",
    ],
    rows: rows.map((row) => [
      row.workload,
      String(row.clients),
      row.target,
      String(row.round),
      fixed(row.tps, 0),
      fixed(row.meanMs, 3),
      fixed(row.p99Ms, 3),
      String(row.failed),
      String(row.abortedClients),
      ratio(row.tps / (baseline(row)?.tps ?? Number.NaN)),
      row.gatewayCorePct === undefined ? "" : fixed(row.gatewayCorePct, 0),
      row.poolerCorePct === undefined ? "" : fixed(row.poolerCorePct, 0),
      fixed(row.otherCpuPct, 0),
    ]),
  };
}

function summary(rows: RunRow[], opts: Options): string[] {
  if (!opts.clients.includes(50)) return ["no 50-client rows in this run (add 50 to --clients)"];
  const lines: string[] = [];
  for (const workload of opts.workloads) {
    const find = (target: Target) =>
      rows.filter((r) => r.target === target && r.workload === workload && r.clients === 50);
    const bouncer = find("pgbouncer");
    const gateway = find("gateway");
    if (bouncer.length === 0 || gateway.length === 0) {
      lines.push(`${workload}, 50 clients: gateway or PgBouncer not measured`);
      continue;
    }
    const mean = (rs: RunRow[], f: (r: RunRow) => number) =>
      rs.reduce((n, r) => n + f(r), 0) / rs.length;
    const gwTps = mean(gateway, (r) => r.tps);
    const pbTps = mean(bouncer, (r) => r.tps);
    const r = gwTps / pbTps;
    const failed = gateway.reduce((n, g) => n + g.failed, 0);
    const aborted = gateway.reduce((n, g) => n + g.abortedClients, 0);
    const perRound = gateway.length > 1
      ? `; per round ${
        gateway.map((g) => {
          const b = bouncer.find((x) => x.round === g.round);
          return ratio(g.tps / (b?.tps ?? Number.NaN));
        }).join(" ")
      }; p99 ${fixed(mean(gateway, (g) => g.p99Ms), 2)} against ${
        fixed(mean(bouncer, (b) => b.p99Ms), 2)
      } ms`
      : "";
    lines.push(
      `${workload}, 50 clients: gateway ${fixed(gwTps, 0)} tps = ${ratio(r)} PgBouncer ` +
        `(${fixed(pbTps, 0)} tps${
          gateway.length > 1 ? `, means of ${gateway.length} rounds` : ""
        }` +
        `; target ≥ 0.80×: ${r >= 0.8 ? "met" : "NOT met"})${perRound}` +
        (failed === 0 && aborted === 0 ? "" : `, with ${failed} failed / ${aborted} aborted`),
    );
    // CPU per transaction, in µs: percent of a core / 100 / TPS.
    const usPerTx = (rs: RunRow[], f: (r: RunRow) => number | undefined) =>
      fixed(mean(rs, (r) => (f(r) ?? Number.NaN) * 1e4 / r.tps), 1);
    lines.push(
      `${workload}, 50 clients: CPU per transaction: gateway ${
        usPerTx(gateway, (r) => r.gatewayCorePct)
      } µs + pooler ${usPerTx(gateway, (r) => r.poolerCorePct)} µs`,
    );
    const relay = find("relay");
    if (relay.length > 0) {
      const rr = mean(relay, (r) => r.tps) / pbTps;
      lines.push(
        `${workload}, 50 clients: byte relay (Deno, network permission only) in front of ` +
          `PgBouncer ${fixed(mean(relay, (r) => r.tps), 0)} tps = ${ratio(rr)} PgBouncer; ` +
          `relay CPU ${usPerTx(relay, (r) => r.gatewayCorePct)} µs per transaction`,
      );
    }
  }
  return lines;
}

/** Runs the benchmark; returns the exit code. */
export async function main(args: string[] = Deno.args): Promise<number> {
  let opts: Options | undefined;
  try {
    opts = parseOptions(args);
  } catch (err) {
    console.error(`bench/gateway: ${(err as Error).message}\n\n${USAGE}`);
    return 2;
  }
  if (opts === undefined) {
    console.log(USAGE);
    return 0;
  }
  const o = opts;
  const ports = {
    postgres: o.portBase,
    etcdClient: o.portBase + 1,
    etcdPeer: o.portBase + 2,
    pooler: o.portBase + 3,
    poolerHttp: o.portBase + 4,
    gateway: o.portBase + 5,
    gatewayHttp: o.portBase + 6,
    pgbouncer: o.portBase + 7,
    relay: o.portBase + 8,
  };
  for (const port of Object.values(ports)) assertPortFree(port, HOST);
  const pgbench = findPgbench(findPgBindir());
  findBinary("psql", { debianPackage: "postgresql-client", dirs: [findPgBindir()] });
  const wantsBouncer = o.targets.includes("pgbouncer") || o.targets.includes("relay");
  const pgbouncer = wantsBouncer ? findPgbouncer() : undefined;

  const controller = new AbortController();
  const signal = controller.signal;
  const onSignal = () => {
    log("interrupted: stopping everything started");
    controller.abort(new Error("interrupted"));
  };
  const signals = ["SIGINT", "SIGTERM"] as const;
  for (const s of signals) Deno.addSignalListener(s, onSignal);
  const cleanup = new CleanupStack((what, err) =>
    log(`cleanup of ${what} failed: ${(err as Error).message}`)
  );
  const runs: RunRow[] = [];
  const started = new Date();
  let exitCode = 0;
  try {
    const workDir = await Deno.makeTempDir({ prefix: "tessera-bench-gateway-" });
    await Deno.chmod(workDir, 0o755);
    cleanup.push("work directory", () => Deno.remove(workDir, { recursive: true }));

    /**
     * Starts `deno task <task> ...args` in a session of its own (as a service manager would), stops
     * it at cleanup, and waits until psql through `port` answers; returns its pid.
     */
    const startService = async (what: string, task: string, args: string[], port: number) => {
      const proc = await startTask(task, args, `${workDir}/${what}.log`, { ownSession: true });
      cleanup.push(what, async () => {
        await stopChild(proc.child, "SIGTERM", 10_000);
        await proc.stop();
      });
      await waitForPsql(what, port, proc, 30_000, signal);
      return proc.child.pid;
    };

    const maxConnections = Math.max(300, ...o.clients.map((c) => c + 20));
    log(`starting Postgres on port ${ports.postgres}`);
    const pg = await startTestPostgres({
      port: ports.postgres,
      listenAddress: HOST,
      password: PASSWORD,
      settings: {
        max_connections: String(maxConnections),
        shared_buffers: "256MB",
        fsync: "off",
        synchronous_commit: "off",
        full_page_writes: "off",
      },
    });
    cleanup.push("postgres", () => pg.cleanup());
    signal.throwIfAborted();
    await psql(pg.socketDir, pg.port, "postgres", [`CREATE DATABASE ${KEYSPACE}`]);
    log(`pgbench -i -s ${o.scale} ${KEYSPACE}`);
    const init = await new Deno.Command(pgbench, {
      args: ["-i", "-q", "-s", String(o.scale), "-h", pg.socketDir, "-p", String(pg.port)]
        .concat(["-U", USER, KEYSPACE]),
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
      signal,
    }).output();
    signal.throwIfAborted();
    if (!init.success) {
      throw new Error(`pgbench -i failed: ${new TextDecoder().decode(init.stderr)}`);
    }
    const serverVersion = await psql(pg.socketDir, pg.port, "postgres", ["SHOW server_version"]);

    let bouncerPort: number | undefined;
    if (wantsBouncer) {
      const bouncer = await startPgbouncer({
        pgbouncer: pgbouncer!,
        listenPort: ports.pgbouncer,
        pgSocketDir: pg.socketDir,
        pgPort: pg.port,
        poolSize: o.poolSize,
        maxClientConn: Math.max(...o.clients) + 100,
        user: USER,
        database: KEYSPACE,
      });
      cleanup.push("pgbouncer", () => bouncer.stop());
      bouncerPort = bouncer.port;
      log(`pgbouncer pid ${bouncer.pid} on port ${bouncer.port}`);
    }

    let relayPid: number | undefined;
    if (o.targets.includes("relay")) {
      relayPid = await startService(
        "relay",
        "bench-relay",
        ["--listen", `${HOST}:${ports.relay}`, "--upstream", `${HOST}:${bouncerPort}`],
        ports.relay,
      );
      log(`relay pid ${relayPid} on port ${ports.relay}, in front of PgBouncer`);
    }

    let gatewayPid: number | undefined;
    let poolerPid: number | undefined;
    if (o.targets.includes("gateway")) {
      const quiet = new Logger({ component: "bench-gateway", level: "error" });
      const etcd = await startEtcd({
        dataDir: `${workDir}/etcd`,
        clientPort: ports.etcdClient,
        peerPort: ports.etcdPeer,
        logger: quiet,
      });
      cleanup.push("etcd", () => etcd.stop());
      const topo = await TopoClient.connect({
        endpoints: etcd.endpoint,
        root: TOPO_ROOT,
        logger: quiet,
      });
      cleanup.push("topo client", () => topo.close());
      await topo.global.cells.put([CELL], topo.defaultCellRecord(CELL));
      await topo.global.keyspaces.put([KEYSPACE], { name: KEYSPACE, sharded: false });
      await topo.global.shards.put([KEYSPACE, "0"], { keyspace: KEYSPACE, range: "0", term: 1 });
      log(`etcd on port ${ports.etcdClient}; topo records written under ${TOPO_ROOT}`);

      const topoFlags = ["--topo-endpoint", etcd.endpoint, "--topo-root", TOPO_ROOT];
      poolerPid = await startService("pooler", "pooler", [
        "--alias",
        "bench-pooler",
        ...topoFlags,
        "--keyspace",
        KEYSPACE,
        "--shard",
        "0",
        "--cell",
        CELL,
        "--type",
        "primary",
        "--postgres-socket-dir",
        pg.socketDir,
        "--postgres-port",
        String(pg.port),
        "--listen",
        `${HOST}:${ports.pooler}`,
        "--http-listen",
        `${HOST}:${ports.poolerHttp}`,
        "--pool-size",
        String(o.poolSize),
        // As PgBouncer (reserve_pool_size = 0): no admin reserve on top of the pool size.
        "--reserve-pool-size",
        "0",
        "--max-client-conn",
        String(Math.max(...o.clients) + 100),
        "--log-level",
        "warn",
      ], ports.pooler);
      log(`pooler pid ${poolerPid} on port ${ports.pooler}`);

      gatewayPid = await startService("gateway", "gateway", [
        "--alias",
        "bench-gateway",
        ...topoFlags,
        "--cell",
        CELL,
        "--listen",
        `${HOST}:${ports.gateway}`,
        "--http-listen",
        `${HOST}:${ports.gatewayHttp}`,
        ...(o.gatewayPool !== undefined ? ["--pool-size-per-pooler", String(o.gatewayPool)] : []),
        "--pooler-channel",
        o.poolerChannel,
        "--max-client-conn",
        String(Math.max(...o.clients) + 100),
        "--log-level",
        "warn",
      ], ports.gateway);
      log(`gateway pid ${gatewayPid} on port ${ports.gateway}`);
    }

    const cpus = navigator.hardwareConcurrency;
    console.log(`# Tessera gateway benchmark, ${started.toISOString()}`);
    console.log(
      `machine: ${cpus} CPUs, Linux ${Deno.osRelease()}; load average before: ${loadAverage()}`,
    );
    console.log(
      `PostgreSQL ${serverVersion}, Deno ${Deno.version.deno}; pgbench -M simple, scale ` +
        `${o.scale}, -j ${o.threads}, -T ${o.durationS}; pool size ${o.poolSize} (pooler ` +
        `--pool-size, PgBouncer transaction mode default_pool_size), gateway ` +
        `--pool-size-per-pooler ${
          o.gatewayPool ?? "(its default)"
        } --pooler-channel ${o.poolerChannel}; fsync/synchronous_commit/full_page_writes off`,
    );

    const portOf: Record<Target, number | undefined> = {
      direct: pg.port,
      pgbouncer: bouncerPort,
      gateway: gatewayPid === undefined ? undefined : ports.gateway,
      relay: relayPid === undefined ? undefined : ports.relay,
    };
    const targets = o.targets.filter((t) => portOf[t] !== undefined);
    const total = o.workloads.length * o.clients.length * targets.length * o.rounds;
    log(`${total} pgbench runs, about ${Math.ceil((total * (o.durationS + 4)) / 60)} min`);
    const postmasterPid = (await pg.instance.status()).pid;
    const meter = new CpuMeter(() => [Deno.pid, postmasterPid]);
    /** pgbench against `target`, its per-transaction logs in a fresh folder removed after. */
    const pgbenchOn = async (
      target: Target,
      workload: PgbenchWorkload,
      clients: number,
      durationS: number,
    ) => {
      const logDir = await Deno.makeTempDir({ dir: workDir, prefix: "pgbench-log-" });
      try {
        return await runPgbench({
          pgbench,
          host: HOST,
          port: portOf[target]!,
          user: USER,
          database: KEYSPACE,
          password: PASSWORD,
          workload,
          protocol: "simple",
          clients,
          threads: o.threads,
          durationS,
          logDir,
          signal,
        });
      } finally {
        await Deno.remove(logDir, { recursive: true });
      }
    };
    // Every process on the path (the gateway's and the pooler's JIT, their pools, PgBouncer's
    // pool, Postgres's caches) starts its measured runs warm.
    for (const target of o.warmupS > 0 ? targets : []) {
      signal.throwIfAborted();
      const warm = await pgbenchOn(target, "select-only", Math.max(...o.clients), o.warmupS);
      log(
        `warm-up on ${target}: ${fixed(warm.report.tps, 0)} tps for ${o.warmupS} s (not recorded)`,
      );
    }
    let n = 0;
    for (const workload of o.workloads) {
      for (const clients of o.clients) {
        for (let i = 0; i < o.rounds * targets.length; i++) {
          const target = targets[i % targets.length]!;
          const round = Math.floor(i / targets.length) + 1;
          signal.throwIfAborted();
          n++;
          await psql(pg.socketDir, pg.port, KEYSPACE, [
            "VACUUM pgbench_branches",
            "VACUUM pgbench_tellers",
            "TRUNCATE pgbench_history",
            "CHECKPOINT",
          ]);
          const hopPid = target === "relay" ? relayPid : gatewayPid;
          const gwBefore = hopPid === undefined ? Number.NaN : processTicks(hopPid);
          const plBefore = poolerPid === undefined ? Number.NaN : processTicks(poolerPid);
          const t0 = performance.now();
          meter.start();
          const result = await pgbenchOn(target, workload, clients, o.durationS);
          const cpu = meter.stop();
          const elapsedS = (performance.now() - t0) / 1000;
          const row = rowFromResult({ workload, clients, target, round }, result, cpu);
          // Ticks are 1/100 s: ticks / seconds = percent of one core.
          if (target === "gateway" || target === "relay") {
            row.gatewayCorePct = (processTicks(hopPid!) - gwBefore) / elapsedS;
          }
          if (target === "gateway") {
            row.poolerCorePct = (processTicks(poolerPid!) - plBefore) / elapsedS;
          }
          runs.push(row);
          log(
            `[${n}/${total}] ${workload} c=${clients} ${target}` +
              `${o.rounds > 1 ? ` (round ${round})` : ""}: ${fixed(row.tps, 0)} tps, ` +
              `mean ${fixed(row.meanMs, 3)} ms, p99 ${fixed(row.p99Ms, 3)} ms, failed ` +
              `${row.failed}, aborted ${row.abortedClients}, other CPU ` +
              `${fixed(row.otherCpuPct, 0)}%` +
              (row.errors.length > 0 ? `; errors: ${row.errors.join(" | ")}` : ""),
          );
        }
      }
    }
    console.log("\n## Throughput (pgbench -M simple)\n");
    console.log(formatTable(throughputTable(runs)));
    console.log(
      "\nTPS: pgbench's, without initial connection time. mean/p99: from pgbench's " +
        "per-transaction logs. vs PgBouncer: TPS over PgBouncer's at the same workload and " +
        "clients. hop/pooler CPU %: CPU of the gateway (or the relay) and of the pooler " +
        "during the run, percent of one core. other CPU %: share of all CPUs used by processes outside this " +
        "benchmark during the run (above ~5 the row is noisy).",
    );
    console.log("\n## 50 clients: gateway path against PgBouncer\n");
    for (const line of summary(runs, o)) console.log(`- ${line}`);
    console.log(`\nload average after: ${loadAverage()}`);
    const wall = (Date.now() - started.getTime()) / 1000;
    console.log(`wall time: ${Math.floor(wall / 60)} min ${Math.round(wall % 60)} s`);
  } catch (err) {
    exitCode = signal.aborted ? 130 : 1;
    if (!signal.aborted) console.error(`bench/gateway: ${(err as Error).message}`);
  } finally {
    await cleanup.runAll();
    for (const s of signals) Deno.removeSignalListener(s, onSignal);
  }
  return exitCode;
}

if (import.meta.main) Deno.exit(await main());
