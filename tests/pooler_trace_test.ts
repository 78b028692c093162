/**
 * End to end: the pooler process with Deno's OpenTelemetry on, exporting to a collector run by
 * the test (OTLP over HTTP, JSON), against a real Postgres and node-postgres. A transaction whose
 * first statement carries a sampled sqlcommenter `traceparent` gets one `pool.checkout` span,
 * child of that remote span; others get none. (Deno also exports spans of its own, such as its
 * HTTP server's: only `pool.checkout` spans are counted.)
 */
import pg from "pg";
import { assert, assertEquals } from "../shared/testing/assert.ts";
import { startTestPostgres } from "./support/postgres.ts";
import { makeSharedTempDir, startTask, waitFor } from "./support/process.ts";

const PG_PORT = 12782;
const POOLER_PORT = 12783;
const POOLER_HTTP = 12784;
const COLLECTOR_PORT = 12785;

interface OtlpValue {
  stringValue?: string;
  intValue?: string | number;
  doubleValue?: number;
  boolValue?: boolean;
}

interface OtlpSpan {
  traceId: string;
  spanId: string;
  parentSpanId?: string;
  name: string;
  kind: number | string;
  attributes?: { key: string; value: OtlpValue }[];
  status?: { code?: number | string; message?: string };
  events?: { name: string }[];
}

interface ExportedSpan {
  scope: string;
  service: string | undefined;
  span: OtlpSpan;
}

function attr(span: OtlpSpan, key: string): string | number | boolean | undefined {
  const v = span.attributes?.find((a) => a.key === key)?.value;
  if (v === undefined) return undefined;
  if (v.stringValue !== undefined) return v.stringValue;
  if (v.intValue !== undefined) return Number(v.intValue);
  return v.doubleValue ?? v.boolValue;
}

/** A minimal OTLP/HTTP JSON trace receiver: keeps every span it is sent. */
function startCollector(port: number) {
  const spans: ExportedSpan[] = [];
  const server = Deno.serve({ port, hostname: "127.0.0.1", onListen() {} }, async (req) => {
    const body = await req.json().catch(() => null);
    if (new URL(req.url).pathname === "/v1/traces" && body !== null) {
      for (const rs of body.resourceSpans ?? []) {
        const service = (rs.resource?.attributes ?? []).find((
          a: { key: string },
        ) => a.key === "service.name")?.value?.stringValue;
        for (const ss of rs.scopeSpans ?? []) {
          for (const span of ss.spans ?? []) {
            spans.push({ scope: ss.scope?.name ?? "", service, span });
          }
        }
      }
    }
    return Response.json({});
  });
  return { spans, stop: () => server.shutdown() };
}

const hex = (n: number, width: number) => n.toString(16).padStart(width, "0");
const traceIdOf = (n: number) => `4bf92f3577b34da6a3ce929d0e0e${hex(n, 4)}`;
const spanIdOf = (n: number) => `00f067aa0ba9${hex(n, 4)}`;
const comment = (n: number, flags = "01") =>
  `/*traceparent='00-${traceIdOf(n)}-${spanIdOf(n)}-${flags}'*/`;

