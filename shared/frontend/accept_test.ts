/**
 * The startup phase at the byte level, against the fixture server over real TCP and Unix
 * sockets: encryption requests, CancelRequest, protocol negotiation, startup parameters,
 * SASL edge cases and the startup timeout. Ports 12800-12819.
 */

import { SqlState, TesseraError } from "../errors/mod.ts";
import { assert, assertEquals, assertRejects } from "../testing/assert.ts";
import {
  createScramVerifier,
  MessageWriter,
  PayloadReader,
  SCRAM_SHA_256,
  ScramClient,
} from "../wire/mod.ts";
import type { AuthRule, FrontendOptions } from "./accept.ts";
import { acceptFrontend } from "./accept.ts";
import { errorFields, FixtureServer, RawClient } from "./test_server.ts";

const PASSWORD = "correct horse";
const VERIFIER = await createScramVerifier(PASSWORD, { iterations: 4096 });

const RULES: Record<string, AuthRule> = {
  trusty: { method: "trust" },
  alice: { method: "scram-sha-256", verifier: VERIFIER },
  banned: { method: "reject", reason: "user banned is not allowed here" },
  broken: { method: "scram-sha-256", verifier: "SCRAM-SHA-256$not a verifier" },
};

const seen: [string, string, string][] = [];

const AUTH: FrontendOptions["auth"] = {
  lookup(user, database, transport) {
    seen.push([user, database, transport]);
    if (user === "thrower") throw new TesseraError("3D000", `database "${database}" is gone`);
    if (user === "crasher") throw new Error("topo is down");
    return RULES[user];
  },
};

async function withServer(
  port: number,
  options: Partial<FrontendOptions>,
  fn: (server: FixtureServer) => Promise<void>,
): Promise<void> {
  const server = FixtureServer.start({ port }, { auth: AUTH, ...options });
  try {
    await fn(server);
  } finally {
    await server.stop();
  }
  assertEquals(server.log.crashes, [], "acceptFrontend never rejects for client input");
}

function startup(params: Record<string, string>, minor = 0): Uint8Array {
  const w = new MessageWriter().beginUntyped().int32((3 << 16) | minor);
  for (const [k, v] of Object.entries(params)) w.cstring(k).cstring(v);
  return w.byte(0).end().take();
}

function types(messages: [string, Uint8Array][]): string {
  return messages.map(([t]) => t).join("");
}

/** The SQLSTATE and message of the last message, which must be an ErrorResponse. */
function lastError(messages: [string, Uint8Array][]): [string, string, string] {
  const last = messages.at(-1);
  assert(last !== undefined && last[0] === "E", `expected an ErrorResponse: ${types(messages)}`);
  const f = errorFields(last[1]);
  return [f["S"]!, f["C"]!, f["M"]!];
}

async function query(client: RawClient, sql: string): Promise<string[]> {
  await client.send(new MessageWriter().query(sql).take());
  const messages = await client.messages();
  const rows: string[] = [];
  for (const [type, payload] of messages) {
    if (type !== "D") continue;
    const r = new PayloadReader(payload, "DataRow");
    r.int16();
    rows.push(new TextDecoder().decode(r.lengthPrefixed()!));
  }
  return rows;
}

Deno.test("SSLRequest and GSSENCRequest are refused with N, in either order, then startup goes on", async () => {
  await withServer(12800, {}, async () => {
    for (const order of [["ssl", "gss"], ["gss", "ssl"], ["ssl"], ["gss"]]) {
      const c = await RawClient.connect(12800);
      try {
        for (const req of order) {
          const w = new MessageWriter();
          await c.send((req === "ssl" ? w.sslRequest() : w.gssEncRequest()).take());
          assertEquals(await c.read(1), Uint8Array.of(0x4e), `answer to ${req} in ${order}`);
        }
        await c.send(startup({ user: "trusty", database: "db" }));
        assertEquals(types(await c.messages()), "RSSSSSSSSKZ");
        assertEquals(await query(c, "whoami"), ["trusty/db/tcp/plain"]);
      } finally {
        c.close();
      }
    }
  });
});

