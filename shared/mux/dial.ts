/**
 * The dialing side of multiplexed connections: one {@linkcode Mux} per TCP address, opened on
 * first use and again after it ends; each dial is a new channel on it.
 *
 * @module
 */

import { SqlState, TesseraError } from "../errors/mod.ts";
import type { Logger } from "../log/mod.ts";
import { decodeError, readExact, writeAll } from "../wire/mod.ts";
import { Mux, MUX_ACCEPTED, MUX_REQUEST_CODE, type MuxStats, muxStats } from "./mux.ts";

/** Where to dial: a Unix socket path, or a TCP host and port. */
export type DialAddress = { path: string } | { hostname: string; port: number };

/** Options of {@linkcode MuxDialer}. */
export interface MuxDialerOptions {
  /** Where refusals are logged. */
  logger?: Logger;
  /**
   * How long a server that does not know multiplexing (it refused the request as unknown) is
   * dialed with a connection per session before it is asked again; 60000 ms by default.
   */
  fallbackMs?: number;
}

async function connectTcp(hostname: string, port: number): Promise<Deno.TcpConn> {
  const conn = await Deno.connect({ hostname, port, transport: "tcp" });
  conn.setNoDelay(true);
  return conn;
}

/** Thrown when the server answered the request with an error. */
class MuxRefused extends Error {
  readonly error: TesseraError;
  constructor(error: TesseraError) {
    super(error.message);
    this.error = error;
  }
}

async function handshake(hostname: string, port: number): Promise<Mux> {
  const conn = await connectTcp(hostname, port);
  try {
    const req = new Uint8Array(8);
    const v = new DataView(req.buffer);
    v.setInt32(0, 8);
    v.setInt32(4, MUX_REQUEST_CODE);
    await writeAll(conn, req);
    const head = new Uint8Array(5);
    if (!(await readExact(conn, head.subarray(0, 1)))) {
      throw new Deno.errors.ConnectionReset("the server closed the connection at once");
    }
    if (head[0] === MUX_ACCEPTED) return new Mux(conn);
    if (head[0] !== 0x45 || !(await readExact(conn, head.subarray(1)))) {
      throw new TesseraError(
        SqlState.protocolViolation,
        `unexpected answer to the multiplexing request: 0x${head[0]!.toString(16)}`,
      );
    }
    const len = new DataView(head.buffer).getInt32(1);
    if (len < 4 || len > 65536) {
      throw new TesseraError(SqlState.protocolViolation, `invalid ErrorResponse length ${len}`);
    }
    const payload = new Uint8Array(len - 4);
    if (!(await readExact(conn, payload))) {
      throw new Deno.errors.ConnectionReset("the server closed the connection part way");
    }
    throw new MuxRefused(decodeError(payload));
  } catch (err) {
    try {
      conn.close();
    } catch {
      // already closed
    }
    throw err;
  }
}

/** Dials channels over one multiplexed connection per address. */
export class MuxDialer {
  #muxes = new Map<string, Promise<Mux>>();
  #plainUntil = new Map<string, number>();
  #log: Logger | undefined;
  #fallbackMs: number;
  #closed = false;

  /** A dialer with no connection yet. */
  constructor(options: MuxDialerOptions = {}) {
    this.#log = options.logger;
    this.#fallbackMs = options.fallbackMs ?? 60_000;
  }

  /**
   * Multiplexed connections open now, their channels, and the writes and reads made on them with
   * the frames those carried.
   */
  stats(): MuxStats {
    const open: Mux[] = [];
    for (const p of this.#muxes.values()) {
      const m = this.#ready.get(p);
      if (m !== undefined && !m.closed) open.push(m);
    }
    return muxStats(open);
  }

  #ready = new WeakMap<Promise<Mux>, Mux>();

  /**
   * A connection to `address`: a new channel of the address's multiplexed connection (a Unix
   * socket, or a server that does not know multiplexing, gets a connection of its own).
   */
  dial = async (address: DialAddress): Promise<Deno.Conn> => {
    if ("path" in address) return await Deno.connect({ transport: "unix", path: address.path });
    const { hostname, port } = address;
    if (this.#closed) throw new Deno.errors.BadResource("the dialer is closed");
    const key = `${hostname}:${port}`;
    for (let attempt = 0;; attempt++) {
      const until = this.#plainUntil.get(key);
      if (until !== undefined) {
        if (Date.now() < until) return await connectTcp(hostname, port);
        this.#plainUntil.delete(key);
      }
      let p = this.#muxes.get(key);
      if (p === undefined) {
        p = handshake(hostname, port);
        this.#muxes.set(key, p);
        const opened = p;
        opened.then((m) => {
          this.#ready.set(opened, m);
          if (this.#closed) m.close();
          void m.done.finally(() => {
            if (this.#muxes.get(key) === opened) this.#muxes.delete(key);
          });
        }, () => {
          if (this.#muxes.get(key) === opened) this.#muxes.delete(key);
        });
      }
      let mux: Mux;
      try {
        mux = await p;
      } catch (err) {
        if (err instanceof MuxRefused) {
          if (err.error.code === SqlState.protocolViolation) {
            // A server without multiplexing: a connection per session for a while.
            this.#log?.info("pooler does not multiplex; using a connection per session", {
              address: key,
              error: err.error,
            });
            this.#plainUntil.set(key, Date.now() + this.#fallbackMs);
            continue;
          }
          throw err.error;
        }
        throw err;
      }
      if (!mux.closed) return mux.open();
      // Ended between its handshake and now: open a fresh one (once).
      if (this.#muxes.get(key) === p) this.#muxes.delete(key);
      if (attempt > 0) return mux.open(); // throws the connection's error
    }
  };

  /** Closes every multiplexed connection (their channels end) and refuses further dials. */
  close(): void {
    this.#closed = true;
    for (const p of this.#muxes.values()) p.then((m) => m.close(), () => {});
    this.#muxes.clear();
  }
}
