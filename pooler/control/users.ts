/**
 * Who may connect to the pooler and how: trust, or SCRAM-SHA-256 against verifiers from a users
 * file (standalone), from Postgres itself (`--auth-query`) or from topo (in a cluster). Passwords
 * are never stored, only verifiers.
 *
 * @module
 */

import { z } from "zod";
import type { AuthRule, FrontendAuth } from "../../shared/frontend/mod.ts";
import { SqlState, TesseraError } from "../../shared/errors/mod.ts";
import { isScramVerifier } from "../../shared/wire/mod.ts";
import { quoteLiteral } from "../../shared/pooling/mod.ts";

const usersFileSchema = z.object({
  users: z.array(z.object({
    name: z.string().min(1),
    scramVerifier: z.string().refine(isScramVerifier, "must be a SCRAM-SHA-256 verifier"),
  })),
});

/** Verifiers by user name. */
export type VerifierLookup = (user: string) => string | undefined | Promise<string | undefined>;

/** Reads a users file (`{"users":[{"name":..,"scramVerifier":..}]}`) into a lookup table. */
export async function loadUsersFile(path: string): Promise<Map<string, string>> {
  let text: string;
  try {
    text = await Deno.readTextFile(path);
  } catch (err) {
    throw new TesseraError(SqlState.configFileError, `cannot read users file '${path}'`, {
      cause: err,
    });
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (err) {
    throw new TesseraError(
      SqlState.configFileError,
      `users file '${path}' is not JSON: ${(err as Error).message}`,
    );
  }
  const parsed = usersFileSchema.safeParse(json);
  if (!parsed.success) {
    const issue = parsed.error.issues[0]!;
    throw new TesseraError(
      SqlState.configFileError,
      `users file '${path}': ${issue.path.join(".")}: ${issue.message}`,
    );
  }
  return new Map(parsed.data.users.map((u) => [u.name, u.scramVerifier]));
}

/** Runs one SQL statement on a control connection to Postgres, returning its rows as text. */
export type ControlQuery = (sql: string) => Promise<(string | null)[][]>;

/**
 * Looks a user's SCRAM verifier up in Postgres itself with `sql` (PgBouncer's `auth_query`: its
 * second column is the verifier, `$1` stands for the user name, sent as a quoted literal), so
 * that roles created with `CREATE ROLE ... PASSWORD` log in through the pooler as they would into
 * Postgres. A role without a SCRAM verifier (none, or MD5) is unknown here. Throws TesseraError
 * 08006 when Postgres cannot answer, so the client is told why.
 */
export function authQueryLookup(
  sql: string,
  query: ControlQuery,
  onNotScram: (user: string) => void = () => {},
): (user: string) => Promise<string | undefined> {
  return async (user) => {
    const text = sql.replaceAll("$1", quoteLiteral(user));
    let rows: (string | null)[][];
    try {
      rows = await query(text);
    } catch (err) {
      throw new TesseraError(
        SqlState.connectionFailure,
        `could not look up user "${user}" in Postgres: ${TesseraError.from(err).message}`,
        { severity: "FATAL", cause: err },
      );
    }
    const verifier = rows[0]?.[1] ?? null;
    if (verifier === null) return undefined;
    if (!isScramVerifier(verifier)) {
      onNotScram(user);
      return undefined;
    }
    return verifier;
  };
}

/**
 * The pooler's client authentication. Local Unix-socket clients are trusted (they are on the
 * same host, like Postgres's own `local ... trust`); TCP clients are trusted in `trust` mode and
 * otherwise must prove a password against the user's SCRAM verifier.
 */
export function poolerAuth(
  mode: "trust" | "scram-sha-256",
  verifiers: VerifierLookup,
): FrontendAuth {
  return {
    async lookup(user, _database, transport): Promise<AuthRule | undefined> {
      if (mode === "trust" || transport === "unix") return { method: "trust" };
      const verifier = await verifiers(user);
      if (verifier === undefined) return undefined;
      return { method: "scram-sha-256", verifier };
    },
  };
}
