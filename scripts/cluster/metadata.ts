/**
 * Writes the cluster's metadata into topo from the cluster file, idempotently, on every start:
 * cells, databases, keyspaces and users are made to match the file; a shard record is created
 * only when missing, because its primary and term belong to orch from then on; a keyspace's
 * vschema is written only when none is stored, because one applied later with
 * `deno task ctl vschema apply` must survive `down` and `up`. Nothing that the file does not
 * name is deleted.
 *
 * @module
 */

import type { ShardRecord, TopoClient } from "../../shared/topo/mod.ts";
import { SqlState, TesseraError } from "../../shared/errors/mod.ts";
import type { ClusterFile } from "./config.ts";
import { userRecord } from "./users.ts";

/** What {@linkcode writeMetadata} changed, for the supervisor's log. */
export interface MetadataReport {
  /** Records written (created or changed), as `kind/name`. */
  written: string[];
  /** Records already as wanted, as `kind/name`. */
  unchanged: string[];
}

function same(a: unknown, b: unknown): boolean {
  return JSON.stringify(a) === JSON.stringify(b);
}

/** Writes cells, databases, keyspaces, shards, vschemas and users of `file` for cells `cells`. */
export async function writeMetadata(
  topo: TopoClient,
  file: ClusterFile,
  cells: readonly string[],
): Promise<MetadataReport> {
  const report: MetadataReport = { written: [], unchanged: [] };
  const note = (changed: boolean, what: string) =>
    (changed ? report.written : report.unchanged).push(what);

  for (const cell of cells) {
    const want = topo.defaultCellRecord(cell);
    const entry = await topo.global.cells.get(cell);
    const changed = entry === undefined || !same(entry.value, want);
    if (changed) await topo.global.cells.put([cell], want);
    note(changed, `cells/${cell}`);
  }
  for (const db of file.databases) {
    const want = {
      name: db.name,
      durability: db.durability,
      ...(db.backupLocation !== undefined ? { backupLocation: db.backupLocation } : {}),
    };
    const entry = await topo.global.databases.get(db.name);
    const changed = entry === undefined || !same(entry.value, want);
    if (changed) await topo.global.databases.put([db.name], want);
    note(changed, `databases/${db.name}`);
  }
  for (const ks of file.keyspaces) {
    const want = {
      name: ks.name,
      sharded: ks.sharded,
      ...(ks.database !== undefined ? { database: ks.database } : {}),
    };
    const entry = await topo.global.keyspaces.get(ks.name);
    const changed = entry === undefined || !same(entry.value, want);
    if (changed) await topo.global.keyspaces.put([ks.name], want);
    note(changed, `keyspaces/${ks.name}`);
    for (const range of ks.shards) {
      const shard: ShardRecord = { keyspace: ks.name, range, term: 0 };
      let created = false;
      try {
        await topo.global.shards.create([ks.name, range], shard);
        created = true;
      } catch (err) {
        if (!(err instanceof TesseraError && err.code === SqlState.duplicateObject)) throw err;
      }
      note(created, `keyspaces/${ks.name}/shards/${range}`);
    }
    if (ks.vschema !== undefined) {
      // Written only when none is stored: a vschema applied later (ctl vschema apply) wins.
      let created = false;
      try {
        await topo.global.vschemas.create([ks.name], ks.vschema);
        created = true;
      } catch (err) {
        if (!(err instanceof TesseraError && err.code === SqlState.duplicateObject)) throw err;
      }
      note(created, `keyspaces/${ks.name}/vschema`);
    }
  }
  for (const user of file.users) {
    const entry = await topo.global.users.get(user.name);
    const want = await userRecord(user, entry?.value);
    const changed = entry === undefined || !same(entry.value, want);
    if (changed) await topo.global.users.put([user.name], want);
    note(changed, `users/${user.name}`);
  }
  return report;
}
