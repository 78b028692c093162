/**
 * Connect RPC clients whose every call has a deadline and whose errors are TesseraErrors.
 *
 * @module
 */

import type { DescService } from "@bufbuild/protobuf";
import { type Client, createClient, type Interceptor, type Transport } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-web";
import { fromConnectError } from "./errors.ts";

/** Deadline of a call whose caller gives none, in milliseconds. */
export const DEFAULT_RPC_TIMEOUT_MS = 10_000;

/** Options of {@linkcode createRpcClient}. */
export interface RpcClientOptions {
  /**
   * Deadline of every call that does not set `timeoutMs` itself, in milliseconds;
   * {@linkcode DEFAULT_RPC_TIMEOUT_MS} when not given. A call that passes `timeoutMs <= 0`
   * (Connect's way of asking for no deadline) gets this deadline too: no call is unbounded.
   */
  timeoutMs?: number;
  /** Interceptors run around every call; they see Connect errors, not TesseraErrors. */
  interceptors?: Interceptor[];
  /** Send protobuf's binary format (the default) rather than JSON. */
  useBinaryFormat?: boolean;
  /** The fetch function to use; `globalThis.fetch` when not given. */
  fetch?: typeof globalThis.fetch;
}

async function* mapStreamErrors<T>(messages: AsyncIterable<T>): AsyncGenerator<T> {
  try {
    yield* messages;
  } catch (err) {
    throw fromConnectError(err);
  }
}

/** A transport that applies a deadline to every call and converts errors to TesseraErrors. */
class TesseraTransport implements Transport {
  readonly #inner: Transport;
  readonly #timeoutMs: number;

  constructor(inner: Transport, timeoutMs: number) {
    this.#inner = inner;
    this.#timeoutMs = timeoutMs;
  }

  #deadline(timeoutMs: number | undefined): number {
    return timeoutMs === undefined || !(timeoutMs > 0) ? this.#timeoutMs : timeoutMs;
  }

  unary: Transport["unary"] = async (method, signal, timeoutMs, header, input, contextValues) => {
    try {
      return await this.#inner.unary(
        method,
        signal,
        this.#deadline(timeoutMs),
        header,
        input,
        contextValues,
      );
    } catch (err) {
      throw fromConnectError(err);
    }
  };

  stream: Transport["stream"] = async (method, signal, timeoutMs, header, input, contextValues) => {
    let res;
    try {
      res = await this.#inner.stream(
        method,
        signal,
        this.#deadline(timeoutMs),
        header,
        input,
        contextValues,
      );
    } catch (err) {
      throw fromConnectError(err);
    }
    return { ...res, message: mapStreamErrors(res.message) } as typeof res;
  };
}

/**
 * Creates a client of `service` at `baseUrl` (e.g. `http://127.0.0.1:17100`) over the Connect
 * protocol on fetch.
 *
 * Every call has a deadline: the caller's `timeoutMs`, else `options.timeoutMs`, else
 * {@linkcode DEFAULT_RPC_TIMEOUT_MS}. Every failure is thrown as a `TesseraError` (see
 * `fromConnectError`): the service's own SQLSTATE, detail and hint when it threw a
 * TesseraError; `57014` when the deadline passed or the call was cancelled; `08006` when the
 * server could not be reached.
 *
 * @example
 * ```ts
 * const pgctld = createRpcClient(PgctldService, "http://127.0.0.1:17100");
 * try {
 *   await pgctld.start({ waitSeconds: 30 }, { timeoutMs: 35_000 });
 * } catch (err) {
 *   if (err instanceof TesseraError && err.code === SqlState.objectNotInPrerequisiteState) {
 *     // already running
 *   }
 * }
 * ```
 */
export function createRpcClient<S extends DescService>(
  service: S,
  baseUrl: string,
  options: RpcClientOptions = {},
): Client<S> {
  const timeoutMs = options.timeoutMs ?? DEFAULT_RPC_TIMEOUT_MS;
  if (!Number.isFinite(timeoutMs) || timeoutMs <= 0) {
    throw new RangeError(`'timeoutMs' must be a positive number: received ${timeoutMs}`);
  }
  const inner = createConnectTransport({
    baseUrl,
    useBinaryFormat: options.useBinaryFormat ?? true,
    defaultTimeoutMs: timeoutMs,
    ...(options.interceptors !== undefined ? { interceptors: options.interceptors } : {}),
    ...(options.fetch !== undefined ? { fetch: options.fetch } : {}),
  });
  return createClient(service, new TesseraTransport(inner, timeoutMs));
}
