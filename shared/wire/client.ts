/**
 * A small Postgres client for control-plane queries (status checks, setup, tests): simple
 * query protocol, text results, over TCP or a Unix socket, with trust, cleartext, MD5 and
 * SCRAM-SHA-256 authentication. Correct rather than fast; the data plane forwards bytes
 * with the codec instead.
 *
 * @module
 */

import { SqlState, TesseraError } from "../errors/mod.ts";
import { connectionError, type WireConn, writeAll } from "./conn.ts";
import {
  decodeAuthentication,
  decodeBackendKeyData,
  decodeCommandComplete,
  decodeDataRowText,
  decodeError,
  decodeErrorFields,
  decodeParameterStatus,
  decodeReadyForQuery,
  decodeRowDescription,
  errorFromFields,
} from "./decode.ts";
import { md5PasswordResponse } from "./md5.ts";
import { Backend, type TransactionStatus } from "./messages.ts";
import { MessageReader, type WireMessage } from "./reader.ts";
import { SCRAM_SHA_256, ScramClient } from "./scram.ts";
import { MessageWriter } from "./writer.ts";

/** Options of {@linkcode PgClient.connect}. */
export interface PgClientOptions {
  /**
   * Host name or IP for TCP; `127.0.0.1` when neither it nor `socketDir` is given. A value
   * starting with `/` is taken as a socket directory, as libpq does.
   */
  host?: string;
  /** Server port (also names the Unix socket file `.s.PGSQL.<port>`). */
  port: number;
  /** Directory holding the server's Unix socket; when given, the client connects through it. */
  socketDir?: string;
  /** User name. */
  user: string;
  /** Database name. */
  database: string;
  /** Password, for cleartext, MD5 or SCRAM-SHA-256 authentication. */
  password?: string;
  /** `application_name` reported to the server. */
  applicationName?: string;
  /** Limit for connecting and logging in, in milliseconds; 10000 when not given, 0 for none. */
  connectTimeoutMs?: number;
  /** Further startup parameters, e.g. `{ options: "-c statement_timeout=5s" }`. */
  params?: Readonly<Record<string, string>>;
  /** Called with each NoticeResponse (severity NOTICE, WARNING, ...). */
  onNotice?: (notice: TesseraError) => void;
}

/** The result of one statement of a query string. */
export interface QueryResult {
  /** Rows of text values, `null` for SQL NULL; empty for commands that return no rows. */
  rows: (string | null)[][];
  /** Column names; empty for commands that return no rows. */
  fields: string[];
  /** Command tag, e.g. `SELECT 2`, `CREATE TABLE`. */
  command: string;
}

type Target = { transport: "tcp"; hostname: string; port: number } | {
  transport: "unix";
  path: string;
};

function targetOf(options: PgClientOptions): Target {
  const dir = options.socketDir ?? (options.host?.startsWith("/") ? options.host : undefined);
  if (dir !== undefined) return { transport: "unix", path: `${dir}/.s.PGSQL.${options.port}` };
  return { transport: "tcp", hostname: options.host ?? "127.0.0.1", port: options.port };
}

function describeTarget(t: Target): string {
  return t.transport === "unix" ? `socket '${t.path}'` : `${t.hostname}:${t.port}`;
}

async function openConn(target: Target, signal: AbortSignal | undefined): Promise<WireConn> {
  try {
    let conn: WireConn;
    if (target.transport === "unix") conn = await Deno.connect(target);
    else conn = await Deno.connect(signal === undefined ? target : { ...target, signal });
    if (signal?.aborted) {
      // The deadline passed while connecting; nobody will use or close this connection.
      conn.close();
      throw new Error("connection established after the deadline");
    }
    return conn;
  } catch (err) {
    const reason = err instanceof Error ? err.message : String(err);
    throw new TesseraError(
      SqlState.sqlclientUnableToEstablishSqlconnection,
      `could not connect to ${describeTarget(target)}: ${reason}`,
      { cause: err },
    );
  }
}

