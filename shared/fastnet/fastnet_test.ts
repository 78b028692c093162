import { assert, assertEquals, assertRejects } from "../testing/assert.ts";
import { decodeAddr, inetAddr, unixAddr } from "./addr.ts";
import { type FastConn, type FastNet, openFastNet } from "./mod.ts";

const opts = { sanitizeOps: false, sanitizeResources: false };
const linux = Deno.build.os === "linux";

function net(): FastNet {
  const n = openFastNet();
  if (typeof n === "string") throw new Error(n);
  return n;
}

async function readAll(conn: Deno.Conn, total: number): Promise<Uint8Array> {
  const out = new Uint8Array(total);
  let got = 0;
  while (got < total) {
    const n = await conn.read(out.subarray(got));
    if (n === null) break;
    got += n;
  }
  return out.subarray(0, got);
}

async function writeAllTo(conn: Deno.Conn, bytes: Uint8Array): Promise<void> {
  let done = 0;
  while (done < bytes.length) done += await conn.write(bytes.subarray(done));
}

function pattern(n: number, seed: number): Uint8Array {
  const b = new Uint8Array(n);
  for (let i = 0; i < n; i++) b[i] = (i * 31 + seed) & 0xff;
  return b;
}

Deno.test({
  name: "fastnet: 4 MiB each way over TCP with a Deno client, both writing at once",
  ignore: !linux,
  ...opts,
  async fn() {
    const listener = net().listen({ hostname: "127.0.0.1", port: 0 });
    const port = (listener.addr as Deno.NetAddr).port;
    assert(port > 0);
    const client = await Deno.connect({ hostname: "127.0.0.1", port });
    const server = await listener.accept();
    const size = 4 << 20;
    const up = pattern(size, 1);
    const down = pattern(size, 7);
    // Both sides write before reading: the socket buffers fill, so writes wait for room.
    const [gotOnServer, gotOnClient] = await Promise.all([
      (async () => {
        const w = writeAllTo(server, down);
        const r = await readAll(server, size);
        await w;
        return r;
      })(),
      (async () => {
        const w = writeAllTo(client, up);
        const r = await readAll(client, size);
        await w;
        return r;
      })(),
    ]);
    assertEquals(gotOnServer.length, size);
    assertEquals(gotOnServer, up);
    assertEquals(gotOnClient, down);
    assertEquals({ ...server.remoteAddr }, { ...client.localAddr });
    assertEquals((server.localAddr as Deno.NetAddr).port, port);
    client.close();
    // The peer's close reads as end of stream.
    assertEquals(await server.read(new Uint8Array(8)), null);
    server.close();
    listener.close();
    assertEquals(net().reactor.size, 0);
  },
});

