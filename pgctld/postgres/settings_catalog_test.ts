import { assertEquals, assertThrows } from "../../shared/testing/assert.ts";
import { TesseraError } from "../../shared/errors/mod.ts";
import { findPgBindir } from "../../shared/pgbin/mod.ts";
import { checkSetting, loadSettingsCatalog, needsRestart } from "./settings_catalog.ts";

Deno.test("the settings catalog from the installed server checks names, types and contexts", async () => {
  const catalog = await loadSettingsCatalog(findPgBindir());
  checkSetting(catalog, "work_mem", "64MB");
  checkSetting(catalog, "synchronous_commit", "remote_apply");
  checkSetting(catalog, "hot_standby", "on");
  checkSetting(catalog, "random_page_cost", "1.1");
  checkSetting(catalog, "my_extension.knob", "anything");
  const unknown = assertThrows(() => checkSetting(catalog, "work_memory", "1"), TesseraError);
  assertEquals(unknown.code, "42704");
  const badBool = assertThrows(() => checkSetting(catalog, "hot_standby", "maybe"), TesseraError);
  assertEquals(badBool.code, "22023");
  assertThrows(() => checkSetting(catalog, "work_mem", "lots"), TesseraError, "'lots'");
  assertEquals(needsRestart(catalog, "shared_buffers"), true);
  assertEquals(needsRestart(catalog, "work_mem"), false);
});
