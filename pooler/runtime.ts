/**
 * A whole pooler process from its configuration: client authentication, the data path
 * ({@linkcode startPooler}), the Postgres probe, the HTTP server with status endpoints and the
 * Connect service, and, in a cluster, its record in the cell topo under a lease.
 *
 * @module
 */

import { hostname as osHostname } from "node:os";
import { SqlState, TesseraError } from "../shared/errors/mod.ts";
import { type FastNet, openFastNet } from "../shared/fastnet/mod.ts";
import {
  type FrontendAuth,
  type LoadedFrontendTls,
  loadFrontendTls,
} from "../shared/frontend/mod.ts";
import { createStatusApp, serveComponent, type ServedComponent } from "../shared/http/mod.ts";
import { Logger, type LogSink } from "../shared/log/mod.ts";
import { createRpcHandler } from "../shared/rpc/mod.ts";
import { CleanupStack } from "../shared/proc/mod.ts";
import type { PoolerRecord, TopoClient, TopoRegistration } from "../shared/topo/mod.ts";
import type { PoolerConfig } from "./config.ts";
import { splitHostPort } from "../shared/config/mod.ts";
import {
  authQueryLookup,
  loadUsersFile,
  poolerAuth,
  type VerifierLookup,
} from "./control/users.ts";
import { PostgresProbe, type ProbeTarget } from "./control/postgres_probe.ts";
import { type PoolerIdentity, registerPoolerService } from "./control/service.ts";
import { InstanceManager, registerManagerService } from "./control/manager.ts";
import { type PoolerOptions, type PoolerServer, startPooler, type WorkerPlace } from "./server.ts";
import { detachSession, stdinClosed, WorkerSet, workerSizes, type WorkerSpec } from "./workers.ts";

/**
 * The topo module, loaded only when topo is configured: etcd's client brings gRPC and protobufjs,
 * about 40 MB of memory and a few hundred ms of start-up that a standalone pooler does not need.
 */
function loadTopo(): Promise<typeof import("../shared/topo/mod.ts")> {
  return import("../shared/topo/mod.ts");
}

export { POOLER_VERSION } from "./version.ts";
import { POOLER_VERSION } from "./version.ts";

/** How often the pooler re-reads Postgres's role for its topo record. */
const ROLE_CHECK_MS = 2000;

/** A running pooler process. */
export interface PoolerRuntime {
  /** The data path. */
  pooler: PoolerServer;
  /** The HTTP server (Connect + status). */
  http: ServedComponent;
  /** The topo connection, in a cluster. */
  topo: TopoClient | undefined;
  /** Stops everything: topo record, HTTP, clients (57P01) and backends. */
  shutdown(): Promise<void>;
}

/** Where the pooler's control connections to its Postgres go (status probe, auth query). */
function controlTarget(config: PoolerConfig): ProbeTarget {
  return {
    socketDir: config.postgresSocketDir,
    host: config.postgresHost,
    port: config.postgresPort,
    user: config.controlUser,
    password: config.postgresPassword,
  };
}

/** What a reload (SIGHUP, or the admin console's RELOAD) reads again. */
interface Reloadable {
  /** Users of `--auth-file`, as last read. */
  fromFile: Awaited<ReturnType<typeof loadUsersFile>> | undefined;
}

async function verifierLookup(
  config: PoolerConfig,
  topo: TopoClient | undefined,
  state: Reloadable,
  logger: Logger,
  cleanups: CleanupStack,
): Promise<VerifierLookup> {
  state.fromFile = config.authFile !== undefined ? await loadUsersFile(config.authFile) : undefined;
  let fromPostgres: ((user: string) => Promise<string | undefined>) | undefined;
  if (config.authQuery !== undefined) {
    // A control connection of its own (the status probe's may be slow to answer).
    const control = new PostgresProbe(controlTarget(config), logger);
    cleanups.push(() => control.close());
    fromPostgres = authQueryLookup(
      config.authQuery,
      (sql) => control.query(sql),
      (user) =>
        logger.warn("the auth query gave no SCRAM verifier: the user cannot log in", { user }),
    );
  }
  return async (user) => {
    const local = state.fromFile?.get(user);
    if (local !== undefined) return local;
    if (fromPostgres !== undefined) {
      const v = await fromPostgres(user);
      if (v !== undefined || topo === undefined) return v;
    }
    if (topo === undefined) return undefined;
    return (await topo.global.users.get(user))?.value.scramVerifier;
  };
}

