/**
 * The pooler's data path: listeners for Postgres clients, one pool of backends per (user,
 * database), sessions under transaction pooling, cancel forwarding, stats and shutdown.
 *
 * @module
 */

import type { Tracer } from "@opentelemetry/api";
import { SqlState, TesseraError } from "../shared/errors/mod.ts";
import {
  acceptFrontend,
  type FrontendAuth,
  type FrontendResult,
  type FrontendTls,
  type LoadedFrontendTls,
} from "../shared/frontend/mod.ts";
import { FastConn, type FastNet, FdReceiver, FdSender } from "../shared/fastnet/mod.ts";
import { Logger } from "../shared/log/mod.ts";
import { getTracer, tracingEnabled } from "../shared/trace/mod.ts";
import { Mux, type MuxStats, muxStats } from "../shared/mux/mod.ts";
import { MessageWriter, writeAll } from "../shared/wire/mod.ts";
import {
  type BackendConn,
  type BackendTarget,
  PinReason,
  Pool,
  type PoolSettings,
  type PoolStats,
  Session,
  type SessionHost,
} from "../shared/pooling/mod.ts";
import { ADMIN_DATABASES, type ClientInfo, serveAdminConsole } from "./admin.ts";
import { POOLER_VERSION } from "./version.ts";

/** What the admin console shows of a client, from its startup. */
function clientInfo(res: Extract<FrontendResult, { kind: "startup" }>): ClientInfo {
  let addr = "";
  let port = 0;
  try {
    const a: Deno.Addr | undefined = res.conn.remoteAddr;
    if (a?.transport === "tcp") [addr, port] = [a.hostname, a.port];
    else if (a?.transport === "unix") addr = a.path || "unix socket";
  } catch {
    // a gateway's multiplexed channel has no address of its own
  }
  return {
    addr,
    port,
    connectedAt: Date.now(),
    applicationName: res.params["application_name"] ?? "",
    tls: res.tls,
  };
}

/** A TCP address to listen on. */
export interface ListenAddress {
  /** Host name or IP, e.g. `127.0.0.1` or `0.0.0.0`. */
  hostname: string;
  /** Port; 0 picks a free one (see {@linkcode PoolerServer.addresses}). */
  port: number;
}

/** Where the pooler's Postgres is. */
export interface PostgresTarget {
  /** Folder of Postgres's Unix socket (preferred); when given, backends connect through it. */
  socketDir?: string;
  /** Host for TCP when no socket folder is given; `127.0.0.1` by default. */
  host?: string;
  /** Postgres's port (also names its socket file). */
  port: number;
  /** Password for the backends when Postgres asks for one (SCRAM-SHA-256, MD5, cleartext). */
  password?: string;
  /** Limit for opening one backend, in milliseconds; 10000 by default. */
  connectTimeoutMs?: number;
}

/**
 * This pooler's place among the worker processes that serve one pooler together (see
 * docs/pooler.md, "Worker processes"). Worker 0 listens and accepts every client connection, and
 * hands them in turn to each worker (itself included), passing the socket to another worker over
 * `<dir>/h<index>.sock`. Each worker owns the session ids `pid` with `pid % count === index`, and
 * takes the cancel requests (and stats requests) another worker received for them on
 * `<dir>/w<index>.sock`.
 */
export interface WorkerPlace {
  /** This worker's number, from 0. */
  index: number;
  /** How many workers there are (more than 1). */
  count: number;
  /** The workers' private folder (mode 0700) for their cancel sockets. */
  dir: string;
}

/** The socket a worker takes cancel requests for its sessions on. */
export function workerCancelSocket(dir: string, index: number): string {
  return `${dir}/w${index}.sock`;
}

/** The socket a worker other than 0 receives its client connections on. */
export function workerHandoffSocket(dir: string, index: number): string {
  return `${dir}/h${index}.sock`;
}

