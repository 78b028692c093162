/**
 * A {@linkcode TargetResolver} that answers from an in-memory view of topo kept up to date by
 * watches: global keyspaces and shards, the global cells list and every cell's poolers. While
 * etcd is down the view stays as it was last seen (the watches resume by themselves), so the
 * gateway keeps routing to the poolers it knew.
 *
 * Choosing a pooler is the pure function {@linkcode planTarget} of the view; the resolver only
 * adds buffering (waiting for the view to change while nothing can serve a target) and
 * bookkeeping (failed endpoints, how often each pooler was chosen).
 *
 * @module
 */

import { SqlState, TesseraError } from "../../shared/errors/mod.ts";
import type { Logger } from "../../shared/log/mod.ts";
import type {
  KeyspaceRecord,
  PoolerRecord,
  RecordEvent,
  ShardRecord,
  TopoClient,
  TopoWatch,
} from "../../shared/topo/mod.ts";
import { parseKeyRange } from "../../shared/vschema/mod.ts";
import type {
  KeyspaceSharding,
  PoolerEndpoint,
  SessionTarget,
  ShardingSource,
  TargetResolver,
} from "./target.ts";

/** A registered pooler as the view holds it. */
export interface ViewPooler {
  /** The pooler's record. */
  record: PoolerRecord;
  /** etcd create revision of the record: a higher one registered later. */
  createRevision: number;
}

/** What the resolver knows about the cluster: the input of {@linkcode planTarget}. */
export interface RoutingView {
  /** Keyspace records by name. */
  keyspaces: ReadonlyMap<string, KeyspaceRecord>;
  /** Shard records by keyspace, then by range. */
  shards: ReadonlyMap<string, ReadonlyMap<string, ShardRecord>>;
  /** Registered poolers by `<cell>/<alias>`. */
  poolers: ReadonlyMap<string, ViewPooler>;
}

/** Per-call inputs of {@linkcode planTarget} besides the view. */
export interface PlanOptions {
  /** Aliases of poolers to avoid (recently reported failing). */
  bad?: ReadonlySet<string>;
  /** Work in flight per alias (connections, sessions): the least loaded replica wins. */
  load?: ReadonlyMap<string, number>;
  /** Round-robin position among equally loaded candidates. */
  turn?: number;
  /** Send `@replica` sessions to the primary when no replica serves. */
  replicaFallback?: boolean;
  /** The gateway's cell: replicas and tagged poolers there are preferred. */
  cell?: string;
}

/** Result of {@linkcode planTarget}. */
export type Plan =
  | { ok: true; endpoint: PoolerEndpoint }
  /** `unknown`: no such keyspace (3D000); `unavailable`: known, but nothing serves now. */
  | { ok: false; reason: "unknown" | "unavailable" | "unsupported"; message: string };

/** `app`, `app@replica`, `app@olap`: how a target is named in messages and stats. */
export function targetName(target: SessionTarget): string {
  const ks = target.shard === undefined ? target.keyspace : `${target.keyspace}/${target.shard}`;
  if (target.kind === "primary") return ks;
  return `${ks}@${target.kind === "tag" ? target.tag : "replica"}`;
}

function endpointOf(p: PoolerRecord, term: number): PoolerEndpoint {
  return {
    alias: p.alias,
    address: p.pgAddress,
    cell: p.cell,
    keyspace: p.keyspace,
    shard: p.shard,
    type: p.type,
    term,
  };
}

/**
 * The least loaded pooler, preferring `cell`; among equally loaded ones (sorted by alias) the
 * `turn`-th, so that successive turns go round robin.
 */
function leastLoaded(candidates: ViewPooler[], options: PlanOptions): ViewPooler | undefined {
  const local = options.cell === undefined
    ? []
    : candidates.filter((c) => c.record.cell === options.cell);
  const pool = local.length > 0 ? local : candidates;
  const loadOf = (c: ViewPooler) => options.load?.get(c.record.alias) ?? 0;
  let min = Infinity;
  for (const c of pool) min = Math.min(min, loadOf(c));
  const ties = pool.filter((c) => loadOf(c) === min)
    .sort((a, b) => a.record.alias < b.record.alias ? -1 : a.record.alias > b.record.alias ? 1 : 0);
  if (ties.length === 0) return undefined;
  return ties[(options.turn ?? 0) % ties.length];
}

