/**
 * Finds the Postgres server binaries and etcd on this machine, with a clear message naming the
 * Debian packages to install when they are missing.
 *
 * @module
 */

import { SqlState, TesseraError } from "../errors/mod.ts";

/** Where to look, beyond the defaults. */
export interface FindOptions {
  /** An explicit directory (from `--pg-bindir`); when given, it must hold the binaries. */
  bindir?: string | undefined;
  /** Environment to read `PG_BINDIR` / `ETCD_BIN` and `PATH` from. */
  env?: Record<string, string | undefined>;
  /** Root that holds `<major>/bin` folders; `/usr/lib/postgresql` when not given. */
  debianRoot?: string;
}

/** Binaries that a Postgres bin directory must contain for Tessera. */
export const REQUIRED_PG_BINARIES = ["postgres", "pg_ctl", "initdb", "pg_controldata"] as const;

function isExecutable(path: string): boolean {
  try {
    const info = Deno.statSync(path);
    return info.isFile && ((info.mode ?? 0o111) & 0o111) !== 0;
  } catch {
    return false;
  }
}

function hasPgBinaries(dir: string): boolean {
  return REQUIRED_PG_BINARIES.every((name) => isExecutable(`${dir}/${name}`));
}

function pathDirs(env: Record<string, string | undefined>): string[] {
  return (env.PATH ?? "").split(":").filter((d) => d !== "");
}

/** Debian-style `<root>/<major>/bin` directories, newest major version first. */
export function debianBindirs(root = "/usr/lib/postgresql"): string[] {
  let entries: string[];
  try {
    entries = [...Deno.readDirSync(root)].filter((e) => e.isDirectory).map((e) => e.name);
  } catch {
    return [];
  }
  return entries
    .filter((name) => /^\d+(\.\d+)?$/.test(name))
    .sort((a, b) => Number(b) - Number(a))
    .map((name) => `${root}/${name}/bin`);
}

/**
 * Returns the directory holding `postgres`, `pg_ctl`, `initdb` and `pg_controldata`.
 *
 * Order: `options.bindir` (`--pg-bindir`), `PG_BINDIR`, each `PATH` entry, then
 * `/usr/lib/postgresql/<major>/bin`, newest first. An explicit directory that lacks the binaries
 * is an error rather than being skipped.
 */
export function findPgBindir(options: FindOptions = {}): string {
  const env = options.env ?? Deno.env.toObject();
  const explicit = options.bindir ?? env.PG_BINDIR;
  if (explicit !== undefined && explicit !== "") {
    if (hasPgBinaries(explicit)) return explicit;
    throw new TesseraError(
      SqlState.undefinedFile,
      `Postgres binaries not found in '${explicit}': need ${REQUIRED_PG_BINARIES.join(", ")}`,
      { hint: "point --pg-bindir (or PG_BINDIR) at the folder that holds pg_ctl and postgres" },
    );
  }
  for (const dir of [...pathDirs(env), ...debianBindirs(options.debianRoot)]) {
    if (hasPgBinaries(dir)) return dir;
  }
  throw new TesseraError(
    SqlState.undefinedFile,
    "Postgres server binaries not found (looked in PG_BINDIR, PATH and /usr/lib/postgresql/*/bin)",
    { hint: "install them: apt-get install postgresql-15 (or pass --pg-bindir DIR)" },
  );
}

/** Runs `<bindir>/postgres --version` and returns the version, e.g. `15.18`. */
export async function pgVersion(bindir: string): Promise<string> {
  const out = await new Deno.Command(`${bindir}/postgres`, { args: ["--version"] }).output();
  const text = new TextDecoder().decode(out.stdout).trim();
  const match = /\(PostgreSQL\)\s+(\d+(?:\.\d+)*)/.exec(text);
  if (!out.success || match === null) {
    throw new TesseraError(SqlState.systemError, `could not read the Postgres version: '${text}'`);
  }
  return match[1]!;
}

/** Returns the path of the `etcd` binary: `ETCD_BIN`, then `PATH`, then `/usr/bin/etcd`. */
export function findEtcd(options: Pick<FindOptions, "env"> = {}): string {
  const env = options.env ?? Deno.env.toObject();
  const explicit = env.ETCD_BIN;
  if (explicit !== undefined && explicit !== "") {
    if (isExecutable(explicit)) return explicit;
    throw new TesseraError(SqlState.undefinedFile, `etcd not found at ETCD_BIN='${explicit}'`, {
      hint: "point ETCD_BIN at the etcd binary, or install it: apt-get install etcd-server",
    });
  }
  for (const dir of [...pathDirs(env), "/usr/bin", "/usr/local/bin"]) {
    if (isExecutable(`${dir}/etcd`)) return `${dir}/etcd`;
  }
  throw new TesseraError(SqlState.undefinedFile, "etcd not found (looked in ETCD_BIN and PATH)", {
    hint: "install it: apt-get install etcd-server",
  });
}
