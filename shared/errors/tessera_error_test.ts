import { assertEquals, assertThrows } from "../testing/assert.ts";
import { SqlState, TesseraError } from "./mod.ts";

Deno.test("TesseraError carries SQLSTATE, severity, detail and hint", () => {
  const err = new TesseraError(SqlState.tooManyConnections, "pool is full", {
    detail: "10 of 10 in use",
    hint: "raise --pool-size",
  });
  assertEquals(err.code, "53300");
  assertEquals(err.sqlClass, "53");
  assertEquals(err.severity, "ERROR");
  assertEquals(err.toJSON(), {
    severity: "ERROR",
    code: "53300",
    message: "pool is full",
    detail: "10 of 10 in use",
    hint: "raise --pool-size",
  });
});

Deno.test("TesseraError rejects a malformed SQLSTATE", () => {
  assertThrows(() => new TesseraError("5330", "x"), RangeError, "'5330'");
  assertThrows(() => new TesseraError("53a00", "x"), RangeError);
});

Deno.test("TesseraError.from keeps TesseraErrors and wraps others as internal errors", () => {
  const original = new TesseraError(SqlState.syntaxError, "bad");
  assertEquals(TesseraError.from(original), original);
  const wrapped = TesseraError.from(new TypeError("boom"));
  assertEquals(wrapped.code, "XX000");
  assertEquals(wrapped.message, "boom");
  assertEquals(wrapped.cause instanceof TypeError, true);
  assertEquals(TesseraError.from("text", SqlState.ioError).code, "58030");
});
