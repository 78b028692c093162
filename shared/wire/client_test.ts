/**
 * PgClient against small servers built from this codec (the shape of the pooler's and
 * gateway's front ends). Behaviour against a real Postgres is in tests/wire_client_test.ts.
 */

import { TesseraError } from "../errors/mod.ts";
import { assert, assertEquals, assertRejects } from "../testing/assert.ts";
import { PgClient } from "./client.ts";
import { writeAll } from "./conn.ts";
import { decodeQuery, decodeSaslInitialResponse } from "./decode.ts";
import { Frontend } from "./messages.ts";
import { MessageReader } from "./reader.ts";
import { createScramVerifier, SCRAM_SHA_256, ScramServer } from "./scram.ts";
import { readStartupPacket } from "./startup.ts";
import { MessageWriter } from "./writer.ts";

// Ports 12590-12599 belong to this file.
const PORT = 12590;

/** Serves one connection with `handle`, then stops listening. */
async function serveOnce(
  port: number,
  handle: (conn: Deno.Conn) => Promise<void>,
  run: () => Promise<void>,
): Promise<void> {
  const listener = Deno.listen({ hostname: "127.0.0.1", port });
  const served = (async () => {
    const conn = await listener.accept();
    try {
      await handle(conn);
    } finally {
      try {
        conn.close();
      } catch {
        // the client closed first
      }
    }
  })();
  try {
    await run();
  } finally {
    listener.close();
    await served;
  }
}

Deno.test("PgClient logs in to a codec-built server with SCRAM and runs a query", async () => {
  const verifier = await createScramVerifier("pw");
  let startupUser = "";
  await serveOnce(PORT, async (conn) => {
    const startup = await readStartupPacket(conn);
    assert(startup?.kind === "startup");
    startupUser = startup.params.get("user") ?? "";
    const reader = new MessageReader(conn);
    const w = new MessageWriter();
    await writeAll(conn, w.authenticationSasl([SCRAM_SHA_256]).take());
    const scram = new ScramServer(verifier, { username: startupUser });
    const initial = decodeSaslInitialResponse((await reader.next())!.payload);
    assertEquals(initial.mechanism, SCRAM_SHA_256);
    w.authenticationSaslContinue(await scram.serverFirstMessage(initial.data!));
    await writeAll(conn, w.take());
    const final = await scram.serverFinalMessage((await reader.next())!.payload);
    w.authenticationSaslFinal(final).authenticationOk().parameterStatus("server_version", "15.0")
      .backendKeyData(77, 88).readyForQuery("I");
    await writeAll(conn, w.take());
    const q = (await reader.next())!;
    assertEquals(q.type, Frontend.query);
    assertEquals(decodeQuery(q.payload), "select 1");
    w.simpleResult({ fields: ["?column?"], rows: [["1"], [null]], command: "SELECT 2" })
      .readyForQuery("I");
    await writeAll(conn, w.take());
    assertEquals((await reader.next())?.type, Frontend.terminate);
  }, async () => {
    const client = await PgClient.connect({
      port: PORT,
      user: "alice",
      database: "db",
      password: "pw",
    });
    assertEquals(client.parameters.get("server_version"), "15.0");
    assertEquals(client.processId, 77);
    assertEquals(await client.query("select 1"), [
      { fields: ["?column?"], rows: [["1"], [null]], command: "SELECT 2" },
    ]);
    await client.close();
  });
  assertEquals(startupUser, "alice");
});

Deno.test("PgClient rejects a server whose SCRAM signature is wrong with 28000", async () => {
  await serveOnce(PORT + 1, async (conn) => {
    await readStartupPacket(conn);
    const reader = new MessageReader(conn);
    const w = new MessageWriter();
    await writeAll(conn, w.authenticationSasl([SCRAM_SHA_256]).take());
    // A server that does not know the password: it accepts any proof and makes up a signature.
    const initial = decodeSaslInitialResponse((await reader.next())!.payload);
    const nonce = /r=([^,]+)/.exec(new TextDecoder().decode(initial.data!))![1];
    await writeAll(
      conn,
      w.authenticationSaslContinue(`r=${nonce}xyz,s=c2FsdHNhbHQ=,i=4096`).take(),
    );
    await reader.next();
    await writeAll(
      conn,
      w.authenticationSaslFinal(`v=${btoa("x".repeat(32))}`).authenticationOk().take(),
    );
    await reader.next();
  }, async () => {
    const err = await assertRejects(
      () => PgClient.connect({ port: PORT + 1, user: "u", database: "d", password: "pw" }),
      TesseraError,
      "does not know the password",
    );
    assertEquals(err.code, "28000");
  });
});

Deno.test("PgClient gives up with 08001 when the server never answers", async () => {
  await serveOnce(PORT + 2, async (conn) => {
    await readStartupPacket(conn);
    await conn.read(new Uint8Array(16)); // until the client gives up and closes
  }, async () => {
    const err = await assertRejects(
      () => PgClient.connect({ port: PORT + 2, user: "u", database: "d", connectTimeoutMs: 200 }),
      TesseraError,
      "timed out after 200 ms",
    );
    assertEquals(err.code, "08001");
  });
});

Deno.test("PgClient reports a refused connection as 08001", async () => {
  const err = await assertRejects(
    () => PgClient.connect({ port: PORT + 3, user: "u", database: "d" }),
    TesseraError,
    "could not connect to 127.0.0.1:12593",
  );
  assertEquals(err.code, "08001");
});

Deno.test("a malformed server reply is 08P01 and closes the client", async () => {
  await serveOnce(PORT + 4, async (conn) => {
    await readStartupPacket(conn);
    const reader = new MessageReader(conn);
    await writeAll(conn, new MessageWriter().authenticationOk().readyForQuery("I").take());
    await reader.next();
    // A DataRow with no RowDescription before it.
    await writeAll(conn, new MessageWriter().dataRow(["x"]).take());
    await reader.next();
  }, async () => {
    const client = await PgClient.connect({ port: PORT + 4, user: "u", database: "d" });
    const err = await assertRejects(
      () => client.query("select 1"),
      TesseraError,
      "unexpected message 'D'",
    );
    assertEquals(err.code, "08P01");
    assertEquals(client.closed, true);
  });
});
