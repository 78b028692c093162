/**
 * `DIR/cluster.json`: what the supervisor runs and how each process is doing. The supervisor
 * rewrites it (temp file + rename, so readers never see half a file) on every change; `status`
 * and `down` read it.
 *
 * @module
 */

import { z } from "zod";

/** Kinds of process the launcher runs. */
export const ProcessKindSchema = z.enum(["etcd", "pgctld", "pooler", "orch", "gateway"]);
/** A process kind. */
export type ProcessKind = z.infer<typeof ProcessKindSchema>;

/**
 * A process's state: `running` (alive), `restarting` (exited unexpectedly, waiting out its
 * backoff), `stopped` (not started yet, or stopped on purpose), `crashed` (exited with an invalid
 * configuration, exit code 2: restarting cannot help, see its log).
 */
export const ProcessStateSchema = z.enum(["running", "restarting", "stopped", "crashed"]);
/** A process state. */
export type ProcessState = z.infer<typeof ProcessStateSchema>;

/** How a process last exited. */
export const ExitSchema = z.object({
  code: z.number().int(),
  signal: z.string().nullable(),
  at: z.string(),
});

/** One supervised process. */
export const ProcessInfoSchema = z.object({
  name: z.string(),
  kind: ProcessKindSchema,
  cell: z.string().optional(),
  /** Topo alias (pooler, orch, gateway) or the instance alias (pgctld). */
  alias: z.string().optional(),
  pid: z.number().int().nullable(),
  state: ProcessStateSchema,
  restarts: z.number().int().min(0),
  ports: z.record(z.string(), z.number().int()),
  command: z.array(z.string()),
  /** Text unique to this process's command line, to tell it from a process that reused its pid. */
  marker: z.string(),
  logFile: z.string(),
  startedAt: z.string().nullable(),
  lastExit: ExitSchema.nullable(),
  /** For pgctld: the Postgres data directory (for the `pg_ctl stop` fallback of `down`). */
  dataDir: z.string().optional(),
  /** For pgctld and pooler: keyspace and shard served. */
  keyspace: z.string().optional(),
  shard: z.string().optional(),
});
/** One supervised process. */
export type ProcessInfo = z.infer<typeof ProcessInfoSchema>;

/** The options a cluster was started with (reused by a later `up` that does not repeat them). */
export const ClusterOptionsSchema = z.object({
  replicas: z.number().int().min(0),
  cells: z.number().int().min(1),
  basePort: z.number().int(),
  config: z.string().optional(),
  /** `--shards` of the default keyspace (without `--config`). */
  shards: z.number().int().min(1).optional(),
  /** `--vschema` of the default keyspace (without `--config`), an absolute path. */
  vschema: z.string().optional(),
});
/** Options of a cluster. */
export type ClusterOptions = z.infer<typeof ClusterOptionsSchema>;

/** The supervisor's own state. */
export const SupervisorStateSchema = z.enum(["starting", "running", "stopping", "stopped"]);

/** The whole of `cluster.json`. */
export const ClusterStateSchema = z.object({
  version: z.literal(1),
  dir: z.string(),
  supervisor: z.object({
    pid: z.number().int(),
    state: SupervisorStateSchema,
    startedAt: z.string(),
    command: z.array(z.string()),
    error: z.string().optional(),
  }),
  options: ClusterOptionsSchema,
  etcdEndpoint: z.string(),
  gateways: z.array(z.object({
    cell: z.string(),
    pgPort: z.number().int(),
    httpPort: z.number().int(),
  })),
  auth: z.enum(["trust", "scram-sha-256"]),
  processes: z.array(ProcessInfoSchema),
  /** Processes not started, with why (e.g. a component whose deno task does not exist yet). */
  skipped: z.array(z.object({ name: z.string(), reason: z.string() })),
  /** Warnings shown by `up` and `status`. */
  warnings: z.array(z.string()),
  updatedAt: z.string(),
});
/** The whole of `cluster.json`. */
export type ClusterState = z.infer<typeof ClusterStateSchema>;

/** Path of the state file in `dir`. */
export function statePath(dir: string): string {
  return `${dir}/cluster.json`;
}

/** Path of the saved options file in `dir`. */
export function optionsPath(dir: string): string {
  return `${dir}/options.json`;
}

/** Writes `text` to `path` atomically: a temporary file beside it, then a rename. */
export async function writeFileAtomic(path: string, text: string, mode = 0o644): Promise<void> {
  const tmp = `${path}.${Deno.pid}.tmp`;
  await Deno.writeTextFile(tmp, text, { mode });
  await Deno.rename(tmp, path);
}

/** Writes the cluster state. */
export async function writeState(dir: string, state: ClusterState): Promise<void> {
  await writeFileAtomic(statePath(dir), JSON.stringify(state, null, 2) + "\n");
}

/** Reads the cluster state; undefined when there is none. Throws for a corrupt file. */
export async function readState(dir: string): Promise<ClusterState | undefined> {
  let text: string;
  try {
    text = await Deno.readTextFile(statePath(dir));
  } catch (err) {
    if (err instanceof Deno.errors.NotFound) return undefined;
    throw err;
  }
  const parsed = ClusterStateSchema.safeParse(JSON.parse(text));
  if (!parsed.success) {
    throw new Error(`${statePath(dir)} is not a cluster state file: ${parsed.error.message}`);
  }
  return parsed.data;
}

/** Reads the options a cluster in `dir` was last started with. */
export async function readOptions(dir: string): Promise<ClusterOptions | undefined> {
  try {
    const parsed = ClusterOptionsSchema.safeParse(
      JSON.parse(await Deno.readTextFile(optionsPath(dir))),
    );
    return parsed.success ? parsed.data : undefined;
  } catch {
    return undefined;
  }
}

/** Saves the options a cluster in `dir` is started with. */
export async function writeOptions(dir: string, options: ClusterOptions): Promise<void> {
  await writeFileAtomic(optionsPath(dir), JSON.stringify(options, null, 2) + "\n");
}

/**
 * Whether process `pid` is alive (a zombie counts as dead). With `expect`, also whether its
 * command line contains that text, so that a reused pid is not taken for ours.
 */
export function pidAlive(pid: number | null | undefined, expect?: string): boolean {
  if (pid === null || pid === undefined || pid <= 0) return false;
  try {
    const stat = Deno.readTextFileSync(`/proc/${pid}/stat`);
    const state = stat.slice(stat.lastIndexOf(")") + 2, stat.lastIndexOf(")") + 3);
    if (state === "Z" || state === "X") return false;
    if (expect === undefined) return true;
    const cmdline = Deno.readTextFileSync(`/proc/${pid}/cmdline`).replaceAll("\0", " ");
    return cmdline.includes(expect);
  } catch {
    return false;
  }
}

/** Sends `signal` to `pid`, ignoring a process that is already gone. */
export function signalPid(pid: number, signal: Deno.Signal): boolean {
  try {
    Deno.kill(pid, signal);
    return true;
  } catch {
    return false;
  }
}

/** Waits until `pid` is gone, up to `timeoutMs`; resolves whether it is gone. */
export async function waitPidGone(
  pid: number,
  timeoutMs: number,
  expect?: string,
): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  while (pidAlive(pid, expect)) {
    if (Date.now() > deadline) return false;
    await new Promise((r) => setTimeout(r, 100));
  }
  return true;
}
