import { TesseraError } from "../errors/mod.ts";
import { assertEquals, assertThrows } from "../testing/assert.ts";
import { PayloadReader } from "./payload_reader.ts";

Deno.test("PayloadReader reads integers, strings and byte runs in order", () => {
  // byte 0xff, uint16 0xffff, byte 0xfe, int32 -1, "hi", [7, 8], NULL, rest 9
  const bytes = Uint8Array.from([
    [0xff, 0xff, 0xff, 0xfe],
    [0xff, 0xff, 0xff, 0xff],
    [0x68, 0x69, 0],
    [0, 0, 0, 2, 7, 8],
    [0xff, 0xff, 0xff, 0xff],
    [9],
  ].flat());
  // Views with an offset into a larger buffer must read the right bytes.
  const big = new Uint8Array(bytes.byteLength + 3);
  big.set(bytes, 3);
  const r = new PayloadReader(big.subarray(3), "Test");
  assertEquals(r.byte(), 0xff);
  assertEquals(r.uint16(), 0xffff);
  assertEquals(r.byte(), 0xfe);
  assertEquals(r.int32(), -1);
  assertEquals(r.cstring(), "hi");
  assertEquals(r.lengthPrefixed(), Uint8Array.of(7, 8));
  assertEquals(r.lengthPrefixed(), null);
  assertEquals(r.remaining, 1);
  assertEquals(r.rest(), Uint8Array.of(9));
  r.expectEnd();
});

Deno.test("PayloadReader throws 08P01 naming the message on truncation", () => {
  const cases: [Uint8Array, (r: PayloadReader) => unknown, string][] = [
    [Uint8Array.of(1), (r) => r.int16(), "expected an Int16 at offset 0"],
    [Uint8Array.of(1, 2, 3), (r) => r.int32(), "expected an Int32"],
    [Uint8Array.of(), (r) => r.byte(), "expected 1 byte"],
    [Uint8Array.of(0x61, 0x62), (r) => r.cstring(), "not terminated"],
    [Uint8Array.of(0, 0, 0, 9, 1), (r) => r.lengthPrefixed(), "expected 9 bytes at offset 4"],
    [Uint8Array.of(0xff, 0xff, 0xff, 0xfe), (r) => r.lengthPrefixed(), "invalid value length -2"],
    [Uint8Array.of(1), (r) => r.expectEnd(), "1 unexpected bytes"],
  ];
  for (const [bytes, read, message] of cases) {
    const err = assertThrows(
      () => read(new PayloadReader(bytes, "DataRow")),
      TesseraError,
      message,
    );
    assertEquals(err.code, "08P01");
    assertEquals(err.message.startsWith("invalid DataRow message: "), true);
  }
});
