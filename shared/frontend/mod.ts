/**
 * The client front end shared by every Tessera server that speaks Postgres to clients (the
 * pooler and the gateway): the startup phase of a connection, from the first byte to
 * AuthenticationOk. SSLRequest with server-side TLS, GSSENCRequest (refused), CancelRequest,
 * StartupMessage with protocol negotiation and `options` parsing, and trust / SCRAM-SHA-256 /
 * reject authentication.
 *
 * @example
 * ```ts
 * import { acceptFrontend, loadFrontendTls } from "../shared/frontend/mod.ts";
 *
 * const tls = loadFrontendTls({ certFile: "server.crt", keyFile: "server.key" });
 * const auth = { lookup: (user: string) => users.get(user) };
 * for await (const conn of Deno.listen({ port: 15432 })) {
 *   acceptFrontend(conn, { auth, tls }).then((r) => {
 *     if (r.kind === "startup") startSession(r);
 *     else if (r.kind === "cancel") forwardCancel(r.pid, r.secret).finally(r.close);
 *   });
 * }
 * ```
 *
 * @module
 */

export {
  acceptFrontend,
  type AuthRule,
  type FrontendAuth,
  type FrontendOptions,
  type FrontendResult,
  type FrontendTransport,
} from "./accept.ts";
export { parseStartupOptions, splitStartupOptions } from "./options.ts";
export {
  type FrontendTls,
  type LoadedFrontendTls,
  loadFrontendTls,
  TlsServerConn,
  upgradeToTls,
} from "./tls.ts";
