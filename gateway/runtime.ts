/**
 * A whole gateway process from its configuration: the topo connection and the resolver that
 * watches it, client authentication, the data path ({@linkcode startGateway}), the HTTP server
 * with status endpoints and the Connect service, and its record in the cell topo under a lease.
 *
 * @module
 */

import { loadFrontendTls } from "../shared/frontend/mod.ts";
import { createStatusApp, serveComponent, type ServedComponent } from "../shared/http/mod.ts";
import { Logger, type LogSink } from "../shared/log/mod.ts";
import { createRpcHandler } from "../shared/rpc/mod.ts";
import { CleanupStack } from "../shared/proc/mod.ts";
import { type GatewayRecord, TopoClient, TopoRegistration } from "../shared/topo/mod.ts";
import type { GatewayConfig } from "./config.ts";
import { splitHostPort } from "../shared/config/mod.ts";
import { permissionState } from "./control/permissions.ts";
import { registerGatewayService } from "./control/service.ts";
import { gatewayAuth } from "./control/users.ts";
import { TopoTargetResolver } from "./routing/topo_resolver.ts";
import { initParser } from "./planner/mod.ts";
import { type GatewayServer, startGateway } from "./server.ts";

/** Version reported in `/status`. */
export const GATEWAY_VERSION = "0.1.0";

/** How long start-up waits for the first topo view before serving (and buffering) anyway. */
const TOPO_LOAD_WAIT_MS = 5000;
/** How often the resolver learns how busy each pooler is. */
const LOAD_REFRESH_MS = 500;
/** Interval of the topo registration's checks and retries. */
const REGISTER_RETRY_MS = 2000;

/** A running gateway process. */
export interface GatewayRuntime {
  /** The data path. */
  gateway: GatewayServer;
  /** The resolver watching topo. */
  resolver: TopoTargetResolver;
  /** The HTTP server (Connect + status). */
  http: ServedComponent;
  /** The topo connection. */
  topo: TopoClient;
  /** Stops everything: topo record, HTTP, clients (57P01), pooler connections, watches. */
  shutdown(): Promise<void>;
}

/** Starts a gateway process from `config`. */
export async function runGateway(
  config: GatewayConfig,
  options: { sink?: LogSink } = {},
): Promise<GatewayRuntime> {
  const logger = new Logger({
    component: "gateway",
    alias: config.alias,
    level: config.logLevel,
    ...(options.sink ? { sink: options.sink } : {}),
  });
  // The SQL parser (WebAssembly) loads from disk: before the gateway gives up read access.
  await initParser();
  const tls = config.tlsCert !== undefined && config.tlsKey !== undefined
    ? loadFrontendTls({ certFile: config.tlsCert, keyFile: config.tlsKey })
    : undefined;
  const topo = await TopoClient.connect({
    endpoints: config.topoEndpoints,
    root: config.topoRoot,
    logger,
  });
  const cleanups = new CleanupStack();
  cleanups.push(() => topo.close());
  try {
    const resolver = new TopoTargetResolver(topo, {
      bufferWindowMs: Math.round(config.bufferWindow * 1000),
      maxBuffered: config.maxBuffered,
      replicaFallback: config.replicaFallback,
      cell: config.cell,
      logger,
    });
    cleanups.push(() => resolver.close());
    await resolver.start(TOPO_LOAD_WAIT_MS);
    if (!resolver.loaded) logger.warn("topo view not loaded yet; serving and buffering anyway");

    const gateway = await startGateway({
      listen: config.listen,
      resolver,
      auth: gatewayAuth(config.auth, topo, logger),
      ...(tls !== undefined ? { tls } : {}),
      requireTls: config.requireTls,
      maxClientConnections: config.maxClientConn,
      maxConnectionsPerUser: config.maxConnPerUser,
      poolSizePerPooler: config.poolSizePerPooler,
      queueTimeoutMs: config.queueTimeout * 1000,
      retryWindowMs: Math.round(config.bufferWindow * 1000),
      ...(config.poolerPassword !== undefined ? { poolerPassword: config.poolerPassword } : {}),
      poolerChannel: config.poolerChannel,
      deferBegin: config.deferBegin === "on",
      logger,
      sharding: resolver,
      maxResultBytes: config.maxResultBytes,
    });
    cleanups.push(() => gateway.shutdown());
    // Least busy replica: the data path's pool counters, fed to the resolver off the hot path.
    const loadTimer = setInterval(() => {
      const load = new Map<string, number>();
      for (const p of gateway.stats().pools) {
        load.set(p.pooler, (load.get(p.pooler) ?? 0) + p.active + p.waiting);
      }
      resolver.setLoad(load);
    }, LOAD_REFRESH_MS);
    cleanups.push(() => clearInterval(loadTimer));

    const identity = { alias: config.alias, cell: config.cell };
    const app = createStatusApp({
      component: "gateway",
      alias: config.alias,
      version: GATEWAY_VERSION,
      logger,
      // Ready once the topo view is loaded: a gateway without a serving primary still buffers,
      // and every gateway of the cluster would be in the same state.
      ready: () => resolver.loaded,
      status: () => {
        const s = gateway.stats();
        const r = resolver.stats();
        return {
          identity,
          listen: gateway.addresses.map((a) => `${a.hostname}:${a.port}`),
          sessions: {
            now: s.clients,
            active: s.activeClients,
            total: s.clientsTotal,
            refused: s.clientsRefused,
            perUser: s.clientsPerUser,
          },
          buffered: {
            now: r.bufferedNow,
            total: r.bufferedTotal,
            timeouts: r.timeouts,
            rejected: r.rejected,
          },
          topo: {
            loaded: r.loaded,
            root: config.topoRoot,
            endpoints: config.topoEndpoints,
            registered: registration.registered,
          },
          shards: resolver.shardTargets(),
          choices: r.choices,
          failingPoolers: r.failing,
          pools: s.pools,
          multiplexed: s.multiplexed,
          cancelRequests: s.cancelRequests,
          transactionsFailedByFailover: s.transactionsFailedByFailover,
          retries: s.retries,
          permissions: permissionState(),
        };
      },
    });
    const rpc = createRpcHandler(
      (router) => registerGatewayService(router, gateway, resolver, identity),
      { logger },
    );
    const http = await serveComponent({ ...splitHostPort(config.httpListen), app, rpc, logger });
    cleanups.push(() => http.shutdown());

    const first = gateway.addresses[0]!;
    const record: GatewayRecord = {
      alias: config.alias,
      cell: config.cell,
      pgAddress: `${first.hostname}:${first.port}`,
      httpAddress: `${http.addr.hostname}:${http.addr.port}`,
    };
    const registration = new TopoRegistration<GatewayRecord>({
      store: async () => (await topo.cell(config.cell)).gateways,
      record: () => record,
      ttlSeconds: config.leaseTtl,
      intervalMs: REGISTER_RETRY_MS,
      logger,
    });
    registration.start();
    cleanups.push(() => registration.stop());

    logger.info("gateway serving", {
      listen: gateway.addresses.map((a) => `${a.hostname}:${a.port}`),
      http: http.url,
      topoLoaded: resolver.loaded,
    });
    return { gateway, resolver, http, topo, shutdown: () => cleanups.run() };
  } catch (err) {
    await cleanups.run();
    throw err;
  }
}
