/**
 * Many Postgres-wire sessions over one connection: the gateway↔pooler channel.
 *
 * A gateway opens one TCP connection to a pooler, sends a startup request with the code
 * {@linkcode MUX_REQUEST_CODE} (the way SSLRequest is sent) and, once answered with `M`, carries
 * every session it has with that pooler over it as numbered channels. Each channel behaves like a
 * connection of its own ({@linkcode MuxChannel} has the shape of a `Deno.Conn`): it starts with
 * the session's StartupMessage and carries the session's own bytes, so the pooler serves it with
 * the same code (authentication included) as a client socket.
 *
 * What it saves: under load, the messages of many sessions that become ready together go out in
 * one write and come in with one read, so the two processes make a fraction of the system calls
 * and wake each other up far less often than with a socket per session.
 *
 * Framing: a 9-byte header (type, channel id, payload length; big-endian) and the payload.
 *
 * | type | meaning |
 * | --- | --- |
 * | `O` | the opener starts channel `id` (ids are chosen by the opening side, never reused) |
 * | `D` | bytes of channel `id` |
 * | `C` | channel `id` is closed by the sender (no answer is expected) |
 * | `W` | the sender's reader consumed this many more bytes of channel `id` (u32 payload) |
 *
 * Writes are coalesced: frames appended while the JavaScript of one event-loop turn runs go out
 * together, a couple of microtask rounds after the first of them (and behind a write in progress).
 * Per-channel flow control (a window of {@linkcode WINDOW} unconsumed bytes per direction,
 * credited back with `W` frames as the reader consumes them) keeps one slow session from filling
 * the receiver's memory while the connection keeps serving the others.
 *
 * A connection that fails to write (its peer reset it: a pooler that drained and exited while
 * the gateway was still opening channels) writes nothing more, but its reading goes on to the
 * end: the peer's last bytes (the reply to a COMMIT sent just before, its FATAL 57P01) are still
 * in the socket and reach their channels before the failure does.
 *
 * @module
 */

import { SqlState, TesseraError } from "../errors/mod.ts";
import { canWriteSync, MUX_ACCEPTED, MUX_REQUEST_CODE, type SyncWriteConn } from "../wire/mod.ts";

export { MUX_ACCEPTED, MUX_REQUEST_CODE };

const HEADER = 9;
const T_OPEN = 0x4f; // 'O'
const T_DATA = 0x44; // 'D'
const T_CLOSE = 0x43; // 'C'
const T_WINDOW = 0x57; // 'W'
/** Largest payload of one data frame; longer writes are split. */
const MAX_DATA = 64 * 1024;
/** Bytes a channel may send beyond what the peer's reader has consumed. */
export const WINDOW = 256 * 1024;
/** Consumed bytes after which the peer is credited. */
const CREDIT_AT = WINDOW / 4;
/** Bytes waiting to be written above which channels' writes wait. */
const BACKLOG_LIMIT = 1024 * 1024;
const INITIAL_OUT = 16 * 1024;
const READ_SIZE = 64 * 1024;
/**
 * After a failed write, how long the read side may take to reach the connection's end (a peer
 * that reset the connection ends it at once) before the connection is closed anyway.
 */
const WRITE_FAIL_GRACE_MS = 1000;
const RESOLVED_ZERO = Promise.resolve(0);
const RESOLVED_NULL: Promise<number | null> = Promise.resolve(null);

/** Options of {@linkcode Mux}. */
export interface MuxOptions {
  /**
   * Called for each channel the peer opens; when not given, the peer may not open channels (the
   * dialing side).
   */
  onOpen?: (channel: MuxChannel) => void;
}

/** Figures of a set of multiplexed connections. */
export interface MuxStats {
  /** Connections. */
  connections: number;
  /** Channels open on them. */
  channels: number;
  /** Writes made on them. */
  writes: number;
  /** Frames those writes carried. */
  framesOut: number;
  /** Reads made on them. */
  reads: number;
  /** Frames those reads brought. */
  framesIn: number;
}

