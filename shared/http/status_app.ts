/**
 * The HTTP app every component serves: `/live`, `/ready` and `/status`.
 *
 * @module
 */

import { Hono } from "hono";
import { TesseraError } from "../errors/mod.ts";
import type { Logger } from "../log/mod.ts";

/** Options of {@linkcode createStatusApp}. */
export interface StatusAppOptions {
  /** Component name, e.g. `pgctld`; reported by `/status`. */
  component: string;
  /** Alias of this process instance; reported by `/status` when given. */
  alias?: string;
  /** Version of the component; reported by `/status` when given. */
  version?: string;
  /** Whether the component can serve; `/ready` answers 503 while false. Always ready when not given. */
  ready?: () => boolean | Promise<boolean>;
  /** Extra fields of `/status`. An object is merged into the response; any other value goes under `status`. */
  status?: () => unknown | Promise<unknown>;
  /** Where failures of `ready`, `status` and added routes are logged. */
  logger?: Logger;
  /** When the component started; when the app is created if not given. */
  startedAt?: Date;
}

/** Serialises bigints (LSNs, 64-bit counters) as decimal strings rather than failing. */
function jsonResponse(body: unknown, status: number): Response {
  const text = JSON.stringify(
    body,
    (_key, value) => typeof value === "bigint" ? value.toString() : value,
  );
  return new Response(text, {
    status,
    headers: { "content-type": "application/json; charset=utf-8" },
  });
}

function errorBody(err: unknown): Record<string, string> {
  if (err instanceof TesseraError) return err.toJSON();
  return { message: err instanceof Error ? err.message : String(err) };
}

/**
 * Creates the component's Hono app with:
 *
 * - `GET /live`: 200 `ok` while the process runs;
 * - `GET /ready`: 200 `{"ready":true}` when `ready()` is true, else 503 `{"ready":false}`
 *   (a `ready()` that throws counts as not ready, with the error's message under `error`);
 * - `GET /status`: 200 JSON `{component, alias?, version?, startedAt, uptimeSeconds, ...status()}`;
 *   if `status()` throws, 500 JSON `{error: {message, code?, ...}}`.
 *
 * Components add their own routes to the returned app. A route that throws gets a 500 JSON
 * answer with the error (its SQLSTATE when a TesseraError), never a crash.
 *
 * @example
 * ```ts
 * const app = createStatusApp({ component: "pgctld", alias: "pg0", ready: () => pg.running });
 * app.get("/debug/config", (c) => c.json(config));
 * ```
 */
export function createStatusApp(options: StatusAppOptions): Hono {
  const startedAt = options.startedAt ?? new Date();
  const logger = options.logger;
  const app = new Hono();

  app.get("/live", (c) => c.text("ok"));

  app.get("/ready", async () => {
    try {
      const ready = options.ready === undefined ? true : (await options.ready()) === true;
      return jsonResponse({ ready }, ready ? 200 : 503);
    } catch (err) {
      logger?.warn("readiness check failed", { error: err });
      return jsonResponse({ ready: false, error: errorBody(err) }, 503);
    }
  });

  app.get("/status", async () => {
    const base: Record<string, unknown> = { component: options.component };
    if (options.alias !== undefined) base.alias = options.alias;
    if (options.version !== undefined) base.version = options.version;
    base.startedAt = startedAt.toISOString();
    base.uptimeSeconds = Math.max(0, Math.round((Date.now() - startedAt.getTime()) / 1000));
    try {
      const extra = options.status === undefined ? undefined : await options.status();
      if (extra !== null && typeof extra === "object" && !Array.isArray(extra)) {
        return jsonResponse({ ...base, ...extra }, 200);
      }
      return jsonResponse(extra === undefined ? base : { ...base, status: extra }, 200);
    } catch (err) {
      logger?.error("status report failed", { error: err });
      return jsonResponse({ ...base, error: errorBody(err) }, 500);
    }
  });

  app.onError((err, c) => {
    logger?.error("HTTP route failed", { method: c.req.method, path: c.req.path, error: err });
    return jsonResponse({ error: errorBody(err) }, 500);
  });

  return app;
}
