/**
 * Serving a component's HTTP app and Connect RPC services on one port.
 *
 * @module
 */

import { SqlState, TesseraError } from "../errors/mod.ts";
import type { Logger } from "../log/mod.ts";
import type { RpcHandler } from "../rpc/mod.ts";

/**
 * What {@linkcode serveComponent} serves besides RPC: any object with Hono's `fetch`, such as
 * the app of `createStatusApp`. `env` receives Deno's `ServeHandlerInfo`, as with
 * `Deno.serve(app.fetch)`, so Hono's `getConnInfo` from `hono/deno` works.
 */
export interface HttpApp {
  /** Answers one request. */
  fetch(request: Request, env?: unknown): Response | Promise<Response>;
}

/** Options of {@linkcode serveComponent}. */
export interface ServeComponentOptions {
  /** Address to listen on; `127.0.0.1` when not given. */
  hostname?: string;
  /** TCP port; 0 picks a free one (read it from `addr`). */
  port: number;
  /** Serves every request that is not an RPC. */
  app: HttpApp;
  /** Serves the RPC paths it knows; other paths go to `app`. */
  rpc?: RpcHandler;
  /** Logs the listening address and requests that fail unexpectedly. Silent when not given. */
  logger?: Logger;
  /** Shuts the server down when aborted. */
  signal?: AbortSignal;
}

/** A running server started by {@linkcode serveComponent}. */
export interface ServedComponent {
  /** The address listened on, with the real port when 0 was asked for. */
  readonly addr: { hostname: string; port: number };
  /**
   * Base URL that reaches the server from this host, e.g. `http://127.0.0.1:17100`. A wildcard
   * address (`0.0.0.0`, `::`) is replaced by the matching loopback address.
   */
  readonly url: string;
  /** Resolves once the server has stopped. */
  readonly finished: Promise<void>;
  /**
   * Stops accepting connections, ends RPC calls in progress (see `RpcHandler.close`) and
   * resolves once every response has been sent. Calling it again returns the same promise.
   */
  shutdown(): Promise<void>;
}

function urlHost(hostname: string): string {
  if (hostname === "0.0.0.0") return "127.0.0.1";
  if (hostname === "::") return "[::1]";
  return hostname.includes(":") ? `[${hostname}]` : hostname;
}

function listenError(err: unknown, hostname: string, port: number): TesseraError {
  const address = `${urlHost(hostname)}:${port}`;
  if (err instanceof Deno.errors.AddrInUse) {
    return new TesseraError(SqlState.objectInUse, `address ${address} is already in use`, {
      hint: "stop the process that holds the port or choose another port",
      cause: err,
    });
  }
  const reason = err instanceof Error ? err.message : String(err);
  return new TesseraError(SqlState.systemError, `cannot listen on ${address}: ${reason}`, {
    cause: err,
  });
}

/**
 * Serves `app` and `rpc` with one `Deno.serve` on `hostname:port`. Requests whose path is a
 * registered RPC procedure go to `rpc`; all others go to `app` (so unknown paths get the app's
 * 404).
 *
 * Throws a {@linkcode TesseraError} when the server cannot listen: `55006` object_in_use when
 * the port is already taken, `58000` system_error otherwise (permission, unknown address); the
 * message names the address.
 *
 * @example
 * ```ts
 * const served = await serveComponent({ port: 17100, app: createStatusApp({ component: "pgctld" }), rpc, logger });
 * Deno.addSignalListener("SIGTERM", () => served.shutdown());
 * await served.finished;
 * ```
 */
export function serveComponent(options: ServeComponentOptions): Promise<ServedComponent> {
  const hostname = options.hostname ?? "127.0.0.1";
  const { app, rpc, logger, signal } = options;
  if (!Number.isInteger(options.port) || options.port < 0 || options.port > 65535) {
    return Promise.reject(
      new RangeError(`'port' must be an integer from 0 to 65535: received ${options.port}`),
    );
  }
  if (signal?.aborted) {
    return Promise.reject(
      new TesseraError(SqlState.adminShutdown, "server was shut down before it started"),
    );
  }
  let server: Deno.HttpServer<Deno.NetAddr>;
  try {
    server = Deno.serve({
      hostname,
      port: options.port,
      onListen: () => {},
      onError: (err) => {
        logger?.error("HTTP request failed", { error: err });
        return new Response("internal server error", { status: 500 });
      },
      handler: (req, info) => rpc?.handle(req) ?? app.fetch(req, info),
    });
  } catch (err) {
    return Promise.reject(listenError(err, hostname, options.port));
  }
  const addr = { hostname: server.addr.hostname, port: server.addr.port };
  const url = `http://${urlHost(addr.hostname)}:${addr.port}`;
  logger?.info("serving HTTP and RPC", { url, rpcPaths: rpc?.paths?.length ?? 0 });

  let stopping: Promise<void> | undefined;
  const onAbort = (): void => {
    shutdown().catch((err) => logger?.error("HTTP server shutdown failed", { error: err }));
  };
  const shutdown = (): Promise<void> => {
    if (stopping === undefined) {
      signal?.removeEventListener("abort", onAbort);
      const stopped = server.shutdown();
      rpc?.close?.();
      stopping = stopped.then(() => server.finished);
    }
    return stopping;
  };
  signal?.addEventListener("abort", onAbort, { once: true });
  return Promise.resolve({ addr, url, finished: server.finished, shutdown });
}
