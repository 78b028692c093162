/**
 * Builds a running pgctld from its configuration: the instance, the Connect service and the
 * status HTTP endpoints on one port.
 *
 * @module
 */

import { SqlState, TesseraError } from "../shared/errors/mod.ts";
import { createStatusApp, serveComponent, type ServedComponent } from "../shared/http/mod.ts";
import { Logger, type LogSink } from "../shared/log/mod.ts";
import { findPgBindir } from "../shared/pgbin/mod.ts";
import { createRpcHandler } from "../shared/rpc/mod.ts";
import { type PgctldConfig, readPasswordFile, resolvePaths } from "./config.ts";
import { PostgresInstance } from "./postgres/instance.ts";
import { lookupOsUser, type OsUser } from "./postgres/os_user.ts";
import { PGCTLD_VERSION, registerPgctldService } from "./service.ts";

/** A running pgctld. */
export interface Pgctld {
  /** The managed instance. */
  instance: PostgresInstance;
  /** The HTTP server (Connect + status). */
  server: ServedComponent;
  /** Stops serving. Postgres keeps running: it outlives pgctld by design. */
  shutdown(): Promise<void>;
}

function osUserFor(config: PgctldConfig, uid: number | null): OsUser | undefined {
  if (uid !== 0) return undefined;
  const user = lookupOsUser(config.osUser);
  if (user.uid === 0) {
    throw new TesseraError(
      SqlState.invalidParameterValue,
      `--os-user '${config.osUser}' is root: Postgres refuses to run as root`,
    );
  }
  return user;
}

/** Starts pgctld with `config`. */
export async function startPgctld(
  config: PgctldConfig,
  options: { sink?: LogSink } = {},
): Promise<Pgctld> {
  const logger = new Logger({
    component: "pgctld",
    alias: config.alias,
    level: config.logLevel,
    ...(options.sink ? { sink: options.sink } : {}),
  });
  const bindir = findPgBindir({ bindir: config.pgBindir });
  const { socketDir, logFile } = resolvePaths(config);
  const replicationPassword = config.replicationPasswordFile !== undefined
    ? await readPasswordFile(config.replicationPasswordFile)
    : undefined;
  const instance = new PostgresInstance({
    bindir,
    dataDir: config.dataDir,
    socketDir,
    logFile,
    port: config.pgPort,
    listenAddress: config.pgListenAddress,
    osUser: osUserFor(config, Deno.uid()),
    replicationUser: config.replicationUser,
    replicationPassword,
    logger,
  });
  const app = createStatusApp({
    component: "pgctld",
    alias: config.alias,
    ready: async () => (await instance.status()).running,
    status: async () => ({ version: PGCTLD_VERSION, postgres: await instance.status() }),
  });
  const rpc = createRpcHandler((router) => registerPgctldService(router, instance), { logger });
  const server = await serveComponent({
    hostname: config.hostname,
    port: config.port,
    app,
    rpc,
    logger,
  });
  logger.info("pgctld serving", {
    url: server.url,
    bindir,
    dataDir: config.dataDir,
    replicationUser: config.replicationUser,
    replicationPasswordFile: config.replicationPasswordFile,
  });
  return { instance, server, shutdown: () => server.shutdown() };
}
