/**
 * The engine: runs a plan's tree of primitives against the shards and yields the merged rows.
 * Routes stream (rows are pulled shard by shard, or merged k-way for ORDER BY); the primitives
 * that must hold rows (aggregate, sort, distinct, the outer side of a join) count the bytes they
 * hold and fail with SQLSTATE 54000 past the session's limit, so a huge scatter never exhausts
 * the gateway's memory.
 *
 * @module
 */

import { SqlState, TesseraError } from "../../shared/errors/mod.ts";
import { shardForKeyspaceId } from "../../shared/vschema/mod.ts";
import {
  type Aggregate,
  type Bindings,
  buildInsertQuery,
  type FilterExpr,
  type Insert,
  type Join,
  type Operand,
  type Primitive,
  type Query,
  renderQuery,
  resolveValue,
  type Route,
  type SortKey,
} from "../planner/mod.ts";
import {
  isLookupVindex,
  type LookupVindex,
  type Vindex,
  type VindexValue,
} from "../sharding/mod.ts";
import type { Field, RowStream, ShardConn } from "./shard_conn.ts";
import {
  averageOf,
  compareDecimal,
  compareText,
  compareValues,
  FLOAT8_OID,
  kindOf,
  NUMERIC_OID,
  parseDecimal,
  type Row,
  sumValues,
  type ValueKind,
} from "./values.ts";

/** What the engine needs from its session. */
export interface EngineContext {
  /** The shards of `keyspace`, in key-range order. */
  shards(keyspace: string): string[];
  /** The session's connection to a shard (opened, and joined to the open transaction, on demand). */
  conn(keyspace: string, shard: string): Promise<ShardConn>;
  /** A vindex of a keyspace's vschema. */
  vindex(keyspace: string, name: string): Vindex;
  /** Most bytes the primitives of one statement may hold. */
  memoryLimit: number;
}

/** Rows coming out of a primitive. */
export interface Cursor {
  /** Columns (`null`: a command without rows). */
  fields: Field[] | null;
  /** The next row, or null at the end. */
  next(): Promise<Row | null>;
  /** Stops early: the shards' remaining replies are read and dropped. */
  close(): Promise<void>;
  /** The command tag when it is not `SELECT n` (writes, DDL), once the cursor ended. */
  tag?(): string;
}

/** Counts the bytes gathered by one statement's primitives. */
export class MemoryBudget {
  #used = 0;
  constructor(readonly limit: number) {}

  /** Adds a row's bytes; throws 54000 past the limit. */
  addRow(row: Row): void {
    let n = 48 + row.length * 8;
    for (const v of row) if (v !== null) n += v.length * 2;
    this.add(n);
  }

  /** Adds `n` bytes. */
  add(n: number): void {
    this.#used += n;
    if (this.#used > this.limit) {
      throw new TesseraError(
        SqlState.programLimitExceeded,
        `the result gathered in the gateway exceeds its limit of ${this.limit} bytes`,
        {
          hint:
            "add a WHERE clause that pins a shard, or a LIMIT, or raise the gateway's --max-result-bytes",
        },
      );
    }
  }
}

function arrayCursor(fields: Field[] | null, rows: Row[], tag?: string): Cursor {
  let i = 0;
  return {
    fields,
    next: () => Promise.resolve(i < rows.length ? rows[i++]! : null),
    close: async () => {},
    ...(tag !== undefined ? { tag: () => tag } : {}),
  };
}

function textValue(v: VindexValue): string | null {
  if (v === null) return null;
  if (typeof v === "boolean") return v ? "t" : "f";
  return String(v);
}

/** Runs plans for one session. */
export class Engine {
  #ctx: EngineContext;

  constructor(ctx: EngineContext) {
    this.#ctx = ctx;
  }

