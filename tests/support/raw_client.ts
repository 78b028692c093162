/**
 * A test client that speaks the Postgres protocol by hand over TCP, for what a driver would not
 * send: pipelined messages, bare protocol messages, abrupt disconnects.
 *
 * @module
 */
import {
  Backend,
  decodeErrorFields,
  MessageReader,
  MessageWriter,
  type WireMessage,
  writeAll,
} from "../../shared/wire/mod.ts";

/** A client over the pooler speaking the protocol by hand. */
export class RawClient {
  readonly conn: Deno.Conn<Deno.Addr>;
  readonly reader: MessageReader;
  pid = 0;
  secret = 0;

  private constructor(conn: Deno.Conn) {
    this.conn = conn;
    this.reader = new MessageReader(conn);
  }

  /** Connects to `127.0.0.1:port`, or to the Unix socket at `port` when it is a path. */
  static async connect(port: number | string, login = true): Promise<RawClient> {
    const c = new RawClient(
      typeof port === "string"
        ? await Deno.connect({ transport: "unix", path: port })
        : await Deno.connect({ hostname: "127.0.0.1", port }),
    );
    if (login) {
      await c.send((w) => w.startupMessage({ user: "postgres", database: "postgres" }));
      for (const m of await c.untilReady()) {
        if (m.type === Backend.backendKeyData) {
          const v = new DataView(m.payload.buffer, m.payload.byteOffset);
          c.pid = v.getInt32(0);
          c.secret = v.getInt32(4);
        }
      }
    }
    return c;
  }

  async send(build: (w: MessageWriter) => void): Promise<void> {
    const w = new MessageWriter();
    build(w);
    await writeAll(this.conn, w.view());
  }

  async sendBytes(bytes: number[] | Uint8Array): Promise<void> {
    await writeAll(this.conn, Uint8Array.from(bytes));
  }

  /** Messages up to and including ReadyForQuery (copies). */
  async untilReady(): Promise<{ type: number; payload: Uint8Array }[]> {
    const out: { type: number; payload: Uint8Array }[] = [];
    for (;;) {
      const m = await this.reader.next();
      if (m === null) throw new Error("connection closed before ReadyForQuery");
      out.push({ type: m.type, payload: m.payload.slice() });
      if (m.type === Backend.errorResponse && out.length === 1 && this.pid === 0) {
        throw new Error(decodeErrorFields(m.payload).message);
      }
      if (m.type === Backend.readyForQuery) return out;
    }
  }

  async query(sql: string): Promise<{ type: number; payload: Uint8Array }[]> {
    await this.send((w) => w.query(sql));
    return await this.untilReady();
  }

  /** Every message until the pooler closes the connection (fails after 10 s). */
  async untilClosed(): Promise<WireMessage[]> {
    const out: WireMessage[] = [];
    const timer = setTimeout(() => this.close(), 10_000);
    try {
      for (;;) {
        const m = await this.reader.next();
        if (m === null) return out;
        out.push(new (m.constructor as typeof WireMessage)(m.raw.slice(), 0, m.type, m.length));
      }
    } catch {
      return out;
    } finally {
      clearTimeout(timer);
    }
  }

  close(): void {
    try {
      this.conn.close();
    } catch {
      // already closed
    }
  }
}
