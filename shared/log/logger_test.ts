import { assertEquals } from "../testing/assert.ts";
import { TesseraError } from "../errors/mod.ts";
import { Logger } from "./mod.ts";

function capture(): { lines: Record<string, unknown>[]; sink: (line: string) => void } {
  const lines: Record<string, unknown>[] = [];
  return { lines, sink: (line) => lines.push(JSON.parse(line)) };
}

Deno.test("Logger writes one JSON object per line with component and alias", () => {
  const { lines, sink } = capture();
  const log = new Logger({ component: "pgctld", alias: "pg0", sink });
  log.info("postgres started", { pid: 42, port: 25432 });
  assertEquals(lines.length, 1);
  const line = lines[0]!;
  assertEquals(typeof line.ts, "string");
  assertEquals(
    { ...line, ts: undefined },
    {
      ts: undefined,
      level: "info",
      component: "pgctld",
      alias: "pg0",
      msg: "postgres started",
      pid: 42,
      port: 25432,
    },
  );
});

Deno.test("Logger drops lines below its level and children keep level and fields", () => {
  const { lines, sink } = capture();
  const log = new Logger({ component: "pooler", level: "warn", sink });
  log.info("hidden");
  const child = log.child({ shard: "-80" });
  child.debug("hidden too");
  child.error("shown", { term: 3n });
  assertEquals(lines.map((l) => [l.level, l.msg, l.shard, l.term]), [[
    "error",
    "shown",
    "-80",
    "3",
  ]]);
});

Deno.test("Logger expands errors with their SQLSTATE", () => {
  const { lines, sink } = capture();
  new Logger({ component: "gateway", sink }).warn("query failed", {
    err: new TesseraError("42601", 'syntax error at or near "SELEC"'),
  });
  assertEquals(lines[0]!.err, {
    name: "TesseraError",
    message: 'syntax error at or near "SELEC"',
    code: "42601",
  });
});
