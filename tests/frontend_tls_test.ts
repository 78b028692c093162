/**
 * TLS through the shared front end with real clients: psql `sslmode=require`, `verify-full`
 * (against a CA and server certificate made here with openssl), `disable` against a TLS
 * server, `requireTls` refusing plaintext, and node-postgres, postgres.js and psycopg2 over
 * TLS with SCRAM; psql and node-postgres with SCRAM-SHA-256-PLUS (channel binding). Ports
 * 12840-12859.
 */

import pg from "pg";
import postgres from "postgres";
import { type FrontendOptions, loadFrontendTls } from "../shared/frontend/mod.ts";
import { FixtureServer, makeTestCerts, run } from "../shared/frontend/test_server.ts";
import { findPgBindir } from "../shared/pgbin/mod.ts";
import { assert, assertEquals, assertStringIncludes } from "../shared/testing/assert.ts";
import { createScramVerifier } from "../shared/wire/mod.ts";

const PSQL = `${findPgBindir()}/psql`;
const PASSWORD = "tls pa55word";
const VERIFIER = await createScramVerifier(PASSWORD);
const certs = await makeTestCerts();
const otherCa = await makeTestCerts();
const tls = loadFrontendTls({ certFile: certs.certFile, keyFile: certs.keyFile });

const AUTH: FrontendOptions["auth"] = {
  lookup(user) {
    if (user === "tom") return { method: "trust" };
    if (user === "alice") return { method: "scram-sha-256", verifier: VERIFIER };
    return undefined;
  },
};

async function withServer(
  port: number,
  options: Partial<FrontendOptions>,
  fn: (server: FixtureServer) => Promise<void>,
): Promise<void> {
  const server = FixtureServer.start({ port }, { auth: AUTH, tls, ...options });
  try {
    await fn(server);
  } finally {
    await server.stop();
  }
  assertEquals(server.log.crashes, []);
}

function psql(conninfo: string, sql = "whoami", env: Record<string, string> = {}) {
  return run(PSQL, ["-X", "-w", "-At", "-d", conninfo, "-c", sql], {
    PGPASSWORD: PASSWORD,
    ...env,
  });
}

Deno.test("psql sslmode=require, verify-full and disable against a TLS server", async () => {
  await withServer(12840, {}, async (server) => {
    const require = await psql("host=127.0.0.1 port=12840 user=tom sslmode=require");
    assertEquals([require.stdout.trim(), require.stderr], ["tom/tom/tcp/tls", ""]);

    const verifyFull = await psql(
      `host=localhost hostaddr=127.0.0.1 port=12840 user=alice dbname=app sslmode=verify-full ` +
        `sslrootcert=${certs.caFile}`,
    );
    assertEquals([verifyFull.stdout.trim(), verifyFull.stderr], ["alice/app/tcp/tls", ""]);

    const byIp = await psql(
      `host=127.0.0.1 port=12840 user=alice sslmode=verify-full sslrootcert=${certs.caFile}`,
    );
    assertEquals(byIp.stdout.trim(), "alice/alice/tcp/tls", byIp.stderr);

    // The certificate really is checked: a different CA is refused by psql itself.
    const wrongCa = await psql(
      `host=localhost port=12840 user=tom sslmode=verify-full sslrootcert=${otherCa.caFile}`,
    );
    assertEquals(wrongCa.code, 2);
    assertStringIncludes(wrongCa.stderr, "certificate verify failed");

    const disable = await psql("host=127.0.0.1 port=12840 user=tom sslmode=disable");
    assertEquals([disable.stdout.trim(), disable.stderr], ["tom/tom/tcp/plain", ""]);

    const wrong = await psql("host=127.0.0.1 port=12840 user=alice sslmode=require", "whoami", {
      PGPASSWORD: "wrong",
    });
    assertStringIncludes(wrong.stderr, 'FATAL:  password authentication failed for user "alice"');

    // SCRAM-SHA-256-PLUS: libpq binds the proof to the TLS connection when asked to insist,
    // and refuses on its own to send the password without TLS then.
    const bound = await psql(
      "host=127.0.0.1 port=12840 user=alice sslmode=require channel_binding=require",
    );
    assertEquals([bound.stdout.trim(), bound.stderr], ["alice/alice/tcp/tls", ""]);
    const unbound = await psql(
      "host=127.0.0.1 port=12840 user=alice sslmode=disable channel_binding=require",
    );
    assertStringIncludes(unbound.stderr, "channel binding required");

    const tlsSessions = server.sessions.filter((s) => s.tls).length;
    assertEquals([server.sessions.length, tlsSessions], [5, 4]);
  });
});

