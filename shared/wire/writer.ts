/**
 * A growable buffer that builds Postgres wire messages, several at a time, so that messages
 * that are ready together go out in one `write`.
 *
 * @module
 */

import { TesseraError } from "../errors/mod.ts";
import {
  AuthCode,
  Backend,
  CANCEL_REQUEST_CODE,
  type DescribeTarget,
  ErrorField,
  Frontend,
  GSSENC_REQUEST_CODE,
  PROTOCOL_VERSION_3_0,
  SSL_REQUEST_CODE,
  type TransactionStatus,
} from "./messages.ts";

const encoder = new TextEncoder();

/** Type OID of `text`: the default column type of {@linkcode MessageWriter.rowDescription}. */
export const TEXT_OID = 25;

/** One column of a RowDescription. Only `name` is required; the rest default to a text column. */
export interface FieldDescription {
  /** Column name. */
  name: string;
  /** OID of the source table, or 0. */
  tableOid?: number;
  /** Attribute number of the source column, or 0. */
  columnAttr?: number;
  /** OID of the column's data type; 25 (`text`) when not given. */
  typeOid?: number;
  /** Data type size (`pg_type.typlen`); -1 (variable) when not given. */
  typeSize?: number;
  /** Type modifier (`pg_attribute.atttypmod`); -1 when not given. */
  typeModifier?: number;
  /** 0 text, 1 binary; 0 when not given. */
  format?: number;
}

/** A simple query result to encode: RowDescription (when it has fields), DataRows, CommandComplete. */
export interface SimpleResult {
  /** Columns; an empty list sends no RowDescription (a command such as `CREATE TABLE`). */
  fields: readonly (string | FieldDescription)[];
  /** Rows of text values (`null` for SQL NULL). */
  rows: readonly (readonly (string | Uint8Array | null)[])[];
  /** Command tag, e.g. `SELECT 2`. */
  command: string;
}

function checkInt(value: number, min: number, max: number, what: string): void {
  if (!Number.isInteger(value) || value < min || value > max) {
    throw new RangeError(`'${what}' must be an integer in [${min}, ${max}]: received ${value}`);
  }
}

/**
 * Builds wire messages into one growing buffer.
 *
 * Use the message methods (`query`, `readyForQuery`, ...) or the primitives between `begin`
 * and `end`; then take the bytes with {@linkcode MessageWriter.take} (a copy, writer reset) or
 * {@linkcode MessageWriter.view} (no copy, valid until the writer is changed). A message
 * whose building throws (a zero character in a string, a count above 65535) is dropped, and
 * the messages before it are kept.
 *
 * @example
 * ```ts
 * const w = new MessageWriter();
 * w.authenticationOk().parameterStatus("server_version", "15.0").backendKeyData(1, 2)
 *   .readyForQuery("I");
 * await writeAll(conn, w.take());
 * ```
 */
export class MessageWriter {
  #buf: Uint8Array;
  #view: DataView;
  #pos = 0;
  #msgStart = -1;
  #msgBegin = 0;

  /** Creates a writer whose buffer starts at `initialSize` bytes and doubles as needed. */
  constructor(initialSize = 256) {
    checkInt(initialSize, 1, 0x7fffffff, "initialSize");
    this.#buf = new Uint8Array(initialSize);
    this.#view = new DataView(this.#buf.buffer);
  }

  /** Number of bytes written so far. */
  get length(): number {
    return this.#pos;
  }

  /** Discards everything written, keeping the buffer for reuse. */
  reset(): this {
    this.#pos = 0;
    this.#msgStart = -1;
    return this;
  }

  /**
   * The buffer the bytes are written into: its first {@linkcode length} bytes are the bytes
   * written so far. No copy and no view is made; valid until the writer is next changed.
   */
  get backing(): Uint8Array {
    this.#checkNoOpenMessage();
    return this.#buf;
  }

  /** The bytes written so far, without copying; valid until the writer is next changed. */
  view(): Uint8Array {
    this.#checkNoOpenMessage();
    return this.#buf.subarray(0, this.#pos);
  }

  /** A copy of the bytes written so far; the writer is reset. */
  take(): Uint8Array {
    this.#checkNoOpenMessage();
    const out = this.#buf.slice(0, this.#pos);
    this.reset();
    return out;
  }

