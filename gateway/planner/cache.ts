/**
 * A bounded LRU map, for the plan cache.
 *
 * @module
 */

/** Least-recently-used cache of at most `capacity` entries. */
export class LruCache<K, V> {
  #map = new Map<K, V>();
  #capacity: number;
  /** Hits and misses since creation. */
  readonly stats = { hits: 0, misses: 0 };

  /** Creates a cache holding at most `capacity` entries. */
  constructor(capacity: number) {
    if (!Number.isInteger(capacity) || capacity < 1) {
      throw new RangeError(`'capacity' must be a positive integer: received ${capacity}`);
    }
    this.#capacity = capacity;
  }

  /** The entry for `key`, marking it most recently used. */
  get(key: K): V | undefined {
    const v = this.#map.get(key);
    if (v === undefined) {
      this.stats.misses++;
      return undefined;
    }
    this.stats.hits++;
    this.#map.delete(key);
    this.#map.set(key, v);
    return v;
  }

  /** Stores `value`, evicting the least recently used entry when full. */
  set(key: K, value: V): void {
    this.#map.delete(key);
    this.#map.set(key, value);
    if (this.#map.size > this.#capacity) {
      const oldest = this.#map.keys().next();
      if (!oldest.done) this.#map.delete(oldest.value);
    }
  }

  /** Number of entries. */
  get size(): number {
    return this.#map.size;
  }

  /** Removes every entry. */
  clear(): void {
    this.#map.clear();
  }
}
