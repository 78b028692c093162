/**
 * Sharding: vindexes that map column values to keyspace ids. Key ranges and vschemas live in
 * `shared/vschema/`.
 *
 * @module
 */

export * from "./vindexes/mod.ts";