/** Options of {@linkcode startPooler}. Durations are in milliseconds. */
export interface PoolerOptions {
  /** TCP addresses for clients (`HOST:PORT` strings or objects); none when not given. */
  listen?: readonly (ListenAddress | string)[];
  /** Also listen on `<dir>/.s.PGSQL.<unixSocketPort>`. */
  unixSocketDir?: string;
  /** Port naming the Unix socket file; the first TCP port, else 5432, when not given. */
  unixSocketPort?: number;
  /** The Postgres this pooler owns. */
  postgres: PostgresTarget;
  /** Most backends lent at once per (user, database); 20 by default. */
  poolSize?: number;
  /** Backends kept open per pool even when idle; 0 by default. */
  minPoolSize?: number;
  /** Extra backends per pool usable only by admin users; 0 by default. */
  reservePoolSize?: number;
  /** Users that may use the reserve. */
  adminUsers?: readonly string[];
  /** Most client connections at once; 10000 by default. Further clients get 53300. */
  maxClientConnections?: number;
  /** Idle backends above the minimum are closed after this long; 300000 by default, 0 never. */
  idleTimeoutMs?: number;
  /**
   * A client that holds a backend idle in a transaction this long is closed (FATAL 25P03) and
   * its transaction rolled back, so that it cannot starve the pool; 0 (the default) never.
   */
  idleTransactionTimeoutMs?: number;
  /** Backends are replaced once this old; 3600000 by default, 0 never. */
  maxLifetimeMs?: number;
  /** Longest wait for a backend before SQLSTATE 53300; 30000 by default. */
  queueTimeoutMs?: number;
  /** Idle backends unused this long are checked with an empty query; 30000 by default, 0 never. */
  healthCheckIdleMs?: number;
  /** Time allowed for a health check; 5000 by default. */
  healthCheckTimeoutMs?: number;
  /** Prepared statements kept per backend (LRU); 256 by default. */
  preparedStatementCacheSize?: number;
  /**
   * Answer a plain BEGIN at once and send it with the transaction's first statement (a round
   * trip saved, no backend held between the two); true by default. Off: every BEGIN goes to
   * Postgres when the client sends it.
   */
  deferBegin?: boolean;
  /**
   * Where `pool.checkout` spans go (see SessionHost.tracer); by default the pooler's tracer when
   * Deno's OpenTelemetry is on (`OTEL_DENO=true`), else none.
   */
  tracer?: Tracer;
  /** How clients authenticate; trust for everyone when not given. */
  auth?: FrontendAuth;
  /** TLS for clients that ask for it (SSLRequest); refused (`N`) when not given. */
  tls?: FrontendTls | LoadedFrontendTls;
  /** Refuse TCP clients without TLS (needs `tls`). */
  requireTls?: boolean;
  /** Time allowed for a client's startup phase; 10000 by default. */
  startupTimeoutMs?: number;
  /**
   * At {@linkcode PoolerServer.shutdown}, how long transactions in flight may take to finish
   * before their clients are closed anyway; 30000 by default, 0 to close every client at once.
   */
  drainTimeoutMs?: number;
  /** Logger; a default `pooler` logger at level warn when not given. */
  logger?: Logger;
  /**
   * The fast network path (`shared/fastnet`) for client listeners and backend connections;
   * Deno's own networking when not given (and for TCP host names that are not IP literals).
   */
  fastNet?: FastNet;
  /**
   * One of several worker processes (which needs `fastNet`); alone when not given. Worker 0 takes
   * `listen` and `unixSocketDir`; the others listen on nothing but their worker sockets.
   */
  worker?: WorkerPlace;
  /**
   * Worker 0: how long `startPooler` waits for the other workers' handoff sockets before it
   * listens anyway (serving their share itself until they come); 20000 by default.
   */
  workerWaitMs?: number;
  /**
   * What the admin console's RELOAD does (the runtime reads the auth file and TLS files again);
   * without it, RELOAD is refused.
   */
  onReload?: () => Promise<void>;
}

/** Stats of the whole pooler. */
export interface PoolerStats {
  /** Client sessions now. */
  clients: number;
  /** Client sessions holding a backend now. */
  activeClients: number;
  /** Sessions accepted since start. */
  clientsTotal: number;
  /** Clients refused for exceeding `maxClientConnections`. */
  clientsRefused: number;
  /**
   * Cancel requests received, forwarded to a backend, and those that took a query waiting for a
   * backend out of the queue.
   */
  cancelRequests: { received: number; forwarded: number; dequeued: number };
  /** One entry per (user, database) pool. */
  pools: PoolStats[];
  /** Pinned sessions. */
  pinnedClients: number;
  /** Pinned sessions by reason (a session may count under several). */
  pins: Record<string, number>;
  /** Prepared statements across pools. */
  preparedStatements: { hits: number; misses: number; evictions: number };
  /** Gateways' multiplexed connections now, the client channels they carry, writes and reads. */
  multiplexed: MuxStats;
  /** Worker processes these stats cover (see {@linkcode PoolerServer.allStats}); absent for one. */
  workers?: number;
}

/** A running pooler. */
export interface PoolerServer {
  /** Addresses listened on (TCP with their real ports, then the Unix socket if any). */
  readonly addresses: Deno.Addr[];
  /** Current stats (of this process only, when it is one of several workers). */
  stats(): PoolerStats;
  /** Current stats of every worker process together (the same as `stats()` for a lone pooler). */
  allStats(): Promise<PoolerStats>;
  /** Serves new TLS connections with this certificate and key (a reload; open ones keep theirs). */
  setTls(tls: LoadedFrontendTls): void;
  /**
   * Drains and stops: closes the listeners at once (a new pooler may take the same ports), lets
   * every transaction in flight finish, and closes each client as soon as it is between
   * transactions, with FATAL 57P01 (admin shutdown), which a gateway takes as a reason to send
   * its next transaction elsewhere. Clients still in a transaction after `drainTimeoutMs` are
   * closed too (their transactions roll back). Then every backend is closed. Resolves once all of
   * it is done; later calls return the same promise.
   */
  shutdown(): Promise<void>;
}

/** The request code of a CancelRequest packet. */
const CANCEL_REQUEST_CODE = 80877102;
/** A worker asking another for its stats, on the cancel socket (not a Postgres code). */
const WORKER_STATS_CODE = 0x54657373;
/**
 * A worker telling another to close its idle backends to some databases (JSON list of names
 * after the 8-byte header), on the cancel socket (not a Postgres code).
 */
const WORKER_RELEASE_CODE = 0x54657374;

async function readExactly(conn: Deno.Conn, n: number): Promise<Uint8Array> {
  const out = new Uint8Array(n);
  let got = 0;
  while (got < n) {
    const r = await conn.read(out.subarray(got));
    if (r === null) throw new Error(`connection closed after ${got} of ${n} bytes`);
    got += r;
  }
  return out;
}

/**
 * Stats of several workers as one pooler's: counts add up, pools of the same user and database
 * are one pool (their longest wait is the longest of them).
 */
