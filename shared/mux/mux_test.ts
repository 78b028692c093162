import { assert, assertEquals, assertRejects } from "../testing/assert.ts";
import { acceptFrontend } from "../frontend/mod.ts";
import { Mux, MuxChannel, MuxDialer } from "./mod.ts";

const HOST = "127.0.0.1";
const PORT = 12885;

/** A listener whose connections go through the mux request and become server Muxes. */
async function withServer(
  onOpen: (ch: MuxChannel) => void,
  body: (port: number, servers: Mux[]) => Promise<void>,
  allowMux = true,
): Promise<void> {
  const listener = Deno.listen({ hostname: HOST, port: PORT });
  const servers: Mux[] = [];
  const plain: Deno.Conn[] = [];
  const loop = (async () => {
    for await (const conn of listener) {
      void acceptFrontend(conn, {
        auth: { lookup: () => ({ method: "trust" }) },
        allowMux,
      }).then((res) => {
        if (res.kind === "mux") servers.push(new Mux(res.conn, { onOpen }));
        else if (res.kind === "startup") plain.push(res.conn);
      });
    }
  })();
  try {
    await body(PORT, servers);
  } finally {
    listener.close();
    await loop.catch(() => {});
    for (const m of servers) m.close();
    await Promise.allSettled(servers.map((m) => m.done));
    for (const c of plain) c.close();
  }
}

async function readAll(ch: Deno.Conn, want: number): Promise<Uint8Array> {
  const out = new Uint8Array(want);
  let got = 0;
  while (got < want) {
    const n = await ch.read(out.subarray(got));
    if (n === null) throw new Error(`ended after ${got} of ${want} bytes`);
    got += n;
  }
  return out;
}

async function writeAll(ch: Deno.Conn, bytes: Uint8Array): Promise<void> {
  let done = 0;
  while (done < bytes.length) done += await ch.write(bytes.subarray(done));
}

/** Echoes every channel's bytes back until the channel ends. */
function echo(ch: MuxChannel): void {
  void (async () => {
    const buf = new Uint8Array(4096);
    for (;;) {
      const n = await ch.read(buf).catch(() => null);
      if (n === null) break;
      await writeAll(ch, buf.subarray(0, n)).catch(() => {});
    }
    ch.close();
  })();
}

function pattern(len: number, seed: number): Uint8Array {
  const b = new Uint8Array(len);
  for (let i = 0; i < len; i++) b[i] = (i * 31 + seed) & 0xff;
  return b;
}

Deno.test("mux: many channels over one connection each get their own bytes back", async () => {
  await withServer(echo, async (port, servers) => {
    const dialer = new MuxDialer();
    try {
      const chans = await Promise.all(
        Array.from({ length: 40 }, () => dialer.dial({ hostname: HOST, port })),
      );
      for (const c of chans) assert(c instanceof MuxChannel, "a channel");
      const opened = dialer.stats();
      assertEquals([opened.connections, opened.channels], [1, 40]);
      assertEquals(servers.length, 1);
      // Every channel writes in several pieces, interleaved with the others.
      const sent = chans.map((_, i) => pattern(10_000 + i * 997, i));
      await Promise.all(chans.map(async (c, i) => {
        const bytes = sent[i]!;
        for (let at = 0; at < bytes.length; at += 3000) {
          await writeAll(c, bytes.subarray(at, Math.min(at + 3000, bytes.length)));
        }
      }));
      const back = await Promise.all(chans.map((c, i) => readAll(c, sent[i]!.length)));
      for (let i = 0; i < chans.length; i++) assertEquals(back[i], sent[i]);
      // Frames of several channels went out together.
      const after = dialer.stats();
      assert(after.framesOut > after.writes, `${after.framesOut} frames in ${after.writes} writes`);
      for (const c of chans) c.close();
      // The server side saw the closes.
      for (let i = 0; i < 100 && servers[0]!.channels > 0; i++) {
        await new Promise((r) => setTimeout(r, 5));
      }
      assertEquals(servers[0]!.channels, 0);
    } finally {
      dialer.close();
    }
  });
});

Deno.test("mux: a reader that stops pauses only its own channel", async () => {
  let slow: MuxChannel | null = null;
  let opened = 0;
  await withServer((ch) => {
    // The first channel is never read until the test says so; the others echo.
    if (opened++ === 0) slow = ch;
    else echo(ch);
  }, async (port) => {
    const dialer = new MuxDialer();
    try {
      const big = (await dialer.dial({ hostname: HOST, port })) as MuxChannel;
      const other = await dialer.dial({ hostname: HOST, port });
      const payload = pattern(4 * 1024 * 1024, 7);
      let written = false;
      const writing = writeAll(big, payload).then(() => written = true);
      // The unread channel's writer is held back well before 4 MiB...
      await new Promise((r) => setTimeout(r, 200));
      assertEquals(written, false);
      // ...while another channel on the same connection still answers at once.
      const ping = pattern(1000, 3);
      await writeAll(other, ping);
      assertEquals(await readAll(other, ping.length), ping);
      // Once read, everything arrives, in order.
      const got = await readAll(slow!, payload.length);
      await writing;
      assertEquals(got, payload);
      big.close();
      other.close();
    } finally {
      dialer.close();
    }
  });
});

