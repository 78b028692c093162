/**
 * Runs pgbench against a target and collects what it reports: throughput from its summary,
 * latency mean and percentiles from its per-transaction logs, failed transactions and aborted
 * clients.
 *
 * @module
 */

import { type LatencySummary, summariseLatencyLogs } from "./latency_log.ts";
import { findBinary, stopChild } from "./process.ts";

/** pgbench's built-in scripts that the benchmarks use. */
export type PgbenchWorkload = "select-only" | "tpcb-like";

/** pgbench's `-M` query modes. */
export type PgbenchProtocol = "simple" | "extended" | "prepared";

/** What pgbench prints at the end of a run, parsed. */
export interface PgbenchReport {
  /** Transactions per second without the initial connection time; NaN when not printed. */
  tps: number;
  /** `number of transactions actually processed`. */
  processed: number;
  /** `number of failed transactions` (0 when the line is absent, as before PostgreSQL 15). */
  failed: number;
  /** `latency average` in ms; NaN when not printed. */
  latencyAverageMs: number;
  /** `initial connection time` in ms; NaN when not printed. */
  initialConnectionMs: number;
  /** Clients that pgbench aborted (an error other than a retryable failure ends a client). */
  abortedClients: number;
  /** Whether pgbench said the run was aborted. */
  runAborted: boolean;
  /** Up to five distinct error lines from stderr, for the report. */
  errors: string[];
}

function numberAfter(text: string, pattern: RegExp): number {
  const match = pattern.exec(text);
  return match ? Number(match[1]) : Number.NaN;
}

/** Parses pgbench's stdout and stderr (PostgreSQL 12 to 17 formats). */
export function parsePgbenchOutput(stdout: string, stderr = ""): PgbenchReport {
  const all = `${stdout}\n${stderr}`;
  let tps = numberAfter(
    all,
    /^tps = ([\d.]+) \((?:without initial connection time|excluding connections establishing)\)/m,
  );
  if (Number.isNaN(tps)) tps = numberAfter(all, /^tps = ([\d.]+)/m);
  const processed = numberAfter(all, /^number of transactions actually processed: (\d+)/m);
  const failedLine = numberAfter(all, /^number of failed transactions: (\d+)/m);
  const aborted = new Set<string>();
  for (const match of all.matchAll(/client (\d+) (?:script \d+ )?aborted/g)) aborted.add(match[1]!);
  const errors: string[] = [];
  for (const line of stderr.split("\n")) {
    const text = line.trim();
    if (!/error|fatal|aborted|could not/i.test(text)) continue;
    // Numbers that differ per client or per row are masked, so one error is kept once.
    const generic = text.replace(/^pgbench: /, "")
      .replace(/\b(client|script|command|query) \d+/g, "$1 #")
      .replace(/\b(aid|bid|tid) = \d+/g, "$1 = #")
      .replace(/"P_\d+"/g, '"P_#"');
    if (errors.length < 5 && !errors.includes(generic)) errors.push(generic);
  }
  return {
    tps,
    processed: Number.isNaN(processed) ? 0 : processed,
    failed: Number.isNaN(failedLine) ? 0 : failedLine,
    latencyAverageMs: numberAfter(all, /^latency average = ([\d.]+) ms/m),
    initialConnectionMs: numberAfter(all, /^initial connection time = ([\d.]+) ms/m),
    abortedClients: aborted.size,
    runAborted: /Run was aborted/.test(all),
    errors,
  };
}

/** One pgbench run against one target. */
export interface PgbenchRunOptions {
  /** Path of pgbench; see {@linkcode findPgbench}. */
  pgbench: string;
  /** Host name, IP or socket directory. */
  host: string;
  /** Port. */
  port: number;
  /** User name. */
  user: string;
  /** Database name. */
  database: string;
  /** Password (PGPASSWORD), when the target asks for one. */
  password?: string;
  /** Built-in script. */
  workload: PgbenchWorkload;
  /** Query mode (`-M`). */
  protocol: PgbenchProtocol;
  /** Clients (`-c`). */
  clients: number;
  /** Worker threads (`-j`); at most `clients`. */
  threads: number;
  /** Duration in seconds (`-T`). */
  durationS: number;
  /** Directory that receives the per-transaction logs; must exist and be empty. */
  logDir: string;
  /** Stops the run (pgbench is killed) when aborted. */
  signal?: AbortSignal;
}

/** The pgbench arguments (without the program) for `options`. */
export function pgbenchArgs(options: Omit<PgbenchRunOptions, "pgbench" | "signal">): string[] {
  for (
    const [name, value] of Object.entries({
      clients: options.clients,
      threads: options.threads,
      durationS: options.durationS,
    })
  ) {
    if (!Number.isInteger(value) || value <= 0) {
      throw new RangeError(`'${name}' must be a positive integer: received ${value}`);
    }
  }
  return [
    ...(options.workload === "select-only" ? ["-S"] : ["-b", "tpcb-like"]),
    "-n", // the driver vacuums before each run, directly, so every target does the same
    "-c",
    String(options.clients),
    "-j",
    String(Math.min(options.threads, options.clients)),
    "-T",
    String(options.durationS),
    "-M",
    options.protocol,
    "--log",
    `--log-prefix=${options.logDir}/pgbench_log`,
    "-h",
    options.host,
    "-p",
    String(options.port),
    "-U",
    options.user,
    options.database,
  ];
}

/** The outcome of {@linkcode runPgbench}. */
export interface PgbenchResult {
  /** pgbench's exit code (0 ok, 2 when clients aborted). */
  exitCode: number;
  /** pgbench's summary. */
  report: PgbenchReport;
  /** Latencies from the per-transaction logs. */
  latency: LatencySummary & { files: number };
  /** Full stdout, for the JSON report. */
  stdout: string;
  /** Full stderr, for the JSON report. */
  stderr: string;
}

/** Finds pgbench: Postgres's bindir first (same version as the server), then PATH. */
export function findPgbench(pgBindir?: string): string {
  return findBinary("pgbench", {
    debianPackage: "postgresql-15 (pgbench ships with the server package)",
    dirs: pgBindir ? [pgBindir] : [],
  });
}

/**
 * Runs pgbench once and reads its report and latency logs. pgbench is killed when `signal`
 * aborts, or when it runs 60 s past its duration (a hung target).
 */
export async function runPgbench(options: PgbenchRunOptions): Promise<PgbenchResult> {
  options.signal?.throwIfAborted();
  const env: Record<string, string> = { PGAPPNAME: "tessera-bench", PGCONNECT_TIMEOUT: "10" };
  if (options.password !== undefined) env.PGPASSWORD = options.password;
  const child = new Deno.Command(options.pgbench, {
    args: pgbenchArgs(options),
    env,
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const onAbort = () => void stopChild(child, "SIGINT", 2_000);
  options.signal?.addEventListener("abort", onAbort, { once: true });
  const watchdog = setTimeout(
    () => void stopChild(child, "SIGINT", 2_000),
    (options.durationS + 60) * 1000,
  );
  let output: Deno.CommandOutput;
  try {
    output = await child.output();
  } finally {
    clearTimeout(watchdog);
    options.signal?.removeEventListener("abort", onAbort);
  }
  options.signal?.throwIfAborted();
  const decoder = new TextDecoder();
  const stdout = decoder.decode(output.stdout);
  const stderr = decoder.decode(output.stderr);
  const report = parsePgbenchOutput(stdout, stderr);
  const latency = await summariseLatencyLogs(options.logDir);
  return { exitCode: output.code, report, latency, stdout, stderr };
}
