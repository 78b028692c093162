/**
 * The gateway: one Postgres in front of the cluster. Run `deno task gateway --help`.
 *
 * After start-up it gives up read and environment access (see `control/permissions.ts`); the
 * task never grants run, write or FFI access.
 *
 * @module
 */

import { componentMain } from "../shared/proc/mod.ts";
import { GATEWAY_ENV_VARS, gatewayConfigSpec } from "./config.ts";
import { dropStartupPermissions } from "./control/permissions.ts";
import { runGateway } from "./runtime.ts";

/** Reads only the gateway's own variables, so that env access can be narrowed to them. */
function gatewayEnv(): Record<string, string | undefined> {
  const env: Record<string, string | undefined> = {};
  for (const name of GATEWAY_ENV_VARS) {
    try {
      env[name] = Deno.env.get(name);
    } catch {
      // not granted: treated as unset
    }
  }
  return env;
}

if (import.meta.main) {
  Deno.exit(
    await componentMain(gatewayConfigSpec, (config) => runGateway(config), {
      env: gatewayEnv(),
      afterStart: dropStartupPermissions,
    }),
  );
}
