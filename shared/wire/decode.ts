/**
 * Decoders for the payloads of backend and frontend messages. Each takes the payload (the
 * bytes after the length field) and throws TesseraError 08P01 when it is malformed.
 *
 * On the hot path decode only what must be decided on; forward the rest as bytes.
 *
 * @module
 */

import { isSeverity, type Severity, SqlState, TesseraError } from "../errors/mod.ts";
import { AuthCode, type DescribeTarget, type TransactionStatus } from "./messages.ts";
import { PayloadReader } from "./payload_reader.ts";

const decoder = new TextDecoder();

// ---- backend messages ----

/** The fields of an ErrorResponse or NoticeResponse, by name. */
export interface ErrorFields {
  /** Severity, possibly localized (`S`). */
  severity: string;
  /** Severity, never localized (`V`, Postgres 9.6+). */
  severityNonLocalized?: string;
  /** SQLSTATE (`C`). */
  code: string;
  /** Primary message (`M`). */
  message: string;
  /** Detail (`D`). */
  detail?: string;
  /** Hint (`H`). */
  hint?: string;
  /** Cursor position in the query, 1-based characters (`P`). */
  position?: string;
  /** Position in an internal query (`p`). */
  internalPosition?: string;
  /** Internal query (`q`). */
  internalQuery?: string;
  /** Context (`W`). */
  where?: string;
  /** Schema name (`s`). */
  schema?: string;
  /** Table name (`t`). */
  table?: string;
  /** Column name (`c`). */
  column?: string;
  /** Data type name (`d`). */
  dataType?: string;
  /** Constraint name (`n`). */
  constraint?: string;
  /** Source file (`F`). */
  file?: string;
  /** Source line (`L`). */
  line?: string;
  /** Source routine (`R`). */
  routine?: string;
  /** Every field by its one-letter type, including ones not named above. */
  all: Record<string, string>;
}

const FIELD_NAMES: Record<string, keyof Omit<ErrorFields, "all">> = {
  S: "severity",
  V: "severityNonLocalized",
  C: "code",
  M: "message",
  D: "detail",
  H: "hint",
  P: "position",
  p: "internalPosition",
  q: "internalQuery",
  W: "where",
  s: "schema",
  t: "table",
  c: "column",
  d: "dataType",
  n: "constraint",
  F: "file",
  L: "line",
  R: "routine",
};

/** Decodes an ErrorResponse or NoticeResponse payload into its fields. */
export function decodeErrorFields(payload: Uint8Array, what = "ErrorResponse"): ErrorFields {
  const r = new PayloadReader(payload, what);
  const out: ErrorFields = { severity: "", code: "", message: "", all: {} };
  for (;;) {
    const type = r.byte();
    if (type === 0) break;
    const key = String.fromCharCode(type);
    const value = r.cstring();
    out.all[key] = value;
    const name = FIELD_NAMES[key];
    if (name !== undefined) out[name] = value;
  }
  r.expectEnd();
  return out;
}

/**
 * Turns decoded error fields into a TesseraError carrying the server's SQLSTATE, severity,
 * message, detail and hint. A missing or malformed SQLSTATE becomes XX000.
 */
export function errorFromFields(fields: ErrorFields): TesseraError {
  const sev = fields.severityNonLocalized ?? fields.severity;
  const severity = isSeverity(sev) ? sev : "ERROR";
  const code = /^[0-9A-Z]{5}$/.test(fields.code) ? fields.code : SqlState.internalError;
  const options: { severity: Severity; detail?: string; hint?: string } = { severity };
  if (fields.detail !== undefined) options.detail = fields.detail;
  if (fields.hint !== undefined) options.hint = fields.hint;
  return new TesseraError(code, fields.message, options);
}

/** Decodes an ErrorResponse payload straight into a TesseraError. */
export function decodeError(payload: Uint8Array): TesseraError {
  return errorFromFields(decodeErrorFields(payload));
}

/** One column of a decoded RowDescription. */
export interface DecodedField {
  /** Column name. */
  name: string;
  /** OID of the source table, or 0. */
  tableOid: number;
  /** Attribute number of the source column, or 0. */
  columnAttr: number;
  /** Data type OID. */
  typeOid: number;
  /** Data type size (negative: variable). */
  typeSize: number;
  /** Type modifier. */
  typeModifier: number;
  /** 0 text, 1 binary. */
  format: number;
}

/** Decodes a RowDescription payload. */
export function decodeRowDescription(payload: Uint8Array): DecodedField[] {
  const r = new PayloadReader(payload, "RowDescription");
  const count = r.uint16();
  const fields: DecodedField[] = [];
  for (let i = 0; i < count; i++) {
    fields.push({
      name: r.cstring(),
      tableOid: r.uint32(),
      columnAttr: r.int16(),
      typeOid: r.uint32(),
      typeSize: r.int16(),
      typeModifier: r.int32(),
      format: r.int16(),
    });
  }
  r.expectEnd();
  return fields;
}

