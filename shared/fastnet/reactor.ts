/**
 * One epoll set for every fast socket of the process, and the loop that waits on it.
 *
 * The loop first asks epoll for ready sockets without blocking, on the JavaScript thread (a
 * system call and no more); only when nothing is ready does it wait on one of Deno's worker
 * threads (a non-blocking FFI call), which hands control back to Deno's event loop. Under load
 * most rounds are the cheap kind. So that Deno's own timers and I/O are never starved, every
 * 32nd round, and any round 2 ms after the last, goes through the worker thread as well.
 *
 * Sockets are registered edge-triggered: each watcher keeps its own "readable"/"writable" flags
 * and is told when they may have changed.
 *
 * @module
 */

import { C, type Libc } from "./libc.ts";

/** Receives the events of one registered descriptor. */
export interface Watcher {
  /** `mask` holds EPOLLIN/EPOLLOUT/EPOLLERR/EPOLLHUP/EPOLLRDHUP bits. */
  onEvents(mask: number): void;
}

const MAX_EVENTS = 256;
const SYNC_ROUNDS = 32;
const SYNC_MS = 2;
const IDLE_WAIT_MS = 60_000;

/** The process's reactor over one epoll descriptor. */
export class Reactor {
  #libc: Libc;
  #ep: number;
  #wakeFd: number;
  #watchers = new Map<number, Watcher>();
  #nextToken = 1;
  #running = false;
  #waiting = false;
  #events: Uint8Array;
  #eventsView: DataView;
  #blockingEvents: Uint8Array;
  #blockingView: DataView;
  #ctl: Uint8Array;
  #ctlView: DataView;
  #wakeBuf = new BigUint64Array([1n]);
  #drainBuf = new Uint8Array(8);

  /** Creates the epoll set (throws when the kernel refuses). */
  constructor(libc: Libc) {
    this.#libc = libc;
    const s = libc.sym;
    this.#ep = s.epoll_create1(C.EPOLL_CLOEXEC);
    if (this.#ep < 0) throw new Error(`epoll_create1 failed (os error ${libc.errno()})`);
    this.#wakeFd = s.eventfd(0, C.EFD_NONBLOCK | C.EFD_CLOEXEC);
    if (this.#wakeFd < 0) throw new Error(`eventfd failed (os error ${libc.errno()})`);
    this.#events = new Uint8Array(libc.eventSize * MAX_EVENTS);
    this.#eventsView = new DataView(this.#events.buffer);
    this.#blockingEvents = new Uint8Array(libc.eventSize * MAX_EVENTS);
    this.#blockingView = new DataView(this.#blockingEvents.buffer);
    this.#ctl = new Uint8Array(libc.eventSize);
    this.#ctlView = new DataView(this.#ctl.buffer);
    this.#control(C.EPOLL_CTL_ADD, this.#wakeFd, C.EPOLLIN | C.EPOLLET, 0);
  }

  /** Descriptors registered now. */
  get size(): number {
    return this.#watchers.size;
  }

  #control(op: number, fd: number, mask: number, token: number): void {
    this.#ctlView.setUint32(0, mask >>> 0, true);
    this.#ctlView.setUint32(this.#libc.eventDataOffset, token, true);
    this.#ctlView.setUint32(this.#libc.eventDataOffset + 4, 0, true);
    if (this.#libc.sym.epoll_ctl(this.#ep, op, fd, this.#ctl) < 0) {
      throw new Error(`epoll_ctl(${op}, fd ${fd}) failed (os error ${this.#libc.errno()})`);
    }
  }

  /**
   * Watches `fd` for the events in `mask` (edge-triggered is added); returns the token to
   * {@linkcode modify} or {@linkcode remove} it with.
   */
  add(fd: number, mask: number, watcher: Watcher): number {
    let token = this.#nextToken++;
    if (this.#nextToken > 0xffffffff) this.#nextToken = 1;
    while (token === 0 || this.#watchers.has(token)) token = this.#nextToken++;
    this.#control(C.EPOLL_CTL_ADD, fd, mask | C.EPOLLET, token);
    this.#watchers.set(token, watcher);
    if (!this.#running) {
      this.#running = true;
      this.#loop();
    }
    return token;
  }

  /** Changes the events watched on `fd`. */
  modify(fd: number, token: number, mask: number): void {
    this.#control(C.EPOLL_CTL_MOD, fd, mask | C.EPOLLET, token);
  }

  /**
   * Stops watching: call before closing `fd`. Events already fetched for it are dropped (the
   * token, not the descriptor number, identifies the watcher).
   */
  remove(fd: number, token: number): void {
    if (!this.#watchers.delete(token)) return;
    this.#control(C.EPOLL_CTL_DEL, fd, 0, 0);
    // Let a loop waiting on a worker thread see that it has nothing left to watch.
    if (this.#watchers.size === 0 && this.#waiting) {
      this.#libc.sym.write(this.#wakeFd, new Uint8Array(this.#wakeBuf.buffer), 8n);
    }
  }

  #dispatch(view: DataView, n: number): void {
    const size = this.#libc.eventSize;
    const dataAt = this.#libc.eventDataOffset;
    for (let i = 0; i < n; i++) {
      const at = i * size;
      const token = view.getUint32(at + dataAt, true);
      if (token === 0) {
        this.#libc.sym.read(this.#wakeFd, this.#drainBuf, 8n);
        continue;
      }
      const w = this.#watchers.get(token);
      if (w === undefined) continue;
      try {
        w.onEvents(view.getUint32(at, true));
      } catch {
        // a watcher's failure is its own: it reports it through its pending promises
      }
    }
  }

  async #loop(): Promise<void> {
    const s = this.#libc.sym;
    let rounds = 0;
    let since = performance.now();
    // Never dispatch from inside add(): its caller has not stored the token yet.
    await null;
    try {
      while (this.#watchers.size > 0) {
        let n = 0;
        if (rounds < SYNC_ROUNDS) {
          n = s.epoll_wait(this.#ep, this.#events, MAX_EVENTS, 0);
          if (n > 0 && performance.now() - since > SYNC_MS) rounds = SYNC_ROUNDS;
        }
        if (n > 0) {
          rounds++;
          this.#dispatch(this.#eventsView, n);
          // Let the reads just resolved run (and write) before asking epoll again.
          await null;
          await null;
          continue;
        }
        rounds = 0;
        this.#waiting = true;
        // Returns at once when something is ready (a round that only yields to Deno's loop).
        n = await s.epoll_wait_blocking(this.#ep, this.#blockingEvents, MAX_EVENTS, IDLE_WAIT_MS);
        this.#waiting = false;
        since = performance.now();
        if (n > 0) this.#dispatch(this.#blockingView, n);
      }
    } finally {
      this.#running = false;
      this.#waiting = false;
    }
  }
}
