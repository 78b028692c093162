/**
 * Running `deno task cluster` from end-to-end tests exactly as a user does.
 *
 * @module
 */

const ROOT = new URL("../..", import.meta.url).pathname;

/** How a `deno task cluster` command ended. */
export interface ClusterRun {
  /** Exit code. */
  code: number;
  /** Standard output. */
  stdout: string;
  /** Standard error. */
  stderr: string;
}

/** Runs `deno task cluster ...args` from the repository root. */
export async function cluster(...args: string[]): Promise<ClusterRun> {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["task", "cluster", ...args],
    cwd: ROOT,
    env: { NO_COLOR: "1" },
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).output();
  const dec = new TextDecoder();
  return { code: out.code, stdout: dec.decode(out.stdout), stderr: dec.decode(out.stderr) };
}

/** One process in `status --json`. */
export interface ClusterProcess {
  /** Name, e.g. `pooler-app-0-1`. */
  name: string;
  /** etcd, pgctld, pooler, orch or gateway. */
  kind: string;
  /** Cell, when the process belongs to one. */
  cell: string | null;
  /** Pid while running. */
  pid: number | null;
  /** running, restarting, stopped, crashed. */
  state: string;
  /** Restarts by the supervisor. */
  restarts: number;
  /** Ports by use. */
  ports: Record<string, number>;
  /** Poolers: the type in their topo record. */
  role?: string | null;
  /** Poolers: whether the shard record names them primary. */
  shardPrimary?: boolean;
}

/** `status --json`. */
export interface ClusterStatus {
  /** The supervisor. */
  supervisor: { pid: number; state: string; alive: boolean };
  /** Every process. */
  processes: ClusterProcess[];
}

/** Runs `status --dir DIR --json` and parses it; throws when it fails. */
export async function clusterStatus(dir: string): Promise<ClusterStatus> {
  const run = await cluster("status", "--dir", dir, "--json");
  if (run.code !== 0) throw new Error(`status failed (${run.code}): ${run.stderr}`);
  return JSON.parse(run.stdout) as ClusterStatus;
}
