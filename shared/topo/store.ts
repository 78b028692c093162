/**
 * One generic typed record store, reused by every kind of topo record: a key template and a zod
 * schema give typed get, list, put, compare-and-set update, delete, watch and lease registration.
 *
 * @module
 */

import type { z } from "zod";
import { SqlState, TesseraError } from "../errors/mod.ts";
import type { Logger } from "../log/mod.ts";
import type { LeaseRegistration, RawKv, RawWatchEvent, TopoBackend, TopoWatch } from "./backend.ts";
import { MappedWatch } from "./event_queue.ts";

/** A variable segment of a key template, e.g. the keyspace in `keyspaces/<keyspace>`. */
export interface ParamSegment {
  /** Name used in messages, e.g. `keyspace`. */
  readonly param: string;
  /** Whether `value` is allowed in this segment. */
  readonly check: (value: string) => boolean;
  /** What an allowed value looks like, for error messages. */
  readonly expected: string;
}

/** A key template segment: a literal, or a parameter. */
export type Segment = string | ParamSegment;

/**
 * One kind of topo record: where it lives (relative to a topo root), its schema, and optionally
 * how a record names itself (so the key and the content can be checked against each other).
 */
export interface RecordKind<T, P extends readonly string[]> {
  /** Name of the kind in messages, e.g. `shard`. */
  readonly what: string;
  /** Key template relative to the root, e.g. `["keyspaces", keyspace, "shards", range]`. */
  readonly path: readonly Segment[];
  /** Schema of the stored JSON. */
  readonly schema: z.ZodType<T>;
  /** The key parameters a record names itself by, e.g. a shard's `[keyspace, range]`. */
  readonly identity?: (value: T) => P;
  /** Further checks of a record against its place; returns why it does not fit. */
  readonly check?: (value: T) => string | undefined;
}

/** Proper leading parts of a key parameter tuple: for `[a, b]`, `[]` or `[a]`. */
export type LeadingParams<P extends readonly string[]> = P extends
  readonly [...infer H extends string[], string] ? H | LeadingParams<H> : [];

/** A record as read, with its etcd revisions. */
export interface RecordEntry<T, P> {
  /** Always `record`. */
  type: "record";
  /** Full etcd key. */
  key: string;
  /** Key parameters, e.g. `["app", "-80"]`. */
  params: P;
  /** The validated record. */
  value: T;
  /** Revision of its last change: pass it back to compare-and-set. */
  revision: number;
  /** Revision that created it. */
  createRevision: number;
  /** Number of writes since creation. */
  version: number;
}

/** A stored value that is not valid JSON or does not match its schema. */
export interface CorruptEntry {
  /** Always `corrupt`. */
  type: "corrupt";
  /** Full etcd key. */
  key: string;
  /** Why it was rejected. */
  error: string;
  /** Revision of the bad value. */
  revision: number;
}

/** What `list()` returns for each key, and `resync` events hold. */
export type ListItem<T, P> = RecordEntry<T, P> | CorruptEntry;

/** A typed watch event. */
export type RecordEvent<T, P> =
  | (Omit<RecordEntry<T, P>, "type"> & { type: "put" })
  | { type: "delete"; key: string; params: P; revision: number }
  | CorruptEntry
  | {
    /**
     * Full state at `revision`: first event of a watch without `fromRevision`, and sent again
     * when the watch could not resume without a gap. Replace what you hold with it.
     */
    type: "resync";
    revision: number;
    items: ListItem<T, P>[];
  };

/** Options of {@linkcode RecordStore.update}. */
export interface UpdateOptions {
  /** How many read-modify-write rounds to try before failing with `40001`; 20 by default. */
  maxAttempts?: number;
}

/** A typed record kept alive under a lease; see {@linkcode RecordStore.registerUnderLease}. */
export interface LeasedRecord<T> {
  /** Full etcd key. */
  readonly key: string;
  /** Current lease id, or undefined while a lost lease is being replaced. */
  readonly leaseId: string | undefined;
  /** Validates and writes a new value under the same lease. */
  update(value: T): Promise<void>;
  /** Revokes the lease: the record disappears at once. */
  close(): Promise<void>;
}

/** Options of {@linkcode RecordStore.watch}. */
export interface RecordWatchOptions {
  /** First revision to deliver; without it the watch starts with a `resync` of current state. */
  fromRevision?: number;
}

const decoder = new TextDecoder("utf-8", { fatal: true });

