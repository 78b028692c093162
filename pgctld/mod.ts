/**
 * pgctld's public surface for tests and the cluster launcher.
 *
 * @module
 */
export {
  type PgctldConfig,
  pgctldConfigSchema,
  pgctldConfigSpec,
  readPasswordFile,
  resolvePaths,
} from "./config.ts";
export {
  type AuthMethod,
  type InitOptions,
  type InitReplicaOptions,
  type InstanceOptions,
  type InstanceStatus,
  PostgresInstance,
  type RewindOptions,
  type StopMode,
} from "./postgres/instance.ts";
export { type ReplicationSource, validateReplicationSource } from "./postgres/conninfo.ts";
export { lookupOsUser, type OsUser } from "./postgres/os_user.ts";
export { type Pgctld, startPgctld } from "./server.ts";
export { PGCTLD_VERSION, registerPgctldService } from "./service.ts";
