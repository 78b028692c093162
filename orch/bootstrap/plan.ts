/**
 * What a shard needs next, decided from what orch sees: no I/O here. The reconciler gathers the
 * shard record, the durability policy and every instance's state, calls {@linkcode planShard},
 * and carries out the actions under the shard lock.
 *
 * Rules, in order:
 * - no primary recorded and every instance empty: the first reachable instance (by alias) is
 *   initialised as the primary, then recorded with the next term;
 * - no primary recorded and exactly one instance holds data and is not a standby: it is adopted
 *   as the primary (a bootstrap that stopped between init and record); any other data means the
 *   shard needs an operator (or the failover issue's logic) and is reported `stalled`;
 * - the recorded primary is started when stopped; an empty instance becomes its replica from a
 *   base backup; a stopped replica is started; a replica streaming from elsewhere is repointed;
 *   a replica that has not streamed from a running primary for `rebuildAfterMs` is rebuilt;
 * - the primary's `synchronous_standby_names` follows the policy: `ANY n (names)` over every
 *   replica the shard has or had (names are only added, so a policy is never met by shrinking
 *   the list); with no replica at all a placeholder name keeps writes waiting rather than
 *   silently acknowledging them without a copy.
 *
 * @module
 */

import type { DurabilityPolicy, ShardRecord } from "../../shared/topo/mod.ts";

/** Placeholder standby name used while a policy needs replicas that do not exist yet. */
export const NO_REPLICA_NAME = "tessera_no_replica_yet";

/** A standby connected to a primary, as pg_stat_replication shows it. */
export interface StandbyView {
  /** application_name: the replica's alias. */
  name: string;
  /** streaming, catchup, ... */
  state: string;
  /** async, potential, sync, quorum. */
  syncState: string;
}

/** One instance of the shard as its pooler reported it. */
export interface InstanceView {
  /** Pooler alias (also the replica's application_name). */
  alias: string;
  /** Cell of the pooler. */
  cell: string;
  /** Whether the pooler answered. */
  reachable: boolean;
  /** Whether the pooler has a pgctld (only managed instances are acted on). */
  managed: boolean;
  /** Whether pgctld answered (false: its state below is unknown). */
  pgctldKnown: boolean;
  /** Data directory initialised. */
  initialized: boolean;
  /** Postgres running. */
  running: boolean;
  /** standby.signal present. */
  standby: boolean;
  /** Replica: the primary it is configured for, `host:port`; empty when none. */
  source: string;
  /** Postgres's own TCP address, `host:port`; empty when unknown. */
  postgresAddress: string;
  /** primary, replica, unknown (unreachable). */
  role: "primary" | "replica" | "unknown";
  /** Current (primary) or replayed (replica) LSN. */
  lsn: string;
  /** Replica: WAL receiver status (`streaming` when healthy). */
  walReceiver: string;
  /** Primary: its standbys. */
  standbys: StandbyView[];
  /** Primary: its current synchronous_standby_names. */
  synchronousStandbyNames: string;
  /** How long the replica has not been streaming while the primary ran, in ms (0 when it is). */
  notStreamingMs: number;
  /** Replica: last WAL position received and flushed (`pg_last_wal_receive_lsn()`). */
  receiveLsn: string;
  /** A rewind of this instance failed: rebuild it from a base backup instead. */
  rewindFailed: boolean;
  /** Primary: the databases that exist in it. */
  databases: string[];
  /** Why the pooler or pgctld could not be asked, if so. */
  error: string;
}

/** Everything planning needs about one shard. */
export interface ShardInput {
  /** The shard record. */
  record: ShardRecord;
  /** Durability policy of the shard's database. */
  policy: DurabilityPolicy;
  /** Instances of the shard (poolers registered for it, in any cell). */
  instances: InstanceView[];
  /** After how long without streaming a replica is rebuilt, in ms. */
  rebuildAfterMs: number;
  /** The Postgres database clients reach the shard as (the keyspace's name). */
  databaseName?: string;
  /**
   * How long every signal has agreed that the recorded primary is down, in ms (0 while any says
   * it is up): its pooler and pgctld, a direct probe of its Postgres port, and no replica
   * streaming from it.
   */
  primaryDownMs?: number;
  /** After how long down the primary is failed over, in ms. */
  failoverAfterMs?: number;
}

