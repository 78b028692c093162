/**
 * Checks of a vschema against the other keyspaces it names: a lookup vindex's backing table
 * (`params.table`, `keyspace.table`) and a table's `auto_increment.sequence` (`keyspace.name`).
 * Pure: the caller says which keyspaces exist (from a cluster file or from topo).
 *
 * @module
 */

import type { KeyspaceVSchema, VSchemaIssue } from "./schema.ts";

/** What the checks need to know about a keyspace other than the one being checked. */
export interface KnownKeyspace {
  /** Whether the keyspace is sharded. */
  sharded: boolean;
  /** Its vschema, when it has one. */
  vschema?: KeyspaceVSchema | undefined;
}

function splitQualified(name: string): { keyspace?: string; table: string } {
  const dot = name.lastIndexOf(".");
  return dot < 0 ? { table: name } : { keyspace: name.slice(0, dot), table: name.slice(dot + 1) };
}

/**
 * The problems of `vschema` (the vschema of `keyspace`) with the keyspaces it names:
 *
 * - a qualified lookup table (`params.table`) must name a keyspace of `keyspaces`;
 * - a sequence (`auto_increment.sequence`) must name a keyspace of `keyspaces` that is
 *   unsharded and, when that keyspace has a vschema, one of its `type: "sequence"` tables.
 *
 * An unqualified name means `keyspace` itself. Paths are dotted, as in
 * {@linkcode VSchemaIssue}, e.g. `vindexes.email_idx.params.table`.
 */
export function vschemaReferenceIssues(
  keyspace: string,
  vschema: KeyspaceVSchema,
  keyspaces: ReadonlyMap<string, KnownKeyspace>,
): VSchemaIssue[] {
  const issues: VSchemaIssue[] = [];
  const self: KnownKeyspace = { sharded: vschema.sharded, vschema };
  const lookup = (name: string): KnownKeyspace | undefined =>
    name === keyspace ? self : keyspaces.get(name);
  for (const [name, def] of Object.entries(vschema.vindexes)) {
    if (def.type !== "lookup" && def.type !== "lookup_unique") continue;
    const table = def.params?.table;
    if (typeof table !== "string") continue;
    const ref = splitQualified(table);
    if (ref.keyspace !== undefined && lookup(ref.keyspace) === undefined) {
      issues.push({
        path: `vindexes.${name}.params.table`,
        message: `names keyspace '${ref.keyspace}', which does not exist: received '${table}'`,
      });
    }
  }
  for (const [name, t] of Object.entries(vschema.tables)) {
    const seq = t.auto_increment?.sequence;
    if (seq === undefined) continue;
    const path = `tables.${name}.auto_increment.sequence`;
    const ref = splitQualified(seq);
    const target = lookup(ref.keyspace ?? keyspace);
    if (target === undefined) {
      issues.push({
        path,
        message: `names keyspace '${ref.keyspace}', which does not exist: received '${seq}'`,
      });
    } else if (target.sharded) {
      issues.push({
        path,
        message: `a sequence lives in an unsharded keyspace, but '${
          ref.keyspace ?? keyspace
        }' is sharded: received '${seq}'`,
      });
    } else if (
      target.vschema !== undefined && target.vschema.tables[ref.table]?.type !== "sequence"
    ) {
      issues.push({
        path,
        message: `'${ref.table}' is not a sequence table (type "sequence") in the vschema of ` +
          `'${ref.keyspace ?? keyspace}': received '${seq}'`,
      });
    }
  }
  return issues;
}
