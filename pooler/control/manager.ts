/**
 * Instance management for orch: the pooler's PoolerManagerService initialises its Postgres as a
 * primary or as a streaming replica, starts it, repoints it, sets its durability and promotes it,
 * all through the pgctld that owns the instance (the only process allowed to run Postgres's
 * binaries), and reports what pgctld and Postgres say about replication.
 *
 * @module
 */

import type { ConnectRouter } from "@connectrpc/connect";
import type { MessageInitShape } from "@bufbuild/protobuf";
import {
  AuthMethod,
  PgctldService,
  type Status,
  StopMode,
} from "../../proto/gen/tessera/pgctld/v1/pgctld_pb.ts";
import {
  type ManagerStatusResponseSchema,
  PoolerManagerService,
} from "../../proto/gen/tessera/pooler/v1/pooler_pb.ts";
import { SqlState, TesseraError } from "../../shared/errors/mod.ts";
import type { Logger } from "../../shared/log/mod.ts";
import { type Client, createRpcClient } from "../../shared/rpc/mod.ts";
import type { PostgresProbe } from "./postgres_probe.ts";
import { postgresState } from "./service.ts";

/** How long Postgres may take to start or promote, in seconds. */
const START_WAIT_SECONDS = 60;
/** How long a base backup may take, in seconds. */
const BASE_BACKUP_WAIT_SECONDS = 600;

/** What pgctld says about the instance, or why it could not be asked. */
export type PgctldView =
  | { ok: true; status: Status }
  | { ok: false; error: string };

/** The instance manager of one pooler. */
export class InstanceManager {
  readonly #alias: string;
  readonly #pgctld: Client<typeof PgctldService> | undefined;
  readonly #probe: PostgresProbe;
  readonly #log: Logger;
  readonly #onRoleChange: (() => Promise<void>) | undefined;
  /** One management operation at a time: orch never needs two, and they must not interleave. */
  #busy: Promise<unknown> = Promise.resolve();

  /** A manager for the Postgres owned by the pgctld at `pgctldAddress` (none: unmanaged). */
  constructor(options: {
    alias: string;
    pgctldAddress: string | undefined;
    probe: PostgresProbe;
    logger: Logger;
    onRoleChange?: () => Promise<void>;
  }) {
    this.#onRoleChange = options.onRoleChange;
    this.#alias = options.alias;
    this.#pgctld = options.pgctldAddress !== undefined
      ? createRpcClient(PgctldService, `http://${options.pgctldAddress}`)
      : undefined;
    this.#probe = options.probe;
    this.#log = options.logger;
  }

  /** Whether a pgctld manages the instance. */
  get managed(): boolean {
    return this.#pgctld !== undefined;
  }

