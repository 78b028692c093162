/**
 * Pooler benchmark: pgbench through Postgres directly, PgBouncer (transaction mode) and
 * Tessera's pooler, in one run on one machine, then the memory each pooler needs for many idle
 * clients. See bench/pooler/README.md.
 *
 * `deno run -A bench/pooler/main.ts [--clients 10,50,200] [--duration 30] [--pool-size 20]
 * [--scale 10] [--targets direct,pgbouncer,tessera] [--idle-clients 10000] [--json out.json]`
 *
 * @module
 */

import { parseArgs } from "node:util";
import {
  assertPortFree,
  childPids,
  CleanupStack,
  CpuMeter,
  type CpuShare,
  ensureNofile,
  findBinary,
  findPgbench,
  findPgbouncer,
  fixed,
  formatTable,
  type IdleRssResult,
  loadAverage,
  measureIdleRss,
  type PgbenchProtocol,
  type PgbenchResult,
  type PgbenchWorkload,
  type ProcessUsage,
  ratio,
  readTreeUsage,
  runPgbench,
  sleep,
  startPgbouncer,
  type Table,
  type UsagePerTransaction,
  usagePerTransaction,
} from "../lib/mod.ts";
import { median, type PairedRatio, pairedRatio, pairedVerdict, roundOrder } from "../lib/rounds.ts";
import { startTestPostgres } from "../../tests/support/postgres.ts";
import { findPgBindir } from "../../shared/pgbin/mod.ts";
import { NotAvailableError, poolerUnavailableReason, startTesseraPooler } from "./tessera.ts";

const TARGETS = ["direct", "pgbouncer", "tessera"] as const;
type Target = typeof TARGETS[number];
const WORKLOADS = ["select-only", "tpcb-like"] as const;
const PROTOCOLS = ["simple", "extended", "prepared"] as const;
const USER = "postgres";
const DATABASE = "postgres";
const PASSWORD = "tessera-bench";
const HOST = "127.0.0.1";

const USAGE = `Usage: deno run -A bench/pooler/main.ts [options]

  --clients LIST        pgbench client counts (default 10,50,200)
  --duration S          seconds per pgbench run (default 30)
  --pool-size N         backends per pooler pool, PgBouncer's default_pool_size too (default 20)
  --scale N             pgbench -i scale factor (default 10)
  --targets LIST        direct,pgbouncer,tessera (default all three)
  --workloads LIST      select-only,tpcb-like (default both)
  --protocols LIST      pgbench -M modes: simple,extended,prepared (default simple)
  --threads N           pgbench -j (default 2)
  --idle-clients N      idle logged-in clients for the RSS probe; 0 skips it (default 10000)
  --idle-hold S         the probe also reads the RSS after holding them idle S seconds
                        (default 45; 0: only the reading 3 s after the last login)
  --skip-throughput     only the RSS probe
  --quiet-wait S        before each run, wait up to S seconds for other processes to use
                        under 5% of the CPUs (default 0: do not wait; the table shows it anyway)
  --warmup S            before the rounds of each row group, an unrecorded pgbench run of S
                        seconds against every target, same workload and clients (default 10;
                        0: none)
  --port-base N         first of five ports used, below 32768 (default 12900)
  --tessera-arg ARG     extra flag for the pooler (repeat for several)
  --tessera-workers N   the pooler's --workers in the throughput runs, its pool size split
                        over them (default 1; the RSS probe always runs one)
  --json FILE           also write every figure as JSON
  --help                this text`;

interface Options {
  clients: number[];
  durationS: number;
  poolSize: number;
  scale: number;
  targets: Target[];
  workloads: PgbenchWorkload[];
  protocols: PgbenchProtocol[];
  threads: number;
  idleClients: number;
  /** Seconds the RSS probe holds its clients before its second reading (0: none). */
  idleHoldS: number;
  skipThroughput: boolean;
  quietWaitS: number;
  warmupS: number;
  rounds: number;
  portBase: number;
  tesseraArgs: string[];
  tesseraWorkers: number;
  json: string | undefined;
}

function positiveInt(name: string, raw: string, allowZero = false): number {
  const value = Number(raw);
  if (!Number.isInteger(value) || value < 0 || (!allowZero && value === 0)) {
    throw new RangeError(
      `'--${name}' must be a ${allowZero ? "non-negative" : "positive"} integer: received '${raw}'`,
    );
  }
  return value;
}

function list<T extends string>(name: string, raw: string, allowed: readonly T[]): T[] {
  const items = raw.split(",").map((s) => s.trim()).filter((s) => s !== "");
  for (const item of items) {
    if (!allowed.includes(item as T)) {
      throw new RangeError(
        `'--${name}' accepts ${allowed.join(", ")}: received '${item}'`,
      );
    }
  }
  if (items.length === 0) throw new RangeError(`'--${name}' must name at least one value`);
  return [...new Set(items)] as T[];
}

