/**
 * A whole pooler process from its configuration: client authentication, the data path
 * ({@linkcode startPooler}), the Postgres probe, the HTTP server with status endpoints and the
 * Connect service, and, in a cluster, its record in the cell topo under a lease.
 *
 * @module
 */

import { hostname as osHostname } from "node:os";
import { type FastNet, openFastNet } from "../shared/fastnet/mod.ts";
import { type FrontendAuth, loadFrontendTls } from "../shared/frontend/mod.ts";
import { createStatusApp, serveComponent, type ServedComponent } from "../shared/http/mod.ts";
import { Logger, type LogSink } from "../shared/log/mod.ts";
import { createRpcHandler } from "../shared/rpc/mod.ts";
import { CleanupStack } from "../shared/proc/mod.ts";
import { type PoolerRecord, TopoClient, TopoRegistration } from "../shared/topo/mod.ts";
import type { PoolerConfig } from "./config.ts";
import { splitHostPort } from "../shared/config/mod.ts";
import { loadUsersFile, poolerAuth, type VerifierLookup } from "./control/users.ts";
import { PostgresProbe } from "./control/postgres_probe.ts";
import { type PoolerIdentity, registerPoolerService } from "./control/service.ts";
import { InstanceManager, registerManagerService } from "./control/manager.ts";
import { type PoolerServer, startPooler } from "./server.ts";

/** Version reported in `/status`. */
export const POOLER_VERSION = "0.1.0";

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

async function verifierLookup(
  config: PoolerConfig,
  topo: TopoClient | undefined,
): Promise<VerifierLookup> {
  const fromFile = config.authFile !== undefined ? await loadUsersFile(config.authFile) : undefined;
  return async (user) => {
    const local = fromFile?.get(user);
    if (local !== undefined) return local;
    if (topo === undefined) return undefined;
    return (await topo.global.users.get(user))?.value.scramVerifier;
  };
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
    ? await TopoClient.connect({
      endpoints: config.topoEndpoints,
      root: config.topoRoot,
      logger,
    })
    : undefined;
  const cleanups = new CleanupStack();
  try {
    if (topo !== undefined) cleanups.push(() => topo.close());
    const auth: FrontendAuth = poolerAuth(config.auth, await verifierLookup(config, topo));
    const postgres = {
      port: config.postgresPort,
      ...(config.postgresSocketDir !== undefined
        ? { socketDir: config.postgresSocketDir }
        : { host: config.postgresHost ?? "127.0.0.1" }),
      ...(config.postgresPassword !== undefined ? { password: config.postgresPassword } : {}),
    };
    const fastNet = chooseIo(config.io, logger);
    const pooler = await startPooler({
      listen: config.listen,
      ...(config.unixSocketDir !== undefined ? { unixSocketDir: config.unixSocketDir } : {}),
      postgres,
      poolSize: config.poolSize,
      minPoolSize: config.minPoolSize,
      reservePoolSize: config.reservePoolSize,
      adminUsers: config.adminUsers,
      maxClientConnections: config.maxClientConn,
      idleTimeoutMs: config.idleTimeout * 1000,
      maxLifetimeMs: config.maxLifetime * 1000,
      queueTimeoutMs: config.queueTimeout * 1000,
      preparedStatementCacheSize: config.preparedCacheSize,
      deferBegin: config.deferBegin === "on",
      drainTimeoutMs: config.drainTimeout * 1000,
      auth,
      ...(tls !== undefined ? { tls } : {}),
      ...(fastNet !== undefined ? { fastNet } : {}),
      logger,
    });
    cleanups.push(() => pooler.shutdown());

    const probe = new PostgresProbe({
      socketDir: config.postgresSocketDir,
      host: config.postgresHost,
      port: config.postgresPort,
      user: config.controlUser,
      password: config.postgresPassword,
    }, logger);
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
        ...pooler.stats(),
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