/**
 * Chooses the pooler for `target` from `view`, with no I/O:
 *
 * - the keyspace is known when topo has its keyspace record, a shard record or a pooler for it;
 *   otherwise `unknown`;
 * - the shard: an unsharded keyspace has one; a keyspace with several shards is `unsupported`
 *   here (sharded routing is the planner's job);
 * - `primary`: the pooler named by the shard record's `primaryAlias` when set (only that one,
 *   so that a stale primary is never written to after a failover, and only once it no longer
 *   reports itself a replica, so that writes wait out a promotion), else the registered pooler of
 *   type `primary` (the latest registered when several claim it);
 * - `replica`: the least loaded registered replica (round robin among equals by `turn`),
 *   preferring the gateway's cell, then the primary when `replicaFallback` is on;
 * - `tag`: the least loaded registered pooler carrying the tag (round robin by `turn`),
 *   preferring the gateway's cell.
 *
 * Poolers in `bad` are skipped. When nothing is left the plan is `unavailable`.
 */
export function planTarget(
  view: RoutingView,
  target: SessionTarget,
  options: PlanOptions = {},
): Plan {
  const ks = target.keyspace;
  const name = targetName(target);
  const inKeyspace = [...view.poolers.values()].filter((p) => p.record.keyspace === ks);
  const shardRecords = view.shards.get(ks);
  if (!view.keyspaces.has(ks) && (shardRecords?.size ?? 0) === 0 && inKeyspace.length === 0) {
    return { ok: false, reason: "unknown", message: `keyspace "${ks}" does not exist` };
  }
  const shardNames = new Set<string>([
    ...(shardRecords?.keys() ?? []),
    ...inKeyspace.map((p) => p.record.shard),
  ]);
  if (target.shard !== undefined) {
    if (!shardNames.has(target.shard)) {
      return {
        ok: false,
        reason: "unavailable",
        message: `keyspace "${ks}" has no shard "${target.shard}" in topo`,
      };
    }
  } else if (shardNames.size > 1 || view.keyspaces.get(ks)?.sharded === true) {
    return {
      ok: false,
      reason: "unsupported",
      message: `keyspace "${ks}" is sharded (${shardNames.size} shards); ` +
        "routing to sharded keyspaces is not supported yet",
    };
  }
  const shard = target.shard ?? [...shardNames][0];
  if (shard === undefined) {
    return { ok: false, reason: "unavailable", message: `keyspace "${ks}" has no shard in topo` };
  }
  const shardRecord = shardRecords?.get(shard);
  const term = shardRecord?.term ?? 0;
  const bad = options.bad ?? new Set<string>();
  const serving = inKeyspace.filter((p) => p.record.shard === shard && !bad.has(p.record.alias));

  const primary = (): ViewPooler | undefined => {
    if (shardRecord?.primaryAlias !== undefined) {
      // A recorded primary still reporting itself a replica is being promoted: wait for it.
      return serving.find((p) =>
        p.record.alias === shardRecord.primaryAlias && p.record.type !== "replica"
      );
    }
    let best: ViewPooler | undefined;
    for (const p of serving) {
      if (p.record.type !== "primary") continue;
      if (best === undefined || p.createRevision > best.createRevision) best = p;
    }
    return best;
  };

  let chosen: ViewPooler | undefined;
  let chosenTerm = 0;
  let missing: string;
  switch (target.kind) {
    case "primary":
      chosen = primary();
      chosenTerm = term;
      missing = shardRecord?.primaryAlias !== undefined
        ? `its primary "${shardRecord.primaryAlias}" is not serving`
        : "no primary pooler is serving";
      break;
    case "replica":
      chosen = leastLoaded(serving.filter((p) => p.record.type === "replica"), options);
      missing = "no replica pooler is serving";
      if (chosen === undefined && options.replicaFallback === true) {
        chosen = primary();
        chosenTerm = term;
        missing = "neither a replica nor the primary is serving";
      }
      break;
    case "tag": {
      const tag = target.tag ?? "";
      chosen = leastLoaded(serving.filter((p) => p.record.tags.includes(tag)), options);
      missing = `no pooler tagged "${tag}" is serving`;
      break;
    }
  }
  if (chosen === undefined) {
    return {
      ok: false,
      reason: "unavailable",
      message: `no serving pooler for "${name}" (shard ${shard}): ${missing}`,
    };
  }
  return { ok: true, endpoint: endpointOf(chosen.record, chosenTerm) };
}

