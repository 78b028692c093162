/**
 * The topo client: typed access to the global topo and to each cell's local topo, shard locks and
 * leader elections.
 *
 * @module
 */

import { SqlState, TesseraError } from "../errors/mod.ts";
import { Logger } from "../log/mod.ts";
import type {
  LeaderCampaign,
  LeaderChange,
  LockHandle,
  TopoBackend,
  TopoWatch,
} from "./backend.ts";
import { EtcdBackend } from "./etcd_backend.ts";
import {
  cellKinds,
  DEFAULT_TOPO_ROOT,
  defaultCellRoot,
  GLOBAL_KINDS,
  globalBase,
  shardLockKey,
} from "./layout.ts";
import {
  type CellRecord,
  type DatabaseRecord,
  EndpointSchema,
  type GatewayRecord,
  isShardRange,
  type KeyspaceRecord,
  NAME_PATTERN,
  type OrchRecord,
  type PoolerRecord,
  type RoutingRules,
  type ShardRecord,
  TopoRootSchema,
  type UserRecord,
  type VSchema,
  type WorkflowRecord,
} from "./records.ts";
import { RecordStore } from "./store.ts";

/** Options of {@linkcode TopoClient.connect}. */
export interface TopoOptions {
  /** etcd client URLs of the global topo, e.g. `http://127.0.0.1:12379`. */
  endpoints: readonly string[] | string;
  /** Root of every key; `/tessera` when not given. */
  root?: string;
  /** Logger; a `topo` logger on standard error when not given. */
  logger?: Logger;
  /** Deadline of each etcd call in milliseconds; 5000 when not given. */
  callTimeoutMs?: number;
}

/** Options of {@linkcode TopoClient.lockShard}. */
export interface ShardLockOptions {
  /** Who takes the lock, e.g. `orch zone1-1: failover`; other waiters' errors name it. */
  holder: string;
  /** TTL of the lock's lease in seconds: a dead holder frees the lock after it. 15 by default. */
  ttlSeconds?: number;
  /** How long to wait for the lock before failing with `55P03`. 30000 ms by default. */
  timeoutMs?: number;
}

/** Options of {@linkcode TopoClient.elect}. */
export interface ElectionOptions {
  /** TTL of the candidate's lease in seconds: a dead leader is replaced after it. 10 by default. */
  ttlSeconds?: number;
}

/** The global topo's record stores. */
export class GlobalTopo {
  /** `cells/<cell>`: where each cell's local topo lives. */
  readonly cells: RecordStore<CellRecord, [cell: string]>;
  /** `databases/<db>`: durability policy and backup location. */
  readonly databases: RecordStore<DatabaseRecord, [database: string]>;
  /** `keyspaces/<ks>`. */
  readonly keyspaces: RecordStore<KeyspaceRecord, [keyspace: string]>;
  /** `keyspaces/<ks>/vschema`. */
  readonly vschemas: RecordStore<VSchema, [keyspace: string]>;
  /** `keyspaces/<ks>/shards/<range>`: primary alias and term. */
  readonly shards: RecordStore<ShardRecord, [keyspace: string, range: string]>;
  /** `routing_rules`. */
  readonly routingRules: RecordStore<RoutingRules, []>;
  /** `workflows/<name>`. */
  readonly workflows: RecordStore<WorkflowRecord, [workflow: string]>;
  /** `users/<name>`: SCRAM verifiers. */
  readonly users: RecordStore<UserRecord, [user: string]>;

  /** Stores over `backend` under `root`. */
  constructor(backend: TopoBackend, root: string, log: Logger) {
    const base = globalBase(root);
    this.cells = new RecordStore(backend, base, GLOBAL_KINDS.cells, log);
    this.databases = new RecordStore(backend, base, GLOBAL_KINDS.databases, log);
    this.keyspaces = new RecordStore(backend, base, GLOBAL_KINDS.keyspaces, log);
    this.vschemas = new RecordStore(backend, base, GLOBAL_KINDS.vschemas, log);
    this.shards = new RecordStore(backend, base, GLOBAL_KINDS.shards, log);
    this.routingRules = new RecordStore(backend, base, GLOBAL_KINDS.routingRules, log);
    this.workflows = new RecordStore(backend, base, GLOBAL_KINDS.workflows, log);
    this.users = new RecordStore(backend, base, GLOBAL_KINDS.users, log);
  }
}

