import { TesseraError } from "../../errors/mod.ts";
import { assert, assertEquals, assertRejects, assertThrows } from "../../testing/assert.ts";
import { MemoryConn } from "../../wire/memory_conn.ts";
import { MessageWriter } from "../../wire/mod.ts";
import { FrameReader } from "./frame_reader.ts";

async function readAll(r: FrameReader): Promise<[string, number][]> {
  const out: [string, number][] = [];
  for (;;) {
    while (r.next()) out.push([r.typeChar, r.payload.length]);
    if (!r.advance(await r.read())) return out;
  }
}

Deno.test("FrameReader frames messages split across reads of any size", async () => {
  const w = new MessageWriter();
  w.query("select 1").sync().query("x".repeat(5000)).readyForQuery("I");
  const bytes = w.take();
  for (const chunk of [1, 3, 7, 100, 4096]) {
    const r = new FrameReader(new MemoryConn(bytes, { chunkSizes: chunk }), 64);
    assertEquals(await readAll(r), [["Q", 9], ["S", 0], ["Q", 5001], ["Z", 1]]);
  }
});

Deno.test("FrameReader grows for a large message and goes back to its small buffer", async () => {
  const w = new MessageWriter();
  w.query("y".repeat(10_000)).query("small");
  const r = new FrameReader(new MemoryConn(w.take(), { chunkSizes: 512 }), 256);
  const seen: number[] = [];
  for (;;) {
    while (r.next()) seen.push(r.payload.length);
    if (seen.length === 2) break;
    if (!r.advance(await r.read())) break;
  }
  assertEquals(seen, [10_001, 6]);
  assert(r.buf.length >= 10_006);
  assert(r.advance(await r.read()) === false); // end of input: the buffer was reset first
  assertEquals(r.buf.length, 256);
});

Deno.test("FrameReader rejects invalid lengths and a stream ending inside a message", async () => {
  const short = new FrameReader(new MemoryConn(Uint8Array.of(0x51, 0, 0, 0, 2)), 64);
  assert(short.advance(await short.read()));
  const err = assertThrows(() => short.next(), TesseraError);
  assertEquals(err.code, "08P01");
  const long = new FrameReader(new MemoryConn(Uint8Array.of(0x51, 0x7f, 0, 0, 0)), 64, 1 << 20);
  assert(long.advance(await long.read()));
  assertThrows(() => long.next(), TesseraError, "too long");
  const cut = new FrameReader(new MemoryConn(Uint8Array.of(0x51, 0, 0, 0, 9, 0x61)), 64);
  assert(cut.advance(await cut.read()));
  assertEquals(cut.next(), false);
  await assertRejects(async () => cut.advance(await cut.read()), TesseraError, "part way");
});

Deno.test("FrameReader reads without waiting from a source that can (readNow, whenReadable)", () => {
  const w = new MessageWriter();
  w.query("select 1").sync().query("z".repeat(3000)).readyForQuery("I");
  const bytes = w.take();
  let at = 0;
  let waiting: (() => void) | null = null;
  // Hands out 7 bytes per call, and nothing every other call (as a socket between arrivals).
  let dry = false;
  const source = {
    read: () => Promise.reject(new Error("the promise path must not be used")),
    write: () => Promise.resolve(0),
    close: () => {},
    tryRead(p: Uint8Array): number | null | undefined {
      dry = !dry;
      if (dry) return undefined;
      if (at === bytes.length) return null;
      const n = Math.min(7, p.length, bytes.length - at);
      p.set(bytes.subarray(at, at + n));
      at += n;
      return n;
    },
    onReadable(fn: () => void): void {
      waiting = fn;
    },
  };
  const r = new FrameReader(source, 64);
  assert(r.canReadNow);
  const seen: [string, number][] = [];
  let waits = 0;
  for (;;) {
    while (r.next()) seen.push([r.typeChar, r.payload.length]);
    const n = r.readNow();
    if (n === undefined) {
      r.whenReadable(() => {});
      assert(waiting !== null);
      waits++;
      continue;
    }
    if (!r.advance(n)) break;
  }
  assertEquals(seen, [["Q", 9], ["S", 0], ["Q", 3001], ["Z", 1]]);
  assert(waits > 0);
  assert(!new FrameReader(new MemoryConn(bytes), 64).canReadNow);
});
