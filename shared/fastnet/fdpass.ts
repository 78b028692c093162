/**
 * Passing connected sockets between processes over a Unix stream socket (`SCM_RIGHTS`): one
 * process accepts a connection and another serves it. Each descriptor travels with one byte of
 * data, so a receive returns at most one. Linux, LP64 (x86_64, aarch64) layouts of `msghdr`,
 * `iovec` and `cmsghdr`.
 *
 * @module
 */

import { C, E, type Libc } from "./libc.ts";
import type { Reactor, Watcher } from "./reactor.ts";

// struct msghdr: name 0, namelen 8, iov 16, iovlen 24, control 32, controllen 40, flags 48.
const HDR_IOV = 16;
const HDR_IOVLEN = 24;
const HDR_CONTROL = 32;
const HDR_CONTROLLEN = 40;
// struct cmsghdr: len 0 (size_t), level 8, type 12, data 16; CMSG_SPACE(4) = 24, CMSG_LEN(4) = 20.
const CMSG_SPACE_ONE = 24;
const CMSG_LEN_ONE = 20;
/** Over V8's on-heap limit for typed arrays, so that their addresses never move. */
const BUF = 128;

function address(buf: Uint8Array): bigint {
  return BigInt(Deno.UnsafePointer.value(Deno.UnsafePointer.of(buf as Uint8Array<ArrayBuffer>)));
}

/** A `msghdr` with one byte of data and room for one descriptor, built once. */
class Message {
  readonly hdr = new Uint8Array(BUF);
  readonly hdrView = new DataView(this.hdr.buffer);
  readonly iov = new Uint8Array(BUF);
  readonly data = new Uint8Array(BUF);
  readonly control = new Uint8Array(BUF);
  readonly controlView = new DataView(this.control.buffer);

  constructor() {
    const iov = new DataView(this.iov.buffer);
    iov.setBigUint64(0, address(this.data), true);
    iov.setBigUint64(8, 1n, true);
    this.hdrView.setBigUint64(HDR_IOV, address(this.iov), true);
    this.hdrView.setBigUint64(HDR_IOVLEN, 1n, true);
    this.hdrView.setBigUint64(HDR_CONTROL, address(this.control), true);
    this.reset();
  }

  reset(): void {
    this.hdrView.setBigUint64(HDR_CONTROLLEN, BigInt(CMSG_SPACE_ONE), true);
    this.hdrView.setInt32(48, 0, true);
  }
}

/** What {@linkcode FdSender.send} did. */
export type SendResult = "sent" | "full" | "closed";

/** Sends descriptors on a connected Unix stream socket that this object owns. */
export class FdSender {
  #libc: Libc;
  #fd: number;
  #msg = new Message();
  #closed = false;

  /** Takes ownership of `fd` (non-blocking, connected, AF_UNIX stream). */
  constructor(libc: Libc, fd: number) {
    this.#libc = libc;
    this.#fd = fd;
    const c = this.#msg.controlView;
    c.setBigUint64(0, BigInt(CMSG_LEN_ONE), true);
    c.setInt32(8, C.SOL_SOCKET, true);
    c.setInt32(12, C.SCM_RIGHTS, true);
  }

  /** Whether the channel failed or was closed. */
  get closed(): boolean {
    return this.#closed;
  }

  /**
   * Sends a copy of `fd` (the caller still owns its own, and closes it once sent): "full" when the
   * channel's buffer is full, "closed" when the other end is gone (the channel is closed then).
   */
  send(fd: number): SendResult {
    if (this.#closed) return "closed";
    const m = this.#msg;
    m.reset();
    m.controlView.setInt32(16, fd, true);
    m.data[0] = 0x46;
    for (;;) {
      const n = this.#libc.sym.sendmsg(this.#fd, m.hdr, C.MSG_NOSIGNAL | C.MSG_DONTWAIT);
      if (n >= 1) return "sent";
      const errno = this.#libc.errno();
      if (errno === E.EINTR) continue;
      if (errno === E.EAGAIN) return "full";
      this.close();
      return "closed";
    }
  }

  /** Closes the channel. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#libc.sym.close(this.#fd);
  }
}

/** Receives descriptors on a connected Unix stream socket that this object owns. */
export class FdReceiver implements Watcher {
  #libc: Libc;
  #reactor: Reactor;
  #fd: number;
  #token: number;
  #msg = new Message();
  #closed = false;
  #onFd: (fd: number) => void;
  #onEnd: () => void;

  /**
   * Takes ownership of `fd` and watches it: `onFd` gets each descriptor received (the callee owns
   * it), `onEnd` is called once when the other end is gone.
   */
  constructor(
    libc: Libc,
    reactor: Reactor,
    fd: number,
    onFd: (fd: number) => void,
    onEnd: () => void,
  ) {
    this.#libc = libc;
    this.#reactor = reactor;
    this.#fd = fd;
    this.#onFd = onFd;
    this.#onEnd = onEnd;
    this.#token = reactor.add(fd, C.EPOLLIN | C.EPOLLRDHUP, this);
    // Anything sent before the registration raised no edge.
    queueMicrotask(() => this.onEvents());
  }

  /** Receives what is there (edge-triggered: until the socket is empty). */
  onEvents(): void {
    const m = this.#msg;
    const flags = C.MSG_DONTWAIT | C.MSG_CMSG_CLOEXEC;
    while (!this.#closed) {
      m.reset();
      const n = this.#libc.sym.recvmsg(this.#fd, m.hdr, flags);
      if (n > 0) {
        const len = Number(m.hdrView.getBigUint64(HDR_CONTROLLEN, true));
        const c = m.controlView;
        if (
          len >= CMSG_LEN_ONE && c.getInt32(8, true) === C.SOL_SOCKET &&
          c.getInt32(12, true) === C.SCM_RIGHTS
        ) this.#onFd(c.getInt32(16, true));
        continue;
      }
      if (n < 0) {
        const errno = this.#libc.errno();
        if (errno === E.EINTR) continue;
        if (errno === E.EAGAIN) return;
      }
      this.close();
      this.#onEnd();
      return;
    }
  }

  /** Stops receiving and closes the channel. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#reactor.remove(this.#fd, this.#token);
    this.#libc.sym.close(this.#fd);
  }
}
