/**
 * Mapping between Tessera's SQLSTATE errors and Connect RPC errors, both ways.
 *
 * A {@linkcode TesseraError} thrown by a service method travels as a `ConnectError` whose code
 * is chosen from the SQLSTATE ({@linkcode codeForSqlState}) and whose metadata carries the
 * SQLSTATE, severity, detail and hint. The client turns it back into a TesseraError
 * ({@linkcode fromConnectError}) so callers only ever catch TesseraError.
 *
 * @module
 */

import { Code, ConnectError, decodeBinaryHeader, encodeBinaryHeader } from "@connectrpc/connect";
import {
  isSeverity,
  isSqlState,
  SqlState,
  type SqlStateCode,
  TesseraError,
} from "../errors/mod.ts";

/** Metadata key of the SQLSTATE of an RPC error (ASCII, five characters). */
export const SQLSTATE_HEADER = "tessera-sqlstate";
/** Metadata key of the Postgres severity of an RPC error (ASCII). */
export const SEVERITY_HEADER = "tessera-severity";
/**
 * Metadata key of the detail of an RPC error. A binary (`-bin`, base64) header, because HTTP
 * header values cannot hold newlines or arbitrary Unicode; the value is UTF-8.
 */
export const DETAIL_HEADER = "tessera-detail-bin";
/** Metadata key of the hint of an RPC error; binary (`-bin`, base64 of UTF-8) like the detail. */
export const HINT_HEADER = "tessera-hint-bin";

/** Codes whose mapping differs from the one of their class. */
const CODE_BY_SQLSTATE: Readonly<Record<string, Code>> = {
  [SqlState.undefinedObject]: Code.NotFound,
  [SqlState.undefinedFile]: Code.NotFound,
  [SqlState.invalidCatalogName]: Code.NotFound,
  [SqlState.duplicateObject]: Code.AlreadyExists,
  [SqlState.duplicateFile]: Code.AlreadyExists,
  "23505": Code.AlreadyExists, // unique_violation
  [SqlState.insufficientPrivilege]: Code.PermissionDenied,
  [SqlState.featureNotSupported]: Code.Unimplemented,
  [SqlState.queryCanceled]: Code.Canceled,
  [SqlState.serializationFailure]: Code.Aborted,
  "40P01": Code.Aborted, // deadlock_detected
  [SqlState.adminShutdown]: Code.Unavailable,
  [SqlState.crashShutdown]: Code.Unavailable,
  [SqlState.cannotConnectNow]: Code.Unavailable,
};

/** Mapping of a whole SQLSTATE class, used when the code has no entry of its own. */
const CODE_BY_CLASS: Readonly<Record<string, Code>> = {
  "08": Code.Unavailable,
  "22": Code.InvalidArgument,
  "23": Code.FailedPrecondition,
  "25": Code.FailedPrecondition,
  "28": Code.Unauthenticated,
  "42": Code.InvalidArgument,
  "53": Code.ResourceExhausted,
  "55": Code.FailedPrecondition,
};

/**
 * The Connect code that a SQLSTATE travels with.
 *
 * | SQLSTATE | Code |
 * |---|---|
 * | `42704` `58P01` `3D000` | NotFound |
 * | `42710` `58P02` `23505` | AlreadyExists |
 * | `42501` | PermissionDenied |
 * | `0A000` | Unimplemented |
 * | `57014` | Canceled |
 * | `40001` `40P01` | Aborted |
 * | `57P01` `57P02` `57P03`, class `08` | Unavailable |
 * | class `22`, `42` | InvalidArgument |
 * | class `23`, `25`, `55` | FailedPrecondition |
 * | class `28` | Unauthenticated |
 * | class `53` | ResourceExhausted |
 * | anything else | Internal |
 *
 * @example
 * ```ts
 * codeForSqlState("55000"); // Code.FailedPrecondition
 * ```
 */
export function codeForSqlState(code: SqlStateCode): Code {
  return CODE_BY_SQLSTATE[code] ?? CODE_BY_CLASS[code.slice(0, 2)] ?? Code.Internal;
}

/**
 * The SQLSTATE given to an RPC error that arrives without one (from a server that is not
 * Tessera's, from the transport, or a deadline). Roughly the inverse of
 * {@linkcode codeForSqlState}:
 *
 * - DeadlineExceeded and Canceled → `57014` query_canceled (what Postgres raises for
 *   `statement_timeout` and for a cancel request);
 * - Unavailable → `08006` connection_failure (the server could not be reached or went away);
 * - NotFound → `42704`, AlreadyExists → `42710`, InvalidArgument → `22023`,
 *   FailedPrecondition → `55000`, ResourceExhausted → `53000`, Unimplemented → `0A000`,
 *   Unauthenticated → `28000`, PermissionDenied → `42501`, Aborted → `40001`;
 * - everything else → `XX000` internal_error.
 */
