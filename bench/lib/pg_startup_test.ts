import { assertEquals, assertThrows } from "../../shared/testing/assert.ts";
import {
  checkLogin,
  encodeStartupMessage,
  parseErrorFields,
  PROTOCOL_3_0,
  splitBackendMessages,
} from "./pg_startup.ts";

const enc = new TextEncoder();

function message(type: string, body: Uint8Array): Uint8Array {
  const out = new Uint8Array(5 + body.length);
  out[0] = type.charCodeAt(0);
  new DataView(out.buffer).setInt32(1, 4 + body.length);
  out.set(body, 5);
  return out;
}

function int32(n: number): Uint8Array {
  const out = new Uint8Array(4);
  new DataView(out.buffer).setInt32(0, n);
  return out;
}

function concat(...parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let offset = 0;
  for (const p of parts) {
    out.set(p, offset);
    offset += p.length;
  }
  return out;
}

Deno.test("encodeStartupMessage writes length, protocol 3.0 and the parameters", () => {
  const bytes = encodeStartupMessage({ user: "u", database: "db" });
  const view = new DataView(bytes.buffer);
  assertEquals(view.getInt32(0), bytes.length);
  assertEquals(view.getInt32(4), PROTOCOL_3_0);
  assertEquals(new TextDecoder().decode(bytes.subarray(8)), "user\0u\0database\0db\0\0");
});

Deno.test("splitBackendMessages returns whole messages and keeps a partial one", () => {
  const auth = message("R", int32(0));
  const ready = message("Z", enc.encode("I"));
  const both = concat(auth, ready);
  const { messages, rest } = splitBackendMessages(both.subarray(0, both.length - 2));
  assertEquals(messages.map((m) => m.type), ["R"]);
  assertEquals(rest.length, ready.length - 2);
  const all = splitBackendMessages(both);
  assertEquals(all.messages.map((m) => [m.type, [...m.body]]), [["R", [0, 0, 0, 0]], ["Z", [73]]]);
  assertEquals(all.rest.length, 0);
  assertThrows(
    () => splitBackendMessages(new Uint8Array([0x52, 0, 0, 0, 2])),
    Error,
    "invalid backend message length 2 for type 'R'",
  );
});

Deno.test("parseErrorFields reads severity, code and message", () => {
  const body = enc.encode("SFATAL\0C53300\0Msorry, too many clients already\0\0");
  assertEquals(parseErrorFields(body), {
    S: "FATAL",
    C: "53300",
    M: "sorry, too many clients already",
  });
});

/** A one-shot server that answers any startup with `reply`. */
async function withServer(
  reply: Uint8Array,
  fn: (port: number) => Promise<void>,
): Promise<void> {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const served = (async () => {
    for await (const conn of listener) {
      const buf = new Uint8Array(1024);
      await conn.read(buf);
      // Written in two pieces to exercise framing across reads.
      await conn.write(reply.subarray(0, 3));
      await new Promise((r) => setTimeout(r, 5));
      await conn.write(reply.subarray(3));
      await conn.read(buf).catch(() => null);
      conn.close();
    }
  })();
  try {
    await fn((listener.addr as Deno.NetAddr).port);
  } finally {
    listener.close();
    await served.catch(() => undefined);
  }
}

const login = (port: number) => ({ host: "127.0.0.1", port, user: "u", database: "d" });

Deno.test("checkLogin succeeds on trust and reports errors and password requests", async () => {
  const ok = concat(
    message("R", int32(0)),
    message("S", enc.encode("server_version\x0015.20\0")),
    message("K", concat(int32(42), int32(7))),
    message("Z", enc.encode("I")),
  );
  await withServer(ok, async (port) => assertEquals(await checkLogin(login(port)), undefined));
  await withServer(message("R", int32(10)), async (port) => {
    assertEquals(
      await checkLogin(login(port)),
      "the server asked for SASL (SCRAM-SHA-256): the benchmark client supports trust " +
        "authentication only",
    );
  });
  const refused = message("E", enc.encode("SFATAL\0C53300\0Mtoo many clients\0\0"));
  await withServer(refused, async (port) => {
    assertEquals(await checkLogin(login(port)), "FATAL 53300: too many clients");
  });
});

Deno.test("checkLogin times out on a server that never answers", async () => {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const held: Deno.Conn[] = [];
  const accepting = (async () => {
    for await (const conn of listener) held.push(conn);
  })();
  try {
    const port = (listener.addr as Deno.NetAddr).port;
    assertEquals(
      await checkLogin({ ...login(port), timeoutMs: 200 }),
      "no ReadyForQuery within 200 ms",
    );
  } finally {
    listener.close();
    for (const c of held) c.close();
    await accepting.catch(() => undefined);
  }
});
