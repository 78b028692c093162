/**
 * Listening and connecting on the fast path: TCP (IP literals and `localhost`) and Unix stream
 * sockets, giving {@linkcode FastConn}s.
 *
 * @module
 */

import { decodeAddr, inetAddr, type SockAddr, unixAddr } from "./addr.ts";
import { FastConn } from "./conn.ts";
import { C, E, errnoError, int32, type Libc, openLibc } from "./libc.ts";
import { Reactor, type Watcher } from "./reactor.ts";

/** Where to listen or connect: TCP host and port, or a Unix socket path. */
export type FastAddress = { hostname: string; port: number } | { path: string };

const SOCK_FLAGS = C.SOCK_STREAM | C.SOCK_NONBLOCK | C.SOCK_CLOEXEC;

/** A listening socket with the shape of a `Deno.Listener`. */
export class FastListener implements Deno.Listener<FastConn>, Watcher {
  #net: FastNet;
  #fd: number;
  #token: number;
  #unix: boolean;
  #closed = false;
  #ready = true;
  #waiters: { resolve: (c: FastConn) => void; reject: (e: unknown) => void }[] = [];
  /** The address listened on (with the real port when 0 was asked for). */
  readonly addr: Deno.Addr;

  /** Wraps the listening, non-blocking socket `fd` (see {@linkcode FastNet.listen}). */
  constructor(net: FastNet, fd: number, unix: boolean, addr: Deno.Addr) {
    this.#net = net;
    this.#fd = fd;
    this.#unix = unix;
    this.addr = addr;
    this.#token = net.reactor.add(fd, C.EPOLLIN, this);
  }

  /** Handles readiness reported by epoll. */
  onEvents(): void {
    this.#ready = true;
    this.#serve();
  }

