/**
 * Sharding benchmark: what the sharded path costs against an unsharded keyspace and against
 * Postgres reached directly, on one machine, with clusters started by the launcher
 * (`deno task cluster`). See bench/sharding/README.md.
 *
 * 1. Point selects and point updates (pgbench custom scripts) against a 2-shard keyspace through
 *    the gateway, an unsharded keyspace through the gateway, and Postgres directly.
 * 2. A scatter aggregate and a GROUP BY over `--rows` rows on 1, 2 and 4 shards through the
 *    gateway, against the same rows in one plain Postgres; results are checked equal.
 *
 * `deno run --allow-all bench/sharding/main.ts [--quick] [--duration S] [--rows N]`
 *
 * @module
 */

import { parseArgs } from "node:util";
import pg from "pg";
import {
  assertPortFree,
  CleanupStack,
  CpuMeter,
  findBinary,
  findPgbench,
  fixed,
  formatMarkdownTable,
  loadAverage,
  parsePgbenchOutput,
  ratio,
  sleep,
  stopChild,
  summariseLatencyLogs,
  type Table,
} from "../lib/mod.ts";
import { cluster, type ClusterStatus, clusterStatus } from "../../tests/support/cluster.ts";
import { findPgBindir } from "../../shared/pgbin/mod.ts";
import { evenShards, parseVSchema, shardForKeyspaceId } from "../../shared/vschema/mod.ts";
import { hashInteger } from "../../gateway/sharding/mod.ts";
import { initParser, parseSql, Planner } from "../../gateway/planner/mod.ts";

const HOST = "127.0.0.1";
const USER = "postgres";
const DB = "app";
/** Password given to `postgres` on the unsharded cluster's Postgres for the direct target. */
const DIRECT_PASSWORD = "tessera-bench";
const INSERT_BATCH = 1000;

const USAGE = `Usage: deno run --allow-all bench/sharding/main.ts [options]

  --quick                 short run: pgbench -T 5, 100k rows for the aggregates, 3 runs each
  --duration S            seconds per pgbench run (default 20; 5 with --quick)
  --clients N             pgbench clients (default 50)
  --threads N             pgbench -j (default 2)
  --protocols LIST        pgbench -M modes: simple,extended (default simple)
  --accounts N            rows of 'accounts' per target (default 100000)
  --rows N                rows of 'big' for the aggregates (default 1000000; 100000 with --quick)
  --runs N                timed runs per aggregate query, median reported (default 5; 3 with --quick)
  --shard-counts LIST     shard counts for the aggregates (default 1,2,4)
  --base-port B           --base-port of the sharded clusters (default 16500)
  --unsharded-base-port B --base-port of the unsharded cluster (default 17500)
  --help                  this text`;

const PROTOCOLS = ["simple", "extended"] as const;
type Protocol = typeof PROTOCOLS[number];

interface Options {
  quick: boolean;
  durationS: number;
  clients: number;
  threads: number;
  protocols: Protocol[];
  accounts: number;
  rows: number;
  runs: number;
  shardCounts: number[];
  basePort: number;
  unshardedBasePort: number;
}

function positiveInt(name: string, raw: string): number {
  const value = Number(raw);
  if (!Number.isInteger(value) || value <= 0) {
    throw new RangeError(`'--${name}' must be a positive integer: received '${raw}'`);
  }
  return value;
}

/** Checks that every port of a cluster with `instances` Postgres at base `b` stays < 32768. */
function checkBasePort(name: string, b: number, instances: number): number {
  const d = b - 15000;
  const highest = 25432 + d + instances - 1;
  const lowest = 12379 + d;
  if (highest >= 32768 || lowest < 1024) {
    throw new RangeError(
      `'--${name}' must keep every port in 1024-32767 (Postgres of instance ${instances - 1} ` +
        `at 25432+(B-15000)+${instances - 1}): received ${b}`,
    );
  }
  return b;
}

function parseOptions(args: string[]): Options | undefined {
  const { values } = parseArgs({
    args,
    options: {
      quick: { type: "boolean", default: false },
      duration: { type: "string" },
      clients: { type: "string", default: "50" },
      threads: { type: "string", default: "2" },
      protocols: { type: "string", default: "simple" },
      accounts: { type: "string", default: "100000" },
      rows: { type: "string" },
      runs: { type: "string" },
      "shard-counts": { type: "string", default: "1,2,4" },
      "base-port": { type: "string", default: "16500" },
      "unsharded-base-port": { type: "string", default: "17500" },
      help: { type: "boolean", default: false },
    },
    strict: true,
  });
  if (values.help) return undefined;
  const quick = values.quick;
  const protocols = values.protocols.split(",").map((s) => s.trim()).filter((s) => s !== "");
  for (const p of protocols) {
    if (!PROTOCOLS.includes(p as Protocol)) {
      throw new RangeError(`'--protocols' accepts ${PROTOCOLS.join(", ")}: received '${p}'`);
    }
  }
  if (protocols.length === 0) throw new RangeError("'--protocols' must name at least one mode");
  const shardCounts = [
    ...new Set(values["shard-counts"].split(",").map((s) => positiveInt("shard-counts", s))),
  ];
  const maxShards = Math.max(2, ...shardCounts);
  return {
    quick,
    durationS: positiveInt("duration", values.duration ?? (quick ? "5" : "20")),
    clients: positiveInt("clients", values.clients),
    threads: positiveInt("threads", values.threads),
    protocols: [...new Set(protocols)] as Protocol[],
    accounts: positiveInt("accounts", values.accounts),
    rows: positiveInt("rows", values.rows ?? (quick ? "100000" : "1000000")),
    runs: positiveInt("runs", values.runs ?? (quick ? "3" : "5")),
    shardCounts,
    basePort: checkBasePort("base-port", positiveInt("base-port", values["base-port"]), maxShards),
    unshardedBasePort: checkBasePort(
      "unsharded-base-port",
      positiveInt("unsharded-base-port", values["unsharded-base-port"]),
      1,
    ),
  };
}

