/**
 * End to end: real clients (psql, pgbench, node-postgres, postgres.js) through the gateway's data
 * path → a real pooler → a real Postgres. The resolver is a fixed table naming the real pooler
 * (routing, not a stand-in for Postgres). Also: bad input on the client port, connection limits,
 * and a malformed database name.
 */
import pg from "pg";
import postgres from "postgres";
import { startGateway } from "../gateway/server.ts";
import type { PoolerEndpoint, SessionTarget, TargetResolver } from "../gateway/routing/target.ts";
import { startPooler } from "../pooler/mod.ts";
import { assert, assertEquals } from "../shared/testing/assert.ts";
import { MessageWriter, PgClient } from "../shared/wire/mod.ts";
import { startTestPostgres } from "./support/postgres.ts";

const PG_PORT = 13000;
const POOLER_PORT = 13001;
const GW_PORT = 13002;

/** Routes every target to one fixed pooler. */
class StaticResolver implements TargetResolver {
  failures = 0;
  #endpoint: PoolerEndpoint;
  constructor(address: string) {
    this.#endpoint = {
      alias: "pooler-1",
      address,
      cell: "c1",
      keyspace: "postgres",
      shard: "-",
      type: "primary",
      term: 1,
    };
  }
  resolve(_target: SessionTarget): Promise<PoolerEndpoint> {
    return Promise.resolve(this.#endpoint);
  }
  reportFailure(): void {
    this.failures++;
  }
}

const TRUST = { lookup: () => ({ method: "trust" as const }) };

async function run(
  cmd: string,
  args: string[],
  stdin?: string,
): Promise<{ ok: boolean; out: string }> {
  const child = new Deno.Command(cmd, {
    args,
    stdin: stdin === undefined ? "null" : "piped",
    stdout: "piped",
    stderr: "piped",
    env: { PGCONNECT_TIMEOUT: "30" },
  }).spawn();
  if (stdin !== undefined) {
    const w = child.stdin.getWriter();
    await w.write(new TextEncoder().encode(stdin));
    await w.close();
  }
  const o = await child.output();
  const dec = new TextDecoder();
  return { ok: o.success, out: dec.decode(o.stdout) + dec.decode(o.stderr) };
}

async function withStack(
  fn: (ctx: {
    gateway: Awaited<ReturnType<typeof startGateway>>;
    resolver: StaticResolver;
    pooler: Awaited<ReturnType<typeof startPooler>>;
  }) => Promise<void>,
  gatewayOptions: {
    maxClientConnections?: number;
    maxConnectionsPerUser?: number;
    poolerChannel?: "mux" | "direct";
  } = {},
): Promise<void> {
  const pgi = await startTestPostgres({ port: PG_PORT, settings: { max_connections: "60" } });
  let pooler: Awaited<ReturnType<typeof startPooler>> | undefined;
  let gateway: Awaited<ReturnType<typeof startGateway>> | undefined;
  try {
    pooler = await startPooler({
      listen: [`127.0.0.1:${POOLER_PORT}`],
      postgres: { socketDir: pgi.socketDir, port: PG_PORT },
      poolSize: 10,
      queueTimeoutMs: 120_000,
    });
    const resolver = new StaticResolver(`127.0.0.1:${POOLER_PORT}`);
    gateway = await startGateway({
      listen: [`127.0.0.1:${GW_PORT}`],
      resolver,
      auth: TRUST,
      poolSizePerPooler: 8,
      queueTimeoutMs: 120_000,
      poolerChannel: "mux",
      ...gatewayOptions,
    });
    await fn({ gateway, resolver, pooler });
  } finally {
    await gateway?.shutdown();
    await pooler?.shutdown();
    await pgi.cleanup();
  }
}

function pgbenchCounts(out: string): { processed: number; expected: number; failed: number } {
  const processed = /number of transactions actually processed: (\d+)\/(\d+)/.exec(out);
  const failed = /number of failed transactions: (\d+)/.exec(out);
  return {
    processed: Number(processed?.[1] ?? -1),
    expected: Number(processed?.[2] ?? -2),
    failed: Number(failed?.[1] ?? -1),
  };
}

