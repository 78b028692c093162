import { assertEquals } from "../../testing/assert.ts";
import {
  findCustomSettingNames,
  findExclusiveDatabases,
  findSqlPrepareOps,
  rewriteBackendPid,
  scanSql,
  scanSqlTokens,
  Trigger,
} from "./sql_scan.ts";

const enc = new TextEncoder();
const dec = new TextDecoder();
const scan = (sql: string) => scanSql(enc.encode(sql));

Deno.test("scanSql finds state that pins a session", () => {
  assertEquals(scan("CREATE TEMP TABLE t (a int)"), Trigger.temp);
  assertEquals(scan("create global temporary table t (a int)"), Trigger.temp);
  assertEquals(scan("select * into temp t from x"), Trigger.temp);
  assertEquals(scan("create table pg_temp.t (a int)"), Trigger.temp);
  assertEquals(scan("LISTEN chan"), Trigger.listen);
  assertEquals(scan("select pg_advisory_lock(1)"), Trigger.advisory);
  assertEquals(scan("select pg_try_advisory_lock_shared(1)"), Trigger.advisory);
  assertEquals(scan("select pg_advisory_xact_lock(1)"), 0);
  assertEquals(scan("declare c cursor with hold for select 1"), Trigger.hold);
  assertEquals(scan("unlisten *"), Trigger.unpin);
  assertEquals(scan("select pg_advisory_unlock_all()"), Trigger.unpin);
  assertEquals(scan("discard all"), Trigger.unpin | Trigger.settings);
});

Deno.test("scanSql ignores keywords in literals, identifiers and comments", () => {
  assertEquals(scan("select 'create temp table', \"listen\" from t -- listen\n"), 0);
  assertEquals(scan("select $$ pg_advisory_lock(1) $$, $x$ set_config $x$"), 0);
  assertEquals(scan("select E'it\\'s listen' /* nested /* listen */ temp */"), 0);
  assertEquals(scan("select temp from weather"), 0);
  assertEquals(scan("select $1::int, abalance from pgbench_accounts where aid = $1"), 0);
});

Deno.test("scanSql flags several statements, set_config, pg_backend_pid and SQL prepare", () => {
  assertEquals(scan("select 1; select 2"), Trigger.multi);
  assertEquals(scan("select 1;"), 0);
  assertEquals(scan("select set_config('a.b', '1', false)"), Trigger.settings);
  assertEquals(scan("select pg_backend_pid()"), Trigger.backendPid);
  assertEquals(scan("PREPARE p AS select 1"), Trigger.sqlPrepare);
  assertEquals(scan("begin; execute p(1)"), Trigger.sqlPrepare | Trigger.multi);
  assertEquals(scan("(select 1) union (select 2)"), 0);
  assertEquals(scan("SET search_path = a"), Trigger.setStatement);
  assertEquals(scan("select 1; reset all"), Trigger.setStatement | Trigger.multi);
});

Deno.test("scanSql tells two-phase commit's PREPARE TRANSACTION from SQL PREPARE", () => {
  assertEquals(scan("PREPARE TRANSACTION 'g1'"), 0);
  assertEquals(scan("prepare transaction E'g\\'1' -- done"), 0);
  assertEquals(scan("PREPARE TRANSACTION $$g$$; select 1"), Trigger.multi);
  assertEquals(scan("commit prepared 'g1'"), 0);
  // A statement that is itself named "transaction" is still SQL PREPARE.
  assertEquals(scan("prepare transaction as select 1"), Trigger.sqlPrepare);
  assertEquals(scan("PREPARE transaction (int) AS select $1"), Trigger.sqlPrepare);
  assertEquals(scan('PREPARE "transaction" AS select 1'), Trigger.sqlPrepare);
  // Incomplete texts go to the full handling (Postgres reports the syntax error).
  assertEquals(scan("prepare"), Trigger.sqlPrepare);
  assertEquals(scan("prepare transaction"), Trigger.sqlPrepare);
  assertEquals(scan("prepare transaction; select 1"), Trigger.sqlPrepare | Trigger.multi);
});

Deno.test("scanSql asks for every check after DO and CALL, whose code it cannot see", () => {
  const all = Trigger.settings | Trigger.temp | Trigger.listen | Trigger.advisory | Trigger.hold;
  assertEquals(scan("DO $$ begin create temp table t (a int); end $$"), all);
  assertEquals(scan("do language plpgsql 'begin perform 1; end'"), all);
  assertEquals(scan("CALL make_things(1)"), all);
  assertEquals(scan("select 1; call p()"), all | Trigger.multi);
  assertEquals(scan("select do_this(), call_that() from docs"), 0);
});

Deno.test("findCustomSettingNames looks into DO blocks", () => {
  const sql = "DO $body$ begin perform set_config('app.tenant', '7', false); end $body$; " +
    "do language plpgsql 'begin perform pg_catalog.set_config(''app.user'', ''x'', false); end'; " +
    "select 'set_config(''not.this'', 1)'";
  assertEquals(findCustomSettingNames(enc.encode(sql)), ["app.tenant", "app.user"]);
});

