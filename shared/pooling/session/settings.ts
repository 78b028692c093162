/**
 * Session settings carried across backends: their key (to find a backend already carrying the
 * same settings), the SQL that moves a backend from its settings to a session's, and the SQL
 * that reads back what Postgres holds after a transaction that may have changed them.
 *
 * @module
 */

/** Settings as Postgres reports them (name → value); treated as immutable once built. */
export type Settings = ReadonlyMap<string, string>;

/** The empty settings of a fresh backend. */
export const NO_SETTINGS: Settings = new Map();

/** A key equal for equal settings: names sorted, `name=value` joined by zero bytes. */
export function settingsKey(settings: Settings): string {
  if (settings.size === 0) return "";
  const names = [...settings.keys()].sort();
  let key = "";
  for (const n of names) key += `${n}=${settings.get(n)}\0`;
  return key;
}

/** Quotes a string as an escape-string literal, safe whatever `standard_conforming_strings` is. */
export function quoteLiteral(value: string): string {
  return `E'${value.replaceAll("\\", "\\\\").replaceAll("'", "''")}'`;
}

/** Quotes an identifier. */
export function quoteIdent(name: string): string {
  return `"${name.replaceAll('"', '""')}"`;
}

/**
 * SQL (one simple query) that turns a backend holding `from` into one holding `to`: RESET for
 * settings `to` lacks, `set_config(name, value, false)` for those that differ. `""` when equal.
 * `session_authorization` goes before `role`, as SET ROLE depends on it.
 */
export function replaySql(from: Settings, to: Settings): string {
  const stmts: string[] = [];
  for (const name of from.keys()) {
    if (!to.has(name)) stmts.push(`RESET ${quoteIdent(name)}`);
  }
  const sets: string[] = [];
  const names = [...to.keys()].sort((a, b) => rank(a) - rank(b));
  for (const name of names) {
    const value = to.get(name)!;
    if (from.get(name) !== value) {
      sets.push(`pg_catalog.set_config(${quoteLiteral(name)}, ${quoteLiteral(value)}, false)`);
    }
  }
  if (sets.length > 0) stmts.push(`SELECT ${sets.join(", ")}`);
  return stmts.join("; ");
}

function rank(name: string): number {
  const n = name.toLowerCase();
  return n === "session_authorization" ? 0 : n === "role" ? 1 : 2;
}

/** Settings that change with each transaction and are never session state. */
const TRANSACTION_SETTINGS = "'transaction_isolation', 'transaction_read_only', " +
  "'transaction_deferrable'";

/**
 * SQL reading the settings set in this session (by SET, set_config or the pooler's replay):
 * those pg_settings lists with source `session`, and by name those it does not list (`role`,
 * `session_authorization`, custom placeholder settings such as `myapp.tenant`). Rows whose
 * value is null are settings never set.
 */
export function readSettingsSql(customNames: Iterable<string>): string {
  const names = ["role", "session_authorization", ...customNames].map(quoteLiteral).join(", ");
  return "SELECT name, setting FROM pg_catalog.pg_settings WHERE source = 'session' " +
    `AND context <> 'internal' AND name NOT IN (${TRANSACTION_SETTINGS}) UNION ALL ` +
    `SELECT n, pg_catalog.current_setting(n, true) FROM pg_catalog.unnest(ARRAY[${names}]) AS n`;
}

/**
 * SQL putting back startup settings that RESET, SET ... TO DEFAULT, RESET ALL or DISCARD ALL
 * returned to the server default: on Postgres they return to the value the client gave at
 * startup, but a pooled backend's reset value is its own (the server default).
 */
export function restoreStartupSql(startup: Settings): string {
  const values = [...startup].map(([n, v]) => `(${quoteLiteral(n)}, ${quoteLiteral(v)})`).join(
    ", ",
  );
  return "SELECT pg_catalog.set_config(s.n, s.v, false) " +
    `FROM (VALUES ${values}) AS s(n, v) WHERE NOT EXISTS (SELECT 1 FROM pg_catalog.pg_settings p ` +
    "WHERE p.name = s.n AND p.source = 'session') AND ((s.n NOT LIKE '%.%' AND s.n NOT IN " +
    "('role', 'session_authorization')) OR coalesce(pg_catalog.current_setting(s.n, true), '') " +
    "IN ('', 'none'))";
}

/**
 * Turns the rows of {@linkcode readSettingsSql} into settings: drops what is not set (null, an
 * empty placeholder, role `none`, the login user as session_authorization).
 */
export function settingsFromRows(
  rows: (string | null)[][],
  loginUser: string,
): Map<string, string> {
  const m = new Map<string, string>();
  for (const [name, value] of rows) {
    if (name == null || value == null) continue;
    if (name === "role" && value === "none") continue;
    if (name === "session_authorization" && value === loginUser) continue;
    if (value === "" && name.includes(".")) continue;
    m.set(name, value);
  }
  return m;
}

/**
 * Counts the session state that cannot move to another backend: temporary relations,
 * channels listened to, advisory locks held, holdable cursors.
 */
export const READ_PINS_SQL = "SELECT " +
  "(SELECT count(*) FROM pg_catalog.pg_class " +
  "WHERE relnamespace = pg_catalog.pg_my_temp_schema())::int4, " +
  "(SELECT count(*) FROM pg_catalog.pg_listening_channels())::int4, " +
  "(SELECT count(*) FROM pg_catalog.pg_locks WHERE locktype = 'advisory' " +
  "AND pid = pg_catalog.pg_backend_pid())::int4, " +
  "(SELECT count(*) FROM pg_catalog.pg_cursors WHERE is_holdable)::int4";