  /**
   * Runs `root` with bindings `b`. `clientSql`, the client's text of this one statement, is sent
   * as is (with the client's parameters) when the root is a route whose query is the client's
   * statement unchanged: no rendering on the hot path of single-shard statements.
   */
  async run(
    root: Primitive,
    b: Bindings,
    budget: MemoryBudget,
    clientSql?: string,
  ): Promise<Cursor> {
    switch (root.type) {
      case "route":
        return await this.#route(
          root,
          b,
          root.query.original && b.vars.size === 0 ? clientSql : undefined,
        );
      case "merge_sort": {
        const streams = await this.#routeStreams(root.input, b);
        return await mergeSorted(streams, root.keys);
      }
      case "aggregate":
        return await this.#aggregate(root, b, budget);
      case "filter": {
        const input = await this.run(root.input, b, budget);
        const pred = root.predicate;
        return {
          fields: input.fields,
          next: async () => {
            for (let r = await input.next(); r !== null; r = await input.next()) {
              if (evalFilter(pred, r, b, input.fields) === true) return r;
            }
            return null;
          },
          close: () => input.close(),
        };
      }
      case "sort": {
        const input = await this.run(root.input, b, budget);
        const rows = await gather(input, budget);
        const cmp = rowComparator(root.keys, input.fields);
        rows.sort(cmp);
        return arrayCursor(input.fields, rows);
      }
      case "distinct": {
        const input = await this.run(root.input, b, budget);
        const seen = new Set<string>();
        return {
          fields: input.fields,
          next: async () => {
            for (let r = await input.next(); r !== null; r = await input.next()) {
              const key = rowKey(r);
              if (seen.has(key)) continue;
              budget.add(key.length * 2 + 48);
              seen.add(key);
              return r;
            }
            return null;
          },
          close: () => input.close(),
        };
      }
      case "limit": {
        const count = root.count === undefined ? undefined : limitValue(root.count, b, "LIMIT");
        const offset = root.offset === undefined ? 0 : limitValue(root.offset, b, "OFFSET") ?? 0;
        const input = await this.run(root.input, b, budget);
        let skipped = 0;
        let passed = 0;
        let closed = false;
        return {
          fields: input.fields,
          next: async () => {
            if (count !== undefined && passed >= count) {
              if (!closed) {
                closed = true;
                await input.close();
              }
              return null;
            }
            for (let r = await input.next(); r !== null; r = await input.next()) {
              if (skipped < offset) {
                skipped++;
                continue;
              }
              passed++;
              return r;
            }
            return null;
          },
          close: () => closed ? Promise.resolve() : input.close(),
        };
      }
      case "project":
        return await this.#project(root, b, budget);
      case "concatenate": {
        const inputs = root.inputs;
        let i = 0;
        let current = await this.run(inputs[0]!, b, budget);
        const fields = current.fields;
        return {
          fields,
          next: async () => {
            for (;;) {
              const r = await current.next();
              if (r !== null) return r;
              if (++i >= inputs.length) return null;
              current = await this.run(inputs[i]!, b, budget);
            }
          },
          close: () => current.close(),
        };
      }
      case "join":
        return await this.#join(root, b, budget);
      case "insert":
        return await this.#insert(root, b);
      default:
        throw new TesseraError(
          SqlState.internalError,
          `the engine cannot run a ${root.type} primitive here`,
        );
    }
  }

  // ------------------------------------------------------------------ routes

  /** The shards a route goes to. */
  async routeShards(route: Route, b: Bindings): Promise<string[]> {
    const all = this.#ctx.shards(route.keyspace);
    if (all.length === 0) {
      throw new TesseraError(
        SqlState.connectionFailure,
        `keyspace "${route.keyspace}" has no shards in topo`,
      );
    }
    switch (route.opcode) {
      case "unsharded":
        return [all[0]!];
      case "scatter":
      case "dml_all":
        return all;
      case "reference":
        return route.write ? all : [all[0]!];
      case "equal":
      case "in": {
        const vindex = this.#ctx.vindex(route.keyspace, route.vindex!);
        const values = (route.values ?? []).map((v) => resolveValue(v, b));
        const ids = vindex.map(values).flatMap((m) => m.kind === "id" ? [m.id] : []);
        return shardsOf(all, ids);
      }
      case "lookup": {
        const vindex = this.#ctx.vindex(route.keyspace, route.vindex!);
        if (!isLookupVindex(vindex)) {
          throw new TesseraError(SqlState.internalError, `vindex ${route.vindex} is not a lookup`);
        }
        const values = (route.values ?? []).map((v) => resolveValue(v, b)).filter((v) =>
          v !== null
        );
        if (values.length === 0) return [all[0]!];
        const ids = (await this.#lookupIds(vindex, values)).flat();
        return shardsOf(all, ids);
      }
    }
  }

  async #lookupIds(vindex: LookupVindex, values: VindexValue[]): Promise<Uint8Array[][]> {
    const q = vindex.lookupQuery(values);
    const rows: Row[] = [];
    for (const shard of this.#ctx.shards(q.keyspace)) {
      const conn = await this.#ctx.conn(q.keyspace, shard);
      rows.push(...(await conn.query(q.sql, q.params)).rows);
    }
    return vindex.resolve(values, rows);
  }

  async #runOn(
    keyspace: string,
    shards: string[],
    query: Query,
    b: Bindings,
    clientSql?: string,
  ): Promise<RowStream[]> {
    const { sql, params } = clientSql !== undefined
      ? { sql: clientSql, params: b.params }
      : renderQuery(query, b);
    const streams: RowStream[] = [];
    for (const shard of shards) {
      const conn = await this.#ctx.conn(keyspace, shard);
      streams.push(conn.run(sql, params));
    }
    return streams;
  }

  async #routeStreams(route: Route, b: Bindings, clientSql?: string): Promise<RowStream[]> {
    const shards = await this.routeShards(route, b);
    const targets = shards.length > 0 ? shards : [this.#ctx.shards(route.keyspace)[0]!];
    if (route.owned !== undefined) await this.#maintainOwned(route, targets, b);
    return await this.#runOn(route.keyspace, targets, route.query, b, clientSql);
  }

  async #route(route: Route, b: Bindings, clientSql?: string): Promise<Cursor> {
    const streams = await this.#routeStreams(route, b, clientSql);
    if (route.opcode === "reference" && route.write && streams.length > 1) {
      // Every shard holds a copy: the client sees one copy's rows and count.
      const [first, ...rest] = streams;
      const cursor = await concatStreams([first!]);
      try {
        await Promise.all(rest.map((s) => s.discard()));
      } catch (err) {
        await cursor.close();
        throw err;
      }
      return cursor;
    }
    return await concatStreams(streams);
  }

  /** UPDATE/DELETE of a lookup owner: the old lookup rows go, UPDATE's new ones come. */
  async #maintainOwned(route: Route, shards: string[], b: Bindings): Promise<void> {
    const owned = route.owned!;
    const streams = await this.#runOn(route.keyspace, shards, owned.query, b);
    const rows: Row[] = [];
    for (const s of streams) {
      for (let r = await s.next(); r !== null; r = await s.next()) rows.push(r);
    }
    if (rows.length === 0) return;
    const primary = this.#ctx.vindex(route.keyspace, owned.primary.vindex);
    for (const row of rows) {
      const key = pick(row, owned.primary.columns);
      const m = primary.map([key])[0];
      if (m?.kind !== "id") continue;
      for (const l of owned.lookups) {
        const v = this.#ctx.vindex(route.keyspace, l.vindex);
        if (!isLookupVindex(v)) continue;
        const old = pick(row, l.columns);
        if (!isNullKey(old)) {
          const del = v.deleteSql(old, m.id);
          await this.#runBound(del.keyspace, del.sql, del.params);
        }
        if (l.newValues !== undefined) {
          const nv = l.newValues.map((e) => resolveValue(e, b));
          const value = nv.length === 1 ? nv[0]! : nv;
          if (!isNullKey(value)) {
            const ins = v.createSql([{ value, id: m.id }]);
            await this.#runBound(ins.keyspace, ins.sql, ins.params);
          }
        }
      }
    }
  }

  async #runBound(keyspace: string, sql: string, params: (string | null)[]): Promise<void> {
    const shards = this.#ctx.shards(keyspace);
    if (shards.length !== 1) {
      throw new TesseraError(
        SqlState.featureNotSupported,
        `lookup and sequence tables must live in an unsharded keyspace: "${keyspace}" has ${shards.length} shards`,
      );
    }
    const conn = await this.#ctx.conn(keyspace, shards[0]!);
    await conn.query(sql, params);
  }

  // ------------------------------------------------------------------ aggregate, project

  async #aggregate(p: Aggregate, b: Bindings, budget: MemoryBudget): Promise<Cursor> {
    const input = await this.run(p.input, b, budget);
    const fields = input.fields;
    const kinds = fields?.map((f) => kindOf(f.typeOid)) ?? [];
    const groups = new Map<string, { first: Row; parts: (string | null)[][] }>();
    for (let r = await input.next(); r !== null; r = await input.next()) {
      const key = p.groupBy.length === 0 ? "" : rowKey(pick2(r, p.groupBy));
      let g = groups.get(key);
      if (g === undefined) {
        budget.addRow(r);
        g = { first: r, parts: p.aggregates.map(() => []) };
        groups.set(key, g);
      }
      for (let i = 0; i < p.aggregates.length; i++) {
        const v = r[p.aggregates[i]!.column] ?? null;
        g.parts[i]!.push(v);
        budget.add(16 + (v?.length ?? 0) * 2);
      }
    }
    const out: Row[] = [];
    if (groups.size === 0 && p.scalar && p.groupBy.length === 0) {
      const width = fields?.length ?? 0;
      const row: Row = new Array(width).fill(null);
      for (const a of p.aggregates) if (a.fn === "sum_count") row[a.column] = "0";
      out.push(row);
    }
    for (const g of groups.values()) {
      const row = g.first.slice();
      p.aggregates.forEach((a, i) => {
        row[a.column] = combine(a.fn, g.parts[i]!, kinds[a.column] ?? "text");
      });
      out.push(row);
    }
    return arrayCursor(fields, out);
  }

  async #project(
    p: Extract<Primitive, { type: "project" }>,
    b: Bindings,
    budget: MemoryBudget,
  ): Promise<Cursor> {
    const input = await this.run(p.input, b, budget);
    const inFields = input.fields ?? [];
    let map: (r: Row) => Row;
    let fields: Field[];
    if (p.columns !== undefined) {
      const cols = p.columns;
      fields = cols.map((c) => {
        if (c.kind === "column") return inFields[c.column]!;
        const sumField = inFields[c.sum];
        const isFloat = sumField !== undefined && kindOf(sumField.typeOid) === "float";
        return {
          ...(sumField ?? inFields[0]!),
          name: "avg",
          tableOid: 0,
          columnAttr: 0,
          typeOid: isFloat ? FLOAT8_OID : NUMERIC_OID,
          typeSize: isFloat ? 8 : -1,
          typeModifier: -1,
        };
      });
      const kinds = cols.map((c) =>
        c.kind === "avg" ? kindOf(inFields[c.sum]?.typeOid ?? NUMERIC_OID) : "text" as ValueKind
      );
      map = (r) =>
        cols.map((c, i) =>
          c.kind === "column"
            ? r[c.column] ?? null
            : averageOf(r[c.sum] ?? null, r[c.count] ?? null, kinds[i]!)
        );
    } else {
      const drop = p.dropLast ?? 0;
      fields = inFields.slice(0, Math.max(0, inFields.length - drop));
      map = (r) => r.slice(0, Math.max(0, r.length - drop));
    }
    if (p.names !== undefined) {
      fields = fields.map((f, i) => p.names![i] !== undefined ? { ...f, name: p.names![i]! } : f);
    }
    return {
      fields: input.fields === null ? null : fields,
      next: async () => {
        const r = await input.next();
        return r === null ? null : map(r);
      },
      close: () => input.close(),
    };
  }

  // ------------------------------------------------------------------ join

  async #join(p: Join, b: Bindings, budget: MemoryBudget): Promise<Cursor> {
    const outer = await this.run(p.outer, b, budget);
    // Gather the outer side first: its shards' connections are then free for the inner side.
    const outerRows = await gather(outer, budget);
    const varsOf = (row: Row | null) =>
      p.vars.map((v) =>
        [v.bind, row === null ? null : row[v.column] ?? null] as [
          number,
          string | null,
        ]
      );
    let innerFields: Field[] | null = null;
    const out: Row[] = [];
    for (const o of outerRows) {
      const inner = await this.run(p.inner, b.withVars(varsOf(o)), budget);
      innerFields ??= inner.fields;
      const innerRows = await gather(inner, budget);
      if (innerRows.length === 0 && p.kind === "left") {
        out.push(p.columns.map((c) => c.side === "outer" ? o[c.column] ?? null : null));
      }
      for (const i of innerRows) {
        const row = p.columns.map((c) => (c.side === "outer" ? o : i)[c.column] ?? null);
        budget.addRow(row);
        out.push(row);
      }
    }
    if (innerFields === null) {
      // No outer rows: ask the inner side once, with NULL join values, for its columns.
      const inner = await this.run(p.inner, b.withVars(varsOf(null)), budget);
      innerFields = inner.fields;
      await inner.close();
    }
    const fields = p.columns.map((c) =>
      (c.side === "outer" ? outer.fields : innerFields)?.[c.column] ?? textField("?column?")
    );
    return arrayCursor(fields, out);
  }

  // ------------------------------------------------------------------ insert

  async #insert(p: Insert, b: Bindings): Promise<Cursor> {
    const all = this.#ctx.shards(p.keyspace);
    const seqValues = new Map<number, string>();
    const ai = p.autoIncrement;
    const rowValues: VindexValue[][] = p.rows.map((row) =>
      row.values.map((v) => v === undefined || v.kind === "sequence" ? null : resolveValue(v, b))
    );
    if (ai !== undefined) {
      const need: number[] = [];
      p.rows.forEach((row, i) => {
        if (row.exprs[ai.column] === null || rowValues[i]![ai.column] === null) need.push(i);
      });
      if (need.length > 0) {
        const shards = this.#ctx.shards(ai.keyspace);
        if (shards.length !== 1) {
          throw new TesseraError(
            SqlState.featureNotSupported,
            `sequences must live in an unsharded keyspace: "${ai.keyspace}" has ${shards.length} shards`,
          );
        }
        const conn = await this.#ctx.conn(ai.keyspace, shards[0]!);
        const { rows } = await conn.query(ai.sql, [String(need.length)]);
        need.forEach((rowIndex, k) => {
          const v = rows[k]?.[0];
          if (v === undefined || v === null) {
            throw new TesseraError(SqlState.internalError, "the sequence returned too few values");
          }
          seqValues.set(rowIndex, v);
          rowValues[rowIndex]![ai.column] = v;
        });
      }
    }
    const primary = this.#ctx.vindex(p.keyspace, p.primary.vindex);
    const byShard = new Map<string, number[]>();
    const ids: Uint8Array[] = [];
    p.rows.forEach((_, i) => {
      const key = pickValues(rowValues[i]!, p.primary.columns);
      const m = primary.map([key])[0];
      if (m?.kind !== "id") {
        throw new TesseraError(
          SqlState.invalidParameterValue,
          `could not map ${JSON.stringify(key)} to a keyspace id with vindex ${p.primary.vindex} ` +
            `(row ${i + 1} of the INSERT into ${p.table})`,
          {
            hint: `a row of a sharded table needs a valid, non-NULL ${
              p.columns[p.primary.columns[0]!]
            }`,
          },
        );
      }
      ids.push(m.id);
      const shard = shardForKeyspaceId(all, m.id);
      if (shard === undefined) {
        throw new TesseraError(
          SqlState.internalError,
          `no shard of keyspace "${p.keyspace}" covers the row's keyspace id`,
        );
      }
      let list = byShard.get(shard);
      if (list === undefined) byShard.set(shard, list = []);
      list.push(i);
    });
    for (const l of p.lookups) {
      const v = this.#ctx.vindex(p.keyspace, l.vindex);
      if (!isLookupVindex(v)) continue;
      const entries = p.rows.flatMap((_, i) => {
        const value = pickValues(rowValues[i]!, l.columns);
        return isNullKey(value) ? [] : [{ value, id: ids[i]! }];
      });
      if (entries.length === 0) continue;
      const ins = v.createSql(entries);
      await this.#runBound(ins.keyspace, ins.sql, ins.params);
    }
    const streams: RowStream[] = [];
    for (const shard of all) {
      const rows = byShard.get(shard);
      if (rows === undefined) continue;
      const q = buildInsertQuery(p, rows, seqValues);
      streams.push(...await this.#runOn(p.keyspace, [shard], q, b));
    }
    return await concatStreams(streams);
  }
}

