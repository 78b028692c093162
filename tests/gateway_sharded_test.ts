/**
 * End to end: the sharding engine in the gateway, against two real Postgres shards of keyspace
 * `app` (`-80`, `80-`) and an unsharded keyspace on a third Postgres holding the lookup table and
 * the sequence, each behind a real pooler. Routing is a fixed table of those poolers (as in the
 * other gateway data-path tests) with the shard layout and vschemas it would read from topo.
 * The same statements also run on a plain database, and results must match it.
 */
import pg from "pg";
import { startGateway } from "../gateway/server.ts";
import type {
  KeyspaceSharding,
  PoolerEndpoint,
  SessionTarget,
  ShardingSource,
  TargetResolver,
} from "../gateway/routing/target.ts";
import { hashInteger, hashText } from "../gateway/sharding/mod.ts";
import { startPooler } from "../pooler/mod.ts";
import { assert, assertEquals } from "../shared/testing/assert.ts";
import { shardForKeyspaceId } from "../shared/vschema/mod.ts";
import { PgClient } from "../shared/wire/mod.ts";
import { startTestPostgres, type TestPostgres } from "./support/postgres.ts";

const BASE = 13400;
const SHARDS = ["-80", "80-"];

const VSCHEMA = {
  sharded: true,
  vindexes: {
    hash: { type: "hash" },
    text_hash: { type: "hash", params: { key: "text" } },
    email_idx: {
      type: "lookup_unique",
      params: { table: "lookups.customer_email_idx", from: "email", to: "keyspace_id" },
      owner: "customer",
    },
  },
  tables: {
    customer: {
      column_vindexes: [{ column: "id", name: "hash" }, { column: "email", name: "email_idx" }],
      auto_increment: { column: "id", sequence: "lookups.customer_seq" },
    },
    orders: { column_vindexes: [{ column: "customer_id", name: "hash" }] },
    product: { column_vindexes: [{ column: "sku", name: "text_hash" }] },
    country: { type: "reference" },
  },
};
const LOOKUPS = { sharded: false, tables: { customer_seq: { type: "sequence" } } };

class Topology implements TargetResolver, ShardingSource {
  shardingVersion = 1;
  constructor(readonly poolers: Map<string, string>) {}
  resolve(t: SessionTarget): Promise<PoolerEndpoint> {
    const key = `${t.keyspace}/${t.shard ?? "0"}`;
    const address = this.poolers.get(key);
    if (address === undefined) throw new Error(`no pooler for ${key}`);
    return Promise.resolve({
      alias: key,
      address,
      cell: "c1",
      keyspace: t.keyspace,
      shard: t.shard ?? "0",
      type: "primary",
      term: 1,
    });
  }
  reportFailure(): void {}
  keyspaceSharding(ks: string): KeyspaceSharding | undefined {
    if (ks === "app") return { sharded: true, shards: SHARDS, vschema: VSCHEMA };
    if (ks === "lookups") return { sharded: false, shards: ["0"], vschema: LOOKUPS };
    return undefined;
  }
  vschemas(): ReadonlyMap<string, unknown> {
    return new Map<string, unknown>([["app", VSCHEMA], ["lookups", LOOKUPS]]);
  }
}

const SCHEMA = [
  "CREATE TABLE customer (id bigint PRIMARY KEY, name text NOT NULL, email text, region text, score numeric(10,2))",
  "CREATE TABLE orders (id bigint, customer_id bigint NOT NULL, amount numeric(12,2), status text, PRIMARY KEY (customer_id, id))",
  "CREATE TABLE product (sku text PRIMARY KEY, title text, price numeric(10,2))",
  "CREATE TABLE country (code text PRIMARY KEY, name text)",
];

interface Stack {
  shardPg: TestPostgres[];
  otherPg: TestPostgres;
  gatewayPort: number;
  gateway: Awaited<ReturnType<typeof startGateway>>;
}