  #checkNoOpenMessage(): void {
    if (this.#msgStart !== -1) throw new Error("a message was begun but not ended");
  }

  /** Drops the message being built (so the writer stays usable) and throws `err`. */
  #fail(err: Error): never {
    if (this.#msgStart !== -1) {
      this.#pos = this.#msgBegin;
      this.#msgStart = -1;
    }
    throw err;
  }

  #ensure(extra: number): void {
    const need = this.#pos + extra;
    if (need <= this.#buf.byteLength) return;
    let size = this.#buf.byteLength * 2;
    while (size < need) size *= 2;
    const next = new Uint8Array(size);
    next.set(this.#buf.subarray(0, this.#pos));
    this.#buf = next;
    this.#view = new DataView(next.buffer);
  }

  // ---- primitives ----

  /** Starts a message with type byte `type`; its length is filled in by {@linkcode end}. */
  begin(type: number): this {
    this.#checkNoOpenMessage();
    this.#ensure(5);
    this.#buf[this.#pos] = type;
    this.#msgBegin = this.#pos;
    this.#msgStart = this.#pos + 1;
    this.#pos += 5;
    return this;
  }

  /** Starts a startup-phase message, which has no type byte (only the length). */
  beginUntyped(): this {
    this.#checkNoOpenMessage();
    this.#ensure(4);
    this.#msgBegin = this.#pos;
    this.#msgStart = this.#pos;
    this.#pos += 4;
    return this;
  }

  /** Ends the current message, writing its length (which counts itself, not the type byte). */
  end(): this {
    if (this.#msgStart === -1) throw new Error("end() without begin()");
    this.#view.setInt32(this.#msgStart, this.#pos - this.#msgStart);
    this.#msgStart = -1;
    return this;
  }

  /** Writes one byte. */
  byte(value: number): this {
    this.#ensure(1);
    this.#buf[this.#pos++] = value;
    return this;
  }

  /** Writes a big-endian Int16 (values up to 65535 are written as their unsigned bits). */
  int16(value: number): this {
    this.#ensure(2);
    this.#view.setUint16(this.#pos, value & 0xffff);
    this.#pos += 2;
    return this;
  }

  /** Writes a count as Int16, refusing counts the protocol cannot carry (above 65535). */
  count(value: number, what: string): this {
    if (value > 0xffff) {
      this.#fail(new RangeError(`too many ${what} for one message: ${value} (at most 65535)`));
    }
    return this.int16(value);
  }

  /** Writes a big-endian Int32. */
  int32(value: number): this {
    this.#ensure(4);
    this.#view.setInt32(this.#pos, value);
    this.#pos += 4;
    return this;
  }

  /** Writes raw bytes. */
  bytes(value: Uint8Array): this {
    this.#ensure(value.byteLength);
    this.#buf.set(value, this.#pos);
    this.#pos += value.byteLength;
    return this;
  }

  /** Writes `src[start, end)` as they are (no view of `src` is made for a short range). */
  range(src: Uint8Array, start: number, end: number): this {
    const n = end - start;
    this.#ensure(n);
    const buf = this.#buf;
    let pos = this.#pos;
    if (n <= 64) {
      for (let i = start; i < end; i++) buf[pos++] = src[i]!;
    } else {
      buf.set(src.subarray(start, end), pos);
      pos += n;
    }
    this.#pos = pos;
    return this;
  }

  /** Writes `value` as UTF-8 without a terminator. */
  string(value: string): this {
    const n = value.length;
    this.#ensure(n * 3);
    const buf = this.#buf;
    let pos = this.#pos;
    if (n > 64) {
      this.#pos = pos + encoder.encodeInto(value, buf.subarray(pos)).written;
      return this;
    }
    // Short ASCII (names, settings, tags) is copied as is: no view and no result object.
    let i = 0;
    for (; i < n; i++) {
      const c = value.charCodeAt(i);
      if (c >= 0x80) break;
      buf[pos++] = c;
    }
    if (i < n) pos += encoder.encodeInto(value.slice(i), buf.subarray(pos)).written;
    this.#pos = pos;
    return this;
  }

  /**
   * Writes `value` as UTF-8 followed by a zero byte. A string containing a zero character
   * cannot be sent and throws TesseraError 22021.
   */
  cstring(value: string): this {
    if (value.includes("\0")) {
      this.#fail(
        new TesseraError("22021", 'invalid byte sequence for encoding "UTF8": 0x00', {
          hint: "strings sent to Postgres cannot contain a zero character",
        }),
      );
    }
    this.string(value);
    return this.byte(0);
  }

  /** Writes an Int32 length then the bytes, or -1 for `null` (parameter and column values). */
  lengthPrefixed(value: string | Uint8Array | null): this {
    if (value === null) return this.int32(-1);
    if (typeof value === "string") {
      const lenAt = this.#pos;
      this.int32(0);
      this.string(value);
      this.#view.setInt32(lenAt, this.#pos - lenAt - 4);
      return this;
    }
    return this.int32(value.byteLength).bytes(value);
  }

  // ---- backend messages (a server produces these) ----

  /** AuthenticationOk. */
  authenticationOk(): this {
    return this.begin(Backend.authentication).int32(AuthCode.ok).end();
  }

  /** AuthenticationCleartextPassword. */
  authenticationCleartextPassword(): this {
    return this.begin(Backend.authentication).int32(AuthCode.cleartextPassword).end();
  }

  /** AuthenticationMD5Password with its 4-byte salt. */
  authenticationMd5Password(salt: Uint8Array): this {
    if (salt.byteLength !== 4) {
      throw new RangeError(`MD5 salt must be 4 bytes: received ${salt.byteLength}`);
    }
    return this.begin(Backend.authentication).int32(AuthCode.md5Password).bytes(salt).end();
  }

  /** AuthenticationSASL listing the mechanisms offered, e.g. `["SCRAM-SHA-256"]`. */
  authenticationSasl(mechanisms: readonly string[]): this {
    this.begin(Backend.authentication).int32(AuthCode.sasl);
    for (const m of mechanisms) this.cstring(m);
    return this.byte(0).end();
  }

  /** AuthenticationSASLContinue carrying a server challenge (e.g. SCRAM server-first-message). */
  authenticationSaslContinue(data: string | Uint8Array): this {
    this.begin(Backend.authentication).int32(AuthCode.saslContinue);
    return (typeof data === "string" ? this.string(data) : this.bytes(data)).end();
  }

  /** AuthenticationSASLFinal carrying the outcome (e.g. SCRAM server-final-message). */
  authenticationSaslFinal(data: string | Uint8Array): this {
    this.begin(Backend.authentication).int32(AuthCode.saslFinal);
    return (typeof data === "string" ? this.string(data) : this.bytes(data)).end();
  }

  /** ParameterStatus reporting a run-time parameter. */
  parameterStatus(name: string, value: string): this {
    return this.begin(Backend.parameterStatus).cstring(name).cstring(value).end();
  }

  /** BackendKeyData: the process id and secret key a client needs to cancel its queries. */
  backendKeyData(processId: number, secretKey: number): this {
    return this.begin(Backend.backendKeyData).int32(processId).int32(secretKey).end();
  }

  /** ReadyForQuery with the transaction status (`I` idle, `T` in a block, `E` failed block). */
  readyForQuery(status: TransactionStatus): this {
    return this.begin(Backend.readyForQuery).byte(status.charCodeAt(0)).end();
  }

  #errorFields(type: number, err: TesseraError, extra: Readonly<Record<string, string>>): this {
    this.begin(type)
      .byte(ErrorField.severity).cstring(err.severity)
      .byte(ErrorField.severityNonLocalized).cstring(err.severity)
      .byte(ErrorField.code).cstring(err.code)
      .byte(ErrorField.message).cstring(err.message);
    if (err.detail !== undefined) this.byte(ErrorField.detail).cstring(err.detail);
    if (err.hint !== undefined) this.byte(ErrorField.hint).cstring(err.hint);
    for (const [key, value] of Object.entries(extra)) {
      if (key.length !== 1) {
        this.#fail(new RangeError(`error field type must be one character: received '${key}'`));
      }
      this.byte(key.charCodeAt(0)).cstring(value);
    }
    return this.byte(0).end();
  }

  /**
   * ErrorResponse from a TesseraError: fields S, V, C, M and, when set, D and H. `extra` adds
   * further fields by their one-letter type, e.g. `{ P: "15" }` for a cursor position.
   */
  errorResponse(err: TesseraError, extra: Readonly<Record<string, string>> = {}): this {
    return this.#errorFields(Backend.errorResponse, err, extra);
  }

  /** NoticeResponse from a TesseraError (whose severity should be NOTICE, WARNING, INFO, ...). */
  noticeResponse(err: TesseraError, extra: Readonly<Record<string, string>> = {}): this {
    return this.#errorFields(Backend.noticeResponse, err, extra);
  }

  /** RowDescription; plain strings describe text columns. */
  rowDescription(fields: readonly (string | FieldDescription)[]): this {
    this.begin(Backend.rowDescription).count(fields.length, "columns");
    for (const f of fields) {
      const d: FieldDescription = typeof f === "string" ? { name: f } : f;
      this.cstring(d.name)
        .int32(d.tableOid ?? 0)
        .int16(d.columnAttr ?? 0)
        .int32(d.typeOid ?? TEXT_OID)
        .int16(d.typeSize ?? -1)
        .int32(d.typeModifier ?? -1)
        .int16(d.format ?? 0);
    }
    return this.end();
  }

  /** DataRow; strings are sent as UTF-8 text, `null` as SQL NULL. */
  dataRow(values: readonly (string | Uint8Array | null)[]): this {
    this.begin(Backend.dataRow).count(values.length, "columns");
    for (const v of values) this.lengthPrefixed(v);
    return this.end();
  }

  /** CommandComplete with its tag, e.g. `SELECT 1` or `INSERT 0 3`. */
  commandComplete(tag: string): this {
    return this.begin(Backend.commandComplete).cstring(tag).end();
  }

  /** EmptyQueryResponse (the query string held no statement). */
  emptyQueryResponse(): this {
    return this.begin(Backend.emptyQueryResponse).end();
  }

  /** RowDescription (when there are fields), one DataRow per row, then CommandComplete. */
  simpleResult(result: SimpleResult): this {
    if (result.fields.length > 0) this.rowDescription(result.fields);
    for (const row of result.rows) this.dataRow(row);
    return this.commandComplete(result.command);
  }

  /** ParseComplete. */
  parseComplete(): this {
    return this.begin(Backend.parseComplete).end();
  }

  /** BindComplete. */
  bindComplete(): this {
    return this.begin(Backend.bindComplete).end();
  }

  /** CloseComplete. */
  closeComplete(): this {
    return this.begin(Backend.closeComplete).end();
  }

  /** NoData. */
  noData(): this {
    return this.begin(Backend.noData).end();
  }

  /** PortalSuspended. */
  portalSuspended(): this {
    return this.begin(Backend.portalSuspended).end();
  }

  /** ParameterDescription listing the parameter type OIDs of a statement. */
  parameterDescription(typeOids: readonly number[]): this {
    this.begin(Backend.parameterDescription).count(typeOids.length, "parameters");
    for (const oid of typeOids) this.int32(oid);
    return this.end();
  }

  /** NotificationResponse (a NOTIFY delivered to a listening session). */
  notificationResponse(processId: number, channel: string, payload: string): this {
    return this.begin(Backend.notificationResponse).int32(processId).cstring(channel)
      .cstring(payload).end();
  }

  /**
   * NegotiateProtocolVersion: the newest minor version of protocol 3 the server supports and
   * the `_pq_.` options it did not recognize.
   */
  negotiateProtocolVersion(newestMinor: number, unrecognized: readonly string[] = []): this {
    this.begin(Backend.negotiateProtocolVersion).int32(newestMinor).int32(unrecognized.length);
    for (const name of unrecognized) this.cstring(name);
    return this.end();
  }

  // ---- frontend messages (a client produces these) ----

  /** StartupMessage for protocol 3.0 with its parameters (`user` is required by servers). */
  startupMessage(params: Readonly<Record<string, string>>): this {
    this.beginUntyped().int32(PROTOCOL_VERSION_3_0);
    for (const [name, value] of Object.entries(params)) this.cstring(name).cstring(value);
    return this.byte(0).end();
  }

  /** SSLRequest (answered by one unframed byte, `S` or `N`). */
  sslRequest(): this {
    return this.beginUntyped().int32(SSL_REQUEST_CODE).end();
  }

  /** GSSENCRequest (answered by one unframed byte, `G` or `N`). */
  gssEncRequest(): this {
    return this.beginUntyped().int32(GSSENC_REQUEST_CODE).end();
  }

  /** CancelRequest for the backend named by its BackendKeyData. */
  cancelRequest(processId: number, secretKey: number): this {
    return this.beginUntyped().int32(CANCEL_REQUEST_CODE).int32(processId).int32(secretKey).end();
  }

  /** Query (simple protocol). */
  query(sql: string): this {
    return this.begin(Frontend.query).cstring(sql).end();
  }

  /** Parse: prepares `sql` as statement `name` (`""` is the unnamed statement). */
  parse(name: string, sql: string, paramTypes: readonly number[] = []): this {
    this.begin(Frontend.parse).cstring(name).cstring(sql).count(paramTypes.length, "parameters");
    for (const oid of paramTypes) this.int32(oid);
    return this.end();
  }

  /**
   * Bind: creates portal `portal` from statement `statement` with parameter values (strings
   * go as UTF-8, `null` as SQL NULL) and format codes (empty means all text).
   */
  bind(
    portal: string,
    statement: string,
    params: readonly (string | Uint8Array | null)[] = [],
    paramFormats: readonly number[] = [],
    resultFormats: readonly number[] = [],
  ): this {
    this.begin(Frontend.bind).cstring(portal).cstring(statement).count(
      paramFormats.length,
      "parameters",
    );
    for (const f of paramFormats) this.int16(f);
    this.count(params.length, "parameters");
    for (const p of params) this.lengthPrefixed(p);
    this.count(resultFormats.length, "columns");
    for (const f of resultFormats) this.int16(f);
    return this.end();
  }

  /** Execute: runs portal `portal`, returning at most `maxRows` rows (0: all). */
  execute(portal = "", maxRows = 0): this {
    return this.begin(Frontend.execute).cstring(portal).int32(maxRows).end();
  }

  /** Describe a statement (`S`) or portal (`P`). */
  describe(target: DescribeTarget, name = ""): this {
    return this.begin(Frontend.describe).byte(target.charCodeAt(0)).cstring(name).end();
  }

  /** Close a statement (`S`) or portal (`P`). */
  close(target: DescribeTarget, name = ""): this {
    return this.begin(Frontend.close).byte(target.charCodeAt(0)).cstring(name).end();
  }

  /** Sync. */
  sync(): this {
    return this.begin(Frontend.sync).end();
  }

  /** Flush. */
  flush(): this {
    return this.begin(Frontend.flush).end();
  }

  /** Terminate. */
  terminate(): this {
    return this.begin(Frontend.terminate).end();
  }

  /** PasswordMessage carrying a cleartext or MD5-hashed password. */
  passwordMessage(password: string): this {
    return this.begin(Frontend.password).cstring(password).end();
  }

  /** SASLInitialResponse: the chosen mechanism and its initial client message. */
  saslInitialResponse(mechanism: string, data: string | Uint8Array | null): this {
    return this.begin(Frontend.password).cstring(mechanism).lengthPrefixed(data).end();
  }

  /** SASLResponse carrying the next client message (e.g. SCRAM client-final-message). */
  saslResponse(data: string | Uint8Array): this {
    this.begin(Frontend.password);
    return (typeof data === "string" ? this.string(data) : this.bytes(data)).end();
  }

  /** CopyData (either direction). */
  copyData(data: Uint8Array): this {
    return this.begin(Frontend.copyData).bytes(data).end();
  }

  /** CopyDone (either direction). */
  copyDone(): this {
    return this.begin(Frontend.copyDone).end();
  }

  /** CopyFail with the reason the client gives up. */
  copyFail(message: string): this {
    return this.begin(Frontend.copyFail).cstring(message).end();
  }
}
