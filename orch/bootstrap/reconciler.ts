/**
 * The loop that keeps every shard with a primary and durable replicas: every `intervalMs` it
 * reads the shards, their database's durability policy and the poolers registered for them,
 * asks each pooler for its instance's state, plans ({@linkcode planShard}) and, when the plan
 * has steps, takes the shard lock, checks again under it and carries them out through the
 * poolers' PoolerManagerService. Several orchs may run: the lock makes one act at a time and the
 * re-check under it makes the others find the work done.
 *
 * @module
 */

import {
  type ManagerStatusResponse,
  PoolerManagerService,
} from "../../proto/gen/tessera/pooler/v1/pooler_pb.ts";
import { PostgresRole } from "../../proto/gen/tessera/pooler/v1/pooler_pb.ts";
import { SqlState, TesseraError } from "../../shared/errors/mod.ts";
import type { Logger } from "../../shared/log/mod.ts";
import { type Client, createRpcClient } from "../../shared/rpc/mod.ts";
import type {
  DurabilityPolicy,
  PoolerRecord,
  RecordEntry,
  ShardRecord,
  TopoClient,
} from "../../shared/topo/mod.ts";
import {
  compareLsn,
  type InstanceView,
  planShard,
  primaryLooksUp,
  type ShardAction,
  type ShardInput,
  type ShardPlan,
} from "./plan.ts";

/** How long orch waits for a pooler's state, in ms. */
const STATUS_TIMEOUT_MS = 3000;
/** How many recent actions each shard keeps for `/status`. */
const RECENT_ACTIONS = 20;

/** What orch last saw of one shard and what it did. */
export interface ShardReport {
  /** Keyspace. */
  keyspace: string;
  /** Shard range. */
  shard: string;
  /** The shard record as last read. */
  record: ShardRecord;
  /** Durability policy applied. */
  policy: DurabilityPolicy;
  /** The last plan. */
  plan: ShardPlan;
  /** Instances as last seen. */
  instances: InstanceView[];
  /** Recent actions, newest last: `time action: result`. */
  recentActions: string[];
  /** When the shard was last checked (ms since the epoch). */
  checkedAt: number;
}

/** Options of {@linkcode Reconciler}. */
export interface ReconcilerOptions {
  /** The topo. */
  topo: TopoClient;
  /** This orch's alias, named as the shard lock's holder. */
  alias: string;
  /** Milliseconds between rounds. */
  intervalMs: number;
  /** Milliseconds a replica may fail to stream from a running primary before a rebuild. */
  rebuildAfterMs: number;
  /** Milliseconds every signal must agree a primary is down before it is failed over. */
  failoverAfterMs: number;
  /** Logger. */
  logger: Logger;
}

interface ShardMemory {
  busy: boolean;
  report: ShardReport | undefined;
  recent: string[];
  lastSummary: string;
  /** When each replica was first seen not streaming (alias → ms since the epoch). */
  notStreamingSince: Map<string, number>;
  /** When every signal first agreed that the recorded primary is down; 0 while it is up. */
  primaryDownSince: number;
  /** The recorded primary's Postgres address as last known. */
  primaryAddress: string;
  /** Instances whose rewind failed (they are rebuilt instead). */
  rewindFailed: Set<string>;
}

/** Keeps every shard bootstrapped, replicated and durable. */
export class Reconciler {
  readonly #o: ReconcilerOptions;
  readonly #log: Logger;
  readonly #shards = new Map<string, ShardMemory>();
  readonly #clients = new Map<string, Client<typeof PoolerManagerService>>();
  #timer: ReturnType<typeof setTimeout> | undefined;
  #stopped = false;
  #round: Promise<void> = Promise.resolve();
  #inflight = new Set<Promise<void>>();
  #lastTopoError = "";

  /** A reconciler; call {@linkcode start}. */
  constructor(options: ReconcilerOptions) {
    this.#o = options;
    this.#log = options.logger;
  }