function parseOptions(args: string[]): Options | undefined {
  const { values } = parseArgs({
    args,
    options: {
      clients: { type: "string", default: "10,50,200" },
      duration: { type: "string", default: "30" },
      "pool-size": { type: "string", default: "20" },
      scale: { type: "string", default: "10" },
      targets: { type: "string", default: TARGETS.join(",") },
      workloads: { type: "string", default: WORKLOADS.join(",") },
      protocols: { type: "string", default: "simple" },
      threads: { type: "string", default: "2" },
      "idle-clients": { type: "string", default: "10000" },
      "idle-hold": { type: "string", default: "45" },
      "skip-throughput": { type: "boolean", default: false },
      "quiet-wait": { type: "string", default: "0" },
      warmup: { type: "string", default: "10" },
      rounds: { type: "string", default: "1" },
      "port-base": { type: "string", default: "12900" },
      "tessera-arg": { type: "string", multiple: true, default: [] },
      "tessera-workers": { type: "string", default: "1" },
      json: { type: "string" },
      help: { type: "boolean", default: false },
    },
    strict: true,
  });
  if (values.help) return undefined;
  const portBase = positiveInt("port-base", values["port-base"]);
  if (portBase + 4 >= 32768) {
    throw new RangeError(`'--port-base' must leave five ports below 32768: received ${portBase}`);
  }
  return {
    clients: [...new Set(values.clients.split(",").map((c) => positiveInt("clients", c.trim())))],
    durationS: positiveInt("duration", values.duration),
    poolSize: positiveInt("pool-size", values["pool-size"]),
    scale: positiveInt("scale", values.scale),
    targets: list("targets", values.targets, TARGETS),
    workloads: list("workloads", values.workloads, WORKLOADS),
    protocols: list("protocols", values.protocols, PROTOCOLS),
    threads: positiveInt("threads", values.threads),
    idleClients: positiveInt("idle-clients", values["idle-clients"], true),
    idleHoldS: positiveInt("idle-hold", values["idle-hold"], true),
    skipThroughput: values["skip-throughput"],
    quietWaitS: positiveInt("quiet-wait", values["quiet-wait"], true),
    warmupS: positiveInt("warmup", values.warmup, true),
    rounds: positiveInt("rounds", values.rounds),
    portBase,
    tesseraArgs: values["tessera-arg"],
    tesseraWorkers: positiveInt("tessera-workers", values["tessera-workers"]),
    json: values.json,
  };
}

/** One pgbench run's figures. */
interface RunRow {
  protocol: PgbenchProtocol;
  workload: PgbenchWorkload;
  clients: number;
  target: Target;
  tps: number;
  meanMs: number;
  p50Ms: number;
  p99Ms: number;
  maxMs: number;
  /** Completed transactions in the per-transaction logs. */
  transactions: number;
  /** pgbench's "number of transactions actually processed". */
  pgbenchProcessed: number;
  /** pgbench's own "latency average", for comparison with meanMs. */
  pgbenchLatencyAverageMs: number;
  failed: number;
  abortedClients: number;
  exitCode: number;
  errors: string[];
  /** Share of all CPUs used by this benchmark's processes during the run, percent. */
  ourCpuPct: number;
  /** Share of all CPUs used by other processes on the machine during the run, percent. */
  otherCpuPct: number;
  /** Share of all CPUs left idle during the run, percent. */
  idleCpuPct: number;
  /** The pooler's own CPU and context switches per transaction (none for `direct`). */
  pooler: UsagePerTransaction | undefined;
  /** TPS of each round, in round order (one entry for a single run). */
  roundTps: number[];
  /** p99 of each round, in round order. */
  roundP99Ms: number[];
}

/** A server under the idle-client probe. */
interface IdleServer {
  pid: number;
  port: number;
  stop(): Promise<void>;
}

/** One idle-client probe's figures. */
interface IdleRow extends IdleRssResult {
  target: Target;
}

/** The pooler's usage, or undefined when it cannot be read (it exited: the run says why). */
/** CPU of the pooler's process and of its worker processes (`--tessera-arg --workers`). */
function readUsage(pid: number, children: readonly number[]): ProcessUsage | undefined {
  try {
    return readTreeUsage(pid, children);
  } catch {
    return undefined;
  }
}

function log(message: string): void {
  console.error(message);
}

/** Waits until other processes use under 5% of the CPUs over one second, or `maxS` passed. */
async function waitForQuiet(meter: CpuMeter, maxS: number, signal: AbortSignal): Promise<void> {
  const deadline = Date.now() + maxS * 1000;
  let waited = false;
  for (;;) {
    meter.start();
    await sleep(1000, signal);
    const { othersPct } = meter.stop();
    if (othersPct < 5) break;
    if (Date.now() >= deadline) {
      log(`  still ${fixed(othersPct, 0)}% CPU used by others after ${maxS} s: running anyway`);
      return;
    }
    if (!waited) log(`  waiting for other processes to quiet down (${fixed(othersPct, 0)}% CPU)`);
    waited = true;
  }
  if (waited) log("  quiet now");
}

