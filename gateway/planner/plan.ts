/**
 * The plan contract between the planner (pure) and the engine (I/O): a tree of small primitives.
 * Every SQL text in a plan is a template whose `$n` placeholders name bind values: `$1..$P` are
 * the client's parameters, `$P+1..` the statement's literals (extracted by normalisation, so one
 * plan serves every statement with the same shape), and join variables above those. The engine
 * renders a template for one execution with {@linkcode renderQuery} (./bind.ts) and resolves a
 * {@linkcode ValueExpr} with `resolveValue`.
 *
 * @module
 */

/** A value the engine knows only at execution time. */
export type ValueExpr =
  /**
   * Bind value `$index`: a client parameter, a statement literal or a join variable; `cast: "int"`
   * when the SQL casts it to an integer type (the value is rounded as Postgres's cast does).
   */
  | { kind: "bind"; index: number; cast?: "int" }
  /** A fixed value (text form; `null` is SQL NULL). */
  | { kind: "const"; value: string | null }
  /** The next value of the table's auto-increment sequence (INSERT only). */
  | { kind: "sequence" };

/** A statement to send to shards. */
export interface Query {
  /** SQL template (bind values as `$n`, see the module doc). */
  sql: string;
  /** The template's parse tree, for rendering; never mutate it. */
  // deno-lint-ignore no-explicit-any
  ast: any;
  /** True when it is the client's statement unchanged: the engine may forward the client's text. */
  original: boolean;
}

/**
 * How a route picks shards.
 * - `unsharded`: the keyspace's only shard.
 * - `equal`: the shard of `values[0]` through `vindex`.
 * - `in`: the shards of each of `values` through `vindex`.
 * - `lookup`: run the lookup vindex's query for `values` first, then the shards of the ids found.
 * - `scatter`: every shard.
 * - `reference`: a reference/system table: any one shard for reads, every shard for writes.
 * - `dml_all`: every shard (DDL and maintenance statements).
 */
export type RouteOpcode =
  | "unsharded"
  | "equal"
  | "in"
  | "lookup"
  | "scatter"
  | "reference"
  | "dml_all";

/** Sends a query to one or more shards of a keyspace and streams back their rows. */
export interface Route {
  /** Primitive kind. */
  type: "route";
  /** How shards are chosen. */
  opcode: RouteOpcode;
  /** The keyspace whose shards are targeted. */
  keyspace: string;
  /** What each chosen shard runs. */
  query: Query;
  /** Vindex (by name in the keyspace vschema) for `equal`, `in` and `lookup`. */
  vindex?: string;
  /** The vindex values (one for `equal`; several for `in`/`lookup`). */
  values?: ValueExpr[];
  /**
   * True for INSERT/UPDATE/DELETE/DDL: reference writes go to every shard, and the route changes
   * data (best-effort across shards unless two-phase commit is on).
   */
  write: boolean;
  /**
   * UPDATE/DELETE on a table owning lookup vindexes: before the write, the engine runs
   * `ownedQuery` on the same shards (it selects the primary vindex column(s) then each owned
   * vindex's columns, `FOR UPDATE`), deletes the old lookup rows and, for UPDATE, inserts the new
   * ones (`newValues` per vindex, from the SET clause).
   */
  owned?: {
    query: Query;
    /** The primary vindex and the columns of `query` that feed it. */
    primary: { vindex: string; columns: number[] };
    /** Each owned lookup vindex, the columns of `query` holding its old value, and its new value. */
    lookups: { vindex: string; columns: number[]; newValues?: ValueExpr[] }[];
  };
}

/** A sort key over the rows of the input: `column` (0-based; negative counts from the end). */
export interface SortKey {
  /** Column index; `-1` is the last column (hidden columns are appended at the end). */
  column: number;
  /** Direction. */
  descending: boolean;
  /** Whether NULLs sort first (Postgres default: last for ASC, first for DESC). */
  nullsFirst: boolean;
  /** The expression as written, for EXPLAIN and messages. */
  expr: string;
}

