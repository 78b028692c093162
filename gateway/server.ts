/**
 * The gateway's data path: listeners for Postgres clients, and sessions under transaction pooling
 * of the gateway's connections to poolers. At the start of every transaction a session asks the
 * {@linkcode TargetResolver} which pooler serves its target now and borrows a connection from the
 * pool for that pooler, so settings and prepared statements follow the client to a new pooler.
 * A transaction whose first messages cannot be delivered (pooler or Postgres restarting) is sent
 * again on a fresh resolve, unseen by the client; a transaction lost in the middle fails with an
 * error and the session goes on.
 *
 * @module
 */

import { SqlState, TesseraError } from "../shared/errors/mod.ts";
import {
  acceptFrontend,
  type FrontendAuth,
  type FrontendTls,
  type LoadedFrontendTls,
} from "../shared/frontend/mod.ts";
import { Logger } from "../shared/log/mod.ts";
import { MuxDialer, type MuxStats, muxStats } from "../shared/mux/mod.ts";
import { MessageWriter, writeAll } from "../shared/wire/mod.ts";
import {
  BackendConn,
  type BackendTarget,
  Pool,
  type PoolSettings,
  type PoolSource,
  type PoolStats,
  Session,
  type SessionHost,
} from "../shared/pooling/mod.ts";
import {
  parseDatabaseName,
  type PoolerEndpoint,
  type SessionTarget,
  type ShardingSource,
  type TargetResolver,
} from "./routing/target.ts";
import { type KeyspaceVSchema, parseVSchema } from "../shared/vschema/mod.ts";
import { initParser, Planner } from "./planner/mod.ts";
import { buildVindexes, type Vindex } from "./sharding/mod.ts";
import { type ShardedHost, ShardedSession } from "./engine/session.ts";

/** A TCP address to listen on. */
export interface GatewayListenAddress {
  /** Host name or IP, e.g. `127.0.0.1` or `0.0.0.0`. */
  hostname: string;
  /** Port; 0 picks a free one (see {@linkcode GatewayServer.addresses}). */
  port: number;
}

/** Options of {@linkcode startGateway}. Durations are in milliseconds. */
export interface GatewayOptions {
  /** TCP addresses for clients (`HOST:PORT` strings or objects). */
  listen: readonly (string | GatewayListenAddress)[];
  /** Which pooler serves a target now. */
  resolver: TargetResolver;
  /** How clients authenticate. */
  auth: FrontendAuth;
  /** TLS for clients that ask for it (SSLRequest); refused (`N`) when not given. */
  tls?: FrontendTls | LoadedFrontendTls;
  /** Refuse TCP clients without TLS (needs `tls`). */
  requireTls?: boolean;
  /** Most client connections at once; 10000 by default. Further clients get FATAL 53300. */
  maxClientConnections?: number;
  /** Most client connections of one user at once; 0 (the default) for no limit. */
  maxConnectionsPerUser?: number;
  /**
   * Sessions this gateway holds open on one pooler per (user, keyspace) at once; 1000 by default.
   * The pooler pools them onto its Postgres backends: waiting there, next to a backend being
   * released, is faster than waiting here (and channels of a multiplexed connection are cheap).
   */
  poolSizePerPooler?: number;
  /** Longest wait for a connection to a pooler before SQLSTATE 53300; 30000 by default. */
  queueTimeoutMs?: number;
  /** Password the gateway presents to poolers that ask for one. */
  poolerPassword?: string;
  /**
   * How sessions reach a pooler over TCP: `mux` carries them all as channels of one multiplexed
   * connection per pooler (`shared/mux`; a pooler that does not know it gets a connection per
   * session; the default); `direct` opens a TCP connection per pooled connection.
   */
  poolerChannel?: "mux" | "direct";
  /**
   * Answer a plain BEGIN at once and send it with the transaction's first statement (a round
   * trip saved, no backend held between the two); true by default. Off: every BEGIN goes to
   * Postgres when the client sends it.
   */
  deferBegin?: boolean;
  /** Time allowed for a client's startup phase; 10000 by default. */
  startupTimeoutMs?: number;
  /**
   * How long a transaction whose first messages could not be delivered is tried again on a
   * fresh resolve (pooler or Postgres restarting) before the client gets the error; 10000 by
   * default (the buffering window).
   */
  retryWindowMs?: number;
  /** Logger; a default `gateway` logger at level warn when not given. */
  logger?: Logger;
  /**
   * Keyspace sharding facts (the topo resolver): sessions on a sharded keyspace are planned and
   * run by the sharding engine. Without it every keyspace is served as unsharded.
   */
  sharding?: ShardingSource;
  /** Most bytes one statement may gather in the gateway (sorts, aggregates); 128 MiB by default. */
  maxResultBytes?: number;
}

