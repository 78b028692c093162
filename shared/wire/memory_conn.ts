/**
 * An in-memory connection for codec tests: it hands out prepared input in chosen chunk sizes
 * (to exercise partial reads) and records what is written to it.
 *
 * @module
 */

import type { WireConn } from "./conn.ts";

/** Options of {@linkcode MemoryConn}. */
export interface MemoryConnOptions {
  /**
   * Largest byte count each `read` returns, cycling through the list (a number: always that
   * many). Unlimited when not given: each read returns as much as fits.
   */
  chunkSizes?: number | readonly number[];
  /** Largest byte count each `write` accepts, to exercise partial writes. Unlimited by default. */
  maxWrite?: number;
}

function concat(parts: readonly Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.byteLength, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.byteLength;
  }
  return out;
}

/**
 * A {@linkcode WireConn} backed by memory: reads return `input` in chunks, then `null`.
 *
 * @example
 * ```ts
 * const conn = new MemoryConn(bytes, { chunkSizes: [1, 3, 7] });
 * const reader = new MessageReader(conn);
 * ```
 */
export class MemoryConn implements WireConn {
  #input: Uint8Array;
  #pos = 0;
  #chunks: readonly number[];
  #chunkIndex = 0;
  #maxWrite: number;
  #written: Uint8Array[] = [];
  #closed = false;
  /** Number of `read` calls so far. */
  reads = 0;
  /** Number of `write` calls so far. */
  writes = 0;

  /** Serves `input` (one buffer, or several concatenated). */
  constructor(input: Uint8Array | readonly Uint8Array[], options: MemoryConnOptions = {}) {
    this.#input = input instanceof Uint8Array ? input : concat(input);
    const c = options.chunkSizes;
    this.#chunks = c === undefined ? [Infinity] : typeof c === "number" ? [c] : c;
    this.#maxWrite = options.maxWrite ?? Infinity;
  }

  /** Bytes of input not read yet. */
  get unread(): number {
    return this.#input.byteLength - this.#pos;
  }

  /** Everything written so far, concatenated. */
  get written(): Uint8Array {
    return concat(this.#written);
  }

  /** Whether {@linkcode close} was called. */
  get closed(): boolean {
    return this.#closed;
  }

  /** Copies the next chunk of input into `p`; `null` once the input is used up. */
  read(p: Uint8Array): Promise<number | null> {
    this.reads++;
    if (this.#closed) return Promise.reject(new Deno.errors.BadResource("connection is closed"));
    if (this.#pos >= this.#input.byteLength) return Promise.resolve(null);
    const limit = this.#chunks[this.#chunkIndex++ % this.#chunks.length]!;
    const n = Math.min(p.byteLength, limit, this.#input.byteLength - this.#pos);
    p.set(this.#input.subarray(this.#pos, this.#pos + n));
    this.#pos += n;
    return Promise.resolve(n);
  }

  /** Records up to `maxWrite` bytes of `p`. */
  write(p: Uint8Array): Promise<number> {
    this.writes++;
    if (this.#closed) return Promise.reject(new Deno.errors.BadResource("connection is closed"));
    const n = Math.min(p.byteLength, this.#maxWrite);
    this.#written.push(p.slice(0, n));
    return Promise.resolve(n);
  }

  /** Marks the connection closed: further reads and writes fail. */
  close(): void {
    this.#closed = true;
  }
}