/** The figures of `muxes`, summed. */
export function muxStats(muxes: Iterable<Mux>): MuxStats {
  const out = { connections: 0, channels: 0, writes: 0, framesOut: 0, reads: 0, framesIn: 0 };
  for (const m of muxes) {
    out.connections++;
    out.channels += m.channels;
    const c = m.counters;
    out.writes += c.writes;
    out.framesOut += c.framesOut;
    out.reads += c.reads;
    out.framesIn += c.framesIn;
  }
  return out;
}

function u32(b: Uint8Array, at: number): number {
  return ((b[at]! << 24) | (b[at + 1]! << 16) | (b[at + 2]! << 8) | b[at + 3]!) >>> 0;
}

/** One multiplexed connection: frames channels' bytes over `conn`. */
export class Mux {
  #conn: Deno.Conn;
  #sync: SyncWriteConn | null;
  #onOpen: ((channel: MuxChannel) => void) | undefined;
  #channels = new Map<number, MuxChannel>();
  #nextId = 1;
  #out: Uint8Array<ArrayBuffer> = new Uint8Array(INITIAL_OUT);
  #outLen = 0;
  #spare: Uint8Array<ArrayBuffer> | null = null;
  #inFlight = 0;
  #scheduled = false;
  #closed = false;
  #ending = false;
  #failure: Error | null = null;
  /**
   * Why writing failed (the peer reset the connection, say): nothing more is written, and what
   * the peer sent before is still read (its last replies); the read loop then ends the connection.
   */
  #writeFailure: Error | null = null;
  #writeFailTimer: ReturnType<typeof setTimeout> | undefined;
  #blocked = new Set<MuxChannel>();
  /** Writes and reads on the connection, and the frames they carried (see {@linkcode counters}). */
  #counts = { writes: 0, framesOut: 0, reads: 0, framesIn: 0 };
  /** Settles when the connection has ended (the read loop stopped and every channel was told). */
  readonly done: Promise<void>;

  /** Frames over `conn`, which has completed the mux request (both sides). */
  constructor(conn: Deno.Conn, options: MuxOptions = {}) {
    this.#conn = conn;
    this.#sync = canWriteSync(conn) ? conn : null;
    this.#onOpen = options.onOpen;
    this.done = this.#readLoop();
  }

  /**
   * Writes and reads made on the connection since it opened, and the frames they carried: frames
   * per write is how much the coalescing saves.
   */
  get counters(): Readonly<{ writes: number; framesOut: number; reads: number; framesIn: number }> {
    return this.#counts;
  }

  /** Channels open now. */
  get channels(): number {
    return this.#channels.size;
  }

  /** Why the connection ended, when it failed (a broken frame, a reset); null otherwise. */
  get failure(): Error | null {
    return this.#failure;
  }

  /**
   * Whether the connection has ended, is ending or can no longer write: no channel can be opened.
   */
  get closed(): boolean {
    return this.#closed || this.#ending || this.#writeFailure !== null;
  }

  /** The underlying connection's local address. */
  get localAddr(): Deno.Addr {
    return this.#conn.localAddr;
  }

  /** The underlying connection's peer address. */
  get remoteAddr(): Deno.Addr {
    return this.#conn.remoteAddr;
  }

