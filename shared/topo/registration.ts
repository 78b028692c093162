/**
 * Keeping a live process's record in topo: written under a lease (so it disappears by itself
 * when the process dies), retried in the background while etcd or the cell is unreachable (a
 * process never waits on topo to serve), and rewritten when the record's content changes.
 *
 * @module
 */

import type { Logger } from "../log/mod.ts";
import type { LeasedRecord, RecordStore } from "./store.ts";

/** Options of {@linkcode TopoRegistration}. */
export interface TopoRegistrationOptions<T> {
  /** The store the record lives in (for example a cell's `poolers`), resolved on each attempt. */
  store: () => Promise<RecordStore<T, [alias: string]>>;
  /** The record as it should be now; called on every check. */
  record: () => T | Promise<T>;
  /** Lease time to live in seconds: how long the record outlives a dead process. */
  ttlSeconds: number;
  /** How often the record is checked and, on failure, registration retried; 2000 ms by default. */
  intervalMs?: number;
  /** Logger for registration events. */
  logger: Logger;
}

/** Keeps one record registered in topo under a lease until {@linkcode stop}. */
export class TopoRegistration<T> {
  #opts: TopoRegistrationOptions<T>;
  #lease: LeasedRecord<T> | undefined;
  #written: string | undefined;
  #timer: ReturnType<typeof setTimeout> | undefined;
  #running: Promise<void> | undefined;
  #stopped = false;

  /** Creates the registration; nothing is written until {@linkcode start}. */
  constructor(options: TopoRegistrationOptions<T>) {
    this.#opts = options;
  }

  /** Whether the record is currently written under a lease. */
  get registered(): boolean {
    return this.#lease !== undefined;
  }

  /** Registers now and keeps checking in the background. */
  start(): void {
    if (this.#stopped || this.#running !== undefined) return;
    this.#tick();
  }

  #tick(): void {
    this.#running = this.#sync().catch((err) => {
      this.#opts.logger.warn("topo registration failed; retrying", { err });
    }).finally(() => {
      if (!this.#stopped) {
        this.#timer = setTimeout(() => this.#tick(), this.#opts.intervalMs ?? 2000);
      }
    });
  }

  async #sync(): Promise<void> {
    const record = await this.#opts.record();
    const text = JSON.stringify(record);
    if (this.#lease === undefined) {
      const store = await this.#opts.store();
      const lease = await store.registerUnderLease(record, { ttlSeconds: this.#opts.ttlSeconds });
      if (this.#stopped) {
        await lease.close();
        return;
      }
      this.#lease = lease;
      this.#written = text;
      this.#opts.logger.info("registered in topo", { key: lease.key });
    } else if (text !== this.#written) {
      await this.#lease.update(record);
      this.#written = text;
      this.#opts.logger.info("topo record updated", { key: this.#lease.key });
    }
  }

  /**
   * Writes the record as it is now without waiting for the next interval (for example right
   * after a change of role), and resolves when that write is done.
   */
  async refresh(): Promise<void> {
    while (!this.#stopped) {
      const running = this.#running;
      await running;
      if (running === this.#running) break;
    }
    if (this.#stopped || this.#running === undefined) return;
    clearTimeout(this.#timer);
    this.#tick();
    await this.#running;
  }

  /** Stops checking and revokes the lease: the record disappears at once. */
  async stop(): Promise<void> {
    this.#stopped = true;
    clearTimeout(this.#timer);
    await this.#running;
    await this.#lease?.close();
    this.#lease = undefined;
  }
}