Deno.test("a second SSLRequest or GSSENCRequest is a protocol violation", async () => {
  await withServer(12801, {}, async () => {
    for (const twice of ["ssl", "gss"]) {
      const c = await RawClient.connect(12801);
      try {
        const w = new MessageWriter();
        const req = twice === "ssl" ? w.sslRequest().take() : w.gssEncRequest().take();
        await c.send(req);
        assertEquals(await c.read(1), Uint8Array.of(0x4e));
        await c.send(req);
        const [severity, code, message] = lastError(await c.messages());
        assertEquals([severity, code], ["FATAL", SqlState.protocolViolation]);
        assert(message.endsWith("sent twice"), message);
        assert(await c.closedByServer());
      } finally {
        c.close();
      }
    }
  });
});

Deno.test("a CancelRequest is returned with its process id and secret, and closed", async () => {
  await withServer(12802, {}, async (server) => {
    const c = await RawClient.connect(12802);
    try {
      await c.send(new MessageWriter().cancelRequest(4242, -123456789).take());
      assert(await c.closedByServer(), "the server closes a cancel connection");
    } finally {
      c.close();
    }
    // A cancel may also follow a refused SSLRequest.
    const d = await RawClient.connect(12802);
    try {
      await d.send(new MessageWriter().sslRequest().take());
      assertEquals(await d.read(1), Uint8Array.of(0x4e));
      await d.send(new MessageWriter().cancelRequest(7, 8).take());
      assert(await d.closedByServer());
    } finally {
      d.close();
    }
    assertEquals(server.log.results, [
      { kind: "cancel", pid: 4242, secret: -123456789 },
      { kind: "cancel", pid: 7, secret: 8 },
    ]);
  });
});

Deno.test("protocol 3.2 and _pq_ options get NegotiateProtocolVersion 3.0 before authentication", async () => {
  await withServer(12803, {}, async (server) => {
    const c = await RawClient.connect(12803);
    try {
      await c.send(startup({ user: "trusty", "_pq_.compression": "on", "_pq_.x": "1" }, 2));
      const messages = await c.messages();
      assertEquals(types(messages), "vRSSSSSSSSKZ");
      const r = new PayloadReader(messages[0]![1], "NegotiateProtocolVersion");
      assertEquals([r.int32(), r.int32(), r.cstring(), r.cstring()], [
        0,
        2,
        "_pq_.compression",
        "_pq_.x",
      ]);
      r.expectEnd();
      assertEquals(await query(c, "select 1"), ["1"]);
    } finally {
      c.close();
    }
    const plain = await RawClient.connect(12803);
    try {
      await plain.send(startup({ user: "trusty" }, 1));
      const messages = await plain.messages();
      assertEquals(types(messages), "vRSSSSSSSSKZ");
      const r = new PayloadReader(messages[0]![1], "NegotiateProtocolVersion");
      assertEquals([r.int32(), r.int32()], [0, 0]);
    } finally {
      plain.close();
    }
    const [first, second] = server.sessions;
    assertEquals(first?.params, { user: "trusty" }, "protocol options are not parameters");
    assertEquals([first?.protocolMinor, first?.requestedProtocolMinor], [0, 2]);
    assertEquals([second?.protocolMinor, second?.requestedProtocolMinor], [0, 1]);
  });
});

Deno.test("startup 3.0 sends no NegotiateProtocolVersion; major versions other than 3 are refused", async () => {
  await withServer(12804, {}, async () => {
    const c = await RawClient.connect(12804);
    try {
      await c.send(startup({ user: "trusty" }));
      assertEquals(types(await c.messages()), "RSSSSSSSSKZ");
    } finally {
      c.close();
    }
    for (
      const [version, code, text] of [
        [2 << 16, SqlState.featureNotSupported, "unsupported frontend protocol 2.0"],
        [4 << 16, SqlState.featureNotSupported, "unsupported frontend protocol 4.0"],
        [(1234 << 16) | 5681, SqlState.protocolViolation, "unknown startup request code 1234.5681"],
      ] as const
    ) {
      const d = await RawClient.connect(12804);
      try {
        await d.send(
          new MessageWriter().beginUntyped().int32(version).cstring("user").cstring("trusty")
            .byte(0).end().take(),
        );
        const [severity, got, message] = lastError(await d.messages());
        assertEquals([severity, got], ["FATAL", code]);
        assert(message.startsWith(text), message);
        assert(await d.closedByServer());
      } finally {
        d.close();
      }
    }
  });
});

