/**
 * Connect RPC plumbing shared by every component: serving services on Fetch API requests,
 * clients with deadlines, and the mapping between TesseraError's SQLSTATEs and Connect codes.
 *
 * @example
 * ```ts
 * import { createRpcClient, createRpcHandler } from "../shared/rpc/mod.ts";
 *
 * const rpc = createRpcHandler((router) => router.service(PgctldService, impl), { logger });
 * const client = createRpcClient(PgctldService, "http://127.0.0.1:17100");
 * ```
 *
 * @module
 */
export {
  codeForSqlState,
  connectCodeOf,
  DETAIL_HEADER,
  fromConnectError,
  HINT_HEADER,
  SEVERITY_HEADER,
  SQLSTATE_HEADER,
  sqlStateForCode,
  toConnectError,
} from "./errors.ts";
export { createRpcHandler, type RpcHandler, type RpcHandlerOptions } from "./server.ts";
export { createRpcClient, DEFAULT_RPC_TIMEOUT_MS, type RpcClientOptions } from "./client.ts";
export { type Client, Code, ConnectError, type ConnectRouter } from "@connectrpc/connect";