async function withStack(
  fn: (s: Stack) => Promise<void>,
  options: { maxResultBytes?: number } = {},
): Promise<void> {
  const started: TestPostgres[] = [];
  const poolers: Awaited<ReturnType<typeof startPooler>>[] = [];
  let gateway: Awaited<ReturnType<typeof startGateway>> | undefined;
  try {
    for (let i = 0; i < 3; i++) started.push(await startTestPostgres({ port: BASE + i }));
    const addresses = new Map<string, string>();
    for (let i = 0; i < 3; i++) {
      const db = i < 2 ? "app" : "lookups";
      const c = await PgClient.connect({
        socketDir: started[i]!.socketDir,
        port: BASE + i,
        user: "postgres",
        database: "postgres",
      });
      await c.query(`CREATE DATABASE ${db}`);
      if (i === 2) await c.query("CREATE DATABASE plain");
      await c.close();
      const p = await startPooler({
        listen: [`127.0.0.1:${BASE + 10 + i}`],
        postgres: { socketDir: started[i]!.socketDir, port: BASE + i },
        poolSize: 8,
      });
      poolers.push(p);
      addresses.set(i < 2 ? `app/${SHARDS[i]}` : "lookups/0", `127.0.0.1:${BASE + 10 + i}`);
    }
    const lk = await PgClient.connect({
      socketDir: started[2]!.socketDir,
      port: BASE + 2,
      user: "postgres",
      database: "lookups",
    });
    await lk.query(
      "CREATE TABLE customer_email_idx (email text PRIMARY KEY, keyspace_id bytea); CREATE SEQUENCE customer_seq",
    );
    await lk.close();
    const topo = new Topology(addresses);
    gateway = await startGateway({
      listen: [`127.0.0.1:${BASE + 20}`],
      resolver: topo,
      sharding: topo,
      auth: { lookup: () => ({ method: "trust" as const }) },
      ...options,
    });
    await fn({
      shardPg: started.slice(0, 2),
      otherPg: started[2]!,
      gatewayPort: BASE + 20,
      gateway,
    });
  } finally {
    await gateway?.shutdown();
    for (const p of poolers) await p.shutdown();
    for (const s of started) await s.cleanup();
  }
}

function client(port: number, database: string, host = "127.0.0.1"): pg.Client {
  return new pg.Client({
    host,
    port,
    user: "postgres",
    database,
    types: { getTypeParser: () => (v: string) => v },
  });
}

async function rows(c: pg.Client, sql: string, params: unknown[] = []): Promise<string[][]> {
  const r = await c.query({ text: sql, values: params, rowMode: "array" });
  return r.rows as string[][];
}

function sorted(r: string[][]): string[][] {
  return [...r].sort((a, b) => JSON.stringify(a) < JSON.stringify(b) ? -1 : 1);
}

async function expectCode(p: Promise<unknown>, code: string): Promise<string> {
  try {
    await p;
  } catch (err) {
    const e = err as { code?: string; message?: string };
    assertEquals(e.code, code, e.message);
    return e.message ?? "";
  }
  throw new Error(`expected SQLSTATE ${code}`);
}

function shardOfInt(id: bigint): string {
  return shardForKeyspaceId(SHARDS, hashInteger(id))!;
}

