/**
 * Starts Tessera's pooler for the benchmark the way users run it: the `deno task pooler` command
 * line from deno.json, as a direct child (see `tests/support/process.ts`), so the pid measured is
 * the pooler's own Deno process.
 *
 * @module
 */

import { checkLogin } from "../lib/pg_startup.ts";
import { sleep, stopChild } from "../lib/process.ts";
import { findServerPid } from "../lib/rss.ts";
import { startTask } from "../../tests/support/process.ts";

const ROOT = new URL("../..", import.meta.url).pathname;

/** The pooler's entry point, relative to the repository root. */
export const POOLER_ENTRY = "pooler/main.ts";

/** The pooler cannot be benchmarked: not built yet, or it failed to start or to log a client in. */
export class NotAvailableError extends Error {
  /** Creates the error; `message` says why. */
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "NotAvailableError";
  }
}

/** Options of {@linkcode startTesseraPooler}. */
export interface TesseraPoolerOptions {
  /** Postgres's Unix socket directory. */
  pgSocketDir: string;
  /** Postgres's port. */
  pgPort: number;
  /** Address to listen on, e.g. `127.0.0.1`. */
  listenHost: string;
  /** Port to listen on. */
  listenPort: number;
  /** Backends in the pool. */
  poolSize: number;
  /** Further flags passed through from `--tessera-arg`. */
  extraArgs: string[];
  /** File receiving the pooler's stdout and stderr. */
  logFile: string;
  /** User for the readiness login. */
  user: string;
  /** deno.json task to run; `pooler` when not given (another task only to test this launcher). */
  task?: string;
  /** Entry point whose process is measured; {@linkcode POOLER_ENTRY} when not given. */
  entry?: string;
  /** Database for the readiness login. */
  database: string;
}

/** A running pooler. */
export interface TesseraPooler {
  /** Pid of the pooler's Deno process. */
  pid: number;
  /** Port it listens on. */
  port: number;
  /** Its log file. */
  logFile: string;
  /** Stops it (SIGTERM, SIGKILL after 10 s). */
  stop(): Promise<void>;
}

/** Why the pooler cannot run before anything is started, or undefined when it may. */
export function poolerUnavailableReason(entry = POOLER_ENTRY): string | undefined {
  try {
    Deno.statSync(`${ROOT}/${entry}`);
    return undefined;
  } catch {
    return `${entry} does not exist yet`;
  }
}

async function logTail(file: string, lines = 10): Promise<string> {
  const text = await Deno.readTextFile(file).catch(() => "");
  return text.trimEnd().split("\n").slice(-lines).join("\n");
}

/**
 * Starts the pooler and waits (up to 30 s) until a client can log in through it. Throws
 * {@linkcode NotAvailableError} when the entry point is missing, the process exits, or no login
 * succeeds.
 */
export async function startTesseraPooler(options: TesseraPoolerOptions): Promise<TesseraPooler> {
  const entry = options.entry ?? POOLER_ENTRY;
  const missing = poolerUnavailableReason(entry);
  if (missing !== undefined) throw new NotAvailableError(missing);
  const args = [
    "--postgres-socket-dir",
    options.pgSocketDir,
    "--postgres-port",
    String(options.pgPort),
    "--listen",
    `${options.listenHost}:${options.listenPort}`,
    "--pool-size",
    String(options.poolSize),
    // PgBouncer runs with reserve_pool_size = 0: the admin reserve (2 more backends for the
    // `postgres` user, the one pgbench logs in as) would give the pooler more Postgres
    // connections than PgBouncer. A `--tessera-arg` given later overrides this.
    "--reserve-pool-size",
    "0",
    ...options.extraArgs,
  ];
  const proc = await startTask(options.task ?? "pooler", args, options.logFile, {
    ownSession: true,
  });
  const stop = async () => {
    await stopChild(proc.child, "SIGTERM", 10_000);
    await proc.stop();
  };
  let exited: Deno.CommandStatus | undefined;
  proc.child.status.then((s) => exited = s);
  const deadline = Date.now() + 30_000;
  let lastError: string | undefined = "not tried";
  while (Date.now() < deadline && exited === undefined) {
    lastError = await checkLogin({
      host: options.listenHost,
      port: options.listenPort,
      user: options.user,
      database: options.database,
      timeoutMs: 5_000,
    });
    if (lastError === undefined) break;
    await sleep(200);
  }
  if (lastError !== undefined || exited !== undefined) {
    await stop();
    const why = exited !== undefined
      ? `exited with code ${exited.code}`
      : `accepted no login within 30 s (${lastError})`;
    throw new NotAvailableError(
      `the pooler ${why}; its log ends with:\n${await logTail(options.logFile)}`,
    );
  }
  let pid: number;
  try {
    pid = findServerPid(proc.child.pid, entry, Deno.execPath());
  } catch (err) {
    await stop();
    throw err;
  }
  return { pid, port: options.listenPort, logFile: options.logFile, stop };
}
