/**
 * Memory and descriptor probes for a server process, read from `/proc`, and the idle-client
 * memory measurement built on them.
 *
 * @module
 */

import { startIdleClients } from "./idle_clients.ts";
import { checkLogin } from "./pg_startup.ts";
import { sleep } from "./process.ts";

/** Reads a `kB` field (e.g. `VmRSS`, `VmHWM`) from the text of `/proc/<pid>/status`. */
export function parseStatusKb(statusText: string, field = "VmRSS"): number {
  const match = new RegExp(`^${field}:\\s+(\\d+) kB$`, "m").exec(statusText);
  if (!match) throw new Error(`'${field}' not found in /proc/<pid>/status`);
  return Number(match[1]);
}

/** The resident set size of `pid` in KiB. */
export function readRssKb(pid: number): number {
  return parseStatusKb(Deno.readTextFileSync(`/proc/${pid}/status`), "VmRSS");
}

/** Open file descriptors of `pid` (sockets included). */
export function countOpenFds(pid: number): number {
  let n = 0;
  for (const _ of Deno.readDirSync(`/proc/${pid}/fd`)) n++;
  return n;
}

/** The command line of `pid`, one element per argument. */
export function readCommandLine(pid: number): string[] {
  return Deno.readTextFileSync(`/proc/${pid}/cmdline`).split("\0").filter((a) => a !== "");
}

/** Child pids of `pid` (from `/proc/<pid>/task/*\/children`). */
export function childPids(pid: number): number[] {
  const out: number[] = [];
  for (const task of Deno.readDirSync(`/proc/${pid}/task`)) {
    const text = Deno.readTextFileSync(`/proc/${pid}/task/${task.name}/children`);
    for (const word of text.trim().split(/\s+/)) if (word !== "") out.push(Number(word));
  }
  return out;
}

/** The resolved path of the executable of `pid`. */
export function readExe(pid: number): string {
  return Deno.readLinkSync(`/proc/${pid}/exe`);
}

/** Whether one argument of `argv` (after the program) is `marker` or a path ending in it. */
export function argvHas(argv: readonly string[], marker: string): boolean {
  return argv.slice(1).some((arg) => arg === marker || arg.endsWith(`/${marker}`));
}

/**
 * Returns `pid` when one of its arguments is `marker` (e.g. `pooler/main.ts`, or a path ending in
 * it) and, when `exe` is given, its executable is that file; else the first descendant that
 * matches (a wrapper such as a shell or `deno task` in between). A shell whose `-c` script merely
 * mentions the marker does not match. Throws when nothing matches, so a measurement never reads
 * the wrong process.
 */
export function findServerPid(pid: number, marker: string, exe?: string): number {
  const wantExe = exe === undefined ? undefined : Deno.realPathSync(exe);
  const queue = [pid];
  while (queue.length > 0) {
    const current = queue.shift()!;
    try {
      if (
        argvHas(readCommandLine(current), marker) &&
        (wantExe === undefined || readExe(current) === wantExe)
      ) {
        return current;
      }
      queue.push(...childPids(current));
    } catch {
      // exited meanwhile
    }
  }
  throw new Error(
    `no process under pid ${pid} runs '${marker}'${exe ? ` with ${exe}` : ""}`,
  );
}

/** What {@linkcode measureIdleRss} found. */
export interface IdleRssResult {
  /** Pid whose memory was read. */
  pid: number;
  /** Connections asked for. */
  requested: number;
  /** Connections logged in and held. */
  connected: number;
  /** Connections that failed. */
  failed: number;
  /** Up to five distinct error messages from failed connections. */
  errors: string[];
  /** Seconds the opener took. */
  connectSeconds: number;
  /** RSS before the clients connected (after one warm-up login), KiB. */
  rssBeforeKb: number;
  /** RSS while they are connected and idle, KiB. */
  rssWithClientsKb: number;
  /** Open descriptors before and with the clients. */
  fdsBefore: number;
  /** Open descriptors while the clients are connected. */
  fdsWithClients: number;
  /** `(rssWithClientsKb - rssBeforeKb) / connected`, KiB; NaN when none connected. */
  perClientKb: number;
  /** RSS once the clients were held idle for `holdMs` (equal to the first reading without it). */
  rssHeldKb: number;
  /** `(rssHeldKb - rssBeforeKb) / connected`, KiB. */
  perClientHeldKb: number;
  /** How long the clients were held before `rssHeldKb` was read, ms. */
  heldMs: number;
}

/** Where the server listens, which pid to read, and how many clients to hold. */
export interface IdleRssOptions {
  /** Pid of the server process itself (not a wrapper). */
  pid: number;
  /** Host the server listens on. */
  host: string;
  /** Port the server listens on. */
  port: number;
  /** Clients to open. */
  count: number;
  /** User name. */
  user: string;
  /** Database name. */
  database: string;
  /** Wait after the last connection before reading memory, ms; 3000 when not given. */
  settleMs?: number;
  /**
   * Also read the RSS after holding the clients idle this long since the last connection, ms
   * (a garbage-collected runtime gives back what the logins left behind only later); none when
   * not given or not above `settleMs`.
   */
  holdMs?: number;
  /** Aborts the measurement. */
  signal?: AbortSignal;
  /** Progress callback. */
  onProgress?: (connected: number, failed: number) => void;
}

/**
 * Logs in once (so the server has its first backend and warm code paths), reads the server's
 * RSS, opens `count` idle clients from a separate process, waits for the memory to settle, reads
 * the RSS again, and closes the clients.
 */
export async function measureIdleRss(options: IdleRssOptions): Promise<IdleRssResult> {
  const login = { host: options.host, port: options.port, user: options.user };
  const warm = await checkLogin({ ...login, database: options.database });
  if (warm !== undefined) throw new Error(`warm-up login failed: ${warm}`);
  await sleep(1000, options.signal);
  const rssBeforeKb = readRssKb(options.pid);
  const fdsBefore = countOpenFds(options.pid);
  const clients = await startIdleClients({
    ...login,
    database: options.database,
    count: options.count,
    ...(options.signal ? { signal: options.signal } : {}),
    ...(options.onProgress ? { onProgress: options.onProgress } : {}),
  });
  try {
    const settleMs = options.settleMs ?? 3000;
    await sleep(settleMs, options.signal);
    const rssWithClientsKb = readRssKb(options.pid);
    const fdsWithClients = countOpenFds(options.pid);
    const holdMs = options.holdMs ?? 0;
    let rssHeldKb = rssWithClientsKb;
    if (holdMs > settleMs) {
      await sleep(holdMs - settleMs, options.signal);
      rssHeldKb = readRssKb(options.pid);
    }
    const { connected } = clients.report;
    if (connected > 0 && fdsWithClients - fdsBefore < connected * 0.9) {
      throw new Error(
        `pid ${options.pid} holds ${fdsWithClients - fdsBefore} more descriptors with ` +
          `${connected} clients connected: it is not the process serving them`,
      );
    }
    return {
      pid: options.pid,
      requested: options.count,
      connected,
      failed: clients.report.failed,
      errors: clients.report.errors,
      connectSeconds: clients.report.seconds,
      rssBeforeKb,
      rssWithClientsKb,
      fdsBefore,
      fdsWithClients,
      perClientKb: connected > 0 ? (rssWithClientsKb - rssBeforeKb) / connected : Number.NaN,
      rssHeldKb,
      perClientHeldKb: connected > 0 ? (rssHeldKb - rssBeforeKb) / connected : Number.NaN,
      heldMs: Math.max(holdMs, settleMs),
    };
  } finally {
    await clients.close();
  }
}