Deno.test({
  name:
    "sharded gateway: DDL, routed INSERTs, point/scatter reads, merges and aggregates match Postgres",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    await withStack(async ({ shardPg, otherPg, gatewayPort }) => {
      const gw = client(gatewayPort, "app");
      const plain = new pg.Client({
        host: otherPg.socketDir,
        port: BASE + 2,
        user: "postgres",
        database: "plain",
        types: { getTypeParser: () => (v: string) => v },
      });
      await gw.connect();
      await plain.connect();
      try {
        for (const s of SCHEMA) {
          await gw.query(s);
          await plain.query(s);
        }
        const inserts: string[] = [];
        const cust: string[] = [];
        for (let i = 1; i <= 400; i++) {
          const region = i % 7 === 0 ? "NULL" : `'r${i % 5}'`;
          const score = i % 11 === 0 ? "NULL" : `${(i * 37) % 1000}.${i % 100}`;
          cust.push(`(${i}, 'name ${i % 50}', 'u${i}@x.org', ${region}, ${score})`);
        }
        inserts.push(
          `INSERT INTO customer (id, name, email, region, score) VALUES ${cust.join(",")}`,
        );
        const ord: string[] = [];
        for (let i = 1; i <= 1200; i++) {
          ord.push(
            `(${i}, ${(i % 400) + 1}, ${(i * 13) % 500}.${i % 10}5, '${
              ["new", "paid", "sent"][i % 3]
            }')`,
          );
        }
        inserts.push(
          `INSERT INTO orders (id, customer_id, amount, status) VALUES ${ord.join(",")}`,
        );
        const prod: string[] = [];
        for (let i = 1; i <= 100; i++) prod.push(`('SKU-${i} é''${i % 3}', 'title ${i}', ${i}.5)`);
        inserts.push(`INSERT INTO product (sku, title, price) VALUES ${prod.join(",")}`);
        inserts.push("INSERT INTO country (code, name) VALUES ('fr', 'France'), ('de', 'Germany')");
        for (const s of inserts) {
          const a = await gw.query(s);
          const b = await plain.query(s);
          assertEquals(a.rowCount, b.rowCount, s.slice(0, 40));
        }

        // Rows sit on the shard their vindex names.
        for (let i = 0; i < 2; i++) {
          const direct = new pg.Client({
            host: shardPg[i]!.socketDir,
            port: BASE + i,
            user: "postgres",
            database: "app",
          });
          await direct.connect();
          try {
            const ids = (await direct.query("SELECT id FROM customer")).rows.map((
              r: Record<string, unknown>,
            ) => BigInt(r.id as string));
            assert(ids.length > 100 && ids.length < 300, `shard ${SHARDS[i]} holds ${ids.length}`);
            for (const id of ids) assertEquals(shardOfInt(id), SHARDS[i]);
            const skus = (await direct.query("SELECT sku FROM product")).rows.map((
              r: Record<string, unknown>,
            ) => r.sku);
            for (const sku of skus) {
              assertEquals(shardForKeyspaceId(SHARDS, hashText(sku)), SHARDS[i], sku);
            }
            // reference table on every shard
            assertEquals(
              (await direct.query("SELECT count(*)::int AS n FROM country")).rows[0].n,
              2,
            );
          } finally {
            await direct.end();
          }
        }

        const corpus: [string, boolean][] = [
          ["SELECT * FROM customer WHERE id = 17", false],
          ["SELECT name, email FROM customer WHERE id IN (1, 2, 3, 250, 399)", false],
          ["SELECT * FROM customer WHERE email = 'u42@x.org'", false],
          ["SELECT * FROM product WHERE sku = 'SKU-7 é''1'", false],
          ["SELECT count(*) FROM customer", false],
          [
            "SELECT count(*), count(region), sum(score), min(score), max(score), avg(score) FROM customer",
            false,
          ],
          ["SELECT avg(id), avg(amount) FROM orders", false],
          ["SELECT region, count(*), avg(score) FROM customer GROUP BY region", false],
          ["SELECT region, count(*) FROM customer GROUP BY region HAVING count(*) > 60", false],
          ["SELECT status, sum(amount) FROM orders GROUP BY status ORDER BY status", true],
          ["SELECT id, name FROM customer ORDER BY name DESC, id LIMIT 10 OFFSET 5", true],
          ["SELECT id, score FROM customer ORDER BY score NULLS FIRST, id LIMIT 20", true],
          ["SELECT DISTINCT region FROM customer", false],
          ["SELECT DISTINCT name FROM customer ORDER BY name", true],
          [
            "SELECT id FROM customer WHERE id < 5 UNION ALL SELECT id FROM customer WHERE id > 396",
            false,
          ],
          [
            "SELECT c.id, o.amount FROM customer c JOIN orders o ON o.customer_id = c.id WHERE c.id = 9",
            false,
          ],
          [
            "SELECT c.name, count(*) FROM customer c JOIN orders o ON o.customer_id = c.id GROUP BY c.name",
            false,
          ],
          [
            "SELECT o.id, co.name FROM orders o JOIN country co ON co.code = 'fr' WHERE o.customer_id = 3",
            false,
          ],
          [
            "SELECT c.id, p.title FROM customer c JOIN product p ON p.title = c.name WHERE c.id < 20",
            false,
          ],
          [
            "SELECT c.id, p.title FROM customer c LEFT JOIN product p ON p.title = c.name WHERE c.id < 20",
            false,
          ],
          ["SELECT max(name), min(email) FROM customer WHERE region IS NULL", false],
          ["SELECT count(*) FROM customer WHERE id = -5", false],
          ["SELECT id FROM customer WHERE id BETWEEN 100 AND 120 ORDER BY id", true],
        ];
        for (const [sql, ordered] of corpus) {
          const a = await rows(gw, sql);
          const b = await rows(plain, sql);
          if (ordered) assertEquals(a, b, sql);
          else assertEquals(sorted(a), sorted(b), sql);
        }
        // Extended protocol with parameters (node-postgres sends Parse/Bind/Execute).
        assertEquals(
          await rows(gw, "SELECT id, name FROM customer WHERE id = $1", ["33"]),
          await rows(plain, "SELECT id, name FROM customer WHERE id = $1", ["33"]),
        );
        assertEquals(
          sorted(
            await rows(gw, "SELECT id FROM orders WHERE customer_id = $1 AND amount > $2", [
              "5",
              "10",
            ]),
          ),
          sorted(
            await rows(plain, "SELECT id FROM orders WHERE customer_id = $1 AND amount > $2", [
              "5",
              "10",
            ]),
          ),
        );
        const named = {
          name: "by_id",
          text: "SELECT name FROM customer WHERE id = $1",
          rowMode: "array" as const,
        };
        for (const id of [1, 2, 3, 300]) {
          const r = await gw.query({ ...named, values: [id] });
          assertEquals(r.rows, [[`name ${id % 50}`]]);
        }
        // EXPLAIN shows Tessera's plan then the shard's.
        const ex = (await rows(gw, "EXPLAIN SELECT * FROM customer WHERE id = 5")).map((r) => r[0])
          .join("\n");
        assert(ex.includes("Route equal"), ex);
        assert(/Shard app\/(-80|80-)/.test(ex), ex);
      } finally {
        await gw.end();
        await plain.end();
      }
    });
  },
});