Deno.test("mux: closes and a lost connection reach the channels", async () => {
  const serverSide: MuxChannel[] = [];
  await withServer((ch) => serverSide.push(ch), async (port, servers) => {
    const dialer = new MuxDialer();
    try {
      const a = await dialer.dial({ hostname: HOST, port });
      const b = await dialer.dial({ hostname: HOST, port });
      const c = await dialer.dial({ hostname: HOST, port });
      await writeAll(a, Uint8Array.of(1));
      while (serverSide.length < 3) await new Promise((r) => setTimeout(r, 5));
      // The client closes a: the server reads its byte, then the end.
      const buf = new Uint8Array(8);
      a.close();
      assertEquals(await serverSide[0]!.read(buf), 1);
      assertEquals(await serverSide[0]!.read(buf), null);
      // The server closes b after a last message: the client reads it, then the end; a write
      // made meanwhile is dropped (as on a socket), it does not hide the last message.
      await writeAll(serverSide[1]!, Uint8Array.of(5));
      serverSide[1]!.close();
      while (serverSide.length < 3 || servers[0]!.channels > 2) {
        await new Promise((r) => setTimeout(r, 5));
      }
      assertEquals(await b.write(Uint8Array.of(1)), 1);
      assertEquals(await b.read(buf), 1);
      assertEquals(buf[0], 5);
      assertEquals(await b.read(buf), null);
      // The whole connection goes: c's pending read ends, and the next dial reconnects.
      const pending = c.read(buf);
      servers[0]!.close();
      assertEquals(await pending, null);
      const d = await dialer.dial({ hostname: HOST, port });
      assert(d instanceof MuxChannel, "a channel of a new connection");
      assertEquals(servers.length, 2);
      await writeAll(d, Uint8Array.of(9));
      while (serverSide.length < 4) await new Promise((r) => setTimeout(r, 5));
      assertEquals(await serverSide[3]!.read(buf), 1);
      assertEquals(buf[0], 9);
      d.close();
      await assertRejects(() => d.read(buf), Deno.errors.BadResource);
    } finally {
      dialer.close();
    }
  });
});

Deno.test("mux: a server that does not multiplex gets a connection per dial", async () => {
  await withServer(echo, async (port, servers) => {
    const dialer = new MuxDialer();
    try {
      const conn = await dialer.dial({ hostname: HOST, port });
      assert(!(conn instanceof MuxChannel), "a plain TCP connection");
      conn.close();
      assertEquals(servers.length, 0);
      assertEquals(dialer.stats().connections, 0);
    } finally {
      dialer.close();
    }
  }, false);
});

Deno.test("mux: a peer that breaks the framing loses its connection, and only it", async () => {
  await withServer(echo, async (port, servers) => {
    const dialer = new MuxDialer();
    try {
      const good = await dialer.dial({ hostname: HOST, port });
      for (
        const bad of [
          Uint8Array.of(0x5a, 0, 0, 0, 1, 0, 0, 0, 0), // unknown frame type
          Uint8Array.of(0x44, 0, 0, 0, 1, 0x7f, 0xff, 0xff, 0xff), // length far too large
          Uint8Array.of(0x4f, 0, 0, 0, 1, 0, 0, 0, 0, 0x4f, 0, 0, 0, 1, 0, 0, 0, 0), // opened twice
        ]
      ) {
        const raw = await Deno.connect({ hostname: HOST, port });
        const req = new Uint8Array(8);
        new DataView(req.buffer).setInt32(0, 8);
        new DataView(req.buffer).setInt32(4, 80877114);
        await writeAll(raw, req);
        assertEquals((await readAll(raw, 1))[0], 0x4d);
        await writeAll(raw, bad);
        // The server ends that connection...
        const buf = new Uint8Array(64);
        let n: number | null = 0;
        while (n !== null) n = await raw.read(buf).catch(() => null);
        raw.close();
      }
      // ...and the well-behaved one is untouched.
      const ping = pattern(300, 1);
      await writeAll(good, ping);
      assertEquals(await readAll(good, ping.length), ping);
      assertEquals(servers.filter((m) => !m.closed).length, 1);
      good.close();
    } finally {
      dialer.close();
    }
  });
});

