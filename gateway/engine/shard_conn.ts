/**
 * One session's connection to one shard (through that shard's pooler), and the row streams the
 * engine reads from it. Statements on a connection run one at a time; each returns a
 * {@linkcode RowStream} the engine pulls from, with backpressure: when the consumer falls behind,
 * the connection stops reading and TCP holds the shard back.
 *
 * @module
 */

import { SqlState, TesseraError } from "../../shared/errors/mod.ts";
import type { BackendConn, BackendOwner, Frame } from "../../shared/pooling/mod.ts";
import {
  Backend,
  decodeCommandComplete,
  decodeDataRowText,
  type DecodedField,
  decodeError,
  decodeParameterDescription,
  decodeParameterStatus,
  decodeReadyForQuery,
  decodeRowDescription,
  type TransactionStatus,
} from "../../shared/wire/mod.ts";
import type { Row } from "./values.ts";

/** A column of a result. */
export type Field = DecodedField;

/** Rows buffered per stream before the shard is held back. */
const HIGH_WATER = 2048;

/** The rows of one statement on one shard, pulled by the engine. */
export class RowStream {
  /** The shard it reads from. */
  readonly shard: string;
  #rows: Row[] = [];
  #head = 0;
  #fields: Field[] | null = null;
  #fieldsKnown = Promise.withResolvers<Field[] | null>();
  #tag: string | null = null;
  #error: TesseraError | null = null;
  #ended = false;
  #endedP = Promise.withResolvers<void>();
  #wake: (() => void) | null = null;
  #drained: { promise: Promise<void>; resolve: () => void } | null = null;
  #discard = false;
  /** Rows received. */
  received = 0;
  /** Parameter types, after a describe. */
  paramTypes: number[] | null = null;

  constructor(shard: string) {
    this.shard = shard;
    this.#fieldsKnown.promise.catch(() => {});
    this.#endedP.promise.catch(() => {});
  }

  /** Resolves with the columns once the shard described them (`null`: the statement returns no rows). */
  fields(): Promise<Field[] | null> {
    return this.#fieldsKnown.promise;
  }

  /** The command tag, once ended. */
  get tag(): string | null {
    return this.#tag;
  }

  /** Resolves when the statement ended on the shard (rejects with its error). */
  get ended(): Promise<void> {
    return this.#endedP.promise;
  }

  /** The next row, or null at the end; throws the shard's error. */
  async next(): Promise<Row | null> {
    for (;;) {
      if (this.#head < this.#rows.length) {
        const row = this.#rows[this.#head]!;
        this.#rows[this.#head++] = null as unknown as Row;
        if (this.#head === this.#rows.length) {
          this.#rows = [];
          this.#head = 0;
        }
        if (this.#drained !== null && this.#rows.length - this.#head < HIGH_WATER / 4) {
          const d = this.#drained;
          this.#drained = null;
          d.resolve();
        }
        return row;
      }
      if (this.#ended) {
        if (this.#error !== null) throw this.#error;
        return null;
      }
      await new Promise<void>((r) => this.#wake = r);
      this.#wake = null;
    }
  }

  /** Reads every remaining row (the shard's reply must be consumed) and waits for the end. */
  async drain(): Promise<void> {
    await this.discard().catch(() => {});
  }

  /** Drops the rows (no backpressure); resolves at the end, rejects with the shard's error. */
  discard(): Promise<void> {
    this.#discard = true;
    this.#rows = [];
    this.#head = 0;
    this.#releaseDrained();
    return this.#endedP.promise;
  }

  #releaseDrained(): void {
    const d = this.#drained;
    this.#drained = null;
    d?.resolve();
  }

  #notify(): void {
    const w = this.#wake;
    this.#wake = null;
    w?.();
  }

  /** Connection side: the columns. */
  setFields(fields: Field[] | null): void {
    this.#fields = fields;
    this.#fieldsKnown.resolve(fields);
  }

