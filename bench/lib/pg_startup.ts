/**
 * The least of the Postgres wire protocol a benchmark needs to log in and stay idle: the
 * StartupMessage, backend message framing, ErrorResponse fields, and a handshake that waits for
 * the first ReadyForQuery. Authentication is trust only: a benchmark connection that is asked
 * for a password fails with a clear error instead.
 *
 * @module
 */

const encoder = new TextEncoder();
const decoder = new TextDecoder();

/** Protocol version 3.0 as sent in the StartupMessage. */
export const PROTOCOL_3_0 = 196608;

/** Encodes a StartupMessage carrying `params` (e.g. `{ user, database }`). */
export function encodeStartupMessage(params: Readonly<Record<string, string>>): Uint8Array {
  const parts: Uint8Array[] = [];
  for (const [key, value] of Object.entries(params)) {
    parts.push(encoder.encode(`${key}\0${value}\0`));
  }
  const size = 8 + parts.reduce((n, p) => n + p.length, 0) + 1;
  const out = new Uint8Array(size);
  const view = new DataView(out.buffer);
  view.setInt32(0, size);
  view.setInt32(4, PROTOCOL_3_0);
  let offset = 8;
  for (const part of parts) {
    out.set(part, offset);
    offset += part.length;
  }
  out[offset] = 0;
  return out;
}

/** The Terminate message. */
export const TERMINATE: Uint8Array = new Uint8Array([0x58, 0, 0, 0, 4]);

/** One backend message: its type byte as a character and its body (without the length). */
export interface BackendMessage {
  /** Type byte, e.g. `R`, `S`, `K`, `Z`, `E`. */
  type: string;
  /** Body, after the 4-byte length. */
  body: Uint8Array;
}

/**
 * Splits `buffer` into complete backend messages; `rest` holds the bytes of an incomplete last
 * message. Throws on a length below 4 (not a Postgres server).
 */
export function splitBackendMessages(
  buffer: Uint8Array,
): { messages: BackendMessage[]; rest: Uint8Array } {
  const messages: BackendMessage[] = [];
  const view = new DataView(buffer.buffer, buffer.byteOffset, buffer.byteLength);
  let offset = 0;
  while (buffer.length - offset >= 5) {
    const length = view.getInt32(offset + 1);
    if (length < 4) {
      throw new Error(
        `invalid backend message length ${length} for type '${
          String.fromCharCode(buffer[offset]!)
        }': the server does not speak the Postgres protocol`,
      );
    }
    if (buffer.length - offset < 1 + length) break;
    messages.push({
      type: String.fromCharCode(buffer[offset]!),
      body: buffer.subarray(offset + 5, offset + 1 + length),
    });
    offset += 1 + length;
  }
  return { messages, rest: buffer.subarray(offset) };
}

/** Reads the fields of an ErrorResponse or NoticeResponse body, keyed by field code. */
export function parseErrorFields(body: Uint8Array): Record<string, string> {
  const fields: Record<string, string> = {};
  let offset = 0;
  while (offset < body.length && body[offset] !== 0) {
    const code = String.fromCharCode(body[offset]!);
    const end = body.indexOf(0, offset + 1);
    if (end < 0) break;
    fields[code] = decoder.decode(body.subarray(offset + 1, end));
    offset = end + 1;
  }
  return fields;
}

/** Names of the authentication requests that the handshake does not answer. */
const AUTH_NAMES: Record<number, string> = {
  2: "Kerberos V5",
  3: "cleartext password",
  5: "MD5 password",
  7: "GSSAPI",
  9: "SSPI",
  10: "SASL (SCRAM-SHA-256)",
};

/** What the server said during a successful handshake. */
export interface HandshakeResult {
  /** ParameterStatus values. */
  parameters: Record<string, string>;
  /** Backend process id from BackendKeyData, when sent. */
  processId?: number;
}

