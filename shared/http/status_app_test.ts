import { SqlState, TesseraError } from "../errors/mod.ts";
import { Logger } from "../log/mod.ts";
import { assert, assertEquals, assertMatch } from "../testing/assert.ts";
import { createStatusApp } from "./mod.ts";

Deno.test("status app: /live answers ok", async () => {
  const app = createStatusApp({ component: "pgctld" });
  const res = await app.request("/live");
  assertEquals(res.status, 200);
  assertEquals(await res.text(), "ok");
});

Deno.test("status app: /ready follows ready(), and a failing check is not ready", async () => {
  let ready: boolean | Error = false;
  const app = createStatusApp({
    component: "pooler",
    ready: () => {
      if (ready instanceof Error) throw ready;
      return Promise.resolve(ready);
    },
    logger: new Logger({ component: "test", sink: () => {} }),
  });
  let res = await app.request("/ready");
  assertEquals(res.status, 503);
  assertEquals(await res.json(), { ready: false });
  ready = true;
  res = await app.request("/ready");
  assertEquals(res.status, 200);
  assertEquals(await res.json(), { ready: true });
  ready = new TesseraError(SqlState.cannotConnectNow, "postgres is starting up");
  res = await app.request("/ready");
  assertEquals(res.status, 503);
  const body = await res.json();
  assertEquals(body.ready, false);
  assertEquals(body.error.code, "57P03");
  assertEquals(body.error.message, "postgres is starting up");
  // Without a check the component is always ready.
  res = await createStatusApp({ component: "x" }).request("/ready");
  assertEquals(res.status, 200);
});

Deno.test("status app: /status reports identity, uptime and the component's fields", async () => {
  const startedAt = new Date(Date.now() - 5_000);
  const app = createStatusApp({
    component: "pgctld",
    alias: "pg0",
    version: "0.1.0",
    startedAt,
    status: () => ({ postgres: { running: true, pid: 4242 }, lsn: 123n }),
  });
  const res = await app.request("/status");
  assertEquals(res.status, 200);
  assertMatch(res.headers.get("content-type") ?? "", /^application\/json/);
  const body = await res.json();
  assert(body.uptimeSeconds >= 5 && body.uptimeSeconds < 60, `uptime ${body.uptimeSeconds}`);
  delete body.uptimeSeconds;
  assertEquals(body, {
    component: "pgctld",
    alias: "pg0",
    version: "0.1.0",
    startedAt: startedAt.toISOString(),
    postgres: { running: true, pid: 4242 },
    lsn: "123",
  });
  // Non-object status values are reported under `status`; absent optional fields are left out.
  const plain = await createStatusApp({ component: "x", status: () => "warming up" })
    .request("/status");
  const plainBody = await plain.json();
  assertEquals(plainBody.status, "warming up");
  assertEquals("alias" in plainBody, false);
});

Deno.test("status app: a failing status() answers 500 JSON with the message", async () => {
  const lines: string[] = [];
  const app = createStatusApp({
    component: "pgctld",
    status: () => Promise.reject(new Error("cannot read postmaster.pid")),
    logger: new Logger({ component: "test", sink: (l) => lines.push(l) }),
  });
  const res = await app.request("/status");
  assertEquals(res.status, 500);
  const body = await res.json();
  assertEquals(body.component, "pgctld");
  assertEquals(body.error, { message: "cannot read postmaster.pid" });
  assertEquals(lines.length, 1);
  // A status that cannot be serialised is an error too, not a crash.
  const circular: Record<string, unknown> = {};
  circular.self = circular;
  const bad = await createStatusApp({ component: "x", status: () => circular }).request("/status");
  assertEquals(bad.status, 500);
  assertEquals((await bad.json()).component, "x");
});

Deno.test("status app: components add routes; a route that throws answers 500 JSON", async () => {
  const app = createStatusApp({
    component: "orch",
    logger: new Logger({ component: "test", sink: () => {} }),
  });
  app.get("/hello", (c) => c.json({ hello: "world" }));
  app.get("/boom", () => {
    throw new TesseraError(SqlState.objectInUse, "shard is locked");
  });
  assertEquals(await (await app.request("/hello")).json(), { hello: "world" });
  const res = await app.request("/boom");
  assertEquals(res.status, 500);
  assertEquals((await res.json()).error.code, "55006");
  const missing = await app.request("/missing");
  assertEquals(missing.status, 404);
  await missing.body?.cancel();
});
