/**
 * End to end: COPY FROM STDIN and COPY TO STDOUT of 100,000 rows through gateway → pooler →
 * Postgres with real psql (`\copy`), checked row for row: the count, a sum and an md5 of the
 * ordered rows are the same through the gateway, directly on Postgres and in the data sent, and
 * the rows copied out are byte for byte the rows copied in.
 */
import { createHash } from "node:crypto";
import { startGateway } from "../gateway/server.ts";
import type { PoolerEndpoint, SessionTarget, TargetResolver } from "../gateway/routing/target.ts";
import { startPooler } from "../pooler/mod.ts";
import { assertEquals } from "../shared/testing/assert.ts";
import { makeSharedTempDir } from "./support/process.ts";
import { runPsql } from "./support/psql.ts";
import { startTestPostgres } from "./support/postgres.ts";

const PG_PORT = 13020;
const POOLER_PORT = 13021;
const GW_PORT = 13022;
const ROWS = 100_000;

/** Routes every target to one fixed pooler. */
class StaticResolver implements TargetResolver {
  #endpoint: PoolerEndpoint = {
    alias: "pooler-1",
    address: `127.0.0.1:${POOLER_PORT}`,
    cell: "c1",
    keyspace: "postgres",
    shard: "-",
    type: "primary",
    term: 1,
  };
  resolve(_target: SessionTarget): Promise<PoolerEndpoint> {
    return Promise.resolve(this.#endpoint);
  }
  reportFailure(): void {}
}

/** The rows in COPY text format, one per line, ordered by id; tabs and backslashes escaped. */
function makeRows(): string {
  const lines: string[] = [];
  for (let i = 1; i <= ROWS; i++) {
    const name = `row ${i} ${"é".repeat(i % 7)}${i % 1000 === 0 ? "\\ttab\\\\slash" : ""}`;
    lines.push(`${i}\t${name}\t${i * 1.5}`);
  }
  return lines.join("\n") + "\n";
}

/** The value of `name` after COPY's text-format unescaping. */
function unescape(text: string): string {
  return text.replace(/\\(.)/g, (_, c: string) => (c === "t" ? "\t" : c));
}

const CHECK_SQL = `SELECT count(*) || ' ' || sum(id) || ' ' || md5(string_agg(
  id || '|' || name || '|' || amount, E'\\n' ORDER BY id)) FROM copy_t`;

Deno.test({
  name: "gateway data: COPY of 100,000 rows in and out through the gateway keeps every byte",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    const pgi = await startTestPostgres({ port: PG_PORT });
    const dir = await makeSharedTempDir("tessera-copy-");
    let pooler: Awaited<ReturnType<typeof startPooler>> | undefined;
    let gateway: Awaited<ReturnType<typeof startGateway>> | undefined;
    try {
      pooler = await startPooler({
        listen: [`127.0.0.1:${POOLER_PORT}`],
        postgres: { socketDir: pgi.socketDir, port: PG_PORT },
        poolSize: 4,
      });
      gateway = await startGateway({
        listen: [`127.0.0.1:${GW_PORT}`],
        resolver: new StaticResolver(),
        auth: { lookup: () => ({ method: "trust" }) },
      });
      const viaGateway = { port: GW_PORT, database: "postgres" };
      const direct = `host=${pgi.socketDir} port=${PG_PORT} user=postgres dbname=postgres`;

      const data = makeRows();
      const inFile = `${dir}/in.tsv`;
      const outFile = `${dir}/out.tsv`;
      await Deno.writeTextFile(inFile, data);
      let sum = 0;
      const joined: string[] = [];
      for (const line of data.slice(0, -1).split("\n")) {
        const [id, name, amount] = line.split("\t");
        sum += Number(id);
        joined.push(`${id}|${unescape(name!)}|${amount}`);
      }
      const expected = `${ROWS} ${sum} ${
        createHash("md5").update(joined.join("\n"), "utf8").digest("hex")
      }`;

      const create = await runPsql(
        viaGateway,
        "CREATE TABLE copy_t (id int PRIMARY KEY, name text NOT NULL, amount numeric NOT NULL)",
      );
      assertEquals(create.code, 0, create.stderr);

      const copyIn = await runPsql(viaGateway, `\\copy copy_t FROM '${inFile}'`);
      assertEquals(copyIn.code, 0, copyIn.stderr);
      assertEquals(copyIn.stdout, `COPY ${ROWS}`);

      const onPostgres = await runPsql(direct, CHECK_SQL);
      assertEquals(onPostgres.code, 0, onPostgres.stderr);
      assertEquals(onPostgres.stdout, expected, "what Postgres holds is what was sent");
      const throughGateway = await runPsql(viaGateway, CHECK_SQL);
      assertEquals(throughGateway.stdout, expected, "the same check through the gateway");

      const copyOut = await runPsql(
        viaGateway,
        `\\copy (SELECT id, name, amount FROM copy_t ORDER BY id) TO '${outFile}'`,
      );
      assertEquals(copyOut.code, 0, copyOut.stderr);
      assertEquals(copyOut.stdout, `COPY ${ROWS}`);
      const out = await Deno.readTextFile(outFile);
      assertEquals(out.length, data.length, "COPY TO STDOUT returns as many bytes as went in");
      assertEquals(
        createHash("md5").update(out).digest("hex"),
        createHash("md5").update(data).digest("hex"),
        "COPY TO STDOUT returns the rows byte for byte",
      );

      // The session is usable after both COPYs, and the pooler's backends went back clean.
      const after = await runPsql(viaGateway, "SELECT count(*) FROM copy_t WHERE id % 1000 = 0");
      assertEquals(after.stdout, String(ROWS / 1000));
      assertEquals(pooler.stats().activeClients, 0);
    } finally {
      await gateway?.shutdown();
      await pooler?.shutdown();
      await pgi.cleanup();
      await Deno.remove(dir, { recursive: true }).catch(() => undefined);
    }
  },
});
