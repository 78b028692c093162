/**
 * Real Postgres clients (psql, node-postgres, postgres.js, psycopg2) through the shared front
 * end, against its in-process fixture server (greeting plus fixed answers: it tests the front
 * end, not Postgres). Trust and SCRAM-SHA-256, wrong password and unknown user, startup
 * options, Unix socket. Ports 12820-12839.
 *
 * psql prints no SQLSTATE for a failed connection (libpq's error verbosity can only be set
 * on an open connection), so its cases check the message, and the SQLSTATE is checked through
 * node-postgres and postgres.js, which expose it.
 */

import pg from "pg";
import postgres from "postgres";
import type { AuthRule, FrontendOptions } from "../shared/frontend/mod.ts";
import { FixtureServer, run } from "../shared/frontend/test_server.ts";
import { findPgBindir } from "../shared/pgbin/mod.ts";
import {
  assert,
  assertEquals,
  assertRejects,
  assertStringIncludes,
} from "../shared/testing/assert.ts";
import { createScramVerifier } from "../shared/wire/mod.ts";

const PSQL = `${findPgBindir()}/psql`;
const PASSWORD = "s3cret pa55";
const VERIFIER = await createScramVerifier(PASSWORD);

/** alice: SCRAM over TCP, trust over the Unix socket; tom: trust; others unknown. */
const AUTH: FrontendOptions["auth"] = {
  lookup(user, _database, transport): AuthRule | undefined {
    if (user === "tom") return { method: "trust" };
    if (user === "alice") {
      return transport === "unix"
        ? { method: "trust" }
        : { method: "scram-sha-256", verifier: VERIFIER };
    }
    return undefined;
  },
};

async function withServer(
  port: number,
  fn: (server: FixtureServer) => Promise<void>,
  options: Partial<FrontendOptions> = {},
): Promise<void> {
  const server = FixtureServer.start({ port }, { auth: AUTH, ...options });
  try {
    await fn(server);
  } finally {
    await server.stop();
  }
  assertEquals(server.log.crashes, []);
}

function psql(conninfo: string, sql: string, env: Record<string, string> = {}) {
  return run(PSQL, ["-X", "-At", "-d", conninfo, "-c", sql], env);
}

Deno.test("psql with trust: query, startup options and application_name reach the session", async () => {
  await withServer(12820, async (server) => {
    const out = await psql(
      "host=127.0.0.1 port=12820 user=tom dbname=app application_name=tester " +
        "options='-c search_path=my\\\\ schema,public --statement-timeout=5s'",
      "whoami",
    );
    assertEquals(out.stderr, "");
    assertEquals(out.stdout.trim(), "tom/app/tcp/plain");
    const show = await run(PSQL, [
      "-X",
      "-At",
      "-d",
      "host=127.0.0.1 port=12820 user=tom",
      "-c",
      "show search_path",
      "-c",
      "show statement_timeout",
    ], { PGOPTIONS: "-c search_path=a\\ b -c statement_timeout=7s" });
    assertEquals(show.stdout.trim().split("\n"), ["a b", "7s"]);
    const first = server.sessions[0]!;
    assertEquals(first.params["application_name"], "tester");
    assertEquals(first.settings, { search_path: "my schema,public", statement_timeout: "5s" });
  });
});

Deno.test("psql with SCRAM-SHA-256: right password, wrong password, no password, unknown user", async () => {
  await withServer(12821, async (server) => {
    const ok = await psql("host=127.0.0.1 port=12821 user=alice dbname=db", "whoami", {
      PGPASSWORD: PASSWORD,
    });
    assertEquals([ok.code, ok.stdout.trim(), ok.stderr], [0, "alice/db/tcp/plain", ""]);

    const wrong = await psql("host=127.0.0.1 port=12821 user=alice", "whoami", {
      PGPASSWORD: "not it",
    });
    assertEquals(wrong.code, 2);
    assertStringIncludes(wrong.stderr, 'FATAL:  password authentication failed for user "alice"');

    // Without a password, psql gives up at the SASL request and closes: the server returns
    // "closed" and keeps going.
    const none = await run(PSQL, [
      "-X",
      "-w",
      "-At",
      "-d",
      "host=127.0.0.1 port=12821 user=alice",
      "-c",
      "select 1",
    ]);
    assertEquals(none.code, 2);
    assertStringIncludes(none.stderr, "no password supplied");

    const unknown = await psql("host=127.0.0.1 port=12821 user=mallory", "whoami", {
      PGPASSWORD: PASSWORD,
    });
    assertEquals(unknown.code, 2);
    assertStringIncludes(unknown.stderr, 'FATAL:  role "mallory" does not exist');

    const again = await psql("host=127.0.0.1 port=12821 user=alice", "select 1", {
      PGPASSWORD: PASSWORD,
    });
    assertEquals(again.stdout.trim(), "1", "the server still serves after the refusals");
    assertEquals(server.sessions.length, 2);
  });
});