function log(message: string): void {
  console.error(`[${new Date().toISOString().slice(11, 19)}] ${message}`);
}

// ---------------------------------------------------------------------------- schema and data

const ACCOUNTS_DDL =
  "CREATE TABLE accounts (aid bigint PRIMARY KEY, bid int, abalance int, filler text)";
const BIG_DDL = "CREATE TABLE big (aid bigint PRIMARY KEY, bid int, abalance int, filler text)";

/** The vschema of keyspace `app`: `accounts` and `big` sharded by `hash(aid)`. */
const VSCHEMA = {
  sharded: true,
  vindexes: { hash: { type: "hash" } },
  tables: {
    accounts: { column_vindexes: [{ column: "aid", name: "hash" }] },
    big: { column_vindexes: [{ column: "aid", name: "hash" }] },
  },
};

/** `big`'s deterministic columns for row `aid` (the SQL and TS forms agree). */
function bigRow(aid: number): [number, number, number] {
  return [aid, aid % 1000, ((aid * 7919) % 20001) - 10000];
}
const BIG_SELECT_SQL = (n: number) =>
  `INSERT INTO big SELECT g, (g % 1000)::int, ((g * 7919) % 20001 - 10000)::int, 'x' ` +
  `FROM generate_series(1::bigint, ${n}::bigint) g`;

const SELECT_SCRIPT = "\\set aid random(1, :naccounts)\n" +
  "SELECT abalance FROM accounts WHERE aid = :aid;\n";
const UPDATE_SCRIPT = "\\set aid random(1, :naccounts)\n" +
  "UPDATE accounts SET abalance = abalance + 1 WHERE aid = :aid;\n";
const SCRIPTS = { select: SELECT_SCRIPT, update: UPDATE_SCRIPT } as const;
type ScriptName = keyof typeof SCRIPTS;

const AGG_QUERIES = {
  scalar: "SELECT count(*), sum(abalance), avg(abalance), min(aid), max(aid) FROM big",
  "group by": "SELECT bid % 10, count(*), sum(abalance) FROM big GROUP BY 1",
} as const;
type AggName = keyof typeof AGG_QUERIES;

// ---------------------------------------------------------------------------- clusters

interface Instance {
  alias: string;
  /** Shard range (`-80`, `80-`, `0`, `-`). */
  shard: string;
  port: number;
  socketDir: string;
}

interface Cluster {
  label: string;
  dir: string;
  gatewayPort: number;
  instances: Instance[];
  status: ClusterStatus;
  /** `down --clean`, once. */
  down: () => Promise<void>;
}

function pidOf(status: ClusterStatus, kind: string): number[] {
  return status.processes.filter((p) => p.kind === kind && p.pid !== null).map((p) => p.pid!);
}

async function postmasterPid(inst: Instance, dir: string): Promise<number | undefined> {
  try {
    const text = await Deno.readTextFile(`${dir}/${inst.alias}/data/postmaster.pid`);
    const pid = Number(text.split("\n")[0]);
    return Number.isInteger(pid) && pid > 0 ? pid : undefined;
  } catch {
    return undefined;
  }
}

