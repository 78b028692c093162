/**
 * zod schemas of the records kept in topo, and their types. Records are validated with these on
 * every read and write.
 *
 * @module
 */

import { z } from "zod";

/**
 * Names of cells, databases, keyspaces, workflows, users and process aliases: a letter, digit or
 * underscore, then letters, digits, `_`, `.` or `-`; at most 128 characters. They become etcd key
 * segments, so `/` is never allowed.
 */
export const NAME_PATTERN: RegExp = /^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$/;

/**
 * A shard's key range, Vitess style: `-80`, `80-`, `40-80`, `-` (the whole range) or `0` (the
 * one shard of an unsharded keyspace). Bounds are lower-case hex bytes.
 */
export const SHARD_RANGE_PATTERN: RegExp = /^(?:0|(?:[0-9a-f]{2})*-(?:[0-9a-f]{2})*)$/;

/** Whether `range` is a well-formed shard range whose start is below its end. */
export function isShardRange(range: string): boolean {
  if (!SHARD_RANGE_PATTERN.test(range)) return false;
  if (range === "0") return true;
  const [start = "", end = ""] = range.split("-");
  if (start === "" || end === "") return true;
  const width = Math.max(start.length, end.length);
  return start.padEnd(width, "0") < end.padEnd(width, "0");
}

/** A topo name (see {@linkcode NAME_PATTERN}). */
export const NameSchema = z.string().regex(NAME_PATTERN, {
  error: "must be 1-128 letters, digits, '_', '.' or '-', not starting with '.' or '-'",
});

/** A shard range (see {@linkcode SHARD_RANGE_PATTERN}). */
export const ShardRangeSchema = z.string().refine(isShardRange, {
  error: "must be a Vitess-style key range such as '-80', '80-', '40-80', '-' or '0'",
});

/** `host:port`, with the host a name, an IPv4 address or a bracketed IPv6 address. */
export const HostPortSchema = z.string().regex(
  /^(?:[A-Za-z0-9_.-]+|\[[0-9A-Fa-f:.]+\]):\d{1,5}$/,
  { error: "must be host:port" },
);

/** Where a Postgres-wire listener is: `host:port`, or an absolute Unix socket path. */
export const PgAddressSchema = z.union([
  HostPortSchema,
  z.string().regex(/^\/\S*$/, { error: "must be an absolute socket path" }),
], { error: "must be host:port or an absolute Unix socket path" });

/** An etcd client URL, e.g. `http://127.0.0.1:12379`. */
export const EndpointSchema = z.string().regex(/^https?:\/\/[^\s/]+$/, {
  error: "must be an http:// or https:// URL with host and port, and no path",
});

/** A topo root: an absolute etcd key prefix without a trailing slash, e.g. `/tessera`. */
export const TopoRootSchema = z.string().regex(/^(?:\/[A-Za-z0-9_.-]+)+$/, {
  error: "must start with '/', have no empty segment and no trailing '/'",
});

/** Global `cells/<cell>`: where a cell's local topo lives. */
export const CellRecordSchema = z.object({
  name: NameSchema,
  endpoints: z.array(EndpointSchema).min(1),
  root: TopoRootSchema,
});
/** A cell record. */
export type CellRecord = z.infer<typeof CellRecordSchema>;

/**
 * How many replicas must acknowledge a commit. New policies are added to this list; readers that
 * do not know a policy report the record as corrupt rather than guessing.
 */
export const DurabilityPolicySchema = z.enum(["none", "at_least_1", "at_least_2"]);
/** A durability policy name. */
export type DurabilityPolicy = z.infer<typeof DurabilityPolicySchema>;

/** Global `databases/<db>`: durability policy and backup location. */
export const DatabaseRecordSchema = z.object({
  name: NameSchema,
  durability: DurabilityPolicySchema,
  backupLocation: z.string().min(1).optional(),
});
/** A database record. */
export type DatabaseRecord = z.infer<typeof DatabaseRecordSchema>;

/** Global `keyspaces/<ks>`: the keyspace itself. */
export const KeyspaceRecordSchema = z.object({
  name: NameSchema,
  sharded: z.boolean(),
  /** The database (`databases/<db>`) whose durability policy applies; the keyspace's name when absent. */
  database: NameSchema.optional(),
});
/** A keyspace record. */
export type KeyspaceRecord = z.infer<typeof KeyspaceRecordSchema>;