/** Stats of one pool of connections to a pooler. */
export interface GatewayPoolStats extends PoolStats {
  /** The pooler's alias in topo. */
  pooler: string;
  /** The pooler's address. */
  address: string;
}

/** Stats of the gateway's data path. */
export interface GatewayStats {
  /** Client sessions now. */
  clients: number;
  /** Client sessions by user. */
  clientsPerUser: Record<string, number>;
  /** Client sessions holding a pooler connection now. */
  activeClients: number;
  /** Sessions accepted since start. */
  clientsTotal: number;
  /** Clients refused for a connection limit. */
  clientsRefused: number;
  /** Cancel requests received / forwarded to a pooler. */
  cancelRequests: { received: number; forwarded: number };
  /** One entry per (pooler, user, keyspace) pool. */
  pools: GatewayPoolStats[];
  /** Transactions that failed because their pooler connection was lost in the middle. */
  transactionsFailedByFailover: number;
  /** Attempts to start a transaction again after its pooler connection failed at the start. */
  retries: number;
  /** Multiplexed connections to poolers now, the channels they carry, their writes and reads. */
  multiplexed: MuxStats;
}

/** A running gateway data path. */
export interface GatewayServer {
  /** Addresses listened on, with their real ports. */
  readonly addresses: Deno.NetAddr[];
  /** Current stats. */
  stats(): GatewayStats;
  /**
   * Cancels what session `pid` (the process id the gateway gave the client) runs now, as a
   * CancelRequest with its key would (for the Connect service). False when no such session.
   */
  cancelSession(pid: number): boolean;
  /**
   * Stops accepting clients, ends every session with 57P01 (admin shutdown) and closes every
   * pooler connection. Resolves once all of it is done.
   */
  shutdown(): Promise<void>;
}

function parseListen(a: GatewayListenAddress | string): GatewayListenAddress {
  if (typeof a !== "string") return a;
  const idx = a.lastIndexOf(":");
  const host = a.slice(0, idx);
  const port = Number(a.slice(idx + 1));
  if (idx <= 0 || !Number.isInteger(port) || port < 0 || port > 65535) {
    throw new RangeError(`'listen' must be HOST:PORT: received '${a}'`);
  }
  return { hostname: host.startsWith("[") ? host.slice(1, -1) : host, port };
}

function checkCount(value: number, name: string, min: number): number {
  if (!Number.isInteger(value) || value < min) {
    throw new RangeError(`'${name}' must be an integer of at least ${min}: received ${value}`);
  }
  return value;
}

/**
 * Where a pooler's Postgres-wire address points: `host:port`, `[v6]:port`, or the absolute path
 * of a Unix socket file (`<dir>/.s.PGSQL.<port>`).
 */
export function poolerTarget(
  address: string,
  password: string | undefined,
  connectTimeoutMs: number,
): BackendTarget {
  if (address.startsWith("/")) {
    const m = /^(.*)\/\.s\.PGSQL\.(\d+)$/.exec(address);
    if (m === null) {
      throw new RangeError(
        `a pooler's socket address must end in /.s.PGSQL.<port>: received '${address}'`,
      );
    }
    return { socketDir: m[1]!, port: Number(m[2]), password, connectTimeoutMs };
  }
  const { hostname, port } = parseListen(address);
  return { host: hostname, port, password, connectTimeoutMs };
}

/** Errors after which a transaction that has not started may be tried again elsewhere. */
function retryable(err: unknown): boolean {
  if (err instanceof TesseraError) return Session.isConnectionError(err.code);
  return err instanceof Error; // network errors (reset, refused, broken pipe)
}

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/**
 * Starts the gateway's data path: listens, and sends each client's transactions to the pooler
 * that serves the client's target at the start of that transaction.
 *
 * @example
 * ```ts
 * const gw = await startGateway({
 *   listen: ["127.0.0.1:15432"],
 *   resolver,
 *   auth: { lookup: () => ({ method: "trust" }) },
 * });
 * console.log(gw.stats().clients);
 * await gw.shutdown();
 * ```
 */