Deno.test({
  name: "fastnet: Unix socket listener and connect, closeWrite, pending read rejected by close",
  ignore: !linux,
  ...opts,
  async fn() {
    const dir = await Deno.makeTempDir();
    try {
      const path = `${dir}/.s.PGSQL.5432`;
      const listener = net().listen({ path });
      assertEquals(listener.addr, { transport: "unix", path });
      const accepted = listener.accept();
      const client = await net().connect({ path });
      const server = await accepted;
      await writeAllTo(client, new TextEncoder().encode("hello"));
      await client.closeWrite();
      assertEquals(new TextDecoder().decode(await readAll(server, 100)), "hello");
      await writeAllTo(server, new TextEncoder().encode("back"));
      assertEquals(new TextDecoder().decode(await readAll(client, 4)), "back");
      // A read waiting for data fails with BadResource when the connection is closed.
      const pending = client.read(new Uint8Array(16));
      client.close();
      await assertRejects(() => pending, Deno.errors.BadResource);
      await assertRejects(() => client.read(new Uint8Array(1)), Deno.errors.BadResource);
      // The client shut down its side: the server reads end of stream, and again.
      assertEquals(await server.read(new Uint8Array(16)), null);
      assertEquals(await server.read(new Uint8Array(16)), null);
      server.close();
      // A pending accept fails with BadResource when the listener closes; iteration just ends.
      const waiting = listener.accept();
      listener.close();
      await assertRejects(() => waiting, Deno.errors.BadResource);
      const seen: FastConn[] = [];
      for await (const c of listener) seen.push(c);
      assertEquals(seen.length, 0);
      assertEquals(net().reactor.size, 0);
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});

Deno.test({
  name: "fastnet: connect errors are Deno's own error classes",
  ignore: !linux,
  ...opts,
  async fn() {
    // Nothing listens on port 1 of the loopback address.
    await assertRejects(
      () => net().connect({ hostname: "127.0.0.1", port: 1 }),
      Deno.errors.ConnectionRefused,
    );
    await assertRejects(
      () => net().connect({ path: "/nonexistent-dir-tessera/.s.PGSQL.1" }),
      Deno.errors.NotFound,
    );
    const listener = net().listen({ hostname: "127.0.0.1", port: 0 });
    try {
      const port = (listener.addr as Deno.NetAddr).port;
      let err: unknown;
      try {
        net().listen({ hostname: "127.0.0.1", port }).close();
      } catch (e) {
        err = e;
      }
      assert(err instanceof Deno.errors.AddrInUse, `expected AddrInUse, got ${err}`);
    } finally {
      listener.close();
    }
    assertEquals(net().reactor.size, 0);
  },
});

Deno.test({
  name: "fastnet: many connections served at once, each echoing its own bytes",
  ignore: !linux,
  ...opts,
  async fn() {
    const listener = net().listen({ hostname: "127.0.0.1", port: 0 });
    const port = (listener.addr as Deno.NetAddr).port;
    const serving = (async () => {
      const tasks: Promise<void>[] = [];
      for await (const conn of listener) {
        tasks.push((async () => {
          const buf = new Uint8Array(1024);
          for (;;) {
            const n = await conn.read(buf);
            if (n === null) break;
            await writeAllTo(conn, buf.subarray(0, n));
          }
          conn.close();
        })());
      }
      await Promise.all(tasks);
    })();
    const clients = await Promise.all(
      Array.from({ length: 50 }, () => net().connect({ hostname: "127.0.0.1", port })),
    );
    await Promise.all(clients.map(async (c, i) => {
      for (let round = 0; round < 20; round++) {
        const msg = pattern(100 + i, round);
        await writeAllTo(c, msg);
        assertEquals(await readAll(c, msg.length), msg);
      }
      c.close();
    }));
    listener.close();
    await serving;
    assertEquals(net().reactor.size, 0);
  },
});

Deno.test("fastnet: socket addresses encode and decode", () => {
  const v4 = inetAddr("127.0.0.1", 16000)!;
  assertEquals(decodeAddr(v4.bytes, 16), { transport: "tcp", hostname: "127.0.0.1", port: 16000 });
  assertEquals(decodeAddr(inetAddr("localhost", 5)!.bytes, 16), {
    transport: "tcp",
    hostname: "127.0.0.1",
    port: 5,
  });
  for (
    const [text, canonical] of [
      ["::1", "::1"],
      ["::", "::"],
      ["[fe80::1:2]", "fe80::1:2"],
      ["2001:db8:0:0:1:0:0:1", "2001:db8::1:0:0:1"],
      ["::ffff:10.0.0.1", "::ffff:a00:1"],
    ]
  ) {
    const sa = inetAddr(text!, 443);
    assert(sa !== undefined, text);
    assertEquals(decodeAddr(sa.bytes, 28), { transport: "tcp", hostname: canonical!, port: 443 });
  }
  for (const bad of ["db.example.com", "1.2.3", "256.1.1.1", "1::2::3", "12345::1", ""]) {
    assertEquals(inetAddr(bad, 1), undefined, bad);
  }
  const u = unixAddr("/tmp/x/.s.PGSQL.5432");
  assertEquals(decodeAddr(u.bytes, u.bytes.length), {
    transport: "unix",
    path: "/tmp/x/.s.PGSQL.5432",
  });
  let threw = false;
  try {
    unixAddr("/" + "a".repeat(200));
  } catch (e) {
    threw = e instanceof RangeError;
  }
  assert(threw);
});

Deno.test({
  name:
    "fastnet: the reactor waits on the JavaScript thread, and Deno's timers and sockets still run",
  ignore: !linux,
  ...opts,
  async fn() {
    const n = net();
    // Deno's epoll descriptors were found and joined the reactor's set.
    assert(n.reactor.waitsOnJsThread);
    // Idle fast sockets keep the reactor's loop (and its waits) running meanwhile.
    const fastListener = n.listen({ hostname: "127.0.0.1", port: 0 });
    const fastPort = (fastListener.addr as Deno.NetAddr).port;
    const fastClient = await n.connect({ hostname: "127.0.0.1", port: fastPort });
    const fastServer = await fastListener.accept();
    // Round trips over Deno's own sockets, each woken through Deno's event loop.
    const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
    const port = (listener.addr as Deno.NetAddr).port;
    const client = await Deno.connect({ hostname: "127.0.0.1", port });
    const server = await listener.accept();
    const echo = (async () => {
      const buf = new Uint8Array(64);
      for (;;) {
        const got = await server.read(buf);
        if (got === null) return;
        await writeAllTo(server, buf.subarray(0, got));
      }
    })();
    const ping = new Uint8Array([1, 2, 3, 4]);
    for (let i = 0; i < 200; i++) {
      await writeAllTo(client, ping);
      assertEquals(await readAll(client, 4), ping);
      if (i % 20 === 0) await new Promise((resolve) => setTimeout(resolve, 0));
    }
    // And the fast sockets still carry bytes both ways.
    await writeAllTo(fastClient, ping);
    assertEquals(await readAll(fastServer, 4), ping);
    client.close();
    await echo;
    server.close();
    listener.close();
    fastClient.close();
    fastServer.close();
    fastListener.close();
  },
});

Deno.test({
  name: "fastnet: tryRead and onReadable carry 2 MiB, end of stream, and a close while waiting",
  ignore: !linux,
  ...opts,
  async fn() {
    const listener = net().listen({ hostname: "127.0.0.1", port: 0 });
    const port = (listener.addr as Deno.NetAddr).port;
    const client = await Deno.connect({ hostname: "127.0.0.1", port });
    const server = await listener.accept() as FastConn;
    const size = 2 << 20;
    const up = pattern(size, 3);
    // Nothing sent yet: nothing to read, and no promise involved.
    assertEquals(server.tryRead(new Uint8Array(16)), undefined);
    const got = new Uint8Array(size);
    let have = 0;
    let callbacks = 0;
    const ended = new Promise<void>((resolve, reject) => {
      const pump = () => {
        callbacks++;
        try {
          for (;;) {
            const n = server.tryRead(got.subarray(Math.min(have, size - 1)));
            if (n === undefined) {
              server.onReadable(pump);
              return;
            }
            if (n === null) {
              resolve();
              return;
            }
            have += n;
          }
        } catch (err) {
          reject(err);
        }
      };
      server.onReadable(pump);
    });
    await writeAllTo(client, up);
    client.close();
    await ended;
    assertEquals(have, size);
    assertEquals(got, up);
    assert(callbacks >= 1);

    // A reader waiting for bytes hears of a close: its next tryRead throws BadResource.
    const c2 = await Deno.connect({ hostname: "127.0.0.1", port });
    const s2 = await listener.accept() as FastConn;
    assertEquals(s2.tryRead(new Uint8Array(16)), undefined);
    const closed = new Promise<unknown>((resolve) => {
      s2.onReadable(() => {
        try {
          resolve(s2.tryRead(new Uint8Array(16)));
        } catch (err) {
          resolve(err);
        }
      });
    });
    s2.close();
    assert((await closed) instanceof Deno.errors.BadResource);
    c2.close();
    server.close();
    listener.close();
    assertEquals(net().reactor.size, 0);
  },
});

Deno.test({
  name:
    "fastnet: sockets closed and opened again reuse the reactor's tokens, each event reaching its own socket",
  ignore: !linux,
  ...opts,
  async fn() {
    const n = net();
    const before = n.reactor.size;
    const listener = n.listen({ hostname: "127.0.0.1", port: 0 });
    const port = (listener.addr as Deno.NetAddr).port;
    const open = async (count: number) => {
      const pairs: { client: Deno.Conn; server: Deno.Conn }[] = [];
      for (let i = 0; i < count; i++) {
        const client = await Deno.connect({ hostname: "127.0.0.1", port });
        pairs.push({ client, server: await listener.accept() });
      }
      return pairs;
    };
    const first = await open(12);
    assertEquals(n.reactor.size, before + 1 + 12);
    // Half of them go, with bytes still in flight towards some of the closed ones.
    for (let i = 0; i < 12; i += 2) {
      await writeAllTo(first[i]!.client, pattern(64, i));
      first[i]!.server.close();
      first[i]!.client.close();
    }
    assertEquals(n.reactor.size, before + 1 + 6);
    const kept = first.filter((_, i) => i % 2 === 1);
    const second = await open(6);
    assertEquals(n.reactor.size, before + 1 + 12);
    // Every remaining socket reads exactly its own client's bytes.
    const all = [...kept, ...second];
    await Promise.all(all.map((p, i) => writeAllTo(p.client, pattern(1000 + i, 100 + i))));
    for (let i = 0; i < all.length; i++) {
      assertEquals(await readAll(all[i]!.server, 1000 + i), pattern(1000 + i, 100 + i));
    }
    for (const p of all) {
      p.client.close();
      p.server.close();
    }
    listener.close();
    assertEquals(n.reactor.size, before);
  },
});

Deno.test({
  name:
    "fastnet: while fast sockets are never idle, Deno's timers and sockets get turns on the JavaScript thread",
  ignore: !linux,
  ...opts,
  async fn() {
    const n = net();
    const fastListener = n.listen({ hostname: "127.0.0.1", port: 0 });
    const fastPort = (fastListener.addr as Deno.NetAddr).port;
    const a = await n.connect({ hostname: "127.0.0.1", port: fastPort });
    const b = await fastListener.accept() as FastConn;
    // A byte bounced between two fast sockets of this process: every round of the reactor finds
    // an event, so it never waits, on this thread or a worker's.
    let stop = false;
    let bounces = 0;
    const bounce = (conn: FastConn) => {
      const buf = new Uint8Array(1);
      const onReadable = () => {
        if (stop) return; // the test has ended: the sockets close
        for (;;) {
          const got = conn.tryRead(buf);
          if (got === undefined) break;
          if (got === null) return;
          bounces++;
          if (!stop) conn.tryWrite(buf); // back to the other end, read in a later round
        }
        conn.onReadable(onReadable);
      };
      conn.onReadable(onReadable);
    };
    bounce(a);
    bounce(b);
    // Deno's socket pair for turns opens in the background.
    while (!n.reactor.rounds.turnOpen && n.reactor.rounds.turnRefused === undefined) {
      await new Promise((resolve) => setTimeout(resolve, 5));
    }
    assertEquals(n.reactor.rounds.turnRefused, undefined);
    a.tryWrite(new Uint8Array([7]));
    const before = n.reactor.rounds;
    const bouncesBefore = bounces;
    // Deno's timers fire and its sockets carry round trips meanwhile.
    for (let i = 0; i < 5; i++) await new Promise((resolve) => setTimeout(resolve, 2));
    const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
    const client = await Deno.connect({
      hostname: "127.0.0.1",
      port: (listener.addr as Deno.NetAddr).port,
    });
    const server = await listener.accept();
    const ping = new Uint8Array([1, 2, 3, 4]);
    for (let i = 0; i < 20; i++) {
      await writeAllTo(client, ping);
      assertEquals(await readAll(server, 4), ping);
    }
    const after = n.reactor.rounds;
    stop = true;
    // The byte kept bouncing all along, and Deno's work ran in turns, not in waits.
    assert(bounces - bouncesBefore > 20, `only ${bounces - bouncesBefore} bounces`);
    // Each timer needed at least one turn.
    assert(after.turns - before.turns >= 5, `${after.turns - before.turns} turns`);
    // (A pause of the byte over 1 ms, on a loaded machine, may still send a round to a worker.)
    assert(
      after.workerRounds - before.workerRounds <= 2,
      `${after.workerRounds - before.workerRounds} rounds waited on a worker thread`,
    );
    client.close();
    server.close();
    listener.close();
    a.close();
    b.close();
    fastListener.close();
  },
});
