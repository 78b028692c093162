/**
 * A connected socket with the shape of a `Deno.Conn`, read and written with direct system calls.
 *
 * A write is attempted at once on the calling thread and resolves immediately when the kernel
 * took bytes; only a full socket buffer makes it wait for epoll. A read returns bytes already
 * known to be there, or waits for the socket's next edge.
 *
 * @module
 */

import { decodeAddr } from "./addr.ts";
import { C, E, errnoError, int32, type Libc, usize } from "./libc.ts";
import type { Reactor, Watcher } from "./reactor.ts";

const READ_EVENTS = C.EPOLLIN | C.EPOLLRDHUP | C.EPOLLERR | C.EPOLLHUP;
const WRITE_EVENTS = C.EPOLLOUT | C.EPOLLERR | C.EPOLLHUP;
const HANGUP_EVENTS = C.EPOLLRDHUP | C.EPOLLHUP | C.EPOLLERR;
const BASE_MASK = C.EPOLLIN | C.EPOLLRDHUP;

function closedError(): Error {
  return new Deno.errors.BadResource("connection is closed");
}

/** A non-blocking stream socket served by the process's {@linkcode Reactor}. */
export class FastConn implements Deno.Conn, Watcher {
  #libc: Libc;
  #reactor: Reactor;
  #fd: number;
  #token: number;
  #unix: boolean;
  #closed = false;
  /** Data may be waiting (a fresh socket is tried once before waiting for an edge). */
  #canRead = true;
  #hungUp = false;
  #canWrite = true;
  #watchingOut = false;
  #rBuf: Uint8Array | null = null;
  #rResolve: ((n: number | null) => void) | null = null;
  #rReject: ((err: unknown) => void) | null = null;
  #readCb: (() => void) | null = null;
  #wBuf: Uint8Array | null = null;
  #wResolve: ((n: number) => void) | null = null;
  #wReject: ((err: unknown) => void) | null = null;
  #local: Deno.Addr | undefined;
  #remote: Deno.Addr | undefined;
  #readable: ReadableStream<Uint8Array<ArrayBuffer>> | undefined;
  #writable: WritableStream<Uint8Array<ArrayBufferLike>> | undefined;

  /**
   * Takes ownership of the connected, non-blocking socket `fd` (closed by {@linkcode close});
   * `unix` for a Unix socket (no TCP options).
   */
  constructor(libc: Libc, reactor: Reactor, fd: number, unix: boolean) {
    this.#libc = libc;
    this.#reactor = reactor;
    this.#fd = fd;
    this.#unix = unix;
    this.#token = reactor.add(fd, BASE_MASK, this);
  }

  /** The socket's descriptor (for diagnostics). */
  get fd(): number {
    return this.#fd;
  }

  /** The local address. */
  get localAddr(): Deno.Addr {
    return this.#local ??= this.#address(false);
  }

  /** The peer's address. */
  get remoteAddr(): Deno.Addr {
    return this.#remote ??= this.#address(true);
  }

  #address(peer: boolean): Deno.Addr {
    const buf = new Uint8Array(128);
    const len = new Uint32Array([128]);
    const lenBytes = new Uint8Array(len.buffer);
    const s = this.#libc.sym;
    const rc = peer
      ? s.getpeername(this.#fd, buf, lenBytes)
      : s.getsockname(this.#fd, buf, lenBytes);
    if (rc < 0 || this.#closed) {
      return this.#unix ? { transport: "unix", path: "" } : {
        transport: "tcp",
        hostname: "0.0.0.0",
        port: 0,
      };
    }
    return decodeAddr(buf, len[0]!);
  }

