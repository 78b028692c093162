/**
 * The pooler on its fast socket path (`shared/fastnet`) with real clients: psql over TLS
 * (`sslmode=require`) and over the pooler's Unix socket, a result far larger than the socket
 * buffers (writes that must wait for room), COPY in both directions, and a client that vanishes
 * mid-result. Ports 12760-12761.
 */
import pg from "pg";
import { type PoolerServer, startPooler } from "../pooler/mod.ts";
import { loadFrontendTls } from "../shared/frontend/mod.ts";
import { makeTestCerts, run } from "../shared/frontend/test_server.ts";
import { findPgBindir } from "../shared/pgbin/mod.ts";
import { assert, assertEquals } from "../shared/testing/assert.ts";
import { fastIo } from "./support/fast_io.ts";
import { startTestPostgres } from "./support/postgres.ts";
import { waitFor } from "./support/process.ts";

const PG_PORT = 12760;
const POOLER_PORT = 12761;
const PSQL = `${findPgBindir()}/psql`;

const opts = { sanitizeOps: false, sanitizeResources: false };

Deno.test({
  name: "pooler fast path: TLS, Unix socket, 20 MB results, COPY both ways, a vanished client",
  ignore: Deno.build.os !== "linux",
  ...opts,
  async fn() {
    const db = await startTestPostgres({ port: PG_PORT });
    const certs = await makeTestCerts();
    const sockDir = await Deno.makeTempDir();
    let pooler: PoolerServer | undefined;
    try {
      const io = fastIo();
      assert(io.fastNet !== undefined, "the fast path must be available on Linux");
      pooler = await startPooler({
        ...io,
        listen: [`127.0.0.1:${POOLER_PORT}`],
        unixSocketDir: sockDir,
        postgres: { socketDir: db.socketDir, port: PG_PORT },
        poolSize: 2,
        tls: loadFrontendTls({ certFile: certs.certFile, keyFile: certs.keyFile }),
      });
      const psql = (conninfo: string, sql: string) =>
        run(PSQL, ["-X", "-w", "-At", "-v", "ON_ERROR_STOP=1", "-d", conninfo, "-c", sql]);

      // TLS over the fast path: psql insists on it and the session says it has it.
      const tlsInfo = `host=127.0.0.1 port=${POOLER_PORT} user=postgres dbname=postgres ` +
        "sslmode=require";
      const viaTls = await psql(
        tlsInfo,
        "select sum(g) from generate_series(1, 100000) g",
      );
      assertEquals(viaTls.code, 0, viaTls.stderr);
      assertEquals(viaTls.stdout.trim(), "5000050000");

      // The pooler's own Unix socket.
      const unixInfo = `host=${sockDir} port=${POOLER_PORT} user=postgres dbname=postgres`;
      const viaUnix = await psql(unixInfo, "select 'unix ok'");
      assertEquals(viaUnix.code, 0, viaUnix.stderr);
      assertEquals(viaUnix.stdout.trim(), "unix ok");

      // 200k rows of ~100 bytes: far more than a socket buffer, so writes wait for room.
      const big = await psql(
        tlsInfo.replace("sslmode=require", "sslmode=disable"),
        "select g, repeat(md5(g::text), 3) from generate_series(1, 200000) g",
      );
      assertEquals(big.code, 0, big.stderr);
      const lines = big.stdout.trimEnd().split("\n");
      assertEquals(lines.length, 200000);
      assertEquals(lines[199999]!.split("|")[0], "200000");

      // COPY in and out through node-postgres on plain TCP.
      const client = new pg.Client({
        host: "127.0.0.1",
        port: POOLER_PORT,
        user: "postgres",
        database: "postgres",
      });
      await client.connect();
      try {
        await client.query("create table fastcopy (id int primary key, t text)");
        const file = `${sockDir}/rows.tsv`;
        await Deno.writeTextFile(
          file,
          Array.from({ length: 50000 }, (_, i) => `${i}\trow ${i}`).join("\n") + "\n",
        );
        const copyIn = await psql(tlsInfo, `\\copy fastcopy from '${file}'`);
        assertEquals(copyIn.code, 0, copyIn.stderr);
        const r = await client.query("select count(*)::int n, sum(id)::bigint s from fastcopy");
        assertEquals(r.rows[0], { n: 50000, s: String(49999 * 50000 / 2) });
        const copyOut = await psql(tlsInfo, "copy fastcopy to stdout");
        assertEquals(copyOut.code, 0, copyOut.stderr);
        assertEquals(copyOut.stdout.trimEnd().split("\n").length, 50000);
      } finally {
        await client.end();
      }

      // A client that disconnects in the middle of a large result leaves its backend clean.
      const raw = await Deno.connect({ hostname: "127.0.0.1", port: POOLER_PORT });
      const vanishing = new pg.Client({
        host: "127.0.0.1",
        port: POOLER_PORT,
        user: "postgres",
        database: "postgres",
      });
      raw.close();
      vanishing.on("error", () => {}); // it is destroyed on purpose below
      await vanishing.connect();
      const pending = vanishing.query(
        "select repeat('x', 1000) from generate_series(1, 1000000)",
      ).catch((e: unknown) => e);
      await new Promise((r) => setTimeout(r, 200));
      (vanishing as unknown as { connection: { stream: { destroy(): void } } }).connection.stream
        .destroy();
      await pending;
      const p = pooler;
      await waitFor(
        "the vanished client's backend to come back",
        () => p.stats().activeClients === 0 ? true : undefined,
        15000,
      );
      const after = await psql(tlsInfo, "select 1");
      assertEquals(after.code, 0, after.stderr);
      const idleInTx = await psql(
        `host=${db.socketDir} port=${PG_PORT} user=postgres dbname=postgres`,
        "select count(*) from pg_stat_activity where state like 'idle in transaction%'",
      );
      assertEquals(idleInTx.stdout.trim(), "0");
    } finally {
      await pooler?.shutdown();
      await db.cleanup();
      await Deno.remove(sockDir, { recursive: true }).catch(() => {});
      await Deno.remove(certs.dir, { recursive: true }).catch(() => {});
    }
  },
});
