/**
 * The planner: SQL (or a parsed statement) plus the keyspaces' vschemas in, a {@linkcode Plan}
 * out. No I/O. Plans are cached by normalised statement text in a bounded LRU.
 *
 * @module
 */

// deno-lint-ignore-file no-explicit-any
import { roundToInteger } from "./bind.ts";
import { SqlState, TesseraError } from "../../shared/errors/mod.ts";
import {
  type ColumnVindex,
  type KeyspaceVSchema,
  type TableDef,
  vindexColumns,
} from "../../shared/vschema/mod.ts";
import { buildVindexes, type Vindex } from "../sharding/mod.ts";
import { LruCache } from "./cache.ts";
import { constValue, type Literal, normalize } from "./normalize.ts";
import { deparse, parseSql } from "./parser.ts";
import type {
  AggregateColumn,
  FilterExpr,
  Operand,
  Plan,
  Primitive,
  ProjectColumn,
  Query,
  Route,
  RouteOpcode,
  SortKey,
  ValueExpr,
} from "./plan.ts";

/** A planned statement: the (shared, cacheable) plan and this statement's literals. */
export interface Planned {
  /** The plan. */
  plan: Plan;
  /** The literals of this statement (`$paramCount+1..`). */
  literals: Literal[];
  /** Whether the plan came from the cache. */
  cached: boolean;
}

const DDL = new Set([
  "CreateStmt",
  "AlterTableStmt",
  "DropStmt",
  "IndexStmt",
  "TruncateStmt",
  "CommentStmt",
  "RenameStmt",
  "ViewStmt",
  "CreateFunctionStmt",
  "GrantStmt",
  "VacuumStmt",
  "CreateExtensionStmt",
  "CreateSchemaStmt",
  "CreateEnumStmt",
  "CompositeTypeStmt",
  "DefineStmt",
  "CreateTrigStmt",
  "ReindexStmt",
  "CreateSeqStmt",
  "AlterSeqStmt",
  "CreateDomainStmt",
  "AlterEnumStmt",
]);
const AGGREGATES = new Set(["count", "sum", "min", "max", "avg"]);
const INT_TYPES = new Set(["int2", "int4", "int8", "smallint", "integer", "bigint", "int"]);
/** Built-in aggregates whose per-shard results cannot be merged (refused on multi-shard routes). */
const OTHER_AGGREGATES = new Set([
  "array_agg",
  "bit_and",
  "bit_or",
  "bit_xor",
  "bool_and",
  "bool_or",
  "corr",
  "covar_pop",
  "covar_samp",
  "every",
  "json_agg",
  "json_object_agg",
  "jsonb_agg",
  "jsonb_object_agg",
  "mode",
  "percentile_cont",
  "percentile_disc",
  "range_agg",
  "range_intersect_agg",
  "regr_avgx",
  "regr_avgy",
  "regr_count",
  "regr_intercept",
  "regr_r2",
  "regr_slope",
  "regr_sxx",
  "regr_sxy",
  "regr_syy",
  "stddev",
  "stddev_pop",
  "stddev_samp",
  "string_agg",
  "var_pop",
  "var_samp",
  "variance",
  "xmlagg",
  "rank",
  "dense_rank",
  "percent_rank",
  "cume_dist",
  "grouping",
]);
const SYSTEM_SCHEMAS = new Set(["pg_catalog", "information_schema"]);

/** The error for SQL a sharded keyspace cannot run: SQLSTATE 0A000, saying what and why. */
export function unsupported(what: string, why: string, keyspace: string): TesseraError {
  return new TesseraError(
    SqlState.featureNotSupported,
    `${what} is not supported in sharded keyspace "${keyspace}": ${why}`,
  );
}

interface TableRef {
  alias: string;
  name: string;
  def: TableDef | undefined;
  kind: "sharded" | "reference" | "system";
  /** Position in a join: the nullable side of a LEFT JOIN. */
  nullable: boolean;
}

interface Ctx {
  keyspace: string;
  vs: KeyspaceVSchema;
  vindexes: Map<string, Vindex>;
  /** Next free bind index (for join variables). */
  nextBind: number;
}

/** Options of a {@linkcode Planner}. */
export interface PlannerOptions {
  /** Most plans kept (default 5000). */
  cacheSize?: number;
}

/** Plans statements against a set of keyspace vschemas, caching plans. */
export class Planner {
  #vschemas = new Map<string, KeyspaceVSchema>();
  #vindexes = new Map<string, Map<string, Vindex>>();
  #cache: LruCache<string, Plan>;

  /** A planner for `vschemas` (by keyspace; a keyspace without one is unsharded). */
  constructor(vschemas: Record<string, KeyspaceVSchema> = {}, options: PlannerOptions = {}) {
    this.#cache = new LruCache(options.cacheSize ?? 5000);
    this.setVSchemas(vschemas);
  }