  /** Starts the rounds. */
  start(): void {
    const loop = () => {
      if (this.#stopped) return;
      this.#round = this.#tick().finally(() => {
        if (!this.#stopped) this.#timer = setTimeout(loop, this.#o.intervalMs);
      });
    };
    loop();
  }

  /** Stops the rounds and waits for actions in flight. */
  async stop(): Promise<void> {
    this.#stopped = true;
    clearTimeout(this.#timer);
    await this.#round;
    await Promise.allSettled([...this.#inflight]);
  }

  /** The last report of every shard, sorted by keyspace and range. */
  reports(): ShardReport[] {
    return [...this.#shards.values()].flatMap((m) => m.report !== undefined ? [m.report] : [])
      .sort((a, b) => `${a.keyspace}/${a.shard}` < `${b.keyspace}/${b.shard}` ? -1 : 1);
  }

  #client(rpcAddress: string): Client<typeof PoolerManagerService> {
    let c = this.#clients.get(rpcAddress);
    if (c === undefined) {
      c = createRpcClient(PoolerManagerService, `http://${rpcAddress}`);
      this.#clients.set(rpcAddress, c);
    }
    return c;
  }

  async #tick(): Promise<void> {
    let shards: { entry: RecordEntry<ShardRecord, [string, string]>; policy: DurabilityPolicy }[];
    let poolers: PoolerRecord[];
    try {
      [shards, poolers] = await Promise.all([this.#readShards(), this.#readPoolers()]);
      if (this.#lastTopoError !== "") this.#log.info("topo reachable again");
      this.#lastTopoError = "";
    } catch (err) {
      const message = TesseraError.from(err).message;
      if (message !== this.#lastTopoError) this.#log.warn("cannot read topo", { err });
      this.#lastTopoError = message;
      return;
    }
    for (const { entry, policy } of shards) {
      const key = `${entry.value.keyspace}/${entry.value.range}`;
      const memory = this.#memory(key);
      if (memory.busy) continue;
      const mine = poolers.filter((p) =>
        p.keyspace === entry.value.keyspace && p.shard === entry.value.range
      );
      memory.busy = true;
      const work = this.#reconcileShard(entry.value, policy, mine, memory)
        .catch((err) => this.#log.error("shard check failed", { shard: key, err }))
        .finally(() => {
          memory.busy = false;
          this.#inflight.delete(work);
        });
      this.#inflight.add(work);
    }
  }

  async #readShards() {
    const topo = this.#o.topo;
    const [keyspaces, databases] = await Promise.all([
      topo.global.keyspaces.list(),
      topo.global.databases.list(),
    ]);
    const policies = new Map<string, DurabilityPolicy>();
    for (const d of databases) {
      if (d.type === "record") policies.set(d.value.name, d.value.durability);
    }
    const out: { entry: RecordEntry<ShardRecord, [string, string]>; policy: DurabilityPolicy }[] =
      [];
    for (const ks of keyspaces) {
      if (ks.type !== "record") continue;
      const policy = policies.get(ks.value.database ?? ks.value.name) ?? "none";
      for (const s of await topo.global.shards.list(ks.value.name)) {
        if (s.type === "record") out.push({ entry: s, policy });
      }
    }
    return out;
  }

  async #readPoolers(): Promise<PoolerRecord[]> {
    const topo = this.#o.topo;
    const cells = new Set<string>();
    for (const c of await topo.global.cells.list()) {
      if (c.type === "record") cells.add(c.value.name);
    }
    const lists = await Promise.all(
      [...cells].map(async (cell) => (await topo.cell(cell)).poolers.list()),
    );
    return lists.flat().flatMap((p) => p.type === "record" ? [p.value] : []);
  }

  async #view(
    p: PoolerRecord,
    memory: ShardMemory,
    primaryRunning: boolean,
  ): Promise<InstanceView> {
    const base: InstanceView = {
      alias: p.alias,
      cell: p.cell,
      reachable: false,
      managed: false,
      pgctldKnown: false,
      initialized: false,
      running: false,
      standby: false,
      source: "",
      postgresAddress: p.postgresAddress ?? "",
      role: "unknown",
      lsn: "",
      walReceiver: "",
      standbys: [],
      synchronousStandbyNames: "",
      notStreamingMs: 0,
      receiveLsn: "",
      rewindFailed: memory.rewindFailed.has(p.alias),
      databases: [],
      error: "",
    };
    let s: ManagerStatusResponse;
    try {
      s = await this.#client(p.rpcAddress).managerStatus({}, { timeoutMs: STATUS_TIMEOUT_MS });
    } catch (err) {
      return { ...base, error: TesseraError.from(err).message };
    }
    const role = s.postgres?.role === PostgresRole.PRIMARY
      ? "primary"
      : s.postgres?.role === PostgresRole.REPLICA
      ? "replica"
      : "unknown";
    const view: InstanceView = {
      ...base,
      reachable: true,
      managed: s.managed,
      pgctldKnown: s.managed && s.pgctldError === "",
      initialized: s.initialized,
      running: s.running,
      standby: s.standby,
      source: s.primaryHost !== "" ? `${s.primaryHost}:${s.primaryPort}` : "",
      postgresAddress: s.postgresAddress || base.postgresAddress,
      role,
      lsn: s.postgres?.lsn ?? "",
      receiveLsn: s.postgres?.receiveLsn ?? "",
      walReceiver: s.walReceiverStatus,
      standbys: s.standbys.map((x) => ({
        name: x.applicationName,
        state: x.state,
        syncState: x.syncState,
      })),
      synchronousStandbyNames: s.synchronousStandbyNames,
      databases: s.databases,
      error: s.pgctldError,
    };
    if (role === "replica" && view.walReceiver !== "streaming" && primaryRunning) {
      const since = memory.notStreamingSince.get(p.alias) ?? Date.now();
      memory.notStreamingSince.set(p.alias, since);
      view.notStreamingMs = Date.now() - since;
    } else {
      memory.notStreamingSince.delete(p.alias);
    }
    return view;
  }

  async #input(
    record: ShardRecord,
    policy: DurabilityPolicy,
    poolers: PoolerRecord[],
    memory: ShardMemory,
  ): Promise<ShardInput> {
    const primaryRecord = poolers.find((p) => p.alias === record.primaryAlias);
    const primaryRunning = primaryRecord?.type === "primary";
    const instances = await Promise.all(poolers.map((p) => this.#view(p, memory, primaryRunning)));
    const primaryDownMs = await this.#primaryDown(record, instances, memory);
    return {
      record,
      policy,
      instances,
      rebuildAfterMs: this.#o.rebuildAfterMs,
      databaseName: record.keyspace,
      primaryDownMs,
      failoverAfterMs: this.#o.failoverAfterMs,
    };
  }

  /**
   * How long every signal has agreed that the recorded primary is down: its pooler and pgctld
   * (unreachable, or Postgres not running as a primary), a direct probe of its Postgres port, and
   * no replica streaming from it. Any signal of life resets it to 0.
   */
  async #primaryDown(
    record: ShardRecord,
    instances: InstanceView[],
    memory: ShardMemory,
  ): Promise<number> {
    if (record.primaryAlias === undefined) return memory.primaryDownSince = 0;
    const primary = instances.find((i) => i.alias === record.primaryAlias);
    if (primary?.postgresAddress) memory.primaryAddress = primary.postgresAddress;
    const up = primaryLooksUp(record.primaryAlias, instances) ||
      (memory.primaryAddress !== "" && await postgresAnswers(memory.primaryAddress));
    if (up) return memory.primaryDownSince = 0;
    if (memory.primaryDownSince === 0) memory.primaryDownSince = Date.now();
    return Math.max(1, Date.now() - memory.primaryDownSince);
  }

  async #reconcileShard(
    record: ShardRecord,
    policy: DurabilityPolicy,
    poolers: PoolerRecord[],
    memory: ShardMemory,
  ): Promise<void> {
    const key = `${record.keyspace}/${record.range}`;
    const input = await this.#input(record, policy, poolers, memory);
    const plan = planShard(input);
    this.#report(key, input, plan, memory);
    if (plan.actions.length === 0) return;

    const lock = await this.#o.topo.lockShard(record.keyspace, record.range, {
      holder: `orch ${this.#o.alias}: bootstrap and repair`,
      timeoutMs: 5000,
    });
    try {
      await this.#converge(record.keyspace, record.range, policy, memory, lock.signal);
    } finally {
      await lock.release();
    }
  }

  /**
   * Under the shard lock: reads the shard record and its instances again, plans, carries the
   * plan out, and repeats (a few rounds) until nothing is left to do, so that follow-up steps
   * (repointing replicas after a promotion, durability) do not wait for the next check.
   */
  async #converge(
    keyspace: string,
    range: string,
    policy: DurabilityPolicy,
    memory: ShardMemory,
    signal: AbortSignal,
  ): Promise<void> {
    const key = `${keyspace}/${range}`;
    for (let round = 0; round < 4; round++) {
      const fresh = await this.#o.topo.global.shards.get(keyspace, range);
      if (fresh === undefined) return;
      const poolers = (await this.#readPoolers()).filter((p) =>
        p.keyspace === keyspace && p.shard === range
      );
      const input = await this.#input(fresh.value, policy, poolers, memory);
      const plan = planShard(input);
      this.#report(key, input, plan, memory);
      if (plan.actions.length === 0) return;
      for (const action of plan.actions) {
        if (signal.aborted) throw signal.reason;
        await this.#carryOut(fresh.value, action, poolers, memory);
        // A new primary changes every later step: plan again with it.
        if (action.kind === "failover" || action.kind === "recordPrimary") break;
      }
    }
  }

