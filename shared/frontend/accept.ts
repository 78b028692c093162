/**
 * The startup phase of a client connection to a Tessera server that speaks Postgres to its
 * clients (the pooler and the gateway): encryption requests, TLS, CancelRequest, the
 * StartupMessage and its protocol negotiation, and authentication. What follows (parameter
 * status, BackendKeyData, ReadyForQuery, queries) is the caller's.
 *
 * @module
 */

import { SqlState, TesseraError } from "../errors/mod.ts";
import type { Logger } from "../log/mod.ts";
import {
  ENCRYPTION_REFUSED,
  Frontend,
  MAX_STARTUP_PACKET_LENGTH,
  MessageWriter,
  MUX_ACCEPTED,
  parseScramVerifier,
  PayloadReader,
  readExact,
  readStartupPacket,
  SCRAM_SHA_256,
  SCRAM_SHA_256_PLUS,
  ScramServer,
  type ScramVerifier,
  SSL_ACCEPTED,
  type StartupPacket,
} from "../wire/mod.ts";
import { parseStartupOptions } from "./options.ts";
import { type FrontendTls, type LoadedFrontendTls, loadFrontendTls, upgradeToTls } from "./tls.ts";

/** How a client arrived: over a Unix socket or TCP. */
export type FrontendTransport = "unix" | "tcp";

/** How one user is authenticated, as decided by {@linkcode FrontendAuth.lookup}. */
export type AuthRule =
  | { method: "trust" }
  | {
    method: "scram-sha-256";
    /** `SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>`, as in `pg_authid`. */
    verifier: string;
  }
  | {
    method: "reject";
    /** Sent to the client as the message of a FATAL 28000. */
    reason: string;
  };

/** Where the front end learns how to authenticate a user. */
export interface FrontendAuth {
  /**
   * The rule for `user` connecting to `database` over `transport`; `undefined` when the user
   * does not exist. Called once per connection, after the StartupMessage. A TesseraError
   * thrown here is sent to the client (as FATAL); any other error as FATAL XX000.
   */
  lookup(
    user: string,
    database: string,
    transport: FrontendTransport,
  ): AuthRule | undefined | Promise<AuthRule | undefined>;
}

/** Options of {@linkcode acceptFrontend}. */
export interface FrontendOptions {
  /** Authentication rules. */
  auth: FrontendAuth;
  /**
   * TLS certificate and key. When given, an SSLRequest is answered `S` and TLS is negotiated;
   * otherwise `N`. Pass the result of {@linkcode loadFrontendTls} (loaded and checked once at
   * start); plain paths are loaded at the first connection and kept.
   */
  tls?: FrontendTls | LoadedFrontendTls;
  /**
   * Refuse TCP clients that did not negotiate TLS, with FATAL 28000 after their
   * StartupMessage. Unix-socket clients are exempt (libpq never asks for TLS on a Unix
   * socket). Needs `tls`. A CancelRequest is accepted either way, as Postgres does.
   */
  requireTls?: boolean;
  /**
   * Longest time from accept to the end of authentication, in milliseconds; 10000 when not
   * given. A client that takes longer (or sends nothing) gets FATAL 57014 and is closed.
   */
  startupTimeoutMs?: number;
  /**
   * Largest accepted startup packet, and largest authentication message (SASL), in bytes;
   * 10000 (as Postgres) when not given.
   */
  maxStartupLength?: number;
  /**
   * Answer an unknown user of a password method like a wrong password: run SCRAM against a
   * mock salt and fail with 28P01, so a client cannot probe which roles exist (what Postgres
   * does for password methods). When false (the default), an unknown user gets FATAL 28000
   * `role "x" does not exist` at once, as Postgres does under trust.
   */
  hideUnknownUsers?: boolean;
  /** Where refusals and failures are logged (info for refusals, debug for details). */
  logger?: Logger;
  /**
   * Accept Tessera's multiplexing request (`shared/mux`, sent by gateways) with `M` and return
   * `{ kind: "mux" }`. When false (the default) it is refused like any unknown request code. A
   * TCP connection must have negotiated TLS first when `requireTls` is set.
   */
  allowMux?: boolean;
}

