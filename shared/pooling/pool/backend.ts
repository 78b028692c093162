/**
 * One server connection to Postgres (a backend): login, a persistent read loop that hands each
 * message to the session currently holding it, a serialized writer, and the per-backend state
 * the pooler tracks (settings applied, prepared statements present).
 *
 * @module
 */

import { SqlState, TesseraError } from "../../errors/mod.ts";
import type { Logger } from "../../log/mod.ts";
import {
  AuthCode,
  Backend,
  decodeAuthentication,
  decodeBackendKeyData,
  decodeError,
  decodeParameterStatus,
  md5PasswordResponse,
  MessageReader,
  MessageWriter,
  SCRAM_SHA_256,
  ScramClient,
  type WireConn,
  writeAll,
} from "../../wire/mod.ts";
import { FrameReader } from "./frame_reader.ts";
import { Outbox } from "./outbox.ts";

/** One message as the pooler's readers present it (a `FrameReader` is one). */
export interface Frame {
  /** Type byte. */
  readonly type: number;
  /** The buffer the message lies in (valid until the reader reads again). */
  readonly buf: Uint8Array;
  /** Offset of the type byte in `buf`. */
  readonly start: number;
  /** Offset just past the message in `buf`. */
  readonly end: number;
  /** The whole message: type byte, length, payload. */
  readonly raw: Uint8Array;
  /** The payload. */
  readonly payload: Uint8Array;
  /** The type as a character, for logs. */
  readonly typeChar: string;
}

/** Where and as whom to connect to Postgres. */
export interface BackendTarget {
  /** Folder of Postgres's Unix socket; when given, connections go through it. */
  socketDir?: string | undefined;
  /** Host for TCP when no socket folder is given; `127.0.0.1` by default. */
  host?: string | undefined;
  /** Postgres port (also names the socket file). */
  port: number;
  /** Password for SCRAM-SHA-256, MD5 or cleartext authentication, when Postgres asks. */
  password?: string | undefined;
  /** Limit for connecting and logging in, in milliseconds. */
  connectTimeoutMs: number;
  /**
   * Opens the connection instead of `Deno.connect` (the pooler passes its fast network path
   * here); given the Unix socket path or the TCP host and port.
   */
  dial?:
    | ((address: { path: string } | { hostname: string; port: number }) => Promise<Deno.Conn>)
    | undefined;
}

/** What a session implements to receive a backend's messages while it holds the backend. */
export interface BackendOwner {
  /** Handles one message; the message's bytes are valid only during the call. */
  onBackendMessage(backend: BackendConn, msg: Frame): void;
  /**
   * Called after the messages of one read were handled; the returned promise (the write to the
   * client) is awaited before the next read, which gives backpressure.
   */
  onBackendBatchEnd(backend: BackendConn): Promise<void> | undefined;
  /** The backend's connection ended or failed while this owner held it. */
  onBackendClosed(backend: BackendConn, err: unknown): void;
}

let nextId = 1;

function describeTarget(t: BackendTarget): string {
  return t.socketDir !== undefined
    ? `socket ${t.socketDir}/.s.PGSQL.${t.port}`
    : `${t.host ?? "127.0.0.1"}:${t.port}`;
}

async function openConn(t: BackendTarget): Promise<Deno.Conn> {
  if (t.socketDir !== undefined) {
    const path = `${t.socketDir}/.s.PGSQL.${t.port}`;
    if (t.dial !== undefined) return await t.dial({ path });
    return await Deno.connect({ transport: "unix", path });
  }
  if (t.dial !== undefined) return await t.dial({ hostname: t.host ?? "127.0.0.1", port: t.port });
  const conn = await Deno.connect({ hostname: t.host ?? "127.0.0.1", port: t.port });
  conn.setNoDelay(true);
  return conn;
}

/**
 * Opens a connection to `target`, giving up after its `connectTimeoutMs` (a connection that
 * completes later is closed at once): a cancel must not hold its backend for minutes while a
 * host does not answer.
 */
async function openWithin(target: BackendTarget): Promise<Deno.Conn> {
  const opening = openConn(target);
  if (target.connectTimeoutMs <= 0) return await opening;
  let timer: ReturnType<typeof setTimeout> | undefined;
  const late = new Promise<never>((_, reject) => {
    timer = setTimeout(() => {
      opening.then((c) => c.close(), () => {});
      reject(
        new TesseraError(
          SqlState.sqlclientUnableToEstablishSqlconnection,
          `could not connect to ${describeTarget(target)} within ${target.connectTimeoutMs} ms`,
        ),
      );
    }, target.connectTimeoutMs);
  });
  try {
    return await Promise.race([opening, late]);
  } finally {
    clearTimeout(timer);
  }
}

