/**
 * The gateway's Deno permissions. The `gateway` task grants network access, read access and
 * environment access to the gateway's own variables (`GATEWAY_*`, `TOPO_*`) and to those the
 * etcd client's gRPC library reads whenever it opens a channel (`GRPC_*`, `grpc_*`, proxy
 * settings); it denies run, write and FFI outright (`--deny-*`, so they report `denied`).
 * Once started, the gateway gives up read access (config, TLS files and code are loaded) and
 * its own environment variables (the pooler password may be among them).
 *
 * @module
 */

import { GATEWAY_ENV_VARS } from "../config.ts";

/** Permissions reported by `/status`. */
export interface PermissionReport {
  /** Spawning processes. */
  run: Deno.PermissionState;
  /** Writing files. */
  write: Deno.PermissionState;
  /** Loading native libraries. */
  ffi: Deno.PermissionState;
  /** Reading files. */
  read: Deno.PermissionState;
  /** The gateway's own variables (checked on `GATEWAY_POOLER_PASSWORD`). */
  envGateway: Deno.PermissionState;
  /** What gRPC reads on each new channel (checked on `grpc_proxy`). */
  envGrpc: Deno.PermissionState;
  /** Any other variable (checked on `HOME`). */
  envOther: Deno.PermissionState;
  /** Network. */
  net: Deno.PermissionState;
  /** System information. */
  sys: Deno.PermissionState;
}

const q = (desc: Deno.PermissionDescriptor) => Deno.permissions.querySync(desc).state;

/** The current state of each permission, as Deno reports it. */
export function permissionState(): PermissionReport {
  return {
    run: q({ name: "run" }),
    write: q({ name: "write" }),
    ffi: q({ name: "ffi" }),
    read: q({ name: "read" }),
    envGateway: q({ name: "env", variable: "GATEWAY_POOLER_PASSWORD" }),
    envGrpc: q({ name: "env", variable: "grpc_proxy" }),
    envOther: q({ name: "env", variable: "HOME" }),
    net: q({ name: "net" }),
    sys: q({ name: "sys" }),
  };
}

/**
 * Gives up what the running gateway no longer needs: all read access, and access to the
 * gateway's own environment variables. Returns the permissions left.
 */
export function dropStartupPermissions(): PermissionReport {
  Deno.permissions.revokeSync({ name: "read" });
  for (const variable of GATEWAY_ENV_VARS) Deno.permissions.revokeSync({ name: "env", variable });
  return permissionState();
}