Deno.test("requireTls refuses plaintext TCP with 28000, accepts TLS and Unix-socket clients", async () => {
  const dir = await Deno.makeTempDir({ prefix: "tessera-frontend-sock-" });
  const unix = FixtureServer.start({ path: `${dir}/.s.PGSQL.12841` }, {
    auth: AUTH,
    tls,
    requireTls: true,
  });
  try {
    await withServer(12841, { requireTls: true }, async () => {
      const plain = await psql("host=127.0.0.1 port=12841 user=tom sslmode=disable");
      assertEquals(plain.code, 2);
      assertStringIncludes(plain.stderr, "FATAL:  SSL required");

      const prefer = await psql("host=127.0.0.1 port=12841 user=tom sslmode=prefer");
      assertEquals(prefer.stdout.trim(), "tom/tom/tcp/tls", prefer.stderr);

      const client = new pg.Client({ host: "127.0.0.1", port: 12841, user: "tom" });
      const err = await client.connect().then(() => null, (e: unknown) => e as { code?: string });
      await client.end().catch(() => {});
      assertEquals(err?.code, "28000");
    });
    const local = await run(PSQL, [
      "-X",
      "-w",
      "-At",
      "-h",
      dir,
      "-p",
      "12841",
      "-U",
      "tom",
      "-c",
      "whoami",
    ]);
    assertEquals([local.stdout.trim(), local.stderr], ["tom/tom/unix/plain", ""]);
  } finally {
    await unix.stop();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("node-postgres and postgres.js over TLS with SCRAM, verifying the CA", async () => {
  await withServer(12842, {}, async () => {
    const ca = Deno.readTextFileSync(certs.caFile);
    // node-postgres with plain SCRAM, then with SCRAM-SHA-256-PLUS (channel binding).
    for (const enableChannelBinding of [false, true]) {
      const client = new pg.Client({
        host: "localhost",
        port: 12842,
        user: "alice",
        password: PASSWORD,
        database: "db",
        ssl: { ca, rejectUnauthorized: true },
        enableChannelBinding,
      });
      await client.connect();
      try {
        assertEquals((await client.query("whoami")).rows, [{ whoami: "alice/db/tcp/tls" }]);
      } finally {
        await client.end();
      }
    }
    const sql = postgres({
      host: "localhost",
      port: 12842,
      user: "alice",
      pass: PASSWORD,
      database: "db",
      max: 1,
      fetch_types: false,
      ssl: { ca, rejectUnauthorized: true },
    });
    try {
      assertEquals([...await sql`whoami`], [{ whoami: "alice/db/tcp/tls" }]);
    } finally {
      await sql.end();
    }
  });
});

Deno.test("psycopg2 over TLS with verify-full and SCRAM", async () => {
  const python = "/usr/bin/python3";
  if ((await run(python, ["-c", "import psycopg2"])).code !== 0) {
    console.warn("psycopg2 is not installed: case skipped");
    return;
  }
  await withServer(12843, {}, async () => {
    const out = await run(python, [
      "-c",
      `
import sys, psycopg2
conn = psycopg2.connect(host="localhost", port=12843, user="alice", password=sys.argv[1],
                        sslmode="verify-full", sslrootcert=sys.argv[2])
cur = conn.cursor()
cur.execute("whoami")
print(cur.fetchone()[0])
conn.close()
`,
      PASSWORD,
      certs.caFile,
    ]);
    assertEquals([out.stdout.trim(), out.stderr], ["alice/alice/tcp/tls", ""]);
  });
});

Deno.test("many TLS clients at once, while plaintext clients come and go", async () => {
  await withServer(12844, {}, async (server) => {
    const outs = await Promise.all(
      Array.from(
        { length: 12 },
        (_, i) =>
          psql(`host=127.0.0.1 port=12844 user=tom sslmode=${i % 3 === 0 ? "disable" : "require"}`),
      ),
    );
    for (const [i, out] of outs.entries()) {
      assertEquals(out.stdout.trim(), `tom/tom/tcp/${i % 3 === 0 ? "plain" : "tls"}`, out.stderr);
    }
    assert(server.sessions.length === 12);
  });
});

Deno.test("a TLS client killed without close_notify ends its session on the server", async () => {
  await withServer(12845, {}, async (server) => {
    const child = new Deno.Command(PSQL, {
      args: ["-X", "-w", "-d", "host=127.0.0.1 port=12845 user=tom sslmode=require"],
      env: { PGCONNECT_TIMEOUT: "10" },
      stdin: "piped",
      stdout: "null",
      stderr: "null",
    }).spawn();
    try {
      const deadline = Date.now() + 10_000;
      while (server.sessions.length === 0 && Date.now() < deadline) {
        await new Promise((r) => setTimeout(r, 20));
      }
      assertEquals(server.sessions.map((s) => s.tls), [true], "psql is connected over TLS");
      assertEquals(server.openConnections, 1);
      child.kill("SIGKILL");
      await child.status;
      while (server.openConnections > 0 && Date.now() < deadline) {
        await new Promise((r) => setTimeout(r, 20));
      }
      assertEquals(server.openConnections, 0, "the server saw the end of the TLS connection");
    } finally {
      try {
        child.kill("SIGKILL");
      } catch {
        // already gone
      }
      await child.stdin.close().catch(() => {});
      await child.status;
    }
  });
});

Deno.test("remove the test certificates", async () => {
  await Deno.remove(certs.dir, { recursive: true });
  await Deno.remove(otherCa.dir, { recursive: true });
});