Deno.test("psql over a Unix socket: the lookup sees transport unix (trust there)", async () => {
  const dir = await Deno.makeTempDir({ prefix: "tessera-frontend-sock-" });
  const server = FixtureServer.start({ path: `${dir}/.s.PGSQL.12822` }, { auth: AUTH });
  try {
    const out = await run(PSQL, [
      "-X",
      "-w",
      "-At",
      "-h",
      dir,
      "-p",
      "12822",
      "-U",
      "alice",
      "-c",
      "whoami",
    ]);
    assertEquals([out.stdout.trim(), out.stderr], ["alice/alice/unix/plain", ""]);
  } finally {
    await server.stop();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("node-postgres with SCRAM: login and query; 28P01 for a wrong password, 28000 for an unknown user", async () => {
  await withServer(12823, async () => {
    const config = { host: "127.0.0.1", port: 12823, user: "alice", database: "db" };
    const client = new pg.Client({ ...config, password: PASSWORD });
    await client.connect();
    try {
      const res = await client.query("whoami");
      assertEquals(res.rows, [{ whoami: "alice/db/tcp/plain" }]);
      const param = await client.query("select $1::int as x", [1]);
      assertEquals(param.rows.length, 1, "extended protocol works too");
    } finally {
      await client.end();
    }
    for (
      const [user, password, code, message] of [
        ["alice", "wrong", "28P01", 'password authentication failed for user "alice"'],
        ["mallory", PASSWORD, "28000", 'role "mallory" does not exist'],
      ]
    ) {
      const bad = new pg.Client({ ...config, user: user!, password: password! });
      const err = await assertRejects(() => bad.connect()) as Error & {
        code?: string;
        severity?: string;
      };
      assertEquals([err.code, err.severity, err.message], [code, "FATAL", message]);
      await bad.end().catch(() => {});
    }
  });
});

Deno.test("postgres.js with SCRAM: login and query (extended protocol); 28P01 and 28000", async () => {
  await withServer(12824, async () => {
    const options = {
      host: "127.0.0.1",
      port: 12824,
      database: "db",
      max: 1,
      fetch_types: false,
      onnotice: () => {},
    };
    const sql = postgres({ ...options, user: "alice", pass: PASSWORD });
    try {
      const rows = await sql`whoami`;
      assertEquals([...rows], [{ whoami: "alice/db/tcp/plain" }]);
      const simple = await sql.unsafe("select 1");
      assertEquals([...simple], [{ "?column?": "1" }]);
    } finally {
      await sql.end();
    }
    for (
      const [user, pass, code] of [
        ["alice", "wrong", "28P01"],
        ["mallory", PASSWORD, "28000"],
      ]
    ) {
      const bad = postgres({ ...options, user: user!, pass: pass!, connect_timeout: 5 });
      try {
        const err = await assertRejects(() => bad`select 1`) as Error & { code?: string };
        assertEquals(err.code, code, err.message);
      } finally {
        await bad.end();
      }
    }
  });
});

Deno.test("psycopg2 with SCRAM: login and query; wrong password refused", async () => {
  const python = "/usr/bin/python3";
  const probe = await run(python, ["-c", "import psycopg2"]);
  if (probe.code !== 0) {
    console.warn("psycopg2 is not installed: case skipped");
    return;
  }
  await withServer(12825, async () => {
    const script = `
import sys, psycopg2
try:
    conn = psycopg2.connect(host="127.0.0.1", port=12825, user="alice", dbname="db",
                            password=sys.argv[1], sslmode="disable")
except psycopg2.OperationalError as e:
    print("refused:", str(e).strip().splitlines()[-1])
    sys.exit(0)
cur = conn.cursor()
cur.execute("whoami")
print(cur.fetchone()[0])
conn.close()
`;
    const ok = await run(python, ["-c", script, PASSWORD]);
    assertEquals([ok.stdout.trim(), ok.stderr], ["alice/db/tcp/plain", ""]);
    const wrong = await run(python, ["-c", script, "nope"]);
    assert(
      wrong.stdout.includes('password authentication failed for user "alice"'),
      wrong.stdout + wrong.stderr,
    );
  });
});
