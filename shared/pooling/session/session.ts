/**
 * One client session under transaction pooling: it borrows a backend at the first message of a
 * transaction and gives it back at ReadyForQuery `I` with nothing outstanding, forwarding the
 * client's bytes and Postgres's bytes as they are, and decoding only what it must decide on.
 *
 * What makes the backend switches invisible to the client:
 *
 * - Settings (startup parameters, SET, RESET, DISCARD, set_config) are kept per session as
 *   Postgres reports them after each transaction that may have changed them, and replayed
 *   (one swallowed simple query) on a backend that carries other settings. Idle backends that
 *   already carry the session's settings are preferred.
 * - Named prepared statements (protocol and SQL level) live on backends under canonical names
 *   (a hash of their text and parameter types), shared by every session; they are prepared on
 *   a backend at first use there, and responses are synthesized or swallowed in order.
 * - State that cannot move (temporary tables, LISTEN, session advisory locks, holdable cursors)
 *   pins the session to its backend until Postgres says the state is gone.
 * - The client gets a virtual process id and secret; `pg_backend_pid()` is rewritten to return
 *   that id, and a CancelRequest with it reaches whichever backend serves the session.
 *
 * @module
 */

import { createHash } from "node:crypto";
import {
  ROOT_CONTEXT,
  type Span,
  SpanKind,
  SpanStatusCode,
  trace,
  type Tracer,
} from "@opentelemetry/api";
import * as clock from "../../clock/mod.ts";
import { SqlState, TesseraError } from "../../errors/mod.ts";
import type { Logger } from "../../log/mod.ts";
import { sqlCommentSpanContext } from "../../trace/mod.ts";
import {
  Backend,
  decodeDataRowText,
  decodeError,
  Frontend,
  MessageWriter,
  rewriteStatementName,
  writeWithStatementName,
} from "../../wire/mod.ts";
import type { BackendConn, BackendOwner, Frame } from "../pool/backend.ts";
import { BufferPool, FrameReader } from "../pool/frame_reader.ts";
import { Outbox, WriterPool } from "../pool/outbox.ts";
import { Pool } from "../pool/pool.ts";
import { isDeferrableBegin, shiftPosition, startsWithLetter } from "./begin.ts";
import { Expect, ExpectQueue } from "./queue.ts";
import {
  NO_SETTINGS,
  READ_PINS_SQL,
  readSettingsSql,
  replaySql,
  restoreStartupSql,
  type Settings,
  settingsFromRows,
  settingsKey,
} from "./settings.ts";
import {
  findCustomSettingNames,
  findExclusiveDatabases,
  findSqlPrepareOps,
  PIN_TRIGGERS,
  rewriteBackendPid,
  scanSql,
  SqlLexer,
  Tok,
  Trigger,
} from "./sql_scan.ts";

/** What the server provides to its sessions. */
export interface SessionHost {
  /** Logger of the pooler. */
  readonly log: Logger;
  /** Most prepared statements kept per backend. */
  readonly preparedCacheSize: number;
  /** Called once the client is gone (its backend may still be being cleaned). */
  sessionEnded(session: Session): void;
  /** Sends a cancel request for the query running on `backend`, if `stillWanted()` then. */
  cancelBackend(backend: BackendConn, stillWanted?: () => boolean): void;
  /** Called when a transaction failed because its connection was lost in the middle. */
  transactionLost?(session: Session): void;
  /**
   * Closes the idle backends connected to these databases: a statement that needs them free of
   * other connections (DROP DATABASE, a CREATE DATABASE template...) is about to run.
   */
  releaseDatabases?(names: string[]): void;
  /**
   * Whether a plain BEGIN outside a transaction is answered at once and sent with the
   * transaction's first statement (see `begin.ts`); default true.
   */
  readonly deferBegin?: boolean;
  /**
   * Set when spans are recorded (see `tracingEnabled` in shared/trace): a transaction whose first
   * statement ends in a sqlcommenter comment with a sampled `traceparent` gets a `pool.checkout`
   * span, child of that remote span, from its request for a connection until the connection goes
   * back (see docs/pooler.md, "Tracing").
   */
  readonly tracer?: Tracer | undefined;
}

/**
 * Where a session gets the pool to borrow from, at the start of every transaction. The pooler
 * passes one fixed {@linkcode Pool}; the gateway passes a source that resolves, per transaction,
 * the pooler serving the client's target (so settings and prepared statements follow the client
 * to a new pooler).
 */
export interface PoolSource {
  /** The pool for the transaction starting now; may wait (e.g. during a failover). */
  pool(): Pool | Promise<Pool>;
  /**
   * The pool {@linkcode pool} would give when it is known at once, else null (then the session
   * calls {@linkcode pool}). Lets a transaction start on an idle backend with no promise in
   * between.
   */
  poolNow?(): Pool | null;
  /**
   * Called when a connection of `pool` failed before anything of the transaction reached the
   * client (connect refused, found closed, or a connection-class or 57P0x error): resolves true
   * to try the transaction again on a fresh {@linkcode pool} (the source reports the failure,
   * waits between attempts and bounds them). When not given, such failures reach the client, and
   * a connection lost in the middle of a transaction ends the client's session; when given, the
   * session survives it (the transaction fails with an error).
   */
  retry?(pool: Pool, error: unknown, attempt: number): Promise<boolean>;
}

/** A client that completed its startup phase. */
export interface SessionStart {
  /** The client's connection. */
  conn: Deno.Conn;
  /** User name. */
  user: string;
  /** Database name. */
  database: string;
  /** Every startup parameter. */
  params: Record<string, string>;
  /** Settings from `options=-c name=value`. */
  settings: Record<string, string>;
}

/** Reasons a session is pinned to its backend, by bit. */
export const PinReason = {
  /** Temporary tables or other objects in the session's temporary schema. */
  temp_table: 1,
  /** The session listens on a channel. */
  listen: 2,
  /** The session holds session-level advisory locks. */
  advisory_lock: 4,
  /** The session has WITH HOLD cursors open. */
  holdable_cursor: 8,
  /** SQL PREPARE/EXECUTE/DEALLOCATE sent through the extended protocol (until DEALLOCATE ALL). */
  sql_prepare_extended: 16,
  /** The end-of-transaction check failed, so the state is not known. */
  unverified: 32,
} as const;

const PIN_SQL = PinReason.sql_prepare_extended;

/** The names of the {@linkcode PinReason} bits set in `pins`, comma-separated. */
export function pinReasons(pins: number): string {
  const names: string[] = [];
  for (const [reason, bit] of Object.entries(PinReason)) if ((pins & bit) !== 0) names.push(reason);
  return names.join(",");
}
/** CommandComplete BEGIN and ReadyForQuery `T`: the reply to a deferred BEGIN. */
const BEGIN_REPLY = new MessageWriter(32).commandComplete("BEGIN").readyForQuery("T").take();
/** The last deferred BEGIN's bytes, shared by every session that sends the same. */
let lastBegin = new Uint8Array(0);

/**
 * Clients' read buffers and writers, shared (one pool per process): a client holds one only
 * while it has bytes buffered or being written, so an idle client holds neither.
 */
const READ_SIZE = 1024;
const WRITE_SIZE = 256;
const READ_BUFFERS = new BufferPool(READ_SIZE);
const WRITERS = new WriterPool(WRITE_SIZE);

/** Whether `buf` holds `a`'s bytes at `at`. */
function sameBytes(a: Uint8Array, buf: Uint8Array, at: number): boolean {
  for (let i = 0; i < a.length; i++) if (a[i] !== buf[at + i]) return false;
  return true;
}

/** What the client loop yields to have its next bytes read. */
const READ: unique symbol = Symbol("read");
/**
 * What the client loop may yield besides READ and a promise: a wait it starts itself, given the
 * function that resumes the loop with the wait's result (called later, never from inside).
 */
type Wait = (resume: (value: unknown) => void) => void;
/** Triggers after which custom setting names are looked for in the text. */
const SETTING_NAMES = Trigger.setStatement | Trigger.settings;

const I = 0x49; // ReadyForQuery idle
/** Most bytes of a transaction's first messages kept for sending them again elsewhere. */
const REPLAY_LIMIT = 1 << 20;
const E = 0x45; // ReadyForQuery failed transaction
const T = 0x54; // ReadyForQuery in a transaction block

/** Message types a client may send after startup. */
const CLIENT_TYPES = new Uint8Array(256);
for (
  const t of [
    Frontend.query,
    Frontend.parse,
    Frontend.bind,
    Frontend.execute,
    Frontend.describe,
    Frontend.close,
    Frontend.sync,
    Frontend.flush,
    Frontend.terminate,
    Frontend.copyData,
    Frontend.copyDone,
    Frontend.copyFail,
    Frontend.functionCall,
  ]
) CLIENT_TYPES[t] = 1;

/**
 * Replies that carry no result: a transaction whose client has seen only these can still be sent
 * again elsewhere (the new connection's copies of them are dropped).
 */
const PREAMBLE = new Uint8Array(256);
for (
  const t of [
    Backend.parseComplete,
    Backend.bindComplete,
    Backend.closeComplete,
    Backend.parameterDescription,
    Backend.rowDescription,
    Backend.noData,
  ]
) PREAMBLE[t] = 1;

/** Startup parameters that are not settings. */
const NOT_SETTINGS = new Set(["user", "database", "options", "replication"]);

const decoder = new TextDecoder();

/** A protocol-level prepared statement of the client. */
interface ProtoStmt {
  canonical: string;
  /** The Parse message under the canonical name, to prepare it on another backend. */
  parse: Uint8Array;
  /** Trigger bits of its text, applied at each Bind. */
  flags: number;
}

/** A SQL-level (PREPARE) statement of the client. */
interface SqlStmt {
  canonical: string;
  /** `PREPARE <canonical> ...`, to prepare it on another backend. */
  sql: string;
}

interface ParseAux {
  name?: string;
  stmt?: ProtoStmt;
  /** Canonical name marked present on the backend by this Parse. */
  canonical?: string;
  /** ErrorResponse to send in place of the backend's. */
  subError?: Uint8Array;
}

interface CloseAux {
  name: string;
  stmt: ProtoStmt | undefined;
}

/** How to treat the CommandCompletes of a rewritten simple query, statement by statement. */
interface QueryPlan {
  swallow: boolean[];
  undo: ((() => void) | undefined)[];
  /** Canonical names marked present by the query. */
  added: string[];
  index: number;
  /**
   * Characters of a deferred BEGIN sent in front of the client's text (0: none): error
   * positions are moved back by as much.
   */
  shift: number;
  /** With {@linkcode shift}: Postgres has run that BEGIN. */
  begun: boolean;
}

/** What a query sent behind a deferred BEGIN swallows: BEGIN's CommandComplete (never written). */
const SWALLOW_BEGIN: boolean[] = [true];
/** Never written to: the shared `undo` and `added` of such queries. */
const NO_UNDO: ((() => void) | undefined)[] = [];
const NO_ADDED: string[] = [];

interface ReplayAux {
  what: "settings" | "evict" | "rollback" | "restore" | "sql-pin" | "begin";
  forwardParams: boolean;
  error?: TesseraError;
}

interface VerifyAux {
  /** The check starts by putting back startup settings that were reset. */
  restore: boolean;
  settings: boolean;
  pins: boolean;
  results: (string | null)[][][];
  rows: (string | null)[][];
  error: TesseraError | null;
}

