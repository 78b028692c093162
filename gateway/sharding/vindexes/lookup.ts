/**
 * Lookup vindexes: `lookup_unique` and `lookup` (non-unique). The keyspace ids live in a table
 * `(from..., to bytea)` in some keyspace, kept up to date by the owner table's writes. The
 * planner emits a lookup step; these classes build the SQL for it and for the maintenance
 * statements. A non-unique lookup table holds one row per owner row (no unique key), so deleting
 * one owner row removes exactly one lookup row.
 *
 * @module
 */

import { bytesToHex, type VindexDef, type VindexType } from "../../../shared/vschema/mod.ts";
import { lookupFromColumns } from "../../../shared/vschema/mod.ts";
import type { BoundSql, LookupVindex, VindexMapping, VindexValue } from "./vindex.ts";

function quoteIdent(s: string): string {
  return `"${s.replaceAll('"', '""')}"`;
}

function text(v: VindexValue): string | null {
  if (v === null) return null;
  if (typeof v === "boolean") return v ? "t" : "f";
  return String(v);
}

function tuple(v: VindexValue | readonly VindexValue[]): VindexValue[] {
  return Array.isArray(v) ? [...v] : [v as VindexValue];
}

/** Keyspace-id bytea literal in text form (`\x0123...`). */
export function byteaText(id: Uint8Array): string {
  return `\\x${bytesToHex(id)}`;
}

function parseBytea(v: string | Uint8Array): Uint8Array {
  if (v instanceof Uint8Array) return v;
  const hex = v.startsWith("\\x") ? v.slice(2) : v;
  const out = new Uint8Array(hex.length / 2);
  for (let i = 0; i < out.length; i++) out[i] = parseInt(hex.slice(2 * i, 2 * i + 2), 16);
  return out;
}

/** A lookup vindex (`lookup_unique` or `lookup`). */
export class TableLookupVindex implements LookupVindex {
  /** Its name in the vschema. */
  readonly name: string;
  /** `lookup_unique` or `lookup`. */
  readonly type: VindexType;
  /** Whether a value maps to at most one keyspace id. */
  readonly unique: boolean;
  /** 10 unique, 20 non-unique. */
  readonly cost: number;
  /** Always true. */
  readonly needsLookup = true;
  /** `keyspace.table`. */
  readonly table: string;
  /** The lookup table's keyspace. */
  readonly keyspace: string;
  /** The table name without keyspace. */
  readonly tableName: string;
  /** `from` columns. */
  readonly fromColumns: readonly string[];
  /** `to` column. */
  readonly toColumn: string;
  /** Write outside the user's transaction. */
  readonly autocommit: boolean;
  /** Owner table. */
  readonly owner: string | undefined;

  /** Creates the vindex `name` from its definition; `defaultKeyspace` qualifies a bare table. */
  constructor(name: string, def: VindexDef, defaultKeyspace: string) {
    this.name = name;
    this.type = def.type;
    this.unique = def.type === "lookup_unique";
    this.cost = this.unique ? 10 : 20;
    const table = String(def.params?.table ?? "");
    const dot = table.lastIndexOf(".");
    this.keyspace = dot === -1 ? defaultKeyspace : table.slice(0, dot);
    this.tableName = dot === -1 ? table : table.slice(dot + 1);
    this.table = `${this.keyspace}.${this.tableName}`;
    this.fromColumns = lookupFromColumns(def);
    this.toColumn = String(def.params?.to ?? "keyspace_id");
    this.autocommit = def.params?.autocommit === true;
    this.owner = def.owner;
  }

  /** Every value needs a lookup, except NULLs, which map to none. */
  map(values: readonly (VindexValue | readonly VindexValue[])[]): VindexMapping[] {
    return values.map((v) =>
      tuple(v).some((x) => x === null) ? { kind: "none" } : { kind: "lookup" }
    );
  }

  /** `SELECT from..., to FROM table WHERE (from...) IN (($1..), ...)`. */
  lookupQuery(values: readonly (VindexValue | readonly VindexValue[])[]): BoundSql {
    const params: (string | null)[] = [];
    const cols = this.fromColumns.map(quoteIdent);
    const tuples = values.map((v) => {
      const t = tuple(v).map((x) => {
        params.push(text(x));
        return `$${params.length}`;
      });
      return t.length === 1 ? t[0] : `(${t.join(", ")})`;
    });
    const lhs = cols.length === 1 ? cols[0] : `(${cols.join(", ")})`;
    return {
      keyspace: this.keyspace,
      sql: `SELECT ${cols.join(", ")}, ${quoteIdent(this.toColumn)} FROM ${
        quoteIdent(this.tableName)
      } WHERE ${lhs} IN (${tuples.join(", ")})`,
      params,
    };
  }

  /** Groups the lookup rows by value (rows are `(from..., to)`, `to` as `\x..` text or bytes). */
  resolve(
    values: readonly (VindexValue | readonly VindexValue[])[],
    rows: readonly (readonly (string | Uint8Array | null)[])[],
  ): Uint8Array[][] {
    const n = this.fromColumns.length;
    const byKey = new Map<string, Uint8Array[]>();
    for (const row of rows) {
      const to = row[n];
      if (to === null || to === undefined) continue;
      const key = JSON.stringify(
        row.slice(0, n).map((c) => c instanceof Uint8Array ? bytesToHex(c) : c),
      );
      const list = byKey.get(key) ?? [];
      list.push(parseBytea(to));
      byKey.set(key, list);
    }
    return values.map((v) => byKey.get(JSON.stringify(tuple(v).map(text))) ?? []);
  }

  /** `INSERT INTO table (from..., to) VALUES (...), ...`. */
  createSql(
    rows: readonly { value: VindexValue | readonly VindexValue[]; id: Uint8Array }[],
  ): BoundSql {
    const params: (string | null)[] = [];
    const tuples = rows.map((r) => {
      const ph = [...tuple(r.value).map(text), byteaText(r.id)].map((p) => {
        params.push(p);
        return `$${params.length}`;
      });
      return `(${ph.join(", ")})`;
    });
    const cols = [...this.fromColumns, this.toColumn].map(quoteIdent).join(", ");
    return {
      keyspace: this.keyspace,
      sql: `INSERT INTO ${quoteIdent(this.tableName)} (${cols}) VALUES ${tuples.join(", ")}`,
      params,
    };
  }

  /** Deletes one lookup row for (value, id). */
  deleteSql(value: VindexValue | readonly VindexValue[], id: Uint8Array): BoundSql {
    const params = [...tuple(value).map(text), byteaText(id)];
    const conds = [...this.fromColumns, this.toColumn].map((c, i) => `${quoteIdent(c)} = $${i + 1}`)
      .join(" AND ");
    const t = quoteIdent(this.tableName);
    return {
      keyspace: this.keyspace,
      sql: `DELETE FROM ${t} WHERE ctid IN (SELECT ctid FROM ${t} WHERE ${conds} LIMIT 1)`,
      params,
    };
  }
}
