/**
 * Worker processes: `--workers N` runs the pooler as N processes. The first process is the one
 * started by hand: it listens, and hands the client connections it accepts to each worker in
 * turn (see pooler/server.ts, `WorkerPlace`). It starts the others as children of its own
 * program, each with its share of the pool sizes, watches them and stops them at shutdown. Each child calls
 * `setsid()`, so that it is a scheduling entity of its own where the kernel groups processes by
 * session (autogroup): N workers then get N shares of the CPUs, as N PgBouncer processes would.
 *
 * @module
 */

import { fileURLToPath } from "node:url";
import { z } from "zod";
import { openLibc } from "../shared/fastnet/libc.ts";
import type { Logger } from "../shared/log/mod.ts";
import { type PoolerConfig, poolerConfigSchema } from "./config.ts";

/** The environment variable that makes a pooler process a child worker (a JSON {@linkcode WorkerSpec}). */
export const WORKER_ENV = "TESSERA_POOLER_WORKER";

const workerSpecSchema = z.object({
  index: z.number().int().min(1),
  count: z.number().int().min(2),
  dir: z.string().startsWith("/"),
  config: z.unknown(),
});

/** What a child worker is told by the first process. */
export interface WorkerSpec {
  /** Its number (1 and up: the first process is 0). */
  index: number;
  /** How many workers there are. */
  count: number;
  /** The workers' private folder (their sockets). */
  dir: string;
  /** The first process's configuration. */
  config: PoolerConfig;
}

/** This process's worker spec when it was started as a child worker; undefined otherwise. */
export function workerFromEnv(): WorkerSpec | undefined {
  const raw = Deno.env.get(WORKER_ENV);
  if (raw === undefined || raw === "") return undefined;
  const spec = workerSpecSchema.parse(JSON.parse(raw));
  const config = poolerConfigSchema.parse(spec.config);
  if (spec.index >= spec.count) throw new RangeError(`worker ${spec.index} of ${spec.count}`);
  return { ...spec, config };
}

/** Worker `index`'s share of `total` split over `count` workers (the first ones get the rest). */
export function share(total: number, count: number, index: number): number {
  return Math.floor(total / count) + (index < total % count ? 1 : 0);
}

/** Sizes and limits of worker `index` of `count`: every pool-wide number is split. */
export function workerSizes(
  config: PoolerConfig,
  count: number,
  index: number,
): Pick<PoolerConfig, "poolSize" | "minPoolSize" | "reservePoolSize" | "maxClientConn"> {
  return {
    poolSize: share(config.poolSize, count, index),
    minPoolSize: share(config.minPoolSize, count, index),
    reservePoolSize: share(config.reservePoolSize, count, index),
    maxClientConn: Math.max(1, share(config.maxClientConn, count, index)),
  };
}

/**
 * Makes this process the leader of a new session (its own autogroup); returns an error text
 * when that was not possible (the worker still runs).
 */
export function detachSession(): string | undefined {
  const libc = openLibc();
  if (typeof libc === "string") return libc;
  if (libc.sym.setsid() < 0) return `setsid failed (os error ${libc.errno()})`;
  return undefined;
}

/** Resolves when standard input reaches its end (the first process closed it, or died). */
export async function stdinClosed(): Promise<void> {
  const buf = new Uint8Array(64);
  try {
    while ((await Deno.stdin.read(buf)) !== null) { /* nothing is sent but the end */ }
  } catch {
    // a closed or broken pipe is the same signal
  }
}

/** The permission flags this process runs with, for its children (granted ones only). */
function permissionFlags(): string[] {
  const names = ["read", "write", "net", "env", "sys", "run", "ffi"] as const;
  const flags: string[] = [];
  for (const name of names) {
    if (Deno.permissions.querySync({ name }).state === "granted") flags.push(`--allow-${name}`);
  }
  return flags;
}

/** Starts, watches and stops the child workers of the first process. */
export class WorkerSet {
  #children = new Map<number, Deno.ChildProcess>();
  #stopping = false;
  #logger: Logger;
  #specs: WorkerSpec[];
  #exits = new Set<Promise<unknown>>();

  /** Starts workers 1..count-1 (throws when the program cannot be started). */
  constructor(
    config: PoolerConfig,
    count: number,
    dir: string,
    logger: Logger,
  ) {
    this.#logger = logger;
    this.#specs = [];
    for (let index = 1; index < count; index++) {
      this.#specs.push({ index, count, dir, config });
    }
    for (const spec of this.#specs) this.#spawn(spec);
  }

  /** Sends `signal` to every running child (SIGHUP: reload). */
  signal(signal: Deno.Signal): void {
    for (const c of this.#children.values()) {
      try {
        c.kill(signal);
      } catch {
        // it has just exited
      }
    }
  }

  /** Process ids of the running children, by worker index. */
  get pids(): Map<number, number> {
    const out = new Map<number, number>();
    for (const [i, c] of this.#children) out.set(i, c.pid);
    return out;
  }

  #spawn(spec: WorkerSpec): void {
    const here = new URL("./main.ts", import.meta.url);
    if (here.protocol !== "file:") {
      throw new Error("worker processes need the pooler's program as local files");
    }
    const child = new Deno.Command(Deno.execPath(), {
      args: [
        "run",
        "--no-prompt",
        ...permissionFlags(),
        "--config",
        fileURLToPath(new URL("../deno.json", import.meta.url)),
        fileURLToPath(here),
      ],
      env: { [WORKER_ENV]: JSON.stringify(spec) },
      stdin: "piped",
      stdout: "inherit",
      stderr: "inherit",
    }).spawn();
    this.#children.set(spec.index, child);
    const exit = child.status.then((status) => {
      this.#exits.delete(exit);
      if (this.#children.get(spec.index) === child) this.#children.delete(spec.index);
      if (this.#stopping) return;
      this.#logger.error("a pooler worker exited; starting it again in 1 s", {
        worker: spec.index,
        code: status.code,
        signal: status.signal,
      });
      setTimeout(() => {
        if (!this.#stopping) this.#spawn(spec);
      }, 1000);
    });
    this.#exits.add(exit);
  }

  /**
   * Stops every child: closes their standard input (they drain and exit as on SIGTERM), and
   * kills any still running after `timeoutMs`.
   */
  async stop(timeoutMs: number): Promise<void> {
    this.#stopping = true;
    const children = [...this.#children.values()];
    for (const c of children) {
      try {
        await c.stdin.close();
      } catch {
        // already gone
      }
    }
    let timer: ReturnType<typeof setTimeout> | undefined;
    const late = new Promise<void>((r) => timer = setTimeout(r, timeoutMs));
    await Promise.race([Promise.allSettled(children.map((c) => c.status)), late]);
    clearTimeout(timer);
    for (const c of children) {
      try {
        c.kill("SIGKILL");
      } catch {
        // exited
      }
    }
    await Promise.allSettled(children.map((c) => c.status));
    await Promise.allSettled([...this.#exits]);
  }
}