export function sqlStateForCode(code: Code): SqlStateCode {
  switch (code) {
    case Code.DeadlineExceeded:
    case Code.Canceled:
      return SqlState.queryCanceled;
    case Code.Unavailable:
      return SqlState.connectionFailure;
    case Code.NotFound:
      return SqlState.undefinedObject;
    case Code.AlreadyExists:
      return SqlState.duplicateObject;
    case Code.InvalidArgument:
      return SqlState.invalidParameterValue;
    case Code.FailedPrecondition:
      return SqlState.objectNotInPrerequisiteState;
    case Code.ResourceExhausted:
      return SqlState.insufficientResources;
    case Code.Unimplemented:
      return SqlState.featureNotSupported;
    case Code.Unauthenticated:
      return SqlState.invalidAuthorizationSpecification;
    case Code.PermissionDenied:
      return SqlState.insufficientPrivilege;
    case Code.Aborted:
      return SqlState.serializationFailure;
    default:
      return SqlState.internalError;
  }
}

/**
 * Converts an error thrown by a service method into the `ConnectError` sent to the client.
 *
 * - a `ConnectError` is returned unchanged;
 * - a {@linkcode TesseraError} gets the code of {@linkcode codeForSqlState}, its message, and
 *   its SQLSTATE, severity, detail and hint in the metadata;
 * - anything else becomes Internal with SQLSTATE `XX000` and the error's message.
 *
 * The original error is kept as `cause` (it is not sent over the wire).
 */
export function toConnectError(err: unknown): ConnectError {
  if (err instanceof ConnectError) return err;
  const tessera = TesseraError.from(err);
  const metadata = new Headers({
    [SQLSTATE_HEADER]: tessera.code,
    [SEVERITY_HEADER]: tessera.severity,
  });
  if (tessera.detail !== undefined) metadata.set(DETAIL_HEADER, encodeBinaryHeader(tessera.detail));
  if (tessera.hint !== undefined) metadata.set(HINT_HEADER, encodeBinaryHeader(tessera.hint));
  return new ConnectError(tessera.message, codeForSqlState(tessera.code), metadata, undefined, err);
}

const utf8 = new TextDecoder();

function binaryHeader(headers: Headers, key: string): string | undefined {
  const value = headers.get(key);
  if (value === null) return undefined;
  try {
    return utf8.decode(decodeBinaryHeader(value));
  } catch {
    return value;
  }
}

const FETCH_FAILURE = /error sending request|fetch failed|network|connect|connection/i;

function isConnectionError(err: unknown): boolean {
  for (let e = err, depth = 0; e !== undefined && depth < 5; depth++) {
    if (e instanceof Deno.errors.ConnectionRefused || e instanceof Deno.errors.ConnectionReset) {
      return true;
    }
    // fetch() rejects with a TypeError when the connection cannot be made or breaks.
    if (e instanceof TypeError && FETCH_FAILURE.test(e.message)) return true;
    e = e instanceof Error ? e.cause : undefined;
  }
  return false;
}

/**
 * Turns an error raised by an RPC call back into a {@linkcode TesseraError}.
 *
 * When the server is Tessera's, the SQLSTATE, severity, detail and hint come from the error's
 * metadata, so the caller sees the error that the service method threw. Otherwise the SQLSTATE
 * comes from {@linkcode sqlStateForCode}; a failed connection (which fetch reports without a
 * code) counts as Unavailable, `08006`. The `ConnectError` is kept as `cause`, so
 * {@linkcode connectCodeOf} can still tell its Connect code. A TesseraError is returned as is.
 */
export function fromConnectError(err: unknown): TesseraError {
  if (err instanceof TesseraError) return err;
  const connectError = ConnectError.from(err);
  const sqlstate = connectError.metadata.get(SQLSTATE_HEADER);
  const severity = connectError.metadata.get(SEVERITY_HEADER);
  const detail = binaryHeader(connectError.metadata, DETAIL_HEADER);
  const hint = binaryHeader(connectError.metadata, HINT_HEADER);
  let code: SqlStateCode;
  if (sqlstate !== null && isSqlState(sqlstate)) {
    code = sqlstate;
  } else if (connectError.code === Code.Unknown && isConnectionError(connectError.cause)) {
    code = SqlState.connectionFailure;
  } else {
    code = sqlStateForCode(connectError.code);
  }
  let message = connectError.rawMessage;
  if (code === SqlState.queryCanceled && connectError.code === Code.DeadlineExceeded) {
    message = `RPC deadline exceeded: ${message}`;
  } else if (code === SqlState.connectionFailure && sqlstate === null) {
    message = `RPC server unavailable: ${message}`;
  }
  return new TesseraError(code, message, {
    ...(severity !== null && isSeverity(severity) ? { severity } : {}),
    ...(detail !== undefined ? { detail } : {}),
    ...(hint !== undefined ? { hint } : {}),
    cause: connectError,
  });
}

/**
 * The Connect code of an RPC error: of `err` itself when it is a `ConnectError`, else of the
 * first `ConnectError` in its `cause` chain (as kept by {@linkcode fromConnectError}).
 * `undefined` when there is none.
 */
export function connectCodeOf(err: unknown): Code | undefined {
  for (let e = err, depth = 0; e !== undefined && depth < 10; depth++) {
    if (e instanceof ConnectError) return e.code;
    e = e instanceof Error ? e.cause : undefined;
  }
  return undefined;
}