/** Runs `work` with a deadline; on expiry calls `onTimeout` and rejects with 08001. */
async function withDeadline<T>(
  ms: number,
  what: string,
  work: (signal: AbortSignal | undefined) => Promise<T>,
  onTimeout: () => void,
): Promise<T> {
  if (ms <= 0) return await work(undefined);
  const abort = new AbortController();
  let timer: ReturnType<typeof setTimeout> | undefined;
  const expired = new Promise<never>((_, reject) => {
    timer = setTimeout(() => {
      abort.abort();
      onTimeout();
      reject(
        new TesseraError(
          SqlState.sqlclientUnableToEstablishSqlconnection,
          `${what} timed out after ${ms} ms`,
        ),
      );
    }, ms);
  });
  const running = work(abort.signal);
  running.catch(() => {}); // its failure after the deadline is moot
  try {
    return await Promise.race([running, expired]);
  } finally {
    clearTimeout(timer);
  }
}

/**
 * One connection to Postgres.
 *
 * @example
 * ```ts
 * const client = await PgClient.connect({ port: 25432, socketDir: "/run/pg", user: "postgres", database: "postgres" });
 * try {
 *   const [r] = await client.query("select pg_is_in_recovery(), version()");
 *   console.log(r!.rows[0]);
 * } finally {
 *   await client.close();
 * }
 * ```
 */
export class PgClient {
  #conn: WireConn;
  #reader: MessageReader;
  #writer = new MessageWriter(1024);
  #target: Target;
  #options: PgClientOptions;
  #parameters = new Map<string, string>();
  #processId = 0;
  #secretKey = 0;
  #status: TransactionStatus = "I";
  #closed = false;
  #queue: Promise<unknown> = Promise.resolve();

  private constructor(conn: WireConn, target: Target, options: PgClientOptions) {
    this.#conn = conn;
    this.#reader = new MessageReader(conn, { initialBufferSize: 4096 });
    this.#target = target;
    this.#options = options;
  }

  /**
   * Connects and logs in; resolves once the server is ready for queries. Throws the server's
   * error (e.g. 28P01 wrong password, 3D000 unknown database) as a TesseraError, or 08001
   * when the server cannot be reached in time.
   */
  static async connect(options: PgClientOptions): Promise<PgClient> {
    const target = targetOf(options);
    let client: PgClient | undefined;
    return await withDeadline(
      options.connectTimeoutMs ?? 10000,
      `connecting to ${describeTarget(target)}`,
      async (signal) => {
        const conn = await openConn(target, signal);
        client = new PgClient(conn, target, options);
        try {
          await client.#startup();
        } catch (err) {
          client.#shut();
          throw err;
        }
        return client;
      },
      () => {
        if (client !== undefined) client.#shut();
      },
    );
  }

  /** Run-time parameters the server reported (`server_version`, `TimeZone`, ...). */
  get parameters(): ReadonlyMap<string, string> {
    return this.#parameters;
  }

  /** The backend's process id (from BackendKeyData). */
  get processId(): number {
    return this.#processId;
  }

  /** The secret key of a CancelRequest for this connection (from BackendKeyData). */
  get secretKey(): number {
    return this.#secretKey;
  }

  /** Transaction status after the last query: `I` idle, `T` in a block, `E` failed block. */
  get transactionStatus(): TransactionStatus {
    return this.#status;
  }

  /** Whether the connection is closed (by {@linkcode close}, a FATAL error or a lost link). */
  get closed(): boolean {
    return this.#closed;
  }

  #shut(): void {
    if (this.#closed) return;
    this.#closed = true;
    try {
      this.#conn.close();
    } catch {
      // already closed by the peer
    }
  }

  async #send(build: (w: MessageWriter) => void): Promise<void> {
    build(this.#writer.reset());
    await writeAll(this.#conn, this.#writer.view());
  }

  async #next(): Promise<WireMessage> {
    const msg = await this.#reader.next();
    if (msg === null) {
      this.#shut();
      throw new TesseraError(
        SqlState.connectionFailure,
        "server closed the connection unexpectedly",
      );
    }
    return msg;
  }