/** Decodes a DataRow payload into views of each value (`null` for SQL NULL). */
export function decodeDataRow(payload: Uint8Array): (Uint8Array | null)[] {
  const r = new PayloadReader(payload, "DataRow");
  const count = r.uint16();
  const values: (Uint8Array | null)[] = new Array(count);
  for (let i = 0; i < count; i++) values[i] = r.lengthPrefixed();
  r.expectEnd();
  return values;
}

/** Decodes a DataRow payload of text values into strings (`null` for SQL NULL). */
export function decodeDataRowText(payload: Uint8Array): (string | null)[] {
  return decodeDataRow(payload).map((v) => (v === null ? null : decoder.decode(v)));
}

/** Decodes a CommandComplete payload: the command tag, e.g. `INSERT 0 1`. */
export function decodeCommandComplete(payload: Uint8Array): string {
  const r = new PayloadReader(payload, "CommandComplete");
  const tag = r.cstring();
  r.expectEnd();
  return tag;
}

/** A command tag split into the command and its row count, when it has one. */
export interface CommandTag {
  /** Command name, e.g. `INSERT`, `SELECT`, `CREATE TABLE`. */
  command: string;
  /** Rows affected or returned, for the commands that report it. */
  rows?: number;
}

/** Splits a command tag: `INSERT 0 3` → `{command: "INSERT", rows: 3}`. */
export function parseCommandTag(tag: string): CommandTag {
  const m = /^([A-Z ]*[A-Z])(?: \d+)? (\d+)$/.exec(tag);
  if (m === null) return { command: tag };
  return { command: m[1]!, rows: Number(m[2]) };
}

/** Decodes a ParameterStatus payload. */
export function decodeParameterStatus(payload: Uint8Array): { name: string; value: string } {
  const r = new PayloadReader(payload, "ParameterStatus");
  const name = r.cstring();
  const value = r.cstring();
  r.expectEnd();
  return { name, value };
}

/** Decodes a BackendKeyData payload. */
export function decodeBackendKeyData(
  payload: Uint8Array,
): { processId: number; secretKey: number } {
  const r = new PayloadReader(payload, "BackendKeyData");
  const processId = r.int32();
  const secretKey = r.int32();
  r.expectEnd();
  return { processId, secretKey };
}

/** Decodes a ReadyForQuery payload: the transaction status `I`, `T` or `E`. */
export function decodeReadyForQuery(payload: Uint8Array): TransactionStatus {
  const r = new PayloadReader(payload, "ReadyForQuery");
  const status = String.fromCharCode(r.byte());
  r.expectEnd();
  if (status !== "I" && status !== "T" && status !== "E") {
    throw r.error(`unknown transaction status '${status}'`);
  }
  return status;
}

/** A decoded Authentication message. */
export type AuthenticationMessage =
  | { kind: "ok" }
  | { kind: "cleartextPassword" }
  | { kind: "md5Password"; salt: Uint8Array }
  | { kind: "sasl"; mechanisms: string[] }
  | { kind: "saslContinue"; data: Uint8Array }
  | { kind: "saslFinal"; data: Uint8Array }
  | { kind: "other"; code: number; data: Uint8Array };

/** Decodes an Authentication payload by its sub-code. */
export function decodeAuthentication(payload: Uint8Array): AuthenticationMessage {
  const r = new PayloadReader(payload, "Authentication");
  const code = r.int32();
  let out: AuthenticationMessage;
  switch (code) {
    case AuthCode.ok:
      out = { kind: "ok" };
      break;
    case AuthCode.cleartextPassword:
      out = { kind: "cleartextPassword" };
      break;
    case AuthCode.md5Password:
      out = { kind: "md5Password", salt: r.bytes(4) };
      break;
    case AuthCode.sasl: {
      const mechanisms: string[] = [];
      for (let m = r.cstring(); m !== ""; m = r.cstring()) mechanisms.push(m);
      out = { kind: "sasl", mechanisms };
      break;
    }
    case AuthCode.saslContinue:
      out = { kind: "saslContinue", data: r.rest() };
      break;
    case AuthCode.saslFinal:
      out = { kind: "saslFinal", data: r.rest() };
      break;
    default:
      out = { kind: "other", code, data: r.rest() };
  }
  r.expectEnd();
  return out;
}

/** Decodes a NotificationResponse payload. */
export function decodeNotification(
  payload: Uint8Array,
): { processId: number; channel: string; payload: string } {
  const r = new PayloadReader(payload, "NotificationResponse");
  const processId = r.int32();
  const channel = r.cstring();
  const text = r.cstring();
  r.expectEnd();
  return { processId, channel, payload: text };
}

/** Decodes a ParameterDescription payload: the parameter type OIDs. */
export function decodeParameterDescription(payload: Uint8Array): number[] {
  const r = new PayloadReader(payload, "ParameterDescription");
  const count = r.uint16();
  const oids: number[] = [];
  for (let i = 0; i < count; i++) oids.push(r.uint32());
  r.expectEnd();
  return oids;
}

