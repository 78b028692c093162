/**
 * Running real psql from end-to-end tests.
 *
 * @module
 */

import { findPgBindir } from "../../shared/pgbin/mod.ts";

/** What psql printed and how it exited. */
export interface PsqlResult {
  /** Exit code (0 ok, 2 connection failure, 3 script error). */
  code: number;
  /** Standard output, trimmed (unaligned, tuples only). */
  stdout: string;
  /** Standard error, trimmed. */
  stderr: string;
}

/**
 * Runs `psql -X -At <connection...> -c sql`. `connection` is a conninfo string, or a TCP port and
 * database on 127.0.0.1 as user `postgres`.
 */
export async function runPsql(
  connection: string | { port: number; database: string },
  sql: string,
  env: Record<string, string> = {},
): Promise<PsqlResult> {
  const target = typeof connection === "string" ? [connection] : [
    "-h",
    "127.0.0.1",
    "-p",
    String(connection.port),
    "-U",
    "postgres",
    "-d",
    connection.database,
  ];
  const out = await new Deno.Command(`${findPgBindir()}/psql`, {
    args: ["-X", "-At", ...target, "-c", sql],
    env: { PGCONNECT_TIMEOUT: "10", ...env },
    stdout: "piped",
    stderr: "piped",
  }).output();
  const decoder = new TextDecoder();
  return {
    code: out.code,
    stdout: decoder.decode(out.stdout).trim(),
    stderr: decoder.decode(out.stderr).trim(),
  };
}