  #unexpected(msg: WireMessage, phase: string): never {
    this.#shut();
    throw new TesseraError(
      SqlState.protocolViolation,
      `unexpected message '${msg.typeChar}' from the server during ${phase}`,
    );
  }

  #notice(msg: WireMessage): void {
    const notice = errorFromFields(decodeErrorFields(msg.payload, "NoticeResponse"));
    this.#options.onNotice?.(notice);
  }

  async #startup(): Promise<void> {
    const o = this.#options;
    const params: Record<string, string> = {
      user: o.user,
      database: o.database,
      client_encoding: "UTF8",
      ...o.params,
    };
    if (o.applicationName !== undefined) params.application_name = o.applicationName;
    await this.#send((w) => w.startupMessage(params));
    await this.#authenticate();
    for (;;) {
      const msg = await this.#next();
      switch (msg.type) {
        case Backend.parameterStatus: {
          const p = decodeParameterStatus(msg.payload);
          this.#parameters.set(p.name, p.value);
          break;
        }
        case Backend.backendKeyData: {
          const k = decodeBackendKeyData(msg.payload);
          this.#processId = k.processId;
          this.#secretKey = k.secretKey;
          break;
        }
        case Backend.readyForQuery:
          this.#status = decodeReadyForQuery(msg.payload);
          return;
        case Backend.errorResponse:
          throw decodeError(msg.payload);
        case Backend.noticeResponse:
          this.#notice(msg);
          break;
        case Backend.negotiateProtocolVersion:
          break; // we ask for 3.0 and no _pq_ options, so there is nothing to downgrade
        default:
          this.#unexpected(msg, "startup");
      }
    }
  }

  #password(method: string): string {
    const password = this.#options.password;
    if (password === undefined) {
      throw new TesseraError(
        SqlState.invalidPassword,
        `the server asks for ${method} password authentication but no password was given`,
        { hint: "pass 'password' to PgClient.connect" },
      );
    }
    return password;
  }

  async #authenticate(): Promise<void> {
    let scram: ScramClient | undefined;
    for (;;) {
      const msg = await this.#next();
      if (msg.type === Backend.errorResponse) throw decodeError(msg.payload);
      if (msg.type === Backend.noticeResponse) {
        this.#notice(msg);
        continue;
      }
      if (msg.type === Backend.negotiateProtocolVersion) continue;
      if (msg.type !== Backend.authentication) this.#unexpected(msg, "authentication");
      const auth = decodeAuthentication(msg.payload);
      switch (auth.kind) {
        case "ok":
          if (scram !== undefined && !scram.verified) {
            throw new TesseraError(
              SqlState.invalidAuthorizationSpecification,
              "the server ended SCRAM authentication without proving it knows the password",
            );
          }
          return;
        case "cleartextPassword": {
          const password = this.#password("cleartext");
          await this.#send((w) => w.passwordMessage(password));
          break;
        }
        case "md5Password": {
          const answer = md5PasswordResponse(this.#options.user, this.#password("MD5"), auth.salt);
          await this.#send((w) => w.passwordMessage(answer));
          break;
        }
        case "sasl": {
          if (!auth.mechanisms.includes(SCRAM_SHA_256)) {
            throw new TesseraError(
              SqlState.featureNotSupported,
              `none of the server's SASL mechanisms is supported: ${auth.mechanisms.join(", ")}`,
            );
          }
          scram = new ScramClient(this.#password(SCRAM_SHA_256));
          const first = scram.clientFirstMessage();
          await this.#send((w) => w.saslInitialResponse(SCRAM_SHA_256, first));
          break;
        }
        case "saslContinue": {
          if (scram === undefined) this.#unexpected(msg, "authentication");
          const final = await scram.clientFinalMessage(auth.data);
          await this.#send((w) => w.saslResponse(final));
          break;
        }
        case "saslFinal":
          if (scram === undefined) this.#unexpected(msg, "authentication");
          scram.verifyServerFinal(auth.data);
          break;
        case "other":
          throw new TesseraError(
            SqlState.featureNotSupported,
            `authentication method ${auth.code} requested by the server is not supported`,
            { hint: "use trust, password, md5 or scram-sha-256 in pg_hba.conf" },
          );
      }
    }
  }

  /**
   * Runs `sql` with the simple query protocol and resolves to one result per statement that
   * completed (an empty string gives no results). Calls are queued: one runs at a time.
   *
   * An ErrorResponse rejects with a TesseraError carrying the server's SQLSTATE, message,
   * detail and hint, after the server is ready again, so the connection stays usable (a
   * FATAL error closes it). COPY is not supported (0A000).
   */
  query(sql: string): Promise<QueryResult[]> {
    const run = this.#queue.then(() => this.#run(sql));
    this.#queue = run.catch(() => {});
    return run;
  }

  async #run(sql: string): Promise<QueryResult[]> {
    if (this.#closed) {
      throw new TesseraError(SqlState.connectionFailure, "the connection is closed");
    }
    await this.#send((w) => w.query(sql));
    const results: QueryResult[] = [];
    let current: QueryResult | null = null;
    let error: TesseraError | null = null;
    for (;;) {
      let msg: WireMessage;
      try {
        msg = await this.#next();
      } catch (err) {
        // A FATAL error is followed by the server closing the connection: report the error.
        if (error !== null) throw error;
        throw connectionError(err, "query");
      }
      switch (msg.type) {
        case Backend.rowDescription:
          current = {
            rows: [],
            fields: decodeRowDescription(msg.payload).map((f) => f.name),
            command: "",
          };
          break;
        case Backend.dataRow:
          if (current === null) this.#unexpected(msg, "a query (DataRow before RowDescription)");
          current.rows.push(decodeDataRowText(msg.payload));
          break;
        case Backend.commandComplete: {
          const command = decodeCommandComplete(msg.payload);
          results.push(
            current === null ? { rows: [], fields: [], command } : { ...current, command },
          );
          current = null;
          break;
        }
        case Backend.emptyQueryResponse:
          current = null;
          break;
        case Backend.errorResponse:
          error = decodeError(msg.payload);
          current = null;
          break;
        case Backend.noticeResponse:
          this.#notice(msg);
          break;
        case Backend.parameterStatus: {
          const p = decodeParameterStatus(msg.payload);
          this.#parameters.set(p.name, p.value);
          break;
        }
        case Backend.notificationResponse:
          break;
        case Backend.copyInResponse:
          error ??= new TesseraError(
            SqlState.featureNotSupported,
            "COPY FROM STDIN is not supported by PgClient",
          );
          await this.#send((w) => w.copyFail("COPY FROM STDIN is not supported by PgClient"));
          break;
        case Backend.copyOutResponse:
          error ??= new TesseraError(
            SqlState.featureNotSupported,
            "COPY TO STDOUT is not supported by PgClient",
          );
          break;
        case Backend.copyData:
        case Backend.copyDone:
          break; // the rest of an unsupported COPY TO STDOUT
        case Backend.readyForQuery:
          this.#status = decodeReadyForQuery(msg.payload);
          if (error !== null) throw error;
          return results;
        default:
          this.#unexpected(msg, "a query");
      }
    }
  }

  /**
   * Asks the server to cancel the query running on this connection, through a CancelRequest
   * on a new connection; the cancelled query rejects with 57014. Resolves once the server has
   * taken the request (cancellation itself is asynchronous on the server).
   */
  async cancel(): Promise<void> {
    const ms = this.#options.connectTimeoutMs ?? 10000;
    let conn: WireConn | undefined;
    await withDeadline(
      ms,
      `sending a cancel request to ${describeTarget(this.#target)}`,
      async (signal) => {
        conn = await openConn(this.#target, signal);
        try {
          await writeAll(
            conn,
            new MessageWriter(16).cancelRequest(this.#processId, this.#secretKey).view(),
          );
          // The server closes the connection once it has read the request.
          const buf = new Uint8Array(16);
          while ((await conn.read(buf)) !== null) { /* nothing is expected */ }
        } finally {
          try {
            conn.close();
          } catch {
            // closed by the deadline
          }
        }
      },
      () => {
        try {
          conn?.close();
        } catch {
          // already closed
        }
      },
    );
  }

  /** Sends Terminate and closes the connection. Safe to call more than once. */
  async close(): Promise<void> {
    if (this.#closed) return;
    try {
      await writeAll(this.#conn, new MessageWriter(8).terminate().view());
    } catch {
      // the server may already be gone; closing is all that is left to do
    }
    this.#shut();
  }
}