Deno.test("startup parameters: user is required, database defaults to user, options are parsed", async () => {
  await withServer(12805, {}, async (server) => {
    const noUser = await RawClient.connect(12805);
    try {
      await noUser.send(startup({ database: "db" }));
      assertEquals(lastError(await noUser.messages()), [
        "FATAL",
        SqlState.invalidAuthorizationSpecification,
        "no PostgreSQL user name specified in startup packet",
      ]);
    } finally {
      noUser.close();
    }
    for (const params of [{ user: "trusty" }, { user: "trusty", database: "" }]) {
      const c = await RawClient.connect(12805);
      try {
        await c.send(startup(params));
        assertEquals(types(await c.messages()), "RSSSSSSSSKZ");
        assertEquals(await query(c, "whoami"), ["trusty/trusty/tcp/plain"]);
      } finally {
        c.close();
      }
    }
    const c = await RawClient.connect(12805);
    try {
      await c.send(startup({
        user: "trusty",
        database: "app",
        application_name: "my app",
        options: "-c search_path=a\\ b,public --statement-timeout=5s",
        DateStyle: "ISO",
      }));
      assertEquals(types(await c.messages()), "RSSSSSSSSKZ");
      assertEquals(await query(c, "show search_path"), ["a b,public"]);
      assertEquals(await query(c, "show statement_timeout"), ["5s"]);
    } finally {
      c.close();
    }
    const last = server.sessions.at(-1)!;
    assertEquals(last.params, {
      user: "trusty",
      database: "app",
      application_name: "my app",
      options: "-c search_path=a\\ b,public --statement-timeout=5s",
      DateStyle: "ISO",
    });
    assertEquals(last.settings, { search_path: "a b,public", statement_timeout: "5s" });
    assertEquals([last.transport, last.tls], ["tcp", false]);
    const bad = await RawClient.connect(12805);
    try {
      await bad.send(startup({ user: "trusty", options: "-c nothing" }));
      assertEquals(lastError(await bad.messages()), [
        "FATAL",
        SqlState.syntaxError,
        "-c nothing requires a value",
      ]);
    } finally {
      bad.close();
    }
  });
});

Deno.test("auth rules: unknown user 28000, reject 28000, lookup errors are sent as FATAL", async () => {
  await withServer(12806, {}, async () => {
    const cases: [string, string, string][] = [
      ["nobody", SqlState.invalidAuthorizationSpecification, 'role "nobody" does not exist'],
      ["banned", SqlState.invalidAuthorizationSpecification, "user banned is not allowed here"],
      ["thrower", "3D000", 'database "elsewhere" is gone'],
      ["crasher", SqlState.internalError, "topo is down"],
    ];
    for (const [user, code, message] of cases) {
      const c = await RawClient.connect(12806);
      try {
        await c.send(startup({ user, database: "elsewhere" }));
        assertEquals(lastError(await c.messages()), ["FATAL", code, message], user);
        assert(await c.closedByServer());
      } finally {
        c.close();
      }
    }
  });
  assert(seen.some(([u, d, t]) => u === "nobody" && d === "elsewhere" && t === "tcp"));
});

/** Runs SCRAM by hand up to the server's answer to the client-final-message. */
async function scramLogin(
  c: RawClient,
  user: string,
  password: string,
): Promise<[string, Uint8Array][]> {
  await c.send(startup({ user }));
  const [[type, payload]] = await c.messages() as [[string, Uint8Array]];
  assertEquals(type, "R");
  const r = new PayloadReader(payload, "AuthenticationSASL");
  assertEquals([r.int32(), r.cstring(), r.cstring()], [10, SCRAM_SHA_256, ""]);
  const scram = new ScramClient(password);
  await c.send(
    new MessageWriter().saslInitialResponse(SCRAM_SHA_256, scram.clientFirstMessage()).take(),
  );
  const [[, cont]] = await c.messages() as [[string, Uint8Array]];
  const contReader = new PayloadReader(cont, "AuthenticationSASLContinue");
  assertEquals(contReader.int32(), 11);
  await c.send(
    new MessageWriter().saslResponse(await scram.clientFinalMessage(contReader.rest())).take(),
  );
  const reply = await c.messages();
  if (reply[0]?.[0] === "R") {
    const fin = new PayloadReader(reply[0][1], "AuthenticationSASLFinal");
    assertEquals(fin.int32(), 12);
    scram.verifyServerFinal(fin.rest());
  }
  return reply;
}

