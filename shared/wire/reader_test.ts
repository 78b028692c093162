import { TesseraError } from "../errors/mod.ts";
import { assert, assertEquals, assertRejects, assertThrows } from "../testing/assert.ts";
import type { ByteSource } from "./conn.ts";
import { decodeDataRowText, decodeQuery } from "./decode.ts";
import { MemoryConn } from "./memory_conn.ts";
import { Backend } from "./messages.ts";
import { MessageReader } from "./reader.ts";
import { MessageWriter } from "./writer.ts";

/** A conversation's worth of backend messages, including one larger than the initial buffer. */
function sampleStream(bigSize: number): Uint8Array {
  return new MessageWriter()
    .authenticationOk()
    .parameterStatus("client_encoding", "UTF8")
    .backendKeyData(1, 2)
    .readyForQuery("I")
    .rowDescription(["a", "b"])
    .dataRow(["1", null])
    .dataRow(["x".repeat(bigSize), "2"])
    .commandComplete("SELECT 2")
    .emptyQueryResponse()
    .readyForQuery("I")
    .take();
}

async function collect(
  reader: MessageReader,
): Promise<{ type: string; length: number; payload: Uint8Array; raw: Uint8Array }[]> {
  const out = [];
  for await (const m of reader) {
    out.push({
      type: m.typeChar,
      length: m.length,
      payload: m.payload.slice(),
      raw: m.raw.slice(),
    });
  }
  return out;
}

Deno.test("MessageReader yields the same messages whatever the read chunking", async () => {
  const stream = sampleStream(20000);
  const expected = await collect(new MessageReader(new MemoryConn(stream)));
  assertEquals(expected.map((m) => m.type).join(""), "RSKZTDDCIZ");
  const big = expected[6]!;
  assertEquals(decodeDataRowText(big.payload), ["x".repeat(20000), "2"]);
  assertEquals(big.length, big.payload.byteLength + 4);
  for (
    const chunkSizes of [1, 2, 3, 4, 5, 7, 13, 4096, 8191, [1, 4, 5, 1000, 9], [5, 3, 20000, 1]]
  ) {
    const reader = new MessageReader(new MemoryConn(stream, { chunkSizes }), {
      initialBufferSize: 64,
    });
    assertEquals(await collect(reader), expected, `chunkSizes ${JSON.stringify(chunkSizes)}`);
  }
});

Deno.test("MessageReader returns many messages from one read", async () => {
  const stream = new MessageWriter().parseComplete().bindComplete().noData()
    .commandComplete("SELECT 0").readyForQuery("I").take();
  const conn = new MemoryConn(stream);
  const reader = new MessageReader(conn);
  const types: string[] = [];
  for (let m = await reader.next(); m !== null; m = await reader.next()) types.push(m.typeChar);
  assertEquals(types.join(""), "12nCZ");
  assertEquals(conn.reads, 2, "one read for the data, one that sees the end");
});

Deno.test("tryNext hands out every buffered message without reading", async () => {
  const stream = new MessageWriter().parseComplete().bindComplete().commandComplete("SELECT 0")
    .readyForQuery("I").take();
  const conn = new MemoryConn(stream);
  const reader = new MessageReader(conn);
  assertEquals(reader.tryNext(), null, "nothing is buffered before the first read");
  const first = await reader.next();
  assertEquals(first?.typeChar, "1");
  const rest = [];
  for (let m = reader.tryNext(); m !== null; m = reader.tryNext()) rest.push(m);
  assertEquals(rest.map((m) => m.typeChar).join(""), "2CZ");
  assertEquals(conn.reads, 1);
  // The messages lie back to back, so a relay can forward the whole run with one write.
  assertEquals(first!.end, rest[0]!.offset);
  assertEquals(first!.buffer.subarray(first!.offset, rest[2]!.end), stream);
  assertEquals(reader.buffered, 0);
});

Deno.test("MessageReader grows only for a large message and shrinks back afterwards", async () => {
  const stream = sampleStream(50000);
  const reader = new MessageReader(new MemoryConn(stream, { chunkSizes: 1000 }), {
    initialBufferSize: 1024,
  });
  const sizes: number[] = [];
  for (let m = await reader.next(); m !== null; m = await reader.next()) {
    sizes.push(reader.bufferSize);
  }
  assertEquals(sizes.slice(0, 6), [1024, 1024, 1024, 1024, 1024, 1024]);
  assert(sizes[6]! >= 50000 && sizes[6]! < 2 * 50020, `grew to ${sizes[6]}`);
  assertEquals(reader.bufferSize, 1024, "back to the small buffer after small messages");
});