/**
 * A connection whose incoming bytes the test hands over one by one, and whose writes fail with
 * EPIPE once it is marked broken (as after the peer reset it).
 */
class ScriptedConn {
  broken = false;
  closed = false;
  readonly localAddr: Deno.NetAddr = { transport: "tcp", hostname: HOST, port: 1 };
  readonly remoteAddr: Deno.NetAddr = { transport: "tcp", hostname: HOST, port: 2 };
  #incoming: Uint8Array[] = [];
  #ended = false;
  #wait:
    | { p: Uint8Array; resolve: (n: number | null) => void; reject: (e: unknown) => void }
    | null = null;

  read(p: Uint8Array): Promise<number | null> {
    if (this.closed) return Promise.reject(new Deno.errors.BadResource("connection is closed"));
    if (this.#incoming.length > 0) return Promise.resolve(this.#take(p));
    if (this.#ended) return Promise.resolve(null);
    return new Promise((resolve, reject) => this.#wait = { p, resolve, reject });
  }

  write(p: Uint8Array): Promise<number> {
    if (this.closed) return Promise.reject(new Deno.errors.BadResource("connection is closed"));
    if (this.broken) return Promise.reject(new Deno.errors.BrokenPipe("Broken pipe (os error 32)"));
    return Promise.resolve(p.length);
  }

  close(): void {
    this.closed = true;
    const w = this.#wait;
    this.#wait = null;
    w?.reject(new Deno.errors.BadResource("connection is closed"));
  }

  /** The peer's bytes arrive. */
  deliver(bytes: Uint8Array): void {
    this.#incoming.push(bytes);
    const w = this.#wait;
    if (w === null) return;
    this.#wait = null;
    w.resolve(this.#take(w.p));
  }

  /** The peer's end of stream arrives. */
  end(): void {
    this.#ended = true;
    const w = this.#wait;
    this.#wait = null;
    w?.resolve(null);
  }

  #take(p: Uint8Array): number {
    const b = this.#incoming.shift()!;
    p.set(b);
    return b.length;
  }
}

/** A data frame of the multiplexing protocol: 'D', the channel, the length, the bytes. */
function dataFrame(id: number, payload: number[]): Uint8Array {
  const f = new Uint8Array(9 + payload.length);
  const v = new DataView(f.buffer);
  f[0] = 0x44;
  v.setUint32(1, id);
  v.setUint32(5, payload.length);
  f.set(payload, 9);
  return f;
}

Deno.test("mux: after a failed write, what the peer sent before the end is still read", async () => {
  const conn = new ScriptedConn();
  const mux = new Mux(conn as unknown as Deno.Conn);
  const ch = mux.open();
  await new Promise((r) => setTimeout(r, 0)); // the open is written
  // The peer reset the connection after its last reply: the next write fails.
  conn.broken = true;
  assertEquals(await ch.write(Uint8Array.of(1, 2, 3)), 3);
  await new Promise((r) => setTimeout(r, 0));
  assert(mux.closed, "no channel is opened on a connection that cannot write");
  assert(!conn.closed, "the connection is still read");
  // Writes made now are dropped, as on a socket.
  assertEquals(await ch.write(Uint8Array.of(4)), 1);
  // The reply (a COMMIT's, say) that was on its way is delivered, then the end.
  conn.deliver(dataFrame(ch.id, [7, 8]));
  const buf = new Uint8Array(8);
  assertEquals(await ch.read(buf), 2);
  assertEquals([...buf.subarray(0, 2)], [7, 8]);
  conn.end();
  await assertRejects(() => ch.read(buf), Deno.errors.BrokenPipe);
  await mux.done;
  assert(mux.failure instanceof Deno.errors.BrokenPipe, String(mux.failure));
  assert(conn.closed);
});

Deno.test("mux: after a failed write, a peer that never ends the connection is closed soon", async () => {
  const conn = new ScriptedConn();
  const mux = new Mux(conn as unknown as Deno.Conn);
  const ch = mux.open();
  await new Promise((r) => setTimeout(r, 0));
  conn.broken = true;
  await ch.write(Uint8Array.of(1));
  const buf = new Uint8Array(8);
  // Far beyond the grace period: a connection that is never closed fails the test, not hangs it.
  let timer: ReturnType<typeof setTimeout> | undefined;
  const never = new Promise<"open">((r) => timer = setTimeout(() => r("open"), 20_000));
  const ended = mux.done.then(() => "closed" as const);
  try {
    assertEquals(await Promise.race([ended, never]), "closed");
  } finally {
    clearTimeout(timer);
  }
  await assertRejects(() => ch.read(buf), Deno.errors.BrokenPipe);
  assert(conn.closed);
});
