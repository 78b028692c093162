import { assert, assertEquals } from "../testing/assert.ts";
import {
  isShardRange,
  PgAddressSchema,
  ShardRecordSchema,
  UserRecordSchema,
  WorkflowRecordSchema,
} from "./mod.ts";

Deno.test("shard ranges are Vitess-style with the start below the end", () => {
  for (const ok of ["-", "0", "-80", "80-", "40-80", "-4000", "4000-8000", "80-c0"]) {
    assert(isShardRange(ok), `'${ok}' should be a shard range`);
  }
  for (const bad of ["", "1", "-8", "80", "8-", "80-40", "80-80", "-8G", "-80/x", "A0-", " -80"]) {
    assert(!isShardRange(bad), `'${bad}' should not be a shard range`);
  }
});

Deno.test("record schemas accept valid records and name what is wrong with others", () => {
  assert(ShardRecordSchema.safeParse({ keyspace: "app", range: "-80", term: 0 }).success);
  const bad = ShardRecordSchema.safeParse({ keyspace: "app", range: "-80", term: 1.5 });
  assert(!bad.success);
  assertEquals(bad.error.issues[0]?.path, ["term"]);

  assert(PgAddressSchema.safeParse("127.0.0.1:25432").success);
  assert(PgAddressSchema.safeParse("[::1]:25432").success);
  assert(PgAddressSchema.safeParse("/run/tessera/pg0").success);
  assert(!PgAddressSchema.safeParse("localhost").success);

  const verifier = "SCRAM-SHA-256$4096:c2FsdA==$c3RvcmVkS2V5:c2VydmVyS2V5";
  assert(UserRecordSchema.safeParse({ name: "bob", scramVerifier: verifier }).success);
  assert(!UserRecordSchema.safeParse({ name: "bob", scramVerifier: "secret" }).success);
  assert(!UserRecordSchema.safeParse({ name: "a/b", scramVerifier: verifier }).success);

  // Workflows keep fields this layer does not know about.
  const wf = WorkflowRecordSchema.parse({
    name: "mt1",
    type: "MoveTables",
    state: "copying",
    progress: { rows: 10 },
  });
  assertEquals(wf.progress, { rows: 10 });
});