/** Outcome of {@linkcode acceptFrontend}. */
export type FrontendResult =
  | {
    /** The client is authenticated: AuthenticationOk has been sent. */
    kind: "startup";
    /**
     * The connection to continue on: `conn` itself for plaintext, or a TLS connection with
     * the same `Deno.Conn` shape (read/write plaintext; `close()` closes the socket).
     */
    conn: Deno.Conn;
    /** The `user` startup parameter. */
    user: string;
    /** The `database` startup parameter, or the user name when it is absent or empty. */
    database: string;
    /**
     * Every startup parameter as sent (`user`, `database`, `application_name`, `options`,
     * `client_encoding`, ...), except protocol options (`_pq_.*`), which are answered by
     * NegotiateProtocolVersion.
     */
    params: Record<string, string>;
    /** Run-time parameters set by the `options` parameter (`-c a=b --c-d=e`). */
    settings: Record<string, string>;
    /** Unix socket or TCP. */
    transport: FrontendTransport;
    /** Whether TLS is on. */
    tls: boolean;
    /**
     * The protocol minor version in effect: always 0 (3.0), the only one served. When the
     * client asked for more, NegotiateProtocolVersion was sent; see `requestedProtocolMinor`.
     */
    protocolMinor: number;
    /** The protocol minor version the client asked for. */
    requestedProtocolMinor: number;
  }
  | {
    /**
     * A CancelRequest: the caller forwards the cancel, then calls `close`. Like Postgres, which
     * closes a cancel connection once the signal is sent, closing only after the forward has
     * been handled tells the client when its cancel has taken effect.
     */
    kind: "cancel";
    /** Process id of the BackendKeyData the client holds. */
    pid: number;
    /** Secret key of the BackendKeyData the client holds. */
    secret: number;
    /** Closes the client's connection (idempotent). */
    close(): void;
  }
  | {
    /**
     * A multiplexing request (only with `allowMux`), answered `M`: the caller serves
     * `conn` with `shared/mux`, each channel as a connection of its own.
     */
    kind: "mux";
    /** The connection to frame channels on (`conn` itself, or its TLS layer). */
    conn: Deno.Conn;
  }
  | {
    /**
     * The client went away or was refused: any ErrorResponse was already sent and the
     * connection is closed.
     */
    kind: "closed";
  };

const DEFAULT_STARTUP_TIMEOUT_MS = 10_000;
// How long a refused client's ErrorResponse may take to be written before the close.
const ERROR_WRITE_TIMEOUT_MS = 1000;
const PROTOCOL_OPTION_PREFIX = "_pq_.";

const loadedTls = new WeakMap<FrontendTls, LoadedFrontendTls>();

function tlsOf(config: FrontendTls | LoadedFrontendTls): LoadedFrontendTls {
  let loaded = loadedTls.get(config);
  if (loaded === undefined) {
    loaded = loadFrontendTls(config);
    loadedTls.set(config, loaded);
  }
  return loaded;
}

function fatal(code: string, message: string, hint?: string): TesseraError {
  return new TesseraError(code, message, { severity: "FATAL", hint });
}

/** The same error with severity FATAL: every error of the startup phase ends the session. */
function asFatal(err: unknown): TesseraError {
  const e = TesseraError.from(err);
  if (e.severity === "FATAL") return e;
  return new TesseraError(e.code, e.message, {
    severity: "FATAL",
    detail: e.detail,
    hint: e.hint,
    cause: e.cause ?? err,
  });
}

function checkPositiveInt(value: number, what: string): void {
  if (!Number.isSafeInteger(value) || value <= 0) {
    throw new RangeError(`'${what}' must be a positive integer: received ${value}`);
  }
}

/** Thrown inside the session when the client is gone: no ErrorResponse is sent. */
class ClientGone extends Error {}

