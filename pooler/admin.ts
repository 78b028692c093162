/**
 * The admin console: a virtual database, `pgbouncer` (the name PgBouncer's console has, so its
 * users' habits and scripts carry over), that an admin user (`--admin-user`) opens
 * with psql or any driver to look at the pooler with SQL: `SHOW POOLS`, `SHOW CLIENTS`,
 * `SHOW SERVERS`, `SHOW STATS`, `SHOW VERSION`, `SHOW HELP`, to hold transactions around a
 * Postgres restart (`PAUSE`, `RESUME`) and to read the auth and TLS files again (`RELOAD`). Simple queries only, as in
 * PgBouncer's console; each answer is read from the pooler's own state at that moment.
 *
 * @module
 */

import { SqlState, TesseraError } from "../shared/errors/mod.ts";
import {
  type BackendConn,
  pinReasons,
  type Pool,
  type PoolStats,
  type Session,
} from "../shared/pooling/mod.ts";
import {
  Frontend,
  MessageReader,
  MessageWriter,
  PayloadReader,
  type WireMessage,
  writeAll,
} from "../shared/wire/mod.ts";

/**
 * Database names that open the admin console instead of a pool (a Postgres database of that name
 * is not reachable through the pooler, as with PgBouncer).
 */
export const ADMIN_DATABASES: readonly string[] = ["pgbouncer"];

/** What the server knew of a client when it connected. */
export interface ClientInfo {
  /** Client address (IP or Unix socket path). */
  addr: string;
  /** Client port (0 on a Unix socket). */
  port: number;
  /** When it connected (ms since the epoch). */
  connectedAt: number;
  /** Its `application_name` startup parameter. */
  applicationName: string;
  /** Whether the connection is TLS. */
  tls: boolean;
}

/** The pooler's state, as the console reads it. */
export interface AdminSource {
  /** Version of the pooler. */
  readonly version: string;
  /** `server_version` to report: Postgres's, once a backend has told it. */
  serverVersion(): string | undefined;
  /** Pool counters (every worker's, merged, when there are several). */
  stats(): Promise<{ pools: PoolStats[]; workers?: number }>;
  /** The pools of this process. */
  pools(): Iterable<Pool>;
  /** The client sessions of this process, with what was known at their connection. */
  sessions(): Iterable<[Session, ClientInfo | undefined]>;
  /**
   * Pauses the pools (of `database`, or all): resolves once no transaction runs on their
   * backends and their idle backends are closed. Throws TesseraError when it cannot.
   */
  pause(database: string | undefined): Promise<void>;
  /** Resumes the pools (of `database`, or all). Throws TesseraError when it cannot. */
  resume(database: string | undefined): void;
  /** Reads the auth file and the TLS files again (as on SIGHUP). Throws TesseraError on failure. */
  reload(): Promise<void>;
}

const HELP = [
  "Console usage (Tessera pooler)",
  "  SHOW POOLS     clients and backends per (database, user) pool, oldest wait in the queue",
  "  SHOW CLIENTS   one row per client connection",
  "  SHOW SERVERS   one row per Postgres connection",
  "  SHOW STATS     counters per pool since start",
  "  SHOW VERSION",
  "  SHOW HELP",
  "  PAUSE [db]     hold new transactions, wait for those running, close the backends",
  "  RESUME [db]    serve again (first the transactions that waited)",
  "  RELOAD         read the auth file and the TLS certificate again (as SIGHUP)",
].join("\n");

const ts = (ms: number): string => new Date(ms).toISOString().replace("T", " ").replace("Z", "+00");

/**
 * Serves one admin console connection (already authenticated) until the client leaves: sends
 * the greeting, then answers each simple query. Never throws for a client error: the client gets
 * an ErrorResponse and may go on.
 */
