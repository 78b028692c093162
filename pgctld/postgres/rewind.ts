/**
 * How pgctld runs `pg_rewind` to turn a former primary into a replica of a new primary, and what
 * its failures mean to a caller.
 *
 * @module
 */

import { SqlState, TesseraError } from "../../shared/errors/mod.ts";
import { basebackupFailureCode } from "./basebackup.ts";
import { renderConninfo, type ReplicationSource } from "./conninfo.ts";

/** Configuration files `pg_rewind` copies from the source that belong to this instance instead. */
export const INSTANCE_CONFIG_FILES: readonly string[] = [
  "postgresql.conf",
  "postgresql.auto.conf",
  "pg_hba.conf",
  "pg_ident.conf",
  "tessera.conf",
];

/**
 * The libpq connection string `pg_rewind` (and the CHECKPOINT before it) uses: a normal,
 * non-replication login to database `postgres` as the replication role.
 */
export function rewindSourceConninfo(
  source: ReplicationSource,
  user: string,
  passfile: string | undefined,
): string {
  return renderConninfo({
    host: source.host,
    port: String(source.port),
    user,
    dbname: "postgres",
    passfile: passfile ?? "",
    connect_timeout: "10",
    application_name: "tessera_pgctld_rewind",
  });
}

/** Arguments of `pg_rewind` that rewind `dataDir` to the server at `conninfo`. */
export function rewindArgs(dataDir: string, conninfo: string): string[] {
  return ["--target-pgdata", dataDir, "--source-server", conninfo, "--progress"];
}

/**
 * Whether `pg_rewind`'s stderr (with `--progress`) shows that it started changing the target's
 * files. Before that point a failed run leaves the data directory as it was, apart from the crash
 * recovery `pg_rewind` runs itself on a target that was not shut down cleanly.
 */
export function rewindChangedTarget(stderr: string): boolean {
  return /need to copy|creating backup label|syncing target data directory|Done!/.test(stderr);
}

/** Whether `pg_rewind` found nothing to do (target already on the source's timeline). */
export function rewindNotNeeded(stderr: string): boolean {
  return /no rewind required/.test(stderr);
}

function tail(text: string, lines = 15): string {
  // --progress redraws its counter with carriage returns: keep only the last state of a line.
  return text.split("\n").map((line) => line.split("\r").filter((s) => s !== "").at(-1) ?? "")
    .filter((line) => line.trim() !== "").slice(-lines).join("\n");
}

/**
 * The error returned for a failed `CHECKPOINT` on the source, which `pg_rewind` needs so that a
 * just-promoted source's control file shows its new timeline.
 */
export function checkpointError(
  source: ReplicationSource,
  user: string,
  result: { code: number; stderr: string; timedOut: boolean },
): TesseraError {
  const detail = tail(result.stderr);
  if (/pg_checkpoint|must be superuser/i.test(result.stderr)) {
    return new TesseraError(
      SqlState.insufficientPrivilege,
      `role '${user}' may not run CHECKPOINT on ${source.host}:${source.port}`,
      { detail, hint: `on the source, GRANT pg_checkpoint TO "${user}"` },
    );
  }
  return new TesseraError(
    result.timedOut ? SqlState.connectionFailure : basebackupFailureCode(result.stderr),
    `CHECKPOINT on ${source.host}:${source.port} before the rewind failed`,
    { detail },
  );
}

/**
 * The error returned for a failed `pg_rewind`, with the tail of its stderr: 08006 when the source
 * cannot be reached, 28P01 / 28000 when it refuses the login, 58000 otherwise (WAL that is gone,
 * timelines that cannot be rewound, a time-out). The hint tells whether the data directory was
 * left as it was or must be rebuilt.
 */
export function rewindError(
  source: ReplicationSource,
  result: { code: number; stderr: string; timedOut: boolean },
): TesseraError {
  const changed = rewindChangedTarget(result.stderr);
  const hint = changed
    ? "pg_rewind had started changing the data directory, which cannot be used any more: " +
      "rebuild it with InitReplica and replace_existing"
    : "the data directory was left as it was; rebuild it with InitReplica and replace_existing";
  const detail = tail(result.stderr);
  if (result.timedOut) {
    return new TesseraError(
      SqlState.systemError,
      `pg_rewind from ${source.host}:${source.port} did not finish in time`,
      { detail, hint: changed ? hint : "raise wait_seconds" },
    );
  }
  return new TesseraError(
    basebackupFailureCode(result.stderr),
    `pg_rewind from ${source.host}:${source.port} failed (exit code ${result.code})`,
    { detail, hint },
  );
}
