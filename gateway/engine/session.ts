/**
 * A client session on a sharded keyspace: the client's messages (simple and extended protocol)
 * are planned with the sharding planner and run by the {@linkcode Engine} on the session's own
 * connection to each shard's pooler (opened on first use; the pooler pools them). Session
 * settings are replayed on every shard connection; transactions span the shards they touch, in
 * best-effort mode: COMMIT is sent to each shard in turn, so a failure part way leaves the
 * shards already committed committed.
 *
 * @module
 */

import { SqlState, TesseraError } from "../../shared/errors/mod.ts";
import type { Logger } from "../../shared/log/mod.ts";
import { type BackendConn, quoteIdent, quoteLiteral } from "../../shared/pooling/mod.ts";
import {
  decodeBind,
  decodeClose,
  decodeDescribe,
  decodeExecute,
  decodeParse,
  decodeQuery,
  Frontend,
  MessageReader,
  MessageWriter,
  type TransactionStatus,
  writeAll,
} from "../../shared/wire/mod.ts";
import {
  Bindings,
  explainPlan,
  type Planned,
  type Planner,
  type Primitive,
  renderQuery,
  type Route,
} from "../planner/mod.ts";
import type { Vindex } from "../sharding/mod.ts";
import type { PoolerEndpoint, SessionTarget, TargetResolver } from "../routing/target.ts";
import { type Cursor, Engine, type EngineContext, MemoryBudget } from "./execute.ts";
import { type Field, ShardConn } from "./shard_conn.ts";
import type { Row } from "./values.ts";

/** What a sharded session needs from the gateway. */
export interface ShardedHost {
  /** Logger. */
  readonly log: Logger;
  /** Finds the pooler serving a shard. */
  readonly resolver: TargetResolver;
  /** The planner over the current vschemas. */
  planner(): Planner;
  /** The shards of a keyspace, in key-range order. */
  shards(keyspace: string): string[];
  /** A vindex of a keyspace's vschema (throws 42704 when unknown). */
  vindex(keyspace: string, name: string): Vindex;
  /** Opens a connection to a pooler as `user` on `database`. */
  connectShard(endpoint: PoolerEndpoint, user: string, database: string): Promise<BackendConn>;
  /** Sends a cancel request for what runs on `backend`; never rejects. */
  cancelBackend(backend: BackendConn): Promise<void>;
  /** Most bytes one statement may gather in the gateway. */
  readonly maxResultBytes: number;
  /** How long a shard connection is tried again while its pooler is unreachable. */
  readonly retryWindowMs: number;
}

/** A client that completed its startup phase. */
export interface ShardedStart {
  conn: Deno.Conn;
  user: string;
  database: string;
  params: Record<string, string>;
  settings: Record<string, string>;
}

interface Statement {
  sql: string;
  planned: Planned | null;
  paramTypes: number[];
}

interface Portal {
  stmt: Statement;
  params: (string | null)[];
  cursor: Cursor | null;
  sent: number;
  done: boolean;
}

/** Startup parameters replayed as settings on every shard connection. */
const NOT_SETTINGS = new Set(["user", "database", "options", "replication", "client_encoding"]);

const FLUSH_AT = 64 * 1024;

/** A client session on a sharded keyspace. */
export class ShardedSession {
  /** The process id given to the client. */
  readonly pid: number;
  /** The cancel key given to the client. */
  readonly secret: number;
  readonly #host: ShardedHost;
  readonly #target: SessionTarget;
  readonly #user: string;
  #client: Deno.Conn;
  #reader: MessageReader;
  #w = new MessageWriter(8192);
  #conns = new Map<string, ShardConn>();
  #txConns = new Set<ShardConn>();
  #tx: TransactionStatus = "I";
  #beginSql = "BEGIN";
  #savepoints: string[] = [];
  #settings: string[] = [];
  #localSettings: string[] = [];
  #stmts = new Map<string, Statement>();
  #portals = new Map<string, Portal>();
  #skipToSync = false;
  #closed = false;
  #done: Promise<void> = Promise.resolve();
  #reported = new Map<string, string>();
  #running = 0;
  #engine: Engine;

