/**
 * The vschema of a keyspace: which vindexes exist and how each table's rows map to keyspace ids.
 * Vitess-like JSON, validated with zod plus cross-field rules; an invalid vschema is reported with
 * the path of every offending field and the reason.
 *
 * @module
 */

import { z } from "zod";
import { SqlState, TesseraError } from "../errors/mod.ts";

/** Vindex kinds. `hash` and `identity` are functional (computed); the lookups are backed by a table. */
export const VINDEX_TYPES = ["hash", "identity", "lookup_unique", "lookup"] as const;
/** A vindex kind. */
export type VindexType = (typeof VINDEX_TYPES)[number];

/** Whether a vindex kind maps each value to at most one keyspace id. */
export function isUniqueVindexType(type: VindexType): boolean {
  return type !== "lookup";
}

const IDENT = /^[A-Za-z_][A-Za-z0-9_$]{0,62}$/;
const QUALIFIED = /^(?:[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}\.)?[A-Za-z_][A-Za-z0-9_$]{0,62}$/;

/** A column or table name: a Postgres identifier as written unquoted (at most 63 characters). */
export const IdentSchema = z.string().regex(IDENT, {
  error: "must be an identifier: a letter or '_', then letters, digits, '_' or '$' (at most 63)",
});

/** `table` or `keyspace.table`. */
export const QualifiedTableSchema = z.string().regex(QUALIFIED, {
  error: "must be 'table' or 'keyspace.table'",
});

const ParamValueSchema = z.union([z.string(), z.number(), z.boolean(), z.array(z.string())]);

/** One vindex definition. */
export const VindexDefSchema = z.strictObject({
  type: z.enum(VINDEX_TYPES),
  /**
   * Kind-specific parameters. `hash`: `key` = `integer` (default) or `text`. Lookups: `table`
   * (`keyspace.table` backing it), `from` (column or columns of the lookup table holding the
   * value), `to` (column holding the keyspace id, bytea), `autocommit` (write lookup rows
   * outside the user's transaction).
   */
  params: z.record(z.string(), ParamValueSchema).optional(),
  /** The table whose INSERT/UPDATE/DELETE keeps a lookup vindex's table up to date. */
  owner: IdentSchema.optional(),
});
/** One vindex definition. */
export type VindexDef = z.infer<typeof VindexDefSchema>;

/** A table column bound to a vindex: `column` or `columns`, and the vindex `name`. */
export const ColumnVindexSchema = z.strictObject({
  column: IdentSchema.optional(),
  columns: z.array(IdentSchema).min(1).optional(),
  name: IdentSchema,
});
/** A column vindex. */
export type ColumnVindex = z.infer<typeof ColumnVindexSchema>;

/** Fills a column from a sequence when an INSERT does not give it. */
export const AutoIncrementSchema = z.strictObject({
  column: IdentSchema,
  /** The sequence table: `keyspace.table` (a `type: "sequence"` table of an unsharded keyspace). */
  sequence: QualifiedTableSchema,
});
/** An auto-increment definition. */
export type AutoIncrement = z.infer<typeof AutoIncrementSchema>;

/** One table of a keyspace. */
export const TableDefSchema = z.strictObject({
  /** `reference`: copied to every shard; `sequence`: a sequence table (unsharded keyspaces). */
  type: z.enum(["reference", "sequence"]).optional(),
  /** The first is the primary vindex; it must be unique. */
  column_vindexes: z.array(ColumnVindexSchema).optional(),
  auto_increment: AutoIncrementSchema.optional(),
});
/** One table definition. */
export type TableDef = z.infer<typeof TableDefSchema>;

