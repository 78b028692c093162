/**
 * One turn of Deno's event loop on the JavaScript thread, without a thread hand-off.
 *
 * The reactor (reactor.ts) keeps the JavaScript thread in its own loop while sockets are busy, so
 * Deno's event loop, which runs timers and Deno's own I/O, gets no turn unless the reactor gives it
 * one. Waiting on a worker thread gives it one, but costs two thread wake-ups: on a saturated
 * 2-core machine each waits for a CPU, and such a round measured 0.8 ms on average (4 ms at most),
 * during which no fast socket is served.
 *
 * A {@linkcode DenoTurn} is a connected pair of Unix sockets that Deno itself owns. A turn starts a
 * read on one end, writes a byte to the other and awaits the read: the read can only complete once
 * Deno's event loop has polled its I/O driver, which it does, on this thread, in a turn that also
 * fires due timers and handles Deno's other ready I/O. Measured at about 12 µs.
 *
 * @module
 */

const ONE = new Uint8Array([1]);

/** A Unix socket pair owned by Deno, for {@linkcode DenoTurn.turn}. */
export class DenoTurn {
  #writer: Deno.Conn;
  #reader: Deno.Conn;
  #buf = new Uint8Array(64);
  #closed = false;

  private constructor(writer: Deno.Conn, reader: Deno.Conn) {
    this.#writer = writer;
    this.#reader = reader;
  }

  /**
   * Opens the pair in a private temporary directory, removed at once (the sockets stay
   * connected). Resolves to the reason as a string when Deno refuses (no permission to write the
   * temporary directory, or no Unix sockets).
   */
  static async open(): Promise<DenoTurn | string> {
    let dir: string | undefined;
    try {
      dir = await Deno.makeTempDir({ prefix: "tessera-turn-" });
      const path = `${dir}/turn.sock`;
      const listener = Deno.listen({ transport: "unix", path });
      try {
        const [writer, reader] = await Promise.all([
          Deno.connect({ transport: "unix", path }),
          listener.accept(),
        ]);
        return new DenoTurn(writer, reader);
      } finally {
        listener.close();
      }
    } catch (err) {
      return (err as Error).message;
    } finally {
      if (dir !== undefined) await Deno.remove(dir, { recursive: true }).catch(() => undefined);
    }
  }

  /** Whether {@linkcode close} was called, or a turn found the pair broken. */
  get closed(): boolean {
    return this.#closed;
  }

  /**
   * Lets Deno's event loop run one turn; resolves after it. Rejects (and closes the pair) when
   * the pair is broken.
   */
  async turn(): Promise<void> {
    const read = this.#reader.read(this.#buf);
    try {
      await this.#writer.write(ONE);
      if ((await read) === null) throw new Error("the turn's socket pair was closed");
    } catch (err) {
      this.close();
      await read.catch(() => undefined);
      throw err;
    }
  }

  /** Closes both sockets. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    for (const c of [this.#writer, this.#reader]) {
      try {
        c.close();
      } catch {
        // already closed
      }
    }
  }
}
