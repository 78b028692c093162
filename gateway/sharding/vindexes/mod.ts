/**
 * Vindexes: one interface ({@linkcode Vindex}), functional kinds (`hash`, `identity`) and lookup
 * kinds (`lookup_unique`, `lookup`).
 *
 * @module
 */

export {
  type BoundSql,
  integerKey,
  isLookupVindex,
  type LookupVindex,
  uint64Bytes,
  type Vindex,
  type VindexMapping,
  type VindexValue,
} from "./vindex.ts";
export { hashInteger, hashText, HashVindex, IdentityVindex, splitmix64 } from "./functional.ts";
export { byteaText, TableLookupVindex } from "./lookup.ts";
export { buildVindexes, createVindex } from "./registry.ts";
