/**
 * orch's Connect service: what it sees of every shard and what it did.
 *
 * @module
 */

import type { ConnectRouter } from "@connectrpc/connect";
import type { MessageInitShape } from "@bufbuild/protobuf";
import { OrchService, type ShardStateSchema } from "../../proto/gen/tessera/orch/v1/orch_pb.ts";
import type { Reconciler, ShardReport } from "../bootstrap/reconciler.ts";
import { SqlState, TesseraError } from "../../shared/errors/mod.ts";

/** The protobuf form of a shard report. */
export function shardState(r: ShardReport): MessageInitShape<typeof ShardStateSchema> {
  return {
    keyspace: r.keyspace,
    shard: r.shard,
    primaryAlias: r.record.primaryAlias ?? "",
    term: BigInt(r.record.term),
    durability: r.policy,
    synchronousStandbyNames: r.plan.synchronousStandbyNames ?? "",
    durabilityMet: r.plan.durabilityMet,
    health: r.plan.health,
    reason: r.plan.reasons.join("; "),
    instances: r.instances.map((i) => ({
      alias: i.alias,
      cell: i.cell,
      role: i.role,
      reachable: i.reachable,
      initialized: i.initialized,
      running: i.running,
      lsn: i.lsn,
      replication: i.walReceiver,
      error: i.error,
    })),
    recentActions: r.recentActions,
  };
}

/** Registers OrchService on a Connect router. */
export function registerOrchService(
  router: ConnectRouter,
  reconciler: Reconciler,
  identity: { alias: string; cell: string },
): void {
  router.service(OrchService, {
    status: () => ({
      alias: identity.alias,
      cell: identity.cell,
      shards: reconciler.reports().map(shardState),
    }),
    switchover: async (req) => {
      if (req.keyspace === "" || req.shard === "") {
        throw new TesseraError(SqlState.invalidParameterValue, "give keyspace and shard");
      }
      const r = await reconciler.switchover(
        req.keyspace,
        req.shard,
        req.to === "" ? undefined : req.to,
        req.drainSeconds > 0 ? req.drainSeconds : 5,
      );
      return { from: r.from, to: r.to, term: BigInt(r.term), pausedMs: BigInt(r.pausedMs) };
    },
  });
}