  constructor(
    host: ShardedHost,
    target: SessionTarget,
    start: ShardedStart,
    pid: number,
    secret: number,
  ) {
    this.#host = host;
    this.#target = target;
    this.#user = start.user;
    this.#client = start.conn;
    this.pid = pid;
    this.secret = secret;
    this.#reader = new MessageReader(start.conn, { initialBufferSize: 2048 });
    for (const [name, value] of Object.entries(start.params)) {
      if (NOT_SETTINGS.has(name) || name.startsWith("_pq_.")) continue;
      this.#settings.push(`SET ${quoteIdent(name)} = ${quoteLiteral(value)}`);
    }
    for (const [name, value] of Object.entries(start.settings)) {
      this.#settings.push(`SET ${quoteIdent(name)} = ${quoteLiteral(value)}`);
    }
    const ctx: EngineContext = {
      shards: (ks) => this.#host.shards(ks),
      conn: (ks, shard) => this.#conn(ks, shard),
      vindex: (ks, name) => this.#host.vindex(ks, name),
      memoryLimit: host.maxResultBytes,
    };
    this.#engine = new Engine(ctx);
  }

  /** Whether a statement runs now. */
  get active(): boolean {
    return this.#running > 0;
  }

  /** Resolves once the session has ended. */
  get done(): Promise<void> {
    return this.#done;
  }

  /** Runs the session until the client leaves. */
  run(): Promise<void> {
    this.#done = this.#run();
    return this.#done;
  }

