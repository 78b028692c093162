/**
 * The pooler's configuration: flags, environment fallbacks and defaults that work for the local
 * cluster and for a standalone drop-in PgBouncer replacement.
 *
 * @module
 */

import { z } from "zod";
import {
  absolutePathSchema,
  type ConfigSpec,
  hostPortSchema,
  nonNegativeIntSchema,
  portSchema,
  positiveIntSchema,
} from "../shared/config/mod.ts";

/** Schema of the pooler's configuration. */
export const poolerConfigSchema = z.object({
  alias: z.string().min(1).default("pooler"),
  listen: z.array(hostPortSchema).default(["127.0.0.1:16000"]),
  unixSocketDir: absolutePathSchema.optional(),
  httpListen: hostPortSchema.default("127.0.0.1:16100"),
  postgresSocketDir: absolutePathSchema.optional(),
  postgresHost: z.string().min(1).optional(),
  postgresPort: portSchema.default(25432),
  postgresPassword: z.string().optional(),
  controlUser: z.string().min(1).default("postgres"),
  poolSize: positiveIntSchema.default(20),
  minPoolSize: nonNegativeIntSchema.default(0),
  reservePoolSize: nonNegativeIntSchema.default(2),
  adminUsers: z.array(z.string().min(1)).default(["postgres"]),
  maxClientConn: positiveIntSchema.default(10000),
  idleTimeout: nonNegativeIntSchema.default(300),
  idleTransactionTimeout: nonNegativeIntSchema.default(0),
  maxLifetime: nonNegativeIntSchema.default(3600),
  queueTimeout: nonNegativeIntSchema.default(30),
  preparedCacheSize: positiveIntSchema.default(256),
  deferBegin: z.enum(["on", "off"]).default("on"),
  drainTimeout: nonNegativeIntSchema.default(30),
  workers: z.coerce.number().int().min(1).max(64).default(1),
  io: z.enum(["auto", "fast", "deno"]).default("auto"),
  auth: z.enum(["trust", "scram-sha-256"]).default("trust"),
  authFile: absolutePathSchema.optional(),
  authQuery: z.string().refine((q) => q.includes("$1"), "must use $1 for the user name")
    .optional(),
  tlsCert: absolutePathSchema.optional(),
  tlsKey: absolutePathSchema.optional(),
  topoEndpoints: z.array(z.string().url()).default([]),
  topoRoot: z.string().startsWith("/").default("/tessera"),
  leaseTtl: z.coerce.number().int().min(2).max(300).default(10),
  cell: z.string().min(1).default("zone1"),
  keyspace: z.string().default(""),
  shard: z.string().default(""),
  type: z.enum(["primary", "replica", "rdonly", "unknown"]).default("unknown"),
  tags: z.array(z.string().min(1)).default([]),
  pgctldAddress: hostPortSchema.optional(),
  logLevel: z.enum(["debug", "info", "warn", "error"]).default("info"),
}).superRefine((c, ctx) => {
  if (c.postgresSocketDir === undefined && c.postgresHost === undefined) {
    ctx.addIssue({
      code: "custom",
      path: ["postgresSocketDir"],
      message: "give --postgres-socket-dir (or --postgres-host for TCP)",
    });
  }
  if (c.minPoolSize > c.poolSize) {
    ctx.addIssue({
      code: "custom",
      path: ["minPoolSize"],
      message: `must not exceed --pool-size (${c.poolSize})`,
    });
  }
  if (c.workers > c.poolSize) {
    ctx.addIssue({
      code: "custom",
      path: ["workers"],
      message: `must not exceed --pool-size (${c.poolSize}): each worker needs a backend`,
    });
  }
  if (c.workers > 1 && c.io === "deno") {
    ctx.addIssue({
      code: "custom",
      path: ["workers"],
      message: "more than one worker needs the fast socket path (--io auto or fast)",
    });
  }
  if ((c.tlsCert === undefined) !== (c.tlsKey === undefined)) {
    ctx.addIssue({
      code: "custom",
      path: ["tlsCert"],
      message: "give both --tls-cert and --tls-key",
    });
  }
  if (
    c.auth === "scram-sha-256" && c.authFile === undefined && c.authQuery === undefined &&
    c.topoEndpoints.length === 0
  ) {
    ctx.addIssue({
      code: "custom",
      path: ["authFile"],
      message: "scram-sha-256 needs users: give --auth-file, --auth-query or --topo-endpoints",
    });
  }
  if (c.topoEndpoints.length > 0 && (c.keyspace === "" || c.shard === "")) {
    ctx.addIssue({
      code: "custom",
      path: ["keyspace"],
      message: "a pooler in a cluster needs --keyspace and --shard",
    });
  }
});

