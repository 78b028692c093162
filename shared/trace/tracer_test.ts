import { AsyncLocalStorage } from "node:async_hooks";
import {
  type Attributes,
  type AttributeValue,
  type Context,
  context,
  type ContextManager,
  type Exception,
  type Link,
  ROOT_CONTEXT,
  type Span,
  type SpanContext,
  SpanKind,
  type SpanOptions,
  type SpanStatus,
  SpanStatusCode,
  type TimeInput,
  trace,
  TraceFlags,
  type Tracer,
  type TracerProvider,
} from "@opentelemetry/api";
import { SqlState, TesseraError } from "../errors/mod.ts";
import { assert, assertEquals, assertRejects } from "../testing/assert.ts";
import {
  appendSqlComment,
  getTracer,
  injectTraceparent,
  parseSqlComment,
  withSpan,
} from "./mod.ts";

/** A span that keeps what is done to it, for assertions. */
class RecordedSpan implements Span {
  readonly name: string;
  readonly parent: SpanContext | undefined;
  readonly kind: SpanKind;
  readonly attributes: Attributes = {};
  readonly exceptions: Exception[] = [];
  status: SpanStatus = { code: SpanStatusCode.UNSET };
  ended = false;
  readonly #context: SpanContext;

  constructor(name: string, options: SpanOptions, parent: SpanContext | undefined, id: number) {
    this.name = name;
    this.parent = parent;
    this.kind = options.kind ?? SpanKind.INTERNAL;
    Object.assign(this.attributes, options.attributes);
    this.#context = {
      traceId: parent?.traceId ?? id.toString(16).padStart(32, "a"),
      spanId: id.toString(16).padStart(16, "b"),
      traceFlags: TraceFlags.SAMPLED,
    };
  }
  spanContext(): SpanContext {
    return this.#context;
  }
  setAttribute(key: string, value: AttributeValue): this {
    this.attributes[key] = value;
    return this;
  }
  setAttributes(attributes: Attributes): this {
    Object.assign(this.attributes, attributes);
    return this;
  }
  addEvent(): this {
    return this;
  }
  addLink(_link: Link): this {
    return this;
  }
  addLinks(_links: Link[]): this {
    return this;
  }
  setStatus(status: SpanStatus): this {
    this.status = status;
    return this;
  }
  updateName(): this {
    return this;
  }
  end(_endTime?: TimeInput): void {
    assert(!this.ended, `span ${this.name} ended twice`);
    this.ended = true;
  }
  isRecording(): boolean {
    return !this.ended;
  }
  recordException(exception: Exception): void {
    this.exceptions.push(exception);
  }
}

class RecordingTracer implements Tracer, TracerProvider {
  readonly spans: RecordedSpan[] = [];
  readonly names: string[] = [];

  getTracer(name: string): Tracer {
    this.names.push(name);
    return this;
  }
  startSpan(name: string, options: SpanOptions = {}, ctx: Context = context.active()): Span {
    const span = new RecordedSpan(name, options, trace.getSpanContext(ctx), this.spans.length + 1);
    this.spans.push(span);
    return span;
  }
  startActiveSpan(): never {
    throw new Error("withSpan must not need startActiveSpan");
  }
}

/** What Deno's OpenTelemetry registers, in miniature: the active context per async flow. */
class AsyncContextManager implements ContextManager {
  readonly #storage = new AsyncLocalStorage<Context>();
  active(): Context {
    return this.#storage.getStore() ?? ROOT_CONTEXT;
  }
  with<A extends unknown[], F extends (...args: A) => ReturnType<F>>(
    ctx: Context,
    fn: F,
    thisArg?: ThisParameterType<F>,
    ...args: A
  ): ReturnType<F> {
    return this.#storage.run(ctx, () => fn.apply(thisArg, args));
  }
  bind<T>(_ctx: Context, target: T): T {
    return target;
  }
  enable(): this {
    return this;
  }
  disable(): this {
    this.#storage.disable();
    return this;
  }
}

/**
 * With `OTEL_DENO=true` Deno has registered its own tracer provider, which cannot be swapped
 * out; the tests of a missing or recording provider then do not apply.
 */
const denoOtel = ["true", "1"].includes(Deno.env.get("OTEL_DENO") ?? "");

