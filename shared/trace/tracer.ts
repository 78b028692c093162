/**
 * Spans through `@opentelemetry/api`. Deno exports them itself when started with
 * `OTEL_DENO=true` (it registers the global tracer provider and context manager); otherwise
 * the API is a no-op and these helpers cost next to nothing.
 *
 * @module
 */

import {
  type Attributes,
  type Context,
  context,
  type Span,
  type SpanKind,
  SpanStatusCode,
  trace,
  type Tracer,
} from "@opentelemetry/api";
import { TesseraError } from "../errors/mod.ts";

/** Attribute holding the SQLSTATE of a failed operation (OpenTelemetry db semantic conventions). */
export const DB_RESPONSE_STATUS_CODE = "db.response.status_code";
/** Attribute naming the class of error of a failed operation: the SQLSTATE, or the error's name. */
export const ERROR_TYPE = "error.type";

/**
 * The tracer of a component, named `tessera.<component>`.
 *
 * @example
 * ```ts
 * const tracer = getTracer("gateway");
 * ```
 */
export function getTracer(component: string, version?: string): Tracer {
  return trace.getTracer(`tessera.${component}`, version);
}

/** Options of {@linkcode withSpan}. */
export interface WithSpanOptions {
  /** Kind of the span; internal when not given. */
  kind?: SpanKind;
  /** Parent context; the active context when not given. */
  parent?: Context;
}

/**
 * Whether spans are recorded and exported (Deno's OpenTelemetry is on: `OTEL_DENO=true`). Lets
 * hot paths skip all tracing work when nobody collects it. Needs no permission: it asks the
 * global tracer provider for a span (never ended, so never exported) and looks whether it records.
 */
export function tracingEnabled(): boolean {
  return trace.getTracer("tessera.probe").startSpan("probe").isRecording();
}

/**
 * Runs `fn` inside a new span named `name` that is the active span while `fn` runs (so spans
 * started by `fn` are its children and `formatSqlComment()` carries it).
 *
 * When `fn` throws or rejects, the exception is recorded on the span, the span's status is set
 * to error with the error's message, and for a {@linkcode TesseraError} the SQLSTATE is set as
 * `db.response.status_code` and `error.type`; the error is then rethrown unchanged. The span is
 * always ended.
 *
 * @example
 * ```ts
 * const rows = await withSpan(tracer, "gateway.query", { "db.namespace": "app" }, async (span) => {
 *   const result = await route(sql);
 *   span.setAttribute("db.response.returned_rows", result.rows.length);
 *   return result;
 * });
 * ```
 */
export async function withSpan<T>(
  tracer: Tracer,
  name: string,
  attributes: Attributes,
  fn: (span: Span) => Promise<T> | T,
  options: WithSpanOptions = {},
): Promise<T> {
  const parent = options.parent ?? context.active();
  const span = tracer.startSpan(
    name,
    options.kind === undefined ? { attributes } : { attributes, kind: options.kind },
    parent,
  );
  try {
    return await context.with(trace.setSpan(parent, span), fn, undefined, span);
  } catch (err) {
    recordError(span, err);
    throw err;
  } finally {
    span.end();
  }
}

/**
 * Records `err` on `span`: the exception event, error status with the message, and for a
 * {@linkcode TesseraError} the SQLSTATE as `db.response.status_code` and `error.type`.
 */
export function recordError(span: Span, err: unknown): void {
  if (err instanceof TesseraError) {
    span.setAttribute(DB_RESPONSE_STATUS_CODE, err.code);
    span.setAttribute(ERROR_TYPE, err.code);
  } else {
    span.setAttribute(ERROR_TYPE, err instanceof Error ? err.name : typeof err);
  }
  span.recordException(err instanceof Error ? err : String(err));
  span.setStatus({
    code: SpanStatusCode.ERROR,
    message: err instanceof Error ? err.message : String(err),
  });
}
