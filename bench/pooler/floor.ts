/**
 * The least a transaction pooler written in Deno can do, on the pooler's own fast socket path
 * (`shared/fastnet`, epoll and recv/send through libc FFI) and framing reader: a client gets a
 * pooled Postgres connection at its first message and gives it back at ReadyForQuery 'I', and
 * every byte in between is forwarded as read. Like the pooler, it reads and writes in plain
 * callbacks from the reactor (`readNow` / `whenReadable` / `tryWrite`), with no promise per read,
 * and a promise only where it must wait (startup, a full socket). It keeps no session state (SET,
 * prepared statements, temporary tables), parses no SQL, answers no BEGIN itself, authenticates
 * nobody and forwards no cancel request: it is not a pooler anyone should use, only the floor that
 * any pooler written in Deno this way pays on this machine (see bench/pooler/README.md, "Floors").
 *
 * `deno task bench-floor --listen HOST:PORT --postgres-socket-dir DIR --postgres-port N
 * --pool-size N [--user U] [--database D]`
 *
 * @module
 */

import { parseArgs } from "node:util";
import { type FastConn, type FastNet, openFastNet } from "../../shared/fastnet/mod.ts";
import { FrameReader } from "../../shared/pooling/pool/frame_reader.ts";

const SSL_REQUEST = 80877103;
const GSSENC_REQUEST = 80877104;
const PROTOCOL_3 = 196608;
const Z = 0x5a; // ReadyForQuery
const IDLE = 0x49; // 'I'
const QUERY = 0x51; // 'Q'
const SYNC = 0x53; // 'S'
const TERMINATE = 0x58; // 'X'

function hostPort(raw: string | undefined): { hostname: string; port: number } {
  const at = raw?.lastIndexOf(":") ?? -1;
  const port = Number(raw?.slice(at + 1));
  if (raw === undefined || at <= 0 || !Number.isInteger(port) || port <= 0 || port > 65535) {
    throw new RangeError(`'--listen' must be HOST:PORT: received '${raw ?? ""}'`);
  }
  return { hostname: raw.slice(0, at), port };
}

async function writeAll(conn: FastConn, bytes: Uint8Array): Promise<void> {
  let off = conn.tryWrite(bytes);
  while (off < bytes.length) off += await conn.write(bytes.subarray(off));
}

async function readExactly(conn: FastConn, n: number): Promise<Uint8Array> {
  const out = new Uint8Array(n);
  let got = 0;
  while (got < n) {
    const r = await conn.read(out.subarray(got));
    if (r === null) throw new Error("connection closed during startup");
    got += r;
  }
  return out;
}

function startupMessage(user: string, database: string): Uint8Array {
  const body = new TextEncoder().encode(`user\0${user}\0database\0${database}\0\0`);
  const out = new Uint8Array(8 + body.length);
  const v = new DataView(out.buffer);
  v.setInt32(0, out.length);
  v.setInt32(4, PROTOCOL_3);
  out.set(body, 8);
  return out;
}

/** One pooled Postgres connection and the loop forwarding its replies. */
class Server {
  client: Client | null = null;
  /** Client messages sent that end in a ReadyForQuery not yet received. */
  pending = 0;
  conn: FastConn;
  #reader: FrameReader;
  #pool: Pool;

  constructor(conn: FastConn, reader: FrameReader, pool: Pool) {
    this.conn = conn;
    this.#reader = reader;
    this.#pool = pool;
  }

