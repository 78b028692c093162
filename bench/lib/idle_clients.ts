/**
 * Opens many idle, logged-in client connections to a Postgres-speaking server, from a separate
 * Deno process so that the client side's memory and file descriptors never mix with the
 * driver's. Each connection completes startup and (trust) authentication, then sits idle with no
 * pending read until the driver asks the process to close them.
 *
 * Run directly: `deno run --allow-net bench/lib/idle_clients.ts --host 127.0.0.1 --port 6432
 * --count 10000 --user postgres --database postgres`. It prints JSON lines on stdout
 * (`progress`, then `ready`) and closes every connection when its stdin ends.
 *
 * @module
 */

import { parseArgs } from "node:util";
import { connectAndLogin, TERMINATE, writeAll } from "./pg_startup.ts";
import { stopChild } from "./process.ts";

/** Where to open the connections and how many. */
export interface IdleClientsOptions {
  /** Host name or IP. */
  host: string;
  /** TCP port. */
  port: number;
  /** Connections to open. */
  count: number;
  /** User name. */
  user: string;
  /** Database name. */
  database: string;
  /** Handshakes in flight at once; 64 when not given. */
  concurrency?: number;
  /** Limit per handshake in ms; 60 000 when not given. */
  timeoutMs?: number;
}

/** How the opening went. */
export interface IdleClientsReport {
  /** Connections asked for. */
  requested: number;
  /** Connections that completed the handshake and are held open. */
  connected: number;
  /** Connections that failed to connect or log in. */
  failed: number;
  /** Up to five distinct error messages. */
  errors: string[];
  /** Seconds taken to open them all. */
  seconds: number;
}

/** Parses the command line of the opener process. */
export function parseIdleClientArgs(args: string[]): IdleClientsOptions {
  const { values } = parseArgs({
    args,
    options: {
      host: { type: "string", default: "127.0.0.1" },
      port: { type: "string" },
      count: { type: "string" },
      user: { type: "string", default: "postgres" },
      database: { type: "string", default: "postgres" },
      concurrency: { type: "string", default: "64" },
      "timeout-ms": { type: "string", default: "60000" },
    },
    strict: true,
  });
  const positive = (name: string, raw: string | undefined): number => {
    const value = Number(raw);
    if (raw === undefined || !Number.isInteger(value) || value <= 0) {
      throw new RangeError(`'--${name}' must be a positive integer: received ${raw}`);
    }
    return value;
  };
  return {
    host: values.host,
    port: positive("port", values.port),
    count: positive("count", values.count),
    user: values.user,
    database: values.database,
    concurrency: positive("concurrency", values.concurrency),
    timeoutMs: positive("timeout-ms", values["timeout-ms"]),
  };
}

/**
 * Opens the connections in this process. `onProgress` is called after every 1000 attempts.
 * The caller owns the returned connections.
 */
export async function openIdleConnections(
  options: IdleClientsOptions,
  onProgress?: (connected: number, failed: number) => void,
): Promise<{ conns: Deno.TcpConn[]; report: IdleClientsReport }> {
  const started = performance.now();
  const conns: Deno.TcpConn[] = [];
  const errors: string[] = [];
  let failed = 0;
  let next = 0;
  const worker = async () => {
    while (next < options.count) {
      next++;
      try {
        conns.push(
          await connectAndLogin({
            host: options.host,
            port: options.port,
            user: options.user,
            database: options.database,
            timeoutMs: options.timeoutMs ?? 60_000,
          }),
        );
      } catch (err) {
        failed++;
        const message = err instanceof Error ? err.message : String(err);
        if (errors.length < 5 && !errors.includes(message)) errors.push(message);
      }
      if ((conns.length + failed) % 1000 === 0) onProgress?.(conns.length, failed);
    }
  };
  const workers = Math.min(options.concurrency ?? 64, options.count);
  await Promise.all(Array.from({ length: workers }, worker));
  return {
    conns,
    report: {
      requested: options.count,
      connected: conns.length,
      failed,
      errors,
      seconds: (performance.now() - started) / 1000,
    },
  };
}

