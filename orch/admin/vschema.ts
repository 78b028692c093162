/**
 * orch's admin API for keyspace vschemas, on the same HTTP server as `/status`:
 *
 * - `GET /api/v1/keyspaces/:ks/vschema`: 200 with the stored vschema; 404 `{error}` when the
 *   keyspace does not exist or has no vschema.
 * - `PUT /api/v1/keyspaces/:ks/vschema` with the vschema as the JSON body: validated, then
 *   stored at `keyspaces/<ks>/vschema`; 200 with the stored vschema, 400
 *   `{error, issues: [{path, reason}]}` with nothing changed, 404 for an unknown keyspace.
 *
 * @module
 */

import type { Hono } from "hono";
import type { KeyspaceRecord, TopoClient } from "../../shared/topo/mod.ts";
import { NAME_PATTERN } from "../../shared/topo/mod.ts";
import {
  type KeyspaceVSchema,
  type KnownKeyspace,
  validateVSchema,
  vschemaReferenceIssues,
} from "../../shared/vschema/mod.ts";

/** One problem of a vschema sent to the admin API. */
export interface AdminIssue {
  /** Dotted path of the field, e.g. `tables.t.column_vindexes.0.name`; `(root)` for the whole. */
  path: string;
  /** Why it is wrong. */
  reason: string;
}

/** Result of {@linkcode checkVSchemaUpdate}. */
export type VSchemaCheck =
  | { ok: true; vschema: KeyspaceVSchema }
  | { ok: false; error: string; issues: AdminIssue[] };

/**
 * Checks `body` as the new vschema of keyspace `keyspace` (whose record is `record`), against the
 * keyspaces that exist (`keyspaces`, by name, with their stored vschemas): the vschema itself
 * (`validateVSchema`), its `sharded` against the keyspace record's, and the keyspaces its lookup
 * tables and sequences name. Pure, so that it is tested without topo.
 */
export function checkVSchemaUpdate(
  keyspace: string,
  record: Pick<KeyspaceRecord, "sharded">,
  body: unknown,
  keyspaces: ReadonlyMap<string, KnownKeyspace>,
): VSchemaCheck {
  const error = `invalid vschema for keyspace '${keyspace}'`;
  const sharded = (body as { sharded?: unknown } | null | undefined)?.sharded;
  if (typeof sharded === "boolean" && sharded !== record.sharded) {
    // Checked first: the rest of a vschema reads differently in a (un)sharded keyspace.
    return {
      ok: false,
      error,
      issues: [{
        path: "sharded",
        reason: `must match the keyspace, which is ${
          record.sharded ? "sharded" : "unsharded"
        }: received ${sharded}`,
      }],
    };
  }
  const v = validateVSchema(body);
  if (!v.ok) {
    return { ok: false, error, issues: v.issues.map((i) => ({ path: i.path, reason: i.message })) };
  }
  const issues: AdminIssue[] = [];
  for (const i of vschemaReferenceIssues(keyspace, v.vschema, keyspaces)) {
    issues.push({ path: i.path, reason: i.message });
  }
  return issues.length > 0 ? { ok: false, error, issues } : { ok: true, vschema: v.vschema };
}

/** The keyspaces in topo with their stored vschemas (an invalid stored vschema counts as none). */
async function knownKeyspaces(topo: TopoClient): Promise<Map<string, KnownKeyspace>> {
  const out = new Map<string, KnownKeyspace>();
  for (const item of await topo.global.keyspaces.list()) {
    if (item.type !== "record") continue;
    const stored = await topo.global.vschemas.get(item.value.name).catch(() => undefined);
    const v = stored === undefined ? undefined : validateVSchema(stored.value);
    out.set(item.value.name, {
      sharded: item.value.sharded,
      vschema: v?.ok ? v.vschema : undefined,
    });
  }
  return out;
}

function notFound(keyspace: string, what = "does not exist"): Response {
  return Response.json({ error: `keyspace '${keyspace}' ${what}` }, { status: 404 });
}

/** Adds the vschema routes of the admin API to `app`, reading and writing `topo`. */
export function addVSchemaRoutes(app: Hono, topo: TopoClient): void {
  const path = "/api/v1/keyspaces/:ks/vschema";

  app.get(path, async (c) => {
    const ks = c.req.param("ks");
    if (!NAME_PATTERN.test(ks) || await topo.global.keyspaces.get(ks) === undefined) {
      return notFound(ks);
    }
    const stored = await topo.global.vschemas.get(ks);
    if (stored === undefined) return notFound(ks, "has no vschema");
    return Response.json(stored.value);
  });

  app.put(path, async (c) => {
    const ks = c.req.param("ks");
    const record = NAME_PATTERN.test(ks) ? await topo.global.keyspaces.get(ks) : undefined;
    if (record === undefined) return notFound(ks);
    let body: unknown;
    try {
      body = JSON.parse(await c.req.text());
    } catch (err) {
      const reason = `the body is not valid JSON: ${err instanceof Error ? err.message : err}`;
      return Response.json({
        error: `invalid vschema for keyspace '${ks}'`,
        issues: [{ path: "(root)", reason }],
      }, { status: 400 });
    }
    const check = checkVSchemaUpdate(ks, record.value, body, await knownKeyspaces(topo));
    if (!check.ok) {
      return Response.json({ error: check.error, issues: check.issues }, { status: 400 });
    }
    await topo.global.vschemas.put([ks], check.vschema);
    return Response.json(check.vschema);
  });
}