/** One step orch takes. */
export type ShardAction =
  | { kind: "initPrimary"; alias: string }
  | { kind: "recordPrimary"; alias: string }
  | { kind: "startPostgres"; alias: string }
  | { kind: "initReplica"; alias: string; primaryAddress: string; replaceExisting: boolean }
  | { kind: "repoint"; alias: string; primaryAddress: string }
  | { kind: "setDurability"; alias: string; names: string }
  | { kind: "stopPostgres"; alias: string; immediate: boolean }
  | { kind: "failover"; alias: string; from: string }
  | { kind: "promote"; alias: string }
  | { kind: "rewind"; alias: string; primaryAddress: string }
  | { kind: "createDatabase"; alias: string; name: string };

/** Health of a shard as orch sees it. */
export type ShardHealth = "ok" | "bootstrapping" | "degraded" | "blocked" | "stalled";

/** What to do with a shard, and how it stands. */
export interface ShardPlan {
  /** Steps to take now, in order. */
  actions: ShardAction[];
  /** How the shard stands. */
  health: ShardHealth;
  /** Why it is not `ok`. */
  reasons: string[];
  /** synchronous_standby_names the primary should have (undefined before there is a primary). */
  synchronousStandbyNames: string | undefined;
  /** Whether enough standbys acknowledge commits for the policy right now. */
  durabilityMet: boolean;
}

/** How many standbys must acknowledge a commit under `policy`. */
export function requiredAcks(policy: DurabilityPolicy): number {
  switch (policy) {
    case "none":
      return 0;
    case "at_least_1":
      return 1;
    case "at_least_2":
      return 2;
  }
}

/** Standby names listed in a `synchronous_standby_names` value (quoted or bare). */
export function parseStandbyNames(value: string): string[] {
  const list = /\((.*)\)\s*$/s.exec(value)?.[1] ?? value;
  const names: string[] = [];
  for (const m of list.matchAll(/\s*(?:"((?:[^"]|"")*)"|([^,\s]+))\s*(?:,|$)/g)) {
    const name = m[1] !== undefined ? m[1].replaceAll('""', '"') : m[2];
    if (name !== undefined && name !== "") names.push(name);
  }
  return names;
}

/** `ANY n ("a", "b")` for `names`, or the empty string when no acknowledgement is needed. */
export function formatStandbyNames(required: number, names: readonly string[]): string {
  if (required === 0) return "";
  const list = names.length > 0 ? names : [NO_REPLICA_NAME];
  return `ANY ${required} (${list.map((n) => `"${n.replaceAll('"', '""')}"`).join(", ")})`;
}

/**
 * Whether any signal short of a direct probe says the primary `alias` is alive: its pooler
 * reports Postgres running as a primary, or a replica's WAL receiver streams (from it). The
 * second keeps a partition between orch and a healthy primary from causing a failover.
 */
export function primaryLooksUp(alias: string, instances: readonly InstanceView[]): boolean {
  const primary = instances.find((i) => i.alias === alias);
  if (primary !== undefined && primary.reachable && primary.running && primary.role === "primary") {
    return true;
  }
  return instances.some((i) => i.alias !== alias && i.walReceiver === "streaming");
}

