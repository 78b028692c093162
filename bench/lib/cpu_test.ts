import { assert, assertEquals, assertThrows } from "../../shared/testing/assert.ts";
import {
  CpuMeter,
  cpuShare,
  parseContextSwitches,
  parseProcessTicks,
  parseSystemTicks,
  type ProcessTicks,
  readProcessUsage,
  readTreeUsage,
  treeTicks,
  usagePerTransaction,
} from "./cpu.ts";

Deno.test("parseSystemTicks sums busy and total ticks of the aggregate line", () => {
  const stat = "cpu  100 5 50 1000 20 3 2 10 0 0\ncpu0 50 2 25 500 10 1 1 5 0 0\nintr 1\n";
  assertEquals(parseSystemTicks(stat), { busy: 170, total: 1190 });
  assertThrows(() => parseSystemTicks("intr 1\n"), Error, "no aggregate 'cpu' line");
});

Deno.test("parseProcessTicks reads ppid, own and reaped children's ticks", () => {
  // A command name with spaces and a parenthesis, as a process may set.
  const stat = "4242 (my (odd) name) S 17 4242 17 0 -1 4194560 100 0 0 0 " +
    "250 50 30 20 20 0 3 0 12345 1000000 200 18446744073709551615";
  assertEquals(parseProcessTicks(stat), { ppid: 17, self: 300, children: 50 });
  assertThrows(() => parseProcessTicks("4242 no-paren S 1"), Error, "malformed");
});

Deno.test("treeTicks sums the trees under the roots and nothing else", () => {
  const p = (ppid: number, self: number, children = 0): ProcessTicks => ({ ppid, self, children });
  const processes = new Map<number, ProcessTicks>([
    [1, p(0, 1000)], // init: not ours
    [10, p(1, 5, 400)], // driver, with 400 ticks of reaped pgbench runs
    [11, p(10, 70)], // pgbouncer
    [12, p(10, 30)], // live pgbench
    [20, p(1, 2, 90)], // postmaster, with reaped backends
    [21, p(20, 60)], // backend
    [30, p(1, 500)], // someone else's process
  ]);
  assertEquals(treeTicks(processes, [10, 20]), 5 + 400 + 70 + 30 + 2 + 90 + 60);
  assertEquals(treeTicks(processes, [99]), 0); // a root that is gone counts nothing
});

Deno.test("cpuShare splits busy time between ours and others", () => {
  const share = cpuShare(
    { system: { busy: 1000, total: 5000 }, ours: 300 },
    { system: { busy: 1600, total: 6000 }, ours: 750 },
  );
  assertEquals(share, { oursPct: 45, othersPct: 15, idlePct: 40 });
  const none = cpuShare({ system: { busy: 1, total: 1 }, ours: 0 }, {
    system: { busy: 1, total: 1 },
    ours: 0,
  });
  assert(Number.isNaN(none.othersPct));
  assert(Number.isNaN(none.idlePct));
});

Deno.test("CpuMeter counts a busy child of this process as ours", async () => {
  const meter = new CpuMeter(() => [Deno.pid]);
  meter.start();
  const out = await new Deno.Command("bash", {
    args: ["-c", "i=0; while [ $i -lt 100000 ]; do i=$((i+1)); done"],
  }).output();
  assert(out.success);
  const share = meter.stop();
  assert(share.oursPct > 0, `expected some CPU for the busy child, got ${share.oursPct}%`);
  assertThrows(() => meter.stop(), Error, "before start()");
});

Deno.test("parseContextSwitches reads both counters of a thread's status", () => {
  const status = "Name:\tdeno\nState:\tS (sleeping)\nvoluntary_ctxt_switches:\t410622\n" +
    "nonvoluntary_ctxt_switches:\t1888571\n";
  assertEquals(parseContextSwitches(status), { voluntary: 410622, involuntary: 1888571 });
  assertThrows(() => parseContextSwitches("Name:\tdeno\n"), Error, "voluntary_ctxt_switches");
});

Deno.test("usagePerTransaction divides the difference by the transactions", () => {
  const before = { userTicks: 100, systemTicks: 200, voluntary: 1000, involuntary: 50 };
  const after = { userTicks: 130, systemTicks: 300, voluntary: 1600, involuntary: 350 };
  // 30 ticks of 10 ms over 10,000 transactions: 30 µs each.
  assertEquals(usagePerTransaction(before, after, 10_000), {
    userUs: 30,
    systemUs: 100,
    voluntary: 0.06,
    involuntary: 0.03,
  });
  assert(Number.isNaN(usagePerTransaction(before, after, 0).userUs));
});

Deno.test("readProcessUsage sees this process's own CPU and its threads' switches", () => {
  // The switches of the thread running this test (not always the process's main thread): a sum
  // over all threads can fall when a thread ends (Tokio's idle blocking threads do) between two
  // readings, so the sum is checked against this thread's count.
  const own = () => parseContextSwitches(Deno.readTextFileSync("/proc/thread-self/status"));
  const before = readProcessUsage(Deno.pid);
  const ownBefore = own();
  const end = Date.now() + 200;
  let x = 0;
  while (Date.now() < end) x += Math.sqrt(x + 1);
  // A blocking wait (a futex) is a voluntary switch of this thread. (An await of a timer is
  // not always one: Deno's event loop may find work and never block in those 20 ms.)
  Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 20);
  const ownAfter = own();
  const after = readProcessUsage(Deno.pid);
  assert(x > 0);
  // 200 ms of busy loop is about 20 ticks; the kernel charges at least some of them.
  assert(after.userTicks + after.systemTicks > before.userTicks + before.systemTicks);
  assert(ownAfter.voluntary > ownBefore.voluntary);
  // The sum holds this thread's switches (read just before it) and more.
  assert(after.voluntary >= ownAfter.voluntary);
  assert(after.involuntary >= ownAfter.involuntary);
});

Deno.test("readTreeUsage adds the children's CPU to the process's own", async () => {
  if (Deno.build.os !== "linux") return;
  // A child that does a fixed amount of work (about a second of CPU here), says so, and waits.
  const child = new Deno.Command(Deno.execPath(), {
    args: [
      "eval",
      "let x = 0; for (let i = 0; i < 2e9; i++) x = (x + i) | 0; console.log('done', x); " +
      "await new Promise((r) => setTimeout(r, 30000));",
    ],
    stdout: "piped",
    stderr: "null",
  }).spawn();
  const reader = child.stdout.getReader();
  try {
    let out = "";
    while (!out.includes("done")) {
      const { value, done } = await reader.read();
      if (done) throw new Error("the child ended early");
      out += new TextDecoder().decode(value);
    }
    const own = readProcessUsage(Deno.pid);
    const tree = readTreeUsage(Deno.pid, [child.pid]);
    const childTicks = tree.userTicks + tree.systemTicks - own.userTicks - own.systemTicks;
    assert(childTicks >= 10, `the child's CPU was not counted: ${childTicks} ticks`);
    // A process that is gone counts as nothing.
    const gone = readTreeUsage(Deno.pid, [0x3fffffff]);
    assert(gone.userTicks >= own.userTicks && gone.userTicks < tree.userTicks + 100);
  } finally {
    reader.releaseLock();
    child.kill("SIGKILL");
    await child.status;
    await child.stdout.cancel().catch(() => {});
  }
});