  #memory(key: string): ShardMemory {
    let memory = this.#shards.get(key);
    if (memory === undefined) {
      memory = {
        busy: false,
        report: undefined,
        recent: [],
        lastSummary: "",
        notStreamingSince: new Map(),
        primaryDownSince: 0,
        primaryAddress: "",
        rewindFailed: new Set(),
      };
      this.#shards.set(key, memory);
    }
    return memory;
  }

  /**
   * Planned switchover of shard `keyspace`/`range` to replica `to` (or the streaming replica with
   * the most WAL): under the shard lock, records the candidate with the next term (gateways hold
   * new transactions while it still reports itself a replica), lets the old primary's open
   * transactions end (up to `drainSeconds`) and stops it, waits for the candidate to replay all
   * of its WAL, promotes it, repoints the other replicas and sets durability; the old primary
   * then rejoins as a replica. Resolves with how long writes were held.
   */
  async switchover(
    keyspace: string,
    range: string,
    to: string | undefined,
    drainSeconds = 5,
  ): Promise<{ from: string; to: string; term: number; pausedMs: number }> {
    const key = `${keyspace}/${range}`;
    const memory = this.#memory(key);
    const deadline = Date.now() + 30_000;
    while (memory.busy) {
      if (Date.now() > deadline) {
        throw new TesseraError(SqlState.lockNotAvailable, `shard ${key} stays busy`);
      }
      await new Promise((r) => setTimeout(r, 20));
    }
    memory.busy = true;
    try {
      const lock = await this.#o.topo.lockShard(keyspace, range, {
        holder: `orch ${this.#o.alias}: switchover`,
        timeoutMs: 10_000,
      });
      try {
        return await this.#switchover(keyspace, range, to, drainSeconds, memory, lock.signal);
      } finally {
        await lock.release();
      }
    } finally {
      memory.busy = false;
    }
  }

  async #switchover(
    keyspace: string,
    range: string,
    to: string | undefined,
    drainSeconds: number,
    memory: ShardMemory,
    signal: AbortSignal,
  ): Promise<{ from: string; to: string; term: number; pausedMs: number }> {
    const key = `${keyspace}/${range}`;
    const entry = await this.#o.topo.global.shards.get(keyspace, range);
    if (entry === undefined) {
      throw new TesseraError(SqlState.undefinedObject, `shard ${key} does not exist`);
    }
    const from = entry.value.primaryAlias;
    if (from === undefined) {
      throw new TesseraError(SqlState.objectNotInPrerequisiteState, `shard ${key} has no primary`);
    }
    const shardEntry = (await this.#readShards()).find((s) =>
      s.entry.value.keyspace === keyspace && s.entry.value.range === range
    );
    const policy = shardEntry?.policy ?? "none";
    const poolers = (await this.#readPoolers()).filter((p) =>
      p.keyspace === keyspace && p.shard === range
    );
    const input = await this.#input(entry.value, policy, poolers, memory);
    const primary = input.instances.find((i) => i.alias === from);
    if (primary === undefined || !primary.running || primary.role !== "primary") {
      throw new TesseraError(
        SqlState.objectNotInPrerequisiteState,
        `the primary ${from} of ${key} is not serving: a switchover needs a live primary`,
        { hint: "orch fails over a dead primary by itself" },
      );
    }
    const candidates = input.instances.filter((i) =>
      i.alias !== from && i.running && i.role === "replica" && i.walReceiver === "streaming"
    ).sort((a, b) => compareLsn(b.receiveLsn, a.receiveLsn) || (a.alias < b.alias ? -1 : 1));
    const candidate = to === undefined ? candidates[0] : candidates.find((c) => c.alias === to);
    if (candidate === undefined) {
      throw new TesseraError(
        SqlState.objectNotInPrerequisiteState,
        to === undefined
          ? `shard ${key} has no streaming replica to switch over to`
          : `${to} is not a streaming replica of ${key}`,
        { detail: `streaming replicas: ${candidates.map((c) => c.alias).join(", ") || "none"}` },
      );
    }
    const started = Date.now();
    const fromPooler = poolers.find((p) => p.alias === from)!;
    const toPooler = poolers.find((p) => p.alias === candidate.alias)!;
    this.#log.warn("switchover starting", { shard: key, from, to: candidate.alias });
    // 1. Gateways hold new transactions: the record names the candidate, still a replica.
    const written = await this.#o.topo.global.shards.update([keyspace, range], (cur) => {
      if (cur === undefined || cur.value.primaryAlias !== from) {
        throw new TesseraError(SqlState.serializationFailure, `shard ${key} changed meanwhile`);
      }
      return { ...cur.value, primaryAlias: candidate.alias, term: cur.value.term + 1 };
    });
    const term = written?.value.term ?? entry.value.term + 1;
    this.#remember(memory, `switchover ${from} → ${candidate.alias}: term ${term} recorded`);
    // 2. The old primary finishes its open transactions and stops.
    const { lastLsn } = await this.#client(fromPooler.rpcAddress).stopPostgres(
      { immediate: false, drainSeconds },
      { timeoutMs: (drainSeconds + 90) * 1000 },
    );
    // 3. The candidate replays everything the old primary wrote.
    const client = this.#client(toPooler.rpcAddress);
    const catchUpBy = Date.now() + 30_000;
    for (;;) {
      if (signal.aborted) throw signal.reason;
      const s = await client.managerStatus({}, { timeoutMs: STATUS_TIMEOUT_MS });
      const replay = s.postgres?.lsn ?? "";
      const received = s.postgres?.receiveLsn ?? "";
      if (
        lastLsn !== ""
          ? compareLsn(replay, lastLsn) >= 0
          : s.walReceiverStatus !== "streaming" && replay === received
      ) break;
      if (Date.now() > catchUpBy) {
        throw new TesseraError(
          SqlState.objectNotInPrerequisiteState,
          `${candidate.alias} did not replay up to ${lastLsn || "the end of WAL"} in 30 s`,
          { detail: `replayed ${replay}, received ${received}` },
        );
      }
      await new Promise((r) => setTimeout(r, 20));
    }
    // 4. Promotion: the pooler rewrites its record as a primary and gateways send writes.
    await client.promote({}, { timeoutMs: 90_000 });
    memory.primaryAddress = toPooler.postgresAddress ?? candidate.postgresAddress;
    memory.primaryDownSince = 0;
    const pausedMs = Date.now() - started;
    this.#remember(memory, `switchover ${from} → ${candidate.alias}: writes held ${pausedMs} ms`);
    this.#log.warn("switchover done", { shard: key, from, to: candidate.alias, term, pausedMs });
    // 5. Repoint the other replicas, durability, and the old primary rejoins.
    await this.#converge(keyspace, range, policy, memory, signal);
    return { from, to: candidate.alias, term, pausedMs };
  }

  async #carryOut(
    record: ShardRecord,
    action: ShardAction,
    poolers: PoolerRecord[],
    memory: ShardMemory,
  ): Promise<void> {
    const shard = `${record.keyspace}/${record.range}`;
    const pooler = poolers.find((p) => p.alias === action.alias);
    const label = describe(action);
    const started = performance.now();
    this.#log.info("shard action", { shard, term: record.term, action: label });
    try {
      if (action.kind === "recordPrimary") {
        const written = await this.#o.topo.global.shards.update(
          [record.keyspace, record.range],
          (cur) => {
            if (cur === undefined) return undefined;
            if (cur.value.primaryAlias !== undefined) {
              throw new TesseraError(
                SqlState.serializationFailure,
                `shard ${shard} got primary ${cur.value.primaryAlias} meanwhile`,
              );
            }
            return { ...cur.value, primaryAlias: action.alias, term: cur.value.term + 1 };
          },
        );
        this.#remember(memory, `${label}: term ${written?.value.term}`);
        this.#log.info("shard primary recorded", {
          shard,
          primary: action.alias,
          term: written?.value.term,
        });
        return;
      }
      if (pooler === undefined) {
        throw new TesseraError(
          SqlState.objectNotInPrerequisiteState,
          `pooler ${action.alias} is gone`,
        );
      }
      const client = this.#client(pooler.rpcAddress);
      switch (action.kind) {
        case "initPrimary":
          await client.initPrimary({}, { timeoutMs: 120_000 });
          break;
        case "startPostgres":
          await client.startPostgres({}, { timeoutMs: 90_000 });
          break;
        case "initReplica": {
          const [host, port] = hostPort(action.primaryAddress);
          await client.initReplica(
            { primaryHost: host, primaryPort: port, replaceExisting: action.replaceExisting },
            { timeoutMs: 900_000 },
          );
          memory.notStreamingSince.delete(action.alias);
          break;
        }
        case "repoint": {
          const [host, port] = hostPort(action.primaryAddress);
          await client.setReplicationSource({ primaryHost: host, primaryPort: port });
          break;
        }
        case "setDurability":
          await client.setDurability({ synchronousStandbyNames: action.names });
          break;
        case "stopPostgres":
          await client.stopPostgres({ immediate: action.immediate }, { timeoutMs: 90_000 });
          break;
        case "promote":
          await client.promote({}, { timeoutMs: 90_000 });
          break;
        case "createDatabase":
          await client.createDatabase({ name: action.name });
          break;
        case "failover": {
          const written = await this.#o.topo.global.shards.update(
            [record.keyspace, record.range],
            (cur) => {
              if (cur === undefined || cur.value.primaryAlias !== action.from) {
                throw new TesseraError(
                  SqlState.serializationFailure,
                  `shard ${shard} changed primary meanwhile`,
                );
              }
              return { ...cur.value, primaryAlias: action.alias, term: cur.value.term + 1 };
            },
          );
          memory.primaryDownSince = 0;
          memory.primaryAddress = pooler.postgresAddress ?? "";
          this.#log.warn("failover: new primary recorded", {
            shard,
            from: action.from,
            primary: action.alias,
            term: written?.value.term,
          });
          await client.promote({}, { timeoutMs: 90_000 });
          break;
        }
        case "rewind": {
          const [host, port] = hostPort(action.primaryAddress);
          try {
            await client.rewind({ primaryHost: host, primaryPort: port }, { timeoutMs: 900_000 });
          } catch (err) {
            memory.rewindFailed.add(action.alias);
            throw err;
          }
          break;
        }
      }
      if (action.kind === "initReplica") memory.rewindFailed.delete(action.alias);
      const ms = Math.round(performance.now() - started);
      this.#remember(memory, `${label}: done in ${ms} ms`);
      this.#log.info("shard action done", { shard, term: record.term, action: label, ms });
    } catch (err) {
      const e = TesseraError.from(err);
      this.#remember(memory, `${label}: failed: ${e.message}`);
      this.#log.warn("shard action failed", { shard, term: record.term, action: label, err });
      throw err;
    }
  }

  #remember(memory: ShardMemory, line: string): void {
    memory.recent.push(`${new Date().toISOString()} ${line}`);
    if (memory.recent.length > RECENT_ACTIONS) memory.recent.shift();
    if (memory.report !== undefined) memory.report.recentActions = [...memory.recent];
  }

  #report(key: string, input: ShardInput, plan: ShardPlan, memory: ShardMemory): void {
    const [keyspace = "", shard = ""] = [input.record.keyspace, input.record.range];
    memory.report = {
      keyspace,
      shard,
      record: input.record,
      policy: input.policy,
      plan,
      instances: input.instances,
      recentActions: [...memory.recent],
      checkedAt: Date.now(),
    };
    const summary = `${plan.health}: ${plan.reasons.join("; ")}`;
    if (summary !== memory.lastSummary) {
      const fields = {
        shard: key,
        term: input.record.term,
        primary: input.record.primaryAlias ?? "",
        health: plan.health,
        reasons: plan.reasons,
      };
      if (plan.health === "ok") this.#log.info("shard state", fields);
      else this.#log.warn("shard state", fields);
      memory.lastSummary = summary;
    }
  }
}

