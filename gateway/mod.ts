/**
 * The gateway (MultiGateway): one Postgres in front of the cluster. Routes each session's
 * transactions to the pooler serving its target (`app`, `app@replica`, `app@<tag>`), found by
 * watching topo, and buffers while a failover leaves nothing to serve.
 *
 * @example
 * ```ts
 * import { runGateway } from "./gateway/mod.ts";
 * import { gatewayConfigSchema } from "./gateway/mod.ts";
 *
 * const gw = await runGateway(gatewayConfigSchema.parse({
 *   topoEndpoints: ["http://127.0.0.1:12379"],
 * }));
 * await gw.shutdown();
 * ```
 *
 * @module
 */

export {
  GATEWAY_ENV_VARS,
  type GatewayConfig,
  gatewayConfigSchema,
  gatewayConfigSpec,
} from "./config.ts";
export { GATEWAY_VERSION, type GatewayRuntime, runGateway } from "./runtime.ts";
export {
  type Plan,
  type PlanOptions,
  planTarget,
  type ResolverStats,
  type RoutingView,
  type ShardTargets,
  targetName,
  TopoTargetResolver,
  type TopoTargetResolverOptions,
  type ViewPooler,
} from "./routing/topo_resolver.ts";
export {
  parseDatabaseName,
  type PoolerEndpoint,
  type SessionTarget,
  type TargetKind,
  type TargetResolver,
} from "./routing/target.ts";
export { type CancellableGateway, registerGatewayService } from "./control/service.ts";
export { gatewayAuth } from "./control/users.ts";
export {
  dropStartupPermissions,
  type PermissionReport,
  permissionState,
} from "./control/permissions.ts";
export {
  type GatewayOptions,
  type GatewayServer,
  type GatewayStats,
  startGateway,
} from "./server.ts";
