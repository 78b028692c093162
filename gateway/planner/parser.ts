/**
 * SQL parsing with `pgsql-parser` (Postgres's own parser, libpg_query compiled to WebAssembly:
 * no native build, no FFI). The WebAssembly module is read from the npm cache once, by
 * {@linkcode initParser}; call it at start-up, before read permission is revoked. After that,
 * parsing and deparsing are synchronous and do no I/O.
 *
 * @module
 */

// deno-lint-ignore-file no-explicit-any
import { deparseSync, loadModule, parseSync } from "pgsql-parser";
import { SqlState, TesseraError } from "../../shared/errors/mod.ts";

let ready: Promise<void> | undefined;
let loaded = false;

/** Loads the parser's WebAssembly module (needs read access to the npm cache, once). */
export function initParser(): Promise<void> {
  ready ??= loadModule().then(() => {
    loaded = true;
  });
  return ready;
}

/** Whether {@linkcode initParser} has finished. */
export function parserReady(): boolean {
  return loaded;
}

/** Parses `sql` into raw statements (`{ SelectStmt: ... }` nodes). Throws `42601` on bad SQL. */
export function parseSql(sql: string): any[] {
  if (!loaded) {
    throw new TesseraError(
      SqlState.internalError,
      "the SQL parser is not loaded: call initParser()",
    );
  }
  try {
    const tree = parseSync(sql) as { stmts?: { stmt: any }[] };
    return (tree.stmts ?? []).map((s) => s.stmt);
  } catch (err) {
    throw new TesseraError(SqlState.syntaxError, err instanceof Error ? err.message : String(err), {
      cause: err,
    });
  }
}

/** SQL text of a node (a statement or an expression), on one line. */
export function deparse(node: any): string {
  return deparseSync(node, { pretty: false }) as string;
}