  #serve(): void {
    while (this.#waiters.length > 0 && this.#ready) {
      let conn: FastConn | undefined;
      try {
        conn = this.#tryAccept();
      } catch (err) {
        this.#waiters.shift()!.reject(err);
        continue;
      }
      if (conn === undefined) return;
      this.#waiters.shift()!.resolve(conn);
    }
  }

  #tryAccept(): FastConn | undefined {
    const { sym, errno } = this.#net.libc;
    for (;;) {
      const fd = sym.accept4(this.#fd, null, null, C.SOCK_NONBLOCK | C.SOCK_CLOEXEC);
      if (fd >= 0) return new FastConn(this.#net.libc, this.#net.reactor, fd, this.#unix);
      const e = errno();
      if (e === E.EINTR || e === E.ECONNABORTED) continue;
      if (e === E.EAGAIN) {
        this.#ready = false;
        return undefined;
      }
      throw errnoError(e, "accept");
    }
  }

  /** Waits for the next connection; rejects with BadResource once the listener is closed. */
  accept(): Promise<FastConn> {
    if (this.#closed) return Promise.reject(new Deno.errors.BadResource("listener is closed"));
    return new Promise((resolve, reject) => {
      this.#waiters.push({ resolve, reject });
      this.#serve();
    });
  }

  /** Stops listening; pending accepts reject with BadResource. */
  close(): void {
    if (this.#closed) throw new Deno.errors.BadResource("listener is closed");
    this.#closed = true;
    this.#net.reactor.remove(this.#fd, this.#token);
    this.#net.libc.sym.close(this.#fd);
    for (const w of this.#waiters.splice(0)) {
      w.reject(new Deno.errors.BadResource("listener is closed"));
    }
  }

  /** Has no effect: the reactor keeps the process alive while the listener is open. */
  ref(): void {}

  /** Has no effect (see {@linkcode ref}). */
  unref(): void {}

  /** Yields connections until the listener is closed. */
  async *[Symbol.asyncIterator](): AsyncIterableIterator<FastConn> {
    for (;;) {
      try {
        yield await this.accept();
      } catch (err) {
        if (err instanceof Deno.errors.BadResource) return;
        throw err;
      }
    }
  }

  /** Closes the listener if it is open. */
  [Symbol.dispose](): void {
    if (!this.#closed) this.close();
  }
}

/** Waits once for a socket to become writable (a connect in progress). */
class ConnectWait implements Watcher {
  #done: () => void;
  constructor(done: () => void) {
    this.#done = done;
  }
  onEvents(): void {
    this.#done();
  }
}

/**
 * The fast network path of this process: sockets driven by epoll through libc, bypassing
 * Deno's networking ops. Get it with {@linkcode openFastNet}.
 */
export class FastNet {
  /** The opened libc. */
  readonly libc: Libc;
  /** The process's reactor. */
  readonly reactor: Reactor;

  /** Uses `libc` (see {@linkcode openFastNet}). */
  constructor(libc: Libc) {
    this.libc = libc;
    this.reactor = new Reactor(libc);
  }

  #encode(address: FastAddress): SockAddr | undefined {
    return "path" in address ? unixAddr(address.path) : inetAddr(address.hostname, address.port);
  }

  /**
   * Wraps `fd`, a connected non-blocking stream socket this process owns (received from another
   * process, see `fdpass.ts`); `unix` for a Unix socket.
   */
  adopt(fd: number, unix: boolean): FastConn {
    return new FastConn(this.libc, this.reactor, fd, unix);
  }

  /** Whether {@linkcode listen} and {@linkcode connect} can take `address` (IP or Unix path). */
  accepts(address: FastAddress): boolean {
    return "path" in address || inetAddr(address.hostname, address.port) !== undefined;
  }

  /**
   * Listens on `address`. TCP sockets get SO_REUSEADDR, as Deno's own listeners do. Throws the
   * same `Deno.errors` as `Deno.listen` (AddrInUse, PermissionDenied, ...).
   */
  listen(address: FastAddress, backlog = 1024): FastListener {
    const sa = this.#encode(address);
    if (sa === undefined) {
      throw new TypeError(`not an IP address: '${(address as { hostname: string }).hostname}'`);
    }
    const { sym, errno } = this.libc;
    const fd = sym.socket(sa.family, SOCK_FLAGS, 0);
    if (fd < 0) throw errnoError(errno(), "socket");
    try {
      if (sa.family !== C.AF_UNIX) {
        sym.setsockopt(fd, C.SOL_SOCKET, C.SO_REUSEADDR, int32(1), 4);
      }
      if (sym.bind(fd, sa.bytes, sa.bytes.length) < 0) throw errnoError(errno(), "bind");
      if (sym.listen(fd, backlog) < 0) throw errnoError(errno(), "listen");
      const buf = new Uint8Array(128);
      const len = new Uint32Array([128]);
      sym.getsockname(fd, buf, new Uint8Array(len.buffer));
      const addr = sa.family === C.AF_UNIX
        ? { transport: "unix" as const, path: (address as { path: string }).path }
        : decodeAddr(buf, len[0]!);
      return new FastListener(this, fd, sa.family === C.AF_UNIX, addr);
    } catch (err) {
      sym.close(fd);
      throw err;
    }
  }

  /**
   * Connects to `address`; TCP connections get TCP_NODELAY. Rejects with the same
   * `Deno.errors` as `Deno.connect` (ConnectionRefused, NotFound, ...).
   */
  async connect(address: FastAddress): Promise<FastConn> {
    const sa = this.#encode(address);
    if (sa === undefined) {
      throw new TypeError(`not an IP address: '${(address as { hostname: string }).hostname}'`);
    }
    const { sym, errno } = this.libc;
    const unix = sa.family === C.AF_UNIX;
    for (let attempt = 0;; attempt++) {
      const fd = sym.socket(sa.family, SOCK_FLAGS, 0);
      if (fd < 0) throw errnoError(errno(), "socket");
      let ok = false;
      try {
        if (sym.connect(fd, sa.bytes, sa.bytes.length) < 0) {
          const e = errno();
          if (unix && e === E.EAGAIN) {
            // A Unix listener's backlog is full: try again shortly, as a blocking connect would.
            if (attempt >= 500) throw errnoError(e, "connect");
            sym.close(fd);
            ok = true;
            await new Promise((r) => setTimeout(r, 10));
            continue;
          }
          if (e !== E.EINPROGRESS && e !== E.EINTR) throw errnoError(e, "connect");
          await this.#writable(fd);
          const err = new Int32Array(1);
          const len = new Uint32Array([4]);
          sym.getsockopt(
            fd,
            C.SOL_SOCKET,
            C.SO_ERROR,
            new Uint8Array(err.buffer),
            new Uint8Array(len.buffer),
          );
          if (err[0] !== 0) throw errnoError(err[0]!, "connect");
        }
        if (!unix) sym.setsockopt(fd, C.IPPROTO_TCP, C.TCP_NODELAY, int32(1), 4);
        const conn = new FastConn(this.libc, this.reactor, fd, unix);
        ok = true;
        return conn;
      } finally {
        if (!ok) sym.close(fd);
      }
    }
  }

  #writable(fd: number): Promise<void> {
    return new Promise((resolve) => {
      const token = this.reactor.add(
        fd,
        C.EPOLLOUT,
        new ConnectWait(() => {
          this.reactor.remove(fd, token);
          resolve();
        }),
      );
    });
  }
}

let shared: FastNet | undefined;

/**
 * The process's fast network path, or a string saying why it is not available (not Linux, no
 * `--allow-ffi`, no libc). Created on first call.
 */
export function openFastNet(): FastNet | string {
  if (shared !== undefined) return shared;
  const libc = openLibc();
  if (typeof libc === "string") return libc;
  try {
    shared = new FastNet(libc);
  } catch (err) {
    return err instanceof Error ? err.message : String(err);
  }
  return shared;
}
