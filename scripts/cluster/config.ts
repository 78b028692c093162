/**
 * The declarative cluster file of `deno task cluster --config FILE`: cells, databases, keyspaces
 * and users to write into topo. Validated with zod; errors name the field path and the reason.
 *
 * @module
 */

import { z } from "zod";
import { DurabilityPolicySchema, isShardRange, NameSchema } from "../../shared/topo/mod.ts";

/** Schema of the cluster file. */
export const ClusterFileSchema = z.strictObject({
  cells: z.array(NameSchema).min(1).optional(),
  databases: z.array(z.strictObject({
    name: NameSchema,
    durability: DurabilityPolicySchema,
    backupLocation: z.string().min(1).optional(),
  })).min(1),
  keyspaces: z.array(z.strictObject({
    name: NameSchema,
    database: NameSchema.optional(),
    sharded: z.boolean().default(false),
    shards: z.array(
      z.string().refine(isShardRange, {
        error: "must be a Vitess-style key range such as '0', '-80' or '80-'",
      }),
    ).min(1).default(["0"]),
  })).min(1),
  users: z.array(z.strictObject({
    name: z.string().min(1).max(128).regex(/^[^/\s]+$/, {
      error: "must not contain '/' or spaces",
    }),
    password: z.string().min(1),
  })).default([]),
});

/** A validated cluster file. */
export type ClusterFile = z.infer<typeof ClusterFileSchema>;

/** Raised for an invalid cluster file or flags that contradict it; the CLI exits 2. */
export class ClusterConfigError extends Error {
  /** Creates the error. */
  constructor(message: string) {
    super(message);
    this.name = "ClusterConfigError";
  }
}

function pathText(path: readonly PropertyKey[]): string {
  let out = "";
  for (const part of path) {
    out += typeof part === "number" ? `[${part}]` : `${out === "" ? "" : "."}${String(part)}`;
  }
  return out === "" ? "(file)" : out;
}

function fail(source: string, issues: string[]): never {
  throw new ClusterConfigError(`invalid cluster file ${source}: ${issues.join("; ")}`);
}

/** The cluster file used without `--config`: database and keyspace `app`, one shard `0`. */
export function defaultClusterFile(replicas: number): ClusterFile {
  return {
    databases: [{ name: "app", durability: replicas === 0 ? "none" : "at_least_1" }],
    keyspaces: [{ name: "app", sharded: false, shards: ["0"] }],
    users: [],
  };
}

const DURABILITY_REPLICAS = { none: 0, at_least_1: 1, at_least_2: 2 } as const;

/**
 * Validates `value` (parsed JSON) as a cluster file for a cluster with `replicas` replicas per
 * shard. Throws {@linkcode ClusterConfigError} naming each bad field, e.g.
 * `keyspaces[0].shards[1]: must be a Vitess-style key range ...`.
 */
export function parseClusterFile(
  value: unknown,
  replicas: number,
  source = "(inline)",
): ClusterFile {
  const result = ClusterFileSchema.safeParse(value);
  if (!result.success) {
    fail(source, result.error.issues.map((i) => `${pathText(i.path)}: ${i.message}`));
  }
  const file = result.data;
  const issues: string[] = [];
  const seen = (what: string, list: { name: string }[]) => {
    const names = new Set<string>();
    list.forEach((item, i) => {
      if (names.has(item.name)) issues.push(`${what}[${i}].name: '${item.name}' is listed twice`);
      names.add(item.name);
    });
  };
  seen("databases", file.databases);
  seen("keyspaces", file.keyspaces);
  seen("users", file.users);
  if (file.cells !== undefined) {
    const names = new Set<string>();
    file.cells.forEach((c, i) => {
      if (names.has(c)) issues.push(`cells[${i}]: '${c}' is listed twice`);
      names.add(c);
    });
  }
  file.databases.forEach((db, i) => {
    const needed = DURABILITY_REPLICAS[db.durability];
    if (needed > replicas) {
      issues.push(
        `databases[${i}].durability: '${db.durability}' needs at least ${needed} replicas per ` +
          `shard, but the cluster has ${replicas} (raise --replicas or lower the durability)`,
      );
    }
  });
  const databases = new Set(file.databases.map((d) => d.name));
  file.keyspaces.forEach((ks, i) => {
    const db = ks.database ?? ks.name;
    if (!databases.has(db)) {
      issues.push(
        `keyspaces[${i}].database: database '${db}' is not in 'databases'` +
          (ks.database === undefined ? " (a keyspace uses the database of its own name)" : ""),
      );
    }
    if (ks.sharded) {
      issues.push(
        `keyspaces[${i}].sharded: sharded keyspaces are not supported by the local cluster yet`,
      );
    }
    if (ks.shards.length !== 1 || ks.shards[0] !== "0") {
      issues.push(
        `keyspaces[${i}].shards: an unsharded keyspace has exactly one shard, '0' ` +
          `(more shards come with sharding): received ${JSON.stringify(ks.shards)}`,
      );
    }
  });
  if (issues.length > 0) fail(source, issues);
  return file;
}

/** Reads and validates the cluster file at `path`. */
export async function loadClusterFile(path: string, replicas: number): Promise<ClusterFile> {
  let text: string;
  try {
    text = await Deno.readTextFile(path);
  } catch (err) {
    throw new ClusterConfigError(
      `cannot read cluster file '${path}': ${err instanceof Error ? err.message : String(err)}`,
    );
  }
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (err) {
    throw new ClusterConfigError(
      `cluster file '${path}' is not valid JSON: ${err instanceof Error ? err.message : err}`,
    );
  }
  return parseClusterFile(value, replicas, `'${path}'`);
}
