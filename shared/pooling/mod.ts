/**
 * Transaction pooling that keeps client sessions correct: pools of backend connections that
 * speak the Postgres wire protocol (to Postgres itself, or to a pooler), and the client session
 * that borrows one per transaction while keeping settings, prepared statements, pins and cancel
 * right. The pooler serves it in front of one Postgres; the gateway can use it in front of
 * poolers, or embedded in front of a Postgres on the same host.
 *
 * @module
 */
export {
  BackendConn,
  type BackendOwner,
  type BackendTarget,
  type Frame,
  sendCancel,
} from "./pool/backend.ts";
export { Pool, type PoolSettings, type PoolStats } from "./pool/pool.ts";
export {
  PinReason,
  pinReasons,
  type PoolSource,
  Session,
  type SessionHost,
  type SessionStart,
} from "./session/session.ts";
export { quoteIdent, quoteLiteral } from "./session/settings.ts";
