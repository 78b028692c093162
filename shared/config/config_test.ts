import { z } from "zod";
import { assertEquals, assertStringIncludes, assertThrows } from "../testing/assert.ts";
import { ConfigError, type ConfigSpec, loadConfig, portSchema } from "./mod.ts";

const spec = {
  program: "demo",
  schema: z.object({
    dataDir: z.string().min(1),
    port: portSchema.default(25432),
    verbose: z.boolean().default(false),
    tags: z.array(z.string()).default([]),
  }),
  fields: {
    dataDir: { flag: "data-dir", env: "DEMO_DATA_DIR", description: "data directory" },
    port: { flag: "port", env: "DEMO_PORT", description: "port" },
    verbose: { flag: "verbose", env: "DEMO_VERBOSE", type: "boolean", description: "chatty" },
    tags: { flag: "tag", env: "DEMO_TAGS", multiple: true, description: "tags" },
  },
} satisfies ConfigSpec<z.ZodObject>;

Deno.test("loadConfig reads flags, then env, then schema defaults", () => {
  const result = loadConfig(spec, ["--data-dir", "/d", "--tag", "a", "--tag", "b"], {
    DEMO_PORT: "5433",
    DEMO_VERBOSE: "true",
  });
  assertEquals(result.help, false);
  if (result.help) return;
  assertEquals(result.config, { dataDir: "/d", port: 5433, verbose: true, tags: ["a", "b"] });

  const fromEnv = loadConfig(spec, [], { DEMO_DATA_DIR: "/e", DEMO_TAGS: "x, y" });
  if (fromEnv.help) throw new Error("unexpected help");
  assertEquals(fromEnv.config, { dataDir: "/e", port: 25432, verbose: false, tags: ["x", "y"] });
});

Deno.test("loadConfig: flags win over env", () => {
  const result = loadConfig(spec, ["--data-dir=/f", "--port=7000"], {
    DEMO_DATA_DIR: "/e",
    DEMO_PORT: "5433",
  });
  if (result.help) throw new Error("unexpected help");
  assertEquals([result.config.dataDir, result.config.port], ["/f", 7000]);
});

Deno.test("loadConfig names the field and the reason for an invalid value", () => {
  const err = assertThrows(
    () => loadConfig(spec, ["--data-dir", "/d", "--port", "0"], {}),
    ConfigError,
  );
  assertStringIncludes(err.message, "--port (DEMO_PORT)");
  assertStringIncludes(err.message, "received '0'");
  assertEquals(err.code, "F0000");

  const missing = assertThrows(() => loadConfig(spec, [], {}), ConfigError);
  assertStringIncludes(missing.message, "--data-dir (DEMO_DATA_DIR)");

  assertThrows(
    () => loadConfig(spec, ["--data-dir", "/d"], { DEMO_VERBOSE: "maybe" }),
    ConfigError,
    "DEMO_VERBOSE must be a boolean",
  );
  assertThrows(() => loadConfig(spec, ["--nope"], {}), ConfigError, "nope");
});

Deno.test("loadConfig returns usage for --help", () => {
  const result = loadConfig(spec, ["--help"], {});
  if (!result.help) throw new Error("expected help");
  assertStringIncludes(result.usage, "--data-dir VALUE");
  assertStringIncludes(result.usage, "(env DEMO_DATA_DIR)");
});