const CONN = ["-h", "127.0.0.1", "-p", String(GW_PORT), "-U", "postgres"];

async function pgbenchInit(): Promise<void> {
  const init = await run("pgbench", ["-i", "-s", "1", ...CONN, "postgres"]);
  assert(init.ok, init.out);
}

/** pgbench in `mode` with `clients` × 50 transactions through the gateway: all of them succeed. */
async function pgbenchClean(mode: string, clients: number): Promise<void> {
  const r = await run("pgbench", [
    ...CONN,
    ...["-M", mode, "-c", String(clients), "-j", "2", "-t", "50", "postgres"],
  ]);
  assert(r.ok, r.out);
  const c = pgbenchCounts(r.out);
  assertEquals(c.processed, c.expected, r.out);
  assertEquals(c.processed, clients * 50, r.out);
  assert(c.failed <= 0, r.out);
}

Deno.test({
  name: "gateway data: psql, including catalog queries, through gateway → pooler → Postgres",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    await withStack(async ({ gateway }) => {
      const r = await run(
        "psql",
        [...CONN, "-d", "postgres", "-X", "-v", "ON_ERROR_STOP=1"],
        [
          "CREATE TABLE items (id int primary key, name text);",
          "INSERT INTO items SELECT g, 'n' || g FROM generate_series(1, 5) g;",
          "SELECT count(*) AS n FROM items;",
          "\\d items",
          "\\dt",
          "\\l",
          "SELECT current_database();",
        ].join("\n"),
      );
      assert(r.ok, r.out);
      assert(/\n\s+5\n/.test(r.out), r.out);
      assert(r.out.includes('Table "public.items"'), r.out);
      assert(r.out.includes("items_pkey"), r.out);
      const s = gateway.stats();
      assertEquals(s.pools.length, 1);
      assertEquals(s.pools[0]!.pooler, "pooler-1");
      assertEquals(s.pools[0]!.database, "postgres");
    });
  },
});

Deno.test({
  name: "gateway data: pgbench -M simple, extended and prepared with zero failed transactions",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    await withStack(async ({ gateway, pooler }) => {
      await pgbenchInit();
      for (const mode of ["simple", "extended", "prepared"]) await pgbenchClean(mode, 20);
      for (const p of gateway.stats().pools) assert(p.size <= 8, JSON.stringify(p));
      // Every session rode one multiplexed connection, seen from both ends.
      const gw = gateway.stats().multiplexed;
      const pl = pooler.stats().multiplexed;
      assertEquals([gw.connections, pl.connections], [1, 1], JSON.stringify({ gw, pl }));
      assert(gw.channels >= 1 && gw.channels <= 8, JSON.stringify(gw));
      assertEquals(pl.channels, gw.channels);
      assert(gw.framesOut > 3000 && pl.framesIn >= gw.framesOut - 20, JSON.stringify({ gw, pl }));
    });
  },
});

Deno.test({
  name: "gateway data: with --pooler-channel direct, a connection per session; pgbench works",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    await withStack(async ({ gateway, pooler }) => {
      await pgbenchInit();
      await pgbenchClean("extended", 12);
      assertEquals(gateway.stats().multiplexed.connections, 0);
      assertEquals(pooler.stats().multiplexed.connections, 0);
      assert(pooler.stats().clients >= 1);
    }, { poolerChannel: "direct" });
  },
});