/**
 * The data path's options from the configuration, for worker `index` of `count` (0 of 1 for a
 * lone pooler): everything but the addresses and the worker's place.
 */
function dataPathOptions(
  config: PoolerConfig,
  count: number,
  index: number,
  parts: { auth: FrontendAuth; tls?: LoadedFrontendTls; fastNet?: FastNet; logger: Logger },
): PoolerOptions {
  const sizes = workerSizes(config, count, index);
  return {
    postgres: {
      port: config.postgresPort,
      ...(config.postgresSocketDir !== undefined
        ? { socketDir: config.postgresSocketDir }
        : { host: config.postgresHost ?? "127.0.0.1" }),
      ...(config.postgresPassword !== undefined ? { password: config.postgresPassword } : {}),
    },
    poolSize: sizes.poolSize,
    minPoolSize: sizes.minPoolSize,
    reservePoolSize: sizes.reservePoolSize,
    adminUsers: config.adminUsers,
    maxClientConnections: sizes.maxClientConn,
    idleTimeoutMs: config.idleTimeout * 1000,
    idleTransactionTimeoutMs: config.idleTransactionTimeout * 1000,
    maxLifetimeMs: config.maxLifetime * 1000,
    queueTimeoutMs: config.queueTimeout * 1000,
    preparedStatementCacheSize: config.preparedCacheSize,
    deferBegin: config.deferBegin === "on",
    drainTimeoutMs: config.drainTimeout * 1000,
    auth: parts.auth,
    ...(parts.tls !== undefined ? { tls: parts.tls } : {}),
    ...(parts.fastNet !== undefined ? { fastNet: parts.fastNet } : {}),
    logger: parts.logger,
  };
}

/**
 * Reads the auth file and the TLS certificate and key again, for this process's new connections
 * (sessions already open keep theirs). What fails to load is reported and the old stays; throws a
 * TesseraError (F0000) naming what failed, after applying the rest.
 */
async function reloadFiles(
  config: PoolerConfig,
  state: Reloadable,
  pooler: PoolerServer,
  logger: Logger,
): Promise<void> {
  const failed: string[] = [];
  if (config.authFile !== undefined) {
    try {
      state.fromFile = await loadUsersFile(config.authFile);
    } catch (err) {
      failed.push(`the auth file: ${(err as Error).message}`);
    }
  }
  if (config.tlsCert !== undefined && config.tlsKey !== undefined) {
    try {
      pooler.setTls(loadFrontendTls({ certFile: config.tlsCert, keyFile: config.tlsKey }));
    } catch (err) {
      failed.push(`the TLS files: ${(err as Error).message}`);
    }
  }
  if (failed.length > 0) {
    logger.error("reload failed; the previous version stays in use", { failed });
    throw new TesseraError(SqlState.configFileError, `reload failed: ${failed.join("; ")}`);
  }
  logger.info("reloaded the auth file and TLS certificate", {
    users: state.fromFile?.size,
    tls: config.tlsCert !== undefined,
  });
}

/** Calls `reload` on every SIGHUP until `stop` is called. */
function onHangup(reload: () => Promise<void>): () => void {
  const listener = () => void reload().catch(() => {});
  Deno.addSignalListener("SIGHUP", listener);
  return () => Deno.removeSignalListener("SIGHUP", listener);
}

