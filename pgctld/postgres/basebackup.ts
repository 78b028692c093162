/**
 * How pgctld runs `pg_basebackup` for a new replica, and what its failures mean to a caller.
 *
 * @module
 */

import { SqlState, type SqlStateCode, TesseraError } from "../../shared/errors/mod.ts";
import type { ReplicationSource } from "./conninfo.ts";

/** Arguments of `pg_basebackup` that copy `source` into `dataDir`, streaming WAL meanwhile. */
export function basebackupArgs(source: ReplicationSource, user: string, dataDir: string): string[] {
  return [
    "-h",
    source.host,
    "-p",
    String(source.port),
    "-U",
    user,
    "-D",
    dataDir,
    "-X",
    "stream",
    "-c",
    "fast",
    "--no-password",
  ];
}

const AUTH_FAILURE = [
  /password authentication failed/i,
  /no password supplied/i,
  /SCRAM authentication requires/i,
  /role "[^"]*" does not exist/i,
];
const AUTH_REJECTED = [/pg_hba\.conf rejects/i, /no pg_hba\.conf entry/i];
const UNREACHABLE = [
  /Connection refused/i,
  /could not translate host name/i,
  /timeout expired/i,
  /No route to host/i,
  /Network is unreachable/i,
  /could not connect to server/i,
  /server closed the connection unexpectedly/i,
];

/**
 * The SQLSTATE for a failed `pg_basebackup`, from its stderr: 28P01 for a wrong or missing
 * password, 28000 for a connection `pg_hba.conf` refuses, 08006 for a primary that cannot be
 * reached, 58000 otherwise.
 */
export function basebackupFailureCode(stderr: string): SqlStateCode {
  if (AUTH_FAILURE.some((p) => p.test(stderr))) return SqlState.invalidPassword;
  if (AUTH_REJECTED.some((p) => p.test(stderr))) return SqlState.invalidAuthorizationSpecification;
  if (UNREACHABLE.some((p) => p.test(stderr))) return SqlState.connectionFailure;
  return SqlState.systemError;
}

/** The error returned for a failed base backup, with the tail of pg_basebackup's stderr. */
export function basebackupError(
  source: ReplicationSource,
  result: { code: number; stderr: string; timedOut: boolean },
): TesseraError {
  const tail = result.stderr.trim().split("\n").slice(-15).join("\n");
  if (result.timedOut) {
    return new TesseraError(
      SqlState.systemError,
      `base backup from ${source.host}:${source.port} did not finish in time`,
      { detail: tail, hint: "raise wait_seconds" },
    );
  }
  return new TesseraError(
    basebackupFailureCode(result.stderr),
    `base backup from ${source.host}:${source.port} failed (pg_basebackup exit code ${result.code})`,
    { detail: tail },
  );
}
