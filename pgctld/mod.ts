/**
 * pgctld's public surface for tests and the cluster launcher.
 *
 * @module
 */
export { type PgctldConfig, pgctldConfigSchema, pgctldConfigSpec, resolvePaths } from "./config.ts";
export {
  type AuthMethod,
  type InitOptions,
  type InstanceOptions,
  type InstanceStatus,
  PostgresInstance,
  type StopMode,
} from "./postgres/instance.ts";
export { lookupOsUser, type OsUser } from "./postgres/os_user.ts";
export { type Pgctld, startPgctld } from "./server.ts";
export { PGCTLD_VERSION, registerPgctldService } from "./service.ts";
