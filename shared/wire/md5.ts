/**
 * Postgres's legacy MD5 password scheme: `md5` + md5(md5(password + user) + salt), in hex.
 *
 * @module
 */

import { createHash } from "node:crypto";

function md5Hex(...parts: (string | Uint8Array)[]): string {
  const h = createHash("md5");
  for (const p of parts) h.update(p);
  return h.digest("hex");
}

/**
 * The stored form of an MD5 password, as in `pg_authid`: `md5` + md5(password + user).
 */
export function md5StoredPassword(user: string, password: string): string {
  return "md5" + md5Hex(password, user);
}

/**
 * What a client sends in answer to AuthenticationMD5Password: `md5` + md5(hex + salt), where
 * hex is md5(password + user).
 */
export function md5PasswordResponse(user: string, password: string, salt: Uint8Array): string {
  return md5SaltedResponse(md5StoredPassword(user, password), salt);
}

/**
 * The expected answer to AuthenticationMD5Password computed from the stored form (`md5…`), as
 * a server verifying a client does.
 */
export function md5SaltedResponse(stored: string, salt: Uint8Array): string {
  return "md5" + md5Hex(stored.slice(3), salt);
}