/**
 * Sends a CancelRequest for backend `pid`/`secret` on a new connection to `target`. When
 * `stillWanted` returns false once connected (the backend moved on to another client), nothing
 * is sent.
 */
export async function sendCancel(
  target: BackendTarget,
  pid: number,
  secret: number,
  stillWanted: () => boolean = () => true,
): Promise<void> {
  const conn = await openWithin(target);
  try {
    if (!stillWanted()) return;
    await writeAll(conn, new MessageWriter(16).cancelRequest(pid, secret).view());
    // Postgres closes the connection once it has read the request.
    const buf = new Uint8Array(16);
    const timer = setTimeout(() => conn.close(), 5000);
    try {
      while ((await conn.read(buf)) !== null) { /* nothing is expected */ }
    } catch {
      // closed by the timer
    } finally {
      clearTimeout(timer);
    }
  } finally {
    try {
      conn.close();
    } catch {
      // already closed
    }
  }
}

/** One logged-in connection to Postgres. */
export class BackendConn {
  /** Number unique within the process, for logs. */
  readonly id: number = nextId++;
  /** Postgres's process id for this connection. */
  readonly pid: number;
  /** Secret key for cancelling this connection's queries. */
  readonly secret: number;
  /** ParameterStatus values Postgres reported at login. */
  readonly params: Map<string, string>;
  /** When the connection was made (ms since epoch). */
  readonly createdAt: number;
  /** Writer towards Postgres. */
  readonly out: Outbox;
  /** The session holding this backend, or `null` while it is in the pool. */
  owner: BackendOwner | null = null;
  /** When it last went back to the pool (ms since epoch). */
  lastUsedAt: number;
  /** Settings applied on this backend by the pooler (name → value), as Postgres reports them. */
  settings: ReadonlyMap<string, string> = new Map();
  /** Key of {@linkcode settings}, to match sessions that want the same ones. */
  settingsKey = "";
  /** Canonical names of the prepared statements present, least recently used first. */
  readonly prepared: Map<string, true> = new Map();
  /** Set when the backend must not be reused (closed at its release). */
  broken = false;
  /** Whether it is lent out (pool bookkeeping). */
  lent = false;
  /** Where it is connected (for cancel requests). */
  readonly target: BackendTarget;
  /** Cancel requests sent for it that Postgres has not finished handling yet. */
  cancelsInFlight = 0;
  #cancelSettled: (() => void)[] = [];

  #conn: WireConn;
  #reader: FrameReader;
  #closed = false;
  #log: Logger;
  #onClosed: (b: BackendConn) => void;
  #loop: Promise<void> | null = null;

  private constructor(
    conn: WireConn,
    reader: FrameReader,
    pid: number,
    secret: number,
    params: Map<string, string>,
    log: Logger,
    onClosed: (b: BackendConn) => void,
    target: BackendTarget,
  ) {
    this.target = target;
    this.#conn = conn;
    this.#reader = reader;
    this.pid = pid;
    this.secret = secret;
    this.params = params;
    this.createdAt = this.lastUsedAt = Date.now();
    this.#log = log;
    this.#onClosed = onClosed;
    this.out = new Outbox(conn, (err) => this.#fail(err), 1024, 256 * 1024);
  }

  /**
   * Sends a CancelRequest for what runs on this backend (see {@linkcode sendCancel}) through
   * `target`. Until Postgres has handled it (it closes the cancel connection once the signal is
   * sent), the backend counts as cancelling: the pool does not lend it to anyone else, so a
   * late signal can only reach the query it was meant for.
   */
  async cancel(target: BackendTarget, stillWanted: () => boolean = () => true): Promise<void> {
    this.cancelsInFlight++;
    try {
      await sendCancel(target, this.pid, this.secret, stillWanted);
    } finally {
      if (--this.cancelsInFlight === 0) {
        const fns = this.#cancelSettled;
        this.#cancelSettled = [];
        for (const fn of fns) fn();
      }
    }
  }

  /** Runs `fn` once no cancel request is in flight for this backend (at once if none is). */
  whenCancelsSettled(fn: () => void): void {
    if (this.cancelsInFlight === 0) fn();
    else this.#cancelSettled.push(fn);
  }

  /** Whether the connection is closed. */
  get closed(): boolean {
    return this.#closed;
  }

  /** Resolves when the read loop has ended. */
  get done(): Promise<void> {
    return this.#loop ?? Promise.resolve();
  }

  /**
   * Connects and logs in as `user` to `database`. Throws TesseraError: Postgres's own error
   * (e.g. 28P01, 3D000, 53300), or 08001 when Postgres cannot be reached in time.
   */
  static async connect(
    target: BackendTarget,
    user: string,
    database: string,
    log: Logger,
    onClosed: (b: BackendConn) => void,
  ): Promise<BackendConn> {
    let conn: Deno.Conn | undefined;
    let timedOut = false;
    const timer = target.connectTimeoutMs > 0
      ? setTimeout(() => {
        timedOut = true;
        try {
          conn?.close();
        } catch {
          // already closed
        }
      }, target.connectTimeoutMs)
      : undefined;
    try {
      try {
        conn = await openConn(target);
      } catch (err) {
        throw new TesseraError(
          SqlState.sqlclientUnableToEstablishSqlconnection,
          `could not connect to Postgres at ${describeTarget(target)}: ${
            err instanceof Error ? err.message : String(err)
          }`,
          { cause: err },
        );
      }
      if (timedOut) conn.close();
      const reader = new MessageReader(conn, { initialBufferSize: 4096 });
      const w = new MessageWriter(256);
      await writeAll(conn, w.startupMessage({ user, database }).view());
      const { pid, secret, params } = await login(conn, reader, target, user);
      if (reader.buffered !== 0) {
        throw new TesseraError(
          SqlState.protocolViolation,
          "Postgres sent messages after ReadyForQuery at login",
        );
      }
      const frames = new FrameReader(conn, 32 * 1024);
      const b = new BackendConn(conn, frames, pid, secret, params, log, onClosed, target);
      b.#loop = frames.canReadNow ? b.#runSync() : b.#run();
      return b;
    } catch (err) {
      try {
        conn?.close();
      } catch {
        // already closed
      }
      if (timedOut) {
        throw new TesseraError(
          SqlState.sqlclientUnableToEstablishSqlconnection,
          `connecting to Postgres at ${
            describeTarget(target)
          } timed out after ${target.connectTimeoutMs} ms`,
          { cause: err },
        );
      }
      throw TesseraError.from(err, SqlState.sqlclientUnableToEstablishSqlconnection);
    } finally {
      clearTimeout(timer);
    }
  }

  async #run(): Promise<void> {
    const r = this.#reader;
    let error: unknown = null;
    try {
      for (;;) {
        if (!r.advance(await r.read())) break;
        const p = this.#deliver();
        if (p !== undefined) await p;
        if (this.#closed) return;
      }
    } catch (err) {
      error = err;
    } finally {
      this.#shut(
        error ?? new TesseraError(SqlState.connectionFailure, "Postgres closed the connection"),
      );
    }
  }

