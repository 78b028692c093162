/**
 * Serving Connect RPC services on Fetch API requests and responses.
 *
 * @module
 */

import {
  Code,
  ConnectError,
  type ConnectRouter,
  createConnectRouter,
  type Interceptor,
  type StreamResponse,
} from "@connectrpc/connect";
import { createFetchHandler } from "@connectrpc/connect/protocol";
import { TesseraError } from "../errors/mod.ts";
import { Logger } from "../log/mod.ts";
import { toConnectError } from "./errors.ts";

/** Serves the procedures registered with {@linkcode createRpcHandler}. */
export interface RpcHandler {
  /**
   * Serves `req` when its path is one of the registered procedures
   * (`/<package>.<Service>/<Method>`), or returns `undefined` so that the caller serves it
   * some other way.
   */
  handle(req: Request): Promise<Response> | undefined;
  /** The request paths served, e.g. `/tessera.pgctld.v1.PgctldService/Start`. */
  readonly paths?: readonly string[];
  /**
   * Aborts the `signal` of every call in progress (with Unavailable, "server is shutting
   * down"), so that long calls and streams end. `serveComponent` calls it on shutdown.
   */
  close?(): void;
}

/** Options of {@linkcode createRpcHandler}. */
export interface RpcHandlerOptions {
  /** Where unexpected (non-TesseraError) failures of service methods are logged. */
  logger?: Logger;
  /** Interceptors run around every call, inside the error mapping. */
  interceptors?: Interceptor[];
  /**
   * Aborting this signal aborts the `signal` of every call in progress, so that long calls can
   * wrap up when the server shuts down.
   */
  shutdownSignal?: AbortSignal;
}

async function* mapStreamErrors<T>(
  messages: AsyncIterable<T>,
  signal: AbortSignal,
  onError: (err: unknown) => Error,
): AsyncGenerator<T> {
  try {
    yield* messages;
  } catch (err) {
    throw onError(err);
  }
  // A stream that stops because its call was cancelled, timed out or the server is shutting
  // down must not look to the client like a stream that is complete.
  if (signal.aborted) throw onError(signal.reason);
}

function errorInterceptor(logger: Logger): Interceptor {
  const convert = (procedure: string, signal: AbortSignal, err: unknown): Error => {
    if (!(err instanceof TesseraError) && signal.aborted) {
      // The call was cancelled or timed out and the method failed because of it: report the
      // cancellation, not the method's consequential error.
      return signal.reason instanceof ConnectError
        ? signal.reason
        : new ConnectError("the call was cancelled", Code.Canceled, undefined, undefined, err);
    }
    const converted = toConnectError(err);
    if (converted !== err && !(err instanceof TesseraError)) {
      logger.error("RPC method failed with an unexpected error", { procedure, error: err });
    } else if (err instanceof TesseraError) {
      logger.debug("RPC method failed", { procedure, error: err });
    }
    return converted;
  };
  return (next) => async (req) => {
    const procedure = `${req.service.typeName}/${req.method.name}`;
    let res;
    try {
      res = await next(req);
    } catch (err) {
      throw convert(procedure, req.signal, err);
    }
    if (!res.stream) return res;
    const streamed: StreamResponse = {
      ...res,
      message: mapStreamErrors(
        res.message,
        req.signal,
        (err) => convert(procedure, req.signal, err),
      ),
    };
    return streamed;
  };
}

/**
 * Creates a handler for the Connect RPC services that `register` adds to the router. It
 * speaks the Connect protocol (JSON and binary), gRPC-web and gRPC on Fetch API requests.
 *
 * Service methods throw {@linkcode TesseraError}; the client sees its SQLSTATE, detail and
 * hint (see `toConnectError`). Any other exception becomes an Internal error and is logged.
 *
 * @example
 * ```ts
 * const rpc = createRpcHandler((router) => {
 *   router.service(PgctldService, {
 *     status: () => ({ status: { running: true } }),
 *   });
 * }, { logger });
 * Deno.serve((req) => rpc.handle(req) ?? new Response("not found", { status: 404 }));
 * ```
 */
export function createRpcHandler(
  register: (router: ConnectRouter) => void,
  options: RpcHandlerOptions = {},
): RpcHandler {
  const logger = options.logger ?? new Logger({ component: "rpc" });
  const closing = new AbortController();
  const router = createConnectRouter({
    // The first interceptor is the outermost, so the error mapping sees what the others throw.
    interceptors: [errorInterceptor(logger), ...(options.interceptors ?? [])],
    shutdownSignal: options.shutdownSignal === undefined
      ? closing.signal
      : AbortSignal.any([closing.signal, options.shutdownSignal]),
  });
  register(router);
  const handlers = new Map<string, (req: Request) => Promise<Response>>();
  for (const handler of router.handlers) {
    handlers.set(handler.requestPath, createFetchHandler(handler));
  }
  const paths = Object.freeze([...handlers.keys()]);
  return {
    handle(req: Request): Promise<Response> | undefined {
      const handler = handlers.get(new URL(req.url).pathname);
      return handler === undefined ? undefined : handler(req);
    },
    paths,
    close(): void {
      if (!closing.signal.aborted) {
        closing.abort(new ConnectError("server is shutting down", Code.Unavailable));
      }
    },
  };
}
