/**
 * The sharding differential test: the dataset of `support/sharding_dataset.ts` loaded into a
 * plain Postgres and into a 4-shard Tessera keyspace through the gateway, and every corpus query
 * returning the same rows from both.
 *
 * 1. "corpus plans": pure, every corpus query plans with the real planner and every refused one
 *    fails with `0A000`.
 * 2. "corpus runs on plain Postgres": the dataset loads and every query succeeds with
 *    deterministic results (port 27990).
 * 3. The differential test itself: a 4-shard cluster from `testdata/sharding/cluster.json`
 *    started with the launcher (base port 17000), loaded through the gateway, compared query by
 *    query; refusals; every sampled row on the shard its vindex names (checked on each shard's
 *    Postgres directly).
 *
 * @module
 */

import pg from "pg";
import { assert, assertEquals } from "../shared/testing/assert.ts";
import { TesseraError } from "../shared/errors/mod.ts";
import {
  bytesToHex,
  evenShards,
  type KeyspaceVSchema,
  parseVSchema,
  shardForKeyspaceId,
} from "../shared/vschema/mod.ts";
import { Bindings, initParser, Planner, resolveValue } from "../gateway/planner/mod.ts";
import { createVindex, type Vindex, type VindexValue } from "../gateway/sharding/mod.ts";
import { startTestPostgres } from "./support/postgres.ts";
import { cluster, clusterStatus } from "./support/cluster.ts";
import {
  CORPUS,
  type CorpusQuery,
  dataset,
  insertStatements,
  LOOKUP_SCHEMA_SQL,
  REFUSED,
  rowCount,
  SCHEMA_SQL,
  SPECIAL_CUSTOMER_IDS,
} from "./support/sharding_dataset.ts";

const DATA_DIR = new URL("./testdata/sharding/", import.meta.url);
const PLAIN_PORT = 27990;
const CLUSTER_BASE_PORT = 17000;
const SHARDS = evenShards(4);

async function loadVSchemas(): Promise<Record<string, KeyspaceVSchema>> {
  const read = async (file: string) =>
    JSON.parse(await Deno.readTextFile(new URL(file, DATA_DIR))) as unknown;
  return {
    app: parseVSchema(await read("vschema_app.json"), "app"),
    lookups: parseVSchema(await read("vschema_lookups.json"), "lookups"),
  };
}

/** Rows as arrays of text values (NULL as `null`). */
type Rows = (string | null)[][];

const TEXT_TYPES = { getTypeParser: () => (v: string) => v };

async function runQuery(client: pg.Client, sql: string): Promise<Rows> {
  const res = await client.query({
    text: sql,
    rowMode: "array",
    // Every value stays in Postgres's text form.
    types: TEXT_TYPES as unknown as pg.CustomTypesConfig,
  });
  return res.rows as Rows;
}

function canonical(rows: Rows, ordered: boolean): string[] {
  const lines = rows.map((r) => JSON.stringify(r));
  return ordered ? lines : lines.sort();
}

/** A short, readable difference between two results (canonical rows). */
function diffSample(want: string[], got: string[], limit = 5): string {
  const wantCount = new Map<string, number>();
  for (const r of want) wantCount.set(r, (wantCount.get(r) ?? 0) + 1);
  const gotCount = new Map<string, number>();
  for (const r of got) gotCount.set(r, (gotCount.get(r) ?? 0) + 1);
  const missing = [...wantCount].filter(([r, n]) => (gotCount.get(r) ?? 0) < n).map(([r]) => r);
  const extra = [...gotCount].filter(([r, n]) => (wantCount.get(r) ?? 0) < n).map(([r]) => r);
  const lines = [`rows: want ${want.length}, got ${got.length}`];
  if (missing.length === 0 && extra.length === 0) {
    const i = want.findIndex((r, k) => r !== got[k]);
    lines.push(`same rows, different order; first difference at row ${i}:`);
    lines.push(`  want ${want[i]}`, `  got  ${got[i]}`);
  }
  for (const r of missing.slice(0, limit)) lines.push(`  missing ${r}`);
  if (missing.length > limit) lines.push(`  ... ${missing.length - limit} more missing`);
  for (const r of extra.slice(0, limit)) lines.push(`  extra   ${r}`);
  if (extra.length > limit) lines.push(`  ... ${extra.length - limit} more extra`);
  return lines.join("\n");
}

async function loadDataset(client: pg.Client): Promise<{ statements: number; ms: number }> {
  const started = performance.now();
  const statements = insertStatements();
  for (const sql of statements) await client.query(sql);
  return { statements: statements.length, ms: performance.now() - started };
}

