/**
 * Starts a throwaway PgBouncer in front of a Postgres Unix socket, for comparison benchmarks.
 * PgBouncer refuses to run as root, so when the driver is root it runs as an unprivileged OS
 * user (Postgres's) with its configuration, log and pid files in a temporary folder that user
 * owns. It runs in the foreground, so the child's pid is PgBouncer's own.
 *
 * @module
 */

import { lookupOsUser } from "../../pgctld/mod.ts";
import { checkLogin } from "./pg_startup.ts";
import { findBinary, sleep, stopChild } from "./process.ts";

/** What the PgBouncer configuration says. */
export interface PgbouncerConfig {
  /** Address to listen on, e.g. `127.0.0.1`. */
  listenAddr: string;
  /** Port to listen on (below 32768). */
  listenPort: number;
  /** Postgres's Unix socket directory. */
  pgSocketDir: string;
  /** Postgres's port. */
  pgPort: number;
  /** Server connections per (user, database) pool: `default_pool_size`. */
  poolSize: number;
  /** Most client connections: `max_client_conn`. */
  maxClientConn: number;
  /** Folder of the log, pid and auth files. */
  dir: string;
  /** User allowed to log in (trust); `postgres` when not given. */
  user?: string;
  /** `pool_mode`; `transaction` when not given. */
  poolMode?: "session" | "transaction" | "statement";
}

/** The text of `pgbouncer.ini` and of its `userlist.txt` for `config`. */
export function renderPgbouncerConfig(config: PgbouncerConfig): { ini: string; userlist: string } {
  if (!Number.isInteger(config.poolSize) || config.poolSize <= 0) {
    throw new RangeError(`'poolSize' must be a positive integer: received ${config.poolSize}`);
  }
  const user = config.user ?? "postgres";
  const ini = [
    "[databases]",
    `* = host=${config.pgSocketDir} port=${config.pgPort}`,
    "",
    "[pgbouncer]",
    `listen_addr = ${config.listenAddr}`,
    `listen_port = ${config.listenPort}`,
    // No Unix socket: the benchmark compares TCP front ends only.
    "unix_socket_dir =",
    "auth_type = trust",
    `auth_file = ${config.dir}/userlist.txt`,
    `pool_mode = ${config.poolMode ?? "transaction"}`,
    `default_pool_size = ${config.poolSize}`,
    "min_pool_size = 0",
    "reserve_pool_size = 0",
    "max_db_connections = 0",
    `max_client_conn = ${config.maxClientConn}`,
    "listen_backlog = 4096",
    `logfile = ${config.dir}/pgbouncer.log`,
    `pidfile = ${config.dir}/pgbouncer.pid`,
    `admin_users = ${user}`,
    "log_connections = 0",
    "log_disconnections = 0",
    "log_pooler_errors = 1",
    "stats_period = 60",
    "ignore_startup_parameters = extra_float_digits",
    "",
  ].join("\n");
  return { ini, userlist: `"${user}" ""\n` };
}

/** A running PgBouncer. */
export interface PgbouncerProcess {
  /** PgBouncer's own pid. */
  pid: number;
  /** Port it listens on. */
  port: number;
  /** Its log file. */
  logFile: string;
  /** Stops it (SIGTERM: immediate shutdown in 1.18; SIGKILL after 5 s) and removes its files. */
  stop(): Promise<void>;
}

/** Options of {@linkcode startPgbouncer}. */
export interface StartPgbouncerOptions
  extends Omit<PgbouncerConfig, "dir" | "listenAddr" | "poolMode"> {
  /** Address to listen on; `127.0.0.1` when not given. */
  listenAddr?: string;
  /** Path of the binary; found on PATH or in /usr/sbin when not given. */
  pgbouncer?: string;
  /** Database used for the readiness check; `postgres` when not given. */
  database?: string;
}

/** Finds PgBouncer (Debian installs it in /usr/sbin, which is not on every PATH). */
export function findPgbouncer(): string {
  return findBinary("pgbouncer", { debianPackage: "pgbouncer", dirs: ["/usr/sbin"] });
}

/**
 * Writes a configuration into a fresh temporary folder, starts PgBouncer and waits until a
 * client can log in through it (which also opens its first server connection).
 */
export async function startPgbouncer(options: StartPgbouncerOptions): Promise<PgbouncerProcess> {
  const program = options.pgbouncer ?? findPgbouncer();
  const user = options.user ?? "postgres";
  const osUser = Deno.uid() === 0 ? lookupOsUser("postgres") : undefined;
  const dir = await Deno.makeTempDir({ prefix: "tessera-bench-pgbouncer-" });
  const removeDir = () => Deno.remove(dir, { recursive: true }).catch(() => undefined);
  const listenAddr = options.listenAddr ?? "127.0.0.1";
  const { ini, userlist } = renderPgbouncerConfig({ ...options, listenAddr, dir, user });
  const iniFile = `${dir}/pgbouncer.ini`;
  await Deno.writeTextFile(iniFile, ini);
  await Deno.writeTextFile(`${dir}/userlist.txt`, userlist);
  if (osUser !== undefined) {
    for (const path of [dir, iniFile, `${dir}/userlist.txt`]) {
      await Deno.chown(path, osUser.uid, osUser.gid);
    }
  }
  const logFile = `${dir}/pgbouncer.log`;
  let child: Deno.ChildProcess;
  try {
    child = new Deno.Command(program, {
      args: [iniFile],
      cwd: dir,
      stdin: "null",
      stdout: "null",
      stderr: "piped",
      // A session of its own, as a service: see StartTaskOptions.ownSession.
      detached: true,
      ...(osUser !== undefined ? { uid: osUser.uid, gid: osUser.gid } : {}),
    }).spawn();
  } catch (err) {
    await removeDir();
    throw new Error(`could not start '${program}': ${(err as Error).message}`, { cause: err });
  }
  const stderrText = new Response(child.stderr).text();
  const stop = async () => {
    await stopChild(child, "SIGTERM", 5_000);
    await stderrText.catch(() => undefined);
    await removeDir();
  };
  let exited = false;
  child.status.then(() => exited = true);
  const deadline = Date.now() + 15_000;
  let lastError: string | undefined = "not tried";
  while (Date.now() < deadline && !exited) {
    lastError = await checkLogin({
      host: listenAddr,
      port: options.listenPort,
      user,
      database: options.database ?? "postgres",
      timeoutMs: 5_000,
    });
    if (lastError === undefined) {
      return { pid: child.pid, port: options.listenPort, logFile, stop };
    }
    await sleep(100);
  }
  const log = await Deno.readTextFile(logFile).catch(() => "");
  await stop();
  const tail = [(await stderrText.catch(() => "")).trim(), log.trim()].filter((s) => s !== "")
    .join("\n").split("\n").slice(-8).join("\n");
  throw new Error(
    `pgbouncer ${exited ? "exited" : "did not accept logins within 15 s"} (${lastError}):\n${tail}`,
  );
}
