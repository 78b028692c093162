/**
 * Unprivileged OS users for running Postgres when pgctld runs as root.
 *
 * @module
 */

import { dirname } from "node:path";
import { SqlState, TesseraError } from "../../shared/errors/mod.ts";

/** An OS account that Postgres runs as. */
export interface OsUser {
  /** Login name, e.g. `postgres`. */
  name: string;
  /** Numeric user id. */
  uid: number;
  /** Numeric primary group id. */
  gid: number;
  /** Home directory. */
  home: string;
}

/** Looks `name` up in `/etc/passwd` (or `passwdText` when given). */
export function lookupOsUser(name: string, passwdText?: string): OsUser {
  let text = passwdText;
  if (text === undefined) {
    try {
      text = Deno.readTextFileSync("/etc/passwd");
    } catch (err) {
      throw new TesseraError(
        SqlState.systemError,
        `could not read /etc/passwd to find user '${name}'`,
        {
          cause: err,
        },
      );
    }
  }
  for (const line of text.split("\n")) {
    const parts = line.split(":");
    if (parts[0] !== name || parts.length < 7) continue;
    const uid = Number(parts[2]);
    const gid = Number(parts[3]);
    if (!Number.isInteger(uid) || !Number.isInteger(gid)) break;
    return { name, uid, gid, home: parts[5] ?? "/" };
  }
  throw new TesseraError(SqlState.undefinedObject, `OS user '${name}' does not exist`, {
    hint: "Postgres refuses to run as root: create the user (apt-get install postgresql-15 " +
      "creates 'postgres') or pass --os-user NAME",
  });
}

/**
 * Checks that `user` can traverse every ancestor of `path`, so that a directory created for it
 * below them is reachable. Throws a clear error naming the first blocking directory.
 */
export function assertTraversable(path: string, user: OsUser): void {
  const parts = path.split("/").filter((p) => p !== "");
  let current = "";
  for (const part of parts.slice(0, -1)) {
    current += `/${part}`;
    let info: Deno.FileInfo;
    try {
      info = Deno.statSync(current);
    } catch {
      return; // will be created by us, traversable by construction
    }
    const mode = info.mode ?? 0o755;
    const ok = info.uid === user.uid
      ? (mode & 0o100) !== 0
      : info.gid === user.gid
      ? (mode & 0o010) !== 0
      : (mode & 0o001) !== 0;
    if (!ok) {
      throw new TesseraError(
        SqlState.insufficientPrivilege,
        `OS user '${user.name}' cannot reach '${path}': '${current}' has mode ${
          (mode & 0o777).toString(8).padStart(4, "0")
        }`,
        { hint: `choose a directory that '${user.name}' can traverse, or chmod o+x '${current}'` },
      );
    }
  }
}

/**
 * Creates `path` with `mode` and gives it to `user` when given. Missing parents are created with
 * mode 0755, so that `user` can traverse them (a recursive mkdir would give them `mode` too).
 */
export function makeOwnedDir(path: string, mode: number, user: OsUser | undefined): void {
  Deno.mkdirSync(dirname(path), { recursive: true, mode: 0o755 });
  Deno.mkdirSync(path, { recursive: true, mode });
  Deno.chmodSync(path, mode);
  if (user !== undefined) Deno.chownSync(path, user.uid, user.gid);
}