function describeIssues(error: z.ZodError): string {
  return error.issues
    .map((issue) =>
      `${issue.path.length === 0 ? "(root)" : issue.path.join(".")}: ${issue.message}`
    )
    .join("; ");
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/**
 * Typed access to one kind of record under one topo root. Reads validate with the kind's schema;
 * a corrupt value makes `get()` throw `XX001` and shows up as a `corrupt` item in `list()` and
 * `watch()`, which carry on.
 *
 * @example
 * ```ts
 * const shard = await topo.global.shards.get("app", "-80");
 * await topo.global.shards.update(["app", "-80"], (cur) =>
 *   cur && { ...cur.value, term: cur.value.term + 1, primaryAlias: "zone1-101" });
 * ```
 */
export class RecordStore<T, P extends readonly string[]> {
  #backend: TopoBackend;
  #base: string;
  #kind: RecordKind<T, P>;
  #log: Logger;
  #paramCount: number;

  /** A store for `kind` under `base` (a topo root with its trailing `/`). */
  constructor(backend: TopoBackend, base: string, kind: RecordKind<T, P>, log: Logger) {
    if (!base.endsWith("/")) {
      throw new RangeError(`'base' must end with '/': received '${base}'`);
    }
    this.#backend = backend;
    this.#base = base;
    this.#kind = kind;
    this.#log = log;
    this.#paramCount = kind.path.filter((s) => typeof s !== "string").length;
  }

  /** The kind's name, e.g. `shard`. */
  get what(): string {
    return this.#kind.what;
  }

  #label(params: readonly string[]): string {
    return params.length === 0 ? this.#kind.what : `${this.#kind.what} '${params.join("/")}'`;
  }

  /** Builds the key (or, with fewer parameters, the prefix) for `params`, validating each. */
  #build(params: readonly string[], full: boolean): string {
    if (params.length > this.#paramCount || (full && params.length !== this.#paramCount)) {
      throw new RangeError(
        `${this.#kind.what} keys take ${this.#paramCount} parameters: received ${params.length}`,
      );
    }
    const parts: string[] = [];
    let used = 0;
    for (const segment of this.#kind.path) {
      if (typeof segment === "string") {
        parts.push(segment);
        continue;
      }
      if (used === params.length) return this.#base + parts.join("/") + "/";
      const value = params[used++]!;
      if (!segment.check(value)) {
        throw new TesseraError(
          SqlState.invalidParameterValue,
          `invalid ${segment.param} for a ${this.#kind.what} key: '${value}'`,
          { hint: `a ${segment.param} must be ${segment.expected}` },
        );
      }
      parts.push(value);
    }
    return this.#base + parts.join("/");
  }

  /** The full etcd key of the record named by `params`. */
  key(...params: P): string {
    return this.#build(params, true);
  }

  /** The key parameters of `value`, for kinds whose records name themselves. */
  paramsOf(value: T): P {
    if (this.#kind.identity === undefined) {
      throw new TypeError(`${this.#kind.what} records do not name their own key`);
    }
    return this.#kind.identity(value);
  }

  /** Parses `key` back into parameters; undefined when it is not a key of this kind. */
  #parse(key: string): P | undefined {
    if (!key.startsWith(this.#base)) return undefined;
    const parts = key.slice(this.#base.length).split("/");
    if (parts.length !== this.#kind.path.length) return undefined;
    const params: string[] = [];
    for (let i = 0; i < parts.length; i++) {
      const segment = this.#kind.path[i]!;
      const part = parts[i]!;
      if (typeof segment === "string") {
        if (part !== segment) return undefined;
      } else {
        if (!segment.check(part)) return undefined;
        params.push(part);
      }
    }
    return params as unknown as P;
  }

  /** Why `value` does not belong at `params`, if it does not. */
  #mismatch(params: P, value: T): string | undefined {
    if (this.#kind.identity !== undefined) {
      const own = this.#kind.identity(value);
      if (own.join("/") !== params.join("/")) {
        return `the record names itself '${own.join("/")}' but is stored as '${params.join("/")}'`;
      }
    }
    return this.#kind.check?.(value);
  }

  #decode(kv: RawKv, params: P): ListItem<T, P> {
    const corrupt = (error: string): CorruptEntry => ({
      type: "corrupt",
      key: kv.key,
      error,
      revision: kv.revision,
    });
    let json: unknown;
    try {
      json = JSON.parse(decoder.decode(kv.value));
    } catch (err) {
      return corrupt(`not valid JSON: ${err instanceof Error ? err.message : String(err)}`);
    }
    const parsed = this.#kind.schema.safeParse(json);
    if (!parsed.success) {
      return corrupt(`does not match the schema: ${describeIssues(parsed.error)}`);
    }
    const mismatch = this.#mismatch(params, parsed.data);
    if (mismatch !== undefined) return corrupt(mismatch);
    return {
      type: "record",
      key: kv.key,
      params,
      value: parsed.data,
      revision: kv.revision,
      createRevision: kv.createRevision,
      version: kv.version,
    };
  }

  #reportCorrupt(entry: CorruptEntry): void {
    this.#log.warn("corrupt topo record skipped", {
      kind: this.#kind.what,
      key: entry.key,
      revision: entry.revision,
      error: entry.error,
    });
  }

  /** Validates `value` for `params` and returns the JSON to store. */
  #encode(params: P, value: T): { text: string; value: T } {
    const parsed = this.#kind.schema.safeParse(value);
    if (!parsed.success) {
      throw new TesseraError(
        SqlState.invalidParameterValue,
        `invalid ${this.#label(params)} record: ${describeIssues(parsed.error)}`,
      );
    }
    const mismatch = this.#mismatch(params, parsed.data);
    if (mismatch !== undefined) {
      throw new TesseraError(
        SqlState.invalidParameterValue,
        `invalid ${this.#label(params)} record: ${mismatch}`,
      );
    }
    return { text: JSON.stringify(parsed.data), value: parsed.data };
  }

  /**
   * Reads the record named by `params`; undefined when absent. Throws `XX001` naming the key and
   * the reason when the stored value is corrupt.
   */
  async get(...params: P): Promise<RecordEntry<T, P> | undefined> {
    const key = this.key(...params);
    const kv = await this.#backend.get(key);
    if (kv === undefined) return undefined;
    const item = this.#decode(kv, params);
    if (item.type === "corrupt") {
      this.#reportCorrupt(item);
      throw new TesseraError(
        SqlState.dataCorrupted,
        `corrupt ${this.#label(params)} record at '${key}': ${item.error}`,
        { hint: "rewrite the record with a valid value, or delete it" },
      );
    }
    return item;
  }

  #items(kvs: RawKv[], log: boolean): ListItem<T, P>[] {
    const items: ListItem<T, P>[] = [];
    for (const kv of kvs) {
      const params = this.#parse(kv.key);
      if (params === undefined) continue;
      const item = this.#decode(kv, params);
      if (item.type === "corrupt" && log) this.#reportCorrupt(item);
      items.push(item);
    }
    return items;
  }

  #target(prefix: readonly string[]): { key: string } | { prefix: string } {
    return prefix.length === this.#paramCount
      ? { key: this.#build(prefix, true) }
      : { prefix: this.#build(prefix, false) };
  }

  /**
   * Lists every record of this kind whose key starts with the given leading parameters (for
   * shards, `list("app")` lists app's shards and `list()` every shard), in key order. Corrupt
   * values come back as `corrupt` items.
   */
  async list(...prefix: LeadingParams<P>): Promise<ListItem<T, P>[]> {
    const { kvs } = await this.#backend.list(this.#target(prefix));
    return this.#items(kvs, true);
  }

  /**
   * Writes the record named by `params`. With `options.ifRevision` the write happens only if the
   * record is still at that revision (`0`: only if absent), else it throws `40001`. Resolves with
   * the new revision.
   */
  async put(params: P, value: T, options: { ifRevision?: number } = {}): Promise<number> {
    const key = this.key(...params);
    const { text } = this.#encode(params, value);
    const res = await this.#backend.put(key, text, options);
    if (!res.ok) {
      throw new TesseraError(
        SqlState.serializationFailure,
        options.ifRevision === 0
          ? `${this.#label(params)} already exists`
          : `${this.#label(params)} changed since revision ${options.ifRevision}`,
        { detail: `key '${key}'`, hint: "read it again and retry" },
      );
    }
    return res.revision;
  }

  /** Writes the record only if it does not exist yet; throws `42710` if it does. */
  async create(params: P, value: T): Promise<number> {
    try {
      return await this.put(params, value, { ifRevision: 0 });
    } catch (err) {
      if (err instanceof TesseraError && err.code === SqlState.serializationFailure) {
        throw new TesseraError(SqlState.duplicateObject, err.message, { detail: err.detail });
      }
      throw err;
    }
  }

  /** Deletes the record named by `params`; resolves whether it existed. */
  async delete(...params: P): Promise<boolean> {
    return await this.#backend.delete(this.key(...params));
  }

  /**
   * Read-modify-write with compare-and-set: reads the record, calls `fn` with it (undefined when
   * absent), and writes what `fn` returns only if nobody wrote in between, retrying otherwise.
   * `fn` returns undefined to leave the record as it is. Resolves with the record as written (or
   * as found, when unchanged). Throws `40001` after `maxAttempts` conflicting rounds, and `XX001`
   * if the stored record is corrupt.
   */
  async update(
    params: P,
    fn: (current: RecordEntry<T, P> | undefined) => T | undefined | Promise<T | undefined>,
    options: UpdateOptions = {},
  ): Promise<RecordEntry<T, P> | undefined> {
    const maxAttempts = options.maxAttempts ?? 20;
    const key = this.key(...params);
    for (let attempt = 1; attempt <= maxAttempts; attempt++) {
      const current = await this.get(...params);
      const next = await fn(current);
      if (next === undefined) return current;
      const encoded = this.#encode(params, next);
      const res = await this.#backend.put(key, encoded.text, {
        ifRevision: current?.revision ?? 0,
      });
      if (res.ok) {
        return {
          type: "record",
          key,
          params,
          value: encoded.value,
          revision: res.revision,
          createRevision: current?.createRevision ?? res.revision,
          version: (current?.version ?? 0) + 1,
        };
      }
      this.#log.debug("compare-and-set conflict; retrying", { key, attempt });
      await sleep(Math.random() * 10 * attempt);
    }
    throw new TesseraError(
      SqlState.serializationFailure,
      `could not update ${this.#label(params)}: it changed during each of ${maxAttempts} attempts`,
      { detail: `key '${key}'` },
    );
  }

  /**
   * Watches records of this kind under the given leading parameters (all of them when `prefix`
   * is empty). Events come in revision order, each with its revision; the watch resumes after
   * etcd restarts without missing or repeating events, and sends `resync` when it cannot.
   */
  watch(
    prefix: LeadingParams<P> | P,
    options: RecordWatchOptions = {},
  ): TopoWatch<RecordEvent<T, P>> {
    const raw = this.#backend.watch(this.#target(prefix), options);
    return new MappedWatch(raw, (event) => this.#mapEvent(event));
  }

  #mapEvent(event: RawWatchEvent): RecordEvent<T, P>[] {
    switch (event.type) {
      case "resync":
        return [{ type: "resync", revision: event.revision, items: this.#items(event.kvs, true) }];
      case "delete": {
        const params = this.#parse(event.key);
        if (params === undefined) return [];
        return [{ type: "delete", key: event.key, params, revision: event.revision }];
      }
      case "put": {
        const params = this.#parse(event.kv.key);
        if (params === undefined) return [];
        const item = this.#decode(event.kv, params);
        if (item.type === "corrupt") {
          this.#reportCorrupt(item);
          return [item];
        }
        return [{ ...item, type: "put" }];
      }
    }
  }

  /**
   * Writes `value` under a lease of `ttlSeconds` that is kept alive until `close()`. If the lease
   * is lost (etcd was unreachable for longer than the TTL), a new one is granted and the record
   * written again. If the process dies, the record disappears after the TTL. The key comes from
   * the record itself (the kind must name its records, as poolers, gateways and orchs do).
   */
  async registerUnderLease(value: T, options: { ttlSeconds: number }): Promise<LeasedRecord<T>> {
    const params = this.paramsOf(value);
    const key = this.key(...params);
    const { text } = this.#encode(params, value);
    const registration: LeaseRegistration = await this.#backend.registerUnderLease(
      key,
      text,
      options.ttlSeconds,
    );
    return {
      key,
      get leaseId() {
        return registration.leaseId;
      },
      update: async (next: T) => {
        const own = this.paramsOf(next);
        if (own.join("/") !== params.join("/")) {
          throw new TesseraError(
            SqlState.invalidParameterValue,
            `invalid ${this.#label(params)} record: an update cannot rename it to ` +
              `'${own.join("/")}'`,
          );
        }
        await registration.update(this.#encode(params, next).text);
      },
      close: () => registration.close(),
    };
  }
}
