/**
 * A bounds-checked cursor over one message payload: every read past the end throws a
 * TesseraError 08P01 (protocol violation) naming the message.
 *
 * @module
 */

import { SqlState, TesseraError } from "../errors/mod.ts";

const decoder = new TextDecoder();

/**
 * Reads Int16, Int32, C strings and byte runs from a payload, in order.
 *
 * @example
 * ```ts
 * const r = new PayloadReader(msg.payload, "ParameterStatus");
 * const name = r.cstring();
 * const value = r.cstring();
 * r.expectEnd();
 * ```
 */
export class PayloadReader {
  #bytes: Uint8Array;
  #view: DataView;
  #pos = 0;
  #what: string;

  /** Reads `bytes`; `what` names the message in error messages (e.g. `RowDescription`). */
  constructor(bytes: Uint8Array, what: string) {
    this.#bytes = bytes;
    this.#view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    this.#what = what;
  }

  /** Current offset in the payload. */
  get offset(): number {
    return this.#pos;
  }

  /** Bytes left to read. */
  get remaining(): number {
    return this.#bytes.byteLength - this.#pos;
  }

  /** A TesseraError 08P01 about this message, for checks done by the caller. */
  error(problem: string): TesseraError {
    return new TesseraError(
      SqlState.protocolViolation,
      `invalid ${this.#what} message: ${problem}`,
    );
  }

  #need(n: number, what: string): void {
    if (this.#bytes.byteLength - this.#pos < n) {
      throw this.error(
        `expected ${what} at offset ${this.#pos}, but only ${this.remaining} bytes are left`,
      );
    }
  }

  /** Reads one unsigned byte. */
  byte(): number {
    this.#need(1, "1 byte");
    return this.#bytes[this.#pos++]!;
  }

  /** Reads a big-endian signed Int16. */
  int16(): number {
    this.#need(2, "an Int16");
    const v = this.#view.getInt16(this.#pos);
    this.#pos += 2;
    return v;
  }

  /** Reads a big-endian unsigned 16-bit count (field and parameter counts are unsigned). */
  uint16(): number {
    this.#need(2, "an Int16");
    const v = this.#view.getUint16(this.#pos);
    this.#pos += 2;
    return v;
  }

  /** Reads a big-endian signed Int32. */
  int32(): number {
    this.#need(4, "an Int32");
    const v = this.#view.getInt32(this.#pos);
    this.#pos += 4;
    return v;
  }

  /** Reads a big-endian unsigned 32-bit value (OIDs are unsigned). */
  uint32(): number {
    this.#need(4, "an Int32");
    const v = this.#view.getUint32(this.#pos);
    this.#pos += 4;
    return v;
  }

  /** Reads `n` bytes as a view into the payload (no copy). */
  bytes(n: number): Uint8Array {
    if (n < 0) throw this.error(`negative length ${n} at offset ${this.#pos}`);
    this.#need(n, `${n} bytes`);
    const out = this.#bytes.subarray(this.#pos, this.#pos + n);
    this.#pos += n;
    return out;
  }

  /** Reads an Int32 length then that many bytes; -1 means NULL and gives `null`. */
  lengthPrefixed(): Uint8Array | null {
    const n = this.int32();
    if (n === -1) return null;
    if (n < -1) throw this.error(`invalid value length ${n} at offset ${this.#pos - 4}`);
    return this.bytes(n);
  }

  /** Reads the rest of the payload as a view. */
  rest(): Uint8Array {
    const out = this.#bytes.subarray(this.#pos);
    this.#pos = this.#bytes.byteLength;
    return out;
  }

  /** Reads a zero-terminated UTF-8 string. */
  cstring(): string {
    const end = this.#bytes.indexOf(0, this.#pos);
    if (end === -1) {
      throw this.error(`string at offset ${this.#pos} is not terminated by a zero byte`);
    }
    const s = decoder.decode(this.#bytes.subarray(this.#pos, end));
    this.#pos = end + 1;
    return s;
  }

  /** Skips a zero-terminated string and returns its end offset (the zero byte). */
  skipCstring(): number {
    const end = this.#bytes.indexOf(0, this.#pos);
    if (end === -1) {
      throw this.error(`string at offset ${this.#pos} is not terminated by a zero byte`);
    }
    this.#pos = end + 1;
    return end;
  }

  /** Throws 08P01 when bytes are left over after the last field. */
  expectEnd(): void {
    if (this.remaining !== 0) {
      throw this.error(`${this.remaining} unexpected bytes after the last field`);
    }
  }
}