  /** Starts forwarding Postgres's replies (in a microtask: the caller keeps the server first). */
  run(): void {
    queueMicrotask(this.#pump);
  }

  /** Reads what arrived and forwards it; at ReadyForQuery 'I' the server goes back to the pool. */
  #pump = (): void => {
    const r = this.#reader;
    for (;;) {
      const more = readMore(r, this.#pump);
      if (more === undefined) return;
      if (!more) break;
      let spanStart = -1;
      let spanEnd = 0;
      let release = false;
      while (r.next()) {
        if (spanStart < 0) spanStart = r.start;
        spanEnd = r.end;
        if (r.type === Z && --this.pending <= 0) {
          this.pending = 0;
          release = r.buf[r.end - 1] === IDLE;
        }
      }
      const c = this.client;
      if (spanStart < 0 || c === null) continue;
      send(c.conn, r.buf, spanStart, spanEnd, () => c.close());
      if (release) {
        this.client = null;
        c.server = null;
        this.#pool.release(this);
      }
    }
    // Postgres went away (or the connection broke): the server is dropped.
    this.#pool.drop(this);
    this.client?.close();
  };
}

/**
 * Reads what `r`'s connection has: true when bytes came, false at the end of the stream or on an
 * error, undefined when nothing is there yet (`again` is then called when there may be).
 */
function readMore(r: FrameReader, again: () => void): boolean | undefined {
  let n: number | null | undefined;
  try {
    n = r.readNow();
    if (n === undefined) {
      r.whenReadable(again);
      return undefined;
    }
    return n !== null && r.advance(n);
  } catch {
    return false;
  }
}

/**
 * Sends `buf[start, end)` now; what the socket does not take at once is copied and written when
 * there is room (`failed` on an error).
 */
function send(
  conn: FastConn,
  buf: Uint8Array,
  start: number,
  end: number,
  failed: () => void,
): void {
  let done = 0;
  try {
    done = conn.tryWrite(start === 0 ? buf : buf.subarray(start), end - start);
  } catch {
    failed();
    return;
  }
  if (done < end - start) writeAll(conn, buf.slice(start + done, end)).catch(failed);
}

/** The pool: idle servers (last in, first out, as PgBouncer) and clients waiting for one. */
class Pool {
  #idle: Server[] = [];
  #all = new Set<Server>();
  #waiters: ((s: Server) => void)[] = [];
  params: Uint8Array = new Uint8Array(0);

  constructor(
    readonly net: FastNet,
    readonly socketPath: string,
    readonly user: string,
    readonly database: string,
  ) {}

  async open(size: number): Promise<void> {
    for (let i = 0; i < size; i++) {
      const s = await this.#connect(i === 0);
      this.#all.add(s);
      this.#idle.push(s);
      s.run();
    }
  }

  async #connect(keepParams: boolean): Promise<Server> {
    const conn = await this.net.connect({ path: this.socketPath });
    await writeAll(conn, startupMessage(this.user, this.database));
    const r = new FrameReader(conn, 4096);
    const params: Uint8Array[] = [];
    for (;;) {
      while (r.next()) {
        if (r.type === 0x45) throw new Error("Postgres refused the login");
        if (r.type === 0x53 && keepParams) params.push(r.raw.slice());
        if (r.type === Z) {
          if (keepParams) {
            let n = 0;
            for (const p of params) n += p.length;
            this.params = new Uint8Array(n);
            n = 0;
            for (const p of params) {
              this.params.set(p, n);
              n += p.length;
            }
          }
          return new Server(conn, r, this);
        }
      }
      if (!r.advance(await r.read())) throw new Error("Postgres closed the login");
    }
  }

  /** A server now, or undefined (then {@linkcode wait}). */
  take(): Server | undefined {
    return this.#idle.pop();
  }

  /** Calls `got` with a server as soon as one is released (first come, first served). */
  wait(got: (s: Server) => void): void {
    this.#waiters.push(got);
  }

  release(s: Server): void {
    const w = this.#waiters.shift();
    if (w !== undefined) w(s);
    else this.#idle.push(s);
  }

  drop(s: Server): void {
    this.#all.delete(s);
    const at = this.#idle.indexOf(s);
    if (at >= 0) this.#idle.splice(at, 1);
    try {
      s.conn.close();
    } catch {
      // already closed
    }
  }
}

/** One client connection. */
class Client {
  server: Server | null = null;
  conn: FastConn;
  #closed = false;

  constructor(conn: FastConn) {
    this.conn = conn;
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    try {
      this.conn.close();
    } catch {
      // already closed
    }
  }

