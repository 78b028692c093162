/**
 * Framing reader for the typed messages of the Postgres wire protocol (everything after the
 * startup packet), built on a manual `conn.read(buffer)` loop over one reused buffer.
 *
 * @module
 */

import { SqlState, TesseraError } from "../errors/mod.ts";
import { type ByteSource, connectionError } from "./conn.ts";
import { MAX_MESSAGE_LENGTH } from "./messages.ts";

/** Options of {@linkcode MessageReader}. */
export interface MessageReaderOptions {
  /**
   * Size of the read buffer while messages are small, in bytes; 8192 when not given. An idle
   * connection waits on a buffer of this size.
   */
  initialBufferSize?: number;
  /**
   * Largest accepted message length (the Int32 length field, which counts itself but not the
   * type byte); Postgres's own client limit, 1 GiB - 2, when not given.
   */
  maxMessageLength?: number;
}

/**
 * One framed message. `payload` and `raw` are views into the reader's buffer: they stay valid
 * until the next {@linkcode MessageReader.next} call; copy (`slice()`) what must live longer.
 */
export class WireMessage {
  /** The buffer the message lies in. */
  readonly buffer: Uint8Array;
  /** Offset of the type byte in `buffer`. */
  readonly offset: number;
  /** Message type byte (see `Frontend` and `Backend`). */
  readonly type: number;
  /** The message's length field: payload length + 4. */
  readonly length: number;

  /** Describes the message at `offset` in `buffer`. */
  constructor(buffer: Uint8Array, offset: number, type: number, length: number) {
    this.buffer = buffer;
    this.offset = offset;
    this.type = type;
    this.length = length;
  }

  /** The payload: the bytes after the length field. */
  get payload(): Uint8Array {
    return this.buffer.subarray(this.offset + 5, this.offset + 1 + this.length);
  }

  /** The whole message as sent: type byte, length and payload (for forwarding). */
  get raw(): Uint8Array {
    return this.buffer.subarray(this.offset, this.offset + 1 + this.length);
  }

  /** Offset in `buffer` just past this message. */
  get end(): number {
    return this.offset + 1 + this.length;
  }

  /** The type byte as a one-character string, e.g. `Z`. */
  get typeChar(): string {
    return String.fromCharCode(this.type);
  }
}

function checkSize(value: number, what: string): void {
  if (!Number.isInteger(value) || value < 16 || value > 0x7fffffff) {
    throw new RangeError(`'${what}' must be an integer of at least 16: received ${value}`);
  }
}

/**
 * Reads typed messages from a connection, handling reads that return part of a message or
 * many messages at once.
 *
 * The buffer starts at `initialBufferSize`, grows (doubling, never beyond the message being
 * read) only for a larger message, and goes back to the small size once the reader has caught
 * up after small messages. A length field below 4 or above `maxMessageLength` throws a
 * TesseraError 08P01 before anything is allocated for it.
 *
 * @example
 * ```ts
 * const reader = new MessageReader(conn);
 * for (let msg = await reader.next(); msg !== null; msg = await reader.next()) {
 *   if (msg.type === Backend.readyForQuery) break;
 * }
 * ```
 */
export class MessageReader {
  #source: ByteSource;
  #buf: Uint8Array;
  #start = 0;
  #end = 0;
  #initialSize: number;
  #maxLength: number;
  #lastTotal = 0;
  #eof = false;