export function mergeStats(list: readonly PoolerStats[]): PoolerStats {
  const out: PoolerStats = {
    clients: 0,
    activeClients: 0,
    clientsTotal: 0,
    clientsRefused: 0,
    cancelRequests: { received: 0, forwarded: 0, dequeued: 0 },
    pools: [],
    pinnedClients: 0,
    pins: {},
    preparedStatements: { hits: 0, misses: 0, evictions: 0 },
    multiplexed: { connections: 0, channels: 0, writes: 0, framesOut: 0, reads: 0, framesIn: 0 },
  };
  const pools = new Map<string, PoolStats>();
  for (const s of list) {
    out.clients += s.clients;
    out.activeClients += s.activeClients;
    out.clientsTotal += s.clientsTotal;
    out.clientsRefused += s.clientsRefused;
    out.cancelRequests.received += s.cancelRequests.received;
    out.cancelRequests.forwarded += s.cancelRequests.forwarded;
    out.cancelRequests.dequeued += s.cancelRequests.dequeued;
    out.pinnedClients += s.pinnedClients;
    for (const [reason, n] of Object.entries(s.pins)) {
      out.pins[reason] = (out.pins[reason] ?? 0) + n;
    }
    out.preparedStatements.hits += s.preparedStatements.hits;
    out.preparedStatements.misses += s.preparedStatements.misses;
    out.preparedStatements.evictions += s.preparedStatements.evictions;
    for (const k of Object.keys(out.multiplexed) as (keyof MuxStats)[]) {
      out.multiplexed[k] += s.multiplexed[k];
    }
    for (const p of s.pools) {
      const key = `${p.user}\0${p.database}`;
      const seen = pools.get(key);
      if (seen === undefined) {
        pools.set(key, { ...p });
        continue;
      }
      for (const k of Object.keys(p) as (keyof PoolStats)[]) {
        if (k === "user" || k === "database") continue;
        seen[k] = k === "maxWaitMs" ? Math.max(seen[k], p[k]) : seen[k] + p[k];
      }
    }
  }
  out.pools = [...pools.values()];
  return out;
}

const TRUST_ALL: FrontendAuth = { lookup: () => ({ method: "trust" }) };

function parseListen(a: ListenAddress | string): ListenAddress {
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
    throw new RangeError(
      `'${name}' must be an integer of at least ${min}: received ${value}`,
    );
  }
  return value;
}

/**
 * Starts the pooler: listens, and lends backends of its Postgres to clients per transaction.
 *
 * @example
 * ```ts
 * const pooler = await startPooler({
 *   listen: ["127.0.0.1:16000"],
 *   postgres: { socketDir: "/run/pg", port: 25432 },
 *   poolSize: 20,
 * });
 * console.log(pooler.stats().pools);
 * await pooler.shutdown();
 * ```
 */
export async function startPooler(options: PoolerOptions): Promise<PoolerServer> {
  const server = new PoolerServerImpl(options);
  await server.start();
  return server;
}

class PoolerServerImpl implements PoolerServer, SessionHost {
  readonly log: Logger;
  readonly preparedCacheSize: number;
  readonly deferBegin: boolean;
  readonly tracer: Tracer | undefined;
  readonly addresses: Deno.Addr[] = [];