  /** Opens a channel (throws when the connection has ended). */
  open(): MuxChannel {
    if (this.closed) {
      throw this.#failure ?? this.#writeFailure ??
        new Deno.errors.ConnectionReset("multiplexed connection is closed");
    }
    let id = this.#nextId;
    this.#nextId = id >= 0xffffffff ? 1 : id + 1;
    while (this.#channels.has(id)) id = this.#nextId++;
    const ch = new MuxChannel(this, id);
    this.#channels.set(id, ch);
    this.#frame(T_OPEN, id, 0);
    return ch;
  }

  /** Closes the connection at once: every channel sees it end. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    clearTimeout(this.#writeFailTimer);
    try {
      this.#conn.close();
    } catch {
      // already closed
    }
  }

  /** Writes what is queued, then closes; channels opened meanwhile are refused. */
  async end(): Promise<void> {
    if (this.#closed || this.#ending) return;
    this.#ending = true;
    this.#flush();
    while (this.#inFlight > 0 || (this.#outLen > 0 && this.#failure === null)) {
      await new Promise<void>((r) => setTimeout(r, 1));
      this.#flush();
    }
    this.close();
  }

  // --- writing ---

  /** Appends a header for `len` payload bytes and returns where the payload goes. */
  #frame(type: number, id: number, len: number): number {
    const need = this.#outLen + HEADER + len;
    if (need > this.#out.length) {
      let size = this.#out.length * 2;
      while (size < need) size *= 2;
      const grown = new Uint8Array(size);
      grown.set(this.#out.subarray(0, this.#outLen));
      this.#out = grown;
    }
    const o = this.#out;
    let at = this.#outLen;
    o[at++] = type;
    o[at++] = id >>> 24;
    o[at++] = (id >>> 16) & 0xff;
    o[at++] = (id >>> 8) & 0xff;
    o[at++] = id & 0xff;
    o[at++] = len >>> 24;
    o[at++] = (len >>> 16) & 0xff;
    o[at++] = (len >>> 8) & 0xff;
    o[at++] = len & 0xff;
    this.#outLen = at + len;
    this.#counts.framesOut++;
    this.#schedule();
    return at;
  }

  /** Whether a channel's write must wait for the queue to drain. */
  get #full(): boolean {
    return this.#outLen + this.#inFlight >= BACKLOG_LIMIT;
  }

  /**
   * Queues up to `len` bytes of `p` for channel `id`; the count queued, 0 when the queue is
   * full.
   */
  sendData(id: number, p: Uint8Array, len: number): number {
    if (this.#closed || this.#failure !== null) {
      throw this.#failure ?? new Deno.errors.ConnectionReset("multiplexed connection is closed");
    }
    // As on a socket that can no longer send: the bytes are dropped, and the reader learns of
    // the end once the peer's last bytes are read.
    if (this.#writeFailure !== null) return len;
    if (this.#full) return 0;
    const total = len;
    let done = 0;
    while (done < total) {
      const n = Math.min(total - done, MAX_DATA);
      const at = this.#frame(T_DATA, id, n);
      this.#out.set(done === 0 && n === p.length ? p : p.subarray(done, done + n), at);
      done += n;
    }
    return total;
  }

  /** Whether nothing more is written: the connection ended, failed or failed to write. */
  get #writeStopped(): boolean {
    return this.#closed || this.#failure !== null || this.#writeFailure !== null;
  }

  /** Queues a close of channel `id`. */
  sendClose(id: number): void {
    if (this.#writeStopped) return;
    this.#frame(T_CLOSE, id, 0);
  }

  /** Credits the peer with `n` bytes of channel `id` consumed. */
  sendCredit(id: number, n: number): void {
    if (this.#writeStopped) return;
    const at = this.#frame(T_WINDOW, id, 4);
    const o = this.#out;
    o[at] = n >>> 24;
    o[at + 1] = (n >>> 16) & 0xff;
    o[at + 2] = (n >>> 8) & 0xff;
    o[at + 3] = n & 0xff;
  }

  /** Waits (for a drain) until `ch` may write again. */
  block(ch: MuxChannel): void {
    this.#blocked.add(ch);
  }

  #schedule(): void {
    if (this.#scheduled || this.#inFlight > 0) return;
    this.#scheduled = true;
    queueMicrotask(this.#round1);
  }

  // Two microtask rounds: the continuations resolved in the same turn write first.
  #round1 = (): void => queueMicrotask(this.#round2);
  #round2 = (): void => {
    this.#scheduled = false;
    this.#flush();
  };

  #flush(): void {
    if (this.#inFlight > 0 || this.#outLen === 0 || this.#writeStopped) return;
    let start = 0;
    this.#counts.writes++;
    if (this.#sync !== null) {
      let n: number;
      try {
        n = this.#sync.tryWrite(this.#out, this.#outLen);
      } catch (err) {
        this.#writeFailed(err);
        return;
      }
      if (n === this.#outLen) {
        this.#outLen = 0;
        this.#drained();
        return;
      }
      start = n;
    }
    const buf = this.#out;
    const len = this.#outLen;
    this.#out = this.#spare ?? new Uint8Array(INITIAL_OUT);
    this.#spare = null;
    this.#outLen = 0;
    this.#inFlight = len - start;
    void this.#writeOut(buf, start, len);
  }

  async #writeOut(buf: Uint8Array<ArrayBuffer>, start: number, len: number): Promise<void> {
    try {
      while (start < len) start += await this.#conn.write(buf.subarray(start, len));
    } catch (err) {
      this.#inFlight = 0;
      this.#writeFailed(err);
      return;
    }
    this.#inFlight = 0;
    if (this.#spare === null && buf.length <= 4 * INITIAL_OUT) this.#spare = buf;
    this.#drained();
    this.#flush();
  }

  #drained(): void {
    if (this.#blocked.size === 0 || this.#full) return;
    const waiting = [...this.#blocked];
    this.#blocked.clear();
    for (const ch of waiting) ch.wake();
  }

  /**
   * A write failed: the connection is broken, but the peer's bytes that arrived before (a
   * COMMIT's reply, its last error) are still in the socket. Nothing more is written; the read
   * loop reads them to the end and then ends the connection (or, should the end not come, a
   * moment later).
   */
  #writeFailed(err: unknown): void {
    if (this.#writeFailure !== null || this.#closed) return;
    this.#writeFailure = err instanceof Error
      ? err
      : new Deno.errors.ConnectionReset(`multiplexed connection failed: ${String(err)}`);
    this.#outLen = 0;
    this.#writeFailTimer = setTimeout(() => {
      this.#failure ??= this.#writeFailure;
      this.close();
    }, WRITE_FAIL_GRACE_MS);
    // Channels waiting for room write (and drop) at once now.
    for (const ch of this.#blocked) ch.wake();
    this.#blocked.clear();
  }

  // --- reading ---

  async #readLoop(): Promise<void> {
    let buf = new Uint8Array(READ_SIZE);
    let head = 0;
    let tail = 0;
    let error: Error | null = null;
    try {
      for (;;) {
        while (tail - head >= HEADER) {
          const len = u32(buf, head + 5);
          if (len > MAX_DATA) {
            throw new TesseraError(
              SqlState.protocolViolation,
              `multiplexed frame too long: ${len} bytes`,
            );
          }
          const end = head + HEADER + len;
          if (end > tail) break;
          this.#counts.framesIn++;
          this.#onFrame(buf[head]!, u32(buf, head + 1), buf, head + HEADER, end);
          head = end;
        }
        if (head === tail) {
          head = tail = 0;
        } else if (buf.length - head < HEADER + MAX_DATA) {
          // Make room for a whole frame after the partial one.
          if (head > 0) {
            buf.copyWithin(0, head, tail);
            tail -= head;
            head = 0;
          }
          if (buf.length < HEADER + MAX_DATA) {
            const grown = new Uint8Array(HEADER + MAX_DATA);
            grown.set(buf.subarray(0, tail));
            buf = grown;
          }
        }
        const n = await this.#conn.read(tail === 0 ? buf : buf.subarray(tail));
        if (n === null) break;
        this.#counts.reads++;
        tail += n;
      }
    } catch (err) {
      if (!this.#closed) {
        error = err instanceof Error ? err : new Error(String(err));
      }
    }
    if (this.#failure === null) this.#failure = this.#writeFailure ?? error;
    this.close();
    const failure = this.#failure;
    const channels = [...this.#channels.values()];
    this.#channels.clear();
    for (const ch of channels) ch.peerGone(failure);
    for (const ch of this.#blocked) ch.wake();
    this.#blocked.clear();
  }

  #onFrame(type: number, id: number, buf: Uint8Array, start: number, end: number): void {
    switch (type) {
      case T_DATA:
        this.#channels.get(id)?.deliver(buf, start, end);
        return;
      case T_OPEN: {
        if (this.#onOpen === undefined || this.#channels.has(id)) {
          throw new TesseraError(SqlState.protocolViolation, `unexpected open of channel ${id}`);
        }
        const ch = new MuxChannel(this, id);
        this.#channels.set(id, ch);
        if (this.#ending) {
          ch.close();
          return;
        }
        this.#onOpen(ch);
        return;
      }
      case T_CLOSE: {
        const ch = this.#channels.get(id);
        if (ch === undefined) return;
        this.#channels.delete(id);
        ch.peerGone(null);
        return;
      }
      case T_WINDOW:
        if (end - start !== 4) {
          throw new TesseraError(SqlState.protocolViolation, "window frame of the wrong length");
        }
        this.#channels.get(id)?.credit(u32(buf, start));
        return;
      default:
        throw new TesseraError(
          SqlState.protocolViolation,
          `unknown multiplexed frame type 0x${type.toString(16)}`,
        );
    }
  }

  /** Forgets channel `id` (it was closed on this side). */
  forget(id: number): void {
    this.#channels.delete(id);
  }
}

/**
 * One session's channel of a {@linkcode Mux}, with the shape of a `Deno.Conn`. Reads return the
 * peer's bytes for this channel; writes queue frames (at once, like a socket with room in its
 * buffer; they wait when the channel's window is used up or the connection's queue is full).
 */
export class MuxChannel implements Deno.Conn, SyncWriteConn {
  #mux: Mux;
  readonly #id: number;
  #chunks: Uint8Array[] = [];
  #chunkHead = 0; // offset into #chunks[0]
  #buffered = 0;
  #consumed = 0;
  #window = WINDOW;
  #peerGone = false;
  #peerError: Error | null = null;
  #closed = false;
  #rBuf: Uint8Array | null = null;
  #rResolve: ((n: number | null) => void) | null = null;
  #rReject: ((err: unknown) => void) | null = null;
  #wWaiters: (() => void)[] = [];

  constructor(mux: Mux, id: number) {
    this.#mux = mux;
    this.#id = id;
  }

  /** The channel's number on its connection. */
  get id(): number {
    return this.#id;
  }

  /** The connection's local address. */
  get localAddr(): Deno.Addr {
    return this.#mux.localAddr;
  }

  /** The connection's peer address. */
  get remoteAddr(): Deno.Addr {
    return this.#mux.remoteAddr;
  }

  // --- called by the Mux ---

  /** Takes bytes the peer sent on this channel. */
  deliver(buf: Uint8Array, start: number, end: number): void {
    if (this.#closed) return;
    const len = end - start;
    if (len === 0) return;
    const p = this.#rBuf;
    if (p !== null) {
      const n = Math.min(len, p.length);
      p.set(n === len ? buf.subarray(start, end) : buf.subarray(start, start + n));
      const resolve = this.#rResolve!;
      this.#rBuf = null;
      this.#rResolve = this.#rReject = null;
      if (n < len) this.#queue(buf.slice(start + n, end));
      this.#consume(n);
      resolve(n);
      return;
    }
    this.#queue(buf.slice(start, end));
  }

  #queue(bytes: Uint8Array): void {
    this.#chunks.push(bytes);
    this.#buffered += bytes.length;
  }

  #consume(n: number): void {
    this.#consumed += n;
    if (this.#consumed >= CREDIT_AT && !this.#peerGone) {
      this.#mux.sendCredit(this.#id, this.#consumed);
      this.#consumed = 0;
    }
  }

  /** The peer closed the channel (`err` null) or the connection ended (`err` its failure). */
  peerGone(err: Error | null): void {
    if (this.#peerGone) return;
    this.#peerGone = true;
    this.#peerError = err;
    if (this.#rResolve !== null) {
      const resolve = this.#rResolve;
      const reject = this.#rReject!;
      this.#rBuf = null;
      this.#rResolve = this.#rReject = null;
      if (err !== null) reject(err);
      else resolve(null);
    }
    this.wake();
  }

  /** The peer's reader consumed `n` more bytes: that much more may be sent. */
  credit(n: number): void {
    this.#window += n;
    this.wake();
  }

  /** Lets waiting writes try again. */
  wake(): void {
    const waiters = this.#wWaiters;
    if (waiters.length === 0) return;
    this.#wWaiters = [];
    for (const w of waiters) w();
  }

  // --- the Deno.Conn shape ---

  /** Reads this channel's next bytes into `p`; `null` once the peer closed it. */
  read(p: Uint8Array): Promise<number | null> {
    if (this.#closed) return Promise.reject(new Deno.errors.BadResource("channel is closed"));
    if (this.#rResolve !== null) {
      return Promise.reject(new Deno.errors.Busy("a read is already pending on this channel"));
    }
    if (this.#buffered > 0) {
      if (p.length === 0) return RESOLVED_ZERO;
      let n = 0;
      while (n < p.length && this.#chunks.length > 0) {
        const c = this.#chunks[0]!;
        const take = Math.min(c.length - this.#chunkHead, p.length - n);
        p.set(c.subarray(this.#chunkHead, this.#chunkHead + take), n);
        n += take;
        this.#chunkHead += take;
        if (this.#chunkHead === c.length) {
          this.#chunks.shift();
          this.#chunkHead = 0;
        }
      }
      this.#buffered -= n;
      this.#consume(n);
      return Promise.resolve(n);
    }
    if (this.#peerGone) {
      return this.#peerError !== null ? Promise.reject(this.#peerError) : RESOLVED_NULL;
    }
    return new Promise<number | null>((resolve, reject) => {
      this.#rBuf = p;
      this.#rResolve = resolve;
      this.#rReject = reject;
    });
  }

  /** Queues a prefix of `p`'s first `len` bytes now; the count, 0 when it must wait. */
  tryWrite(p: Uint8Array, len: number = p.length): number {
    if (this.#closed) throw new Deno.errors.BadResource("channel is closed");
    // As on a socket whose peer has gone, bytes written now are dropped: the reader learns of
    // the end (after the peer's last bytes, which may not have been read yet).
    if (this.#peerGone) return len;
    if (len === 0 || this.#window === 0) return 0;
    const n = this.#mux.sendData(this.#id, p, Math.min(len, this.#window));
    if (n === 0) this.#mux.block(this);
    this.#window -= n;
    return n;
  }

  /** Queues a prefix of `p`, waiting while the channel's window is used up or the queue full. */
  async write(p: Uint8Array): Promise<number> {
    for (;;) {
      const n = this.tryWrite(p);
      if (n > 0 || p.length === 0) return n;
      await new Promise<void>((resolve) => {
        this.#wWaiters.push(resolve);
        if (this.#window > 0) this.#mux.block(this);
      });
    }
  }

  /** Closes the channel (the peer's reads end); a pending read rejects. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#chunks = [];
    this.#buffered = 0;
    if (!this.#peerGone) {
      this.#mux.forget(this.#id);
      this.#mux.sendClose(this.#id);
    }
    if (this.#rReject !== null) {
      const reject = this.#rReject;
      this.#rBuf = null;
      this.#rResolve = this.#rReject = null;
      reject(new Deno.errors.BadResource("channel is closed"));
    }
    this.wake();
  }

  /** Closes the channel (a channel has no half-close). */
  closeWrite(): Promise<void> {
    this.close();
    return Promise.resolve();
  }

  /** Nothing to set on a channel (the connection has TCP_NODELAY). */
  setNoDelay(_noDelay = true): void {}

  /** Nothing to set on a channel. */
  setKeepAlive(_keepAlive = true): void {}

  /** Nothing to do: a channel does not hold the event loop. */
  ref(): void {}

  /** Nothing to do: a channel does not hold the event loop. */
  unref(): void {}

  /** Streams are not offered on channels (nothing in Tessera reads them that way). */
  get readable(): ReadableStream<Uint8Array<ArrayBuffer>> {
    throw new Deno.errors.NotSupported("a multiplexed channel has no readable stream");
  }

  /** Streams are not offered on channels. */
  get writable(): WritableStream<Uint8Array<ArrayBufferLike>> {
    throw new Deno.errors.NotSupported("a multiplexed channel has no writable stream");
  }

  /** Closes the channel. */
  [Symbol.dispose](): void {
    this.close();
  }
}