/** The vschema of one keyspace, as stored in topo at `keyspaces/<ks>/vschema`. */
export const KeyspaceVSchemaSchema = z.strictObject({
  sharded: z.boolean(),
  vindexes: z.record(IdentSchema, VindexDefSchema).default({}),
  tables: z.record(IdentSchema, TableDefSchema).default({}),
}).superRefine((vs, ctx) => {
  const issue = (path: (string | number)[], message: string) =>
    ctx.addIssue({ code: "custom", path, message });
  for (const [name, def] of Object.entries(vs.vindexes)) {
    const params = def.params ?? {};
    if (def.type === "hash") {
      const key = params.key ?? "integer";
      if (key !== "integer" && key !== "text") {
        issue(
          ["vindexes", name, "params", "key"],
          `must be 'integer' or 'text': received '${key}'`,
        );
      }
    }
    if (def.type === "lookup" || def.type === "lookup_unique") {
      if (typeof params.table !== "string" || !QUALIFIED.test(params.table)) {
        issue(["vindexes", name, "params", "table"], "a lookup needs 'table' ('keyspace.table')");
      }
      const from = params.from;
      const fromOk = (typeof from === "string" && from.split(",").every((c) => IDENT.test(c))) ||
        (Array.isArray(from) && from.length > 0 && from.every((c) => IDENT.test(c)));
      if (!fromOk) {
        issue(["vindexes", name, "params", "from"], "a lookup needs 'from' column(s)");
      }
      if (typeof params.to !== "string" || !IDENT.test(params.to)) {
        issue(["vindexes", name, "params", "to"], "a lookup needs a 'to' column");
      }
      if (params.autocommit !== undefined && typeof params.autocommit !== "boolean") {
        issue(["vindexes", name, "params", "autocommit"], "must be a boolean");
      }
      if (def.owner !== undefined && !(def.owner in vs.tables)) {
        issue(["vindexes", name, "owner"], `names table '${def.owner}', which is not in 'tables'`);
      }
    }
  }
  for (const [tname, t] of Object.entries(vs.tables)) {
    const base = ["tables", tname];
    if (t.type === "sequence" && vs.sharded) {
      issue([...base, "type"], "a sequence table must be in an unsharded keyspace");
    }
    if (t.type === "reference" && !vs.sharded) {
      issue([...base, "type"], "reference tables only make sense in a sharded keyspace");
    }
    const cvs = t.column_vindexes ?? [];
    if (!vs.sharded && cvs.length > 0) {
      issue([...base, "column_vindexes"], "an unsharded keyspace has no vindexes");
    }
    if (t.type !== undefined && cvs.length > 0) {
      issue([...base, "column_vindexes"], `a ${t.type} table has no vindexes`);
    }
    if (vs.sharded && t.type === undefined && cvs.length === 0) {
      issue([...base, "column_vindexes"], "a sharded table needs a primary vindex");
    }
    cvs.forEach((cv, i) => {
      const path = [...base, "column_vindexes", i];
      const cols = cv.columns ?? (cv.column !== undefined ? [cv.column] : []);
      if ((cv.column === undefined) === (cv.columns === undefined)) {
        issue(path, "give exactly one of 'column' or 'columns'");
      }
      const def = vs.vindexes[cv.name];
      if (def === undefined) {
        issue([...path, "name"], `names vindex '${cv.name}', which is not in 'vindexes'`);
        return;
      }
      if (i === 0 && !isUniqueVindexType(def.type)) {
        issue(
          [...path, "name"],
          `the primary vindex must be unique (hash, identity or lookup_unique): '${cv.name}' is ${def.type}`,
        );
      }
      if ((def.type === "hash" || def.type === "identity") && cols.length !== 1) {
        issue(path, `a ${def.type} vindex takes exactly one column`);
      }
      if (def.type === "lookup" || def.type === "lookup_unique") {
        const from = def.params?.from;
        const n = Array.isArray(from) ? from.length : String(from ?? "").split(",").length;
        if (cols.length !== n) {
          issue(path, `vindex '${cv.name}' maps ${n} column(s): received ${cols.length}`);
        }
      }
    });
    if (t.auto_increment !== undefined && t.type !== undefined) {
      issue([...base, "auto_increment"], `a ${t.type} table has no auto_increment`);
    }
  }
});
/** A validated keyspace vschema. */
export type KeyspaceVSchema = z.infer<typeof KeyspaceVSchemaSchema>;

/** One problem found in a vschema. */
export interface VSchemaIssue {
  /** Dotted path of the field, e.g. `tables.orders.column_vindexes.0.name`. */
  path: string;
  /** Why it is wrong. */
  message: string;
}

/** Result of {@linkcode validateVSchema}. */
export type VSchemaValidation =
  | { ok: true; vschema: KeyspaceVSchema }
  | { ok: false; issues: VSchemaIssue[] };

/** Validates `json` as a keyspace vschema, returning every issue with its field path. */
export function validateVSchema(json: unknown): VSchemaValidation {
  const r = KeyspaceVSchemaSchema.safeParse(json);
  if (r.success) return { ok: true, vschema: r.data };
  return {
    ok: false,
    issues: r.error.issues.map((i) => ({
      path: i.path.length === 0 ? "(root)" : i.path.map(String).join("."),
      message: i.message,
    })),
  };
}

/**
 * Parses `json` as the vschema of `keyspace`. Throws a TesseraError `22023` whose message names
 * each offending field and the reason.
 */
export function parseVSchema(json: unknown, keyspace = "keyspace"): KeyspaceVSchema {
  const r = validateVSchema(json);
  if (r.ok) return r.vschema;
  const list = r.issues.map((i) => `${i.path}: ${i.message}`).join("; ");
  throw new TesseraError(
    SqlState.invalidParameterValue,
    `invalid vschema for '${keyspace}': ${list}`,
    {
      detail: r.issues.map((i) => `${i.path}: ${i.message}`).join("\n"),
    },
  );
}

/** The columns of a column vindex. */
export function vindexColumns(cv: ColumnVindex): string[] {
  return cv.columns ?? (cv.column !== undefined ? [cv.column] : []);
}

/** The `from` columns of a lookup vindex's params. */
export function lookupFromColumns(def: VindexDef): string[] {
  const from = def.params?.from;
  if (Array.isArray(from)) return from;
  return String(from ?? "").split(",").filter((c) => c !== "");
}