Deno.test("SCRAM-SHA-256: right password logs in, wrong password and bad verifier are 28P01", async () => {
  await withServer(12807, {}, async () => {
    const ok = await RawClient.connect(12807);
    try {
      const reply = await scramLogin(ok, "alice", PASSWORD);
      // SASLFinal and AuthenticationOk arrive, then the fixture's greeting.
      assertEquals(types(reply), "RRSSSSSSSSKZ");
      assertEquals(await query(ok, "whoami"), ["alice/alice/tcp/plain"]);
    } finally {
      ok.close();
    }
    for (const [user, password] of [["alice", "wrong"], ["broken", "anything"]]) {
      const c = await RawClient.connect(12807);
      try {
        assertEquals(lastError(await scramLogin(c, user!, password!)), [
          "FATAL",
          SqlState.invalidPassword,
          `password authentication failed for user "${user}"`,
        ]);
        assert(await c.closedByServer());
      } finally {
        c.close();
      }
    }
  });
});

Deno.test("hideUnknownUsers runs SCRAM for an unknown user and fails it with 28P01", async () => {
  await withServer(12808, { hideUnknownUsers: true }, async () => {
    const c = await RawClient.connect(12808);
    try {
      assertEquals(lastError(await scramLogin(c, "nobody", "guess")), [
        "FATAL",
        SqlState.invalidPassword,
        'password authentication failed for user "nobody"',
      ]);
    } finally {
      c.close();
    }
  });
});

Deno.test("SASL edge cases: channel binding, other mechanisms, wrong messages are 08P01", async () => {
  await withServer(12809, {}, async () => {
    const cases: [string, Uint8Array, string][] = [
      [
        "SCRAM-SHA-256-PLUS",
        new MessageWriter().saslInitialResponse(
          "SCRAM-SHA-256-PLUS",
          "p=tls-server-end-point,,n=,r=abc",
        )
          .take(),
        "client selected an invalid SASL authentication mechanism: 'SCRAM-SHA-256-PLUS'",
      ],
      [
        "p= flag",
        new MessageWriter().saslInitialResponse(SCRAM_SHA_256, "p=tls-server-end-point,,n=,r=abc")
          .take(),
        "malformed SCRAM message", // as Postgres says it: the detail tells why
      ],
      [
        "no data",
        new MessageWriter().saslInitialResponse(SCRAM_SHA_256, null).take(),
        "SASLInitialResponse carries no client-first-message",
      ],
      [
        "query instead",
        new MessageWriter().query("select 1").take(),
        "expected SASLInitialResponse (message type 'p'), got message type 'Q'",
      ],
      [
        "oversized",
        Uint8Array.of(0x70, 0x7f, 0xff, 0xff, 0xff),
        "invalid SASLInitialResponse message length: 2147483647 (accepted: 4 to 10000)",
      ],
    ];
    for (const [what, bytes, message] of cases) {
      const c = await RawClient.connect(12809);
      try {
        await c.send(startup({ user: "alice" }));
        assertEquals(types(await c.messages()), "R");
        await c.send(bytes);
        assertEquals(lastError(await c.messages()), [
          "FATAL",
          SqlState.protocolViolation,
          message,
        ], what);
        assert(await c.closedByServer(), what);
      } finally {
        c.close();
      }
    }
    // Terminate during authentication just ends the connection.
    const t = await RawClient.connect(12809);
    try {
      await t.send(startup({ user: "alice" }));
      assertEquals(types(await t.messages()), "R");
      await t.send(new MessageWriter().terminate().take());
      assertEquals(await t.messages(), []);
    } finally {
      t.close();
    }
  });
});