// -------------------------------------------------------------------- helpers

function textField(name: string): Field {
  return {
    name,
    tableOid: 0,
    columnAttr: 0,
    typeOid: 25,
    typeSize: -1,
    typeModifier: -1,
    format: 0,
  };
}

function shardsOf(all: string[], ids: Uint8Array[]): string[] {
  const set = new Set<string>();
  for (const id of ids) {
    const s = shardForKeyspaceId(all, id);
    if (s !== undefined) set.add(s);
  }
  return all.filter((s) => set.has(s));
}

function pick(row: Row, columns: number[]): VindexValue | VindexValue[] {
  return columns.length === 1 ? row[columns[0]!] ?? null : columns.map((c) => row[c] ?? null);
}

function pick2(row: Row, columns: number[]): Row {
  return columns.map((c) => row[c] ?? null);
}

function pickValues(values: VindexValue[], columns: number[]): VindexValue | VindexValue[] {
  return columns.length === 1 ? values[columns[0]!] ?? null : columns.map((c) => values[c] ?? null);
}

function isNullKey(v: VindexValue | VindexValue[]): boolean {
  return Array.isArray(v) ? v.some((x) => x === null) : v === null;
}

/** A key identifying a row's values (NULL distinct from every string). */
function rowKey(r: Row): string {
  let k = "";
  for (const v of r) k += v === null ? "\u0000N" : `\u0000S${v.length}:${v}`;
  return k;
}

