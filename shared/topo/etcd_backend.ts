/**
 * The etcd implementation of {@linkcode TopoBackend}, over `npm:etcd3`.
 *
 * What it adds to etcd3:
 * - a deadline on every call, and errors as TesseraErrors (`08006` naming the endpoints when
 *   etcd cannot be reached);
 * - watches that resume after a disconnection from the revision after the last one they
 *   delivered, and resync when that revision was compacted. (etcd3's Watcher resumes from the
 *   last response header's revision + 1, which it takes from the reconnection's "created"
 *   response before the events it missed have arrived, so a second disconnection during catch-up
 *   skips them; on compaction it only emits an error.);
 * - records under leases that are written again under a new lease when theirs is lost;
 * - shard locks over etcd3's `Lock`, retried with backoff until a timeout (etcd3's Lock fails at
 *   once when the lock is held), with loss detection;
 * - leader elections over etcd3's `Election`, cleaned up properly when a waiting candidate
 *   resigns.
 *
 * @module
 */

import {
  type Campaign,
  ClientClosedError,
  type Election,
  Etcd3,
  EtcdLockFailedError,
  GRPCDeadlineExceededError,
  GRPCUnavailableError,
  type IKeyValue,
  isRecoverableError,
  type IWatchResponse,
  type Lease,
  type Lock,
  type Watcher,
} from "./etcd3.ts";
import { circuitBreaker, ConsecutiveBreaker, handleWhen, noop } from "cockatiel";
import { SqlState, TesseraError } from "../errors/mod.ts";
import type { Logger } from "../log/mod.ts";
import type {
  LeaderCampaign,
  LeaderChange,
  LeaseRegistration,
  LockHandle,
  LockOptions,
  PutOptions,
  PutResult,
  RawKv,
  RawWatchEvent,
  TopoBackend,
  TopoWatch,
  WaitOptions,
  WatchOptions,
  WatchTarget,
} from "./backend.ts";
import { EventQueue, MappedWatch } from "./event_queue.ts";

/** Options of {@linkcode EtcdBackend.connect}. */
export interface EtcdBackendOptions {
  /** etcd client URLs, e.g. `["http://127.0.0.1:12379"]`. */
  endpoints: readonly string[];
  /** Where the backend logs (reconnections, lost leases, corrupt records). */
  logger: Logger;
  /** Deadline of each call to etcd, in milliseconds; 5000 when not given. */
  callTimeoutMs?: number;
}

const DEFAULT_CALL_TIMEOUT_MS = 5000;
const RETRY_INITIAL_MS = 100;
const RETRY_MAX_MS = 2000;
const LOCK_RETRY_INITIAL_MS = 20;
const LOCK_RETRY_MAX_MS = 250;
const CANCEL_TIMEOUT_MS = 2000;

const decoder = new TextDecoder();

function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal?.aborted) return resolve();
    const done = () => {
      clearTimeout(timer);
      signal?.removeEventListener("abort", done);
      resolve();
    };
    const timer = setTimeout(done, ms);
    signal?.addEventListener("abort", done, { once: true });
  });
}

/** Resolves when `promise` settles or after `ms`, whichever is first; never rejects. */
async function settleWithin(promise: Promise<unknown>, ms: number): Promise<void> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  await Promise.race([
    promise.catch(() => undefined),
    new Promise<void>((resolve) => {
      timer = setTimeout(resolve, ms);
    }),
  ]);
  clearTimeout(timer);
}

