/**
 * The declarative cluster file of `deno task cluster --config FILE`: cells, databases, keyspaces
 * and users to write into topo. Validated with zod; errors name the field path and the reason.
 *
 * @module
 */

import { dirname, resolve } from "node:path";
import { z } from "zod";
import { DurabilityPolicySchema, isShardRange, NameSchema } from "../../shared/topo/mod.ts";
import {
  compareBytes,
  evenShards,
  type KeyspaceVSchema,
  type KnownKeyspace,
  parseKeyRange,
  validateVSchema,
  vschemaReferenceIssues,
} from "../../shared/vschema/mod.ts";

/** Schema of one keyspace of the cluster file, before the checks across fields and files. */
export const ClusterKeyspaceSchema = z.strictObject({
  name: NameSchema,
  database: NameSchema.optional(),
  sharded: z.boolean().default(false),
  /** Key ranges; `["0"]` when absent for an unsharded keyspace, required for a sharded one. */
  shards: z.array(
    z.string().refine(isShardRange, {
      error: "must be a Vitess-style key range such as '0', '-80' or '80-'",
    }),
  ).min(1).optional(),
  /** The keyspace's vschema: the JSON object, or the path of a JSON file (relative to the file). */
  vschema: z.union([z.string().min(1), z.record(z.string(), z.unknown())], {
    error: "must be a vschema object or the path of a JSON file holding one",
  }).optional(),
});

/** Schema of the cluster file. */
export const ClusterFileSchema = z.strictObject({
  cells: z.array(NameSchema).min(1).optional(),
  databases: z.array(z.strictObject({
    name: NameSchema,
    durability: DurabilityPolicySchema,
    backupLocation: z.string().min(1).optional(),
  })).min(1),
  keyspaces: z.array(ClusterKeyspaceSchema).min(1),
  users: z.array(z.strictObject({
    name: z.string().min(1).max(128).regex(/^[^/\s]+$/, {
      error: "must not contain '/' or spaces",
    }),
    password: z.string().min(1),
  })).default([]),
});

/** A keyspace of a validated cluster file: shards filled in, the vschema read and validated. */
export interface ClusterKeyspace {
  /** Keyspace name. */
  name: string;
  /** Database whose durability applies; the keyspace's name when absent. */
  database?: string;
  /** Whether the keyspace is sharded. */
  sharded: boolean;
  /** Key ranges of its shards, covering the keyspace-id space exactly (`["0"]` when unsharded). */
  shards: string[];
  /** Its vschema, when the file gives one. */
  vschema?: KeyspaceVSchema;
}

/** A validated cluster file. */
export type ClusterFile = Omit<z.infer<typeof ClusterFileSchema>, "keyspaces"> & {
  keyspaces: ClusterKeyspace[];
};

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

/** Most shards `--shards` accepts (the port layout has room for 100 instances). */
export const MAX_FLAG_SHARDS = 100;

/**
 * The cluster file of `--shards N --vschema FILE` without `--config`: database and keyspace
 * `app`, sharded over `evenShards(N)` when N > 1 (unsharded, shard `0`, when N = 1), with the
 * vschema read from `vschemaPath`. Throws {@linkcode ClusterConfigError} for contradicting or
 * missing flags and for an invalid vschema.
 */
export function flagsClusterFile(
  replicas: number,
  shards: number | undefined,
  vschemaPath: string | undefined,
): ClusterFile {
  const n = shards ?? 1;
  if (!Number.isInteger(n) || n < 1 || n > MAX_FLAG_SHARDS) {
    throw new ClusterConfigError(
      `'--shards' must be an integer from 1 to ${MAX_FLAG_SHARDS}: received ${n}`,
    );
  }
  if (n > 1 && vschemaPath === undefined) {
    throw new ClusterConfigError(
      `--shards needs --vschema FILE: a sharded keyspace needs a vschema (see docs/cluster.md)`,
    );
  }
  if (shards === undefined && vschemaPath !== undefined) {
    throw new ClusterConfigError(
      `--vschema needs --shards N (or a cluster file with --config that names the vschema)`,
    );
  }
  if (vschemaPath === undefined) return defaultClusterFile(replicas);
  const value = {
    databases: [{ name: "app", durability: replicas === 0 ? "none" : "at_least_1" }],
    keyspaces: [{
      name: "app",
      sharded: n > 1,
      shards: n > 1 ? evenShards(n) : ["0"],
      vschema: vschemaPath,
    }],
  };
  return parseClusterFile(value, replicas, `from --shards ${n} --vschema '${vschemaPath}'`);
}

