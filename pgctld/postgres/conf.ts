/**
 * Tessera's include file for Postgres settings. `postgresql.conf` gets one include line at init;
 * after that every setting Tessera manages lives in `tessera.conf`, rewritten whole each time.
 *
 * @module
 */

import { SqlState, TesseraError } from "../../shared/errors/mod.ts";

/** Name of the include file inside the data directory. */
export const INCLUDE_FILE = "tessera.conf";

const INCLUDE_LINE = `include_if_exists = '${INCLUDE_FILE}'\t# managed by Tessera pgctld`;
const HEADER = "# Written by Tessera pgctld. Do not edit: changes are overwritten.\n" +
  "# Set values with pgctld's ReloadConfig / Restart RPCs instead.\n";

/** Settings that pgctld owns through its flags and that requests may not change. */
export const RESERVED_SETTINGS: ReadonlySet<string> = new Set([
  "port",
  "unix_socket_directories",
  "listen_addresses",
  "data_directory",
  "config_file",
  "hba_file",
  "ident_file",
  "include",
  "include_if_exists",
  "include_dir",
  "primary_conninfo",
  "password_encryption",
]);

const RESERVED_HINTS: Readonly<Record<string, string>> = {
  primary_conninfo: "use pgctld's InitReplica, SetReplicationSource and Promote RPCs",
  password_encryption: "pgctld keeps it at scram-sha-256",
};

const NAME_PATTERN = /^[a-z_][a-z0-9_]*(\.[a-z_][a-z0-9_]*)?$/;

/** Quotes a setting value for a Postgres configuration file. */
export function quoteValue(value: string): string {
  return `'${value.replaceAll("\\", "\\\\").replaceAll("'", "''")}'`;
}

function unquote(raw: string): string {
  const trimmed = raw.trim();
  if (trimmed.startsWith("'") && trimmed.endsWith("'") && trimmed.length >= 2) {
    return trimmed.slice(1, -1).replaceAll("''", "'").replaceAll("\\\\", "\\");
  }
  return trimmed;
}

/** Throws a 22023 error when `name` may not be set through a request. */
export function validateSettingName(name: string): void {
  const lower = name.toLowerCase();
  if (!NAME_PATTERN.test(lower)) {
    throw new TesseraError(SqlState.invalidParameterValue, `invalid setting name '${name}'`);
  }
  if (RESERVED_SETTINGS.has(lower)) {
    throw new TesseraError(
      SqlState.invalidParameterValue,
      `setting '${name}' is managed by pgctld and cannot be changed by request`,
      {
        hint: RESERVED_HINTS[lower] ??
          "use pgctld's flags (--pg-port, --socket-dir, --pg-listen-address)",
      },
    );
  }
  if (/[\n\r\0]/.test(name)) {
    throw new TesseraError(SqlState.invalidParameterValue, `invalid setting name '${name}'`);
  }
}

/** Renders settings as the include file's text, sorted by name. */
export function renderConf(settings: Record<string, string>): string {
  const lines = Object.keys(settings).sort().map((name) =>
    `${name} = ${quoteValue(settings[name]!)}`
  );
  return HEADER + lines.join("\n") + "\n";
}

/** Parses the include file's text (as written by {@linkcode renderConf}). */
export function parseConf(text: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const line of text.split("\n")) {
    const trimmed = line.trim();
    if (trimmed === "" || trimmed.startsWith("#")) continue;
    const eq = trimmed.indexOf("=");
    if (eq <= 0) continue;
    out[trimmed.slice(0, eq).trim()] = unquote(trimmed.slice(eq + 1));
  }
  return out;
}

/** Reads the include file of `dataDir`; empty when it does not exist. */
export async function readConf(dataDir: string): Promise<Record<string, string>> {
  try {
    return parseConf(await Deno.readTextFile(`${dataDir}/${INCLUDE_FILE}`));
  } catch (err) {
    if (err instanceof Deno.errors.NotFound) return {};
    throw err;
  }
}

/** Writes the include file of `dataDir` atomically (temp file + rename), owned by `owner`. */
export async function writeConf(
  dataDir: string,
  settings: Record<string, string>,
  owner?: { uid: number; gid: number },
): Promise<void> {
  for (const [name, value] of Object.entries(settings)) {
    if (/[\n\r\0]/.test(value)) {
      throw new TesseraError(
        SqlState.invalidParameterValue,
        `value of setting '${name}' contains a line break or NUL`,
      );
    }
  }
  const path = `${dataDir}/${INCLUDE_FILE}`;
  const tmp = `${path}.tmp`;
  await Deno.writeTextFile(tmp, renderConf(settings), { mode: 0o600 });
  if (owner !== undefined) await Deno.chown(tmp, owner.uid, owner.gid);
  await Deno.rename(tmp, path);
}

/** Adds the include line to `postgresql.conf` once; later calls change nothing. */
export async function ensureIncludeLine(dataDir: string): Promise<void> {
  const path = `${dataDir}/postgresql.conf`;
  const text = await Deno.readTextFile(path);
  if (text.includes(`include_if_exists = '${INCLUDE_FILE}'`)) return;
  await Deno.writeTextFile(path, `${text.endsWith("\n") ? "" : "\n"}${INCLUDE_LINE}\n`, {
    append: true,
  });
}

/**
 * Removes the lines setting any of `names` from a Postgres configuration file such as
 * `postgresql.auto.conf` (which a base backup copies from the primary and which Postgres reads
 * after `tessera.conf`). Other lines stay as they are; a missing file is left missing.
 */
export async function removeSettingLines(
  path: string,
  names: ReadonlySet<string>,
): Promise<string[]> {
  let text: string;
  try {
    text = await Deno.readTextFile(path);
  } catch (err) {
    if (err instanceof Deno.errors.NotFound) return [];
    throw err;
  }
  const removed: string[] = [];
  const kept = text.split("\n").filter((line) => {
    const match = /^\s*([A-Za-z_][A-Za-z0-9_.]*)\s*(=|\s)/.exec(line);
    const name = match?.[1]?.toLowerCase();
    if (name !== undefined && names.has(name)) {
      removed.push(name);
      return false;
    }
    return true;
  });
  if (removed.length > 0) await Deno.writeTextFile(path, kept.join("\n"));
  return removed;
}
