import { assertEquals, assertRejects, assertThrows } from "../shared/testing/assert.ts";
import { ConfigError, loadConfig } from "../shared/config/mod.ts";
import { TesseraError } from "../shared/errors/mod.ts";
import { pgctldConfigSpec, readPasswordFile } from "./config.ts";

Deno.test("replication flags have env fallbacks and defaults", () => {
  const base = ["--data-dir", "/d"];
  const plain = loadConfig(pgctldConfigSpec, base, {});
  if (plain.help) throw new Error("unexpected help");
  assertEquals(plain.config.replicationUser, "tessera_repl");
  assertEquals(plain.config.replicationPasswordFile, undefined);
  const fromEnv = loadConfig(pgctldConfigSpec, base, {
    PGCTLD_REPLICATION_USER: "repl",
    PGCTLD_REPLICATION_PASSWORD_FILE: "/etc/tessera/repl.pw",
  });
  if (fromEnv.help) throw new Error("unexpected help");
  assertEquals(
    [fromEnv.config.replicationUser, fromEnv.config.replicationPasswordFile],
    ["repl", "/etc/tessera/repl.pw"],
  );
  assertThrows(
    () => loadConfig(pgctldConfigSpec, [...base, "--replication-password-file", "rel.pw"], {}),
    ConfigError,
    "--replication-password-file (PGCTLD_REPLICATION_PASSWORD_FILE)",
  );
  assertThrows(
    () => loadConfig(pgctldConfigSpec, [...base, "--replication-user", "bad name"], {}),
    ConfigError,
    "--replication-user",
  );
});

Deno.test("readPasswordFile trims one trailing line break and refuses empty files", async () => {
  const dir = await Deno.makeTempDir();
  try {
    await Deno.writeTextFile(`${dir}/a`, "s3cret: x\n");
    assertEquals(await readPasswordFile(`${dir}/a`), "s3cret: x");
    await Deno.writeTextFile(`${dir}/b`, "no-newline");
    assertEquals(await readPasswordFile(`${dir}/b`), "no-newline");
    await Deno.writeTextFile(`${dir}/c`, "\n");
    await assertRejects(() => readPasswordFile(`${dir}/c`), TesseraError, "non-empty line");
    await assertRejects(() => readPasswordFile(`${dir}/missing`), TesseraError, "cannot read");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
