/**
 * Where each kind of record lives in topo (see "Topo (etcd) layout" in the architecture notes),
 * as {@linkcode RecordKind} definitions for the generic store.
 *
 * Global topo, under `<root>/global/`:
 * - `cells/<cell>`, `databases/<db>`, `keyspaces/<ks>`, `keyspaces/<ks>/vschema`,
 *   `keyspaces/<ks>/shards/<range>`, `routing_rules`, `workflows/<name>`, `users/<name>`
 * - `locks/keyspaces/<ks>/shards/<range>`: shard locks (etcd3 Lock keys, value = holder)
 * - `election/<name>/<lease id>`: leader elections (etcd3 Election keys, value = candidate id)
 *
 * Cell-local topo, under the cell record's root (by default `<root>/cells/<cell>/`):
 * `poolers/<alias>`, `gateways/<alias>`, `orchs/<alias>`, each written under a lease.
 *
 * @module
 */

import {
  type CellRecord,
  CellRecordSchema,
  type DatabaseRecord,
  DatabaseRecordSchema,
  type GatewayRecord,
  GatewayRecordSchema,
  isShardRange,
  type KeyspaceRecord,
  KeyspaceRecordSchema,
  NAME_PATTERN,
  type OrchRecord,
  OrchRecordSchema,
  type PoolerRecord,
  PoolerRecordSchema,
  type RoutingRules,
  RoutingRulesSchema,
  type ShardRecord,
  ShardRecordSchema,
  type UserRecord,
  UserRecordSchema,
  type VSchema,
  VSchemaSchema,
  type WorkflowRecord,
  WorkflowRecordSchema,
} from "./records.ts";
import type { ParamSegment, RecordKind } from "./store.ts";

/** The default topo root. */
export const DEFAULT_TOPO_ROOT = "/tessera";

function name(param: string): ParamSegment {
  return {
    param,
    check: (value) => NAME_PATTERN.test(value),
    expected: "1-128 letters, digits, '_', '.' or '-', not starting with '.' or '-'",
  };
}

const range: ParamSegment = {
  param: "shard range",
  check: isShardRange,
  expected: "a Vitess-style key range such as '-80', '80-', '40-80', '-' or '0'",
};

const userName: ParamSegment = {
  param: "user name",
  check: (value) => /^[^/\s]{1,128}$/.test(value),
  expected: "1-128 characters without '/' or spaces",
};

/** The record kinds of the global topo, by store name. */
export interface GlobalKinds {
  /** `cells/<cell>` */
  cells: RecordKind<CellRecord, [cell: string]>;
  /** `databases/<db>` */
  databases: RecordKind<DatabaseRecord, [database: string]>;
  /** `keyspaces/<ks>` */
  keyspaces: RecordKind<KeyspaceRecord, [keyspace: string]>;
  /** `keyspaces/<ks>/vschema` */
  vschemas: RecordKind<VSchema, [keyspace: string]>;
  /** `keyspaces/<ks>/shards/<range>` */
  shards: RecordKind<ShardRecord, [keyspace: string, range: string]>;
  /** `routing_rules` */
  routingRules: RecordKind<RoutingRules, []>;
  /** `workflows/<name>` */
  workflows: RecordKind<WorkflowRecord, [workflow: string]>;
  /** `users/<name>` */
  users: RecordKind<UserRecord, [user: string]>;
}

/** The record kinds of a cell's local topo, by store name. */
export interface CellKinds {
  /** `poolers/<alias>` */
  poolers: RecordKind<PoolerRecord, [alias: string]>;
  /** `gateways/<alias>` */
  gateways: RecordKind<GatewayRecord, [alias: string]>;
  /** `orchs/<alias>` */
  orchs: RecordKind<OrchRecord, [alias: string]>;
}

/** Record kinds of the global topo. */
export const GLOBAL_KINDS: GlobalKinds = {
  cells: {
    what: "cell",
    path: ["cells", name("cell")],
    schema: CellRecordSchema,
    identity: (v) => [v.name],
  },
  databases: {
    what: "database",
    path: ["databases", name("database")],
    schema: DatabaseRecordSchema,
    identity: (v) => [v.name],
  },
  keyspaces: {
    what: "keyspace",
    path: ["keyspaces", name("keyspace")],
    schema: KeyspaceRecordSchema,
    identity: (v) => [v.name],
  },
  vschemas: {
    what: "vschema",
    path: ["keyspaces", name("keyspace"), "vschema"],
    schema: VSchemaSchema,
  },
  shards: {
    what: "shard",
    path: ["keyspaces", name("keyspace"), "shards", range],
    schema: ShardRecordSchema,
    identity: (v) => [v.keyspace, v.range],
  },
  routingRules: {
    what: "routing rules",
    path: ["routing_rules"],
    schema: RoutingRulesSchema,
  },
  workflows: {
    what: "workflow",
    path: ["workflows", name("workflow")],
    schema: WorkflowRecordSchema,
    identity: (v) => [v.name],
  },
  users: {
    what: "user",
    path: ["users", userName],
    schema: UserRecordSchema,
    identity: (v) => [v.name],
  },
};

function inCell(cell: string) {
  return (value: { cell: string }): string | undefined =>
    value.cell === cell
      ? undefined
      : `the record names cell '${value.cell}' but is in cell '${cell}'`;
}

/** Record kinds of a cell's local topo, for cell `cell`. */
export function cellKinds(cell: string): CellKinds {
  return {
    poolers: {
      what: "pooler",
      path: ["poolers", name("alias")],
      schema: PoolerRecordSchema,
      identity: (v) => [v.alias],
      check: inCell(cell),
    },
    gateways: {
      what: "gateway",
      path: ["gateways", name("alias")],
      schema: GatewayRecordSchema,
      identity: (v) => [v.alias],
      check: inCell(cell),
    },
    orchs: {
      what: "orch",
      path: ["orchs", name("alias")],
      schema: OrchRecordSchema,
      identity: (v) => [v.alias],
      check: inCell(cell),
    },
  };
}

/** The key prefix of the global topo under `root`. */
export function globalBase(root: string): string {
  return `${root}/global/`;
}

/** The default root of cell `cell`'s local topo under `root`. */
export function defaultCellRoot(root: string, cell: string): string {
  return `${root}/cells/${cell}`;
}

/** The key of the lock of shard `keyspace`/`range`. */
export function shardLockKey(root: string, keyspace: string, range: string): string {
  return `${globalBase(root)}locks/keyspaces/${keyspace}/shards/${range}`;
}
