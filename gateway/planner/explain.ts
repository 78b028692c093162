/**
 * `EXPLAIN`-style text of a plan: one row per primitive, indented by depth.
 *
 * @module
 */

import type { Primitive, SortKey, ValueExpr } from "./plan.ts";

function value(v: ValueExpr): string {
  if (v.kind === "bind") return `$${v.index}`;
  if (v.kind === "sequence") return "nextval";
  return v.value === null ? "NULL" : `'${v.value}'`;
}

function keys(ks: SortKey[]): string {
  return ks.map((k) =>
    `${k.expr} (col ${k.column}) ${k.descending ? "DESC" : "ASC"} NULLS ${
      k.nullsFirst ? "FIRST" : "LAST"
    }`
  ).join(", ");
}

/** Text rows describing `root`: route kind, shards (or "per value") and pushed-down SQL. */
export function explainPlan(root: Primitive): string[] {
  const out: string[] = [];
  const line = (depth: number, text: string) => out.push(`${"  ".repeat(depth)}${text}`);
  const walk = (p: Primitive, d: number) => {
    switch (p.type) {
      case "route": {
        const shards = p.opcode === "unsharded"
          ? "the only shard"
          : p.opcode === "scatter" || p.opcode === "dml_all" ||
              (p.opcode === "reference" && p.write)
          ? "all shards"
          : p.opcode === "reference"
          ? "any one shard"
          : p.opcode === "lookup"
          ? `per value via lookup vindex ${p.vindex} [${(p.values ?? []).map(value).join(", ")}]`
          : `per value via vindex ${p.vindex} [${(p.values ?? []).map(value).join(", ")}]`;
        line(
          d,
          `Route ${p.opcode} keyspace=${p.keyspace} shards=${shards}${p.write ? " (write)" : ""}`,
        );
        line(d + 1, `query: ${p.query.sql}`);
        if (p.owned) {
          line(
            d + 1,
            `owned lookups: ${
              p.owned.lookups.map((l) => l.vindex).join(", ")
            } via ${p.owned.query.sql}`,
          );
        }
        return;
      }
      case "merge_sort":
        line(d, `MergeSort ${keys(p.keys)}`);
        return walk(p.input, d + 1);
      case "sort":
        line(d, `Sort (in memory) ${keys(p.keys)}`);
        return walk(p.input, d + 1);
      case "aggregate":
        line(
          d,
          `Aggregate group=[${p.groupBy.join(", ")}] ${
            p.aggregates.map((a) => `${a.fn}(col ${a.column})`).join(", ")
          }`,
        );
        return walk(p.input, d + 1);
      case "filter":
        line(d, `Filter ${JSON.stringify(p.predicate)}`);
        return walk(p.input, d + 1);
      case "distinct":
        line(d, "Distinct");
        return walk(p.input, d + 1);
      case "limit":
        line(
          d,
          `Limit count=${p.count ? value(p.count) : "all"} offset=${
            p.offset ? value(p.offset) : "0"
          }`,
        );
        return walk(p.input, d + 1);
      case "project":
        line(
          d,
          p.columns
            ? `Project ${
              p.columns.map((c) =>
                c.kind === "avg" ? `avg(col ${c.sum} / col ${c.count})` : `col ${c.column}`
              ).join(", ")
            }`
            : `Project drop last ${p.dropLast}`,
        );
        return walk(p.input, d + 1);
      case "concatenate":
        line(d, "Concatenate");
        for (const i of p.inputs) walk(i, d + 1);
        return;
      case "join":
        line(
          d,
          `Join ${p.kind} nested-loop vars=${
            p.vars.map((v) => `$${v.bind}=outer col ${v.column}`).join(", ")
          }`,
        );
        walk(p.outer, d + 1);
        walk(p.inner, d + 1);
        return;
      case "insert":
        line(
          d,
          `Insert keyspace=${p.keyspace} table=${p.table} rows=${p.rows.length} shards=per row via vindex ${p.primary.vindex}`,
        );
        line(d + 1, `query: ${p.template.sql}`);
        if (p.autoIncrement) {
          line(d + 1, `sequence: ${p.autoIncrement.keyspace}: ${p.autoIncrement.sql}`);
        }
        if (p.lookups.length > 0) {
          line(
            d + 1,
            `lookups: ${p.lookups.map((l) => l.vindex).join(", ")}`,
          );
        }
        return;
      case "transaction":
        line(d, `Transaction ${p.action}`);
        return;
      case "session":
        line(d, `Session ${p.action}: ${p.sql}`);
        return;
      case "explain":
        line(d, `Explain ${p.options}`);
        return walk(p.input, d + 1);
    }
  };
  walk(root, 0);
  return out;
}
