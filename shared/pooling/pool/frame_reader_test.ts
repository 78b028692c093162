import { TesseraError } from "../../errors/mod.ts";
import { assert, assertEquals, assertRejects, assertThrows } from "../../testing/assert.ts";
import { MemoryConn } from "../../wire/memory_conn.ts";
import { MessageWriter } from "../../wire/mod.ts";
import { BufferPool, FrameReader } from "./frame_reader.ts";

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

/** A source read without waiting, fed by hand: `tryRead` takes what was pushed, else nothing. */
function handFed() {
  const chunks: Uint8Array[] = [];
  return {
    chunks,
    read: () => Promise.reject(new Error("the promise path must not be used")),
    write: () => Promise.resolve(0),
    close: () => {},
    tryRead(p: Uint8Array): number | null | undefined {
      const c = chunks.shift();
      if (c === undefined) return undefined;
      const n = Math.min(c.length, p.length);
      p.set(c.subarray(0, n));
      if (n < c.length) chunks.unshift(c.subarray(n));
      return n;
    },
    onReadable(_fn: () => void): void {},
  };
}

Deno.test("FrameReader on a pool holds a buffer only while bytes are buffered", () => {
  const pool = new BufferPool(64);
  const a = handFed();
  const b = handFed();
  const ra = new FrameReader(a, 64, undefined, pool);
  const rb = new FrameReader(b, 64, undefined, pool);
  assert(!ra.holdsBuffer && !rb.holdsBuffer); // nothing read yet: no buffer
  const msgs = new MessageWriter().query("select 1").query("select 2").take();
  // A whole message and part of the next: the reader keeps its buffer for the rest.
  a.chunks.push(msgs.subarray(0, 20));
  assert(ra.advance(ra.readNow()!));
  assert(ra.next());
  assertEquals(new TextDecoder().decode(ra.payload), "select 1\0");
  assertEquals(ra.next(), false);
  assertEquals(ra.readNow(), undefined);
  assert(ra.holdsBuffer);
  assertEquals(pool.free, 0);
  // The rest comes: read, then nothing more: the buffer goes back to the pool.
  a.chunks.push(msgs.subarray(20));
  assert(ra.advance(ra.readNow()!));
  assert(ra.next());
  assertEquals(new TextDecoder().decode(ra.payload), "select 2\0");
  assertEquals(ra.readNow(), undefined);
  assert(!ra.holdsBuffer);
  assertEquals(pool.free, 1);
  // Another reader takes that same buffer, and frames its own bytes in it.
  b.chunks.push(new MessageWriter().sync().take());
  assert(rb.advance(rb.readNow()!));
  assertEquals(pool.free, 0);
  assert(rb.next());
  assertEquals(rb.typeChar, "S");
  assertEquals(rb.readNow(), undefined);
  assertEquals(pool.free, 1);
  // A large message grows the buffer; the grown one is dropped, not pooled.
  const big = new MessageWriter().query("x".repeat(500)).take();
  a.chunks.push(big);
  for (;;) {
    const n = ra.readNow();
    if (n === undefined) break;
    assert(ra.advance(n));
  }
  assert(ra.next());
  assertEquals(ra.payload.length, 501);
  assertEquals(ra.readNow(), undefined);
  assert(!ra.holdsBuffer);
  assertEquals(pool.free, 1);
  assertThrows(() => new FrameReader(a, 128, undefined, pool), RangeError);
});
