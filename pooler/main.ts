/**
 * The pooler: transaction pooling in front of one Postgres. Standalone (a drop-in PgBouncer
 * replacement) or in a cluster (registered in topo). Run `deno task pooler --help`.
 *
 * @module
 */

import { componentMain } from "../shared/proc/mod.ts";
import { poolerConfigSpec } from "./config.ts";
import { runPooler, runWorker } from "./runtime.ts";
import { workerFromEnv } from "./workers.ts";

if (import.meta.main) {
  const worker = workerFromEnv();
  Deno.exit(
    worker !== undefined
      ? await runWorker(worker)
      : await componentMain(poolerConfigSpec, (config) => runPooler(config)),
  );
}