async function startCluster(
  label: string,
  workDir: string,
  basePort: number,
  upArgs: string[],
  cleanup: CleanupStack,
): Promise<Cluster> {
  const d = basePort - 15000;
  for (const port of [basePort, 15432 + d, 12379 + d]) assertPortFree(port, HOST);
  const dir = `${workDir}/${label.replace(/[^a-z0-9]+/gi, "-")}`;
  let done = false;
  const down = cleanup.push(`cluster ${label}`, async () => {
    if (done) return;
    done = true;
    const r = await cluster("down", "--dir", dir, "--clean");
    if (r.code !== 0) log(`cluster ${label}: down failed:\n${r.stdout}\n${r.stderr}`);
    else log(`cluster ${label}: down --clean`);
  });
  log(`cluster ${label}: up --base-port ${basePort} ${upArgs.join(" ")}`);
  const t0 = performance.now();
  const up = await cluster("up", "--dir", dir, "--base-port", String(basePort), ...upArgs);
  if (up.code !== 0) {
    throw new Error(`cluster ${label}: up failed (${up.code}):\n${up.stdout}\n${up.stderr}`);
  }
  const status = await clusterStatus(dir);
  const instances: Instance[] = status.processes.filter((p) => p.kind === "pgctld").map((p) => {
    const alias = p.name.slice("pgctld-".length);
    return {
      alias,
      shard: alias.slice(`${DB}-`.length, alias.lastIndexOf("-")),
      port: p.ports.postgres!,
      socketDir: `${dir}/${alias}/run`,
    };
  });
  // `up` returns once every shard has a primary; orch may still be creating the database.
  for (const inst of instances) {
    const deadline = Date.now() + 60_000;
    for (;;) {
      try {
        if ((await psqlSocket(inst, "SELECT 1")) === "1") break;
      } catch (err) {
        if (Date.now() > deadline) throw err;
      }
      await sleep(250);
    }
  }
  const gw = status.processes.find((p) => p.kind === "gateway");
  if (gw === undefined || gw.ports.pg === undefined) throw new Error("status names no gateway");
  log(
    `cluster ${label}: ready in ${fixed((performance.now() - t0) / 1000, 1)} s; gateway ` +
      `${gw.ports.pg}; ${instances.map((i) => `${i.shard}@${i.port}`).join(", ")}`,
  );
  return { label, dir, gatewayPort: gw.ports.pg, instances, status, down };
}

/** psql on a shard's Postgres over its Unix socket (trust), optionally feeding `stdin`. */
async function psqlSocket(inst: Instance, sql: string, stdin?: string): Promise<string> {
  const child = new Deno.Command(`${findPgBindir()}/psql`, {
    args: ["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-h", inst.socketDir]
      .concat(["-p", String(inst.port), "-U", USER, "-d", DB, "-c", sql]),
    stdin: stdin === undefined ? "null" : "piped",
    stdout: "piped",
    stderr: "piped",
    env: { PGCONNECT_TIMEOUT: "10" },
  }).spawn();
  if (stdin !== undefined) {
    const w = child.stdin.getWriter();
    await w.write(new TextEncoder().encode(stdin));
    await w.close();
  }
  const out = await child.output();
  if (!out.success) {
    throw new Error(
      `psql on ${inst.alias} failed on ${sql}: ${new TextDecoder().decode(out.stderr)}`,
    );
  }
  return new TextDecoder().decode(out.stdout).trim();
}

async function connect(port: number, password?: string): Promise<pg.Client> {
  const client = new pg.Client({
    host: HOST,
    port,
    user: USER,
    database: DB,
    ...(password === undefined ? {} : { password }),
  });
  client.on("error", () => {});
  await client.connect();
  return client;
}

/** Runs `sql` and rethrows an error with the statement (cut to 300 characters) attached. */
async function run(client: pg.Client, sql: string, where: string): Promise<pg.QueryResult> {
  try {
    return await client.query({ text: sql, rowMode: "array" });
  } catch (err) {
    const e = err as Error & { code?: string };
    const shown = sql.length > 300 ? `${sql.slice(0, 300)}… (${sql.length} chars)` : sql;
    throw new Error(`${where}: ${e.code ?? ""} ${e.message}\n  SQL: ${shown}`);
  }
}

/** Loads `n` accounts with multi-row INSERTs of {@linkcode INSERT_BATCH}; returns rows/s. */
async function loadAccounts(client: pg.Client, n: number, where: string): Promise<number> {
  await run(client, ACCOUNTS_DDL, where);
  const filler = "'" + "f".repeat(84) + "'";
  const t0 = performance.now();
  for (let first = 1; first <= n; first += INSERT_BATCH) {
    const last = Math.min(n, first + INSERT_BATCH - 1);
    const values: string[] = [];
    for (let aid = first; aid <= last; aid++) {
      values.push(`(${aid},${Math.floor((aid - 1) / 100000) + 1},0,${filler})`);
    }
    await run(
      client,
      `INSERT INTO accounts (aid, bid, abalance, filler) VALUES ${values.join(",")}`,
      where,
    );
  }
  const rate = n / ((performance.now() - t0) / 1000);
  const count = await run(client, "SELECT count(*) AS n FROM accounts", where);
  const got = Number((count.rows as unknown[][])[0]?.[0]);
  if (got !== n) {
    throw new Error(`${where}: accounts holds ${got} rows after loading ${n}`);
  }
  await run(client, "VACUUM ANALYZE accounts", where);
  return rate;
}

// ---------------------------------------------------------------------------- pgbench

interface PgbenchRow {
  script: ScriptName;
  protocol: Protocol;
  target: string;
  tps: number;
  meanMs: number;
  p99Ms: number;
  processed: number;
  failed: number;
  aborted: number;
  errors: string[];
  /** Gateway CPU µs per transaction (gateway targets). */
  gwUsPerTx?: number;
  /** Pooler CPU (all poolers) µs per transaction (gateway targets). */
  poolerUsPerTx?: number;
  otherCpuPct: number;
}

