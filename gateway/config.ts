/**
 * The gateway's configuration: flags, environment fallbacks and defaults that work for the local
 * cluster.
 *
 * @module
 */

import { z } from "zod";
import {
  absolutePathSchema,
  type ConfigSpec,
  hostPortSchema,
  nonNegativeIntSchema,
  positiveIntSchema,
} from "../shared/config/mod.ts";

/** Schema of the gateway's configuration. */
export const gatewayConfigSchema = z.object({
  alias: z.string().regex(/^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$/, "must be a topo name")
    .default("gateway"),
  listen: z.array(hostPortSchema).min(1).default(["127.0.0.1:15432"]),
  httpListen: hostPortSchema.default("127.0.0.1:15100"),
  topoEndpoints: z.array(z.string().url()).min(1, "give at least one --topo-endpoint"),
  topoRoot: z.string().startsWith("/").default("/tessera"),
  cell: z.string().min(1).default("zone1"),
  leaseTtl: z.coerce.number().int().min(2).max(300).default(10),
  auth: z.enum(["trust", "scram-sha-256"]).default("trust"),
  tlsCert: absolutePathSchema.optional(),
  tlsKey: absolutePathSchema.optional(),
  requireTls: z.boolean().default(false),
  maxClientConn: positiveIntSchema.default(10000),
  maxConnPerUser: nonNegativeIntSchema.default(0),
  poolSizePerPooler: positiveIntSchema.default(1000),
  queueTimeout: nonNegativeIntSchema.default(30),
  bufferWindow: z.coerce.number().min(0).max(3600).default(10),
  maxBuffered: nonNegativeIntSchema.default(1000),
  maxResultBytes: positiveIntSchema.default(128 * 1024 * 1024),
  replicaFallback: z.boolean().default(false),
  poolerPassword: z.string().optional(),
  poolerChannel: z.enum(["mux", "direct"]).default("mux"),
  deferBegin: z.enum(["on", "off"]).default("on"),
  logLevel: z.enum(["debug", "info", "warn", "error"]).default("info"),
}).superRefine((c, ctx) => {
  if ((c.tlsCert === undefined) !== (c.tlsKey === undefined)) {
    ctx.addIssue({
      code: "custom",
      path: ["tlsCert"],
      message: "give both --tls-cert and --tls-key",
    });
  }
  if (c.requireTls && c.tlsCert === undefined) {
    ctx.addIssue({
      code: "custom",
      path: ["requireTls"],
      message: "needs --tls-cert and --tls-key",
    });
  }
});

/** The gateway's configuration as read from flags and environment. */
export type GatewayConfig = z.infer<typeof gatewayConfigSchema>;

/** How each field of {@linkcode GatewayConfig} is given. */
export const gatewayConfigSpec: ConfigSpec<typeof gatewayConfigSchema> = {
  program: "gateway",
  schema: gatewayConfigSchema,
  fields: {
    alias: {
      flag: "alias",
      env: "GATEWAY_ALIAS",
      description: "name of this gateway (topo, logs)",
    },
    listen: {
      flag: "listen",
      env: "GATEWAY_LISTEN",
      multiple: true,
      description: "HOST:PORT for Postgres clients, repeatable (default 127.0.0.1:15432)",
    },
    httpListen: {
      flag: "http-listen",
      env: "GATEWAY_HTTP_LISTEN",
      description: "HOST:PORT of the Connect + status server (default 127.0.0.1:15100)",
    },
    topoEndpoints: {
      flag: "topo-endpoint",
      env: "TOPO_ENDPOINTS",
      multiple: true,
      description: "etcd URL of the global topo, repeatable (required)",
    },
    topoRoot: { flag: "topo-root", env: "TOPO_ROOT", description: "topo root (default /tessera)" },
    cell: {
      flag: "cell",
      env: "GATEWAY_CELL",
      description: "cell of this gateway (default zone1)",
    },
    leaseTtl: {
      flag: "lease-ttl",
      env: "GATEWAY_LEASE_TTL",
      description: "seconds the topo record outlives a dead gateway (default 10)",
    },
    auth: {
      flag: "auth",
      env: "GATEWAY_AUTH",
      description: "client authentication: trust or scram-sha-256 (users from topo; default trust)",
    },
    tlsCert: { flag: "tls-cert", env: "GATEWAY_TLS_CERT", description: "PEM certificate for TLS" },
    tlsKey: { flag: "tls-key", env: "GATEWAY_TLS_KEY", description: "PEM private key for TLS" },
    requireTls: {
      flag: "require-tls",
      env: "GATEWAY_REQUIRE_TLS",
      type: "boolean",
      description: "refuse TCP clients that do not use TLS",
    },
    maxClientConn: {
      flag: "max-client-conn",
      env: "GATEWAY_MAX_CLIENT_CONN",
      description: "most client connections (default 10000)",
    },
    maxConnPerUser: {
      flag: "max-conn-per-user",
      env: "GATEWAY_MAX_CONN_PER_USER",
      description: "most client connections per user, 0 for no limit (default 0)",
    },
    poolSizePerPooler: {
      flag: "pool-size-per-pooler",
      env: "GATEWAY_POOL_SIZE_PER_POOLER",
      description:
        "sessions this gateway has open on each pooler per user and keyspace at once (default 1000; the pooler pools them onto its backends)",
    },
    queueTimeout: {
      flag: "queue-timeout",
      env: "GATEWAY_QUEUE_TIMEOUT",
      description: "seconds a transaction waits for a pooler connection before 53300 (default 30)",
    },
    bufferWindow: {
      flag: "buffer-window",
      env: "GATEWAY_BUFFER_WINDOW",
      description: "seconds a query waits for a serving pooler during failover (default 10)",
    },
    maxBuffered: {
      flag: "max-buffered",
      env: "GATEWAY_MAX_BUFFERED",
      description: "most queries waiting for a serving pooler; beyond it 53300 (default 1000)",
    },
    maxResultBytes: {
      flag: "max-result-bytes",
      env: "GATEWAY_MAX_RESULT_BYTES",
      description:
        "sharded keyspaces: most bytes one statement may hold in the gateway (sorts, aggregates); beyond it 54000 (default 128 MiB)",
    },
    replicaFallback: {
      flag: "replica-fallback",
      env: "GATEWAY_REPLICA_FALLBACK",
      type: "boolean",
      description: "send <keyspace>@replica sessions to the primary when no replica serves",
    },
    poolerPassword: {
      flag: "pooler-password",
      env: "GATEWAY_POOLER_PASSWORD",
      description: "password for poolers that ask for one (prefer the env variable)",
    },
    poolerChannel: {
      flag: "pooler-channel",
      env: "GATEWAY_POOLER_CHANNEL",
      description:
        "mux: every session to a pooler rides one multiplexed connection; direct: a TCP connection per pooled connection (default mux)",
    },
    deferBegin: {
      flag: "defer-begin",
      env: "GATEWAY_DEFER_BEGIN",
      description:
        "on: a plain BEGIN is answered at once and sent with the transaction's first statement; off: sent when received (default on)",
    },
    logLevel: {
      flag: "log-level",
      env: "GATEWAY_LOG_LEVEL",
      description: "debug, info, warn, error",
    },
  },
};

/** The environment variables the gateway reads (all of them, so access can be narrowed). */
export const GATEWAY_ENV_VARS: readonly string[] = Object.values(gatewayConfigSpec.fields)
  .map((f) => f.env)
  .filter((e): e is string => e !== undefined);
