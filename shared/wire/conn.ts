/**
 * The minimal connection shapes the codec reads from and writes to, satisfied by `Deno.Conn`
 * (TCP, Unix and TLS) and by in-memory fakes in tests.
 *
 * @module
 */

import { SqlState, TesseraError } from "../errors/mod.ts";

/** Something to read bytes from, like `Deno.Conn`: `null` at end of stream. */
export interface ByteSource {
  /** Reads up to `p.byteLength` bytes into `p`; resolves to the count, or `null` at EOF. */
  read(p: Uint8Array): Promise<number | null>;
}

/** Something to write bytes to, like `Deno.Conn`: may write fewer bytes than given. */
export interface ByteSink {
  /** Writes some prefix of `p`; resolves to the number of bytes written. */
  write(p: Uint8Array): Promise<number>;
}

/** A two-way byte stream that can be closed, like `Deno.Conn`. */
export interface WireConn extends ByteSource, ByteSink {
  /** Closes the connection; further reads and writes fail. */
  close(): void;
}

/**
 * A connection that can also write without waiting (the fast network path's sockets): writers
 * that find it use it to skip a promise per write.
 */
export interface SyncWriteConn extends WireConn {
  /**
   * Writes a prefix of `p`'s first `len` bytes (all of `p` by default) now: the count, possibly
   * 0 when the socket's buffer is full (then `write` waits for room). Throws what `write` would
   * reject with.
   */
  tryWrite(p: Uint8Array, len?: number): number;
}

/** Whether `conn` is a {@linkcode SyncWriteConn}. */
export function canWriteSync(conn: ByteSink): conn is SyncWriteConn {
  return typeof (conn as Partial<SyncWriteConn>).tryWrite === "function";
}

/**
 * A connection that can also read without waiting (the fast network path's sockets): readers
 * that find it handle each arrival in a plain callback, with no promise per read.
 */
export interface SyncReadConn extends WireConn {
  /**
   * Reads into `p` now: the count, `null` at end of stream, or `undefined` when nothing is there
   * (then {@linkcode onReadable} tells when to try again). Throws what `read` would reject with.
   */
  tryRead(p: Uint8Array): number | null | undefined;
  /**
   * Calls `fn` once, from the event loop, when {@linkcode tryRead} may have something (new bytes,
   * end of stream, an error, or the connection closed). Replaces a callback set before.
   */
  onReadable(fn: () => void): void;
}

/** Whether `conn` is a {@linkcode SyncReadConn}. */
export function canReadSync(conn: ByteSource): conn is SyncReadConn {
  return typeof (conn as Partial<SyncReadConn>).tryRead === "function";
}

/** Wraps an I/O failure as a TesseraError 08006 (connection failure), keeping TesseraErrors. */
export function connectionError(err: unknown, doing: string): TesseraError {
  if (err instanceof TesseraError) return err;
  const reason = err instanceof Error ? err.message : String(err);
  return new TesseraError(SqlState.connectionFailure, `${doing} failed: ${reason}`, { cause: err });
}

/**
 * Writes all of `bytes` to `sink`, looping over partial writes. Errors from the sink are
 * rethrown as TesseraError 08006.
 */
export async function writeAll(sink: ByteSink, bytes: Uint8Array): Promise<void> {
  let done = 0;
  try {
    while (done < bytes.byteLength) {
      done += await sink.write(done === 0 ? bytes : bytes.subarray(done));
    }
  } catch (err) {
    throw connectionError(err, "connection write");
  }
}

/**
 * Reads exactly `buf.byteLength` bytes into `buf`. Resolves to `false` when the stream ends
 * before the first byte, throws TesseraError 08P01 when it ends part way.
 */
export async function readExact(source: ByteSource, buf: Uint8Array): Promise<boolean> {
  let done = 0;
  while (done < buf.byteLength) {
    let n: number | null;
    try {
      n = await source.read(done === 0 ? buf : buf.subarray(done));
    } catch (err) {
      throw connectionError(err, "connection read");
    }
    if (n === null) {
      if (done === 0) return false;
      throw new TesseraError(
        SqlState.protocolViolation,
        `connection closed part way through a message: got ${done} of ${buf.byteLength} bytes`,
      );
    }
    done += n;
  }
  return true;
}
