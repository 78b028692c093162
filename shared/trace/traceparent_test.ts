import { ROOT_CONTEXT, type SpanContext, trace, TraceFlags } from "@opentelemetry/api";
import { assert, assertEquals } from "../testing/assert.ts";
import {
  appendSqlComment,
  extractSqlComment,
  extractTraceparent,
  formatSqlComment,
  formatTraceparent,
  injectTraceparent,
  parseSqlComment,
  parseTraceparent,
  sqlCommentSpanContext,
} from "./mod.ts";

const TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736";
const SPAN_ID = "00f067aa0ba902b7";
const TRACEPARENT = `00-${TRACE_ID}-${SPAN_ID}-01`;

function ctxWith(spanContext: SpanContext) {
  return trace.setSpanContext(ROOT_CONTEXT, spanContext);
}

Deno.test("traceparent: formats and parses the W3C format", () => {
  const spanContext = parseTraceparent(TRACEPARENT);
  assertEquals(spanContext, {
    traceId: TRACE_ID,
    spanId: SPAN_ID,
    traceFlags: TraceFlags.SAMPLED,
    isRemote: true,
  });
  assertEquals(formatTraceparent(spanContext), TRACEPARENT);
  assertEquals(
    formatTraceparent({ traceId: TRACE_ID, spanId: SPAN_ID, traceFlags: TraceFlags.NONE }),
    `00-${TRACE_ID}-${SPAN_ID}-00`,
  );
  assertEquals(
    parseTraceparent(TRACEPARENT, "vendor=abc,other=1")?.traceState?.get("vendor"),
    "abc",
  );
  // A later version may add fields.
  assertEquals(parseTraceparent(`01-${TRACE_ID}-${SPAN_ID}-01-extra`)?.traceId, TRACE_ID);
});

Deno.test("traceparent: rejects invalid values", () => {
  for (
    const bad of [
      "",
      "garbage",
      `ff-${TRACE_ID}-${SPAN_ID}-01`,
      `00-${TRACE_ID}-${SPAN_ID}-01-extra`,
      `00-${"0".repeat(32)}-${SPAN_ID}-01`,
      `00-${TRACE_ID}-${"0".repeat(16)}-01`,
      `00-${TRACE_ID.toUpperCase()}-${SPAN_ID}-01`,
      `00-${TRACE_ID}-${SPAN_ID}-1`,
    ]
  ) {
    assertEquals(parseTraceparent(bad), undefined, `'${bad}'`);
  }
});

Deno.test("traceparent: inject and extract through a context", () => {
  assertEquals(injectTraceparent(ROOT_CONTEXT), undefined);
  const ctx = extractTraceparent(TRACEPARENT, undefined, ROOT_CONTEXT);
  assertEquals(injectTraceparent(ctx), TRACEPARENT);
  assertEquals(extractTraceparent("nonsense", null, ROOT_CONTEXT), ROOT_CONTEXT);
  assertEquals(extractTraceparent(undefined, undefined, ROOT_CONTEXT), ROOT_CONTEXT);
  // Outside every span the active context has no span.
  assertEquals(injectTraceparent(), undefined);
});

Deno.test("sql comment: round trip of trace context and tags", () => {
  const spanContext = parseTraceparent(TRACEPARENT, "congo=t61rcWkgMzE");
  assert(spanContext !== undefined);
  const ctx = ctxWith(spanContext);
  const comment = formatSqlComment(ctx, { application: "it's/*x*/ me", action: "q=1&b" });
  assertEquals(
    comment,
    "/*action='q%3D1%26b',application='it\\'s%2F*x*%2F%20me'," +
      `traceparent='${TRACEPARENT}',tracestate='congo%3Dt61rcWkgMzE'*/`,
  );
  const sql = appendSqlComment("SELECT * FROM t WHERE a = '/*'  ;\n", ctx, {
    application: "it's/*x*/ me",
  });
  assert(sql.startsWith("SELECT * FROM t WHERE a = '/*' /*application="), sql);
  assert(sql.endsWith("*/;"), sql);
  const parsed = parseSqlComment(sql);
  assert(parsed !== undefined);
  assertEquals(parsed.tags, {
    application: "it's/*x*/ me",
    traceparent: TRACEPARENT,
    tracestate: "congo=t61rcWkgMzE",
  });
  assertEquals(parsed.spanContext?.traceId, TRACE_ID);
  assertEquals(parsed.spanContext?.spanId, SPAN_ID);
  assertEquals(parsed.spanContext?.traceState?.get("congo"), "t61rcWkgMzE");
  assertEquals(sql.slice(parsed.start, parsed.end), sql.slice(sql.indexOf("/*app"), -1));
  assertEquals(injectTraceparent(extractSqlComment(sql, ROOT_CONTEXT)), TRACEPARENT);
});