/** Global `keyspaces/<ks>/shards/<range>`: a shard, its primary and its term. */
export const ShardRecordSchema = z.object({
  keyspace: NameSchema,
  range: ShardRangeSchema,
  /** Alias of the pooler in front of the primary; absent while there is none. */
  primaryAlias: NameSchema.optional(),
  /** Bumped on every change of primary; a lower term never wins. */
  term: z.int().min(0),
});
/** A shard record. */
export type ShardRecord = z.infer<typeof ShardRecordSchema>;

/**
 * Global `keyspaces/<ks>/vschema`: a JSON object, opaque here. The sharding code owns its schema
 * and validates it further.
 */
export const VSchemaSchema = z.record(z.string(), z.unknown());
/** A keyspace's vschema, as stored. */
export type VSchema = z.infer<typeof VSchemaSchema>;

/** Global `routing_rules`: a JSON object, opaque here. */
export const RoutingRulesSchema = z.record(z.string(), z.unknown());
/** The routing rules, as stored. */
export type RoutingRules = z.infer<typeof RoutingRulesSchema>;

/** Global `workflows/<name>`: a workflow's identity and state; other fields are kept as they are. */
export const WorkflowRecordSchema = z.looseObject({
  name: NameSchema,
  type: z.string().min(1),
  state: z.string().min(1),
});
/** A workflow record. */
export type WorkflowRecord = z.infer<typeof WorkflowRecordSchema>;

/** A SCRAM-SHA-256 verifier as Postgres stores it: `SCRAM-SHA-256$<iter>:<salt>$<stored>:<server>`. */
export const SCRAM_VERIFIER_PATTERN: RegExp =
  /^SCRAM-SHA-256\$[1-9][0-9]*:[A-Za-z0-9+/]+={0,2}\$[A-Za-z0-9+/]+={0,2}:[A-Za-z0-9+/]+={0,2}$/;

/** Global `users/<name>`: a user's SCRAM verifier (never a password) and roles. */
export const UserRecordSchema = z.object({
  name: z.string().min(1).max(128).regex(/^[^/\s]+$/, { error: "must not contain '/' or spaces" }),
  scramVerifier: z.string().regex(SCRAM_VERIFIER_PATTERN, {
    error: "must be a SCRAM-SHA-256$<iterations>:<salt>$<storedKey>:<serverKey> verifier",
  }),
  roles: z.array(z.string().min(1)).optional(),
});
/** A user record. */
export type UserRecord = z.infer<typeof UserRecordSchema>;

/** What a pooler's Postgres serves as. */
export const PoolerTypeSchema = z.enum(["primary", "replica", "rdonly", "unknown"]);
/** A pooler type. */
export type PoolerType = z.infer<typeof PoolerTypeSchema>;

/** Cell-local `poolers/<alias>`: a live pooler, written under a lease. */
export const PoolerRecordSchema = z.object({
  alias: NameSchema,
  cell: NameSchema,
  keyspace: NameSchema,
  shard: ShardRangeSchema,
  type: PoolerTypeSchema,
  tags: z.array(NameSchema),
  pgAddress: PgAddressSchema,
  rpcAddress: HostPortSchema,
  hostname: z.string().min(1).optional(),
  /**
   * Where Postgres itself accepts TCP connections (for replicas streaming from it); absent when
   * the pooler does not know (no pgctld, or Postgres listens on a Unix socket only).
   */
  postgresAddress: HostPortSchema.optional(),
});
/** A pooler record. */
export type PoolerRecord = z.infer<typeof PoolerRecordSchema>;

/** Cell-local `gateways/<alias>`: a live gateway, written under a lease. */
export const GatewayRecordSchema = z.object({
  alias: NameSchema,
  cell: NameSchema,
  pgAddress: PgAddressSchema,
  httpAddress: HostPortSchema,
});
/** A gateway record. */
export type GatewayRecord = z.infer<typeof GatewayRecordSchema>;

/** Cell-local `orchs/<alias>`: a live orch, written under a lease. */
export const OrchRecordSchema = z.object({
  alias: NameSchema,
  cell: NameSchema,
  rpcAddress: HostPortSchema,
  httpAddress: HostPortSchema,
});
/** An orch record. */
export type OrchRecord = z.infer<typeof OrchRecordSchema>;
