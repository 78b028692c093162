/**
 * A serialized, coalescing writer for one connection: messages are appended synchronously by
 * whoever produces them (the client loop, the backend loop) and go out together in as few
 * writes as possible, one write at a time, in order. A write costs one promise beyond the write
 * op's own.
 *
 * @module
 */

import { canWriteSync, MessageWriter, type SyncWriteConn, type WireConn } from "../../wire/mod.ts";
import { FreeList } from "./free_list.ts";

const RESOLVED: Promise<void> = Promise.resolve();

/**
 * Message writers with buffers of one size, shared by the outboxes of many connections: an
 * outbox whose bytes were all written at once gives its writer back, so an idle connection
 * holds none. A writer whose buffer grew (a large result) is not kept.
 */
export class WriterPool extends FreeList<MessageWriter> {
  protected make(): MessageWriter {
    return new MessageWriter(this.size);
  }

  protected sizeOf(w: MessageWriter): number {
    return w.backing.length;
  }
}

/**
 * Buffers outgoing bytes for `conn`. {@linkcode flush} never rejects: a write failure is
 * reported once through `onError`, and later appends are dropped.
 */
export class Outbox {
  #conn: WireConn;
  #sync: SyncWriteConn | null;
  #pending: MessageWriter | null = null;
  #spare: MessageWriter | null = null;
  #inFlight: MessageWriter | null = null;
  #writing: Promise<void> | null = null;
  #failed = false;
  #onError: (err: unknown) => void;
  #initial: number;
  #keep: number;
  #writers: WriterPool | null;

  /**
   * Writes to `conn`; `onError` hears of the first failed write. Buffers start at
   * `initialSize` bytes; one that grew beyond `keepSize` (for a large result) is dropped after
   * its write, so an idle connection holds little. With `writers` (whose size must be
   * `initialSize`), a connection written without waiting (the fast path) holds no writer
   * between writes: a writer taken from {@linkcode w} is valid until the next flush.
   */
  constructor(
    conn: WireConn,
    onError: (err: unknown) => void,
    initialSize = 256,
    keepSize = 8192,
    writers?: WriterPool,
  ) {
    this.#conn = conn;
    this.#sync = canWriteSync(conn) ? conn : null;
    this.#onError = onError;
    this.#initial = initialSize;
    this.#keep = keepSize;
    if (writers !== undefined && writers.size !== initialSize) {
      throw new RangeError(`the pool's writers are ${writers.size} bytes, not ${initialSize}`);
    }
    this.#writers = this.#sync !== null && writers !== undefined ? writers : null;
  }

  /** The writer to append messages to; they go out at the next {@linkcode flush}. */
  get w(): MessageWriter {
    let p = this.#pending;
    if (p === null) {
      p = this.#pending = this.#spare ?? this.#writers?.take() ?? new MessageWriter(this.#initial);
      this.#spare = null;
    }
    return p;
  }

  /** Whether the outbox holds a writer now. */
  get holdsWriter(): boolean {
    return this.#pending !== null || this.#spare !== null || this.#inFlight !== null;
  }

  /** Appends bytes as they are (a forwarded message). */
  append(bytes: Uint8Array): void {
    this.w.bytes(bytes);
  }

  /** Whether nothing waits to be written and no write is in progress. */
  get idle(): boolean {
    return this.#writing === null && (this.#pending === null || this.#pending.length === 0);
  }

  /** Bytes appended and not yet handed to a write. */
  get backlog(): number {
    return this.#pending === null ? 0 : this.#pending.length;
  }

  /**
   * Starts writing what was appended and returns a promise only when the caller should wait
   * before producing more: when a write is still in flight with `limit` bytes or more queued
   * behind it. `undefined` otherwise (the common case: no await, no backpressure needed).
   */
  push(limit = 65536): Promise<void> | undefined {
    const p = this.flush();
    return p !== RESOLVED && this.backlog >= limit ? p : undefined;
  }

  /** Whether a write has failed (or {@linkcode close} was called). */
  get failed(): boolean {
    return this.#failed;
  }

  /** Drops everything not yet written. */
  discard(): void {
    this.#pending?.reset();
  }

  /** Stops writing: what is pending and what comes later is dropped. */
  close(): void {
    this.#failed = true;
    this.#pending?.reset();
  }

  /** Writes what was appended; resolves once it (and anything appended meanwhile) is written. */
  flush(): Promise<void> {
    if (this.#writing !== null) return this.#writing;
    const w = this.#pending;
    if (w === null) return RESOLVED;
    if (w.length === 0) {
      this.#giveBack(w);
      return RESOLVED;
    }
    if (this.#failed) {
      w.reset();
      return RESOLVED;
    }
    let bytes: Uint8Array;
    if (this.#sync !== null) {
      // Written at once in the common case: no promise at all (and no view of the buffer).
      const len = w.length;
      let n: number;
      try {
        n = this.#sync.tryWrite(w.backing, len);
      } catch (err) {
        this.#writeFailed(err);
        return RESOLVED;
      }
      if (n === len) {
        w.reset();
        this.#giveBack(w);
        return RESOLVED;
      }
      bytes = w.view().subarray(n);
    } else {
      bytes = w.view();
    }
    this.#pending = this.#spare;
    this.#spare = null;
    this.#inFlight = w;
    this.#writing = bytes.length === w.length
      ? this.#conn.write(bytes).then(this.#wrote, this.#writeFailed)
      : this.#writeRest(w, w.length - bytes.length);
    return this.#writing;
  }

  /** With shared writers: the pending writer `w`, empty now, goes back to the pool. */
  #giveBack(w: MessageWriter): void {
    if (this.#writers === null) return;
    this.#pending = null;
    this.#writers.give(w);
  }

  #wrote = (n: number): Promise<void> | undefined => {
    const w = this.#inFlight!;
    if (n < w.length) return this.#writeRest(w, n);
    this.#recycle(w);
    this.#writing = null;
    if (this.#pending !== null && this.#pending.length > 0) return this.flush();
    return undefined;
  };

  async #writeRest(w: MessageWriter, done: number): Promise<void> {
    try {
      const bytes = w.view();
      while (done < bytes.length) done += await this.#conn.write(bytes.subarray(done));
    } catch (err) {
      this.#writeFailed(err);
      return;
    }
    this.#recycle(w);
    this.#writing = null;
    if (this.#pending !== null && this.#pending.length > 0) await this.flush();
  }

  #recycle(w: MessageWriter): void {
    w.reset();
    this.#inFlight = null;
    // Keep a small buffer for the next round; drop one grown by a large result.
    if (this.#writers !== null) this.#writers.give(w);
    else if (this.#spare === null && w.view().buffer.byteLength <= this.#keep) this.#spare = w;
  }

  #writeFailed = (err: unknown): void => {
    this.#inFlight = null;
    this.#pending?.reset();
    this.#writing = null;
    if (!this.#failed) {
      this.#failed = true;
      this.#onError(err);
    }
  };
}