Deno.test("sql comment: the plain traceparent form and statements without one", () => {
  const ctx = ctxWith({ traceId: TRACE_ID, spanId: SPAN_ID, traceFlags: TraceFlags.SAMPLED });
  assertEquals(formatSqlComment(ctx), `/*traceparent='${TRACEPARENT}'*/`);
  assertEquals(appendSqlComment("SELECT 1", ctx), `SELECT 1 /*traceparent='${TRACEPARENT}'*/`);
  assertEquals(formatSqlComment(ROOT_CONTEXT), "");
  assertEquals(appendSqlComment("SELECT 1;", ROOT_CONTEXT), "SELECT 1;");
  for (
    const sql of [
      "SELECT 1",
      "SELECT 1 /* just a comment */",
      "SELECT 1 /*traceparent='unterminated*/",
      "SELECT 1 /*a='1' b='2'*/",
      "SELECT 1 /*a='%E0%A4%A'*/",
      `SELECT 1 /*traceparent='${TRACEPARENT}'*/ + 1`,
      "*/",
      "/**/",
    ]
  ) {
    assertEquals(parseSqlComment(sql), undefined, sql);
  }
  // Comments elsewhere do not count; an invalid traceparent leaves the tags but no span.
  assertEquals(
    parseSqlComment(`/*traceparent='${TRACEPARENT}'*/ SELECT 1`),
    undefined,
  );
  const invalid = parseSqlComment("SELECT 1 /*traceparent='00-abc'*/");
  assertEquals(invalid?.tags, { traceparent: "00-abc" });
  assertEquals(invalid?.spanContext, undefined);
  assertEquals(extractSqlComment("SELECT 1", ROOT_CONTEXT), ROOT_CONTEXT);
});

Deno.test("sqlCommentSpanContext reads a closing sqlcommenter comment from message bytes", () => {
  const enc = new TextEncoder();
  const tp = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
  // As in a Query message: type, length, text, NUL; the text is read in place.
  const text = `select 1 /*app='x',traceparent='${tp}'*/ ;  `;
  const msg = new Uint8Array([0x51, 0, 0, 0, 0, ...enc.encode(text), 0]);
  const ctx = sqlCommentSpanContext(msg, 5, msg.length);
  assertEquals(ctx?.traceId, "0af7651916cd43dd8448eb211c80319c");
  assertEquals(ctx?.spanId, "b7ad6b7169203331");
  assertEquals(ctx?.traceFlags, 1);
  assertEquals(ctx?.isRemote, true);
  const none = (s: string) => {
    const b = enc.encode(s);
    return sqlCommentSpanContext(b, 0, b.length);
  };
  assertEquals(none("select 1"), undefined);
  assertEquals(none(`select '/*traceparent=''${tp}''*/' as t`), undefined); // not at the end
  assertEquals(none(`select 1 /*traceparent='00-zz-b7ad6b7169203331-01'*/`), undefined);
  assertEquals(none("*/"), undefined);
  assertEquals(none(`/*traceparent='${tp}'*/`)?.spanId, "b7ad6b7169203331");
  // Only the given range is read.
  const b = enc.encode(`select 1 /*traceparent='${tp}'*/`);
  assertEquals(sqlCommentSpanContext(b, 0, b.length - 1), undefined);
});