Deno.test("a client that stalls is sent 57014 and closed after startupTimeoutMs", async () => {
  await withServer(12810, { startupTimeoutMs: 300 }, async (server) => {
    // Silent from the start, in the middle of the startup packet, and during SCRAM.
    const silent = await RawClient.connect(12810);
    const partial = await RawClient.connect(12810);
    const midAuth = await RawClient.connect(12810);
    try {
      await partial.send(startup({ user: "trusty" }).subarray(0, 6));
      await midAuth.send(startup({ user: "alice" }));
      const started = Date.now();
      for (const c of [silent, partial]) {
        const [severity, code] = lastError(await c.messages());
        assertEquals([severity, code], ["FATAL", SqlState.queryCanceled]);
        assert(await c.closedByServer());
      }
      assertEquals(types(await midAuth.messages()), "R", "AuthenticationSASL");
      const sasl = await midAuth.messages();
      assertEquals(types(sasl), "E", "then the timeout");
      assertEquals(lastError(sasl).slice(0, 2), ["FATAL", SqlState.queryCanceled]);
      assert(Date.now() - started < 4000, "closed well within the test's bound");
    } finally {
      silent.close();
      partial.close();
      midAuth.close();
    }
    assertEquals(server.log.results, [{ kind: "closed" }, { kind: "closed" }, { kind: "closed" }]);
  });
});

Deno.test("a lookup slower than startupTimeoutMs ends in 57014, not in a session", async () => {
  const slow: FrontendOptions["auth"] = {
    lookup: () => new Promise((resolve) => setTimeout(() => resolve({ method: "trust" }), 600)),
  };
  const server = FixtureServer.start({ port: 12815 }, { auth: slow, startupTimeoutMs: 200 });
  try {
    const c = await RawClient.connect(12815);
    try {
      await c.send(startup({ user: "trusty" }));
      const messages = await c.messages();
      assertEquals(types(messages), "E", "no AuthenticationOk, only the timeout");
      assertEquals(lastError(messages).slice(0, 2), ["FATAL", SqlState.queryCanceled]);
      assert(await c.closedByServer());
    } finally {
      c.close();
    }
    // Let the slow lookup finish: the session must still not start.
    await new Promise((r) => setTimeout(r, 600));
  } finally {
    await server.stop();
  }
  assertEquals(server.log.results, [{ kind: "closed" }]);
});

Deno.test("a Unix-socket client is reported with transport unix", async () => {
  const dir = await Deno.makeTempDir({ prefix: "tessera-frontend-" });
  const path = `${dir}/.s.PGSQL.12811`;
  const server = FixtureServer.start({ path }, { auth: AUTH });
  try {
    const conn = await Deno.connect({ transport: "unix", path });
    try {
      await conn.write(startup({ user: "trusty" }));
      const buf = new Uint8Array(512);
      let got = 0;
      while (got < 5 || buf[got - 6] !== 0x5a) {
        const n = await conn.read(buf.subarray(got));
        if (n === null) break;
        got += n;
      }
      assertEquals(buf[got - 6], 0x5a, "ReadyForQuery arrives");
    } finally {
      conn.close();
    }
  } finally {
    await server.stop();
    await Deno.remove(dir, { recursive: true });
  }
  assertEquals(server.sessions[0]?.transport, "unix");
  assertEquals(seen.at(-1), ["trusty", "trusty", "unix"]);
});

Deno.test("acceptFrontend rejects invalid options and closes the connection", async () => {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 12812 });
  try {
    for (
      const [options, message] of [
        [{ startupTimeoutMs: 0 }, "'startupTimeoutMs' must be a positive integer: received 0"],
        [{ maxStartupLength: -1 }, "'maxStartupLength' must be a positive integer: received -1"],
        [{ requireTls: true }, "'requireTls' needs 'tls' (a certificate and key)"],
      ] as const
    ) {
      const client = await Deno.connect({ hostname: "127.0.0.1", port: 12812 });
      const conn = await listener.accept();
      try {
        await assertRejects(
          () => acceptFrontend(conn, { auth: AUTH, ...options }),
          RangeError,
          message,
        );
        assertEquals(await client.read(new Uint8Array(8)), null, "the server side was closed");
      } finally {
        client.close();
      }
    }
  } finally {
    listener.close();
  }
});