  /** Connection side: one row. */
  push(row: Row): void {
    this.received++;
    if (this.#discard) return;
    this.#rows.push(row);
    this.#notify();
  }

  /** Connection side: a promise to await before reading more, when the consumer is behind. */
  backpressure(): Promise<void> | undefined {
    if (this.#discard || this.#rows.length - this.#head < HIGH_WATER) return undefined;
    this.#drained ??= Promise.withResolvers<void>();
    return this.#drained.promise;
  }

  /** Connection side: the statement's command tag. */
  complete(tag: string): void {
    this.#tag = tag;
    if (this.#fields === null) this.#fieldsKnown.resolve(null);
  }

  /** Connection side: the statement failed. */
  fail(err: TesseraError): void {
    this.#error ??= err;
    this.#fieldsKnown.reject(err);
  }

  /** Connection side: ReadyForQuery (or the connection ended). */
  end(): void {
    if (this.#ended) return;
    this.#ended = true;
    if (this.#error !== null) {
      this.#fieldsKnown.reject(this.#error);
      this.#endedP.reject(this.#error);
    } else {
      this.#fieldsKnown.resolve(this.#fields);
      this.#endedP.resolve();
    }
    this.#releaseDrained();
    this.#notify();
  }
}

/** What a shard connection tells its session. */
export interface ShardConnListener {
  /** A NoticeResponse payload from the shard. */
  notice(payload: Uint8Array): void;
  /** A ParameterStatus the shard reported. */
  parameter(name: string, value: string): void;
}

/** A session's connection to one shard's pooler. */
export class ShardConn implements BackendOwner {
  /** Keyspace. */
  readonly keyspace: string;
  /** Shard (key range). */
  readonly shard: string;
  /** The pooler connection. */
  readonly backend: BackendConn;
  /** Transaction status after the last statement. */
  status: TransactionStatus = "I";
  /** Whether a statement runs now. */
  busy = false;
  #current: RowStream | null = null;
  #queue: Promise<void> = Promise.resolve();
  #listener: ShardConnListener;

  constructor(keyspace: string, shard: string, backend: BackendConn, listener: ShardConnListener) {
    this.keyspace = keyspace;
    this.shard = shard;
    this.backend = backend;
    this.#listener = listener;
    backend.owner = this;
  }

  /** Whether the connection is gone. */
  get closed(): boolean {
    return this.backend.closed;
  }

  /**
   * Runs `sql` (with `params`, through the extended protocol, when there are any) once the
   * statements before it ended; the stream delivers its rows.
   */
  run(sql: string, params: readonly (string | null)[] = []): RowStream {
    return this.#enqueue(sql, params, false);
  }

  /** Describes `sql` (parameter types and columns) without running it. */
  async describe(sql: string): Promise<{ paramTypes: number[]; fields: Field[] | null }> {
    const s = this.#enqueue(sql, [], true);
    await s.ended;
    return { paramTypes: s.paramTypes ?? [], fields: await s.fields() };
  }

  #enqueue(sql: string, params: readonly (string | null)[], describe: boolean): RowStream {
    const stream = new RowStream(this.shard);
    const prev = this.#queue;
    const { promise, resolve } = Promise.withResolvers<void>();
    this.#queue = promise;
    stream.ended.then(resolve, resolve);
    prev.then(() => this.#start(stream, sql, params, describe));
    return stream;
  }

  /** Runs `sql` and collects its rows (for small internal statements). */
  async query(
    sql: string,
    params: readonly (string | null)[] = [],
  ): Promise<{ rows: Row[]; tag: string | null }> {
    const s = this.run(sql, params);
    const rows: Row[] = [];
    for (let r = await s.next(); r !== null; r = await s.next()) rows.push(r);
    return { rows, tag: s.tag };
  }

  #start(
    stream: RowStream,
    sql: string,
    params: readonly (string | null)[],
    describe: boolean,
  ): void {
    if (this.backend.closed) {
      stream.fail(
        new TesseraError(
          SqlState.connectionFailure,
          `the connection to shard ${this.shard} is lost`,
        ),
      );
      stream.end();
      return;
    }
    this.#current = stream;
    this.busy = true;
    const w = this.backend.out.w;
    if (describe) w.parse("", sql).describe("S").sync();
    else if (params.length === 0) w.query(sql);
    else {
      w.parse("", sql).bind("", "", params).describe("P").execute("", 0).sync();
    }
    void this.backend.out.flush();
  }

  onBackendMessage(_b: BackendConn, msg: Frame): void {
    const s = this.#current;
    switch (msg.type) {
      case Backend.dataRow:
        s?.push(decodeDataRowText(msg.payload));
        return;
      case Backend.rowDescription:
        s?.setFields(decodeRowDescription(msg.payload));
        return;
      case Backend.commandComplete:
        s?.complete(decodeCommandComplete(msg.payload));
        return;
      case Backend.emptyQueryResponse:
        s?.complete("");
        return;
      case Backend.errorResponse:
        s?.fail(decodeError(msg.payload));
        return;
      case Backend.readyForQuery:
        this.status = decodeReadyForQuery(msg.payload);
        this.#current = null;
        this.busy = false;
        s?.end();
        return;
      case Backend.noticeResponse:
        this.#listener.notice(msg.payload.slice());
        return;
      case Backend.parameterStatus: {
        const p = decodeParameterStatus(msg.payload);
        this.#listener.parameter(p.name, p.value);
        return;
      }
      case Backend.parameterDescription:
        if (s !== null) s.paramTypes = decodeParameterDescription(msg.payload);
        return;
      case Backend.noData:
        s?.setFields(null);
        return;
      case Backend.parseComplete:
      case Backend.bindComplete:
      case Backend.notificationResponse:
        return;
      case Backend.copyInResponse:
        s?.fail(
          new TesseraError(
            SqlState.featureNotSupported,
            "COPY is not supported in sharded keyspaces",
          ),
        );
        this.backend.out.w.copyFail("COPY is not supported in sharded keyspaces");
        void this.backend.out.flush();
        return;
      default:
        return;
    }
  }

  onBackendBatchEnd(_b: BackendConn): Promise<void> | undefined {
    return this.#current?.backpressure();
  }

  onBackendClosed(_b: BackendConn, err: unknown): void {
    const s = this.#current;
    this.#current = null;
    this.busy = false;
    if (s !== null) {
      s.fail(
        TesseraError.from(err, SqlState.connectionFailure).code.startsWith("08")
          ? new TesseraError(
            SqlState.connectionFailure,
            `the connection to shard ${this.shard} was lost`,
            { cause: err },
          )
          : TesseraError.from(err),
      );
      s.end();
    }
  }

  /** Closes the connection. */
  close(): void {
    this.backend.close();
  }
}