  /**
   * Hands the messages of one read to the owner (or handles them while idle); returns a promise
   * to wait on before reading again when the owner's client is not keeping up.
   */
  #deliver(): Promise<void> | undefined {
    const r = this.#reader;
    const owner = this.owner;
    while (r.next()) {
      const o = this.owner;
      if (o === null) this.#idleMessage(r);
      else o.onBackendMessage(this, r);
      if (this.#closed) break;
    }
    if (owner === null) return undefined;
    // Also when the connection closed part way through the batch: what the owner was given
    // before (a whole reply, ReadyForQuery included, when the owner released this backend and
    // Postgres then ended the connection) must still reach its client.
    const p = owner.onBackendBatchEnd(this);
    // After a release mid-batch, this backend must not wait on its former client.
    return p !== undefined && this.owner === owner && !this.#closed ? p : undefined;
  }

  /**
   * The same loop as {@linkcode #run} for a connection that can be read without waiting: each
   * arrival is handled in a plain callback from the event loop, with no promise per read.
   */
  #runSync(): Promise<void> {
    return new Promise<void>((resolve) => {
      this.#ended = resolve;
      // Not from inside connect(): its caller has not seen the backend yet.
      queueMicrotask(this.#pumpFn);
    });
  }

  #ended: (() => void) | null = null;
  #pumpFn = (): void => this.#pump();

