/**
 * One epoll set for every fast socket of the process, and the loop that waits on it.
 *
 * The loop first asks epoll for ready sockets without blocking, on the JavaScript thread (a
 * system call and no more). When nothing is ready, it lets the work just started run to its
 * writes, then waits up to 1 ms on the JavaScript thread itself, so that the next event wakes
 * the thread that handles it. Deno's own epoll descriptors are in the set too: when Deno has
 * I/O, a timer's wake-up or an op's result to deliver, that wait ends at once. Only when that
 * short wait times out (or Deno has work) does the loop wait on one of Deno's worker threads (a
 * non-blocking FFI call), which hands control back to Deno's event loop.
 *
 * So that Deno's own timers and I/O are never starved while the sockets stay busy, every 1024th
 * round, any round 10 ms after the last, and any round after Deno's descriptors had events, first
 * gives Deno's event loop one turn on the JavaScript thread ({@linkcode DenoTurn}, about 12 µs;
 * its timers, which raise no event, fire at most 10 ms late under a steady load). Where Deno
 * refuses the socket pair that takes, such a round waits on the worker thread instead: about 45
 * µs of the JavaScript thread's time, and on a saturated 2-core machine 0.8 ms on average (4 ms
 * at most) before the JavaScript thread runs again, every one of its sockets unserved meanwhile.
 *
 * Waiting on a worker thread costs two thread wake-ups per event (the worker's, then the
 * JavaScript thread's); the short wait on the JavaScript thread costs one, as in a C server.
 *
 * Sockets are registered edge-triggered: each watcher keeps its own "readable"/"writable" flags
 * and is told when they may have changed.
 *
 * @module
 */

import { beginRound, endRound } from "../clock/mod.ts";
import { DenoTurn } from "./deno_turn.ts";
import { C, E, type Libc } from "./libc.ts";

/** Receives the events of one registered descriptor. */
export interface Watcher {
  /** `mask` holds EPOLLIN/EPOLLOUT/EPOLLERR/EPOLLHUP/EPOLLRDHUP bits. */
  onEvents(mask: number): void;
}

const MAX_EVENTS = 256;
const SYNC_ROUNDS = 1024;
const SYNC_MS = 10;
const IDLE_WAIT_MS = 60_000;
/** Longest wait on the JavaScript thread (the event loop is blocked meanwhile). */
const JS_WAIT_MS = 1;
/**
 * Microtask turns granted before a wait on the JavaScript thread: a read resolved by the last
 * events resumes its reader, which writes, in a few turns; a wait begun before that would hold
 * the write back.
 */
const SETTLE_TURNS = 16;
/** Token of Deno's own epoll descriptors in the set (never given to a watcher). */
const DENO_TOKEN = 0xffffffff;

/** Descriptors probed for Deno's epoll sets: they are opened when the runtime starts. */
const PROBED_FDS = 256;

/**
 * The other epoll descriptors of the process (Deno's event loop's), among the first
 * {@linkcode PROBED_FDS}: `EPOLL_CTL_DEL` of a descriptor that is not in the set fails with
 * ENOENT on an epoll descriptor and with EINVAL (or EBADF) on anything else, and changes nothing.
 */
function foreignEpolls(libc: Libc, own: number, probe: number, ctl: Uint8Array): number[] {
  const fds: number[] = [];
  for (let fd = 0; fd < PROBED_FDS; fd++) {
    if (fd === own) continue;
    if (libc.sym.epoll_ctl(fd, C.EPOLL_CTL_DEL, probe, ctl) < 0 && libc.errno() === E.ENOENT) {
      fds.push(fd);
    }
  }
  return fds;
}

/** The process's reactor over one epoll descriptor. */
export class Reactor {
  #libc: Libc;
  #ep: number;
  #wakeFd: number;
  /**
   * Watchers by token (an array: a token is its index, 0 is the wake-up descriptor's). A
   * removed watcher's token is reused only after the next dispatch, so that events fetched
   * before the removal never reach a new watcher.
   */
  #watchers: (Watcher | undefined)[] = [undefined];
  #count = 0;
  #free: number[] = [];
  #released: number[] = [];
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
  /** Whether the loop may wait on the JavaScript thread (Deno's epoll descriptors are in the set). */
  #jsWait = false;
  /** Deno's event loop has events: it gets a turn before the next wait. */
  #denoReady = false;
  /** The turn just given made Deno's descriptors ready itself: that event is not news. */
  #ownDenoEvent = false;
  /** The socket pair for Deno's turns, once open (see {@linkcode DenoTurn}). */
  #turn: DenoTurn | undefined;
  /** Why the socket pair could not be opened (then every turn waits on a worker thread). */
  #turnRefused: string | undefined;
  /** Bumped by each start of the loop, so that a pair opened for an ended loop is closed. */
  #generation = 0;
  #turns = 0;
  #workerRounds = 0;

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
    const others = foreignEpolls(libc, this.#ep, this.#wakeFd, this.#ctl);
    for (const fd of others) {
      try {
        this.#control(C.EPOLL_CTL_ADD, fd, C.EPOLLIN | C.EPOLLET, DENO_TOKEN);
        this.#jsWait = true;
      } catch {
        // not ours to watch after all: Deno's loop is still reached through a worker thread
      }
    }
  }