function canonicalName(prefix: string, bytes: Uint8Array): string {
  return prefix + createHash("sha1").update(bytes).digest("hex").slice(0, 24);
}

/** Map key for a statement name in a payload (bytes as char codes: cheap, one-to-one). */
function nameKey(p: Uint8Array, start: number, end: number): string {
  if (end - start <= 64) {
    let s = "";
    for (let i = start; i < end; i++) s += String.fromCharCode(p[i]!);
    return s;
  }
  return String.fromCharCode(...p.subarray(start, end));
}

function displayName(key: string): string {
  const bytes = new Uint8Array(key.length);
  for (let i = 0; i < key.length; i++) bytes[i] = key.charCodeAt(i);
  return decoder.decode(bytes);
}

function describeType(t: number): string {
  return t >= 0x21 && t < 0x7f
    ? `'${String.fromCharCode(t)}'`
    : `0x${t.toString(16).padStart(2, "0")}`;
}

function errorBytes(code: string, message: string): Uint8Array {
  return new MessageWriter(128).errorResponse(new TesseraError(code, message)).take();
}

function protocolError(message: string): TesseraError {
  return new TesseraError(SqlState.protocolViolation, message, { severity: "FATAL" });
}

function concat(...parts: Uint8Array[]): Uint8Array {
  let n = 0;
  for (const p of parts) n += p.length;
  const out = new Uint8Array(n);
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

const encoder = new TextEncoder();

/** One client session. */
export class Session implements BackendOwner {
  /** Virtual process id given to the client (BackendKeyData, pg_backend_pid()). */
  readonly pid: number;
  /** Secret key given to the client for CancelRequest. */
  readonly secret: number;
  /** User name. */
  readonly user: string;
  /** Database name. */
  readonly database: string;
  /** Whether the session may use the pool's reserve. */
  readonly admin: boolean;

  #host: SessionHost;
  #source: PoolSource;
  /** The pool of the current (or last) transaction. */
  #pool: Pool | null;
  /** Client messages of the transaction so far, kept while a retry elsewhere is possible. */
  #replay: Uint8Array[] | null = null;
  #replayBytes = 0;
  /**
   * Replies (all of them PREAMBLE) the client has of a transaction that may still be retried, by
   * type; after a retry the new connection's first replies are checked against them and dropped.
   */
  #delivered: number[] = [];
  /** How many of {@linkcode #delivered} the current connection has answered again. */
  #matched = 0;
  /** A transaction being moved to another connection after a failure at its start. */
  #retrying: Promise<void> | null = null;
  /** Set by {@linkcode drain}: the session ends at its next point between transactions. */
  #draining = false;
  /** The client loop waits for the client's next message. */
  #reading = false;
  /**
   * The client's BEGIN (a Query message), answered here and not yet sent: it goes out before the
   * transaction's first statement, on the backend that statement gets.
   */
  #deferredBegin: Uint8Array | null = null;
  /** The deferred BEGIN sent at the start of the current transaction, to send again on a retry. */
  #replayBegin: Uint8Array | null = null;
  /** Set after the connection was lost inside a transaction block: the client must roll back. */
  #failedTxn = false;
  /** Error to report for the next statement of a failed transaction block. */
  #failedError: TesseraError | null = null;
  #conn: Deno.Conn;
  #reader: FrameReader;
  #out: Outbox;
  /** Backend messages forwarded but not yet copied to `#out`: a span of the reader's buffer. */
  #spanBuf: Uint8Array | null = null;
  #spanStart = 0;
  #spanEnd = 0;
  #backend: BackendConn | null = null;
  #dirty: BackendConn | null = null;
  #q = new ExpectQueue();
  /** The backend skips messages until Sync after an error. */
  #skipping = false;
  /** The pooler failed a request itself: client messages are dropped until Sync. */
  #clientSkip = false;
  #copyIn = false;
  #extOpen = false;
  #txn = I;
  #pins = 0;
  #triggers = 0;
  #unnamedFlags = 0;
  #startup: Settings = NO_SETTINGS;
  #settings: Settings = NO_SETTINGS;
  #settingsKey = "";
  /** Custom (dotted) setting names the session may have set: read back by name. */
  #customNames: Set<string> | null = null;
  #stmts: Map<string, ProtoStmt> | null = null;
  #sqlStmts: Map<string, SqlStmt> | null = null;
  #clientGone = false;
  #closing = false;
  #establishing: { resolve: () => void; reject: (err: unknown) => void } | null = null;
  #startupError: TesseraError | null = null;
  #done: Promise<void> | null = null;

  /** A session for a client that completed its startup phase. */
  constructor(
    host: SessionHost,
    pool: Pool | PoolSource,
    start: SessionStart,
    pid: number,
    secret: number,
    admin: boolean,
  ) {
    this.#host = host;
    if (pool instanceof Pool) {
      this.#pool = pool;
      this.#source = { pool: () => pool };
    } else {
      this.#pool = null;
      this.#source = pool;
    }
    this.#conn = start.conn;
    this.user = start.user;
    this.database = start.database;
    this.pid = pid;
    this.secret = secret;
    this.admin = admin;
    this.#reader = new FrameReader(start.conn, READ_SIZE, undefined, READ_BUFFERS);
    this.#out = new Outbox(start.conn, () => this.#closeClient(), WRITE_SIZE, undefined, WRITERS);
  }

  /** Pin reasons as bits of {@linkcode PinReason}; 0 when not pinned. */
  get pins(): number {
    return this.#pins;
  }

  /** Whether the session holds a backend right now. */
  get active(): boolean {
    return this.#backend !== null;
  }

  /**
   * Whether nothing of the session runs on Postgres now: no transaction or request is open (a
   * pinned session may hold its backend meanwhile).
   */
  get betweenTransactions(): boolean {
    return this.#betweenTransactions;
  }

  /**
   * How long (ms, at `now`) the client has left this session idle in a transaction that holds a
   * backend: nothing outstanding on Postgres, and no message from the client since. 0 otherwise.
   */
  idleInTransactionFor(now: number): number {
    if (!this.#reading || this.#backend === null || this.#q.size > 0 || this.#txn === I) return 0;
    return now - this.#readingSince;
  }

  #readingSince = 0;

  /**
   * Ends the session for holding a backend idle in a transaction too long: FATAL 25P03 to the
   * client (Postgres's own message for its idle_in_transaction_session_timeout), then the
   * transaction is rolled back and the backend goes back to the pool.
   */
  terminateIdleInTransaction(): void {
    this.#fatal(
      new TesseraError(
        SqlState.idleInTransactionSessionTimeout,
        "terminating connection due to idle-in-transaction timeout",
        { severity: "FATAL" },
      ),
    );
  }

  /** Whether a query of the session waits in its pool's queue for a backend. */
  get waiting(): boolean {
    return this.#resume !== null;
  }

  /** The pool the session borrows from now (null before its first, on the gateway). */
  get currentPool(): Pool | null {
    return this.#pool;
  }

  /** Resolves once the session has ended. */
  get done(): Promise<void> {
    return this.#done ?? Promise.resolve();
  }

  /** Runs the session: settings, the startup reply, then the client's messages. */
  run(start: SessionStart): Promise<void> {
    this.#done = this.#run(start);
    return this.#done;
  }

  async #run(start: SessionStart): Promise<void> {
    try {
      this.#pool ??= await this.#source.pool();
      await this.#establish(start);
    } catch (err) {
      this.#fatal(TesseraError.from(err));
      await this.#flushOut();
      this.#clientEnded(null, false);
      return;
    }
    const w = this.#ow;
    const server = this.#pool!.serverParams ?? new Map<string, string>();
    for (const [name, value] of server) w.parameterStatus(name, this.#settings.get(name) ?? value);
    w.backendKeyData(this.pid, this.secret).readyForQuery("I");
    await this.#flushOut();
    await this.#loop();
  }

  // ---------------------------------------------------------------- startup settings

  async #establish(start: SessionStart): Promise<void> {
    const raw = new Map<string, string>();
    for (const [name, value] of Object.entries(start.params)) {
      if (!NOT_SETTINGS.has(name) && !name.startsWith("_pq_.")) raw.set(name, value);
    }
    for (const [name, value] of Object.entries(start.settings)) raw.set(name, value);
    for (const name of raw.keys()) {
      if (name.includes(".")) (this.#customNames ??= new Set()).add(name.toLowerCase());
    }
    if (start.params.replication !== undefined && start.params.replication !== "false") {
      throw new TesseraError(
        SqlState.featureNotSupported,
        "replication connections are not supported through the pooler",
        { severity: "FATAL", hint: "connect to Postgres directly for replication" },
      );
    }
    let pool = this.#pool!;
    const rawKey = settingsKey(raw);
    const cached = raw.size === 0 ? NO_SETTINGS : pool.startupCache.get(rawKey);
    if (cached !== undefined && pool.serverParams !== null) {
      this.#startup = this.#settings = cached;
      this.#settingsKey = settingsKey(cached);
      return;
    }
    // Apply the settings on a backend and read back what Postgres made of them: that checks
    // them (an unknown setting fails the login, as it would on Postgres) and normalizes them.
    let established: Promise<void> | undefined;
    const b = await this.#borrow("", pool, undefined, (b) => {
      established = new Promise<void>((resolve, reject) => {
        this.#establishing = { resolve, reject };
      });
      // A failure before the await below is seen there.
      established.catch(() => {});
      this.#take(b, raw);
      this.#verify(b, true, false);
      return b;
    });
    pool = this.#pool!;
    await b.out.flush();
    try {
      await established;
    } finally {
      this.#establishing = null;
    }
    if (this.#startupError !== null) {
      const e = this.#startupError;
      throw new TesseraError(e.code, e.message, {
        severity: "FATAL",
        detail: e.detail,
        hint: e.hint,
      });
    }
    this.#startup = this.#settings;
    if (pool.startupCache.size >= 1000) pool.startupCache.clear();
    pool.startupCache.set(rawKey, this.#settings);
  }

  // ---------------------------------------------------------------- client side

  /**
   * Runs {@linkcode #steps} to its end: a promise it yields is waited on, and a read it asks
   * for is done at once when bytes are there (on the fast network path, a read that must wait
   * resumes from the socket's readiness callback: no promise per read).
   */
  #loop(): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      const r = this.#reader;
      const gen = this.#steps();
      const sync = r.canReadNow;
      let running = false;
      const step = (value: unknown, thrown: boolean): void => {
        if (running) {
          // Never resumed from inside itself: a callback that comes while it runs waits a turn.
          queueMicrotask(() => step(value, thrown));
          return;
        }
        running = true;
        try {
          for (;;) {
            const next = thrown ? gen.throw(value) : gen.next(value);
            if (next.done) {
              resolve();
              return;
            }
            const y = next.value;
            if (y !== READ) {
              if (typeof y === "function") (y as Wait)(onValue);
              else (y as Promise<unknown>).then(onValue, onError);
              return;
            }
            if (!sync) {
              r.read().then(onValue, onError);
              return;
            }
            thrown = false;
            try {
              value = r.readNow();
            } catch (err) {
              value = err;
              thrown = true;
            }
            if (value === undefined) {
              r.whenReadable(onReadable);
              return;
            }
          }
        } catch (err) {
          reject(err);
        } finally {
          running = false;
        }
      };
      const onValue = (v: unknown): void => step(v, false);
      const onError = (err: unknown): void => step(err, true);
      const onReadable = (): void => {
        let n: number | null | undefined;
        try {
          n = r.readNow();
        } catch (err) {
          step(err, true);
          return;
        }
        if (n === undefined) r.whenReadable(onReadable);
        else step(n, false);
      };
      step(undefined, false);
    });
  }

  /** The client loop, as a generator: it yields a promise to wait on, or READ to read. */
  *#steps(): Generator<unknown, void, unknown> {
    const r = this.#reader;
    let error: unknown = null;
    let graceful = false;
    try {
      outer: for (;;) {
        messages: while (r.next()) {
          if (this.#closing) break outer;
          const t = r.type;
          if (CLIENT_TYPES[t] !== 1) {
            throw protocolError(`invalid frontend message type ${describeType(t)}`);
          }
          // (A retry's new connection may fail too, and its retry start meanwhile.)
          while (this.#retrying !== null) yield this.#retrying;
          // A query went out behind a deferred BEGIN: until Postgres has run that BEGIN, the
          // client's next messages wait (see #sendBehindBegin).
          while (this.#behindBegin) {
            if (this.#dirty === null) yield this.#beginRan;
            else yield this.#flushBackend(); // that query must go out first
          }
          if (this.#clientSkip) {
            if (t === Frontend.sync) {
              this.#clientSkip = false;
              this.#ow.readyForQuery(this.#failedTxn ? "E" : "I");
            } else if (t === Frontend.terminate) {
              graceful = true;
              break outer;
            }
            continue;
          }
          if (t === Frontend.terminate) {
            graceful = true;
            break outer;
          }
          if (this.#backend === null && this.#failedTxn) {
            this.#inFailedTransaction(r);
            continue;
          }
          if (this.#backend === null) {
            if (t === Frontend.sync) {
              // Nothing is open: answer here instead of borrowing a backend.
              this.#ow.readyForQuery(this.#deferredBegin === null ? "I" : "T");
              continue;
            }
            if (t === Frontend.query && this.#deferBegin(r)) continue;
            if (
              t === Frontend.flush || t === Frontend.copyData || t === Frontend.copyDone ||
              t === Frontend.copyFail
            ) continue; // nothing to flush; COPY messages outside COPY are ignored, as Postgres does
            // Statement bookkeeping that needs no backend (a client blocked in a synchronous
            // prepare must not wait for one: its other connections may hold them all).
            if (t === Frontend.parse && this.#parseLocally(r)) continue;
            if (t === Frontend.close && this.#closeLocally(r)) continue;
            const tracer = this.#host.tracer;
            const span = tracer === undefined ? null : this.#startCheckout(tracer, r);
            if (this.#dirty !== null) yield this.#flushBackend();
            if (!this.#acquireNow() && !((yield this.#acquire(t)) as boolean)) {
              if (span !== null) this.#noCheckout(span);
              if (this.#closing) break outer;
              continue;
            }
            // While this session waited to run again, the connection it got may have failed
            // before anything was sent on it: it was dropped, and another one is needed.
            while (this.#backend === null) {
              if (this.#closing) {
                if (span !== null) this.#noCheckout(span);
                break outer;
              }
              if (this.#dirty !== null) yield this.#flushBackend();
              if (!this.#acquireNow() && !((yield this.#acquire(t)) as boolean)) {
                if (span !== null) this.#noCheckout(span);
                if (this.#closing) break outer;
                continue messages;
              }
            }
            if (span !== null) this.#checkedOut(span, this.#backend);
          }
          if (
            this.#deferredBegin !== null &&
            (t !== Frontend.query || this.#replay !== null || this.#skipping)
          ) this.#sendBegin(this.#backend!, this.#deferredBegin); // else #onQuery sends it
          this.#handle(r);
        }
        this.#flushOut();
        const b = this.#dirty;
        if (b !== null) {
          this.#dirty = null;
          const wait = b.out.push();
          if (wait !== undefined) yield wait; // the backend is not keeping up (a big COPY)
        }
        if (this.#closing || (this.#draining && this.#endIfIdle())) break;
        this.#reading = true;
        this.#readingSince = clock.now();
        const n = (yield READ) as number | null;
        this.#reading = false;
        if (!r.advance(n)) break;
      }
    } catch (err) {
      error = err;
    }
    this.#reading = false;
    if (this.#dirty !== null) yield this.#flushBackend().catch(() => {});
    this.#clientEnded(error, graceful);
  }

  /**
   * A BEGIN the session may answer itself (no backend held, nothing open): the client gets
   * BEGIN's reply now, and the BEGIN goes out with the transaction's first statement.
   */
  #deferBegin(msg: Frame): boolean {
    if (this.#deferredBegin !== null || this.#host.deferBegin === false) return false;
    if (!isDeferrableBegin(msg.buf, msg.start + 5, msg.end - 1) || msg.buf[msg.end - 1] !== 0) {
      return false;
    }
    // Clients send the same BEGIN over and over: its bytes are kept once (never written to).
    let bytes = lastBegin;
    const len = msg.end - msg.start;
    if (bytes.length !== len || !sameBytes(bytes, msg.buf, msg.start)) {
      bytes = lastBegin = msg.raw.slice();
    }
    this.#deferredBegin = bytes;
    this.#ow.bytes(BEGIN_REPLY);
    return true;
  }

  /** Sends the deferred BEGIN on `b`, ahead of the transaction's first statement. */
  #sendBegin(b: BackendConn, begin: Uint8Array): void {
    this.#deferredBegin = null;
    b.out.w.range(begin, 0, begin.length);
    this.#q.push(Expect.replay, { what: "begin", forwardParams: false } as ReplayAux);
    this.#txn = T;
    this.#dirty = b;
    if (this.#replay !== null) this.#replayBegin = begin;
  }

  /**
   * Sends the client's first query with the deferred BEGIN in front of its text, in one Query
   * message: Postgres runs both with one reply (one ReadyForQuery, one write) instead of two.
   * BEGIN's CommandComplete is swallowed, and error positions are moved back past it. Should the
   * text not parse, nothing runs, BEGIN included: the client, told that BEGIN succeeded, gets
   * its transaction block failed instead (see #beginNotRun). So that nothing it pipelined runs
   * outside the block meanwhile, its next messages wait until Postgres has run the BEGIN.
   */
  #sendBehindBegin(b: BackendConn, begin: Uint8Array, msg: Frame): void {
    this.#deferredBegin = null;
    // `begin` is a whole Query message of plain words (see begin.ts): 'Q', length, text, 0.
    // Its own `;` and trailing spaces are left out: Postgres gets `BEGIN;<the client's text>`.
    let textEnd = begin.length - 1;
    while (textEnd > 5 && (begin[textEnd - 1] === 0x3b || begin[textEnd - 1]! <= 0x20)) textEnd--;
    b.out.w.begin(Frontend.query).range(begin, 5, textEnd).byte(0x3b).range(
      msg.buf,
      msg.start + 5,
      msg.end,
    ).end();
    this.#q.push(Expect.query, {
      swallow: SWALLOW_BEGIN,
      undo: NO_UNDO,
      added: NO_ADDED,
      index: 0,
      shift: textEnd - 4,
      begun: false,
    });
    this.#txn = T;
    this.#behindBegin = true;
  }

  #behindBegin = false;
  #beginRanResume: ((value: unknown) => void) | null = null;
  /** The wait of #steps while {@linkcode #behindBegin}. */
  #beginRan: Wait = (resume) => {
    this.#beginRanResume = resume;
  };

  /** Forgets every response still expected (the backend is gone or its state unknown). */
  #dropExpected(): void {
    this.#q.clear();
    if (this.#behindBegin) this.#endBehindBegin();
  }

  /** Lets the client's next messages through (see #sendBehindBegin). */
  #endBehindBegin(): void {
    this.#behindBegin = false;
    const resume = this.#beginRanResume;
    if (resume === null) return;
    this.#beginRanResume = null;
    queueMicrotask(() => resume(undefined));
  }

  /**
   * The query sent behind a deferred BEGIN did not parse: Postgres ran nothing and is idle. The
   * client's transaction block fails here, as it would have with BEGIN run on its own, and the
   * backend goes back to the pool (nothing ran on it).
   */
  #beginNotRun(b: BackendConn): void {
    this.#ow.readyForQuery("E");
    this.#q.shift();
    this.#failedTxn = true;
    this.#failedError = null;
    this.#triggers = 0; // what the text seemed to do, it did not
    this.#ready(b, I);
    this.#endBehindBegin();
  }

  async #flushBackend(): Promise<void> {
    const b = this.#dirty!;
    this.#dirty = null;
    await b.out.flush();
  }

  /** The span of the current lending of a backend (see SessionHost.tracer), or null. */
  #span: Span | null = null;
  #checkoutStart = 0;

  /**
   * A `pool.checkout` span when the client's message `msg` (a Query or Parse) ends in a
   * sqlcommenter comment with a sampled `traceparent`; null otherwise.
   */
  #startCheckout(tracer: Tracer, msg: Frame): Span | null {
    const t = msg.type;
    let start = msg.start + 5;
    if (t === Frontend.parse) {
      start = msg.buf.indexOf(0, start) + 1; // past the statement's name
      if (start === 0) return null;
    } else if (t !== Frontend.query) return null;
    const end = t === Frontend.query ? msg.end - 1 : msg.buf.indexOf(0, start);
    if (end < start) return null;
    const remote = sqlCommentSpanContext(msg.buf, start, end);
    if (remote === undefined || (remote.traceFlags & 1) === 0) return null;
    const parent = trace.setSpanContext(ROOT_CONTEXT, remote);
    this.#checkoutStart = performance.now();
    return tracer.startSpan("pool.checkout", {
      kind: SpanKind.SERVER,
      attributes: {
        "db.system.name": "postgresql",
        "db.namespace": this.database,
        "tessera.user": this.user,
        "tessera.session.pid": this.pid,
      },
    }, parent);
  }

  /** The lending `span` stands for began: `b` came. */
  #checkedOut(span: Span, b: BackendConn | null): void {
    if (b === null) {
      this.#noCheckout(span);
      return;
    }
    span.setAttributes({
      "tessera.backend.pid": b.pid,
      "tessera.pool.wait_ms": Math.round((performance.now() - this.#checkoutStart) * 1000) / 1000,
    });
    span.addEvent("connection acquired");
    this.#span?.end(); // (never left open: one lending at a time)
    this.#span = span;
  }

  /** No backend came for the transaction `span` stands for. */
  #noCheckout(span: Span): void {
    span.setStatus({ code: SpanStatusCode.ERROR, message: "no connection was acquired" });
    span.end();
  }

  /** The current lending ended: the backend went back to the pool, or was dropped (`error`). */
  #endCheckout(error?: string): void {
    const span = this.#span;
    if (span === null) return;
    this.#span = null;
    if (this.#pins !== 0) span.setAttribute("tessera.pinned", pinReasons(this.#pins));
    if (error !== undefined) span.setStatus({ code: SpanStatusCode.ERROR, message: error });
    span.end();
  }

  /** Takes an idle backend without waiting; false when that needs a wait. */
  #acquireNow(): boolean {
    const source = this.#source;
    const p = source.retry === undefined ? this.#pool : source.poolNow?.() ?? null;
    if (p === null) return false;
    const b = p.tryAcquire(this.#settingsKey, this.admin);
    if (b === null) return false;
    this.#pool = p;
    this.#took(b);
    return true;
  }

  /**
   * Waits for a backend; false when none came (the client was answered, or is gone). The usual
   * wait (a fixed pool, all lent) is a callback the client loop's driver starts: no promise.
   */
  #acquire(type: number): Promise<boolean> | Wait {
    if (this.#source.retry !== undefined) return this.#acquireRetrying(type);
    this.#acquireType = type;
    // Made at the first wait, so an idle session carries no closures.
    return this.#waitFixed ??= (resume) => {
      this.#resume = resume;
      this.#pool!.wait(
        this.#settingsKey,
        this.admin,
        this.#onWaited ??= (b, err) => {
          // Called from inside the pool (another session's release): the rest waits a turn.
          this.#waitedFor = b;
          this.#waitError = err;
          queueMicrotask(
            this.#afterWait ??= () => {
              const got = this.#waitedFor;
              const resume = this.#resume!;
              this.#waitedFor = null;
              this.#resume = null;
              resume(got !== null ? this.#acquired(got) : this.#notAcquired(this.#waitError));
            },
          );
        },
      );
    };
  }

  /**
   * A cancel request while a query of this session waits for a backend: the query leaves the
   * queue and the client gets 57014, as when Postgres cancels a statement. False when nothing
   * waits.
   */
  cancelWait(): boolean {
    if (this.#resume === null || this.#onWaited === undefined || this.#pool === null) return false;
    return this.#pool.cancelWait(
      this.#onWaited,
      new TesseraError(SqlState.queryCanceled, "canceling statement due to user request"),
    );
  }

  #acquireType = 0;
  #waitFixed: Wait | undefined;
  #resume: ((value: unknown) => void) | null = null;
  #onWaited: ((b: BackendConn | null, err: unknown) => void) | undefined;
  #afterWait: (() => void) | undefined;
  #waitedFor: BackendConn | null = null;
  #waitError: unknown = null;

  #acquired(b: BackendConn): boolean {
    if (b.closed) {
      // Closed while the lending reached this session: its messages would be written nowhere.
      this.#pool!.discard(b);
      return this.#notAcquired(
        new TesseraError(SqlState.connectionFailure, "the pooled connection was closed"),
      );
    }
    return this.#adopt(b);
  }

  /** A backend came: take it, or give it back when the client left meanwhile. */
  #adopt(b: BackendConn): boolean {
    if (this.#clientGone || this.#closing) {
      this.#pool!.release(b);
      return false;
    }
    this.#took(b);
    return true;
  }

  #notAcquired(err: unknown): boolean {
    this.#acquireFailed(TesseraError.from(err), this.#acquireType);
    return false;
  }

  async #acquireRetrying(type: number): Promise<boolean> {
    try {
      return await this.#borrow(this.#settingsKey, null, undefined, this.#adoptFn);
    } catch (err) {
      this.#acquireFailed(TesseraError.from(err), type);
      return false;
    }
  }

  #adoptFn = (b: BackendConn): boolean => this.#adopt(b);

  #took(b: BackendConn): void {
    this.#take(b, this.#settings);
    if (this.#source.retry !== undefined && this.#pins === 0) {
      this.#replay = [];
      this.#replayBegin = null;
      this.#replayBytes = 0;
      this.#delivered.length = 0;
      this.#matched = 0;
    }
  }

  /**
   * Borrows a backend from the source's pool (from `pool` when given), trying again on a fresh
   * pool while the source allows it, and hands it to `use` at once: a backend that closed while
   * its lending reached this session is never used (the session would wait for its replies
   * forever), and none can close between the check and `use`. Sets the session's current pool.
   */
  async #borrow<R>(
    key: string,
    pool: Pool | null,
    failed: { pool: Pool; error: unknown } | undefined,
    use: (b: BackendConn) => R,
  ): Promise<R> {
    let attempt = 0;
    for (;;) {
      if (failed !== undefined) {
        const retry = this.#source.retry;
        if (
          retry === undefined ||
          !(await retry.call(this.#source, failed.pool, failed.error, attempt++))
        ) {
          throw failed.error;
        }
        if (this.#clientGone || this.#closing) throw failed.error;
        pool = null;
      }
      const p = pool ?? await this.#source.pool();
      let b: BackendConn;
      try {
        b = await p.acquire(key, this.admin);
      } catch (error) {
        failed = { pool: p, error };
        continue;
      }
      if (!b.closed) {
        this.#pool = p;
        return use(b);
      }
      // Closed while the lending reached this session: its messages would be written nowhere.
      p.discard(b);
      failed = {
        pool: p,
        error: new TesseraError(SqlState.connectionFailure, "the pooled connection was closed"),
      };
    }
  }

  /**
   * The connection was lost inside a transaction (results already reached the client, or a
   * transaction block is open): the transaction cannot move, so it fails, and the session goes
   * on with its next one. A statement that was running gets 08006 (connection failure: if it
   * was a COMMIT, whether it committed is unknown); a transaction block that was idle gets 40001
   * (serialization failure: certainly rolled back, and the code that applications and drivers
   * treat as "retry the transaction") at its next statement. Inside a block the client then sees
   * the block as failed (ReadyForQuery `E`) until it ends it with ROLLBACK (or COMMIT, which
   * reports ROLLBACK, as on Postgres).
   */
  #lostInTransaction(b: BackendConn, err: unknown): void {
    const q = this.#q;
    let readies = 0;
    this.#eachExpected((kind) => {
      if (kind === Expect.query || kind === Expect.sync) readies++;
    });
    const outstanding = q.size > 0;
    const inBlock = this.#txn !== I;
    this.#backend = null;
    this.#endCheckout("the connection was lost in the transaction");
    if (this.#dirty === b) this.#dirty = null;
    this.#undoQueue(b);
    this.#skipping = false;
    this.#copyIn = false;
    this.#extOpen = false;
    this.#pool!.discard(b);
    const detail = err instanceof Error ? err.message : String(err);
    this.#host.transactionLost?.(this);
    this.#host.log.warn("a pooled connection was lost during a transaction", {
      session: this.pid,
      error: err,
    });
    const w = this.#ow;
    if (outstanding) {
      w.errorResponse(
        new TesseraError(
          SqlState.connectionFailure,
          "connection to the primary was lost during the transaction; the transaction was rolled back",
          {
            detail,
            hint: "retry the transaction; if the connection was lost during COMMIT, check " +
              "whether it committed first",
          },
        ),
      );
      this.#failedTxn = inBlock;
      this.#failedError = null;
      for (let i = 0; i < readies; i++) w.readyForQuery(inBlock ? "E" : "I");
      if (readies === 0) this.#clientSkip = true;
    } else if (inBlock) {
      this.#failedTxn = true;
      this.#failedError = new TesseraError(
        SqlState.serializationFailure,
        "connection to the primary was lost during the transaction; the transaction was rolled back",
        { detail, hint: "roll back and retry the transaction" },
      );
    }
    this.#txn = I;
    this.#flushOut();
  }

  /** A message while the transaction block failed with its connection: answered here. */
  #inFailedTransaction(msg: Frame): void {
    const t = msg.type;
    const w = this.#ow;
    const err = this.#failedError ?? new TesseraError(
      SqlState.inFailedSqlTransaction,
      "current transaction is aborted, commands ignored until end of transaction block",
    );
    switch (t) {
      case Frontend.query: {
        const text = decoder.decode(msg.payload.subarray(0, msg.payload.length - 1));
        if (/^\s*(rollback|abort|commit|end)\b/i.test(text)) {
          this.#failedTxn = false;
          this.#failedError = null;
          w.commandComplete("ROLLBACK").readyForQuery("I");
          return;
        }
        this.#failedError = null;
        w.errorResponse(err).readyForQuery("E");
        return;
      }
      case Frontend.sync:
        w.readyForQuery("E");
        return;
      case Frontend.flush:
      case Frontend.copyData:
      case Frontend.copyDone:
      case Frontend.copyFail:
        return;
      default:
        this.#failedError = null;
        w.errorResponse(err);
        if (t === Frontend.functionCall) w.readyForQuery("E");
        else this.#clientSkip = true;
    }
  }

  /** Whether an error from a pooled connection means the connection (not the query) failed. */
  static isConnectionError(code: string): boolean {
    return code.startsWith("08") || code === "57P01" || code === "57P02" || code === "57P03";
  }

  /**
   * The connection failed before anything of the transaction reached the client: forget what was
   * sent on it and send the transaction's messages again on another connection.
   */
  #retryTransaction(b: BackendConn, error: unknown): void {
    if (this.#replay!.length === 0) {
      // Nothing of the transaction was sent on it yet: the client loop takes another connection
      // when it sends the transaction's first message.
      this.#replay = null;
      this.#backend = null;
      this.#endCheckout("the connection failed before the transaction started");
      if (this.#dirty === b) this.#dirty = null;
      this.#undoQueue(b);
      b.owner = null;
      this.#pool!.discard(b);
      this.#host.log.info("a pooled connection failed before its transaction started", {
        session: this.pid,
        error,
      });
      return;
    }
    const frames = this.#replay!;
    const begin = this.#replayBegin;
    this.#replay = null;
    this.#replayBegin = null;
    // What was forwarded carries no result (else there would be no retry): the client gets it
    // now, and the new connection's copies of it are dropped.
    this.#flushOut();
    this.#matched = 0;
    const pool = this.#pool!;
    this.#backend = null;
    this.#endCheckout("the connection failed; the transaction is retried on another");
    if (this.#dirty === b) this.#dirty = null;
    this.#undoQueue(b);
    this.#skipping = false;
    this.#copyIn = false;
    this.#extOpen = false;
    b.owner = null;
    pool.discard(b);
    this.#host.log.info("a pooled connection failed at the start of a transaction; retrying", {
      session: this.pid,
      error,
    });
    const retrying: Promise<void> = this.#resend(pool, error, frames, begin).finally(() => {
      if (this.#retrying === retrying) this.#retrying = null;
    });
    this.#retrying = retrying;
  }

  /** Reverts what the session assumed of every request still outstanding, and forgets them. */
  #undoQueue(b: BackendConn): void {
    this.#eachExpected((kind, aux) => {
      if (kind === Expect.query && aux !== undefined) {
        const plan = aux as QueryPlan;
        for (let i = plan.undo.length - 1; i >= plan.index; i--) plan.undo[i]?.();
      } else {
        this.#undo(b, kind, aux);
      }
    });
    this.#dropExpected();
  }

  /** Calls `fn` for every response still expected, the first one included. */
  #eachExpected(fn: (kind: number, aux: unknown) => void): void {
    const q = this.#q;
    if (q.size === 0) return;
    fn(q.headKind, q.headAux);
    q.forEach(fn);
  }

  async #resend(
    pool: Pool,
    error: unknown,
    frames: Uint8Array[],
    begin: Uint8Array | null,
  ): Promise<void> {
    try {
      // The borrow settles once what `use` returns (the write to the new backend) has.
      await this.#borrow(this.#settingsKey, null, { pool, error }, (b) => {
        if (this.#clientGone || this.#closing) {
          this.#pool!.release(b);
          return undefined;
        }
        this.#take(b, this.#settings);
        this.#replay = [];
        this.#replayBytes = 0;
        if (begin !== null) this.#sendBegin(b, begin);
        for (const raw of frames) this.#handle(frameOf(raw));
        this.#dirty = null;
        return b.out.flush();
      });
    } catch (err) {
      if (this.#clientGone || this.#closing) return;
      this.#failFrames(TesseraError.from(err), frames, begin !== null);
    }
  }

  /**
   * A transaction that could not be started anywhere: the client gets the error (and, when its
   * BEGIN was answered already, a failed transaction block to roll back).
   */
  #failFrames(err: TesseraError, frames: Uint8Array[], inBlock: boolean): void {
    this.#delivered.length = 0;
    this.#matched = 0;
    if (err.severity === "FATAL" || err.severity === "PANIC") {
      this.#fatal(err);
      this.#flushOut();
      return;
    }
    const w = this.#ow;
    let errorSent = false;
    let last = 0;
    for (const raw of frames) {
      const t = raw[0]!;
      last = t;
      if (!errorSent && t !== Frontend.flush) {
        w.errorResponse(err);
        errorSent = true;
      }
      if (t === Frontend.query || t === Frontend.functionCall || t === Frontend.sync) {
        w.readyForQuery(inBlock ? "E" : "I");
        errorSent = false;
      }
    }
    if (last !== Frontend.query && last !== Frontend.functionCall && last !== Frontend.sync) {
      this.#clientSkip = true;
    }
    if (inBlock) {
      this.#failedTxn = true;
      this.#failedError = null;
    }
    this.#flushOut();
  }

  #acquireFailed(err: TesseraError, type: number): void {
    if (err.severity === "FATAL" || err.severity === "PANIC") {
      this.#fatal(err);
      return;
    }
    // After a deferred BEGIN the client is in a transaction block: the error fails the block.
    const inBlock = this.#deferredBegin !== null;
    if (inBlock) {
      this.#deferredBegin = null;
      this.#failedTxn = true;
      this.#failedError = null;
    }
    const w = this.#ow;
    w.errorResponse(err);
    if (type === Frontend.query || type === Frontend.functionCall) {
      w.readyForQuery(inBlock ? "E" : "I");
    } else this.#clientSkip = true; // extended protocol: skip to Sync, as after any error
  }

  /** Takes `b` for this session and makes it carry `settings`. */
  #take(b: BackendConn, settings: Settings): void {
    this.#backend = b;
    b.owner = this;
    this.#txn = I;
    this.#extOpen = false;
    this.#skipping = false;
    this.#copyIn = false;
    const key = settings === this.#settings ? this.#settingsKey : settingsKey(settings);
    if (b.settingsKey !== key) {
      const sql = replaySql(b.settings, settings);
      if (sql !== "") {
        b.out.w.query(sql);
        this.#q.push(Expect.replay, { what: "settings", forwardParams: false } as ReplayAux);
      }
      b.settings = settings;
      b.settingsKey = key;
      this.#dirty = b;
    }
    if (b.prepared.size > this.#host.preparedCacheSize) this.#evict(b);
  }

  /** Deallocates the least recently used statements beyond the cache size. */
  #evict(b: BackendConn): void {
    const over = b.prepared.size - this.#host.preparedCacheSize;
    if (over <= 0) return;
    const names: string[] = [];
    for (const name of b.prepared.keys()) {
      if (names.length >= over) break;
      names.push(name);
    }
    for (const name of names) b.prepared.delete(name);
    this.#pool!.stats.preparedEvictions += names.length;
    b.out.w.query(names.map((n) => `DEALLOCATE ${n}`).join("; "));
    this.#q.push(Expect.replay, { what: "evict", forwardParams: false } as ReplayAux);
    this.#dirty = b;
  }

  #handle(msg: Frame): void {
    const b = this.#backend!;
    this.#dirty = b;
    const replay = this.#replay;
    if (replay !== null) {
      this.#replayBytes += msg.end - msg.start;
      if (this.#replayBytes > REPLAY_LIMIT) this.#replay = null;
      else replay.push(msg.raw.slice());
    }
    const t = msg.type;
    if (this.#skipping && t !== Frontend.sync) {
      // The backend discards everything up to Sync after an error: so does the bookkeeping.
      b.out.w.range(msg.buf, msg.start, msg.end);
      return;
    }
    switch (t) {
      case Frontend.query:
        this.#onQuery(b, msg);
        return;
      case Frontend.parse:
        this.#onParse(b, msg);
        return;
      case Frontend.bind:
        this.#onBind(b, msg);
        return;
      case Frontend.execute:
        b.out.w.range(msg.buf, msg.start, msg.end);
        this.#q.push(Expect.execute);
        this.#extOpen = true;
        return;
      case Frontend.describe:
        this.#onDescribe(b, msg);
        return;
      case Frontend.close:
        this.#onClose(b, msg);
        return;
      case Frontend.sync:
        b.out.w.range(msg.buf, msg.start, msg.end);
        // Postgres ignores Sync during COPY FROM STDIN.
        if (!this.#copyIn) {
          this.#q.push(Expect.sync);
          this.#extOpen = false;
        }
        return;
      case Frontend.copyDone:
      case Frontend.copyFail:
        this.#copyIn = false;
        b.out.w.range(msg.buf, msg.start, msg.end);
        return;
      case Frontend.functionCall:
        b.out.w.range(msg.buf, msg.start, msg.end);
        this.#q.push(Expect.query);
        return;
      default: // Flush, CopyData
        b.out.w.range(msg.buf, msg.start, msg.end);
    }
  }

  #onQuery(b: BackendConn, msg: Frame): void {
    const buf = msg.buf;
    const last = msg.end - 1;
    if (last < msg.start + 5 || buf[last] !== 0) {
      throw protocolError("invalid Query message: missing terminator");
    }
    const flags = scanSql(buf, msg.start + 5, last);
    this.#triggers |= flags;
    if ((flags & Trigger.databaseDdl) !== 0) this.#releaseDatabases(buf, msg.start + 5, last);
    const begin = this.#deferredBegin;
    if (begin !== null) {
      // A text that starts with a word holds a statement (an empty one must not get BEGIN's
      // reply in place of its EmptyQueryResponse).
      if (
        (flags & (Trigger.sqlPrepare | Trigger.backendPid | SETTING_NAMES)) === 0 &&
        startsWithLetter(buf, msg.start + 5, last)
      ) {
        this.#sendBehindBegin(b, begin, msg);
        return;
      }
      this.#sendBegin(b, begin);
    } else if (
      b.prepared.size > this.#host.preparedCacheSize && this.#q.size === 0 && !this.#extOpen &&
      this.#txn !== E
    ) this.#evict(b); // only here is the transaction state known (nothing outstanding)
    if ((flags & (Trigger.sqlPrepare | Trigger.backendPid | SETTING_NAMES)) === 0) {
      b.out.w.range(buf, msg.start, msg.end);
      this.#q.push(Expect.query);
      return;
    }
    const p = msg.payload;
    const end = p.length - 1;
    if ((flags & SETTING_NAMES) !== 0) this.#noteSettingNames(p, 0, end);
    if ((flags & (Trigger.sqlPrepare | Trigger.backendPid)) === 0) {
      b.out.w.range(msg.buf, msg.start, msg.end);
      this.#q.push(Expect.query);
      return;
    }
    let text = p.subarray(0, end);
    if ((flags & Trigger.backendPid) !== 0) {
      text = rewriteBackendPid(text, 0, text.length, this.pid) ?? text;
    }
    let plan: QueryPlan | undefined;
    if ((flags & Trigger.sqlPrepare) !== 0 && (this.#pins & PIN_SQL) === 0) {
      const planned = this.#planSqlPrepare(b, text);
      if (planned !== null) {
        text = planned.text;
        plan = planned.plan;
      }
    }
    b.out.w.begin(Frontend.query).bytes(text).byte(0).end();
    this.#q.push(Expect.query, plan);
  }

  /**
   * Rewrites PREPARE / EXECUTE / DEALLOCATE statement names to canonical ones, inserting the
   * statements that make the backend's prepared statements match (their results swallowed).
   */
  #planSqlPrepare(
    b: BackendConn,
    text: Uint8Array,
  ): { text: Uint8Array; plan: QueryPlan } | null {
    const ops = findSqlPrepareOps(text);
    if (ops.length === 0) return null;
    const starts = statementStarts(text);
    const sqlStmts = this.#sqlStmts ??= new Map();
    const plan: QueryPlan = {
      swallow: [],
      undo: [],
      added: [],
      index: 0,
      shift: 0,
      begun: false,
    };
    const parts: Uint8Array[] = [];
    let copied = 0;
    const inject = (at: number, sql: string, undo?: () => void) => {
      parts.push(text.subarray(copied, at), encoder.encode(sql + "; "));
      copied = at;
      plan.swallow.push(true);
      plan.undo.push(undo);
    };
    const rename = (nameStart: number, nameEnd: number, canonical: string) => {
      parts.push(text.subarray(copied, nameStart), encoder.encode(canonical));
      copied = nameEnd;
    };
    const ensure = (at: number, s: SqlStmt) => {
      if (b.touchPrepared(s.canonical)) return;
      b.prepared.set(s.canonical, true);
      plan.added.push(s.canonical);
      inject(at, s.sql, () => b.prepared.delete(s.canonical));
    };
    let k = 0;
    for (let j = 0; j < starts.length; j++) {
      const at = starts[j]!;
      const next = starts[j + 1] ?? Infinity;
      let undo: (() => void) | undefined;
      const op = k < ops.length && ops[k]!.nameStart >= at && ops[k]!.nameStart < next
        ? ops[k++]!
        : undefined;
      const name = op?.name ?? null;
      if (op === undefined || name === null) {
        // A plain statement, or DEALLOCATE ALL (its tag clears the bookkeeping).
      } else if (op.kind === "prepare") {
        const existing = sqlStmts.get(name);
        if (existing !== undefined) {
          // Make Postgres refuse the duplicate, as it would (42P05).
          ensure(at, existing);
          rename(op.nameStart, op.nameEnd, existing.canonical);
        } else {
          const rest = text.subarray(op.nameEnd, op.stmtEnd);
          const canonical = canonicalName("_ts", rest);
          const s: SqlStmt = { canonical, sql: `PREPARE ${canonical}${decoder.decode(rest)}` };
          sqlStmts.set(name, s);
          if (b.touchPrepared(canonical)) {
            // Another session prepared the same text here: let this PREPARE succeed.
            inject(at, `DEALLOCATE ${canonical}`);
          } else {
            b.prepared.set(canonical, true);
            plan.added.push(canonical);
          }
          rename(op.nameStart, op.nameEnd, canonical);
          undo = () => {
            if (sqlStmts.get(name) === s) sqlStmts.delete(name);
            b.prepared.delete(canonical);
          };
        }
      } else {
        const s = sqlStmts.get(name);
        if (s !== undefined) {
          ensure(at, s);
          rename(op.nameStart, op.nameEnd, s.canonical);
          if (op.kind === "deallocate") {
            sqlStmts.delete(name);
            b.prepared.delete(s.canonical);
            undo = () => {
              sqlStmts.set(name, s);
              b.prepared.set(s.canonical, true);
            };
          }
        }
      }
      plan.swallow.push(false);
      plan.undo.push(undo);
    }
    parts.push(text.subarray(copied));
    return { text: concat(...parts), plan };
  }

  #releaseDatabases(buf: Uint8Array, start: number, end: number): void {
    const names = findExclusiveDatabases(buf, start, end);
    if (names.length > 0) this.#host.releaseDatabases?.(names);
  }

  #noteSettingNames(p: Uint8Array, start: number, end: number): void {
    for (const name of findCustomSettingNames(p, start, end)) {
      (this.#customNames ??= new Set()).add(name);
    }
  }

  /** Reads a Parse message: where its name ends, its trigger bits, its payload after rewrites. */
  #readParse(msg: Frame): { nameEnd: number; flags: number; payload: Uint8Array } {
    const p = msg.payload;
    const nameEnd = p.indexOf(0);
    const textEnd = nameEnd < 0 ? -1 : p.indexOf(0, nameEnd + 1);
    if (textEnd < 0 || p.length < textEnd + 3) {
      throw protocolError("invalid Parse message: missing terminator");
    }
    const flags = scanSql(p, nameEnd + 1, textEnd);
    if ((flags & (Trigger.setStatement | Trigger.settings)) !== 0) {
      this.#noteSettingNames(p, nameEnd + 1, textEnd);
    }
    if ((flags & Trigger.databaseDdl) !== 0) this.#releaseDatabases(p, nameEnd + 1, textEnd);
    let payload = p;
    if ((flags & Trigger.backendPid) !== 0) {
      const text = rewriteBackendPid(p, nameEnd + 1, textEnd, this.pid);
      if (text !== null) payload = concat(p.subarray(0, nameEnd + 1), text, p.subarray(textEnd));
    }
    return { nameEnd, flags, payload };
  }

  /**
   * A named Parse while no backend is held, of a statement this pool has already parsed
   * successfully: answered here. False when a backend is needed.
   */
  #parseLocally(msg: Frame): boolean {
    const { nameEnd, flags, payload } = this.#readParse(msg);
    if (nameEnd === 0 || (flags & Trigger.sqlPrepare) !== 0) return false;
    const name = nameKey(payload, 0, nameEnd);
    if (this.#stmts?.has(name)) return false;
    const canonical = canonicalName("_tp", payload.subarray(nameEnd + 1));
    if (!this.#pool!.knownStatements.has(canonical)) return false;
    (this.#stmts ??= new Map()).set(name, {
      canonical,
      parse: rewriteStatementName(Frontend.parse, payload, canonical),
      flags,
    });
    this.#pool!.stats.preparedHits++;
    this.#ow.parseComplete();
    return true;
  }

  /** Close of a named statement while no backend is held: answered here. */
  #closeLocally(msg: Frame): boolean {
    const p = msg.payload;
    const nameEnd = p.indexOf(0, 1);
    if (p.length < 2 || nameEnd < 0) throw protocolError("invalid Close message");
    if (p[0] !== 0x53 || nameEnd === 1) return false;
    this.#stmts?.delete(nameKey(p, 1, nameEnd));
    this.#ow.closeComplete();
    return true;
  }

  #onParse(b: BackendConn, msg: Frame): void {
    const { nameEnd, flags, payload } = this.#readParse(msg);
    const p = msg.payload;
    this.#extOpen = true;
    if ((flags & Trigger.sqlPrepare) !== 0 && (this.#pins & PIN_SQL) === 0) {
      if (!this.#pinForSqlPrepare(b)) {
        // Have the backend fail this Parse (so the pipeline behaves as on any error) and
        // report why instead of its syntax error.
        b.out.w.parse("", "!");
        this.#q.push(Expect.parse, {
          subError: errorBytes(
            SqlState.featureNotSupported,
            "SQL PREPARE, EXECUTE and DEALLOCATE through the extended query protocol are not " +
              "supported by the pooler in the middle of a pipeline",
          ),
        } as ParseAux);
        return;
      }
    }
    if (nameEnd === 0) {
      this.#unnamedFlags = flags;
      if (payload === p) b.out.w.range(msg.buf, msg.start, msg.end);
      else b.out.w.begin(Frontend.parse).bytes(payload).end();
      this.#q.push(Expect.parse);
      return;
    }
    const name = nameKey(p, 0, nameEnd);
    const stmts = this.#stmts ??= new Map();
    const existing = stmts.get(name);
    if (existing !== undefined) {
      // Postgres refuses a second statement of the same name: have the backend refuse it
      // under the existing canonical name, and report the client's name.
      this.#ensurePrepared(b, existing);
      writeWithStatementName(b.out.w, Frontend.parse, payload, existing.canonical);
      this.#q.push(Expect.parse, {
        subError: errorBytes(
          "42P05",
          `prepared statement "${displayName(name)}" already exists`,
        ),
      } as ParseAux);
      return;
    }
    const canonical = canonicalName("_tp", payload.subarray(nameEnd + 1));
    const stmt: ProtoStmt = {
      canonical,
      parse: rewriteStatementName(Frontend.parse, payload, canonical),
      flags,
    };
    stmts.set(name, stmt);
    if (this.#txn !== E && b.touchPrepared(canonical)) {
      this.#pool!.stats.preparedHits++;
      this.#q.push(Expect.synthParse, { name, stmt } as ParseAux);
      this.#drainSynthetic();
      return;
    }
    const aux: ParseAux = { name, stmt };
    if (!b.prepared.has(canonical)) {
      this.#pool!.stats.preparedMisses++;
      b.prepared.set(canonical, true);
      aux.canonical = canonical;
    }
    b.out.append(stmt.parse);
    this.#q.push(Expect.parse, aux);
  }

  /** Makes sure the backend has the statement, injecting its Parse when it does not. */
  #ensurePrepared(b: BackendConn, stmt: ProtoStmt): void {
    if (b.touchPrepared(stmt.canonical)) {
      this.#pool!.stats.preparedHits++;
      return;
    }
    this.#pool!.stats.preparedMisses++;
    b.prepared.set(stmt.canonical, true);
    b.out.append(stmt.parse);
    this.#q.push(Expect.injectedParse, stmt.canonical);
  }

  #onBind(b: BackendConn, msg: Frame): void {
    const p = msg.payload;
    const portalEnd = p.indexOf(0);
    const nameEnd = portalEnd < 0 ? -1 : p.indexOf(0, portalEnd + 1);
    if (nameEnd < 0) throw protocolError("invalid Bind message: missing terminator");
    this.#extOpen = true;
    if (nameEnd === portalEnd + 1) {
      this.#triggers |= this.#unnamedFlags;
      b.out.w.range(msg.buf, msg.start, msg.end);
      this.#q.push(Expect.bind);
      return;
    }
    const stmt = this.#stmts?.get(nameKey(p, portalEnd + 1, nameEnd));
    if (stmt === undefined) {
      b.out.w.range(msg.buf, msg.start, msg.end); // Postgres reports the unknown statement
    } else {
      this.#triggers |= stmt.flags;
      this.#ensurePrepared(b, stmt);
      writeWithStatementName(b.out.w, Frontend.bind, p, stmt.canonical);
    }
    this.#q.push(Expect.bind);
  }

  #onDescribe(b: BackendConn, msg: Frame): void {
    const p = msg.payload;
    const nameEnd = p.indexOf(0, 1);
    if (p.length < 2 || nameEnd < 0) throw protocolError("invalid Describe message");
    this.#extOpen = true;
    const stmt = p[0] === 0x53 && nameEnd > 1
      ? this.#stmts?.get(nameKey(p, 1, nameEnd))
      : undefined;
    if (stmt === undefined) {
      b.out.w.range(msg.buf, msg.start, msg.end);
    } else {
      this.#ensurePrepared(b, stmt);
      writeWithStatementName(b.out.w, Frontend.describe, p, stmt.canonical);
    }
    this.#q.push(Expect.describe);
  }

  #onClose(b: BackendConn, msg: Frame): void {
    const p = msg.payload;
    const nameEnd = p.indexOf(0, 1);
    if (p.length < 2 || nameEnd < 0) throw protocolError("invalid Close message");
    this.#extOpen = true;
    if (p[0] === 0x53 && nameEnd > 1) {
      // The canonical statement stays on the backend for others; only the client's name goes.
      const name = nameKey(p, 1, nameEnd);
      const stmt = this.#stmts?.get(name);
      if (stmt !== undefined) this.#stmts!.delete(name);
      this.#q.push(Expect.synthClose, { name, stmt } as CloseAux);
      this.#drainSynthetic();
      return;
    }
    b.out.w.range(msg.buf, msg.start, msg.end);
    this.#q.push(Expect.close);
  }

  /**
   * SQL-level PREPARE/EXECUTE/DEALLOCATE through the extended protocol: their effect comes at
   * Execute, which the rewriting cannot follow, so the session is pinned and its SQL-level
   * statements are re-created on the backend under their own names. False when that cannot
   * be done here (in the middle of a pipeline).
   */
  #pinForSqlPrepare(b: BackendConn): boolean {
    const stmts = this.#sqlStmts;
    if (stmts !== null && stmts.size > 0) {
      if (this.#q.size > 0 || this.#txn === E) return false;
      const sql = [...stmts].map(([name, s]) =>
        `PREPARE "${name.replaceAll('"', '""')}"${s.sql.slice(8 + s.canonical.length)}`
      ).join("; ");
      stmts.clear();
      // The Parse being handled was already counted as opening the pipeline; the query goes first.
      b.out.w.query(sql);
      this.#q.push(Expect.replay, { what: "sql-pin", forwardParams: false } as ReplayAux);
    }
    this.#pins |= PIN_SQL;
    return true;
  }

  /**
   * Forwards a backend message as it is. Consecutive messages of one read are gathered into
   * one span of the reader's buffer and copied once, when something else must be written or
   * the read's messages are all handled.
   */
  #fwd(m: Frame): void {
    if (
      (this.#replay !== null || this.#matched < this.#delivered.length) && this.#retryable(m.type)
    ) return;
    if (this.#spanBuf === m.buf && this.#spanEnd === m.start) {
      this.#spanEnd = m.end;
      return;
    }
    this.#flushSpan();
    this.#spanBuf = m.buf;
    this.#spanStart = m.start;
    this.#spanEnd = m.end;
  }

  /**
   * Bookkeeping of a reply in a transaction that may be retried: true when the reply is one the
   * client already has from a failed connection (dropped). A reply with a result (rows, a command
   * tag, an error, ReadyForQuery...) ends the possibility of a retry.
   */
  #retryable(type: number): boolean {
    const delivered = this.#delivered;
    if (this.#matched < delivered.length) {
      if (delivered[this.#matched] === type) {
        this.#matched++;
        return true;
      }
      // Postgres answered differently this time: what follows is forwarded as it comes.
      this.#matched = delivered.length;
    }
    if (this.#replay === null) return false;
    if (PREAMBLE[type] === 1) {
      delivered.push(type);
      this.#matched++;
    } else {
      this.#replay = null;
    }
    return false;
  }

  #flushSpan(): void {
    const buf = this.#spanBuf;
    if (buf === null) return;
    this.#spanBuf = null;
    this.#out.w.range(buf, this.#spanStart, this.#spanEnd);
  }

  /** The client's writer, after what was forwarded so far (order is kept). */
  get #ow(): MessageWriter {
    this.#replay = null;
    this.#flushSpan();
    return this.#out.w;
  }

  #flushOut(): Promise<void> {
    this.#flushSpan();
    return this.#out.flush();
  }

  #drainSynthetic(): void {
    const q = this.#q;
    for (;;) {
      const k = q.headKind;
      if (k === Expect.synthParse) this.#ow.parseComplete();
      else if (k === Expect.synthClose) this.#ow.closeComplete();
      else return;
      q.shift();
    }
  }

  // ---------------------------------------------------------------- backend side

  /** Handles one message from the backend this session holds. */
  onBackendMessage(b: BackendConn, msg: Frame): void {
    const t = msg.type;
    if (t === Backend.errorResponse && this.#source.retry !== undefined && this.#backend === b) {
      if (this.#replay !== null) {
        const err = decodeError(msg.payload);
        if (Session.isConnectionError(err.code)) {
          this.#retryTransaction(b, err);
          return;
        }
      } else if (this.#establishing === null && !this.#clientGone && this.#pins === 0) {
        // The pooler (or its Postgres) ending the connection in the middle of a transaction.
        const err = decodeError(msg.payload);
        if (
          (err.severity === "FATAL" || err.severity === "PANIC") &&
          Session.isConnectionError(err.code)
        ) {
          this.#lostInTransaction(b, err);
          return;
        }
      }
    }
    const q = this.#q;
    const kind = q.headKind;
    switch (t) {
      case Backend.noticeResponse:
        if (kind < Expect.replay) {
          const plan = kind === Expect.query ? q.headAux as QueryPlan | undefined : undefined;
          if (plan !== undefined && plan.shift > 0) {
            this.#ow.bytes(shiftPosition(msg.buf, msg.start, msg.end, plan.shift));
          } else this.#fwd(msg);
        }
        return;
      case Backend.parameterStatus:
        if (kind < Expect.replay) {
          this.#fwd(msg);
          this.#triggers |= Trigger.settings;
        } else if (
          kind === Expect.verify || // its only writes put back the client's startup settings
          (kind === Expect.replay && (q.headAux as ReplayAux).forwardParams)
        ) {
          this.#fwd(msg);
        }
        return;
      case Backend.notificationResponse:
        this.#forwardNotification(b, msg);
        return;
    }
    switch (kind) {
      case Expect.query:
        this.#onQueryReply(b, msg);
        return;
      case Expect.sync:
        if (t === Backend.readyForQuery) {
          this.#fwd(msg);
          q.shift();
          this.#skipping = false;
          this.#ready(b, msg.buf[msg.start + 5]!);
          return;
        }
        if (t === Backend.errorResponse) { // e.g. a deferred constraint failing at commit
          this.#fwd(msg);
          return;
        }
        break;
      case Expect.parse:
        if (t === Backend.parseComplete) {
          const stmt = (q.headAux as ParseAux | undefined)?.stmt;
          if (stmt !== undefined) {
            this.#pool!.rememberStatement(stmt.canonical);
            this.#replay = null; // the client's name now stands for it: no retry
          }
          return this.#complete(msg);
        }
        if (t === Backend.errorResponse) return this.#extError(b, msg);
        break;
      case Expect.bind:
        if (t === Backend.bindComplete) return this.#complete(msg);
        if (t === Backend.errorResponse) return this.#extError(b, msg);
        break;
      case Expect.describe:
        if (t === Backend.rowDescription || t === Backend.noData) return this.#complete(msg);
        if (t === Backend.parameterDescription) {
          this.#fwd(msg);
          return;
        }
        if (t === Backend.errorResponse) return this.#extError(b, msg);
        break;
      case Expect.execute:
        switch (t) {
          case Backend.dataRow:
          case Backend.copyData:
          case Backend.copyDone:
          case Backend.copyOutResponse:
            this.#fwd(msg);
            return;
          case Backend.commandComplete:
            this.#replay = null;
            this.#checkTag(b, msg);
            return this.#complete(msg);
          case Backend.emptyQueryResponse:
          case Backend.portalSuspended:
            return this.#complete(msg);
          case Backend.copyInResponse:
            this.#copyIn = true;
            this.#fwd(msg);
            return;
          case Backend.errorResponse:
            return this.#extError(b, msg);
        }
        break;
      case Expect.close:
        if (t === Backend.closeComplete) return this.#complete(msg);
        if (t === Backend.errorResponse) return this.#extError(b, msg);
        break;
      case Expect.injectedParse:
        if (t === Backend.parseComplete) {
          this.#pool!.rememberStatement(q.headAux as string);
          q.shift();
          this.#drainSynthetic();
          return;
        }
        if (t === Backend.errorResponse) return this.#extError(b, msg);
        break;
      case Expect.replay:
        this.#onReplayReply(b, msg);
        return;
      case Expect.verify:
        this.#onVerifyReply(b, msg);
        return;
    }
    this.#confused(b, msg);
  }

  /** Forwards the message that completes the head entry and moves on. */
  #complete(msg: Frame): void {
    this.#fwd(msg);
    this.#q.shift();
    this.#drainSynthetic();
  }

  #onQueryReply(b: BackendConn, msg: Frame): void {
    const plan = this.#q.headAux as QueryPlan | undefined;
    switch (msg.type) {
      case Backend.readyForQuery:
        if (plan !== undefined && plan.shift > 0 && !plan.begun) {
          this.#beginNotRun(b);
          return;
        }
        this.#fwd(msg);
        this.#q.shift();
        this.#ready(b, msg.buf[msg.start + 5]!);
        return;
      case Backend.commandComplete:
        this.#replay = null; // a statement ran (it may have committed): never run it twice
        this.#checkTag(b, msg);
        if (plan !== undefined && plan.swallow[plan.index++] === true) {
          if (plan.shift > 0 && !plan.begun) {
            plan.begun = true;
            this.#endBehindBegin();
          }
          return;
        }
        break;
      case Backend.errorResponse:
        if (plan !== undefined) {
          // This statement and the rest of the query did not run.
          for (let i = plan.undo.length - 1; i >= plan.index; i--) plan.undo[i]?.();
          plan.index = plan.undo.length;
          if (plan.shift > 0) {
            this.#ow.bytes(shiftPosition(msg.buf, msg.start, msg.end, plan.shift));
            return;
          }
        }
        break;
      case Backend.copyInResponse:
        this.#copyIn = true;
        break;
    }
    this.#fwd(msg);
  }

  /** An error in the extended protocol: Postgres now skips everything up to Sync. */
  #extError(b: BackendConn, msg: Frame): void {
    const q = this.#q;
    const aux = q.headAux as ParseAux | undefined;
    if (q.headKind === Expect.parse && aux?.subError !== undefined) this.#ow.bytes(aux.subError);
    else this.#fwd(msg);
    this.#undo(b, q.headKind, aux);
    q.shift();
    while (q.size > 0 && q.headKind !== Expect.sync) {
      this.#undo(b, q.headKind, q.headAux);
      q.shift();
    }
    // Until the client's Sync is seen, what it sends is skipped by the backend too.
    this.#skipping = q.size === 0;
  }

  /** Reverts what the pooler assumed of a request that Postgres did not carry out. */
  #undo(b: BackendConn, kind: number, aux: unknown): void {
    switch (kind) {
      case Expect.parse:
      case Expect.synthParse: {
        const a = aux as ParseAux | undefined;
        if (a?.name !== undefined && this.#stmts?.get(a.name) === a.stmt) {
          this.#stmts!.delete(a.name);
        }
        if (a?.canonical !== undefined) b.prepared.delete(a.canonical);
        return;
      }
      case Expect.injectedParse:
        b.prepared.delete(aux as string);
        return;
      case Expect.synthClose: {
        const a = aux as CloseAux;
        if (a.stmt !== undefined) (this.#stmts ??= new Map()).set(a.name, a.stmt);
        return;
      }
    }
  }

  /** Looks at command tags that change what the pooler tracks. */
  #checkTag(b: BackendConn, msg: Frame): void {
    const buf = msg.buf;
    const at = msg.start + 5; // the payload, read in place
    const len = msg.end - at;
    const c = buf[at];
    if (c === 0x53) { // SET
      if (len === 4 && buf[at + 1] === 0x45 && buf[at + 2] === 0x54) {
        this.#triggers |= Trigger.settings;
      }
    } else if (c === 0x52) { // RESET
      if (len === 6 && buf[at + 1] === 0x45 && buf[at + 2] === 0x53) {
        this.#triggers |= Trigger.settings;
      }
    } else if (c === 0x44 && len > 8) { // DISCARD ..., DEALLOCATE ALL
      const tag = decoder.decode(buf.subarray(at, msg.end - 1));
      if (tag === "DISCARD ALL") {
        this.#triggers |= Trigger.settings | Trigger.unpin;
        this.#forgetStatements(b);
      } else if (tag === "DEALLOCATE ALL") {
        this.#forgetStatements(b);
      } else if (tag.startsWith("DISCARD")) {
        this.#triggers |= Trigger.unpin;
      }
    }
  }

  /** After DISCARD ALL or DEALLOCATE ALL: no prepared statement is left on the backend. */
  #forgetStatements(b: BackendConn): void {
    b.prepared.clear();
    this.#stmts?.clear();
    this.#sqlStmts?.clear();
    this.#pins &= ~PIN_SQL;
    // Requests queued after this one prepared statements again.
    this.#q.forEach((kind, aux) => {
      if (kind === Expect.parse || kind === Expect.synthParse) {
        const a = aux as ParseAux | undefined;
        if (a?.name !== undefined && a.stmt !== undefined) {
          (this.#stmts ??= new Map()).set(a.name, a.stmt);
          b.prepared.set(a.stmt.canonical, true);
        }
      } else if (kind === Expect.injectedParse) {
        b.prepared.set(aux as string, true);
      } else if (kind === Expect.query && aux !== undefined) {
        for (const c of (aux as QueryPlan).added) b.prepared.set(c, true);
      }
    });
  }

  #forwardNotification(b: BackendConn, msg: Frame): void {
    const p = msg.payload;
    if (p.length >= 4) {
      const sender = (p[0]! << 24) | (p[1]! << 16) | (p[2]! << 8) | p[3]!;
      if (sender === b.pid) {
        // Sent by this session itself: show the pid the session knows as its own.
        const raw = msg.raw.slice();
        new DataView(raw.buffer).setInt32(5, this.pid);
        this.#ow.bytes(raw);
        return;
      }
    }
    this.#fwd(msg);
  }

  #onReplayReply(b: BackendConn, msg: Frame): void {
    const a = this.#q.headAux as ReplayAux;
    if (msg.type === Backend.errorResponse) {
      a.error = decodeError(msg.payload);
    } else if (msg.type === Backend.readyForQuery) {
      this.#q.shift();
      if (a.error !== undefined) this.#replayFailed(b, a);
      // After a deferred BEGIN's reply the transaction is open, as if the client's BEGIN had
      // reached Postgres: a connection lost from here fails it (it is not sent again).
      this.#ready(b, msg.buf[msg.start + 5]!);
    }
  }

  #replayFailed(b: BackendConn, a: ReplayAux): void {
    if (this.#establishing !== null && a.what === "settings") {
      this.#startupError = a.error!;
    } else if (a.what === "begin") {
      // Only a broken backend fails these forms of BEGIN (see begin.ts).
      this.#host.log.error("a deferred BEGIN failed on a backend; it will be closed", {
        session: this.pid,
        backend: b.id,
        error: a.error,
      });
    } else {
      this.#host.log.warn("a statement of the pooler failed on a backend; it will be closed", {
        what: a.what,
        backend: b.id,
        error: a.error,
      });
    }
    b.broken = true;
  }

  /** Reads back settings and/or pinned state after a transaction that may have changed them. */
  #verify(b: BackendConn, settings: boolean, pins: boolean): void {
    const parts: string[] = [];
    const restore = settings && this.#startup.size > 0 && this.#establishing === null;
    if (restore) parts.push(restoreStartupSql(this.#startup));
    if (settings) parts.push(readSettingsSql(this.#customNames ?? []));
    if (pins) parts.push(READ_PINS_SQL);
    b.out.w.query(parts.join("; "));
    this.#q.push(Expect.verify, {
      restore,
      settings,
      pins,
      results: [],
      rows: [],
      error: null,
    } as VerifyAux);
    b.out.flush();
  }

  #onVerifyReply(b: BackendConn, msg: Frame): void {
    const v = this.#q.headAux as VerifyAux;
    switch (msg.type) {
      case Backend.dataRow:
        v.rows.push(decodeDataRowText(msg.payload));
        return;
      case Backend.commandComplete:
        v.results.push(v.rows);
        v.rows = [];
        return;
      case Backend.errorResponse:
        v.error = decodeError(msg.payload);
        return;
      case Backend.readyForQuery:
        this.#q.shift();
        this.#applyVerify(b, v);
        this.#ready(b, msg.buf[msg.start + 5]!);
        return;
    }
  }

  #applyVerify(b: BackendConn, v: VerifyAux): void {
    if (v.error !== null) {
      this.#host.log.warn("could not check session state after a transaction", {
        backend: b.id,
        error: v.error,
      });
      if (v.pins) this.#pins |= PinReason.unverified;
      if (v.settings) {
        b.broken = true;
        if (this.#establishing !== null) this.#startupError ??= v.error;
      }
      this.#establishing?.resolve();
      return;
    }
    let i = v.restore ? 1 : 0;
    if (v.settings) this.#applySettings(b, v.results[i++] ?? []);
    if (v.pins) {
      const row = v.results[i]?.[0] ?? [];
      const n = (k: number) => Number(row[k] ?? 0) > 0;
      this.#pins = (this.#pins & PIN_SQL) |
        (n(0) ? PinReason.temp_table : 0) |
        (n(1) ? PinReason.listen : 0) |
        (n(2) ? PinReason.advisory_lock : 0) |
        (n(3) ? PinReason.holdable_cursor : 0);
    }
    this.#establishing?.resolve();
  }

  #applySettings(b: BackendConn, rows: (string | null)[][]): void {
    const m = settingsFromRows(rows, this.#pool!.user);
    this.#settings = m;
    this.#settingsKey = settingsKey(m);
    b.settings = m;
    b.settingsKey = this.#settingsKey;
  }

  /** ReadyForQuery from the backend (already forwarded or swallowed). */
  #ready(b: BackendConn, status: number): void {
    this.#replay = null;
    this.#txn = status;
    this.#drainSynthetic();
    if (this.#q.size > 0 || this.#backend !== b) return;
    if (this.#clientGone) this.#cleanAfterClient(b);
    else if (status === I) this.#idlePoint(b);
  }

  /** No transaction open and nothing outstanding: check state, then give the backend back. */
  #idlePoint(b: BackendConn): void {
    const t = this.#triggers;
    const settings = (t & Trigger.settings) !== 0;
    const pins = (t & PIN_TRIGGERS) !== 0 || (this.#pins !== 0 && (t & Trigger.unpin) !== 0);
    this.#triggers = 0;
    if (settings || pins) {
      this.#verify(b, settings, pins);
      return;
    }
    if (this.#establishing !== null) {
      this.#release(b);
      return;
    }
    if (this.#clientGone) {
      if (this.#pins !== 0) this.#discard(b);
      else this.#release(b);
      return;
    }
    if (this.#pins === 0) this.#release(b);
    else if (this.#draining && this.#reading) this.#endIfIdle();
  }

  #release(b: BackendConn): void {
    this.#backend = null;
    if (this.#span !== null) this.#endCheckout();
    if (this.#dirty === b) this.#dirty = null;
    this.#pool!.release(b);
    if (this.#draining && this.#reading) this.#endIfIdle();
  }

  #discard(b: BackendConn): void {
    this.#backend = null;
    if (this.#span !== null) {
      this.#endCheckout("the connection was closed: its state was not known");
    }
    if (this.#dirty === b) this.#dirty = null;
    this.#dropExpected();
    this.#pool!.discard(b);
  }

  /** Postgres sent something the pooler cannot place: the backend's state is unknown. */
  #confused(b: BackendConn, msg: Frame): void {
    if (msg.type === Backend.errorResponse && this.#q.size === 0) {
      // Postgres ending the session on its own (terminated, idle-in-transaction timeout,
      // shutdown): the client gets Postgres's own FATAL error, then the connection closes.
      this.#fwd(msg);
      this.#discard(b);
      this.#closing = true;
      this.#flushOut().finally(() => this.#closeClient());
      return;
    }
    this.#host.log.error("unexpected message from a backend; closing it and the client", {
      backend: b.id,
      type: msg.typeChar,
      expected: this.#q.headKind,
    });
    if (msg.type === Backend.errorResponse) this.#fwd(msg);
    this.#discard(b);
    this.#fatal(
      new TesseraError(SqlState.protocolViolation, "protocol confusion between pooler and server", {
        severity: "FATAL",
      }),
    );
  }

  /**
   * Sends the client what this batch produced; returns a promise to wait on only when the
   * client is not keeping up (a large result), which holds back reading from the backend.
   */
  onBackendBatchEnd(_b: BackendConn): Promise<void> | undefined {
    this.#flushSpan();
    return this.#out.push(256 * 1024);
  }

  /** The backend failed while held: the session's state is lost with it. */
  onBackendClosed(b: BackendConn, err: unknown): void {
    if (this.#backend !== b) return;
    if (this.#replay !== null && !this.#clientGone && !this.#closing) {
      this.#retryTransaction(b, err);
      return;
    }
    if (
      this.#source.retry !== undefined && this.#establishing === null && !this.#clientGone &&
      !this.#closing && this.#pins === 0
    ) {
      this.#lostInTransaction(b, err);
      return;
    }
    this.#backend = null;
    this.#endCheckout("the connection was lost");
    if (this.#dirty === b) this.#dirty = null;
    this.#dropExpected();
    this.#pool!.discard(b);
    if (this.#establishing !== null) {
      this.#establishing.reject(err);
      return;
    }
    if (this.#clientGone) return;
    this.#fatal(
      new TesseraError(SqlState.connectionFailure, "server connection lost", {
        severity: "FATAL",
        detail: err instanceof Error ? err.message : String(err),
      }),
    );
  }

  // ---------------------------------------------------------------- ending

  /** Sends a FATAL error to the client and closes its connection once it is written. */
  #fatal(err: TesseraError): void {
    if (this.#closing) return;
    this.#closing = true;
    const fatal = err.severity === "FATAL" || err.severity === "PANIC"
      ? err
      : new TesseraError(err.code, err.message, {
        severity: "FATAL",
        detail: err.detail,
        hint: err.hint,
      });
    try {
      this.#ow.errorResponse(fatal);
    } catch {
      this.#out.discard();
      this.#ow.errorResponse(
        new TesseraError(fatal.code, "connection closed by the pooler", { severity: "FATAL" }),
      );
    }
    this.#flushOut().finally(() => this.#closeClient());
  }

  #closeClient(): void {
    this.#closing = true;
    try {
      this.#conn.close();
    } catch {
      // already closed
    }
  }

  /**
   * Ends the session at its next point between transactions, or now when it is between two:
   * the client gets FATAL 57P01 (admin shutdown) and is closed. A transaction in flight is not
   * interrupted. For a graceful shutdown, followed by {@linkcode terminate} after a timeout.
   */
  drain(): void {
    if (this.#draining) return;
    this.#draining = true;
    if (this.#reading) this.#endIfIdle();
  }

  /**
   * Whether nothing of a transaction is open or outstanding: no request unanswered, no
   * transaction block, no extended-protocol batch before its Sync, no COPY, no retry. A pinned
   * session holds its backend then too.
   */
  get #betweenTransactions(): boolean {
    return this.#q.size === 0 && this.#txn === I && this.#deferredBegin === null &&
      !this.#extOpen && !this.#copyIn &&
      !this.#clientSkip && !this.#failedTxn && this.#retrying === null &&
      this.#establishing === null && (this.#backend === null || this.#pins !== 0);
  }

  /** Ends a draining session if it is between transactions; true when it did. */
  #endIfIdle(): boolean {
    if (this.#closing || this.#clientGone || !this.#betweenTransactions) return false;
    this.terminate();
    return true;
  }

  /** Ends the session from outside (shutdown): the client gets 57P01. */
  terminate(): void {
    this.#fatal(
      new TesseraError(
        SqlState.adminShutdown,
        "terminating connection due to administrator command",
        {
          severity: "FATAL",
        },
      ),
    );
  }

  /**
   * The client is gone (or broke the protocol): clean the backend, then forget the session.
   * After a Terminate, work already sent is finished (as Postgres would) before the backend is
   * cleaned; after a dropped connection or a protocol error, a running query is cancelled.
   */
  #clientEnded(error: unknown, graceful: boolean): void {
    if (this.#clientGone) return;
    this.#clientGone = true;
    if (
      error !== null && error instanceof TesseraError && error.code === SqlState.protocolViolation
    ) {
      this.#host.log.info("closing a client that broke the protocol", {
        session: this.pid,
        error,
      });
      this.#fatal(error);
      this.#flushOut().finally(() => this.#out.close());
    } else {
      this.#flushOut().finally(() => {
        this.#out.close();
        this.#closeClient();
      });
    }
    const b = this.#backend;
    if (b !== null) {
      if (this.#copyIn) {
        this.#host.cancelBackend(b);
        this.#discard(b);
      } else if (this.#q.size === 0) {
        this.#cleanAfterClient(b);
      } else if (!graceful) {
        // Results outstanding and nobody to read them: stop the query, drop the connection
        // (closed, it is never lent again, so the cancel cannot reach another client).
        this.#host.cancelBackend(b);
        this.#discard(b);
      }
      // else: the responses still expected are swallowed by the closed outbox; #ready
      // cleans the backend once they are all in.
    }
    this.#host.sessionEnded(this);
  }

  /** Nothing outstanding and the client gone: roll back, check state, give the backend back. */
  #cleanAfterClient(b: BackendConn): void {
    if (this.#txn !== I) {
      b.out.w.query("ROLLBACK");
      this.#q.push(Expect.replay, { what: "rollback", forwardParams: false } as ReplayAux);
      b.out.flush();
    } else {
      this.#idlePoint(b);
    }
  }

  /** The backend serving this session right now, if any (the target of a cancel request). */
  get backend(): BackendConn | null {
    return this.#backend;
  }
}

/** A client message kept as bytes, presented as the readers present messages. */
function frameOf(raw: Uint8Array): Frame {
  const type = raw[0]!;
  return {
    type,
    buf: raw,
    start: 0,
    end: raw.length,
    raw,
    payload: raw.subarray(5),
    typeChar: String.fromCharCode(type),
  };
}

/** Offsets where each non-empty statement of a simple query starts. */
function statementStarts(text: Uint8Array): number[] {
  const lx = new SqlLexer(text);
  const out: number[] = [];
  let inStatement = false;
  for (;;) {
    const t = lx.next();
    if (t === Tok.eof) break;
    if (t === Tok.semicolon) {
      inStatement = false;
      continue;
    }
    if (!inStatement) {
      out.push(lx.start);
      inStatement = true;
    }
  }
  return out;
}
