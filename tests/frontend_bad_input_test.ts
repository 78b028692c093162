/**
 * Bad input on a client port through the shared front end: garbage, truncated packets,
 * impossible lengths, unknown request codes, probes, a flood of half-open connections, a
 * client that hangs up in the middle of TLS. Each one gets FATAL 08P01 (when anything can be
 * said) and is closed; the server keeps serving, and a following psql client works.
 * Ports 12860-12879.
 */

import { loadFrontendTls } from "../shared/frontend/mod.ts";
import {
  errorFields,
  FixtureServer,
  makeTestCerts,
  RawClient,
  run,
} from "../shared/frontend/test_server.ts";
import { findPgBindir } from "../shared/pgbin/mod.ts";
import { assert, assertEquals } from "../shared/testing/assert.ts";
import { MessageWriter } from "../shared/wire/mod.ts";

const PSQL = `${findPgBindir()}/psql`;
const AUTH = { lookup: () => ({ method: "trust" as const }) };

async function psqlWorks(port: number, sslmode = "disable"): Promise<void> {
  const out = await run(PSQL, [
    "-X",
    "-w",
    "-At",
    "-d",
    `host=127.0.0.1 port=${port} user=good sslmode=${sslmode}`,
    "-c",
    "whoami",
  ]);
  assertEquals(
    [out.stdout.trim(), out.stderr],
    [`good/good/tcp/${sslmode === "disable" ? "plain" : "tls"}`, ""],
  );
}

/** Sends `bytes` (then optionally shuts down the write side) and returns the error fields. */
async function refused(
  port: number,
  bytes: Uint8Array,
  halfClose = false,
): Promise<Record<string, string>> {
  const c = await RawClient.connect(port);
  try {
    await c.send(bytes);
    if (halfClose) await c.conn.closeWrite();
    const messages = await c.messages();
    assert(await c.closedByServer(), "the server closes the connection");
    const last = messages.at(-1);
    assert(last?.[0] === "E", `an ErrorResponse: ${messages.map(([t]) => t).join("")}`);
    return errorFields(last[1]);
  } finally {
    c.close();
  }
}

function int32(...values: number[]): Uint8Array {
  const out = new Uint8Array(values.length * 4);
  const view = new DataView(out.buffer);
  values.forEach((v, i) => view.setInt32(i * 4, v));
  return out;
}

Deno.test("garbage, truncated packets, bad lengths and unknown codes get 08P01; psql still works", async () => {
  const server = FixtureServer.start({ port: 12860 }, { auth: AUTH });
  try {
    const startup = new MessageWriter().startupMessage({ user: "x", database: "y" }).take();
    const garbage = new TextEncoder().encode("GET / HTTP/1.1\r\nHost: localhost\r\n\r\n");
    const cases: [string, Uint8Array, boolean, string][] = [
      ["HTTP request", garbage, false, "invalid length of startup packet: 1195725856"],
      ["length 0x7fffffff", int32(0x7fffffff, 196608), false, "invalid length of startup packet"],
      ["negative length", int32(-8, 196608), false, "invalid length of startup packet: -8"],
      ["length below 8", int32(4), false, "invalid length of startup packet: 4"],
      ["length 10001", int32(10001, 196608), false, "invalid length of startup packet: 10001"],
      ["truncated startup", startup.subarray(0, 20), true, "connection closed part way"],
      ["truncated header", startup.subarray(0, 6), true, "connection closed part way"],
      [
        "unknown request code",
        int32(8, (1234 << 16) | 5681),
        false,
        "unknown startup request code",
      ],
      ["cancel of wrong length", int32(12, 80877102, 1), false, "invalid length of cancel request"],
      ["SSLRequest of wrong length", int32(12, 80877103, 0), false, "invalid length of encryption"],
      [
        "parameters not terminated",
        new Uint8Array([...int32(14, 196608), 0x75, 0x73, 0x65, 0x72, 0, 0x78]),
        false,
        "not terminated",
      ],
    ];
    for (const [what, bytes, halfClose, message] of cases) {
      const fields = await refused(12860, bytes, halfClose);
      assertEquals([fields["S"], fields["C"]], ["FATAL", "08P01"], what);
      assert(fields["M"]!.includes(message), `${what}: ${fields["M"]}`);
    }
    await psqlWorks(12860);
    // A port probe (connect, close) and random bytes just end.
    for (let i = 0; i < 5; i++) {
      const probe = await Deno.connect({ hostname: "127.0.0.1", port: 12860 });
      probe.close();
      const noise = await RawClient.connect(12860);
      await noise.send(crypto.getRandomValues(new Uint8Array(3000)));
      noise.close();
    }
    await psqlWorks(12860);
  } finally {
    await server.stop();
  }
  assertEquals(server.log.crashes, []);
});

Deno.test("a flood of half-open connections is closed after startupTimeoutMs while good clients are served", async () => {
  const server = FixtureServer.start({ port: 12861 }, { auth: AUTH, startupTimeoutMs: 1500 });
  const idle: Deno.Conn[] = [];
  try {
    for (let i = 0; i < 300; i++) {
      const conn = await Deno.connect({ hostname: "127.0.0.1", port: 12861 });
      // A third send a partial startup packet, the rest nothing at all.
      if (i % 3 === 0) {
        await conn.write(new MessageWriter().startupMessage({ user: "x" }).take().subarray(0, 9));
      }
      idle.push(conn);
    }
    await psqlWorks(12861);
    // Every half-open connection is closed by the server: its reads end.
    const ends = await Promise.all(idle.map(async (conn) => {
      const buf = new Uint8Array(256);
      for (;;) {
        const n = await conn.read(buf).catch(() => null);
        if (n === null) return true;
      }
    }));
    assertEquals(ends.filter(Boolean).length, 300);
    const closed = server.log.results.filter((r) => r.kind === "closed").length;
    assertEquals(closed, 300);
    await psqlWorks(12861);
  } finally {
    for (const conn of idle) {
      try {
        conn.close();
      } catch {
        // already closed
      }
    }
    await server.stop();
  }
  assertEquals(server.log.crashes, []);
});

Deno.test("clients that hang up in the middle of TLS or authentication leave the server serving", async () => {
  const certs = await makeTestCerts();
  const tls = loadFrontendTls({ certFile: certs.certFile, keyFile: certs.keyFile });
  const server = FixtureServer.start({ port: 12862 }, { auth: AUTH, tls, startupTimeoutMs: 2000 });
  try {
    for (let i = 0; i < 10; i++) {
      // SSLRequest, then a partial ClientHello-looking record, then gone.
      const c = await RawClient.connect(12862);
      await c.send(new MessageWriter().sslRequest().take());
      assertEquals(await c.read(1), Uint8Array.of(0x53));
      await c.send(Uint8Array.of(0x16, 0x03, 0x01, 0x02, 0x00, 0x01));
      c.close();
      // SSLRequest, accepted, then silence until the timeout closes it.
    }
    const silent = await RawClient.connect(12862);
    await silent.send(new MessageWriter().sslRequest().take());
    assertEquals(await silent.read(1), Uint8Array.of(0x53));
    await psqlWorks(12862, "require");
    await psqlWorks(12862, "disable");
    assert(await silent.closedByServer(5000), "a silent TLS client is closed at the timeout");
    silent.close();
    await psqlWorks(12862, "require");
  } finally {
    await server.stop();
    await Deno.remove(certs.dir, { recursive: true });
  }
  assertEquals(server.log.crashes, []);
  assertEquals(server.sessions.length, 3);
});
