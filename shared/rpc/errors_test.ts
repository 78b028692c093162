import { Code, ConnectError } from "@connectrpc/connect";
import { SqlState, TesseraError } from "../errors/mod.ts";
import { assertEquals, assertStringIncludes } from "../testing/assert.ts";
import {
  codeForSqlState,
  connectCodeOf,
  fromConnectError,
  SQLSTATE_HEADER,
  sqlStateForCode,
  toConnectError,
} from "./mod.ts";

Deno.test("codeForSqlState maps SQLSTATE codes and classes to Connect codes", () => {
  const cases: [string, Code][] = [
    ["22023", Code.InvalidArgument],
    ["22P02", Code.InvalidArgument],
    ["42601", Code.InvalidArgument],
    ["42704", Code.NotFound],
    ["58P01", Code.NotFound],
    ["3D000", Code.NotFound],
    ["42710", Code.AlreadyExists],
    ["58P02", Code.AlreadyExists],
    ["23505", Code.AlreadyExists],
    ["23503", Code.FailedPrecondition],
    ["55000", Code.FailedPrecondition],
    ["55006", Code.FailedPrecondition],
    ["25001", Code.FailedPrecondition],
    ["53300", Code.ResourceExhausted],
    ["0A000", Code.Unimplemented],
    ["28P01", Code.Unauthenticated],
    ["42501", Code.PermissionDenied],
    ["57014", Code.Canceled],
    ["08006", Code.Unavailable],
    ["08P01", Code.Unavailable],
    ["57P01", Code.Unavailable],
    ["57P03", Code.Unavailable],
    ["40001", Code.Aborted],
    ["40P01", Code.Aborted],
    ["XX000", Code.Internal],
    ["58000", Code.Internal],
    ["F0000", Code.Internal],
  ];
  for (const [sqlstate, code] of cases) {
    assertEquals(codeForSqlState(sqlstate), code, `SQLSTATE ${sqlstate}`);
  }
});

Deno.test("toConnectError and fromConnectError keep SQLSTATE, severity, detail and hint", () => {
  const original = new TesseraError(SqlState.undefinedFile, "no data directory", {
    severity: "FATAL",
    detail: "looked in /var/lib/pg\nand nowhere else: é",
    hint: "run InitDataDir",
  });
  const wire = toConnectError(original);
  assertEquals(wire.code, Code.NotFound);
  assertEquals(wire.rawMessage, "no data directory");
  assertEquals(wire.metadata.get(SQLSTATE_HEADER), "58P01");
  assertEquals(wire.cause, original);
  // What the client sees has only the code, message and metadata.
  const received = new ConnectError(wire.rawMessage, wire.code, wire.metadata);
  const back = fromConnectError(received);
  assertEquals(back.toJSON(), original.toJSON());
  assertEquals(back.cause, received);
  assertEquals(connectCodeOf(back), Code.NotFound);
});

Deno.test("toConnectError makes other errors Internal with XX000 and passes ConnectErrors", () => {
  const wire = toConnectError(new RangeError("bad index"));
  assertEquals(wire.code, Code.Internal);
  assertEquals(wire.rawMessage, "bad index");
  assertEquals(wire.metadata.get(SQLSTATE_HEADER), "XX000");
  const connectError = new ConnectError("nope", Code.PermissionDenied);
  assertEquals(toConnectError(connectError), connectError);
});

Deno.test("fromConnectError chooses a SQLSTATE for errors without one", () => {
  let err = fromConnectError(new ConnectError("the operation timed out", Code.DeadlineExceeded));
  assertEquals(err.code, "57014");
  assertStringIncludes(err.message, "deadline exceeded");
  err = fromConnectError(new ConnectError("gone", Code.Unavailable));
  assertEquals(err.code, "08006");
  assertStringIncludes(err.message, "unavailable");
  assertEquals(fromConnectError(new ConnectError("x", Code.Unknown)).code, "XX000");
  assertEquals(fromConnectError(new ConnectError("x", Code.DataLoss)).code, "XX000");
  assertEquals(fromConnectError(new TypeError("fetch failed")).code, "08006");
  const tessera = new TesseraError("42601", "syntax");
  assertEquals(fromConnectError(tessera), tessera);
  // A malformed SQLSTATE from the wire is ignored rather than thrown.
  const forged = new ConnectError("x", Code.NotFound, { [SQLSTATE_HEADER]: "bad" });
  assertEquals(fromConnectError(forged).code, "42704");
});

Deno.test("sqlStateForCode inverts codeForSqlState for the codes Tessera sends", () => {
  for (
    const sqlstate of [
      "42704",
      "42710",
      "22023",
      "55000",
      "53000",
      "0A000",
      "28000",
      "42501",
      "57014",
      "08006",
      "40001",
      "XX000",
    ]
  ) {
    assertEquals(sqlStateForCode(codeForSqlState(sqlstate)), sqlstate);
  }
});