export async function startGateway(options: GatewayOptions): Promise<GatewayServer> {
  // Sharded keyspaces need the SQL parser (WebAssembly, loaded from disk once).
  if (options.sharding !== undefined) await initParser();
  const server = new GatewayServerImpl(options);
  await server.start();
  return server;
}

interface PoolEntry {
  pool: Pool;
  endpoint: PoolerEndpoint;
  lastUsedAt: number;
  /** Set when the entry was dropped (its pool closed after long unused). */
  dropped: boolean;
}

/** A session's source of pools: the resolver's pooler for its target, per transaction. */
class ResolvedPools implements PoolSource {
  #server: GatewayServerImpl;
  #target: SessionTarget;
  #user: string;
  #since = 0;

  constructor(server: GatewayServerImpl, target: SessionTarget, user: string) {
    this.#server = server;
    this.#target = target;
    this.#user = user;
  }

  async pool(): Promise<Pool> {
    const endpoint = await this.#server.resolver.resolve(this.#target);
    return this.#server.poolFor(endpoint, this.#user, this.#target.keyspace);
  }

  /** The pool entry {@linkcode poolNow} found last. */
  #entry: PoolEntry | null = null;

  poolNow(): Pool | null {
    const s = this.#server;
    const endpoint = s.resolver.resolveNow?.(this.#target) ?? null;
    if (endpoint === null) return null;
    const e = this.#entry;
    // The resolver hands out the same endpoint object while its view is unchanged: the pool is
    // then the one found last time (no key to build, no map to search).
    if (e !== null && endpoint === e.endpoint && !e.dropped) {
      e.lastUsedAt = s.clock;
      return e.pool;
    }
    this.#entry = s.entryFor(endpoint, this.#user, this.#target.keyspace);
    return this.#entry.pool;
  }

  async retry(pool: Pool, error: unknown, attempt: number): Promise<boolean> {
    const s = this.#server;
    const endpoint = s.endpointOf(pool);
    if (endpoint !== undefined) s.resolver.reportFailure(endpoint, error);
    if (!retryable(error) || s.stopping) return false;
    const now = Date.now();
    if (attempt === 0) this.#since = now;
    if (now - this.#since >= s.retryWindowMs) return false;
    s.counters.retries++;
    // The first retry goes at once (a stale idle connection); later ones back off.
    if (attempt > 0) await sleep(Math.min(500, 20 * 2 ** Math.min(attempt, 5)));
    return !s.stopping;
  }
}

class GatewayServerImpl implements GatewayServer, SessionHost, ShardedHost {
  readonly log: Logger;
  readonly preparedCacheSize = 256;
  readonly deferBegin: boolean;
  readonly addresses: Deno.NetAddr[] = [];
  readonly resolver: TargetResolver;
  readonly retryWindowMs: number;
  readonly counters = {
    clientsTotal: 0,
    clientsRefused: 0,
    cancelReceived: 0,
    cancelForwarded: 0,
    failedByFailover: 0,
    retries: 0,
  };
  stopping = false;
  readonly maxResultBytes: number;

  #options: GatewayOptions;
  #planner: Planner | null = null;
  #plannerVersion = -1;
  #vindexes = new Map<string, Map<string, Vindex>>();
  #poolSettings: PoolSettings;
  #maxClients: number;
  #maxPerUser: number;
  #listeners: Deno.Listener[] = [];
  #pools = new Map<string, PoolEntry>();
  #poolEndpoints = new WeakMap<Pool, PoolerEndpoint>();
  #sessions = new Map<number, Session | ShardedSession>();
  #perUser = new Map<string, number>();
  #handshakes = new Set<Deno.Conn>();
  #tasks = new Set<Promise<unknown>>();
  #timer: ReturnType<typeof setInterval> | undefined;
  #nextPid: number;
  #dialer: MuxDialer | null;

  constructor(options: GatewayOptions) {
    this.#options = options;
    this.log = options.logger ?? new Logger({ component: "gateway", level: "warn" });
    const channel = options.poolerChannel ?? "mux";
    if (channel !== "mux" && channel !== "direct") {
      throw new RangeError(`'poolerChannel' must be mux or direct: received '${channel}'`);
    }
    this.#dialer = channel === "mux" ? new MuxDialer({ logger: this.log }) : null;
    this.resolver = options.resolver;
    this.#poolSettings = {
      poolSize: checkCount(options.poolSizePerPooler ?? 1000, "poolSizePerPooler", 1),
      minPoolSize: 0,
      reservePoolSize: 0,
      idleTimeoutMs: 300_000,
      maxLifetimeMs: 3_600_000,
      queueTimeoutMs: checkCount(options.queueTimeoutMs ?? 30_000, "queueTimeoutMs", 0),
      healthCheckIdleMs: 30_000,
      healthCheckTimeoutMs: 5_000,
    };
    this.#maxClients = checkCount(
      options.maxClientConnections ?? 10_000,
      "maxClientConnections",
      1,
    );
    this.#maxPerUser = checkCount(options.maxConnectionsPerUser ?? 0, "maxConnectionsPerUser", 0);
    this.deferBegin = options.deferBegin ?? true;
    this.retryWindowMs = checkCount(options.retryWindowMs ?? 10_000, "retryWindowMs", 0);
    this.maxResultBytes = checkCount(
      options.maxResultBytes ?? 128 * 1024 * 1024,
      "maxResultBytes",
      1,
    );
    this.#nextPid = 0x10000000 + Math.floor(Math.random() * 0x1000000);
  }

