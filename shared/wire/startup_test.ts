import { TesseraError } from "../errors/mod.ts";
import { assertEquals, assertRejects, assertThrows } from "../testing/assert.ts";
import { MemoryConn } from "./memory_conn.ts";
import { GSSENC_REQUEST_CODE, SSL_REQUEST_CODE } from "./messages.ts";
import { decodeStartupParams, readStartupPacket } from "./startup.ts";
import { MessageWriter } from "./writer.ts";

function packet(code: number, body: Uint8Array = new Uint8Array(0), length = 8 + body.byteLength) {
  const out = new Uint8Array(8 + body.byteLength);
  const v = new DataView(out.buffer);
  v.setInt32(0, length);
  v.setInt32(4, code);
  out.set(body, 8);
  return out;
}

Deno.test("readStartupPacket reads a StartupMessage delivered one byte at a time", async () => {
  const bytes = new MessageWriter().startupMessage({
    user: "alice",
    database: "app",
    application_name: "psql",
    options: "-c search_path=x",
  }).take();
  for (const chunkSizes of [1, 3, [2, 9, 1]]) {
    const got = await readStartupPacket(new MemoryConn(bytes, { chunkSizes }));
    assertEquals(got, {
      kind: "startup",
      majorVersion: 3,
      minorVersion: 0,
      params: new Map([
        ["user", "alice"],
        ["database", "app"],
        ["application_name", "psql"],
        ["options", "-c search_path=x"],
      ]),
    });
  }
});

Deno.test("readStartupPacket reads nothing past an SSLRequest", async () => {
  const after = new MessageWriter().startupMessage({ user: "bob" }).take();
  const conn = new MemoryConn([new MessageWriter().sslRequest().take(), after]);
  assertEquals(await readStartupPacket(conn), { kind: "ssl" });
  assertEquals(conn.unread, after.byteLength, "bytes after the request stay on the connection");
  assertEquals(await readStartupPacket(conn), {
    kind: "startup",
    majorVersion: 3,
    minorVersion: 0,
    params: new Map([["user", "bob"]]),
  });
  assertEquals(await readStartupPacket(conn), null);
});

Deno.test("readStartupPacket recognizes GSSENCRequest and CancelRequest", async () => {
  assertEquals(await readStartupPacket(new MemoryConn(packet(GSSENC_REQUEST_CODE))), {
    kind: "gssenc",
  });
  const cancel = new MessageWriter().cancelRequest(-5, 0x7fffffff).take();
  assertEquals(await readStartupPacket(new MemoryConn(cancel, { chunkSizes: 5 })), {
    kind: "cancel",
    processId: -5,
    secretKey: 0x7fffffff,
  });
});

Deno.test("readStartupPacket reports a newer minor version so the server can negotiate", async () => {
  const body = new TextEncoder().encode("user\0u\0_pq_.x\0y\0\0");
  const got = await readStartupPacket(new MemoryConn(packet((3 << 16) | 2, body)));
  assertEquals(got, {
    kind: "startup",
    majorVersion: 3,
    minorVersion: 2,
    params: new Map([["user", "u"], ["_pq_.x", "y"]]),
  });
});

Deno.test("readStartupPacket refuses bad lengths with 08P01 before reading the body", async () => {
  for (const length of [0, 4, 7, 10001, 0x7fffffff, -1]) {
    const conn = new MemoryConn(packet(196608, new Uint8Array(0), length));
    const err = await assertRejects(() => readStartupPacket(conn), TesseraError, "invalid length");
    assertEquals(err.code, "08P01");
    assertEquals(conn.unread, 4, "only the length word was read");
  }
  const small = new MessageWriter().startupMessage({ user: "x".repeat(100) }).take();
  await assertRejects(
    () => readStartupPacket(new MemoryConn(small), { maxLength: 50 }),
    TesseraError,
    "50",
  );
});

Deno.test("readStartupPacket checks the lengths of fixed-size requests", async () => {
  const ssl = packet(SSL_REQUEST_CODE, new Uint8Array(4));
  const err = await assertRejects(() => readStartupPacket(new MemoryConn(ssl)), TesseraError);
  assertEquals(err.code, "08P01");
  const cancel = packet(80877102, new Uint8Array(4));
  await assertRejects(() => readStartupPacket(new MemoryConn(cancel)), TesseraError, "cancel");
});

Deno.test("readStartupPacket refuses protocol 2 with 0A000", async () => {
  const err = await assertRejects(
    () => readStartupPacket(new MemoryConn(packet(2 << 16, new Uint8Array(1)))),
    TesseraError,
    "unsupported frontend protocol 2.0",
  );
  assertEquals(err.code, "0A000");
});

Deno.test("readStartupPacket: end before any byte is null, end part way is 08P01", async () => {
  assertEquals(await readStartupPacket(new MemoryConn(new Uint8Array(0))), null);
  const bytes = new MessageWriter().startupMessage({ user: "u" }).take();
  for (const cut of [2, 6, bytes.byteLength - 1]) {
    const err = await assertRejects(
      () => readStartupPacket(new MemoryConn(bytes.subarray(0, cut))),
      TesseraError,
      "part way",
    );
    assertEquals(err.code, "08P01");
  }
});

Deno.test("decodeStartupParams needs the closing zero byte", () => {
  const enc = new TextEncoder();
  assertEquals(decodeStartupParams(enc.encode("\0")), new Map());
  for (const bad of ["", "user\0u\0", "user\0", "user\0u\0\0extra"]) {
    const err = assertThrows(() => decodeStartupParams(enc.encode(bad)), TesseraError);
    assertEquals(err.code, "08P01");
  }
});
