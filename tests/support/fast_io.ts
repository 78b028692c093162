/**
 * The pooler's fast network path for in-process pooler tests, so they exercise what
 * `deno task pooler` runs by default (`--io auto`). Tests run with `--allow-all` on Linux,
 * where the path must be available: its absence fails the test instead of quietly testing
 * Deno's networking only.
 *
 * @module
 */

import { type FastNet, openFastNet } from "../../shared/fastnet/mod.ts";

/** `{ fastNet }` for `startPooler`, or `{}` off Linux. */
export function fastIo(): { fastNet?: FastNet } {
  if (Deno.build.os !== "linux") return {};
  const net = openFastNet();
  if (typeof net === "string") throw new Error(`the fast network path is unavailable: ${net}`);
  return { fastNet: net };
}
