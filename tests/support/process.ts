/**
 * Helpers for end-to-end tests that run Tessera's own entry points as real processes.
 *
 * @module
 */

/** A child process started by a test, with its output captured to a file. */
export interface TestProcess {
  /** The child. */
  child: Deno.ChildProcess;
  /** File holding the child's stdout and stderr. */
  logFile: string;
  /** Sends `signal` and waits for the exit. */
  stop(signal?: Deno.Signal): Promise<Deno.CommandStatus>;
}

const ROOT = new URL("../..", import.meta.url).pathname;

/**
 * The command line of `deno task <task>` as written in deno.json, with `deno` replaced by this
 * Deno's path. Running it directly (not through `deno task`) keeps the component as our direct
 * child, so that a signal sent by a test reaches the component itself.
 */
export function taskCommand(task: string): string[] {
  const config = JSON.parse(Deno.readTextFileSync(`${ROOT}/deno.json`));
  const line: string | undefined = config.tasks?.[task];
  if (line === undefined) throw new Error(`deno.json has no task '${task}'`);
  const words = line.split(/\s+/).filter((w) => w !== "");
  if (words[0] !== "deno") throw new Error(`task '${task}' does not start with deno: '${line}'`);
  return [Deno.execPath(), ...words.slice(1)];
}

async function copyTo(stream: ReadableStream<Uint8Array>, file: Deno.FsFile): Promise<void> {
  for await (const chunk of stream) await file.write(chunk);
}

/** Options of {@linkcode startTask}. */
export interface StartTaskOptions {
  /**
   * Start the component in a session of its own, as a service manager would (benchmarks): with
   * the kernel's autogroup scheduling, a child left in our session shares one CPU share with
   * every other process we start, pgbench included.
   */
  ownSession?: boolean;
  /** More environment variables for the process. */
  env?: Record<string, string>;
}

/** Runs the command of `deno task <task> ...args` from the repository root, logging to `logFile`. */
export async function startTask(
  task: string,
  args: string[],
  logFile: string,
  options: StartTaskOptions = {},
): Promise<TestProcess> {
  const file = await Deno.open(logFile, { write: true, create: true, append: true });
  const [program, ...taskArgs] = taskCommand(task);
  const child = new Deno.Command(program!, {
    args: [...taskArgs, ...args],
    cwd: ROOT,
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
    env: { NO_COLOR: "1", ...options.env },
    detached: options.ownSession ?? false,
  }).spawn();
  const pump = Promise.all([copyTo(child.stdout, file), copyTo(child.stderr, file)])
    .finally(() => file.close());
  let status: Deno.CommandStatus | undefined;
  return {
    child,
    logFile,
    async stop(signal: Deno.Signal = "SIGTERM") {
      if (status !== undefined) return status;
      try {
        child.kill(signal);
      } catch {
        // already exited
      }
      status = await child.status;
      await pump.catch(() => undefined);
      return status;
    },
  };
}

/** Polls `fn` until it returns a value other than undefined, or throws after `timeoutMs`. */
export async function waitFor<T>(
  what: string,
  fn: () => Promise<T | undefined> | T | undefined,
  timeoutMs = 30_000,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let lastError: unknown;
  while (Date.now() < deadline) {
    try {
      const value = await fn();
      if (value !== undefined) return value;
    } catch (err) {
      lastError = err;
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`, { cause: lastError });
}

/** Makes a temporary folder that an unprivileged OS user (Postgres's) can traverse. */
export async function makeSharedTempDir(prefix: string): Promise<string> {
  const dir = await Deno.makeTempDir({ prefix });
  await Deno.chmod(dir, 0o755);
  return dir;
}