async function gather(c: Cursor, budget: MemoryBudget): Promise<Row[]> {
  const rows: Row[] = [];
  try {
    for (let r = await c.next(); r !== null; r = await c.next()) {
      budget.addRow(r);
      rows.push(r);
    }
  } catch (err) {
    await c.close();
    throw err;
  }
  return rows;
}

function limitValue(v: Parameters<typeof resolveValue>[0], b: Bindings, what: string) {
  const raw = resolveValue(v, b);
  if (raw === null) return undefined;
  const n = Number(raw);
  if (!Number.isFinite(n) || n < 0) {
    throw new TesseraError(
      SqlState.invalidParameterValue,
      `${what} must not be negative: received ${raw}`,
    );
  }
  return Math.floor(n);
}

function combine(
  fn: Aggregate["aggregates"][number]["fn"],
  parts: (string | null)[],
  kind: ValueKind,
) {
  switch (fn) {
    case "sum_count":
      return sumValues(parts.map((p) => p ?? "0"), "int") ?? "0";
    case "sum":
      return sumValues(parts, kind === "float" ? "float" : "numeric");
    case "min":
    case "max": {
      let best: string | null = null;
      for (const v of parts) {
        if (v === null) continue;
        if (best === null) best = v;
        else {
          const c = compareValues(v, best, kind);
          if (fn === "min" ? c < 0 : c > 0) best = v;
        }
      }
      return best;
    }
  }
}

