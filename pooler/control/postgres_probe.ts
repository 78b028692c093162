/**
 * What the pooler's Postgres says about itself (role, WAL positions, lag, version), read over
 * one control connection that is reopened when it breaks.
 *
 * @module
 */

import { TesseraError } from "../../shared/errors/mod.ts";
import type { Logger } from "../../shared/log/mod.ts";
import { PgClient } from "../../shared/wire/mod.ts";

/** Where the control connection goes. */
export interface ProbeTarget {
  /** Unix socket folder, or undefined for TCP. */
  socketDir?: string | undefined;
  /** TCP host when no socket folder is given. */
  host?: string | undefined;
  /** Postgres port. */
  port: number;
  /** User of the control connection. */
  user: string;
  /** Password, when Postgres asks for one. */
  password?: string | undefined;
}

/** Postgres's state as the probe last saw it. */
export interface PostgresProbeState {
  /** Whether the last probe reached Postgres. */
  reachable: boolean;
  /** `primary`, `replica`, or `unknown` when unreachable. */
  role: "primary" | "replica" | "unknown";
  /** Primary: current WAL LSN; replica: last replayed LSN. */
  lsn: string;
  /** Replica: last received LSN. */
  receiveLsn: string;
  /** Replica: seconds behind its primary (0 when caught up or primary). */
  lagSeconds: number;
  /** `server_version`. */
  serverVersion: string;
  /** Why the last probe failed, if it did. */
  error: string;
}

const PROBE_SQL = `select pg_is_in_recovery(),
  case when pg_is_in_recovery() then pg_last_wal_replay_lsn() else pg_current_wal_lsn() end,
  pg_last_wal_receive_lsn(),
  case when not pg_is_in_recovery() or pg_last_wal_receive_lsn() = pg_last_wal_replay_lsn()
    then 0 else coalesce(extract(epoch from now() - pg_last_xact_replay_timestamp()), 0) end,
  current_setting('server_version')`;

/** Probes one Postgres on demand, keeping one control connection. */
export class PostgresProbe {
  #target: ProbeTarget;
  #log: Logger;
  #client: PgClient | undefined;
  #last: PostgresProbeState = {
    reachable: false,
    role: "unknown",
    lsn: "",
    receiveLsn: "",
    lagSeconds: 0,
    serverVersion: "",
    error: "not probed yet",
  };

  /** Creates a probe for `target`. */
  constructor(target: ProbeTarget, logger: Logger) {
    this.#target = target;
    this.#log = logger;
  }

  /** The state seen by the last probe. */
  get last(): PostgresProbeState {
    return this.#last;
  }

  async #connect(): Promise<PgClient> {
    return this.#client ??= await PgClient.connect({
      ...(this.#target.socketDir !== undefined
        ? { socketDir: this.#target.socketDir }
        : { host: this.#target.host ?? "127.0.0.1" }),
      port: this.#target.port,
      user: this.#target.user,
      database: "postgres",
      applicationName: "tessera-pooler-probe",
      connectTimeoutMs: 5000,
      ...(this.#target.password !== undefined ? { password: this.#target.password } : {}),
    });
  }

  /**
   * Runs `sql` (one statement) on the control connection and returns its rows as text; throws a
   * TesseraError when Postgres cannot be reached or refuses. A broken connection is reopened on
   * the next call.
   */
  async query(sql: string): Promise<(string | null)[][]> {
    try {
      const [result] = await (await this.#connect()).query(sql);
      return result?.rows ?? [];
    } catch (err) {
      if (this.#client?.closed !== false) this.close();
      throw err;
    }
  }

  /** Queries Postgres now and returns its state; never throws. */
  async probe(): Promise<PostgresProbeState> {
    try {
      const [result] = await (await this.#connect()).query(PROBE_SQL);
      const row = result?.rows[0];
      if (row === undefined) throw new Error("the probe query returned no row");
      const inRecovery = row[0] === "t";
      this.#last = {
        reachable: true,
        role: inRecovery ? "replica" : "primary",
        lsn: row[1] ?? "",
        receiveLsn: row[2] ?? "",
        lagSeconds: Number(row[3] ?? 0),
        serverVersion: row[4] ?? "",
        error: "",
      };
    } catch (err) {
      const message = TesseraError.from(err).message;
      if (this.#last.reachable || this.#last.error !== message) {
        this.#log.warn("postgres probe failed", { err });
      }
      this.#client?.close();
      this.#client = undefined;
      this.#last = { ...this.#last, reachable: false, role: "unknown", error: message };
    }
    return this.#last;
  }

  /** Closes the control connection. */
  close(): void {
    this.#client?.close();
    this.#client = undefined;
  }
}
