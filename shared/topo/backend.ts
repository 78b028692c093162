/**
 * What a topo backend provides to the typed stores: raw keys and values with their revisions,
 * compare-and-set writes, resumable watches, records under leases, locks and leader elections.
 * {@linkcode EtcdBackend} is the implementation; the typed layer only uses this interface.
 *
 * @module
 */

/** A key and its value as stored, with etcd's revision bookkeeping. */
export interface RawKv {
  /** Full key, e.g. `/tessera/global/keyspaces/app/shards/-80`. */
  key: string;
  /** The stored bytes. */
  value: Uint8Array;
  /** Revision of the last change of this key (etcd's mod revision). */
  revision: number;
  /** Revision that created this key. */
  createRevision: number;
  /** Number of changes since it was created (1 after the first write). */
  version: number;
  /** Lease id the key is attached to, `"0"` when none. */
  lease: string;
}

/** One event of a raw watch. */
export type RawWatchEvent =
  | { type: "put"; kv: RawKv }
  | { type: "delete"; key: string; revision: number }
  /**
   * The whole state of the watched range as of `revision`: sent first when a watch starts
   * without `fromRevision`, and again when the watch could not resume (its revision was
   * compacted, or etcd canceled it). Replace what you hold with it.
   */
  | { type: "resync"; revision: number; kvs: RawKv[] };

/** What a watch covers: one key, or every key under a prefix. */
export type WatchTarget = { key: string } | { prefix: string };

/** Options of a watch. */
export interface WatchOptions {
  /**
   * First revision to deliver (inclusive). When absent the watch starts with a `resync` event
   * holding the current state, then delivers every later change.
   */
  fromRevision?: number;
}

/**
 * A running watch: an async iterator of events in revision order. It survives etcd restarts and
 * disconnections, resuming after the last revision it delivered so that no event is missed or
 * repeated; when that is impossible it delivers a `resync` event instead.
 */
export interface TopoWatch<E> extends AsyncIterableIterator<E> {
  /** Stops the watch; pending and later `next()` calls then report done. */
  close(): Promise<void>;
}

/** Options of a compare-and-set put. */
export interface PutOptions {
  /**
   * Write only if the key's current revision is this one; `0` means only if the key does not
   * exist. Without it the put is unconditional.
   */
  ifRevision?: number;
}

/** Result of a put. */
export type PutResult = { ok: true; revision: number } | { ok: false; revision: number };

/** A record kept alive under a lease; see {@linkcode TopoBackend.registerUnderLease}. */
export interface LeaseRegistration {
  /** The key written. */
  readonly key: string;
  /** Current lease id, or undefined while a lost lease is being replaced. */
  readonly leaseId: string | undefined;
  /** Writes a new value under the same lease. */
  update(value: string): Promise<void>;
  /** Revokes the lease: the record disappears at once. */
  close(): Promise<void>;
}

/** Options of {@linkcode TopoBackend.lock}. */
export interface LockOptions {
  /** Who takes the lock, stored as the lock's value and named in errors of other waiters. */
  holder: string;
  /** TTL of the lease behind the lock, in seconds: a dead holder's lock frees itself after it. */
  ttlSeconds: number;
  /** How long to wait for the lock before failing with SQLSTATE 55P03. */
  timeoutMs: number;
}

/** A held lock. */
export interface LockHandle {
  /** The lock's key. */
  readonly key: string;
  /** The holder named when locking. */
  readonly holder: string;
  /**
   * Aborted when the lock is lost while held: its key was deleted (the lease expired or was
   * revoked), or etcd was unreachable for longer than the TTL. Its reason is a TesseraError.
   * Work done under the lock must stop when it aborts.
   */
  readonly signal: AbortSignal;
  /** Frees the lock. Safe to call twice. */
  release(): Promise<void>;
}

/** Options of {@linkcode LeaderCampaign.waitUntilElected}. */
export interface WaitOptions {
  /** Give up after this many milliseconds (the campaign goes on). */
  timeoutMs?: number;
  /** Give up when this aborts (the campaign goes on). */
  signal?: AbortSignal;
}

/** A candidate in a leader election. */
export interface LeaderCampaign {
  /** The election's name. */
  readonly name: string;
  /** This candidate's id, which observers see as the leader when it wins. */
  readonly candidateId: string;
  /** Whether this candidate is the leader now. */
  readonly isLeader: boolean;
  /**
   * Aborted when this candidate stops being leader, or can no longer become leader: its lease
   * was lost, the campaign failed, or it resigned. Its reason is a TesseraError.
   */
  readonly signal: AbortSignal;
  /** Resolves once this candidate is leader; rejects if the campaign ends first or on timeout. */
  waitUntilElected(options?: WaitOptions): Promise<void>;
  /** Leaves the election; a new leader is picked if this one led. Safe to call twice. */
  resign(): Promise<void>;
}

/** One observation of an election: the current leader's candidate id, if any. */
export interface LeaderChange {
  /** Candidate id of the leader, or undefined when there is none. */
  leader: string | undefined;
}

/** The operations the typed topo layer needs from a key-value store. */
export interface TopoBackend {
  /** The endpoints this backend talks to, for error messages. */
  readonly endpoints: readonly string[];
  /** Reads one key. */
  get(key: string): Promise<RawKv | undefined>;
  /** Reads one key, or every key under a prefix, with the store revision of the read. */
  list(target: WatchTarget): Promise<{ revision: number; kvs: RawKv[] }>;
  /** Writes a key, optionally only if it is unchanged (compare-and-set). */
  put(key: string, value: string, options?: PutOptions): Promise<PutResult>;
  /** Deletes a key; resolves whether it existed. */
  delete(key: string): Promise<boolean>;
  /** Watches a key or prefix; see {@linkcode TopoWatch}. */
  watch(target: WatchTarget, options?: WatchOptions): TopoWatch<RawWatchEvent>;
  /**
   * Writes `value` at `key` under a lease of `ttlSeconds` and keeps the lease alive; a lost lease
   * is replaced and the record written again.
   */
  registerUnderLease(key: string, value: string, ttlSeconds: number): Promise<LeaseRegistration>;
  /** Takes the lock at `key`, waiting up to `options.timeoutMs`. */
  lock(key: string, options: LockOptions): Promise<LockHandle>;
  /** Starts campaigning in election `name` (under `prefix`) as `candidateId`. */
  campaign(prefix: string, name: string, candidateId: string, ttlSeconds: number): LeaderCampaign;
  /** Reads the current leader of election `name` (under `prefix`). */
  leader(prefix: string, name: string): Promise<string | undefined>;
  /** Watches who leads election `name` (under `prefix`); the first event is the current leader. */
  observeLeader(prefix: string, name: string): TopoWatch<LeaderChange>;
  /** Ends every watch, lease, lock and campaign, then the connection. */
  close(): Promise<void>;
}
