/**
 * A tiny Postgres-speaking server for the front end's tests: it accepts connections with
 * {@linkcode acceptFrontend}, then greets the client (ParameterStatus, BackendKeyData,
 * ReadyForQuery) and answers every query with one fixed-shape row, in the simple and the
 * extended protocol. It tests the front end, not Postgres: there is no SQL behind it.
 *
 * Queries it knows (case-insensitive, trailing `;` ignored):
 * - `whoami`: one row `user/database/transport/tls|plain`
 * - `show <name>`: the value from the startup `options` settings, else the startup
 *   parameter, else an empty string
 * - `begin` / `commit` / `rollback`: transaction status for ReadyForQuery
 * - anything else: one row with the value `1`
 *
 * Not exported from `mod.ts`: test code only.
 *
 * @module
 */

import { TesseraError } from "../errors/mod.ts";
import {
  Frontend,
  MessageReader,
  MessageWriter,
  PayloadReader,
  type SimpleResult,
  type TransactionStatus,
} from "../wire/mod.ts";
import { acceptFrontend, type FrontendOptions, type FrontendResult } from "./accept.ts";

/** A session the fixture served, as `acceptFrontend` returned it. */
export type StartupResult = Extract<FrontendResult, { kind: "startup" }>;
/** A result as logged: a cancel without its `close`. */
export type LoggedResult =
  | Exclude<FrontendResult, { kind: "cancel" }>
  | Omit<Extract<FrontendResult, { kind: "cancel" }>, "close">;

/** Where the fixture listens. */
export type FixtureAddress = { port: number } | { path: string };

/** What the fixture saw, for assertions. */
export interface FixtureLog {
  /** Every result of acceptFrontend, in order of arrival. */
  results: LoggedResult[];
  /** Errors thrown out of acceptFrontend (must stay empty: it never rejects for clients). */
  crashes: unknown[];
}

function answer(sql: string, s: StartupResult): SimpleResult & { status?: TransactionStatus } {
  const q = sql.trim().replace(/;+\s*$/, "").trim();
  const lower = q.toLowerCase();
  if (lower === "whoami") {
    return {
      fields: ["whoami"],
      rows: [[`${s.user}/${s.database}/${s.transport}/${s.tls ? "tls" : "plain"}`]],
      command: "SELECT 1",
    };
  }
  const show = /^show\s+(\S+)$/i.exec(q);
  if (show !== null) {
    const name = show[1]!;
    const value = Object.hasOwn(s.settings, name)
      ? s.settings[name]!
      : Object.hasOwn(s.params, name)
      ? s.params[name]!
      : "";
    return { fields: [name], rows: [[value]], command: "SHOW" };
  }
  if (lower === "begin" || lower.startsWith("begin ")) {
    return { fields: [], rows: [], command: "BEGIN", status: "T" };
  }
  if (lower === "commit" || lower === "rollback") {
    return { fields: [], rows: [], command: lower.toUpperCase(), status: "I" };
  }
  return { fields: ["?column?"], rows: [["1"]], command: "SELECT 1" };
}

/**
 * The fixture server. `start` listens; `stop` closes the listener and every connection and
 * waits for their tasks, so tests end with nothing left open.
 */
export class FixtureServer {
  readonly log: FixtureLog = { results: [], crashes: [] };
  #listener: Deno.Listener;
  #options: FrontendOptions;
  #conns = new Set<{ close(): void }>();
  #tasks = new Set<Promise<void>>();
  #acceptLoop: Promise<void>;
  #nextPid = 1000;

  private constructor(listener: Deno.Listener, options: FrontendOptions) {
    this.#listener = listener;
    this.#options = options;
    this.#acceptLoop = this.#accept();
  }

  /** Listens on `address` (TCP on 127.0.0.1, or a Unix socket path). */
  static start(address: FixtureAddress, options: FrontendOptions): FixtureServer {
    const listener = "port" in address
      ? Deno.listen({ hostname: "127.0.0.1", port: address.port })
      : Deno.listen({ transport: "unix", path: address.path });
    return new FixtureServer(listener, options);
  }

  /** Connections open now (in startup or in a session). */
  get openConnections(): number {
    return this.#conns.size;
  }

  /** The startup results, only those of kind "startup". */
  get sessions(): StartupResult[] {
    return this.log.results.filter((r): r is StartupResult => r.kind === "startup");
  }

