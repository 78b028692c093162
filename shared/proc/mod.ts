/**
 * Launchers for the local processes Tessera runs beside its own components.
 *
 * @module
 */
export { type EtcdOptions, EtcdProcess, startEtcd } from "./etcd.ts";
export {
  componentMain,
  type ComponentMainOptions,
  type RunningComponent,
} from "./component_main.ts";
export { CleanupStack } from "./cleanup.ts";