Deno.test("corpus plans: every query plans, every refused one fails with 0A000", async () => {
  await initParser();
  const planner = new Planner(await loadVSchemas());
  assert(CORPUS.length >= 110, `only ${CORPUS.length} corpus queries`);
  assertEquals(new Set(CORPUS.map((q) => q.name)).size, CORPUS.length, "duplicate names");
  assertEquals(new Set(REFUSED.map((q) => q.name)).size, REFUSED.length, "duplicate names");
  const failures: string[] = [];
  for (const q of CORPUS) {
    try {
      const planned = planner.planSql(q.sql, "app");
      if (planned.length !== 1) failures.push(`${q.name}: ${planned.length} statements`);
    } catch (err) {
      const code = err instanceof TesseraError ? err.code : "?";
      failures.push(`${q.name}: ${code} ${(err as Error).message}\n    ${q.sql}`);
    }
  }
  for (const q of REFUSED) {
    try {
      planner.planSql(q.sql, "app");
      failures.push(`${q.name}: planned, want 0A000\n    ${q.sql}`);
    } catch (err) {
      if (!(err instanceof TesseraError) || err.code !== "0A000") {
        failures.push(`${q.name}: want 0A000, got ${err}\n    ${q.sql}`);
      }
    }
  }
  // The load statements plan as INSERTs routed per row, each row by the keyspace id of its own
  // key (negative and 2^53+ ids, quotes and non-ASCII skus), and customer rows carry their email
  // for the lookup (no I/O: planning only).
  const vs = (await loadVSchemas()).app!;
  const hash = createVindex("hash", vs.vindexes.hash!, "app");
  const textHash = createVindex("text_hash", vs.vindexes.text_hash!, "app");
  const d = dataset();
  const keys: Record<string, { key: bigint | string; email?: string | null }[]> = {
    product: d.products.map((p) => ({ key: p.sku })),
    customer: d.customers.map((c) => ({ key: c.id, email: c.email })),
    orders: d.orders.map((o) => ({ key: o.customer_id })),
  };
  const next: Record<string, number> = { product: 0, customer: 0, orders: 0 };
  for (const sql of insertStatements()) {
    const table = /^INSERT INTO (\w+)/.exec(sql)?.[1] as string;
    try {
      const [p] = planner.planSql(sql, "app");
      const root = p!.plan.root;
      if (table === "country") {
        if (root.type !== "route" || root.opcode !== "reference" || !root.write) {
          failures.push(`INSERT INTO country: plan ${root.type}, want a reference write`);
        }
        continue;
      }
      if (root.type !== "insert") {
        failures.push(`INSERT INTO ${table}: plan ${root.type}, want insert`);
        continue;
      }
      const b = new Bindings(p!.plan, [], p!.literals);
      const vindex = table === "product" ? textHash : hash;
      const emailCol = root.columns.indexOf("email");
      for (const row of root.rows) {
        const want = keys[table]![next[table]!++]!;
        const col = root.primary.columns[0]!;
        const value = resolveValue(row.values[col]!, b);
        const got = bytesToHex(keyspaceId(vindex, value));
        if (got !== bytesToHex(keyspaceId(vindex, want.key))) {
          failures.push(`INSERT INTO ${table}: row ${want.key} routed by ${value} (${got})`);
        }
        if (table === "customer") {
          const e = resolveValue(row.values[emailCol]!, b);
          if ((e ?? null) !== want.email) {
            failures.push(`INSERT INTO customer: row ${want.key} email ${e}, want ${want.email}`);
          }
        }
      }
    } catch (err) {
      failures.push(`${sql.slice(0, 60)}...: ${err}`);
    }
  }
  assertEquals(next, {
    product: d.products.length,
    customer: d.customers.length,
    orders: d.orders.length,
  });
  assertEquals(failures, []);
});