  #client(): Client<typeof PgctldService> {
    if (this.#pgctld === undefined) {
      throw new TesseraError(
        SqlState.objectNotInPrerequisiteState,
        `pooler ${this.#alias} does not manage its Postgres`,
        { hint: "start the pooler with --pgctld-address HOST:PORT" },
      );
    }
    return this.#pgctld;
  }

  #exclusive<T>(what: string, fn: () => Promise<T>): Promise<T> {
    const run = this.#busy.then(async () => {
      const started = performance.now();
      this.#log.info("instance operation", { operation: what });
      try {
        const result = await fn();
        this.#log.info("instance operation done", {
          operation: what,
          ms: Math.round(performance.now() - started),
        });
        return result;
      } catch (err) {
        this.#log.warn("instance operation failed", { operation: what, err });
        throw err;
      }
    });
    this.#busy = run.catch(() => {});
    return run;
  }

  /** What pgctld says now; never throws. */
  async pgctld(): Promise<PgctldView> {
    if (this.#pgctld === undefined) return { ok: false, error: "no pgctld configured" };
    try {
      const res = await this.#pgctld.status({}, { timeoutMs: 5000 });
      if (res.status === undefined) return { ok: false, error: "pgctld returned no status" };
      return { ok: true, status: res.status };
    } catch (err) {
      return { ok: false, error: TesseraError.from(err).message };
    }
  }

  /** Postgres's TCP address as pgctld reports it, for the topo record; undefined when unknown. */
  async postgresAddress(): Promise<string | undefined> {
    const view = await this.pgctld();
    return view.ok ? addressOf(view.status) : undefined;
  }

  /** The management view orch reads. */
  async status(): Promise<MessageInitShape<typeof ManagerStatusResponseSchema>> {
    const [view, pg] = await Promise.all([this.pgctld(), this.#probe.probe()]);
    const out: MessageInitShape<typeof ManagerStatusResponseSchema> = {
      alias: this.#alias,
      managed: this.managed,
      postgres: postgresState(pg),
    };
    if (view.ok) {
      const s = view.status;
      Object.assign(out, {
        initialized: s.initialized,
        running: s.running,
        standby: s.standby,
        primaryHost: s.primaryHost,
        primaryPort: s.primaryPort,
        postgresAddress: addressOf(s) ?? "",
      });
    } else {
      out.pgctldError = view.error;
    }
    if (!pg.reachable) return out;
    try {
      if (pg.role === "primary") {
        const rows = await this.#probe.query(
          `select coalesce(application_name, ''), coalesce(state, ''), coalesce(sync_state, ''),
             coalesce(flush_lsn::text, ''), coalesce(replay_lsn::text, ''),
             current_setting('synchronous_standby_names')
           from (select 1) one left join pg_stat_replication on true`,
        );
        out.synchronousStandbyNames = rows[0]?.[5] ?? "";
        out.standbys = rows.filter((r) => (r[0] ?? "") !== "" || (r[1] ?? "") !== "").map((r) => ({
          applicationName: r[0] ?? "",
          state: r[1] ?? "",
          syncState: r[2] ?? "",
          flushLsn: r[3] ?? "",
          replayLsn: r[4] ?? "",
        }));
        out.databases = (await this.#probe.query(
          "select datname from pg_database where not datistemplate order by 1",
        )).map((r) => r[0] ?? "");
      } else if (pg.role === "replica") {
        const rows = await this.#probe.query(
          `select coalesce(status, ''), coalesce(sender_host || ':' || sender_port, '')
           from (select 1) one left join pg_stat_wal_receiver on true`,
        );
        out.walReceiverStatus = rows[0]?.[0] ?? "";
        out.walReceiverSender = rows[0]?.[1] ?? "";
      }
    } catch (err) {
      out.pgctldError ||= `replication query failed: ${TesseraError.from(err).message}`;
    }
    return out;
  }

  /** Initialises an empty instance as a new primary and starts it; resolves with its LSN. */
  initPrimary(): Promise<string> {
    return this.#exclusive("init primary", async () => {
      const pgctld = this.#client();
      const { status } = await pgctld.status({});
      if (status?.initialized) {
        throw new TesseraError(
          SqlState.objectNotInPrerequisiteState,
          `the Postgres of pooler ${this.#alias} is already initialised`,
          { hint: "only an empty instance becomes a new primary" },
        );
      }
      await pgctld.initDataDir(
        { authMethod: AuthMethod.LOCAL_TRUST_TCP_SCRAM },
        { timeoutMs: START_WAIT_SECONDS * 1000 },
      );
      // WAL kept for pg_rewind of a former primary, and a WAL receiver that notices a dead
      // primary within seconds; replicas inherit both from the base backup.
      await pgctld.start(
        {
          waitSeconds: START_WAIT_SECONDS,
          settings: { wal_keep_size: "1GB", wal_receiver_timeout: "5s" },
        },
        { timeoutMs: (START_WAIT_SECONDS + 5) * 1000 },
      );
      await this.#roleChanged();
      return this.#probe.last.lsn;
    });
  }

  /** Builds the instance as a streaming replica of `host:port` and starts it. */
  initReplica(host: string, port: number, replaceExisting: boolean): Promise<void> {
    return this.#exclusive(`init replica of ${host}:${port}`, async () => {
      const pgctld = this.#client();
      await pgctld.initReplica(
        {
          primaryHost: host,
          primaryPort: port,
          applicationName: this.#alias,
          replaceExisting,
          waitSeconds: START_WAIT_SECONDS,
        },
        { timeoutMs: BASE_BACKUP_WAIT_SECONDS * 1000 },
      );
      await this.#start(pgctld);
    });
  }

  /** Starts an initialised instance (in the role its data gives it) unless it runs. */
  startPostgres(): Promise<void> {
    return this.#exclusive("start postgres", async () => {
      const pgctld = this.#client();
      const { status } = await pgctld.status({});
      if (status?.running) return;
      await this.#start(pgctld);
    });
  }

  async #start(pgctld: Client<typeof PgctldService>): Promise<void> {
    await pgctld.start(
      { waitSeconds: START_WAIT_SECONDS },
      { timeoutMs: (START_WAIT_SECONDS + 5) * 1000 },
    );
    await this.#roleChanged();
  }

  /** Probes Postgres again and rewrites the topo record at once, so gateways see the role. */
  async #roleChanged(): Promise<void> {
    await this.#probe.probe();
    try {
      await this.#onRoleChange?.();
    } catch (err) {
      this.#log.warn("could not refresh the topo record after a change of role", { err });
    }
  }

  /**
   * Stops Postgres: at once (`immediate`, for fencing), or after waiting up to `drainSeconds` for
   * open client transactions to end and then fast. Resolves with the WAL position read just
   * before the stop (empty when it could not be read).
   */
  stopPostgres(immediate: boolean, drainSeconds: number): Promise<string> {
    return this.#exclusive(immediate ? "stop postgres immediately" : "stop postgres", async () => {
      const pgctld = this.#client();
      const { status } = await pgctld.status({});
      if (!status?.running) return "";
      const deadline = Date.now() + Math.max(0, drainSeconds) * 1000;
      let lsn = "";
      if (!immediate) {
        for (;;) {
          try {
            const rows = await this.#probe.query(
              `select count(*) filter (where backend_type = 'client backend'
                 and xact_start is not null and pid <> pg_backend_pid()),
                 case when pg_is_in_recovery() then '' else pg_current_wal_lsn()::text end
               from pg_stat_activity`,
            );
            lsn = rows[0]?.[1] ?? "";
            if (Number(rows[0]?.[0] ?? 0) === 0 || Date.now() >= deadline) break;
          } catch {
            break;
          }
          await new Promise((r) => setTimeout(r, 50));
        }
      }
      this.#probe.close();
      await pgctld.stop(
        { mode: immediate ? StopMode.IMMEDIATE : StopMode.FAST, waitSeconds: START_WAIT_SECONDS },
        { timeoutMs: (START_WAIT_SECONDS + 5) * 1000 },
      );
      await this.#roleChanged();
      return lsn;
    });
  }

  /** Rewinds a former primary onto the primary at `host:port` and starts it as its replica. */
  rewind(host: string, port: number): Promise<void> {
    return this.#exclusive(`rewind onto ${host}:${port}`, async () => {
      const pgctld = this.#client();
      const { status } = await pgctld.status({});
      if (status?.running) {
        this.#probe.close();
        await pgctld.stop({ mode: StopMode.FAST, waitSeconds: START_WAIT_SECONDS });
      }
      await pgctld.rewind(
        {
          primaryHost: host,
          primaryPort: port,
          applicationName: this.#alias,
          waitSeconds: BASE_BACKUP_WAIT_SECONDS,
        },
        { timeoutMs: BASE_BACKUP_WAIT_SECONDS * 1000 },
      );
      await this.#start(pgctld);
    });
  }

  /** Repoints a replica at the primary `host:port`. */
  setReplicationSource(host: string, port: number): Promise<void> {
    return this.#exclusive(`repoint to ${host}:${port}`, async () => {
      await this.#client().setReplicationSource({
        primaryHost: host,
        primaryPort: port,
        applicationName: this.#alias,
      });
    });
  }

  /** Sets `synchronous_standby_names` (and `synchronous_commit = on`) on the primary. */
  setDurability(names: string): Promise<void> {
    return this.#exclusive(`set synchronous_standby_names = '${names}'`, async () => {
      await this.#client().reloadConfig({
        settings: { synchronous_standby_names: names, synchronous_commit: "on" },
      });
    });
  }

  /** Creates database `name` on this primary unless it exists. */
  createDatabase(name: string): Promise<void> {
    return this.#exclusive(`create database ${name}`, async () => {
      if (!/^[A-Za-z0-9_][A-Za-z0-9_.-]{0,62}$/.test(name)) {
        throw new TesseraError(SqlState.invalidParameterValue, `invalid database name: '${name}'`);
      }
      const rows = await this.#probe.query(
        `select 1 from pg_database where datname = '${name}'`,
      );
      if (rows.length > 0) return;
      await this.#probe.query(`create database "${name}"`);
    });
  }

  /** Promotes a replica; resolves with its LSN as a primary. */
  promote(): Promise<string> {
    return this.#exclusive("promote", async () => {
      await this.#client().promote(
        { waitSeconds: START_WAIT_SECONDS },
        { timeoutMs: (START_WAIT_SECONDS + 5) * 1000 },
      );
      await this.#roleChanged();
      return this.#probe.last.lsn;
    });
  }
}

