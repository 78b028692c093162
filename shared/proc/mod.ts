/**
 * Launchers for the local processes Tessera runs beside its own components.
 *
 * @module
 */
export { type EtcdOptions, EtcdProcess, startEtcd } from "./etcd.ts";