Deno.test({
  name: "corpus runs on plain Postgres with deterministic results",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    const pgi = await startTestPostgres({ port: PLAIN_PORT });
    const admin = new pg.Client({
      host: pgi.socketDir,
      port: PLAIN_PORT,
      user: "postgres",
      database: "postgres",
    });
    let client: pg.Client | undefined;
    try {
      await admin.connect();
      await admin.query("CREATE DATABASE app TEMPLATE template0 LC_COLLATE 'C' LC_CTYPE 'C'");
      client = new pg.Client({
        host: pgi.socketDir,
        port: PLAIN_PORT,
        user: "postgres",
        database: "app",
      });
      await client.connect();
      assertEquals(
        await runQuery(client, "SELECT datcollate FROM pg_database WHERE datname = 'app'"),
        [["C"]],
      );
      for (const sql of [...LOOKUP_SCHEMA_SQL, ...SCHEMA_SQL]) await client.query(sql);
      const load = await loadDataset(client);
      console.log(
        `plain Postgres: loaded ${rowCount()} rows in ${load.statements} statements, ` +
          `${(load.ms / 1000).toFixed(2)} s`,
      );
      const counts = await runQuery(
        client,
        "SELECT (SELECT count(*) FROM customer), (SELECT count(*) FROM orders), " +
          "(SELECT count(*) FROM product), (SELECT count(*) FROM country)",
      );
      const d = dataset();
      assertEquals(counts, [[
        String(d.customers.length),
        String(d.orders.length),
        String(d.products.length),
        String(d.countries.length),
      ]]);
      const total = counts[0]!.reduce((a, v) => a + Number(v), 0);
      assert(total >= 100_000, `only ${total} rows`);
      await client.query("ANALYZE");

      const failures: string[] = [];
      const started = performance.now();
      let rows = 0;
      let empty = 0;
      const slow: string[] = [];
      for (const q of CORPUS) {
        try {
          const t0 = performance.now();
          const a = canonical(await runQuery(client, q.sql), q.ordered);
          const ms = performance.now() - t0;
          if (ms > 500) slow.push(`${q.name} ${ms.toFixed(0)} ms`);
          const b = canonical(await runQuery(client, q.sql), q.ordered);
          rows += a.length;
          if (a.length === 0) empty++;
          if (a.join("\n") !== b.join("\n")) {
            failures.push(`${q.name}: not deterministic\n${diffSample(a, b)}`);
          }
        } catch (err) {
          failures.push(`${q.name}: ${err}\n    ${q.sql}`);
        }
      }
      console.log(
        `plain Postgres: ${CORPUS.length} corpus queries (each twice) in ` +
          `${((performance.now() - started) / 1000).toFixed(2)} s, ${rows} rows, ` +
          `${empty} empty results${slow.length > 0 ? `; slow: ${slow.join(", ")}` : ""}`,
      );
      // The refused queries are valid Postgres: the refusal is about sharding, not syntax.
      for (const q of REFUSED) {
        try {
          await runQuery(client, q.sql);
        } catch (err) {
          failures.push(`refused ${q.name} fails on plain Postgres: ${err}`);
        }
      }
      assertEquals(failures, []);
    } finally {
      await client?.end().catch(() => undefined);
      await admin.end().catch(() => undefined);
      await pgi.cleanup();
    }
  },
});

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

async function eventually<T>(
  what: string,
  fn: () => Promise<T | undefined>,
  timeoutMs = 120_000,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  while (Date.now() < deadline) {
    try {
      const value = await fn();
      if (value !== undefined) return value;
    } catch (err) {
      last = err;
    }
    await sleep(500);
  }
  throw new Error(`timed out waiting for ${what}${last ? `: ${last}` : ""}`);
}

/** The cluster's alias of shard member 0 (scripts/cluster/layout.ts `instanceAlias`). */
function aliasOf(keyspace: string, shard: string): string {
  return `${keyspace}-${shard}-0`.replace(/[^A-Za-z0-9_.-]/g, "_");
}

function keyspaceId(vindex: Vindex, value: VindexValue): Uint8Array {
  const [m] = vindex.map([value]);
  assert(m?.kind === "id", `vindex ${vindex.name} gives no id for ${value}`);
  return m.id;
}

function sample<T>(items: readonly T[], n: number): T[] {
  const step = Math.max(1, Math.floor(items.length / n));
  const out: T[] = [];
  for (let i = 0; i < items.length && out.length < n; i += step) out.push(items[i] as T);
  return out;
}

async function compareCorpus(
  plain: pg.Client,
  sharded: pg.Client,
  queries: readonly CorpusQuery[],
): Promise<string[]> {
  const failures: string[] = [];
  for (const q of queries) {
    let want: string[];
    try {
      want = canonical(await runQuery(plain, q.sql), q.ordered);
    } catch (err) {
      failures.push(`${q.name}: fails on plain Postgres: ${err}`);
      continue;
    }
    let got: string[];
    try {
      got = canonical(await runQuery(sharded, q.sql), q.ordered);
    } catch (err) {
      const code = (err as { code?: string }).code ?? "?";
      failures.push(`${q.name}: fails through the gateway: ${code} ${err}\n    ${q.sql}`);
      continue;
    }
    if (want.join("\n") !== got.join("\n")) {
      failures.push(`${q.name}: results differ\n    ${q.sql}\n${diffSample(want, got)}`);
    }
  }
  return failures;
}