/** Starts a pooler process from `config`. */
export async function runPooler(
  config: PoolerConfig,
  options: { sink?: LogSink } = {},
): Promise<PoolerRuntime> {
  const logger = new Logger({
    component: "pooler",
    alias: config.alias,
    level: config.logLevel,
    ...(options.sink ? { sink: options.sink } : {}),
  });
  const tls = config.tlsCert !== undefined && config.tlsKey !== undefined
    ? loadFrontendTls({ certFile: config.tlsCert, keyFile: config.tlsKey })
    : undefined;
  const topo = config.topoEndpoints.length > 0
    ? await (await loadTopo()).TopoClient.connect({
      endpoints: config.topoEndpoints,
      root: config.topoRoot,
      logger,
    })
    : undefined;
  const cleanups = new CleanupStack();
  try {
    if (topo !== undefined) cleanups.push(() => topo.close());
    const reloadable: Reloadable = { fromFile: undefined };
    const auth: FrontendAuth = poolerAuth(
      config.auth,
      await verifierLookup(config, topo, reloadable, logger, cleanups),
    );
    const fastNet = chooseIo(config.io, logger);
    let place: WorkerPlace | undefined;
    if (config.workers > 1) {
      if (fastNet === undefined) throw new Error("--workers above 1 needs the fast socket path");
      const dir = await Deno.makeTempDir({ prefix: "tessera-pooler-" });
      await Deno.chmod(dir, 0o700);
      cleanups.push(() => Deno.remove(dir, { recursive: true }).catch(() => undefined));
      place = { index: 0, count: config.workers, dir };
    }
    // The other workers start first: worker 0 listens once they can take their share.
    let workers: WorkerSet | undefined;
    if (place !== undefined) {
      workers = new WorkerSet(config, place.count, place.dir, logger);
      const started = workers;
      // Children drain as this process does; the last ones are killed after the drain timeout.
      cleanups.push(() => started.stop(config.drainTimeout * 1000 + 5000));
    }
    const pooler = await startPooler({
      ...dataPathOptions(config, config.workers, 0, {
        auth,
        ...(tls !== undefined ? { tls } : {}),
        ...(fastNet !== undefined ? { fastNet } : {}),
        logger,
      }),
      listen: config.listen,
      ...(config.unixSocketDir !== undefined ? { unixSocketDir: config.unixSocketDir } : {}),
      ...(place !== undefined ? { worker: place } : {}),
      onReload: () => reload(),
    });
    cleanups.push(() => pooler.shutdown());
    // SIGHUP (or RELOAD in the admin console): the auth file and TLS files again, here and in
    // every worker.
    const reload = async () => {
      workers?.signal("SIGHUP");
      await reloadFiles(config, reloadable, pooler, logger);
    };
    cleanups.push(onHangup(reload));

    const probe = new PostgresProbe(controlTarget(config), logger);
    cleanups.push(() => probe.close());
    let registration: TopoRegistration<PoolerRecord> | undefined;
    const manager = new InstanceManager({
      alias: config.alias,
      pgctldAddress: config.pgctldAddress,
      probe,
      logger,
      onRoleChange: async () => await registration?.refresh(),
    });
    const identity: PoolerIdentity = {
      alias: config.alias,
      cell: topo !== undefined ? config.cell : "",
      keyspace: config.keyspace,
      shard: config.shard,
      type: config.type,
    };
    const app = createStatusApp({
      component: "pooler",
      alias: config.alias,
      version: POOLER_VERSION,
      logger,
      ready: async () => (await probe.probe()).reachable,
      status: async () => ({
        identity,
        postgres: await probe.probe(),
        managed: manager.managed,
        ...(await pooler.allStats()),
        ...(workers !== undefined ? { workerPids: Object.fromEntries(workers.pids) } : {}),
        // The fast socket path's loop: Deno's turns on this thread, waits on a worker thread.
        ...(fastNet !== undefined ? { fastIo: fastNet.reactor.rounds } : {}),
      }),
    });
    const rpc = createRpcHandler(
      (router) => {
        registerPoolerService(router, pooler, probe, identity);
        registerManagerService(router, manager);
      },
      { logger },
    );
    const http = await serveComponent({ ...splitHostPort(config.httpListen), app, rpc, logger });
    cleanups.push(() => http.shutdown());

    if (topo !== undefined) {
      const { TopoRegistration } = await loadTopo();
      registration = new TopoRegistration<PoolerRecord>({
        store: async () => (await topo.cell(config.cell)).poolers,
        record: () => poolerRecord(config, pooler, probe, manager),
        ttlSeconds: config.leaseTtl,
        intervalMs: ROLE_CHECK_MS,
        logger,
      });
      registration.start();
      const registered = registration;
      cleanups.push(() => registered.stop());
    }
    logger.info("pooler serving", {
      listen: pooler.addresses.map((a) =>
        "hostname" in a ? `${a.hostname}:${a.port}` : "path" in a ? a.path : a.transport
      ),
      http: http.url,
      standalone: topo === undefined,
    });
    return { pooler, http, topo, shutdown: () => cleanups.run() };
  } catch (err) {
    await cleanups.run();
    throw err;
  }
}

/**
 * A child worker (see pooler/workers.ts): the data path only, for the client connections the
 * first process hands it, with its share of the sizes. It stops when its standard input ends (the first
 * process stops it that way, and a first process that dies ends it too) or on SIGINT/SIGTERM.
 * Resolves to the process's exit code.
 */
