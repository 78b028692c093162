/**
 * The vindex interface: maps column values to keyspace ids. Functional vindexes (`hash`,
 * `identity`) compute ids; lookup vindexes (`lookup_unique`, `lookup`) answer "needs lookup" with
 * the query the engine runs against the lookup table, and build the SQL that keeps that table up
 * to date. Vindexes do no I/O.
 *
 * @module
 */

import type { VindexType } from "../../../shared/vschema/mod.ts";

/**
 * A value as the planner or engine has it: a JS number/bigint, the text form of a parameter or
 * literal (`"42"`, `"alice@x"`), a boolean, or `null`.
 */
export type VindexValue = string | number | bigint | boolean | null;

/** A SQL statement with its parameters (`$1`..`$n`, text form), for the engine to send. */
export interface BoundSql {
  /** The keyspace the statement is planned and run in (the lookup table's keyspace). */
  keyspace: string;
  /** SQL text with `$n` placeholders. */
  sql: string;
  /** Parameter values in text form (`null` for SQL NULL). */
  params: (string | null)[];
}

/** What a vindex says about one value. */
export type VindexMapping =
  /** The value's keyspace id. */
  | { kind: "id"; id: Uint8Array }
  /** No row can have this value (NULL, or not a valid key): no shard needs it. */
  | { kind: "none" }
  /** The keyspace ids are in the lookup table; run {@linkcode LookupVindex.lookupQuery}. */
  | { kind: "lookup" };

/** One vindex instance, named in a vschema. */
export interface Vindex {
  /** Its name in the vschema. */
  readonly name: string;
  /** Its kind. */
  readonly type: VindexType;
  /** Whether each value maps to at most one keyspace id. */
  readonly unique: boolean;
  /** Relative cost of using it to route (lower is preferred): identity 0, hash 1, lookups 10/20. */
  readonly cost: number;
  /** Whether {@linkcode map} answers `lookup` (the engine must query a table first). */
  readonly needsLookup: boolean;
  /** Maps each value (a tuple for multi-column vindexes) to keyspace ids. */
  map(values: readonly (VindexValue | readonly VindexValue[])[]): VindexMapping[];
}

/** A vindex backed by a lookup table. */
export interface LookupVindex extends Vindex {
  /** `keyspace.table` of the lookup table. */
  readonly table: string;
  /** The table's `from` columns. */
  readonly fromColumns: readonly string[];
  /** The table's `to` column (bytea keyspace id). */
  readonly toColumn: string;
  /** Whether lookup rows are written outside the user's transaction. */
  readonly autocommit: boolean;
  /** The table whose writes maintain it. */
  readonly owner: string | undefined;
  /**
   * The query that finds the keyspace ids of `values`: returns rows `(from..., to)`; pass them to
   * {@linkcode resolve}.
   */
  lookupQuery(values: readonly (VindexValue | readonly VindexValue[])[]): BoundSql;
  /** Keyspace ids per value, from the rows {@linkcode lookupQuery} returned. */
  resolve(
    values: readonly (VindexValue | readonly VindexValue[])[],
    rows: readonly (readonly (string | Uint8Array | null)[])[],
  ): Uint8Array[][];
  /** INSERT of one lookup row per value (owner row inserted with that keyspace id). */
  createSql(
    rows: readonly { value: VindexValue | readonly VindexValue[]; id: Uint8Array }[],
  ): BoundSql;
  /** DELETE of the lookup row of one owner row (value, keyspace id). */
  deleteSql(value: VindexValue | readonly VindexValue[], id: Uint8Array): BoundSql;
}

/** Whether `v` is a {@linkcode LookupVindex}. */
export function isLookupVindex(v: Vindex): v is LookupVindex {
  return v.needsLookup;
}

/**
 * Parses an integer key: a number, bigint or decimal text. Returns `undefined` for anything else
 * (NULL, fractions, non-numeric text). Values outside the int64/uint64 range are `undefined`.
 */
export function integerKey(v: VindexValue | readonly VindexValue[]): bigint | undefined {
  if (Array.isArray(v)) return v.length === 1 ? integerKey(v[0] as VindexValue) : undefined;
  let n: bigint;
  if (typeof v === "bigint") n = v;
  else if (typeof v === "number") {
    if (!Number.isSafeInteger(v)) return undefined;
    n = BigInt(v);
  } else if (typeof v === "string") {
    const t = v.trim();
    if (/^[+-]?\d+$/.test(t)) n = BigInt(t);
    else {
      // A numeric literal with an integral value (`42.0`, `4.2e1`) equals that integer.
      const m = /^([+-]?)(\d*)(?:\.(\d*))?(?:[eE]([+-]?\d{1,4}))?$/.exec(t);
      if (m === null || (m[2] === "" && (m[3] ?? "") === "")) return undefined;
      const digits = (m[2] || "0") + (m[3] ?? "");
      const exp = Number(m[4] ?? "0") - (m[3] ?? "").length;
      let x = BigInt(digits);
      if (exp >= 0) x *= 10n ** BigInt(exp);
      else {
        const d = 10n ** BigInt(-exp);
        if (x % d !== 0n) return undefined;
        x /= d;
      }
      n = m[1] === "-" ? -x : x;
    }
  } else return undefined;
  if (n < -(2n ** 63n) || n >= 2n ** 64n) return undefined;
  return n;
}

/** The 8-byte big-endian form of `n` taken modulo 2^64 (negatives as two's complement). */
export function uint64Bytes(n: bigint): Uint8Array {
  const out = new Uint8Array(8);
  new DataView(out.buffer).setBigUint64(0, BigInt.asUintN(64, n));
  return out;
}
