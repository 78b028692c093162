import { assertEquals, assertThrows } from "../../shared/testing/assert.ts";
import { TesseraError } from "../../shared/errors/mod.ts";
import { parseDatabaseName } from "./target.ts";

Deno.test("parseDatabaseName reads keyspace and target", () => {
  assertEquals(parseDatabaseName("app"), { keyspace: "app", kind: "primary" });
  assertEquals(parseDatabaseName("app@primary"), { keyspace: "app", kind: "primary" });
  assertEquals(parseDatabaseName("app@replica"), { keyspace: "app", kind: "replica" });
  assertEquals(parseDatabaseName("app@olap"), { keyspace: "app", kind: "tag", tag: "olap" });
  for (const bad of ["", "@replica", "app@", "a b", "app@x@y"]) {
    const err = assertThrows(() => parseDatabaseName(bad), TesseraError);
    assertEquals(err.code, "3D000");
  }
});
