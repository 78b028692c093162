import { assertEquals, assertRejects } from "../../shared/testing/assert.ts";
import { TesseraError } from "../../shared/errors/mod.ts";
import { createScramVerifier } from "../../shared/wire/mod.ts";
import { authQueryLookup } from "./users.ts";

Deno.test("authQueryLookup quotes the user into the query and keeps SCRAM verifiers only", async () => {
  const verifier = await createScramVerifier("pw");
  const sent: string[] = [];
  const rows: Record<string, (string | null)[][]> = {
    "E'app'": [["app", verifier]],
    "E'old'": [["old", "md5d41d8cd98f00b204e9800998ecf8427e"]],
    "E'none'": [["none", null]],
  };
  const notScram: string[] = [];
  const lookup = authQueryLookup(
    "SELECT usename, passwd FROM pg_shadow WHERE usename = $1",
    (sql) => {
      sent.push(sql);
      const literal = sql.slice(sql.indexOf("= ") + 2);
      return Promise.resolve(rows[literal] ?? []);
    },
    (user) => notScram.push(user),
  );
  assertEquals(await lookup("app"), verifier);
  assertEquals(await lookup("old"), undefined);
  assertEquals(await lookup("none"), undefined);
  assertEquals(await lookup("ghost"), undefined);
  assertEquals(await lookup("it's\\"), undefined);
  assertEquals(notScram, ["old"]);
  assertEquals(sent.at(-1), "SELECT usename, passwd FROM pg_shadow WHERE usename = E'it''s\\\\'");
});

Deno.test("authQueryLookup tells the client when Postgres cannot answer (08006)", async () => {
  const lookup = authQueryLookup("select $1, null", () => Promise.reject(new Error("refused")));
  const err = await assertRejects(() => lookup("app"), TesseraError);
  assertEquals([err.code, err.severity], ["08006", "FATAL"]);
  assertEquals(err.message, 'could not look up user "app" in Postgres: refused');
});
