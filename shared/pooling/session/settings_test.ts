import { assertEquals } from "../../testing/assert.ts";
import { quoteLiteral, replaySql, settingsFromRows, settingsKey } from "./settings.ts";

Deno.test("settingsKey is the same for the same settings in any order", () => {
  const a = new Map([["TimeZone", "UTC"], ["search_path", "app"]]);
  const b = new Map([["search_path", "app"], ["TimeZone", "UTC"]]);
  assertEquals(settingsKey(a), settingsKey(b));
  assertEquals(settingsKey(new Map()), "");
});

Deno.test("replaySql resets what goes away and sets what differs, quoting safely", () => {
  const from = new Map([["work_mem", "4096"], ["search_path", "a"]]);
  const to = new Map([["search_path", "b's"], ["role", "r1"], ["session_authorization", "u"]]);
  assertEquals(
    replaySql(from, to),
    `RESET "work_mem"; SELECT pg_catalog.set_config(E'session_authorization', E'u', false), ` +
      `pg_catalog.set_config(E'role', E'r1', false), ` +
      `pg_catalog.set_config(E'search_path', E'b''s', false)`,
  );
  assertEquals(replaySql(to, to), "");
  assertEquals(quoteLiteral("a\\b'c"), "E'a\\\\b''c'");
});

Deno.test("settingsFromRows drops what is not set", () => {
  const rows = [
    ["search_path", "app"],
    ["role", "none"],
    ["session_authorization", "postgres"],
    ["myapp.tenant", ""],
    ["myapp.user", "42"],
    ["other.x", null],
  ];
  assertEquals(
    [...settingsFromRows(rows, "postgres")],
    [["search_path", "app"], ["myapp.user", "42"]],
  );
});
