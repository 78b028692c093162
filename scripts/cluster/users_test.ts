import { assert, assertEquals, assertMatch } from "../../shared/testing/assert.ts";
import { SCRAM_VERIFIER_PATTERN } from "../../shared/topo/mod.ts";
import { ScramClient, ScramServer } from "../../shared/wire/mod.ts";
import { userRecord, verifierFor } from "./users.ts";

async function logsIn(verifier: string, password: string): Promise<boolean> {
  const client = new ScramClient(password, { username: "alice" });
  const server = new ScramServer(verifier, { username: "alice" });
  try {
    const first = await server.serverFirstMessage(client.clientFirstMessage());
    const final = await server.serverFinalMessage(await client.clientFinalMessage(first));
    client.verifyServerFinal(final);
    return client.verified;
  } catch {
    return false;
  }
}

Deno.test("a user's verifier has Postgres's format and never holds the password", async () => {
  const record = await userRecord({ name: "alice", password: "s3cret" });
  assertEquals(record.name, "alice");
  assertMatch(record.scramVerifier, SCRAM_VERIFIER_PATTERN);
  assertMatch(record.scramVerifier, /^SCRAM-SHA-256\$4096:/);
  assert(!record.scramVerifier.includes("s3cret"));
  assert(!JSON.stringify(record).includes("s3cret"));
});

Deno.test("the verifier lets the right password log in through the SCRAM server", async () => {
  const verifier = await verifierFor("s3cret");
  assert(await logsIn(verifier, "s3cret"));
  assert(!await logsIn(verifier, "wrong"));
});

Deno.test("a stored verifier is kept when the password is unchanged, replaced otherwise", async () => {
  const first = await verifierFor("s3cret");
  assertEquals(await verifierFor("s3cret", first), first);
  const changed = await verifierFor("other", first);
  assert(changed !== first);
  assert(await logsIn(changed, "other"));
  const fromJunk = await verifierFor("s3cret", "md5abc");
  assert(await logsIn(fromJunk, "s3cret"));
});
