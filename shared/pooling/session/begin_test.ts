import { assertEquals } from "../../testing/assert.ts";
import { isDeferrableBegin } from "./begin.ts";

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
