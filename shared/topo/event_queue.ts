/**
 * An unbounded async queue that backs every topo watch: producers push events as etcd delivers
 * them, a consumer pulls them with `for await`.
 *
 * @module
 */

import type { TopoWatch } from "./backend.ts";

interface Waiter<E> {
  resolve: (result: IteratorResult<E>) => void;
}

/**
 * A {@linkcode TopoWatch} fed by `push()`. Events are kept until consumed; topo changes are rare
 * enough that no bound is needed.
 */
export class EventQueue<E> implements TopoWatch<E> {
  #items: E[] = [];
  #waiters: Waiter<E>[] = [];
  #ended = false;
  #onClose: () => Promise<void>;
  #closing: Promise<void> | undefined;

  /** `onClose` stops the producer; it runs once, on the first `close()`. */
  constructor(onClose: () => Promise<void>) {
    this.#onClose = onClose;
  }

  /** Whether the queue was closed or ended. */
  get ended(): boolean {
    return this.#ended;
  }

  /** Adds an event; ignored once the queue has ended. */
  push(event: E): void {
    if (this.#ended) return;
    const waiter = this.#waiters.shift();
    if (waiter !== undefined) waiter.resolve({ value: event, done: false });
    else this.#items.push(event);
  }

  /** Ends the queue: events already queued are still delivered, then done. */
  end(): void {
    if (this.#ended) return;
    this.#ended = true;
    for (const waiter of this.#waiters.splice(0)) waiter.resolve({ value: undefined, done: true });
  }

  /** Resolves with the next event, waiting for one if none is queued. */
  next(): Promise<IteratorResult<E>> {
    const item = this.#items.shift();
    if (item !== undefined) return Promise.resolve({ value: item, done: false });
    if (this.#ended) return Promise.resolve({ value: undefined, done: true });
    return new Promise((resolve) => this.#waiters.push({ resolve }));
  }

  /** Closes the queue; called when a `for await` loop is left early. */
  async return(): Promise<IteratorResult<E>> {
    await this.close();
    return { value: undefined, done: true };
  }

  /** Stops the producer and ends the queue, dropping events not yet consumed. */
  close(): Promise<void> {
    if (this.#closing === undefined) {
      this.#items = [];
      this.end();
      this.#closing = this.#onClose();
    }
    return this.#closing;
  }

  /** Returns this queue, so it works with `for await`. */
  [Symbol.asyncIterator](): this {
    return this;
  }
}

/** A watch whose events are `source`'s, each turned into zero or more events by `map`. */
export class MappedWatch<A, B> implements TopoWatch<B> {
  #source: TopoWatch<A>;
  #map: (event: A) => B[];
  #pending: B[] = [];

  /** Wraps `source`; `map` runs as events are consumed. */
  constructor(source: TopoWatch<A>, map: (event: A) => B[]) {
    this.#source = source;
    this.#map = map;
  }

  /** Resolves with the next mapped event. */
  async next(): Promise<IteratorResult<B>> {
    while (true) {
      const pending = this.#pending.shift();
      if (pending !== undefined) return { value: pending, done: false };
      const result = await this.#source.next();
      if (result.done === true) return { value: undefined, done: true };
      this.#pending = this.#map(result.value);
    }
  }

  /** Closes the watch; called when a `for await` loop is left early. */
  async return(): Promise<IteratorResult<B>> {
    await this.close();
    return { value: undefined, done: true };
  }

  /** Closes the underlying watch. */
  close(): Promise<void> {
    this.#pending = [];
    return this.#source.close();
  }

  /** Returns this watch, so it works with `for await`. */
  [Symbol.asyncIterator](): this {
    return this;
  }
}
