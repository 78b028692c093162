import { assertEquals } from "../../testing/assert.ts";
import { TesseraError } from "../../errors/mod.ts";
import { decodeErrorFields, MessageWriter } from "../../wire/mod.ts";
import { isDeferrableBegin, shiftPosition, startsWithLetter } from "./begin.ts";

const enc = new TextEncoder();
const check = (sql: string) => {
  const b = enc.encode(sql);
  return isDeferrableBegin(b, 0, b.length);
};

Deno.test("deferred BEGIN: the forms that cannot fail on an idle backend", () => {
  for (
    const sql of [
      "BEGIN",
      "begin",
      "  Begin ;",
      "BEGIN WORK",
      "begin transaction;",
      "START TRANSACTION",
      "begin isolation level read committed",
      "BEGIN ISOLATION LEVEL REPEATABLE READ",
      "begin transaction isolation level read uncommitted, read only",
      "start transaction read only not deferrable",
      "BEGIN READ ONLY, DEFERRABLE, ISOLATION LEVEL REPEATABLE READ;",
      "begin\n\tread only\n",
    ]
  ) assertEquals(check(sql), true, sql);
});

Deno.test("deferred BEGIN: everything else is left to Postgres", () => {
  for (
    const sql of [
      "",
      "select 1",
      "BEGIN; SELECT 1",
      "begin;;",
      "BEGIN ISOLATION LEVEL SERIALIZABLE", // fails at BEGIN on a hot standby
      "begin read write", // likewise
      "begin read only, read only", // conflicting or redundant options
      "begin isolation level read committed isolation level repeatable read",
      "begin deferrable not deferrable",
      "START WORK",
      "start",
      "begin -- comment",
      "begin /* c */",
      "begin work transaction",
      "begin, read only",
      "begin read only,",
      "begin isolation level",
      "beginx",
      "bogus",
      "savepoint a",
      "begin" + " ".repeat(200),
    ]
  ) assertEquals(check(sql), false, sql);
});

Deno.test("deferred BEGIN: only the given range is read", () => {
  const b = enc.encode("xxBEGINyy");
  assertEquals(isDeferrableBegin(b, 2, 7), true);
  assertEquals(isDeferrableBegin(b, 2, 8), false);
});

Deno.test("startsWithLetter: a text that holds a statement word first", () => {
  const at = (sql: string) => startsWithLetter(enc.encode(sql), 0, enc.encode(sql).length);
  assertEquals(at("select 1"), true);
  assertEquals(at(" \n\tUPDATE t"), true);
  assertEquals(at(""), false);
  assertEquals(at("   "), false);
  assertEquals(at(";"), false);
  assertEquals(at("-- c\nselect 1"), false);
  assertEquals(at("(select 1)"), false);
});

Deno.test("shiftPosition moves the cursor position back and keeps every other field", () => {
  const err = new TesseraError("42601", 'syntax error at or near "valuez"');
  const msg = new MessageWriter().errorResponse(err, { P: "29", R: "scanner_yyerror" }).take();
  // With bytes around it, as in a read buffer.
  const buf = new Uint8Array(msg.length + 7);
  buf.set(msg, 3);
  const out = shiftPosition(buf, 3, 3 + msg.length, 6);
  assertEquals(out[0], msg[0]);
  assertEquals(new DataView(out.buffer, out.byteOffset).getInt32(1), out.length - 1);
  const fields = decodeErrorFields(out.subarray(5));
  assertEquals(fields.position, "23");
  assertEquals(fields.code, "42601");
  assertEquals(fields.message, 'syntax error at or near "valuez"');
  assertEquals(fields.severity, "ERROR");
  assertEquals(fields.routine, "scanner_yyerror");
  // Across a digit boundary, and a notice.
  const notice = new MessageWriter().noticeResponse(
    new TesseraError("01000", "careful", { severity: "WARNING" }),
    { P: "105" },
  ).take();
  assertEquals(
    decodeErrorFields(shiftPosition(notice, 0, notice.length, 6).subarray(5)).position,
    "99",
  );
  // A position inside the BEGIN is left out; a message without one is copied.
  const inside = shiftPosition(msg, 0, msg.length, 29);
  assertEquals(decodeErrorFields(inside.subarray(5)).position, undefined);
  assertEquals(decodeErrorFields(inside.subarray(5)).message, 'syntax error at or near "valuez"');
  const plain = new MessageWriter().errorResponse(err).take();
  assertEquals(shiftPosition(plain, 0, plain.length, 6), plain);
});
