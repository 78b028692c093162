/**
 * orch's configuration: flags, environment fallbacks and defaults that work for the local cluster.
 *
 * @module
 */

import { z } from "zod";
import { type ConfigSpec, hostPortSchema, positiveIntSchema } from "../shared/config/mod.ts";

/** Schema of orch's configuration. */
export const orchConfigSchema = z.object({
  alias: z.string().regex(/^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$/, "must be a topo name")
    .default("orch"),
  cell: z.string().min(1).default("zone1"),
  httpListen: hostPortSchema.default("127.0.0.1:15000"),
  topoEndpoints: z.array(z.string().url()).min(1, "give at least one --topo-endpoint"),
  topoRoot: z.string().startsWith("/").default("/tessera"),
  leaseTtl: z.coerce.number().int().min(2).max(300).default(10),
  checkInterval: positiveIntSchema.default(500),
  failoverAfter: positiveIntSchema.default(1500),
  rebuildAfter: positiveIntSchema.default(30),
  logLevel: z.enum(["debug", "info", "warn", "error"]).default("info"),
});

/** orch's configuration as read from flags and environment. */
export type OrchConfig = z.infer<typeof orchConfigSchema>;

/** How each field of {@linkcode OrchConfig} is given. */
export const orchConfigSpec: ConfigSpec<typeof orchConfigSchema> = {
  program: "orch",
  schema: orchConfigSchema,
  fields: {
    alias: { flag: "alias", env: "ORCH_ALIAS", description: "name of this orch (topo, logs)" },
    cell: { flag: "cell", env: "ORCH_CELL", description: "cell of this orch (default zone1)" },
    httpListen: {
      flag: "http-listen",
      env: "ORCH_HTTP_LISTEN",
      description: "HOST:PORT of the Connect + status server (default 127.0.0.1:15000)",
    },
    topoEndpoints: {
      flag: "topo-endpoint",
      env: "TOPO_ENDPOINTS",
      multiple: true,
      description: "etcd URL of the global topo, repeatable",
    },
    topoRoot: { flag: "topo-root", env: "TOPO_ROOT", description: "topo root (default /tessera)" },
    leaseTtl: {
      flag: "lease-ttl",
      env: "ORCH_LEASE_TTL",
      description: "seconds the topo record outlives a dead orch (default 10)",
    },
    checkInterval: {
      flag: "check-interval",
      env: "ORCH_CHECK_INTERVAL",
      description: "milliseconds between checks of every shard (default 500)",
    },
    failoverAfter: {
      flag: "failover-after",
      env: "ORCH_FAILOVER_AFTER",
      description: "milliseconds every signal must agree a primary is down before failover " +
        "(default 1500)",
    },
    rebuildAfter: {
      flag: "rebuild-after",
      env: "ORCH_REBUILD_AFTER",
      description: "seconds a replica may fail to stream from a running primary before it is " +
        "rebuilt from a new base backup (default 30)",
    },
    logLevel: { flag: "log-level", env: "ORCH_LOG_LEVEL", description: "debug, info, warn, error" },
  },
};
