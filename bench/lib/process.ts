/**
 * Process plumbing for benchmark drivers: finding the programs a benchmark needs (with the
 * Debian package to install when one is missing), stopping children with a deadline, raising a
 * running process's open-file limit, and checking that a port is free.
 *
 * @module
 */

/** Where to look for a program and what to tell the user when it is missing. */
export interface FindBinaryOptions {
  /** Debian package that provides the program, named in the error. */
  debianPackage: string;
  /** Directories searched before `PATH` (e.g. Postgres's bindir, `/usr/sbin`). */
  dirs?: string[];
  /** Environment to read `PATH` from; the process's own when not given. */
  env?: Record<string, string | undefined>;
}

function isExecutableFile(path: string): boolean {
  try {
    const info = Deno.statSync(path);
    return info.isFile && ((info.mode ?? 0o111) & 0o111) !== 0;
  } catch {
    return false;
  }
}

/**
 * Returns the path of `name`, searching `options.dirs` then `PATH`, or throws an error naming the
 * Debian package to install.
 */
export function findBinary(name: string, options: FindBinaryOptions): string {
  const env = options.env ?? Deno.env.toObject();
  const dirs = [
    ...(options.dirs ?? []),
    ...(env.PATH ?? "").split(":").filter((d) => d !== ""),
  ];
  for (const dir of dirs) {
    const path = `${dir}/${name}`;
    if (isExecutableFile(path)) return path;
  }
  throw new Error(
    `'${name}' was not found (searched ${dirs.map((d) => `'${d}'`).join(", ") || "nothing"}): ` +
      `install the Debian package '${options.debianPackage}' (apt-get install ${options.debianPackage})`,
  );
}

/**
 * Sends `signal` to `child` and waits for it to exit; after `graceMs` sends SIGKILL. Never
 * throws: a child that already exited is fine.
 */
export async function stopChild(
  child: Deno.ChildProcess,
  signal: Deno.Signal = "SIGTERM",
  graceMs = 5_000,
): Promise<Deno.CommandStatus> {
  try {
    child.kill(signal);
  } catch {
    // already exited
  }
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timedOut = new Promise<"timeout">((resolve) => {
    timer = setTimeout(() => resolve("timeout"), graceMs);
  });
  const first = await Promise.race([child.status, timedOut]);
  clearTimeout(timer);
  if (first !== "timeout") return first;
  try {
    child.kill("SIGKILL");
  } catch {
    // exited meanwhile
  }
  return await child.status;
}

/** Soft and hard open-file limits of a process. */
export interface NofileLimits {
  /** Limit in force. */
  soft: number;
  /** Ceiling the soft limit may be raised to without privilege. */
  hard: number;
}

/** Parses the "Max open files" limits out of the text of `/proc/<pid>/limits`. */
export function parseNofileLimits(limitsText: string): NofileLimits {
  const match = /^Max open files\s+(\S+)\s+(\S+)/m.exec(limitsText);
  if (!match) throw new Error("'Max open files' line not found in /proc/<pid>/limits");
  const value = (raw: string) => (raw === "unlimited" ? Number.POSITIVE_INFINITY : Number(raw));
  return { soft: value(match[1]!), hard: value(match[2]!) };
}

/** The open-file limits of `pid`. */
export function readNofileLimits(pid: number): NofileLimits {
  return parseNofileLimits(Deno.readTextFileSync(`/proc/${pid}/limits`));
}

/**
 * Makes sure the running process `pid` may open at least `need` files, with util-linux's
 * `prlimit`: the soft limit is raised up to the hard one without privilege; a hard limit below
 * `need` is raised too, which needs CAP_SYS_RESOURCE (root outside a restricted container).
 * Children started afterwards inherit the limits. Returns the soft limit now in force.
 */
export async function ensureNofile(pid: number, need: number): Promise<number> {
  const { soft, hard } = readNofileLimits(pid);
  if (soft >= need) return soft;
  const setting = hard >= need ? `${need}:` : `${need}:${need}`;
  const prlimit = findBinary("prlimit", { debianPackage: "util-linux", dirs: ["/usr/bin"] });
  const out = await new Deno.Command(prlimit, {
    args: [`--pid=${pid}`, `--nofile=${setting}`],
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).output();
  if (!out.success) {
    throw new Error(
      `the open-file limit of pid ${pid} is ${soft} (hard ${hard}) and could not be raised to ` +
        `${need}: ${new TextDecoder().decode(out.stderr).trim()} (raising the hard limit needs ` +
        "root with CAP_SYS_RESOURCE)",
    );
  }
  return readNofileLimits(pid).soft;
}

/** Throws a clear error when something already listens on `hostname:port`. */
export function assertPortFree(port: number, hostname = "127.0.0.1"): void {
  if (port >= 32768) {
    throw new RangeError(
      `'port' must be below 32768 (the kernel's ephemeral range starts there): received ${port}`,
    );
  }
  let listener: Deno.Listener;
  try {
    listener = Deno.listen({ hostname, port });
  } catch (err) {
    if (err instanceof Deno.errors.AddrInUse) {
      throw new Error(`port ${port} on ${hostname} is already in use: choose another --port-base`);
    }
    throw err;
  }
  listener.close();
}

/** Waits `ms` milliseconds, or rejects with the abort reason when `signal` fires first. */
export function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) {
      reject(signal.reason);
      return;
    }
    const onAbort = () => {
      clearTimeout(timer);
      reject(signal?.reason);
    };
    const timer = setTimeout(() => {
      signal?.removeEventListener("abort", onAbort);
      resolve();
    }, ms);
    signal?.addEventListener("abort", onAbort, { once: true });
  });
}

/**
 * A stack of cleanup steps run last-in first-out. Each step runs even when an earlier one
 * throws; errors are reported through `onError`.
 */
export class CleanupStack {
  #steps: { what: string; fn: () => Promise<unknown> | unknown }[] = [];
  #onError: (what: string, err: unknown) => void;

  /** Creates an empty stack; `onError` receives failures of individual steps. */
  constructor(onError: (what: string, err: unknown) => void) {
    this.#onError = onError;
  }

  /** Adds a step; returns a function that runs it now (once) and removes it from the stack. */
  push(what: string, fn: () => Promise<unknown> | unknown): () => Promise<void> {
    const step = { what, fn };
    this.#steps.push(step);
    return async () => {
      const index = this.#steps.indexOf(step);
      if (index < 0) return;
      this.#steps.splice(index, 1);
      await this.#run(step);
    };
  }

  async #run(step: { what: string; fn: () => Promise<unknown> | unknown }): Promise<void> {
    try {
      await step.fn();
    } catch (err) {
      this.#onError(step.what, err);
    }
  }

  /** Runs every remaining step, newest first. */
  async runAll(): Promise<void> {
    while (this.#steps.length > 0) {
      const step = this.#steps.pop()!;
      await this.#run(step);
    }
  }
}
