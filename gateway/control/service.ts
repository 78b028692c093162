/**
 * The gateway's Connect service: Stats (sessions, buffering, pools, the topo view) and Cancel
 * (by the pid the gateway gave a session, when the data path supports it).
 *
 * @module
 */

import type { ConnectRouter } from "@connectrpc/connect";
import { GatewayService } from "../../proto/gen/tessera/gateway/v1/gateway_pb.ts";
import { SqlState, TesseraError } from "../../shared/errors/mod.ts";
import type { GatewayServer } from "../server.ts";
import type { TopoTargetResolver } from "../routing/topo_resolver.ts";

/** A data path that can cancel a session's running query by its gateway-issued pid. */
export interface CancellableGateway {
  /** Forwards a cancel for session `pid`; false when no such session. */
  cancelSession(pid: number): boolean | Promise<boolean>;
}

function cancellable(server: GatewayServer): server is GatewayServer & CancellableGateway {
  return typeof (server as Partial<CancellableGateway>).cancelSession === "function";
}

/** Who this gateway is, for Stats. */
export interface GatewayIdentity {
  /** Alias in topo. */
  alias: string;
  /** Cell. */
  cell: string;
}

/** Registers the GatewayService on a Connect router. */
export function registerGatewayService(
  router: ConnectRouter,
  server: GatewayServer,
  resolver: TopoTargetResolver,
  identity: GatewayIdentity,
): void {
  router.service(GatewayService, {
    stats() {
      const s = server.stats();
      const r = resolver.stats();
      return {
        alias: identity.alias,
        cell: identity.cell,
        sessions: s.clients,
        sessionsPerUser: s.clientsPerUser,
        activeSessions: s.activeClients,
        sessionsTotal: BigInt(s.clientsTotal),
        sessionsRefused: BigInt(s.clientsRefused),
        buffered: {
          now: r.bufferedNow,
          total: BigInt(r.bufferedTotal),
          timeouts: BigInt(r.timeouts),
          rejected: BigInt(r.rejected),
        },
        pools: s.pools.map((p) => ({
          pooler: p.pooler,
          address: p.address,
          user: p.user,
          database: p.database,
          size: p.size,
          idle: p.idle,
          active: p.active,
          waiting: p.waiting,
          checkouts: BigInt(p.checkouts),
          waitTimeouts: BigInt(p.timeouts),
        })),
        shards: resolver.shardTargets().map((t) => ({
          keyspace: t.keyspace,
          shard: t.shard,
          term: BigInt(t.term),
          primary: t.primary ?? "",
          replicas: t.replicas,
        })),
        choices: Object.entries(r.choices).flatMap(([target, m]) =>
          Object.entries(m).map(([pooler, count]) => ({ target, pooler, count: BigInt(count) }))
        ),
        topoLoaded: r.loaded,
      };
    },
    async cancel(req) {
      if (!cancellable(server)) {
        throw new TesseraError(
          SqlState.featureNotSupported,
          "cancel by pid is not supported by this gateway's data path yet",
          { hint: "send a Postgres CancelRequest with the session's key to the client port" },
        );
      }
      return { found: await server.cancelSession(req.pid) };
    },
  });
}