Deno.test({
  name: "gateway data: settings, prepared statements and cancel with node-postgres and postgres.js",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    await withStack(async ({ gateway }) => {
      const clients: pg.Client[] = [];
      try {
        // More clients than pooled connections, so transactions move between them.
        for (let i = 0; i < 12; i++) {
          const c = new pg.Client({
            host: "127.0.0.1",
            port: GW_PORT,
            user: "postgres",
            database: "postgres",
            application_name: `app-${i}`,
          });
          await c.connect();
          clients.push(c);
        }
        await Promise.all(clients.map(async (c, i) => {
          await c.query(`SET statement_timeout = '${1000 + i}s'`);
          for (let k = 0; k < 5; k++) {
            const r = await c.query({
              name: "add",
              text: "SELECT $1::int + $2::int AS s, current_setting('statement_timeout') AS t, " +
                "current_setting('application_name') AS a",
              values: [i, k],
            });
            assertEquals(r.rows[0].s, i + k);
            assertEquals(r.rows[0].t, `${1000 + i}s`);
            assertEquals(r.rows[0].a, `app-${i}`);
          }
        }));
      } finally {
        await Promise.allSettled(clients.map((c) => c.end()));
      }

      const sql = postgres({
        host: "127.0.0.1",
        port: GW_PORT,
        user: "postgres",
        database: "postgres",
        max: 4,
        prepare: true,
        onnotice: () => {},
      });
      try {
        // A cancel reaches the pooler connection serving the client now. The watcher waits until
        // the sleep itself runs (wait_event PgSleep), not merely until Postgres has parsed it.
        const slow = sql`SELECT pg_sleep(60)`.execute();
        const watcher = new pg.Client({
          host: "127.0.0.1",
          port: GW_PORT,
          user: "postgres",
          database: "postgres",
        });
        await watcher.connect();
        try {
          for (;;) {
            const r = await watcher.query(
              "SELECT count(*)::int AS n FROM pg_stat_activity " +
                "WHERE query = 'SELECT pg_sleep(60)' AND state = 'active' AND wait_event = 'PgSleep'",
            );
            if (r.rows[0].n > 0) break;
            await new Promise((r) => setTimeout(r, 20));
          }
        } finally {
          await watcher.end();
        }
        slow.cancel();
        const cancelled = await slow.then(() => null, (e: { code?: string }) => e);
        assertEquals(cancelled?.code, "57014");
        assertEquals(gateway.stats().cancelRequests.forwarded, 1);
        // Nothing after it is cancelled: each step names itself if it fails.
        const rows = await labelled(
          "40 parallel queries after the cancel",
          Promise.all(Array.from({ length: 40 }, (_, i) => sql`SELECT ${i}::int * 2 AS v`)),
        );
        rows.forEach((r, i) => assertEquals(r[0]!.v, i * 2));
        const t = await labelled(
          "SET LOCAL in a transaction",
          sql.begin(async (tx) => {
            await tx`SET LOCAL work_mem = '7MB'`;
            return await tx`SELECT current_setting('work_mem') AS w`;
          }),
        );
        assertEquals(t[0]!.w, "7MB");
        const after = await labelled(
          "work_mem after the transaction",
          sql`SELECT current_setting('work_mem') AS w`,
        );
        assert(after[0]!.w !== "7MB");
      } finally {
        await sql.end();
      }
    });
  },
});

/** Awaits `p`; a failure is rethrown naming `label`, so the step that failed is known. */
async function labelled<T>(label: string, p: PromiseLike<T>): Promise<T> {
  try {
    return await p;
  } catch (err) {
    throw new Error(`${label}: ${err instanceof Error ? err.message : String(err)}`, {
      cause: err,
    });
  }
}

async function connectRaw(): Promise<Deno.TcpConn> {
  return await Deno.connect({ hostname: "127.0.0.1", port: GW_PORT });
}

async function readAll(conn: Deno.Conn): Promise<Uint8Array> {
  const parts: number[] = [];
  const buf = new Uint8Array(4096);
  const timer = setTimeout(() => conn.close(), 15_000);
  try {
    for (;;) {
      const n = await conn.read(buf);
      if (n === null) break;
      parts.push(...buf.subarray(0, n));
    }
  } catch {
    // closed
  } finally {
    clearTimeout(timer);
  }
  return new Uint8Array(parts);
}