async function commandOutput(program: string, args: string[]): Promise<string> {
  const out = await new Deno.Command(program, { args, stdin: "null", stdout: "piped" }).output();
  return new TextDecoder().decode(out.stdout).trim().split("\n")[0] ?? "";
}

function machineDescription(): Record<string, string | number> {
  let cpu = "unknown";
  try {
    cpu = /^model name\s*:\s*(.+)$/m.exec(Deno.readTextFileSync("/proc/cpuinfo"))?.[1] ?? cpu;
  } catch {
    // not Linux
  }
  return {
    cpus: navigator.hardwareConcurrency,
    cpu,
    memoryMiB: Math.round(Deno.systemMemoryInfo().total / 1024 / 1024),
    kernel: Deno.osRelease(),
  };
}

async function psql(program: string, socketDir: string, port: number, sql: string[]) {
  const out = await new Deno.Command(program, {
    args: [
      "-X",
      "-q",
      "-A",
      "-t",
      "-v",
      "ON_ERROR_STOP=1",
      "-h",
      socketDir,
      "-p",
      String(port),
      "-U",
      USER,
      "-d",
      DATABASE,
      ...sql.flatMap((s) => ["-c", s]),
    ],
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).output();
  if (!out.success) {
    throw new Error(`psql failed on ${sql.join("; ")}: ${new TextDecoder().decode(out.stderr)}`);
  }
  return new TextDecoder().decode(out.stdout).trim();
}

function rowFromResult(
  key: Pick<RunRow, "protocol" | "workload" | "clients" | "target">,
  result: PgbenchResult,
  cpu: CpuShare,
  pooler: UsagePerTransaction | undefined,
): RunRow {
  return {
    ...key,
    pooler,
    ourCpuPct: cpu.oursPct,
    otherCpuPct: cpu.othersPct,
    idleCpuPct: cpu.idlePct,
    tps: result.report.tps,
    meanMs: result.latency.meanMs,
    p50Ms: result.latency.p50Ms,
    p99Ms: result.latency.p99Ms,
    maxMs: result.latency.maxMs,
    transactions: result.latency.count,
    pgbenchProcessed: result.report.processed,
    pgbenchLatencyAverageMs: result.report.latencyAverageMs,
    failed: Math.max(result.report.failed, result.latency.failed),
    // pgbench exits with 1 when it cannot even connect: then no client ran at all.
    abortedClients: result.exitCode === 1 && result.report.abortedClients === 0
      ? key.clients
      : result.report.abortedClients,
    exitCode: result.exitCode,
    errors: result.report.errors,
    roundTps: [result.report.tps],
    roundP99Ms: [result.latency.p99Ms],
  };
}

/**
 * One row for the rounds of one combination: the median of TPS, mean, p50 and p99 (each over the
 * rounds), the worst max, and the sums of transactions, failures and aborted clients.
 */
function combineRounds(rounds: RunRow[]): RunRow {
  if (rounds.length === 1) return rounds[0]!;
  const of = (f: (r: RunRow) => number) => median(rounds.map(f));
  const sum = (f: (r: RunRow) => number) => rounds.reduce((a, r) => a + f(r), 0);
  return {
    ...rounds[0]!,
    tps: of((r) => r.tps),
    meanMs: of((r) => r.meanMs),
    p50Ms: of((r) => r.p50Ms),
    p99Ms: of((r) => r.p99Ms),
    maxMs: Math.max(...rounds.map((r) => r.maxMs)),
    transactions: sum((r) => r.transactions),
    pgbenchProcessed: sum((r) => r.pgbenchProcessed),
    pgbenchLatencyAverageMs: of((r) => r.pgbenchLatencyAverageMs),
    failed: sum((r) => r.failed),
    abortedClients: sum((r) => r.abortedClients),
    exitCode: Math.max(...rounds.map((r) => r.exitCode)),
    errors: rounds.flatMap((r) => r.errors),
    ourCpuPct: of((r) => r.ourCpuPct),
    otherCpuPct: Math.max(...rounds.map((r) => r.otherCpuPct)),
    idleCpuPct: of((r) => r.idleCpuPct),
    pooler: rounds.every((r) => r.pooler !== undefined)
      ? {
        userUs: of((r) => r.pooler!.userUs),
        systemUs: of((r) => r.pooler!.systemUs),
        voluntary: of((r) => r.pooler!.voluntary),
        involuntary: of((r) => r.pooler!.involuntary),
      }
      : undefined,
    roundTps: rounds.map((r) => r.tps),
    roundP99Ms: rounds.map((r) => r.p99Ms),
  };
}

/** "0.96× (95 % CI 0.921–1.004)", or the ratio alone with one round. */
function pairedText(p: PairedRatio): string {
  if (Number.isNaN(p.low)) return ratio(p.geoMean);
  // Three decimals: a bound just above 1 must not print as 1.00 next to "worse".
  return `${ratio(p.geoMean)} (95 % CI ${fixed(p.low, 3)}–${fixed(p.high, 3)})`;
}

/**
 * Tessera against PgBouncer round by round, and whether the rounds settle the question: a
 * difference whose interval holds 1 is within the machine's noise.
 */
function pairedSummary(tessera: RunRow, bouncer: RunRow): string | undefined {
  const tps = pairedRatio(tessera.roundTps, bouncer.roundTps);
  const p99 = pairedRatio(tessera.roundP99Ms, bouncer.roundP99Ms);
  if (tps.ratios.length < 2) return undefined;
  return `paired by round (${tps.ratios.length} rounds): TPS ${pairedText(tps)}, ` +
    `${pairedVerdict(tps, "higher")}; p99 ${pairedText(p99)}, ${pairedVerdict(p99, "lower")}; ` +
    `TPS ratio per round ${tps.ratios.map((r) => fixed(r, 2)).join(" ")}`;
}

function throughputTable(rows: RunRow[]): Table {
  const baseline = (row: RunRow) =>
    rows.find((r) =>
      r.target === "pgbouncer" && r.protocol === row.protocol && r.workload === row.workload &&
      r.clients === row.clients
    );
  return {
    headers: [
      "workload",
      "mode",
      "clients",
      "target",
      "TPS",
      "mean ms",
      "p99 ms",
      "failed",
      "aborted",
      "vs PgBouncer",
      "pooler CPU µs/tx",
      "switches/tx",
      "idle CPU %",
      "other CPU %",
    ],
    rows: rows.map((row) => [
      row.workload,
      row.protocol,
      String(row.clients),
      row.target,
      fixed(row.tps, 0),
      fixed(row.meanMs, 3),
      fixed(row.p99Ms, 3),
      String(row.failed),
      String(row.abortedClients),
      ratio(row.tps / (baseline(row)?.tps ?? Number.NaN)),
      row.pooler === undefined
        ? "-"
        : `${fixed(row.pooler.userUs, 0)} + ${fixed(row.pooler.systemUs, 0)}`,
      row.pooler === undefined
        ? "-"
        : `${fixed(row.pooler.voluntary, 2)} / ${fixed(row.pooler.involuntary, 2)}`,
      fixed(row.idleCpuPct, 0),
      fixed(row.otherCpuPct, 0),
    ]),
  };
}

function summary(rows: RunRow[], options: Options, tesseraMissing: string | undefined): string[] {
  const lines: string[] = [];
  const clients = options.clients.includes(50) ? 50 : undefined;
  if (clients === undefined) {
    return ["Summary: no 50-client rows in this run (add 50 to --clients)."];
  }
  for (const protocol of options.protocols) {
    for (const workload of options.workloads) {
      const find = (target: Target) =>
        rows.find((r) =>
          r.target === target && r.protocol === protocol && r.workload === workload &&
          r.clients === clients
        );
      const bouncer = find("pgbouncer");
      const tessera = find("tessera");
      const direct = find("direct");
      const head = `${workload}, ${protocol}, ${clients} clients:`;
      const parts: string[] = [];
      if (direct && bouncer) {
        parts.push(
          `PgBouncer ${fixed(bouncer.tps, 0)} tps = ${ratio(bouncer.tps / direct.tps)} direct`,
        );
      }
      if (bouncer && (bouncer.abortedClients > 0 || bouncer.failed > 0)) {
        parts.push(
          `PgBouncer had ${bouncer.failed} failed transactions and ${bouncer.abortedClients} ` +
            "aborted clients, so its figures are no baseline here",
        );
      }
      if (!bouncer) {
        parts.push("PgBouncer not measured, no target to compare with");
      } else if (!tessera) {
        parts.push(`Tessera not measured (${tesseraMissing ?? "not in --targets"})`);
      } else {
        const tpsOk = tessera.tps >= bouncer.tps;
        const p99Ok = tessera.p99Ms <= bouncer.p99Ms;
        const clean = tessera.failed === 0 && tessera.abortedClients === 0;
        parts.push(
          `Tessera ${fixed(tessera.tps, 0)} tps = ${ratio(tessera.tps / bouncer.tps)} PgBouncer ` +
            `(target ≥ 1.00×: ${tpsOk ? "met" : "NOT met"}), p99 ${fixed(tessera.p99Ms, 3)} ms ` +
            `vs ${fixed(bouncer.p99Ms, 3)} ms (target no worse: ${p99Ok ? "met" : "NOT met"})` +
            (clean ? "" : `, with ${tessera.failed} failed / ${tessera.abortedClients} aborted`),
        );
        const paired = pairedSummary(tessera, bouncer);
        if (paired !== undefined) parts.push(paired);
      }
      lines.push(`${head} ${parts.join("; ")}`);
    }
  }
  return lines;
}

function idleTable(rows: IdleRow[]): Table {
  return {
    headers: [
      "target",
      "clients",
      "failed",
      "RSS before KB",
      "RSS with clients KB",
      "per client KB",
      "held s",
      "RSS held KB",
      "per client held KB",
      "fds with clients",
      "connect s",
    ],
    rows: rows.map((r) => [
      r.target,
      String(r.connected),
      String(r.failed),
      String(r.rssBeforeKb),
      String(r.rssWithClientsKb),
      fixed(r.perClientKb, 2),
      fixed(r.heldMs / 1000, 0),
      String(r.rssHeldKb),
      fixed(r.perClientHeldKb, 2),
      String(r.fdsWithClients),
      fixed(r.connectSeconds, 1),
    ]),
  };
}

async function main(): Promise<number> {
  let options: Options | undefined;
  try {
    options = parseOptions(Deno.args);
  } catch (err) {
    console.error(`${(err as Error).message}\n\n${USAGE}`);
    return 2;
  }
  if (options === undefined) {
    console.log(USAGE);
    return 0;
  }
  const opts = options;

  // Everything that can be missing is checked before anything starts.
  const pgBindir = findPgBindir();
  const pgbench = findPgbench(pgBindir);
  const psqlBin = findBinary("psql", {
    debianPackage: "postgresql-client-15",
    dirs: [pgBindir],
  });
  const wantsBouncer = opts.targets.includes("pgbouncer");
  const pgbouncer = wantsBouncer ? findPgbouncer() : undefined;
  let tesseraMissing = opts.targets.includes("tessera") ? poolerUnavailableReason() : undefined;
  if (tesseraMissing !== undefined) log(`tessera: not available (${tesseraMissing}); skipped`);

  const ports = {
    postgres: opts.portBase,
    pgbouncer: opts.portBase + 1,
    tessera: opts.portBase + 2,
    idlePgbouncer: opts.portBase + 3,
    idleTessera: opts.portBase + 4,
  };
  for (const port of Object.values(ports)) assertPortFree(port, HOST);

  const controller = new AbortController();
  const signal = controller.signal;
  let interrupts = 0;
  const onSignal = () => {
    interrupts++;
    if (interrupts > 1) {
      log("second interrupt: exiting without cleaning up");
      Deno.exit(130);
    }
    log("interrupted: stopping everything started (interrupt again to exit at once)");
    controller.abort(new Error("interrupted"));
  };
  const signals = ["SIGINT", "SIGTERM"] as const;
  for (const s of signals) Deno.addSignalListener(s, onSignal);

  const cleanup = new CleanupStack((what, err) =>
    log(`cleanup of ${what} failed: ${(err as Error).message}`)
  );
  const runs: RunRow[] = [];
  const idle: IdleRow[] = [];
  const started = new Date();
  let exitCode = 0;
  try {
    if (opts.idleClients > 0) {
      // The servers and the client process inherit the driver's limit; each holds one
      // descriptor per idle client plus a few hundred of its own.
      const need = opts.idleClients + 1024;
      await ensureNofile(Deno.pid, need).catch((err) => {
        throw new Error(`${(err as Error).message}; lower --idle-clients`);
      });
    }
    const workDir = await Deno.makeTempDir({ prefix: "tessera-bench-pooler-" });
    cleanup.push("work directory", () => Deno.remove(workDir, { recursive: true }));

    const maxConnections = Math.max(300, ...opts.clients.map((c) => c + 20));
    const pgSettings = {
      max_connections: String(maxConnections),
      shared_buffers: "256MB",
      fsync: "off",
      synchronous_commit: "off",
      full_page_writes: "off",
    };
    log(`starting Postgres on port ${ports.postgres} (${JSON.stringify(pgSettings)})`);
    const pg = await startTestPostgres({
      port: ports.postgres,
      listenAddress: HOST,
      password: PASSWORD,
      settings: pgSettings,
    });
    cleanup.push("postgres", () => pg.cleanup());
    signal.throwIfAborted();
    const serverVersion = await psql(psqlBin, pg.socketDir, pg.port, ["SHOW server_version"]);

    const versions = {
      postgres: serverVersion,
      pgbench: await commandOutput(pgbench, ["--version"]),
      pgbouncer: pgbouncer ? await commandOutput(pgbouncer, ["--version"]) : "not used",
      deno: Deno.version.deno,
    };
    const machine = machineDescription();
    console.log(`# Tessera pooler benchmark, ${started.toISOString()}`);
    console.log(
      `machine: ${machine.cpus} CPUs (${machine.cpu}), ${machine.memoryMiB} MiB, ` +
        `Linux ${machine.kernel}`,
    );
    const loadBefore = loadAverage();
    console.log(`load average before: ${loadBefore}`);
    if (Number(loadBefore.split(" ")[0]) > 0.5) {
      console.log(
        "warning: the machine is not idle; other processes compete for its " +
          `${machine.cpus} CPUs and the figures will be noisy`,
      );
    }
    console.log(
      `versions: PostgreSQL ${versions.postgres}; ${versions.pgbench}; ${versions.pgbouncer}; ` +
        `Deno ${versions.deno}`,
    );
    console.log(
      `Postgres: max_connections=${maxConnections}, shared_buffers=256MB, fsync=off, ` +
        `synchronous_commit=off, full_page_writes=off (durability off: this measures poolers, ` +
        `not disks)`,
    );
    if (!opts.skipThroughput) {
      console.log(
        `pgbench: scale ${opts.scale}, -j ${opts.threads}, -T ${opts.durationS}, --log; ` +
          `pool size ${opts.poolSize} (PgBouncer transaction mode, default_pool_size ` +
          `${opts.poolSize}); all targets over TCP ${HOST}; poolers reach Postgres by its Unix ` +
          `socket, direct clients log in with SCRAM once per connection` +
          (opts.tesseraWorkers > 1
            ? `; Tessera as ${opts.tesseraWorkers} worker processes (--workers ` +
              `${opts.tesseraWorkers}) with ${opts.poolSize} backends in all`
            : "") +
          (opts.rounds > 1
            ? `; ${opts.rounds} rounds alternating the targets (reversed every other round), ` +
              `each figure the median over the rounds (max: the worst; failed, aborted: summed; ` +
              `other CPU: the highest)`
            : "") +
          (opts.warmupS > 0
            ? `; before each row group, an unrecorded ${opts.warmupS} s run against every target`
            : ""),
      );
    }

    let bouncer: Awaited<ReturnType<typeof startPgbouncer>> | undefined;
    let tessera: Awaited<ReturnType<typeof startTesseraPooler>> | undefined;
    const stopThroughputServers: (() => Promise<void>)[] = [];
    if (!opts.skipThroughput) {
      log(`pgbench -i -s ${opts.scale}`);
      const init = await new Deno.Command(pgbench, {
        args: ["-i", "-q", "-s", String(opts.scale), "-h", pg.socketDir, "-p", String(pg.port)]
          .concat(["-U", USER, DATABASE]),
        stdin: "null",
        stdout: "piped",
        stderr: "piped",
        signal,
      }).output();
      signal.throwIfAborted();
      if (!init.success) {
        throw new Error(`pgbench -i failed: ${new TextDecoder().decode(init.stderr)}`);
      }
      if (wantsBouncer) {
        bouncer = await startPgbouncer({
          pgbouncer: pgbouncer!,
          listenPort: ports.pgbouncer,
          pgSocketDir: pg.socketDir,
          pgPort: pg.port,
          poolSize: opts.poolSize,
          maxClientConn: Math.max(...opts.clients) + 100,
          user: USER,
          database: DATABASE,
        });
        const b = bouncer;
        stopThroughputServers.push(cleanup.push("pgbouncer", () => b.stop()));
        log(`pgbouncer pid ${bouncer.pid} on port ${bouncer.port}`);
      }
      if (opts.targets.includes("tessera") && tesseraMissing === undefined) {
        try {
          tessera = await startTesseraPooler({
            pgSocketDir: pg.socketDir,
            pgPort: pg.port,
            listenHost: HOST,
            listenPort: ports.tessera,
            poolSize: opts.poolSize,
            extraArgs: opts.tesseraWorkers > 1
              ? [...opts.tesseraArgs, "--workers", String(opts.tesseraWorkers)]
              : opts.tesseraArgs,
            logFile: `${workDir}/tessera-pooler.log`,
            user: USER,
            database: DATABASE,
          });
          const t = tessera;
          stopThroughputServers.push(cleanup.push("tessera pooler", () => t.stop()));
          log(
            `tessera pooler pid ${tessera.pid} on port ${tessera.port}` +
              (opts.tesseraWorkers > 1
                ? ` (${opts.tesseraWorkers} worker processes, pool size ${opts.poolSize} split ` +
                  `over them; CPU figures include them all)`
                : ""),
          );
        } catch (err) {
          if (!(err instanceof NotAvailableError)) throw err;
          tesseraMissing = err.message;
          log(`tessera: not available (${err.message}); skipped`);
        }
      }
      const portOf: Record<Target, number | undefined> = {
        direct: pg.port,
        pgbouncer: bouncer?.port,
        tessera: tessera?.port,
      };
      // The pooler process whose CPU each row reports (none in front of direct).
      const pidOf: Record<Target, number | undefined> = {
        direct: undefined,
        pgbouncer: bouncer?.pid,
        tessera: tessera?.pid,
      };
      const targets = opts.targets.filter((t) => portOf[t] !== undefined);
      const total = opts.protocols.length * opts.workloads.length * opts.clients.length *
        targets.length * opts.rounds;
      const perRun = opts.durationS + 4;
      const warmups = opts.warmupS > 0 ? total / opts.rounds : 0; // one per target and row group
      log(
        `${total} pgbench runs` + (warmups > 0 ? ` and ${warmups} warm-ups` : "") +
          `, about ${Math.ceil((total * perRun + warmups * (opts.warmupS + 2)) / 60)} min`,
      );
      // The driver parents pgbench and the poolers; the postmaster parents the backends.
      const postmasterPid = (await pg.instance.status()).pid;
      const meter = new CpuMeter(() => [Deno.pid, postmasterPid]);
      let n = 0;
      for (const protocol of opts.protocols) {
        for (const workload of opts.workloads) {
          for (const clients of opts.clients) {
            // Rounds alternate the targets, so that drift on the machine touches each alike:
            // every other round runs them in reverse order (A B, B A, A B, ...), so that no
            // target always runs first after the reset below.
            const byTarget = new Map<Target, RunRow[]>();
            const run = (target: Target, durationS: number, logDir: string) =>
              runPgbench({
                pgbench,
                host: HOST,
                port: portOf[target]!,
                user: USER,
                database: DATABASE,
                password: PASSWORD,
                workload,
                protocol,
                clients,
                threads: opts.threads,
                durationS,
                logDir,
                signal,
              });
            // A pooler that compiles its code as it runs (Tessera's, on V8) is slower in its first
            // seconds of a workload: every target gets the same unrecorded run first, which also
            // brings Postgres's caches to the same state for each.
            if (opts.warmupS > 0) {
              for (const target of targets) {
                signal.throwIfAborted();
                const logDir = await Deno.makeTempDir({ dir: workDir, prefix: "pgbench-warmup-" });
                const warm = await run(target, opts.warmupS, logDir);
                await Deno.remove(logDir, { recursive: true });
                log(
                  `warm-up ${workload} ${protocol} c=${clients} ${target}: ` +
                    `${fixed(warm.report.tps, 0)} tps (not recorded)` +
                    (warm.exitCode !== 0 ? `, pgbench exit code ${warm.exitCode}` : ""),
                );
              }
            }
            for (let round = 1; round <= opts.rounds; round++) {
              for (const target of roundOrder(targets, round)) {
                signal.throwIfAborted();
                n++;
                if (opts.quietWaitS > 0) await waitForQuiet(meter, opts.quietWaitS, signal);
                // What pgbench does before a run unless -n, done here directly on Postgres so
                // every target gets the same, and a pooler is never asked to run VACUUM.
                await psql(psqlBin, pg.socketDir, pg.port, [
                  "VACUUM pgbench_branches",
                  "VACUUM pgbench_tellers",
                  "TRUNCATE pgbench_history",
                  "CHECKPOINT",
                ]);
                const logDir = await Deno.makeTempDir({ dir: workDir, prefix: "pgbench-log-" });
                const poolerPid = pidOf[target];
                const workers = poolerPid === undefined ? [] : childPids(poolerPid);
                const usageBefore = poolerPid === undefined
                  ? undefined
                  : readUsage(poolerPid, workers);
                meter.start();
                const result = await run(target, opts.durationS, logDir);
                const cpu = meter.stop();
                const usageAfter = poolerPid === undefined
                  ? undefined
                  : readUsage(poolerPid, workers);
                await Deno.remove(logDir, { recursive: true });
                const pooler = usageBefore !== undefined && usageAfter !== undefined
                  ? usagePerTransaction(usageBefore, usageAfter, result.report.processed)
                  : undefined;
                const row = rowFromResult(
                  { protocol, workload, clients, target },
                  result,
                  cpu,
                  pooler,
                );
                byTarget.set(target, [...(byTarget.get(target) ?? []), row]);
                if (
                  row.transactions !== row.pgbenchProcessed && row.abortedClients === 0
                ) {
                  log(
                    `  note: ${row.transactions} transactions in the logs, pgbench reports ` +
                      `${row.pgbenchProcessed}`,
                  );
                }
                log(
                  `[${n}/${total}] ${workload} ${protocol} c=${clients} ${target}` +
                    (opts.rounds > 1 ? ` round ${round}` : "") + ": " +
                    `${fixed(row.tps, 0)} tps, mean ${fixed(row.meanMs, 3)} ms, ` +
                    `p99 ${fixed(row.p99Ms, 3)} ms, failed ${row.failed}, aborted ` +
                    `${row.abortedClients}, CPU ours ${fixed(row.ourCpuPct, 0)}% others ` +
                    `${fixed(row.otherCpuPct, 0)}% idle ${fixed(row.idleCpuPct, 0)}%` +
                    (row.errors.length > 0 ? `; errors: ${row.errors.join(" | ")}` : ""),
                );
              }
            }
            for (const target of targets) runs.push(combineRounds(byTarget.get(target)!));
          }
        }
      }
      console.log("\n## Throughput (pgbench)\n");
      console.log(formatTable(throughputTable(runs)));
      console.log(
        "\nTPS: pgbench's, without initial connection time. mean/p99: from pgbench's " +
          "per-transaction logs. failed: failed transactions; aborted: clients pgbench aborted " +
          "on an error. vs PgBouncer: TPS over PgBouncer's in the same row group. pooler CPU " +
          "µs/tx: the pooler process's user + kernel CPU per transaction (/proc/<pid>/stat, " +
          "10 ms ticks). switches/tx: its voluntary / involuntary (preempted) context switches " +
          "per transaction, all threads. idle CPU %: share of the machine's CPUs left idle " +
          "(median over the rounds; on a saturated machine, time in which everything waited, " +
          "often on the pooler). other CPU %: " +
          "share of the machine's CPUs used by processes outside this benchmark during the " +
          "run (above ~5 the row is noisy).",
      );
      const noisy = runs.filter((r) => r.otherCpuPct > 5);
      if (noisy.length > 0) {
        console.log(
          `warning: ${noisy.length} of ${runs.length} runs shared the machine with other load ` +
            `(other CPU up to ${fixed(Math.max(...noisy.map((r) => r.otherCpuPct)), 0)}%)`,
        );
      }
      console.log("\n## 50 clients: Tessera against PgBouncer\n");
      for (const line of summary(runs, opts, tesseraMissing)) console.log(`- ${line}`);
    }

    // The idle probe uses fresh poolers, so that neither the pgbench runs nor Deno's
    // never-shrinking heap colour the baseline.
    for (const stop of stopThroughputServers.reverse()) await stop();
    if (opts.idleClients > 0) {
      const probes: { target: Target; start: () => Promise<IdleServer> }[] = [];
      if (wantsBouncer) {
        probes.push({
          target: "pgbouncer",
          start: () =>
            startPgbouncer({
              pgbouncer: pgbouncer!,
              listenPort: ports.idlePgbouncer,
              pgSocketDir: pg.socketDir,
              pgPort: pg.port,
              poolSize: opts.poolSize,
              maxClientConn: opts.idleClients + 100,
              user: USER,
              database: DATABASE,
            }),
        });
      }
      if (opts.targets.includes("tessera") && poolerUnavailableReason() === undefined) {
        probes.push({
          target: "tessera",
          start: () =>
            startTesseraPooler({
              pgSocketDir: pg.socketDir,
              pgPort: pg.port,
              listenHost: HOST,
              listenPort: ports.idleTessera,
              poolSize: opts.poolSize,
              extraArgs: opts.tesseraArgs,
              logFile: `${workDir}/tessera-pooler-idle.log`,
              user: USER,
              database: DATABASE,
            }),
        });
      }
      for (const probe of probes) {
        signal.throwIfAborted();
        let server;
        try {
          server = await probe.start();
        } catch (err) {
          if (!(err instanceof NotAvailableError)) throw err;
          log(`${probe.target}: not available for the idle probe (${err.message}); skipped`);
          continue;
        }
        const stopServer = cleanup.push(`${probe.target} (idle probe)`, () => server.stop());
        const limit = await ensureNofile(server.pid, opts.idleClients + 512);
        log(
          `${probe.target}: opening ${opts.idleClients} idle clients (pid ${server.pid}, ` +
            `open-file limit ${limit})`,
        );
        const result = await measureIdleRss({
          pid: server.pid,
          host: HOST,
          port: server.port,
          count: opts.idleClients,
          user: USER,
          database: DATABASE,
          holdMs: opts.idleHoldS * 1000,
          signal,
          onProgress: (connected, failed) =>
            log(`  ${probe.target}: ${connected} connected, ${failed} failed`),
        });
        idle.push({ target: probe.target, ...result });
        log(
          `${probe.target}: ${result.connected} clients, RSS ${result.rssBeforeKb} → ` +
            `${result.rssWithClientsKb} KB, ${fixed(result.perClientKb, 2)} KB per client; ` +
            `held ${fixed(result.heldMs / 1000, 0)} s: ${result.rssHeldKb} KB, ` +
            `${fixed(result.perClientHeldKb, 2)} KB per client` +
            (result.errors.length > 0 ? `; errors: ${result.errors.join(" | ")}` : ""),
        );
        await stopServer();
      }
      if (idle.length > 0) {
        console.log(`\n## Memory with ${opts.idleClients} idle logged-in clients\n`);
        console.log(formatTable(idleTable(idle)));
        console.log(
          "\nper client KB = (RSS with clients − RSS before) / clients connected, read 3 s after " +
            "the last login; per client held KB = the same after holding the clients idle " +
            "(held s after the last login). VmRSS of the server process itself, read from " +
            "/proc/<pid>/status.",
        );
      }
    }
    if (tesseraMissing !== undefined) console.log(`\ntessera: not available (${tesseraMissing})`);

    if (opts.json !== undefined) {
      const doc = {
        startedAt: started.toISOString(),
        finishedAt: new Date().toISOString(),
        machine,
        versions,
        postgresSettings: pgSettings,
        options: opts,
        tesseraNotAvailable: tesseraMissing ?? null,
        runs,
        idle,
      };
      await Deno.writeTextFile(opts.json, JSON.stringify(doc, null, 2) + "\n");
      log(`figures written to ${opts.json}`);
    }
    console.log(`\nload average after: ${loadAverage()}`);
    const wall = (Date.now() - started.getTime()) / 1000;
    console.log(`\nwall time: ${Math.floor(wall / 60)} min ${Math.round(wall % 60)} s`);
  } catch (err) {
    exitCode = signal.aborted ? 130 : 1;
    if (!signal.aborted) console.error(`bench/pooler: ${(err as Error).message}`);
  } finally {
    await cleanup.runAll();
    for (const s of signals) Deno.removeSignalListener(s, onSignal);
  }
  return exitCode;
}

if (import.meta.main) Deno.exit(await main());
