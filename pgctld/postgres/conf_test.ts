import { assertEquals, assertThrows } from "../../shared/testing/assert.ts";
import { TesseraError } from "../../shared/errors/mod.ts";
import {
  ensureIncludeLine,
  parseConf,
  quoteValue,
  readConf,
  renderConf,
  validateSettingName,
  writeConf,
} from "./conf.ts";

Deno.test("renderConf and parseConf round-trip values with quotes and backslashes", () => {
  const settings = {
    work_mem: "16MB",
    application_name: "it's",
    archive_command: "cp %p /a\\b/%f",
    "pg_stat_statements.track": "all",
  };
  assertEquals(parseConf(renderConf(settings)), settings);
  assertEquals(quoteValue("it's"), "'it''s'");
});

Deno.test("validateSettingName refuses managed and malformed names", () => {
  validateSettingName("work_mem");
  validateSettingName("pg_stat_statements.max");
  for (const name of ["port", "PORT", "listen_addresses", "include", "data_directory"]) {
    assertThrows(() => validateSettingName(name), TesseraError, "managed by pgctld");
  }
  for (const name of ["", "work mem", "a;b", "x\ny", "1abc"]) {
    const err = assertThrows(() => validateSettingName(name), TesseraError);
    assertEquals(err.code, "22023");
  }
});

Deno.test("writeConf refuses line breaks; ensureIncludeLine adds the include once", async () => {
  const dir = await Deno.makeTempDir();
  try {
    await Deno.writeTextFile(`${dir}/postgresql.conf`, "max_connections = 100");
    await ensureIncludeLine(dir);
    await ensureIncludeLine(dir);
    const text = await Deno.readTextFile(`${dir}/postgresql.conf`);
    assertEquals(text.split("include_if_exists = 'tessera.conf'").length, 2);
    assertEquals(text.startsWith("max_connections = 100\n"), true);

    await writeConf(dir, { work_mem: "4MB" });
    assertEquals(await readConf(dir), { work_mem: "4MB" });
    await assertThrowsAsync(() => writeConf(dir, { work_mem: "4MB\nport = 1" }));
    assertEquals(await readConf(dir), { work_mem: "4MB" });
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

async function assertThrowsAsync(fn: () => Promise<unknown>): Promise<void> {
  try {
    await fn();
  } catch (err) {
    assertEquals(err instanceof TesseraError, true);
    return;
  }
  throw new Error("expected rejection");
}