function addressOf(s: Status): string | undefined {
  if (s.listenAddress === "" || s.port === 0) return undefined;
  const host = s.listenAddress.split(",")[0]!.trim();
  if (host === "" || host === "*" || host === "0.0.0.0") return `127.0.0.1:${s.port}`;
  if (host === "::") return `[::1]:${s.port}`;
  return host.includes(":") ? `[${host}]:${s.port}` : `${host}:${s.port}`;
}

/** Registers the PoolerManagerService for `manager` on a Connect router. */
export function registerManagerService(router: ConnectRouter, manager: InstanceManager): void {
  router.service(PoolerManagerService, {
    managerStatus: () => manager.status(),
    initPrimary: async () => ({ lsn: await manager.initPrimary() }),
    initReplica: async (req) => {
      if (req.primaryHost === "" || req.primaryPort <= 0) {
        throw new TesseraError(
          SqlState.invalidParameterValue,
          "give primary_host and primary_port",
        );
      }
      await manager.initReplica(req.primaryHost, req.primaryPort, req.replaceExisting);
      return {};
    },
    startPostgres: async () => {
      await manager.startPostgres();
      return {};
    },
    setReplicationSource: async (req) => {
      if (req.primaryHost === "" || req.primaryPort <= 0) {
        throw new TesseraError(
          SqlState.invalidParameterValue,
          "give primary_host and primary_port",
        );
      }
      await manager.setReplicationSource(req.primaryHost, req.primaryPort);
      return {};
    },
    setDurability: async (req) => {
      await manager.setDurability(req.synchronousStandbyNames);
      return {};
    },
    promote: async () => ({ lsn: await manager.promote() }),
    createDatabase: async (req) => {
      await manager.createDatabase(req.name);
      return {};
    },
    stopPostgres: async (req) => ({
      lastLsn: await manager.stopPostgres(req.immediate, req.drainSeconds),
    }),
    rewind: async (req) => {
      if (req.primaryHost === "" || req.primaryPort <= 0) {
        throw new TesseraError(
          SqlState.invalidParameterValue,
          "give primary_host and primary_port",
        );
      }
      await manager.rewind(req.primaryHost, req.primaryPort);
      return {};
    },
  });
}