/** Streaming k-way merge of per-shard streams already sorted by `keys` (ORDER BY). */
export interface MergeSort {
  /** Primitive kind. */
  type: "merge_sort";
  /** The merge keys. */
  keys: SortKey[];
  /** A multi-shard route whose query has the same ORDER BY. */
  input: Route;
}

/** How one column of the merged rows combines per-shard partial values. */
export interface AggregateColumn {
  /** Column index in the input rows. */
  column: number;
  /**
   * `sum_count`: sum of per-shard counts (bigint, 0 when no rows); `sum`, `min`, `max`: the same
   * function over the partials (NULLs ignored; NULL when all are NULL).
   */
  fn: "sum_count" | "sum" | "min" | "max";
}

/** Merges per-shard partial aggregates by group (hash aggregation: gathers rows). */
export interface Aggregate {
  /** Primitive kind. */
  type: "aggregate";
  /** Input columns forming the group key (compared by text value; NULLs group together). */
  groupBy: number[];
  /** Aggregated columns; every other column is a group key or taken from the group's first row. */
  aggregates: AggregateColumn[];
  /** With no GROUP BY and no input rows, emit one row (count 0, others NULL) as Postgres does. */
  scalar: boolean;
  /** The primitive holds rows in memory: the engine enforces its byte limit (54000). */
  gathers: true;
  /** Input. */
  input: Primitive;
}

/** A boolean expression over input columns (HAVING after a merge). */
export type FilterExpr =
  | { op: "and" | "or"; args: FilterExpr[] }
  | { op: "not"; arg: FilterExpr }
  | { op: "=" | "<>" | "<" | "<=" | ">" | ">="; left: Operand; right: Operand }
  | { op: "is_null" | "is_not_null"; arg: Operand };

/** An operand of a {@linkcode FilterExpr}: an input column or a value. */
export type Operand = { column: number } | { value: ValueExpr };

/** Keeps rows for which `predicate` is true (SQL three-valued logic: NULL drops the row). */
export interface Filter {
  /** Primitive kind. */
  type: "filter";
  /** The predicate; comparisons are numeric when both sides parse as numbers, else textual. */
  predicate: FilterExpr;
  /** Input. */
  input: Primitive;
}

/** In-memory sort (after an aggregate, or over a cross-shard join); gathers rows. */
export interface Sort {
  /** Primitive kind. */
  type: "sort";
  /** Keys. */
  keys: SortKey[];
  /** Holds rows in memory. */
  gathers: true;
  /** Input. */
  input: Primitive;
}

/** Removes duplicate rows (over all columns); gathers the distinct rows seen. */
export interface Distinct {
  /** Primitive kind. */
  type: "distinct";
  /** Holds rows in memory. */
  gathers: true;
  /** Input. */
  input: Primitive;
}

/** Skips `offset` rows then passes at most `count` (either absent means no limit/offset). */
export interface Limit {
  /** Primitive kind. */
  type: "limit";
  /** Row count. */
  count?: ValueExpr;
  /** Rows to skip. */
  offset?: ValueExpr;
  /** Input. */
  input: Primitive;
}

/** One output column of a {@linkcode Project}. */
export type ProjectColumn =
  /** An input column unchanged. */
  | { kind: "column"; column: number }
  /** `avg` from a partial sum and count: `sum / count` as numeric, NULL when count is 0. */
  | { kind: "avg"; sum: number; count: number };

/** Computes the output columns (avg) and drops hidden columns; `keep` columns come first. */
export interface Project {
  /** Primitive kind. */
  type: "project";
  /**
   * Output columns. When `dropLast` is set instead, all input columns but the last `dropLast`
   * pass through (used when `SELECT *` makes the width unknown at plan time).
   */
  columns?: ProjectColumn[];
  /** Number of hidden trailing columns to drop. */
  dropLast?: number;
  /** Output column names (for RowDescription) where known. */
  names?: string[];
  /** Input. */
  input: Primitive;
}

/** Concatenates the rows of its inputs (UNION ALL); all inputs have the same columns. */
export interface Concatenate {
  /** Primitive kind. */
  type: "concatenate";
  /** Inputs, in order. */
  inputs: Primitive[];
}