function columnIndex(col: number, width: number): number {
  return col < 0 ? width + col : col;
}

/** Compares rows by sort keys, with each column's type. */
function rowComparator(keys: SortKey[], fields: Field[] | null): (a: Row, b: Row) => number {
  return (a, b) => {
    for (const k of keys) {
      const i = columnIndex(k.column, a.length);
      const x = a[i] ?? null;
      const y = b[i] ?? null;
      let c: number;
      if (x === null || y === null) {
        if (x === y) continue;
        c = x === null ? (k.nullsFirst ? -1 : 1) : (k.nullsFirst ? 1 : -1);
        if (c !== 0) return c;
        continue;
      }
      c = compareValues(x, y, kindOf(fields?.[i]?.typeOid ?? 25));
      if (c !== 0) return k.descending ? -c : c;
    }
    return 0;
  };
}

/** Rows of several streams in shard order. */
async function concatStreams(streams: RowStream[]): Promise<Cursor> {
  let fields: Field[] | null = null;
  try {
    for (const s of streams) {
      const f = await s.fields();
      fields ??= f;
    }
  } catch (err) {
    await Promise.all(streams.map((s) => s.drain()));
    throw err;
  }
  let i = 0;
  return {
    fields,
    next: async () => {
      while (i < streams.length) {
        const r = await streams[i]!.next();
        if (r !== null) return r;
        i++;
      }
      return null;
    },
    close: async () => {
      await Promise.all(streams.map((s) => s.drain()));
    },
    tag: () => combineTags(streams.map((s) => s.tag)),
  };
}