Deno.test("MessageReader rejects a length below 4 with 08P01", async () => {
  for (const length of [0, 3, -1, -2147483648]) {
    const bad = new Uint8Array(5);
    bad[0] = 0x51;
    new DataView(bad.buffer).setInt32(1, length);
    const reader = new MessageReader(new MemoryConn(bad));
    const err = await assertRejects(() => reader.next(), TesseraError, "invalid message length");
    assertEquals(err.code, "08P01");
  }
});

Deno.test("MessageReader rejects an oversized length with 08P01 without allocating it", async () => {
  const head = new Uint8Array(5);
  head[0] = 0x44;
  new DataView(head.buffer).setInt32(1, 0x7fffffff);
  let reads = 0;
  const source: ByteSource = {
    read(p) {
      reads++;
      if (reads > 1) throw new Error("the reader must not wait for the claimed bytes");
      p.set(head);
      return Promise.resolve(5);
    },
  };
  const reader = new MessageReader(source, { initialBufferSize: 64, maxMessageLength: 1 << 20 });
  const err = await assertRejects(() => reader.next(), TesseraError, "message too long");
  assertEquals(err.code, "08P01");
  assertEquals(reader.bufferSize, 64);
  // With the default limit (Postgres's 1 GiB), a 2 GiB claim is refused just the same.
  const defaults = new MessageReader(new MemoryConn(head));
  assertEquals((await assertRejects(() => defaults.next(), TesseraError)).code, "08P01");
});

Deno.test("a message exactly at the limit is accepted, one byte more is not", async () => {
  const msg = new MessageWriter().query("x".repeat(95)).take(); // length 4 + 96 = 100
  const ok = new MessageReader(new MemoryConn(msg), { maxMessageLength: 100 });
  assertEquals(decodeQuery((await ok.next())!.payload), "x".repeat(95));
  const tooBig = new MessageReader(new MemoryConn(msg), { maxMessageLength: 99 });
  await assertRejects(() => tooBig.next(), TesseraError, "the limit is 99");
});

Deno.test("a claimed length is not allocated up front: memory follows the bytes received", async () => {
  const head = new Uint8Array(5 + 1000);
  head[0] = 0x64;
  new DataView(head.buffer).setInt32(1, 100_000_000);
  const reader = new MessageReader(new MemoryConn(head), { initialBufferSize: 256 });
  await assertRejects(() => reader.next(), TesseraError, "part way");
  assert(reader.bufferSize <= 4096, `buffer grew to ${reader.bufferSize} for 1005 bytes received`);
});

Deno.test("an end inside a message is 08P01; an end between messages is null", async () => {
  const stream = new MessageWriter().query("select 1").take();
  for (const cut of [1, 4, 5, stream.byteLength - 1]) {
    const reader = new MessageReader(new MemoryConn(stream.subarray(0, cut), { chunkSizes: 2 }));
    const err = await assertRejects(() => reader.next(), TesseraError, "part way");
    assertEquals(err.code, "08P01");
  }
  const reader = new MessageReader(new MemoryConn(stream));
  assertEquals((await reader.next())?.type, 0x51);
  assertEquals(await reader.next(), null);
  assertEquals(await reader.next(), null);
});

Deno.test("a failing read becomes TesseraError 08006", async () => {
  const source: ByteSource = {
    read: () => Promise.reject(new Deno.errors.ConnectionReset("connection reset by peer")),
  };
  const err = await assertRejects(() => new MessageReader(source).next(), TesseraError, "reset");
  assertEquals(err.code, "08006");
});

Deno.test("payload views cover exactly the payload and raw covers the whole message", async () => {
  const stream = new MessageWriter().readyForQuery("E").sync().take();
  const reader = new MessageReader(new MemoryConn(stream));
  const z = (await reader.next())!;
  assertEquals(z.type, Backend.readyForQuery);
  assertEquals([...z.payload], [0x45]);
  assertEquals(z.raw, stream.subarray(0, 6));
  const s = (await reader.next())!;
  assertEquals(s.payload.byteLength, 0);
  assertEquals(s.raw, stream.subarray(6));
});

Deno.test("MessageReader validates its options", () => {
  const conn = new MemoryConn(new Uint8Array());
  assertThrows(() => new MessageReader(conn, { initialBufferSize: 0 }), RangeError, "received 0");
  assertThrows(() => new MessageReader(conn, { maxMessageLength: 3 }), RangeError, "received 3");
});