  async start(): Promise<void> {
    const tcp = this.#options.listen.map(parseListen);
    try {
      for (const addr of tcp) {
        const l = Deno.listen({ hostname: addr.hostname, port: addr.port, transport: "tcp" });
        this.#listeners.push(l);
        this.addresses.push(l.addr);
      }
    } catch (err) {
      for (const l of this.#listeners) l.close();
      throw err;
    }
    for (const l of this.#listeners) this.#track(this.#acceptLoop(l));
    this.#timer = setInterval(() => this.#maintain(), 500);
    await Promise.resolve();
  }

  #track(p: Promise<unknown>): void {
    this.#tasks.add(p);
    p.finally(() => this.#tasks.delete(p));
  }

  async #acceptLoop(listener: Deno.Listener): Promise<void> {
    for (;;) {
      let conn: Deno.Conn;
      try {
        conn = await listener.accept();
      } catch (err) {
        if (this.stopping || err instanceof Deno.errors.BadResource) return;
        this.log.warn("accept failed", { error: err });
        await sleep(50);
        continue;
      }
      if (this.stopping) {
        conn.close();
        continue;
      }
      this.#track(this.#handleConn(conn));
    }
  }

  async #refuse(conn: Deno.Conn, err: TesseraError): Promise<void> {
    this.counters.clientsRefused++;
    const timer = setTimeout(() => {
      try {
        conn.close();
      } catch {
        // already closed
      }
    }, 1000);
    await writeAll(conn, new MessageWriter(256).errorResponse(err).view()).catch(() => {});
    clearTimeout(timer);
    try {
      conn.close();
    } catch {
      // already closed
    }
  }

