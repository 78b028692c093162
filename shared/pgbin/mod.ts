/**
 * Locating Postgres and etcd binaries.
 *
 * @module
 */
export {
  debianBindirs,
  findEtcd,
  type FindOptions,
  findPgBindir,
  pgVersion,
  REQUIRED_PG_BINARIES,
} from "./pgbin.ts";