/**
 * Runs the startup phase on a freshly accepted connection: answers SSLRequest (TLS when
 * `options.tls` is set, else `N`) and GSSENCRequest (`N`), returns CancelRequests, reads the
 * StartupMessage (answering NegotiateProtocolVersion for protocol 3.x above 3.0 or `_pq_.`
 * options), authenticates the user by the rule `options.auth.lookup` returns and sends
 * AuthenticationOk.
 *
 * Never rejects for anything the client does: bad input, refusals and timeouts end in a FATAL
 * ErrorResponse (08P01 protocol violation, 0A000 unsupported protocol, 28000 unknown user,
 * rejected or TLS required, 28P01 wrong password, 57014 timeout) and `{ kind: "closed" }` with
 * the connection closed. Rejects (closing `conn`) only for invalid options.
 *
 * Unknown users: FATAL 28000 `role "x" does not exist`, as Postgres reports them under trust;
 * a wrong SCRAM password is FATAL 28P01 `password authentication failed for user "x"`. Set
 * `hideUnknownUsers` to answer unknown users of password methods with 28P01 too.
 *
 * @example
 * ```ts
 * const tls = loadFrontendTls({ certFile, keyFile });
 * for await (const conn of Deno.listen({ port: 15432 })) {
 *   acceptFrontend(conn, { auth, tls }).then((r) => {
 *     if (r.kind === "startup") serve(r); // send ParameterStatus, BackendKeyData, ReadyForQuery
 *     else if (r.kind === "cancel") forwardCancel(r.pid, r.secret).finally(r.close);
 *   });
 * }
 * ```
 */
export async function acceptFrontend(
  conn: Deno.Conn,
  options: FrontendOptions,
): Promise<FrontendResult> {
  let tls: LoadedFrontendTls | undefined;
  try {
    const timeout = options.startupTimeoutMs ?? DEFAULT_STARTUP_TIMEOUT_MS;
    checkPositiveInt(timeout, "startupTimeoutMs");
    checkPositiveInt(options.maxStartupLength ?? MAX_STARTUP_PACKET_LENGTH, "maxStartupLength");
    if (options.requireTls && options.tls === undefined) {
      throw new RangeError("'requireTls' needs 'tls' (a certificate and key)");
    }
    if (options.tls !== undefined) tls = tlsOf(options.tls);
  } catch (err) {
    closeQuietly(conn);
    throw err;
  }
  return await new StartupSession(conn, options, tls).run();
}

function closeQuietly(conn: Deno.Conn): void {
  try {
    conn.close();
  } catch {
    // already closed
  }
}

function transportOf(conn: Deno.Conn): FrontendTransport {
  return conn.localAddr.transport === "unix" || conn.localAddr.transport === "unixpacket"
    ? "unix"
    : "tcp";
}

/** One connection's startup phase; its state is dropped when `run` settles. */
class StartupSession {
  #raw: Deno.Conn;
  #io: Deno.Conn;
  #options: FrontendOptions;
  #tls: LoadedFrontendTls | undefined;
  #maxLength: number;
  #transport: FrontendTransport;
  #out = new MessageWriter(128);
  #timer: ReturnType<typeof setTimeout> | undefined;
  #refusal: Promise<void> | undefined;
  #closed = false;
  #tlsOn = false;
  #handshaking = false;
  #abort: AbortController | undefined;
  #user = "";

  constructor(conn: Deno.Conn, options: FrontendOptions, tls: LoadedFrontendTls | undefined) {
    this.#raw = conn;
    this.#io = conn;
    this.#options = options;
    this.#tls = tls;
    this.#maxLength = options.maxStartupLength ?? MAX_STARTUP_PACKET_LENGTH;
    this.#transport = transportOf(conn);
  }