/** The pooler's configuration as read from flags and environment. */
export type PoolerConfig = z.infer<typeof poolerConfigSchema>;

/** How each field of {@linkcode PoolerConfig} is given. */
export const poolerConfigSpec: ConfigSpec<typeof poolerConfigSchema> = {
  program: "pooler",
  schema: poolerConfigSchema,
  fields: {
    alias: { flag: "alias", env: "POOLER_ALIAS", description: "name of this pooler (topo, logs)" },
    listen: {
      flag: "listen",
      env: "POOLER_LISTEN",
      multiple: true,
      description: "HOST:PORT for Postgres clients, repeatable (default 127.0.0.1:16000)",
    },
    unixSocketDir: {
      flag: "unix-socket-dir",
      env: "POOLER_UNIX_SOCKET_DIR",
      description: "also listen on DIR/.s.PGSQL.<port of the first --listen>",
    },
    httpListen: {
      flag: "http-listen",
      env: "POOLER_HTTP_LISTEN",
      description: "HOST:PORT of the Connect + status server (default 127.0.0.1:16100)",
    },
    postgresSocketDir: {
      flag: "postgres-socket-dir",
      env: "POOLER_POSTGRES_SOCKET_DIR",
      description: "Unix socket folder of the Postgres this pooler owns",
    },
    postgresHost: {
      flag: "postgres-host",
      env: "POOLER_POSTGRES_HOST",
      description: "reach Postgres over TCP at this host instead of the socket",
    },
    postgresPort: {
      flag: "postgres-port",
      env: "POOLER_POSTGRES_PORT",
      description: "Postgres port (default 25432)",
    },
    postgresPassword: {
      flag: "postgres-password",
      env: "POOLER_POSTGRES_PASSWORD",
      description: "password for backends when Postgres asks for one (prefer the env variable)",
    },
    controlUser: {
      flag: "control-user",
      env: "POOLER_CONTROL_USER",
      description: "Postgres user of the status probe connection (default postgres)",
    },
    poolSize: {
      flag: "pool-size",
      env: "POOLER_POOL_SIZE",
      description: "most backends per user and database (default 20)",
    },
    minPoolSize: {
      flag: "min-pool-size",
      env: "POOLER_MIN_POOL_SIZE",
      description: "backends kept open per pool even when idle (default 0)",
    },
    reservePoolSize: {
      flag: "reserve-pool-size",
      env: "POOLER_RESERVE_POOL_SIZE",
      description: "extra backends only admin users may take when a pool is full (default 2)",
    },
    adminUsers: {
      flag: "admin-user",
      env: "POOLER_ADMIN_USERS",
      multiple: true,
      description:
        "users that may use the reserve and open the admin console, repeatable (default postgres)",
    },
    maxClientConn: {
      flag: "max-client-conn",
      env: "POOLER_MAX_CLIENT_CONN",
      description: "most client connections (default 10000)",
    },
    idleTimeout: {
      flag: "idle-timeout",
      env: "POOLER_IDLE_TIMEOUT",
      description: "seconds before an idle backend above the minimum is closed (default 300)",
    },
    idleTransactionTimeout: {
      flag: "idle-transaction-timeout",
      env: "POOLER_IDLE_TRANSACTION_TIMEOUT",
      description:
        "seconds a client may hold a backend idle in a transaction before it is closed (25P03) " +
        "and its transaction rolled back (default 0: never)",
    },
    maxLifetime: {
      flag: "max-lifetime",
      env: "POOLER_MAX_LIFETIME",
      description: "seconds after which a backend is replaced when next idle (default 3600)",
    },
    queueTimeout: {
      flag: "queue-timeout",
      env: "POOLER_QUEUE_TIMEOUT",
      description: "seconds a client waits for a backend before SQLSTATE 53300 (default 30)",
    },
    preparedCacheSize: {
      flag: "prepared-cache-size",
      env: "POOLER_PREPARED_CACHE_SIZE",
      description: "prepared statements kept per backend (default 256)",
    },
    deferBegin: {
      flag: "defer-begin",
      env: "POOLER_DEFER_BEGIN",
      description:
        "on: a plain BEGIN is answered at once and sent with the transaction's first statement (in front of a simple query's text, as one message); off: sent when received (default on)",
    },
    drainTimeout: {
      flag: "drain-timeout",
      env: "POOLER_DRAIN_TIMEOUT",
      description:
        "seconds a shutdown waits for transactions in flight before closing their clients (default 30)",
    },
    workers: {
      flag: "workers",
      env: "POOLER_WORKERS",
      description:
        "processes serving clients together: the first accepts every TCP connection and hands them out in turn; each has its share of the pool sizes and client limit; only the first serves HTTP, the Unix socket and topo (default 1)",
    },
    io: {
      flag: "io",
      env: "POOLER_IO",
      description:
        "socket I/O: fast (epoll through libc, needs --allow-ffi on Linux), deno (Deno's own), auto (fast when it can; default)",
    },
    auth: {
      flag: "auth",
      env: "POOLER_AUTH",
      description: "client authentication over TCP: trust or scram-sha-256 (default trust)",
    },
    authFile: {
      flag: "auth-file",
      env: "POOLER_AUTH_FILE",
      description: 'JSON users file: {"users":[{"name":..,"scramVerifier":..}]}',
    },
    authQuery: {
      flag: "auth-query",
      env: "POOLER_AUTH_QUERY",
      description:
        "SQL reading a user's SCRAM verifier from Postgres (2nd column; $1: the user), " +
        "run as --control-user for users not in --auth-file",
    },
    tlsCert: { flag: "tls-cert", env: "POOLER_TLS_CERT", description: "PEM certificate for TLS" },
    tlsKey: { flag: "tls-key", env: "POOLER_TLS_KEY", description: "PEM private key for TLS" },
    topoEndpoints: {
      flag: "topo-endpoint",
      env: "TOPO_ENDPOINTS",
      multiple: true,
      description: "etcd URL, repeatable; none runs the pooler standalone",
    },
    topoRoot: { flag: "topo-root", env: "TOPO_ROOT", description: "topo root (default /tessera)" },
    leaseTtl: {
      flag: "lease-ttl",
      env: "POOLER_LEASE_TTL",
      description: "seconds the topo record outlives a dead pooler (default 10)",
    },
    cell: { flag: "cell", env: "POOLER_CELL", description: "cell of this pooler (default zone1)" },
    keyspace: { flag: "keyspace", env: "POOLER_KEYSPACE", description: "keyspace served" },
    shard: { flag: "shard", env: "POOLER_SHARD", description: "shard served, e.g. 0 or -80" },
    type: {
      flag: "type",
      env: "POOLER_TYPE",
      description: "primary, replica, rdonly (default unknown: read from Postgres)",
    },
    tags: { flag: "tag", env: "POOLER_TAGS", multiple: true, description: "tag, repeatable" },
    pgctldAddress: {
      flag: "pgctld-address",
      env: "POOLER_PGCTLD_ADDRESS",
      description:
        "HOST:PORT of the pgctld owning this Postgres (enables init, replication, promote)",
    },
    logLevel: {
      flag: "log-level",
      env: "POOLER_LOG_LEVEL",
      description: "debug, info, warn, error",
    },
  },
};
