import { assert, assertEquals } from "../../shared/testing/assert.ts";
import { createStatusApp } from "../../shared/http/mod.ts";
import { Logger } from "../../shared/log/mod.ts";
import { TopoClient } from "../../shared/topo/mod.ts";
import { withEtcd } from "../../shared/topo/_test_utils.ts";
import { type KnownKeyspace, parseVSchema } from "../../shared/vschema/mod.ts";
import { addVSchemaRoutes, checkVSchemaUpdate } from "./vschema.ts";

const CLIENT_PORT = 12460;
const PEER_PORT = 12461;

const customers = {
  sharded: true,
  vindexes: {
    hash: { type: "hash" },
    email_idx: {
      type: "lookup_unique",
      params: { table: "lookups.email_idx", from: "email", to: "keyspace_id" },
    },
  },
  tables: {
    customer: {
      column_vindexes: [{ column: "id", name: "hash" }, { column: "email", name: "email_idx" }],
      auto_increment: { column: "id", sequence: "seq.customer_seq" },
    },
  },
};

const known = new Map<string, KnownKeyspace>([
  ["customers", { sharded: true }],
  ["lookups", { sharded: false }],
  ["seq", {
    sharded: false,
    vschema: parseVSchema({ sharded: false, tables: { customer_seq: { type: "sequence" } } }),
  }],
]);

function issues(body: unknown, keyspaces = known, sharded = true): string[] {
  const r = checkVSchemaUpdate("customers", { sharded }, body, keyspaces);
  assert(!r.ok, "should be refused");
  assertEquals(r.error, "invalid vschema for keyspace 'customers'");
  return r.issues.map((i) => `${i.path}: ${i.reason}`);
}

Deno.test("checkVSchemaUpdate accepts a good vschema and fills its defaults", () => {
  const r = checkVSchemaUpdate("customers", { sharded: true }, customers, known);
  assert(r.ok);
  assertEquals(r.vschema.tables.customer?.auto_increment?.sequence, "seq.customer_seq");
  const u = checkVSchemaUpdate("lookups", { sharded: false }, { sharded: false }, known);
  assertEquals(u, { ok: true, vschema: { sharded: false, vindexes: {}, tables: {} } });
});

Deno.test("checkVSchemaUpdate names the field and the reason of every problem", () => {
  assertEquals(issues({ ...customers, sharded: false }), [
    "sharded: must match the keyspace, which is sharded: received false",
  ]);
  assertEquals(
    issues({ ...customers, tables: { t: { column_vindexes: [{ column: "id", name: "nope" }] } } }),
    ["tables.t.column_vindexes.0.name: names vindex 'nope', which is not in 'vindexes'"],
  );
  assertEquals(issues("not an object").length, 1);
  const noOthers = new Map([["customers", { sharded: true }]]);
  assertEquals(issues(customers, noOthers), [
    "vindexes.email_idx.params.table: names keyspace 'lookups', which does not exist: " +
    "received 'lookups.email_idx'",
    "tables.customer.auto_increment.sequence: names keyspace 'seq', which does not exist: " +
    "received 'seq.customer_seq'",
  ]);
  const noSeqTable = new Map(known);
  noSeqTable.set("seq", { sharded: false, vschema: parseVSchema({ sharded: false }) });
  assertEquals(issues(customers, noSeqTable), [
    "tables.customer.auto_increment.sequence: 'customer_seq' is not a sequence table " +
    `(type "sequence") in the vschema of 'seq': received 'seq.customer_seq'`,
  ]);
  const shardedSeq = new Map(known);
  shardedSeq.set("seq", { sharded: true });
  assert(issues(customers, shardedSeq)[0]!.includes("but 'seq' is sharded"));
});

Deno.test({
  name: "the admin API reads and writes vschemas in topo, refusing bad ones",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    await withEtcd(CLIENT_PORT, PEER_PORT, async () => {
      const logger = new Logger({ component: "test", level: "error" });
      const topo = await TopoClient.connect({
        endpoints: `http://127.0.0.1:${CLIENT_PORT}`,
        logger,
      });
      try {
        await topo.global.keyspaces.put(["customers"], { name: "customers", sharded: true });
        await topo.global.keyspaces.put(["lookups"], { name: "lookups", sharded: false });
        await topo.global.keyspaces.put(["seq"], { name: "seq", sharded: false });
        const app = createStatusApp({ component: "orch", logger });
        addVSchemaRoutes(app, topo);
        const put = (ks: string, body: string) =>
          app.request(`/api/v1/keyspaces/${ks}/vschema`, { method: "PUT", body });
        const url = "/api/v1/keyspaces/customers/vschema";

        let res = await app.request(url);
        assertEquals(res.status, 404);
        assertEquals(await res.json(), { error: "keyspace 'customers' has no vschema" });
        res = await app.request("/api/v1/keyspaces/nope/vschema");
        assertEquals(res.status, 404);
        assertEquals(await res.json(), { error: "keyspace 'nope' does not exist" });
        res = await put("nope", "{}");
        assertEquals(res.status, 404);
        await res.body?.cancel();

        // The sequence table is not there yet: refused, nothing stored.
        const seqVSchema = { sharded: false, tables: { customer_seq: { type: "sequence" } } };
        res = await put("seq", JSON.stringify({ sharded: false }));
        assertEquals(res.status, 200);
        await res.body?.cancel();
        res = await put("customers", JSON.stringify(customers));
        assertEquals(res.status, 400);
        const refused = await res.json();
        assertEquals(refused.error, "invalid vschema for keyspace 'customers'");
        assertEquals(refused.issues.map((i: { path: string }) => i.path), [
          "tables.customer.auto_increment.sequence",
        ]);
        assertEquals(await topo.global.vschemas.get("customers"), undefined);

        res = await put("seq", JSON.stringify(seqVSchema));
        assertEquals(res.status, 200);
        await res.body?.cancel();
        res = await put("customers", JSON.stringify(customers));
        assertEquals(res.status, 200);
        const stored = await res.json();
        assertEquals(stored.tables.customer.auto_increment.sequence, "seq.customer_seq");
        res = await app.request(url);
        assertEquals(res.status, 200);
        assertEquals(await res.json(), stored);
        assertEquals((await topo.global.vschemas.get("customers"))?.value, stored);

        res = await put("customers", "{ not json");
        assertEquals(res.status, 400);
        const bad = await res.json();
        assertEquals(bad.issues[0].path, "(root)");
        assert(bad.issues[0].reason.startsWith("the body is not valid JSON"));
        res = await put("customers", JSON.stringify({ sharded: true, tables: { t: {} } }));
        assertEquals(res.status, 400);
        assertEquals((await res.json()).issues, [{
          path: "tables.t.column_vindexes",
          reason: "a sharded table needs a primary vindex",
        }]);
        assertEquals((await topo.global.vschemas.get("customers"))?.value, stored);
      } finally {
        await topo.close();
      }
    });
  },
});