export async function serveAdminConsole(
  conn: Deno.Conn,
  params: Record<string, string>,
  pid: number,
  source: AdminSource,
): Promise<void> {
  const out = new MessageWriter(1024);
  const version = source.serverVersion();
  if (version !== undefined) out.parameterStatus("server_version", version);
  out.parameterStatus("server_encoding", "UTF8")
    .parameterStatus("client_encoding", params["client_encoding"] ?? "UTF8")
    .parameterStatus("DateStyle", "ISO, MDY")
    .parameterStatus("TimeZone", "UTC")
    .parameterStatus("integer_datetimes", "on")
    .parameterStatus("standard_conforming_strings", "on")
    .parameterStatus("application_name", params["application_name"] ?? "")
    .backendKeyData(pid, 0)
    .readyForQuery("I");
  await writeAll(conn, out.take());
  const reader = new MessageReader(conn, { initialBufferSize: 1024, maxMessageLength: 65536 });
  let skipping = false; // after an extended-protocol message, until Sync
  for (;;) {
    let msg: WireMessage | null;
    let sql = "";
    try {
      msg = await reader.next();
      if (msg?.type === Frontend.query) {
        const r = new PayloadReader(msg.payload, "Query");
        sql = r.cstring();
        r.expectEnd();
      }
    } catch (err) {
      // A malformed message (a wrong length, no terminator): FATAL, as Postgres does.
      const e = TesseraError.from(err, SqlState.protocolViolation);
      await writeAll(
        conn,
        out.errorResponse(new TesseraError(e.code, e.message, { severity: "FATAL" })).take(),
      ).catch(() => {});
      return;
    }
    if (msg === null) return;
    switch (msg.type) {
      case Frontend.terminate:
        return;
      case Frontend.query: {
        try {
          await answer(sql, source, out);
        } catch (err) {
          out.errorResponse(TesseraError.from(err));
        }
        out.readyForQuery("I");
        break;
      }
      case Frontend.sync:
        skipping = false;
        out.readyForQuery("I");
        break;
      default:
        if (!skipping) {
          out.errorResponse(
            new TesseraError(
              SqlState.featureNotSupported,
              "the admin console answers simple queries only",
              { hint: "use psql, or your driver's simple query mode" },
            ),
          );
        }
        skipping = true;
    }
    if (reader.buffered === 0 || out.length > 65536) await writeAll(conn, out.take());
  }
}

/** Answers one query text of the console. */
async function answer(sql: string, source: AdminSource, out: MessageWriter): Promise<void> {
  const words = sql.trim().replace(/;\s*$/, "").trim().split(/\s+/).map((w) => w.toLowerCase());
  if (words.length === 1 && words[0] === "") {
    out.emptyQueryResponse();
    return;
  }
  if (words[0] === "reload" && words.length === 1) {
    await source.reload();
    out.commandComplete("RELOAD");
    return;
  }
  if ((words[0] === "pause" || words[0] === "resume") && words.length <= 2) {
    const db = words.length === 2
      ? databaseName(sql.trim().replace(/;\s*$/, "").trim())
      : undefined;
    if (words[0] === "pause") await source.pause(db);
    else source.resume(db);
    out.commandComplete(words[0].toUpperCase());
    return;
  }
  if (words[0] !== "show" || words.length !== 2) {
    throw new TesseraError(SqlState.featureNotSupported, `unsupported admin console command`, {
      detail: `got: ${sql.trim().slice(0, 80)}`,
      hint: "SHOW HELP lists the commands",
    });
  }
  const now = Date.now();
  switch (words[1]) {
    case "help":
      out.noticeResponse(
        new TesseraError(SqlState.successfulCompletion, HELP, { severity: "NOTICE" }),
      );
      out.commandComplete("SHOW");
      return;
    case "version":
      rows(out, ["version"], [[`Tessera pooler ${source.version}`]]);
      return;
    case "pools":
      showPools(source, now, out);
      return;
    case "clients":
      showClients(source, now, out);
      return;
    case "servers":
      showServers(source, out);
      return;
    case "stats":
      await showStats(source, out);
      return;
  }
  throw new TesseraError(
    SqlState.featureNotSupported,
    `unsupported SHOW command: ${words[1]!.slice(0, 40)}`,
    { hint: "SHOW HELP lists the commands" },
  );
}

/** Columns of text; every other column holds a count or an id, described as int8 (as PgBouncer does). */
const TEXT_COLUMNS = new Set([
  "database",
  "user",
  "pool_mode",
  "type",
  "state",
  "addr",
  "connect_time",
  "last_used",
  "pinned",
  "application_name",
  "tls",
  "version",
]);
const INT8_OID = 20;

/** The database named after PAUSE or RESUME: as written when double-quoted, else lower case. */
function databaseName(command: string): string {
  const arg = command.slice(command.search(/\s/)).trim();
  return arg.startsWith('"') && arg.endsWith('"') && arg.length > 1
    ? arg.slice(1, -1).replaceAll('""', '"')
    : arg.toLowerCase();
}

