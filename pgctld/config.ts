/**
 * pgctld's configuration: flags, environment fallbacks and defaults for the local cluster.
 *
 * @module
 */

import { dirname } from "node:path";
import { z } from "zod";
import { SqlState, TesseraError } from "../shared/errors/mod.ts";
import { absolutePathSchema, type ConfigSpec, portSchema } from "../shared/config/mod.ts";

/** Schema of pgctld's configuration. */
export const pgctldConfigSchema = z.object({
  alias: z.string().min(1).default("pgctld"),
  hostname: z.string().min(1).default("127.0.0.1"),
  port: portSchema.default(17100),
  dataDir: absolutePathSchema,
  socketDir: absolutePathSchema.optional(),
  logFile: absolutePathSchema.optional(),
  pgPort: portSchema.default(25432),
  pgListenAddress: z.string().regex(/^[0-9A-Za-z.:*,\- ]*$/, "must be a list of addresses")
    .default(""),
  pgBindir: z.string().optional(),
  osUser: z.string().min(1).default("postgres"),
  replicationUser: z.string().regex(/^[A-Za-z_][A-Za-z0-9_]*$/, "must be a plain role name")
    .max(63).default("tessera_repl"),
  replicationPasswordFile: absolutePathSchema.optional(),
  logLevel: z.enum(["debug", "info", "warn", "error"]).default("info"),
});

/** pgctld's configuration as read from flags and environment. */
export type PgctldConfig = z.infer<typeof pgctldConfigSchema>;

/** How each field of {@linkcode PgctldConfig} is given. */
export const pgctldConfigSpec: ConfigSpec<typeof pgctldConfigSchema> = {
  program: "pgctld",
  schema: pgctldConfigSchema,
  fields: {
    alias: { flag: "alias", env: "PGCTLD_ALIAS", description: "name of this pgctld in logs" },
    hostname: {
      flag: "hostname",
      env: "PGCTLD_HOSTNAME",
      description: "address of the Connect + status HTTP server (default 127.0.0.1)",
    },
    port: {
      flag: "port",
      env: "PGCTLD_PORT",
      description: "port of the Connect + status HTTP server (default 17100)",
    },
    dataDir: { flag: "data-dir", env: "PGCTLD_DATA_DIR", description: "Postgres data directory" },
    socketDir: {
      flag: "socket-dir",
      env: "PGCTLD_SOCKET_DIR",
      description: "folder of Postgres's Unix socket (default: <data-dir>/../run)",
    },
    logFile: {
      flag: "log-file",
      env: "PGCTLD_LOG_FILE",
      description: "Postgres server log (default: <data-dir>/../log/postgres.log)",
    },
    pgPort: {
      flag: "pg-port",
      env: "PGCTLD_PG_PORT",
      description: "Postgres port (default 25432)",
    },
    pgListenAddress: {
      flag: "pg-listen-address",
      env: "PGCTLD_PG_LISTEN_ADDRESS",
      description: "TCP addresses for Postgres, e.g. 127.0.0.1 (default: Unix socket only)",
    },
    pgBindir: {
      flag: "pg-bindir",
      env: "PG_BINDIR",
      description: "folder of the Postgres binaries (default: PATH, /usr/lib/postgresql/*/bin)",
    },
    osUser: {
      flag: "os-user",
      env: "PGCTLD_OS_USER",
      description: "OS user that runs Postgres when pgctld runs as root (default postgres)",
    },
    replicationUser: {
      flag: "replication-user",
      env: "PGCTLD_REPLICATION_USER",
      description: "role that replicas stream as (default tessera_repl)",
    },
    replicationPasswordFile: {
      flag: "replication-password-file",
      env: "PGCTLD_REPLICATION_PASSWORD_FILE",
      description: "file holding the replication role's password (default: none)",
    },
    logLevel: {
      flag: "log-level",
      env: "PGCTLD_LOG_LEVEL",
      description: "debug, info, warn, error",
    },
  },
};

/** Fills the directories that default relative to the data directory. */
export function resolvePaths(config: PgctldConfig): { socketDir: string; logFile: string } {
  const parent = dirname(config.dataDir);
  return {
    socketDir: config.socketDir ?? `${parent}/run`,
    logFile: config.logFile ?? `${parent}/log/postgres.log`,
  };
}

/**
 * Reads the replication password from `path`: the file's content without its trailing line
 * break. Throws a F0000 error naming the file when it cannot be read or holds no password.
 */
export async function readPasswordFile(path: string): Promise<string> {
  let text: string;
  try {
    text = await Deno.readTextFile(path);
  } catch (err) {
    throw new TesseraError(
      SqlState.configFileError,
      `--replication-password-file: cannot read '${path}': ${(err as Error).message}`,
    );
  }
  const password = text.replace(/\r?\n$/, "");
  if (password === "" || /[\n\r\0]/.test(password)) {
    throw new TesseraError(
      SqlState.configFileError,
      `--replication-password-file: '${path}' must hold one non-empty line`,
    );
  }
  return password;
}
