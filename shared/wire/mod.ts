/**
 * The Postgres wire protocol (3.0) for Tessera: message codes, a message writer, a framing
 * reader over reused buffers, the startup-phase reader, payload decoders, statement-name
 * rewriting for the pooler, SCRAM-SHA-256 and MD5 authentication, and a small client for
 * control-plane queries.
 *
 * @example
 * ```ts
 * import { Backend, MessageReader, MessageWriter, writeAll } from "../shared/wire/mod.ts";
 *
 * const reader = new MessageReader(conn, { maxMessageLength: 64 << 20 });
 * const out = new MessageWriter();
 * for (let msg = await reader.next(); msg !== null; msg = await reader.next()) {
 *   // forward msg.raw, decode only what must be decided on
 * }
 * ```
 *
 * @module
 */

export * from "./messages.ts";
export {
  type ByteSink,
  type ByteSource,
  canReadSync,
  canWriteSync,
  connectionError,
  readExact,
  type SyncReadConn,
  type SyncWriteConn,
  type WireConn,
  writeAll,
} from "./conn.ts";
export { type FieldDescription, MessageWriter, type SimpleResult, TEXT_OID } from "./writer.ts";
export { MessageReader, type MessageReaderOptions, WireMessage } from "./reader.ts";
export {
  type CancelRequest,
  decodeStartupParams,
  type GssEncRequest,
  readStartupPacket,
  type SslRequest,
  type StartupMessage,
  type StartupPacket,
  type StartupReaderOptions,
} from "./startup.ts";
export { PayloadReader } from "./payload_reader.ts";
export * from "./decode.ts";
export {
  readPortalName,
  readStatementName,
  rewriteStatementName,
  writeWithStatementName,
} from "./statement_name.ts";
export {
  createScramVerifier,
  type CreateVerifierOptions,
  DEFAULT_SCRAM_ITERATIONS,
  formatScramVerifier,
  fromBase64,
  isScramVerifier,
  parseScramVerifier,
  saslPrep,
  SCRAM_SALT_LENGTH,
  SCRAM_SHA_256,
  SCRAM_SHA_256_PLUS,
  ScramClient,
  type ScramClientOptions,
  ScramServer,
  type ScramServerOptions,
  type ScramVerifier,
  TLS_SERVER_END_POINT,
  toBase64,
} from "./scram.ts";
export { md5PasswordResponse, md5SaltedResponse, md5StoredPassword } from "./md5.ts";
export { PgClient, type PgClientOptions, type QueryResult } from "./client.ts";
