import { TesseraError } from "../errors/mod.ts";
import { assertEquals, assertThrows } from "../testing/assert.ts";
import {
  decodeAuthentication,
  decodeBind,
  decodeCopyResponse,
  decodeDataRow,
  decodeDescribe,
  decodeError,
  decodeErrorFields,
  decodeParse,
  decodeReadyForQuery,
  decodeRowDescription,
  errorFromFields,
  parseCommandTag,
} from "./decode.ts";

const enc = new TextEncoder();

function fields(pairs: [string, string][]): Uint8Array {
  return enc.encode(pairs.map(([k, v]) => `${k}${v}\0`).join("") + "\0");
}

Deno.test("decodeErrorFields names every field Postgres sends", () => {
  const payload = fields([
    ["S", "ERREUR"],
    ["V", "ERROR"],
    ["C", "23505"],
    ["M", 'duplicate key value violates unique constraint "t_pkey"'],
    ["D", "Key (id)=(1) already exists."],
    ["s", "public"],
    ["t", "t"],
    ["n", "t_pkey"],
    ["F", "nbtinsert.c"],
    ["L", "664"],
    ["R", "_bt_check_unique"],
    ["Z", "future field"],
  ]);
  const f = decodeErrorFields(payload);
  assertEquals(f.severity, "ERREUR");
  assertEquals(f.severityNonLocalized, "ERROR");
  assertEquals(f.code, "23505");
  assertEquals(f.detail, "Key (id)=(1) already exists.");
  assertEquals(f.constraint, "t_pkey");
  assertEquals(f.routine, "_bt_check_unique");
  assertEquals(f.all.Z, "future field");
  assertEquals(f.hint, undefined);
});

Deno.test("errorFromFields keeps SQLSTATE, non-localized severity, detail and hint", () => {
  const err = decodeError(fields([
    ["S", "FATAL"],
    ["V", "FATAL"],
    ["C", "28P01"],
    ["M", 'password authentication failed for user "x"'],
    ["H", "check it"],
  ]));
  assertEquals(err instanceof TesseraError, true);
  assertEquals(err.toJSON(), {
    severity: "FATAL",
    code: "28P01",
    message: 'password authentication failed for user "x"',
    hint: "check it",
  });
  // Localized severity only, an unknown severity, a malformed code: still a usable error.
  const odd = errorFromFields({ severity: "FEHLER", code: "bad", message: "m", all: {} });
  assertEquals([odd.severity, odd.code], ["ERROR", "XX000"]);
});

Deno.test("malformed ErrorResponse payloads are 08P01", () => {
  for (const bad of ["", "Sx", "SERROR\0", "SERROR\0\0x"]) {
    const err = assertThrows(() => decodeErrorFields(enc.encode(bad)), TesseraError);
    assertEquals(err.code, "08P01");
  }
});

Deno.test("parseCommandTag splits off the row count", () => {
  assertEquals(parseCommandTag("INSERT 0 3"), { command: "INSERT", rows: 3 });
  assertEquals(parseCommandTag("SELECT 12"), { command: "SELECT", rows: 12 });
  assertEquals(parseCommandTag("UPDATE 0"), { command: "UPDATE", rows: 0 });
  assertEquals(parseCommandTag("CREATE TABLE"), { command: "CREATE TABLE" });
  assertEquals(parseCommandTag("BEGIN"), { command: "BEGIN" });
});

Deno.test("decoders reject truncated and trailing bytes with 08P01", () => {
  const cases: [string, () => unknown][] = [
    ["RowDescription count beyond data", () => decodeRowDescription(Uint8Array.of(0, 2, 0x61, 0))],
    ["DataRow value beyond data", () => decodeDataRow(Uint8Array.of(0, 1, 0, 0, 0, 5, 1))],
    ["DataRow trailing byte", () => decodeDataRow(Uint8Array.of(0, 0, 1))],
    ["ReadyForQuery bad status", () => decodeReadyForQuery(Uint8Array.of(0x58))],
    ["ReadyForQuery empty", () => decodeReadyForQuery(Uint8Array.of())],
    ["Authentication short", () => decodeAuthentication(Uint8Array.of(0, 0))],
    ["MD5 without salt", () => decodeAuthentication(Uint8Array.of(0, 0, 0, 5, 1, 2))],
    ["Ok with extra", () => decodeAuthentication(Uint8Array.of(0, 0, 0, 0, 1))],
    ["SASL list unterminated", () => decodeAuthentication(Uint8Array.of(0, 0, 0, 10, 0x41, 0))],
    ["Parse without query", () => decodeParse(enc.encode("s1\0"))],
    ["Bind param beyond data", () => decodeBind(Uint8Array.of(0, 0, 0, 0, 0, 1, 0, 0, 0, 9))],
    ["Describe unknown target", () => decodeDescribe(enc.encode("Xname\0"))],
    ["CopyResponse short", () => decodeCopyResponse(Uint8Array.of(0, 0, 2, 0, 0))],
  ];
  for (const [name, run] of cases) {
    const err = assertThrows(run, TesseraError, undefined);
    assertEquals(err.code, "08P01", name);
  }
});

Deno.test("decodeAuthentication passes unknown methods through as 'other'", () => {
  assertEquals(decodeAuthentication(Uint8Array.of(0, 0, 0, 7)), {
    kind: "other",
    code: 7,
    data: new Uint8Array(0),
  });
});

Deno.test("decodeCopyResponse reads the overall and per-column formats", () => {
  assertEquals(decodeCopyResponse(Uint8Array.of(0, 0, 2, 0, 0, 0, 0)), {
    format: 0,
    columnFormats: [0, 0],
  });
});