const DURABILITY_REPLICAS = { none: 0, at_least_1: 1, at_least_2: 2 } as const;

/** An id as 8 bytes, right-padded with zeros, so that `80` and `8000` compare equal. */
function padId(bytes: Uint8Array): Uint8Array {
  const out = new Uint8Array(Math.max(8, bytes.length));
  out.set(bytes);
  return out;
}

/**
 * Why `shards` do not cover the keyspace-id space exactly once (gaps, overlaps, a missing
 * start or end), or an empty list when they do. Each range must already be well-formed.
 */
export function shardCoverageIssues(shards: readonly string[]): string[] {
  const ranges = shards.map((name) => {
    const kr = parseKeyRange(name);
    return { name, start: padId(kr.start), end: kr.end.length === 0 ? undefined : padId(kr.end) };
  }).sort((a, b) => compareBytes(a.start, b.start));
  const issues: string[] = [];
  const zero = new Uint8Array(8);
  const first = ranges[0];
  if (first === undefined) return ["lists no shard"];
  if (compareBytes(first.start, zero) !== 0) {
    issues.push(`keyspace ids below '${first.name}' belong to no shard (a gap)`);
  }
  for (let i = 1; i < ranges.length; i++) {
    const prev = ranges[i - 1]!;
    const cur = ranges[i]!;
    const cmp = prev.end === undefined ? 1 : compareBytes(cur.start, prev.end);
    if (cmp < 0 || prev.end === undefined) {
      issues.push(`'${prev.name}' and '${cur.name}' overlap`);
    } else if (cmp > 0) {
      issues.push(
        `keyspace ids between '${prev.name}' and '${cur.name}' belong to no shard (a gap)`,
      );
    }
  }
  const last = ranges.reduce((a, b) =>
    a.end === undefined ? a : b.end === undefined ? b : compareBytes(a.end, b.end) >= 0 ? a : b
  );
  if (last.end !== undefined) {
    issues.push(`keyspace ids from the end of '${last.name}' up belong to no shard (a gap)`);
  }
  return issues;
}

/** Reads a vschema file named by a cluster file; `undefined` and an issue when it cannot. */
function readVSchemaFile(
  path: string,
  field: string,
  issues: string[],
): unknown {
  let text: string;
  try {
    text = Deno.readTextFileSync(path);
  } catch (err) {
    issues.push(
      `${field}: cannot read vschema file '${path}': ${
        err instanceof Error ? err.message : String(err)
      }`,
    );
    return undefined;
  }
  try {
    return JSON.parse(text);
  } catch (err) {
    issues.push(
      `${field}: vschema file '${path}' is not valid JSON: ${
        err instanceof Error ? err.message : String(err)
      }`,
    );
    return undefined;
  }
}

/**
 * Validates `value` (parsed JSON) as a cluster file for a cluster with `replicas` replicas per
 * shard. A keyspace's `vschema` given as a path is read relative to `baseDir` (the cluster file's
 * folder; the current folder when not given). Throws {@linkcode ClusterConfigError} naming each
 * bad field, e.g. `keyspaces[0].shards[1]: must be a Vitess-style key range ...` or
 * `keyspaces[0].vschema.tables.t.column_vindexes.0.name: names vindex 'nope' ...`.
 */