/** Decides what shard `input` needs next. */
export function planShard(input: ShardInput): ShardPlan {
  const { record, instances } = input;
  const required = requiredAcks(input.policy);
  const reasons: string[] = [];
  const actions: ShardAction[] = [];
  const actionable = instances
    .filter((i) => i.reachable && i.managed && i.pgctldKnown)
    .sort((a, b) => a.alias < b.alias ? -1 : a.alias > b.alias ? 1 : 0);
  for (const i of instances) {
    if (!i.reachable) reasons.push(`pooler ${i.alias} is unreachable: ${i.error}`);
    else if (!i.managed) reasons.push(`pooler ${i.alias} has no pgctld (--pgctld-address)`);
    else if (!i.pgctldKnown) reasons.push(`pgctld of ${i.alias} is unreachable: ${i.error}`);
  }

  if (record.primaryAlias === undefined) {
    const withData = actionable.filter((i) => i.initialized);
    if (actionable.length === 0) {
      reasons.unshift("waiting for a pooler with a pgctld to register for the shard");
      return done("bootstrapping");
    }
    if (withData.length === 0) {
      actions.push({ kind: "initPrimary", alias: actionable[0]!.alias });
      actions.push({ kind: "recordPrimary", alias: actionable[0]!.alias });
      reasons.unshift(`initialising ${actionable[0]!.alias} as the first primary`);
      return done("bootstrapping");
    }
    const [only] = withData;
    if (withData.length === 1 && only !== undefined && !only.standby) {
      if (!only.running) actions.push({ kind: "startPostgres", alias: only.alias });
      actions.push({ kind: "recordPrimary", alias: only.alias });
      reasons.unshift(`adopting ${only.alias}, the only instance with data, as primary`);
      return done("bootstrapping");
    }
    reasons.unshift(
      `no primary recorded but ${withData.map((i) => i.alias).join(", ")} hold data: ` +
        "choosing among them needs a failover",
    );
    return done("stalled");
  }

  const primaryAlias = record.primaryAlias;
  const primary = instances.find((i) => i.alias === primaryAlias);
  let primaryServing = false;
  let primaryAddress = "";
  let health: ShardHealth = "ok";

  // Failover: every signal says the primary is down and a replica runs.
  const candidates = actionable.filter((i) =>
    i.alias !== primaryAlias && i.running && i.role === "replica"
  );
  const downMs = input.primaryDownMs ?? 0;
  if (downMs > 0) {
    reasons.push(`primary ${primaryAlias} down for ${Math.round(downMs / 100) / 10} s`);
  }
  if (downMs > 0 && downMs >= (input.failoverAfterMs ?? Infinity) && candidates.length > 0) {
    const replicas = instances.filter((i) => i.alias !== primaryAlias);
    const needed = required === 0 ? 1 : Math.max(1, replicas.length - required + 1);
    if (candidates.length < needed) {
      reasons.unshift(
        `primary ${primaryAlias} is down but only ${candidates.length} of ${replicas.length} ` +
          `replicas answer; ${needed} are needed to be sure the new primary has every ` +
          `commit acknowledged under ${input.policy}`,
      );
      return done("stalled");
    }
    const best = [...candidates].sort((a, b) => {
      const d = compareLsn(b.receiveLsn || b.lsn, a.receiveLsn || a.lsn);
      return d !== 0 ? d : a.alias < b.alias ? -1 : 1;
    })[0]!;
    if (
      primary !== undefined && primary.reachable && primary.managed && primary.pgctldKnown &&
      primary.running
    ) {
      actions.push({ kind: "stopPostgres", alias: primaryAlias, immediate: true });
    }
    actions.push({ kind: "failover", alias: best.alias, from: primaryAlias });
    reasons.unshift(
      `failing over from ${primaryAlias} to ${best.alias} (received up to ${
        best.receiveLsn || best.lsn
      })`,
    );
    return done("degraded");
  }

  if (primary === undefined) {
    reasons.unshift(`primary ${primaryAlias} (term ${record.term}) has no registered pooler`);
    health = "degraded";
  } else if (!primary.reachable || !primary.managed || !primary.pgctldKnown) {
    health = "degraded";
  } else if (!primary.initialized) {
    reasons.unshift(`primary ${primaryAlias} has no data directory`);
    health = "stalled";
  } else if (primary.running && (primary.role === "replica" || primary.standby)) {
    // A failover recorded this primary but stopped before promoting it.
    actions.push({ kind: "promote", alias: primaryAlias });
    reasons.unshift(`promoting ${primaryAlias}, recorded as primary of term ${record.term}`);
    health = "degraded";
  } else if (primary.standby) {
    actions.push({ kind: "startPostgres", alias: primaryAlias });
    reasons.unshift(`starting ${primaryAlias} to promote it`);
    health = "degraded";
  } else if (!primary.running) {
    if (candidates.length === 0) {
      actions.push({ kind: "startPostgres", alias: primaryAlias });
      reasons.unshift(`starting primary ${primaryAlias}`);
    } else {
      reasons.unshift(`primary ${primaryAlias} is stopped; failover when it stays down`);
    }
    health = "degraded";
  } else if (primary.role !== "primary") {
    reasons.unshift(`primary ${primaryAlias} does not answer`);
    health = "degraded";
  } else {
    primaryServing = true;
    primaryAddress = primary.postgresAddress;
    const db = input.databaseName;
    if (db !== undefined && !primary.databases.includes(db)) {
      actions.push({ kind: "createDatabase", alias: primaryAlias, name: db });
      reasons.push(`creating database ${db} on ${primaryAlias}`);
      health = "degraded";
    }
    if (primaryAddress === "") {
      reasons.push(`primary ${primaryAlias} has no TCP address for replicas`);
      health = "degraded";
    }
  }

  for (const r of actionable) {
    if (r.alias === primaryAlias) continue;
    if (!r.initialized) {
      if (primaryServing && primaryAddress !== "") {
        actions.push({
          kind: "initReplica",
          alias: r.alias,
          primaryAddress,
          replaceExisting: false,
        });
        reasons.push(`building replica ${r.alias} from a base backup of ${primaryAlias}`);
      } else {
        reasons.push(`replica ${r.alias} waits for the primary before its base backup`);
      }
      health = worse(health, "degraded");
      continue;
    }
    if (!r.standby) {
      if (primaryServing && primaryAddress !== "") {
        actions.push(
          r.rewindFailed
            ? { kind: "initReplica", alias: r.alias, primaryAddress, replaceExisting: true }
            : { kind: "rewind", alias: r.alias, primaryAddress },
        );
        reasons.push(
          `${r.alias} is a former primary: ${
            r.rewindFailed ? "rebuilding it (its rewind failed)" : "rewinding it"
          } to rejoin as a replica of ${primaryAlias}`,
        );
      } else {
        reasons.push(`${r.alias} is a former primary; it rejoins once the primary serves`);
      }
      health = worse(health, "degraded");
      continue;
    }
    if (!r.running) {
      actions.push({ kind: "startPostgres", alias: r.alias });
      reasons.push(`starting replica ${r.alias}`);
      health = worse(health, "degraded");
      continue;
    }
    if (primaryAddress !== "" && r.source !== primaryAddress) {
      actions.push({ kind: "repoint", alias: r.alias, primaryAddress });
      reasons.push(`repointing ${r.alias} from '${r.source}' to ${primaryAddress}`);
      health = worse(health, "degraded");
      continue;
    }
    if (primaryServing && r.walReceiver !== "streaming") {
      if (r.notStreamingMs >= input.rebuildAfterMs) {
        actions.push({
          kind: "initReplica",
          alias: r.alias,
          primaryAddress,
          replaceExisting: true,
        });
        reasons.push(
          `rebuilding ${r.alias}: not streaming for ${Math.round(r.notStreamingMs / 1000)} s`,
        );
      } else {
        reasons.push(`replica ${r.alias} is not streaming (${r.walReceiver || "no WAL receiver"})`);
      }
      health = worse(health, "degraded");
    }
  }

  let names: string | undefined;
  let durabilityMet = required === 0;
  if (primary !== undefined && primaryServing) {
    const known = new Set(
      parseStandbyNames(primary.synchronousStandbyNames).filter((n) => n !== NO_REPLICA_NAME),
    );
    for (const i of instances) if (i.alias !== primaryAlias) known.add(i.alias);
    known.delete(primaryAlias);
    names = formatStandbyNames(required, [...known].sort());
    if (names !== primary.synchronousStandbyNames) {
      actions.push({ kind: "setDurability", alias: primaryAlias, names });
    }
    const acking = primary.standbys.filter((s) =>
      s.state === "streaming" && (s.syncState === "sync" || s.syncState === "quorum") &&
      known.has(s.name)
    ).length;
    durabilityMet = acking >= required;
    if (!durabilityMet) {
      reasons.unshift(
        `durability ${input.policy} needs ${required} acknowledging replica(s), ` +
          `${acking} streaming: commits wait until one catches up`,
      );
      health = worse(health, "blocked");
    }
  }
  // Quick steps that let writes flow first; base backups and rewinds last.
  actions.sort((a, b) => ACTION_ORDER[a.kind] - ACTION_ORDER[b.kind]);
  return {
    actions,
    health: actions.length > 0 && health === "ok" ? "degraded" : health,
    reasons,
    synchronousStandbyNames: names,
    durabilityMet,
  };

  function done(h: ShardHealth): ShardPlan {
    return {
      actions,
      health: h,
      reasons,
      synchronousStandbyNames: undefined,
      durabilityMet: false,
    };
  }
}

/** Orders two LSNs (`X/Y` hex); an empty LSN is the lowest. */
export function compareLsn(a: string, b: string): number {
  const value = (l: string) => {
    const m = /^([0-9A-Fa-f]+)\/([0-9A-Fa-f]+)$/.exec(l);
    return m === null ? -1n : (BigInt(`0x${m[1]}`) << 32n) + BigInt(`0x${m[2]}`);
  };
  const d = value(a) - value(b);
  return d < 0n ? -1 : d > 0n ? 1 : 0;
}

const ACTION_ORDER: Record<ShardAction["kind"], number> = {
  stopPostgres: 0,
  failover: 0,
  initPrimary: 0,
  promote: 0,
  recordPrimary: 1,
  startPostgres: 2,
  createDatabase: 3,
  repoint: 3,
  setDurability: 4,
  initReplica: 5,
  rewind: 5,
};

const ORDER: ShardHealth[] = ["ok", "bootstrapping", "degraded", "blocked", "stalled"];

function worse(a: ShardHealth, b: ShardHealth): ShardHealth {
  return ORDER.indexOf(b) > ORDER.indexOf(a) ? b : a;
}
