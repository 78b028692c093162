/**
 * Execution-time helpers for the engine: the bind values of one execution, resolving
 * {@linkcode ValueExpr}s, and rendering a plan's SQL templates for a shard.
 *
 * @module
 */

// deno-lint-ignore-file no-explicit-any
import { SqlState, TesseraError } from "../../shared/errors/mod.ts";
import type { VindexValue } from "../sharding/mod.ts";
import type { Literal } from "./normalize.ts";
import { deparse } from "./parser.ts";
import type { Insert, Plan, Query, ValueExpr } from "./plan.ts";

/** The bind values of one execution of a plan. */
export class Bindings {
  /** Client parameters (text form; `null` is NULL), `$1..$P`. */
  readonly params: readonly (string | null)[];
  /** The statement's literals, `$P+1..$P+L`. */
  readonly literals: readonly Literal[];
  /** Join variables by bind index (set by a Join for each outer row). */
  readonly vars: Map<number, string | null>;

  /** Bindings for `plan` with the client's `params` and the statement's `literals`. */
  constructor(
    readonly plan: Pick<Plan, "paramCount">,
    params: readonly (string | null)[],
    literals: readonly Literal[],
    vars: Map<number, string | null> = new Map(),
  ) {
    if (params.length < plan.paramCount) {
      throw new TesseraError(
        SqlState.protocolViolation,
        `statement needs ${plan.paramCount} parameters: received ${params.length}`,
      );
    }
    this.params = params;
    this.literals = literals;
    this.vars = vars;
  }

  /** A copy with join variables `vars` set. */
  withVars(vars: Iterable<[number, string | null]>): Bindings {
    return new Bindings(this.plan, this.params, this.literals, new Map([...this.vars, ...vars]));
  }

  /** The value of bind `$index`. */
  value(index: number): VindexValue {
    if (index <= this.plan.paramCount) return this.params[index - 1] ?? null;
    const lit = this.literals[index - this.plan.paramCount - 1];
    if (lit !== undefined) return lit.value;
    return this.vars.get(index) ?? null;
  }
}

/**
 * A numeric text rounded to an integer as Postgres's numeric-to-integer cast does (half away from
 * zero); other text is returned unchanged (the cast would fail on Postgres).
 */
export function roundToInteger(text: string): string {
  const m = /^\s*([+-]?)(\d*)(?:\.(\d*))?(?:[eE]([+-]?\d{1,4}))?\s*$/.exec(text);
  if (m === null || (m[2] === "" && (m[3] ?? "") === "")) return text;
  const frac = m[3] ?? "";
  const exp = Number(m[4] ?? "0") - frac.length;
  let x = BigInt((m[2] || "0") + frac);
  if (exp >= 0) x *= 10n ** BigInt(exp);
  else {
    const d = 10n ** BigInt(-exp);
    const q = x / d;
    x = (x % d) * 2n >= d ? q + 1n : q;
  }
  return `${m[1] === "-" && x !== 0n ? "-" : ""}${x}`;
}

/** Resolves a value expression (sequence values are the engine's to fill). */
export function resolveValue(expr: ValueExpr, b: Bindings): VindexValue {
  switch (expr.kind) {
    case "bind": {
      const v = b.value(expr.index);
      return expr.cast === "int" && typeof v === "string" ? roundToInteger(v) : v;
    }
    case "const":
      return expr.value;
    case "sequence":
      throw new TesseraError(SqlState.internalError, "a sequence value is filled by the engine");
  }
}

/**
 * Renders `query` for one execution: literals are inlined as written, client parameters and
 * join variables become `$1..$k` (dense, in order of first use) with their values in `params`.
 */
export function renderQuery(query: Query, b: Bindings): { sql: string; params: (string | null)[] } {
  const params: (string | null)[] = [];
  const numbering = new Map<number, number>();
  let changed = false;
  const walk = (n: any): any => {
    if (Array.isArray(n)) return n.map(walk);
    if (n === null || typeof n !== "object") return n;
    if (n.ParamRef !== undefined) {
      const i: number = n.ParamRef.number;
      changed = true;
      const lit = i > b.plan.paramCount ? b.literals[i - b.plan.paramCount - 1] : undefined;
      if (lit !== undefined) return lit.node;
      let k = numbering.get(i);
      if (k === undefined) {
        const v = b.value(i);
        params.push(v === null ? null : typeof v === "boolean" ? (v ? "t" : "f") : String(v));
        k = params.length;
        numbering.set(i, k);
      }
      return { ParamRef: { number: k } };
    }
    const out: any = {};
    for (const [key, v] of Object.entries(n)) out[key] = walk(v);
    return out;
  };
  const ast = walk(query.ast);
  return { sql: changed ? deparse(ast) : query.sql, params };
}

/**
 * The query for the rows `rowIndexes` of an {@linkcode Insert}: its template with those rows as
 * VALUES; `sequenceValues` fills, per row index, the auto-increment column where the plan left
 * it to the engine.
 */
export function buildInsertQuery(
  insert: Insert,
  rowIndexes: readonly number[],
  sequenceValues: ReadonlyMap<number, bigint | number | string> = new Map(),
): Query {
  const valuesLists = rowIndexes.map((r) => {
    const row = insert.rows[r];
    if (row === undefined) throw new RangeError(`no row ${r} in the INSERT plan`);
    return {
      List: {
        items: row.exprs.map((e) => {
          if (e !== null) return e;
          const v = sequenceValues.get(r);
          if (v === undefined) {
            throw new TesseraError(SqlState.internalError, `row ${r} needs a sequence value`);
          }
          return { A_Const: { fval: { fval: String(v) } } };
        }),
      },
    };
  });
  const tmpl = insert.template.ast.InsertStmt;
  const ast = {
    InsertStmt: {
      ...tmpl,
      selectStmt: { SelectStmt: { ...tmpl.selectStmt.SelectStmt, valuesLists } },
    },
  };
  return { sql: deparse(ast), ast, original: false };
}
