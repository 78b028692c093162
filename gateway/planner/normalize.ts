/**
 * Normalisation: replaces the literals of a DML statement with bind placeholders so statements
 * that differ only in constants share one plan. Client parameters keep `$1..$P`; the literals
 * become `$P+1..` in tree order. ORDER BY/GROUP BY ordinals, LIMIT/OFFSET, type modifiers and
 * NULL stay as written (they shape the plan).
 *
 * @module
 */

// deno-lint-ignore-file no-explicit-any
import type { VindexValue } from "../sharding/mod.ts";
import { deparse } from "./parser.ts";

/** A literal taken out of a statement. */
export interface Literal {
  /** The `A_Const` node, re-inlined when the statement is rendered for a shard. */
  node: any;
  /** Its value for vindexes: number, numeric/text string or boolean. */
  value: VindexValue;
}

/** Result of {@linkcode normalize}. */
export interface Normalized {
  /** The statement with literals replaced by `ParamRef`s (a new tree; the input is untouched). */
  stmt: any;
  /** The literals, `$paramCount+1` first. */
  literals: Literal[];
  /** Highest client parameter number used. */
  paramCount: number;
  /** Deparsed normalised statement. */
  text: string;
}

const DML = new Set(["SelectStmt", "InsertStmt", "UpdateStmt", "DeleteStmt"]);
const SKIP_KEYS = new Set(["typeName", "limitCount", "limitOffset", "location"]);

/** Highest `$n` in `node`. */
export function maxParam(node: unknown): number {
  let max = 0;
  const walk = (n: unknown) => {
    if (Array.isArray(n)) n.forEach(walk);
    else if (n !== null && typeof n === "object") {
      const o = n as Record<string, unknown>;
      const p = o.ParamRef as { number?: number } | undefined;
      if (p !== undefined) max = Math.max(max, p.number ?? 0);
      for (const v of Object.values(o)) walk(v);
    }
  };
  walk(node);
  return max;
}

/** The value of an `A_Const` node's payload, or `undefined` for NULL. */
export function constValue(c: any): VindexValue | undefined {
  if (c.isnull) return undefined;
  if (c.ival !== undefined) return c.ival.ival ?? 0;
  if (c.fval !== undefined) return c.fval.fval;
  if (c.sval !== undefined) return c.sval.sval ?? "";
  if (c.boolval !== undefined) return c.boolval.boolval ?? false;
  if (c.bsval !== undefined) return c.bsval.bsval;
  return undefined;
}

/** Normalises a raw statement (non-DML statements come back unchanged, with no literals). */
export function normalize(stmt: any): Normalized {
  const paramCount = maxParam(stmt);
  const literals: Literal[] = [];
  const kind = Object.keys(stmt)[0] ?? "";
  if (!DML.has(kind)) return { stmt, literals, paramCount, text: deparse(stmt) };
  const walk = (n: any, key: string): any => {
    if (Array.isArray(n)) {
      return n.map((x) => {
        // ORDER BY 1 / GROUP BY 1 are ordinals, not values.
        if ((key === "groupClause") && x?.A_Const) return x;
        return walk(x, key);
      });
    }
    if (n === null || typeof n !== "object") return n;
    if (n.A_Const !== undefined) {
      const v = constValue(n.A_Const);
      if (v === undefined) return n;
      literals.push({ node: n, value: v });
      return { ParamRef: { number: paramCount + literals.length } };
    }
    if (n.SortBy !== undefined && n.SortBy.node?.A_Const) return n;
    const out: any = {};
    for (const [k, v] of Object.entries(n)) {
      out[k] = SKIP_KEYS.has(k) ? v : walk(v, k);
    }
    return out;
  };
  const norm = walk(stmt, "");
  return { stmt: norm, literals, paramCount, text: deparse(norm) };
}
