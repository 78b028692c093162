/**
 * A whole orch process from its configuration: topo connection, the shard reconciler, the HTTP
 * server with `/live`, `/ready`, `/status`, the admin API (`/api/v1/...`, see admin/vschema.ts)
 * and the Connect service, and its record in the cell topo under a lease.
 *
 * @module
 */

import { splitHostPort } from "../shared/config/mod.ts";
import { createStatusApp, serveComponent, type ServedComponent } from "../shared/http/mod.ts";
import { Logger, type LogSink } from "../shared/log/mod.ts";
import { CleanupStack } from "../shared/proc/mod.ts";
import { createRpcHandler } from "../shared/rpc/mod.ts";
import { type OrchRecord, TopoClient, TopoRegistration } from "../shared/topo/mod.ts";
import { addVSchemaRoutes } from "./admin/vschema.ts";
import { Reconciler } from "./bootstrap/reconciler.ts";
import type { OrchConfig } from "./config.ts";
import { registerOrchService } from "./control/service.ts";

/** Version reported in `/status`. */
export const ORCH_VERSION = "0.1.0";

/** A running orch process. */
export interface OrchRuntime {
  /** The shard reconciler. */
  reconciler: Reconciler;
  /** The HTTP server (Connect + status). */
  http: ServedComponent;
  /** Stops everything. */
  shutdown(): Promise<void>;
}

/** Starts orch from `config`. */
export async function runOrch(
  config: OrchConfig,
  options: { sink?: LogSink } = {},
): Promise<OrchRuntime> {
  const logger = new Logger({
    component: "orch",
    alias: config.alias,
    level: config.logLevel,
    ...(options.sink ? { sink: options.sink } : {}),
  });
  const cleanups = new CleanupStack();
  try {
    const topo = await TopoClient.connect({
      endpoints: config.topoEndpoints,
      root: config.topoRoot,
      logger,
    });
    cleanups.push(() => topo.close());
    const reconciler = new Reconciler({
      topo,
      alias: config.alias,
      intervalMs: config.checkInterval,
      rebuildAfterMs: config.rebuildAfter * 1000,
      failoverAfterMs: config.failoverAfter,
      logger,
    });
    const identity = { alias: config.alias, cell: config.cell };
    const app = createStatusApp({
      component: "orch",
      alias: config.alias,
      version: ORCH_VERSION,
      logger,
      status: () => ({
        cell: config.cell,
        shards: reconciler.reports().map((r) => ({
          keyspace: r.keyspace,
          shard: r.shard,
          primary: r.record.primaryAlias ?? null,
          term: r.record.term,
          durability: r.policy,
          synchronousStandbyNames: r.plan.synchronousStandbyNames ?? null,
          durabilityMet: r.plan.durabilityMet,
          health: r.plan.health,
          reasons: r.plan.reasons,
          instances: r.instances,
          recentActions: r.recentActions,
          checkedAt: new Date(r.checkedAt).toISOString(),
        })),
      }),
    });
    addVSchemaRoutes(app, topo);
    const rpc = createRpcHandler(
      (router) => registerOrchService(router, reconciler, identity),
      { logger },
    );
    const http = await serveComponent({ ...splitHostPort(config.httpListen), app, rpc, logger });
    cleanups.push(() => http.shutdown());

    reconciler.start();
    cleanups.push(() => reconciler.stop());

    const address = `${http.addr.hostname}:${http.addr.port}`;
    const registration = new TopoRegistration<OrchRecord>({
      store: async () => (await topo.cell(config.cell)).orchs,
      record: () => ({
        alias: config.alias,
        cell: config.cell,
        rpcAddress: address,
        httpAddress: address,
      }),
      ttlSeconds: config.leaseTtl,
      intervalMs: 2000,
      logger,
    });
    registration.start();
    cleanups.push(() => registration.stop());
    logger.info("orch serving", { http: http.url, cell: config.cell });
    return { reconciler, http, shutdown: () => cleanups.run() };
  } catch (err) {
    await cleanups.run();
    throw err;
  }
}
