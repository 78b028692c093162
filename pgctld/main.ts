/**
 * pgctld: starts, stops, inits and reconfigures one Postgres. Run `deno task pgctld --help`.
 *
 * @module
 */

import { ConfigError, loadConfig } from "../shared/config/mod.ts";
import { TesseraError } from "../shared/errors/mod.ts";
import { pgctldConfigSpec } from "./config.ts";
import { startPgctld } from "./server.ts";

async function main(): Promise<number> {
  let loaded;
  try {
    loaded = loadConfig(pgctldConfigSpec, Deno.args);
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
  let pgctld;
  try {
    pgctld = await startPgctld(loaded.config);
  } catch (err) {
    const e = TesseraError.from(err);
    console.error(`pgctld: ${e.message}${e.hint ? ` (hint: ${e.hint})` : ""}`);
    return 1;
  }
  const done = Promise.withResolvers<void>();
  for (const signal of ["SIGINT", "SIGTERM"] as const) {
    Deno.addSignalListener(signal, () => done.resolve());
  }
  await done.promise;
  await pgctld.shutdown();
  return 0;
}

if (import.meta.main) Deno.exit(await main());
