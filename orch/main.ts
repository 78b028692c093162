/**
 * orch: keeps every shard with a primary and durable replicas. Run `deno task orch --help`.
 *
 * @module
 */

import { componentMain } from "../shared/proc/mod.ts";
import { orchConfigSpec } from "./config.ts";
import { runOrch } from "./runtime.ts";

if (import.meta.main) {
  Deno.exit(await componentMain(orchConfigSpec, (config) => runOrch(config)));
}
