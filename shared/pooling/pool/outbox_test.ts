import { assert, assertEquals, assertThrows } from "../../testing/assert.ts";
import { MemoryConn } from "../../wire/memory_conn.ts";
import { Outbox, WriterPool } from "./outbox.ts";

Deno.test("Outbox writes in order, coalescing what is appended during a write", async () => {
  const conn = new MemoryConn(new Uint8Array(0), { maxWrite: 3 });
  const out = new Outbox(conn, () => {});
  out.append(Uint8Array.of(1, 2, 3, 4, 5));
  const first = out.flush();
  out.append(Uint8Array.of(6, 7));
  out.append(Uint8Array.of(8));
  assertEquals(out.backlog, 3);
  await first;
  await out.flush();
  assertEquals([...conn.written], [1, 2, 3, 4, 5, 6, 7, 8]);
  assertEquals(out.idle, true);
});

Deno.test("Outbox.push asks to wait only when a backlog builds up behind a write", async () => {
  const conn = new MemoryConn(new Uint8Array(0));
  const out = new Outbox(conn, () => {});
  out.append(new Uint8Array(10));
  assertEquals(out.push(16), undefined);
  out.append(new Uint8Array(20));
  const wait = out.push(16);
  assertEquals(wait !== undefined, true);
  await wait;
  assertEquals(conn.written.length, 30);
});

Deno.test("Outbox reports the first failed write once and drops the rest", async () => {
  const conn = new MemoryConn(new Uint8Array(0));
  conn.close();
  const errors: unknown[] = [];
  const out = new Outbox(conn, (e) => errors.push(e));
  out.append(Uint8Array.of(1));
  await out.flush();
  out.append(Uint8Array.of(2));
  await out.flush();
  assertEquals(errors.length, 1);
  assertEquals(out.failed, true);
});

Deno.test("Outbox on a pool holds a writer only while bytes wait to be written", async () => {
  const pool = new WriterPool(32);
  const written: number[] = [];
  let room = Infinity; // bytes the socket takes now
  const conn = {
    read: () => Promise.resolve(null),
    write: (p: Uint8Array) => {
      written.push(...p);
      return Promise.resolve(p.length);
    },
    close: () => {},
    tryWrite(p: Uint8Array, len: number = p.length): number {
      const n = Math.min(len, room);
      written.push(...p.subarray(0, n));
      return n;
    },
  };
  const a = new Outbox(conn, () => {}, 32, undefined, pool);
  const b = new Outbox(conn, () => {}, 32, undefined, pool);
  assert(!a.holdsWriter);
  a.w.byte(1).byte(2);
  assert(a.holdsWriter);
  await a.flush(); // written at once: the writer goes back
  assert(!a.holdsWriter);
  assertEquals(pool.free, 1);
  b.w.byte(3); // the same writer, empty
  assertEquals(pool.free, 0);
  await b.flush();
  assertEquals(pool.free, 1);
  // A socket that takes part: the writer stays until the rest is written.
  room = 1;
  a.w.byte(4).byte(5);
  const rest = a.flush();
  assert(a.holdsWriter);
  await rest;
  assert(!a.holdsWriter);
  assertEquals(written, [1, 2, 3, 4, 5]);
  assertEquals(pool.free, 1);
  assertThrows(() => new Outbox(conn, () => {}, 64, undefined, pool), RangeError);
});