/** Whether a Postgres answers at `address` (an SSLRequest gets 'S' or 'N'), within 1 s. */
export async function postgresAnswers(address: string): Promise<boolean> {
  const [hostname, port] = hostPort(address);
  let conn: Deno.TcpConn | undefined;
  const timer = setTimeout(() => conn?.close(), 1000);
  try {
    conn = await Promise.race([
      Deno.connect({ hostname, port }),
      new Promise<never>((_, reject) => setTimeout(() => reject(new Error("timeout")), 1000)),
    ]);
    await conn.write(new Uint8Array([0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f]));
    const buf = new Uint8Array(1);
    const n = await conn.read(buf);
    return n === 1 && (buf[0] === 0x53 || buf[0] === 0x4e);
  } catch {
    return false;
  } finally {
    clearTimeout(timer);
    try {
      conn?.close();
    } catch {
      // closed by the timer
    }
  }
}

function describe(a: ShardAction): string {
  switch (a.kind) {
    case "stopPostgres":
      return `stop postgres of ${a.alias}${a.immediate ? " immediately (fence)" : ""}`;
    case "failover":
      return `failover from ${a.from} to ${a.alias}`;
    case "promote":
      return `promote ${a.alias}`;
    case "createDatabase":
      return `create database ${a.name} on ${a.alias}`;
    case "rewind":
      return `rewind ${a.alias} onto ${a.primaryAddress}`;
    case "initPrimary":
      return `init primary ${a.alias}`;
    case "recordPrimary":
      return `record primary ${a.alias}`;
    case "startPostgres":
      return `start postgres of ${a.alias}`;
    case "initReplica":
      return `${
        a.replaceExisting ? "rebuild" : "init"
      } replica ${a.alias} from ${a.primaryAddress}`;
    case "repoint":
      return `repoint ${a.alias} to ${a.primaryAddress}`;
    case "setDurability":
      return `set synchronous_standby_names on ${a.alias} to '${a.names}'`;
  }
}

function hostPort(address: string): [string, number] {
  const i = address.lastIndexOf(":");
  const host = address.slice(0, i).replace(/^\[(.*)\]$/, "$1");
  return [host, Number(address.slice(i + 1))];
}
