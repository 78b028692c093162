/**
 * The entry point every component's `main.ts` shares: read the configuration (exit 2 naming the
 * bad flag), print usage for `--help`, start the component (exit 1 with its error), then run
 * until SIGINT or SIGTERM and shut down cleanly.
 *
 * @module
 */

import type { z } from "zod";
import { ConfigError, type ConfigSpec, loadConfig } from "../config/mod.ts";
import { TesseraError } from "../errors/mod.ts";

/** What a started component must offer its entry point. */
export interface RunningComponent {
  /** Stops the component; resolves when it has stopped. */
  shutdown(): Promise<void>;
}

/** Options of {@linkcode componentMain}. */
export interface ComponentMainOptions {
  /** Command-line arguments; `Deno.args` when not given. */
  args?: string[];
  /** Environment for flag fallbacks; the whole environment when not given. */
  env?: Record<string, string | undefined>;
  /** Runs once the component has started (for example to give up start-up permissions). */
  afterStart?: () => void;
}

/**
 * Runs a component from `Deno.args` and resolves to the process's exit code: 0 after a clean
 * shutdown or `--help`, 1 when it could not start, 2 for invalid configuration.
 */
export async function componentMain<S extends z.ZodObject>(
  spec: ConfigSpec<S>,
  start: (config: z.infer<S>) => Promise<RunningComponent>,
  options: ComponentMainOptions = {},
): Promise<number> {
  let loaded;
  try {
    loaded = loadConfig(spec, options.args ?? Deno.args, options.env ?? Deno.env.toObject());
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
  let running: RunningComponent;
  try {
    running = await start(loaded.config);
  } catch (err) {
    const e = TesseraError.from(err);
    console.error(`${spec.program}: ${e.message}${e.hint ? ` (hint: ${e.hint})` : ""}`);
    return 1;
  }
  options.afterStart?.();
  const stop = Promise.withResolvers<void>();
  const signals = ["SIGINT", "SIGTERM"] as const;
  const onSignal = () => stop.resolve();
  for (const signal of signals) Deno.addSignalListener(signal, onSignal);
  await stop.promise;
  for (const signal of signals) Deno.removeSignalListener(signal, onSignal);
  await running.shutdown();
  return 0;
}