/** A running opener process holding its connections. */
export interface IdleClientsHandle {
  /** Pid of the opener process. */
  pid: number;
  /** How the opening went. */
  report: IdleClientsReport;
  /** Closes every connection (Terminate, then close) and waits for the process to exit. */
  close(): Promise<void>;
}

async function* lines(stream: ReadableStream<Uint8Array>): AsyncGenerator<string> {
  let partial = "";
  for await (const text of stream.pipeThrough(new TextDecoderStream())) {
    partial += text;
    let end: number;
    while ((end = partial.indexOf("\n")) >= 0) {
      yield partial.slice(0, end);
      partial = partial.slice(end + 1);
    }
  }
  if (partial !== "") yield partial;
}

/**
 * Starts the opener in a separate Deno process and resolves once every connection was tried.
 * The process inherits this process's open-file limit: raise it first (see `raiseNofile`).
 * `onProgress` receives the counts as they grow.
 */
export async function startIdleClients(
  options: IdleClientsOptions & {
    signal?: AbortSignal;
    onProgress?: (connected: number, failed: number) => void;
  },
): Promise<IdleClientsHandle> {
  options.signal?.throwIfAborted();
  const child = new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "--no-config",
      "--allow-net",
      new URL("./idle_clients.ts", import.meta.url).pathname,
      `--host=${options.host}`,
      `--port=${options.port}`,
      `--count=${options.count}`,
      `--user=${options.user}`,
      `--database=${options.database}`,
      `--concurrency=${options.concurrency ?? 64}`,
      `--timeout-ms=${options.timeoutMs ?? 60_000}`,
    ],
    env: { NO_COLOR: "1" },
    stdin: "piped",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const stderrText = new Response(child.stderr).text();
  const stdin = child.stdin.getWriter();
  let closed = false;
  const close = async () => {
    if (closed) return;
    closed = true;
    await stdin.close().catch(() => undefined);
    // The opener handles SIGTERM like the end of stdin: it terminates its connections and exits.
    await stopChild(child, "SIGTERM", 30_000).catch(() => undefined);
  };
  const onAbort = () => void close();
  options.signal?.addEventListener("abort", onAbort, { once: true });
  try {
    for await (const line of lines(child.stdout)) {
      let event: { event?: string } & Partial<IdleClientsReport>;
      try {
        event = JSON.parse(line);
      } catch {
        continue;
      }
      if (event.event === "progress") {
        options.onProgress?.(event.connected ?? 0, event.failed ?? 0);
      } else if (event.event === "ready") {
        const { event: _event, ...report } = event;
        return { pid: child.pid, report: report as IdleClientsReport, close };
      }
    }
    options.signal?.throwIfAborted();
    const status = await child.status;
    throw new Error(
      `the idle-client process exited (code ${status.code}) before opening its connections: ${
        (await stderrText).trim().split("\n").slice(-5).join(" | ")
      }`,
    );
  } catch (err) {
    await close();
    throw err;
  } finally {
    options.signal?.removeEventListener("abort", onAbort);
  }
}

async function main(): Promise<void> {
  const options = parseIdleClientArgs(Deno.args);
  const print = (event: Record<string, unknown>) => console.log(JSON.stringify(event));
  const { conns, report } = await openIdleConnections(
    options,
    (connected, failed) => print({ event: "progress", connected, failed }),
  );
  const done = Promise.withResolvers<void>();
  for (const signal of ["SIGINT", "SIGTERM"] as const) {
    Deno.addSignalListener(signal, () => done.resolve());
  }
  print({ event: "ready", ...report });
  (async () => {
    for await (const _ of Deno.stdin.readable) {
      // the driver never writes: end of input is the signal to close
    }
    done.resolve();
  })();
  await done.promise;
  await Promise.all(conns.map(async (conn) => {
    await writeAll(conn, TERMINATE).catch(() => undefined);
    try {
      conn.close();
    } catch {
      // already closed by the server
    }
  }));
  Deno.exit(0);
}

if (import.meta.main) await main();