  async #handleConn(conn: Deno.Conn): Promise<void> {
    try {
      (conn as Deno.TcpConn).setNoDelay(true);
    } catch {
      // the client is already gone
    }
    // Clients still in their startup phase are bounded too (a flood of half-open connections);
    // the limit on sessions is checked after startup, where every client can read the error.
    if (this.#handshakes.size >= this.#maxClients) {
      await this.#refuse(
        conn,
        new TesseraError(SqlState.tooManyConnections, "sorry, too many clients already", {
          severity: "FATAL",
          detail: `the gateway serves at most ${this.#maxClients} client connections`,
        }),
      );
      return;
    }
    this.#handshakes.add(conn);
    let res;
    try {
      const o = this.#options;
      res = await acceptFrontend(conn, {
        auth: o.auth,
        ...(o.tls !== undefined ? { tls: o.tls } : {}),
        ...(o.requireTls !== undefined ? { requireTls: o.requireTls } : {}),
        startupTimeoutMs: o.startupTimeoutMs ?? 10_000,
        logger: this.log,
      });
    } catch (err) {
      this.log.error("client startup failed", { error: err });
      return;
    } finally {
      this.#handshakes.delete(conn);
    }
    if (res.kind === "closed") return;
    if (res.kind === "cancel") {
      // The client's connection closes once the cancel has been handled downstream.
      void (this.#cancel(res.pid, res.secret) ?? Promise.resolve()).finally(res.close);
      return;
    }
    if (this.stopping || res.kind === "mux") {
      // (A multiplexing request is refused during startup: this port serves clients only.)
      res.conn.close();
      return;
    }
    let target: SessionTarget;
    try {
      target = parseDatabaseName(res.database);
    } catch (err) {
      const e = TesseraError.from(err);
      await this.#refuse(
        res.conn,
        new TesseraError(e.code, e.message, { severity: "FATAL", hint: e.hint }),
      );
      return;
    }
    const user = res.user;
    if (this.#sessions.size >= this.#maxClients) {
      await this.#refuse(
        res.conn,
        new TesseraError(SqlState.tooManyConnections, "sorry, too many clients already", {
          severity: "FATAL",
          detail: `the gateway serves at most ${this.#maxClients} client connections`,
        }),
      );
      return;
    }
    const n = this.#perUser.get(user) ?? 0;
    if (this.#maxPerUser > 0 && n >= this.#maxPerUser) {
      await this.#refuse(
        res.conn,
        new TesseraError(
          SqlState.tooManyConnections,
          `too many connections for role "${user}"`,
          {
            severity: "FATAL",
            detail: `the gateway allows at most ${this.#maxPerUser} connections per user`,
          },
        ),
      );
      return;
    }
    this.#perUser.set(user, n + 1);
    const pid = this.#allocatePid();
    const secret = crypto.getRandomValues(new Int32Array(1))[0]!;
    const sharded = this.#options.sharding?.keyspaceSharding(target.keyspace)?.sharded === true;
    const session = sharded
      ? new ShardedSession(this, target, res, pid, secret)
      : new Session(this, new ResolvedPools(this, target, user), res, pid, secret, false);
    this.#sessions.set(pid, session);
    this.counters.clientsTotal++;
    try {
      if (session instanceof ShardedSession) await session.run();
      else await session.run(res);
    } catch (err) {
      this.log.error("session failed", { error: err });
    } finally {
      this.#sessions.delete(pid);
      const left = (this.#perUser.get(user) ?? 1) - 1;
      if (left <= 0) this.#perUser.delete(user);
      else this.#perUser.set(user, left);
    }
  }

  #allocatePid(): number {
    for (;;) {
      const pid = this.#nextPid;
      this.#nextPid = this.#nextPid >= 0x7ffffff0 ? 0x10000000 : this.#nextPid + 1;
      if (!this.#sessions.has(pid)) return pid;
    }
  }

  /** The pool of connections to `endpoint` for `user` on `keyspace`, created on demand. */
  poolFor(endpoint: PoolerEndpoint, user: string, keyspace: string): Pool {
    return this.entryFor(endpoint, user, keyspace).pool;
  }

  /** Milliseconds since the epoch, as of the last maintenance tick (twice a second). */
  clock = Date.now();

  /** The pool entry for `user` on `keyspace` at `endpoint`'s pooler (made on first use). */
  entryFor(endpoint: PoolerEndpoint, user: string, keyspace: string): PoolEntry {
    const key = `${endpoint.address}\0${user}\0${keyspace}`;
    let entry = this.#pools.get(key);
    const now = Date.now();
    if (entry === undefined) {
      const target = this.#poolerTarget(endpoint);
      const pool = new Pool(user, keyspace, target, this.#poolSettings, this.log);
      entry = { pool, endpoint, lastUsedAt: now, dropped: false };
      this.#pools.set(key, entry);
      this.#poolEndpoints.set(pool, endpoint);
    } else {
      entry.endpoint = endpoint;
      entry.lastUsedAt = now;
      this.#poolEndpoints.set(entry.pool, endpoint);
    }
    return entry;
  }

  #poolerTarget(endpoint: PoolerEndpoint): BackendTarget {
    const target = poolerTarget(endpoint.address, this.#options.poolerPassword, 5_000);
    if (this.#dialer !== null) target.dial = this.#dialer.dial;
    return target;
  }

  /** The pooler a pool connects to. */
  endpointOf(pool: Pool): PoolerEndpoint | undefined {
    return this.#poolEndpoints.get(pool);
  }

  /**
   * Forwards a cancel for session `pid`; settles once it has been handled downstream. `null`
   * when no session has that key.
   */
  #cancel(pid: number, secret: number | null): Promise<void> | null {
    this.counters.cancelReceived++;
    const session = this.#sessions.get(pid);
    if (session === undefined || (secret !== null && session.secret !== secret)) return null;
    if (session instanceof ShardedSession) {
      this.counters.cancelForwarded++;
      return session.cancel();
    }
    const b = session.backend;
    if (b === null) return Promise.resolve(); // nothing runs for this client
    this.counters.cancelForwarded++;
    return this.cancelBackend(b, () => session.backend === b);
  }

  cancelSession(pid: number): boolean {
    return this.#cancel(pid, null) !== null;
  }

  /**
   * Sends a CancelRequest to the pooler for what runs on `b`, if `stillWanted()` once connected.
   * The promise never rejects (a failure is logged).
   */
  cancelBackend(b: BackendConn, stillWanted: () => boolean = () => true): Promise<void> {
    const p = b.cancel(b.target, stillWanted).catch((err) =>
      this.log.warn("could not forward a cancel request", { error: err })
    );
    this.#track(p);
    return p;
  }

  // ---------------------------------------------------------------- sharded sessions

  /** The planner over the vschemas in topo, rebuilt when they change. */
  planner(): Planner {
    const src = this.#options.sharding;
    const version = src?.shardingVersion ?? 0;
    if (this.#planner === null || version !== this.#plannerVersion) {
      const vschemas: Record<string, KeyspaceVSchema> = {};
      for (const [ks, raw] of src?.vschemas() ?? new Map<string, unknown>()) {
        try {
          vschemas[ks] = parseVSchema(raw, ks);
        } catch (err) {
          this.log.warn("ignoring an invalid vschema in topo", { keyspace: ks, error: err });
        }
      }
      this.#planner ??= new Planner();
      this.#planner.setVSchemas(vschemas);
      this.#vindexes = new Map(
        Object.entries(vschemas).map(([ks, vs]) => [ks, buildVindexes(vs, ks)]),
      );
      this.#plannerVersion = version;
    }
    return this.#planner;
  }

  shards(keyspace: string): string[] {
    return this.#options.sharding?.keyspaceSharding(keyspace)?.shards ?? [];
  }

  vindex(keyspace: string, name: string): Vindex {
    this.planner();
    const v = this.#vindexes.get(keyspace)?.get(name);
    if (v === undefined) {
      throw new TesseraError(
        SqlState.undefinedObject,
        `vindex "${name}" does not exist in keyspace "${keyspace}"`,
      );
    }
    return v;
  }

  async connectShard(
    endpoint: PoolerEndpoint,
    user: string,
    database: string,
  ): Promise<BackendConn> {
    const target = this.#poolerTarget(endpoint);
    return await BackendConn.connect(target, user, database, this.log, () => {});
  }

  transactionLost(_session: Session): void {
    this.counters.failedByFailover++;
  }

  sessionEnded(_session: Session): void {
    // The session is removed from the registry when its run() resolves.
  }

  #maintain(): void {
    const now = this.clock = Date.now();
    for (const [key, entry] of this.#pools) {
      const pool = entry.pool;
      pool.maintain(now);
      // A pool unused for long (its pooler left, or nobody uses it) is closed.
      const s = pool.snapshot();
      if (
        s.active === 0 && s.waiting === 0 && s.connecting === 0 &&
        now - entry.lastUsedAt > 600_000
      ) {
        this.#pools.delete(key);
        entry.dropped = true;
        this.#track(pool.close());
      }
    }
  }

  stats(): GatewayStats {
    let active = 0;
    for (const s of this.#sessions.values()) if (s.active) active++;
    return {
      clients: this.#sessions.size,
      clientsPerUser: Object.fromEntries(this.#perUser),
      activeClients: active,
      clientsTotal: this.counters.clientsTotal,
      clientsRefused: this.counters.clientsRefused,
      cancelRequests: {
        received: this.counters.cancelReceived,
        forwarded: this.counters.cancelForwarded,
      },
      pools: [...this.#pools.values()].map((e) => ({
        ...e.pool.snapshot(),
        pooler: e.endpoint.alias,
        address: e.endpoint.address,
      })),
      transactionsFailedByFailover: this.counters.failedByFailover,
      retries: this.counters.retries,
      multiplexed: this.#dialer?.stats() ?? muxStats([]),
    };
  }

  async shutdown(): Promise<void> {
    if (this.stopping) return;
    this.stopping = true;
    clearInterval(this.#timer);
    for (const l of this.#listeners) {
      try {
        l.close();
      } catch {
        // already closed
      }
    }
    for (const c of this.#handshakes) {
      try {
        c.close();
      } catch {
        // already closed
      }
    }
    for (const s of this.#sessions.values()) s.terminate();
    await Promise.allSettled([...this.#sessions.values()].map((s) => s.done));
    await Promise.allSettled([...this.#pools.values()].map((e) => e.pool.close()));
    this.#dialer?.close();
    await Promise.allSettled([...this.#tasks]);
  }
}