  async run(pool: Pool): Promise<void> {
    try {
      if (!(await this.#startup(pool))) return;
      this.#reader = new FrameReader(this.conn, 1024);
      this.#pool = pool;
      this.#pump();
      return;
    } catch {
      // the client went away or broke the protocol during startup (it holds no server yet)
    }
    this.close();
  }

  #reader: FrameReader | null = null;
  #pool: Pool | null = null;
  /** Messages read while no server was free (still in the reader's buffer: reading waits). */
  #heldStart = 0;
  #heldEnd = 0;
  #heldEnds = 0;

  /** Ends the client; a server it held mid-transaction is in an unknown state and is dropped. */
  #end(): void {
    this.close();
    const s = this.server;
    if (s !== null) {
      this.server = null;
      s.client = null;
      this.#pool!.drop(s);
    }
  }

  /** Reads the client's messages and sends them to its server, taking one first. */
  #pump = (): void => {
    const r = this.#reader!;
    for (;;) {
      const more = readMore(r, this.#pump);
      if (more === undefined) return;
      if (!more) return this.#end();
      let spanStart = -1;
      let spanEnd = 0;
      let ends = 0;
      let quit = false;
      while (r.next()) {
        if (r.type === TERMINATE) {
          quit = true;
          break;
        }
        if (spanStart < 0) spanStart = r.start;
        spanEnd = r.end;
        if (r.type === QUERY || r.type === SYNC) ends++;
      }
      if (spanStart >= 0) {
        const s = this.server ?? this.#pool!.take();
        if (s === undefined) {
          if (quit) return this.#end();
          // Nothing more is read until a server comes, so the bytes stay where they are.
          this.#heldStart = spanStart;
          this.#heldEnd = spanEnd;
          this.#heldEnds = ends;
          this.#pool!.wait(this.#got);
          return;
        }
        this.#forward(s, r.buf, spanStart, spanEnd, ends);
      }
      if (quit) return this.#end();
    }
  };

  #got = (s: Server): void => {
    if (this.#closed) {
      this.#pool!.release(s);
      return;
    }
    this.#forward(s, this.#reader!.buf, this.#heldStart, this.#heldEnd, this.#heldEnds);
    this.#pump();
  };

  #forward(s: Server, buf: Uint8Array, start: number, end: number, ends: number): void {
    this.server = s;
    s.client = this;
    s.pending += ends;
    send(s.conn, buf, start, end, () => this.#end());
  }

  async #startup(pool: Pool): Promise<boolean> {
    for (;;) {
      const head = await readExactly(this.conn, 8);
      const v = new DataView(head.buffer);
      const len = v.getInt32(0);
      const code = v.getInt32(4);
      if (len < 8 || len > 10_000) return false;
      if (code === SSL_REQUEST || code === GSSENC_REQUEST) {
        await writeAll(this.conn, new Uint8Array([0x4e]));
        continue;
      }
      if (code !== PROTOCOL_3) return false;
      await readExactly(this.conn, len - 8);
      const ok = new Uint8Array([0x52, 0, 0, 0, 8, 0, 0, 0, 0]);
      const key = new Uint8Array([0x4b, 0, 0, 0, 12, 0, 0, 0, 1, 0, 0, 0, 1]);
      const ready = new Uint8Array([Z, 0, 0, 0, 5, IDLE]);
      const out = new Uint8Array(ok.length + pool.params.length + key.length + ready.length);
      out.set(ok, 0);
      out.set(pool.params, ok.length);
      out.set(key, ok.length + pool.params.length);
      out.set(ready, ok.length + pool.params.length + key.length);
      await writeAll(this.conn, out);
      return true;
    }
  }
}

if (import.meta.main) {
  const { values } = parseArgs({
    args: Deno.args,
    options: {
      listen: { type: "string" },
      "postgres-socket-dir": { type: "string" },
      "postgres-port": { type: "string", default: "5432" },
      "pool-size": { type: "string", default: "20" },
      user: { type: "string", default: "postgres" },
      database: { type: "string", default: "postgres" },
    },
  });
  const net = openFastNet();
  if (typeof net === "string") throw new Error(`the fast socket path is not available: ${net}`);
  if (values["postgres-socket-dir"] === undefined) {
    throw new RangeError("'--postgres-socket-dir' is required");
  }
  const size = Number(values["pool-size"]);
  if (!Number.isInteger(size) || size < 1) throw new RangeError("'--pool-size' must be >= 1");
  const pool = new Pool(
    net,
    `${values["postgres-socket-dir"]}/.s.PGSQL.${values["postgres-port"]}`,
    values.user!,
    values.database!,
  );
  await pool.open(size);
  const listener = net.listen(hostPort(values.listen));
  console.log(`floor pooler listening on ${values.listen}, ${size} Postgres connections`);
  for (const signal of ["SIGTERM", "SIGINT"] as const) {
    Deno.addSignalListener(signal, () => Deno.exit(0));
  }
  for (;;) {
    const conn = await listener.accept();
    conn.setNoDelay(true);
    new Client(conn).run(pool);
  }
}