/** Options of {@linkcode TopoTargetResolver}. */
export interface TopoTargetResolverOptions {
  /** How long resolve() waits for a serving pooler; 10000 ms by default. */
  bufferWindowMs?: number;
  /** Most resolve() calls waiting at once; beyond it they fail with 53300. 1000 by default. */
  maxBuffered?: number;
  /** Send `@replica` sessions to the primary when no replica serves. Off by default. */
  replicaFallback?: boolean;
  /** How long a pooler reported failing is avoided (unless topo shows it again); 1000 ms. */
  failureBackoffMs?: number;
  /** The gateway's cell: replicas and tagged poolers there are preferred. */
  cell?: string;
  /** Logger. */
  logger?: Logger;
}

/** Counters of {@linkcode TopoTargetResolver.stats}. */
export interface ResolverStats {
  /** Whether the first full view of topo has been read. */
  loaded: boolean;
  /** resolve() calls waiting now. */
  bufferedNow: number;
  /** resolve() calls that had to wait, since start. */
  bufferedTotal: number;
  /** Waits that ended with 08006 at the end of the window. */
  timeouts: number;
  /** Calls refused with 53300 because too many were waiting. */
  rejected: number;
  /** How often each pooler alias was chosen, by target name (`app`, `app@replica`). */
  choices: Record<string, Record<string, number>>;
  /** Aliases avoided now after a reported failure. */
  failing: string[];
}

/** One shard as `/status` shows it. */
export interface ShardTargets {
  /** Keyspace. */
  keyspace: string;
  /** Shard range. */
  shard: string;
  /** Term from the shard record (0 when none). */
  term: number;
  /** The pooler the primary target resolves to now, if any. */
  primary: string | undefined;
  /** Registered replica aliases. */
  replicas: string[];
  /** Every registered pooler: alias, type, tags, address. */
  poolers: { alias: string; cell: string; type: string; tags: string[]; address: string }[];
}

interface Waiter {
  wake: () => void;
}

const UNLOADED_VIEW: RoutingView = { keyspaces: new Map(), shards: new Map(), poolers: new Map() };

/**
 * Resolves session targets from topo, buffering while nothing serves a target.
 *
 * @example
 * ```ts
 * const resolver = new TopoTargetResolver(topo, { bufferWindowMs: 10_000 });
 * await resolver.start();
 * const endpoint = await resolver.resolve(parseDatabaseName("app@replica"));
 * ```
 */
export class TopoTargetResolver implements TargetResolver, ShardingSource {
  #topo: TopoClient;
  #log: Logger | undefined;
  #windowMs: number;
  #maxBuffered: number;
  #replicaFallback: boolean;
  #backoffMs: number;
  #cell: string | undefined;
  #keyspaces = new Map<string, KeyspaceRecord>();
  #shards = new Map<string, Map<string, ShardRecord>>();
  #vschemas = new Map<string, unknown>();
  #shardingVersion = 0;
  /** Poolers by cell, then by alias. */
  #cellPoolers = new Map<string, Map<string, ViewPooler>>();
  #view: RoutingView = UNLOADED_VIEW;
  #bad = new Map<string, number>();
  #badTimer: ReturnType<typeof setTimeout> | undefined;
  #turn = 0;
  #load: ReadonlyMap<string, number> = new Map();
  /** Replica and tag choices since the last setLoad(): not yet in the data path's counters. */
  #recent = new Map<string, number>();
  #primaryCache = new Map<string, Plan>();
  #choices = new Map<string, Map<string, number>>();
  #waiters = new Set<Waiter>();
  #bufferedTotal = 0;
  #timeouts = 0;
  #rejected = 0;
  #watches: TopoWatch<unknown>[] = [];
  #cellWatches = new Map<string, TopoWatch<unknown>>();
  #pending = new Set<string>(["keyspaces", "shards", "cells", "vschemas"]);
  #loaded = Promise.withResolvers<void>();
  #isLoaded = false;
  #closed = false;
  #closing = new AbortController();
  #loops: Promise<void>[] = [];

