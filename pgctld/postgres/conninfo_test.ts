import { assertEquals, assertThrows } from "../../shared/testing/assert.ts";
import { TesseraError } from "../../shared/errors/mod.ts";
import {
  parseConninfo,
  primaryConninfo,
  renderPgpass,
  sourceFromConninfo,
  validateReplicationSource,
} from "./conninfo.ts";

Deno.test("primaryConninfo renders a conninfo that parses back to its source", () => {
  const source = { host: "10.0.0.5", port: 6543, applicationName: "zone1-r1" };
  const text = primaryConninfo(source, "tessera_repl", "/run/pg/it's.pgpass");
  assertEquals(parseConninfo(text), {
    host: "10.0.0.5",
    port: "6543",
    user: "tessera_repl",
    passfile: "/run/pg/it's.pgpass",
    application_name: "zone1-r1",
  });
  assertEquals(sourceFromConninfo(text), source);
  assertEquals(parseConninfo(primaryConninfo({ ...source, applicationName: "" }, "u", undefined)), {
    host: "10.0.0.5",
    port: "6543",
    user: "u",
  });
});

Deno.test("parseConninfo reads bare values and sourceFromConninfo needs a host", () => {
  assertEquals(parseConninfo("host=db1  port = 5433 sslmode=disable"), {
    host: "db1",
    port: "5433",
    sslmode: "disable",
  });
  assertEquals(sourceFromConninfo("host=db1"), { host: "db1", port: 5432, applicationName: "" });
  assertEquals(sourceFromConninfo("port=1"), undefined);
  assertEquals(sourceFromConninfo(undefined), undefined);
});

Deno.test("validateReplicationSource fills the port and refuses bad fields with 22023", () => {
  assertEquals(
    validateReplicationSource({ primaryHost: "db1", primaryPort: 0, applicationName: "" }),
    { host: "db1", port: 5432, applicationName: "" },
  );
  for (
    const bad of [
      { primaryHost: "", primaryPort: 1, applicationName: "" },
      { primaryHost: "db1 port=1", primaryPort: 1, applicationName: "" },
      { primaryHost: "db1", primaryPort: 70000, applicationName: "" },
      { primaryHost: "db1", primaryPort: 1, applicationName: "a'b" },
      { primaryHost: "db1", primaryPort: 1, applicationName: "x".repeat(64) },
    ]
  ) {
    const err = assertThrows(() => validateReplicationSource(bad), TesseraError);
    assertEquals(err.code, "22023");
  }
});

Deno.test("renderPgpass escapes colons and backslashes", () => {
  assertEquals(renderPgpass("repl", "a:b\\c"), "*:*:*:repl:a\\:b\\\\c\n");
});