Deno.test("scanSql flags database DDL, and findExclusiveDatabases names what it needs free", () => {
  assertEquals(scan("DROP DATABASE app_test"), Trigger.databaseDdl | Trigger.unpin);
  assertEquals(scan("create database x template y"), Trigger.databaseDdl);
  assertEquals(scan("alter database x rename to y"), Trigger.databaseDdl);
  assertEquals(scan("drop table database"), Trigger.unpin);
  assertEquals(scan("select 1 from database"), 0);
  const find = (sql: string) => findExclusiveDatabases(enc.encode(sql));
  assertEquals(find("DROP DATABASE App_Test"), ["app_test"]);
  assertEquals(find('drop database if exists "My DB" with (force)'), ["My DB"]);
  assertEquals(find("CREATE DATABASE copy WITH TEMPLATE = tmpl OWNER app"), ["tmpl"]);
  assertEquals(find("create database c template 'Tmpl'; create database d template template0"), [
    "Tmpl",
  ]);
  assertEquals(find("create database plain"), []);
  assertEquals(find("ALTER DATABASE old RENAME TO new; alter database x set tablespace t"), [
    "old",
    "x",
  ]);
  assertEquals(find("alter database x set work_mem = '1MB'; alter database y owner to z"), []);
  assertEquals(find("select 'drop database x'; drop table database"), []);
});

Deno.test("rewriteBackendPid replaces calls, keeping the column name", () => {
  const sql = enc.encode(
    "select pg_backend_pid(), pg_catalog.pg_backend_pid ( ), 'pg_backend_pid()'",
  );
  const out = rewriteBackendPid(sql, 0, sql.length, 42);
  assertEquals(
    dec.decode(out!),
    "select (SELECT 42::int4 AS pg_backend_pid), (SELECT 42::int4 AS pg_backend_pid), 'pg_backend_pid()'",
  );
  assertEquals(rewriteBackendPid(enc.encode("select 1"), 0, 8, 1), null);
});

Deno.test("findSqlPrepareOps locates statement names", () => {
  const sql =
    'PREPARE Foo (int) AS select $1; EXECUTE "Bar"(1); deallocate prepare all; DEALLOCATE x';
  const ops = findSqlPrepareOps(enc.encode(sql));
  assertEquals(ops.map((o) => [o.kind, o.name, o.all]), [
    ["prepare", "foo", false],
    ["execute", "Bar", false],
    ["deallocate", null, true],
    ["deallocate", "x", false],
  ]);
  assertEquals(sql.slice(ops[0]!.nameStart, ops[0]!.nameEnd), "Foo");
  assertEquals(sql.slice(ops[0]!.nameEnd, ops[0]!.stmtEnd), " (int) AS select $1");
  assertEquals(sql.slice(ops[1]!.nameStart, ops[1]!.nameEnd), '"Bar"');

  // Two-phase commit names no statement; a statement named "transaction" keeps its name.
  const twoPhase = "PREPARE TRANSACTION 'g'; prepare transaction as select 1; execute transaction";
  const tp = findSqlPrepareOps(enc.encode(twoPhase));
  assertEquals(tp.map((o) => [o.kind, o.name]), [["prepare", "transaction"], [
    "execute",
    "transaction",
  ]]);
  assertEquals(twoPhase.slice(tp[0]!.nameEnd, tp[0]!.stmtEnd), " as select 1");
});

Deno.test("findCustomSettingNames finds dotted settings set by SET, RESET and set_config", () => {
  const sql =
    "SET myapp.Tenant = 'a'; set local \"App\".x to 1; reset other.y; SET work_mem = 1; " +
    "select set_config('rls.user', '42', true), set_config($1, 'x', false), set_config('plain', '', false)";
  assertEquals(findCustomSettingNames(enc.encode(sql)), [
    "myapp.tenant",
    "App.x",
    "other.y",
    "rls.user",
  ]);
});

Deno.test("scanSql's quick look never hides a trigger the full scan finds", () => {
  const pieces = [
    "select 1",
    "SELECT abalance FROM pgbench_accounts WHERE aid = 5",
    "update t set a = 1",
    "create temp table t (a int)",
    "CREATE TEMPORARY TABLE x()",
    "select * into temp t from x",
    "create table pg_temp.t (a int)",
    "listen c",
    "UNLISTEN *",
    "select pg_advisory_lock(1)",
    "SELECT PG_TRY_ADVISORY_LOCK_SHARED(1)",
    "select pg_advisory_unlock_all()",
    "declare c cursor with hold for select 1",
    "DECLARE c CURSOR WITH HOLD FOR SELECT 1",
    "discard all",
    "drop table t",
    "close c",
    "prepare p as select 1",
    "EXECUTE p(1)",
    "deallocate all",
    "set search_path = a",
    "RESET ALL",
    "select set_config('a.b', '1', false)",
    "select SET_CONFIG('a.b', '1', false)",
    "select pg_backend_pid()",
    "select PG_BACKEND_PID()",
    "(select 1) union (select 2)",
    "((LISTEN x",
    "/* c */ listen x",
    "-- c\nset a = 1",
    "begin",
    "BEGIN;",
    "end;",
    "select 'temp;' as x",
    "drop database x",
    "ALTER DATABASE x RENAME TO y",
    "PREPARE TRANSACTION 'g'",
    "prepare transaction as select 1",
    "do $$ begin end $$",
    "CALL p()",
  ];
  const enc2 = new TextEncoder();
  let checked = 0;
  for (const a of pieces) {
    for (const sep of ["", ";", "; ", ";\n", " ; "]) {
      for (const b of ["", ...pieces]) {
        const sql = enc2.encode(sep === "" && b !== "" ? a : a + sep + b);
        assertEquals(scanSql(sql), scanSqlTokens(sql), new TextDecoder().decode(sql));
        // In place, as the pooler scans a Query message: the text's terminator and more follow.
        const inPlace = new Uint8Array(sql.length + 8).fill(0x3b);
        inPlace.set(sql, 3);
        inPlace[sql.length + 3] = 0;
        assertEquals(scanSql(inPlace, 3, sql.length + 3), scanSqlTokens(sql));
        checked++;
      }
    }
  }
  assertEquals(checked > 5000, true);
});
