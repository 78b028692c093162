import { assert, assertEquals, assertThrows } from "../../shared/testing/assert.ts";
import { classify, formatOverlap, overlap, parseTimehist, poolerWaits } from "./sched_timeline.ts";

function assertAlmostEquals(actual: number, expected: number, tolerance: number): void {
  assert(
    Math.abs(actual - expected) <= tolerance,
    `expected ${expected} ± ${tolerance}, got ${actual}`,
  );
}

// Two CPUs over 1 ms (times in s, run times in ms, as `perf sched timehist` prints them).
// CPU 0: pooler 0.0–0.6 ms, postgres 0.6–1.0 ms.
// CPU 1: idle 0.0–0.4 ms, pgbench 0.4–1.0 ms.
const TEXT = `
           time    cpu  task name                       wait time  sch delay   run time
                        [tid/pid]                          (msec)     (msec)     (msec)
--------------- ------  ------------------------------  ---------  ---------  ---------
      10.000600 [0000]  deno[6043]                          0.000      0.000      0.600
      10.000400 [0001]  <idle>                              0.000      0.000      0.400
      10.001000 [0000]  postgres[6104]                      0.010      0.005      0.400
      10.001000 [0001]  pgbench[6095/6094]                  0.000      0.339      0.600
 a line that is not an event
`;

Deno.test("classify groups tasks by their command name", () => {
  assertEquals(classify("deno[6043]", "deno"), "pooler");
  assertEquals(classify("pgbouncer[6040]", "deno"), "other");
  assertEquals(classify("pgbouncer[6040]", "pgbouncer"), "pooler");
  assertEquals(classify("<idle>", "deno"), "idle");
  assertEquals(classify("postgres[6104]", "deno"), "postgres");
  assertEquals(classify("pgbench[6095/6094]", "deno"), "pgbench");
  assertEquals(classify("tokio-runtime-w[6050/6043]", "deno"), "other");
});

Deno.test("parseTimehist makes each CPU's intervals from the run time ending at each line", () => {
  const cpus = parseTimehist(TEXT, "deno");
  assertEquals([...cpus.keys()].sort(), [0, 1]);
  const cpu0 = cpus.get(0)!;
  assertEquals(cpu0.map((i) => i.what), ["pooler", "postgres"]);
  assertAlmostEquals(cpu0[0]!.start, 10.0, 1e-9);
  assertAlmostEquals(cpu0[0]!.end, 10.0006, 1e-9);
  assertAlmostEquals(cpu0[1]!.start, 10.0006, 1e-9);
});

Deno.test("overlap gives the share of each combination and of the pooler running alone", () => {
  const o = overlap(parseTimehist(TEXT, "deno"), 1e-6);
  assertAlmostEquals(o.seconds, 0.001, 1e-9);
  // 0–0.4 ms: pooler + idle; 0.4–0.6 ms: pgbench + pooler; 0.6–1.0 ms: pgbench + postgres.
  assertAlmostEquals(o.combos.get("idle + pooler")!, 0.4, 0.01);
  assertAlmostEquals(o.combos.get("pgbench + pooler")!, 0.2, 0.01);
  assertAlmostEquals(o.combos.get("pgbench + postgres")!, 0.4, 0.01);
  assertAlmostEquals(o.poolerAlone, 0.4, 0.01);
  assertAlmostEquals(o.poolerRuns, 0.6, 0.01);
  assertAlmostEquals(o.idle, 0.2, 0.01); // 0.4 ms of 2 CPUs × 1 ms
  const report = formatOverlap(o);
  assert(report.includes("idle + pooler"), report);
  assert(report.includes("with every other CPU idle"), report);
});

Deno.test("overlap refuses input without scheduling events", () => {
  assertThrows(() => overlap(parseTimehist("nothing here\n", "deno")), Error, "no scheduling");
});

// With --state, over 1 ms. CPU 0: pooler 0.0–0.2 ms (preempted), postgres 0.2–0.6 ms (sleeps),
// pooler 0.6–1.0 ms. CPU 1: pgbench 0.0–0.3 ms, then idle. The pooler waits 0.2–0.6 ms, and CPU 1
// is idle for 0.3–0.6 ms of that.
const STATE_TEXT = `
           time    cpu  task name                       wait time  sch delay   run time  state
      10.000200 [0000]  deno[6043]                          0.000      0.000      0.200      R
      10.000300 [0001]  pgbench[6095/6094]                  0.000      0.000      0.300      S
      10.000600 [0000]  postgres[6104]                      0.100      0.010      0.400      S
      10.001000 [0000]  deno[6043]                          0.400      0.000      0.400      R
      10.001000 [0001]  <idle>                              0.000      0.000      0.700      I
`;

Deno.test("parseTimehist reads lines with the state column too", () => {
  const cpus = parseTimehist(STATE_TEXT, "deno");
  assertEquals(cpus.get(0)!.map((i) => i.what), ["pooler", "postgres", "pooler"]);
  assertEquals(cpus.get(1)!.map((i) => i.what), ["pgbench", "idle"]);
  assertAlmostEquals(cpus.get(0)![2]!.start, 10.0006, 1e-9);
});

Deno.test("poolerWaits: preempted until it runs again, or its delay after a sleep", () => {
  const waits = poolerWaits(STATE_TEXT, "deno");
  assertEquals(waits.length, 1);
  assertAlmostEquals(waits[0]!.start, 10.0002, 1e-9);
  assertAlmostEquals(waits[0]!.end, 10.0006, 1e-9);
  // After a sleep only the scheduling delay counts.
  const slept = STATE_TEXT.replace(
    "0.000      0.000      0.200      R",
    "0.000      0.000      0.200      S",
  ).replace("0.400      0.000      0.400      R", "0.400      0.050      0.400      R");
  const after = poolerWaits(slept, "deno");
  assertEquals(after.length, 1);
  assertAlmostEquals(after[0]!.start, 10.00055, 1e-9);
  // Without the state column there is nothing to tell.
  assertEquals(poolerWaits(TEXT, "deno"), []);
});

Deno.test("overlap gives the time the pooler waited while a CPU was idle", () => {
  const o = overlap(parseTimehist(STATE_TEXT, "deno"), 1e-6, poolerWaits(STATE_TEXT, "deno"));
  assertAlmostEquals(o.poolerWaitingCpuIdle!, 0.3, 0.01);
  assertAlmostEquals(o.poolerAlone, 0.4, 0.01); // 0.6–1.0 ms: pooler + idle
  assert(formatOverlap(o).includes("runnable but waiting while another CPU was idle"));
  assertEquals(overlap(parseTimehist(TEXT, "deno"), 1e-6).poolerWaitingCpuIdle, undefined);
});