Deno.test({
  name: "gateway data: bad input never disturbs other sessions; limits and bad names give FATAL",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    await withStack(async ({ gateway }) => {
      const good = await PgClient.connect({
        host: "127.0.0.1",
        port: GW_PORT,
        user: "postgres",
        database: "postgres",
      });
      try {
        await good.query("BEGIN; CREATE TEMP TABLE keep (x int); INSERT INTO keep VALUES (1)");
        // Garbage before startup.
        let c = await connectRaw();
        await c.write(new TextEncoder().encode("GET / HTTP/1.1\r\nHost: x\r\n\r\n"));
        await readAll(c);
        // Oversized startup length.
        c = await connectRaw();
        await c.write(new Uint8Array([0x7f, 0xff, 0xff, 0xff, 0, 3, 0, 0]));
        await readAll(c);
        // Truncated startup, then the client goes away.
        c = await connectRaw();
        await c.write(new Uint8Array([0, 0, 0, 40, 0, 3]));
        c.close();
        // Half-open connections that never send anything.
        const idle = await Promise.all(Array.from({ length: 30 }, () => connectRaw()));
        // After login: an unknown message type, then an oversized message length.
        for (const bad of [[0x01, 0, 0, 0, 4], [0x51, 0x7f, 0xff, 0xff, 0xff]]) {
          c = await connectRaw();
          await c.write(
            new MessageWriter().startupMessage({ user: "postgres", database: "postgres" }).take(),
          );
          await c.write(new Uint8Array(bad));
          const reply = new TextDecoder().decode(await readAll(c));
          assert(reply.includes("08P01"), reply);
        }
        // A truncated Query in the middle of a session.
        c = await connectRaw();
        await c.write(
          new MessageWriter().startupMessage({ user: "postgres", database: "postgres" }).take(),
        );
        await c.write(new Uint8Array([0x51, 0, 0, 0, 100, 0x53, 0x45]));
        c.close();
        for (const x of idle) x.close();
        const [r] = await good.query("SELECT count(*) FROM keep");
        assertEquals(r!.rows[0]![0], "1");
        await good.query("COMMIT");

        // A malformed database name: FATAL 3D000 after authentication.
        const bad = await run("psql", [...CONN, "-d", "no such db", "-X", "-c", "SELECT 1"]);
        assert(!bad.ok && bad.out.includes("invalid database name"), bad.out);
        // `@replica` parses and is routed by the resolver.
        const rep = await run("psql", [
          ...CONN,
          "-d",
          "postgres@replica",
          "-X",
          "-At",
          "-c",
          "SELECT 41+1",
        ]);
        assert(rep.ok && rep.out.trim() === "42", rep.out);
      } finally {
        await good.close();
      }
      assert(gateway.stats().clients <= 1);
    }, {});
  },
});

Deno.test({
  name: "gateway data: connection limits overall and per user give FATAL 53300",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    await withStack(async ({ gateway }) => {
      const mk = await run("psql", [...CONN, "-d", "postgres", "-X", "-c", "CREATE ROLE x LOGIN"]);
      assert(mk.ok, mk.out);
      const open: pg.Client[] = [];
      try {
        for (let i = 0; i < 2; i++) {
          const c = new pg.Client({
            host: "127.0.0.1",
            port: GW_PORT,
            user: "postgres",
            database: "postgres",
          });
          await c.connect();
          open.push(c);
        }
        const third = await run("psql", [...CONN, "-d", "postgres", "-X", "-c", "SELECT 1"]);
        assert(!third.ok, third.out);
        assert(third.out.includes('too many connections for role "postgres"'), third.out);
        const other = await run("psql", [
          "-h",
          "127.0.0.1",
          "-p",
          String(GW_PORT),
          "-U",
          "other",
          "-d",
          "postgres",
          "-X",
          "-c",
          "SELECT 1",
        ]);
        // Overall limit of 3: the other user still gets in (Postgres then rejects the role).
        assert(!other.out.includes("too many"), other.out);
        assertEquals(gateway.stats().clientsPerUser["postgres"], 2);
        const c3 = new pg.Client({
          host: "127.0.0.1",
          port: GW_PORT,
          user: "x",
          database: "postgres",
        });
        await c3.connect();
        open.push(c3);
        const fourth = await run("psql", [...CONN, "-d", "postgres", "-X", "-c", "SELECT 1"]);
        assert(fourth.out.includes("too many"), fourth.out);
        assert(gateway.stats().clientsRefused >= 2);
      } finally {
        await Promise.allSettled(open.map((c) => c.end()));
      }
    }, { maxClientConnections: 3, maxConnectionsPerUser: 2 });
  },
});
