/**
 * End to end: pgbench through the pooler with far fewer backends than clients, in the simple,
 * extended and prepared protocols; every transaction must succeed and the pool must stay within
 * its size. `pgbench -i` through the pooler also exercises COPY FROM STDIN.
 */
import { startPooler } from "../pooler/mod.ts";
import { PgClient } from "../shared/wire/mod.ts";
import { assert, assertEquals } from "../shared/testing/assert.ts";
import { startTestPostgres } from "./support/postgres.ts";
import { fastIo } from "./support/fast_io.ts";

const PG_PORT = 12700;
const POOLER_PORT = 12701;

interface PgbenchResult {
  processed: number;
  expected: number;
  failed: number;
  output: string;
}

async function pgbench(args: string[]): Promise<PgbenchResult> {
  const out = await new Deno.Command("pgbench", {
    args: ["-h", "127.0.0.1", "-p", String(POOLER_PORT), "-U", "postgres", ...args, "postgres"],
    stdout: "piped",
    stderr: "piped",
    env: { PGCONNECT_TIMEOUT: "30" },
  }).output();
  const output = new TextDecoder().decode(out.stdout) + new TextDecoder().decode(out.stderr);
  if (!out.success) throw new Error(`pgbench ${args.join(" ")} failed:\n${output}`);
  const processed = /number of transactions actually processed: (\d+)\/(\d+)/.exec(output);
  const failed = /number of failed transactions: (\d+)/.exec(output);
  return {
    processed: Number(processed?.[1] ?? -1),
    expected: Number(processed?.[2] ?? -2),
    failed: Number(failed?.[1] ?? -1),
    output,
  };
}

async function directQuery(socketDir: string, sql: string): Promise<string | null> {
  const c = await PgClient.connect({
    socketDir,
    port: PG_PORT,
    user: "postgres",
    database: "postgres",
  });
  try {
    const [r] = await c.query(sql);
    return r!.rows[0]![0]!;
  } finally {
    await c.close();
  }
}

Deno.test({
  name: "pooler: pgbench -M simple, extended and prepared, 50 and 100 clients on 10 backends",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    const pg = await startTestPostgres({ port: PG_PORT, settings: { max_connections: "50" } });
    let pooler: Awaited<ReturnType<typeof startPooler>> | undefined;
    try {
      pooler = await startPooler({
        ...fastIo(),
        listen: [`127.0.0.1:${POOLER_PORT}`],
        postgres: { socketDir: pg.socketDir, port: PG_PORT },
        poolSize: 10,
        queueTimeoutMs: 120_000,
      });
      const init = await new Deno.Command("pgbench", {
        args: [
          "-i",
          "-s",
          "2",
          "-h",
          "127.0.0.1",
          "-p",
          String(POOLER_PORT),
          "-U",
          "postgres",
          "postgres",
        ],
        stdout: "piped",
        stderr: "piped",
      }).output();
      assert(init.success, new TextDecoder().decode(init.stderr));

      for (const mode of ["simple", "extended", "prepared"]) {
        const r = await pgbench(["-c", "50", "-j", "2", "-t", "40", "-M", mode]);
        assertEquals(r.failed, 0, r.output);
        assertEquals(r.processed, 2000, r.output);
        assertEquals(r.expected, 2000, r.output);
      }
      // Each run starts by truncating the history: the last one's transactions are all there.
      assertEquals(await directQuery(pg.socketDir, "select count(*) from pgbench_history"), "2000");
      for (const mode of ["simple", "extended", "prepared"]) {
        const r = await pgbench(["-S", "-c", "100", "-j", "2", "-t", "50", "-M", mode]);
        assertEquals(r.failed, 0, r.output);
        assertEquals(r.processed, 5000, r.output);
      }

      const stats = pooler.stats();
      const pool = stats.pools.find((p) => p.user === "postgres" && p.database === "postgres");
      assert(pool !== undefined, JSON.stringify(stats));
      assert(pool.opened <= 10 + pool.closed, `pool opened ${pool.opened} backends`);
      assertEquals(pool.active, 0);
      assert(pool.waits > 0, "100 clients on 10 backends must have waited");
      assert(stats.preparedStatements.hits > 0, JSON.stringify(stats.preparedStatements));

      // Postgres itself never saw more than the pool, and no session is left in a transaction.
      const direct = await PgClient.connect({
        socketDir: pg.socketDir,
        port: PG_PORT,
        user: "postgres",
        database: "postgres",
      });
      try {
        const [r] = await direct.query(
          "select count(*) filter (where state like 'idle in transaction%'), count(*) " +
            "from pg_stat_activity where backend_type = 'client backend' and pid <> pg_backend_pid()",
        );
        assertEquals(r!.rows[0]![0], "0");
        assert(Number(r!.rows[0]![1]) <= 10, `Postgres has ${r!.rows[0]![1]} client backends`);
      } finally {
        await direct.close();
      }
    } finally {
      await pooler?.shutdown();
      await pg.cleanup();
    }
  },
});
