import { SqlState, TesseraError } from "../errors/mod.ts";
import { assert, assertEquals, assertThrows } from "../testing/assert.ts";
import {
  decodeAuthentication,
  decodeBackendKeyData,
  decodeBind,
  decodeClose,
  decodeCommandComplete,
  decodeDataRow,
  decodeDataRowText,
  decodeDescribe,
  decodeErrorFields,
  decodeExecute,
  decodeNegotiateProtocolVersion,
  decodeNotification,
  decodeParameterDescription,
  decodeParameterStatus,
  decodeParse,
  decodePasswordMessage,
  decodeQuery,
  decodeReadyForQuery,
  decodeRowDescription,
  decodeSaslInitialResponse,
} from "./decode.ts";
import { writeAll } from "./conn.ts";
import { MemoryConn } from "./memory_conn.ts";
import {
  Backend,
  CANCEL_REQUEST_CODE,
  Frontend,
  PROTOCOL_VERSION_3_0,
  SSL_REQUEST_CODE,
} from "./messages.ts";
import { MessageReader, type WireMessage } from "./reader.ts";
import { readStartupPacket } from "./startup.ts";
import { MessageWriter } from "./writer.ts";

const text = (b: Uint8Array) => new TextDecoder().decode(b);

async function readAll(bytes: Uint8Array): Promise<{ type: number; payload: Uint8Array }[]> {
  const reader = new MessageReader(new MemoryConn(bytes, { chunkSizes: [3, 1, 11] }));
  const out: { type: number; payload: Uint8Array }[] = [];
  for await (const m of reader) out.push({ type: m.type, payload: m.payload.slice() });
  return out;
}

async function only(bytes: Uint8Array): Promise<{ type: number; payload: Uint8Array }> {
  const msgs = await readAll(bytes);
  assertEquals(msgs.length, 1);
  return msgs[0]!;
}

Deno.test("MessageWriter frames a message with type byte and patched length", () => {
  const bytes = new MessageWriter().begin(0x51).cstring("select 1").end().take();
  assertEquals(bytes[0], 0x51);
  assertEquals(new DataView(bytes.buffer).getInt32(1), 4 + 9);
  assertEquals(text(bytes.subarray(5)), "select 1\0");
});

Deno.test("MessageWriter builds several messages into one buffer and grows as needed", async () => {
  const w = new MessageWriter(8);
  const big = "x".repeat(5000);
  w.authenticationOk().parameterStatus("server_version", "15.18").backendKeyData(42, -7)
    .query(big).readyForQuery("I");
  const msgs = await readAll(w.take());
  assertEquals(msgs.map((m) => m.type), [
    Backend.authentication,
    Backend.parameterStatus,
    Backend.backendKeyData,
    Frontend.query,
    Backend.readyForQuery,
  ]);
  assertEquals(decodeQuery(msgs[3]!.payload), big);
  assertEquals(decodeBackendKeyData(msgs[2]!.payload), { processId: 42, secretKey: -7 });
  assertEquals(w.length, 0, "take() resets the writer");
});

Deno.test("MessageWriter encodes UTF-8 and rejects strings with a zero character", () => {
  const w = new MessageWriter(4);
  const bytes = w.query("select 'é€😀'").take();
  assertEquals(decodeQuery(bytes.subarray(5)), "select 'é€😀'");
  const w2 = new MessageWriter().sync();
  const err = assertThrows(() => w2.query("select '\0'"), TesseraError, "0x00");
  assertEquals(err.code, "22021");
  assertEquals(
    w2.flush().take(),
    new MessageWriter().sync().flush().take(),
    "the bad message is dropped",
  );
});

Deno.test("MessageWriter refuses to hand out a half-built message", () => {
  const w = new MessageWriter().begin(0x51);
  assertThrows(() => w.take(), Error, "not ended");
  assertThrows(() => new MessageWriter().end(), Error, "without begin");
});

Deno.test("backend authentication messages decode to their sub-messages", async () => {
  const w = new MessageWriter();
  w.authenticationOk().authenticationCleartextPassword()
    .authenticationMd5Password(Uint8Array.of(1, 2, 3, 4))
    .authenticationSasl(["SCRAM-SHA-256", "SCRAM-SHA-256-PLUS"])
    .authenticationSaslContinue("r=abc,s=c2FsdA==,i=4096")
    .authenticationSaslFinal("v=xyz");
  const auths = (await readAll(w.take())).map((m) => decodeAuthentication(m.payload));
  assertEquals(auths, [
    { kind: "ok" },
    { kind: "cleartextPassword" },
    { kind: "md5Password", salt: Uint8Array.of(1, 2, 3, 4) },
    { kind: "sasl", mechanisms: ["SCRAM-SHA-256", "SCRAM-SHA-256-PLUS"] },
    { kind: "saslContinue", data: new TextEncoder().encode("r=abc,s=c2FsdA==,i=4096") },
    { kind: "saslFinal", data: new TextEncoder().encode("v=xyz") },
  ]);
  assertThrows(() => new MessageWriter().authenticationMd5Password(new Uint8Array(3)), RangeError);
});

