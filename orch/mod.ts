/**
 * orch (MultiOrch): bootstraps shards, keeps replication and the durability policy right, and
 * reports every shard's state.
 *
 * @module
 */

export { type OrchConfig, orchConfigSchema, orchConfigSpec } from "./config.ts";
export { ORCH_VERSION, type OrchRuntime, runOrch } from "./runtime.ts";
export {
  addVSchemaRoutes,
  type AdminIssue,
  checkVSchemaUpdate,
  type VSchemaCheck,
} from "./admin/vschema.ts";
export { Reconciler, type ReconcilerOptions, type ShardReport } from "./bootstrap/reconciler.ts";
export {
  formatStandbyNames,
  type InstanceView,
  NO_REPLICA_NAME,
  parseStandbyNames,
  planShard,
  requiredAcks,
  type ShardAction,
  type ShardHealth,
  type ShardInput,
  type ShardPlan,
} from "./bootstrap/plan.ts";
