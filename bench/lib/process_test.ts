import { assertEquals, assertThrows } from "../../shared/testing/assert.ts";
import {
  assertPortFree,
  CleanupStack,
  ensureNofile,
  findBinary,
  parseNofileLimits,
  readNofileLimits,
} from "./process.ts";

const LIMITS = `Limit                     Soft Limit           Hard Limit           Units
Max cpu time              unlimited            unlimited            seconds
Max open files            20000                20000                files
Max locked memory         8388608              8388608              bytes
`;

Deno.test("parseNofileLimits reads the soft and hard open-file limits", () => {
  assertEquals(parseNofileLimits(LIMITS), { soft: 20000, hard: 20000 });
  assertEquals(
    parseNofileLimits(LIMITS.replace("20000                20000", "1024 unlimited")),
    { soft: 1024, hard: Number.POSITIVE_INFINITY },
  );
  assertThrows(() => parseNofileLimits("Max cpu time 1 1"), Error, "'Max open files'");
});

Deno.test("ensureNofile raises a child's soft limit up to its hard limit", async () => {
  const child = new Deno.Command("bash", {
    args: ["-c", "ulimit -Sn 256; exec sleep 30"],
    stdin: "null",
  }).spawn();
  try {
    let limits = readNofileLimits(child.pid);
    for (let i = 0; i < 50 && limits.soft !== 256; i++) {
      await new Promise((r) => setTimeout(r, 20));
      limits = readNofileLimits(child.pid);
    }
    assertEquals(limits.soft, 256);
    assertEquals(await ensureNofile(child.pid, 100), 256); // already enough: unchanged
    assertEquals(await ensureNofile(child.pid, 512), 512);
    assertEquals(readNofileLimits(child.pid).hard, limits.hard);
  } finally {
    child.kill("SIGKILL");
    await child.status;
  }
});

Deno.test("findBinary searches the given dirs then PATH and names the package when missing", () => {
  const dir = Deno.makeTempDirSync();
  try {
    Deno.writeTextFileSync(`${dir}/tool`, "#!/bin/sh\n");
    Deno.chmodSync(`${dir}/tool`, 0o755);
    Deno.writeTextFileSync(`${dir}/plain`, "not executable");
    assertEquals(findBinary("tool", { debianPackage: "x", env: { PATH: dir } }), `${dir}/tool`);
    assertEquals(findBinary("tool", { debianPackage: "x", dirs: [dir], env: {} }), `${dir}/tool`);
    assertThrows(
      () => findBinary("plain", { debianPackage: "pgbouncer", env: { PATH: dir } }),
      Error,
      "install the Debian package 'pgbouncer' (apt-get install pgbouncer)",
    );
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
});

Deno.test("CleanupStack runs steps newest first, each once, despite failures", async () => {
  const ran: string[] = [];
  const failures: string[] = [];
  const stack = new CleanupStack((what) => failures.push(what));
  stack.push("a", () => ran.push("a"));
  const runB = stack.push("b", () => ran.push("b"));
  stack.push("c", () => {
    throw new Error("boom");
  });
  stack.push("d", async () => {
    await Promise.resolve();
    ran.push("d");
  });
  await runB();
  await runB();
  await stack.runAll();
  await stack.runAll();
  assertEquals(ran, ["b", "d", "a"]);
  assertEquals(failures, ["c"]);
});

Deno.test("assertPortFree rejects ephemeral ports and ports in use", () => {
  assertThrows(() => assertPortFree(40000), RangeError, "received 40000");
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  try {
    const port = (listener.addr as Deno.NetAddr).port;
    if (port < 32768) assertThrows(() => assertPortFree(port), Error, "already in use");
  } finally {
    listener.close();
  }
});