/**
 * Nested-loop join across shards: runs `outer`; for each outer row sets bind values `vars`
 * (bind index → outer column) and runs `inner` (or batches several outer rows). `left`: an outer
 * row without inner rows is emitted with NULLs for the inner columns.
 */
export interface Join {
  /** Primitive kind. */
  type: "join";
  /** `inner` or `left`. */
  kind: "inner" | "left";
  /** Outer side. */
  outer: Primitive;
  /** Inner side, using the join variables. */
  inner: Primitive;
  /** Join variables: bind index set from an outer column for each outer row. */
  vars: { bind: number; column: number }[];
  /** Output columns, in order. */
  columns: { side: "outer" | "inner"; column: number }[];
  /** Number of inner columns (for NULL-filling left joins). */
  innerWidth: number;
}

/** One INSERT row: per column, its expression and (for vindex columns) its value. */
export interface InsertRow {
  /** Expression node of each value, in `columns` order (`null` where the engine fills a sequence value). */
  // deno-lint-ignore no-explicit-any
  exprs: (any | null)[];
  /** Value of each column the engine needs (vindex and auto-increment columns), else undefined. */
  values: (ValueExpr | undefined)[];
}

/**
 * INSERT into a sharded table, routed per row: for each row fill the auto-increment column from
 * the sequence, compute the primary vindex's keyspace id, write the owned lookup rows (through
 * the lookup's keyspace), group rows by shard and send each shard the template with its rows
 * (`buildInsertQuery` in ./bind.ts).
 */
export interface Insert {
  /** Primitive kind. */
  type: "insert";
  /** Keyspace. */
  keyspace: string;
  /** Table. */
  table: string;
  /** Column names, in order (the auto-increment column added when the statement omits it). */
  columns: string[];
  /** The INSERT with an empty VALUES list; ON CONFLICT and RETURNING kept. */
  template: Query;
  /** The rows. */
  rows: InsertRow[];
  /** The primary vindex and its columns (indexes into `columns`). */
  primary: { vindex: string; columns: number[] };
  /** Owned lookup vindexes to maintain, and their columns. */
  lookups: { vindex: string; columns: number[] }[];
  /** Auto-increment: the column (index) and the sequence's keyspace and SQL (`$1` = how many). */
  autoIncrement?: { column: number; keyspace: string; sql: string };
}

/** Transaction control, handled by the engine's session (multi-shard: best effort). */
export interface Transaction {
  /** Primitive kind. */
  type: "transaction";
  /** What it does. */
  action: "begin" | "commit" | "rollback" | "savepoint" | "release" | "rollback_to" | "prepare";
  /** The statement as written (for the shards already in the transaction). */
  sql: string;
}

/** Session statements: SET/RESET (replayed on every shard connection), SHOW (any one shard). */
export interface Session {
  /** Primitive kind. */
  type: "session";
  /** `set` (including RESET, SET LOCAL), `show`, `discard`. */
  action: "set" | "show" | "discard";
  /** The statement as written. */
  sql: string;
}

/** `EXPLAIN`: the Tessera plan (rendered with `explainPlan`), then each route's shard plan. */
export interface Explain {
  /** Primitive kind. */
  type: "explain";
  /** The options as written (e.g. `ANALYZE`), passed to the shards' EXPLAIN. */
  options: string;
  /** The explained statement's plan. */
  input: Primitive;
}

/** Any plan node. */
export type Primitive =
  | Route
  | MergeSort
  | Aggregate
  | Filter
  | Sort
  | Distinct
  | Limit
  | Project
  | Concatenate
  | Join
  | Insert
  | Transaction
  | Session
  | Explain;

/** A planned statement; cacheable, shared between executions. */
export interface Plan {
  /** The session keyspace. */
  keyspace: string;
  /** Normalised statement text (the cache key). */
  normalized: string;
  /** How many client parameters (`$1..$P`) the statement has. */
  paramCount: number;
  /** How many literals normalisation extracted (`$P+1..$P+L`). */
  literalCount: number;
  /** The root primitive. */
  root: Primitive;
}