Deno.test({
  name: "differential: the 4-shard keyspace returns what plain Postgres returns",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn(t) {
    const dir = await Deno.makeTempDir({ prefix: "tessera-diff-" });
    await Deno.chmod(dir, 0o755);
    const config = new URL("cluster.json", DATA_DIR).pathname;
    const plainPg = await startTestPostgres({ port: PLAIN_PORT });
    const clients: pg.Client[] = [];
    const connect = async (config: pg.ClientConfig) => {
      const c = new pg.Client(config);
      await c.connect();
      clients.push(c);
      return c;
    };
    try {
      const up = await cluster(
        "up",
        "--dir",
        dir,
        "--base-port",
        String(CLUSTER_BASE_PORT),
        "--replicas",
        "0",
        "--config",
        config,
      );
      assertEquals(up.code, 0, `up failed:\n${up.stdout}\n${up.stderr}`);
      const st = await eventually("every process running", async () => {
        const s = await clusterStatus(dir);
        return s.processes.every((p) => p.state === "running") ? s : undefined;
      });
      const gw = st.processes.find((p) => p.kind === "gateway");
      assert(gw?.ports.pg !== undefined, "no gateway pg port in status");
      const gateway = (database: string): pg.ClientConfig => ({
        host: "127.0.0.1",
        port: gw.ports.pg,
        user: "postgres",
        database,
      });
      await eventually("the gateway serves app", async () => {
        const c = new pg.Client(gateway("app"));
        await c.connect();
        try {
          await c.query("SELECT 1");
          return true;
        } finally {
          await c.end();
        }
      });

      // Plain side.
      const admin = await connect({
        host: plainPg.socketDir,
        port: PLAIN_PORT,
        user: "postgres",
        database: "postgres",
      });
      await admin.query("CREATE DATABASE app TEMPLATE template0 LC_COLLATE 'C' LC_CTYPE 'C'");
      const plain = await connect({
        host: plainPg.socketDir,
        port: PLAIN_PORT,
        user: "postgres",
        database: "app",
      });
      for (const sql of [...LOOKUP_SCHEMA_SQL, ...SCHEMA_SQL]) await plain.query(sql);
      const plainLoad = await loadDataset(plain);

      // Sharded side: the lookup table in `lookups`, the schema on every shard of `app`.
      const lookups = await connect(gateway("lookups"));
      for (const sql of LOOKUP_SCHEMA_SQL) await lookups.query(sql);
      const sharded = await connect(gateway("app"));
      for (const sql of SCHEMA_SQL) await sharded.query(sql);
      const shardedLoad = await loadDataset(sharded);
      console.log(
        `loads: plain ${(plainLoad.ms / 1000).toFixed(2)} s, ` +
          `sharded ${(shardedLoad.ms / 1000).toFixed(2)} s (${plainLoad.statements} statements)`,
      );

      const report = (failures: string[]) => {
        if (failures.length > 0) console.log(failures.join("\n\n"));
        assertEquals(failures, []);
      };

      await t.step("every corpus query returns the same rows", async () => {
        const started = performance.now();
        const failures = await compareCorpus(plain, sharded, CORPUS);
        console.log(
          `differential: ${CORPUS.length} queries in ` +
            `${((performance.now() - started) / 1000).toFixed(2)} s, ${failures.length} failed`,
        );
        report(failures);
      });

      await t.step("every refused query gets 0A000 from the gateway", async () => {
        const failures: string[] = [];
        for (const q of REFUSED) {
          try {
            await sharded.query(q.sql);
            failures.push(`${q.name}: the gateway ran it, want 0A000\n    ${q.sql}`);
          } catch (err) {
            const code = (err as { code?: string }).code;
            if (code !== "0A000") {
              failures.push(`${q.name}: want 0A000, got ${code} ${err}\n    ${q.sql}`);
            }
          }
        }
        report(failures);
      });

      await t.step("rows sit on the shard their vindex names", async () => {
        const failures: string[] = [];
        const vs = (await loadVSchemas()).app!;
        const hash = createVindex("hash", vs.vindexes.hash!, "app");
        const textHash = createVindex("text_hash", vs.vindexes.text_hash!, "app");
        const d = dataset();
        const specials = new Set(SPECIAL_CUSTOMER_IDS);
        const customers = [
          ...d.customers.filter((c) => specials.has(c.id)),
          ...sample(d.customers.filter((c) => !specials.has(c.id)), 500),
        ];
        const products = sample(d.products, 500);
        const shardClients = new Map<string, pg.Client>();
        for (const shard of SHARDS) {
          const alias = aliasOf("app", shard);
          const p = st.processes.find((p) => p.kind === "pgctld" && p.name === `pgctld-${alias}`);
          assert(p?.ports.postgres !== undefined, `no pgctld for shard ${shard} (${alias})`);
          shardClients.set(
            shard,
            await connect({
              host: `${dir}/${alias}/run`,
              port: p.ports.postgres,
              user: "postgres",
              database: "app",
            }),
          );
        }
        const foundOn = async (sql: string, keys: string[]) => {
          const where = new Map<string, string[]>();
          for (const [shard, c] of shardClients) {
            const res = await c.query({ text: sql, values: [keys], rowMode: "array" });
            for (const [k] of res.rows as [string][]) {
              where.set(k, [...(where.get(k) ?? []), shard]);
            }
          }
          return where;
        };
        const placement = (what: string, want: Map<string, string>, got: Map<string, string[]>) => {
          for (const [key, shard] of want) {
            const on = got.get(key) ?? [];
            if (on.length !== 1 || on[0] !== shard) {
              failures.push(`${what} ${key} is on [${on.join(", ")}], want ${shard}`);
            }
          }
        };
        const shardOf = (v: Vindex, key: bigint | string) =>
          shardForKeyspaceId(SHARDS, keyspaceId(v, key))!;
        const customerShard = new Map(customers.map((c) => [String(c.id), shardOf(hash, c.id)]));
        placement(
          "customer",
          customerShard,
          await foundOn(
            "SELECT id::text FROM customer WHERE id = ANY($1::bigint[])",
            [...customerShard.keys()],
          ),
        );
        const productShard = new Map(products.map((p) => [p.sku, shardOf(textHash, p.sku)]));
        placement(
          "product",
          productShard,
          await foundOn("SELECT sku FROM product WHERE sku = ANY($1::text[])", [
            ...productShard.keys(),
          ]),
        );
        // Orders sit with their customer.
        const orders = [
          ...d.orders.filter((o) => specials.has(o.customer_id)),
          ...sample(d.orders, 500),
        ];
        const orderShard = new Map(
          orders.map((o) => [`${o.customer_id}/${o.id}`, shardOf(hash, o.customer_id)]),
        );
        placement(
          "order",
          orderShard,
          await foundOn(
            "SELECT customer_id::text || '/' || id::text FROM orders " +
              "WHERE (customer_id::text || '/' || id::text) = ANY($1::text[])",
            [...orderShard.keys()],
          ),
        );
        // Every shard holds the whole reference table and its share of the rest.
        let customerRows = 0;
        for (const [shard, c] of shardClients) {
          const res = await c.query({
            text: "SELECT (SELECT count(*) FROM country), (SELECT count(*) FROM customer)",
            rowMode: "array",
          });
          const [n, m] = (res.rows as [string, string][])[0]!;
          customerRows += Number(m);
          if (Number(n) !== d.countries.length) {
            failures.push(`shard ${shard} has ${n} countries, want ${d.countries.length}`);
          }
        }
        if (customerRows !== d.customers.length) {
          failures.push(`the shards hold ${customerRows} customers, want ${d.customers.length}`);
        }
        // The lookup rows name the keyspace id of their customer, once each.
        const withEmail = customers.filter((c) => c.email !== null);
        const lookupRows = await lookups.query({
          text: "SELECT email, encode(keyspace_id, 'hex') FROM customer_email_idx " +
            "WHERE email = ANY($1::text[])",
          values: [withEmail.map((c) => c.email)],
          rowMode: "array",
        });
        const lookupIds = new Map<string, string[]>();
        for (const [email, hex] of lookupRows.rows as [string, string][]) {
          lookupIds.set(email, [...(lookupIds.get(email) ?? []), hex]);
        }
        for (const c of withEmail) {
          const want = bytesToHex(keyspaceId(hash, c.id));
          const got = lookupIds.get(c.email!) ?? [];
          if (got.length !== 1 || got[0] !== want) {
            failures.push(`lookup ${c.email} maps to [${got.join(", ")}], want ${want}`);
          }
        }
        const [[lookupCount]] = (await lookups.query({
          text: "SELECT count(*) FROM customer_email_idx",
          rowMode: "array",
        })).rows as [[string]];
        const emails = d.customers.filter((c) => c.email !== null).length;
        if (Number(lookupCount) !== emails) {
          failures.push(`the lookup table has ${lookupCount} rows, want ${emails}`);
        }
        report(failures);
      });
    } finally {
      for (const c of clients) await c.end().catch(() => undefined);
      await cluster("down", "--dir", dir, "--clean");
      await Deno.remove(dir, { recursive: true }).catch(() => undefined);
      await plainPg.cleanup();
    }
  },
});
