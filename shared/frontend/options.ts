/**
 * The `options` startup parameter, as Postgres reads it: command-line switches for the server
 * process, of which clients use `-c name=value` and `--name=value` to set run-time parameters
 * for the session (`PGOPTIONS='-c search_path=app -c statement_timeout=5s'`).
 *
 * @module
 */

import { SqlState, TesseraError } from "../errors/mod.ts";

// isspace() in the C locale, which Postgres's pg_split_opts uses.
const SPACE = new Set([" ", "\t", "\n", "\v", "\f", "\r"]);

/**
 * Splits an `options` string into words as Postgres's `pg_split_opts` does: words are separated
 * by white space, and a backslash takes the next character literally (`\ ` is a space inside a
 * word, `\\` a backslash).
 *
 * @example
 * ```ts
 * splitStartupOptions("-c search_path=a\\ b  --work-mem=64MB");
 * // ["-c", "search_path=a b", "--work-mem=64MB"]
 * ```
 */
export function splitStartupOptions(options: string): string[] {
  const words: string[] = [];
  let i = 0;
  while (i < options.length) {
    while (i < options.length && SPACE.has(options[i]!)) i++;
    if (i >= options.length) break;
    let word = "";
    let escaped = false;
    for (; i < options.length; i++) {
      const ch = options[i]!;
      if (!escaped && SPACE.has(ch)) break;
      if (!escaped && ch === "\\") {
        escaped = true;
      } else {
        escaped = false;
        word += ch;
      }
    }
    words.push(word);
  }
  return words;
}

function syntaxError(message: string): TesseraError {
  return new TesseraError(SqlState.syntaxError, message, { severity: "FATAL" });
}

/** Splits `name=value` as Postgres's `ParseLongOption`: `-` in the name becomes `_`. */
function nameValue(arg: string, shown: string): [string, string] {
  const eq = arg.indexOf("=");
  if (eq === -1) throw syntaxError(`${shown} requires a value`);
  const name = arg.slice(0, eq).replaceAll("-", "_");
  if (name === "") throw syntaxError(`invalid option in startup packet: '${shown}'`);
  return [name, arg.slice(eq + 1)];
}

/**
 * Parses the `options` startup parameter into the run-time parameters it sets, in order (a
 * later setting of the same name wins). Accepted forms, as Postgres accepts them:
 * `-c name=value`, `-cname=value` and `--name=value`; dashes in a name become underscores
 * (`--work-mem=64MB` sets `work_mem`). Names keep their case as written (Postgres matches
 * them case-insensitively). Words are split as {@linkcode splitStartupOptions} splits them.
 *
 * Throws a FATAL TesseraError 42601 for a switch without a value or a stray word, as Postgres
 * does, and 0A000 for the other server switches (`-B`, `-e`, ...), which Tessera does not take
 * from clients.
 *
 * @example
 * ```ts
 * parseStartupOptions("-c search_path=app\\ schema --statement-timeout=5s");
 * // { search_path: "app schema", statement_timeout: "5s" }
 * ```
 */
export function parseStartupOptions(options: string): Record<string, string> {
  const settings: Record<string, string> = {};
  const set = ([name, value]: [string, string]): void => {
    Object.defineProperty(settings, name, {
      value,
      enumerable: true,
      writable: true,
      configurable: true,
    });
  };
  const words = splitStartupOptions(options);
  for (let i = 0; i < words.length; i++) {
    const word = words[i]!;
    if (word.startsWith("--")) {
      const arg = word.slice(2);
      if (arg === "") throw syntaxError(`invalid option in startup packet: '--'`);
      set(nameValue(arg, `--${arg.split("=")[0]}`));
    } else if (word === "-c") {
      const arg = words[++i];
      if (arg === undefined) throw syntaxError("option requires an argument: -c");
      set(nameValue(arg, `-c ${arg}`));
    } else if (word.startsWith("-c")) {
      set(nameValue(word.slice(2), `-c ${word.slice(2)}`));
    } else if (word.startsWith("-") && word.length > 1) {
      throw new TesseraError(
        SqlState.featureNotSupported,
        `unsupported option in startup packet: '${word.slice(0, 40)}'`,
        { severity: "FATAL", hint: "use -c name=value or --name=value" },
      );
    } else {
      throw syntaxError(
        `invalid command-line argument for server process: '${word.slice(0, 40)}'`,
      );
    }
  }
  return settings;
}
