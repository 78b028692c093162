/**
 * A free list of same-sized things (read buffers, message writers) shared by many connections, so
 * that an idle connection holds none: a connection takes one while it has bytes to hold and gives
 * it back when it has none.
 *
 * @module
 */

/** Things of one size, made on demand and kept for reuse up to a bound. */
export abstract class FreeList<T> {
  /** The size each one has (bytes). */
  readonly size: number;
  #free: T[] = [];
  #keep: number;

  /** Things of `size`; at most `keep` free ones are kept (the rest are left to the GC). */
  constructor(size: number, keep = 1024) {
    this.size = size;
    this.#keep = keep;
  }

  /** Makes a new one of {@linkcode size}. */
  protected abstract make(): T;

  /** The size of `item` now (one that grew is not kept). */
  protected abstract sizeOf(item: T): number;

  /** Free ones kept now. */
  get free(): number {
    return this.#free.length;
  }

  /** A free one, or a new one (a buffer's contents are whatever was left in it). */
  take(): T {
    return this.#free.pop() ?? this.make();
  }

  /** Gives back one that nothing refers to any more (one of another size is dropped). */
  give(item: T): void {
    if (this.#free.length < this.#keep && this.sizeOf(item) === this.size) this.#free.push(item);
  }
}