  constructor(topo: TopoClient, options: TopoTargetResolverOptions = {}) {
    this.#topo = topo;
    this.#log = options.logger;
    this.#windowMs = options.bufferWindowMs ?? 10_000;
    this.#maxBuffered = options.maxBuffered ?? 1000;
    this.#replicaFallback = options.replicaFallback ?? false;
    this.#backoffMs = options.failureBackoffMs ?? 1000;
    this.#cell = options.cell;
    if (!Number.isInteger(this.#windowMs) || this.#windowMs < 0) {
      throw new RangeError(
        `'bufferWindowMs' must be a non-negative integer: received ${this.#windowMs}`,
      );
    }
    if (!Number.isInteger(this.#maxBuffered) || this.#maxBuffered < 0) {
      throw new RangeError(
        `'maxBuffered' must be a non-negative integer: received ${this.#maxBuffered}`,
      );
    }
  }

  /**
   * Starts the watches. Resolves once the first full view is loaded, or after `timeoutMs`
   * (default: never) when etcd is slow; resolve() waits for the view either way.
   */
  async start(timeoutMs?: number): Promise<void> {
    this.#follow("keyspaces", this.#topo.global.keyspaces.watch([]), (e) => this.#onKeyspace(e));
    this.#follow("shards", this.#topo.global.shards.watch([]), (e) => this.#onShard(e));
    this.#follow("cells", this.#topo.global.cells.watch([]), (e) => this.#onCell(e));
    this.#follow("vschemas", this.#topo.global.vschemas.watch([]), (e) => this.#onVSchema(e));
    if (timeoutMs === undefined) return await this.#loaded.promise;
    let timer: ReturnType<typeof setTimeout> | undefined;
    await Promise.race([
      this.#loaded.promise,
      new Promise<void>((r) => timer = setTimeout(r, timeoutMs)),
    ]).finally(() => clearTimeout(timer));
  }

  /** Whether the first full view of topo has been read. */
  get loaded(): boolean {
    return this.#isLoaded;
  }

  /** The current view (read-only snapshot). */
  get view(): RoutingView {
    return this.#view;
  }

  #follow<E>(name: string, watch: TopoWatch<E>, apply: (event: E) => void): void {
    this.#watches.push(watch as TopoWatch<unknown>);
    this.#loops.push((async () => {
      try {
        for await (const event of watch) {
          apply(event);
          if ((event as { type?: string }).type === "resync") this.#markLoaded(name);
          this.#changed();
        }
      } catch (err) {
        if (!this.#closed) this.#log?.error("topo watch ended", { watch: name, err });
      }
    })());
  }

  #markLoaded(name: string): void {
    if (!this.#pending.delete(name) || this.#pending.size > 0 || this.#isLoaded) return;
    this.#isLoaded = true;
    this.#loaded.resolve();
    this.#log?.info("topo view loaded", {
      keyspaces: this.#keyspaces.size,
      poolers: this.#view.poolers.size,
    });
  }

  #onKeyspace(e: RecordEvent<KeyspaceRecord, [string]>): void {
    if (e.type === "resync") {
      this.#keyspaces.clear();
      for (const item of e.items) {
        if (item.type === "record") this.#keyspaces.set(item.params[0], item.value);
      }
    } else if (e.type === "put") this.#keyspaces.set(e.params[0], e.value);
    else if (e.type === "delete") this.#keyspaces.delete(e.params[0]);
  }

  #onVSchema(e: RecordEvent<Record<string, unknown>, [string]>): void {
    if (e.type === "resync") {
      this.#vschemas.clear();
      for (const item of e.items) {
        if (item.type === "record") this.#vschemas.set(item.params[0], item.value);
      }
    } else if (e.type === "put") this.#vschemas.set(e.params[0], e.value);
    else if (e.type === "delete") this.#vschemas.delete(e.params[0]);
  }

  #onShard(e: RecordEvent<ShardRecord, [string, string]>): void {
    const set = (ks: string, range: string, value: ShardRecord | undefined) => {
      let m = this.#shards.get(ks);
      if (value === undefined) {
        m?.delete(range);
        if (m?.size === 0) this.#shards.delete(ks);
        return;
      }
      if (m === undefined) this.#shards.set(ks, m = new Map());
      m.set(range, value);
    };
    if (e.type === "resync") {
      this.#shards.clear();
      for (const item of e.items) {
        if (item.type === "record") set(item.params[0], item.params[1], item.value);
      }
    } else if (e.type === "put") set(e.params[0], e.params[1], e.value);
    else if (e.type === "delete") set(e.params[0], e.params[1], undefined);
  }

  #onCell(e: RecordEvent<unknown, [string]>): void {
    if (e.type === "resync") {
      const names = new Set(
        e.items.filter((i) => i.type === "record").map((i) =>
          (i as { params: [string] }).params[0]
        ),
      );
      for (const cell of [...this.#cellWatches.keys()]) if (!names.has(cell)) this.#dropCell(cell);
      for (const cell of names) this.#watchCell(cell);
    } else if (e.type === "put") this.#watchCell(e.params[0]);
    else if (e.type === "delete") this.#dropCell(e.params[0]);
  }

  #dropCell(cell: string): void {
    const watch = this.#cellWatches.get(cell);
    this.#cellWatches.delete(cell);
    this.#pending.delete(`cell:${cell}`);
    this.#cellPoolers.delete(cell);
    void watch?.close();
    this.#changed();
  }

  #watchCell(cell: string): void {
    if (this.#cellWatches.has(cell) || this.#closed) return;
    if (!this.#isLoaded) this.#pending.add(`cell:${cell}`);
    const placeholder: TopoWatch<unknown> = {
      close: () => Promise.resolve(),
      next: () => Promise.resolve({ done: true, value: undefined }),
      [Symbol.asyncIterator]() {
        return this;
      },
    };
    this.#cellWatches.set(cell, placeholder);
    this.#loops.push((async () => {
      // The cell's local topo may live in another etcd that is not reachable yet: keep trying.
      let delay = 200;
      while (!this.#closed && this.#cellWatches.get(cell) === placeholder) {
        try {
          const local = await this.#topo.cell(cell);
          if (this.#closed || this.#cellWatches.get(cell) !== placeholder) return;
          const watch = local.poolers.watch([]);
          this.#cellWatches.set(cell, watch as TopoWatch<unknown>);
          try {
            for await (const event of watch) {
              this.#onPooler(cell, event);
              if (event.type === "resync") this.#markLoaded(`cell:${cell}`);
              this.#changed();
            }
            return;
          } finally {
            if (this.#cellWatches.get(cell) === watch) this.#cellWatches.set(cell, placeholder);
          }
        } catch (err) {
          if (this.#closed || this.#cellWatches.get(cell) !== placeholder) return;
          this.#log?.warn("cannot watch the poolers of a cell; retrying", { cell, err });
          await new Promise<void>((r) => {
            const timer = setTimeout(r, delay);
            this.#closing.signal.addEventListener("abort", () => {
              clearTimeout(timer);
              r();
            }, { once: true });
          });
          delay = Math.min(delay * 2, 5000);
        }
      }
    })());
  }

  #onPooler(cell: string, e: RecordEvent<PoolerRecord, [string]>): void {
    let m = this.#cellPoolers.get(cell);
    if (m === undefined) this.#cellPoolers.set(cell, m = new Map());
    if (e.type === "resync") {
      m.clear();
      for (const item of e.items) {
        if (item.type !== "record") continue;
        m.set(item.params[0], { record: item.value, createRevision: item.createRevision });
        this.#bad.delete(item.value.alias);
      }
    } else if (e.type === "put") {
      m.set(e.params[0], { record: e.value, createRevision: e.createRevision });
      this.#bad.delete(e.value.alias);
    } else if (e.type === "delete") {
      m.delete(e.params[0]);
      this.#bad.delete(e.params[0]);
    }
  }

  /** Rebuilds the view and lets every buffered call try again. */
  #changed(): void {
    const poolers = new Map<string, ViewPooler>();
    for (const [cell, m] of this.#cellPoolers) {
      for (const [alias, p] of m) poolers.set(`${cell}/${alias}`, p);
    }
    const shards = new Map([...this.#shards].map(([ks, m]) => [ks, new Map(m)] as const));
    this.#view = { keyspaces: new Map(this.#keyspaces), shards, poolers };
    this.#shardingVersion++;
    this.#primaryCache.clear();
    this.#wakeAll();
  }

  #wakeAll(): void {
    for (const w of [...this.#waiters]) w.wake();
  }

  #badSet(): Set<string> {
    const now = Date.now();
    for (const [alias, until] of this.#bad) if (until <= now) this.#bad.delete(alias);
    return new Set(this.#bad.keys());
  }

  #plan(target: SessionTarget): Plan {
    // The primary's plan only changes with the view or the failing set: cache it while nothing
    // is failing, so the per-transaction resolve is a map lookup.
    const cacheable = target.kind === "primary" && this.#bad.size === 0;
    if (cacheable) {
      const cached = this.#primaryCache.get(targetName(target));
      if (cached !== undefined) return cached;
    }
    const plan = planTarget(this.#view, target, {
      bad: this.#badSet(),
      turn: target.kind === "primary" ? 0 : this.#turn++,
      load: target.kind === "primary" ? this.#load : this.#currentLoad(),
      replicaFallback: this.#replicaFallback,
      ...(this.#cell !== undefined ? { cell: this.#cell } : {}),
    });
    if (cacheable && plan.ok) this.#primaryCache.set(targetName(target), plan);
    return plan;
  }

  #currentLoad(): ReadonlyMap<string, number> {
    if (this.#recent.size === 0) return this.#load;
    const merged = new Map(this.#load);
    for (const [alias, n] of this.#recent) merged.set(alias, (merged.get(alias) ?? 0) + n);
    return merged;
  }

  #record(target: SessionTarget, endpoint: PoolerEndpoint): PoolerEndpoint {
    if (target.kind !== "primary") {
      this.#recent.set(endpoint.alias, (this.#recent.get(endpoint.alias) ?? 0) + 1);
    }
    const name = targetName(target);
    let m = this.#choices.get(name);
    if (m === undefined) this.#choices.set(name, m = new Map());
    m.set(endpoint.alias, (m.get(endpoint.alias) ?? 0) + 1);
    return endpoint;
  }

  /** See {@linkcode TargetResolver.resolveNow}. */
  resolveNow(target: SessionTarget): PoolerEndpoint | null {
    if (this.#closed) return null;
    const plan = this.#plan(target);
    return plan.ok ? this.#record(target, plan.endpoint) : null;
  }

  /** See {@linkcode TargetResolver.resolve}. */
  async resolve(target: SessionTarget, signal?: AbortSignal): Promise<PoolerEndpoint> {
    if (this.#closed) {
      throw new TesseraError(SqlState.adminShutdown, "the gateway is shutting down");
    }
    let plan = this.#plan(target);
    if (plan.ok) return this.#record(target, plan.endpoint);
    if (plan.reason === "unsupported") {
      throw new TesseraError(SqlState.featureNotSupported, plan.message);
    }
    if (plan.reason === "unknown" && this.#isLoaded) {
      throw new TesseraError(SqlState.invalidCatalogName, plan.message);
    }
    signal?.throwIfAborted();
    if (this.#waiters.size >= this.#maxBuffered) {
      this.#rejected++;
      throw new TesseraError(
        SqlState.tooManyConnections,
        `too many buffered requests: ${this.#waiters.size} are already waiting for a serving ` +
          `pooler (limit ${this.#maxBuffered}); "${targetName(target)}": ${plan.message}`,
        { hint: "raise --max-buffered, or find out why no pooler serves this target" },
      );
    }
    this.#bufferedTotal++;
    const started = Date.now();
    const deadline = started + this.#windowMs;
    const waiter: Waiter = { wake: () => {} };
    this.#waiters.add(waiter);
    try {
      while (true) {
        const left = deadline - Date.now();
        if (left <= 0) break;
        const { promise, resolve } = Promise.withResolvers<void>();
        waiter.wake = resolve;
        const timer = setTimeout(resolve, Math.min(left, this.#nextBadExpiry() ?? left));
        const onAbort = () => resolve();
        signal?.addEventListener("abort", onAbort, { once: true });
        try {
          await promise;
        } finally {
          clearTimeout(timer);
          signal?.removeEventListener("abort", onAbort);
        }
        if (signal?.aborted) {
          throw new TesseraError(
            SqlState.queryCanceled,
            "canceling statement due to user request",
            {
              cause: signal.reason,
            },
          );
        }
        if (this.#closed) {
          throw new TesseraError(SqlState.adminShutdown, "the gateway is shutting down");
        }
        plan = this.#plan(target);
        if (plan.ok) {
          this.#log?.info("buffered request resolved", {
            target: targetName(target),
            alias: plan.endpoint.alias,
            waitedMs: Date.now() - started,
          });
          return this.#record(target, plan.endpoint);
        }
        if (plan.reason === "unsupported") {
          throw new TesseraError(SqlState.featureNotSupported, plan.message);
        }
        if (plan.reason === "unknown" && this.#isLoaded) {
          throw new TesseraError(SqlState.invalidCatalogName, plan.message);
        }
      }
    } finally {
      this.#waiters.delete(waiter);
    }
    this.#timeouts++;
    const message = plan.reason === "unknown"
      ? `the topology was not loaded within ${this.#windowMs} ms (is etcd reachable?)`
      : plan.message;
    throw new TesseraError(
      SqlState.connectionFailure,
      `${message}; waited ${this.#windowMs} ms for one`,
      { hint: "the pooler may be restarting or failing over; retry, or check its topo record" },
    );
  }

  #nextBadExpiry(): number | undefined {
    let next: number | undefined;
    for (const until of this.#bad.values()) if (next === undefined || until < next) next = until;
    return next === undefined ? undefined : Math.max(1, next - Date.now());
  }

  /** See {@linkcode TargetResolver.reportFailure}. */
  reportFailure(endpoint: PoolerEndpoint, error: unknown): void {
    this.#bad.set(endpoint.alias, Date.now() + this.#backoffMs);
    this.#primaryCache.clear();
    this.#log?.warn("pooler reported failing; avoiding it for now", {
      alias: endpoint.alias,
      address: endpoint.address,
      backoffMs: this.#backoffMs,
      err: error,
    });
    clearTimeout(this.#badTimer);
    this.#badTimer = setTimeout(() => this.#wakeAll(), this.#backoffMs);
  }

  /**
   * Sets how busy each pooler is (by alias: connections in use and waiting, as the data path
   * counts them). Replicas and tagged poolers are chosen least busy first, round robin among
   * equals. Called periodically, off the per-transaction path.
   */
  setLoad(load: ReadonlyMap<string, number>): void {
    this.#load = load;
    this.#recent.clear();
  }

  /** Buffering and choice counters. */
  stats(): ResolverStats {
    const choices: Record<string, Record<string, number>> = {};
    for (const [name, m] of this.#choices) choices[name] = Object.fromEntries(m);
    return {
      loaded: this.#isLoaded,
      bufferedNow: this.#waiters.size,
      bufferedTotal: this.#bufferedTotal,
      timeouts: this.#timeouts,
      rejected: this.#rejected,
      choices,
      failing: [...this.#badSet()],
    };
  }

  /** See {@linkcode ShardingSource.shardingVersion}. */
  get shardingVersion(): number {
    return this.#shardingVersion;
  }

  /** See {@linkcode ShardingSource.keyspaceSharding}. */
  keyspaceSharding(keyspace: string): KeyspaceSharding | undefined {
    const record = this.#view.keyspaces.get(keyspace);
    const names = new Set<string>(this.#view.shards.get(keyspace)?.keys() ?? []);
    for (const p of this.#view.poolers.values()) {
      if (p.record.keyspace === keyspace) names.add(p.record.shard);
    }
    const vschema = this.#vschemas.get(keyspace);
    if (record === undefined && names.size === 0 && vschema === undefined) return undefined;
    const vsSharded = (vschema as { sharded?: unknown } | undefined)?.sharded === true;
    const start = (range: string): string => {
      try {
        return [...parseKeyRange(range).start].map((b) => b.toString(16).padStart(2, "0")).join(
          "",
        );
      } catch {
        return range;
      }
    };
    const shards = [...names].sort((a, b) =>
      start(a) < start(b) ? -1 : start(a) > start(b) ? 1 : 0
    );
    return {
      sharded: record?.sharded === true || vsSharded || shards.length > 1,
      shards,
      vschema,
    };
  }

  /** See {@linkcode ShardingSource.vschemas}. */
  vschemas(): ReadonlyMap<string, unknown> {
    return this.#vschemas;
  }

  /** Whether some keyspace has a serving primary now. */
  hasServingPrimary(): boolean {
    return this.shardTargets().some((s) => s.primary !== undefined);
  }

  /** Every shard the view knows, with the pooler its primary target resolves to now. */
  shardTargets(): ShardTargets[] {
    const keys = new Map<string, { keyspace: string; shard: string }>();
    for (const [ks, m] of this.#view.shards) {
      for (const range of m.keys()) keys.set(`${ks}/${range}`, { keyspace: ks, shard: range });
    }
    for (const p of this.#view.poolers.values()) {
      keys.set(`${p.record.keyspace}/${p.record.shard}`, {
        keyspace: p.record.keyspace,
        shard: p.record.shard,
      });
    }
    const bad = this.#badSet();
    return [...keys.values()].sort((a, b) =>
      `${a.keyspace}/${a.shard}`.localeCompare(`${b.keyspace}/${b.shard}`)
    )
      .map(({ keyspace, shard }) => {
        const poolers = [...this.#view.poolers.values()].filter((p) =>
          p.record.keyspace === keyspace && p.record.shard === shard
        );
        // Plan over this shard alone, so a sharded keyspace still shows each shard's primary.
        const one: RoutingView = {
          keyspaces: new Map(),
          shards: new Map(
            this.#view.shards.get(keyspace)?.has(shard)
              ? [[keyspace, new Map([[shard, this.#view.shards.get(keyspace)!.get(shard)!]])]]
              : [],
          ),
          poolers: new Map(poolers.map((p) => [p.record.alias, p])),
        };
        const plan = planTarget(one, { keyspace, kind: "primary" }, { bad });
        return {
          keyspace,
          shard,
          term: this.#view.shards.get(keyspace)?.get(shard)?.term ?? 0,
          primary: plan.ok ? plan.endpoint.alias : undefined,
          replicas: poolers.filter((p) => p.record.type === "replica").map((p) => p.record.alias)
            .sort(),
          poolers: poolers.map((p) => ({
            alias: p.record.alias,
            cell: p.record.cell,
            type: p.record.type,
            tags: p.record.tags,
            address: p.record.pgAddress,
          })),
        };
      });
  }

  /** Stops the watches and fails buffered calls with 57P01. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    this.#closing.abort();
    clearTimeout(this.#badTimer);
    this.#wakeAll();
    const watches = [...this.#watches, ...this.#cellWatches.values()];
    this.#cellWatches.clear();
    await Promise.allSettled(watches.map((w) => w.close()));
    await Promise.allSettled(this.#loops);
  }
}
