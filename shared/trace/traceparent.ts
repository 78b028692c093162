/**
 * W3C trace context (`traceparent`, `tracestate`) as strings, and inside SQL comments in the
 * sqlcommenter format, which is how a query's trace crosses the Postgres wire hop
 * (gateway → pooler → Postgres).
 *
 * @module
 */

import {
  type Context,
  context,
  createTraceState,
  isSpanContextValid,
  type SpanContext,
  trace,
} from "@opentelemetry/api";

const TRACEPARENT = /^([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?$/;

/**
 * Formats `spanContext` as a W3C `traceparent` value, `00-<trace id>-<span id>-<flags>`.
 *
 * @example
 * ```ts
 * formatTraceparent({ traceId: "4bf92f3577b34da6a3ce929d0e0e4736", spanId: "00f067aa0ba902b7", traceFlags: 1 });
 * // "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
 * ```
 */
export function formatTraceparent(spanContext: SpanContext): string {
  const flags = (spanContext.traceFlags & 0xff).toString(16).padStart(2, "0");
  return `00-${spanContext.traceId}-${spanContext.spanId}-${flags}`;
}

/**
 * Parses a W3C `traceparent` value (and optionally a `tracestate`) into a remote span context,
 * or `undefined` when the value is not valid: wrong shape, version `ff`, extra fields in
 * version `00`, or an all-zero trace or span id.
 */
export function parseTraceparent(
  traceparent: string,
  tracestate?: string,
): SpanContext | undefined {
  const match = TRACEPARENT.exec(traceparent.trim());
  if (match === null) return undefined;
  const [, version, traceId, spanId, flags, rest] = match;
  if (version === "ff" || (version === "00" && rest !== undefined)) return undefined;
  if (traceId === undefined || spanId === undefined || flags === undefined) return undefined;
  const spanContext: SpanContext = {
    traceId,
    spanId,
    traceFlags: parseInt(flags, 16),
    isRemote: true,
  };
  if (tracestate !== undefined && tracestate.trim() !== "") {
    spanContext.traceState = createTraceState(tracestate);
  }
  return isSpanContextValid(spanContext) ? spanContext : undefined;
}

/** The `traceparent` of the span active in `ctx`, or `undefined` when there is no valid span. */
export function injectTraceparent(ctx: Context = context.active()): string | undefined {
  const spanContext = trace.getSpanContext(ctx);
  return spanContext !== undefined && isSpanContextValid(spanContext)
    ? formatTraceparent(spanContext)
    : undefined;
}

/**
 * `ctx` with the remote span of `traceparent` (and `tracestate`) as its span, so that spans
 * started in it are children of that remote span. Returns `ctx` unchanged when `traceparent` is
 * missing or invalid.
 */
export function extractTraceparent(
  traceparent: string | null | undefined,
  tracestate?: string | null,
  ctx: Context = context.active(),
): Context {
  if (traceparent === null || traceparent === undefined) return ctx;
  const spanContext = parseTraceparent(traceparent, tracestate ?? undefined);
  return spanContext === undefined ? ctx : trace.setSpanContext(ctx, spanContext);
}

// sqlcommenter: values are URL-encoded and then `'` is escaped; encodeURIComponent leaves `'`
// as is but encodes `/`, so a value can never close the comment with `*/`.
function encodeTagPart(value: string): string {
  return encodeURIComponent(value).replaceAll("'", "\\'");
}

/**
 * A sqlcommenter comment carrying the trace context active in `ctx` (`traceparent`, and
 * `tracestate` when it is not empty) and any other `tags`, keys sorted, e.g.
 * `/*traceparent='00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01'*\/`.
 * Returns `""` when there is nothing to write.
 */
export function formatSqlComment(
  ctx: Context = context.active(),
  tags: Readonly<Record<string, string>> = {},
): string {
  const all: Record<string, string> = { ...tags };
  const spanContext = trace.getSpanContext(ctx);
  if (spanContext !== undefined && isSpanContextValid(spanContext)) {
    all.traceparent = formatTraceparent(spanContext);
    const tracestate = spanContext.traceState?.serialize();
    if (tracestate !== undefined && tracestate !== "") all.tracestate = tracestate;
  }
  const keys = Object.keys(all).sort();
  if (keys.length === 0) return "";
  const pairs = keys.map((key) => `${encodeTagPart(key)}='${encodeTagPart(all[key] ?? "")}'`);
  return `/*${pairs.join(",")}*/`;
}

/**
 * `sql` with {@linkcode formatSqlComment} appended, before a final `;` if there is one (as
 * sqlcommenter places it). Returns `sql` unchanged when there is nothing to write.
 *
 * @example
 * ```ts
 * appendSqlComment("SELECT 1;", ctx); // "SELECT 1 /*traceparent='00-…-01'*\/;"
 * ```
 */
export function appendSqlComment(
  sql: string,
  ctx: Context = context.active(),
  tags: Readonly<Record<string, string>> = {},
): string {
  const comment = formatSqlComment(ctx, tags);
  if (comment === "") return sql;
  const body = sql.trimEnd();
  return body.endsWith(";") ? `${body.slice(0, -1).trimEnd()} ${comment};` : `${body} ${comment}`;
}

/** A sqlcommenter comment found by {@linkcode parseSqlComment}. */
export interface SqlComment {
  /** Every key and value of the comment, decoded. */
  tags: Record<string, string>;
  /** The remote span context of its `traceparent` and `tracestate`, when valid. */
  spanContext: SpanContext | undefined;
  /** Offset in the SQL text where the comment (`/*`) starts. */
  start: number;
  /** Offset in the SQL text just after the comment's closing `*\/`. */
  end: number;
}

const TAG = /^([^=,'\s]+)='((?:[^'\\]|\\.)*)'$/;

function decodeTagPart(value: string): string | undefined {
  try {
    return decodeURIComponent(value.replaceAll("\\'", "'"));
  } catch {
    return undefined;
  }
}

function splitPairs(text: string): string[] | undefined {
  const pairs: string[] = [];
  let start = 0;
  let inQuote = false;
  for (let i = 0; i < text.length; i++) {
    const ch = text[i];
    if (ch === "\\") i++;
    else if (ch === "'") inQuote = !inQuote;
    else if (ch === "," && !inQuote) {
      pairs.push(text.slice(start, i).trim());
      start = i + 1;
    }
  }
  if (inQuote) return undefined;
  pairs.push(text.slice(start).trim());
  return pairs;
}

/**
 * Finds the sqlcommenter comment at the end of `sql` (before an optional final `;`) and decodes
 * it. Returns `undefined` when `sql` does not end with a comment in that format
 * (`key='value',…`).
 *
 * @example
 * ```ts
 * const comment = parseSqlComment("SELECT 1 /*traceparent='00-…-01'*\/");
 * const parent = comment?.spanContext;
 * ```
 */
export function parseSqlComment(sql: string): SqlComment | undefined {
  let end = sql.trimEnd().length;
  if (sql[end - 1] === ";") end = sql.slice(0, end - 1).trimEnd().length;
  if (!sql.startsWith("*/", end - 2)) return undefined;
  const start = sql.lastIndexOf("/*", end - 4);
  if (start < 0) return undefined;
  const body = sql.slice(start + 2, end - 2);
  if (body.includes("*/")) return undefined;
  const pairs = splitPairs(body.trim());
  if (pairs === undefined) return undefined;
  const tags: Record<string, string> = {};
  for (const pair of pairs) {
    const tag = TAG.exec(pair);
    if (tag === null || tag[1] === undefined || tag[2] === undefined) return undefined;
    const key = decodeTagPart(tag[1]);
    const value = decodeTagPart(tag[2]);
    if (key === undefined || value === undefined) return undefined;
    tags[key] = value;
  }
  const spanContext = tags.traceparent === undefined
    ? undefined
    : parseTraceparent(tags.traceparent, tags.tracestate);
  return { tags, spanContext, start, end };
}

/**
 * `ctx` with the remote span of the trailing sqlcommenter comment of `sql` as its span, or
 * `ctx` unchanged when `sql` carries no valid `traceparent`.
 */
export function extractSqlComment(sql: string, ctx: Context = context.active()): Context {
  const spanContext = parseSqlComment(sql)?.spanContext;
  return spanContext === undefined ? ctx : trace.setSpanContext(ctx, spanContext);
}

/** Longest sqlcommenter comment looked for at the end of a statement's text. */
const MAX_COMMENT_BYTES = 2048;
const commentDecoder = new TextDecoder();

/**
 * The remote span context of a sqlcommenter comment closing the SQL text `bytes[start, end)` (a
 * Query or Parse message's text, read in place), when it carries a valid `traceparent`. Costs a
 * few byte reads for a text with no comment at its end.
 *
 * @example
 * ```ts
 * const text = new TextEncoder().encode(
 *   "select 1 /*traceparent='00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01'*\/",
 * );
 * sqlCommentSpanContext(text, 0, text.length)?.spanId; // "b7ad6b7169203331"
 * ```
 */
export function sqlCommentSpanContext(
  bytes: Uint8Array,
  start: number,
  end: number,
): SpanContext | undefined {
  let last = end - 1;
  while (last >= start && (bytes[last] === 0 || bytes[last] === 0x3b || bytes[last]! <= 0x20)) {
    last--;
  }
  if (last - start < 3 || bytes[last] !== 0x2f || bytes[last - 1] !== 0x2a) return undefined;
  const floor = Math.max(start, last - MAX_COMMENT_BYTES);
  for (let i = last - 3; i >= floor; i--) {
    if (bytes[i] === 0x2f && bytes[i + 1] === 0x2a) {
      return parseSqlComment(commentDecoder.decode(bytes.subarray(i, last + 1)))?.spanContext;
    }
  }
  return undefined;
}
