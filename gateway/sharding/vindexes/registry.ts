/**
 * Builds {@linkcode Vindex} instances from a keyspace vschema.
 *
 * @module
 */

import type { KeyspaceVSchema, VindexDef } from "../../../shared/vschema/mod.ts";
import { HashVindex, IdentityVindex } from "./functional.ts";
import { TableLookupVindex } from "./lookup.ts";
import type { Vindex } from "./vindex.ts";

/** Creates the vindex `name` of keyspace `keyspace` from its definition. */
export function createVindex(name: string, def: VindexDef, keyspace: string): Vindex {
  switch (def.type) {
    case "hash":
      return new HashVindex(name, def.params?.key === "text" ? "text" : "integer");
    case "identity":
      return new IdentityVindex(name);
    case "lookup":
    case "lookup_unique":
      return new TableLookupVindex(name, def, keyspace);
  }
}

/** Every vindex of a keyspace's vschema, by name. */
export function buildVindexes(vschema: KeyspaceVSchema, keyspace: string): Map<string, Vindex> {
  const out = new Map<string, Vindex>();
  for (const [name, def] of Object.entries(vschema.vindexes)) {
    out.set(name, createVindex(name, def, keyspace));
  }
  return out;
}
