/**
 * Tracing for every component on `@opentelemetry/api`, exported by Deno's built-in
 * OpenTelemetry when `OTEL_DENO=true`: component tracers, a span helper that records
 * TesseraErrors, and W3C trace context in strings and in sqlcommenter SQL comments.
 *
 * @example
 * ```ts
 * import { appendSqlComment, getTracer, withSpan } from "../shared/trace/mod.ts";
 *
 * const tracer = getTracer("gateway");
 * await withSpan(tracer, "gateway.query", { "db.namespace": "app" }, () =>
 *   send(appendSqlComment(sql)));
 * ```
 *
 * @module
 */
export {
  DB_RESPONSE_STATUS_CODE,
  ERROR_TYPE,
  getTracer,
  recordError,
  tracingEnabled,
  withSpan,
  type WithSpanOptions,
} from "./tracer.ts";
export {
  appendSqlComment,
  extractSqlComment,
  extractTraceparent,
  formatSqlComment,
  formatTraceparent,
  injectTraceparent,
  parseSqlComment,
  parseTraceparent,
  type SqlComment,
  sqlCommentSpanContext,
} from "./traceparent.ts";
