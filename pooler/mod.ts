/**
 * The pooler (MultiPooler): transaction pooling in front of one Postgres that keeps every
 * session correct (settings, prepared statements, pinned state, cancel, pg_backend_pid()).
 *
 * @example
 * ```ts
 * import { startPooler } from "./pooler/mod.ts";
 *
 * const pooler = await startPooler({
 *   listen: ["127.0.0.1:16000"],
 *   postgres: { socketDir: "/run/pg", port: 25432 },
 *   poolSize: 20,
 * });
 * ```
 *
 * @module
 */

export {
  type ListenAddress,
  type PoolerOptions,
  type PoolerServer,
  type PoolerStats,
  type PostgresTarget,
  startPooler,
} from "./server.ts";
export type { PoolStats } from "../shared/pooling/mod.ts";
export { PinReason } from "../shared/pooling/mod.ts";