/** The command tag of a statement run on several shards: counts add up. */
export function combineTags(tags: (string | null)[]): string {
  const present = tags.filter((t): t is string => t !== null && t !== "");
  if (present.length === 0) return "";
  const first = present[0]!;
  const m = /^(INSERT 0|UPDATE|DELETE|SELECT|MERGE|MOVE|FETCH|COPY) (\d+)$/.exec(first);
  if (m === null) return first;
  let total = 0n;
  for (const t of present) {
    const n = /(\d+)$/.exec(t);
    if (n !== null) total += BigInt(n[1]!);
  }
  return `${m[1]} ${total}`;
}

/** Streaming k-way merge of sorted shard streams. */
async function mergeSorted(streams: RowStream[], keys: SortKey[]): Promise<Cursor> {
  const base = await concatStreams(streams); // resolves the fields (or the first error)
  const fields = base.fields;
  const cmp = rowComparator(keys, fields);
  const heads: (Row | null)[] = [];
  let started = false;
  const start = async () => {
    started = true;
    for (const s of streams) heads.push(await s.next());
  };
  return {
    fields,
    next: async () => {
      if (!started) await start();
      let best = -1;
      for (let i = 0; i < heads.length; i++) {
        const h = heads[i];
        if (h === null || h === undefined) continue;
        if (best === -1 || cmp(h, heads[best]!) < 0) best = i;
      }
      if (best === -1) return null;
      const row = heads[best]!;
      heads[best] = await streams[best]!.next();
      return row;
    },
    close: () => base.close(),
    tag: () => base.tag!(),
  };
}

