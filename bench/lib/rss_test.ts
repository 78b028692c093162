import { assert, assertEquals, assertThrows } from "../../shared/testing/assert.ts";
import {
  argvHas,
  childPids,
  countOpenFds,
  findServerPid,
  parseStatusKb,
  readCommandLine,
  readExe,
  readRssKb,
} from "./rss.ts";

function childPidsOrNone(pid: number): number[] {
  try {
    return childPids(pid);
  } catch {
    return [];
  }
}

const STATUS = `Name:\tpgbouncer
State:\tS (sleeping)
Pid:\t4242
VmPeak:\t   20480 kB
VmHWM:\t   12000 kB
VmRSS:\t    9876 kB
RssAnon:\t    3000 kB
Threads:\t1
`;

Deno.test("parseStatusKb reads VmRSS and other kB fields", () => {
  assertEquals(parseStatusKb(STATUS), 9876);
  assertEquals(parseStatusKb(STATUS, "VmHWM"), 12000);
  assertThrows(() => parseStatusKb("Name:\tx\n"), Error, "'VmRSS' not found");
});

Deno.test("readRssKb, countOpenFds and readCommandLine read this process", () => {
  const rss = readRssKb(Deno.pid);
  assert(rss > 1000, `expected a Deno RSS above 1 MB, got ${rss} kB`);
  const before = countOpenFds(Deno.pid);
  const file = Deno.openSync(Deno.execPath());
  try {
    assertEquals(countOpenFds(Deno.pid), before + 1);
  } finally {
    file.close();
  }
  assert(readCommandLine(Deno.pid).includes("test"), "expected 'deno test' in the command line");
});

Deno.test("argvHas matches whole arguments, not a shell script that mentions them", () => {
  assertEquals(argvHas(["deno", "run", "-A", "pooler/main.ts"], "pooler/main.ts"), true);
  assertEquals(argvHas(["deno", "run", "/work/main/pooler/main.ts"], "pooler/main.ts"), true);
  assertEquals(argvHas(["bash", "-c", "deno run pooler/main.ts; true"], "pooler/main.ts"), false);
  assertEquals(argvHas(["pooler/main.ts"], "pooler/main.ts"), false); // the program itself
  assertEquals(argvHas(["deno", "run", "xpooler/main.ts"], "pooler/main.ts"), false);
});

Deno.test("findServerPid finds the server under a wrapper, never the wrapper", async () => {
  const dir = await Deno.makeTempDir();
  const script = `${dir}/server_marker.ts`;
  await Deno.writeTextFile(script, "setTimeout(() => {}, 30_000);\n");
  // bash stays as the parent (it has a command after deno) and its -c text names the script.
  const child = new Deno.Command("bash", {
    args: ["-c", `"${Deno.execPath()}" run ${script}; true`],
    stdin: "null",
  }).spawn();
  try {
    let found: number | undefined;
    for (let i = 0; i < 100 && found === undefined; i++) {
      try {
        found = findServerPid(child.pid, "server_marker.ts", Deno.execPath());
      } catch {
        await new Promise((r) => setTimeout(r, 20));
      }
    }
    assert(found !== undefined && found !== child.pid, "expected the deno grandchild");
    assertEquals(readExe(found), Deno.realPathSync(Deno.execPath()));
    assertThrows(
      () => findServerPid(child.pid, "server_marker.ts", "/bin/sh"),
      Error,
      "no process under pid",
    );
    assertThrows(() => findServerPid(child.pid, "no-such-marker"), Error, "no process under pid");
  } finally {
    for (const pid of [...childPidsOrNone(child.pid), child.pid]) {
      try {
        Deno.kill(pid, "SIGKILL");
      } catch {
        // gone
      }
    }
    await child.status;
    await Deno.remove(dir, { recursive: true });
  }
});
