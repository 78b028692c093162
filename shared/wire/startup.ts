/**
 * Reader for the startup phase of a client connection, whose packets carry no type byte:
 * StartupMessage, SSLRequest, GSSENCRequest and CancelRequest.
 *
 * @module
 */

import { SqlState, TesseraError } from "../errors/mod.ts";
import { type ByteSource, readExact } from "./conn.ts";
import {
  CANCEL_REQUEST_CODE,
  GSSENC_REQUEST_CODE,
  MAX_STARTUP_PACKET_LENGTH,
  MUX_REQUEST_CODE,
  SSL_REQUEST_CODE,
} from "./messages.ts";
import { PayloadReader } from "./payload_reader.ts";

/** A StartupMessage: the protocol version the client asks for and its parameters. */
export interface StartupMessage {
  /** Discriminant. */
  kind: "startup";
  /** Major protocol version (3 for every current client). */
  majorVersion: number;
  /** Minor protocol version; above 0 calls for a NegotiateProtocolVersion answer. */
  minorVersion: number;
  /** Parameters in the order sent (`user`, `database`, `application_name`, options, ...). */
  params: Map<string, string>;
}

/** An SSLRequest: answer with one byte, `S` then a TLS handshake, or `N`. */
export interface SslRequest {
  /** Discriminant. */
  kind: "ssl";
}

/** A GSSENCRequest: answer with one byte, `G` or `N`. */
export interface GssEncRequest {
  /** Discriminant. */
  kind: "gssenc";
}

/** A CancelRequest for the backend with this process id and secret key. */
export interface CancelRequest {
  /** Discriminant. */
  kind: "cancel";
  /** Process id from the BackendKeyData the client received. */
  processId: number;
  /** Secret key from the BackendKeyData the client received. */
  secretKey: number;
}

/** Tessera's request to multiplex sessions over the connection (see `shared/mux`). */
export interface MuxRequest {
  /** Discriminant. */
  kind: "mux";
}

/** Any packet of the startup phase. */
export type StartupPacket =
  | StartupMessage
  | SslRequest
  | GssEncRequest
  | CancelRequest
  | MuxRequest;

/** Options of {@linkcode readStartupPacket}. */
export interface StartupReaderOptions {
  /** Largest accepted packet length in bytes; 10000 (as Postgres) when not given. */
  maxLength?: number;
}

function violation(message: string): TesseraError {
  return new TesseraError(SqlState.protocolViolation, message);
}

/**
 * Decodes the parameters of a StartupMessage (the bytes after the protocol version): pairs of
 * C strings closed by an empty name. Throws TesseraError 08P01 when malformed.
 */
export function decodeStartupParams(bytes: Uint8Array): Map<string, string> {
  const r = new PayloadReader(bytes, "StartupMessage");
  const params = new Map<string, string>();
  for (;;) {
    const name = r.cstring();
    if (name === "") break;
    params.set(name, r.cstring());
  }
  r.expectEnd();
  return params;
}

/**
 * Reads one startup-phase packet from `source`. It reads exactly the packet's bytes and no
 * more, so nothing the client sends after an SSLRequest is swallowed before a TLS handshake.
 *
 * Resolves to `null` when the connection ends before the first byte (a client probing the
 * port). Throws TesseraError 08P01 for a length below 8 or above `maxLength` (without
 * allocating the claimed size), for a request whose length does not match its code, and for
 * malformed parameters; 0A000 for a protocol major version other than 3.
 *
 * @example
 * ```ts
 * let packet = await readStartupPacket(conn);
 * if (packet?.kind === "ssl") {
 *   await writeAll(conn, Uint8Array.of(ENCRYPTION_REFUSED));
 *   packet = await readStartupPacket(conn);
 * }
 * ```
 */
export async function readStartupPacket(
  source: ByteSource,
  options: StartupReaderOptions = {},
): Promise<StartupPacket | null> {
  const maxLength = options.maxLength ?? MAX_STARTUP_PACKET_LENGTH;
  const head = new Uint8Array(8);
  if (!(await readExact(source, head.subarray(0, 4)))) return null;
  const view = new DataView(head.buffer);
  const length = view.getInt32(0);
  if (length < 8 || length > maxLength) {
    throw violation(`invalid length of startup packet: ${length} (accepted: 8 to ${maxLength})`);
  }
  if (!(await readExact(source, head.subarray(4, 8)))) {
    throw violation("connection closed part way through the startup packet");
  }
  const code = view.getInt32(4);
  const rest = new Uint8Array(length - 8);
  if (rest.byteLength > 0 && !(await readExact(source, rest))) {
    throw violation("connection closed part way through the startup packet");
  }
  switch (code) {
    case SSL_REQUEST_CODE:
    case GSSENC_REQUEST_CODE:
      if (length !== 8) throw violation(`invalid length of encryption request: ${length}`);
      return { kind: code === SSL_REQUEST_CODE ? "ssl" : "gssenc" };
    case MUX_REQUEST_CODE:
      if (length !== 8) throw violation(`invalid length of multiplexing request: ${length}`);
      return { kind: "mux" };
    case CANCEL_REQUEST_CODE: {
      if (length !== 16) throw violation(`invalid length of cancel request: ${length}`);
      const r = new DataView(rest.buffer);
      return { kind: "cancel", processId: r.getInt32(0), secretKey: r.getInt32(4) };
    }
  }
  const majorVersion = code >>> 16;
  const minorVersion = code & 0xffff;
  if (majorVersion !== 3) {
    throw new TesseraError(
      SqlState.featureNotSupported,
      `unsupported frontend protocol ${majorVersion}.${minorVersion}: server supports 3.0`,
    );
  }
  return { kind: "startup", majorVersion, minorVersion, params: decodeStartupParams(rest) };
}