Deno.test({
  name: "pooler tracing: pool.checkout spans follow sqlcommenter traceparents to an OTLP collector",
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    const postgres = await startTestPostgres({ port: PG_PORT });
    const base = await makeSharedTempDir("tessera-pooler-trace-");
    const collector = startCollector(COLLECTOR_PORT);
    const proc = await startTask(
      "pooler",
      [
        "--postgres-socket-dir",
        postgres.socketDir,
        "--postgres-port",
        String(PG_PORT),
        "--listen",
        `127.0.0.1:${POOLER_PORT}`,
        "--http-listen",
        `127.0.0.1:${POOLER_HTTP}`,
        "--pool-size",
        "1",
        // The user is an admin: no reserve, so that the one connection must be waited for.
        "--reserve-pool-size",
        "0",
      ],
      `${base}/pooler.log`,
      {
        env: {
          OTEL_DENO: "true",
          OTEL_SERVICE_NAME: "tessera-pooler",
          OTEL_EXPORTER_OTLP_ENDPOINT: `http://127.0.0.1:${COLLECTOR_PORT}`,
          OTEL_EXPORTER_OTLP_PROTOCOL: "http/json",
        },
      },
    );
    const connect = async () => {
      const c = new pg.Client({
        host: "127.0.0.1",
        port: POOLER_PORT,
        user: "postgres",
        database: "postgres",
      });
      await c.connect();
      return c;
    };
    let a: pg.Client | undefined;
    let b: pg.Client | undefined;
    try {
      await waitFor("pooler /live", async () => {
        const res = await fetch(`http://127.0.0.1:${POOLER_HTTP}/live`);
        await res.body?.cancel();
        return res.ok ? true : undefined;
      });
      a = await connect();
      b = await connect();
      // 1: an autocommit statement, simple protocol.
      const pid = (await a.query(`select pg_backend_pid() as pid ${comment(1)}`)).rows[0].pid;
      // 2: a transaction: BEGIN is answered by the pooler, the comment is on the first statement.
      await a.query("begin");
      await a.query(`select 1 ${comment(2)};`);
      await a.query("select 2");
      await a.query("commit");
      // No span: no comment, and a comment whose trace is not sampled.
      await a.query("select 3");
      await a.query(`select 4 ${comment(4, "00")}`);
      // 5: extended protocol (Parse/Bind/Execute/Sync).
      assertEquals(
        (await a.query({ text: `select $1::int as v ${comment(5)}`, values: [5] })).rows,
        [{ v: 5 }],
      );
      // 6: a wait for the only connection, held by another client's transaction for 300 ms.
      await b.query("begin");
      await b.query("select 'holding'");
      const waited = a.query(`select 6 ${comment(6)}`);
      await new Promise((r) => setTimeout(r, 300));
      await b.query("commit");
      await waited;

      const traced = await waitFor("spans of 4 traced transactions", () => {
        const mine = collector.spans.filter((s) => s.span.name === "pool.checkout");
        return mine.length >= 4 ? mine : undefined;
      }, 20_000);
      // Give a late export the chance to show a span that should not exist.
      await new Promise((r) => setTimeout(r, 1500));
      const all = collector.spans.filter((s) => s.span.name === "pool.checkout");
      assertEquals(all.length, 4, JSON.stringify(all.map((s) => s.span.traceId)));
      const byTrace = new Map(traced.map((s) => [s.span.traceId, s]));
      for (const n of [1, 2, 5, 6]) {
        const s = byTrace.get(traceIdOf(n));
        assert(s !== undefined, `a span for trace ${n}`);
        assertEquals(s.span.parentSpanId, spanIdOf(n));
        assertEquals(s.scope, "tessera.pooler");
        assertEquals(s.service, "tessera-pooler");
        assertEquals(attr(s.span, "db.system.name"), "postgresql");
        assertEquals(attr(s.span, "db.namespace"), "postgres");
        assertEquals(attr(s.span, "tessera.user"), "postgres");
        assertEquals(attr(s.span, "tessera.session.pid"), pid); // what pg_backend_pid() told
        assert(typeof attr(s.span, "tessera.backend.pid") === "number");
        assert(s.span.events?.some((e) => e.name === "connection acquired"));
        assert(
          s.span.status?.code === undefined || [0, 1, "STATUS_CODE_UNSET", "STATUS_CODE_OK"]
            .includes(s.span.status.code),
        );
      }
      assert(!byTrace.has(traceIdOf(4)), "an unsampled trace gets no span");
      const wait6 = attr(byTrace.get(traceIdOf(6))!.span, "tessera.pool.wait_ms") as number;
      const wait1 = attr(byTrace.get(traceIdOf(1))!.span, "tessera.pool.wait_ms") as number;
      // The connection came only after the other client's COMMIT, sent 300 ms after this query
      // (a loose bound: the pooler may read the query late on a busy machine).
      assert(wait6 >= 100, `the waiting transaction's wait is recorded: ${wait6} ms`);
      assert(wait1 >= 0 && wait1 < wait6, `an idle connection needs no wait: ${wait1} ms`);
    } finally {
      await a?.end().catch(() => undefined);
      await b?.end().catch(() => undefined);
      await proc.stop();
      await collector.stop();
      await postgres.cleanup();
      await Deno.remove(base, { recursive: true }).catch(() => undefined);
    }
  },
});
