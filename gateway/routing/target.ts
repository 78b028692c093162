/**
 * Where a session's transactions go: the target named by the client's database name, and the
 * contract between the data path (which borrows connections to poolers per transaction) and the
 * resolver that knows the topology (which pooler serves that target now). Planning does no I/O:
 * {@linkcode parseDatabaseName} is pure, and the resolver answers from its in-memory view.
 *
 * @module
 */

import { SqlState, TesseraError } from "../../shared/errors/mod.ts";

/** Kind of pooler a session's transactions go to. */
export type TargetKind = "primary" | "replica" | "tag";

/** The target named by a client's database name. */
export interface SessionTarget {
  /** Keyspace: what the client names as its database. */
  keyspace: string;
  /** `primary` (writes), `replica` (reads from a replica) or `tag` (poolers with `tag`). */
  kind: TargetKind;
  /** The tag, for kind `tag`. */
  tag?: string;
  /**
   * One shard (key range) of the keyspace: set by the sharding engine, which addresses every
   * shard of a sharded keyspace on its own. Unset: the keyspace's only shard.
   */
  shard?: string;
}

const NAME = /^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$/;

/**
 * Parses a database name: `app` (primary), `app@primary`, `app@replica`, or `app@<tag>`.
 * Throws `3D000` for a malformed name.
 */
export function parseDatabaseName(database: string): SessionTarget {
  const at = database.indexOf("@");
  const keyspace = at === -1 ? database : database.slice(0, at);
  const suffix = at === -1 ? "primary" : database.slice(at + 1);
  if (!NAME.test(keyspace) || !NAME.test(suffix)) {
    throw new TesseraError(SqlState.invalidCatalogName, `invalid database name "${database}"`, {
      hint: "connect to <keyspace>, <keyspace>@replica or <keyspace>@<tag>",
    });
  }
  if (suffix === "primary" || suffix === "replica") return { keyspace, kind: suffix };
  return { keyspace, kind: "tag", tag: suffix };
}

/** One pooler that can serve a target. */
export interface PoolerEndpoint {
  /** The pooler's alias in topo. */
  alias: string;
  /** Its Postgres-wire address: `host:port`, or an absolute Unix socket path. */
  address: string;
  /** Cell. */
  cell: string;
  /** Keyspace. */
  keyspace: string;
  /** Shard. */
  shard: string;
  /** `primary`, `replica`, `rdonly` or `unknown`. */
  type: string;
  /** The shard's term when this pooler was chosen as its primary (0 when not known). */
  term: number;
}

/**
 * Knows which pooler serves a target now. The data path calls {@linkcode resolve} at the start of
 * every transaction (so a new primary is picked up between transactions) and
 * {@linkcode reportFailure} when a pooler cannot be reached.
 */
export interface TargetResolver {
  /**
   * Resolves the pooler for `target`. While none can serve it (for example during a failover)
   * it waits, up to the buffering window and within the buffered-request limit, then throws a
   * TesseraError (`08006` no serving pooler, `53300` too many buffered requests, `3D000`
   * unknown keyspace). Aborting `signal` stops the wait.
   */
  resolve(target: SessionTarget, signal?: AbortSignal): Promise<PoolerEndpoint>;
  /**
   * The pooler for `target` when one serves it now, without waiting; null when {@linkcode resolve}
   * would wait or fail. Lets the data path start a transaction with no promise in between.
   */
  resolveNow?(target: SessionTarget): PoolerEndpoint | null;
  /** Marks `endpoint` as failing so it is avoided until topo shows it again or a short time passes. */
  reportFailure(endpoint: PoolerEndpoint, error: unknown): void;
}

/** What the gateway knows of a keyspace's sharding, from topo. */
export interface KeyspaceSharding {
  /** Whether the keyspace is sharded (its record says so, its vschema does, or it has several shards). */
  sharded: boolean;
  /** Its shards (key ranges), sorted by where they start. */
  shards: string[];
  /** Its vschema as stored in topo (not validated here), if any. */
  vschema: unknown;
}

/** Source of keyspace sharding facts (the topo resolver), for the sharding engine. */
export interface ShardingSource {
  /** Bumped whenever a keyspace, shard or vschema record changes. */
  readonly shardingVersion: number;
  /** The keyspace's sharding, or undefined when topo does not know it. */
  keyspaceSharding(keyspace: string): KeyspaceSharding | undefined;
  /** Every stored vschema by keyspace. */
  vschemas(): ReadonlyMap<string, unknown>;
}