Deno.test("ErrorResponse and NoticeResponse carry S, V, C, M, D and H from a TesseraError", async () => {
  const err = new TesseraError(SqlState.tooManyConnections, "pool is full", {
    detail: "20 of 20 in use",
    hint: "raise --pool-size",
    severity: "FATAL",
  });
  const msg = await only(new MessageWriter().errorResponse(err, { P: "7" }).take());
  assertEquals(msg.type, Backend.errorResponse);
  const fields = decodeErrorFields(msg.payload);
  assertEquals(fields.all, {
    S: "FATAL",
    V: "FATAL",
    C: "53300",
    M: "pool is full",
    D: "20 of 20 in use",
    H: "raise --pool-size",
    P: "7",
  });
  assertEquals(fields.position, "7");

  const notice = new TesseraError(SqlState.warning, "careful", { severity: "WARNING" });
  const n = await only(new MessageWriter().noticeResponse(notice).take());
  assertEquals(n.type, Backend.noticeResponse);
  assertEquals(decodeErrorFields(n.payload).all, {
    S: "WARNING",
    V: "WARNING",
    C: "01000",
    M: "careful",
  });
});

Deno.test("simpleResult writes RowDescription, DataRows with NULLs, then CommandComplete", async () => {
  const w = new MessageWriter().simpleResult({
    fields: ["a", { name: "b", typeOid: 23, typeSize: 4 }],
    rows: [["1", null], ["", "x"]],
    command: "SELECT 2",
  }).emptyQueryResponse().readyForQuery("T");
  const msgs = await readAll(w.take());
  assertEquals(msgs.map((m) => String.fromCharCode(m.type)).join(""), "TDDCIZ");
  assertEquals(decodeRowDescription(msgs[0]!.payload), [
    {
      name: "a",
      tableOid: 0,
      columnAttr: 0,
      typeOid: 25,
      typeSize: -1,
      typeModifier: -1,
      format: 0,
    },
    {
      name: "b",
      tableOid: 0,
      columnAttr: 0,
      typeOid: 23,
      typeSize: 4,
      typeModifier: -1,
      format: 0,
    },
  ]);
  assertEquals(decodeDataRowText(msgs[1]!.payload), ["1", null]);
  assertEquals(decodeDataRowText(msgs[2]!.payload), ["", "x"]);
  assertEquals(decodeCommandComplete(msgs[3]!.payload), "SELECT 2");
  assertEquals(msgs[4]!.payload.byteLength, 0);
  assertEquals(decodeReadyForQuery(msgs[5]!.payload), "T");
});

Deno.test("a command result without fields sends no RowDescription", async () => {
  const msgs = await readAll(
    new MessageWriter().simpleResult({ fields: [], rows: [], command: "CREATE TABLE" }).take(),
  );
  assertEquals(msgs.map((m) => m.type), [Backend.commandComplete]);
});

Deno.test("other backend messages round-trip through their decoders", async () => {
  const w = new MessageWriter().parameterStatus("TimeZone", "UTC").parseComplete().bindComplete()
    .closeComplete().noData().portalSuspended().parameterDescription([23, 4294967295])
    .notificationResponse(9, "chan", "hello").negotiateProtocolVersion(0, ["_pq_.x"])
    .dataRow([Uint8Array.of(0, 255)]);
  const msgs = await readAll(w.take());
  assertEquals(msgs.map((m) => String.fromCharCode(m.type)).join(""), "S123nstAvD");
  assertEquals(decodeParameterStatus(msgs[0]!.payload), { name: "TimeZone", value: "UTC" });
  assertEquals(decodeParameterDescription(msgs[6]!.payload), [23, 4294967295]);
  assertEquals(decodeNotification(msgs[7]!.payload), {
    processId: 9,
    channel: "chan",
    payload: "hello",
  });
  assertEquals(decodeNegotiateProtocolVersion(msgs[8]!.payload), {
    newestMinor: 0,
    unrecognized: ["_pq_.x"],
  });
  assertEquals(decodeDataRow(msgs[9]!.payload), [Uint8Array.of(0, 255)]);
});