  /** Whether the reactor waits on the JavaScript thread between bursts (see the module doc). */
  get waitsOnJsThread(): boolean {
    return this.#jsWait;
  }

  /**
   * Turns given to Deno's event loop on the JavaScript thread and rounds that waited on a worker
   * thread (since the process started), whether the socket pair for turns is open now, and why it
   * could not be opened.
   */
  get rounds(): {
    turns: number;
    workerRounds: number;
    turnOpen: boolean;
    turnRefused: string | undefined;
  } {
    return {
      turns: this.#turns,
      workerRounds: this.#workerRounds,
      turnOpen: this.#turn !== undefined,
      turnRefused: this.#turnRefused,
    };
  }

  /** Descriptors registered now. */
  get size(): number {
    return this.#count;
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
    const token = this.#free.pop() ?? this.#watchers.length;
    try {
      this.#control(C.EPOLL_CTL_ADD, fd, mask | C.EPOLLET, token);
    } catch (err) {
      if (token < this.#watchers.length) this.#free.push(token);
      throw err;
    }
    this.#watchers[token] = watcher;
    this.#count++;
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
    if (token <= 0 || this.#watchers[token] === undefined) return;
    this.#watchers[token] = undefined;
    this.#count--;
    this.#released.push(token);
    this.#control(C.EPOLL_CTL_DEL, fd, 0, 0);
    // Let a loop waiting on a worker thread see that it has nothing left to watch.
    if (this.#count === 0 && this.#waiting) {
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
      if (token === DENO_TOKEN) {
        if (!this.#ownDenoEvent) this.#denoReady = true;
        continue;
      }
      const w = this.#watchers[token];
      if (w === undefined) continue;
      try {
        w.onEvents(view.getUint32(at, true));
      } catch {
        // a watcher's failure is its own: it reports it through its pending promises
      }
    }
    // No event fetched before a removal is left: its token may serve again.
    const released = this.#released;
    if (released.length > 0) {
      for (let i = 0; i < released.length; i++) this.#free.push(released[i]!);
      released.length = 0;
    }
  }

  /** Opens the socket pair for Deno's turns, for the loop of `generation`. */
  #openTurn(generation: number): void {
    DenoTurn.open().then((turn) => {
      if (typeof turn === "string") {
        this.#turnRefused = turn;
      } else if (generation !== this.#generation || !this.#running) {
        turn.close(); // that loop has ended
      } else {
        this.#turn = turn;
      }
    });
  }

  async #loop(): Promise<void> {
    const s = this.#libc.sym;
    let rounds = 0;
    let since = Date.now();
    const generation = ++this.#generation;
    if (this.#turn === undefined && this.#turnRefused === undefined) this.#openTurn(generation);
    // Never dispatch from inside add(): its caller has not stored the token yet.
    await null;
    try {
      while (this.#count > 0) {
        const turn = this.#turn;
        if (turn !== undefined && (rounds >= SYNC_ROUNDS || this.#denoReady)) {
          // Deno's event loop runs its due timers and ready I/O, on this thread.
          rounds = 0;
          this.#denoReady = false;
          try {
            await turn.turn();
            this.#turns++;
            this.#ownDenoEvent = true;
          } catch (err) {
            this.#turn = undefined;
            this.#turnRefused = `a turn of Deno's event loop failed: ${(err as Error).message}`;
          }
          since = Date.now();
          continue;
        }
        let n = 0;
        if (rounds < SYNC_ROUNDS) n = s.epoll_wait(this.#ep, this.#events, MAX_EVENTS, 0);
        if (n > 0) {
          // The round's clock (shared/clock) is read once here, with Date.now: a millisecond is
          // fine enough for SYNC_MS, and a wall clock set back only delays this rule, while
          // SYNC_ROUNDS still holds.
          rounds = beginRound() - since > SYNC_MS ? SYNC_ROUNDS : rounds + 1;
          this.#dispatch(this.#eventsView, n);
          this.#ownDenoEvent = false;
          // Let the reads just resolved run (and write) before asking epoll again.
          await null;
          await null;
          endRound();
          continue;
        }
        this.#ownDenoEvent = false;
        if (this.#jsWait && rounds < SYNC_ROUNDS && !this.#denoReady) {
          for (let i = 0; i < SETTLE_TURNS; i++) await null;
          if (this.#count === 0) break;
          n = s.epoll_wait(this.#ep, this.#events, MAX_EVENTS, JS_WAIT_MS);
          if (n > 0) {
            rounds = beginRound() - since > SYNC_MS ? SYNC_ROUNDS : rounds + 1;
            this.#dispatch(this.#eventsView, n);
            await null;
            await null;
            endRound();
            continue;
          }
        }
        rounds = 0;
        this.#denoReady = false;
        this.#waiting = true;
        this.#workerRounds++;
        // Returns at once when something is ready (a round that only yields to Deno's loop).
        n = await s.epoll_wait_blocking(this.#ep, this.#blockingEvents, MAX_EVENTS, IDLE_WAIT_MS);
        this.#waiting = false;
        since = beginRound();
        if (n > 0) this.#dispatch(this.#blockingView, n);
        endRound();
      }
    } finally {
      endRound();
      this.#running = false;
      this.#waiting = false;
      this.#ownDenoEvent = false;
      this.#turn?.close();
      this.#turn = undefined;
    }
  }
}
