import { SqlState, TesseraError } from "../errors/mod.ts";
import { Logger } from "../log/mod.ts";
import {
  assert,
  assertEquals,
  assertRejects,
  assertStringIncludes,
  assertThrows,
} from "../testing/assert.ts";
import { EtcdProcess, startEtcd } from "./mod.ts";

const CLIENT_PORT = 12400;
const PEER_PORT = 12401;
const BUSY_PORT = 12402;

/** Deno 2.9 does not check for timers left running by default; these tests do. */
const CHECK_TIMERS = { sanitizeOps: true } as const;

const quiet = new Logger({ component: "proc-test", sink: () => {} });

function b64(text: string): string {
  return btoa(text);
}

/** Writes a key through etcd's JSON gateway. */
async function putKey(endpoint: string, key: string, value: string): Promise<void> {
  const res = await fetch(`${endpoint}/v3/kv/put`, {
    method: "POST",
    body: JSON.stringify({ key: b64(key), value: b64(value) }),
  });
  await res.body?.cancel();
  assert(res.ok, `put answered ${res.status}`);
}

/** Reads a key through etcd's JSON gateway. */
async function getKey(endpoint: string, key: string): Promise<string | undefined> {
  const res = await fetch(`${endpoint}/v3/kv/range`, {
    method: "POST",
    body: JSON.stringify({ key: b64(key) }),
  });
  const body = await res.json() as { kvs?: { value: string }[] };
  const value = body.kvs?.[0]?.value;
  return value === undefined ? undefined : atob(value);
}

async function answers(endpoint: string): Promise<boolean> {
  try {
    const res = await fetch(`${endpoint}/health`, { signal: AbortSignal.timeout(2000) });
    await res.body?.cancel();
    return res.ok;
  } catch {
    return false;
  }
}

Deno.test(
  "etcd starts on 127.0.0.1, keeps its data across stop, kill and restart",
  CHECK_TIMERS,
  async () => {
    const dir = await Deno.makeTempDir({ prefix: "tessera-etcd-test-" });
    let etcd: EtcdProcess | undefined;
    try {
      etcd = await startEtcd({
        dataDir: dir,
        clientPort: CLIENT_PORT,
        peerPort: PEER_PORT,
        logger: quiet,
      });
      assertEquals(etcd.endpoint, `http://127.0.0.1:${CLIENT_PORT}`);
      assert(etcd.running);
      const firstPid = etcd.pid;
      assert(firstPid > 0);
      await putKey(etcd.endpoint, "k", "v1");

      await etcd.stop();
      assert(!etcd.running);
      assert(!(await answers(etcd.endpoint)));
      assertThrows(() => etcd!.pid, TesseraError, "not running");

      await etcd.restart();
      assert(etcd.pid !== firstPid);
      assertEquals(await getKey(etcd.endpoint, "k"), "v1");
      await putKey(etcd.endpoint, "k", "v2");

      await etcd.kill();
      assert(!(await answers(etcd.endpoint)));
      await etcd.restart();
      assertEquals(await getKey(etcd.endpoint, "k"), "v2");
      // restart() while running stops first.
      await etcd.restart();
      assertEquals(await getKey(etcd.endpoint, "k"), "v2");

      // etcd's output went to its log file, not to our stdout.
      const log = await Deno.readTextFile(etcd.logFile);
      assertEquals(etcd.logFile, `${dir}/etcd.log`);
      assert(
        log.split("\n").some((line) =>
          line.includes("serving client traffic") && line.includes(`127.0.0.1:${CLIENT_PORT}`)
        ),
        `${etcd.logFile} should show etcd serving clients on 127.0.0.1:${CLIENT_PORT}`,
      );
      await etcd.stop();
      await etcd.stop();
    } finally {
      await etcd?.kill();
      await Deno.remove(dir, { recursive: true });
    }
  },
);

Deno.test("a failed start reports the tail of etcd's output", CHECK_TIMERS, async () => {
  const dir = await Deno.makeTempDir({ prefix: "tessera-etcd-test-" });
  try {
    const err = await assertRejects(
      () =>
        startEtcd({
          dataDir: dir,
          clientPort: CLIENT_PORT,
          peerPort: PEER_PORT,
          logger: quiet,
          extraArgs: ["--no-such-flag"],
        }),
      TesseraError,
      "etcd exited during start",
    );
    assertEquals(err.code, SqlState.connectionFailure);
    assertStringIncludes(err.detail ?? "", "no-such-flag");
    assert(!(await answers(`http://127.0.0.1:${CLIENT_PORT}`)));
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("a port already in use is refused before etcd starts", CHECK_TIMERS, async () => {
  const dir = await Deno.makeTempDir({ prefix: "tessera-etcd-test-" });
  const squatter = Deno.listen({ hostname: "127.0.0.1", port: BUSY_PORT });
  try {
    const err = await assertRejects(
      () => startEtcd({ dataDir: dir, clientPort: BUSY_PORT, peerPort: PEER_PORT, logger: quiet }),
      TesseraError,
      `port ${BUSY_PORT}`,
    );
    assertEquals(err.code, SqlState.objectInUse);
    assertThrows(
      () => new EtcdProcess({ dataDir: dir, clientPort: 0, peerPort: PEER_PORT }),
      RangeError,
      "'clientPort' must be an integer from 1 to 65535: received 0",
    );
    assertThrows(
      () => new EtcdProcess({ dataDir: dir, clientPort: PEER_PORT, peerPort: PEER_PORT }),
      RangeError,
      "must differ",
    );
  } finally {
    squatter.close();
    await Deno.remove(dir, { recursive: true });
  }
});
