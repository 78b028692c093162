/**
 * The catalog of Postgres settings, read from `postgres --describe-config`: used to refuse
 * unknown names and ill-typed values before they reach a configuration file, and to tell which
 * changes need a restart.
 *
 * @module
 */

import { SqlState, TesseraError } from "../../shared/errors/mod.ts";

/** One setting as the server binary describes it. */
export interface SettingInfo {
  /** Setting name. */
  name: string;
  /** When a change takes effect: `postmaster` (restart), `sighup` (reload), `user`, ... */
  context: string;
  /** `BOOLEAN`, `INTEGER`, `REAL`, `ENUM` or `STRING`. */
  type: string;
}

/** Known settings by name. */
export type SettingsCatalog = ReadonlyMap<string, SettingInfo>;

/** Parses the tab-separated output of `postgres --describe-config`. */
export function parseDescribeConfig(text: string): SettingsCatalog {
  const out = new Map<string, SettingInfo>();
  for (const line of text.split("\n")) {
    const cols = line.split("\t");
    if (cols.length < 4 || cols[0] === "") continue;
    out.set(cols[0]!, { name: cols[0]!, context: cols[1]!, type: cols[3]! });
  }
  return out;
}

/** Reads the catalog of the binaries in `bindir`. */
export async function loadSettingsCatalog(bindir: string): Promise<SettingsCatalog> {
  const out = await new Deno.Command(`${bindir}/postgres`, {
    args: ["--describe-config"],
    stdout: "piped",
    stderr: "piped",
  }).output();
  if (!out.success) {
    throw new TesseraError(SqlState.systemError, "postgres --describe-config failed", {
      detail: new TextDecoder().decode(out.stderr).trim(),
    });
  }
  return parseDescribeConfig(new TextDecoder().decode(out.stdout));
}

const BOOL_VALUES = new Set([
  "on",
  "off",
  "true",
  "false",
  "yes",
  "no",
  "1",
  "0",
  "t",
  "f",
  "y",
  "n",
]);
const NUMBER_WITH_UNIT = /^-?(\d+(\.\d*)?|\.\d+)([eE][-+]?\d+)?\s*[a-zA-Z]*$/;

/**
 * Refuses a setting the server would not accept by name or type. Custom settings of extensions
 * (names with a dot) are accepted as strings.
 */
export function checkSetting(catalog: SettingsCatalog, name: string, value: string): void {
  if (name.includes(".")) return;
  const info = catalog.get(name);
  if (info === undefined) {
    throw new TesseraError(
      SqlState.undefinedObject,
      `unrecognized configuration parameter '${name}'`,
    );
  }
  if (value === "") return; // an empty value removes the setting
  const ok = info.type === "BOOLEAN"
    ? BOOL_VALUES.has(value.toLowerCase())
    : info.type === "INTEGER" || info.type === "REAL"
    ? NUMBER_WITH_UNIT.test(value.trim())
    : true;
  if (!ok) {
    throw new TesseraError(
      SqlState.invalidParameterValue,
      `invalid value for parameter '${name}': '${value}'`,
      { hint: `'${name}' takes a ${info.type.toLowerCase()} value` },
    );
  }
}

/** Whether changing `name` takes effect only after a restart. */
export function needsRestart(catalog: SettingsCatalog, name: string): boolean {
  return catalog.get(name)?.context === "postmaster";
}