/**
 * Sends a StartupMessage on `conn` and reads until ReadyForQuery. Throws on an ErrorResponse, on
 * any authentication other than trust, on end of stream, or after `timeoutMs`.
 */
export async function handshake(
  conn: Deno.Conn,
  params: Readonly<Record<string, string>>,
  timeoutMs = 30_000,
): Promise<HandshakeResult> {
  let timedOut = false;
  const timer = setTimeout(() => {
    timedOut = true;
    try {
      conn.close();
    } catch {
      // already closed
    }
  }, timeoutMs);
  try {
    await writeAll(conn, encodeStartupMessage(params));
    const result: HandshakeResult = { parameters: {} };
    let pending: Uint8Array = new Uint8Array(0);
    const chunk = new Uint8Array(4096);
    for (;;) {
      let n: number | null;
      try {
        n = await conn.read(chunk);
      } catch (err) {
        if (timedOut) throw new Error(`no ReadyForQuery within ${timeoutMs} ms`);
        throw err;
      }
      if (n === null) {
        if (timedOut) throw new Error(`no ReadyForQuery within ${timeoutMs} ms`);
        throw new Error("the server closed the connection during startup");
      }
      const joined = new Uint8Array(pending.length + n);
      joined.set(pending);
      joined.set(chunk.subarray(0, n), pending.length);
      const { messages, rest } = splitBackendMessages(joined);
      pending = rest.slice();
      for (const message of messages) {
        const view = new DataView(message.body.buffer, message.body.byteOffset);
        switch (message.type) {
          case "R": {
            const code = view.getInt32(0);
            if (code !== 0) {
              throw new Error(
                `the server asked for ${
                  AUTH_NAMES[code] ?? `authentication method ${code}`
                }: the benchmark client supports trust authentication only`,
              );
            }
            break;
          }
          case "S": {
            const text = decoder.decode(message.body);
            const [name = "", value = ""] = text.split("\0");
            result.parameters[name] = value;
            break;
          }
          case "K":
            result.processId = view.getInt32(0);
            break;
          case "E": {
            const f = parseErrorFields(message.body);
            const where = [f.S ?? "ERROR", f.C].filter((x) => x !== undefined).join(" ");
            throw new Error(`${where}: ${f.M ?? "unknown error"}`);
          }
          case "Z":
            return result;
          default:
            break; // NoticeResponse and anything else during startup is ignored
        }
      }
    }
  } finally {
    clearTimeout(timer);
  }
}

/** Writes all of `bytes` to `conn`. */
export async function writeAll(conn: Deno.Conn, bytes: Uint8Array): Promise<void> {
  let offset = 0;
  while (offset < bytes.length) offset += await conn.write(bytes.subarray(offset));
}

/** Where and as whom to log in. */
export interface LoginOptions {
  /** Host name or IP. */
  host: string;
  /** TCP port. */
  port: number;
  /** User name. */
  user: string;
  /** Database name. */
  database: string;
  /** Limit for connecting and logging in; 30 s when not given. */
  timeoutMs?: number;
}

/** Connects over TCP and completes the startup handshake; the caller owns the connection. */
export async function connectAndLogin(options: LoginOptions): Promise<Deno.TcpConn> {
  const conn = await Deno.connect({ hostname: options.host, port: options.port });
  try {
    await handshake(
      conn,
      { user: options.user, database: options.database, application_name: "tessera-bench" },
      options.timeoutMs ?? 30_000,
    );
    return conn;
  } catch (err) {
    try {
      conn.close();
    } catch {
      // closed by the timeout
    }
    throw err;
  }
}

/** Logs in and out once; resolves to undefined on success, else to the error's message. */
export async function checkLogin(options: LoginOptions): Promise<string | undefined> {
  try {
    const conn = await connectAndLogin(options);
    await writeAll(conn, TERMINATE).catch(() => undefined);
    conn.close();
    return undefined;
  } catch (err) {
    return err instanceof Error ? err.message : String(err);
  }
}