export async function runWorker(
  spec: WorkerSpec,
  options: { sink?: LogSink } = {},
): Promise<number> {
  const config = spec.config;
  const logger = new Logger({
    component: "pooler",
    alias: `${config.alias}/${spec.index}`,
    level: config.logLevel,
    ...(options.sink ? { sink: options.sink } : {}),
  });
  const detached = detachSession();
  if (detached !== undefined) {
    logger.warn("worker stays in the first process's session", { reason: detached });
  }
  const tls = config.tlsCert !== undefined && config.tlsKey !== undefined
    ? loadFrontendTls({ certFile: config.tlsCert, keyFile: config.tlsKey })
    : undefined;
  const topo = config.topoEndpoints.length > 0 && config.auth === "scram-sha-256"
    ? await (await loadTopo()).TopoClient.connect({
      endpoints: config.topoEndpoints,
      root: config.topoRoot,
      logger,
    })
    : undefined;
  const fastNet = chooseIo(config.io === "auto" ? "fast" : config.io, logger);
  let pooler: PoolerServer;
  const reloadable: Reloadable = { fromFile: undefined };
  const cleanups = new CleanupStack();
  try {
    const auth = poolerAuth(
      config.auth,
      await verifierLookup(config, topo, reloadable, logger, cleanups),
    );
    pooler = await startPooler({
      ...dataPathOptions(config, spec.count, spec.index, {
        auth,
        ...(tls !== undefined ? { tls } : {}),
        ...(fastNet !== undefined ? { fastNet } : {}),
        logger,
      }),
      worker: { index: spec.index, count: spec.count, dir: spec.dir },
      // RELOAD in a worker's console: the first process reloads, and signals every worker.
      onReload: () => {
        // The first process is this worker's parent, unless it died (then this worker is ending).
        if (Deno.ppid <= 1) {
          return Promise.reject(
            new TesseraError(SqlState.adminShutdown, "the pooler's first process is gone"),
          );
        }
        Deno.kill(Deno.ppid, "SIGHUP");
        return Promise.resolve();
      },
    });
  } catch (err) {
    logger.error("worker could not start", { error: err });
    await cleanups.run();
    topo?.close();
    return 1;
  }
  logger.info("pooler worker serving", { worker: spec.index, of: spec.count });
  const stop = Promise.withResolvers<void>();
  const signals = ["SIGINT", "SIGTERM"] as const;
  const onSignal = () => stop.resolve();
  for (const signal of signals) Deno.addSignalListener(signal, onSignal);
  void stdinClosed().then(onSignal);
  const stopHangup = onHangup(() => reloadFiles(config, reloadable, pooler, logger));
  await stop.promise;
  stopHangup();
  for (const signal of signals) Deno.removeSignalListener(signal, onSignal);
  await pooler.shutdown();
  await cleanups.run();
  await topo?.close();
  return 0;
}

/**
 * The pooler's topo record as it should be now: its type is read from Postgres (so a promotion
 * shows up) unless `--type` fixes it.
 */
async function poolerRecord(
  config: PoolerConfig,
  pooler: PoolerServer,
  probe: PostgresProbe,
  manager: InstanceManager,
): Promise<PoolerRecord> {
  const [pg, postgresAddress] = await Promise.all([probe.probe(), manager.postgresAddress()]);
  const type = config.type !== "unknown" ? config.type : pg.role;
  const tcp = pooler.addresses.find((a): a is Deno.NetAddr => "hostname" in a);
  return {
    alias: config.alias,
    cell: config.cell,
    keyspace: config.keyspace,
    shard: config.shard,
    type,
    tags: config.tags,
    pgAddress: tcp !== undefined ? `${tcp.hostname}:${tcp.port}` : config.listen[0]!,
    rpcAddress: config.httpListen,
    hostname: osHostname(),
    ...(postgresAddress !== undefined ? { postgresAddress } : {}),
  };
}

/**
 * The fast network path when `io` asks for it (or `auto` and it is available); throws for `fast`
 * when it is not available, saying why.
 */
function chooseIo(io: "auto" | "fast" | "deno", logger: Logger): FastNet | undefined {
  if (io === "deno") return undefined;
  const net = openFastNet();
  if (typeof net !== "string") {
    logger.info("socket I/O: fast path (epoll through libc)");
    return net;
  }
  if (io === "fast") throw new Error(`--io fast is not available: ${net}`);
  logger.info("socket I/O: Deno's networking", { reason: net });
  return undefined;
}
