import { create, createFileRegistry, type DescService } from "@bufbuild/protobuf";
import type { GenService } from "@bufbuild/protobuf/codegenv2";
import {
  file_google_protobuf_wrappers,
  FileDescriptorProtoSchema,
  Int32ValueSchema,
} from "@bufbuild/protobuf/wkt";
import type { HandlerContext } from "@connectrpc/connect";
import { PgctldService } from "../../proto/gen/tessera/pgctld/v1/pgctld_pb.ts";
import { SqlState, TesseraError } from "../errors/mod.ts";
import { createStatusApp, serveComponent, type ServedComponent } from "../http/mod.ts";
import { Logger } from "../log/mod.ts";
import { assert, assertEquals, assertRejects, assertStringIncludes } from "../testing/assert.ts";
import {
  Code,
  connectCodeOf,
  createRpcClient,
  createRpcHandler,
  type RpcClientOptions,
} from "./mod.ts";

/** A server-streaming service, described in code so the test needs no generated file. */
type CounterServiceDesc = GenService<{
  count: {
    methodKind: "server_streaming";
    input: typeof Int32ValueSchema;
    output: typeof Int32ValueSchema;
  };
}>;
const CounterService = createFileRegistry(
  create(FileDescriptorProtoSchema, {
    name: "tessera/test/v1/counter.proto",
    package: "tessera.test.v1",
    dependency: ["google/protobuf/wrappers.proto"],
    syntax: "proto3",
    service: [{
      name: "CounterService",
      method: [{
        name: "Count",
        inputType: ".google.protobuf.Int32Value",
        outputType: ".google.protobuf.Int32Value",
        serverStreaming: true,
      }],
    }],
  }),
  (name) => name === "google/protobuf/wrappers.proto" ? file_google_protobuf_wrappers : undefined,
).getService("tessera.test.v1.CounterService") as DescService as CounterServiceDesc;

/** Resolves when `signal` aborts; never leaves a timer behind. */
function aborted(signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal.aborted) resolve();
    else signal.addEventListener("abort", () => resolve(), { once: true });
  });
}

interface Fixture {
  served: ServedComponent;
  logLines: Record<string, unknown>[];
  client(options?: RpcClientOptions): ReturnType<typeof createRpcClient<typeof PgctldService>>;
  counter(options?: RpcClientOptions): ReturnType<typeof createRpcClient<CounterServiceDesc>>;
}

async function withServer(fn: (f: Fixture) => Promise<void>): Promise<void> {
  const logLines: Record<string, unknown>[] = [];
  const logger = new Logger({
    component: "test",
    level: "debug",
    sink: (line) => logLines.push(JSON.parse(line)),
  });
  const rpc = createRpcHandler((router) => {
    router.service(PgctldService, {
      status: () => ({
        status: { running: true, pid: 4242, port: 25432, serverVersion: "17.5", dataDir: "/d" },
      }),
      start: () => {
        throw new TesseraError(SqlState.objectNotInPrerequisiteState, "already running", {
          detail: "postmaster.pid names PID 4242\nline two: é ✓",
          hint: "stop it first",
        });
      },
      stop: () => {
        throw new Error("disk on fire");
      },
      restart: async (_req, ctx: HandlerContext) => {
        await aborted(ctx.signal);
        return {};
      },
    });
    router.service(CounterService, {
      async *count(req, ctx: HandlerContext) {
        for (let i = 1; i <= req.value; i++) yield { value: i };
        if (req.value < 0) {
          yield { value: -1 };
          await aborted(ctx.signal);
          return;
        }
        throw new TesseraError(SqlState.tooManyConnections, "counter exhausted", { hint: "h" });
      },
    });
  }, { logger });
  const app = createStatusApp({ component: "pgctld", alias: "pg0" });
  const served = await serveComponent({ port: 0, app, rpc, logger });
  try {
    await fn({
      served,
      logLines,
      client: (options) => createRpcClient(PgctldService, served.url, options),
      counter: (options) => createRpcClient(CounterService, served.url, options),
    });
  } finally {
    await served.shutdown();
  }
}

Deno.test("rpc: a call returns the service's data over HTTP, in binary and JSON", async () => {
  await withServer(async ({ client }) => {
    for (const useBinaryFormat of [true, false]) {
      const res = await client({ useBinaryFormat }).status({});
      assertEquals(res.status?.running, true);
      assertEquals(res.status?.pid, 4242);
      assertEquals(res.status?.serverVersion, "17.5");
    }
  });
});

