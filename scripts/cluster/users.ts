/**
 * Users of the cluster file as topo `users/<name>` records: SCRAM-SHA-256 verifiers only, never
 * the password. A stored verifier that already matches the password is kept, so that starting the
 * cluster again does not rewrite every user with a new salt.
 *
 * @module
 */

import type { UserRecord } from "../../shared/topo/mod.ts";
import { createScramVerifier, parseScramVerifier } from "../../shared/wire/mod.ts";

/**
 * The verifier to store for `password`: `existing` when it was made from the same password,
 * otherwise a new one (4096 iterations, 16 random salt bytes, as Postgres).
 */
export async function verifierFor(password: string, existing?: string): Promise<string> {
  if (existing !== undefined) {
    try {
      const v = parseScramVerifier(existing);
      const again = await createScramVerifier(password, { salt: v.salt, iterations: v.iterations });
      if (again === existing) return existing;
    } catch {
      // not a verifier we can read: replace it
    }
  }
  return await createScramVerifier(password);
}

/** The topo record of a user, keeping `existing`'s verifier when it still matches. */
export async function userRecord(
  user: { name: string; password: string },
  existing?: UserRecord,
): Promise<UserRecord> {
  const scramVerifier = await verifierFor(user.password, existing?.scramVerifier);
  return {
    name: user.name,
    scramVerifier,
    ...(existing?.roles !== undefined ? { roles: existing.roles } : {}),
  };
}
