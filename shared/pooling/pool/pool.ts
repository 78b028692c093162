/**
 * The pool of backends for one (user, database): lending with a preference for a backend that
 * already carries the caller's settings, a FIFO wait queue with a timeout (SQLSTATE 53300),
 * a reserve for admin sessions, minimum size, idle timeout, maximum lifetime and health checks
 * of idle backends.
 *
 * @module
 */

import * as clock from "../../clock/mod.ts";
import { SqlState, TesseraError } from "../../errors/mod.ts";
import type { Logger } from "../../log/mod.ts";
import { Backend } from "../../wire/mod.ts";
import { BackendConn, type BackendOwner, type BackendTarget, type Frame } from "./backend.ts";

/** Sizes and timings of a pool. */
export interface PoolSettings {
  /** Most backends lent at once to ordinary sessions. */
  poolSize: number;
  /** Backends kept open even when idle. */
  minPoolSize: number;
  /** Extra backends beyond `poolSize` that only admin sessions may use. */
  reservePoolSize: number;
  /** Idle backends above `minPoolSize` are closed after this long unused (0: never). */
  idleTimeoutMs: number;
  /** Backends are closed once this old, at their next return to the pool (0: never). */
  maxLifetimeMs: number;
  /** Longest wait for a backend before the session gets SQLSTATE 53300. */
  queueTimeoutMs: number;
  /** Idle backends unused for this long are checked with an empty query (0: never). */
  healthCheckIdleMs: number;
  /** Time allowed for a health check before the backend is closed. */
  healthCheckTimeoutMs: number;
}

/** Counters of one pool, as reported by the pooler's stats. */
export interface PoolStats {
  /** User the pool logs in as. */
  user: string;
  /** Database. */
  database: string;
  /** Backends open (lent, idle or being checked). */
  size: number;
  /** Backends idle in the pool. */
  idle: number;
  /** Backends lent to sessions. */
  active: number;
  /** Sessions waiting for a backend. */
  waiting: number;
  /** Backends being opened. */
  connecting: number;
  /** Backends lent so far. */
  checkouts: number;
  /** Checkouts that had to wait. */
  waits: number;
  /** Total time spent waiting, in milliseconds. */
  waitTimeMs: number;
  /** Longest wait, in milliseconds. */
  maxWaitMs: number;
  /** Waits that ended in 53300. */
  timeouts: number;
  /** Backends opened so far. */
  opened: number;
  /** Backends closed so far. */
  closed: number;
  /** Failed attempts to open a backend. */
  connectErrors: number;
  /** Prepared statements found on the backend when needed. */
  preparedHits: number;
  /** Prepared statements that had to be prepared on the backend. */
  preparedMisses: number;
  /** Prepared statements evicted from a backend's cache. */
  preparedEvictions: number;
}

interface Waiter {
  /** Given the backend lent, or (`b` null) the reason none will come. */
  done: (b: BackendConn | null, err: unknown) => void;
  key: string;
  admin: boolean;
  since: number;
}

/** One pool of backends. */
export class Pool {
  /** User the backends log in as. */
  readonly user: string;
  /** Database the backends are connected to. */
  readonly database: string;
  /** ParameterStatus values of the first backend opened (server_version, ...), once known. */
  serverParams: Map<string, string> | null = null;
  /** Normalized startup settings by the key of the settings a client sent (sessions fill it). */
  readonly startupCache: Map<string, ReadonlyMap<string, string>> = new Map();
  /** Canonical names of statements that Postgres parsed successfully for this pool. */
  readonly knownStatements: Set<string> = new Set();
  /** Counters (updated by the pool and by sessions). */
  readonly stats: PoolStats;

  #settings: PoolSettings;
  #target: BackendTarget;
  #log: Logger;
  #idle: BackendConn[] = [];
  #all = new Set<BackendConn>();
  #checking = new Set<BackendConn>();
  #creating = 0;
  #lent = 0;
  #waiters: Waiter[] = [];
  #adminWaiters = 0;
  #closed = false;
  #pending = new Set<Promise<unknown>>();

  /** A pool for `user` on `database`, opening backends at `target`. */
  constructor(
    user: string,
    database: string,
    target: BackendTarget,
    settings: PoolSettings,
    log: Logger,
  ) {
    this.user = user;
    this.database = database;
    this.#target = target;
    this.#settings = settings;
    this.#log = log.child({ pool: `${user}@${database}` });
    this.stats = {
      user,
      database,
      size: 0,
      idle: 0,
      active: 0,
      waiting: 0,
      connecting: 0,
      checkouts: 0,
      waits: 0,
      waitTimeMs: 0,
      maxWaitMs: 0,
      timeouts: 0,
      opened: 0,
      closed: 0,
      connectErrors: 0,
      preparedHits: 0,
      preparedMisses: 0,
      preparedEvictions: 0,
    };
  }

