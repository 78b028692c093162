/**
 * The pooler's hot-path framing reader: like `MessageReader` from `shared/wire`, but built so a
 * read costs exactly one promise (the read op's own) and a message costs no allocation: the
 * reader itself describes the current message (`type`, `start`, `end`), and its views are made
 * only when asked for.
 *
 * @module
 */

import { SqlState, TesseraError } from "../../errors/mod.ts";
import { canReadSync, MAX_MESSAGE_LENGTH, type SyncReadConn } from "../../wire/mod.ts";
import { FreeList } from "./free_list.ts";

/** Something to read bytes from, like `Deno.Conn`. */
export interface ReadSource {
  /** Reads into `p`; resolves to the count, or `null` at end of stream. */
  read(p: Uint8Array): Promise<number | null>;
}

/** The buffer of a reader that holds none (see {@linkcode BufferPool}). */
const NONE = new Uint8Array(0);

/**
 * Read buffers of one size, shared by the readers of many connections: a reader on the fast
 * path gives its buffer back whenever it has read everything and waits for more, so an idle
 * connection holds no buffer (PgBouncer's per-client memory is a few hundred bytes; a buffer per
 * client would be most of ours). Only a reader with bytes buffered (a message part way in, or
 * messages waiting for a backend) holds one.
 */
export class BufferPool extends FreeList<Uint8Array> {
  protected make(): Uint8Array {
    return new Uint8Array(this.size);
  }

  protected sizeOf(b: Uint8Array): number {
    return b.length;
  }
}

/**
 * A message-at-a-time view of a connection's bytes.
 *
 * @example
 * ```ts
 * const r = new FrameReader(conn, 1024);
 * for (;;) {
 *   while (r.next()) handle(r.type, r.payload);
 *   if (!r.advance(await r.read())) break;
 * }
 * ```
 */
export class FrameReader {
  /** Type byte of the current message. */
  type = 0;
  /** Offset of the current message's type byte in {@linkcode buf}. */
  start = 0;
  /** Offset just past the current message in {@linkcode buf}. */
  end = 0;
  /** The buffer the current message lies in. */
  buf: Uint8Array;

  #source: ReadSource;
  #sync: Pick<SyncReadConn, "tryRead" | "onReadable"> | null;
  #head = 0; // first unread byte
  #tail = 0; // end of the bytes read
  #initial: number;
  #max: number;
  #lastSize = 0;
  #pool: BufferPool | null;

  /**
   * Reads from `source`, waiting on a buffer of `initialSize` bytes while messages are small.
   * With `pool` (whose size must be `initialSize`), a reader on the fast path takes that buffer
   * from the pool when bytes come and gives it back once it has read everything and waits for
   * more: then its views of earlier messages are no longer valid (as after any read).
   */
  constructor(
    source: ReadSource,
    initialSize: number,
    maxMessageLength = MAX_MESSAGE_LENGTH,
    pool?: BufferPool,
  ) {
    this.#source = source;
    this.#sync = canReadSync(source as SyncReadConn) ? source as SyncReadConn : null;
    this.#initial = initialSize;
    this.#max = maxMessageLength;
    if (pool !== undefined && pool.size !== initialSize) {
      throw new RangeError(`the pool's buffers are ${pool.size} bytes, not ${initialSize}`);
    }
    this.#pool = this.#sync !== null && pool !== undefined ? pool : null;
    this.buf = this.#pool !== null ? NONE : new Uint8Array(initialSize);
  }

  /** Whether the reader holds a buffer now (always, unless it shares a pool's). */
  get holdsBuffer(): boolean {
    return this.buf !== NONE;
  }

  /** Payload of the current message (a view, valid until the next {@linkcode read}). */
  get payload(): Uint8Array {
    return this.buf.subarray(this.start + 5, this.end);
  }

  /** The whole current message (a view, valid until the next {@linkcode read}). */
  get raw(): Uint8Array {
    return this.buf.subarray(this.start, this.end);
  }

  /** The current message's type as a character, for logs. */
  get typeChar(): string {
    return String.fromCharCode(this.type);
  }

  /** Bytes read but not yet returned as messages. */
  get buffered(): number {
    return this.#tail - this.#head;
  }

