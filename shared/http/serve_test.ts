import { SqlState, TesseraError } from "../errors/mod.ts";
import { assert, assertEquals, assertRejects, assertStringIncludes } from "../testing/assert.ts";
import { createStatusApp, serveComponent, type ServedComponent } from "./mod.ts";

Deno.test("serveComponent: serves the status app on a free port", async () => {
  let ready = false;
  const app = createStatusApp({ component: "pgctld", alias: "pg0", ready: () => ready });
  const served = await serveComponent({ port: 0, app });
  try {
    assertEquals(served.addr.hostname, "127.0.0.1");
    assert(served.addr.port > 0, "expected a real port");
    assertEquals(served.url, `http://127.0.0.1:${served.addr.port}`);
    let res = await fetch(`${served.url}/live`);
    assertEquals([res.status, await res.text()], [200, "ok"]);
    res = await fetch(`${served.url}/ready`);
    assertEquals([res.status, await res.json()], [503, { ready: false }]);
    ready = true;
    res = await fetch(`${served.url}/ready`);
    assertEquals([res.status, await res.json()], [200, { ready: true }]);
    res = await fetch(`${served.url}/status`);
    const body = await res.json();
    assertEquals([res.status, body.component, body.alias], [200, "pgctld", "pg0"]);
    res = await fetch(`${served.url}/no/such/path`);
    assertEquals(res.status, 404);
    await res.body?.cancel();
  } finally {
    await served.shutdown();
  }
});

Deno.test("serveComponent: a port in use is a clear 55006 error naming the address", async () => {
  const app = createStatusApp({ component: "pgctld" });
  const first = await serveComponent({ port: 0, app });
  try {
    const err = await assertRejects(
      () => serveComponent({ port: first.addr.port, app }),
      TesseraError,
      `127.0.0.1:${first.addr.port}`,
    );
    assertEquals(err.code, SqlState.objectInUse);
    assertStringIncludes(err.message, "already in use");
    assert(err.cause instanceof Deno.errors.AddrInUse);
    // The first server still serves.
    const res = await fetch(`${first.url}/live`);
    assertEquals(await res.text(), "ok");
  } finally {
    await first.shutdown();
  }
});

Deno.test("serveComponent: an address that cannot be bound is 58000", async () => {
  const app = createStatusApp({ component: "pgctld" });
  // TEST-NET-1 (RFC 5737) is never assigned to a local interface.
  const err = await assertRejects(
    () => serveComponent({ hostname: "192.0.2.1", port: 0, app }),
    TesseraError,
    "192.0.2.1:0",
  );
  assertEquals(err.code, SqlState.systemError);
  await assertRejects(() => serveComponent({ port: 70000, app }), RangeError, "70000");
});

Deno.test("serveComponent: aborting the signal shuts the server down; shutdown is idempotent", async () => {
  const controller = new AbortController();
  const app = createStatusApp({ component: "pgctld" });
  let served: ServedComponent | undefined = await serveComponent({
    port: 0,
    app,
    signal: controller.signal,
  });
  try {
    const { port } = served.addr;
    controller.abort();
    await served.finished;
    await served.shutdown();
    served = undefined;
    // The port is free again.
    const again = await serveComponent({ port, app });
    await again.shutdown();
  } finally {
    await served?.shutdown();
  }
  await assertRejects(
    () => serveComponent({ port: 0, app, signal: AbortSignal.abort() }),
    TesseraError,
    "shut down",
  );
});