/** utime + stime of one process, in clock ticks (100 per second). */
function processTicks(pid: number): number {
  try {
    const stat = Deno.readTextFileSync(`/proc/${pid}/stat`);
    const f = stat.slice(stat.lastIndexOf(")") + 2).split(" ").map(Number);
    return (f[11] ?? 0) + (f[12] ?? 0);
  } catch {
    return Number.NaN;
  }
}

const sumTicks = (pids: number[]) => pids.reduce((s, p) => s + processTicks(p), 0);

async function runScript(opts: {
  pgbench: string;
  workDir: string;
  port: number;
  password?: string;
  script: ScriptName;
  protocol: Protocol;
  target: string;
  o: Options;
  gatewayPids: number[];
  poolerPids: number[];
  rootPids: number[];
  signal: AbortSignal;
}): Promise<PgbenchRow> {
  const { o } = opts;
  const logDir = await Deno.makeTempDir({ dir: opts.workDir, prefix: "pgbench-log-" });
  const scriptFile = `${opts.workDir}/${opts.script}.sql`;
  await Deno.writeTextFile(scriptFile, SCRIPTS[opts.script]);
  const env: Record<string, string> = { PGAPPNAME: "tessera-bench", PGCONNECT_TIMEOUT: "10" };
  if (opts.password !== undefined) env.PGPASSWORD = opts.password;
  const args = [
    "-n",
    "-f",
    scriptFile,
    "-D",
    `naccounts=${o.accounts}`,
    "-c",
    String(o.clients),
    "-j",
    String(Math.min(o.threads, o.clients)),
    "-T",
    String(o.durationS),
    "-M",
    opts.protocol,
    "--log",
    `--log-prefix=${logDir}/pgbench_log`,
    "-h",
    HOST,
    "-p",
    String(opts.port),
    "-U",
    USER,
    DB,
  ];
  const meter = new CpuMeter(() => opts.rootPids);
  const gw0 = sumTicks(opts.gatewayPids);
  const pl0 = sumTicks(opts.poolerPids);
  meter.start();
  const child = new Deno.Command(opts.pgbench, {
    args,
    env,
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const onAbort = () => void stopChild(child, "SIGINT", 2_000);
  opts.signal.addEventListener("abort", onAbort, { once: true });
  const watchdog = setTimeout(
    () => void stopChild(child, "SIGINT", 2_000),
    (o.durationS + 60) * 1000,
  );
  let out: Deno.CommandOutput;
  try {
    out = await child.output();
  } finally {
    clearTimeout(watchdog);
    opts.signal.removeEventListener("abort", onAbort);
  }
  const cpu = meter.stop();
  const gwTicks = sumTicks(opts.gatewayPids) - gw0;
  const plTicks = sumTicks(opts.poolerPids) - pl0;
  opts.signal.throwIfAborted();
  const dec = new TextDecoder();
  const report = parsePgbenchOutput(dec.decode(out.stdout), dec.decode(out.stderr));
  const latency = await summariseLatencyLogs(logDir);
  await Deno.remove(logDir, { recursive: true });
  const perTx = (ticks: number) =>
    report.processed > 0 ? (ticks * 10_000) / report.processed : Number.NaN;
  const row: PgbenchRow = {
    script: opts.script,
    protocol: opts.protocol,
    target: opts.target,
    tps: report.tps,
    meanMs: latency.meanMs,
    p99Ms: latency.p99Ms,
    processed: report.processed,
    failed: Math.max(report.failed, latency.failed),
    aborted: out.code === 1 && report.abortedClients === 0 ? o.clients : report.abortedClients,
    errors: report.errors,
    otherCpuPct: cpu.othersPct,
  };
  if (opts.gatewayPids.length > 0) {
    row.gwUsPerTx = perTx(gwTicks);
    row.poolerUsPerTx = perTx(plTicks);
  }
  log(
    `pgbench ${opts.script} -M ${opts.protocol} ${opts.target}: ${fixed(row.tps, 0)} tps, mean ` +
      `${fixed(row.meanMs, 3)} ms, p99 ${fixed(row.p99Ms, 3)} ms, failed ${row.failed}, aborted ` +
      `${row.aborted}, other CPU ${fixed(row.otherCpuPct, 0)}%` +
      (row.errors.length > 0 ? `; errors: ${row.errors.join(" | ")}` : ""),
  );
  if (row.errors.length > 0 || out.code !== 0) {
    const stderr = dec.decode(out.stderr).trim().split("\n").slice(0, 10).join("\n");
    log(`pgbench exit ${out.code}; stderr starts:\n${stderr}`);
  }
  return row;
}

// ---------------------------------------------------------------------------- aggregates

interface AggRow {
  config: string;
  shards: string;
  query: AggName;
  timesMs: number[];
  result: string;
  error?: string;
}

function median(values: number[]): number {
  const s = [...values].sort((a, b) => a - b);
  if (s.length === 0) return Number.NaN;
  const mid = Math.floor(s.length / 2);
  return s.length % 2 === 1 ? s[mid]! : (s[mid - 1]! + s[mid]!) / 2;
}

/** Rows as text, sorted (GROUP BY order is not specified). */
function canonical(result: pg.QueryResult): string {
  return (result.rows as unknown[][]).map((r) =>
    r.map((v) => v === null ? "NULL" : String(v)).join("|")
  ).sort().join("; ");
}

async function timeAggregates(
  client: pg.Client,
  config: string,
  shards: string,
  o: Options,
): Promise<AggRow[]> {
  const rows: AggRow[] = [];
  for (const [name, sql] of Object.entries(AGG_QUERIES) as [AggName, string][]) {
    const row: AggRow = { config, shards, query: name, timesMs: [], result: "" };
    try {
      row.result = canonical(await run(client, sql, config)); // warm-up
      for (let i = 0; i < o.runs; i++) {
        const t0 = performance.now();
        const r = await run(client, sql, config);
        row.timesMs.push(performance.now() - t0);
        const text = canonical(r);
        if (text !== row.result) row.error = `results differ between runs: ${text}`;
      }
    } catch (err) {
      row.error = (err as Error).message;
      log(`aggregate ${name} on ${config} FAILED: ${row.error}`);
    }
    log(
      `aggregate ${name} on ${config}: median ${fixed(median(row.timesMs), 1)} ms ` +
        `(${row.timesMs.map((t) => fixed(t, 1)).join(", ")})`,
    );
    rows.push(row);
  }
  return rows;
}

/** Loads `big` into every shard of `c` with COPY, each row on the shard of `hash(aid)`. */
async function loadBigSharded(c: Cluster, gw: pg.Client, n: number, shardCount: number) {
  await run(gw, BIG_DDL, `${c.label} DDL through the gateway`);
  const ranges = evenShards(shardCount);
  const byShard = new Map<string, string[]>(ranges.map((r) => [r, []]));
  for (let aid = 1; aid <= n; aid++) {
    const shard = shardForKeyspaceId(ranges, hashInteger(BigInt(aid)));
    if (shard === undefined) throw new Error(`no shard for aid ${aid}`);
    const [a, b, bal] = bigRow(aid);
    byShard.get(shard)!.push(`${a},${b},${bal},x\n`);
  }
  const counts: string[] = [];
  await Promise.all(ranges.map(async (range) => {
    const inst = c.instances.find((i) => i.shard === range);
    if (inst === undefined) {
      throw new Error(
        `${c.label}: no Postgres for shard ${range} (${c.instances.map((i) => i.shard)})`,
      );
    }
    const lines = byShard.get(range)!;
    await psqlSocket(inst, "COPY big FROM STDIN (FORMAT csv)", lines.join(""));
    counts.push(`${range}: ${lines.length}`);
  }));
  log(`${c.label}: big loaded per shard (${counts.join(", ")})`);
  await run(gw, "VACUUM ANALYZE big", `${c.label} VACUUM through the gateway`);
}

// ---------------------------------------------------------------------------- planner probe

/** In-process cost of the gateway's parse + plan-cache lookup for the pgbench statements. */
export async function plannerProbe(): Promise<string[]> {
  await initParser();
  const planner = new Planner({ app: parseVSchema(VSCHEMA, DB) });
  const lines: string[] = [];
  const statements = {
    select: (aid: number) => `SELECT abalance FROM accounts WHERE aid = ${aid};`,
    update: (aid: number) => `UPDATE accounts SET abalance = abalance + 1 WHERE aid = ${aid};`,
  };
  for (const [name, make] of Object.entries(statements)) {
    const t0 = performance.now();
    const first = planner.planSql(make(1), DB)[0]!;
    const missUs = (performance.now() - t0) * 1000;
    const iterations = 5000;
    const timeLoop = (fn: (i: number) => void) => {
      const t = performance.now();
      for (let i = 0; i < iterations; i++) fn(i);
      return ((performance.now() - t) * 1000) / iterations;
    };
    let hits = 0;
    const plan = (i: number) => {
      if (planner.planSql(make(i), DB)[0]!.cached) hits++;
    };
    const parse = (i: number) => void parseSql(make(i));
    timeLoop(plan); // warm-up of both paths
    timeLoop(parse);
    hits = 0;
    let planUs = Infinity;
    let parseUs = Infinity;
    for (let round = 0; round < 3; round++) {
      planUs = Math.min(planUs, timeLoop(plan));
      parseUs = Math.min(parseUs, timeLoop(parse));
    }
    lines.push(
      `${name}: first planSql (miss, cached=${first.cached}) ${fixed(missUs, 0)} µs; then ` +
        `${hits}/${3 * iterations} cache hits at ${fixed(planUs, 1)} µs per planSql (best of 3 ` +
        `loops of ${iterations}), of which ${fixed(parseUs, 1)} µs is parseSql (libpg_query ` +
        `WASM) alone`,
    );
  }
  return lines;
}

// ---------------------------------------------------------------------------- report

function pgbenchTable(rows: PgbenchRow[]): Table {
  return {
    headers: [
      "script",
      "-M",
      "target",
      "TPS",
      "mean ms",
      "p99 ms",
      "failed",
      "aborted",
      "gw µs/tx",
      "pooler µs/tx",
      "other CPU %",
    ],
    rows: rows.map((r) => [
      r.script,
      r.protocol,
      r.target,
      fixed(r.tps, 0),
      fixed(r.meanMs, 3),
      fixed(r.p99Ms, 3),
      String(r.failed),
      String(r.aborted),
      r.gwUsPerTx === undefined ? "" : fixed(r.gwUsPerTx, 0),
      r.poolerUsPerTx === undefined ? "" : fixed(r.poolerUsPerTx, 0),
      fixed(r.otherCpuPct, 0),
    ]),
  };
}

function ratioTable(rows: PgbenchRow[], o: Options): Table {
  const out: string[][] = [];
  for (const protocol of o.protocols) {
    for (const script of Object.keys(SCRIPTS) as ScriptName[]) {
      const find = (t: string) =>
        rows.find((r) => r.target === t && r.script === script && r.protocol === protocol);
      const s = find("sharded (2)");
      const u = find("unsharded");
      const d = find("direct");
      out.push([
        script,
        protocol,
        ratio((s?.tps ?? NaN) / (u?.tps ?? NaN)),
        ratio((s?.tps ?? NaN) / (d?.tps ?? NaN)),
        ratio((u?.tps ?? NaN) / (d?.tps ?? NaN)),
        ratio((s?.p99Ms ?? NaN) / (u?.p99Ms ?? NaN)),
        ratio((s?.p99Ms ?? NaN) / (d?.p99Ms ?? NaN)),
      ]);
    }
  }
  return {
    headers: [
      "script",
      "-M",
      "TPS sharded/unsharded",
      "TPS sharded/direct",
      "TPS unsharded/direct",
      "p99 sharded/unsharded",
      "p99 sharded/direct",
    ],
    rows: out,
  };
}

function aggTable(rows: AggRow[], expected: Map<AggName, string>): {
  table: Table;
  mismatches: string[];
} {
  const mismatches: string[] = [];
  const plain = (q: AggName) => rows.find((r) => r.config === "plain Postgres" && r.query === q);
  const table: Table = {
    headers: ["query", "config", "shards", "median ms", "min ms", "max ms", "vs plain", "result"],
    rows: rows.map((r) => {
      const want = expected.get(r.query);
      let check: string;
      if (r.error !== undefined) {
        check = "ERROR";
        mismatches.push(`${r.query} on ${r.config}: ${r.error}`);
      } else if (want === undefined) {
        check = "unchecked";
      } else if (r.result === want) {
        check = "ok";
      } else {
        check = "MISMATCH";
        mismatches.push(`${r.query} on ${r.config}: got ${r.result}; plain Postgres: ${want}`);
      }
      return [
        r.query,
        r.config,
        r.shards,
        fixed(median(r.timesMs), 1),
        fixed(r.timesMs.length ? Math.min(...r.timesMs) : NaN, 1),
        fixed(r.timesMs.length ? Math.max(...r.timesMs) : NaN, 1),
        ratio(median(r.timesMs) / median(plain(r.query)?.timesMs ?? [])),
        check,
      ];
    }),
  };
  return { table, mismatches };
}

// ---------------------------------------------------------------------------- main

/** Runs the benchmark; returns the exit code. */
export async function main(args: string[] = Deno.args): Promise<number> {
  let opts: Options | undefined;
  try {
    opts = parseOptions(args);
  } catch (err) {
    console.error(`bench/sharding: ${(err as Error).message}\n\n${USAGE}`);
    return 2;
  }
  if (opts === undefined) {
    console.log(USAGE);
    return 0;
  }
  const o = opts;
  const pgbench = findPgbench(findPgBindir());
  findBinary("psql", { debianPackage: "postgresql-client", dirs: [findPgBindir()] });

  const controller = new AbortController();
  const signal = controller.signal;
  const onSignal = () => {
    log("interrupted: stopping every cluster");
    controller.abort(new Error("interrupted"));
  };
  const signals = ["SIGINT", "SIGTERM"] as const;
  for (const s of signals) Deno.addSignalListener(s, onSignal);
  const cleanup = new CleanupStack((what, err) =>
    log(`cleanup of ${what} failed: ${(err as Error).message}`)
  );
  const started = new Date();
  const pgRows: PgbenchRow[] = [];
  const aggRows: AggRow[] = [];
  const loads: string[] = [];
  const notes: string[] = [];
  let exitCode = 0;
  try {
    const workDir = await Deno.makeTempDir({ prefix: "tessera-bench-sharding-" });
    await Deno.chmod(workDir, 0o755);
    cleanup.push("work directory", () => Deno.remove(workDir, { recursive: true }));
    const vschemaFile = `${workDir}/vschema.json`;
    await Deno.writeTextFile(vschemaFile, JSON.stringify(VSCHEMA, null, 2));
    const loadAvgBefore = loadAverage();

    const pgbenchAll = async (
      c: Cluster,
      target: string,
      port: number,
      password: string | undefined,
      viaGateway: boolean,
    ) => {
      const postmasters = (await Promise.all(c.instances.map((i) => postmasterPid(i, c.dir))))
        .filter((p): p is number => p !== undefined);
      for (const protocol of o.protocols) {
        for (const script of Object.keys(SCRIPTS) as ScriptName[]) {
          signal.throwIfAborted();
          await sleep(1000, signal);
          pgRows.push(
            await runScript({
              pgbench,
              workDir,
              port,
              ...(password === undefined ? {} : { password }),
              script,
              protocol,
              target,
              o,
              gatewayPids: viaGateway ? pidOf(c.status, "gateway") : [],
              poolerPids: viaGateway ? pidOf(c.status, "pooler") : [],
              rootPids: [Deno.pid, c.status.supervisor.pid, ...postmasters],
              signal,
            }),
          );
        }
      }
    };

    const bigCounts = [...o.shardCounts].sort((a, b) => a - b);
    // Phase 1: the 2-shard cluster (pgbench, and the aggregates when 2 is asked for).
    {
      const c = await startCluster("sharded-2", workDir, o.basePort, [
        "--replicas",
        "0",
        "--shards",
        "2",
        "--vschema",
        vschemaFile,
      ], cleanup);
      const gw = await connect(c.gatewayPort);
      try {
        const rate = await loadAccounts(gw, o.accounts, "sharded (2) accounts load");
        loads.push(`accounts, sharded (2) through the gateway: ${fixed(rate, 0)} rows/s`);
        const split = await Promise.all(
          c.instances.map(async (i) =>
            `${i.shard}: ${await psqlSocket(i, "SELECT count(*) FROM accounts")}`
          ),
        );
        loads.push(`accounts per shard: ${split.join(", ")}`);
        await pgbenchAll(c, "sharded (2)", c.gatewayPort, undefined, true);
        if (bigCounts.includes(2)) {
          await loadBigSharded(c, gw, o.rows, 2);
          aggRows.push(...await timeAggregates(gw, "sharded (2)", "2", o));
        }
      } finally {
        await gw.end().catch(() => {});
      }
      await c.down();
    }
    // Phase 2: the other shard counts, aggregates only.
    for (const n of bigCounts.filter((n) => n !== 2)) {
      signal.throwIfAborted();
      let upArgs: string[];
      if (n === 1) {
        // `--shards 1` means unsharded; a one-shard sharded keyspace needs a cluster file.
        const configFile = `${workDir}/sharded1.json`;
        await Deno.writeTextFile(
          configFile,
          JSON.stringify({
            cells: ["zone1"],
            databases: [{ name: DB, durability: "none" }],
            keyspaces: [{ name: DB, database: DB, sharded: true, shards: ["-"], vschema: VSCHEMA }],
          }),
        );
        upArgs = ["--replicas", "0", "--config", configFile];
      } else {
        upArgs = ["--replicas", "0", "--shards", String(n), "--vschema", vschemaFile];
      }
      const c = await startCluster(`sharded-${n}`, workDir, o.basePort, upArgs, cleanup);
      const gw = await connect(c.gatewayPort);
      try {
        await loadBigSharded(c, gw, o.rows, n);
        aggRows.push(...await timeAggregates(gw, `sharded (${n})`, String(n), o));
      } finally {
        await gw.end().catch(() => {});
      }
      await c.down();
    }
    // Phase 3: the unsharded cluster; its Postgres is also the direct target and plain Postgres.
    {
      const c = await startCluster("unsharded", workDir, o.unshardedBasePort, [
        "--replicas",
        "0",
      ], cleanup);
      const inst = c.instances[0]!;
      await psqlSocket(inst, `ALTER ROLE ${USER} PASSWORD '${DIRECT_PASSWORD}'`);
      const gw = await connect(c.gatewayPort);
      try {
        const rate = await loadAccounts(gw, o.accounts, "unsharded accounts load");
        loads.push(`accounts, unsharded through the gateway: ${fixed(rate, 0)} rows/s`);
        await pgbenchAll(c, "unsharded", c.gatewayPort, undefined, true);
      } finally {
        await gw.end().catch(() => {});
      }
      // Direct: a fresh accounts table in a second database of the same Postgres.
      await psqlSocket(inst, "CREATE DATABASE direct");
      const direct = new pg.Client({
        host: HOST,
        port: inst.port,
        user: USER,
        database: "direct",
        password: DIRECT_PASSWORD,
      });
      direct.on("error", () => {});
      await direct.connect();
      try {
        const rate = await loadAccounts(direct, o.accounts, "direct accounts load");
        loads.push(`accounts, direct: ${fixed(rate, 0)} rows/s`);
        await direct.query("DROP TABLE accounts");
      } finally {
        await direct.end().catch(() => {});
      }
      // pgbench names database `app`: direct runs use the gateway-loaded table of the same
      // Postgres (same rows), which the unsharded runs have just updated.
      await pgbenchAll(c, "direct", inst.port, DIRECT_PASSWORD, false);
      // Aggregates: plain Postgres, then the same table through the unsharded gateway.
      const plainClient = await connect(inst.port, DIRECT_PASSWORD);
      try {
        await run(plainClient, BIG_DDL, "plain Postgres");
        const t0 = performance.now();
        await run(plainClient, BIG_SELECT_SQL(o.rows), "plain Postgres");
        loads.push(
          `big, plain Postgres INSERT ... SELECT generate_series: ` +
            `${fixed(o.rows / ((performance.now() - t0) / 1000), 0)} rows/s`,
        );
        await run(plainClient, "VACUUM ANALYZE big", "plain Postgres");
        aggRows.push(...await timeAggregates(plainClient, "plain Postgres", "–", o));
      } finally {
        await plainClient.end().catch(() => {});
      }
      const gw2 = await connect(c.gatewayPort);
      try {
        aggRows.push(...await timeAggregates(gw2, "unsharded via gateway", "0", o));
      } finally {
        await gw2.end().catch(() => {});
      }
      await c.down();
    }
    notes.push(...await plannerProbe());

    const expected = new Map<AggName, string>();
    for (const r of aggRows) {
      if (r.config === "plain Postgres" && r.error === undefined) expected.set(r.query, r.result);
    }
    const order = (r: AggRow) =>
      `${r.query === "scalar" ? 0 : 1}:${
        r.config === "plain Postgres"
          ? "0"
          : r.config.startsWith("unsharded")
          ? "1"
          : "2" + r.shards
      }`;
    aggRows.sort((a, b) => order(a).localeCompare(order(b)));
    const { table: aggT, mismatches } = aggTable(aggRows, expected);

    console.log(`# Tessera sharding benchmark, ${started.toISOString()}`);
    console.log(
      `machine: ${navigator.hardwareConcurrency} CPUs, Linux ${Deno.osRelease()}; Deno ` +
        `${Deno.version.deno}; load average before: ${loadAvgBefore}, after: ${loadAverage()}`,
    );
    console.log(
      `pgbench -n -c ${o.clients} -j ${o.threads} -T ${o.durationS} -M ` +
        `${o.protocols.join("/")}, ${o.accounts} accounts; clusters from the launcher with ` +
        `--replicas 0 (each Postgres as the launcher configures it); ${o.rows} rows in 'big', ` +
        `median of ${o.runs} runs after one warm-up${o.quick ? " (--quick)" : ""}`,
    );
    console.log("\n## Point queries (pgbench custom scripts)\n");
    console.log(formatMarkdownTable(pgbenchTable(pgRows)));
    console.log("\n" + formatMarkdownTable(ratioTable(pgRows, o)));
    console.log(
      "\nTPS from pgbench (without connection time); mean/p99 from its per-transaction logs. " +
        "gw/pooler µs/tx: CPU time of the gateway / all poolers per transaction. other CPU %: " +
        "share of the machine used by processes outside the benchmark (above ~5 the row is noisy).",
    );
    console.log(`\n## Scatter aggregates over ${o.rows} rows\n`);
    console.log(formatMarkdownTable(aggT));
    console.log(
      "\nTime: client round trip of the whole query (pg client, simple protocol), median of " +
        `${o.runs}. vs plain: median over plain Postgres's. result: rows equal to plain ` +
        "Postgres's as text (GROUP BY rows sorted).",
    );
    if (mismatches.length > 0) {
      console.log("\n**!!! RESULT MISMATCH OR ERROR !!!**\n");
      for (const m of mismatches) console.log(`- ${m}`);
      exitCode = 1;
    } else {
      console.log("\nAll aggregate results equal plain Postgres's.");
    }
    console.log("\n## Loads and planner cost\n");
    for (const l of loads) console.log(`- ${l}`);
    for (const n of notes) console.log(`- planner in-process, ${n}`);
    const failed = pgRows.filter((r) => r.failed > 0 || r.aborted > 0 || r.errors.length > 0);
    for (const r of failed) {
      console.log(
        `- pgbench ${r.script} -M ${r.protocol} ${r.target}: ${r.failed} failed, ${r.aborted} ` +
          `aborted; errors: ${r.errors.join(" | ")}`,
      );
      exitCode = 1;
    }
    const wall = (Date.now() - started.getTime()) / 1000;
    console.log(`\nwall time: ${Math.floor(wall / 60)} min ${Math.round(wall % 60)} s`);
  } catch (err) {
    exitCode = signal.aborted ? 130 : 1;
    if (!signal.aborted) console.error(`bench/sharding: ${(err as Error).message}`);
  } finally {
    await cleanup.runAll();
    for (const s of signals) Deno.removeSignalListener(s, onSignal);
  }
  return exitCode;
}

if (import.meta.main) Deno.exit(await main());
