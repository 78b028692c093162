/**
 * The pooler's Connect service: Status (pools, pins, Postgres's role and WAL position) and a
 * HealthStream of periodic reports for orch and gateways.
 *
 * @module
 */

import type { ConnectRouter, HandlerContext } from "@connectrpc/connect";
import type { MessageInitShape } from "@bufbuild/protobuf";
import {
  type HealthStreamResponseSchema,
  PoolerService,
  PostgresRole,
  type PostgresStateSchema,
} from "../../proto/gen/tessera/pooler/v1/pooler_pb.ts";
import type { PoolerServer } from "../server.ts";
import type { PostgresProbe, PostgresProbeState } from "./postgres_probe.ts";

/** Identity of the pooler in topo; empty strings when standalone. */
export interface PoolerIdentity {
  /** Alias. */
  alias: string;
  /** Cell. */
  cell: string;
  /** Keyspace served. */
  keyspace: string;
  /** Shard served. */
  shard: string;
  /** Declared type (primary, replica, rdonly, unknown). */
  type: string;
}

/** The protobuf form of a probe's state. */
export function postgresState(p: PostgresProbeState): MessageInitShape<typeof PostgresStateSchema> {
  return {
    reachable: p.reachable,
    role: p.role === "primary"
      ? PostgresRole.PRIMARY
      : p.role === "replica"
      ? PostgresRole.REPLICA
      : PostgresRole.UNSPECIFIED,
    lsn: p.lsn,
    receiveLsn: p.receiveLsn,
    lagSeconds: p.lagSeconds,
    serverVersion: p.serverVersion,
    error: p.error,
  };
}

function sleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    const timer = setTimeout(done, ms);
    function done() {
      clearTimeout(timer);
      signal.removeEventListener("abort", done);
      resolve();
    }
    signal.addEventListener("abort", done, { once: true });
  });
}

/** Registers the PoolerService for `pooler` on a Connect router. */
export function registerPoolerService(
  router: ConnectRouter,
  pooler: PoolerServer,
  probe: PostgresProbe,
  identity: PoolerIdentity,
): void {
  router.service(PoolerService, {
    async status() {
      const stats = await pooler.allStats();
      const pg = await probe.probe();
      return {
        alias: identity.alias,
        clients: stats.clients,
        pools: stats.pools.map((p) => ({
          user: p.user,
          database: p.database,
          size: p.size,
          idle: p.idle,
          active: p.active,
          waiting: p.waiting,
          checkouts: BigInt(p.checkouts),
          waitTimeouts: BigInt(p.timeouts),
          waitMicrosTotal: BigInt(Math.round(p.waitTimeMs * 1000)),
        })),
        pins: Object.entries(stats.pins).map(([reason, clients]) => ({ reason, clients })),
        postgres: postgresState(pg),
        preparedCacheHits: BigInt(stats.preparedStatements.hits),
        preparedCacheMisses: BigInt(stats.preparedStatements.misses),
        cell: identity.cell,
        keyspace: identity.keyspace,
        shard: identity.shard,
        type: identity.type,
        multiplexed: {
          connections: stats.multiplexed.connections,
          channels: stats.multiplexed.channels,
          writes: BigInt(stats.multiplexed.writes),
          framesOut: BigInt(stats.multiplexed.framesOut),
          reads: BigInt(stats.multiplexed.reads),
          framesIn: BigInt(stats.multiplexed.framesIn),
        },
      };
    },
    async *healthStream(req, ctx: HandlerContext) {
      const interval = req.intervalMs > 0 ? Math.max(100, req.intervalMs) : 1000;
      while (!ctx.signal.aborted) {
        const pg = await probe.probe();
        const stats = await pooler.allStats();
        const report: MessageInitShape<typeof HealthStreamResponseSchema> = {
          serving: pg.reachable,
          postgres: postgresState(pg),
          clients: stats.clients,
          waiting: stats.pools.reduce((n, p) => n + p.waiting, 0),
          timestampMs: BigInt(Date.now()),
        };
        yield report;
        await sleep(interval, ctx.signal);
      }
    },
  });
}