function errorMessage(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

/** Whether `err` means etcd could not be reached in time (as opposed to refusing the request). */
function isConnectionError(err: unknown): boolean {
  if (!(err instanceof Error)) return false;
  return isRecoverableError(err) ||
    err instanceof GRPCUnavailableError ||
    err instanceof GRPCDeadlineExceededError ||
    err instanceof ClientClosedError ||
    // cockatiel's errors when the per-host circuit breaker is open or a retry was abandoned (they
    // carry a marker, not a name of their own)
    "isBrokenCircuitError" in err || "isTaskCancelledError" in err ||
    err.name === "BrokenCircuitError" || err.name === "TaskCancelledError";
}

function toRawKv(kv: IKeyValue): RawKv {
  return {
    key: kv.key.toString(),
    value: new Uint8Array(kv.value),
    revision: Number(kv.mod_revision),
    createRevision: Number(kv.create_revision),
    version: Number(kv.version),
    lease: kv.lease,
  };
}

/**
 * The backoff etcd3's watch managers use to reconnect their stream: 0 ms twice, then 100 ms
 * doubling up to 2 s, and back to the start after each successful connection. Our own watches
 * detach from etcd3 on disconnection and reconnect themselves, so this paces only the watches
 * etcd3 makes for elections. etcd3 also arms this timer (twice: on the stream's error and on its
 * end) whenever it tears down a stream it no longer needs, e.g. after the last watch on it is
 * canceled; two 0 ms steps, and 0 ms once the client is closing, keep those timers from
 * outliving `close()`. etcd3's default starts higher and grows to 30 s.
 */
class WatchReconnectBackoff {
  readonly #attempt: number;
  readonly #closing: { value: boolean };
  constructor(attempt: number, closing: { value: boolean }) {
    this.#attempt = attempt;
    this.#closing = closing;
  }
  get duration(): number {
    if (this.#closing.value || this.#attempt < 2) return 0;
    return Math.min(RETRY_INITIAL_MS * 2 ** (this.#attempt - 2), RETRY_MAX_MS);
  }
  next(): WatchReconnectBackoff {
    return new WatchReconnectBackoff(this.#attempt + 1, this.#closing);
  }
}

/** Doubling delay with jitter, from `initial` up to `max` milliseconds. */
class Backoff {
  #initial: number;
  #max: number;
  #current: number;
  constructor(initial: number, max: number) {
    this.#initial = initial;
    this.#max = max;
    this.#current = initial;
  }
  next(): number {
    const base = this.#current;
    this.#current = Math.min(this.#current * 2, this.#max);
    return Math.round(base / 2 + Math.random() * base / 2);
  }
  reset(): void {
    this.#current = this.#initial;
  }
}

/** Callbacks of {@linkcode EtcdWatch}. */
interface WatchSink {
  onEvent(event: RawWatchEvent): void;
  onConnection?(connected: boolean): void;
}

/**
 * A watch on one key or prefix that owns its resumption. It keeps the last revision it delivered;
 * when etcd3 reports the stream disconnected it detaches etcd3's Watcher (which would otherwise
 * resume from the last response header's revision) and subscribes again from that revision + 1.
 * When etcd cancels the watch (its revision was compacted), it lists the current state and
 * delivers a `resync` event, then watches from the list's revision + 1.
 */
class EtcdWatch {
  #client: Etcd3;
  #target: WatchTarget;
  #sink: WatchSink;
  #log: Logger;
  #callTimeoutMs: number;
  #last = 0;
  #watcher: Watcher | undefined;
  #connected = false;
  #closed = new AbortController();
  #backoff = new Backoff(RETRY_INITIAL_MS, RETRY_MAX_MS);
  #running: Promise<void> | undefined;

  constructor(
    client: Etcd3,
    target: WatchTarget,
    sink: WatchSink,
    log: Logger,
    callTimeoutMs: number,
  ) {
    this.#client = client;
    this.#target = target;
    this.#sink = sink;
    this.#log = log.child({ watch: "key" in target ? target.key : `${target.prefix}*` });
    this.#callTimeoutMs = callTimeoutMs;
  }

  start(fromRevision: number | undefined): void {
    if (fromRevision === undefined) {
      this.#retry(() => this.#resync(), 0);
    } else {
      if (!Number.isInteger(fromRevision) || fromRevision < 1) {
        throw new RangeError(`'fromRevision' must be a positive integer: received ${fromRevision}`);
      }
      this.#last = fromRevision - 1;
      this.#subscribe();
    }
  }

  #retry(step: () => Promise<void> | void, delayMs: number): void {
    const signal = this.#closed.signal;
    if (signal.aborted) return;
    this.#running = (async () => {
      await sleep(delayMs, signal);
      if (!signal.aborted) await step();
    })();
  }

  #subscribe(): void {
    if (this.#closed.signal.aborted) return;
    // A namespace of its own gives each subscription its own etcd3 watch manager (and gRPC
    // stream): a manager that tears its stream down arms reconnect timers that only reset when a
    // stream connects, so sharing one manager between short-lived watches lets them grow.
    const builder = this.#client.namespace("").watch();
    if ("key" in this.#target) builder.key(this.#target.key);
    else builder.prefix(this.#target.prefix);
    builder.startRevision(String(this.#last + 1));
    // watcher() (not create()) so that listeners are in place before anything can arrive.
    const watcher = builder.watcher();
    this.#watcher = watcher;
    watcher.on("connected", () => {
      if (watcher !== this.#watcher) return;
      this.#backoff.reset();
      this.#connected = true;
      this.#log.debug("watch connected", { fromRevision: this.#last + 1 });
      this.#sink.onConnection?.(true);
    });
    watcher.on("data", (res) => this.#onData(watcher, res));
    watcher.on("disconnected", (err) => {
      if (watcher !== this.#watcher) return;
      this.#watcher = undefined;
      // Detach from etcd3's manager so it does not re-attach this watcher with its own revision.
      void watcher.cancel().catch(() => undefined);
      if (this.#closed.signal.aborted) return;
      // Warn once per outage; the retries that follow until etcd is back are debug lines.
      this.#log.log(this.#connected ? "warn" : "debug", "watch disconnected from etcd; resuming", {
        fromRevision: this.#last + 1,
        error: errorMessage(err),
      });
      this.#connected = false;
      this.#sink.onConnection?.(false);
      this.#retry(() => this.#subscribe(), this.#backoff.next());
    });
    watcher.on("error", (err) => {
      // etcd canceled the watch, e.g. because its start revision was compacted. etcd3 has already
      // dropped the watcher from its manager.
      if (watcher !== this.#watcher) return;
      this.#watcher = undefined;
      if (this.#closed.signal.aborted) return;
      this.#log.warn("etcd canceled the watch; listing the current state to resync", {
        fromRevision: this.#last + 1,
        error: errorMessage(err),
      });
      this.#retry(() => this.#resync(), this.#backoff.next());
    });
  }

  #onData(watcher: Watcher, res: IWatchResponse): void {
    if (watcher !== this.#watcher || this.#closed.signal.aborted) return;
    if (res.events.length === 0) {
      // A progress notification: etcd has sent every event up to the header's revision.
      const revision = Number(res.header.revision);
      if (revision > this.#last) this.#last = revision;
      return;
    }
    let newest = this.#last;
    for (const event of res.events) {
      const revision = Number(event.kv.mod_revision);
      // After a reconnection etcd may send again what was delivered; a revision is never split
      // across responses, so comparing with the last delivered revision is exact.
      if (revision <= this.#last) continue;
      if (event.type === "Put") {
        this.#sink.onEvent({ type: "put", kv: toRawKv(event.kv) });
      } else {
        this.#sink.onEvent({ type: "delete", key: event.kv.key.toString(), revision });
      }
      if (revision > newest) newest = revision;
    }
    this.#last = newest;
  }

  async #resync(): Promise<void> {
    const signal = this.#closed.signal;
    try {
      const deadline = Date.now() + this.#callTimeoutMs;
      const res = "key" in this.#target
        ? await this.#client.get(this.#target.key).options({ deadline }).exec()
        : await this.#client.getAll().prefix(this.#target.prefix).options({ deadline }).exec();
      if (signal.aborted) return;
      const revision = Number(res.header.revision);
      this.#sink.onEvent({ type: "resync", revision, kvs: res.kvs.map(toRawKv) });
      this.#last = revision;
      this.#subscribe();
    } catch (err) {
      if (signal.aborted) return;
      this.#log.warn("watch could not list the current state; retrying", {
        error: errorMessage(err),
      });
      this.#retry(() => this.#resync(), this.#backoff.next());
    }
  }

  async close(): Promise<void> {
    if (this.#closed.signal.aborted) return;
    this.#closed.abort();
    const watcher = this.#watcher;
    this.#watcher = undefined;
    await this.#running?.catch(() => undefined);
    if (watcher !== undefined) await settleWithin(watcher.cancel(), CANCEL_TIMEOUT_MS);
  }
}

/**
 * Counts an etcd3 Lease's keepalives in flight. etcd3 re-arms a TTL-long timer when a keepalive
 * answer arrives after the lease was revoked (its stream handler does not check the lease's
 * state), which keeps the process alive for up to a TTL after `close()`; waiting for the answer
 * before revoking avoids it.
 */
class KeepaliveTracker {
  #pending = 0;
  #lease: Lease;
  constructor(lease: Lease) {
    this.#lease = lease;
    lease.on("keepaliveFired", () => this.#pending++);
    lease.on("keepaliveSucceeded", () => this.#pending = Math.max(0, this.#pending - 1));
    lease.on("keepaliveFailed", () => this.#pending = 0);
  }
  /** Resolves once no keepalive is in flight, or after `ms`. */
  async settled(ms: number): Promise<void> {
    if (this.#pending === 0) return;
    let done: () => void = () => {};
    const answered = new Promise<void>((resolve) => {
      done = resolve;
      this.#lease.once("keepaliveSucceeded", resolve);
      this.#lease.once("keepaliveFailed", resolve);
    });
    await settleWithin(answered, ms);
    this.#lease.off("keepaliveSucceeded", done);
    this.#lease.off("keepaliveFailed", done);
  }
}

/** A record under a lease that is granted again, and the record rewritten, when lost. */
class EtcdLeaseRegistration implements LeaseRegistration {
  readonly key: string;
  #backend: EtcdBackend;
  #client: Etcd3;
  #value: string;
  #ttl: number;
  #log: Logger;
  #lease: Lease | undefined;
  #closed = new AbortController();
  #renewing: Promise<void> | undefined;
  #leaseIds = new WeakMap<Lease, string>();
  #keepalives = new WeakMap<Lease, KeepaliveTracker>();

  constructor(backend: EtcdBackend, client: Etcd3, key: string, value: string, ttl: number) {
    this.#backend = backend;
    this.#client = client;
    this.key = key;
    this.#value = value;
    this.#ttl = ttl;
    this.#log = backend.log.child({ key, ttlSeconds: ttl });
  }

  get leaseId(): string | undefined {
    return this.#lease === undefined ? undefined : this.#leaseIds.get(this.#lease);
  }

  /**
   * Grants a lease and writes the record under it, again if `update()` changed the value
   * meanwhile; throws (with the lease released) on failure.
   */
  async #register(): Promise<Lease> {
    const deadline = Date.now() + this.#backend.callTimeoutMs;
    const lease = this.#client.lease(this.#ttl, { deadline });
    this.#keepalives.set(lease, new KeepaliveTracker(lease));
    try {
      const id = await lease.grant();
      let written: string;
      do {
        written = this.#value;
        await lease.put(this.key).value(written).options({ deadline }).exec();
      } while (written !== this.#value);
      this.#leaseIds.set(lease, id);
      return lease;
    } catch (err) {
      lease.release();
      throw err;
    }
  }

  #adopt(lease: Lease): void {
    this.#lease = lease;
    lease.on("lost", (err) => {
      if (lease !== this.#lease || this.#closed.signal.aborted) return;
      this.#lease = undefined;
      this.#log.warn("lease lost; granting a new one and writing the record again", {
        error: errorMessage(err),
      });
      this.#renewing = this.#renew();
    });
  }

  async start(): Promise<void> {
    try {
      this.#adopt(await this.#register());
    } catch (err) {
      throw this.#backend.wrapError(err, `registering '${this.key}' under a lease`);
    }
    this.#log.debug("record registered under a lease", { leaseId: this.leaseId });
  }

  async #renew(): Promise<void> {
    const backoff = new Backoff(RETRY_INITIAL_MS, RETRY_MAX_MS);
    const signal = this.#closed.signal;
    while (!signal.aborted) {
      try {
        const lease = await this.#register();
        if (signal.aborted) {
          await settleWithin(lease.revoke(), this.#backend.callTimeoutMs);
          return;
        }
        this.#adopt(lease);
        this.#log.info("record written again under a new lease", { leaseId: this.leaseId });
        return;
      } catch (err) {
        this.#log.warn("could not replace the lost lease; retrying", { error: errorMessage(err) });
        await sleep(backoff.next(), signal);
      }
    }
  }

  async update(value: string): Promise<void> {
    if (this.#closed.signal.aborted) {
      throw new TesseraError(
        SqlState.objectNotInPrerequisiteState,
        `record '${this.key}' was closed`,
      );
    }
    this.#value = value;
    const lease = this.#lease;
    // While a lost lease is being replaced the renewal writes the latest value.
    if (lease === undefined) return;
    try {
      await lease.put(this.key).value(value).options({
        deadline: Date.now() + this.#backend.callTimeoutMs,
      }).exec();
    } catch (err) {
      throw this.#backend.wrapError(err, `updating '${this.key}'`);
    }
  }

  async close(): Promise<void> {
    if (this.#closed.signal.aborted) return;
    this.#closed.abort();
    await this.#renewing;
    const lease = this.#lease;
    this.#lease = undefined;
    this.#backend.forget(this);
    if (lease === undefined) return;
    await this.#keepalives.get(lease)?.settled(1000);
    try {
      await lease.revoke({ deadline: Date.now() + this.#backend.callTimeoutMs });
    } catch (err) {
      lease.release();
      this.#log.warn("could not revoke the lease; the record will expire after its TTL", {
        error: errorMessage(err),
      });
    }
  }
}

/** A lock held through etcd3's Lock, watched for loss. */
class EtcdLockHandle implements LockHandle {
  readonly key: string;
  readonly holder: string;
  #backend: EtcdBackend;
  #lock: Lock;
  #leaseId: string;
  #ttlMs: number;
  #lost = new AbortController();
  #watch: EtcdWatch;
  #disconnectTimer: ReturnType<typeof setTimeout> | undefined;
  #released = false;

  constructor(
    backend: EtcdBackend,
    client: Etcd3,
    key: string,
    holder: string,
    lock: Lock,
    leaseId: string,
    ttlSeconds: number,
    fromRevision: number,
  ) {
    this.#backend = backend;
    this.key = key;
    this.holder = holder;
    this.#lock = lock;
    this.#leaseId = leaseId;
    this.#ttlMs = ttlSeconds * 1000;
    this.#watch = new EtcdWatch(
      client,
      { key },
      {
        onEvent: (event) => this.#onEvent(event),
        onConnection: (connected) => this.#onConnection(connected),
      },
      backend.log,
      backend.callTimeoutMs,
    );
    this.#watch.start(fromRevision);
  }

  get signal(): AbortSignal {
    return this.#lost.signal;
  }

  #onEvent(event: RawWatchEvent): void {
    if (event.type === "put" && event.kv.lease === this.#leaseId) return;
    if (event.type === "resync" && event.kvs.some((kv) => kv.lease === this.#leaseId)) return;
    this.#lose(
      event.type === "put"
        ? "the lock key was overwritten by someone else"
        : "the lock key was deleted (its lease expired or was revoked)",
    );
  }

  #onConnection(connected: boolean): void {
    clearTimeout(this.#disconnectTimer);
    this.#disconnectTimer = undefined;
    if (connected || this.#released) return;
    this.#disconnectTimer = setTimeout(() => {
      this.#lose(`etcd was unreachable for longer than the lock's TTL of ${this.#ttlMs} ms`);
    }, this.#ttlMs);
  }

  #lose(reason: string): void {
    if (this.#released || this.#lost.signal.aborted) return;
    this.#backend.log.warn("lock lost", { key: this.key, holder: this.holder, reason });
    this.#lost.abort(
      new TesseraError(SqlState.lockNotAvailable, `lock '${this.key}' was lost: ${reason}`, {
        detail: `held by '${this.holder}'`,
      }),
    );
    void this.#watch.close();
  }

  async release(): Promise<void> {
    if (this.#released) return;
    this.#released = true;
    clearTimeout(this.#disconnectTimer);
    this.#backend.forget(this);
    await this.#watch.close();
    try {
      await this.#lock.release();
    } catch (err) {
      throw this.#backend.wrapError(err, `releasing lock '${this.key}'`);
    }
  }
}

/**
 * Cancels every watch still open in an Election's namespace.
 *
 * etcd3@1.1.2's Campaign, when it resigns before being elected, keeps waiting on a watch of its
 * predecessor's key (its wait loop checks for resignation only between waits). That gRPC stream
 * keeps the process alive until the leader goes away, even after `client.close()`. Each campaign
 * gets its own Election, hence its own namespace and watch manager, and after resigning we cancel
 * what that manager still watches. This reads private fields of etcd3 1.1.2 (Election.namespace,
 * Namespace.watchManager, WatchManager.watchers); if they are absent it does nothing.
 */
async function cancelElectionWatches(election: Election): Promise<void> {
  const internals = election as unknown as {
    namespace?: { watchManager?: { watchers?: Watcher[] } };
  };
  const watchers = internals.namespace?.watchManager?.watchers ?? [];
  await Promise.all(watchers.slice().map((w) => settleWithin(w.cancel(), CANCEL_TIMEOUT_MS)));
}

type CampaignState = "campaigning" | "leader" | "failed" | "resigned";

/** A candidate in an etcd3 Election. */
class EtcdLeaderCampaign implements LeaderCampaign {
  readonly name: string;
  readonly candidateId: string;
  #backend: EtcdBackend;
  #election: Election;
  #campaign: Campaign;
  #state: CampaignState = "campaigning";
  #ended = new AbortController();
  #waiters = new Set<() => void>();
  #log: Logger;

  constructor(backend: EtcdBackend, election: Election, name: string, candidateId: string) {
    this.#backend = backend;
    this.#election = election;
    this.name = name;
    this.candidateId = candidateId;
    this.#log = backend.log.child({ election: name, candidate: candidateId });
    this.#campaign = election.campaign(candidateId);
    this.#campaign.on("elected", () => {
      // etcd3 can report 'elected' after a resignation; only a live campaign becomes leader.
      if (this.#state !== "campaigning") return;
      this.#state = "leader";
      this.#log.info("elected leader");
      this.#wake();
    });
    this.#campaign.on("error", (err: unknown) => {
      if (this.#state === "failed" || this.#state === "resigned") return;
      const wasLeader = this.#state === "leader";
      this.#state = "failed";
      this.#log.warn(wasLeader ? "leadership lost" : "campaign failed", {
        error: errorMessage(err),
      });
      this.#end(
        new TesseraError(
          SqlState.connectionFailure,
          `${wasLeader ? "leadership" : "campaign"} of '${candidateId}' in election '${name}' ` +
            `ended: ${errorMessage(err)}`,
          { cause: err },
        ),
      );
      void this.#campaign.resign().catch(() => undefined)
        .then(() => cancelElectionWatches(this.#election));
    });
  }

  get isLeader(): boolean {
    return this.#state === "leader";
  }

  get signal(): AbortSignal {
    return this.#ended.signal;
  }

  #wake(): void {
    for (const waiter of this.#waiters) waiter();
  }

  #end(reason: TesseraError): void {
    if (!this.#ended.signal.aborted) this.#ended.abort(reason);
    this.#wake();
  }

  waitUntilElected(options: WaitOptions = {}): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      let timer: ReturnType<typeof setTimeout> | undefined;
      const cleanup = () => {
        clearTimeout(timer);
        this.#waiters.delete(check);
        options.signal?.removeEventListener("abort", onAbort);
      };
      const check = () => {
        if (this.#state === "leader") {
          cleanup();
          resolve();
        } else if (this.#ended.signal.aborted) {
          cleanup();
          reject(this.#ended.signal.reason);
        }
      };
      const onAbort = () => {
        cleanup();
        reject(options.signal?.reason);
      };
      this.#waiters.add(check);
      if (options.signal?.aborted) return onAbort();
      options.signal?.addEventListener("abort", onAbort, { once: true });
      if (options.timeoutMs !== undefined) {
        timer = setTimeout(() => {
          cleanup();
          reject(
            new TesseraError(
              SqlState.lockNotAvailable,
              `'${this.candidateId}' was not elected in election '${this.name}' within ` +
                `${options.timeoutMs} ms`,
            ),
          );
        }, options.timeoutMs);
      }
      check();
    });
  }

  async resign(): Promise<void> {
    if (this.#state === "resigned" || this.#state === "failed") {
      await cancelElectionWatches(this.#election);
      return;
    }
    const wasLeader = this.#state === "leader";
    this.#state = "resigned";
    this.#end(
      new TesseraError(
        SqlState.objectNotInPrerequisiteState,
        `'${this.candidateId}' resigned from election '${this.name}'`,
      ),
    );
    this.#backend.forget(this);
    try {
      await this.#campaign.resign();
    } catch (err) {
      throw this.#backend.wrapError(err, `resigning from election '${this.name}'`);
    } finally {
      await cancelElectionWatches(this.#election);
    }
    if (wasLeader) this.#log.info("resigned leadership");
  }
}

/**
 * The key prefix of election `name`'s candidates under `prefix`: etcd3's Election keeps each
 * candidate at `<prefix>election/<name>/<lease id>`, with the candidate id as value; the leader is
 * the candidate with the lowest create revision.
 */
function electionPrefix(prefix: string, name: string): string {
  return `${prefix}election/${name}/`;
}

/**
 * Turns the raw events of a watch on an election's prefix into leader changes. (etcd3's
 * ElectionObserver is not used: when several candidates appear in one watch response while there
 * is no leader, it reports the last of them rather than the first.)
 */
function leaderChanges(): (event: RawWatchEvent) => LeaderChange[] {
  const candidates = new Map<string, { createRevision: number; id: string }>();
  let last: string | undefined | null = null;
  return (event) => {
    if (event.type === "resync") {
      candidates.clear();
      for (const kv of event.kvs) {
        candidates.set(kv.key, { createRevision: kv.createRevision, id: decoder.decode(kv.value) });
      }
    } else if (event.type === "put") {
      candidates.set(event.kv.key, {
        createRevision: event.kv.createRevision,
        id: decoder.decode(event.kv.value),
      });
    } else {
      candidates.delete(event.key);
    }
    let first: { createRevision: number; id: string } | undefined;
    for (const candidate of candidates.values()) {
      if (first === undefined || candidate.createRevision < first.createRevision) first = candidate;
    }
    const leader = first?.id;
    if (leader === last) return [];
    last = leader;
    return [{ leader }];
  };
}

/** A {@linkcode TopoBackend} over etcd, through npm:etcd3. */
export class EtcdBackend implements TopoBackend {
  /** The etcd client URLs this backend talks to. */
  readonly endpoints: readonly string[];
  /** Deadline of each call, in milliseconds. */
  readonly callTimeoutMs: number;
  /** The backend's logger. */
  readonly log: Logger;
  #client: Etcd3;
  #closed = false;
  #closing = { value: false };
  #open = new Set<{ close(): Promise<void> } | { release(): Promise<void> } | LeaderCampaign>();
  #elections = new Set<Election>();

  private constructor(options: EtcdBackendOptions) {
    if (options.endpoints.length === 0) {
      throw new RangeError("'endpoints' must name at least one etcd endpoint: received none");
    }
    this.endpoints = [...options.endpoints];
    this.callTimeoutMs = options.callTimeoutMs ?? DEFAULT_CALL_TIMEOUT_MS;
    this.log = options.logger;
    const callTimeoutMs = this.callTimeoutMs;
    this.#client = new Etcd3({
      hosts: [...options.endpoints],
      // A deadline on every unary call, including those etcd3 makes inside leases, locks and
      // elections; streams (watches, keepalives) have none.
      defaultCallOptions: (context) =>
        context.isStream ? {} : { deadline: Date.now() + callTimeoutMs },
      faultHandling: {
        watchBackoff: new WatchReconnectBackoff(-1, this.#closing),
        // etcd3 guards each host with a circuit breaker that, after three failed calls, fails
        // every call at once for five seconds: it lets the retries pick another host. With one
        // host there is no other to pick, and a blip (a slow fsync, etcd starting) would fail
        // everything for five seconds, so a single endpoint gets no breaker; with several, it
        // re-tries a host after one second.
        host: () =>
          options.endpoints.length > 1
            ? circuitBreaker(handleWhen(isRecoverableError), {
              halfOpenAfter: 1000,
              breaker: new ConsecutiveBreaker(3),
            })
            : noop,
      },
    });
  }

  /**
   * Connects to etcd at `options.endpoints` and checks that it answers; throws a TesseraError
   * `08006` naming the endpoints when it does not within the call timeout.
   */
  static async connect(options: EtcdBackendOptions): Promise<EtcdBackend> {
    const backend = new EtcdBackend(options);
    try {
      await backend.get("/");
    } catch (err) {
      await backend.close();
      throw err;
    }
    return backend;
  }

  /** Turns an etcd3 error into a TesseraError for `what` (e.g. `reading '/x'`). */
  wrapError(err: unknown, what: string): TesseraError {
    if (err instanceof TesseraError) return err;
    const list = this.endpoints.map((e) => `'${e}'`).join(", ");
    if (isConnectionError(err)) {
      return new TesseraError(
        SqlState.connectionFailure,
        `etcd at ${list} is unreachable: ${what} failed: ${errorMessage(err)}`,
        {
          cause: err,
          hint: "check that etcd is running and that the topo endpoints are right",
        },
      );
    }
    return new TesseraError(SqlState.internalError, `etcd refused ${what}: ${errorMessage(err)}`, {
      cause: err,
      detail: `endpoints ${list}`,
    });
  }

  #checkOpen(): void {
    if (this.#closed) {
      throw new TesseraError(SqlState.objectNotInPrerequisiteState, "the topo client is closed", {
        detail: `endpoints ${this.endpoints.join(", ")}`,
      });
    }
  }

  async #call<T>(what: string, fn: (deadline: number) => Promise<T>): Promise<T> {
    this.#checkOpen();
    try {
      return await fn(Date.now() + this.callTimeoutMs);
    } catch (err) {
      throw this.wrapError(err, what);
    }
  }

  /** Stops tracking a closed watch, lease, lock or campaign. */
  forget(item: { close(): Promise<void> } | { release(): Promise<void> } | LeaderCampaign): void {
    this.#open.delete(item);
  }

  /** Reads one key. */
  get(key: string): Promise<RawKv | undefined> {
    return this.#call(`reading '${key}'`, async (deadline) => {
      const res = await this.#client.get(key).options({ deadline }).exec();
      const kv = res.kvs[0];
      return kv === undefined ? undefined : toRawKv(kv);
    });
  }

  /** Reads one key or a prefix, with the revision of the read. */
  list(target: WatchTarget): Promise<{ revision: number; kvs: RawKv[] }> {
    const what = "key" in target ? `reading '${target.key}'` : `listing '${target.prefix}'`;
    return this.#call(what, async (deadline) => {
      const res = "key" in target
        ? await this.#client.get(target.key).options({ deadline }).exec()
        : await this.#client.getAll().prefix(target.prefix).options({ deadline }).exec();
      return { revision: Number(res.header.revision), kvs: res.kvs.map(toRawKv) };
    });
  }

  /** Writes a key, compare-and-set when `options.ifRevision` is given. */
  put(key: string, value: string, options: PutOptions = {}): Promise<PutResult> {
    return this.#call(`writing '${key}'`, async (deadline) => {
      if (options.ifRevision === undefined) {
        const res = await this.#client.put(key).value(value).options({ deadline }).exec();
        return { ok: true, revision: Number(res.header.revision) };
      }
      const res = options.ifRevision === 0
        ? await this.#client.if(key, "Create", "==", 0)
          .then(this.#client.put(key).value(value)).options({ deadline }).commit()
        : await this.#client.if(key, "Mod", "==", options.ifRevision)
          .then(this.#client.put(key).value(value)).options({ deadline }).commit();
      return { ok: res.succeeded, revision: Number(res.header.revision) };
    });
  }

  /** Deletes a key. */
  delete(key: string): Promise<boolean> {
    return this.#call(`deleting '${key}'`, async (deadline) => {
      const res = await this.#client.delete().key(key).options({ deadline }).exec();
      return Number(res.deleted) > 0;
    });
  }

  /** Watches a key or prefix, resuming across disconnections. */
  watch(target: WatchTarget, options: WatchOptions = {}): TopoWatch<RawWatchEvent> {
    this.#checkOpen();
    const watch: EtcdWatch = new EtcdWatch(
      this.#client,
      target,
      { onEvent: (event) => queue.push(event) },
      this.log,
      this.callTimeoutMs,
    );
    const queue: EventQueue<RawWatchEvent> = new EventQueue(async () => {
      this.#open.delete(queue);
      await watch.close();
    });
    this.#open.add(queue);
    watch.start(options.fromRevision);
    return queue;
  }

  /** Writes `value` at `key` under a kept-alive lease of `ttlSeconds`. */
  async registerUnderLease(
    key: string,
    value: string,
    ttlSeconds: number,
  ): Promise<LeaseRegistration> {
    this.#checkOpen();
    if (!Number.isInteger(ttlSeconds) || ttlSeconds < 1) {
      throw new RangeError(`'ttlSeconds' must be a positive integer: received ${ttlSeconds}`);
    }
    const registration = new EtcdLeaseRegistration(this, this.#client, key, value, ttlSeconds);
    await registration.start();
    this.#open.add(registration);
    return registration;
  }

  /**
   * Takes the lock at `key` with etcd3's Lock. That Lock fails at once when the lock is held, so
   * this retries with jittered backoff (20-250 ms) until `timeoutMs`; waiters are not queued in
   * order. On timeout it throws `55P03` naming the current holder.
   */
  async lock(key: string, options: LockOptions): Promise<LockHandle> {
    this.#checkOpen();
    if (!Number.isInteger(options.ttlSeconds) || options.ttlSeconds < 1) {
      throw new RangeError(
        `'ttlSeconds' must be a positive integer: received ${options.ttlSeconds}`,
      );
    }
    const started = Date.now();
    const deadline = started + options.timeoutMs;
    const backoff = new Backoff(LOCK_RETRY_INITIAL_MS, LOCK_RETRY_MAX_MS);
    while (true) {
      this.#checkOpen();
      const lock = this.#client.lock(key).ttl(options.ttlSeconds);
      try {
        await lock.acquire();
      } catch (err) {
        if (!(err instanceof EtcdLockFailedError)) {
          // The lease may have been granted before the failure: stop its keepalive.
          await lock.release().catch(() => undefined);
          throw this.wrapError(err, `taking lock '${key}'`);
        }
        const remaining = deadline - Date.now();
        if (remaining <= 0) {
          const current = await this.get(key).catch(() => undefined);
          const holder = current === undefined ? undefined : decoder.decode(current.value);
          throw new TesseraError(
            SqlState.lockNotAvailable,
            `could not take lock '${key}' for '${options.holder}' within ${options.timeoutMs} ms`,
            {
              detail: holder === undefined || holder === ""
                ? "another holder kept it"
                : `held by '${holder}'`,
              hint: "retry later; a holder that died frees the lock after its TTL",
            },
          );
        }
        await sleep(Math.min(backoff.next(), remaining));
        continue;
      }
      // Record the holder as the lock's value; this also gives the revision to watch from.
      try {
        const leaseId = String(await lock.leaseId());
        const res = await this.#client.if(key, "Lease", "==", leaseId)
          .then(this.#client.put(key).value(options.holder).lease(leaseId))
          .options({ deadline: Date.now() + this.callTimeoutMs })
          .commit();
        if (!res.succeeded) {
          throw new TesseraError(
            SqlState.lockNotAvailable,
            `lock '${key}' was lost right after it was taken`,
          );
        }
        const handle = new EtcdLockHandle(
          this,
          this.#client,
          key,
          options.holder,
          lock,
          leaseId,
          options.ttlSeconds,
          Number(res.header.revision) + 1,
        );
        this.#open.add(handle);
        this.log.debug("lock taken", {
          key,
          holder: options.holder,
          waitedMs: Date.now() - started,
        });
        return handle;
      } catch (err) {
        await lock.release().catch(() => undefined);
        throw this.wrapError(err, `taking lock '${key}'`);
      }
    }
  }

  #election(prefix: string, name: string, ttlSeconds?: number): Election {
    const election = this.#client.namespace(prefix).election(name, ttlSeconds);
    this.#elections.add(election);
    return election;
  }

  /** Campaigns in election `name` through etcd3's Election. */
  campaign(prefix: string, name: string, candidateId: string, ttlSeconds: number): LeaderCampaign {
    this.#checkOpen();
    if (!Number.isInteger(ttlSeconds) || ttlSeconds < 1) {
      throw new RangeError(`'ttlSeconds' must be a positive integer: received ${ttlSeconds}`);
    }
    const campaign = new EtcdLeaderCampaign(
      this,
      this.#election(prefix, name, ttlSeconds),
      name,
      candidateId,
    );
    this.#open.add(campaign);
    return campaign;
  }

  /** Reads the leader of election `name`. */
  leader(prefix: string, name: string): Promise<string | undefined> {
    return this.#call(`reading the leader of election '${name}'`, async () => {
      return await this.#client.namespace(prefix).election(name).leader();
    });
  }

  /** Watches the leader of election `name`, resuming across disconnections like any watch. */
  observeLeader(prefix: string, name: string): TopoWatch<LeaderChange> {
    return new MappedWatch(this.watch({ prefix: electionPrefix(prefix, name) }), leaderChanges());
  }

  /** Closes every watch, lease registration, lock and campaign, then the etcd client. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    this.#closing.value = true;
    const open = [...this.#open];
    this.#open.clear();
    await Promise.all(open.map(async (item) => {
      try {
        if ("release" in item) await item.release();
        else if ("resign" in item) await item.resign();
        else await item.close();
      } catch (err) {
        this.log.warn("could not close a topo resource cleanly", { error: errorMessage(err) });
      }
    }));
    await Promise.all([...this.#elections].map((e) => cancelElectionWatches(e)));
    this.#client.close();
    // Let etcd3's 0 ms stream-teardown timers (see WatchReconnectBackoff) run before returning.
    await sleep(10);
  }
}