  /**
   * Moves to the next complete message in the buffer; false when there is none (call
   * {@linkcode read}). Throws TesseraError 08P01 for an invalid length.
   */
  next(): boolean {
    const h = this.#head;
    const avail = this.#tail - h;
    if (avail < 5) return false;
    const b = this.buf;
    const len = (b[h + 1]! << 24) | (b[h + 2]! << 16) | (b[h + 3]! << 8) | b[h + 4]!;
    if (len < 4 || len > this.#max) this.#badLength(b[h]!, len);
    if (avail < len + 1) return false;
    this.type = b[h]!;
    this.start = h;
    this.end = this.#head = h + len + 1;
    this.#lastSize = len + 1;
    return true;
  }

  #badLength(type: number, len: number): never {
    const name = type >= 0x21 && type < 0x7f
      ? `'${String.fromCharCode(type)}'`
      : `0x${type.toString(16).padStart(2, "0")}`;
    throw new TesseraError(
      SqlState.protocolViolation,
      len < 4
        ? `invalid message length: ${len} (message type ${name})`
        : `message too long: ${len} bytes (message type ${name}), the limit is ${this.#max}`,
      { severity: "FATAL" },
    );
  }

  /**
   * Starts reading more bytes (after the current messages were handled: their views become
   * invalid) and returns the read's own promise; give its result to {@linkcode advance}. The
   * promise rejects with the connection's own error when the read fails.
   */
  read(): Promise<number | null> {
    return this.#source.read(this.#room());
  }

  /**
   * Whether the source can be read without waiting ({@linkcode readNow} and
   * {@linkcode whenReadable} work): the fast network path's sockets.
   */
  get canReadNow(): boolean {
    return this.#sync !== null;
  }

  /**
   * Like {@linkcode read}, without waiting (only when {@linkcode canReadNow}): the count for
   * {@linkcode advance}, or `undefined` when nothing is there yet (call {@linkcode whenReadable}).
   * Throws the connection's own error.
   */
  readNow(): number | null | undefined {
    const n = this.#sync!.tryRead(this.#room());
    if (n === undefined && this.#pool !== null && this.#head === this.#tail) {
      // Nothing buffered and nothing came: the buffer goes back until bytes do.
      const b = this.buf;
      this.buf = NONE;
      this.#head = this.#tail = 0;
      this.#pool.give(b);
    }
    return n;
  }

  /** Calls `fn` once when {@linkcode readNow} may have something (only when {@linkcode canReadNow}). */
  whenReadable(fn: () => void): void {
    this.#sync!.onReadable(fn);
  }

  /** Makes room for the next read and returns where the bytes go. */
  #room(): Uint8Array {
    let b = this.buf;
    const avail = this.#tail - this.#head;
    if (avail === 0) {
      this.#head = this.#tail = 0;
      if (b === NONE) {
        b = this.buf = this.#pool!.take();
      } else if (b.length > this.#initial && this.#lastSize <= this.#initial) {
        // Caught up after small messages: wait on a small buffer again.
        b = this.buf = this.#pool?.take() ?? new Uint8Array(this.#initial);
      }
    } else {
      let need = 5;
      if (avail >= 5) {
        const h = this.#head;
        need = ((b[h + 1]! << 24) | (b[h + 2]! << 16) | (b[h + 3]! << 8) | b[h + 4]!) + 1;
      }
      if (need > b.length) {
        // Grow by doubling: memory follows the bytes received, not the length claimed.
        const grown = new Uint8Array(Math.min(need, b.length * 2));
        grown.set(b.subarray(this.#head, this.#tail));
        this.#pool?.give(b); // a buffer of the pool's size goes back
        b = this.buf = grown;
        this.#tail = avail;
        this.#head = 0;
      } else if (this.#head + need > b.length) {
        b.copyWithin(0, this.#head, this.#tail);
        this.#tail = avail;
        this.#head = 0;
      }
    }
    // Reading into the whole buffer (the usual case) needs no view.
    return this.#tail === 0 ? b : b.subarray(this.#tail);
  }

  /**
   * Takes the result of {@linkcode read}: false at the end of the stream. Throws TesseraError
   * 08P01 when the stream ended inside a message.
   */
  advance(n: number | null): boolean {
    if (n === null) {
      if (this.#tail !== this.#head) {
        throw new TesseraError(
          SqlState.protocolViolation,
          `connection closed part way through a message: ${
            this.#tail - this.#head
          } bytes of it were received`,
        );
      }
      return false;
    }
    this.#tail += n;
    return true;
  }
}
