import { assertEquals, assertThrows } from "../../shared/testing/assert.ts";
import { openIdleConnections, parseIdleClientArgs } from "./idle_clients.ts";

Deno.test("parseIdleClientArgs reads flags with defaults and rejects bad counts", () => {
  assertEquals(parseIdleClientArgs(["--port=12901", "--count", "10000"]), {
    host: "127.0.0.1",
    port: 12901,
    count: 10000,
    user: "postgres",
    database: "postgres",
    concurrency: 64,
    timeoutMs: 60000,
  });
  assertThrows(
    () => parseIdleClientArgs(["--port=1", "--count=0"]),
    RangeError,
    "'--count' must be a positive integer: received 0",
  );
  assertThrows(() => parseIdleClientArgs(["--count=1"]), RangeError, "'--port'");
});

Deno.test("openIdleConnections logs every client in and counts refusals", async () => {
  const ready = new Uint8Array([0x52, 0, 0, 0, 8, 0, 0, 0, 0, 0x5a, 0, 0, 0, 5, 0x49]);
  const refused = new Uint8Array([
    0x45,
    0,
    0,
    0,
    10,
    ...new TextEncoder().encode("Mfull\0\0"),
  ]);
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const accepted: Deno.Conn[] = [];
  const serving = (async () => {
    for await (const conn of listener) {
      accepted.push(conn);
      const buf = new Uint8Array(512);
      await conn.read(buf);
      await conn.write(accepted.length % 5 === 0 ? refused : ready);
    }
  })();
  try {
    const port = (listener.addr as Deno.NetAddr).port;
    const progress: number[] = [];
    const { conns, report } = await openIdleConnections(
      { host: "127.0.0.1", port, count: 25, user: "u", database: "d", concurrency: 4 },
      (connected, failed) => progress.push(connected + failed),
    );
    for (const c of conns) c.close();
    assertEquals(report.requested, 25);
    assertEquals(report.connected, 20);
    assertEquals(report.failed, 5);
    assertEquals(report.errors, ["ERROR: full"]);
    assertEquals(conns.length, 20);
  } finally {
    listener.close();
    for (const c of accepted) c.close();
    await serving.catch(() => undefined);
  }
});
