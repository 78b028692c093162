/**
 * Helpers for the topo tests: a real etcd in a temporary directory, a logger that records lines,
 * and polling with a generous bound.
 *
 * @module
 */

import { Logger } from "../log/mod.ts";
import { type EtcdProcess, startEtcd } from "../proc/mod.ts";
import type { TopoWatch } from "./backend.ts";

/** A logger whose lines are kept in `lines` (parsed) instead of written to stderr. */
export function memoryLogger(component = "topo-test"): {
  logger: Logger;
  lines: Record<string, unknown>[];
} {
  const lines: Record<string, unknown>[] = [];
  const logger = new Logger({
    component,
    level: "debug",
    sink: (line) => lines.push(JSON.parse(line)),
  });
  return { logger, lines };
}

/**
 * Starts etcd on `clientPort`/`peerPort` in a fresh temporary directory, runs `fn`, then stops
 * etcd and removes the directory, also when `fn` throws.
 */
export async function withEtcd(
  clientPort: number,
  peerPort: number,
  fn: (etcd: EtcdProcess) => Promise<void>,
): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "tessera-topo-test-" });
  let etcd: EtcdProcess | undefined;
  try {
    etcd = await startEtcd({
      dataDir: dir,
      clientPort,
      peerPort,
      logger: memoryLogger("proc").logger,
    });
    await fn(etcd);
  } finally {
    try {
      await etcd?.kill();
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  }
}

/** Polls `fn` until it returns true, or throws after `timeoutMs` naming `what`. */
export async function eventually(
  what: string,
  fn: () => boolean | Promise<boolean>,
  timeoutMs = 20_000,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let lastError: unknown;
  while (Date.now() < deadline) {
    try {
      if (await fn()) return;
      lastError = undefined;
    } catch (err) {
      lastError = err;
    }
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  const suffix = lastError === undefined ? "" : `: last error: ${String(lastError)}`;
  throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${suffix}`);
}

/** Consumes `watch` in the background into `events`; `done` settles when the watch ends. */
export function collect<E>(watch: TopoWatch<E>): { events: E[]; done: Promise<void> } {
  const events: E[] = [];
  const done = (async () => {
    for await (const event of watch) events.push(event);
  })();
  return { events, done };
}

/** Resolves after `ms` milliseconds. */
export function delay(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** A fixture process from `testdata/`, started with `deno run -A`. */
export interface FixtureProcess {
  /** The first line the fixture printed. */
  firstLine: string;
  /** Sends SIGKILL and waits for the exit. */
  kill(): Promise<void>;
}

const REPO_ROOT = new URL("../../", import.meta.url).pathname;

/**
 * Runs `testdata/<script>` with `args` in a child Deno and waits for its first line of output
 * (bounded by `timeoutMs`). Its stderr is discarded.
 */
export async function startFixture(
  script: string,
  args: string[],
  timeoutMs = 30_000,
): Promise<FixtureProcess> {
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", new URL(`./testdata/${script}`, import.meta.url).pathname, ...args],
    cwd: REPO_ROOT,
    stdin: "null",
    stdout: "piped",
    stderr: "null",
  }).spawn();
  const kill = async () => {
    try {
      child.kill("SIGKILL");
    } catch {
      // already exited
    }
    await child.status;
  };
  const reader = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
  let text = "";
  let timer: ReturnType<typeof setTimeout> | undefined;
  try {
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(
        () => reject(new Error(`fixture ${script} printed nothing within ${timeoutMs} ms`)),
        timeoutMs,
      );
    });
    while (!text.includes("\n")) {
      const { value, done } = await Promise.race([reader.read(), timeout]);
      if (done) throw new Error(`fixture ${script} exited before printing a line: '${text}'`);
      text += value;
    }
  } catch (err) {
    await reader.cancel().catch(() => undefined);
    await kill();
    throw err;
  } finally {
    clearTimeout(timer);
  }
  await reader.cancel().catch(() => undefined);
  return { firstLine: text.split("\n")[0]!, kill };
}

/**
 * Test options that make Deno check for timers left running at the end of a test (Deno 2.9 does
 * not by default): for tests whose timers all belong to code we control.
 */
export const CHECK_TIMERS = { sanitizeOps: true } as const;