  async run(): Promise<FrontendResult> {
    if (this.#transport === "tcp") {
      // Postgres sets TCP_NODELAY on every client socket; without it the small writes of a
      // TLS handshake stall on delayed ACKs.
      try {
        (this.#raw as Partial<Deno.TcpConn>).setNoDelay?.(true);
      } catch {
        // the client is already gone; the first read will tell
      }
    }
    this.#timer = setTimeout(
      () => this.#onTimeout(),
      this.#options.startupTimeoutMs ?? DEFAULT_STARTUP_TIMEOUT_MS,
    );
    try {
      const result = await this.#startup();
      if (this.#refusal === undefined) return result;
      // The timeout struck while the last step was finishing: the client is being refused.
      await this.#refusal;
      return { kind: "closed" };
    } catch (err) {
      if (this.#refusal !== undefined) {
        // The timeout's ErrorResponse is on its way; let it finish before the close.
        await this.#refusal;
        return { kind: "closed" };
      }
      if (err instanceof ClientGone || this.#closed) {
        this.#log("debug", "client left during startup", err);
        this.#close();
        return { kind: "closed" };
      }
      const e = asFatal(err);
      this.#log("info", "client refused", e);
      this.#refusal = this.#refuse(e);
      await this.#refusal;
      return { kind: "closed" };
    } finally {
      clearTimeout(this.#timer);
    }
  }

  #log(level: "debug" | "info", msg: string, err: unknown): void {
    const log = this.#options.logger;
    if (log === undefined || !log.enabled(level)) return;
    const remote = this.#raw.remoteAddr;
    log.log(level, msg, {
      remote: remote.transport === "tcp" || remote.transport === "udp"
        ? `${remote.hostname}:${remote.port}`
        : remote.transport,
      user: this.#user,
      tls: this.#tlsOn,
      error: err,
    });
  }

  #close(): void {
    if (this.#closed) return;
    this.#closed = true;
    closeQuietly(this.#io);
    if (this.#io !== this.#raw) closeQuietly(this.#raw);
  }

  #onTimeout(): void {
    if (this.#refusal !== undefined || this.#closed) return;
    const ms = this.#options.startupTimeoutMs ?? DEFAULT_STARTUP_TIMEOUT_MS;
    const err = fatal(
      SqlState.queryCanceled,
      `canceling authentication due to timeout: the startup did not finish within ${ms} ms`,
    );
    this.#log("info", "client timed out during startup", err);
    // The session's pending read fails when the connection closes and `run` returns "closed".
    this.#refusal = this.#refuse(err);
  }

  /** Sends `err` as an ErrorResponse (best effort, bounded in time) and closes. */
  async #refuse(err: TesseraError): Promise<void> {
    if (this.#closed) return;
    if (this.#handshaking) {
      // Plaintext in the middle of a TLS handshake would only garble it.
      this.#abort?.abort(err);
      this.#close();
      return;
    }
    let bytes: Uint8Array;
    try {
      bytes = this.#out.reset().errorResponse(err).take();
    } catch {
      bytes = this.#out.reset().errorResponse(
        fatal(err.code, "the server refused the connection"),
      ).take();
    }
    let timer: ReturnType<typeof setTimeout> | undefined;
    try {
      await Promise.race([
        this.#writeRaw(bytes).catch(() => {}),
        new Promise<void>((resolve) => timer = setTimeout(resolve, ERROR_WRITE_TIMEOUT_MS)),
      ]);
    } finally {
      clearTimeout(timer);
      this.#close();
    }
  }

  /** Writes for the session; nothing more once a refusal has begun. */
  #write(bytes: Uint8Array): Promise<void> {
    if (this.#refusal !== undefined || this.#closed) {
      return Promise.reject(new ClientGone("the connection is being closed"));
    }
    return this.#writeRaw(bytes);
  }

  async #writeRaw(bytes: Uint8Array): Promise<void> {
    let done = 0;
    try {
      while (done < bytes.byteLength) {
        done += await this.#io.write(done === 0 ? bytes : bytes.subarray(done));
      }
    } catch (err) {
      throw new ClientGone("write failed", { cause: err });
    }
  }

  /** Writes the messages gathered in the writer, if any. */
  async #flush(): Promise<void> {
    if (this.#out.length === 0) return;
    const bytes = this.#out.view();
    await this.#write(bytes);
    this.#out.reset();
  }

  async #readPacket(): Promise<StartupPacket> {
    let packet: StartupPacket | null;
    try {
      packet = await readStartupPacket(this.#io, { maxLength: this.#maxLength });
    } catch (err) {
      if (err instanceof TesseraError && err.code === SqlState.connectionFailure) {
        throw new ClientGone("read failed", { cause: err });
      }
      // Version 1234.x is where the request codes live (SSLRequest is 1234.5679): another
      // code there is an unknown request, not a protocol version.
      const request = err instanceof TesseraError &&
        /unsupported frontend protocol 1234\.(\d+)/.exec(err.message);
      if (request) {
        throw fatal(
          SqlState.protocolViolation,
          `unknown startup request code 1234.${request[1]}`,
        );
      }
      throw err;
    }
    if (packet === null) throw new ClientGone("connection closed before the startup packet");
    return packet;
  }