/** A cell's local topo: the live processes of that cell, each registered under a lease. */
export class CellTopo {
  /** The cell's name. */
  readonly cell: string;
  /** The cell's local topo root. */
  readonly root: string;
  /** `poolers/<alias>`. */
  readonly poolers: RecordStore<PoolerRecord, [alias: string]>;
  /** `gateways/<alias>`. */
  readonly gateways: RecordStore<GatewayRecord, [alias: string]>;
  /** `orchs/<alias>`. */
  readonly orchs: RecordStore<OrchRecord, [alias: string]>;

  /** Stores over `backend` under the cell's `root`. */
  constructor(backend: TopoBackend, cell: string, root: string, log: Logger) {
    this.cell = cell;
    this.root = root;
    const base = `${root}/`;
    const kinds = cellKinds(cell);
    this.poolers = new RecordStore(backend, base, kinds.poolers, log);
    this.gateways = new RecordStore(backend, base, kinds.gateways, log);
    this.orchs = new RecordStore(backend, base, kinds.orchs, log);
  }
}

function endpointList(endpoints: readonly string[] | string): string[] {
  const list = typeof endpoints === "string"
    ? endpoints.split(",").map((e) => e.trim()).filter((e) => e !== "")
    : [...endpoints];
  if (list.length === 0) {
    throw new TesseraError(SqlState.invalidParameterValue, "no topo endpoints were given", {
      hint: "pass etcd client URLs such as http://127.0.0.1:12379",
    });
  }
  for (const endpoint of list) {
    if (!EndpointSchema.safeParse(endpoint).success) {
      throw new TesseraError(
        SqlState.invalidParameterValue,
        `invalid topo endpoint: '${endpoint}'`,
        {
          hint:
            "an endpoint is an http:// or https:// URL with host and port, e.g. http://127.0.0.1:12379",
        },
      );
    }
  }
  return list;
}

function checkName(what: string, value: string): void {
  if (!NAME_PATTERN.test(value)) {
    throw new TesseraError(SqlState.invalidParameterValue, `invalid ${what}: '${value}'`, {
      hint: `a ${what} is 1-128 letters, digits, '_', '.' or '-', not starting with '.' or '-'`,
    });
  }
}

/**
 * A connection to topo: the global topo over `options.endpoints`, and cell-local topos wherever
 * their cell records say (sharing the connection when a cell lives in the same etcd).
 *
 * @example
 * ```ts
 * const topo = await TopoClient.connect({ endpoints: "http://127.0.0.1:12379" });
 * try {
 *   await topo.global.keyspaces.put(["app"], { name: "app", sharded: true });
 *   const zone1 = await topo.cell("zone1");
 *   const reg = await zone1.poolers.registerUnderLease(record, { ttlSeconds: 10 });
 * } finally {
 *   await topo.close();
 * }
 * ```
 */
export class TopoClient {
  /** Root of every key, e.g. `/tessera`. */
  readonly root: string;
  /** The global topo's stores. */
  readonly global: GlobalTopo;
  #backend: TopoBackend;
  #log: Logger;
  #callTimeoutMs: number | undefined;
  #cellBackends = new Map<string, Promise<TopoBackend>>();
  #cells = new Map<string, CellTopo>();
  #closed = false;

  private constructor(backend: TopoBackend, root: string, log: Logger, callTimeoutMs?: number) {
    this.#backend = backend;
    this.root = root;
    this.#log = log;
    this.#callTimeoutMs = callTimeoutMs;
    this.global = new GlobalTopo(backend, root, log);
  }

  /**
   * Connects to the global topo and checks that etcd answers. Throws `08006` naming the endpoints
   * when it cannot be reached within the call timeout, and `22023` for malformed options.
   */
  static async connect(options: TopoOptions): Promise<TopoClient> {
    const endpoints = endpointList(options.endpoints);
    const root = options.root ?? DEFAULT_TOPO_ROOT;
    if (!TopoRootSchema.safeParse(root).success) {
      throw new TesseraError(SqlState.invalidParameterValue, `invalid topo root: '${root}'`, {
        hint: "a root starts with '/' and has no trailing '/', e.g. /tessera",
      });
    }
    const log = (options.logger ?? new Logger({ component: "topo" })).child({ topoRoot: root });
    const backendOptions = {
      endpoints,
      logger: log,
      ...(options.callTimeoutMs === undefined ? {} : { callTimeoutMs: options.callTimeoutMs }),
    };
    const backend = await EtcdBackend.connect(backendOptions);
    return new TopoClient(backend, root, log, options.callTimeoutMs);
  }

  /** The endpoints of the global topo. */
  get endpoints(): readonly string[] {
    return this.#backend.endpoints;
  }

  /** A cell record for `cell` in this topo's etcd at the default root (`<root>/cells/<cell>`). */
  defaultCellRecord(cell: string): CellRecord {
    checkName("cell name", cell);
    return { name: cell, endpoints: [...this.endpoints], root: defaultCellRoot(this.root, cell) };
  }

