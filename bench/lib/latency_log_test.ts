import { assertEquals, assertThrows } from "../../shared/testing/assert.ts";
import { LatencyCollector, percentile, summariseLatencyLogs } from "./latency_log.ts";

Deno.test("percentile uses the nearest rank", () => {
  const sorted = Float64Array.from({ length: 100 }, (_, i) => i + 1); // 1..100
  assertEquals(percentile(sorted, 50), 50);
  assertEquals(percentile(sorted, 99), 99);
  assertEquals(percentile(sorted, 100), 100);
  assertEquals(percentile([7], 99), 7);
  assertEquals(percentile([1, 2, 3], 99), 3);
  assertEquals(Number.isNaN(percentile([], 99)), true);
  assertThrows(() => percentile(sorted, 0), RangeError);
  assertThrows(() => percentile(sorted, 101), RangeError);
});

Deno.test("LatencyCollector reads pgbench 15 log lines, counting failed and skipped apart", () => {
  const c = new LatencyCollector();
  c.addText(
    [
      "1 1 966 0 1795240513 883140",
      "1 2 94 0 1795240513 883240",
      "3 1 2000 0 1795240513 883110 12", // with schedule lag
      "2 7 failed 0 1795240513 883999 0 1", // with retries
      "2 8 skipped 0 1795240514 100",
      "",
    ].join("\n"),
  );
  c.flush();
  const s = c.summary();
  assertEquals(s.count, 3);
  assertEquals(s.failed, 1);
  assertEquals(s.skipped, 1);
  assertEquals(s.meanMs, (966 + 94 + 2000) / 3 / 1000);
  assertEquals(s.p50Ms, 0.966);
  assertEquals(s.p99Ms, 2);
  assertEquals(s.maxMs, 2);
});

Deno.test("LatencyCollector joins lines split across chunks and keeps an unterminated last line", () => {
  const c = new LatencyCollector();
  c.addText("0 1 10");
  c.addText("0 0 1 2\n0 2 2");
  c.addText("0 0 1 2");
  assertEquals(c.count, 1);
  c.flush();
  const s = c.summary();
  assertEquals(s.count, 2);
  assertEquals(s.maxMs, 0.1);
  assertEquals(s.p50Ms, 0.02);
});

Deno.test("LatencyCollector grows past its first buffer and sorts numerically", () => {
  const c = new LatencyCollector();
  const n = 70_000;
  for (let i = n; i >= 1; i--) c.addLine(`0 ${i} ${i} 0 0 0`);
  const s = c.summary();
  assertEquals(s.count, n);
  assertEquals(s.p99Ms, 69.3);
  assertEquals(s.maxMs, 70);
  assertEquals(s.meanMs, (n + 1) / 2 / 1000);
});

Deno.test("LatencyCollector rejects malformed lines and an empty summary is NaN", () => {
  const c = new LatencyCollector();
  assertThrows(() => c.addLine("1 2 3"), Error, "malformed pgbench log line");
  assertThrows(() => c.addLine("1 2 abc 0 0 0"), Error, "malformed latency 'abc'");
  const s = c.summary();
  assertEquals(s.count, 0);
  assertEquals(Number.isNaN(s.meanMs) && Number.isNaN(s.p99Ms), true);
});

Deno.test("summariseLatencyLogs reads every per-thread file with the prefix", async () => {
  const dir = await Deno.makeTempDir();
  try {
    await Deno.writeTextFile(`${dir}/pgbench_log.123`, "0 1 100 0 0 0\n0 2 300 0 0 0\n");
    await Deno.writeTextFile(`${dir}/pgbench_log.123.1`, "1 1 200 0 0 0\n1 2 failed 0 0 0\n");
    await Deno.writeTextFile(`${dir}/other.txt`, "not a log\n");
    const s = await summariseLatencyLogs(dir);
    assertEquals(s.files, 2);
    assertEquals(s.count, 3);
    assertEquals(s.failed, 1);
    assertEquals(s.meanMs, 0.2);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
