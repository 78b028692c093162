/**
 * Who may connect to the gateway: everyone in `trust` mode (local development), or users proving
 * a password against their SCRAM-SHA-256 verifier stored in topo (`users/<name>`). Verifiers
 * last read are kept, so logins keep working while etcd is briefly unreachable.
 *
 * @module
 */

import type { AuthRule, FrontendAuth } from "../../shared/frontend/mod.ts";
import type { Logger } from "../../shared/log/mod.ts";
import type { TopoClient } from "../../shared/topo/mod.ts";

/** The gateway's client authentication for `mode`, with users from `topo`. */
export function gatewayAuth(
  mode: "trust" | "scram-sha-256",
  topo: TopoClient,
  logger?: Logger,
): FrontendAuth {
  const lastKnown = new Map<string, string>();
  return {
    async lookup(user): Promise<AuthRule | undefined> {
      if (mode === "trust") return { method: "trust" };
      let verifier: string | undefined;
      try {
        verifier = (await topo.global.users.get(user))?.value.scramVerifier;
      } catch (err) {
        verifier = lastKnown.get(user);
        logger?.warn("cannot read the user from topo; using the last verifier seen", {
          user,
          known: verifier !== undefined,
          err,
        });
        if (verifier === undefined) throw err;
      }
      if (verifier === undefined) {
        lastKnown.delete(user);
        return undefined;
      }
      lastKnown.set(user, verifier);
      return { method: "scram-sha-256", verifier };
    },
  };
}