Deno.test("extended-protocol frontend messages round-trip through their decoders", async () => {
  const w = new MessageWriter()
    .parse("s1", "select $1::int, $2", [23, 0])
    .bind("p1", "s1", ["42", null, Uint8Array.of(7)], [0, 0, 1], [1])
    .describe("P", "p1").execute("p1", 10).close("S", "s1").flush().sync().terminate();
  const msgs = await readAll(w.take());
  assertEquals(msgs.map((m) => String.fromCharCode(m.type)).join(""), "PBDECHSX");
  assertEquals(decodeParse(msgs[0]!.payload), {
    name: "s1",
    query: "select $1::int, $2",
    paramTypes: [23, 0],
  });
  assertEquals(decodeBind(msgs[1]!.payload), {
    portal: "p1",
    statement: "s1",
    paramFormats: [0, 0, 1],
    params: [new TextEncoder().encode("42"), null, Uint8Array.of(7)],
    resultFormats: [1],
  });
  assertEquals(decodeDescribe(msgs[2]!.payload), { target: "P", name: "p1" });
  assertEquals(decodeExecute(msgs[3]!.payload), { portal: "p1", maxRows: 10 });
  assertEquals(decodeClose(msgs[4]!.payload), { target: "S", name: "s1" });
  for (const m of msgs.slice(5)) assertEquals(m.payload.byteLength, 0);
});

Deno.test("password and SASL frontend messages round-trip through their decoders", async () => {
  const w = new MessageWriter().passwordMessage("md5abc")
    .saslInitialResponse("SCRAM-SHA-256", "n,,n=,r=nonce").saslInitialResponse("X", null)
    .saslResponse("c=biws,r=nonce,p=proof").copyData(Uint8Array.of(1, 2)).copyDone().copyFail("no");
  const msgs = await readAll(w.take());
  assertEquals(msgs.map((m) => String.fromCharCode(m.type)).join(""), "ppppdcf");
  assertEquals(decodePasswordMessage(msgs[0]!.payload), "md5abc");
  assertEquals(decodeSaslInitialResponse(msgs[1]!.payload), {
    mechanism: "SCRAM-SHA-256",
    data: new TextEncoder().encode("n,,n=,r=nonce"),
  });
  assertEquals(decodeSaslInitialResponse(msgs[2]!.payload), { mechanism: "X", data: null });
  assertEquals(text(msgs[3]!.payload), "c=biws,r=nonce,p=proof");
});

Deno.test("startup-phase messages have no type byte and read back with readStartupPacket", async () => {
  const startup = new MessageWriter().startupMessage({ user: "alice", database: "app" }).take();
  const view = new DataView(startup.buffer);
  assertEquals(view.getInt32(0), startup.byteLength);
  assertEquals(view.getInt32(4), PROTOCOL_VERSION_3_0);
  const conn = new MemoryConn([
    new MessageWriter().sslRequest().take(),
    startup,
    new MessageWriter().cancelRequest(123, 456).take(),
  ]);
  assertEquals(await readStartupPacket(conn), { kind: "ssl" });
  assertEquals(await readStartupPacket(conn), {
    kind: "startup",
    majorVersion: 3,
    minorVersion: 0,
    params: new Map([["user", "alice"], ["database", "app"]]),
  });
  assertEquals(await readStartupPacket(conn), { kind: "cancel", processId: 123, secretKey: 456 });
  const ssl = new MessageWriter().sslRequest().take();
  assertEquals([...ssl], [
    0,
    0,
    0,
    8,
    ...new Uint8Array(new Int32Array([SSL_REQUEST_CODE]).buffer).reverse(),
  ]);
  assertEquals(
    new DataView(new MessageWriter().cancelRequest(1, 2).take().buffer).getInt32(4),
    CANCEL_REQUEST_CODE,
  );
});

Deno.test("view() returns the bytes without copying and reset() reuses the buffer", () => {
  const w = new MessageWriter(64);
  const first = w.sync().view();
  assertEquals([...first], [0x53, 0, 0, 0, 4]);
  w.reset().flush();
  assert(first[0] === 0x48, "view shares the writer's buffer");
});

Deno.test("typed messages stay intact when written in pieces through writeAll", async () => {
  const conn = new MemoryConn(new Uint8Array(0), { maxWrite: 3 });
  await writeAll(conn, new MessageWriter().query("select 1").sync().take());
  assert(conn.writes > 3);
  const got: WireMessage[] = [];
  const reader = new MessageReader(new MemoryConn(conn.written));
  for await (const m of reader) got.push(m);
  assertEquals(got.map((m) => m.typeChar).join(""), "QS");
});

Deno.test("counts above 65535 are refused instead of wrapping", () => {
  const params = new Array<null>(65536).fill(null);
  const w = new MessageWriter();
  assertThrows(() => w.bind("", "", params), RangeError, "65536");
  assertEquals(w.length, 0, "the half-built message is dropped");
  assertEquals(new MessageWriter().bind("", "", params.slice(1)).length > 65535 * 4, true);
});

Deno.test("MessageWriter.string writes ASCII, non-ASCII and mixed text as UTF-8", () => {
  const enc = new TextEncoder();
  for (
    const text of [
      "",
      "search_path",
      "héllo",
      "ascii first, then ✓ and 𝄞",
      "日本語",
      "x".repeat(1000) + "é" + "y".repeat(1000), // grows the buffer past its first size
    ]
  ) {
    const w = new MessageWriter(8);
    w.byte(1).string(text).byte(2);
    assertEquals(w.take(), Uint8Array.of(1, ...enc.encode(text), 2));
  }
});