function rows(out: MessageWriter, columns: string[], data: (string | null)[][]): void {
  out.rowDescription(
    columns.map((name) => TEXT_COLUMNS.has(name) ? name : { name, typeOid: INT8_OID, typeSize: 8 }),
  );
  for (const r of data) out.dataRow(r);
  out.commandComplete(`SHOW ${data.length}`);
}

function showPools(source: AdminSource, now: number, out: MessageWriter): void {
  const clients = new Map<Pool, { active: number; waiting: number }>();
  for (const [s] of source.sessions()) {
    const p = s.currentPool;
    if (p === null) continue;
    const c = clients.get(p) ?? { active: 0, waiting: 0 };
    if (s.waiting) c.waiting++;
    else c.active++;
    clients.set(p, c);
  }
  const data: string[][] = [];
  for (const p of source.pools()) {
    const s = p.snapshot();
    const c = clients.get(p) ?? { active: 0, waiting: 0 };
    const wait = p.oldestWaitMs(now);
    data.push([
      p.database,
      p.user,
      String(c.active),
      String(c.waiting),
      String(s.active),
      String(s.idle),
      String(p.checking),
      String(s.connecting),
      String(Math.floor(wait / 1000)),
      String(Math.round((wait % 1000) * 1000)),
      "transaction",
      p.paused ? "1" : "0",
    ]);
  }
  rows(out, [
    "database",
    "user",
    "cl_active",
    "cl_waiting",
    "sv_active",
    "sv_idle",
    "sv_tested",
    "sv_login",
    "maxwait",
    "maxwait_us",
    "pool_mode",
    "paused",
  ], data);
}

function showClients(source: AdminSource, now: number, out: MessageWriter): void {
  const data: (string | null)[][] = [];
  for (const [s, info] of source.sessions()) {
    const b = s.backend;
    data.push([
      "C",
      s.user,
      s.database,
      b !== null ? "active" : s.waiting ? "waiting" : "idle",
      info?.addr ?? null,
      info === undefined ? null : String(info.port),
      info === undefined ? null : ts(info.connectedAt),
      info === undefined ? null : String(Math.round((now - info.connectedAt) / 1000)),
      String(s.pid),
      b === null ? null : String(b.pid),
      pinReasons(s.pins),
      info?.applicationName ?? null,
      info === undefined ? null : info.tls ? "on" : "off",
    ]);
  }
  rows(out, [
    "type",
    "user",
    "database",
    "state",
    "addr",
    "port",
    "connect_time",
    "connected_s",
    "pid",
    "server_pid",
    "pinned",
    "application_name",
    "tls",
  ], data);
}

function showServers(source: AdminSource, out: MessageWriter): void {
  const data: (string | null)[][] = [];
  for (const p of source.pools()) {
    for (const b of p.backends) {
      const owner = b.owner as Session | null;
      data.push([
        "S",
        p.user,
        p.database,
        serverState(p, b),
        String(b.pid),
        ts(b.createdAt),
        ts(b.lastUsedAt),
        owner !== null && typeof owner.pid === "number" ? String(owner.pid) : null,
        String(b.prepared.size),
      ]);
    }
  }
  rows(out, [
    "type",
    "user",
    "database",
    "state",
    "pid",
    "connect_time",
    "last_used",
    "client_pid",
    "prepared_statements",
  ], data);
}

function serverState(p: Pool, b: BackendConn): string {
  if (p.isChecking(b)) return "tested";
  if (b.lent) return b.cancelsInFlight > 0 ? "cancelling" : "active";
  return "idle";
}

async function showStats(source: AdminSource, out: MessageWriter): Promise<void> {
  const { pools } = await source.stats();
  rows(
    out,
    [
      "database",
      "user",
      "checkouts",
      "waits",
      "total_wait_us",
      "max_wait_us",
      "queue_timeouts",
      "backends_opened",
      "backends_closed",
      "connect_errors",
      "prepared_hits",
      "prepared_misses",
      "prepared_evictions",
    ],
    pools.map((p) => [
      p.database,
      p.user,
      String(p.checkouts),
      String(p.waits),
      String(Math.round(p.waitTimeMs * 1000)),
      String(Math.round(p.maxWaitMs * 1000)),
      String(p.timeouts),
      String(p.opened),
      String(p.closed),
      String(p.connectErrors),
      String(p.preparedHits),
      String(p.preparedMisses),
      String(p.preparedEvictions),
    ]),
  );
}
