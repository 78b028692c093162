import { assertEquals } from "../../testing/assert.ts";
import { MemoryConn } from "../../wire/memory_conn.ts";
import { Outbox } from "./outbox.ts";

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

/** A socket that takes at most `room` bytes per call, synchronously (like the fast path's). */
class SyncSink extends MemoryConn {
  room = Infinity;
  tryWrite(p: Uint8Array, len = p.length): number {
    const n = Math.min(len, p.length, this.room);
    this.sent.push(...p.subarray(0, n));
    return n;
  }
  sent: number[] = [];
}

Deno.test("Outbox.sendNow writes straight from the caller's buffer, and queues what is left", async () => {
  const conn = new SyncSink(new Uint8Array(0));
  const out = new Outbox(conn, () => {});
  const buf = Uint8Array.of(9, 1, 2, 3, 4, 5);
  assertEquals(out.sendNow(buf, 1, 4), true);
  assertEquals(conn.sent, [1, 2, 3]);
  assertEquals(out.idle, true);
  // The socket takes two bytes: the rest is copied, so the caller may reuse its buffer.
  conn.room = 2;
  assertEquals(out.sendNow(buf, 0, 6), false);
  buf.fill(0);
  assertEquals(conn.sent, [1, 2, 3, 9, 1]);
  assertEquals(out.backlog, 4);
  // Something queued goes first: the next bytes are appended behind it, not sent ahead.
  assertEquals(out.sendNow(Uint8Array.of(7, 8), 0, 2), false);
  conn.room = Infinity;
  await out.flush();
  assertEquals(conn.sent, [1, 2, 3, 9, 1, 2, 3, 4, 5, 7, 8]);
  assertEquals(out.idle, true);
});