function operandValue(
  o: Operand,
  row: Row,
  b: Bindings,
): string | null {
  if ("column" in o) return row[o.column] ?? null;
  return textValue(resolveValue(o.value, b));
}

function compareOperands(x: string, y: string, kind: ValueKind | undefined): number {
  if (kind !== undefined && kind !== "text") return compareValues(x, y, kind);
  const dx = parseDecimal(x);
  const dy = parseDecimal(y);
  if (dx !== undefined && dy !== undefined) return compareDecimal(dx, dy);
  return compareText(x, y);
}

/** Evaluates a HAVING predicate over a merged row (true, false, or null for unknown). */
export function evalFilter(
  e: FilterExpr,
  row: Row,
  b: Bindings,
  fields: Field[] | null,
): boolean | null {
  switch (e.op) {
    case "and": {
      let unknown = false;
      for (const a of e.args) {
        const v = evalFilter(a, row, b, fields);
        if (v === false) return false;
        if (v === null) unknown = true;
      }
      return unknown ? null : true;
    }
    case "or": {
      let unknown = false;
      for (const a of e.args) {
        const v = evalFilter(a, row, b, fields);
        if (v === true) return true;
        if (v === null) unknown = true;
      }
      return unknown ? null : false;
    }
    case "not": {
      const v = evalFilter(e.arg, row, b, fields);
      return v === null ? null : !v;
    }
    case "is_null":
      return operandValue(e.arg, row, b) === null;
    case "is_not_null":
      return operandValue(e.arg, row, b) !== null;
    default: {
      const x = operandValue(e.left, row, b);
      const y = operandValue(e.right, row, b);
      if (x === null || y === null) return null;
      const col = "column" in e.left ? e.left.column : "column" in e.right ? e.right.column : -1;
      const kind = col >= 0 && fields?.[col] ? kindOf(fields[col]!.typeOid) : undefined;
      const c = compareOperands(x, y, kind === "bool" ? "text" : kind);
      switch (e.op) {
        case "=":
          return c === 0;
        case "<>":
          return c !== 0;
        case "<":
          return c < 0;
        case "<=":
          return c <= 0;
        case ">":
          return c > 0;
        case ">=":
          return c >= 0;
      }
    }
  }
  return null;
}
