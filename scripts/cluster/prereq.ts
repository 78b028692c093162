/**
 * Prerequisites of a local cluster: Postgres server binaries and etcd (found with shared/pgbin),
 * and, when running as root, a cluster folder the Postgres OS user can reach.
 *
 * @module
 */

import { findEtcd, findPgBindir } from "../../shared/pgbin/mod.ts";

/** A missing program and the Debian package that provides it. */
export interface Missing {
  /** What is missing. */
  what: string;
  /** Debian package to install. */
  debianPackage: string;
  /** Why it was not found. */
  reason: string;
}

/** What is missing now (empty when everything is there). */
export function missingPrerequisites(): Missing[] {
  const missing: Missing[] = [];
  try {
    findPgBindir();
  } catch (err) {
    missing.push({
      what: "PostgreSQL server binaries",
      debianPackage: "postgresql-15",
      reason: (err as Error).message,
    });
  }
  try {
    findEtcd();
  } catch (err) {
    missing.push({ what: "etcd", debianPackage: "etcd-server", reason: (err as Error).message });
  }
  return missing;
}

function hasAptGet(): boolean {
  for (const dir of ["/usr/bin", "/bin", "/usr/sbin"]) {
    try {
      if (Deno.statSync(`${dir}/apt-get`).isFile) return true;
    } catch {
      // look further
    }
  }
  return false;
}

async function aptGet(args: string[]): Promise<boolean> {
  // apt's output goes to standard error: standard output is for the connection string.
  const out = await new Deno.Command("/bin/sh", {
    args: ["-c", 'exec apt-get "$@" 1>&2', "apt-get", ...args],
    env: { DEBIAN_FRONTEND: "noninteractive" },
    stdin: "null",
    stdout: "inherit",
    stderr: "inherit",
  }).output();
  return out.success;
}

/**
 * Makes sure Postgres and etcd are installed. When they are not: prints what to install, and when
 * running as root on Debian (apt-get present) says so and installs them with `apt-get install -y`.
 * Resolves whether everything is there afterwards.
 */
export async function ensurePrerequisites(print: (line: string) => void): Promise<boolean> {
  let missing = missingPrerequisites();
  if (missing.length === 0) return true;
  const packages = missing.map((m) => m.debianPackage);
  for (const m of missing) print(`missing: ${m.what} (${m.reason})`);
  if (Deno.uid() === 0 && hasAptGet()) {
    print(`installing them now, as root: apt-get install -y ${packages.join(" ")}`);
    if (!await aptGet(["install", "-y", ...packages])) {
      print("apt-get install failed; running apt-get update and trying again");
      await aptGet(["update"]);
      await aptGet(["install", "-y", ...packages]);
    }
    missing = missingPrerequisites();
    if (missing.length === 0) return true;
    for (const m of missing) print(`still missing: ${m.what} (${m.reason})`);
  }
  print(
    `install them first (Debian): apt-get install -y ${packages.join(" ")}` +
      " (or set PG_BINDIR / ETCD_BIN to where they are)",
  );
  return false;
}

/**
 * When this process is root, Postgres runs as `osUser` (pgctld's default, `postgres`): every
 * parent of `dir` must be traversable by that user. Returns why not, or undefined when it is (or
 * when not root, or the user does not exist: pgctld then reports it).
 */
export function traversalProblem(dir: string, osUser = "postgres"): string | undefined {
  if (Deno.uid() !== 0) return undefined;
  let uid: number | undefined;
  let gid: number | undefined;
  try {
    for (const line of Deno.readTextFileSync("/etc/passwd").split("\n")) {
      const parts = line.split(":");
      if (parts[0] === osUser && parts.length >= 7) {
        uid = Number(parts[2]);
        gid = Number(parts[3]);
      }
    }
  } catch {
    return undefined;
  }
  if (uid === undefined || gid === undefined) return undefined;
  let current = "";
  for (const part of dir.split("/").filter((p) => p !== "")) {
    current += `/${part}`;
    let info: Deno.FileInfo;
    try {
      info = Deno.statSync(current);
    } catch {
      return undefined; // created by us with mode 0755
    }
    if (current === dir) return undefined; // made 0755 by the supervisor
    const mode = info.mode ?? 0o755;
    const ok = info.uid === uid
      ? (mode & 0o100) !== 0
      : info.gid === gid
      ? (mode & 0o010) !== 0
      : (mode & 0o001) !== 0;
    if (!ok) {
      return `Postgres runs as OS user '${osUser}', which cannot reach '${dir}': '${current}' has ` +
        `mode ${
          (mode & 0o777).toString(8).padStart(4, "0")
        } (choose another --dir, or chmod o+x '${current}')`;
    }
  }
  return undefined;
}
