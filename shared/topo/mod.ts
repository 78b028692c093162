/**
 * Tessera's topo client: typed, validated records in etcd for the global topo and each cell's
 * local topo, records under leases, resumable watches, shard locks and leader elections.
 *
 * @example
 * ```ts
 * import { TopoClient } from "../shared/topo/mod.ts";
 *
 * const topo = await TopoClient.connect({ endpoints: "http://127.0.0.1:12379" });
 * const shards = await topo.global.shards.list("app");
 * await topo.close();
 * ```
 *
 * @module
 */
export {
  CellTopo,
  type ElectionOptions,
  GlobalTopo,
  type ShardLockOptions,
  TopoClient,
  type TopoOptions,
} from "./topo.ts";
export {
  type CorruptEntry,
  type LeadingParams,
  type LeasedRecord,
  type ListItem,
  type ParamSegment,
  type RecordEntry,
  type RecordEvent,
  type RecordKind,
  RecordStore,
  type RecordWatchOptions,
  type Segment,
  type UpdateOptions,
} from "./store.ts";
export type {
  LeaderCampaign,
  LeaderChange,
  LeaseRegistration,
  LockHandle,
  LockOptions,
  PutOptions,
  PutResult,
  RawKv,
  RawWatchEvent,
  TopoBackend,
  TopoWatch,
  WaitOptions,
  WatchOptions,
  WatchTarget,
} from "./backend.ts";
export { EtcdBackend, type EtcdBackendOptions } from "./etcd_backend.ts";
export {
  type CellKinds,
  cellKinds,
  DEFAULT_TOPO_ROOT,
  defaultCellRoot,
  GLOBAL_KINDS,
  globalBase,
  type GlobalKinds,
  shardLockKey,
} from "./layout.ts";
export * from "./records.ts";
export { TopoRegistration, type TopoRegistrationOptions } from "./registration.ts";
