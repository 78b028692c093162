import { TesseraError } from "../errors/mod.ts";
import { assertEquals, assertThrows } from "../testing/assert.ts";
import { decodeBind, decodeClose, decodeDescribe, decodeParse } from "./decode.ts";
import { Frontend } from "./messages.ts";
import {
  readPortalName,
  readStatementName,
  rewriteStatementName,
  writeWithStatementName,
} from "./statement_name.ts";
import { MessageWriter } from "./writer.ts";

function payloadOf(
  build: (w: MessageWriter) => MessageWriter,
): { type: number; payload: Uint8Array } {
  const bytes = build(new MessageWriter()).take();
  return { type: bytes[0]!, payload: bytes.subarray(5) };
}

function check(out: Uint8Array, type: number): Uint8Array {
  assertEquals(out[0], type);
  assertEquals(new DataView(out.buffer, out.byteOffset).getInt32(1), out.byteLength - 1);
  return out.subarray(5);
}

Deno.test("rewriteStatementName renames the statement of a Parse and keeps the rest", () => {
  const m = payloadOf((w) => w.parse("client_stmt", "select $1", [23]));
  assertEquals(readStatementName(m.type, m.payload), "client_stmt");
  const out = check(rewriteStatementName(m.type, m.payload, "t7_client_stmt_é"), Frontend.parse);
  assertEquals(decodeParse(out), {
    name: "t7_client_stmt_é",
    query: "select $1",
    paramTypes: [23],
  });
});

Deno.test("rewriteStatementName renames the statement of a Bind, not its portal", () => {
  const m = payloadOf((w) => w.bind("portal", "s", ["1", null], [0], [1]));
  assertEquals(readStatementName(m.type, m.payload), "s");
  assertEquals(readPortalName(m.type, m.payload), "portal");
  const out = check(rewriteStatementName(m.type, m.payload, "pool_s"), Frontend.bind);
  assertEquals(decodeBind(out), {
    portal: "portal",
    statement: "pool_s",
    paramFormats: [0],
    params: [new TextEncoder().encode("1"), null],
    resultFormats: [1],
  });
});

Deno.test("rewriteStatementName renames statement-targeted Describe and Close only", () => {
  const d = payloadOf((w) => w.describe("S", ""));
  assertEquals(readStatementName(d.type, d.payload), "");
  assertEquals(
    decodeDescribe(check(rewriteStatementName(d.type, d.payload, "u1"), Frontend.describe)),
    {
      target: "S",
      name: "u1",
    },
  );
  const c = payloadOf((w) => w.close("S", "old"));
  assertEquals(decodeClose(check(rewriteStatementName(c.type, c.payload, "new"), Frontend.close)), {
    target: "S",
    name: "new",
  });
  const p = payloadOf((w) => w.describe("P", "portal"));
  assertEquals(readStatementName(p.type, p.payload), null);
  assertEquals(readPortalName(p.type, p.payload), "portal");
  const w = new MessageWriter();
  assertEquals(writeWithStatementName(w, p.type, p.payload, "ignored"), false);
  assertEquals(decodeDescribe(check(w.take(), Frontend.describe)), { target: "P", name: "portal" });
});

Deno.test("writeWithStatementName appends to a batch of messages", () => {
  const w = new MessageWriter();
  const parse = payloadOf((x) => x.parse("a", "select 1"));
  const bind = payloadOf((x) => x.bind("", "a"));
  writeWithStatementName(w, parse.type, parse.payload, "s_a");
  writeWithStatementName(w, bind.type, bind.payload, "s_a");
  w.execute().sync();
  const all = w.take();
  const expected = new MessageWriter().parse("s_a", "select 1").bind("", "s_a").execute().sync()
    .take();
  assertEquals(all, expected);
});

Deno.test("other messages pass through; an unterminated name is 08P01", () => {
  const q = payloadOf((w) => w.query("select 1"));
  assertEquals(readStatementName(q.type, q.payload), null);
  assertEquals(
    rewriteStatementName(q.type, q.payload, "x"),
    new MessageWriter().query("select 1").take(),
  );
  const e = payloadOf((w) => w.execute("p", 5));
  assertEquals(readPortalName(e.type, e.payload), "p");
  const err = assertThrows(
    () => rewriteStatementName(Frontend.parse, new TextEncoder().encode("abc"), "x"),
    TesseraError,
    "not terminated",
  );
  assertEquals(err.code, "08P01");
  assertThrows(
    () => readStatementName(Frontend.close, new TextEncoder().encode("Qx\0")),
    TesseraError,
  );
});