  /** Cancels what runs now on every shard; settles once every cancel has been handled. */
  async cancel(): Promise<void> {
    const sent: Promise<void>[] = [];
    for (const c of this.#conns.values()) {
      if (c.busy) sent.push(this.#host.cancelBackend(c.backend));
    }
    await Promise.all(sent);
  }

  /** Ends the session (gateway shutdown): the client gets 57P01. */
  terminate(): void {
    if (this.#closed) return;
    this.#w.errorResponse(
      new TesseraError(
        SqlState.adminShutdown,
        "terminating connection due to administrator command",
        {
          severity: "FATAL",
        },
      ),
    );
    void this.#flush().finally(() => this.#close());
  }

  async #run(): Promise<void> {
    try {
      // The first shard must be reachable: it checks the login and gives the server parameters.
      const shards = this.#host.shards(this.#target.keyspace);
      if (shards.length === 0) {
        throw new TesseraError(
          SqlState.connectionFailure,
          `keyspace "${this.#target.keyspace}" has no shards in topo`,
        );
      }
      const first = await this.#conn(this.#target.keyspace, shards[0]!);
      for (const [name, value] of first.backend.params) {
        this.#reported.set(name, value);
        this.#w.parameterStatus(name, value);
      }
      this.#w.backendKeyData(this.pid, this.secret).readyForQuery("I");
      await this.#flush();
    } catch (err) {
      const e = TesseraError.from(err);
      this.#w.errorResponse(
        new TesseraError(e.code, e.message, { severity: "FATAL", detail: e.detail, hint: e.hint }),
      );
      await this.#flush().catch(() => {});
      this.#close();
      return;
    }
    try {
      await this.#loop();
    } catch (err) {
      if (!this.#closed) {
        const e = TesseraError.from(err, SqlState.protocolViolation);
        this.#host.log.info("sharded session ended", { session: this.pid, error: e });
        if (e.code === SqlState.protocolViolation) {
          this.#w.errorResponse(
            new TesseraError(e.code, e.message, { severity: "FATAL" }),
          );
          await this.#flush().catch(() => {});
        }
      }
    } finally {
      this.#close();
    }
  }

  #close(): void {
    if (this.#closed) return;
    this.#closed = true;
    for (const c of this.#conns.values()) {
      if (c.busy) this.#host.cancelBackend(c.backend);
      c.close();
    }
    this.#conns.clear();
    try {
      this.#client.close();
    } catch {
      // already closed
    }
  }

  async #flush(): Promise<void> {
    if (this.#w.length === 0) return;
    const bytes = this.#w.take();
    await writeAll(this.#client, bytes);
  }

  async #maybeFlush(): Promise<void> {
    if (this.#w.length >= FLUSH_AT) await this.#flush();
  }

  // ------------------------------------------------------------------ shard connections

  async #conn(keyspace: string, shard: string): Promise<ShardConn> {
    const key = `${keyspace}/${shard}`;
    let c = this.#conns.get(key);
    if (c !== undefined && c.closed) {
      this.#conns.delete(key);
      if (this.#txConns.has(c)) {
        throw new TesseraError(
          SqlState.connectionFailure,
          `the transaction lost its connection to shard ${shard} of keyspace "${keyspace}"`,
          { hint: "roll back and run the transaction again" },
        );
      }
      c = undefined;
    }
    if (c === undefined) {
      c = await this.#open(keyspace, shard);
      this.#conns.set(key, c);
    }
    if (this.#tx !== "I" && !this.#txConns.has(c)) {
      this.#txConns.add(c);
      await c.query(this.#beginSql);
      for (const s of this.#savepoints) await c.query(s);
      for (const s of this.#localSettings) await c.query(s);
    }
    return c;
  }

  async #open(keyspace: string, shard: string): Promise<ShardConn> {
    const target: SessionTarget = { ...this.#target, keyspace, shard };
    const started = Date.now();
    for (let attempt = 0;; attempt++) {
      const endpoint = await this.#host.resolver.resolve(target);
      try {
        const backend = await this.#host.connectShard(endpoint, this.#user, keyspace);
        const conn = new ShardConn(keyspace, shard, backend, {
          notice: (payload) => this.#notice(payload),
          parameter: (name, value) => this.#parameter(name, value),
        });
        for (const s of this.#settings) await conn.query(s);
        return conn;
      } catch (err) {
        const e = TesseraError.from(err);
        const retry = e.code.startsWith("08") || e.code === SqlState.adminShutdown ||
          e.code === SqlState.cannotConnectNow;
        this.#host.resolver.reportFailure(endpoint, err);
        if (!retry || Date.now() - started > this.#host.retryWindowMs) throw e;
        await new Promise((r) => setTimeout(r, Math.min(500, 20 * 2 ** Math.min(attempt, 5))));
      }
    }
  }

  #notice(payload: Uint8Array): void {
    this.#w.begin(0x4e).bytes(payload).end();
  }

  #parameter(name: string, value: string): void {
    if (this.#reported.get(name) === value) return;
    this.#reported.set(name, value);
    this.#w.parameterStatus(name, value);
  }

  // ------------------------------------------------------------------ client messages

  async #loop(): Promise<void> {
    for (;;) {
      const msg = await this.#reader.next();
      if (msg === null || this.#closed) return;
      const type = msg.type;
      if (type === Frontend.terminate) return;
      if (this.#skipToSync && type !== Frontend.sync) continue;
      this.#running++;
      try {
        switch (type) {
          case Frontend.query:
            await this.#simpleQuery(decodeQuery(msg.payload));
            break;
          case Frontend.parse:
            this.#extended(() => this.#parse(decodeParse(msg.payload)));
            break;
          case Frontend.bind:
            this.#extended(() => this.#bind(decodeBind(msg.payload)));
            break;
          case Frontend.describe: {
            const d = decodeDescribe(msg.payload);
            await this.#extendedAsync(() => this.#describe(d.target, d.name));
            break;
          }
          case Frontend.execute: {
            const e = decodeExecute(msg.payload);
            await this.#extendedAsync(() => this.#execute(e.portal, e.maxRows));
            break;
          }
          case Frontend.close: {
            const c = decodeClose(msg.payload);
            this.#extended(() => {
              if (c.target === "S") this.#stmts.delete(c.name);
              else void this.#dropPortal(c.name);
              this.#w.closeComplete();
            });
            break;
          }
          case Frontend.sync:
            this.#skipToSync = false;
            await this.#closeUnnamedPortal();
            this.#w.readyForQuery(this.#tx);
            await this.#flush();
            break;
          case Frontend.flush:
            await this.#flush();
            break;
          case Frontend.copyData:
          case Frontend.copyDone:
          case Frontend.copyFail:
            break; // no COPY runs in a sharded session
          default:
            throw new TesseraError(
              SqlState.protocolViolation,
              `invalid frontend message type ${type} ('${String.fromCharCode(type)}')`,
            );
        }
      } finally {
        this.#running--;
      }
      await this.#maybeFlush();
    }
  }

  #fail(err: unknown): void {
    const e = TesseraError.from(err);
    if (e.code === SqlState.protocolViolation && e.severity === "FATAL") throw e;
    this.#w.errorResponse(e);
    if (this.#tx === "T") this.#tx = "E";
  }

  #extended(fn: () => void): void {
    try {
      fn();
    } catch (err) {
      this.#fail(err);
      this.#skipToSync = true;
    }
  }

  async #extendedAsync(fn: () => Promise<void>): Promise<void> {
    try {
      await fn();
    } catch (err) {
      this.#fail(err);
      this.#skipToSync = true;
    }
  }

  // ------------------------------------------------------------------ simple protocol

  async #simpleQuery(sql: string): Promise<void> {
    try {
      let planned: Planned[];
      try {
        planned = this.#host.planner().planSql(sql, this.#target.keyspace);
      } catch (err) {
        throw TesseraError.from(err, SqlState.syntaxError);
      }
      if (planned.length === 0) this.#w.emptyQueryResponse();
      for (const p of planned) {
        const cursor = await this.#start(p, [], planned.length === 1 ? sql : undefined);
        if (cursor.fields !== null) this.#w.rowDescription(cursor.fields);
        await this.#stream(cursor, 0);
      }
    } catch (err) {
      this.#fail(err);
    }
    this.#w.readyForQuery(this.#tx);
    await this.#flush();
  }

  /** Sends up to `max` rows (0: all) then CommandComplete; true when rows remain (suspended). */
  async #stream(
    cursor: Cursor,
    max: number,
    sentBefore = 0,
  ): Promise<{ more: boolean; sent: number }> {
    let sent = sentBefore;
    let n = 0;
    try {
      for (;;) {
        if (max > 0 && n >= max) return { more: true, sent };
        const row = await cursor.next();
        if (row === null) break;
        this.#w.dataRow(row);
        sent++;
        n++;
        if (this.#w.length >= FLUSH_AT) await this.#flush();
      }
    } catch (err) {
      await cursor.close().catch(() => {});
      throw err;
    }
    await cursor.close();
    const tag = cursor.tag?.() ?? "";
    this.#w.commandComplete(
      tag !== "" && !tag.startsWith("SELECT ") ? tag : `SELECT ${sent}`,
    );
    return { more: false, sent };
  }

  // ------------------------------------------------------------------ extended protocol

  #parse(m: { name: string; query: string; paramTypes: number[] }): void {
    if (m.name !== "" && this.#stmts.has(m.name)) {
      throw new TesseraError(
        "42P05",
        `prepared statement "${m.name}" already exists`,
      );
    }
    let planned: Planned[];
    try {
      planned = this.#host.planner().planSql(m.query, this.#target.keyspace);
    } catch (err) {
      throw TesseraError.from(err, SqlState.syntaxError);
    }
    if (planned.length > 1) {
      throw new TesseraError(
        SqlState.syntaxError,
        "cannot insert multiple commands into a prepared statement",
      );
    }
    this.#stmts.set(m.name, {
      sql: m.query,
      planned: planned[0] ?? null,
      paramTypes: m.paramTypes,
    });
    this.#w.parseComplete();
  }

  #bind(m: {
    portal: string;
    statement: string;
    paramFormats: number[];
    params: (Uint8Array | null)[];
    resultFormats: number[];
  }): void {
    const stmt = this.#stmts.get(m.statement);
    if (stmt === undefined) {
      throw new TesseraError("26000", `prepared statement "${m.statement}" does not exist`);
    }
    if (m.paramFormats.some((f) => f !== 0) || m.resultFormats.some((f) => f !== 0)) {
      throw new TesseraError(
        SqlState.featureNotSupported,
        "binary parameter and result formats are not supported in sharded keyspaces",
        { hint: "use the text format (the default of most drivers)" },
      );
    }
    if (m.portal !== "" && this.#portals.has(m.portal)) {
      throw new TesseraError("42P03", `cursor "${m.portal}" already exists`);
    }
    const dec = new TextDecoder();
    void this.#dropPortal(m.portal);
    this.#portals.set(m.portal, {
      stmt,
      params: m.params.map((p) => p === null ? null : dec.decode(p)),
      cursor: null,
      sent: 0,
      done: false,
    });
    this.#w.bindComplete();
  }

  async #dropPortal(name: string): Promise<void> {
    const p = this.#portals.get(name);
    if (p === undefined) return;
    this.#portals.delete(name);
    if (p.cursor !== null && !p.done) await p.cursor.close().catch(() => {});
  }

  async #closeUnnamedPortal(): Promise<void> {
    await this.#dropPortal("");
  }

  async #describe(target: "S" | "P", name: string): Promise<void> {
    if (target === "S") {
      const stmt = this.#stmts.get(name);
      if (stmt === undefined) {
        throw new TesseraError("26000", `prepared statement "${name}" does not exist`);
      }
      const root = stmt.planned?.plan.root;
      if (root === undefined || root.type === "transaction" || root.type === "session") {
        this.#w.parameterDescription(stmt.paramTypes);
        if (root?.type === "session" && root.action === "show") {
          this.#w.rowDescription([stmt.sql.trim().split(/\s+/).slice(1).join(" ") || "setting"]);
        } else this.#w.noData();
        return;
      }
      const shards = this.#host.shards(this.#target.keyspace);
      const conn = await this.#conn(this.#target.keyspace, shards[0]!);
      const d = await conn.describe(stmt.sql);
      this.#w.parameterDescription(d.paramTypes);
      if (d.fields === null) this.#w.noData();
      else this.#w.rowDescription(d.fields);
      return;
    }
    const portal = this.#portals.get(name);
    if (portal === undefined) {
      throw new TesseraError("34000", `portal "${name}" does not exist`);
    }
    const cursor = await this.#portalCursor(portal);
    if (cursor.fields === null) this.#w.noData();
    else this.#w.rowDescription(cursor.fields);
  }

  async #portalCursor(portal: Portal): Promise<Cursor> {
    if (portal.cursor === null) {
      if (portal.stmt.planned === null) {
        portal.cursor = commandCursor("");
      } else {
        portal.cursor = await this.#start(portal.stmt.planned, portal.params, portal.stmt.sql);
      }
    }
    return portal.cursor;
  }

  async #execute(name: string, maxRows: number): Promise<void> {
    const portal = this.#portals.get(name);
    if (portal === undefined) {
      throw new TesseraError("34000", `portal "${name}" does not exist`);
    }
    if (portal.stmt.planned === null) {
      this.#w.emptyQueryResponse();
      return;
    }
    if (portal.done) {
      this.#w.commandComplete(`SELECT 0`);
      return;
    }
    const cursor = await this.#portalCursor(portal);
    const r = await this.#stream(cursor, maxRows, portal.sent);
    portal.sent = r.sent;
    if (r.more) this.#w.portalSuspended();
    else portal.done = true;
  }

  // ------------------------------------------------------------------ statements

  /** Starts one planned statement; the cursor yields its rows. */
  async #start(
    p: Planned,
    params: (string | null)[],
    clientSql?: string,
  ): Promise<Cursor> {
    const root = p.plan.root;
    if (this.#tx === "E" && !(root.type === "transaction" && isEnd(root.action))) {
      throw new TesseraError(
        SqlState.inFailedSqlTransaction,
        "current transaction is aborted, commands ignored until end of transaction block",
      );
    }
    const b = new Bindings(p.plan, params, p.literals);
    switch (root.type) {
      case "transaction":
        return await this.#transaction(root.action, root.sql);
      case "session":
        return await this.#session(root.action, root.sql);
      case "explain":
        return await this.#explain(root.input, root.options, b);
    }
    const budget = new MemoryBudget(this.#host.maxResultBytes);
    return await this.#engine.run(root, b, budget, clientSql);
  }

  async #eachTxConn(sql: string): Promise<TesseraError | null> {
    let first: TesseraError | null = null;
    for (const c of this.#txConns) {
      try {
        if (!c.closed) await c.query(sql);
      } catch (err) {
        first ??= TesseraError.from(err);
      }
    }
    return first;
  }

  async #transaction(action: string, sql: string): Promise<Cursor> {
    switch (action) {
      case "begin":
        if (this.#tx === "I") {
          this.#tx = "T";
          this.#beginSql = sql;
          this.#savepoints = [];
        } else this.#warn("25001", "there is already a transaction in progress");
        return commandCursor("BEGIN");
      case "commit":
      case "rollback": {
        if (this.#tx === "I") {
          this.#warn("25P01", "there is no transaction in progress");
          return commandCursor(action === "commit" ? "COMMIT" : "ROLLBACK");
        }
        const failed = this.#tx === "E";
        const verb = action === "commit" && !failed ? "COMMIT" : "ROLLBACK";
        const err = await this.#eachTxConn(verb);
        this.#endTx();
        if (err !== null && verb === "COMMIT") throw err;
        return commandCursor(verb);
      }
      case "savepoint":
      case "release":
      case "rollback_to": {
        if (this.#tx === "I") {
          throw new TesseraError(
            "25P01",
            `${
              action === "savepoint"
                ? "SAVEPOINT"
                : action === "release"
                ? "RELEASE SAVEPOINT"
                : "ROLLBACK TO SAVEPOINT"
            } can only be used in transaction blocks`,
          );
        }
        if (action === "savepoint") this.#savepoints.push(sql);
        const err = await this.#eachTxConn(sql);
        if (err !== null) throw err;
        if (action === "rollback_to" && this.#tx === "E") this.#tx = "T";
        return commandCursor(
          action === "savepoint" ? "SAVEPOINT" : action === "release" ? "RELEASE" : "ROLLBACK",
        );
      }
      default:
        throw new TesseraError(
          SqlState.featureNotSupported,
          "two-phase commit statements are not supported in sharded keyspaces",
        );
    }
  }

  #endTx(): void {
    this.#tx = "I";
    this.#txConns.clear();
    this.#savepoints = [];
    this.#localSettings = [];
  }

  #warn(code: string, message: string): void {
    this.#w.noticeResponse(new TesseraError(code, message, { severity: "WARNING" }));
  }

  async #session(action: string, sql: string): Promise<Cursor> {
    if (action === "show") {
      const shards = this.#host.shards(this.#target.keyspace);
      const conn = await this.#conn(this.#target.keyspace, shards[0]!);
      const s = conn.run(sql);
      const fields = await s.fields();
      const rows: Row[] = [];
      for (let r = await s.next(); r !== null; r = await s.next()) rows.push(r);
      let i = 0;
      return {
        fields,
        next: () => Promise.resolve(i < rows.length ? rows[i++]! : null),
        close: async () => {},
        tag: () => "SHOW",
      };
    }
    const local = /^\s*set\s+local\b/i.test(sql);
    if (local && this.#tx === "I") {
      this.#warn("25P01", "SET LOCAL can only be used in transaction blocks");
      return commandCursor("SET");
    }
    // Run it on every open connection (it checks the value), then remember it for new ones.
    let first: TesseraError | null = null;
    const targets = local ? [...this.#txConns] : [...this.#conns.values()];
    for (const c of targets) {
      try {
        if (!c.closed) await c.query(sql);
      } catch (err) {
        first ??= TesseraError.from(err);
      }
    }
    if (first !== null) throw first;
    const upper = sql.trim().toUpperCase();
    if (action === "discard" || /^RESET\s+ALL\b/.test(upper)) {
      this.#settings = [];
      this.#localSettings = [];
    } else if (local) this.#localSettings.push(sql);
    else this.#settings.push(sql);
    return commandCursor(
      action === "discard"
        ? upper.replace(/;$/, "").replace(/\s+/g, " ").startsWith("DISCARD ALL")
          ? "DISCARD ALL"
          : upper.split(/\s+/).slice(0, 2).join(" ")
        : upper.startsWith("RESET")
        ? "RESET"
        : "SET",
    );
  }

  async #explain(input: Primitive, options: string, b: Bindings): Promise<Cursor> {
    const lines = explainPlan(input);
    const routes: Route[] = [];
    const walk = (p: Primitive) => {
      if (p.type === "route") routes.push(p);
      for (const key of ["input", "outer", "inner"] as const) {
        const child = (p as unknown as Record<string, Primitive | undefined>)[key];
        if (child !== undefined) walk(child);
      }
      if (p.type === "concatenate") p.inputs.forEach(walk);
    };
    walk(input);
    for (const r of routes) {
      let shards: string[];
      try {
        shards = await this.#engine.routeShards(r, b);
      } catch {
        shards = [];
      }
      if (shards.length === 0) continue;
      const { sql, params } = renderQuery(r.query, b);
      if (params.length > 0) continue; // the shard cannot explain unbound parameters
      const shard = shards[0]!;
      const conn = await this.#conn(r.keyspace, shard);
      const opts = options.trim() === "" ? "" : `(${options}) `;
      const { rows } = await conn.query(`EXPLAIN ${opts}${sql}`);
      lines.push(
        `Shard ${r.keyspace}/${shard}${shards.length > 1 ? ` (1 of ${shards.length})` : ""}:`,
      );
      for (const row of rows) lines.push(`  ${row[0] ?? ""}`);
    }
    const field: Field = {
      name: "QUERY PLAN",
      tableOid: 0,
      columnAttr: 0,
      typeOid: 25,
      typeSize: -1,
      typeModifier: -1,
      format: 0,
    };
    let i = 0;
    return {
      fields: [field],
      next: () => Promise.resolve(i < lines.length ? [lines[i++]!] : null),
      close: async () => {},
      tag: () => "EXPLAIN",
    };
  }
}

/** A cursor with no rows that completes with `tag` (transaction and session commands). */
function commandCursor(tag: string): Cursor {
  return { fields: null, next: () => Promise.resolve(null), close: async () => {}, tag: () => tag };
}

function isEnd(action: string): boolean {
  return action === "commit" || action === "rollback" || action === "rollback_to";
}