  /** Handles readiness reported by epoll. */
  onEvents(mask: number): void {
    if ((mask & READ_EVENTS) !== 0) {
      this.#canRead = true;
      // The peer's end of stream (or an error) was announced: its edge will not come again.
      if ((mask & HANGUP_EVENTS) !== 0) this.#hungUp = true;
      if (this.#rResolve !== null) this.#serveRead();
      else if (this.#readCb !== null) {
        const fn = this.#readCb;
        this.#readCb = null;
        fn();
      }
    }
    if ((mask & WRITE_EVENTS) !== 0) {
      this.#canWrite = true;
      if (this.#wResolve !== null) this.#serveWrite();
    }
  }

  /** One recv: the count, null at end of stream, undefined when nothing is there. */
  #recv(p: Uint8Array): number | null | undefined {
    const s = this.#libc.sym;
    for (;;) {
      const n = s.recv(this.#fd, p, usize(p.length), 0);
      if (n > 0) {
        // A short read emptied the socket; the next arrival raises a new edge (but an end of
        // stream already announced does not: it must still be read).
        if (n < p.length && !this.#hungUp) this.#canRead = false;
        return n;
      }
      if (n === 0) return null;
      const errno = this.#libc.errno();
      if (errno === E.EINTR) continue;
      if (errno === E.EAGAIN) {
        this.#canRead = false;
        return undefined;
      }
      throw errnoError(errno, "read");
    }
  }

  #serveRead(): void {
    const buf = this.#rBuf!;
    const resolve = this.#rResolve!;
    const reject = this.#rReject!;
    let r: number | null | undefined;
    try {
      r = this.#recv(buf);
    } catch (err) {
      this.#rBuf = this.#rResolve = this.#rReject = null;
      reject(err);
      return;
    }
    if (r === undefined) return;
    this.#rBuf = this.#rResolve = this.#rReject = null;
    resolve(r);
  }

  /** Reads into `p`: the count, or `null` once the peer has closed its side. */
  read(p: Uint8Array): Promise<number | null> {
    if (this.#closed) return Promise.reject(closedError());
    if (this.#rResolve !== null) {
      return Promise.reject(new Deno.errors.Busy("a read is already in progress"));
    }
    if (p.length === 0) return Promise.resolve(0);
    if (this.#canRead) {
      try {
        const r = this.#recv(p);
        if (r !== undefined) return Promise.resolve(r);
      } catch (err) {
        return Promise.reject(err);
      }
    }
    return new Promise((resolve, reject) => {
      this.#rBuf = p;
      this.#rResolve = resolve;
      this.#rReject = reject;
    });
  }

  /**
   * Reads into `p` now: the count, `null` at end of stream, or `undefined` when nothing is there
   * (then {@linkcode onReadable} tells when to try again). Throws what {@linkcode read} would
   * reject with.
   */
  tryRead(p: Uint8Array): number | null | undefined {
    if (this.#closed) throw closedError();
    if (this.#rResolve !== null) throw new Deno.errors.Busy("a read is already in progress");
    if (p.length === 0) return 0;
    if (!this.#canRead) return undefined;
    return this.#recv(p);
  }

  /**
   * Calls `fn` once, from the reactor, when {@linkcode tryRead} may have something: the socket's
   * next edge, or at once (in a microtask) when bytes may already be there or the connection is
   * closed. Replaces a callback set before.
   */
  onReadable(fn: () => void): void {
    if (this.#closed || this.#canRead) {
      this.#readCb = null;
      queueMicrotask(fn);
      return;
    }
    this.#readCb = fn;
  }

  /** One send of `p`'s first `len` bytes: the count, or undefined when the buffer is full. */
  #send(p: Uint8Array, len: number = p.length): number | undefined {
    const s = this.#libc.sym;
    for (;;) {
      const n = s.send(this.#fd, p, usize(len), C.MSG_NOSIGNAL);
      if (n >= 0) {
        if (n < len) this.#canWrite = false;
        return n;
      }
      const errno = this.#libc.errno();
      if (errno === E.EINTR) continue;
      if (errno === E.EAGAIN) {
        this.#canWrite = false;
        return undefined;
      }
      throw errnoError(errno, "write");
    }
  }

  #serveWrite(): void {
    const buf = this.#wBuf!;
    const resolve = this.#wResolve!;
    const reject = this.#wReject!;
    let n: number | undefined;
    try {
      n = this.#send(buf);
    } catch (err) {
      this.#wBuf = this.#wResolve = this.#wReject = null;
      this.#stopWatchingOut();
      reject(err);
      return;
    }
    if (n === undefined) return;
    this.#wBuf = this.#wResolve = this.#wReject = null;
    this.#stopWatchingOut();
    resolve(n);
  }

  #stopWatchingOut(): void {
    if (!this.#watchingOut || this.#closed) return;
    this.#watchingOut = false;
    try {
      this.#reactor.modify(this.#fd, this.#token, BASE_MASK);
    } catch {
      // the socket is going away
    }
  }

  /**
   * Writes a prefix of `p` and resolves to its length (possibly less than `p`), waiting only
   * when the socket's buffer is full.
   */
  write(p: Uint8Array): Promise<number> {
    if (this.#closed) return Promise.reject(closedError());
    if (this.#wResolve !== null) {
      return Promise.reject(new Deno.errors.Busy("a write is already in progress"));
    }
    if (p.length === 0) return Promise.resolve(0);
    if (this.#canWrite) {
      try {
        const n = this.#send(p);
        if (n !== undefined) return Promise.resolve(n);
      } catch (err) {
        return Promise.reject(err);
      }
    }
    if (!this.#watchingOut) {
      this.#watchingOut = true;
      // Registering EPOLLOUT reports the socket at once if it became writable meanwhile.
      this.#reactor.modify(this.#fd, this.#token, BASE_MASK | C.EPOLLOUT);
    }
    return new Promise((resolve, reject) => {
      this.#wBuf = p;
      this.#wResolve = resolve;
      this.#wReject = reject;
    });
  }

  /**
   * Writes a prefix of `p`'s first `len` bytes now and returns its length: 0 when the socket's
   * buffer is full (or a write is waiting for room). Throws what {@linkcode write} would reject
   * with.
   */
  tryWrite(p: Uint8Array, len: number = p.length): number {
    if (this.#closed) throw closedError();
    if (this.#wResolve !== null || !this.#canWrite || len === 0) return 0;
    return this.#send(p, Math.min(len, p.length)) ?? 0;
  }

  /** Shuts down the sending side: the peer reads end of stream. */
  closeWrite(): Promise<void> {
    if (this.#closed) return Promise.reject(closedError());
    if (this.#libc.sym.shutdown(this.#fd, C.SHUT_WR) < 0) {
      return Promise.reject(errnoError(this.#libc.errno(), "shutdown"));
    }
    return Promise.resolve();
  }

  /** Closes the socket; a pending read or write rejects with BadResource. */
  close(): void {
    this.#detach();
    this.#libc.sym.close(this.#fd);
  }

  /** Stops watching, and fails what waits on the socket (the descriptor is left open). */
  #detach(): void {
    if (this.#closed) throw closedError();
    this.#closed = true;
    this.#reactor.remove(this.#fd, this.#token);
    const rr = this.#rReject, wr = this.#wReject, cb = this.#readCb;
    this.#readCb = null;
    // A reader waiting for bytes learns of the close from its next tryRead (as a pending read
    // learns from its rejection, in a later turn).
    if (cb !== null) queueMicrotask(cb);
    this.#rBuf = this.#rResolve = this.#rReject = null;
    this.#wBuf = this.#wResolve = this.#wReject = null;
    rr?.(closedError());
    wr?.(closedError());
  }

  /**
   * Stops watching the socket and gives up its descriptor without closing it (to hand it to
   * another process, see `fdpass.ts`): the caller owns it. Pending reads and writes reject as on
   * {@linkcode close}.
   */
  release(): number {
    this.#detach();
    return this.#fd;
  }

  /** Sets TCP_NODELAY (TCP only). */
  setNoDelay(noDelay = true): void {
    if (this.#unix || this.#closed) return;
    this.#libc.sym.setsockopt(this.#fd, C.IPPROTO_TCP, C.TCP_NODELAY, int32(noDelay ? 1 : 0), 4);
  }

  /** Sets SO_KEEPALIVE (TCP only). */
  setKeepAlive(keepAlive = true): void {
    if (this.#unix || this.#closed) return;
    this.#libc.sym.setsockopt(this.#fd, C.SOL_SOCKET, C.SO_KEEPALIVE, int32(keepAlive ? 1 : 0), 4);
  }

  /** Has no effect: the reactor keeps the process alive while any socket is open. */
  ref(): void {}

  /** Has no effect (see {@linkcode ref}). */
  unref(): void {}

  /** The bytes read, as a stream (slower than `read`). */
  get readable(): ReadableStream<Uint8Array<ArrayBuffer>> {
    this.#readable ??= new ReadableStream<Uint8Array<ArrayBuffer>>({
      pull: async (controller) => {
        const buf = new Uint8Array(16384);
        const n = await this.read(buf);
        if (n === null) controller.close();
        else controller.enqueue(buf.subarray(0, n));
      },
      cancel: () => {
        if (!this.#closed) this.close();
      },
    });
    return this.#readable;
  }

  /** A stream whose chunks are written in order. */
  get writable(): WritableStream<Uint8Array<ArrayBufferLike>> {
    this.#writable ??= new WritableStream<Uint8Array<ArrayBufferLike>>({
      write: async (chunk) => {
        let done = 0;
        while (done < chunk.length) done += await this.write(chunk.subarray(done));
      },
      close: () => this.closeWrite(),
      abort: () => {
        if (!this.#closed) this.close();
      },
    });
    return this.#writable;
  }

  /** Closes the connection if it is open. */
  [Symbol.dispose](): void {
    if (!this.#closed) this.close();
  }
}