  #pump(): void {
    const r = this.#reader;
    let error: unknown = null;
    try {
      for (;;) {
        const n = r.readNow();
        if (n === undefined) {
          r.whenReadable(this.#pumpFn);
          return;
        }
        if (!r.advance(n)) break;
        const p = this.#deliver();
        if (p !== undefined) {
          p.then(this.#pumpFn);
          return;
        }
        if (this.#closed) break;
      }
    } catch (err) {
      error = err;
    }
    this.#shut(
      error ?? new TesseraError(SqlState.connectionFailure, "Postgres closed the connection"),
    );
    const ended = this.#ended;
    this.#ended = null;
    ended?.();
  }

  /** A message while no session holds the backend. */
  #idleMessage(msg: Frame): void {
    switch (msg.type) {
      case Backend.parameterStatus: {
        const p = decodeParameterStatus(msg.payload);
        this.params.set(p.name, p.value);
        return;
      }
      case Backend.noticeResponse:
      case Backend.notificationResponse:
        return;
      case Backend.errorResponse: {
        const err = decodeError(msg.payload);
        // 57P01: the server shuts down (or drains) and closes idle connections first.
        const fields = { backend: this.id, error: err };
        if (err.code === SqlState.adminShutdown) {
          this.#log.info("idle backend closed by its server", fields);
        } else this.#log.warn("idle backend received an error", fields);
        this.broken = true;
        this.close();
        return;
      }
      default:
        this.#log.warn("idle backend sent an unexpected message; closing it", {
          backend: this.id,
          type: msg.typeChar,
        });
        this.close();
    }
  }

  #fail(err: unknown): void {
    this.#shut(err);
  }

  #shut(err: unknown): void {
    if (this.#closed) return;
    this.#closed = true;
    this.broken = true;
    try {
      this.#conn.close();
    } catch {
      // already closed
    }
    const owner = this.owner;
    this.owner = null;
    if (owner !== null) owner.onBackendClosed(this, err);
    this.#onClosed(this);
  }

  /** Marks the prepared statement `name` as most recently used; false when it is not present. */
  touchPrepared(name: string): boolean {
    if (!this.prepared.delete(name)) return false;
    this.prepared.set(name, true);
    return true;
  }

  /** Closes the connection, sending Terminate first when possible. */
  close(): void {
    if (this.#closed) return;
    if (this.out.idle) {
      // Best effort: Terminate lets Postgres end the session without logging an EOF.
      this.#conn.write(TERMINATE).catch(() => {});
    }
    this.#shut(new TesseraError(SqlState.connectionFailure, "backend closed by the pooler"));
  }
}

const TERMINATE = new MessageWriter(8).terminate().take();

async function login(
  conn: WireConn,
  reader: MessageReader,
  target: BackendTarget,
  user: string,
): Promise<{ pid: number; secret: number; params: Map<string, string> }> {
  const w = new MessageWriter(256);
  const send = async () => {
    await writeAll(conn, w.view());
    w.reset();
  };
  const password = (method: string): string => {
    if (target.password === undefined) {
      throw new TesseraError(
        SqlState.invalidPassword,
        `Postgres asks for ${method} password authentication but the pooler has no backend password`,
        { hint: "give the pooler the backend password, or use trust over the Unix socket" },
      );
    }
    return target.password;
  };
  let scram: ScramClient | undefined;
  const params = new Map<string, string>();
  let pid = 0;
  let secret = 0;
  for (;;) {
    const msg = await reader.next();
    if (msg === null) {
      throw new TesseraError(
        SqlState.connectionFailure,
        "Postgres closed the connection during login",
      );
    }
    switch (msg.type) {
      case Backend.authentication: {
        const auth = decodeAuthentication(msg.payload);
        switch (auth.kind) {
          case "ok":
            if (scram !== undefined && !scram.verified) {
              throw new TesseraError(
                SqlState.invalidAuthorizationSpecification,
                "Postgres ended SCRAM authentication without proving it knows the password",
              );
            }
            break;
          case "cleartextPassword":
            w.passwordMessage(password("cleartext"));
            await send();
            break;
          case "md5Password":
            w.passwordMessage(md5PasswordResponse(user, password("MD5"), auth.salt));
            await send();
            break;
          case "sasl":
            if (!auth.mechanisms.includes(SCRAM_SHA_256)) {
              throw new TesseraError(
                SqlState.featureNotSupported,
                `none of Postgres's SASL mechanisms is supported: ${auth.mechanisms.join(", ")}`,
              );
            }
            scram = new ScramClient(password(SCRAM_SHA_256));
            w.saslInitialResponse(SCRAM_SHA_256, scram.clientFirstMessage());
            await send();
            break;
          case "saslContinue":
            if (scram === undefined) throw unexpected("SASLContinue");
            w.saslResponse(await scram.clientFinalMessage(auth.data));
            await send();
            break;
          case "saslFinal":
            if (scram === undefined) throw unexpected("SASLFinal");
            scram.verifyServerFinal(auth.data);
            break;
          default:
            throw new TesseraError(
              SqlState.featureNotSupported,
              `authentication method ${
                auth.kind === "other" ? auth.code : AuthCode.ok
              } requested by Postgres is not supported by the pooler`,
            );
        }
        break;
      }
      case Backend.parameterStatus: {
        const p = decodeParameterStatus(msg.payload);
        params.set(p.name, p.value);
        break;
      }
      case Backend.backendKeyData: {
        const k = decodeBackendKeyData(msg.payload);
        pid = k.processId;
        secret = k.secretKey;
        break;
      }
      case Backend.readyForQuery:
        return { pid, secret, params };
      case Backend.errorResponse:
        throw decodeError(msg.payload);
      case Backend.noticeResponse:
      case Backend.negotiateProtocolVersion:
        break;
      default:
        throw unexpected(`'${msg.typeChar}'`);
    }
  }
}

function unexpected(what: string): TesseraError {
  return new TesseraError(
    SqlState.protocolViolation,
    `unexpected message ${what} from Postgres during login`,
  );
}