  /** Replaces the vschemas (for example after topo changed) and empties the plan cache. */
  setVSchemas(vschemas: Record<string, KeyspaceVSchema>): void {
    this.#vschemas = new Map(Object.entries(vschemas));
    this.#vindexes = new Map(
      Object.entries(vschemas).map(([ks, vs]) => [ks, buildVindexes(vs, ks)]),
    );
    this.#cache.clear();
  }

  /** Cache statistics. */
  get cacheStats(): { size: number; hits: number; misses: number } {
    return { size: this.#cache.size, ...this.#cache.stats };
  }

  /** Plans each statement of `sql` (a simple-protocol query may hold several). */
  planSql(sql: string, keyspace: string): Planned[] {
    return parseSql(sql).map((stmt) => this.planStatement(stmt, keyspace));
  }

  /** Plans one parsed statement (a raw `{ SelectStmt: ... }` node). */
  planStatement(stmt: any, keyspace: string): Planned {
    const n = normalize(stmt);
    const key = `${keyspace}\n${n.paramCount}\n${n.text}`;
    const hit = this.#cache.get(key);
    if (hit !== undefined) return { plan: hit, literals: n.literals, cached: true };
    const vs = this.#vschemas.get(keyspace) ?? { sharded: false, vindexes: {}, tables: {} };
    const ctx: Ctx = {
      keyspace,
      vs,
      vindexes: this.#vindexes.get(keyspace) ?? new Map(),
      nextBind: n.paramCount + n.literals.length + 1,
    };
    const root = planNode(ctx, n.stmt, this.#vschemas);
    const plan: Plan = {
      keyspace,
      normalized: n.text,
      paramCount: n.paramCount,
      literalCount: n.literals.length,
      root,
    };
    this.#cache.set(key, plan);
    return { plan, literals: n.literals, cached: false };
  }
}

function kindOf(stmt: any): string {
  return Object.keys(stmt)[0] ?? "";
}

function query(ast: any, original: boolean): Query {
  return { sql: deparse(ast), ast, original };
}

function route(ctx: Ctx, opcode: RouteOpcode, ast: any, original: boolean, write: boolean): Route {
  return { type: "route", opcode, keyspace: ctx.keyspace, query: query(ast, original), write };
}

function planNode(ctx: Ctx, stmt: any, all: Map<string, KeyspaceVSchema>): Primitive {
  const kind = kindOf(stmt);
  const body = stmt[kind];
  switch (kind) {
    case "TransactionStmt":
      return planTransaction(ctx, stmt);
    case "VariableSetStmt":
      return { type: "session", action: "set", sql: deparse(stmt) };
    case "VariableShowStmt":
      return { type: "session", action: "show", sql: deparse(stmt) };
    case "DiscardStmt":
      return { type: "session", action: "discard", sql: deparse(stmt) };
    case "ExplainStmt": {
      const opts = (body.options ?? []).map((o: any) => {
        const d = o.DefElem;
        const arg = d.arg ? ` ${deparse(d.arg)}` : "";
        return `${String(d.defname).toUpperCase()}${arg}`;
      });
      return {
        type: "explain",
        options: opts.join(", "),
        input: planNode(ctx, body.query, all),
      };
    }
  }
  if (!ctx.vs.sharded) {
    return route(ctx, "unsharded", stmt, true, kind !== "SelectStmt");
  }
  switch (kind) {
    case "SelectStmt":
      // Catalog and reference tables only (psql's \d, drivers' introspection): every shard holds
      // them whole, so the statement goes to one shard as written, however complex.
      if (onlyLocalTables(ctx, stmt)) return route(ctx, "reference", stmt, true, false);
      return planSelect(ctx, body, true);
    case "InsertStmt":
      return planInsert(ctx, body, all);
    case "UpdateStmt":
    case "DeleteStmt":
      return planDml(ctx, kind, body);
  }
  if (DDL.has(kind)) return route(ctx, "dml_all", stmt, true, true);
  const name = kind.replace(/Stmt$/, "").replace(/([a-z])([A-Z])/g, "$1 $2").toUpperCase();
  throw unsupported(
    name,
    "this statement cannot be routed to the shards of a sharded keyspace",
    ctx.keyspace,
  );
}

function planTransaction(ctx: Ctx, stmt: any): Primitive {
  const k: string = stmt.TransactionStmt.kind;
  const map: Record<
    string,
    "begin" | "commit" | "rollback" | "savepoint" | "release" | "rollback_to"
  > = {
    TRANS_STMT_BEGIN: "begin",
    TRANS_STMT_START: "begin",
    TRANS_STMT_COMMIT: "commit",
    TRANS_STMT_ROLLBACK: "rollback",
    TRANS_STMT_SAVEPOINT: "savepoint",
    TRANS_STMT_RELEASE: "release",
    TRANS_STMT_ROLLBACK_TO: "rollback_to",
  };
  const action = map[k];
  if (action !== undefined) return { type: "transaction", action, sql: deparse(stmt) };
  if (!ctx.vs.sharded) return { type: "transaction", action: "prepare", sql: deparse(stmt) };
  throw unsupported(
    "two-phase commit statements (PREPARE TRANSACTION, COMMIT PREPARED)",
    "Tessera runs multi-shard transactions itself; a client-driven prepared transaction would span shards",
    ctx.keyspace,
  );
}

// ---- tables, columns and predicates ----

/** Whether every table `stmt` reads (CTE names aside) is a system or reference table. */
function onlyLocalTables(ctx: Ctx, stmt: any): boolean {
  const ctes = new Set<string>();
  const tables: any[] = [];
  const walk = (n: any) => {
    if (Array.isArray(n)) {
      for (const x of n) walk(x);
      return;
    }
    if (n === null || typeof n !== "object") return;
    if (n.CommonTableExpr?.ctename !== undefined) ctes.add(n.CommonTableExpr.ctename);
    if (n.RangeVar !== undefined) tables.push(n.RangeVar);
    for (const v of Object.values(n)) walk(v);
  };
  walk(stmt);
  return tables.every((rv) => {
    if (rv.schemaname === undefined && ctes.has(rv.relname)) return true;
    if (rv.schemaname !== undefined && SYSTEM_SCHEMAS.has(rv.schemaname)) return true;
    if (rv.schemaname === undefined && String(rv.relname).startsWith("pg_")) return true;
    if (rv.schemaname === "information_schema") return true;
    return ctx.vs.tables[rv.relname]?.type === "reference";
  });
}

function resolveTable(ctx: Ctx, rv: any, nullable: boolean): TableRef {
  const name: string = rv.relname;
  const alias: string = rv.alias?.aliasname ?? name;
  if (rv.schemaname !== undefined && SYSTEM_SCHEMAS.has(rv.schemaname)) {
    return { alias, name, def: undefined, kind: "system", nullable };
  }
  if (rv.schemaname === undefined && (name.startsWith("pg_") || name === "information_schema")) {
    return { alias, name, def: undefined, kind: "system", nullable };
  }
  const def = ctx.vs.tables[name];
  if (def === undefined) {
    throw new TesseraError(
      "42P01",
      `table "${name}" is not in the vschema of keyspace "${ctx.keyspace}"`,
      {
        hint: "add it to the keyspace's vschema (tables) so Tessera knows how its rows are sharded",
      },
    );
  }
  return { alias, name, def, kind: def.type === "reference" ? "reference" : "sharded", nullable };
}

interface FromInfo {
  tables: TableRef[];
  /** ON conjuncts of inner joins (usable for co-location and routing). */
  innerOn: any[];
  /** ON conjuncts of left joins. */
  leftOn: any[];
  joinType: "inner" | "left";
}

function collectFrom(ctx: Ctx, from: any[] | undefined): FromInfo {
  const info: FromInfo = { tables: [], innerOn: [], leftOn: [], joinType: "inner" };
  const walk = (n: any, nullable: boolean) => {
    if (n.RangeVar) info.tables.push(resolveTable(ctx, n.RangeVar, nullable));
    else if (n.JoinExpr) {
      const j = n.JoinExpr;
      if (j.jointype !== "JOIN_INNER" && j.jointype !== "JOIN_LEFT") {
        throw unsupported(
          `${String(j.jointype).replace("JOIN_", "")} JOIN`,
          "only inner and left joins are planned across shards",
          ctx.keyspace,
        );
      }
      if (j.usingClause || j.isNatural) {
        throw unsupported(
          "JOIN ... USING / NATURAL JOIN",
          "write the join condition with ON",
          ctx.keyspace,
        );
      }
      walk(j.larg, nullable);
      walk(j.rarg, nullable || j.jointype === "JOIN_LEFT");
      if (j.jointype === "JOIN_LEFT") info.joinType = "left";
      (j.jointype === "JOIN_LEFT" ? info.leftOn : info.innerOn).push(...conjuncts(j.quals));
    } else if (n.RangeSubselect) {
      throw unsupported(
        "a subquery in FROM",
        "its rows may come from several shards",
        ctx.keyspace,
      );
    } else if (n.RangeFunction) {
      throw unsupported("a function in FROM", "it is not bound to a shard", ctx.keyspace);
    } else {
      throw unsupported(`FROM item ${kindOf(n)}`, "it cannot be routed", ctx.keyspace);
    }
  };
  for (const n of from ?? []) walk(n, false);
  return info;
}

function conjuncts(e: any): any[] {
  if (e === undefined || e === null) return [];
  if (e.BoolExpr?.boolop === "AND_EXPR") return e.BoolExpr.args.flatMap(conjuncts);
  return [e];
}

function andOf(list: any[]): any {
  if (list.length === 0) return undefined;
  if (list.length === 1) return list[0];
  return { BoolExpr: { boolop: "AND_EXPR", args: list } };
}

function columnName(ref: any): { table?: string; column: string } | undefined {
  const f = ref?.ColumnRef?.fields;
  if (!Array.isArray(f) || f.some((x: any) => x.String === undefined)) return undefined;
  const parts: any[] = f.map((x: any) => x.String.sval as string);
  if (parts.length === 1) return { column: parts[0] };
  if (parts.length === 2) return { table: parts[0], column: parts[1] };
  return { table: parts[parts.length - 2], column: parts[parts.length - 1] };
}

/** Which of `tables` a column reference belongs to (by qualifier or, unqualified, by elimination). */
function tableOf(
  ref: { table?: string; column: string },
  tables: TableRef[],
): TableRef | undefined {
  if (ref.table !== undefined) return tables.find((t) => t.alias === ref.table);
  if (tables.length === 1) return tables[0];
  const owners = tables.filter((t) =>
    (t.def?.column_vindexes ?? []).some((cv) => vindexColumns(cv).includes(ref.column))
  );
  return owners.length === 1 ? owners[0] : undefined;
}

function primaryOf(t: TableRef): ColumnVindex | undefined {
  return t.def?.column_vindexes?.[0];
}

function valueOf(e: any): ValueExpr | undefined {
  if (e?.ParamRef) return { kind: "bind", index: e.ParamRef.number };
  if (e?.A_Const?.isnull) return { kind: "const", value: null };
  if (e?.A_Const) {
    const v = constValue(e.A_Const);
    return { kind: "const", value: v === undefined ? null : String(v) };
  }
  if (e?.TypeCast) {
    // A cast can change the value the column is compared with (`42.4::bigint` is 42,
    // `'abc '::char(3)`, `'abcd'::varchar(3)`): casts that would are not used for routing, and a
    // cast to an integer type rounds the value as Postgres does.
    const t = e.TypeCast.typeName;
    const names: string[] = (t?.names ?? []).map((n: any) => n.String?.sval);
    const type = names[names.length - 1] ?? "";
    if ((t?.typmods?.length ?? 0) > 0 || type === "bpchar" || type === "char") return undefined;
    const inner = valueOf(e.TypeCast.arg);
    if (inner?.kind === "bind" && INT_TYPES.has(type)) return { ...inner, cast: "int" };
    if (inner?.kind === "const" && INT_TYPES.has(type) && inner.value !== null) {
      return { kind: "const", value: roundToInteger(inner.value) };
    }
    return inner;
  }
  return undefined;
}

interface RouteChoice {
  opcode: RouteOpcode;
  vindex?: string;
  values?: ValueExpr[];
  score: number;
}

/** Picks the cheapest vindex predicate among the top-level conjuncts for a co-located group. */
function chooseRoute(ctx: Ctx, tables: TableRef[], preds: any[], scope: TableRef[]): RouteChoice {
  const sharded = tables.filter((t) => t.kind === "sharded");
  if (sharded.length === 0) return { opcode: "reference", score: 0 };
  let best: RouteChoice = { opcode: "scatter", score: 1e9 };
  const consider = (colRef: any, values: ValueExpr[], isIn: boolean) => {
    const c = columnName(colRef);
    if (c === undefined) return;
    const t = tableOf(c, scope);
    if (t === undefined || !sharded.includes(t) || t.nullable) return;
    for (const cv of t.def?.column_vindexes ?? []) {
      const cols = vindexColumns(cv);
      if (cols.length !== 1 || cols[0] !== c.column) continue;
      const v = ctx.vindexes.get(cv.name);
      if (v === undefined) continue;
      const score = v.cost * 10 + (isIn ? 1 : 0) + (v.unique ? 0 : 5);
      if (score >= best.score) continue;
      const opcode: RouteOpcode = v.needsLookup ? "lookup" : isIn ? "in" : "equal";
      best = { opcode, vindex: cv.name, values, score };
    }
  };
  for (const p of preds) {
    const a = p.A_Expr;
    if (a === undefined) continue;
    const op = a.name?.[0]?.String?.sval;
    if (a.kind === "AEXPR_OP" && op === "=") {
      const rv = valueOf(a.rexpr);
      const lv = valueOf(a.lexpr);
      if (rv !== undefined) consider(a.lexpr, [rv], false);
      if (lv !== undefined) consider(a.rexpr, [lv], false);
    } else if (a.kind === "AEXPR_IN" && op === "=" && a.rexpr?.List) {
      const vals = a.rexpr.List.items.map(valueOf);
      if (vals.every((v: ValueExpr | undefined) => v !== undefined)) consider(a.lexpr, vals, true);
    }
  }
  return best;
}

function isMultiShard(ctx: Ctx, c: RouteChoice): boolean {
  if (c.opcode === "scatter" || c.opcode === "in") return true;
  if (c.opcode === "lookup") {
    const v = ctx.vindexes.get(c.vindex ?? "");
    return !(v?.unique === true && (c.values?.length ?? 0) === 1);
  }
  return false;
}

function routeFrom(ctx: Ctx, c: RouteChoice, ast: any, original: boolean, write: boolean): Route {
  const r = route(ctx, c.opcode, ast, original, write);
  if (c.vindex !== undefined) r.vindex = c.vindex;
  if (c.values !== undefined) r.values = c.values;
  return r;
}

/** Every table named in sublinks (subqueries in expressions) of `node`. */
function sublinkTables(ctx: Ctx, node: any): TableRef[] {
  const out: TableRef[] = [];
  const walk = (n: any, inSub: boolean) => {
    if (Array.isArray(n)) return n.forEach((x) => walk(x, inSub));
    if (n === null || typeof n !== "object") return;
    if (inSub && n.RangeVar) out.push(resolveTable(ctx, n.RangeVar, false));
    if (n.SubLink) return walk(n.SubLink, true);
    if (n.CommonTableExpr) return walk(n.CommonTableExpr, true);
    for (const v of Object.values(n)) walk(v, inSub);
  };
  walk(node, false);
  return out;
}

function hasNode(node: any, pred: (n: any) => boolean): boolean {
  if (Array.isArray(node)) return node.some((x) => hasNode(x, pred));
  if (node === null || typeof node !== "object") return false;
  if (pred(node)) return true;
  return Object.values(node).some((v) => hasNode(v, pred));
}

function findNode(node: any, pred: (n: any) => boolean): any {
  if (Array.isArray(node)) {
    for (const x of node) {
      const f = findNode(x, pred);
      if (f !== undefined) return f;
    }
    return undefined;
  }
  if (node === null || typeof node !== "object") return undefined;
  if (pred(node)) return node;
  for (const v of Object.values(node)) {
    const f = findNode(v, pred);
    if (f !== undefined) return f;
  }
  return undefined;
}

function isAggregate(n: any): boolean {
  const f = n?.FuncCall;
  if (f === undefined || f.over !== undefined) return false;
  const name = f.funcname?.[f.funcname.length - 1]?.String?.sval;
  return AGGREGATES.has(name);
}

function aggName(n: any): string {
  const f = n.FuncCall;
  return f.funcname[f.funcname.length - 1].String.sval;
}

// ---- SELECT ----

function planSelect(ctx: Ctx, sel: any, original: boolean): Primitive {
  if (sel.op !== undefined && sel.op !== "SETOP_NONE") return planSetOp(ctx, sel);
  if (sel.withClause) {
    throw unsupported(
      "WITH (common table expressions)",
      "a CTE may need rows from several shards",
      ctx.keyspace,
    );
  }
  if (sel.valuesLists) return route(ctx, "reference", { SelectStmt: sel }, original, false);
  const from = collectFrom(ctx, sel.fromClause);
  for (const t of sublinkTables(ctx, [sel.targetList, sel.whereClause, sel.havingClause])) {
    if (t.kind === "sharded") {
      throw unsupported(
        `a subquery on sharded table "${t.name}"`,
        "it may need rows from other shards than the outer query (reference tables are fine)",
        ctx.keyspace,
      );
    }
  }
  const where = conjuncts(sel.whereClause);
  const groups = colocatedGroups(ctx, from.tables, [...where, ...from.innerOn, ...from.leftOn]);
  if (groups.length <= 1) {
    const choice = chooseRoute(ctx, from.tables, [...where, ...from.innerOn], from.tables);
    if (!isMultiShard(ctx, choice)) {
      return routeFrom(ctx, choice, { SelectStmt: sel }, original, false);
    }
    return planScatterSelect(ctx, sel, choice);
  }
  return planCrossShardJoin(ctx, sel, from, where);
}

/** Groups sharded tables joined by equality of their primary vindex columns on the same vindex. */
function colocatedGroups(ctx: Ctx, tables: TableRef[], preds: any[]): TableRef[][] {
  const sharded = tables.filter((t) => t.kind === "sharded");
  const parent = new Map<TableRef, TableRef>(sharded.map((t) => [t, t]));
  const find = (t: TableRef): TableRef => {
    let p = parent.get(t) as TableRef;
    while (p !== parent.get(p)) p = parent.get(p) as TableRef;
    return p;
  };
  for (const p of preds) {
    const a = p.A_Expr;
    if (a?.kind !== "AEXPR_OP" || a.name?.[0]?.String?.sval !== "=") continue;
    const l = columnName(a.lexpr);
    const r = columnName(a.rexpr);
    if (l === undefined || r === undefined) continue;
    const lt = tableOf(l, tables);
    const rt = tableOf(r, tables);
    if (lt === undefined || rt === undefined || lt === rt) continue;
    if (lt.kind !== "sharded" || rt.kind !== "sharded") continue;
    const lp = primaryOf(lt);
    const rp = primaryOf(rt);
    if (lp === undefined || rp === undefined) continue;
    if (vindexColumns(lp)[0] !== l.column || vindexColumns(rp)[0] !== r.column) continue;
    if (!sameVindex(ctx, lp.name, rp.name)) continue;
    parent.set(find(lt), find(rt));
  }
  const out = new Map<TableRef, TableRef[]>();
  for (const t of sharded) out.set(find(t), [...(out.get(find(t)) ?? []), t]);
  return [...out.values()];
}

function sameVindex(ctx: Ctx, a: string, b: string): boolean {
  if (a === b) return true;
  const da = ctx.vs.vindexes[a];
  const db = ctx.vs.vindexes[b];
  if (da === undefined || db === undefined) return false;
  if (da.type !== db.type || da.type === "lookup" || da.type === "lookup_unique") return false;
  return JSON.stringify(da.params ?? {}) === JSON.stringify(db.params ?? {});
}

function planSetOp(ctx: Ctx, sel: any): Primitive {
  if (sel.op !== "SETOP_UNION") {
    throw unsupported(
      sel.op === "SETOP_INTERSECT" ? "INTERSECT" : "EXCEPT",
      "only UNION and UNION ALL are combined across shards",
      ctx.keyspace,
    );
  }
  if (sel.sortClause || sel.limitCount || sel.limitOffset) {
    throw unsupported(
      "ORDER BY or LIMIT on a UNION",
      "put the UNION in a single-shard query",
      ctx.keyspace,
    );
  }
  const inputs = [planSelect(ctx, sel.larg, false), planSelect(ctx, sel.rarg, false)];
  const cat: Primitive = { type: "concatenate", inputs };
  return sel.all ? cat : { type: "distinct", gathers: true, input: cat };
}

function isStar(item: any): boolean {
  const f = item.ResTarget?.val?.ColumnRef?.fields;
  return Array.isArray(f) && f.some((x: any) => x.A_Star !== undefined);
}

function itemName(item: any): string {
  const rt = item.ResTarget;
  if (rt.name) return rt.name;
  const c = columnName(rt.val);
  if (c !== undefined) return c.column;
  if (rt.val?.FuncCall) return aggName(rt.val);
  return "?column?";
}

/** Index of the select item matching a sort/group expression (ordinal, alias or same text). */
function matchItem(items: any[], expr: any): number {
  const star = items.findIndex(isStar);
  const limit = star === -1 ? items.length : star;
  const ord = expr?.A_Const?.ival;
  if (ord !== undefined) {
    const i = (ord.ival ?? 0) - 1;
    if (i < 0 || i >= items.length) return -2;
    return i < limit ? i : -3;
  }
  const c = columnName(expr);
  const text = deparse(expr);
  for (let i = 0; i < limit; i++) {
    const rt = items[i].ResTarget;
    if (c !== undefined && c.table === undefined && rt.name === c.column) return i;
    if (deparse(rt.val) === text) return i;
  }
  return -1;
}

function limitValue(ctx: Ctx, e: any): ValueExpr | undefined {
  if (e === undefined || e === null) return undefined;
  if (e.A_Const?.isnull) return undefined;
  if (e.A_Const) {
    return { kind: "const", value: String(e.A_Const.ival?.ival ?? e.A_Const.fval?.fval ?? 0) };
  }
  if (e.ParamRef) return { kind: "bind", index: e.ParamRef.number };
  throw unsupported("a LIMIT/OFFSET expression", "use a constant or a parameter", ctx.keyspace);
}

function sortKeysOf(ctx: Ctx, sel: any, items: any[], hidden: (expr: any) => number): SortKey[] {
  return (sel.sortClause ?? []).map((s: any) => {
    const sb = s.SortBy;
    if (sb.useOp) {
      throw unsupported("ORDER BY ... USING", "merge needs plain ASC/DESC", ctx.keyspace);
    }
    let col = matchItem(items, sb.node);
    if (col === -2) throw new TesseraError("42P10", `ORDER BY position is not in select list`);
    if (col < 0) col = hidden(sb.node);
    const descending = sb.sortby_dir === "SORTBY_DESC";
    const nullsFirst = sb.sortby_nulls === "SORTBY_NULLS_FIRST" ||
      (sb.sortby_nulls !== "SORTBY_NULLS_LAST" && descending);
    return { column: col, descending, nullsFirst, expr: deparse(sb.node) };
  });
}

function planScatterSelect(ctx: Ctx, sel: any, choice: RouteChoice): Primitive {
  const q: any = structuredClone(sel);
  const items: any[] = q.targetList ?? [];
  q.targetList = items;
  const hasStar = items.some(isStar);
  if (hasNode([items, q.havingClause, q.sortClause], (n) => n.FuncCall?.over !== undefined)) {
    throw unsupported("window functions", "a window spans rows from every shard", ctx.keyspace);
  }
  const other = findNode([items, q.havingClause, q.sortClause], (n) => {
    const f = n.FuncCall;
    if (f === undefined || f.over !== undefined) return false;
    return OTHER_AGGREGATES.has(f.funcname?.[f.funcname.length - 1]?.String?.sval) ||
      f.agg_within_group === true;
  });
  if (other !== undefined) {
    const f = other.FuncCall;
    throw unsupported(
      `aggregate ${f.funcname?.[f.funcname.length - 1]?.String?.sval}()`,
      "its per-shard results cannot be merged (count, sum, min, max and avg can)",
      ctx.keyspace,
    );
  }
  if (hasNode(q.groupClause ?? [], (n) => n.GroupingSet !== undefined)) {
    throw unsupported(
      "GROUP BY ROLLUP, CUBE or GROUPING SETS",
      "grouping sets are not merged across shards",
      ctx.keyspace,
    );
  }
  const aggregating = (q.groupClause?.length ?? 0) > 0 ||
    hasNode([items, q.havingClause], isAggregate);
  const visible = items.length;
  const names = items.map(itemName);
  let hiddenCount = 0;
  const appendHidden = (expr: any): number => {
    items.push({ ResTarget: { val: expr } });
    hiddenCount++;
    return items.length - 1;
  };
  if (!aggregating) {
    if (
      Array.isArray(q.distinctClause) &&
      q.distinctClause.some((d: any) => Object.keys(d).length > 0)
    ) {
      throw unsupported("DISTINCT ON", "it needs all shards' rows sorted together", ctx.keyspace);
    }
    const distinct = Array.isArray(q.distinctClause);
    // With `*` the width is unknown: hidden sort columns are addressed from the end.
    const keys = sortKeysOf(ctx, q, items, (e) => appendHidden(e));
    if (hasStar) {
      for (const k of keys) if (k.column >= visible) k.column = k.column - items.length;
    }
    const count = limitValue(ctx, q.limitCount);
    const offset = limitValue(ctx, q.limitOffset);
    if (count !== undefined && offset !== undefined) {
      q.limitCount = {
        A_Expr: {
          kind: "AEXPR_OP",
          name: [{ String: { sval: "+" } }],
          lexpr: q.limitCount,
          rexpr: q.limitOffset,
        },
      };
    }
    delete q.limitOffset;
    if (count === undefined) delete q.limitCount;
    const r = routeFrom(ctx, choice, { SelectStmt: q }, false, false);
    r.query.original = deparse({ SelectStmt: sel }) === r.query.sql;
    let node: Primitive = keys.length > 0 ? { type: "merge_sort", keys, input: r } : r;
    if (distinct) node = { type: "distinct", gathers: true, input: node };
    if (count !== undefined || offset !== undefined) {
      node = {
        type: "limit",
        ...(count ? { count } : {}),
        ...(offset ? { offset } : {}),
        input: node,
      };
    }
    if (hiddenCount > 0) {
      node = hasStar ? { type: "project", dropLast: hiddenCount, input: node } : {
        type: "project",
        columns: names.map((_, i) => ({ kind: "column", column: i })),
        names,
        input: node,
      };
    }
    return node;
  }
  // Aggregation: partial aggregates per shard, merged here.
  if (hasStar) throw unsupported("SELECT * with aggregates", "name the columns", ctx.keyspace);
  if (Array.isArray(q.distinctClause)) {
    throw unsupported(
      "DISTINCT with aggregates or GROUP BY",
      "not merged across shards yet",
      ctx.keyspace,
    );
  }
  const aggregates: AggregateColumn[] = [];
  const project: ProjectColumn[] = [];
  const originals = items.map((it) => deparse(it.ResTarget.val));
  const addAgg = (expr: any, at: number | undefined): { col: number; avg?: number } => {
    const f = expr.FuncCall;
    const name = aggName(expr);
    if (f.agg_distinct) {
      throw unsupported(
        `${name}(DISTINCT ...)`,
        "distinct aggregates cannot be merged from per-shard results",
        ctx.keyspace,
      );
    }
    if (f.agg_filter || f.agg_order) {
      throw unsupported(
        `${name}(...) with FILTER or ORDER BY`,
        "not merged across shards yet",
        ctx.keyspace,
      );
    }
    const put = (e: any) => at !== undefined ? (items[at].ResTarget.val = e, at) : appendHidden(e);
    if (name === "avg") {
      const sum = put({ FuncCall: { ...f, funcname: [{ String: { sval: "sum" } }] } });
      aggregates.push({ column: sum, fn: "sum" });
      const cnt = appendHidden({ FuncCall: { ...f, funcname: [{ String: { sval: "count" } }] } });
      aggregates.push({ column: cnt, fn: "sum_count" });
      return { col: sum, avg: cnt };
    }
    const col = put(expr);
    aggregates.push({
      column: col,
      fn: name === "count" ? "sum_count" : name as AggregateColumn["fn"],
    });
    return { col };
  };
  for (let i = 0; i < visible; i++) {
    const val = items[i].ResTarget.val;
    if (isAggregate(val)) {
      const r = addAgg(val, i);
      project.push(
        r.avg !== undefined
          ? { kind: "avg", sum: r.col, count: r.avg }
          : { kind: "column", column: i },
      );
    } else if (hasNode(val, isAggregate)) {
      throw unsupported(
        `expression over an aggregate (${deparse(val)})`,
        "only plain count/sum/min/max/avg are merged across shards; compute the expression in the client",
        ctx.keyspace,
      );
    } else project.push({ kind: "column", column: i });
  }
  for (const g of q.groupClause ?? []) {
    const m = matchItem(items, g);
    if (m === -1) appendHidden(g);
  }
  const findAggCol = (expr: any): number => {
    const text = deparse(expr);
    const i = originals.findIndex((o, k) => k < visible && o === text);
    if (i !== -1) {
      const p = project[i];
      if (p?.kind === "avg") {
        throw unsupported(
          "avg(...) in HAVING or ORDER BY",
          "merge it through the select list",
          ctx.keyspace,
        );
      }
      return i;
    }
    if (aggName(expr) === "avg") {
      throw unsupported(
        "avg(...) in HAVING or ORDER BY",
        "not merged across shards yet",
        ctx.keyspace,
      );
    }
    return addAgg(expr, undefined).col;
  };
  let predicate: FilterExpr | undefined;
  if (q.havingClause) {
    predicate = filterExpr(ctx, q.havingClause, items, visible, findAggCol);
    delete q.havingClause;
  }
  const keys = sortKeysOf(
    ctx,
    q,
    items.slice(0, visible),
    (e) => isAggregate(e) ? findAggCol(e) : appendHidden(e),
  );
  delete q.sortClause;
  const count = limitValue(ctx, q.limitCount);
  const offset = limitValue(ctx, q.limitOffset);
  delete q.limitCount;
  delete q.limitOffset;
  const aggCols = new Set(aggregates.map((a) => a.column));
  const groupBy = items.map((_, i) => i).filter((i) => !aggCols.has(i));
  const r = routeFrom(ctx, choice, { SelectStmt: q }, false, false);
  let node: Primitive = {
    type: "aggregate",
    groupBy,
    aggregates,
    scalar: (q.groupClause?.length ?? 0) === 0,
    gathers: true,
    input: r,
  };
  if (predicate) node = { type: "filter", predicate, input: node };
  if (keys.length > 0) node = { type: "sort", keys, gathers: true, input: node };
  if (count !== undefined || offset !== undefined) {
    node = {
      type: "limit",
      ...(count ? { count } : {}),
      ...(offset ? { offset } : {}),
      input: node,
    };
  }
  if (items.length > visible || project.some((p) => p.kind === "avg")) {
    node = { type: "project", columns: project, names, input: node };
  }
  return node;
}

const CMP = new Set(["=", "<>", "<", "<=", ">", ">="]);

function filterExpr(
  ctx: Ctx,
  e: any,
  items: any[],
  visible: number,
  aggCol: (expr: any) => number,
): FilterExpr {
  const operand = (x: any): Operand => {
    const v = valueOf(x);
    if (v !== undefined) return { value: v };
    if (isAggregate(x)) return { column: aggCol(x) };
    const m = matchItem(items.slice(0, visible), x);
    if (m >= 0) return { column: m };
    throw unsupported(
      `HAVING operand ${deparse(x)}`,
      "HAVING is evaluated after the merge: use aggregates, grouped columns, constants or parameters",
      ctx.keyspace,
    );
  };
  if (e.BoolExpr) {
    const args = e.BoolExpr.args.map((a: any) => filterExpr(ctx, a, items, visible, aggCol));
    if (e.BoolExpr.boolop === "NOT_EXPR") return { op: "not", arg: args[0] };
    return { op: e.BoolExpr.boolop === "AND_EXPR" ? "and" : "or", args };
  }
  if (e.NullTest) {
    return {
      op: e.NullTest.nulltesttype === "IS_NULL" ? "is_null" : "is_not_null",
      arg: operand(e.NullTest.arg),
    };
  }
  const a = e.A_Expr;
  const op = a?.name?.[0]?.String?.sval;
  if (a?.kind === "AEXPR_OP" && CMP.has(op)) {
    return { op, left: operand(a.lexpr), right: operand(a.rexpr) };
  }
  throw unsupported(
    `HAVING condition ${deparse(e)}`,
    "only comparisons joined by AND/OR/NOT are evaluated after the merge",
    ctx.keyspace,
  );
}

// ---- cross-shard join ----

function refsOf(e: any, tables: TableRef[], ctx: Ctx): Set<TableRef> {
  const out = new Set<TableRef>();
  const walk = (n: any) => {
    if (Array.isArray(n)) return n.forEach(walk);
    if (n === null || typeof n !== "object") return;
    if (n.ColumnRef) {
      const c = columnName(n);
      if (c === undefined) {
        throw unsupported("* in a cross-shard join", "name the columns", ctx.keyspace);
      }
      const t = tableOf(c, tables);
      if (t === undefined) {
        throw unsupported(
          `unqualified column "${c.column}" in a cross-shard join`,
          "qualify it with its table so Tessera knows which shard query computes it",
          ctx.keyspace,
        );
      }
      out.add(t);
      return;
    }
    for (const v of Object.values(n)) walk(v);
  };
  walk(e);
  return out;
}

function planCrossShardJoin(ctx: Ctx, sel: any, from: FromInfo, where: any[]): Primitive {
  const tables = from.tables;
  if (tables.length !== 2) {
    throw unsupported(
      `a join of ${tables.length} tables that are not co-located`,
      "a cross-shard (nested-loop) join is planned for two tables; join co-located tables on their primary vindex",
      ctx.keyspace,
    );
  }
  if (
    (sel.groupClause?.length ?? 0) > 0 || sel.havingClause || Array.isArray(sel.distinctClause) ||
    hasNode(sel.targetList, isAggregate) ||
    hasNode(sel.targetList, (n) => n.FuncCall?.over !== undefined)
  ) {
    throw unsupported(
      "aggregation, DISTINCT or window functions over a cross-shard join",
      "the joined rows exist only in the gateway; join co-located tables instead",
      ctx.keyspace,
    );
  }
  const [outerT, innerT] = tables as [TableRef, TableRef];
  const outerPreds: any[] = [];
  const innerPreds: any[] = [];
  let joinPred: { outer: any; inner: any } | undefined;
  const left = from.joinType === "left";
  const classify = (p: any, fromOn: boolean) => {
    const refs = refsOf(p, tables, ctx);
    if (refs.size <= 1) {
      const t = refs.size === 0 ? outerT : [...refs][0];
      if (left && t === innerT && !fromOn) {
        throw unsupported(
          "a WHERE condition on the inner table of a cross-shard LEFT JOIN",
          "move it into ON",
          ctx.keyspace,
        );
      }
      if (left && t === outerT && fromOn) {
        throw unsupported(
          "an ON condition on the outer table of a cross-shard LEFT JOIN",
          "move it into WHERE",
          ctx.keyspace,
        );
      }
      (t === outerT ? outerPreds : innerPreds).push(p);
      return;
    }
    const a = p.A_Expr;
    if (a?.kind === "AEXPR_OP" && a.name?.[0]?.String?.sval === "=" && joinPred === undefined) {
      const l = refsOf(a.lexpr, tables, ctx);
      const r = refsOf(a.rexpr, tables, ctx);
      if (l.size === 1 && r.size === 1) {
        joinPred = l.has(outerT)
          ? { outer: a.lexpr, inner: a.rexpr }
          : { outer: a.rexpr, inner: a.lexpr };
        return;
      }
    }
    throw unsupported(
      `join condition ${deparse(p)}`,
      "a cross-shard join needs exactly one equality between the two tables (other conditions must use one table)",
      ctx.keyspace,
    );
  };
  for (const p of where) classify(p, false);
  for (const p of [...from.innerOn, ...from.leftOn]) classify(p, true);
  if (joinPred === undefined) {
    throw unsupported(
      "a cross-shard join without an equality between the tables",
      "it would be a cross product of shards",
      ctx.keyspace,
    );
  }
  const outerItems: any[] = [];
  const innerItems: any[] = [];
  const columns: { side: "outer" | "inner"; column: number }[] = [];
  const names: string[] = [];
  for (const item of sel.targetList ?? []) {
    if (isStar(item)) {
      throw unsupported("* in a cross-shard join", "name the columns", ctx.keyspace);
    }
    const refs = refsOf(item.ResTarget.val, tables, ctx);
    if (refs.size > 1) {
      throw unsupported(
        `select expression ${deparse(item.ResTarget.val)}`,
        "it uses both sides of a cross-shard join",
        ctx.keyspace,
      );
    }
    const side = refs.has(innerT) ? "inner" : "outer";
    const list = side === "inner" ? innerItems : outerItems;
    list.push(item);
    columns.push({ side, column: list.length - 1 });
    names.push(itemName(item));
  }
  const joinCol = outerItems.length;
  outerItems.push({ ResTarget: { val: joinPred.outer } });
  const bind = ctx.nextBind++;
  innerPreds.push({
    A_Expr: {
      kind: "AEXPR_OP",
      name: [{ String: { sval: "=" } }],
      lexpr: joinPred.inner,
      rexpr: { ParamRef: { number: bind } },
    },
  });
  const rangeOf = (t: TableRef) => ({
    RangeVar: {
      relname: t.name,
      inh: true,
      relpersistence: "p",
      ...(t.alias !== t.name ? { alias: { aliasname: t.alias } } : {}),
    },
  });
  const side = (t: TableRef, items: any[], preds: any[]): Route => {
    const ast = {
      SelectStmt: {
        targetList: items,
        fromClause: [rangeOf(t)],
        whereClause: andOf(preds),
        limitOption: "LIMIT_OPTION_DEFAULT",
        op: "SETOP_NONE",
      },
    };
    const alone = { ...t, nullable: false };
    const choice = chooseRoute(ctx, [alone], preds, [alone]);
    return routeFrom(ctx, choice, ast, false, false);
  };
  let node: Primitive = {
    type: "join",
    kind: left ? "left" : "inner",
    outer: side(outerT, outerItems, outerPreds),
    inner: side(innerT, innerItems, innerPreds),
    vars: [{ bind, column: joinCol }],
    columns,
    innerWidth: innerItems.length,
  };
  if (sel.sortClause) {
    const keys = sortKeysOf(ctx, sel, sel.targetList, (e) => {
      throw unsupported(
        `ORDER BY ${deparse(e)} over a cross-shard join`,
        "order by a selected column",
        ctx.keyspace,
      );
    });
    node = { type: "sort", keys, gathers: true, input: node };
  }
  const count = limitValue(ctx, sel.limitCount);
  const offset = limitValue(ctx, sel.limitOffset);
  if (count !== undefined || offset !== undefined) {
    node = {
      type: "limit",
      ...(count ? { count } : {}),
      ...(offset ? { offset } : {}),
      input: node,
    };
  }
  return node;
}

// ---- UPDATE / DELETE ----

function planDml(ctx: Ctx, kind: string, body: any): Primitive {
  const stmt = { [kind]: body };
  const verb = kind === "UpdateStmt" ? "UPDATE" : "DELETE";
  if (body.withClause) {
    throw unsupported(`${verb} with WITH`, "a CTE may need rows from several shards", ctx.keyspace);
  }
  if ((body.fromClause?.length ?? 0) > 0 || (body.usingClause?.length ?? 0) > 0) {
    throw unsupported(
      `${verb} with ${verb === "UPDATE" ? "FROM" : "USING"}`,
      "the other table's rows may be on other shards",
      ctx.keyspace,
    );
  }
  const t = resolveTable(ctx, body.relation, false);
  if (t.kind !== "sharded") return route(ctx, "reference", stmt, true, true);
  for (const s of sublinkTables(ctx, [body.whereClause, body.targetList])) {
    if (s.kind === "sharded") {
      throw unsupported(
        `${verb} with a subquery on sharded table "${s.name}"`,
        "it may need rows from other shards",
        ctx.keyspace,
      );
    }
  }
  const preds = conjuncts(body.whereClause);
  const choice = chooseRoute(ctx, [t], preds, [t]);
  const r = routeFrom(ctx, choice, stmt, true, true);
  const cvs = t.def?.column_vindexes ?? [];
  const primaryCols = vindexColumns(cvs[0] as ColumnVindex);
  const set = new Map<string, any>();
  for (const item of body.targetList ?? []) set.set(item.ResTarget.name, item.ResTarget.val);
  for (const c of primaryCols) {
    if (set.has(c)) {
      throw unsupported(
        `changing primary vindex column "${c}" of "${t.name}"`,
        "it would move the row to another shard; DELETE and INSERT it instead",
        ctx.keyspace,
      );
    }
  }
  const owned = cvs.slice(1).filter((cv) => {
    const d = ctx.vs.vindexes[cv.name];
    return d?.owner === t.name && (d.type === "lookup" || d.type === "lookup_unique");
  }).filter((cv) => kind === "DeleteStmt" || vindexColumns(cv).some((c) => set.has(c)));
  if (owned.length > 0) {
    const cols = [...primaryCols];
    const lookups = owned.map((cv) => {
      const vc = vindexColumns(cv);
      const idx = vc.map((c) => cols.push(c) - 1);
      const entry: { vindex: string; columns: number[]; newValues?: ValueExpr[] } = {
        vindex: cv.name,
        columns: idx,
      };
      if (kind === "UpdateStmt") {
        entry.newValues = vc.map((c) => {
          if (!set.has(c)) {
            throw unsupported(
              `changing only part of multi-column vindex "${cv.name}"`,
              "set all its columns",
              ctx.keyspace,
            );
          }
          const v = valueOf(set.get(c));
          if (v === undefined) {
            throw unsupported(
              `an expression as the new value of lookup vindex column "${c}"`,
              "use a constant or a parameter so the lookup row can be written",
              ctx.keyspace,
            );
          }
          return v;
        });
      }
      return entry;
    });
    const sel = {
      SelectStmt: {
        targetList: cols.map((c) => ({
          ResTarget: { val: { ColumnRef: { fields: [{ String: { sval: c } }] } } },
        })),
        fromClause: [{ RangeVar: { ...body.relation } }],
        whereClause: body.whereClause,
        lockingClause: [{
          LockingClause: { strength: "LCS_FORUPDATE", waitPolicy: "LockWaitBlock" },
        }],
        limitOption: "LIMIT_OPTION_DEFAULT",
        op: "SETOP_NONE",
      },
    };
    r.owned = {
      query: query(sel, false),
      primary: { vindex: (cvs[0] as ColumnVindex).name, columns: primaryCols.map((_, i) => i) },
      lookups,
    };
  }
  return r;
}

// ---- INSERT ----

function planInsert(ctx: Ctx, body: any, all: Map<string, KeyspaceVSchema>): Primitive {
  const stmt = { InsertStmt: body };
  const t = resolveTable(ctx, body.relation, false);
  if (body.withClause) {
    throw unsupported("INSERT with WITH", "a CTE may need rows from several shards", ctx.keyspace);
  }
  if (t.kind !== "sharded") return route(ctx, "reference", stmt, true, true);
  const def = t.def as TableDef;
  const sel = body.selectStmt?.SelectStmt;
  if (body.selectStmt !== undefined && sel?.valuesLists === undefined) {
    throw unsupported(
      "INSERT ... SELECT into a sharded table",
      "each row must be routed by its values; use INSERT ... VALUES",
      ctx.keyspace,
    );
  }
  const cols: string[] = (body.cols ?? []).map((c: any) => c.ResTarget.name);
  if (cols.length === 0 && sel !== undefined) {
    throw unsupported(
      `INSERT into sharded table "${t.name}" without a column list`,
      "name the columns so the vindex columns can be found",
      ctx.keyspace,
    );
  }
  const rows: any[][] = (sel?.valuesLists ?? [{ List: { items: [] } }]).map((
    l: any,
  ) => [...l.List.items]);
  const cvs = def.column_vindexes ?? [];
  const primary = cvs[0] as ColumnVindex;
  if (ctx.vindexes.get(primary.name)?.needsLookup) {
    throw unsupported(
      `INSERT into "${t.name}"`,
      `its primary vindex "${primary.name}" is a lookup, which cannot compute a keyspace id for a new row`,
      ctx.keyspace,
    );
  }
  const ai = def.auto_increment;
  let aiIndex: number | undefined;
  if (ai !== undefined) {
    aiIndex = cols.indexOf(ai.column);
    if (aiIndex === -1) {
      cols.push(ai.column);
      aiIndex = cols.length - 1;
      for (const r of rows) r.push(null);
    }
  }
  const need = new Set<number>();
  const colIndex = (c: string, vindex: string): number => {
    const i = cols.indexOf(c);
    if (i === -1) {
      throw unsupported(
        `INSERT into "${t.name}" without column "${c}"`,
        `it feeds vindex "${vindex}"`,
        ctx.keyspace,
      );
    }
    need.add(i);
    return i;
  };
  const primaryCols = vindexColumns(primary).map((c) => colIndex(c, primary.name));
  // A lookup whose columns the INSERT omits has NULL (no lookup row) unless a column DEFAULT
  // fills it, which Tessera cannot see: such a table should name those columns explicitly.
  const lookups = cvs.slice(1).filter((cv) =>
    ctx.vs.vindexes[cv.name]?.owner === t.name && vindexColumns(cv).every((c) => cols.includes(c))
  ).map((
    cv,
  ) => ({
    vindex: cv.name,
    columns: vindexColumns(cv).map((c) => colIndex(c, cv.name)),
  }));
  if (aiIndex !== undefined) need.add(aiIndex);
  const planRows = rows.map((r, ri) => {
    if (r.length !== cols.length) {
      throw new TesseraError(
        "42601",
        `INSERT has ${r.length} values for ${cols.length} columns in row ${ri + 1}`,
      );
    }
    const exprs: any[] = [];
    const values: (ValueExpr | undefined)[] = [];
    r.forEach((e, i) => {
      const isSeq = i === aiIndex && (e === null || e?.A_Const?.isnull || e?.SetToDefault);
      if (isSeq) {
        exprs.push(null);
        values.push({ kind: "sequence" });
        return;
      }
      exprs.push(e);
      if (!need.has(i)) {
        values.push(undefined);
        return;
      }
      const v = valueOf(e);
      if (v === undefined) {
        throw unsupported(
          `an expression as the value of vindex column "${cols[i]}" (${
            e?.SetToDefault ? "DEFAULT" : deparse(e)
          })`,
          "the row's shard is computed from it: use a constant or a parameter",
          ctx.keyspace,
        );
      }
      values.push(v);
    });
    return { exprs, values };
  });
  const template = structuredClone(body);
  template.cols = cols.map((c) => ({ ResTarget: { name: c } }));
  template.selectStmt = {
    SelectStmt: { valuesLists: [], limitOption: "LIMIT_OPTION_DEFAULT", op: "SETOP_NONE" },
  };
  const plan: Primitive = {
    type: "insert",
    keyspace: ctx.keyspace,
    table: t.name,
    columns: cols,
    template: {
      sql: `INSERT INTO ${t.name} (${cols.join(", ")}) VALUES ...`,
      ast: { InsertStmt: template },
      original: false,
    },
    rows: planRows,
    primary: { vindex: primary.name, columns: primaryCols },
    lookups,
  };
  if (ai !== undefined && aiIndex !== undefined) {
    const dot = ai.sequence.lastIndexOf(".");
    const seqKs = dot === -1 ? ctx.keyspace : ai.sequence.slice(0, dot);
    const seqName = ai.sequence.slice(dot + 1);
    const seqVs = all.get(seqKs);
    if (seqVs?.sharded) {
      throw new TesseraError("22023", `sequence "${ai.sequence}" must be in an unsharded keyspace`);
    }
    plan.autoIncrement = {
      column: aiIndex,
      keyspace: seqKs,
      sql: `SELECT nextval('${seqName.replaceAll("'", "''")}') FROM generate_series(1, $1)`,
    };
  }
  return plan;
}
