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