  async #startup(): Promise<FrontendResult> {
    let sslSeen = false;
    let gssSeen = false;
    for (;;) {
      const packet = await this.#readPacket();
      switch (packet.kind) {
        case "ssl":
          if (sslSeen) throw fatal(SqlState.protocolViolation, "SSLRequest sent twice");
          sslSeen = true;
          if (this.#tls === undefined) {
            await this.#write(Uint8Array.of(ENCRYPTION_REFUSED));
          } else {
            await this.#write(Uint8Array.of(SSL_ACCEPTED));
            await this.#startTls(this.#tls);
          }
          continue;
        case "gssenc":
          if (gssSeen) throw fatal(SqlState.protocolViolation, "GSSENCRequest sent twice");
          gssSeen = true;
          await this.#write(Uint8Array.of(ENCRYPTION_REFUSED));
          continue;
        case "cancel":
          return {
            kind: "cancel",
            pid: packet.processId,
            secret: packet.secretKey,
            close: () => this.#close(),
          };
        case "mux":
          if (this.#options.allowMux !== true) {
            throw fatal(SqlState.protocolViolation, "unknown startup request code 1234.5690");
          }
          if (this.#options.requireTls && this.#transport === "tcp" && !this.#tlsOn) {
            throw fatal(SqlState.invalidAuthorizationSpecification, "TLS is required");
          }
          await this.#write(Uint8Array.of(MUX_ACCEPTED));
          return { kind: "mux", conn: this.#io };
        case "startup":
          return await this.#login(packet.minorVersion, packet.params);
      }
    }
  }

  async #startTls(tls: LoadedFrontendTls): Promise<void> {
    this.#handshaking = true;
    this.#abort = new AbortController();
    try {
      this.#io = await upgradeToTls(this.#raw, tls, this.#abort.signal);
    } catch (err) {
      // A failed handshake has no channel left to report on.
      throw new ClientGone("TLS handshake failed", { cause: err });
    } finally {
      this.#handshaking = false;
      this.#abort = undefined;
    }
    this.#tlsOn = true;
    if (this.#closed) closeQuietly(this.#io);
  }