  #options: PoolerOptions;
  #target: BackendTarget;
  #poolSettings: PoolSettings;
  #admins: Set<string>;
  #maxClients: number;
  #listeners: Deno.Listener[] = [];
  #pools = new Map<string, Pool>();
  #sessions = new Map<number, Session>();
  #tasks = new Set<Promise<unknown>>();
  #timer: ReturnType<typeof setInterval> | undefined;
  #idleTransactionTimeoutMs: number;
  #nextPid: number;
  #stopping = false;
  #stopped: Promise<void> | null = null;
  #drainTimeoutMs: number;
  #counters = {
    clientsTotal: 0,
    clientsRefused: 0,
    cancelReceived: 0,
    cancelForwarded: 0,
    cancelDequeued: 0,
  };
  #handshakes = new Set<Deno.Conn>();
  #muxes = new Set<Mux>();
  #worker: WorkerPlace | undefined;
  /** Worker 0: channels to the other workers, by index (undefined while not connected). */
  #handoffs: (FdSender | undefined)[] = [];
  #handoffConnecting = false;
  /** Worker 0: the worker the next client connection goes to. */
  #nextWorker = 0;
  #handoffCounts: number[] = [];

  constructor(options: PoolerOptions) {
    this.#options = options;
    this.log = options.logger ?? new Logger({ component: "pooler", level: "warn" });
    const pg = options.postgres;
    this.#target = {
      socketDir: pg.socketDir,
      host: pg.host,
      port: checkCount(pg.port, "postgres.port", 1),
      password: pg.password,
      connectTimeoutMs: pg.connectTimeoutMs ?? 10_000,
    };
    const fast = options.fastNet;
    if (fast !== undefined) {
      this.#target.dial = (address) => fast.connect(address);
    }
    this.#idleTransactionTimeoutMs = checkCount(
      options.idleTransactionTimeoutMs ?? 0,
      "idleTransactionTimeoutMs",
      0,
    );
    const poolSize = checkCount(options.poolSize ?? 20, "poolSize", 1);
    this.#poolSettings = {
      poolSize,
      minPoolSize: checkCount(options.minPoolSize ?? 0, "minPoolSize", 0),
      reservePoolSize: checkCount(options.reservePoolSize ?? 0, "reservePoolSize", 0),
      idleTimeoutMs: checkCount(options.idleTimeoutMs ?? 300_000, "idleTimeoutMs", 0),
      maxLifetimeMs: checkCount(options.maxLifetimeMs ?? 3_600_000, "maxLifetimeMs", 0),
      queueTimeoutMs: checkCount(options.queueTimeoutMs ?? 30_000, "queueTimeoutMs", 0),
      healthCheckIdleMs: checkCount(options.healthCheckIdleMs ?? 30_000, "healthCheckIdleMs", 0),
      healthCheckTimeoutMs: checkCount(
        options.healthCheckTimeoutMs ?? 5_000,
        "healthCheckTimeoutMs",
        1,
      ),
    };
    if (this.#poolSettings.minPoolSize > poolSize) {
      throw new RangeError(
        `'minPoolSize' must not exceed 'poolSize' (${poolSize}): received ${this.#poolSettings.minPoolSize}`,
      );
    }
    this.deferBegin = options.deferBegin ?? true;
    this.tracer = options.tracer ?? (tracingEnabled() ? getTracer("pooler") : undefined);
    this.preparedCacheSize = checkCount(
      options.preparedStatementCacheSize ?? 256,
      "preparedStatementCacheSize",
      1,
    );
    this.#maxClients = checkCount(
      options.maxClientConnections ?? 10_000,
      "maxClientConnections",
      1,
    );
    this.#admins = new Set(options.adminUsers ?? []);
    this.#drainTimeoutMs = checkCount(options.drainTimeoutMs ?? 30_000, "drainTimeoutMs", 0);
    const w = options.worker;
    if (w !== undefined) {
      checkCount(w.count, "worker.count", 2);
      if (!Number.isInteger(w.index) || w.index < 0 || w.index >= w.count) {
        throw new RangeError(`'worker.index' must be in 0..${w.count - 1}: received ${w.index}`);
      }
      if (options.fastNet === undefined) {
        throw new RangeError(
          "worker processes need the fast socket path (they pass sockets to each other)",
        );
      }
      this.#worker = w;
    }
    // Virtual process ids start at a random point so they rarely look like real ones; a
    // worker's are those whose remainder by the count of workers is its index.
    const start = 0x10000000 + Math.floor(Math.random() * 0x1000000);
    this.#nextPid = w === undefined ? start : start - (start % w.count) + w.index;
  }

  async start(): Promise<void> {
    const tcp = (this.#options.listen ?? []).map(parseListen);
    try {
      const fast = this.#options.fastNet;
      const worker = this.#worker;
      if (worker !== undefined && worker.index === 0) {
        await this.#connectHandoffs(this.#options.workerWaitMs ?? 20_000);
      }
      for (const addr of tcp) {
        if (worker !== undefined && !fast!.accepts(addr)) {
          throw new RangeError(`worker processes listen on IP addresses only: '${addr.hostname}'`);
        }
        const l: Deno.Listener = fast?.accepts(addr)
          ? fast.listen(addr)
          : Deno.listen({ hostname: addr.hostname, port: addr.port, transport: "tcp" });
        this.#listeners.push(l);
        this.addresses.push(l.addr);
      }
      const dir = this.#options.unixSocketDir;
      if (dir !== undefined) {
        const port = this.#options.unixSocketPort ??
          (this.addresses[0] as Deno.NetAddr | undefined)?.port ?? 5432;
        const path = `${dir}/.s.PGSQL.${port}`;
        await Deno.remove(path).catch(() => undefined);
        const l: Deno.Listener = fast !== undefined
          ? fast.listen({ path })
          : Deno.listen({ transport: "unix", path });
        await Deno.chmod(path, 0o777).catch(() => undefined);
        this.#listeners.push(l);
        this.addresses.push(l.addr);
      }
      if (worker !== undefined) {
        const path = workerCancelSocket(worker.dir, worker.index);
        await Deno.remove(path).catch(() => undefined);
        const l = fast!.listen({ path });
        this.#listeners.push(l);
        this.#track(this.#acceptLoop(l, "peer"));
        if (worker.index > 0) {
          const hpath = workerHandoffSocket(worker.dir, worker.index);
          await Deno.remove(hpath).catch(() => undefined);
          const h = fast!.listen({ path: hpath });
          this.#listeners.push(h);
          this.#track(this.#acceptLoop(h, "handoff"));
        }
      }
    } catch (err) {
      for (const l of this.#listeners) l.close();
      throw err;
    }
    for (const l of this.#listeners) {
      if (l.addr.transport === "unix" && this.#isWorkerSocket(l.addr.path)) continue;
      this.#track(this.#acceptLoop(l));
    }
    const q = this.#poolSettings.queueTimeoutMs;
    const t = this.#idleTransactionTimeoutMs;
    const finest = Math.min(q > 0 ? q : 1000, t > 0 ? t : Infinity);
    const tick = Math.min(1000, Math.max(50, Math.floor(finest / 5)));
    this.#timer = setInterval(() => this.#maintain(), tick);
  }

  #track(p: Promise<unknown>): void {
    this.#tasks.add(p);
    p.finally(() => this.#tasks.delete(p));
  }

  #isWorkerSocket(path: string): boolean {
    const w = this.#worker;
    return w !== undefined &&
      (path === workerCancelSocket(w.dir, w.index) || path === workerHandoffSocket(w.dir, w.index));
  }

  /**
   * Worker 0: connects the channels to the other workers that are not connected, waiting up to
   * `waitMs` for them (0: one attempt each).
   */
  async #connectHandoffs(waitMs: number): Promise<void> {
    const w = this.#worker!;
    const fast = this.#options.fastNet!;
    if (this.#handoffConnecting) return;
    this.#handoffConnecting = true;
    try {
      const deadline = Date.now() + waitMs;
      for (let i = 1; i < w.count; i++) {
        if (this.#handoffs[i] !== undefined && !this.#handoffs[i]!.closed) continue;
        for (;;) {
          try {
            const conn = await fast.connect({ path: workerHandoffSocket(w.dir, i) });
            this.#handoffs[i] = new FdSender(fast.libc, conn.release());
            this.log.info("worker connected", { worker: i });
            break;
          } catch (err) {
            if (this.#stopping) return;
            if (Date.now() >= deadline) {
              if (waitMs > 0) {
                this.log.warn("a worker is not reachable yet; serving its share meanwhile", {
                  worker: i,
                  error: err,
                });
              }
              break;
            }
            await new Promise((r) => setTimeout(r, 100));
          }
        }
      }
    } finally {
      this.#handoffConnecting = false;
    }
  }

  /**
   * Worker 0: hands `conn` to the next worker in turn; false when it stays here (its turn, or
   * that worker cannot take it now).
   */
  #handOff(conn: Deno.Conn): boolean {
    const w = this.#worker!;
    const i = this.#nextWorker;
    this.#nextWorker = (i + 1) % w.count;
    if (i === 0) return false;
    const sender = this.#handoffs[i];
    if (sender === undefined || !(conn instanceof FastConn)) return false;
    const sent = sender.send(conn.fd);
    if (sent === "sent") {
      this.#handoffCounts[i] = (this.#handoffCounts[i] ?? 0) + 1;
      conn.close(); // this process's copy
      return true;
    }
    if (sent === "closed") {
      this.#handoffs[i] = undefined;
      this.log.warn("a worker's channel closed; serving its share until it is back", { worker: i });
    }
    return false;
  }

  /** A worker other than 0: serves the client connections worker 0 passes on `conn`. */
  #receiveHandoffs(conn: Deno.Conn): void {
    const fast = this.#options.fastNet!;
    if (!(conn instanceof FastConn)) {
      conn.close();
      return;
    }
    const receiver = new FdReceiver(fast.libc, fast.reactor, conn.release(), (fd) => {
      if (this.#stopping) {
        fast.libc.sym.close(fd);
        return;
      }
      this.#track(this.#handleConn(fast.adopt(fd, false)));
    }, () => {
      this.#receivers.delete(receiver);
    });
    this.#receivers.add(receiver);
  }

  #receivers = new Set<FdReceiver>();

  async #acceptLoop(
    listener: Deno.Listener,
    kind: "client" | "peer" | "handoff" = "client",
  ): Promise<void> {
    for (;;) {
      let conn: Deno.Conn;
      try {
        conn = await listener.accept();
      } catch (err) {
        if (this.#stopping) return;
        if (err instanceof Deno.errors.BadResource) return;
        this.log.warn("accept failed", { error: err });
        await new Promise((r) => setTimeout(r, 50));
        continue;
      }
      if (this.#stopping) {
        conn.close();
        continue;
      }
      if (kind === "peer") this.#track(this.#handlePeer(conn));
      else if (kind === "handoff") this.#receiveHandoffs(conn);
      else if (
        this.#worker?.index !== 0 || listener.addr.transport !== "tcp" || !this.#handOff(conn)
      ) this.#track(this.#handleConn(conn));
    }
  }

  /**
   * Another worker on the cancel socket: a CancelRequest for one of this worker's sessions, or a
   * stats request (answered with this worker's stats as JSON); the connection closes after it.
   */
  async #handlePeer(conn: Deno.Conn): Promise<void> {
    try {
      const head = await readExactly(conn, 8);
      const v = new DataView(head.buffer);
      const len = v.getInt32(0);
      const code = v.getInt32(4);
      if (code === CANCEL_REQUEST_CODE && len === 16) {
        const rest = new DataView((await readExactly(conn, 8)).buffer);
        await this.#cancel(rest.getInt32(0), rest.getInt32(4));
      } else if (code === WORKER_STATS_CODE && len === 8) {
        await writeAll(conn, new TextEncoder().encode(JSON.stringify(this.stats())));
      } else if (code === WORKER_RELEASE_CODE && len > 8 && len <= 65536) {
        const names: unknown = JSON.parse(
          new TextDecoder().decode(await readExactly(conn, len - 8)),
        );
        if (Array.isArray(names) && names.every((n) => typeof n === "string")) {
          this.#closeIdleOf(names);
        }
      }
    } catch (err) {
      if (!this.#stopping) this.log.warn("a worker's request failed", { error: err });
    } finally {
      try {
        conn.close();
      } catch {
        // already closed
      }
    }
  }

  /** This worker's stats merged with every other worker's (asked on their cancel sockets). */
  async allStats(): Promise<PoolerStats> {
    const w = this.#worker;
    if (w === undefined) return this.stats();
    const others: Promise<PoolerStats | undefined>[] = [];
    for (let i = 0; i < w.count; i++) {
      if (i !== w.index) others.push(this.#askStats(workerCancelSocket(w.dir, i)));
    }
    const got = (await Promise.all(others)).filter((s) => s !== undefined);
    return { ...mergeStats([this.stats(), ...got]), workers: 1 + got.length };
  }

  async #askStats(path: string): Promise<PoolerStats | undefined> {
    let conn: Deno.Conn | undefined;
    try {
      conn = await this.#options.fastNet!.connect({ path });
      const req = new Uint8Array(8);
      new DataView(req.buffer).setInt32(0, 8);
      new DataView(req.buffer).setInt32(4, WORKER_STATS_CODE);
      await writeAll(conn, req);
      const decoder = new TextDecoder();
      const buf = new Uint8Array(16384);
      let text = "";
      for (;;) {
        const n = await conn.read(buf);
        if (n === null) break;
        text += decoder.decode(buf.subarray(0, n), { stream: true });
      }
      return JSON.parse(text + decoder.decode()) as PoolerStats;
    } catch (err) {
      this.log.warn("a worker's stats could not be read", { socket: path, error: err });
      return undefined;
    } finally {
      try {
        conn?.close();
      } catch {
        // already closed
      }
    }
  }

  /** Serves a gateway's multiplexed connection: each channel is a client connection. */
  async #serveMux(conn: Deno.Conn): Promise<void> {
    const mux = new Mux(conn, { onOpen: (ch) => this.#track(this.#handleConn(ch, true)) });
    this.#muxes.add(mux);
    try {
      await mux.done;
    } finally {
      this.#muxes.delete(mux);
    }
    if (mux.failure !== null && !this.#stopping) {
      this.log.warn("a gateway's multiplexed connection failed; its sessions ended", {
        error: mux.failure,
      });
    }
  }

  async #handleConn(conn: Deno.Conn, channel = false): Promise<void> {
    if (conn.localAddr.transport === "tcp") {
      try {
        (conn as Deno.TcpConn).setNoDelay(true);
      } catch {
        // the client is already gone
      }
    }
    if (this.#sessions.size + this.#handshakes.size >= this.#maxClients) {
      this.#counters.clientsRefused++;
      const err = new TesseraError(SqlState.tooManyConnections, "sorry, too many clients already", {
        severity: "FATAL",
      });
      await writeAll(conn, new MessageWriter(128).errorResponse(err).view()).catch(() => {});
      conn.close();
      return;
    }
    this.#handshakes.add(conn);
    let res;
    try {
      const o = this.#options;
      res = await acceptFrontend(conn, {
        auth: o.auth ?? TRUST_ALL,
        ...(o.tls !== undefined ? { tls: o.tls } : {}),
        ...(o.requireTls !== undefined ? { requireTls: o.requireTls } : {}),
        startupTimeoutMs: o.startupTimeoutMs ?? 10_000,
        logger: this.log,
        allowMux: !channel,
      });
    } catch (err) {
      this.log.error("client startup failed", { error: err });
      return;
    } finally {
      this.#handshakes.delete(conn);
    }
    if (res.kind === "closed") return;
    if (res.kind === "mux") {
      if (this.#stopping) res.conn.close();
      else await this.#serveMux(res.conn);
      return;
    }
    if (res.kind === "cancel") {
      // The client's connection closes once Postgres has handled the cancel.
      void this.#cancel(res.pid, res.secret).finally(res.close);
      return;
    }
    if (this.#stopping) {
      conn.close();
      return;
    }
    if (ADMIN_DATABASES.includes(res.database)) {
      await this.#serveAdmin(res);
      return;
    }
    const pool = this.#poolFor(res.user, res.database);
    const pid = this.#allocatePid();
    const secret = crypto.getRandomValues(new Int32Array(1))[0]!;
    const session = new Session(this, pool, res, pid, secret, this.#admins.has(res.user));
    this.#clientInfo.set(session, clientInfo(res));
    this.#sessions.set(pid, session);
    this.#counters.clientsTotal++;
    try {
      await session.run(res);
    } catch (err) {
      this.log.error("session failed", { error: err });
    } finally {
      this.#sessions.delete(pid);
    }
  }

  #allocatePid(): number {
    const step = this.#worker?.count ?? 1;
    for (;;) {
      const pid = this.#nextPid;
      this.#nextPid = this.#nextPid >= 0x7ffffff0
        ? 0x10000000 + (this.#worker?.index ?? 0)
        : this.#nextPid + step;
      if (!this.#sessions.has(pid)) return pid;
    }
  }

  #poolFor(user: string, database: string): Pool {
    const key = `${user}\0${database}`;
    let pool = this.#pools.get(key);
    if (pool === undefined) {
      pool = new Pool(user, database, this.#target, this.#poolSettings, this.log);
      this.#pools.set(key, pool);
      // A pool made during a PAUSE (another user of a paused database...) waits too.
      if (this.#pausedAll || this.#pausedDatabases.has(database)) pool.pause();
    }
    return pool;
  }

  /** PAUSE without a database is in force (until RESUME). */
  #pausedAll = false;
  /** Databases named by a PAUSE in force. */
  #pausedDatabases = new Set<string>();

  /**
   * Closes the idle backends to `names` here and in the other workers: a statement that needs
   * those databases free of connections (DROP DATABASE...) is about to reach Postgres, which
   * waits up to 5 seconds for other connections to end.
   */
  releaseDatabases(names: string[]): void {
    this.#closeIdleOf(names);
    const w = this.#worker;
    if (w === undefined) return;
    const body = new TextEncoder().encode(JSON.stringify(names));
    const msg = new Uint8Array(8 + body.length);
    new DataView(msg.buffer).setInt32(0, msg.length);
    new DataView(msg.buffer).setInt32(4, WORKER_RELEASE_CODE);
    msg.set(body, 8);
    for (let i = 0; i < w.count; i++) {
      if (i === w.index) continue;
      const path = workerCancelSocket(w.dir, i);
      this.#track((async () => {
        let conn: Deno.Conn | undefined;
        try {
          conn = await this.#options.fastNet!.connect({ path });
          await writeAll(conn, msg);
        } catch (err) {
          this.log.warn("could not ask a worker to close its idle backends", {
            worker: i,
            error: err,
          });
        } finally {
          try {
            conn?.close();
          } catch {
            // already closed
          }
        }
      })());
    }
  }

  #closeIdleOf(names: string[]): void {
    for (const pool of this.#pools.values()) {
      if (!names.includes(pool.database)) continue;
      const n = pool.closeIdle();
      if (n > 0) {
        this.log.info("closed idle backends: a statement needs their database free", {
          database: pool.database,
          user: pool.user,
          closed: n,
        });
      }
    }
  }

  #clientInfo = new WeakMap<Session, ClientInfo>();
  #consoles = new Set<Deno.Conn>();

  /** The admin console (the database `pgbouncer`), for admin users only. */
  async #serveAdmin(res: Extract<FrontendResult, { kind: "startup" }>): Promise<void> {
    const conn = res.conn;
    try {
      if (!this.#admins.has(res.user)) {
        const err = new TesseraError(
          SqlState.invalidAuthorizationSpecification,
          `user "${res.user}" may not open the admin console`,
          { severity: "FATAL", hint: "admin users are given with --admin-user" },
        );
        await writeAll(conn, new MessageWriter(256).errorResponse(err).view()).catch(() => {});
        return;
      }
      this.#consoles.add(conn);
      await serveAdminConsole(conn, res.params, this.#allocatePid(), {
        version: POOLER_VERSION,
        serverVersion: () => {
          for (const p of this.#pools.values()) {
            const v = p.serverParams?.get("server_version");
            if (v !== undefined) return v;
          }
          return undefined;
        },
        stats: () => this.allStats(),
        pools: () => this.#pools.values(),
        pause: (db) => this.#pause(db),
        reload: async () => {
          const reload = this.#options.onReload;
          if (reload === undefined) {
            throw new TesseraError(
              SqlState.featureNotSupported,
              "RELOAD needs the pooler process (deno task pooler)",
            );
          }
          await reload();
        },
        resume: (db) => {
          const pools = this.#pausable(db);
          if (db === undefined) {
            this.#pausedAll = false;
            this.#pausedDatabases.clear();
          } else this.#pausedDatabases.delete(db);
          for (const p of pools) p.resume();
        },
        sessions: () =>
          [...this.#sessions.values()].map((s): [Session, ClientInfo | undefined] => [
            s,
            this.#clientInfo.get(s),
          ]),
      });
    } catch (err) {
      if (!this.#stopping) this.log.debug("admin console connection ended", { error: err });
    } finally {
      this.#consoles.delete(conn);
      try {
        conn.close();
      } catch {
        // already closed
      }
    }
  }

  setTls(tls: LoadedFrontendTls): void {
    if (this.#options.tls === undefined) throw new Error("TLS is not configured");
    this.#options = { ...this.#options, tls };
  }

  /** The pools PAUSE or RESUME act on: those of `database`, or all. */
  #pausable(database: string | undefined): Pool[] {
    if (this.#worker !== undefined) {
      throw new TesseraError(
        SqlState.featureNotSupported,
        "PAUSE and RESUME are not supported with --workers",
      );
    }
    const pools = [...this.#pools.values()].filter((p) =>
      database === undefined || p.database === database
    );
    if (database !== undefined && pools.length === 0) {
      throw new TesseraError(
        SqlState.invalidCatalogName,
        `no pool for database "${database}"`,
        { hint: "SHOW POOLS lists them" },
      );
    }
    return pools;
  }

  /**
   * PAUSE: no new transaction starts on these pools; waits until none runs on their backends
   * (a pinned session keeps its backend between transactions), then closes their idle backends,
   * so that Postgres can restart without a client seeing an error. A RESUME meanwhile ends it.
   */
  async #pause(database: string | undefined): Promise<void> {
    const pools = this.#pausable(database);
    if (database === undefined) this.#pausedAll = true;
    else this.#pausedDatabases.add(database);
    for (const p of pools) p.pause();
    for (;;) {
      if (this.#stopping || pools.some((p) => !p.paused)) return; // stopping, or resumed
      let busy = 0;
      for (const p of pools) {
        for (const b of p.backends) {
          const owner = b.owner as { betweenTransactions?: boolean } | null;
          if (b.lent && owner?.betweenTransactions !== true) busy++;
        }
      }
      if (busy === 0) break;
      await new Promise((r) => setTimeout(r, 20));
    }
    for (const p of pools) p.closeIdle();
  }

  /** Forwards a cancel for session `pid`; settles once Postgres has handled it. */
  #cancel(pid: number, secret: number): Promise<void> {
    this.#counters.cancelReceived++;
    const w = this.#worker;
    if (w !== undefined && pid >= 0 && pid % w.count !== w.index) {
      const p = this.#cancelElsewhere(w, pid, secret);
      this.#track(p);
      return p;
    }
    const session = this.#sessions.get(pid);
    if (session === undefined || session.secret !== secret) return Promise.resolve();
    const b = session.backend;
    if (b === null) {
      // Nothing runs for this client; a query of it waiting for a backend leaves the queue.
      if (session.cancelWait()) this.#counters.cancelDequeued++;
      return Promise.resolve();
    }
    this.#counters.cancelForwarded++;
    return this.cancelBackend(b, () => session.backend === b);
  }

  /**
   * Hands a cancel request for another worker's session to that worker (its cancel socket), and
   * settles once that worker has handled it (closed the connection). Never rejects.
   */
  async #cancelElsewhere(w: WorkerPlace, pid: number, secret: number): Promise<void> {
    const msg = new Uint8Array(16);
    const v = new DataView(msg.buffer);
    v.setInt32(0, 16);
    v.setInt32(4, CANCEL_REQUEST_CODE);
    v.setInt32(8, pid);
    v.setInt32(12, secret);
    let conn: Deno.Conn | undefined;
    try {
      conn = await this.#options.fastNet!.connect({
        path: workerCancelSocket(w.dir, pid % w.count),
      });
      await writeAll(conn, msg);
      const buf = new Uint8Array(1);
      while ((await conn.read(buf)) !== null) { /* the peer only closes */ }
    } catch (err) {
      this.log.warn("could not hand a cancel request to its worker", {
        worker: pid % w.count,
        error: err,
      });
    } finally {
      try {
        conn?.close();
      } catch {
        // already closed
      }
    }
  }

  /**
   * Sends a CancelRequest to Postgres for what runs on `b`, if `stillWanted()` once connected.
   * The promise never rejects (a failure is logged).
   */
  cancelBackend(b: BackendConn, stillWanted: () => boolean = () => true): Promise<void> {
    const p = b.cancel(this.#target, stillWanted).catch((err) =>
      this.log.warn("could not forward a cancel request", { error: err })
    );
    this.#track(p);
    return p;
  }

  sessionEnded(_session: Session): void {
    // The session is removed from the registry when its run() resolves.
  }

  #maintain(): void {
    const now = Date.now();
    for (const pool of this.#pools.values()) pool.maintain(now);
    const limit = this.#idleTransactionTimeoutMs;
    if (limit > 0) {
      for (const s of this.#sessions.values()) {
        const idle = s.idleInTransactionFor(now);
        if (idle < limit) continue;
        this.log.info("closing a client idle in a transaction", {
          session: s.pid,
          user: s.user,
          database: s.database,
          idleMs: idle,
        });
        s.terminateIdleInTransaction();
      }
    }
    const w = this.#worker;
    if (w !== undefined && w.index === 0 && !this.#stopping) {
      let missing = false;
      for (let i = 1; i < w.count; i++) {
        if (this.#handoffs[i] === undefined || this.#handoffs[i]!.closed) missing = true;
      }
      if (missing) this.#track(this.#connectHandoffs(0));
    }
  }

  stats(): PoolerStats {
    const pins: Record<string, number> = {};
    let pinned = 0;
    let active = 0;
    for (const s of this.#sessions.values()) {
      if (s.active) active++;
      const p = s.pins;
      if (p === 0) continue;
      pinned++;
      for (const [reason, bit] of Object.entries(PinReason)) {
        if ((p & bit) !== 0) pins[reason] = (pins[reason] ?? 0) + 1;
      }
    }
    const pools = [...this.#pools.values()].map((p) => p.snapshot());
    const prepared = { hits: 0, misses: 0, evictions: 0 };
    for (const p of pools) {
      prepared.hits += p.preparedHits;
      prepared.misses += p.preparedMisses;
      prepared.evictions += p.preparedEvictions;
    }
    return {
      clients: this.#sessions.size,
      activeClients: active,
      clientsTotal: this.#counters.clientsTotal,
      clientsRefused: this.#counters.clientsRefused,
      cancelRequests: {
        received: this.#counters.cancelReceived,
        forwarded: this.#counters.cancelForwarded,
        dequeued: this.#counters.cancelDequeued,
      },
      pools,
      pinnedClients: pinned,
      pins,
      preparedStatements: prepared,
      multiplexed: muxStats(this.#muxes),
    };
  }

  shutdown(): Promise<void> {
    this.#stopped ??= this.#shutdown();
    return this.#stopped;
  }

  async #shutdown(): Promise<void> {
    this.#stopping = true;
    for (const l of this.#listeners) {
      try {
        l.close();
      } catch {
        // already closed
      }
    }
    for (const c of [...this.#handshakes, ...this.#consoles]) {
      try {
        c.close();
      } catch {
        // already closed
      }
    }
    for (const h of this.#handoffs) h?.close();
    for (const r of this.#receivers) r.close();
    // Sessions being set up now are in the map already (their startup completed).
    const sessions = [...this.#sessions.values()];
    if (this.#drainTimeoutMs > 0 && sessions.length > 0) {
      this.log.info("draining: waiting for transactions in flight", {
        sessions: sessions.length,
        timeoutMs: this.#drainTimeoutMs,
      });
      for (const s of sessions) s.drain();
      let timer: ReturnType<typeof setTimeout> | undefined;
      const timedOut = new Promise<void>((r) => timer = setTimeout(r, this.#drainTimeoutMs));
      await Promise.race([Promise.allSettled(sessions.map((s) => s.done)), timedOut]);
      clearTimeout(timer);
    }
    const left = [...this.#sessions.values()];
    if (left.length > 0 && this.#drainTimeoutMs > 0) {
      this.log.warn("drain timeout: closing clients still in a transaction", {
        sessions: left.length,
      });
    }
    for (const s of left) s.terminate();
    await Promise.allSettled(left.map((s) => s.done));
    // Gateways' multiplexed connections: their sessions' last words are written first.
    await Promise.allSettled([...this.#muxes].map((m) => m.end()));
    clearInterval(this.#timer);
    await Promise.allSettled([...this.#pools.values()].map((p) => p.close()));
    await Promise.allSettled([...this.#tasks]);
  }
}
