/**
 * pgctld: starts, stops, inits and reconfigures one Postgres. Run `deno task pgctld --help`.
 *
 * @module
 */

import { componentMain } from "../shared/proc/mod.ts";
import { pgctldConfigSpec } from "./config.ts";
import { startPgctld } from "./server.ts";

if (import.meta.main) Deno.exit(await componentMain(pgctldConfigSpec, startPgctld));