export function parseClusterFile(
  value: unknown,
  replicas: number,
  source = "(inline)",
  baseDir?: string,
): ClusterFile {
  const result = ClusterFileSchema.safeParse(value);
  if (!result.success) {
    fail(source, result.error.issues.map((i) => `${pathText(i.path)}: ${i.message}`));
  }
  const parsed = result.data;
  const issues: string[] = [];
  const seen = (what: string, list: { name: string }[]) => {
    const names = new Set<string>();
    list.forEach((item, i) => {
      if (names.has(item.name)) issues.push(`${what}[${i}].name: '${item.name}' is listed twice`);
      names.add(item.name);
    });
  };
  seen("databases", parsed.databases);
  seen("keyspaces", parsed.keyspaces);
  seen("users", parsed.users);
  if (parsed.cells !== undefined) {
    const names = new Set<string>();
    parsed.cells.forEach((c, i) => {
      if (names.has(c)) issues.push(`cells[${i}]: '${c}' is listed twice`);
      names.add(c);
    });
  }
  parsed.databases.forEach((db, i) => {
    const needed = DURABILITY_REPLICAS[db.durability];
    if (needed > replicas) {
      issues.push(
        `databases[${i}].durability: '${db.durability}' needs at least ${needed} replicas per ` +
          `shard, but the cluster has ${replicas} (raise --replicas or lower the durability)`,
      );
    }
  });
  const databases = new Set(parsed.databases.map((d) => d.name));
  const keyspaces: ClusterKeyspace[] = [];
  /** Where each keyspace's vschema came from, for the messages. */
  const origins: string[] = [];
  parsed.keyspaces.forEach((ks, i) => {
    const at = `keyspaces[${i}]`;
    const db = ks.database ?? ks.name;
    if (!databases.has(db)) {
      issues.push(
        `${at}.database: database '${db}' is not in 'databases'` +
          (ks.database === undefined ? " (a keyspace uses the database of its own name)" : ""),
      );
    }
    let shards = ks.shards;
    if (!ks.sharded) {
      if (shards !== undefined && (shards.length !== 1 || shards[0] !== "0")) {
        issues.push(
          `${at}.shards: an unsharded keyspace has exactly one shard, '0' ` +
            `(set "sharded": true for more): received ${JSON.stringify(shards)}`,
        );
      }
      shards = ["0"];
    } else if (shards === undefined) {
      issues.push(`${at}.shards: a sharded keyspace lists its shards, e.g. ["-80", "80-"]`);
      shards = [];
    } else {
      for (const problem of shardCoverageIssues(shards)) {
        issues.push(
          `${at}.shards: the shards must cover every keyspace id exactly once: ${problem}`,
        );
      }
    }
    const out: ClusterKeyspace = {
      name: ks.name,
      ...(ks.database !== undefined ? { database: ks.database } : {}),
      sharded: ks.sharded,
      shards,
    };
    let raw: unknown = ks.vschema;
    let origin = "";
    if (typeof ks.vschema === "string") {
      const path = resolve(baseDir ?? Deno.cwd(), ks.vschema);
      origin = ` (in vschema file '${path}')`;
      raw = readVSchemaFile(path, `${at}.vschema`, issues);
    } else if (ks.vschema === undefined && ks.sharded) {
      issues.push(
        `${at}.vschema: a sharded keyspace needs a vschema (an object, or the path of a JSON file)`,
      );
    }
    const rawSharded = (raw as { sharded?: unknown } | undefined)?.sharded;
    if (typeof rawSharded === "boolean" && rawSharded !== ks.sharded) {
      // Checked first: the rest of a vschema reads differently in a (un)sharded keyspace.
      issues.push(
        `${at}.vschema.sharded: must match the keyspace's 'sharded' (${ks.sharded}): ` +
          `received ${rawSharded}${origin}`,
      );
    } else if (raw !== undefined) {
      const v = validateVSchema(raw);
      if (!v.ok) {
        for (const issue of v.issues) {
          const path = issue.path === "(root)" ? "" : `.${issue.path}`;
          issues.push(`${at}.vschema${path}: ${issue.message}${origin}`);
        }
      } else {
        out.vschema = v.vschema;
      }
    }
    keyspaces.push(out);
    origins.push(origin);
  });
  const known = new Map<string, KnownKeyspace>(
    keyspaces.map((k) => [k.name, { sharded: k.sharded, vschema: k.vschema }]),
  );
  keyspaces.forEach((ks, i) => {
    if (ks.vschema === undefined) return;
    for (const issue of vschemaReferenceIssues(ks.name, ks.vschema, known)) {
      issues.push(
        `keyspaces[${i}].vschema.${issue.path}: ${
          issue.message.replace("which does not exist", "which is not in 'keyspaces'")
        }${origins[i]}`,
      );
    }
  });
  if (issues.length > 0) fail(source, issues);
  return { ...parsed, keyspaces };
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
  return parseClusterFile(value, replicas, `'${path}'`, dirname(resolve(path)));
}
