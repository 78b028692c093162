import { ConfigError, loadConfig } from "../shared/config/mod.ts";
import { assertEquals, assertStringIncludes, assertThrows } from "../shared/testing/assert.ts";
import { GATEWAY_ENV_VARS, gatewayConfigSpec } from "./config.ts";

const TOPO = ["--topo-endpoint", "http://127.0.0.1:12379"];

function load(args: string[], env: Record<string, string> = {}) {
  const result = loadConfig(gatewayConfigSpec, args, env);
  if (result.help) throw new Error("unexpected help");
  return result.config;
}

Deno.test("gateway config: defaults work for the local cluster", () => {
  const c = load(TOPO);
  assertEquals(c.listen, ["127.0.0.1:15432"]);
  assertEquals(c.httpListen, "127.0.0.1:15100");
  assertEquals(c.cell, "zone1");
  assertEquals(c.bufferWindow, 10);
  assertEquals(c.maxBuffered, 1000);
  assertEquals(c.replicaFallback, false);
  assertEquals(c.auth, "trust");
});

Deno.test("gateway config: flags and environment", () => {
  const c = load(["--buffer-window", "2.5", "--replica-fallback", "--listen", "0.0.0.0:5432"], {
    TOPO_ENDPOINTS: "http://a:2379,http://b:2379",
    GATEWAY_POOLER_PASSWORD: "pw",
    GATEWAY_MAX_BUFFERED: "7",
  });
  assertEquals(c.topoEndpoints, ["http://a:2379", "http://b:2379"]);
  assertEquals([c.bufferWindow, c.replicaFallback, c.maxBuffered], [2.5, true, 7]);
  assertEquals(c.listen, ["0.0.0.0:5432"]);
  assertEquals(c.poolerPassword, "pw");
});

Deno.test("gateway config: invalid values name the flag", () => {
  for (
    const [args, flag] of [
      [[], "--topo-endpoint"],
      [[...TOPO, "--auth", "md5"], "--auth"],
      [[...TOPO, "--listen", "nope"], "--listen"],
      [[...TOPO, "--tls-cert", "/c.pem"], "--tls-cert"],
      [[...TOPO, "--require-tls"], "--require-tls"],
      [[...TOPO, "--max-buffered", "-1"], "--max-buffered"],
      [[...TOPO, "--nope"], "nope"],
    ] as const
  ) {
    const err = assertThrows(() => load([...args]), ConfigError);
    assertStringIncludes(err.message, flag);
  }
});

Deno.test("gateway config: every environment variable is one the task may read", () => {
  const task: string = JSON.parse(Deno.readTextFileSync(new URL("../deno.json", import.meta.url)))
    .tasks.gateway;
  const allowed = task.match(/--allow-env=(\S+)/)?.[1]?.split(",") ?? [];
  for (const name of GATEWAY_ENV_VARS) {
    const ok = allowed.some((a) => a.endsWith("*") ? name.startsWith(a.slice(0, -1)) : a === name);
    assertEquals(ok, true, `the gateway task does not allow reading ${name}`);
  }
});