Deno.test({
  name:
    "sharded gateway: lookups and sequences kept up to date, transactions, refusals, memory bound",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    await withStack(async ({ otherPg, gatewayPort }) => {
      const gw = client(gatewayPort, "app");
      const other = gw; // one session throughout
      const lk = new pg.Client({
        host: otherPg.socketDir,
        port: BASE + 2,
        user: "postgres",
        database: "lookups",
      });
      await gw.connect();
      await lk.connect();
      try {
        for (const s of SCHEMA) await gw.query(s);
        // Sequence fills the omitted id; the lookup row is written with the row's keyspace id.
        const ins = await gw.query(
          "INSERT INTO customer (name, email) VALUES ('a', 'a@x'), ('b', 'b@x'), ('c', NULL) RETURNING id",
        );
        assertEquals(ins.rowCount, 3);
        const ids = ins.rows.map((r: Record<string, unknown>) => r.id).sort();
        assertEquals(ids, ["1", "2", "3"]);
        const look = await lk.query(
          "SELECT email, keyspace_id FROM customer_email_idx ORDER BY email",
        );
        assertEquals(look.rows.map((r: Record<string, unknown>) => r.email), ["a@x", "b@x"]);
        assertEquals(
          Array.from(look.rows[0]!.keyspace_id as Uint8Array),
          Array.from(hashInteger(1n)),
        );
        assertEquals(await rows(other, "SELECT id, name FROM customer WHERE email = 'b@x'"), [[
          "2",
          "b",
        ]]);
        // UPDATE of a lookup column moves its lookup row; DELETE removes it.
        await gw.query("UPDATE customer SET email = 'bb@x' WHERE id = 2");
        assertEquals(
          (await lk.query("SELECT email FROM customer_email_idx ORDER BY email")).rows.map((
            r: Record<string, unknown>,
          ) => r.email),
          ["a@x", "bb@x"],
        );
        assertEquals(await rows(gw, "SELECT id FROM customer WHERE email = 'bb@x'"), [["2"]]);
        await gw.query("DELETE FROM customer WHERE id = 1");
        assertEquals(
          (await lk.query("SELECT email FROM customer_email_idx")).rows.map((
            r: Record<string, unknown>,
          ) => r.email),
          ["bb@x"],
        );

        // A transaction over both shards: ROLLBACK undoes both, COMMIT keeps both.
        const a = 10n;
        let b = 11n;
        while (shardOfInt(b) === shardOfInt(a)) b++;
        await gw.query("BEGIN");
        await gw.query(`INSERT INTO customer (id, name) VALUES (${a}, 'x'), (${b}, 'y')`);
        assertEquals((await gw.query("SELECT count(*) FROM customer")).rows[0].count, "4");
        await gw.query("ROLLBACK");
        assertEquals((await gw.query("SELECT count(*) FROM customer")).rows[0].count, "2");
        await gw.query("BEGIN");
        await gw.query(`INSERT INTO customer (id, name) VALUES (${a}, 'x'), (${b}, 'y')`);
        await gw.query("COMMIT");
        assertEquals((await gw.query("SELECT count(*) FROM customer")).rows[0].count, "4");
        // An error aborts the transaction until ROLLBACK (25P02), as on Postgres.
        await gw.query("BEGIN");
        await expectCode(gw.query(`INSERT INTO customer (id, name) VALUES (${a}, 'dup')`), "23505");
        await expectCode(gw.query("SELECT 1 FROM customer WHERE id = 2"), "25P02");
        await gw.query("ROLLBACK");
        assertEquals((await gw.query("SELECT name FROM customer WHERE id = 2")).rows[0].name, "b");

        // SET follows the session to every shard.
        await gw.query("SET statement_timeout = '7s'");
        assertEquals((await gw.query("SHOW statement_timeout")).rows[0].statement_timeout, "7s");
        // Refusals say what and why; the session goes on.
        const m = await expectCode(
          gw.query("WITH x AS (SELECT * FROM customer) SELECT * FROM x"),
          "0A000",
        );
        assert(m.includes("sharded keyspace"), m);
        await expectCode(gw.query("SELECT count(DISTINCT name) FROM customer"), "0A000");
        await expectCode(gw.query("SELECT * FROM nope"), "42P01");
        await expectCode(gw.query("INSERT INTO customer (id, name) VALUES (NULL, 'n')"), "23502")
          .catch(() => {}); // NULL id is filled from the sequence: allowed
        assertEquals((await gw.query("SELECT 1 AS one")).rows[0].one, "1");
      } finally {
        await gw.end();
        await lk.end();
      }
    });
  },
});

Deno.test({
  name: "sharded gateway: a result past the memory bound fails with 54000, the session goes on",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    await withStack(async ({ gatewayPort }) => {
      const gw = client(gatewayPort, "app");
      await gw.connect();
      try {
        await gw.query(SCHEMA[0]!);
        const vals: string[] = [];
        for (let i = 1; i <= 3000; i++) vals.push(`(${i}, '${"n".repeat(100)}${i}')`);
        await gw.query(`INSERT INTO customer (id, name) VALUES ${vals.join(",")}`);
        // Streaming scatter: not gathered, so it is not bounded.
        assertEquals((await gw.query("SELECT id FROM customer")).rowCount, 3000);
        // In-memory DISTINCT over 3000 wide rows passes 200 KB.
        const msg = await expectCode(gw.query("SELECT DISTINCT name FROM customer"), "54000");
        assert(msg.includes("limit"), msg);
        assertEquals((await gw.query("SELECT count(*) FROM customer")).rows[0].count, "3000");
      } finally {
        await gw.end();
      }
    }, { maxResultBytes: 200_000 });
  },
});