  /** Reads from `source` (a `Deno.Conn` or anything with the same `read`). */
  constructor(source: ByteSource, options: MessageReaderOptions = {}) {
    this.#initialSize = options.initialBufferSize ?? 8192;
    this.#maxLength = options.maxMessageLength ?? MAX_MESSAGE_LENGTH;
    checkSize(this.#initialSize, "initialBufferSize");
    if (!Number.isInteger(this.#maxLength) || this.#maxLength < 4) {
      throw new RangeError(
        `'maxMessageLength' must be an integer of at least 4: received ${this.#maxLength}`,
      );
    }
    this.#source = source;
    this.#buf = new Uint8Array(this.#initialSize);
  }

  /** Number of bytes read from the connection but not yet returned as messages. */
  get buffered(): number {
    return this.#end - this.#start;
  }

  /** Current capacity of the read buffer in bytes. */
  get bufferSize(): number {
    return this.#buf.byteLength;
  }

  /**
   * Returns the next message if it is already complete in the buffer, without reading; `null`
   * otherwise. Messages returned this way stay valid until the next {@linkcode next} call, so
   * a caller can gather every buffered message and answer them with one write.
   */
  tryNext(): WireMessage | null {
    const start = this.#start;
    const avail = this.#end - start;
    if (avail < 5) return null;
    const buf = this.#buf;
    const length = (buf[start + 1]! << 24) | (buf[start + 2]! << 16) | (buf[start + 3]! << 8) |
      buf[start + 4]!;
    if (length < 4 || length > this.#maxLength) this.#badLength(buf[start]!, length);
    if (avail < length + 1) return null;
    this.#start = start + length + 1;
    this.#lastTotal = length + 1;
    return new WireMessage(buf, start, buf[start]!, length);
  }

  /**
   * Resolves to the next message, reading from the connection as needed; `null` when the
   * connection ends cleanly between messages. An end inside a message throws TesseraError
   * 08P01; a failed read throws TesseraError 08006.
   */
  async next(): Promise<WireMessage | null> {
    for (;;) {
      const msg = this.tryNext();
      if (msg !== null) return msg;
      if (this.#eof || !(await this.#fill())) {
        this.#eof = true;
        if (this.#end === this.#start) return null;
        throw new TesseraError(
          SqlState.protocolViolation,
          `connection closed part way through a message: ${
            this.#end - this.#start
          } bytes of it were received`,
        );
      }
    }
  }

  /** Iterates over messages until the connection ends. */
  async *[Symbol.asyncIterator](): AsyncIterator<WireMessage> {
    for (let msg = await this.next(); msg !== null; msg = await this.next()) yield msg;
  }

  #badLength(type: number, length: number): never {
    const name = type >= 0x20 && type < 0x7f
      ? `'${String.fromCharCode(type)}'`
      : `0x${type.toString(16)}`;
    if (length < 4) {
      throw new TesseraError(
        SqlState.protocolViolation,
        `invalid message length: ${length} (message type ${name})`,
      );
    }
    throw new TesseraError(
      SqlState.protocolViolation,
      `message too long: ${length} bytes (message type ${name}), the limit is ${this.#maxLength}`,
    );
  }

  /** Makes room for the message at #start (or its header) and reads once; false at EOF. */
  async #fill(): Promise<boolean> {
    let buf = this.#buf;
    const avail = this.#end - this.#start;
    // Bytes the pending message needs in total: its header, or all of it once the header is in
    // (tryNext has already validated that length).
    let need = 5;
    if (avail >= 5) {
      const s = this.#start;
      need = ((buf[s + 1]! << 24) | (buf[s + 2]! << 16) | (buf[s + 3]! << 8) | buf[s + 4]!) + 1;
    }
    if (avail === 0) {
      this.#start = this.#end = 0;
      // Caught up after a small message: wait for the next read on a small buffer again.
      if (buf.byteLength > this.#initialSize && this.#lastTotal <= this.#initialSize) {
        buf = this.#buf = new Uint8Array(this.#initialSize);
      }
    } else if (need > buf.byteLength) {
      // Grow by doubling, so memory follows the bytes actually received, not the claimed length.
      const next = new Uint8Array(Math.min(need, buf.byteLength * 2));
      next.set(buf.subarray(this.#start, this.#end));
      buf = this.#buf = next;
      this.#start = 0;
      this.#end = avail;
    } else if (this.#start + need > buf.byteLength) {
      buf.copyWithin(0, this.#start, this.#end);
      this.#start = 0;
      this.#end = avail;
    }
    let n: number | null;
    try {
      n = await this.#source.read(buf.subarray(this.#end));
    } catch (err) {
      throw connectionError(err, "connection read");
    }
    if (n === null) return false;
    this.#end += n;
    return true;
  }
}