  async #login(requestedMinor: number, sent: Map<string, string>): Promise<FrontendResult> {
    const params: Record<string, string> = {};
    const unrecognized: string[] = [];
    for (const [name, value] of sent) {
      if (name.startsWith(PROTOCOL_OPTION_PREFIX)) {
        unrecognized.push(name);
      } else {
        Object.defineProperty(params, name, {
          value,
          enumerable: true,
          writable: true,
          configurable: true,
        });
      }
    }
    if (requestedMinor > 0 || unrecognized.length > 0) {
      // Sent before the authentication request, as Postgres does; it goes out with it.
      this.#out.negotiateProtocolVersion(0, unrecognized);
    }
    const user = params["user"] ?? "";
    if (user === "") {
      throw fatal(
        SqlState.invalidAuthorizationSpecification,
        "no PostgreSQL user name specified in startup packet",
      );
    }
    this.#user = user;
    const database = params["database"] || user;
    const settings = parseStartupOptions(params["options"] ?? "");
    if (this.#options.requireTls && !this.#tlsOn && this.#transport === "tcp") {
      throw fatal(
        SqlState.invalidAuthorizationSpecification,
        `SSL required: this server accepts TCP connections only with TLS (user "${user}", ` +
          `database "${database}")`,
        "connect with sslmode=require (or verify-ca, verify-full)",
      );
    }
    const rule = await this.#options.auth.lookup(user, database, this.#transport);
    if (rule === undefined) {
      if (this.#options.hideUnknownUsers) {
        await this.#scram(user, undefined);
      }
      throw fatal(SqlState.invalidAuthorizationSpecification, `role "${user}" does not exist`);
    }
    switch (rule.method) {
      case "trust":
        break;
      case "reject":
        throw fatal(SqlState.invalidAuthorizationSpecification, rule.reason);
      case "scram-sha-256":
        await this.#scram(user, this.#verifier(rule.verifier));
        break;
      default:
        throw fatal(
          SqlState.internalError,
          `unknown authentication method for user "${user}": ` +
            `'${String((rule as { method: unknown }).method)}'`,
        );
    }
    this.#out.authenticationOk();
    await this.#flush();
    return {
      kind: "startup",
      conn: this.#io,
      user,
      database,
      params,
      settings,
      transport: this.#transport,
      tls: this.#tlsOn,
      protocolMinor: 0,
      requestedProtocolMinor: requestedMinor,
    };
  }

  /** Parses a stored verifier; an invalid one fails like a wrong password, as in Postgres. */
  #verifier(text: string): ScramVerifier | undefined {
    try {
      return parseScramVerifier(text);
    } catch (err) {
      this.#options.logger?.warn(`user "${this.#user}" does not have a valid SCRAM secret`, {
        error: err,
      });
      return undefined;
    }
  }

  /** Runs a SCRAM-SHA-256 exchange; throws 28P01 when the proof is wrong. */
  async #scram(user: string, verifier: ScramVerifier | undefined): Promise<void> {
    // Over TLS, SCRAM-SHA-256-PLUS binds the proof to this connection (tls-server-end-point),
    // as Postgres offers it: libpq uses it by default and `channel_binding=require` insists.
    const endPoint = this.#tlsOn ? this.#tls?.endPoint : undefined;
    this.#out.authenticationSasl(
      endPoint === undefined ? [SCRAM_SHA_256] : [SCRAM_SHA_256_PLUS, SCRAM_SHA_256],
    );
    await this.#flush();
    const initial = new PayloadReader(
      await this.#readPasswordMessage("SASLInitialResponse"),
      "SASLInitialResponse",
    );
    const mechanism = initial.cstring();
    const plus = mechanism === SCRAM_SHA_256_PLUS && endPoint !== undefined;
    if (mechanism !== SCRAM_SHA_256 && !plus) {
      throw fatal(
        SqlState.protocolViolation,
        `client selected an invalid SASL authentication mechanism: '${mechanism.slice(0, 40)}'`,
        mechanism === SCRAM_SHA_256_PLUS
          ? "channel binding needs TLS (and a certificate signed with a hash): connect with " +
            "sslmode=require, or with channel_binding=disable or prefer"
          : `the server offers only ${SCRAM_SHA_256}`,
      );
    }
    const data = initial.lengthPrefixed();
    initial.expectEnd();
    if (data === null) {
      throw fatal(
        SqlState.protocolViolation,
        "SASLInitialResponse carries no client-first-message",
      );
    }
    const scram = new ScramServer(verifier, { username: user, channelBinding: endPoint, plus });
    this.#out.authenticationSaslContinue(await scram.serverFirstMessage(data));
    await this.#flush();
    const final = await this.#readPasswordMessage("SASLResponse");
    this.#out.authenticationSaslFinal(await scram.serverFinalMessage(final));
  }

  /** Reads one typed client message that must be a `p` (password/SASL) message. */
  async #readPasswordMessage(what: string): Promise<Uint8Array> {
    const head = new Uint8Array(5);
    let ok: boolean;
    try {
      ok = await readExact(this.#io, head);
    } catch (err) {
      if (err instanceof TesseraError && err.code === SqlState.connectionFailure) {
        throw new ClientGone("read failed", { cause: err });
      }
      throw err;
    }
    // A client without a password (psql before it prompts) hangs up here.
    if (!ok) throw new ClientGone("connection closed during authentication");
    const type = head[0]!;
    const length = new DataView(head.buffer).getInt32(1);
    if (type === Frontend.terminate) throw new ClientGone("client sent Terminate");
    if (type !== Frontend.password) {
      const shown = type >= 0x20 && type < 0x7f
        ? `'${String.fromCharCode(type)}'`
        : `0x${type.toString(16)}`;
      throw fatal(
        SqlState.protocolViolation,
        `expected ${what} (message type 'p'), got message type ${shown}`,
      );
    }
    if (length < 4 || length > this.#maxLength) {
      throw fatal(
        SqlState.protocolViolation,
        `invalid ${what} message length: ${length} (accepted: 4 to ${this.#maxLength})`,
      );
    }
    const payload = new Uint8Array(length - 4);
    if (payload.byteLength > 0 && !(await readExact(this.#io, payload))) {
      throw new ClientGone("connection closed during authentication");
    }
    return payload;
  }
}
