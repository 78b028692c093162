/**
 * Keyspace vschemas (zod-validated JSON) and Vitess-style key ranges: shared by the gateway's
 * planner and the tools that apply vschemas to topo.
 *
 * @example
 * ```ts
 * import { evenShards, parseVSchema } from "./shared/vschema/mod.ts";
 *
 * const vs = parseVSchema({ sharded: true, vindexes: { hash: { type: "hash" } },
 *   tables: { customer: { column_vindexes: [{ column: "id", name: "hash" }] } } });
 * evenShards(4); // ["-40", "40-80", "80-c0", "c0-"]
 * ```
 *
 * @module
 */

export {
  type AutoIncrement,
  type ColumnVindex,
  ColumnVindexSchema,
  isUniqueVindexType,
  type KeyspaceVSchema,
  KeyspaceVSchemaSchema,
  lookupFromColumns,
  parseVSchema,
  type TableDef,
  TableDefSchema,
  validateVSchema,
  VINDEX_TYPES,
  vindexColumns,
  type VindexDef,
  VindexDefSchema,
  type VindexType,
  type VSchemaIssue,
  type VSchemaValidation,
} from "./schema.ts";
export {
  bytesToHex,
  compareBytes,
  evenShards,
  formatKeyRange,
  type KeyRange,
  keyRangeContains,
  parseKeyRange,
  shardForKeyspaceId,
} from "./keyrange.ts";
export { type KnownKeyspace, vschemaReferenceIssues } from "./references.ts";