  /**
   * The local topo of `cell`, located through its global `cells/<cell>` record. Throws `42704`
   * when the cell is not in the global topo.
   */
  async cell(cell: string): Promise<CellTopo> {
    this.#checkOpen();
    const cached = this.#cells.get(cell);
    if (cached !== undefined) return cached;
    const entry = await this.global.cells.get(cell);
    if (entry === undefined) {
      throw new TesseraError(SqlState.undefinedObject, `cell '${cell}' is not in the global topo`, {
        hint: `add it first: topo.global.cells.put(['${cell}'], topo.defaultCellRecord('${cell}'))`,
      });
    }
    const backend = await this.#backendFor(entry.value.endpoints);
    const existing = this.#cells.get(cell);
    if (existing !== undefined) return existing;
    const topo = new CellTopo(backend, cell, entry.value.root, this.#log.child({ cell }));
    this.#cells.set(cell, topo);
    return topo;
  }

  #backendFor(endpoints: readonly string[]): Promise<TopoBackend> {
    const key = [...endpoints].sort().join(",");
    if (key === [...this.#backend.endpoints].sort().join(",")) {
      return Promise.resolve(this.#backend);
    }
    let backend = this.#cellBackends.get(key);
    if (backend === undefined) {
      backend = EtcdBackend.connect({
        endpoints,
        logger: this.#log,
        ...(this.#callTimeoutMs === undefined ? {} : { callTimeoutMs: this.#callTimeoutMs }),
      });
      this.#cellBackends.set(key, backend);
      backend.catch(() => this.#cellBackends.delete(key));
    }
    return backend;
  }

  /**
   * Takes the lock of shard `keyspace`/`range`, waiting up to `timeoutMs` (30 s by default).
   *
   * The lock is etcd3's `Lock` (a key under a lease, created only if absent). That Lock fails at
   * once when held, so this retries with jittered backoff until the timeout; waiters are not
   * served in arrival order. On timeout it throws `55P03` naming the current holder. The handle's
   * `signal` aborts if the lock is lost while held (the lease expired or was revoked, or etcd was
   * unreachable for longer than the TTL).
   */
  async lockShard(keyspace: string, range: string, options: ShardLockOptions): Promise<LockHandle> {
    this.#checkOpen();
    checkName("keyspace", keyspace);
    if (!isShardRange(range)) {
      throw new TesseraError(SqlState.invalidParameterValue, `invalid shard range: '${range}'`, {
        hint: "a shard range is Vitess-style, such as '-80', '80-', '40-80', '-' or '0'",
      });
    }
    return await this.#backend.lock(shardLockKey(this.root, keyspace, range), {
      holder: options.holder,
      ttlSeconds: options.ttlSeconds ?? 15,
      timeoutMs: options.timeoutMs ?? 30_000,
    });
  }

  /**
   * Starts campaigning as `candidateId` in election `name` (e.g. `orch`), with etcd3's Election:
   * candidates queue in order, the first is leader until it resigns or its lease is lost, then the
   * next takes over. Use `waitUntilElected()` and watch `signal` on the returned campaign.
   */
  elect(name: string, candidateId: string, options: ElectionOptions = {}): LeaderCampaign {
    this.#checkOpen();
    checkName("election name", name);
    return this.#backend.campaign(
      globalBase(this.root),
      name,
      candidateId,
      options.ttlSeconds ?? 10,
    );
  }

  /** The candidate id of election `name`'s current leader, if any. */
  async leader(name: string): Promise<string | undefined> {
    this.#checkOpen();
    checkName("election name", name);
    return await this.#backend.leader(globalBase(this.root), name);
  }

  /** Watches who leads election `name`; the first event is the current leader. */
  observeLeader(name: string): TopoWatch<LeaderChange> {
    this.#checkOpen();
    checkName("election name", name);
    return this.#backend.observeLeader(globalBase(this.root), name);
  }

  #checkOpen(): void {
    if (this.#closed) {
      throw new TesseraError(SqlState.objectNotInPrerequisiteState, "the topo client is closed");
    }
  }

  /**
   * Closes everything: watches end, records under leases are revoked (they disappear), locks are
   * released, campaigns resign, and the etcd connections close.
   */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    const cellBackends = [...this.#cellBackends.values()];
    this.#cellBackends.clear();
    await Promise.all([
      this.#backend.close(),
      ...cellBackends.map(async (b) => {
        try {
          await (await b).close();
        } catch {
          // it never connected
        }
      }),
    ]);
  }
}