  /** Notes that Postgres parsed the statement `canonical` successfully. */
  rememberStatement(canonical: string): void {
    if (this.knownStatements.size >= 10_000) this.knownStatements.clear();
    this.knownStatements.add(canonical);
  }

  /** Where backends connect (for cancel requests). */
  get target(): BackendTarget {
    return this.#target;
  }

  /** The pool's settings. */
  get settings(): PoolSettings {
    return this.#settings;
  }

  /** A snapshot of the counters. */
  snapshot(): PoolStats {
    const s = this.stats;
    s.size = this.#all.size;
    s.idle = this.#idle.length;
    s.active = this.#lent;
    s.waiting = this.#waiters.length;
    s.connecting = this.#creating;
    return { ...s };
  }

  #limit(admin: boolean): number {
    return this.#settings.poolSize + (admin ? this.#settings.reservePoolSize : 0);
  }

  /**
   * Lends an idle backend at once when one may be lent (preferring one whose settings key is
   * `key`), else `null`. Never lends past waiting sessions.
   */
  tryAcquire(key: string, admin: boolean): BackendConn | null {
    if (this.#waiters.length > 0 || this.#closed || this.#paused) return null;
    if (this.#lent >= this.#limit(admin)) return null;
    const idle = this.#idle;
    const n = idle.length;
    if (n === 0) return null;
    let b = idle[n - 1]!;
    if (b.settingsKey !== key) {
      for (let i = n - 2; i >= 0; i--) {
        if (idle[i]!.settingsKey === key) {
          b = idle[i]!;
          idle[i] = idle[n - 1]!;
          idle[n - 1] = b;
          break;
        }
      }
    }
    idle.pop();
    this.#lend(b);
    return b;
  }

  /**
   * Waits for a backend. Rejects with TesseraError 53300 after `queueTimeoutMs`, or with the
   * error met while opening a backend (Postgres down, bad password, ...).
   */
  acquire(key: string, admin: boolean): Promise<BackendConn> {
    const b = this.tryAcquire(key, admin);
    if (b !== null) return Promise.resolve(b);
    return new Promise<BackendConn>((resolve, reject) => {
      this.wait(key, admin, (b, err) => b !== null ? resolve(b) : reject(err));
    });
  }

  /**
   * Like {@linkcode acquire} with a callback instead of a promise (the session's usual wait):
   * `done` gets the backend, or null and the error. It is called from inside the pool's own
   * calls (a release, a timeout, possibly this one): a caller that must not run there defers its
   * work. Call {@linkcode tryAcquire} first: this always queues.
   */
  wait(key: string, admin: boolean, done: (b: BackendConn | null, err: unknown) => void): void {
    if (this.#closed) {
      queueMicrotask(() =>
        done(
          null,
          new TesseraError(SqlState.adminShutdown, "the pooler is shutting down", {
            severity: "FATAL",
          }),
        )
      );
      return;
    }
    this.#waiters.push({ done, key, admin, since: clock.now() });
    if (admin) this.#adminWaiters++;
    this.#serveWaiters();
  }

  /**
   * Takes the waiter whose callback is `done` out of the queue and calls it with `err`; false
   * when there is none (it was served meanwhile, or never waited).
   */
  cancelWait(done: (b: BackendConn | null, err: unknown) => void, err: unknown): boolean {
    const waiters = this.#waiters;
    const i = waiters.findIndex((w) => w.done === done);
    if (i < 0) return false;
    if (waiters.splice(i, 1)[0]!.admin) this.#adminWaiters--;
    done(null, err);
    return true;
  }

  #lend(b: BackendConn): void {
    b.lent = true;
    this.#lent++;
    this.stats.checkouts++;
  }

  /** Gives idle backends to waiters, and opens backends for waiters that cannot be served. */
  #serveWaiters(): void {
    if (this.#paused) return;
    const waiters = this.#waiters;
    while (waiters.length > 0 && this.#idle.length > 0) {
      const i = this.#eligibleWaiter();
      if (i < 0) break;
      const w = i === 0 ? waiters.shift()! : waiters.splice(i, 1)[0]!;
      if (w.admin) this.#adminWaiters--;
      const b = this.#idle.pop()!;
      this.#lend(b);
      const waited = clock.now() - w.since;
      this.stats.waits++;
      this.stats.waitTimeMs += waited;
      if (waited > this.stats.maxWaitMs) this.stats.maxWaitMs = waited;
      w.done(b, null);
    }
    // Open backends for the waiters that new ones can serve (opens in flight count as served).
    if (waiters.length === 0 || this.#closed) return;
    const busy = this.#all.size + this.#creating;
    if (busy >= this.#limit(true)) return; // full: waiters wait for a release
    const admins = this.#adminWaiters;
    const ordinary = waiters.length - admins;
    let open = Math.min(ordinary - this.#creating, this.#settings.poolSize - busy);
    if (open < 0) open = 0;
    const adminRoom = this.#limit(true) - busy - open;
    const adminNeed = admins - Math.max(0, this.#creating - ordinary);
    if (adminNeed > 0 && adminRoom > 0) open += Math.min(adminNeed, adminRoom);
    for (; open > 0; open--) this.#open();
  }

  #eligibleWaiter(): number {
    const waiters = this.#waiters;
    for (let i = 0; i < waiters.length; i++) {
      if (this.#lent < this.#limit(waiters[i]!.admin)) return i;
    }
    return -1;
  }

  #open(): void {
    if (this.#closed) return;
    this.#creating++;
    const p = BackendConn.connect(
      this.#target,
      this.user,
      this.database,
      this.#log,
      (b) => this.#onBackendClosed(b),
    ).then(
      (b) => {
        this.#creating--;
        this.stats.opened++;
        if (this.#closed) {
          b.close();
          return;
        }
        this.serverParams ??= new Map(b.params);
        this.#all.add(b);
        this.#idle.push(b);
        this.#serveWaiters();
      },
      (err) => {
        this.#creating--;
        this.stats.connectErrors++;
        this.#log.warn("could not open a backend", { error: err });
        // Every waiter learns why, instead of waiting for the queue timeout.
        const waiters = this.#waiters.splice(0);
        this.#adminWaiters = 0;
        for (const w of waiters) w.done(null, err);
      },
    );
    this.#track(p);
  }

  #track(p: Promise<unknown>): void {
    this.#pending.add(p);
    p.finally(() => this.#pending.delete(p));
  }

  #onBackendClosed(b: BackendConn): void {
    if (!this.#all.delete(b)) return;
    this.stats.closed++;
    if (b.lent) {
      b.lent = false;
      this.#lent--;
    }
    this.#checking.delete(b);
    const i = this.#idle.indexOf(b);
    if (i >= 0) this.#idle.splice(i, 1);
    if (!this.#closed) this.#serveWaiters();
  }

  /** Takes back a lent backend: clean and idle, or closed when broken or too old. */
  release(b: BackendConn): void {
    if (!b.lent) return;
    if (b.cancelsInFlight > 0 && !b.closed) {
      // Not lent to anyone else before Postgres has delivered the cancel; until then it stays
      // counted as lent.
      b.owner = null;
      b.whenCancelsSettled(() => this.release(b));
      return;
    }
    b.lent = false;
    this.#lent--;
    b.owner = null;
    const t = clock.now();
    b.lastUsedAt = t;
    const max = this.#settings.maxLifetimeMs;
    if (b.broken || b.closed || this.#closed || (max > 0 && t - b.createdAt >= max)) {
      b.close();
      this.#serveWaiters();
      return;
    }
    this.#idle.push(b);
    if (this.#waiters.length > 0) this.#serveWaiters();
  }

  /** Closes a lent backend whose state is unknown. */
  discard(b: BackendConn): void {
    b.broken = true;
    b.owner = null;
    if (b.lent) {
      b.lent = false;
      this.#lent--;
    }
    b.close();
    this.#serveWaiters();
  }

  /**
   * Periodic work: times out waiters, closes idle and old backends, opens up to the minimum
   * size and health-checks backends idle for long.
   */
  maintain(now: number): void {
    if (this.#closed) return;
    const s = this.#settings;
    // Waiters past the queue timeout.
    if (this.#waiters.length > 0 && s.queueTimeoutMs > 0) {
      const keep: Waiter[] = [];
      for (const w of this.#waiters) {
        const waited = now - w.since;
        if (waited < s.queueTimeoutMs) {
          keep.push(w);
          continue;
        }
        this.stats.timeouts++;
        w.done(
          null,
          new TesseraError(
            SqlState.tooManyConnections,
            `no server connection available for ${this.user}@${this.database}: waited ${waited} ms, all ${
              this.#limit(w.admin)
            } connections of the pool are in use`,
            {
              detail:
                `pool size ${s.poolSize}, ${this.#lent} in use, ${this.#waiters.length} sessions waiting`,
              hint: "raise the pool size or the queue timeout, or shorten transactions",
            },
          ),
        );
      }
      this.#waiters = keep;
      this.#adminWaiters = keep.filter((w) => w.admin).length;
    }
    // Idle backends: too old, idle too long (above the minimum), or due for a health check.
    const total = () => this.#all.size + this.#creating;
    for (let i = 0; i < this.#idle.length;) {
      const b = this.#idle[i]!;
      const old = s.maxLifetimeMs > 0 && now - b.createdAt >= s.maxLifetimeMs;
      const unused = s.idleTimeoutMs > 0 && now - b.lastUsedAt >= s.idleTimeoutMs &&
        total() > s.minPoolSize;
      if (old || unused) {
        this.#idle.splice(i, 1);
        b.close();
        continue;
      }
      if (s.healthCheckIdleMs > 0 && now - b.lastUsedAt >= s.healthCheckIdleMs) {
        this.#idle.splice(i, 1);
        this.#healthCheck(b);
        continue;
      }
      i++;
    }
    if (this.#paused) return;
    for (let n = s.minPoolSize - total(); n > 0; n--) this.#open();
  }

  #paused = false;

  /** Whether lending is paused (the admin console's PAUSE). */
  get paused(): boolean {
    return this.#paused;
  }

  /**
   * Stops lending: sessions that want a backend wait in the queue (up to the queue timeout) until
   * {@linkcode resume}; backends lent now stay with their sessions. No backend is opened meanwhile.
   */
  pause(): void {
    this.#paused = true;
  }

  /** Lends again, first to the sessions that waited. */
  resume(): void {
    if (!this.#paused) return;
    this.#paused = false;
    this.#serveWaiters();
    this.maintain(clock.now());
  }

  /** Every open backend: lent, idle or being checked (for the admin console). */
  get backends(): ReadonlySet<BackendConn> {
    return this.#all;
  }

  /** Backends being health-checked now. */
  get checking(): number {
    return this.#checking.size;
  }

  /** Whether `b` is being health-checked. */
  isChecking(b: BackendConn): boolean {
    return this.#checking.has(b);
  }

  /** How long the session first in the queue has waited at `now` (ms); 0 when none waits. */
  oldestWaitMs(now: number): number {
    let oldest = now;
    for (const w of this.#waiters) if (w.since < oldest) oldest = w.since;
    return now - oldest;
  }

  /**
   * Closes the idle backends now (a statement that needs their database free of connections is
   * about to run: DROP DATABASE...); returns how many. Lent ones are left to their sessions.
   */
  closeIdle(): number {
    const idle = this.#idle.splice(0);
    for (const b of idle) b.close();
    return idle.length;
  }

  #healthCheck(b: BackendConn): void {
    this.#checking.add(b);
    const done = (ok: boolean) => {
      if (!this.#checking.delete(b)) return;
      clearTimeout(timer);
      b.owner = null;
      if (!ok || b.closed || this.#closed) {
        b.close();
        return;
      }
      b.lastUsedAt = clock.now();
      this.#idle.push(b);
      this.#serveWaiters();
    };
    const owner: BackendOwner = {
      onBackendMessage(_b: BackendConn, msg: Frame): void {
        if (msg.type === Backend.readyForQuery) done(msg.payload[0] === 0x49);
        else if (msg.type === Backend.errorResponse) b.broken = true;
      },
      onBackendBatchEnd: () => undefined,
      onBackendClosed: () => done(false),
    };
    const timer = setTimeout(() => {
      this.#log.warn("health check timed out; closing the backend", { backend: b.id });
      done(false);
    }, this.#settings.healthCheckTimeoutMs);
    b.owner = owner;
    b.out.w.query("");
    b.out.flush();
  }

  /** Closes every backend and fails every waiter; resolves once connects in flight settle. */
  async close(): Promise<void> {
    this.#closed = true;
    const err = new TesseraError(SqlState.adminShutdown, "the pooler is shutting down", {
      severity: "FATAL",
    });
    this.#adminWaiters = 0;
    for (const w of this.#waiters.splice(0)) w.done(null, err);
    for (const b of [...this.#all]) b.close();
    await Promise.allSettled([...this.#pending]);
    await Promise.allSettled([...this.#all].map((b) => b.done));
  }
}