Deno.test("rpc: a TesseraError reaches the client with its SQLSTATE, detail and hint", async () => {
  await withServer(async ({ client, logLines }) => {
    for (const useBinaryFormat of [true, false]) {
      const err = await assertRejects(
        () => client({ useBinaryFormat }).start({}),
        TesseraError,
        "already running",
      );
      assertEquals(err.message, "already running");
      assertEquals(err.code, "55000");
      assertEquals(err.detail, "postmaster.pid names PID 4242\nline two: é ✓");
      assertEquals(err.hint, "stop it first");
      assertEquals(err.severity, "ERROR");
      assertEquals(connectCodeOf(err), Code.FailedPrecondition);
    }
    assert(!logLines.some((l) => l.level === "error"), "expected TesseraErrors not to be errors");
  });
});

Deno.test("rpc: an unexpected exception is Internal, XX000, and logged", async () => {
  await withServer(async ({ client, logLines }) => {
    const err = await assertRejects(() => client().stop({}), TesseraError, "disk on fire");
    assertEquals(err.code, "XX000");
    assertEquals(connectCodeOf(err), Code.Internal);
    const line = logLines.find((l) => l.level === "error");
    assert(line !== undefined, "expected an error log line");
    assertEquals(line.procedure, "tessera.pgctld.v1.PgctldService/Stop");
    assertEquals((line.error as Record<string, unknown>).message, "disk on fire");
  });
});

Deno.test("rpc: a method not implemented is 0A000 Unimplemented", async () => {
  await withServer(async ({ client }) => {
    const err = await assertRejects(() => client().version({}), TesseraError);
    assertEquals(err.code, "0A000");
    assertEquals(connectCodeOf(err), Code.Unimplemented);
  });
});

Deno.test("rpc: a call slower than its deadline fails with 57014 DeadlineExceeded", async () => {
  await withServer(async ({ client }) => {
    // The client's default deadline.
    let err = await assertRejects(
      () => client({ timeoutMs: 150 }).restart({}),
      TesseraError,
      "deadline exceeded",
    );
    assertEquals(err.code, "57014");
    assertEquals(connectCodeOf(err), Code.DeadlineExceeded);
    // A deadline given by the caller.
    err = await assertRejects(() => client().restart({}, { timeoutMs: 100 }), TesseraError);
    assertEquals(err.code, "57014");
    // Asking for no deadline still gets the client's.
    err = await assertRejects(
      () => client({ timeoutMs: 150 }).restart({}, { timeoutMs: 0 }),
      TesseraError,
    );
    assertEquals(err.code, "57014");
  });
});

Deno.test("rpc: a cancelled call fails with 57014 Canceled", async () => {
  await withServer(async ({ client }) => {
    const controller = new AbortController();
    const call = client().restart({}, { signal: controller.signal });
    controller.abort();
    const err = await assertRejects(() => call, TesseraError);
    assertEquals(err.code, "57014");
    assertEquals(connectCodeOf(err), Code.Canceled);
  });
});

Deno.test("rpc: a server-streaming error arrives after the messages as a TesseraError", async () => {
  await withServer(async ({ counter }) => {
    const got: number[] = [];
    const err = await assertRejects(async () => {
      for await (const msg of counter().count({ value: 3 })) got.push(msg.value);
    }, TesseraError);
    assertEquals(got, [1, 2, 3]);
    assertEquals(err.code, "53300");
    assertEquals(err.hint, "h");
    assertEquals(connectCodeOf(err), Code.ResourceExhausted);
  });
});

Deno.test("rpc: shutdown ends a stream in progress with 08006 Unavailable", async () => {
  let served: ServedComponent | undefined;
  let shutdown: Promise<void> | undefined;
  await withServer(async (f) => {
    served = f.served;
    const got: number[] = [];
    const err = await assertRejects(async () => {
      for await (const msg of f.counter({ timeoutMs: 30_000 }).count({ value: -1 })) {
        got.push(msg.value);
        shutdown ??= f.served.shutdown();
      }
    }, TesseraError);
    assertEquals(got, [-1]);
    assertEquals(err.code, "08006");
    assertStringIncludes(err.message, "shutting down");
    assertEquals(connectCodeOf(err), Code.Unavailable);
  });
  assert(served !== undefined && shutdown !== undefined);
  await shutdown;
});

Deno.test("rpc: paths that are not procedures go to the HTTP app", async () => {
  await withServer(async ({ served }) => {
    let res = await fetch(`${served.url}/tessera.pgctld.v1.PgctldService/NoSuchMethod`, {
      method: "POST",
    });
    assertEquals(res.status, 404);
    await res.body?.cancel();
    res = await fetch(`${served.url}/nowhere`);
    assertEquals(res.status, 404);
    await res.body?.cancel();
    res = await fetch(`${served.url}/live`);
    assertEquals(await res.text(), "ok");
  });
});

Deno.test("rpc: a server that cannot be reached is 08006", async () => {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = listener.addr.port;
  listener.close();
  const client = createRpcClient(PgctldService, `http://127.0.0.1:${port}`, { timeoutMs: 5000 });
  const err = await assertRejects(() => client.status({}), TesseraError, "unavailable");
  assertEquals(err.code, "08006");
});
