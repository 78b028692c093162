/**
 * The pooler: transaction pooling in front of one Postgres. Standalone (a drop-in PgBouncer
 * replacement) or in a cluster (registered in topo). Run `deno task pooler --help`.
 *
 * @module
 */

import { ConfigError, loadConfig } from "../shared/config/mod.ts";
import { TesseraError } from "../shared/errors/mod.ts";
import { poolerConfigSpec } from "./config.ts";
import { runPooler } from "./runtime.ts";

async function main(): Promise<number> {
  let loaded;
  try {
    loaded = loadConfig(poolerConfigSpec, Deno.args);
  } catch (err) {
    if (err instanceof ConfigError) {
      console.error(err.message);
      return 2;
    }
    throw err;
  }
  if (loaded.help) {
    console.log(loaded.usage);
    return 0;
  }
  let runtime;
  try {
    runtime = await runPooler(loaded.config);
  } catch (err) {
    const e = TesseraError.from(err);
    console.error(`pooler: ${e.message}${e.hint ? ` (hint: ${e.hint})` : ""}`);
    return 1;
  }
  const done = Promise.withResolvers<void>();
  for (const signal of ["SIGINT", "SIGTERM"] as const) {
    Deno.addSignalListener(signal, () => done.resolve());
  }
  await done.promise;
  await runtime.shutdown();
  return 0;
}

if (import.meta.main) Deno.exit(await main());
