/**
 * A throwaway real Postgres for end-to-end tests and benchmarks, started through pgctld's own
 * {@linkcode PostgresInstance} (so tests exercise what users run), as the `postgres` OS user
 * when the test runs as root.
 *
 * @module
 */

import { lookupOsUser, PostgresInstance } from "../../pgctld/mod.ts";
import { Logger } from "../../shared/log/mod.ts";
import { findPgBindir } from "../../shared/pgbin/mod.ts";
import { makeSharedTempDir } from "./process.ts";

/** Options of {@linkcode startTestPostgres}. */
export interface TestPostgresOptions {
  /** Postgres port (also names the Unix socket); below 32768. */
  port: number;
  /** TCP address to listen on as well as the socket, e.g. `127.0.0.1`; none when not given. */
  listenAddress?: string;
  /** Superuser password (SCRAM over TCP; trust on the socket). */
  password?: string;
  /** Extra settings, e.g. `{ max_connections: "300" }`. */
  settings?: Record<string, string>;
}

/** A running throwaway Postgres. */
export interface TestPostgres {
  /** The managed instance. */
  instance: PostgresInstance;
  /** Folder of the Unix socket. */
  socketDir: string;
  /** Port. */
  port: number;
  /** Temporary base folder holding data, run and log folders. */
  baseDir: string;
  /** Stops Postgres (immediate) and removes every file. */
  cleanup(): Promise<void>;
}

/** Inits and starts a Postgres in a fresh temporary folder. */
export async function startTestPostgres(options: TestPostgresOptions): Promise<TestPostgres> {
  const baseDir = await makeSharedTempDir("tessera-pg-");
  const socketDir = `${baseDir}/run`;
  const instance = new PostgresInstance({
    bindir: findPgBindir(),
    dataDir: `${baseDir}/data`,
    socketDir,
    logFile: `${baseDir}/log/postgres.log`,
    port: options.port,
    listenAddress: options.listenAddress ?? "",
    osUser: Deno.uid() === 0 ? lookupOsUser("postgres") : undefined,
    logger: new Logger({ component: "test-postgres", level: "warn" }),
  });
  const cleanup = async () => {
    await instance.stop("immediate").catch(() => undefined);
    await Deno.remove(baseDir, { recursive: true }).catch(() => undefined);
  };
  try {
    await instance.init({ password: options.password });
    await instance.start({ fsync: "off", ...options.settings });
  } catch (err) {
    await cleanup();
    throw err;
  }
  return { instance, socketDir, port: options.port, baseDir, cleanup };
}