/** Decodes a NegotiateProtocolVersion payload. */
export function decodeNegotiateProtocolVersion(
  payload: Uint8Array,
): { newestMinor: number; unrecognized: string[] } {
  const r = new PayloadReader(payload, "NegotiateProtocolVersion");
  const newestMinor = r.int32();
  const count = r.int32();
  if (count < 0) throw r.error(`negative option count ${count}`);
  const unrecognized: string[] = [];
  for (let i = 0; i < count; i++) unrecognized.push(r.cstring());
  r.expectEnd();
  return { newestMinor, unrecognized };
}

/** Decodes a CopyInResponse, CopyOutResponse or CopyBothResponse payload. */
export function decodeCopyResponse(
  payload: Uint8Array,
): { format: number; columnFormats: number[] } {
  const r = new PayloadReader(payload, "CopyResponse");
  const format = r.byte();
  const count = r.uint16();
  const columnFormats: number[] = [];
  for (let i = 0; i < count; i++) columnFormats.push(r.int16());
  r.expectEnd();
  return { format, columnFormats };
}

// ---- frontend messages ----

/** Decodes a Query payload: the SQL string. */
export function decodeQuery(payload: Uint8Array): string {
  const r = new PayloadReader(payload, "Query");
  const sql = r.cstring();
  r.expectEnd();
  return sql;
}

/** A decoded Parse message. */
export interface ParseMessage {
  /** Prepared statement name (`""`: the unnamed statement). */
  name: string;
  /** The SQL text. */
  query: string;
  /** Parameter type OIDs the client specified (0: unspecified). */
  paramTypes: number[];
}

/** Decodes a Parse payload. */
export function decodeParse(payload: Uint8Array): ParseMessage {
  const r = new PayloadReader(payload, "Parse");
  const name = r.cstring();
  const query = r.cstring();
  const count = r.uint16();
  const paramTypes: number[] = [];
  for (let i = 0; i < count; i++) paramTypes.push(r.uint32());
  r.expectEnd();
  return { name, query, paramTypes };
}

/** A decoded Bind message; parameter values are views into the payload. */
export interface BindMessage {
  /** Destination portal (`""`: the unnamed portal). */
  portal: string;
  /** Source prepared statement. */
  statement: string;
  /** Parameter format codes: none (all text), one (for all) or one per parameter. */
  paramFormats: number[];
  /** Parameter values (`null` for SQL NULL). */
  params: (Uint8Array | null)[];
  /** Result column format codes, same convention as `paramFormats`. */
  resultFormats: number[];
}

/** Decodes a Bind payload. */
export function decodeBind(payload: Uint8Array): BindMessage {
  const r = new PayloadReader(payload, "Bind");
  const portal = r.cstring();
  const statement = r.cstring();
  const paramFormats: number[] = [];
  for (let n = r.uint16(); n > 0; n--) paramFormats.push(r.int16());
  const params: (Uint8Array | null)[] = [];
  for (let n = r.uint16(); n > 0; n--) params.push(r.lengthPrefixed());
  const resultFormats: number[] = [];
  for (let n = r.uint16(); n > 0; n--) resultFormats.push(r.int16());
  r.expectEnd();
  return { portal, statement, paramFormats, params, resultFormats };
}

/** A decoded Describe or Close message. */
export interface TargetMessage {
  /** `S` a prepared statement, `P` a portal. */
  target: DescribeTarget;
  /** Its name (`""`: the unnamed one). */
  name: string;
}

function decodeTarget(payload: Uint8Array, what: string): TargetMessage {
  const r = new PayloadReader(payload, what);
  const target = String.fromCharCode(r.byte());
  if (target !== "S" && target !== "P") throw r.error(`unknown target type '${target}'`);
  const name = r.cstring();
  r.expectEnd();
  return { target, name };
}

/** Decodes a Describe payload. */
export function decodeDescribe(payload: Uint8Array): TargetMessage {
  return decodeTarget(payload, "Describe");
}

/** Decodes a Close payload. */
export function decodeClose(payload: Uint8Array): TargetMessage {
  return decodeTarget(payload, "Close");
}

/** Decodes an Execute payload. */
export function decodeExecute(payload: Uint8Array): { portal: string; maxRows: number } {
  const r = new PayloadReader(payload, "Execute");
  const portal = r.cstring();
  const maxRows = r.int32();
  r.expectEnd();
  return { portal, maxRows };
}

/** Decodes a PasswordMessage payload (cleartext or `md5…` hashed password). */
export function decodePasswordMessage(payload: Uint8Array): string {
  const r = new PayloadReader(payload, "PasswordMessage");
  const password = r.cstring();
  r.expectEnd();
  return password;
}

/** Decodes a SASLInitialResponse payload; `data` is `null` when the client sent none. */
export function decodeSaslInitialResponse(
  payload: Uint8Array,
): { mechanism: string; data: Uint8Array | null } {
  const r = new PayloadReader(payload, "SASLInitialResponse");
  const mechanism = r.cstring();
  const data = r.lengthPrefixed();
  r.expectEnd();
  return { mechanism, data };
}

/** Decodes a CopyFail payload: the client's reason. */
export function decodeCopyFail(payload: Uint8Array): string {
  const r = new PayloadReader(payload, "CopyFail");
  const message = r.cstring();
  r.expectEnd();
  return message;
}