  async #accept(): Promise<void> {
    for (;;) {
      let conn: Deno.Conn;
      try {
        conn = await this.#listener.accept();
      } catch {
        return;
      }
      this.#conns.add(conn);
      const task = this.#serve(conn).finally(() => {
        this.#conns.delete(conn);
        this.#tasks.delete(task);
      });
      this.#tasks.add(task);
    }
  }

  async #serve(raw: Deno.Conn): Promise<void> {
    let result: FrontendResult;
    try {
      result = await acceptFrontend(raw, this.#options);
    } catch (err) {
      this.log.crashes.push(err);
      return;
    }
    if (result.kind === "cancel") {
      // Recorded as data only; a real server forwards the cancel before closing.
      const { close, ...rest } = result;
      this.log.results.push(rest);
      close();
      return;
    }
    this.log.results.push(result);
    if (result.kind !== "startup") return;
    const conn = result.conn;
    this.#conns.delete(raw);
    this.#conns.add(conn);
    try {
      await this.#session(result);
    } catch {
      // the client went away
    } finally {
      this.#conns.delete(conn);
      try {
        conn.close();
      } catch {
        // already closed
      }
    }
  }

  async #session(s: StartupResult): Promise<void> {
    const conn = s.conn;
    const out = new MessageWriter();
    out.parameterStatus("server_version", "15.0 (tessera frontend fixture)")
      .parameterStatus("server_encoding", "UTF8")
      .parameterStatus("client_encoding", s.params["client_encoding"] ?? "UTF8")
      .parameterStatus("DateStyle", "ISO, MDY")
      .parameterStatus("TimeZone", "UTC")
      .parameterStatus("integer_datetimes", "on")
      .parameterStatus("standard_conforming_strings", "on")
      .parameterStatus("application_name", s.params["application_name"] ?? "")
      .backendKeyData(this.#nextPid++, 0x5eed)
      .readyForQuery("I");
    await write(conn, out.take());
    const reader = new MessageReader(conn, { initialBufferSize: 1024 });
    let status: TransactionStatus = "I";
    const statements = new Map<string, string>();
    let portalSql = "";
    for (let msg = await reader.next(); msg !== null; msg = await reader.next()) {
      const r = new PayloadReader(msg.payload, msg.typeChar);
      switch (msg.type) {
        case Frontend.terminate:
          return;
        case Frontend.query: {
          const a = answer(r.cstring(), s);
          status = a.status ?? status;
          out.simpleResult(a).readyForQuery(status);
          break;
        }
        case Frontend.parse: {
          const name = r.cstring();
          statements.set(name, r.cstring());
          out.parseComplete();
          break;
        }
        case Frontend.bind: {
          r.cstring();
          portalSql = statements.get(r.cstring()) ?? "";
          out.bindComplete();
          break;
        }
        case Frontend.describe: {
          const target = String.fromCharCode(r.byte());
          const sql = target === "S" ? statements.get(r.cstring()) ?? "" : portalSql;
          if (target === "S") out.parameterDescription([]);
          const a = answer(sql, s);
          if (a.fields.length > 0) out.rowDescription(a.fields);
          else out.noData();
          break;
        }
        case Frontend.execute: {
          const a = answer(portalSql, s);
          status = a.status ?? status;
          for (const row of a.rows) out.dataRow(row);
          out.commandComplete(a.command);
          break;
        }
        case Frontend.close:
          out.closeComplete();
          break;
        case Frontend.sync:
          out.readyForQuery(status);
          break;
        case Frontend.flush:
          break;
        default:
          out.errorResponse(
            new TesseraError("0A000", `fixture: message type '${msg.typeChar}' not supported`),
          ).readyForQuery(status);
      }
      if (reader.buffered === 0 && out.length > 0) await write(conn, out.take());
    }
  }

  /** Stops listening, closes every connection and waits for the connection tasks. */
  async stop(): Promise<void> {
    try {
      this.#listener.close();
    } catch {
      // already closed
    }
    await this.#acceptLoop;
    for (const conn of this.#conns) {
      try {
        conn.close();
      } catch {
        // already closed
      }
    }
    await Promise.allSettled([...this.#tasks]);
  }
}

async function write(conn: Deno.Conn, bytes: Uint8Array): Promise<void> {
  let done = 0;
  while (done < bytes.byteLength) done += await conn.write(bytes.subarray(done));
}

// ---- helpers for the front end's tests ----

/** Paths of a throwaway CA and a server certificate it signed. */
export interface TestCerts {
  /** Directory holding the files (remove it when done). */
  dir: string;
  /** The CA certificate (for `sslrootcert`). */
  caFile: string;
  /** The server certificate, CN=localhost, SAN DNS:localhost and IP:127.0.0.1. */
  certFile: string;
  /** The server certificate's key. */
  keyFile: string;
  /** A key that belongs to no certificate here. */
  otherKeyFile: string;
}

async function openssl(args: string[], cwd: string): Promise<void> {
  const out = await new Deno.Command("openssl", { args, cwd, stdout: "piped", stderr: "piped" })
    .output();
  if (!out.success) {
    throw new Error(`openssl ${args[0]} failed: ${new TextDecoder().decode(out.stderr)}`);
  }
}

/** Generates a CA and a server certificate for localhost / 127.0.0.1 with openssl. */
export async function makeTestCerts(): Promise<TestCerts> {
  const dir = await Deno.makeTempDir({ prefix: "tessera-frontend-certs-" });
  await openssl([
    "req",
    "-x509",
    "-newkey",
    "rsa:2048",
    "-nodes",
    "-keyout",
    "ca.key",
    "-out",
    "ca.pem",
    "-days",
    "2",
    "-subj",
    "/CN=Tessera test CA",
  ], dir);
  await openssl([
    "req",
    "-newkey",
    "rsa:2048",
    "-nodes",
    "-keyout",
    "server.key",
    "-out",
    "server.csr",
    "-subj",
    "/CN=localhost",
  ], dir);
  await Deno.writeTextFile(`${dir}/ext.cnf`, "subjectAltName=DNS:localhost,IP:127.0.0.1\n");
  await openssl([
    "x509",
    "-req",
    "-in",
    "server.csr",
    "-CA",
    "ca.pem",
    "-CAkey",
    "ca.key",
    "-CAcreateserial",
    "-out",
    "server.pem",
    "-days",
    "2",
    "-extfile",
    "ext.cnf",
  ], dir);
  await openssl([
    "genpkey",
    "-algorithm",
    "EC",
    "-pkeyopt",
    "ec_paramgen_curve:P-256",
    "-out",
    "other.key",
  ], dir);
  return {
    dir,
    caFile: `${dir}/ca.pem`,
    certFile: `${dir}/server.pem`,
    keyFile: `${dir}/server.key`,
    otherKeyFile: `${dir}/other.key`,
  };
}

/** Output of a client program run by a test. */
export interface RunOutput {
  /** Exit code. */
  code: number;
  /** Standard output. */
  stdout: string;
  /** Standard error. */
  stderr: string;
}

/** Runs `program` with `args` and extra environment; never throws for a non-zero exit. */
export async function run(
  program: string,
  args: string[],
  env: Record<string, string> = {},
): Promise<RunOutput> {
  const out = await new Deno.Command(program, {
    args,
    env: { PGCONNECT_TIMEOUT: "10", PGSSLMODE: "disable", ...env },
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).output();
  const dec = new TextDecoder();
  return { code: out.code, stdout: dec.decode(out.stdout), stderr: dec.decode(out.stderr) };
}

/** A connection that speaks raw startup-phase bytes, for protocol tests. */
export class RawClient {
  readonly conn: Deno.Conn;
  #timedOut = false;

  private constructor(conn: Deno.Conn) {
    this.conn = conn;
  }

  /** Connects to 127.0.0.1:`port`. */
  static async connect(port: number): Promise<RawClient> {
    return new RawClient(await Deno.connect({ hostname: "127.0.0.1", port }));
  }

  /** Sends `bytes`. */
  async send(bytes: Uint8Array): Promise<void> {
    await write(this.conn, bytes);
  }

  /** Reads up to `n` bytes or until the server closes: what arrives within `timeoutMs`. */
  async read(n: number, timeoutMs = 5000): Promise<Uint8Array> {
    const buf = new Uint8Array(n);
    let got = 0;
    const timer = setTimeout(() => {
      this.#timedOut = true;
      this.close();
    }, timeoutMs);
    try {
      while (got < n) {
        const k = await this.conn.read(buf.subarray(got)).catch(() => null);
        if (k === null) break;
        got += k;
      }
    } finally {
      clearTimeout(timer);
    }
    return buf.subarray(0, got);
  }

  /**
   * Reads typed messages until ReadyForQuery, ErrorResponse or an authentication request that
   * needs an answer (inclusive), or the end of the connection; returns them as [type char,
   * payload] pairs.
   */
  async messages(timeoutMs = 5000): Promise<[string, Uint8Array][]> {
    const out: [string, Uint8Array][] = [];
    for (;;) {
      const head = await this.read(5, timeoutMs);
      if (head.byteLength < 5) return out;
      const length = new DataView(head.buffer, head.byteOffset).getInt32(1);
      const payload = await this.read(length - 4, timeoutMs);
      const type = String.fromCharCode(head[0]!);
      out.push([type, payload]);
      if (type === "Z" || type === "E") return out;
      // An authentication request that waits for the client's answer.
      if (type === "R" && payload.byteLength >= 4 && [3, 5, 10, 11].includes(payload[3]!)) {
        return out;
      }
    }
  }

  /**
   * Whether the server closes the connection within `timeoutMs` (anything it sends first is
   * skipped).
   */
  async closedByServer(timeoutMs = 5000): Promise<boolean> {
    this.#timedOut = false;
    while ((await this.read(4096, timeoutMs)).byteLength === 4096);
    return !this.#timedOut;
  }

  /** Closes the connection. */
  close(): void {
    try {
      this.conn.close();
    } catch {
      // already closed
    }
  }
}

/** The fields of an ErrorResponse payload, by one-letter code. */
export function errorFields(payload: Uint8Array): Record<string, string> {
  const r = new PayloadReader(payload, "ErrorResponse");
  const fields: Record<string, string> = {};
  for (let type = r.byte(); type !== 0; type = r.byte()) {
    fields[String.fromCharCode(type)] = r.cstring();
  }
  return fields;
}