async function withRecording(fn: (tracer: RecordingTracer) => Promise<void>): Promise<void> {
  const recorder = new RecordingTracer();
  trace.disable();
  context.disable();
  assert(trace.setGlobalTracerProvider(recorder), "could not register the tracer provider");
  assert(context.setGlobalContextManager(new AsyncContextManager()), "no context manager");
  try {
    await fn(recorder);
  } finally {
    trace.disable();
    context.disable();
  }
}

Deno.test({
  name: "withSpan without a tracer provider returns values and rethrows errors",
  ignore: denoOtel,
}, async () => {
  const tracer = getTracer("gateway");
  let seen: Span | undefined;
  assertEquals(
    await withSpan(tracer, "gateway.query", {}, (span) => {
      seen = span;
      return 42;
    }),
    42,
  );
  assertEquals(seen?.isRecording(), false);
  assertEquals(await withSpan(tracer, "x", {}, () => Promise.resolve("async")), "async");
  const thrown = new TesseraError(SqlState.syntaxError, "bad");
  assertEquals(
    await assertRejects(() =>
      withSpan(tracer, "x", {}, () => {
        throw thrown;
      })
    ),
    thrown,
  );
  await assertRejects(() => withSpan(tracer, "x", {}, () => Promise.reject(new Error("no"))));
});

Deno.test({
  name: "withSpan records name, attributes, nesting and a successful end",
  ignore: denoOtel,
}, async () => {
  await withRecording(async (recorder) => {
    const tracer = getTracer("gateway", "1.0.0");
    assertEquals(recorder.names, ["tessera.gateway"]);
    let sql = "";
    const result = await withSpan(
      tracer,
      "gateway.query",
      { "db.namespace": "app" },
      (outer) =>
        withSpan(tracer, "gateway.route", { "db.operation.name": "SELECT" }, async (inner) => {
          await new Promise((resolve) => setTimeout(resolve, 1));
          sql = appendSqlComment("SELECT 1");
          assertEquals(
            injectTraceparent(),
            `00-${inner.spanContext().traceId}-${inner.spanContext().spanId}-01`,
          );
          return outer.spanContext().spanId;
        }, { kind: SpanKind.CLIENT }),
    );
    const [outer, inner] = recorder.spans;
    assert(outer !== undefined && inner !== undefined);
    assertEquals(result, outer.spanContext().spanId);
    assertEquals([outer.name, inner.name], ["gateway.query", "gateway.route"]);
    assertEquals(outer.attributes, { "db.namespace": "app" });
    assertEquals(inner.attributes, { "db.operation.name": "SELECT" });
    assertEquals(inner.kind, SpanKind.CLIENT);
    assertEquals(outer.parent, undefined);
    assertEquals(inner.parent?.spanId, outer.spanContext().spanId);
    assertEquals([outer.ended, inner.ended], [true, true]);
    assertEquals(outer.status.code, SpanStatusCode.UNSET);
    // The SQL sent from inside the span carries the span, so the pooler can continue the trace.
    assertEquals(parseSqlComment(sql)?.spanContext?.spanId, inner.spanContext().spanId);
    // Outside every span nothing is active again.
    assertEquals(injectTraceparent(), undefined);
  });
});

Deno.test({
  name: "withSpan records a TesseraError's SQLSTATE, the exception and error status",
  ignore: denoOtel,
}, async () => {
  await withRecording(async (recorder) => {
    const tracer = getTracer("pooler");
    const err = new TesseraError(SqlState.tooManyConnections, "pool is full");
    const got = await assertRejects(() =>
      withSpan(tracer, "pooler.checkout", {}, () => Promise.reject(err))
    );
    assertEquals(got, err);
    const other = await assertRejects(() =>
      withSpan(tracer, "pooler.other", {}, () => {
        throw new RangeError("out of range");
      })
    );
    assert(other instanceof RangeError);
    const [failed, plain] = recorder.spans;
    assert(failed !== undefined && plain !== undefined);
    assertEquals(failed.attributes, { "db.response.status_code": "53300", "error.type": "53300" });
    assertEquals(failed.status, { code: SpanStatusCode.ERROR, message: "pool is full" });
    assertEquals(failed.exceptions, [err]);
    assertEquals(failed.ended, true);
    assertEquals(plain.attributes, { "error.type": "RangeError" });
    assertEquals(plain.status, { code: SpanStatusCode.ERROR, message: "out of range" });
    assertEquals(plain.ended, true);
  });
});
